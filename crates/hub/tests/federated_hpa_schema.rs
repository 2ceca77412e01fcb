#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The API server itself refuses a bad FederatedHPA, with the reason (CRD
//! schema and CEL rules; no hub running), and admits Karmada's shape.

use flotilla_localkube::{Cluster, ClusterConfig};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, PostParams};
use kube::Api;
use serde_json::{json, Value};

fn hpa(name: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "autoscaling.flotilla.io/v1alpha1", "kind": "FederatedHPA",
        "metadata": {"name": name, "namespace": "default"}, "spec": spec,
    }))
    .unwrap()
}

fn cpu(target: Value) -> Value {
    json!([{"type": "Resource", "resource": {"name": "cpu", "target": target}}])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_federated_hpas_are_refused_by_the_api_server_with_the_reason() {
    let hub = Cluster::start(ClusterConfig::hub("hub")).await.unwrap();
    flotilla_hub::install(&hub.client()).await.unwrap();
    let gvk = GroupVersionKind::gvk("autoscaling.flotilla.io", "v1alpha1", "FederatedHPA");
    let api: Api<DynamicObject> = Api::namespaced_with(hub.client(), "default", &ApiResource::from_gvk(&gvk));
    let target = json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"});
    let good = json!({
        "scaleTargetRef": target, "minReplicas": 2, "maxReplicas": 10,
        "metrics": [
            {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}}},
            {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "256Mi"}}}],
        "behavior": {"scaleUp": {"stabilizationWindowSeconds": 0, "selectPolicy": "Max",
                                 "policies": [{"type": "Pods", "value": 4, "periodSeconds": 15}]},
                     "scaleDown": {"stabilizationWindowSeconds": 300,
                                   "policies": [{"type": "Percent", "value": 10, "periodSeconds": 60}]}}
    });
    api.create(&PostParams::default(), &hpa("good", good)).await.unwrap();
    let minimal = json!({"scaleTargetRef": target, "maxReplicas": 3});
    api.create(&PostParams::default(), &hpa("minimal", minimal)).await.unwrap();

    // (name, spec, a fragment of the API server's message)
    let cases = [
        (
            "min-above-max",
            json!({"scaleTargetRef": target, "minReplicas": 5, "maxReplicas": 3}),
            "minReplicas must not be greater than maxReplicas",
        ),
        ("no-max", json!({"scaleTargetRef": target}), "maxReplicas"),
        (
            "pods-metric",
            json!({"scaleTargetRef": target, "maxReplicas": 3, "metrics": [{"type": "Pods", "pods": {"metric": {"name": "qps"}}}]}),
            "only Resource metrics (cpu, memory) are supported",
        ),
        (
            "gpu",
            json!({"scaleTargetRef": target, "maxReplicas": 3, "metrics": [{"type": "Resource", "resource": {"name": "gpu", "target": {"type": "Utilization", "averageUtilization": 50}}}]}),
            "Unsupported value: \"gpu\"",
        ),
        (
            "value-target",
            json!({"scaleTargetRef": target, "maxReplicas": 3, "metrics": cpu(json!({"type": "Value", "value": "1"}))}),
            "target type Value is not supported",
        ),
        (
            "utilization-without-percent",
            json!({"scaleTargetRef": target, "maxReplicas": 3, "metrics": cpu(json!({"type": "Utilization", "averageValue": "100m"}))}),
            "a Utilization target needs averageUtilization",
        ),
        (
            "bad-select-policy",
            json!({"scaleTargetRef": target, "maxReplicas": 3, "behavior": {"scaleUp": {"selectPolicy": "Fastest"}}}),
            "Unsupported value: \"Fastest\"",
        ),
    ];
    for (name, spec, want) in cases {
        let refused = api.create(&PostParams::default(), &hpa(name, spec)).await.unwrap_err();
        let message = match refused {
            kube::Error::Api(status) => status.message,
            other => other.to_string(),
        };
        assert!(message.contains(want), "{name}: {message}");
    }
}
