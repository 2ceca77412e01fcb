//! Writing placement policies: a PropagationPolicy for one Deployment and
//! the placements the tests use most.

use kube::Client;
use serde_json::json;

use super::apply;

/// Applies the PropagationPolicy `name` selecting the Deployment `name` in
/// `namespace`, with the rest of its `spec` (placement, failover, ...).
pub async fn propagate_deployment(hub: &Client, namespace: &str, name: &str, mut spec: serde_json::Value) {
    spec["resourceSelectors"] = json!([{"apiVersion": "apps/v1", "kind": "Deployment", "name": name}]);
    propagation_policy(hub, namespace, name, spec).await;
}

/// Applies the PropagationPolicy `name` selecting every Deployment of
/// `namespace`, with the rest of its `spec`.
pub async fn propagate_every_deployment(
    hub: &Client,
    namespace: &str,
    name: &str,
    mut spec: serde_json::Value,
) {
    spec["resourceSelectors"] = json!([{"apiVersion": "apps/v1", "kind": "Deployment"}]);
    propagation_policy(hub, namespace, name, spec).await;
}

/// Applies the PropagationPolicy `name` in `namespace` with `spec`.
pub async fn propagation_policy(hub: &Client, namespace: &str, name: &str, spec: serde_json::Value) {
    apply(
        hub,
        json!({
            "apiVersion": "policy.flotilla.io/v1alpha1", "kind": "PropagationPolicy",
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }),
    )
    .await;
}

/// A placement dividing replicas by static weights: each entry names the
/// clusters of one weight.
pub fn divided_by_weights(weights: &[(&[&str], i32)]) -> serde_json::Value {
    let list: Vec<serde_json::Value> = weights
        .iter()
        .map(|(clusters, weight)| json!({"targetCluster": {"clusterNames": clusters}, "weight": weight}))
        .collect();
    json!({"replicaScheduling": {"replicaSchedulingType": "Divided",
        "replicaDivisionPreference": "Weighted",
        "weightPreference": {"staticWeightList": list}}})
}

/// A placement choosing exactly one of `clusters` (Karmada's spread by
/// cluster, one group).
pub fn one_cluster_of(clusters: &[&str]) -> serde_json::Value {
    json!({
        "clusterAffinity": {"clusterNames": clusters},
        "spreadConstraints": [{"spreadByField": "cluster", "maxGroups": 1, "minGroups": 1}],
    })
}

/// A policy spec (for [`propagate_deployment`]) with Karmada's documented
/// application failover: unhealthy for 10 s, purged gracefully after
/// `grace_seconds`, the state-preservation `rules` carried to the new copy;
/// on one of m1 and m2, dependencies followed.
pub fn graceful_app_failover(grace_seconds: i64, rules: serde_json::Value) -> serde_json::Value {
    json!({
        "propagateDeps": true,
        "failover": {"application": {
            "decisionConditions": {"tolerationSeconds": 10},
            "purgeMode": "Graciously", "gracePeriodSeconds": grace_seconds,
            "statePreservation": {"rules": rules}}},
        "placement": one_cluster_of(&["m1", "m2"]),
    })
}
