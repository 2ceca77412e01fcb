#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A FederatedHPA scales an application fleet-wide from real metrics: two
//! members on real nodes (containerd, real kubelets), each with a real
//! metrics-server registered as `v1beta1.metrics.k8s.io`. The Deployment
//! is divided between them; the agents report their pods' usage on the
//! Works; load switched on in one member's pod (it burns CPU while a file
//! exists) scales the template up to the maximum, the binder divides it
//! over both members; load off, it comes back to the minimum after the
//! scale-down stabilisation window. Status, conditions and Events checked.

use flotilla_testkit as support;

use std::time::Duration;

use flotilla_api::autoscaling::{FederatedHPA, FederatedHPAStatus};
use flotilla_hub::HubConfig;
use flotilla_localkube::metrics_server::MetricsServer;
use flotilla_localkube::real_node::{RealNodeConfig, RealNodes, BUSYBOX_IMAGE};
use flotilla_localkube::{wait_for_state, Cluster, ClusterConfig};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{AttachParams, ListParams};
use kube::Api;
use serde_json::json;
use support::policies::{divided_by_weights, propagate_deployment};
use support::{apply, create_namespace, Fleet};
use tokio::io::AsyncReadExt;

const NS: &str = "shop";
// The numbers leave room for a loaded machine: a pod requests 50m and the
// target is 20% of it, so holding 6 replicas above the maximum takes some
// 70m of burnt CPU, where one busy pod gets about 200m with the machine's
// two cores fully taken (an idle pod uses 1-2m).
const WAIT: Duration = Duration::from_secs(240);
/// Burns CPU (at the lowest priority) while /tmp/load exists.
const LOAD_LOOP: &str = "trap 'exit 0' TERM; while true; do if [ -f /tmp/load ]; then \
    nice -n 19 sh -c 'i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done'; else sleep 1; fi; done";

fn deployment() -> serde_json::Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": NS},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "main",
                    "image": BUSYBOX_IMAGE, "imagePullPolicy": "IfNotPresent",
                    "resources": {"requests": {"cpu": "50m", "memory": "16Mi"}},
                    "command": ["sh", "-c", LOAD_LOOP]}]}}},
    })
}

async fn hub_replicas(hub: &kube::Client) -> Option<i32> {
    Api::<Deployment>::namespaced(hub.clone(), NS).get("web").await.ok()?.spec.replicas
}

async fn member_replicas(member: &Cluster) -> i32 {
    let d = Api::<Deployment>::namespaced(member.client(), NS).get_opt("web").await.ok().flatten();
    d.and_then(|d| d.spec.replicas).unwrap_or(0)
}

async fn status(hpas: &Api<FederatedHPA>) -> FederatedHPAStatus {
    hpas.get("web").await.unwrap().status.unwrap_or_default()
}

fn condition(status: &FederatedHPAStatus, type_: &str) -> (String, String) {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone()))
        .unwrap_or_default()
}

/// Where the scaling stands, for a timeout's message: the template's and the
/// members' replicas, the FederatedHPA's numbers, conditions and usage.
async fn seen(hub: &kube::Client, hpas: &Api<FederatedHPA>, m1: &Cluster, m2: &Cluster) -> String {
    let s = status(hpas).await;
    let conditions: Vec<String> = s
        .conditions
        .iter()
        .map(|c| format!("{}={} {}: {}", c.type_, c.status, c.reason, c.message))
        .collect();
    let usage: Vec<String> = s.clusters.iter().map(|c| format!("{}: {:?}", c.cluster, c.usage)).collect();
    format!(
        "template {:?}, m1 {}, m2 {}; current {} desired {}; metrics {:?}; conditions [{}]; usage [{}]",
        hub_replicas(hub).await,
        member_replicas(m1).await,
        member_replicas(m2).await,
        s.current_replicas,
        s.desired_replicas,
        s.current_metrics,
        conditions.join("; "),
        usage.join("; ")
    )
}

/// `Ok` when `holds`, else where things stand.
async fn check(
    holds: bool,
    hub: &kube::Client,
    hpas: &Api<FederatedHPA>,
    fleet: &Fleet,
) -> Result<(), String> {
    if holds {
        return Ok(());
    }
    Err(seen(hub, hpas, fleet.member("m1"), fleet.member("m2")).await)
}

/// Runs `command` in the member's first running pod, or (`every`) in each.
async fn exec(member: &Cluster, command: &str, every: bool) {
    let pods: Api<Pod> = Api::namespaced(member.client(), NS);
    let list = pods.list(&ListParams::default().labels("app=web")).await.unwrap();
    let running: Vec<String> = list
        .items
        .iter()
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        // A pod being deleted after a scale down still says Running.
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    assert!(!running.is_empty(), "a running pod");
    for name in running.iter().take(if every { running.len() } else { 1 }) {
        exec_in(&pods, name, command).await;
    }
}

async fn exec_in(pods: &Api<Pod>, name: &str, command: &str) {
    let mut attached =
        pods.exec(name, vec!["sh", "-c", command], &AttachParams::default().stderr(false)).await.unwrap();
    let mut out = attached.stdout().unwrap();
    let status = attached.take_status().unwrap();
    let mut output = String::new();
    out.read_to_string(&mut output).await.unwrap();
    let status = status.await;
    attached.join().await.unwrap();
    assert_eq!(status.as_ref().and_then(|s| s.status.as_deref()), Some("Success"), "{command}: {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_in_one_member_scales_the_application_fleet_wide_and_back_down() {
    let mut nodes = RealNodes::reserve().unwrap();
    let members = vec![
        ClusterConfig::new("m1").for_real_nodes(nodes.gateway()).with_aggregation(),
        ClusterConfig::new("m2").for_real_nodes(nodes.gateway()).with_aggregation(),
    ];
    let hub_config = HubConfig { autoscaling_sync: Duration::from_secs(3), ..Default::default() };
    let fleet = Fleet::start_with_members_and_hub(members, &["eu", "eu"], hub_config).await;
    for m in ["m1", "m2"] {
        let node = RealNodeConfig::new(format!("{m}-real-1"));
        nodes.start(fleet.member(m), vec![node], Duration::from_secs(120)).await.unwrap();
    }
    let _metrics = [
        MetricsServer::start(fleet.member("m1"), nodes.gateway(), Duration::from_secs(10)).await.unwrap(),
        MetricsServer::start(fleet.member("m2"), nodes.gateway(), Duration::from_secs(10)).await.unwrap(),
    ];
    let hub = fleet.hub.client();
    create_namespace(&hub, NS).await;
    let placement = divided_by_weights(&[(&["m1"], 1), (&["m2"], 1)]);
    propagate_deployment(&hub, NS, "web", json!({"placement": placement})).await;
    apply(&hub, deployment()).await;
    apply(
        &hub,
        json!({
            "apiVersion": "autoscaling.flotilla.io/v1alpha1", "kind": "FederatedHPA",
            "metadata": {"name": "web", "namespace": NS},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "minReplicas": 2, "maxReplicas": 6,
                "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": 20}}}],
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 20}}},
        }),
    )
    .await;
    let hpas: Api<FederatedHPA> = Api::namespaced(hub.clone(), NS);

    // Idle: both members report metrics for their pod; nothing moves.
    wait_for_state("both members' usage reported and the metrics valid", WAIT, || async {
        let s = status(&hpas).await;
        let holds = condition(&s, "ScalingActive") == ("True".into(), "ValidMetricFound".into())
            && s.clusters.len() == 2
            && s.clusters
                .iter()
                .all(|c| c.usage.pods_with_metrics == 1 && c.usage.cpu_requests_millicores == 50);
        check(holds, &hub, &hpas, &fleet).await
    })
    .await;
    let idle = status(&hpas).await;
    assert_eq!((idle.current_replicas, idle.desired_replicas), (2, 2), "{idle:?}");
    assert_eq!(hub_replicas(&hub).await, Some(2));
    let utilization = idle.current_metrics[0].resource.as_ref().unwrap().current.average_utilization.unwrap();
    assert!(utilization < 20, "idle pods use little of their request: {utilization}%");

    // Load in m1's pod: the fleet scales to the maximum, divided over both.
    exec(fleet.member("m1"), "touch /tmp/load", false).await;
    wait_for_state("the template scaled to the maximum", WAIT, || async {
        check(hub_replicas(&hub).await == Some(6), &hub, &hpas, &fleet).await
    })
    .await;
    wait_for_state("both members run their share of 6", WAIT, || async {
        let (m1, m2) = (member_replicas(fleet.member("m1")).await, member_replicas(fleet.member("m2")).await);
        check(m1 + m2 == 6 && m1 >= 2 && m2 >= 2, &hub, &hpas, &fleet).await
    })
    .await;
    wait_for_state("the maximum reported as the limit", WAIT, || async {
        let s = status(&hpas).await;
        let holds = s.desired_replicas == 6
            && condition(&s, "ScalingLimited") == ("True".into(), "TooManyReplicas".into());
        check(holds, &hub, &hpas, &fleet).await
    })
    .await;
    let loaded = status(&hpas).await;
    assert!(loaded.last_scale_time.is_some());
    let m1 = loaded.clusters.iter().find(|c| c.cluster == "m1").unwrap();
    assert!(m1.usage.cpu_usage_millicores > 50, "m1's load is reported: {m1:?}");
    let rescaled = support::event_with_reason(&hub, NS, "SuccessfulRescale").await;
    assert!(rescaled.message.as_deref().unwrap_or_default().contains("above target"), "{rescaled:?}");

    // Load off: back to the minimum once the down window has passed.
    exec(fleet.member("m1"), "rm -f /tmp/load", true).await;
    wait_for_state("the template back at the minimum", WAIT, || async {
        check(hub_replicas(&hub).await == Some(2), &hub, &hpas, &fleet).await
    })
    .await;
    wait_for_state("the members back to one each", WAIT, || async {
        let holds =
            member_replicas(fleet.member("m1")).await == 1 && member_replicas(fleet.member("m2")).await == 1;
        check(holds, &hub, &hpas, &fleet).await
    })
    .await;
    let back = status(&hpas).await;
    assert_eq!(back.desired_replicas, 2, "{back:?}");
    assert_eq!(condition(&back, "AbleToScale").0, "True");
    assert!(!back.recommendations.is_empty() && back.recommendations.len() <= 100);
    drop(fleet);
    drop(nodes);
}
