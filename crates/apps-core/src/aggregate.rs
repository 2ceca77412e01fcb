//! Fleet-wide status on the hub's template, from the status of the objects
//! in the members: counts are summed, so `kubectl get deploy` on the hub
//! shows the fleet's ready replicas.
//!
//! Every count the kind aggregates is written, zeros included, so writing
//! the result replaces stale counts. `observedGeneration` is only written
//! when every cluster runs the current spec, so a reader waiting for a
//! rollout (`kubectl rollout status`) does not see it finished early.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use serde_json::{json, Map, Value};

use crate::fleet_health::template_condition;
use crate::workload::api_group;

/// The status of the template's object in one member cluster.
#[derive(Debug, Clone, Copy)]
pub struct MemberStatus<'a> {
    pub cluster: &'a str,
    /// The member object's `.status`; `None` before it reported one.
    pub status: Option<&'a Value>,
}

/// Counts summed for each kind, and counts written only when some member
/// reports them (fields newer Kubernetes versions added).
fn counts(api_version: &str, kind: &str) -> Option<(&'static [&'static str], &'static [&'static str])> {
    let fields: (&[&str], &[&str]) = match (api_group(api_version), kind) {
        ("apps" | "extensions", "Deployment") => (
            &["replicas", "readyReplicas", "availableReplicas", "updatedReplicas", "unavailableReplicas"],
            &[],
        ),
        ("apps", "StatefulSet") => {
            (&["replicas", "readyReplicas", "currentReplicas", "updatedReplicas"], &["availableReplicas"])
        }
        ("apps" | "extensions", "ReplicaSet") => {
            (&["replicas", "readyReplicas", "availableReplicas", "fullyLabeledReplicas"], &[])
        }
        ("apps" | "extensions", "DaemonSet") => (
            &[
                "currentNumberScheduled",
                "desiredNumberScheduled",
                "numberAvailable",
                "numberReady",
                "updatedNumberScheduled",
                "numberMisscheduled",
                "numberUnavailable",
            ],
            &[],
        ),
        ("batch", "Job") => (&["active", "succeeded", "failed"], &[]),
        _ => return None,
    };
    Some(fields)
}

/// The status to write on the hub's template, or `None` for kinds Flotilla
/// does not aggregate (Deployment, StatefulSet, ReplicaSet, DaemonSet and
/// Job are aggregated).
///
/// Counts are summed over the members. `observedGeneration` is
/// `template_generation` when `all_current` (every cluster applied the
/// current spec and reports an observedGeneration at least its own
/// generation), else left out. Jobs also get the earliest `startTime`, and
/// when every member's Job is complete, the latest `completionTime` and a
/// `Complete` condition; a `Failed` condition names the clusters where the
/// Job failed.
///
/// `healthy`, the binding's `Healthy` condition, is written among the
/// template's conditions, so `kubectl describe` on the hub says in which
/// clusters the template is not healthy, and why.
pub fn aggregate_status(
    api_version: &str,
    kind: &str,
    template_generation: Option<i64>,
    all_current: bool,
    members: &[MemberStatus],
    healthy: Option<&Condition>,
) -> Option<Value> {
    let (always, when_reported) = counts(api_version, kind)?;
    let mut status = Map::new();
    if let (true, Some(generation)) = (all_current, template_generation) {
        status.insert("observedGeneration".into(), generation.into());
    }
    let statuses = || members.iter().filter_map(|m| m.status);
    for field in always {
        let sum: i64 = statuses().filter_map(|s| s.get(*field).and_then(Value::as_i64)).sum();
        status.insert((*field).into(), sum.into());
    }
    for field in when_reported {
        let reported: Vec<i64> = statuses().filter_map(|s| s.get(*field).and_then(Value::as_i64)).collect();
        if !reported.is_empty() {
            status.insert((*field).into(), reported.iter().sum::<i64>().into());
        }
    }
    if kind == "Job" {
        aggregate_job(&mut status, members);
    }
    if let Some(healthy) = healthy {
        let conditions = status.entry("conditions").or_insert_with(|| Value::Array(Vec::new()));
        if let Some(list) = conditions.as_array_mut() {
            list.push(template_condition(healthy));
        }
    }
    Some(Value::Object(status))
}

/// A condition of `status` with the given type and status `True`.
fn true_condition<'a>(status: &'a Value, condition_type: &str) -> Option<&'a Value> {
    status.get("conditions")?.as_array()?.iter().find(|c| {
        c.get("type").and_then(Value::as_str) == Some(condition_type)
            && c.get("status").and_then(Value::as_str) == Some("True")
    })
}

fn time_of<'a>(value: Option<&'a Value>, field: &str) -> Option<&'a str> {
    value?.get(field)?.as_str()
}

// Kubernetes writes times as RFC 3339 in UTC with second precision
// (`2024-05-01T10:00:00Z`), so they order as strings.
fn aggregate_job(status: &mut Map<String, Value>, members: &[MemberStatus]) {
    if let Some(start) = members.iter().filter_map(|m| time_of(m.status, "startTime")).min() {
        status.insert("startTime".into(), start.into());
    }
    let mut conditions = Vec::new();

    let all_complete = !members.is_empty()
        && members.iter().all(|m| m.status.and_then(|s| true_condition(s, "Complete")).is_some());
    if all_complete {
        let completed = members.iter().filter_map(|m| time_of(m.status, "completionTime")).max();
        let transition = members
            .iter()
            .filter_map(|m| {
                time_of(m.status.and_then(|s| true_condition(s, "Complete")), "lastTransitionTime")
            })
            .max()
            .or(completed);
        if let Some(completed) = completed {
            status.insert("completionTime".into(), completed.into());
        }
        let mut condition = json!({
            "type": "Complete",
            "status": "True",
            "reason": "CompletedInAllClusters",
            "message": format!("the Job completed in all {} clusters", members.len()),
        });
        if let Some(at) = transition {
            condition["lastProbeTime"] = at.into();
            condition["lastTransitionTime"] = at.into();
        }
        conditions.push(condition);
    }

    let failed: Vec<(&str, &Value)> =
        members.iter().filter_map(|m| Some((m.cluster, true_condition(m.status?, "Failed")?))).collect();
    if !failed.is_empty() {
        let message = failed
            .iter()
            .map(|(cluster, c)| match c.get("reason").and_then(Value::as_str) {
                Some(reason) => format!("{cluster} ({reason})"),
                None => cluster.to_string(),
            })
            .collect::<Vec<_>>()
            .join(", ");
        let mut condition = json!({
            "type": "Failed",
            "status": "True",
            "reason": "FailedInClusters",
            "message": format!("the Job failed in {message}"),
        });
        if let Some(at) = failed.iter().filter_map(|(_, c)| time_of(Some(c), "lastTransitionTime")).max() {
            condition["lastProbeTime"] = at.into();
            condition["lastTransitionTime"] = at.into();
        }
        conditions.push(condition);
    }
    // Written even when empty, so a stale condition does not linger.
    status.insert("conditions".into(), Value::Array(conditions));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members<'a>(statuses: &'a [(&'a str, Option<Value>)]) -> Vec<MemberStatus<'a>> {
        statuses.iter().map(|(cluster, status)| MemberStatus { cluster, status: status.as_ref() }).collect()
    }

    fn deployment_status(replicas: i64, ready: i64, generation: i64) -> Value {
        json!({
            "observedGeneration": generation,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "unavailableReplicas": replicas - ready,
            "conditions": [{"type": "Available", "status": "True"}]
        })
    }

    #[test]
    fn deployments_sum_replica_counts_across_members() {
        let statuses = [
            ("m1", Some(deployment_status(2, 2, 1))),
            ("m2", Some(deployment_status(4, 4, 3))),
            ("m3", Some(deployment_status(5, 4, 2))),
        ];
        let status =
            aggregate_status("apps/v1", "Deployment", Some(7), true, &members(&statuses), None).unwrap();
        assert_eq!(
            status,
            json!({
                "observedGeneration": 7,
                "replicas": 11,
                "updatedReplicas": 11,
                "readyReplicas": 10,
                "availableReplicas": 10,
                "unavailableReplicas": 1
            })
        );
    }

    #[test]
    fn observed_generation_only_when_every_cluster_is_current() {
        let statuses = [("m1", Some(deployment_status(1, 1, 1))), ("m2", None)];
        let status =
            aggregate_status("apps/v1", "Deployment", Some(3), false, &members(&statuses), None).unwrap();
        assert!(status.get("observedGeneration").is_none());
        // A member without status counts for nothing; zeros are written.
        assert_eq!(status["readyReplicas"], 1);
        let status =
            aggregate_status("apps/v1", "Deployment", None, true, &members(&statuses), None).unwrap();
        assert!(status.get("observedGeneration").is_none());
        let none = aggregate_status("apps/v1", "Deployment", Some(1), true, &[], None).unwrap();
        assert_eq!(none["replicas"], 0);
        assert_eq!(none["observedGeneration"], 1);
    }

    #[test]
    fn statefulsets_replicasets_and_daemonsets() {
        let sts = [
            (
                "a",
                Some(json!({"replicas": 2, "readyReplicas": 1, "currentReplicas": 2, "updatedReplicas": 2})),
            ),
            (
                "b",
                Some(json!({"replicas": 3, "readyReplicas": 3, "currentReplicas": 3, "updatedReplicas": 1})),
            ),
        ];
        let status =
            aggregate_status("apps/v1", "StatefulSet", Some(2), false, &members(&sts), None).unwrap();
        assert_eq!(
            status,
            json!({"replicas": 5, "readyReplicas": 4, "currentReplicas": 5, "updatedReplicas": 3})
        );
        let newer = [
            ("a", Some(json!({"replicas": 2, "availableReplicas": 2}))),
            ("b", Some(json!({"replicas": 1}))),
        ];
        let status = aggregate_status("apps/v1", "StatefulSet", None, false, &members(&newer), None).unwrap();
        assert_eq!(status["availableReplicas"], 2);

        let rs = [
            (
                "a",
                Some(json!({"replicas": 2, "readyReplicas": 2, "availableReplicas": 2,
                           "fullyLabeledReplicas": 2})),
            ),
            ("b", Some(json!({"replicas": 1, "fullyLabeledReplicas": 1}))),
        ];
        let status = aggregate_status("apps/v1", "ReplicaSet", None, false, &members(&rs), None).unwrap();
        assert_eq!(
            status,
            json!({"replicas": 3, "readyReplicas": 2, "availableReplicas": 2, "fullyLabeledReplicas": 3})
        );

        let ds = |n: i64| {
            json!({"currentNumberScheduled": n, "desiredNumberScheduled": n, "numberAvailable": n - 1,
                   "numberReady": n, "updatedNumberScheduled": n, "numberMisscheduled": 0,
                   "numberUnavailable": 1})
        };
        let daemons = [("a", Some(ds(3))), ("b", Some(ds(5)))];
        let status =
            aggregate_status("apps/v1", "DaemonSet", Some(4), true, &members(&daemons), None).unwrap();
        assert_eq!(
            status,
            json!({"observedGeneration": 4, "currentNumberScheduled": 8, "desiredNumberScheduled": 8,
                   "numberAvailable": 6, "numberReady": 8, "updatedNumberScheduled": 8,
                   "numberMisscheduled": 0,
                   "numberUnavailable": 2})
        );
    }

    #[test]
    fn the_binding_s_healthy_condition_joins_the_template_s_conditions() {
        let healthy = Condition {
            type_: "Healthy".into(),
            status: "False".into(),
            reason: "Unhealthy".into(),
            message: "m2: CrashLoopBackOff (5 restarts): container web restarted 5 times".into(),
            last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::from_second(1_714_557_600).unwrap(),
            ),
            observed_generation: None,
        };
        let written = json!({"type": "Healthy", "status": "False", "reason": "Unhealthy",
            "message": "m2: CrashLoopBackOff (5 restarts): container web restarted 5 times",
            "lastTransitionTime": "2024-05-01T10:00:00Z"});
        let statuses = [("m1", Some(deployment_status(1, 1, 1))), ("m2", Some(deployment_status(1, 0, 1)))];
        let status =
            aggregate_status("apps/v1", "Deployment", Some(1), true, &members(&statuses), Some(&healthy))
                .unwrap();
        assert_eq!(status["conditions"], json!([written]));
        assert_eq!(status["readyReplicas"], 1);
        // A Job keeps its own conditions, the Healthy one after them.
        let jobs = [("m1", Some(complete_job("2024-05-01T10:00:05Z", "2024-05-01T10:01:00Z", 2)))];
        let status =
            aggregate_status("batch/v1", "Job", None, true, &members(&jobs), Some(&healthy)).unwrap();
        let conditions = status["conditions"].as_array().unwrap();
        assert_eq!(
            conditions.iter().map(|c| c["type"].as_str().unwrap()).collect::<Vec<_>>(),
            ["Complete", "Healthy"]
        );
        assert_eq!(conditions[1], written);
        // Without it (no binding status yet), nothing is said.
        let status =
            aggregate_status("apps/v1", "Deployment", Some(1), true, &members(&statuses), None).unwrap();
        assert!(status.get("conditions").is_none());
    }

    #[test]
    fn other_kinds_are_not_aggregated() {
        let statuses = [("a", Some(json!({"phase": "Running"})))];
        assert_eq!(aggregate_status("v1", "Pod", None, true, &members(&statuses), None), None);
        assert_eq!(aggregate_status("v1", "Service", None, true, &members(&statuses), None), None);
        assert_eq!(
            aggregate_status("example.com/v1", "Deployment", None, true, &members(&statuses), None),
            None
        );
    }

    fn complete_job(start: &str, end: &str, succeeded: i64) -> Value {
        json!({
            "startTime": start,
            "completionTime": end,
            "succeeded": succeeded,
            "conditions": [{"type": "Complete", "status": "True",
                            "lastProbeTime": end, "lastTransitionTime": end}]
        })
    }

    #[test]
    fn jobs_complete_when_every_member_completed() {
        let statuses = [
            ("m1", Some(complete_job("2024-05-01T10:00:05Z", "2024-05-01T10:01:00Z", 2))),
            ("m2", Some(complete_job("2024-05-01T10:00:01Z", "2024-05-01T10:03:00Z", 3))),
        ];
        let status = aggregate_status("batch/v1", "Job", Some(1), true, &members(&statuses), None).unwrap();
        assert_eq!(
            status,
            json!({
                "observedGeneration": 1,
                "active": 0,
                "succeeded": 5,
                "failed": 0,
                "startTime": "2024-05-01T10:00:01Z",
                "completionTime": "2024-05-01T10:03:00Z",
                "conditions": [{
                    "type": "Complete", "status": "True", "reason": "CompletedInAllClusters",
                    "message": "the Job completed in all 2 clusters",
                    "lastProbeTime": "2024-05-01T10:03:00Z", "lastTransitionTime": "2024-05-01T10:03:00Z"
                }]
            })
        );
    }

    #[test]
    fn jobs_running_somewhere_are_not_complete() {
        let statuses = [
            ("m1", Some(complete_job("2024-05-01T10:00:05Z", "2024-05-01T10:01:00Z", 2))),
            ("m2", Some(json!({"startTime": "2024-05-01T10:00:09Z", "active": 1, "succeeded": 1}))),
            ("m3", None),
        ];
        let status = aggregate_status("batch/v1", "Job", Some(1), false, &members(&statuses), None).unwrap();
        assert_eq!(
            status,
            json!({"active": 1, "succeeded": 3, "failed": 0, "startTime": "2024-05-01T10:00:05Z",
                   "conditions": []})
        );
        let only_unreported = [("m1", None)];
        let status =
            aggregate_status("batch/v1", "Job", None, false, &members(&only_unreported), None).unwrap();
        assert_eq!(status, json!({"active": 0, "succeeded": 0, "failed": 0, "conditions": []}));
    }

    #[test]
    fn jobs_that_failed_in_a_member_say_where() {
        let failed = json!({
            "startTime": "2024-05-01T10:00:00Z",
            "failed": 7,
            "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                            "lastTransitionTime": "2024-05-01T10:05:00Z"}]
        });
        let statuses = [
            ("m1", Some(complete_job("2024-05-01T10:00:05Z", "2024-05-01T10:01:00Z", 2))),
            ("m2", Some(failed)),
        ];
        let status = aggregate_status("batch/v1", "Job", None, true, &members(&statuses), None).unwrap();
        assert!(status.get("completionTime").is_none());
        assert_eq!(status["failed"], 7);
        assert_eq!(
            status["conditions"],
            json!([{"type": "Failed", "status": "True", "reason": "FailedInClusters",
                    "message": "the Job failed in m2 (BackoffLimitExceeded)",
                    "lastProbeTime": "2024-05-01T10:05:00Z", "lastTransitionTime": "2024-05-01T10:05:00Z"}])
        );
    }
}
