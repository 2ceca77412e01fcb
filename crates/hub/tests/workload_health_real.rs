#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A crash loop told all the way back: a hub and one member whose only
//! node is a real one (containerd, a real kubelet), a pull agent. A
//! Deployment whose container exits 1 reaches CrashLoopBackOff on the
//! member; the Work's health detail, the hub's binding and the hub's
//! template must say so, with the container's restart count.

use flotilla_testkit as support;

use std::time::{Duration, Instant};

use flotilla_api::work::{HealthDetail, ResourceBinding, Work};
use flotilla_apps_core::binding::{binding_name, work_name};
use flotilla_localkube::real_node::{RealNodes, BUSYBOX_IMAGE};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::Api;
use serde_json::json;
use support::{apply, create_namespace, Fleet};

const NAME: &str = "crasher";

/// The crashing container's restart count and state on the member
/// (`waiting: REASON`, `running` or `terminated: REASON`).
async fn member_container(pods: &Api<Pod>) -> Option<(i32, String)> {
    let list = pods.list(&ListParams::default().labels(&format!("app={NAME}"))).await.ok()?;
    let status = list.items.into_iter().next()?.status?.container_statuses?.into_iter().next()?;
    let state = status.state.unwrap_or_default();
    let said = match (state.waiting, state.running, state.terminated) {
        (Some(w), _, _) => format!("waiting: {}", w.reason.unwrap_or_default()),
        (_, Some(_), _) => "running".to_string(),
        (_, _, Some(t)) => format!("terminated: {}", t.reason.unwrap_or_default()),
        _ => String::new(),
    };
    Some((status.restart_count, said))
}

/// Polls `check` until it holds; fails after a minute with what it last said.
async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = (bool, String)>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (done, said) = check().await;
        if done {
            return;
        }
        assert!(Instant::now() < deadline, "waiting for {what}; last: {said}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_loop_on_a_real_node_reaches_the_work_the_binding_and_the_template() {
    let mut nodes = RealNodes::reserve().unwrap();
    let fleet = Fleet::start_with_real_m1(&mut nodes, &["eu"]).await;
    let hub = fleet.hub.client();
    let member = fleet.member("m1").client();
    create_namespace(&hub, "demo").await;
    let template = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": NAME, "namespace": "demo", "labels": {"app": NAME}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": NAME}},
            "template": {"metadata": {"labels": {"app": NAME}}, "spec": {
                "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "app", "image": BUSYBOX_IMAGE, "imagePullPolicy": "Never",
                    "command": ["sh", "-c", "echo failing on purpose; exit 1"]}]}}}
    });
    apply(
        &hub,
        json!({
            "apiVersion": "policy.flotilla.io/v1alpha1", "kind": "PropagationPolicy",
            "metadata": {"name": "crash", "namespace": "demo"},
            "spec": {"resourceSelectors": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": NAME}],
                     "placement": {"clusterAffinity": {"clusterNames": ["m1"]}}}
        }),
    )
    .await;
    apply(&hub, template).await;

    // The Work: the member's agent names the crash loop and counts restarts.
    let binding = binding_name("apps/v1", "Deployment", NAME);
    let works: Api<Work> = Api::namespaced(hub.clone(), "flotilla-cluster-m1");
    let pods: Api<Pod> = Api::namespaced(member.clone(), "demo");
    let deadline = Instant::now() + Duration::from_secs(180);
    // What the member's pod and the Work went through, for a failure's sake.
    let mut seen: Vec<String> = Vec::new();
    let detail: HealthDetail = loop {
        let status = works.get_opt(&work_name("demo", &binding)).await.unwrap().and_then(|w| w.status);
        let detail = status
            .and_then(|s| s.manifest_statuses.into_iter().find(|m| m.identifier.ordinal == 0))
            .and_then(|m| m.health_detail);
        if let Some(detail) = detail.as_ref().filter(|d| d.reason == "CrashLoopBackOff") {
            break detail.clone();
        }
        let now = format!(
            "{:?} / {:?}",
            member_container(&pods).await,
            detail.map(|d| (d.reason, d.restart_count))
        );
        if seen.last() != Some(&now) {
            seen.push(now);
        }
        assert!(
            Instant::now() < deadline,
            "the Work never said CrashLoopBackOff; pod / Work:\n{}",
            seen.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let restarts = detail.restart_count.expect("a crash loop counts restarts");
    assert!(restarts >= 1, "{detail:?}");
    let (member_restarts, waiting) = member_container(&pods).await.unwrap();
    assert!(member_restarts >= restarts, "the member's pod restarted {member_restarts} times; {detail:?}");
    // Between restarts the kubelet shows the failed run (terminated) and
    // only some of the time `waiting: CrashLoopBackOff`; both are the loop.
    assert!(
        ["waiting: CrashLoopBackOff", "terminated: Error", "running"].contains(&waiting.as_str()),
        "what the member's kubelet says: {waiting}"
    );
    assert!(
        detail.message.starts_with("container app restarted ") && detail.message.contains("last exit code 1"),
        "{}",
        detail.message
    );
    assert!(detail.message.ends_with("(1 of 1 pods)"), "{}", detail.message);

    // The binding: Healthy False for m1's crash loop, with the same count
    // the Work gave (or a later one, as the container keeps restarting).
    let bindings: Api<ResourceBinding> = Api::namespaced(hub.clone(), "demo");
    until("the binding says CrashLoopBackOff", || async {
        let status = bindings.get_opt(&binding).await.unwrap().and_then(|b| b.status);
        let Some(status) = status else { return (false, "no status".to_string()) };
        let healthy = status.conditions.iter().find(|c| c.type_ == "Healthy");
        let item = status.aggregated_status.iter().find(|i| i.cluster_name == "m1");
        let detail = item.and_then(|i| i.health_detail.as_ref());
        let done = healthy.is_some_and(|c| {
            c.status == "False"
                && c.message.starts_with("m1: CrashLoopBackOff (")
                && c.message.contains("restarts): container app restarted ")
        }) && detail
            .is_some_and(|d| d.reason == "CrashLoopBackOff" && d.restart_count >= Some(restarts));
        (done, format!("Healthy: {healthy:?}; m1: {detail:?}"))
    })
    .await;

    // The template on the hub: its own Healthy condition says it too.
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk("apps", "v1", "Deployment"));
    let templates: Api<DynamicObject> = Api::namespaced_with(hub.clone(), "demo", &resource);
    until("the template says CrashLoopBackOff", || async {
        let Some(object) = templates.get_opt(NAME).await.unwrap() else { return (false, "gone".to_string()) };
        let conditions = object.data["status"]["conditions"].as_array().cloned().unwrap_or_default();
        let healthy = conditions.into_iter().find(|c| c["type"] == "Healthy");
        let done = healthy.as_ref().is_some_and(|c| {
            let message = c["message"].as_str().unwrap_or_default();
            c["status"] == "False"
                && message.starts_with("m1: CrashLoopBackOff (")
                && message.contains("restarts): container app restarted ")
                && message.contains("last exit code 1")
        });
        (done, format!("Healthy: {healthy:?}"))
    })
    .await;

    let shutdown = nodes.shutdown();
    assert!(shutdown.problems.is_empty(), "{:?}", shutdown.problems);
}
