//! A binding's `FullyApplied` condition and per-cluster progress, from its
//! scheduling outcome and its works, so the binding never says more than is
//! true: `FullyApplied=True` only when scheduling succeeded, every chosen
//! cluster's Work exists, is not being deleted, and its member applied the
//! Work's current spec, and (divided placements) the chosen clusters hold
//! every replica. [`binding_status`] assembles the whole status the
//! status writer compares with the stored one and patches.

use std::collections::BTreeMap;

use flotilla_api::work::{
    conditions, keys, AggregatedStatusItem, BindingStatus, Health, TargetCluster, Work,
};
use flotilla_core::conditions::{self as condition, Wanted};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

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

/// The binder's last scheduling outcome for a template (the status writer
/// is the single writer of the binding's conditions and shows it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub scheduled: bool,
    pub reason: String,
    pub message: String,
    /// The template generation the binder scheduled.
    pub generation: Option<i64>,
    /// The `clusterAffinities` group in use (None without them).
    pub affinity_name: Option<String>,
}

/// What the status writer read of one binding.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    /// The binding's stored status (default when it has none).
    pub previous: &'a BindingStatus,
    /// The binder's last outcome; None when the binder has not run since
    /// this hub started (then the stored `Scheduled` is kept).
    pub outcome: Option<&'a Outcome>,
    /// The chosen clusters (the binding's spec).
    pub clusters: &'a [TargetCluster],
    /// The template's works by cluster.
    pub works: &'a BTreeMap<String, &'a Work>,
    /// The template's generation as last seen by the hub.
    pub template_generation: Option<i64>,
    /// With a divided placement, the template's replicas.
    pub divided_replicas: Option<i32>,
    /// Why the hub could not write the works (reason, message), if so.
    pub refused: Option<(&'a str, &'a str)>,
    /// A move in progress, described (`failover::move_in_progress`).
    pub moving: Option<&'a str>,
}

/// The binding's status, and whether every chosen cluster runs the current
/// template (so the template's fleet-wide status may be trusted).
#[derive(Debug, Clone, PartialEq)]
pub struct Decided {
    pub status: BindingStatus,
    pub all_current: bool,
}

/// The status a binding should have. None when there is nothing to say
/// yet: the binder has not run since the hub started and the binding holds
/// no `Scheduled` condition.
pub fn binding_status(observed: &Observed, now: &Time) -> Option<Decided> {
    let previous = &observed.previous.conditions;
    let mut items = Vec::with_capacity(observed.clusters.len());
    let mut progress = Vec::with_capacity(observed.clusters.len());
    let mut all_current = true;
    for target in observed.clusters {
        let work = observed.works.get(&target.name).copied();
        let p = work_progress(&target.name, work);
        let (item, current) = cluster_item(&target.name, work, observed.template_generation, &p);
        all_current &= current;
        items.push(item);
        progress.push(p);
    }
    let scheduled = match observed.outcome {
        Some(o) => condition::condition(
            previous,
            Wanted::new(conditions::SCHEDULED, o.scheduled, &o.reason, o.message.clone()),
            now,
        ),
        None => previous.iter().find(|c| c.type_ == conditions::SCHEDULED)?.clone(),
    };
    let clusters: Vec<(&str, i32, &WorkProgress)> =
        observed.clusters.iter().zip(&progress).map(|(t, p)| (t.name.as_str(), t.replicas, p)).collect();
    let facts = Facts {
        scheduled: (scheduled.status == "True", &scheduled.reason),
        clusters: &clusters,
        divided_replicas: observed.divided_replicas,
        refused: observed.refused,
        moving: observed.moving,
    };
    let fully_applied = condition::condition(previous, fully_applied(&facts), now);
    let healthy = condition::condition(previous, crate::fleet_health::healthy(&items), now);
    let status = BindingStatus {
        scheduler_observed_generation: observed
            .outcome
            .and_then(|o| o.generation)
            .or(observed.previous.scheduler_observed_generation),
        scheduler_observed_affinity_name: match observed.outcome {
            Some(o) => o.affinity_name.clone(),
            None => observed.previous.scheduler_observed_affinity_name.clone(),
        },
        conditions: vec![scheduled, fully_applied, healthy],
        aggregated_status: items,
    };
    Some(Decided { status, all_current })
}

/// Whether two binding statuses say the same (condition times aside).
pub fn same_status(a: &BindingStatus, b: &BindingStatus) -> bool {
    condition::same(&a.conditions, &b.conditions)
        && a.aggregated_status == b.aggregated_status
        && a.scheduler_observed_generation == b.scheduler_observed_generation
        && a.scheduler_observed_affinity_name == b.scheduler_observed_affinity_name
}

/// What to write when the API server refused `wanted` (e.g. a member's
/// status too large): its conditions alone, `FullyApplied` saying why.
/// None when the binding says so already.
pub fn refused_status(
    previous: &BindingStatus,
    wanted: &BindingStatus,
    message: &str,
    now: &Time,
) -> Option<BindingStatus> {
    let fully_applied = condition::condition(
        &previous.conditions,
        Wanted::new(
            conditions::FULLY_APPLIED,
            false,
            REASON_STATUS_REFUSED,
            format!("the hub's API server refused this binding's status: {message}"),
        ),
        now,
    );
    let minimal = BindingStatus {
        conditions: wanted.conditions.iter().take(1).cloned().chain([fully_applied]).collect(),
        aggregated_status: Vec::new(),
        ..wanted.clone()
    };
    let said =
        condition::same(&minimal.conditions, &previous.conditions) && previous.aggregated_status.is_empty();
    (!said).then_some(minimal)
}

/// One cluster's view of a work: applied (its current spec, per
/// [`work_progress`]), why not, health, fed-back status, and whether it
/// reflects the current template (built from its current generation, and
/// the member's controller caught up with it).
pub fn cluster_item(
    cluster: &str,
    work: Option<&Work>,
    template_generation: Option<i64>,
    progress: &WorkProgress,
) -> (AggregatedStatusItem, bool) {
    let Some(work) = work else {
        let item = AggregatedStatusItem {
            cluster_name: cluster.into(),
            applied: false,
            applied_message: progress.message.clone(),
            health: Health::Unknown,
            health_detail: None,
            status: None,
            replicas_owner: None,
        };
        return (item, false);
    };
    let status = work.status.as_ref();
    let applied = progress.applied;
    let first = status.and_then(|s| s.manifest_statuses.iter().find(|m| m.identifier.ordinal == 0));
    let built_from_current = template_generation.is_none_or(|g| {
        work.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(keys::TEMPLATE_GENERATION))
            .and_then(|v| v.parse::<i64>().ok())
            == Some(g)
    });
    let member_caught_up = first.is_some_and(|m| {
        let observed = m.status.as_ref().and_then(|s| s.get("observedGeneration")).and_then(|v| v.as_i64());
        match (m.generation, observed) {
            (Some(g), Some(o)) => o >= g,
            (Some(_), None) => false,
            _ => true,
        }
    });
    let item = AggregatedStatusItem {
        cluster_name: cluster.into(),
        applied,
        applied_message: progress.message.clone(),
        health: if applied { first.map(|m| m.health).unwrap_or_default() } else { Health::Unknown },
        health_detail: if applied { first.and_then(|m| m.health_detail.clone()) } else { None },
        status: first.and_then(|m| m.status.clone()),
        replicas_owner: if applied { first.and_then(|m| m.replicas_owner.clone()) } else { None },
    };
    (item, applied && built_from_current && member_caught_up)
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
            usage: Vec::new(),
            member_warnings: Vec::new(),
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

    fn at(seconds: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(seconds).unwrap())
    }

    fn target(name: &str, replicas: i32) -> TargetCluster {
        serde_json::from_value(json!({"name": name, "replicas": replicas})).unwrap()
    }

    /// A work applied at its current spec, built from template generation
    /// `built_from`, its first manifest's member status at
    /// (generation, observedGeneration).
    fn applied_work(built_from: i64, member: (i64, Option<i64>)) -> Work {
        let mut w = work("h2", Some(("h2", "True", "ok")), false);
        w.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(keys::TEMPLATE_GENERATION.into(), built_from.to_string());
        let mut status = json!({"readyReplicas": 2});
        if let Some(o) = member.1 {
            status["observedGeneration"] = json!(o);
        }
        w.status.as_mut().unwrap().manifest_statuses = vec![serde_json::from_value(json!({
            "identifier": {"ordinal": 0, "version": "v1", "kind": "Deployment", "name": "web", "namespace": "default"},
            "applied": true, "generation": member.0, "health": "Healthy", "status": status
        }))
        .unwrap()];
        w
    }

    fn outcome(scheduled: bool, reason: &str) -> Outcome {
        Outcome {
            scheduled,
            reason: reason.into(),
            message: format!("{reason}!"),
            generation: Some(3),
            affinity_name: None,
        }
    }

    #[test]
    fn the_binding_status_is_assembled_from_the_outcome_and_the_works() {
        let clusters = [target("m1", 2), target("m2", 2)];
        let current = applied_work(3, (5, Some(5)));
        let old_template = applied_work(2, (5, Some(5)));
        let member_behind = applied_work(3, (6, Some(5)));
        let both: BTreeMap<String, &Work> =
            [("m1".to_string(), &current), ("m2".to_string(), &current)].into();
        let one: BTreeMap<String, &Work> = [("m1".to_string(), &current)].into();
        let stale: BTreeMap<String, &Work> =
            [("m1".to_string(), &current), ("m2".to_string(), &old_template)].into();
        let behind: BTreeMap<String, &Work> =
            [("m1".to_string(), &current), ("m2".to_string(), &member_behind)].into();
        let scheduled = outcome(true, "Scheduled");
        let failed = outcome(false, "NoClusterFit");
        let empty = BindingStatus::default();
        // (what, outcome, works, divided, (Scheduled, FullyApplied reason), all current)
        type Case<'a> = (
            &'a str,
            Option<&'a Outcome>,
            &'a BTreeMap<String, &'a Work>,
            Option<i32>,
            (&'a str, &'a str),
            bool,
        );
        let cases: Vec<Case> = vec![
            ("all applied and current", Some(&scheduled), &both, Some(4), ("True", REASON_APPLIED), true),
            ("one work missing", Some(&scheduled), &one, Some(4), ("True", REASON_NOT_APPLIED), false),
            (
                "a work from an older template",
                Some(&scheduled),
                &stale,
                None,
                ("True", REASON_APPLIED),
                false,
            ),
            ("a member behind its object", Some(&scheduled), &behind, None, ("True", REASON_APPLIED), false),
            (
                "divided, replicas short",
                Some(&scheduled),
                &both,
                Some(6),
                ("True", REASON_REPLICAS_NOT_PLACED),
                true,
            ),
            ("scheduling failed", Some(&failed), &both, None, ("False", REASON_NOT_SCHEDULED), true),
        ];
        for (what, outcome, works, divided, (sched, reason), all_current) in cases {
            let observed = Observed {
                previous: &empty,
                outcome,
                clusters: &clusters,
                works,
                template_generation: Some(3),
                divided_replicas: divided,
                refused: None,
                moving: None,
            };
            let decided = binding_status(&observed, &at(10)).unwrap();
            let [s, f, h] = &decided.status.conditions[..] else { panic!("{what}: three conditions") };
            assert_eq!((s.type_.as_str(), s.status.as_str()), (conditions::SCHEDULED, sched), "{what}");
            assert_eq!(h.type_, conditions::HEALTHY, "{what}");
            assert_eq!((f.type_.as_str(), f.reason.as_str()), (conditions::FULLY_APPLIED, reason), "{what}");
            assert_eq!(decided.all_current, all_current, "{what}");
            assert_eq!(decided.status.scheduler_observed_generation, Some(3), "{what}");
            assert_eq!(decided.status.aggregated_status.len(), 2, "{what}");
        }
    }

    #[test]
    fn the_binding_says_where_and_why_the_template_is_not_healthy() {
        let clusters = [target("m1", 2), target("m2", 2)];
        let healthy = applied_work(3, (5, Some(5)));
        let mut crashing = applied_work(3, (5, Some(5)));
        let manifest = &mut crashing.status.as_mut().unwrap().manifest_statuses[0];
        manifest.health = Health::Unhealthy;
        manifest.health_detail = Some(flotilla_api::work::HealthDetail {
            reason: "CrashLoopBackOff".into(),
            message: "container web restarted 5 times, last exit code 1 (1 of 2 pods)".into(),
            restart_count: Some(5),
        });
        let works: BTreeMap<String, &Work> =
            [("m1".to_string(), &healthy), ("m2".to_string(), &crashing)].into();
        let scheduled = outcome(true, "Scheduled");
        let observed = Observed {
            previous: &BindingStatus::default(),
            outcome: Some(&scheduled),
            clusters: &clusters,
            works: &works,
            template_generation: Some(3),
            divided_replicas: None,
            refused: None,
            moving: None,
        };
        let status = binding_status(&observed, &at(10)).unwrap().status;
        assert_eq!(status.aggregated_status[0].health_detail, None);
        assert_eq!(status.aggregated_status[1].health_detail, manifest_detail(&crashing));
        let h = &status.conditions[2];
        assert_eq!(
            (h.type_.as_str(), h.status.as_str(), h.reason.as_str()),
            ("Healthy", "False", "Unhealthy")
        );
        assert_eq!(
            h.message,
            "m2: CrashLoopBackOff (5 restarts): container web restarted 5 times, last exit code 1 (1 of 2 pods)"
        );
        // Once healthy everywhere, the condition turns and the detail goes.
        let works: BTreeMap<String, &Work> =
            [("m1".to_string(), &healthy), ("m2".to_string(), &healthy)].into();
        let recovered =
            binding_status(&Observed { previous: &status, works: &works, ..observed }, &at(20)).unwrap();
        let h = &recovered.status.conditions[2];
        assert_eq!((h.status.as_str(), h.last_transition_time.clone()), ("True", at(20)));
        assert!(recovered.status.aggregated_status.iter().all(|i| i.health_detail.is_none()));
    }

    fn manifest_detail(work: &Work) -> Option<flotilla_api::work::HealthDetail> {
        work.status.as_ref()?.manifest_statuses[0].health_detail.clone()
    }

    #[test]
    fn without_an_outcome_the_stored_scheduled_is_kept_and_times_hold() {
        let clusters = [target("m1", 2)];
        let current = applied_work(3, (5, Some(5)));
        let works: BTreeMap<String, &Work> = [("m1".to_string(), &current)].into();
        let scheduled = outcome(true, "Scheduled");
        let mut observed = Observed {
            previous: &BindingStatus::default(),
            outcome: None,
            clusters: &clusters,
            works: &works,
            template_generation: Some(3),
            divided_replicas: None,
            refused: None,
            moving: None,
        };
        assert!(binding_status(&observed, &at(10)).is_none(), "nothing to say before the binder ran");

        observed.outcome = Some(&scheduled);
        let first = binding_status(&observed, &at(10)).unwrap().status;
        let item = &first.aggregated_status[0];
        assert!(item.applied && item.health == Health::Healthy, "{item:?}");
        assert_eq!(item.status.as_ref().unwrap()["readyReplicas"], 2);

        // A restarted hub: no outcome yet, the stored condition stays.
        let restarted = Observed { previous: &first, outcome: None, ..observed };
        let again = binding_status(&restarted, &at(20)).unwrap().status;
        assert!(same_status(&first, &again));
        assert_eq!(again.conditions[0].last_transition_time, at(10));
        assert_eq!(again.conditions[1].last_transition_time, at(10), "FullyApplied kept its time");

        // The outcome flips: a new time for Scheduled only where it changed.
        let failed = outcome(false, "NoClusterFit");
        let flipped =
            binding_status(&Observed { previous: &first, outcome: Some(&failed), ..observed }, &at(30))
                .unwrap()
                .status;
        assert!(!same_status(&first, &flipped));
        assert_eq!(flipped.conditions[0].last_transition_time, at(30));
    }

    #[test]
    fn a_refused_status_is_written_as_conditions_once() {
        let clusters = [target("m1", 2)];
        let current = applied_work(3, (5, Some(5)));
        let works: BTreeMap<String, &Work> = [("m1".to_string(), &current)].into();
        let scheduled = outcome(true, "Scheduled");
        let observed = Observed {
            previous: &BindingStatus::default(),
            outcome: Some(&scheduled),
            clusters: &clusters,
            works: &works,
            template_generation: Some(3),
            divided_replicas: None,
            refused: None,
            moving: None,
        };
        let wanted = binding_status(&observed, &at(10)).unwrap().status;
        let minimal = refused_status(&BindingStatus::default(), &wanted, "too large", &at(10)).unwrap();
        assert!(minimal.aggregated_status.is_empty());
        assert_eq!(minimal.conditions[0], wanted.conditions[0]);
        assert_eq!(minimal.conditions[1].reason, REASON_STATUS_REFUSED);
        assert!(minimal.conditions[1].message.contains("too large"));
        assert!(refused_status(&minimal, &wanted, "too large", &at(20)).is_none(), "said already");
        assert!(refused_status(&minimal, &wanted, "other reason", &at(20)).is_some());
    }
}
