#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Karmada's failover, replayed on a real fleet (a hub and two members
//! with hollow nodes, pull agents): a `NoExecute` taint added by hand,
//! tolerated for 2 s as in Karmada's end-to-end suite, evacuates the
//! cluster without the hub touching the taint; an application unhealthy in
//! its member (its pods cannot be scheduled there: the member's real
//! scheduler says so) fails over on its own, carrying its preserved state
//! to the new copy as labels.

use std::time::{Duration, Instant};

use flotilla_api::cluster::ManagedCluster;
use flotilla_api::work::ResourceBinding;
use flotilla_localkube::wait_for;
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use serde_json::json;

use flotilla_testkit as support;
use support::bindings::chosen;
use support::clusters::set_taints;
use support::policies::{graceful_app_failover, one_cluster_of, propagate_deployment};
use support::workloads::deployment;
use support::{apply, create_namespace, Fleet};

async fn has_copy(fleet: &Fleet, member: &str, name: &str) -> bool {
    Api::<Deployment>::namespaced(fleet.member(member).client(), "demo")
        .get_opt(name)
        .await
        .unwrap()
        .is_some()
}

/// Waits for `web` placed on one cluster of `m1` and `m2`; returns that
/// cluster and the other.
async fn placed_on_one(bindings: &Api<ResourceBinding>) -> (String, &'static str) {
    wait_for("web placed on one cluster", Duration::from_secs(60), || async {
        chosen(bindings, "web-deployment").await.len() == 1
    })
    .await;
    let first = chosen(bindings, "web-deployment").await.remove(0);
    let other = if first == "m1" { "m2" } else { "m1" };
    (first, other)
}

#[tokio::test]
async fn a_hand_added_no_execute_taint_evacuates_after_its_toleration_and_is_left_as_written() {
    let fleet = Fleet::start(&["eu", "us"], &[]).await;
    let hub = fleet.hub.client();
    create_namespace(&hub, "demo").await;
    // Karmada's end-to-end policy, only the apiVersion changed.
    let mut placement = one_cluster_of(&["m1", "m2"]);
    placement["clusterTolerations"] = json!([{"key": "cluster.karmada.io/not-ready", "operator": "Exists",
        "effect": "NoExecute", "tolerationSeconds": 2}]);
    propagate_deployment(&hub, "demo", "web", json!({"placement": placement})).await;
    apply(&hub, deployment("web", 1, "nginx:1.25", None)).await;
    let bindings = Api::<ResourceBinding>::namespaced(hub.clone(), "demo");
    let (first, other) = placed_on_one(&bindings).await;
    wait_for("web running where it was placed", Duration::from_secs(60), || async {
        has_copy(&fleet, &first, "web").await
    })
    .await;

    // A person taints the cluster as Karmada's suite does, with no timeAdded.
    let clusters: Api<ManagedCluster> = Api::all(hub.clone());
    let taint = json!([{"key": "cluster.karmada.io/not-ready", "effect": "NoExecute"}]);
    set_taints(&clusters, &first, taint.clone()).await;
    let tainted = Instant::now();
    wait_for("web moved off the tainted cluster", Duration::from_secs(60), || async {
        chosen(&bindings, "web-deployment").await == [other]
    })
    .await;
    assert!(
        tainted.elapsed() >= Duration::from_secs(1),
        "moved {:?} after the taint: before its 2 s toleration",
        tainted.elapsed()
    );
    wait_for("the copy on the tainted cluster removed", Duration::from_secs(90), || async {
        !has_copy(&fleet, &first, "web").await
    })
    .await;
    let written = serde_json::to_value(&clusters.get(&first).await.unwrap().spec.taints).unwrap();
    assert_eq!(written, taint, "the hub left the person's taint as written");

    // Any maintenance key, untolerated, evacuates at once; the first
    // cluster, untainted, takes the template back.
    set_taints(&clusters, &first, json!([])).await;
    set_taints(&clusters, other, json!([{"key": "example.com/maintenance", "effect": "NoExecute"}])).await;
    wait_for("web moved off the cluster in maintenance", Duration::from_secs(60), || async {
        chosen(&bindings, "web-deployment").await == [first.clone()]
    })
    .await;
    wait_for("the copy on the cluster in maintenance removed", Duration::from_secs(90), || async {
        !has_copy(&fleet, other, "web").await
    })
    .await;
    let written = serde_json::to_value(&clusters.get(other).await.unwrap().spec.taints).unwrap();
    assert_eq!(written, json!([{"key": "example.com/maintenance", "effect": "NoExecute"}]));
}

#[tokio::test]
async fn an_unhealthy_application_fails_over_and_its_preserved_state_reaches_the_new_copy() {
    let fleet = Fleet::start(&["eu", "us"], &[]).await;
    let hub = fleet.hub.client();
    create_namespace(&hub, "demo").await;
    // Karmada's documented application failover policy, with state
    // preservation; only the apiVersion changed.
    let rules = json!([
        {"aliasLabelName": "failover.example.com/replicas", "jsonPath": "{.replicas}"},
        {"aliasLabelName": "failover.example.com/updated", "jsonPath": "{ .updatedReplicas }"}]);
    propagate_deployment(&hub, "demo", "web", graceful_app_failover(120, rules)).await;
    apply(&hub, deployment("web", 1, "nginx:1.25", None)).await;
    let bindings = Api::<ResourceBinding>::namespaced(hub.clone(), "demo");
    let (first, other) = placed_on_one(&bindings).await;
    let available = |member: String| {
        let api = Api::<Deployment>::namespaced(fleet.member(&member).client(), "demo");
        async move {
            api.get_opt("web").await.unwrap().and_then(|d| d.status).and_then(|s| s.available_replicas)
                == Some(1)
        }
    };
    wait_for("web available where it was placed", Duration::from_secs(60), || available(first.clone())).await;

    // Its copy there turns unhealthy: its new pods ask for a node the
    // member does not have (the member's scheduler leaves them Pending).
    apply(
        &hub,
        json!({
            "apiVersion": "policy.flotilla.io/v1alpha1", "kind": "OverridePolicy",
            "metadata": {"name": "break-web", "namespace": "demo"},
            "spec": {"resourceSelectors": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}],
                "overrideRules": [{"targetCluster": {"clusterNames": [first.clone()]},
                    "overriders": {"plaintext": [{"path": "/spec/template/spec/nodeSelector",
                        "operator": "add", "value": {"flotilla.test/no-such-node": "true"}}]}}]}
        }),
    )
    .await;
    wait_for("web failed over to the other cluster", Duration::from_secs(120), || async {
        chosen(&bindings, "web-deployment").await == [other]
    })
    .await;
    let b = bindings.get("web-deployment").await.unwrap();
    let task = b.spec.spec.graceful_eviction_tasks.iter().find(|t| t.from_cluster == first);
    // The task may already be done if the new copy was quick: then its
    // record is the binding's preserved state.
    if let Some(task) = task {
        assert_eq!(task.reason, "ApplicationFailure");
        assert_eq!(task.grace_period_seconds, Some(120));
        assert_eq!(task.clusters_before_failover, std::slice::from_ref(&first));
    }
    let preserved = &b.spec.spec.preserved_states;
    assert_eq!(preserved.len(), 1, "{preserved:?}");
    assert_eq!(preserved[0].cluster, other);
    // The stuck rollout: the old pod and the new Pending one (surge).
    assert_eq!(preserved[0].labels.get("failover.example.com/replicas").map(String::as_str), Some("2"));
    assert_eq!(preserved[0].labels.get("failover.example.com/updated").map(String::as_str), Some("1"));

    wait_for("web available on the other cluster", Duration::from_secs(60), || available(other.to_string()))
        .await;
    let copy = Api::<Deployment>::namespaced(fleet.member(other).client(), "demo").get("web").await.unwrap();
    let labels = copy.metadata.labels.unwrap_or_default();
    assert_eq!(labels.get("failover.example.com/replicas").map(String::as_str), Some("2"), "{labels:?}");
    assert_eq!(labels.get("failover.example.com/updated").map(String::as_str), Some("1"), "{labels:?}");
    assert_eq!(labels.get("app").map(String::as_str), Some("web"), "the template's own labels stay");
    // Graciously: the failed copy goes once the new one is healthy.
    wait_for("the failed copy removed", Duration::from_secs(90), || async {
        !has_copy(&fleet, &first, "web").await
    })
    .await;
    wait_for("the eviction task done", Duration::from_secs(30), || async {
        bindings.get("web-deployment").await.unwrap().spec.spec.graceful_eviction_tasks.is_empty()
    })
    .await;
    // The new copy keeps its state once the old one is gone, and the
    // template does not go back to the cluster it failed in.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(chosen(&bindings, "web-deployment").await, [other]);
    let copy = Api::<Deployment>::namespaced(fleet.member(other).client(), "demo").get("web").await.unwrap();
    assert_eq!(
        copy.metadata.labels.unwrap_or_default().get("failover.example.com/replicas").map(String::as_str),
        Some("2")
    );
}

#[tokio::test]
async fn a_cluster_failover_purges_directly_and_carries_the_state_when_the_policy_says_so() {
    let fleet = Fleet::start(&["eu", "us"], &[]).await;
    let hub = fleet.hub.client();
    create_namespace(&hub, "demo").await;
    propagate_deployment(
        &hub,
        "demo",
        "web",
        json!({
            "failover": {"cluster": {"purgeMode": "Directly", "statePreservation": {"rules": [
                {"aliasLabelName": "failover.example.com/ready", "jsonPath": "{.readyReplicas}"}]}}},
            "placement": one_cluster_of(&["m1", "m2"]),
        }),
    )
    .await;
    apply(&hub, deployment("web", 1, "nginx:1.25", None)).await;
    let bindings = Api::<ResourceBinding>::namespaced(hub.clone(), "demo");
    let (first, other) = placed_on_one(&bindings).await;
    let ready = Api::<Deployment>::namespaced(fleet.member(&first).client(), "demo");
    wait_for("web ready where it was placed, and reported", Duration::from_secs(60), || async {
        let ready_there =
            ready.get_opt("web").await.unwrap().and_then(|d| d.status).and_then(|s| s.ready_replicas);
        let b = bindings.get("web-deployment").await.unwrap();
        let reported = b.status.is_some_and(|s| {
            s.aggregated_status
                .iter()
                .any(|i| i.cluster_name == first && i.health == flotilla_api::work::Health::Healthy)
        });
        ready_there == Some(1) && reported
    })
    .await;

    let clusters: Api<ManagedCluster> = Api::all(hub.clone());
    set_taints(&clusters, &first, json!([{"key": "example.com/maintenance", "effect": "NoExecute"}])).await;
    wait_for("web moved off the cluster in maintenance", Duration::from_secs(60), || async {
        chosen(&bindings, "web-deployment").await == [other]
    })
    .await;
    let b = bindings.get("web-deployment").await.unwrap();
    assert!(b.spec.spec.graceful_eviction_tasks.is_empty(), "Directly keeps no copy: {:?}", b.spec.spec);
    let preserved = &b.spec.spec.preserved_states;
    assert_eq!(preserved.len(), 1, "{preserved:?}");
    assert_eq!(preserved[0].cluster, other);
    assert_eq!(preserved[0].labels.get("failover.example.com/ready").map(String::as_str), Some("1"));
    // Removed at once, not after the new copy is healthy.
    wait_for("the copy on the cluster in maintenance removed", Duration::from_secs(30), || async {
        !has_copy(&fleet, &first, "web").await
    })
    .await;
    let copies = Api::<Deployment>::namespaced(fleet.member(other).client(), "demo");
    wait_for("the new copy carries the preserved state", Duration::from_secs(60), || async {
        copies.get_opt("web").await.unwrap().is_some_and(|d| {
            d.metadata.labels.unwrap_or_default().get("failover.example.com/ready").map(String::as_str)
                == Some("1")
        })
    })
    .await;
}
