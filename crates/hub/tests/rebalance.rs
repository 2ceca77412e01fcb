#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Rebalancing on request: a divided template keeps its clusters when a
//! cluster comes back (stability), until a `WorkloadRebalancer` asks for a
//! division from scratch; the rebalancer reports each workload's result
//! and goes after its ttl.

use std::time::Duration;

use flotilla_api::cluster::ManagedCluster;
use flotilla_api::rebalancer::{RebalanceResult, WorkloadRebalancer};
use flotilla_api::work::ResourceBinding;
use flotilla_localkube::wait_for;
use kube::api::{Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::json;

use flotilla_testkit as support;
use support::bindings::{division, pairs};
use support::policies::{divided_by_weights, propagate_deployment};
use support::workloads::deployment;
use support::{apply, create_namespace, Fleet};

/// The user's own taint on a cluster (applied with the field manager
/// `test`; an empty list removes it).
async fn set_user_taints(clusters: &Api<ManagedCluster>, name: &str, taints: serde_json::Value) {
    let patch = json!({"apiVersion": "cluster.flotilla.io/v1alpha1", "kind": "ManagedCluster",
        "metadata": {"name": name}, "spec": {"taints": taints}});
    clusters.patch(name, &PatchParams::apply("test").force(), &Patch::Apply(&patch)).await.unwrap();
}

#[tokio::test]
async fn a_returning_cluster_gets_replicas_only_when_a_rebalance_asks() {
    let fleet = Fleet::start(&["eu", "us"], &[]).await;
    let hub = fleet.hub.client();
    create_namespace(&hub, "demo").await;
    let clusters: Api<ManagedCluster> = Api::all(hub.clone());
    // m2 is away for maintenance when the template is placed.
    set_user_taints(&clusters, "m2", json!([{"key": "example.com/maintenance", "effect": "NoSchedule"}]))
        .await;
    let placement = divided_by_weights(&[(&["m1"], 1), (&["m2"], 1)]);
    propagate_deployment(&hub, "demo", "web", json!({"placement": placement})).await;
    apply(&hub, deployment("web", 4, "registry.example.com/web:1", None)).await;
    let bindings: Api<ResourceBinding> = Api::namespaced(hub.clone(), "demo");
    wait_for("every replica on m1 while m2 is away", Duration::from_secs(60), || async {
        division(&bindings, "web-deployment").await == pairs(&[("m1", 4)])
    })
    .await;

    // m2 is back: the division stays put.
    set_user_taints(&clusters, "m2", json!([])).await;
    wait_for("m2 without its taint", Duration::from_secs(20), || async {
        clusters.get("m2").await.unwrap().spec.taints.is_empty()
    })
    .await;
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            division(&bindings, "web-deployment").await,
            pairs(&[("m1", 4)]),
            "a returning cluster moved replicas"
        );
    }

    // A rebalance divides from scratch: evenly, as the weights say. A
    // workload without a binding fails on its own.
    let rebalancer: WorkloadRebalancer = serde_json::from_value(json!({
        "apiVersion": "apps.flotilla.io/v1alpha1", "kind": "WorkloadRebalancer",
        "metadata": {"name": "after-maintenance"},
        "spec": {"workloads": [
            {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "namespace": "demo"},
            {"apiVersion": "apps/v1", "kind": "Deployment", "name": "nothing", "namespace": "demo"}],
            "ttlSecondsAfterFinished": 3}
    }))
    .unwrap();
    let rebalancers: Api<WorkloadRebalancer> = Api::all(hub.clone());
    rebalancers.create(&PostParams::default(), &rebalancer).await.unwrap();
    wait_for("the rebalancer's results", Duration::from_secs(60), || async {
        let Some(r) = rebalancers.get_opt("after-maintenance").await.unwrap() else { return false };
        r.status.is_some_and(|s| s.finish_time.is_some())
    })
    .await;
    let status = rebalancers.get("after-maintenance").await.unwrap().status.unwrap();
    let results: Vec<(String, Option<RebalanceResult>, String)> = status
        .observed_workloads
        .iter()
        .map(|o| (o.workload.name.clone(), o.result, o.reason.clone()))
        .collect();
    assert_eq!(
        results,
        vec![
            ("web".to_string(), Some(RebalanceResult::Successful), String::new()),
            ("nothing".to_string(), Some(RebalanceResult::Failed), "ReferencedBindingNotFound".to_string()),
        ]
    );
    assert_eq!(division(&bindings, "web-deployment").await, pairs(&[("m1", 2), ("m2", 2)]));
    let binding = bindings.get("web-deployment").await.unwrap();
    assert!(binding.spec.spec.rebalanced.ends_with("/after-maintenance"), "{}", binding.spec.spec.rebalanced);

    // Done once: the division then stays (no second fresh division), and
    // the rebalancer goes after its ttl.
    wait_for("the rebalancer deleted after its ttl", Duration::from_secs(30), || async {
        rebalancers.get_opt("after-maintenance").await.unwrap().is_none()
    })
    .await;
    assert_eq!(division(&bindings, "web-deployment").await, pairs(&[("m1", 2), ("m2", 2)]));
}
