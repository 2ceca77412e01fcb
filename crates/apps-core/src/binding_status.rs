//! A binding's `FullyApplied` condition and per-cluster progress, from its
//! scheduling outcome and its works, so the binding never says more than is
//! true: `FullyApplied=True` only when scheduling succeeded, every chosen
//! cluster's Work exists, is not being deleted, and its member applied the
//! Work's current spec, and (divided placements) the chosen clusters hold
//! every replica.

use flotilla_api::work::{conditions, keys, Work};

use flotilla_core::conditions::Wanted;

/// `FullyApplied` reasons.
pub const REASON_APPLIED: &str = "Applied";
pub const REASON_NOT_APPLIED: &str = "NotApplied";
pub const REASON_NOT_SCHEDULED: &str = "NotScheduled";
pub const REASON_NO_CLUSTER: &str = "NoCluster";
pub const REASON_REPLICAS_NOT_PLACED: &str = "ReplicasNotPlaced";
/// Replicas are moving between clusters (a failover, a return, a division
/// change): the template's status counts only what the chosen clusters run.
pub const REASON_MOVING: &str = "Moving";
/// The hub could not write a Work: one object too big for etcd.
pub const REASON_TOO_LARGE: &str = "TooLarge";
/// The hub's API server refused a Work the hub built (the message says why).
pub const REASON_WORK_REFUSED: &str = "WorkRefused";
/// The hub's API server refused the binding's full status (written then
/// with its conditions only).
pub const REASON_STATUS_REFUSED: &str = "StatusRefused";

/// How one chosen cluster is doing with its Work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkProgress {
    /// The member applied the Work's current spec.
    pub applied: bool,
    /// Why not (empty when applied).
    pub message: String,
}

/// One chosen cluster's progress from its Work (None: not written).
pub fn work_progress(cluster: &str, work: Option<&Work>) -> WorkProgress {
    let not = |message: String| WorkProgress { applied: false, message };
    let Some(work) = work else {
        return not(format!("the work for cluster {cluster} is not written yet"));
    };
    if work.metadata.deletion_timestamp.is_some() {
        return not(format!(
            "the work for cluster {cluster} is being deleted (its objects are being removed from the member)"
        ));
    }
    let status = work.status.as_ref();
    let Some(applied) = status.and_then(|s| s.conditions.iter().find(|c| c.type_ == conditions::APPLIED))
    else {
        return not(format!("waiting for cluster {cluster}'s agent to apply it"));
    };
    let spec_hash = work.metadata.annotations.as_ref().and_then(|a| a.get(keys::SPEC_HASH));
    let observed = status.map(|s| s.observed_spec_hash.as_str());
    if spec_hash.is_some_and(|h| Some(h.as_str()) != observed) {
        return not(format!(
            "cluster {cluster} has not applied the current version of its work yet (is its agent reachable?)"
        ));
    }
    if applied.status != "True" {
        let message =
            if applied.message.is_empty() { applied.reason.clone() } else { applied.message.clone() };
        return not(message);
    }
    WorkProgress { applied: true, message: String::new() }
}

/// What decides `FullyApplied`.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// The scheduling outcome: whether clusters were chosen, and the reason.
    pub scheduled: (bool, &'a str),
    /// The chosen clusters: name, replicas, progress.
    pub clusters: &'a [(&'a str, i32, &'a WorkProgress)],
    /// With a divided placement, the template's replicas (the chosen
    /// clusters must hold them all).
    pub divided_replicas: Option<i32>,
    /// Why the hub could not write the works (reason, message), if so.
    pub refused: Option<(&'a str, &'a str)>,
    /// A move in progress, described (`failover::move_in_progress`).
    pub moving: Option<&'a str>,
}

/// The `FullyApplied` condition.
pub fn fully_applied(facts: &Facts) -> Wanted {
    let wanted =
        |ok: bool, reason: &str, message: String| Wanted::new(conditions::FULLY_APPLIED, ok, reason, message);
    if let Some((reason, message)) = facts.refused {
        return wanted(false, reason, message.to_string());
    }
    let (scheduled, reason) = facts.scheduled;
    if !scheduled {
        return wanted(
            false,
            REASON_NOT_SCHEDULED,
            format!("scheduling did not succeed ({reason}, see the Scheduled condition); what was applied before stays"),
        );
    }
    if facts.clusters.is_empty() {
        return wanted(false, REASON_NO_CLUSTER, "no cluster is chosen".into());
    }
    let not_applied: Vec<String> = facts
        .clusters
        .iter()
        .filter(|(_, _, p)| !p.applied)
        .map(|(cluster, _, p)| format!("{cluster}: {}", p.message))
        .collect();
    if !not_applied.is_empty() {
        return wanted(false, REASON_NOT_APPLIED, not_applied.join("; "));
    }
    if let Some(moving) = facts.moving {
        return wanted(false, REASON_MOVING, moving.to_string());
    }
    if let Some(want) = facts.divided_replicas {
        let placed: i64 = facts.clusters.iter().map(|(_, r, _)| i64::from(*r)).sum();
        if placed != i64::from(want) {
            return wanted(
                false,
                REASON_REPLICAS_NOT_PLACED,
                format!("the chosen clusters hold {placed} of the template's {want} replicas"),
            );
        }
    }
    let names: Vec<&str> = facts.clusters.iter().map(|(c, _, _)| *c).collect();
    wanted(true, REASON_APPLIED, format!("applied in every chosen cluster ({})", names.join(", ")))
}

/// The message of a Work too big to store: its size and the limit.
pub fn too_large_message(cluster: &str, bytes: usize, limit: usize) -> String {
    format!(
        "the work for cluster {cluster} would be {} but the hub's etcd stores at most {} per object \
         (its --max-request-bytes): nothing was sent; make the template smaller (e.g. split a large \
         ConfigMap or Secret into several)",
        human_bytes(bytes),
        human_bytes(limit)
    )
}

/// The largest Work the hub writes: etcd's default request limit (1.5 MiB)
/// less room for the Work's metadata, managed fields and status.
pub const WORK_SIZE_LIMIT: usize = 1_572_864 - 64 * 1024;

/// The size of a Work's spec as the hub sends it, and whether it is over
/// the limit.
pub fn work_too_large(cluster: &str, spec: &serde_json::Value) -> Option<String> {
    let bytes = serde_json::to_vec(spec).map(|v| v.len()).unwrap_or(0);
    (bytes > WORK_SIZE_LIMIT).then(|| too_large_message(cluster, bytes, WORK_SIZE_LIMIT))
}

/// Whether an API server's refusal is etcd's "request is too large".
pub fn is_too_large(message: &str) -> bool {
    message.contains("request is too large") || message.contains("Request entity too large")
}

/// Whether an API server's answer (HTTP code, message) refuses a write for
/// what it holds (invalid, too large): the same write would be refused
/// again, so it is reported instead of retried.
pub fn is_refusal(code: u16, message: &str) -> bool {
    matches!(code, 400 | 413 | 422) || is_too_large(message)
}

/// How long until a binder reconcile that failed `failures` times in a row
/// runs again: doubling from 2 s to a minute; a refusal waits 5 minutes
/// (the periodic resync, or any change, comes sooner).
pub fn retry_after(failures: u32, refused: bool) -> std::time::Duration {
    use std::time::Duration;
    if refused {
        return Duration::from_secs(300);
    }
    let exponent = failures.clamp(1, 6) - 1;
    Duration::from_secs(2).saturating_mul(1 << exponent).min(Duration::from_secs(60))
}

fn human_bytes(bytes: usize) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    let b = bytes as f64;
    if b >= MIB {
        format!("{:.2} MiB ({bytes} bytes)", b / MIB)
    } else {
        format!("{:.0} KiB ({bytes} bytes)", b / 1024.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_api::work::WorkStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    use serde_json::json;

    fn work(spec_hash: &str, observed: Option<(&str, &str, &str)>, deleting: bool) -> Work {
        let mut w: Work = serde_json::from_value(json!({
            "apiVersion": "work.flotilla.io/v1alpha1", "kind": "Work",
            "metadata": {"name": "w", "namespace": "flotilla-cluster-m1",
                         "annotations": {keys::SPEC_HASH: spec_hash}},
            "spec": {"manifests": []}
        }))
        .unwrap();
        if deleting {
            w.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::from_second(1).unwrap()));
        }
        w.status = observed.map(|(hash, status, message)| WorkStatus {
            conditions: vec![Condition {
                type_: "Applied".into(),
                status: status.into(),
                reason: "R".into(),
                message: message.into(),
                last_transition_time: Time(k8s_openapi::jiff::Timestamp::from_second(1).unwrap()),
                observed_generation: None,
            }],
            manifest_statuses: Vec::new(),
            observed_spec_hash: hash.into(),
        });
        w
    }

    #[test]
    fn a_cluster_counts_as_applied_only_with_its_current_work_applied() {
        let cases: &[(&str, Option<Work>, bool, &str)] = &[
            ("no work", None, false, "not written yet"),
            ("no status yet", Some(work("h2", None, false)), false, "waiting for cluster m1's agent"),
            ("applied, current", Some(work("h2", Some(("h2", "True", "ok")), false)), true, ""),
            (
                "applied an older spec (agent away)",
                Some(work("h2", Some(("h1", "True", "ok")), false)),
                false,
                "not applied the current version",
            ),
            (
                "refused by the member",
                Some(work("h2", Some(("h2", "False", "the manifest has no kind")), false)),
                false,
                "the manifest has no kind",
            ),
            (
                "being deleted, status still says applied",
                Some(work("h2", Some(("h2", "True", "ok")), true)),
                false,
                "being deleted",
            ),
        ];
        for (what, w, applied, needle) in cases {
            let p = work_progress("m1", w.as_ref());
            assert_eq!(p.applied, *applied, "{what}");
            assert!(p.message.contains(needle), "{what}: {}", p.message);
        }
    }

    #[test]
    fn fully_applied_is_true_only_when_everything_holds() {
        let done = WorkProgress { applied: true, message: String::new() };
        let waiting = WorkProgress { applied: false, message: "waiting".into() };
        let both = [("m1", 2, &done), ("m2", 4, &done)];
        let one_waiting = [("m1", 2, &done), ("m2", 4, &waiting)];
        let short = [("m1", 2, &done)];
        type Case<'a> = (&'a str, Facts<'a>, bool, &'a str, &'a str);
        fn facts<'a>(
            scheduled: (bool, &'a str),
            clusters: &'a [(&'a str, i32, &'a WorkProgress)],
            divided_replicas: Option<i32>,
            refused: Option<(&'a str, &'a str)>,
        ) -> Facts<'a> {
            Facts { scheduled, clusters, divided_replicas, refused, moving: None }
        }
        let cases: Vec<Case> = vec![
            ("all applied", facts((true, "Scheduled"), &both, Some(6), None), true, REASON_APPLIED, "m1, m2"),
            (
                "duplicated, no replica check",
                facts((true, "Scheduled"), &short, None, None),
                true,
                REASON_APPLIED,
                "m1",
            ),
            (
                "stale NoClusterFit beside applied works",
                facts((false, "NoClusterFit"), &both, Some(6), None),
                false,
                REASON_NOT_SCHEDULED,
                "NoClusterFit",
            ),
            (
                "no policy any more",
                facts((false, "NoPolicy"), &both, None, None),
                false,
                REASON_NOT_SCHEDULED,
                "stays",
            ),
            (
                "nothing chosen",
                facts((true, "Dependency"), &[], None, None),
                false,
                REASON_NO_CLUSTER,
                "no cluster",
            ),
            (
                "one waiting",
                facts((true, "Scheduled"), &one_waiting, Some(6), None),
                false,
                REASON_NOT_APPLIED,
                "m2: waiting",
            ),
            (
                "replicas missing",
                facts((true, "Scheduled"), &short, Some(6), None),
                false,
                REASON_REPLICAS_NOT_PLACED,
                "hold 2 of the template's 6",
            ),
            (
                "a move in progress",
                Facts { moving: Some("m1 1 of 2"), ..facts((true, "Scheduled"), &both, Some(6), None) },
                false,
                REASON_MOVING,
                "m1 1 of 2",
            ),
            (
                "too large to write",
                facts((true, "Scheduled"), &both, Some(6), Some((REASON_TOO_LARGE, "2.00 MiB"))),
                false,
                REASON_TOO_LARGE,
                "2.00 MiB",
            ),
        ];
        for (what, f, ok, reason, needle) in cases {
            let c = fully_applied(&f);
            assert_eq!(c.status, if ok { "True" } else { "False" }, "{what}");
            assert_eq!(c.reason, reason, "{what}");
            assert!(c.message.contains(needle), "{what}: {}", c.message);
        }
    }

    #[test]
    fn refusals_are_not_retried_and_failures_back_off() {
        let cases = [
            (422, "ConfigMap is invalid", true),
            (400, "bad request", true),
            (413, "Request entity too large", true),
            (500, "etcdserver: request is too large", true),
            (500, "etcdserver: request timed out", false),
            (409, "conflict", false),
            (404, "not found", false),
            (429, "slow down", false),
        ];
        for (code, message, refused) in cases {
            assert_eq!(is_refusal(code, message), refused, "{code} {message}");
        }
        let secs: Vec<u64> = (1..=8).map(|n| retry_after(n, false).as_secs()).collect();
        assert_eq!(secs, [2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(retry_after(0, false).as_secs(), 2);
        assert_eq!(retry_after(1, true).as_secs(), 300);
    }

    #[test]
    fn works_over_etcd_s_limit_are_named_with_their_size() {
        assert!(work_too_large("m1", &json!({"manifests": [{"data": {"a": "b"}}]})).is_none());
        let big = "x".repeat(2 * 1024 * 1024);
        let message = work_too_large("m1", &json!({"manifests": [{"data": {"a": big}}]})).unwrap();
        assert!(message.starts_with("the work for cluster m1 would be 2.00 MiB"), "{message}");
        assert!(message.contains("at most 1.44 MiB"), "{message}");
        assert!(is_too_large("etcdserver: request is too large"));
        assert!(!is_too_large("conflict"));
    }
}
