//! How many replicas of an applied workload its member's scheduler cannot
//! place, and since when: what the agent reports per manifest so the hub
//! can deschedule them (`crate::deschedule`).

use flotilla_api::work::UnschedulableReplicas;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::Value;

use super::pod_problem::{self, REASON_UNSCHEDULABLE};
use crate::workload::api_group;

/// The replicas of `object` (a Deployment, StatefulSet or ReplicaSet, as
/// live in the member) that are missing because their pods are Pending as
/// unschedulable, with the oldest such pod's `PodScheduled` transition.
/// Counted against `spec.replicas` minus the pods already on a node, so
/// pods a scale-down is about to delete are not counted; `None` when there
/// are none, for other kinds, and for pods merely waiting (no verdict
/// from the scheduler yet).
pub fn unschedulable(object: &Value, pods: &[Value]) -> Option<UnschedulableReplicas> {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    if !matches!((api_group(api_version), kind), ("apps", "Deployment" | "StatefulSet" | "ReplicaSet")) {
        return None;
    }
    let wanted = object["spec"]["replicas"].as_i64().unwrap_or(1).max(0);
    let live: Vec<&Value> = pods.iter().filter(|p| pod_problem::counts(p)).collect();
    let placed = live
        .iter()
        .filter(|p| {
            p["spec"]["nodeName"].as_str().is_some_and(|n| !n.is_empty()) && p["status"]["phase"] != "Failed"
        })
        .count();
    let stuck: Vec<Time> = live.iter().filter_map(|p| unschedulable_since(p)).collect();
    let missing = (wanted - i64::try_from(placed).unwrap_or(i64::MAX)).max(0);
    let replicas = missing.min(i64::try_from(stuck.len()).unwrap_or(i64::MAX));
    if replicas == 0 {
        return None;
    }
    let since = stuck.into_iter().min_by_key(|t| t.0)?;
    Some(UnschedulableReplicas { replicas: i32::try_from(replicas).unwrap_or(i32::MAX), since })
}

/// When a pod without a node was found unschedulable (its `PodScheduled`
/// condition's transition, else its creation).
fn unschedulable_since(pod: &Value) -> Option<Time> {
    if pod["spec"]["nodeName"].as_str().is_some_and(|n| !n.is_empty()) {
        return None;
    }
    let scheduled = pod["status"]["conditions"].as_array()?.iter().find(|c| {
        c["type"] == "PodScheduled" && c["status"] == "False" && c["reason"] == REASON_UNSCHEDULABLE
    })?;
    let parse = |v: &Value| serde_json::from_value::<Time>(v.clone()).ok();
    parse(&scheduled["lastTransitionTime"]).or_else(|| parse(&pod["metadata"]["creationTimestamp"]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(replicas: i64) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
               "spec": {"replicas": replicas}})
    }

    fn running(name: &str) -> Value {
        json!({"metadata": {"name": name}, "spec": {"nodeName": "n1"},
               "status": {"phase": "Running",
                          "conditions": [{"type": "PodScheduled", "status": "True"}]}})
    }

    fn stuck(name: &str, at: &str) -> Value {
        json!({"metadata": {"name": name, "creationTimestamp": "2026-01-01T00:00:00Z"}, "spec": {},
               "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
                 "reason": "Unschedulable", "message": "0/2 nodes are available",
                 "lastTransitionTime": at}]}})
    }

    fn waiting(name: &str) -> Value {
        json!({"metadata": {"name": name}, "spec": {}, "status": {"phase": "Pending"}})
    }

    fn deleting(mut pod: Value) -> Value {
        pod["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:10:00Z");
        pod
    }

    #[test]
    fn counts_the_missing_replicas_whose_pods_the_scheduler_refused() {
        let t1 = "2026-01-01T00:01:00Z";
        let t2 = "2026-01-01T00:02:00Z";
        type Case<'a> = (&'a str, Value, Vec<Value>, Option<(i32, &'a str)>);
        let cases: Vec<Case> = vec![
            ("all placed", deployment(2), vec![running("a"), running("b")], None),
            ("one stuck", deployment(3), vec![running("a"), running("b"), stuck("c", t2)], Some((1, t2))),
            ("oldest wins", deployment(3), vec![running("a"), stuck("b", t2), stuck("c", t1)], Some((2, t1))),
            ("merely waiting for the scheduler", deployment(2), vec![running("a"), waiting("b")], None),
            (
                "a scale-down about to delete the stuck pod",
                deployment(2),
                vec![running("a"), running("b"), stuck("c", t1)],
                None,
            ),
            (
                "more stuck pods than missing replicas",
                deployment(3),
                vec![running("a"), stuck("b", t1), stuck("c", t2), stuck("d", t2)],
                Some((2, t1)),
            ),
            ("deleting pods do not count", deployment(2), vec![running("a"), deleting(stuck("b", t1))], None),
            (
                "no transition time: creation",
                deployment(1),
                vec![json!({"metadata": {"name": "x", "creationTimestamp": "2026-01-01T00:00:00Z"},
                    "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
                    "reason": "Unschedulable"}]}})],
                Some((1, "2026-01-01T00:00:00Z")),
            ),
            (
                "replicas default to one",
                json!({"apiVersion": "apps/v1", "kind": "StatefulSet"}),
                vec![stuck("s-0", t1)],
                Some((1, t1)),
            ),
            (
                "not a workload with replicas",
                json!({"apiVersion": "apps/v1", "kind": "DaemonSet"}),
                vec![stuck("d", t1)],
                None,
            ),
            ("a Job", json!({"apiVersion": "batch/v1", "kind": "Job"}), vec![stuck("j", t1)], None),
        ];
        for (name, object, pods, want) in cases {
            let got = unschedulable(&object, &pods).map(|u| (u.replicas, u.since.0.to_string()));
            let want =
                want.map(|(n, at)| (n, at.parse::<k8s_openapi::jiff::Timestamp>().unwrap().to_string()));
            assert_eq!(got, want, "{name}");
        }
    }
}
