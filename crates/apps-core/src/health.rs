//! Health of an object applied in a member, judged from its own status, and
//! the part of that status fed back to the hub. Why an unhealthy object is
//! not healthy (its pods' problems) is [`diagnosis`]'s.

pub mod diagnosis;
pub mod pod_problem;
pub mod unschedulable;

use flotilla_api::work::Health;
use serde_json::{Map, Value};

/// Statuses larger than this (serialized) are cut down to their scalar
/// fields and conditions before they go back to the hub: a Work holds one
/// per manifest, and thousands of Works share the hub's etcd.
pub const MAX_FEEDBACK_BYTES: usize = 16 * 1024;

/// Health of an object in a member and the status fields to feed back to
/// the hub (the object's `.status`, trimmed when very large).
pub fn interpret(object: &Value) -> (Health, Option<Value>) {
    (health(object), feedback(object))
}

fn health(object: &Value) -> Health {
    let group = object["apiVersion"].as_str().unwrap_or_default().rsplit_once('/').map_or("", |(g, _)| g);
    let kind = object["kind"].as_str().unwrap_or_default();
    let status = &object["status"];
    match (group, kind) {
        ("apps" | "extensions", "Deployment") => deployment(object),
        ("apps", "StatefulSet") => stateful_set(object),
        ("apps" | "extensions", "ReplicaSet") => replica_set(object),
        ("apps" | "extensions", "DaemonSet") => daemon_set(object),
        ("batch", "Job") => job(status),
        ("", "Pod") => pod(status),
        ("", "PersistentVolumeClaim") => healthy_if(status["phase"].as_str() == Some("Bound")),
        ("", "Service") => service(object),
        _ => generic(status),
    }
}

fn healthy_if(ok: bool) -> Health {
    if ok {
        Health::Healthy
    } else {
        Health::Unhealthy
    }
}

fn int(value: &Value) -> i64 {
    value.as_i64().unwrap_or(0)
}

/// The controller has seen the current spec.
fn observed(object: &Value) -> bool {
    int(&object["status"]["observedGeneration"]) >= int(&object["metadata"]["generation"])
}

/// `spec.replicas`, which defaults to 1 for workloads.
fn wanted_replicas(object: &Value) -> i64 {
    object["spec"]["replicas"].as_i64().unwrap_or(1)
}

/// The same rules as `kubectl rollout status`: every wanted replica is
/// updated and available, and no old replica is left.
fn deployment(object: &Value) -> Health {
    let status = &object["status"];
    if condition_is(status, "Progressing", "False") {
        return Health::Unhealthy;
    }
    let want = wanted_replicas(object);
    let updated = int(&status["updatedReplicas"]);
    healthy_if(
        observed(object)
            && updated == want
            && int(&status["replicas"]) == updated
            && int(&status["availableReplicas"]) == updated,
    )
}

fn stateful_set(object: &Value) -> Health {
    let status = &object["status"];
    let want = wanted_replicas(object);
    // With OnDelete, pods update only when someone deletes them.
    let on_delete = object["spec"]["updateStrategy"]["type"].as_str() == Some("OnDelete");
    healthy_if(
        observed(object)
            && int(&status["readyReplicas"]) == want
            && (on_delete || int(&status["updatedReplicas"]) == want),
    )
}

fn replica_set(object: &Value) -> Health {
    let want = wanted_replicas(object);
    healthy_if(observed(object) && int(&object["status"]["availableReplicas"]) == want)
}

fn daemon_set(object: &Value) -> Health {
    let status = &object["status"];
    let desired = int(&status["desiredNumberScheduled"]);
    healthy_if(
        observed(object)
            && int(&status["numberAvailable"]) == desired
            && int(&status["updatedNumberScheduled"]) == desired,
    )
}

fn job(status: &Value) -> Health {
    if condition_is(status, "Complete", "True") {
        Health::Healthy
    } else if condition_is(status, "Failed", "True") {
        Health::Unhealthy
    } else {
        Health::Unknown
    }
}

fn pod(status: &Value) -> Health {
    match status["phase"].as_str() {
        Some("Succeeded") => Health::Healthy,
        Some("Failed") => Health::Unhealthy,
        Some("Running") => healthy_if(condition_is(status, "Ready", "True")),
        _ => Health::Unknown,
    }
}

fn service(object: &Value) -> Health {
    if object["spec"]["type"].as_str() == Some("LoadBalancer") {
        let ingress = &object["status"]["loadBalancer"]["ingress"];
        healthy_if(ingress.as_array().is_some_and(|i| !i.is_empty()))
    } else {
        Health::Healthy
    }
}

/// Any other kind: a `Ready` (else `Available`) condition decides; without
/// one, existing is all it can show.
fn generic(status: &Value) -> Health {
    for kind in ["Ready", "Available"] {
        if let Some(found) = condition_status(status, kind) {
            return match found {
                "True" => Health::Healthy,
                "False" => Health::Unhealthy,
                _ => Health::Unknown,
            };
        }
    }
    Health::Healthy
}

fn condition_status<'a>(status: &'a Value, kind: &str) -> Option<&'a str> {
    status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"].as_str() == Some(kind))
        .and_then(|c| c["status"].as_str())
}

fn condition_is(status: &Value, kind: &str, value: &str) -> bool {
    condition_status(status, kind) == Some(value)
}

fn feedback(object: &Value) -> Option<Value> {
    let status = object.get("status").filter(|s| !s.is_null())?;
    let Value::Object(fields) = status else { return Some(status.clone()) };
    if serialized_len(status) <= MAX_FEEDBACK_BYTES {
        return Some(status.clone());
    }
    let kept: Map<String, Value> = fields
        .iter()
        .filter(|(key, value)| key.as_str() == "conditions" || !(value.is_object() || value.is_array()))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    Some(Value::Object(kept))
}

fn serialized_len(value: &Value) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // Writing to a counter cannot fail; on the impossible error, treat it as large.
    match serde_json::to_writer(&mut counter, value) {
        Ok(()) => counter.0,
        Err(_) => usize::MAX,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(object: Value, expected: Health) {
        assert_eq!(interpret(&object).0, expected, "{object:#}");
    }

    fn deploy(replicas: Option<i64>, status: Value) -> Value {
        let mut spec = json!({});
        if let Some(r) = replicas {
            spec["replicas"] = json!(r);
        }
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "web", "generation": 2}, "spec": spec, "status": status})
    }

    #[test]
    fn deployment_is_healthy_when_the_current_spec_is_rolled_out_and_available() {
        let done =
            json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3});
        check(deploy(Some(3), done.clone()), Health::Healthy);
        // Older spec observed.
        let mut stale = done.clone();
        stale["observedGeneration"] = json!(1);
        check(deploy(Some(3), stale), Health::Unhealthy);
        // Not all available.
        let mut partial = done.clone();
        partial["availableReplicas"] = json!(2);
        check(deploy(Some(3), partial), Health::Unhealthy);
        // Old replicas still around (surge).
        let mut surge = done.clone();
        surge["replicas"] = json!(4);
        check(deploy(Some(3), surge), Health::Unhealthy);
        // No status yet.
        check(deploy(Some(3), json!({})), Health::Unhealthy);
        // Replicas default to 1.
        check(
            deploy(
                None,
                json!({"observedGeneration": 2, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1}),
            ),
            Health::Healthy,
        );
        // Scaled to zero.
        check(deploy(Some(0), json!({"observedGeneration": 2})), Health::Healthy);
        // A stuck rollout.
        let mut stuck = done;
        stuck["conditions"] =
            json!([{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]);
        check(deploy(Some(3), stuck), Health::Unhealthy);
    }

    #[test]
    fn a_custom_kind_called_deployment_is_judged_by_its_conditions() {
        let object = json!({"apiVersion": "example.com/v1", "kind": "Deployment", "metadata": {"generation": 1},
                            "spec": {"replicas": 3}, "status": {}});
        check(object, Health::Healthy);
    }

    #[test]
    fn stateful_sets_replica_sets_and_daemon_sets() {
        let sts = |status: Value, strategy: &str| {
            json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"generation": 1},
                   "spec": {"replicas": 2, "updateStrategy": {"type": strategy}}, "status": status})
        };
        check(
            sts(json!({"observedGeneration": 1, "readyReplicas": 2, "updatedReplicas": 2}), "RollingUpdate"),
            Health::Healthy,
        );
        check(
            sts(json!({"observedGeneration": 1, "readyReplicas": 2, "updatedReplicas": 1}), "RollingUpdate"),
            Health::Unhealthy,
        );
        check(
            sts(json!({"observedGeneration": 1, "readyReplicas": 2, "updatedReplicas": 1}), "OnDelete"),
            Health::Healthy,
        );
        check(
            sts(json!({"observedGeneration": 1, "readyReplicas": 1, "updatedReplicas": 2}), "OnDelete"),
            Health::Unhealthy,
        );

        let rs = |available: i64| {
            json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"generation": 1},
                   "spec": {"replicas": 2}, "status": {"observedGeneration": 1, "availableReplicas": available}})
        };
        check(rs(2), Health::Healthy);
        check(rs(1), Health::Unhealthy);

        let ds = |available: i64, updated: i64| {
            json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"generation": 3},
                   "status": {"observedGeneration": 3, "desiredNumberScheduled": 4,
                              "numberAvailable": available, "updatedNumberScheduled": updated}})
        };
        check(ds(4, 4), Health::Healthy);
        check(ds(3, 4), Health::Unhealthy);
        check(ds(4, 2), Health::Unhealthy);
    }

    #[test]
    fn jobs_are_healthy_when_complete_and_unhealthy_when_failed() {
        let job = |conditions: Value| json!({"apiVersion": "batch/v1", "kind": "Job", "status": {"conditions": conditions}});
        check(job(json!([{"type": "Complete", "status": "True"}])), Health::Healthy);
        check(job(json!([{"type": "Failed", "status": "True"}])), Health::Unhealthy);
        check(job(json!([])), Health::Unknown);
    }

    #[test]
    fn pods_pvcs_and_services() {
        let pod = |phase: &str, ready: &str| {
            json!({"apiVersion": "v1", "kind": "Pod",
                   "status": {"phase": phase, "conditions": [{"type": "Ready", "status": ready}]}})
        };
        check(pod("Running", "True"), Health::Healthy);
        check(pod("Running", "False"), Health::Unhealthy);
        check(pod("Succeeded", "False"), Health::Healthy);
        check(pod("Failed", "False"), Health::Unhealthy);
        check(pod("Pending", "False"), Health::Unknown);

        let pvc = |phase: &str| json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "status": {"phase": phase}});
        check(pvc("Bound"), Health::Healthy);
        check(pvc("Pending"), Health::Unhealthy);

        let svc = |kind: &str, status: Value| json!({"apiVersion": "v1", "kind": "Service", "spec": {"type": kind}, "status": status});
        check(svc("ClusterIP", json!({"loadBalancer": {}})), Health::Healthy);
        check(svc("LoadBalancer", json!({"loadBalancer": {}})), Health::Unhealthy);
        check(
            svc("LoadBalancer", json!({"loadBalancer": {"ingress": [{"ip": "10.0.0.1"}]}})),
            Health::Healthy,
        );
    }

    #[test]
    fn other_kinds_follow_ready_then_available_conditions_and_otherwise_exist() {
        let cr = |status: Value| json!({"apiVersion": "example.com/v1", "kind": "Widget", "status": status});
        check(cr(json!({"conditions": [{"type": "Ready", "status": "True"}]})), Health::Healthy);
        check(cr(json!({"conditions": [{"type": "Ready", "status": "False"}]})), Health::Unhealthy);
        check(cr(json!({"conditions": [{"type": "Ready", "status": "Unknown"}]})), Health::Unknown);
        check(
            cr(
                json!({"conditions": [{"type": "Available", "status": "False"}, {"type": "Ready", "status": "True"}]}),
            ),
            Health::Healthy,
        );
        check(cr(json!({"conditions": [{"type": "Available", "status": "False"}]})), Health::Unhealthy);
        check(json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "b"}}), Health::Healthy);
    }

    #[test]
    fn feedback_is_the_status_and_large_statuses_keep_scalars_and_conditions() {
        let object =
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "status": {"availableReplicas": 2}});
        assert_eq!(interpret(&object).1, Some(json!({"availableReplicas": 2})));
        assert_eq!(interpret(&json!({"kind": "ConfigMap"})).1, None);
        assert_eq!(interpret(&json!({"kind": "ConfigMap", "status": null})).1, None);

        let big: Vec<String> = (0..2000).map(|i| format!("item-{i}")).collect();
        let object = json!({"apiVersion": "example.com/v1", "kind": "Widget", "status": {
            "phase": "Ready", "count": 3, "items": big, "nested": {"a": 1},
            "conditions": [{"type": "Ready", "status": "True"}]}});
        let (health, status) = interpret(&object);
        assert_eq!(health, Health::Healthy);
        assert_eq!(
            status,
            Some(json!({"phase": "Ready", "count": 3, "conditions": [{"type": "Ready", "status": "True"}]}))
        );
    }
}
