#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Why a member workload is unhealthy, told all the way back: a hub and a
//! member with a hollow node, a pull agent. Templates made to fail one way
//! each propagate to the member; the Work's status, the hub's binding and
//! (for the kinds whose status the hub aggregates) the hub's template must
//! say what is wrong, in the words of the component that knows (the
//! scheduler, the kubelet), and stop saying it once it is fixed.
//!
//! Hollow nodes run no containers, so only what the scheduler and the
//! kubelet's image manager decide can fail here. A hollow kubelet reports a
//! pod whose image it may never pull as `ErrImageNeverPull` yet Ready (its
//! fake runtime), so a Deployment counts that pod available and is healthy:
//! the case is a bare Pod here. A crash loop needs a real node: add a
//! `Broken` case to a fleet with real nodes.

use flotilla_testkit as support;

use std::time::Duration;

use flotilla_api::work::{HealthDetail, ResourceBinding, Work};
use flotilla_apps_core::binding::{binding_name, work_name};
use flotilla_localkube::wait_for;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::{json, Value};
use support::{apply, create_namespace, Fleet};

const IMAGE: &str = "flotilla.local/web:1";

/// A template (in namespace `demo`) made to fail one way, and what its
/// member must say.
struct Broken {
    template: Value,
    /// `HealthDetail.reason` the Work must carry.
    reason: &'static str,
    /// The binding's `Healthy` status then: `False`, or `Unknown` for a
    /// kind that is not judged until it is done (a Job).
    verdict: &'static str,
}

impl Broken {
    fn name(&self) -> &str {
        self.template["metadata"]["name"].as_str().unwrap()
    }

    fn binding(&self) -> String {
        let t = &self.template;
        binding_name(t["apiVersion"].as_str().unwrap(), t["kind"].as_str().unwrap(), self.name())
    }

    /// Whether the hub writes the template's status (and so its `Healthy`
    /// condition): workloads, not bare Pods.
    fn aggregated(&self) -> bool {
        self.template["kind"] != "Pod"
    }

    fn selector(&self) -> Value {
        json!({"apiVersion": self.template["apiVersion"], "kind": self.template["kind"], "name": self.name()})
    }
}

fn merged(mut base: Value, extra: &Value) -> Value {
    if let (Some(base), Some(extra)) = (base.as_object_mut(), extra.as_object()) {
        base.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    base
}

/// A Deployment that works on a hollow node, with `container` and `pod`
/// merged into its container and pod spec.
fn deployment(name: &str, replicas: i32, container: Value, pod: Value) -> Value {
    let container = merged(json!({"name": "app", "image": IMAGE}), &container);
    let pod = merged(json!({"containers": [container]}), &pod);
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "demo", "labels": {"app": name}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": pod}}
    })
}

fn job(name: &str, pod: Value) -> Value {
    let pod =
        merged(json!({"restartPolicy": "Never", "containers": [{"name": "run", "image": IMAGE}]}), &pod);
    json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": "demo"},
           "spec": {"template": {"spec": pod}}})
}

fn bare_pod(name: &str, container: Value) -> Value {
    let container = merged(json!({"name": "app", "image": IMAGE}), &container);
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": "demo", "labels": {"app": name}},
           "spec": {"containers": [container]}})
}

/// What the hub says of one template.
struct Views {
    hub: Client,
    works: Api<Work>,
    bindings: Api<ResourceBinding>,
}

impl Views {
    fn new(hub: Client) -> Self {
        Views {
            works: Api::namespaced(hub.clone(), "flotilla-cluster-m1"),
            bindings: Api::namespaced(hub.clone(), "demo"),
            hub,
        }
    }

    /// The template's manifest's health detail in the member's Work, and
    /// the Work's `Available` message.
    async fn work(&self, binding: &str) -> Option<(Option<HealthDetail>, String)> {
        let status = self.works.get_opt(&work_name("demo", binding)).await.ok()??.status?;
        let available = status.conditions.iter().find(|c| c.type_ == "Available")?.message.clone();
        let manifest = status.manifest_statuses.into_iter().find(|m| m.identifier.ordinal == 0)?;
        Some((manifest.health_detail, available))
    }

    /// The binding's `Healthy` condition (status, message) and its
    /// cluster's health detail.
    async fn binding(&self, binding: &str) -> Option<(String, String, Option<HealthDetail>)> {
        let status = self.bindings.get_opt(binding).await.ok()??.status?;
        let healthy = status.conditions.into_iter().find(|c| c.type_ == "Healthy")?;
        let detail = status.aggregated_status.into_iter().find(|i| i.cluster_name == "m1")?.health_detail;
        Some((healthy.status, healthy.message, detail))
    }

    /// The template's `Healthy` condition on the hub (status, message).
    async fn template(&self, broken: &Broken) -> Option<(String, String)> {
        let t = &broken.template;
        let (group, version) = t["apiVersion"].as_str().unwrap().rsplit_once('/').unwrap();
        let gvk = GroupVersionKind::gvk(group, version, t["kind"].as_str().unwrap());
        let resource = ApiResource::from_gvk(&gvk);
        let api: Api<DynamicObject> = Api::namespaced_with(self.hub.clone(), "demo", &resource);
        let object = api.get_opt(broken.name()).await.ok()??;
        let healthy =
            object.data["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == "Healthy")?.clone();
        let text = |field: &str| healthy[field].as_str().unwrap_or_default().to_string();
        Some((text("status"), text("message")))
    }

    /// Waits until the Work, the binding and the template all say `broken`
    /// is unhealthy for its reason; returns the Work's detail.
    async fn expect_unhealthy(&self, broken: &Broken) -> HealthDetail {
        let (name, binding, reason) = (broken.name(), broken.binding(), broken.reason);
        // Polled here rather than with `wait_for`, to tell what it said instead.
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        let (detail, available) = loop {
            match self.work(&binding).await {
                Some((Some(detail), available)) if detail.reason == reason => break (detail, available),
                other => assert!(
                    std::time::Instant::now() < deadline,
                    "{name}: the Work says {other:?}, not {reason}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let said = format!("{reason}: {}", detail.message);
        assert!(
            available.ends_with(&said),
            "{name}: the Work's Available condition gives the detail: {available}"
        );
        let in_cluster = format!("m1: {reason}");
        wait_for(&format!("{name}: the binding says {reason}"), Duration::from_secs(60), || async {
            self.binding(&binding).await.is_some_and(|(status, message, item)| {
                status == broken.verdict && message.starts_with(&in_cluster) && item.as_ref() == Some(&detail)
            })
        })
        .await;
        if broken.aggregated() {
            wait_for(&format!("{name}: the template says {reason}"), Duration::from_secs(60), || async {
                self.template(broken).await.is_some_and(|(status, message)| {
                    status == broken.verdict && message.starts_with(&in_cluster)
                })
            })
            .await;
        }
        detail
    }

    async fn expect_healthy(&self, broken: &Broken) {
        let (name, binding) = (broken.name(), broken.binding());
        wait_for(&format!("{name}: healthy on the binding"), Duration::from_secs(90), || async {
            self.binding(&binding)
                .await
                .is_some_and(|(status, _, detail)| status == "True" && detail.is_none())
        })
        .await;
        if broken.aggregated() {
            wait_for(&format!("{name}: healthy on the template"), Duration::from_secs(60), || async {
                self.template(broken).await.is_some_and(|(status, _)| status == "True")
            })
            .await;
        }
        let (detail, _) = self.work(&binding).await.unwrap();
        assert_eq!(detail, None, "{name}: no detail on a healthy Work");
    }
}

/// The scheduler's own message on the member's pods of `app`.
async fn scheduler_message(member: Client, app: &str) -> Option<String> {
    let pods = Api::<Pod>::namespaced(member, "demo");
    let list = pods.list(&ListParams::default().labels(&format!("app={app}"))).await.ok()?;
    list.items.into_iter().find_map(|pod| {
        let scheduled = pod.status?.conditions?.into_iter().find(|c| c.type_ == "PodScheduled")?;
        (scheduled.status == "False").then_some(scheduled.message?)
    })
}

#[tokio::test]
async fn why_a_member_workload_is_unhealthy_reaches_the_work_the_binding_and_the_template() {
    let fleet = Fleet::start(&["eu"], &[]).await;
    let hub = fleet.hub.client();
    let member = fleet.member("m1").client();
    create_namespace(&hub, "demo").await;
    // Healthy beside the others: the condition is not False for everything.
    let fine = Broken { template: deployment("fine", 1, json!({}), json!({})), reason: "", verdict: "True" };
    let no_node = json!({"nodeSelector": {"flotilla.io/no-such-node": "true"}});
    let unplaceable = Broken {
        template: deployment("unplaceable", 2, json!({}), no_node.clone()),
        reason: "Unschedulable",
        verdict: "False",
    };
    let never_pulled = Broken {
        template: bare_pod(
            "never-pulled",
            json!({"image": "flotilla.local/missing:1", "imagePullPolicy": "Never"}),
        ),
        reason: "ErrImageNeverPull",
        verdict: "False",
    };
    // A Job is judged when it ends; until then its pods say what holds it.
    let job_waiting =
        Broken { template: job("waiting", no_node), reason: "Unschedulable", verdict: "Unknown" };
    let all = [&fine, &unplaceable, &never_pulled, &job_waiting];
    apply(
        &hub,
        json!({
            "apiVersion": "policy.flotilla.io/v1alpha1", "kind": "PropagationPolicy",
            "metadata": {"name": "health", "namespace": "demo"},
            "spec": {"resourceSelectors": all.iter().map(|b| b.selector()).collect::<Vec<_>>(),
                     "placement": {"clusterAffinity": {"clusterNames": ["m1"]}}}
        }),
    )
    .await;
    for broken in all {
        apply(&hub, broken.template.clone()).await;
    }
    let views = Views::new(hub.clone());
    views.expect_healthy(&fine).await;

    // Pods no node fits: the scheduler's words, both pods counted.
    let detail = views.expect_unhealthy(&unplaceable).await;
    let scheduler_says = scheduler_message(member.clone(), "unplaceable").await.unwrap();
    assert!(scheduler_says.contains("node affinity/selector"), "{scheduler_says}");
    assert_eq!(detail.message, format!("{scheduler_says} (2 of 2 pods)"));
    assert_eq!(detail.restart_count, None);
    let (_, message, _) = views.binding(&unplaceable.binding()).await.unwrap();
    assert_eq!(message, format!("m1: Unschedulable: {scheduler_says} (2 of 2 pods)"));
    let (_, message) = views.template(&unplaceable).await.unwrap();
    assert_eq!(message, format!("m1: Unschedulable: {scheduler_says} (2 of 2 pods)"));

    // An image the node does not have, with a policy that never pulls: the
    // kubelet's words; a pod that cannot start is unhealthy, not unknown.
    let detail = views.expect_unhealthy(&never_pulled).await;
    assert_eq!(
        detail.message,
        "container app: Container image \"flotilla.local/missing:1\" is not present with pull policy of Never"
    );

    let detail = views.expect_unhealthy(&job_waiting).await;
    assert!(detail.message.ends_with("(1 of 1 pods)"), "{}", detail.message);

    // The node gets the label but a taint too: the scheduler's message
    // changes and the Deployment's status does not, so only following the
    // pods brings the Work up to date.
    let nodes: Api<Node> = Api::all(member.clone());
    let node = nodes.list(&ListParams::default()).await.unwrap().items.remove(0).metadata.name.unwrap();
    let closed = json!({"metadata": {"labels": {"flotilla.io/no-such-node": "true"}},
        "spec": {"taints": [{"key": "flotilla.io/closed", "value": "true", "effect": "NoSchedule"}]}});
    nodes.patch(&node, &PatchParams::default(), &Patch::Merge(&closed)).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let work = views.work(&unplaceable.binding()).await;
        let now_says = scheduler_message(member.clone(), "unplaceable").await;
        let said = work.as_ref().and_then(|(d, _)| d.as_ref()).map(|d| d.message.clone());
        if let (Some(said), Some(now_says)) = (&said, &now_says) {
            if now_says.contains("taint") && *said == format!("{now_says} (2 of 2 pods)") {
                break;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the Work says {said:?}, the scheduler {now_says:?}: not the same words about the taint"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_for("the template to give them too", Duration::from_secs(60), || async {
        views.template(&unplaceable).await.is_some_and(|(_, message)| message.contains("taint"))
    })
    .await;

    // Fixed: every view turns healthy and the detail goes.
    let open = json!({"spec": {"taints": null}});
    nodes.patch(&node, &PatchParams::default(), &Patch::Merge(&open)).await.unwrap();
    views.expect_healthy(&unplaceable).await;
    let (status, _, _) = views.binding(&never_pulled.binding()).await.unwrap();
    assert_eq!(status, "False", "the broken Pod still says so");
}
