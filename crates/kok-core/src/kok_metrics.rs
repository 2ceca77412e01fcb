//! What the metrics say about hosted clusters and etcd clusters, decided
//! from their status: an etcd cluster's voting members, how many are
//! healthy, its leader and quorum; the soonest certificate expiry of a
//! hosted cluster; whether an upgrade is under way, and how long since
//! its current step (a component instance moving, an etcd member moving,
//! the snapshot before) began: the operators give a step a deadline
//! (60 s by default) and roll back past it, so a step much older than
//! that means nothing acts on the upgrade. `flotilla-kok`'s
//! `metrics` module reads these off its caches at scrape time.

use flotilla_api::kok::{conditions, EtcdClusterStatus, EtcdUpgradeState, HostedClusterStatus, UpgradeState};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EtcdHealth {
    /// Members that vote (learners do not).
    pub voting: usize,
    /// Voting members whose `/health` answered true at the last probe.
    pub healthy_voting: usize,
    pub has_leader: bool,
    /// A majority of the voting members is healthy. No voting member at
    /// all (not provisioned yet) is no quorum.
    pub has_quorum: bool,
}

pub fn etcd_health(status: &EtcdClusterStatus) -> EtcdHealth {
    let voting = status.members.iter().filter(|m| !m.is_learner).count();
    let healthy_voting = status.members.iter().filter(|m| !m.is_learner && m.healthy).count();
    let has_leader = status
        .leader
        .as_deref()
        .is_some_and(|leader| status.members.iter().any(|m| m.name == leader && !m.is_learner));
    EtcdHealth { voting, healthy_voting, has_leader, has_quorum: voting > 0 && healthy_voting > voting / 2 }
}

/// Seconds until the soonest of the hosted cluster's certificates expires
/// (negative once one has), `None` before any is issued. One figure per
/// cluster keeps the series to one per cluster; the cluster's status
/// names which certificate it is.
pub fn soonest_certificate_expiry_seconds(status: &HostedClusterStatus, now: Timestamp) -> Option<f64> {
    status.certificates.iter().map(|c| c.not_after.0.duration_since(now).as_secs_f64()).reduce(f64::min)
}

/// A hosted cluster's version change is moving components (forward or
/// back).
pub fn hosted_upgrade_in_progress(status: &HostedClusterStatus) -> bool {
    status
        .upgrade
        .as_ref()
        .is_some_and(|u| matches!(u.state, UpgradeState::InProgress | UpgradeState::RollingBack))
}

/// An etcd version change is snapshotting or moving members (forward or
/// back); an upgrade recorded without a state has not finished either.
pub fn etcd_upgrade_in_progress(status: &EtcdClusterStatus) -> bool {
    status.upgrade.as_ref().is_some_and(|u| {
        matches!(
            u.state,
            None | Some(
                EtcdUpgradeState::Snapshotting | EtcdUpgradeState::Rolling | EtcdUpgradeState::RollingBack
            )
        )
    })
}

fn seconds_since(then: &Time, now: Timestamp) -> f64 {
    now.duration_since(then.0).as_secs_f64().max(0.0)
}

/// Seconds since the current step of a hosted cluster's upgrade in
/// progress began (or the upgrade, when no step is stamped yet); `None`
/// when no upgrade is in progress.
pub fn hosted_upgrade_step_seconds(status: &HostedClusterStatus, now: Timestamp) -> Option<f64> {
    if !hosted_upgrade_in_progress(status) {
        return None;
    }
    let upgrade = status.upgrade.as_ref()?;
    upgrade.step_started_at.as_ref().or(upgrade.started_at.as_ref()).map(|t| seconds_since(t, now))
}

/// Seconds since an etcd upgrade in progress last moved: its newest member
/// move (or move back), or, before the first move (the snapshot), since
/// its `Upgraded` condition last changed; `None` when no upgrade is in
/// progress.
pub fn etcd_upgrade_step_seconds(status: &EtcdClusterStatus, now: Timestamp) -> Option<f64> {
    if !etcd_upgrade_in_progress(status) {
        return None;
    }
    let moved = status.upgrade.as_ref().and_then(|u| u.moved_at.as_ref());
    let changed = || {
        status.conditions.iter().find(|c| c.type_ == conditions::UPGRADED).map(|c| &c.last_transition_time)
    };
    moved.or_else(changed).map(|t| seconds_since(t, now))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_api::kok::{CertificateStatus, EtcdMemberStatus, EtcdUpgradeStatus, UpgradeStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

    #[test]
    fn an_upgrade_step_is_timed_from_its_start_while_in_progress() {
        let now = Timestamp::from_second(10_000).unwrap();
        let at = |s: i64| Some(Time(Timestamp::from_second(s).unwrap()));
        let hosted = |state, started_at, step_started_at| HostedClusterStatus {
            upgrade: Some(UpgradeStatus {
                from: "1".into(),
                to: "2".into(),
                state,
                started_at,
                step_started_at,
                ..Default::default()
            }),
            ..Default::default()
        };
        let cases = [
            ("a step under way", hosted(UpgradeState::InProgress, at(9_000), at(9_940)), Some(60.0)),
            ("rolling back", hosted(UpgradeState::RollingBack, at(9_000), at(9_400)), Some(600.0)),
            (
                "no step stamped: since the start",
                hosted(UpgradeState::InProgress, at(9_000), None),
                Some(1_000.0),
            ),
            (
                "a step stamped ahead of the clock",
                hosted(UpgradeState::InProgress, None, at(10_005)),
                Some(0.0),
            ),
            ("finished", hosted(UpgradeState::Succeeded, at(1), at(2)), None),
            ("never upgraded", HostedClusterStatus::default(), None),
        ];
        for (name, status, want) in cases {
            assert_eq!(hosted_upgrade_step_seconds(&status, now), want, "hosted: {name}");
        }
        let upgraded_changed = |s: i64| Condition {
            type_: conditions::UPGRADED.into(),
            status: "False".into(),
            reason: "Snapshotting".into(),
            message: String::new(),
            last_transition_time: Time(Timestamp::from_second(s).unwrap()),
            observed_generation: None,
        };
        let etcd = |state, moved_at, condition: Option<Condition>| EtcdClusterStatus {
            upgrade: Some(EtcdUpgradeStatus {
                from: "1".into(),
                to: "2".into(),
                state,
                moved_at,
                ..Default::default()
            }),
            conditions: condition.into_iter().collect(),
            ..Default::default()
        };
        let cases = [
            (
                "rolling: since the newest move",
                etcd(Some(EtcdUpgradeState::Rolling), at(9_970), None),
                Some(30.0),
            ),
            (
                "snapshotting: since the condition changed",
                etcd(Some(EtcdUpgradeState::Snapshotting), None, Some(upgraded_changed(8_800))),
                Some(1_200.0),
            ),
            ("nothing stamped", etcd(Some(EtcdUpgradeState::Snapshotting), None, None), None),
            ("succeeded", etcd(Some(EtcdUpgradeState::Succeeded), at(9_000), None), None),
            ("never upgraded", EtcdClusterStatus::default(), None),
        ];
        for (name, status, want) in cases {
            assert_eq!(etcd_upgrade_step_seconds(&status, now), want, "etcd: {name}");
        }
    }

    fn member(name: &str, learner: bool, healthy: bool) -> EtcdMemberStatus {
        EtcdMemberStatus { name: name.into(), is_learner: learner, healthy, ..Default::default() }
    }

    #[test]
    fn etcd_health_counts_voters_leader_and_quorum() {
        struct Case {
            name: &'static str,
            members: Vec<EtcdMemberStatus>,
            leader: Option<&'static str>,
            want: EtcdHealth,
        }
        let h = |voting, healthy_voting, has_leader, has_quorum| EtcdHealth {
            voting,
            healthy_voting,
            has_leader,
            has_quorum,
        };
        let cases = [
            Case { name: "not provisioned", members: vec![], leader: None, want: h(0, 0, false, false) },
            Case {
                name: "three healthy with a leader",
                members: vec![
                    member("e-0", false, true),
                    member("e-1", false, true),
                    member("e-2", false, true),
                ],
                leader: Some("e-0"),
                want: h(3, 3, true, true),
            },
            Case {
                name: "two of three healthy keep quorum",
                members: vec![
                    member("e-0", false, true),
                    member("e-1", false, false),
                    member("e-2", false, true),
                ],
                leader: Some("e-2"),
                want: h(3, 2, true, true),
            },
            Case {
                name: "one of three healthy lost quorum",
                members: vec![
                    member("e-0", false, true),
                    member("e-1", false, false),
                    member("e-2", false, false),
                ],
                leader: None,
                want: h(3, 1, false, false),
            },
            Case {
                name: "two of four is not a majority",
                members: vec![
                    member("e-0", false, true),
                    member("e-1", false, true),
                    member("e-2", false, false),
                    member("e-3", false, false),
                ],
                leader: Some("e-0"),
                want: h(4, 2, true, false),
            },
            Case {
                name: "a healthy learner does not vote",
                members: vec![member("e-0", false, true), member("e-1", true, true)],
                leader: Some("e-0"),
                want: h(1, 1, true, true),
            },
            Case {
                name: "a leader that is no member is no leader",
                members: vec![member("e-0", false, true)],
                leader: Some("gone-7"),
                want: h(1, 1, false, true),
            },
        ];
        for case in cases {
            let status = EtcdClusterStatus {
                members: case.members,
                leader: case.leader.map(str::to_string),
                ..Default::default()
            };
            assert_eq!(etcd_health(&status), case.want, "{}", case.name);
        }
    }

    #[test]
    fn soonest_certificate_expiry_in_seconds() {
        let now = Timestamp::from_second(1_000_000).unwrap();
        let cert = |name: &str, not_after: i64| CertificateStatus {
            name: name.into(),
            not_after: Time(Timestamp::from_second(not_after).unwrap()),
            issuer: None,
        };
        let cases = [
            ("none issued yet", vec![], None),
            ("one", vec![cert("ca", 1_086_400)], Some(86_400.0)),
            (
                "the soonest of several",
                vec![cert("ca", 2_000_000), cert("apiserver", 1_000_600)],
                Some(600.0),
            ),
            ("expired is negative", vec![cert("ca", 2_000_000), cert("kubelet", 999_000)], Some(-1_000.0)),
        ];
        for (name, certificates, want) in cases {
            let status = HostedClusterStatus { certificates, ..Default::default() };
            assert_eq!(soonest_certificate_expiry_seconds(&status, now), want, "{name}");
        }
    }

    #[test]
    fn upgrades_in_progress() {
        let hosted = |state| HostedClusterStatus {
            upgrade: Some(UpgradeStatus { from: "1".into(), to: "2".into(), state, ..Default::default() }),
            ..Default::default()
        };
        let cases = [
            ("in progress", hosted(UpgradeState::InProgress), true),
            ("rolling back", hosted(UpgradeState::RollingBack), true),
            ("succeeded", hosted(UpgradeState::Succeeded), false),
            ("rolled back", hosted(UpgradeState::RolledBack), false),
            ("never upgraded", HostedClusterStatus::default(), false),
        ];
        for (name, status, want) in cases {
            assert_eq!(hosted_upgrade_in_progress(&status), want, "hosted: {name}");
        }
        let etcd = |state| EtcdClusterStatus {
            upgrade: Some(EtcdUpgradeStatus {
                from: "1".into(),
                to: "2".into(),
                state,
                ..Default::default()
            }),
            ..Default::default()
        };
        let cases = [
            ("no state yet", etcd(None), true),
            ("snapshotting", etcd(Some(EtcdUpgradeState::Snapshotting)), true),
            ("rolling", etcd(Some(EtcdUpgradeState::Rolling)), true),
            ("rolling back", etcd(Some(EtcdUpgradeState::RollingBack)), true),
            ("succeeded", etcd(Some(EtcdUpgradeState::Succeeded)), false),
            ("rolled back", etcd(Some(EtcdUpgradeState::RolledBack)), false),
            ("snapshot failed", etcd(Some(EtcdUpgradeState::SnapshotFailed)), false),
            ("never upgraded", EtcdClusterStatus::default(), false),
        ];
        for (name, status, want) in cases {
            assert_eq!(etcd_upgrade_in_progress(&status), want, "etcd: {name}");
        }
    }
}
