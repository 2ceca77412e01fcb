//! The Events the binder publishes on a binding: decided from the spec it
//! read and the spec it is about to write, so they fire when a decision
//! changes (placement, failover, eviction) and never on a pass that writes
//! the same spec.

use std::collections::BTreeMap;

use flotilla_api::work::{BindingSpec, TargetCluster};
use flotilla_core::events::Notice;

/// An action names the placement, so the recorder never merges two
/// different placements into one series showing the first one's message.
const MAX_ACTION: usize = 128;

/// The Events for the binder going from `before` (`None`: no binding yet)
/// to `after`.
pub fn binding_events(before: Option<&BindingSpec>, after: &BindingSpec) -> Vec<Notice> {
    let empty = BindingSpec::default();
    let before_spec = before.unwrap_or(&empty);
    let mut out = Vec::new();
    let was = placement(&before_spec.clusters);
    let now = placement(&after.clusters);
    if was != now && !now.is_empty() {
        let summary = describe(&after.clusters);
        let action: String = format!("Schedule {summary}").chars().take(MAX_ACTION).collect();
        let message = if was.is_empty() {
            format!("scheduled on {summary}")
        } else {
            format!("placement changed from {} to {summary}", describe(&before_spec.clusters))
        };
        out.push(Notice::normal("Scheduled", &action, message));
    }
    for cluster in after.failed_over_from.iter().filter(|c| !before_spec.failed_over_from.contains(c)) {
        out.push(Notice::warning(
            "FailedOver",
            &format!("Failover {cluster}"),
            format!(
                "replicas moved away from cluster {cluster}, which the hub tainted as unhealthy; they return \
                 once it is healthy again for the stabilisation period (policy annotation \
                 policy.flotilla.io/return-after-failover: \"false\" keeps them where they are)"
            ),
        ));
    }
    for cluster in before_spec.failed_over_from.iter().filter(|c| !after.failed_over_from.contains(c)) {
        if now.contains_key(cluster.as_str()) {
            out.push(Notice::normal(
                "ReturnedAfterFailover",
                &format!("Return {cluster}"),
                format!("cluster {cluster} is healthy again: replicas returned to it"),
            ));
        }
    }
    for task in &after.graceful_eviction_tasks {
        if !before_spec.graceful_eviction_tasks.iter().any(|t| t.from_cluster == task.from_cluster) {
            let stays = if task.suppress_deletion == Some(true) {
                "its copy stays (purgeMode Never) until suppressDeletion is set to false on this binding"
            } else {
                "its copy keeps serving until the new ones are healthy elsewhere"
            };
            out.push(Notice::warning(
                "Evicting",
                &format!("Evict {}", task.from_cluster),
                format!(
                    "evicting {} replicas from cluster {} ({}: {}); {stays}",
                    task.replicas, task.from_cluster, task.reason, task.message
                ),
            ));
        }
    }
    for task in &before_spec.graceful_eviction_tasks {
        let ended = !after.graceful_eviction_tasks.iter().any(|t| t.from_cluster == task.from_cluster);
        if ended && !now.contains_key(task.from_cluster.as_str()) {
            out.push(Notice::normal(
                "Evicted",
                &format!("Evict {}", task.from_cluster),
                format!("the copy on cluster {} was removed: the replicas run elsewhere", task.from_cluster),
            ));
        }
    }
    out
}

fn placement(clusters: &[TargetCluster]) -> BTreeMap<&str, i32> {
    clusters.iter().map(|c| (c.name.as_str(), c.replicas)).collect()
}

/// `m1 (2), m2 (1)`; a cluster without replicas (a non-workload) by name.
fn describe(clusters: &[TargetCluster]) -> String {
    if clusters.is_empty() {
        return "no cluster".into();
    }
    let mut sorted: Vec<&TargetCluster> = clusters.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let any_replicas = sorted.iter().any(|c| c.replicas > 0);
    sorted
        .iter()
        .map(|c| if any_replicas { format!("{} ({})", c.name, c.replicas) } else { c.name.clone() })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_api::work::GracefulEvictionTask;
    use flotilla_core::events::Severity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn spec(clusters: &[(&str, i32)], failed_over_from: &[&str], evicting: &[&str]) -> BindingSpec {
        BindingSpec {
            clusters: clusters
                .iter()
                .map(|(n, r)| TargetCluster { name: n.to_string(), replicas: *r })
                .collect(),
            failed_over_from: failed_over_from.iter().map(|c| c.to_string()).collect(),
            graceful_eviction_tasks: evicting
                .iter()
                .map(|c| GracefulEvictionTask {
                    from_cluster: c.to_string(),
                    replicas: 2,
                    reason: "TaintUntolerated".into(),
                    message: "cluster has taint cluster.flotilla.io/unreachable:NoExecute".into(),
                    creation_timestamp: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
                    producer: String::new(),
                    purge_mode: None,
                    grace_period_seconds: None,
                    suppress_deletion: None,
                    preserved_label_state: Default::default(),
                    clusters_before_failover: Vec::new(),
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn events_fire_when_a_decision_changes() {
        type Case = (&'static str, Option<BindingSpec>, BindingSpec, Vec<(Severity, &'static str)>);
        let cases: Vec<Case> = vec![
            ("first placement", None, spec(&[("m1", 2)], &[], &[]), vec![(Severity::Normal, "Scheduled")]),
            ("nothing fits yet: quiet", None, spec(&[], &[], &[]), vec![]),
            (
                "same placement: quiet",
                Some(spec(&[("m1", 2)], &[], &[])),
                spec(&[("m1", 2)], &[], &[]),
                vec![],
            ),
            (
                "same placement in another order: quiet",
                Some(spec(&[("m1", 1), ("m2", 1)], &[], &[])),
                spec(&[("m2", 1), ("m1", 1)], &[], &[]),
                vec![],
            ),
            (
                "replicas change",
                Some(spec(&[("m1", 2)], &[], &[])),
                spec(&[("m1", 3)], &[], &[]),
                vec![(Severity::Normal, "Scheduled")],
            ),
            (
                "failover with a graceful eviction",
                Some(spec(&[("m1", 2), ("m2", 2)], &[], &[])),
                spec(&[("m1", 4)], &["m2"], &["m2"]),
                vec![
                    (Severity::Normal, "Scheduled"),
                    (Severity::Warning, "FailedOver"),
                    (Severity::Warning, "Evicting"),
                ],
            ),
            (
                "the eviction ends",
                Some(spec(&[("m1", 4)], &["m2"], &["m2"])),
                spec(&[("m1", 4)], &["m2"], &[]),
                vec![(Severity::Normal, "Evicted")],
            ),
            (
                "the eviction ends because the cluster is chosen again",
                Some(spec(&[("m1", 4)], &["m2"], &["m2"])),
                spec(&[("m1", 2), ("m2", 2)], &[], &[]),
                vec![(Severity::Normal, "Scheduled"), (Severity::Normal, "ReturnedAfterFailover")],
            ),
            (
                "a failed-over cluster leaves the fleet: quiet about it",
                Some(spec(&[("m1", 4)], &["m2"], &[])),
                spec(&[("m1", 4)], &[], &[]),
                vec![],
            ),
        ];
        for (name, before, after, want) in cases {
            let got: Vec<(Severity, String)> =
                binding_events(before.as_ref(), &after).into_iter().map(|n| (n.severity, n.reason)).collect();
            let want: Vec<(Severity, String)> = want.into_iter().map(|(s, r)| (s, r.to_string())).collect();
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn messages_say_where_and_actions_tell_placements_apart() {
        let first = binding_events(None, &spec(&[("m2", 1), ("m1", 2)], &[], &[]));
        assert_eq!(first[0].message, "scheduled on m1 (2), m2 (1)");
        let moved = binding_events(Some(&spec(&[("m1", 2)], &[], &[])), &spec(&[("m1", 3)], &[], &[]));
        assert_eq!(moved[0].message, "placement changed from m1 (2) to m1 (3)");
        assert_ne!(first[0].action, moved[0].action);
        let names_only = binding_events(None, &spec(&[("m1", 0), ("m2", 0)], &[], &[]));
        assert_eq!(names_only[0].message, "scheduled on m1, m2");
        let many: Vec<(String, i32)> = (0..100).map(|i| (format!("member-{i}"), 1)).collect();
        let many: Vec<(&str, i32)> = many.iter().map(|(n, r)| (n.as_str(), *r)).collect();
        let long = binding_events(None, &spec(&many, &[], &[]));
        assert!(long[0].action.chars().count() <= MAX_ACTION);
    }
}
