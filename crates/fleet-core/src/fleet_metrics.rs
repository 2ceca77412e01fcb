//! What the hub's metrics say about the fleet's clusters, decided from
//! their objects: how many clusters have each status of each condition,
//! each cluster's Available status, and how old each heartbeat is; and
//! how long a rollout's current step (a wave rolling out, a soak) has run
//! against the time it is given.
//! The hub's `metrics` module reads these off its caches at scrape time.

use flotilla_api::cluster::{conditions, ManagedCluster};
use flotilla_api::rollout::RolloutStatus;
use k8s_openapi::jiff::Timestamp;

/// The condition types counted for every cluster; a cluster without one
/// counts as `Unknown`, so the counts of a type add up to the fleet.
pub const COUNTED_CONDITIONS: [&str; 3] =
    [conditions::JOINED, conditions::AVAILABLE, conditions::MEMBER_HEALTHY];

/// Condition statuses as reported (anything else counts as `Unknown`).
pub const STATUSES: [&str; 3] = ["True", "False", "Unknown"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionCount {
    pub condition: &'static str,
    pub status: &'static str,
    pub clusters: usize,
}

/// The status of `type_` on `cluster`, one of `STATUSES`.
pub fn condition_status(cluster: &ManagedCluster, type_: &str) -> &'static str {
    match cluster.condition(type_).map(|c| c.status.as_str()) {
        Some("True") => "True",
        Some("False") => "False",
        _ => "Unknown",
    }
}

/// Clusters per condition type and status: every pair of
/// `COUNTED_CONDITIONS` × `STATUSES`, zeros included (an alert on
/// `status="False" > 0` needs the series to exist when it is 0).
pub fn clusters_by_condition<'a>(
    clusters: impl IntoIterator<Item = &'a ManagedCluster>,
) -> Vec<ConditionCount> {
    let mut counts = [[0usize; STATUSES.len()]; COUNTED_CONDITIONS.len()];
    for cluster in clusters {
        for (i, type_) in COUNTED_CONDITIONS.iter().enumerate() {
            let status = condition_status(cluster, type_);
            let j = STATUSES.iter().position(|s| *s == status).unwrap_or(STATUSES.len() - 1);
            counts[i][j] += 1;
        }
    }
    let mut out = Vec::with_capacity(COUNTED_CONDITIONS.len() * STATUSES.len());
    for (i, condition) in COUNTED_CONDITIONS.iter().enumerate() {
        for (j, status) in STATUSES.iter().enumerate() {
            out.push(ConditionCount { condition, status, clusters: counts[i][j] });
        }
    }
    out
}

/// Seconds since the heartbeat was renewed; a renewal stamped in the future
/// (the agent's clock ahead of the hub's) is 0, not negative.
pub fn heartbeat_age_seconds(renewed: Timestamp, now: Timestamp) -> f64 {
    now.duration_since(renewed).as_secs_f64().max(0.0)
}

/// A rollout's current step: how long it has run and how long it is
/// given (the soak, or the wave's progress deadline after which the hub
/// rolls back). Past its limit the hub should have moved on, so a step
/// well past it means the rollout is stuck.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RolloutStep {
    /// `Progressing` or `Soaking`.
    pub phase: &'static str,
    pub seconds: f64,
    pub limit_seconds: f64,
}

/// The step of a rollout under way; `None` when it is not moving on its
/// own: Complete, RolledBack, Paused (held by a person, on purpose), or
/// its step's start not written yet.
pub fn rollout_step(status: &RolloutStatus, now: Timestamp) -> Option<RolloutStep> {
    let (phase, started, limit) = match status.phase.as_str() {
        "Progressing" => ("Progressing", status.wave_started_at.as_ref()?, status.progress_deadline_seconds),
        "Soaking" => ("Soaking", status.soak_started_at.as_ref()?, status.soak_seconds),
        _ => return None,
    };
    Some(RolloutStep {
        phase,
        seconds: now.duration_since(started.0).as_secs_f64().max(0.0),
        limit_seconds: limit.max(0) as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rollout_step_is_timed_while_the_rollout_moves_on_its_own() {
        let now: Timestamp = "2026-12-07T12:00:00Z".parse().unwrap();
        let at = |s: &str| Some(Time(s.parse().unwrap()));
        let status = |phase: &str| RolloutStatus {
            phase: phase.into(),
            wave_started_at: at("2026-12-07T11:50:00Z"),
            soak_started_at: at("2026-12-07T11:59:00Z"),
            soak_seconds: 300,
            progress_deadline_seconds: 600,
            ..Default::default()
        };
        let step = |phase, seconds, limit_seconds| Some(RolloutStep { phase, seconds, limit_seconds });
        let future = RolloutStatus { soak_started_at: at("2026-12-07T12:01:00Z"), ..status("Soaking") };
        let unstamped = RolloutStatus { wave_started_at: None, ..status("Progressing") };
        let cases = [
            (
                "a wave rolling out, against its deadline",
                status("Progressing"),
                step("Progressing", 600.0, 600.0),
            ),
            ("a soak, against its length", status("Soaking"), step("Soaking", 60.0, 300.0)),
            ("a soak stamped ahead of the hub's clock", future, step("Soaking", 0.0, 300.0)),
            ("paused on purpose", status("Paused"), None),
            ("complete", status("Complete"), None),
            ("rolled back", status("RolledBack"), None),
            ("no status yet", RolloutStatus::default(), None),
            ("the step's start not written yet", unstamped, None),
        ];
        for (name, status, want) in cases {
            assert_eq!(rollout_step(&status, now), want, "{name}");
        }
    }
    use flotilla_api::cluster::{ManagedClusterSpec, ManagedClusterStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    fn cluster(conditions: &[(&str, &str)]) -> ManagedCluster {
        let mut mc = ManagedCluster::new("c", ManagedClusterSpec::default());
        mc.status = Some(ManagedClusterStatus {
            conditions: conditions
                .iter()
                .map(|(t, s)| Condition {
                    type_: t.to_string(),
                    status: s.to_string(),
                    reason: "R".into(),
                    message: "m".into(),
                    last_transition_time: Time(Timestamp::UNIX_EPOCH),
                    observed_generation: None,
                })
                .collect(),
            ..Default::default()
        });
        mc
    }

    fn count(counts: &[ConditionCount], condition: &str, status: &str) -> usize {
        counts.iter().find(|c| c.condition == condition && c.status == status).unwrap().clusters
    }

    #[test]
    fn clusters_are_counted_by_condition_and_status() {
        struct Case {
            name: &'static str,
            clusters: Vec<ManagedCluster>,
            // (condition, status, clusters)
            want: Vec<(&'static str, &'static str, usize)>,
        }
        let cases = [
            Case {
                name: "an empty fleet still reports every pair as 0",
                clusters: vec![],
                want: vec![("Available", "True", 0), ("Available", "Unknown", 0), ("Joined", "False", 0)],
            },
            Case {
                name: "a new cluster without conditions counts as Unknown",
                clusters: vec![cluster(&[])],
                want: vec![
                    ("Available", "Unknown", 1),
                    ("Joined", "Unknown", 1),
                    ("MemberHealthy", "Unknown", 1),
                ],
            },
            Case {
                name: "mixed fleet",
                clusters: vec![
                    cluster(&[("Joined", "True"), ("Available", "True")]),
                    cluster(&[("Joined", "True"), ("Available", "False")]),
                    cluster(&[("Joined", "True"), ("Available", "Unknown")]),
                    cluster(&[("Joined", "False")]),
                ],
                want: vec![
                    ("Joined", "True", 3),
                    ("Joined", "False", 1),
                    ("Available", "True", 1),
                    ("Available", "False", 1),
                    ("Available", "Unknown", 2),
                ],
            },
            Case {
                name: "a status other than True or False is Unknown",
                clusters: vec![cluster(&[("Available", "Maybe")])],
                want: vec![("Available", "Unknown", 1), ("Available", "True", 0)],
            },
        ];
        for case in cases {
            let counts = clusters_by_condition(&case.clusters);
            assert_eq!(counts.len(), 9, "{}: every pair reported", case.name);
            for (condition, status, want) in case.want {
                assert_eq!(count(&counts, condition, status), want, "{}: {condition}={status}", case.name);
            }
            for condition in COUNTED_CONDITIONS {
                let total: usize =
                    counts.iter().filter(|c| c.condition == condition).map(|c| c.clusters).sum();
                assert_eq!(total, case.clusters.len(), "{}: {condition} adds up to the fleet", case.name);
            }
        }
    }

    #[test]
    fn heartbeat_age_is_seconds_since_renewal_never_negative() {
        let now = Timestamp::from_second(1_000).unwrap();
        let cases = [
            ("renewed now", 1_000, 0.0),
            ("renewed 7 s ago", 993, 7.0),
            ("renewed an hour ago", 1_000 - 3_600, 3_600.0),
            ("renewed in the future (clock skew)", 1_005, 0.0),
        ];
        for (name, renewed, want) in cases {
            let renewed = Timestamp::from_second(renewed).unwrap();
            assert_eq!(heartbeat_age_seconds(renewed, now), want, "{name}");
        }
    }
}
