#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Descheduling across a real fleet: replicas the member's own
//! kube-scheduler leaves Pending as unschedulable move to a cluster with
//! room after the hub's threshold, the member keeps the replicas it runs,
//! and they do not come back to it while its capacity is unchanged.
//!
//! Why m1's pods stay Pending while the hub gave them to it: every pod
//! refuses to share a node with another (required pod anti-affinity on
//! the hostname), so a node runs one of them. m1 has two big nodes (its
//! reported room is large, so the division by available replicas gives it
//! most of them) but runs only two; m2 has three small nodes and runs
//! three. The hub's estimate counts each node's free resources, host ports
//! and node constraints, not other pods' affinities, so it misleads it.

use std::time::Duration;

use flotilla_api::work::ResourceBinding;
use flotilla_apps_core::deschedule::DescheduleSettings;
use flotilla_hub::HubConfig;
use flotilla_localkube::{wait_for, Cluster, ClusterConfig, NodeConfig};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::ListParams;
use kube::Api;
use serde_json::json;

use flotilla_testkit as support;
use support::bindings::{division, pairs};
use support::policies::propagate_deployment;
use support::{apply, create_namespace, Fleet};

fn deployment(replicas: i32) -> serde_json::Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "demo", "labels": {"app": "web"}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
                    "labelSelector": {"matchLabels": {"app": "web"}},
                    "topologyKey": "kubernetes.io/hostname"}]}},
                "containers": [{
                "name": "app", "image": "registry.example.com/web:1",
                "resources": {"requests": {"cpu": "100m", "memory": "16Mi"}}}]}}}
    })
}

/// (spec.replicas, pods on a node, pods Pending without one) of `web` in a member.
async fn member_pods(member: &Cluster) -> (i32, usize, usize) {
    let d = Api::<Deployment>::namespaced(member.client(), "demo").get_opt("web").await.unwrap();
    let spec = d.and_then(|d| d.spec.replicas).unwrap_or(0);
    let pods = Api::<Pod>::namespaced(member.client(), "demo")
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect::<Vec<_>>();
    let placed = pods.iter().filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some()).count();
    (spec, placed, pods.len() - placed)
}

#[tokio::test]
async fn unschedulable_replicas_move_after_the_threshold_and_do_not_come_back() {
    let m1 = ClusterConfig::new("m1")
        .with_node(NodeConfig::new("m1-a").capacity(4, "8Gi", 110))
        .with_node(NodeConfig::new("m1-b").capacity(4, "8Gi", 110));
    let mut m2 = ClusterConfig::new("m2");
    for node in ["m2-a", "m2-b", "m2-c"] {
        m2 = m2.with_node(NodeConfig::new(node).capacity(1, "2Gi", 110));
    }
    let hub_config = HubConfig {
        deschedule: DescheduleSettings { unschedulable_threshold: Duration::from_secs(3) },
        ..Default::default()
    };
    let fleet = Fleet::start_with_members_and_hub(vec![m1, m2], &["eu", "us"], hub_config).await;
    let hub = fleet.hub.client();
    create_namespace(&hub, "demo").await;
    let placement = json!({"replicaScheduling": {"replicaSchedulingType": "Divided",
        "replicaDivisionPreference": "Weighted",
        "weightPreference": {"dynamicWeight": "AvailableReplicas"}}});
    propagate_deployment(&hub, "demo", "web", json!({"placement": placement})).await;
    apply(&hub, deployment(4)).await;
    let bindings: Api<ResourceBinding> = Api::namespaced(hub.clone(), "demo");

    // The hub divides by what the clusters report: 80 cpu-wise in m1, 30 in
    // m2, so m1 gets 3; its scheduler places 2 (one per node) and leaves
    // one Pending. After the 3 s threshold it moves to m2.
    wait_for(
        "m1 keeps its 2 running replicas and m2 takes the stuck one",
        Duration::from_secs(120),
        || async {
            division(&bindings, "web-deployment").await == pairs(&[("m1", 2), ("m2", 2)])
                && member_pods(fleet.member("m1")).await == (2, 2, 0)
                && member_pods(fleet.member("m2")).await == (2, 2, 0)
        },
    )
    .await;
    let binding = bindings.get("web-deployment").await.unwrap();
    let records: Vec<(String, i32)> =
        binding.spec.spec.descheduled.iter().map(|r| (r.cluster.clone(), r.keeps)).collect();
    assert_eq!(records, pairs(&[("m1", 2)]), "the move is recorded on the binding");

    let events: Api<Event> = Api::namespaced(hub.clone(), "demo");
    wait_for("a Descheduled Event on the template", Duration::from_secs(20), || async {
        events.list(&Default::default()).await.unwrap().items.iter().any(|e| {
            e.reason.as_deref() == Some("Descheduled")
                && e.involved_object.name.as_deref() == Some("web")
                && e.message
                    .as_deref()
                    .unwrap_or_default()
                    .contains("Descheduled 1 replica from m1: unschedulable for")
        })
    })
    .await;

    // A scale-up is divided again by available replicas, where m1 still
    // looks roomiest; it is not refilled while its capacity is unchanged.
    apply(&hub, deployment(5)).await;
    wait_for("the new replica goes to m2", Duration::from_secs(60), || async {
        division(&bindings, "web-deployment").await == pairs(&[("m1", 2), ("m2", 3)])
            && member_pods(fleet.member("m2")).await == (3, 3, 0)
    })
    .await;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            division(&bindings, "web-deployment").await,
            pairs(&[("m1", 2), ("m2", 3)]),
            "replicas came back to m1"
        );
        assert_eq!(member_pods(fleet.member("m1")).await, (2, 2, 0));
    }
}
