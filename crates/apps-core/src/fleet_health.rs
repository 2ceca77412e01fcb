//! A template's health across its chosen clusters, from their Works: the
//! binding's `Healthy` condition, which the hub also puts on the template
//! (for the kinds whose status it aggregates), so `kubectl describe` on
//! the hub says e.g. `m2: CrashLoopBackOff (5 restarts): container web
//! restarted 5 times, last exit code 1`.

use flotilla_api::work::{conditions, AggregatedStatusItem, Health};
use flotilla_core::conditions::Wanted;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use serde_json::{json, Value};

use crate::health::diagnosis::bounded;

/// `Healthy` reasons.
pub const REASON_HEALTHY: &str = "Healthy";
pub const REASON_UNHEALTHY: &str = "Unhealthy";
pub const REASON_HEALTH_UNKNOWN: &str = "HealthUnknown";
pub const REASON_NO_CLUSTER: &str = "NoCluster";

/// The longest `Healthy` message, in characters (a condition allows 32768;
/// a few clusters' details fit, the rest are counted).
pub const MAX_MESSAGE_CHARS: usize = 4096;

/// What one cluster says: `m2: CrashLoopBackOff (5 restarts): container
/// web restarted 5 times, last exit code 1`; None when healthy.
pub fn cluster_summary(item: &AggregatedStatusItem) -> Option<String> {
    let cluster = &item.cluster_name;
    if !item.applied {
        return Some(format!("{cluster}: not applied yet"));
    }
    if item.health == Health::Healthy {
        return None;
    }
    Some(match &item.health_detail {
        Some(detail) => {
            let restarts = match detail.restart_count {
                Some(1) => " (1 restart)".to_string(),
                Some(n) => format!(" ({n} restarts)"),
                None => String::new(),
            };
            format!("{cluster}: {}{restarts}: {}", detail.reason, detail.message)
        }
        None if item.health == Health::Unhealthy => format!("{cluster}: unhealthy"),
        None => format!("{cluster}: health not known yet"),
    })
}

/// The binding's `Healthy` condition: True when the template is healthy in
/// every chosen cluster, False when it is unhealthy in one (its message
/// names every cluster that is not healthy, the unhealthy ones first),
/// Unknown otherwise.
pub fn healthy(items: &[AggregatedStatusItem]) -> Wanted {
    if items.is_empty() {
        return Wanted::unknown(conditions::HEALTHY, REASON_NO_CLUSTER, "no cluster is chosen");
    }
    let unhealthy = |i: &&AggregatedStatusItem| i.applied && i.health == Health::Unhealthy;
    let (bad, unsure): (Vec<&AggregatedStatusItem>, Vec<&AggregatedStatusItem>) =
        items.iter().filter(|i| cluster_summary(i).is_some()).partition(unhealthy);
    if bad.is_empty() && unsure.is_empty() {
        let n = items.len();
        let message = if n == 1 {
            format!("healthy in the chosen cluster ({})", items[0].cluster_name)
        } else {
            format!("healthy in all {n} chosen clusters")
        };
        return Wanted::new(conditions::HEALTHY, true, REASON_HEALTHY, message);
    }
    let parts: Vec<String> = bad.iter().chain(&unsure).filter_map(|i| cluster_summary(i)).collect();
    let message = joined(&parts, MAX_MESSAGE_CHARS);
    if bad.is_empty() {
        Wanted::unknown(conditions::HEALTHY, REASON_HEALTH_UNKNOWN, message)
    } else {
        Wanted::new(conditions::HEALTHY, false, REASON_UNHEALTHY, message)
    }
}

/// `parts` joined by `; ` within `max` characters; those that do not fit
/// are counted at the end.
fn joined(parts: &[String], max: usize) -> String {
    let mut message = String::new();
    let mut length = 0;
    for (i, part) in parts.iter().enumerate() {
        let left = parts.len() - i;
        let more = format!("; and {left} more clusters");
        let part_length = part.chars().count() + if i == 0 { 0 } else { 2 };
        // Room for this part and, if others follow, the count of them.
        let reserve = if left > 1 { more.chars().count() + 8 } else { 0 };
        if length + part_length + reserve > max {
            if i == 0 {
                return bounded(part, max);
            }
            message.push_str(&more);
            return message;
        }
        if i > 0 {
            message.push_str("; ");
        }
        message.push_str(part);
        length += part_length;
    }
    message
}

/// The binding's `Healthy` condition as it goes into the template's
/// `status.conditions` (the workload kinds' condition shape).
pub fn template_condition(healthy: &Condition) -> Value {
    json!({
        "type": healthy.type_,
        "status": healthy.status,
        "reason": healthy.reason,
        "message": healthy.message,
        "lastTransitionTime": healthy.last_transition_time,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_api::work::HealthDetail;

    fn item(
        cluster: &str,
        applied: bool,
        health: Health,
        detail: Option<(&str, &str, Option<i32>)>,
    ) -> AggregatedStatusItem {
        AggregatedStatusItem {
            cluster_name: cluster.into(),
            applied,
            health,
            health_detail: detail.map(|(reason, message, restart_count)| HealthDetail {
                reason: reason.into(),
                message: message.into(),
                restart_count,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_condition_names_each_cluster_that_is_not_healthy_unhealthy_first() {
        let crash = Some(("CrashLoopBackOff", "container web restarted 5 times, last exit code 1", Some(5)));
        let unschedulable = Some(("Unschedulable", "0/1 nodes are available: 1 node(s) didn't match", None));
        let starting = Some(("Progressing", "1 of 2 pods starting (container web ContainerCreating)", None));
        // (what, items, (status, reason, message))
        type Case = (&'static str, Vec<AggregatedStatusItem>, (&'static str, &'static str, &'static str));
        let cases: Vec<Case> = vec![
            ("no cluster", vec![], ("Unknown", REASON_NO_CLUSTER, "no cluster is chosen")),
            (
                "all healthy",
                vec![item("m1", true, Health::Healthy, None), item("m2", true, Health::Healthy, None)],
                ("True", REASON_HEALTHY, "healthy in all 2 chosen clusters"),
            ),
            (
                "one healthy cluster",
                vec![item("m1", true, Health::Healthy, None)],
                ("True", REASON_HEALTHY, "healthy in the chosen cluster (m1)"),
            ),
            (
                "a crash loop and an unschedulable pod, a cluster still starting",
                vec![
                    item("m1", true, Health::Unhealthy, starting),
                    item("m2", true, Health::Unhealthy, crash),
                    item("m3", true, Health::Healthy, None),
                    item("m4", true, Health::Unknown, None),
                ],
                (
                    "False",
                    REASON_UNHEALTHY,
                    "m1: Progressing: 1 of 2 pods starting (container web ContainerCreating); \
                     m2: CrashLoopBackOff (5 restarts): container web restarted 5 times, last exit code 1; \
                     m4: health not known yet",
                ),
            ),
            (
                "unknown and not applied",
                vec![item("m1", false, Health::Unknown, None), item("m2", true, Health::Unknown, starting)],
                (
                    "Unknown",
                    REASON_HEALTH_UNKNOWN,
                    "m1: not applied yet; m2: Progressing: 1 of 2 pods starting (container web ContainerCreating)",
                ),
            ),
            (
                "an older agent gives no detail; one restart",
                vec![
                    item("m1", true, Health::Unhealthy, None),
                    item("m2", true, Health::Unhealthy, unschedulable),
                    item("m3", true, Health::Unhealthy, Some(("CrashLoopBackOff", "c", Some(1)))),
                ],
                (
                    "False",
                    REASON_UNHEALTHY,
                    "m1: unhealthy; m2: Unschedulable: 0/1 nodes are available: 1 node(s) didn't match; \
                     m3: CrashLoopBackOff (1 restart): c",
                ),
            ),
        ];
        for (name, items, (status, reason, message)) in cases {
            let wanted = healthy(&items);
            assert_eq!(
                (wanted.status, wanted.reason.as_str(), wanted.message.as_str()),
                (status, reason, message),
                "{name}"
            );
            assert_eq!(wanted.type_, "Healthy");
        }
    }

    #[test]
    fn many_clusters_are_counted_within_the_bound() {
        let long = "x".repeat(400);
        let items: Vec<AggregatedStatusItem> = (0..100)
            .map(|i| {
                item(
                    &format!("member-{i:03}"),
                    true,
                    Health::Unhealthy,
                    Some(("ImagePullBackOff", &long, None)),
                )
            })
            .collect();
        let message = healthy(&items).message;
        assert!(message.chars().count() <= MAX_MESSAGE_CHARS, "{}", message.len());
        assert!(message.starts_with("member-000: ImagePullBackOff: xxx"));
        let shown = message.matches("ImagePullBackOff").count();
        assert!(shown >= 5, "{shown} shown");
        assert!(message.ends_with(&format!("; and {} more clusters", 100 - shown)), "{message}");
        // One part too long on its own is cut.
        assert_eq!(joined(&["y".repeat(50)], 10), format!("{}…", "y".repeat(9)));
    }

    #[test]
    fn the_template_gets_the_binding_s_condition() {
        let at = k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).unwrap();
        let condition = Condition {
            type_: "Healthy".into(),
            status: "False".into(),
            reason: "Unhealthy".into(),
            message: "m1: Unschedulable: no".into(),
            last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at),
            observed_generation: None,
        };
        assert_eq!(
            template_condition(&condition),
            json!({"type": "Healthy", "status": "False", "reason": "Unhealthy",
                   "message": "m1: Unschedulable: no", "lastTransitionTime": "2023-11-14T22:13:20Z"})
        );
    }
}
