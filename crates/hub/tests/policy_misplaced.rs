#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The policy CRDs alone (no hub, no webhook) make a real API server refuse
//! a block written one level off with where it belongs, for any client:
//! Karmada's own documentation has `clusterAffinity` under `spec` instead
//! of `spec.placement`. Karmada's preemption, lazy activation and schedule
//! priority fields are admitted as Karmada writes them.

use flotilla_localkube::{Cluster, ClusterConfig};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, PostParams};
use kube::{Api, Client};
use serde_json::{json, Value};

fn policies(client: &Client, kind: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("policy.flotilla.io", "v1alpha1", kind);
    let resource = ApiResource::from_gvk(&gvk);
    if kind.starts_with("Cluster") {
        Api::all_with(client.clone(), &resource)
    } else {
        Api::namespaced_with(client.clone(), "default", &resource)
    }
}

async fn create(client: &Client, kind: &str, name: &str, spec: Value) -> Result<DynamicObject, String> {
    let mut metadata = json!({"name": name});
    if !kind.starts_with("Cluster") {
        metadata["namespace"] = json!("default");
    }
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "policy.flotilla.io/v1alpha1", "kind": kind, "metadata": metadata, "spec": spec}))
    .unwrap();
    policies(client, kind).create(&PostParams::default(), &object).await.map_err(|e| match e {
        kube::Error::Api(status) => status.message,
        other => other.to_string(),
    })
}

fn nginx() -> Value {
    json!([{"apiVersion": "apps/v1", "kind": "Deployment", "name": "nginx"}])
}

#[tokio::test]
async fn misplaced_blocks_are_refused_with_where_they_belong() {
    let hub = Cluster::start(ClusterConfig::hub("hub")).await.unwrap();
    flotilla_hub::install(&hub.client()).await.unwrap();
    let client = hub.client();

    let cases = [
        (
            "PropagationPolicy",
            // Karmada's docs' mis-indented example.
            json!({"resourceSelectors": nginx(), "clusterAffinity": {"clusterNames": ["member1"]}}),
            "spec.clusterAffinity",
            "misplaced field: `clusterAffinity` belongs under `spec.placement`",
        ),
        (
            "ClusterPropagationPolicy",
            json!({"resourceSelectors": nginx(),
                "clusterTolerations": [{"key": "k", "operator": "Exists", "effect": "NoExecute"}]}),
            "spec.clusterTolerations",
            "`clusterTolerations` belongs under `spec.placement`",
        ),
        (
            "PropagationPolicy",
            json!({"resourceSelectors": nginx(), "replicaScheduling": {"replicaSchedulingType": "Divided"}}),
            "spec.replicaScheduling",
            "`replicaScheduling` belongs under `spec.placement`",
        ),
        (
            "PropagationPolicy",
            json!({"resourceSelectors": nginx(), "placement": {"clusterNames": ["member1"]}}),
            "spec.placement.clusterNames",
            "`clusterNames` belongs under `spec.placement.clusterAffinity`",
        ),
        (
            "PropagationPolicy",
            json!({"resourceSelectors": nginx(), "placement": {"replicaDivisionPreference": "Weighted"}}),
            "spec.placement.replicaDivisionPreference",
            "`replicaDivisionPreference` belongs under `spec.placement.replicaScheduling`",
        ),
        (
            "PropagationPolicy",
            json!({"placement": {"resourceSelectors": nginx()}, "resourceSelectors": nginx()}),
            "spec.placement.resourceSelectors",
            "`resourceSelectors` belongs under `spec`",
        ),
        (
            "OverridePolicy",
            // Beside its `overriders` (without them the schema's "Required
            // value" comes first).
            json!({"resourceSelectors": nginx(), "overrideRules": [
                {"overriders": {"labelsOverrider": [{"operator": "add", "value": {"a": "b"}}]},
                 "plaintext": [{"path": "/metadata/labels/a", "operator": "add", "value": "b"}]}]}),
            "spec.overrideRules[0].plaintext",
            "`plaintext` belongs under `spec.overrideRules[].overriders`",
        ),
        (
            "ClusterOverridePolicy",
            json!({"resourceSelectors": nginx(), "overrideRules": [
                {"overriders": {"targetCluster": {"clusterNames": ["member1"]}}}]}),
            "spec.overrideRules[0].overriders.targetCluster",
            "`targetCluster` belongs under `spec.overrideRules[]`",
        ),
    ];
    for (i, (kind, spec, path, needle)) in cases.into_iter().enumerate() {
        let message = create(&client, kind, &format!("misplaced-{i}"), spec)
            .await
            .expect_err("the API server accepted a misplaced block");
        assert!(message.contains(path) && message.contains(needle), "{kind} {path}: {message}");
    }

    // The same blocks where they belong, and Karmada's claim fields, are
    // admitted.
    let placed = json!({"resourceSelectors": nginx(), "priority": 3, "preemption": "Always",
        "activationPreference": "Lazy",
        "schedulePriority": {"priorityClassSource": "KubePriorityClass", "priorityClassName": "high"},
        "placement": {"clusterAffinity": {"clusterNames": ["member1"]},
            "clusterTolerations": [{"key": "k", "operator": "Exists", "effect": "NoExecute"}],
            "replicaScheduling": {"replicaSchedulingType": "Divided", "replicaDivisionPreference": "Weighted"}}});
    let stored = create(&client, "PropagationPolicy", "placed", placed).await.unwrap();
    assert_eq!(stored.data["spec"]["preemption"], "Always");
    assert_eq!(stored.data["spec"]["activationPreference"], "Lazy");
    assert_eq!(stored.data["spec"]["schedulePriority"]["priorityClassName"], "high");
    // Values Karmada does not have are refused by the enums.
    for (field, value) in [("preemption", "Sometimes"), ("activationPreference", "Eager")] {
        let mut spec = json!({"resourceSelectors": nginx()});
        spec[field] = json!(value);
        let message = create(&client, "PropagationPolicy", "bad-enum", spec).await.unwrap_err();
        assert!(message.contains(&format!("spec.{field}")), "{message}");
    }
    let source = json!({"resourceSelectors": nginx(),
        "schedulePriority": {"priorityClassSource": "PodPriorityClass", "priorityClassName": "high"}});
    let message = create(&client, "PropagationPolicy", "bad-source", source).await.unwrap_err();
    assert!(message.contains("spec.schedulePriority.priorityClassSource"), "{message}");
}
