//! A ManagedCluster's condition history: each condition's transitions as
//! the hub observed them, beyond the one `lastTransitionTime` a condition
//! keeps. A transition is a new status or a new reason of a condition type
//! (a message alone changes too often, e.g. with a heartbeat's age, to be
//! history). Bounded per type, so a flapping condition cannot push the
//! other types' history out.

use flotilla_api::cluster::ConditionTransition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// How many transitions are kept per condition type.
pub const PER_TYPE: usize = 10;

/// The history after observing `conditions` at `now`: `history` (oldest
/// first) with one entry appended for each condition whose status or reason
/// differs from its type's latest entry, then trimmed to the newest
/// `per_type` entries of each type. A status change is dated by the
/// condition's own transition time; a reason change alone (which keeps that
/// time) by `now`. Returns `history` unchanged when nothing transitioned,
/// so the caller can skip the write.
pub fn next_history(
    history: &[ConditionTransition],
    conditions: &[Condition],
    now: Timestamp,
    per_type: usize,
) -> Vec<ConditionTransition> {
    let mut next = history.to_vec();
    let mut added = Vec::new();
    for condition in conditions {
        let latest = history.iter().rev().find(|t| t.type_ == condition.type_);
        let time = match latest {
            Some(t) if t.status == condition.status && t.reason == condition.reason => continue,
            Some(t) if t.status == condition.status => now,
            _ => condition.last_transition_time.0,
        };
        added.push(ConditionTransition {
            type_: condition.type_.clone(),
            status: condition.status.clone(),
            reason: condition.reason.clone(),
            message: condition.message.clone(),
            transition_time: Time(time),
        });
    }
    // Several at once: oldest first, by type when at the same time.
    added.sort_by(|a, b| (a.transition_time.0, &a.type_).cmp(&(b.transition_time.0, &b.type_)));
    next.extend(added);
    trim_per_type(next, per_type)
}

/// Keeps the newest `per_type` entries of each type, in order.
fn trim_per_type(history: Vec<ConditionTransition>, per_type: usize) -> Vec<ConditionTransition> {
    let mut kept_per_type: std::collections::HashMap<String, usize> = Default::default();
    let mut kept: Vec<ConditionTransition> = history
        .into_iter()
        .rev()
        .filter(|t| {
            let kept = kept_per_type.entry(t.type_.clone()).or_default();
            *kept += 1;
            *kept <= per_type
        })
        .collect();
    kept.reverse();
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    fn condition(type_: &str, status: &str, reason: &str, since: i64) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message: format!("{type_} is {status}"),
            last_transition_time: Time(at(since)),
            observed_generation: None,
        }
    }

    fn entry(type_: &str, status: &str, reason: &str, time: i64) -> ConditionTransition {
        ConditionTransition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message: format!("{type_} is {status}"),
            transition_time: Time(at(time)),
        }
    }

    struct Case {
        name: &'static str,
        history: Vec<ConditionTransition>,
        conditions: Vec<Condition>,
        per_type: usize,
        want: Vec<ConditionTransition>,
    }

    #[test]
    fn the_history_takes_in_transitions_and_stays_bounded() {
        let now = 1000;
        let cases = vec![
            Case {
                name: "a cluster's first conditions start its history, oldest first",
                history: vec![],
                conditions: vec![
                    condition("Available", "True", "Healthy", 20),
                    condition("Joined", "True", "Joined", 10),
                ],
                per_type: 10,
                want: vec![entry("Joined", "True", "Joined", 10), entry("Available", "True", "Healthy", 20)],
            },
            Case {
                name: "nothing changed: the same history",
                history: vec![
                    entry("Joined", "True", "Joined", 10),
                    entry("Available", "True", "Healthy", 20),
                ],
                conditions: vec![
                    condition("Joined", "True", "Joined", 10),
                    condition("Available", "True", "Healthy", 20),
                ],
                per_type: 10,
                want: vec![entry("Joined", "True", "Joined", 10), entry("Available", "True", "Healthy", 20)],
            },
            Case {
                name: "a message alone is no transition",
                history: vec![entry("Available", "True", "Healthy", 20)],
                conditions: vec![Condition {
                    message: "heartbeat 3s ago".into(),
                    ..condition("Available", "True", "Healthy", 20)
                }],
                per_type: 10,
                want: vec![entry("Available", "True", "Healthy", 20)],
            },
            Case {
                name: "a status change is appended at the condition's transition time",
                history: vec![entry("Available", "True", "Healthy", 20)],
                conditions: vec![condition("Available", "Unknown", "HeartbeatMissed", 500)],
                per_type: 10,
                want: vec![
                    entry("Available", "True", "Healthy", 20),
                    entry("Available", "Unknown", "HeartbeatMissed", 500),
                ],
            },
            Case {
                name: "a reason change alone keeps the transition time: dated now",
                history: vec![entry("Available", "False", "MemberUnhealthy", 20)],
                conditions: vec![condition("Available", "False", "ApiUnreachable", 20)],
                per_type: 10,
                want: vec![
                    entry("Available", "False", "MemberUnhealthy", 20),
                    entry("Available", "False", "ApiUnreachable", now),
                ],
            },
            Case {
                name: "a flip and back between two looks is compared with the latest entry of its type",
                history: vec![
                    entry("Available", "True", "Healthy", 20),
                    entry("Available", "Unknown", "HeartbeatMissed", 40),
                    entry("Joined", "True", "Joined", 50),
                ],
                conditions: vec![
                    condition("Available", "True", "Healthy", 60),
                    condition("Joined", "True", "Joined", 50),
                ],
                per_type: 10,
                want: vec![
                    entry("Available", "True", "Healthy", 20),
                    entry("Available", "Unknown", "HeartbeatMissed", 40),
                    entry("Joined", "True", "Joined", 50),
                    entry("Available", "True", "Healthy", 60),
                ],
            },
            Case {
                name: "bounded per type: a flapping type drops its oldest, not another type's",
                history: vec![
                    entry("Joined", "True", "Joined", 5),
                    entry("Available", "True", "Healthy", 10),
                    entry("Available", "Unknown", "HeartbeatMissed", 20),
                ],
                conditions: vec![
                    condition("Available", "True", "Healthy", 30),
                    condition("Joined", "True", "Joined", 5),
                ],
                per_type: 2,
                want: vec![
                    entry("Joined", "True", "Joined", 5),
                    entry("Available", "Unknown", "HeartbeatMissed", 20),
                    entry("Available", "True", "Healthy", 30),
                ],
            },
            Case {
                name: "a condition gone from the status leaves its history",
                history: vec![entry("MemberHealthy", "True", "Ready", 10)],
                conditions: vec![],
                per_type: 10,
                want: vec![entry("MemberHealthy", "True", "Ready", 10)],
            },
        ];
        for case in cases {
            let got = next_history(&case.history, &case.conditions, at(now), case.per_type);
            assert_eq!(got, case.want, "{}", case.name);
        }
    }
}
