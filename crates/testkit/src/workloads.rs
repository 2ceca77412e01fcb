//! Templates the application tests place: Deployments in the namespace `demo`.

use serde_json::json;

/// A Deployment `name` in `demo` (labelled `app: name`) of `replicas` pods
/// with one small container `app` running `image`, its environment from
/// the ConfigMap `config_map` if given.
pub fn deployment(name: &str, replicas: i32, image: &str, config_map: Option<&str>) -> serde_json::Value {
    let mut container = json!({"name": "app", "image": image,
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}});
    if let Some(cm) = config_map {
        container["envFrom"] = json!([{"configMapRef": {"name": cm}}]);
    }
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "demo", "labels": {"app": name}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [container]}}}
    })
}
