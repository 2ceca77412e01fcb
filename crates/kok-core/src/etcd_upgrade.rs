//! A change of `EtcdCluster.spec.version` (process runtime), as a pure
//! state machine over what the Machines run, what the members answer and
//! the record on `status.upgrade`:
//!
//! 1. a snapshot first (an EtcdBackup; where it went is recorded);
//! 2. then one member at a time, followers first and the leader last, its
//!    component rewritten to the new binary (same flags, same data dir);
//!    the next moves only once it answers healthy on the new version and
//!    every member is healthy under a leader;
//! 3. a member not healthy within the deadline sends the moved members
//!    back to the old binary, newest first, each once the ones before are
//!    healthy again. That works while the cluster version is still the old
//!    minor, which it is until every member runs the new one.
//!
//! Every step is decided again from scratch on each reconcile.

use std::time::Duration;

use flotilla_api::kok::{conditions, EtcdUpgradeState as State, EtcdUpgradeStatus};
use flotilla_core::conditions::{condition, Wanted};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use crate::etcd_versions::{check_move, parse_version, release, unknown_version_message, EtcdRelease};
pub use crate::upgrade::reasons;

/// Reason of `Upgraded` False when the snapshot before the upgrade failed.
pub const SNAPSHOT_FAILED: &str = "SnapshotFailed";

/// One member as the upgrade sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberFacts {
    pub name: String,
    /// Version of the binary its component runs (`None`: a binary the
    /// operator does not know).
    pub runs: Option<String>,
    /// It answered with a leader.
    pub healthy: bool,
    /// The server version it reported.
    pub reports: Option<String>,
    pub is_leader: bool,
}

/// The pre-upgrade EtcdBackup, as last seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Snapshot {
    /// Not there (not created yet, or deleted).
    Missing,
    InProgress,
    /// Succeeded: `<machine>:<path>` of the file.
    Taken(String),
    Failed(String),
}

pub struct UpgradeFacts<'a> {
    pub cluster: &'a str,
    /// `spec.version`.
    pub want: &'a str,
    pub releases: &'a [EtcdRelease],
    /// By index.
    pub members: &'a [MemberFacts],
    pub record: Option<&'a EtcdUpgradeStatus>,
    /// The record's backup, when it names one.
    pub snapshot: Snapshot,
    pub conditions: &'a [Condition],
    pub generation: Option<i64>,
    /// How long a moved member has to become healthy on its new binary.
    pub deadline: Duration,
    pub now: Timestamp,
}

/// What to do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Create the EtcdBackup of this name (if it is not there).
    CreateBackup(String),
    /// Rewrite the member's component to run this release's binary.
    Move { member: String, release: EtcdRelease },
}

#[derive(Debug, Clone, PartialEq)]
pub struct UpgradeStep {
    pub action: Option<Action>,
    pub record: Option<EtcdUpgradeStatus>,
    /// `Upgraded`; `None` while the cluster has no member.
    pub condition: Option<Condition>,
    /// Something moves: look again soon.
    pub busy: bool,
}

/// Name of the EtcdBackup taken before moving `cluster` to `to`.
pub fn backup_name(cluster: &str, to: &str, now: Timestamp) -> String {
    let stamp = now.strftime("%Y%m%d-%H%M%S");
    format!("{cluster}-pre-{}-{stamp}", to.replace(['.', '+'], "-"))
}

/// The upgrade's next step.
pub fn step(f: &UpgradeFacts) -> UpgradeStep {
    let cond = |ok: Option<bool>, reason: &str, message: String| {
        let wanted = match ok {
            Some(ok) => Wanted::new(conditions::UPGRADED, ok, reason, message),
            None => Wanted::unknown(conditions::UPGRADED, reason, message),
        };
        Some(condition(f.conditions, wanted.generation(f.generation), &Time(f.now)))
    };
    // A finished attempt at another version than the spec's is history.
    let finished = |r: &&EtcdUpgradeStatus| {
        r.to != f.want
            && matches!(r.state, Some(State::Succeeded | State::RolledBack | State::SnapshotFailed))
    };
    let record = f.record.filter(|r| !finished(r)).cloned();
    let stay = |ok: Option<bool>, reason: &str, message: String| UpgradeStep {
        action: None,
        record: record.clone(),
        condition: cond(ok, reason, message),
        busy: false,
    };
    if f.members.is_empty() {
        return UpgradeStep { action: None, record, condition: None, busy: false };
    }
    if let Some(m) = f.members.iter().find(|m| m.runs.is_none()) {
        return stay(
            Some(false),
            reasons::UNKNOWN_VERSION,
            format!("member {} runs an etcd binary this operator does not know; nothing moves", m.name),
        );
    }
    let runs = |m: &MemberFacts| m.runs.clone().unwrap_or_default();
    let all_healthy = f.members.iter().all(|m| m.healthy);
    let since_move = |r: &EtcdUpgradeStatus| {
        r.moved_at.as_ref().map_or(Duration::ZERO, |t| {
            Duration::from_secs(u64::try_from(f.now.as_second() - t.0.as_second()).unwrap_or(0))
        })
    };
    let settled = |m: &MemberFacts, version: &str| m.healthy && m.reports.as_deref() == Some(version);

    // A rollback runs to its end whatever the spec says now.
    if let Some(r) = record.as_ref().filter(|r| r.state == Some(State::RollingBack)) {
        let Some(back) = release(f.releases, &r.from) else {
            return stay(Some(false), reasons::ROLLING_BACK, unknown_version_message(&r.from, f.releases));
        };
        let cause = r.failed_member.clone().unwrap_or_default();
        let still: Vec<&String> = r
            .moved
            .iter()
            .rev()
            .filter(|n| f.members.iter().any(|m| &m.name == *n && runs(m) != r.from))
            .collect();
        let waiting: Vec<&str> = f
            .members
            .iter()
            .filter(|m| runs(m) == r.from && !settled(m, &r.from))
            .map(|m| m.name.as_str())
            .collect();
        let Some(next) = still.first() else {
            if !waiting.is_empty() {
                let message = format!(
                    "rolling back to {}: waiting for {} to be healthy on it again",
                    r.from,
                    waiting.join(", ")
                );
                return UpgradeStep { busy: true, ..stay(Some(false), reasons::ROLLING_BACK, message) };
            }
            let mut done = r.clone();
            done.state = Some(State::RolledBack);
            return UpgradeStep {
                action: None,
                condition: cond(Some(false), reasons::ROLLED_BACK, rolled_back_message(&done, &cause)),
                record: Some(done),
                busy: false,
            };
        };
        // The member that failed goes back at once; the others each once
        // every member already on the old binary is healthy again.
        if **next != cause && !waiting.is_empty() {
            let message = format!(
                "rolling back to {}: waiting for {} before moving {next}",
                r.from,
                waiting.join(", ")
            );
            return UpgradeStep { busy: true, ..stay(Some(false), reasons::ROLLING_BACK, message) };
        }
        let mut moved = r.clone();
        moved.moved_at = Some(Time(f.now));
        let message =
            format!("{cause} was not healthy on {} in time; moving {next} back to {}", r.to, r.from);
        return UpgradeStep {
            action: Some(Action::Move { member: (*next).clone(), release: back.clone() }),
            record: Some(moved),
            condition: cond(Some(false), reasons::ROLLING_BACK, message),
            busy: true,
        };
    }
    // The outcome of the last attempt at this very version stays until the
    // spec names another.
    if let Some(r) = record.as_ref().filter(|r| r.to == f.want) {
        match r.state {
            Some(State::RolledBack) => {
                let cause = r.failed_member.clone().unwrap_or_default();
                return stay(Some(false), reasons::ROLLED_BACK, rolled_back_message(r, &cause));
            }
            Some(State::SnapshotFailed) => {
                let message = format!(
                    "the snapshot before upgrading to {} failed, so no member moved; set spec.version to \
                     another value and back to try again",
                    r.to
                );
                return stay(Some(false), SNAPSHOT_FAILED, message);
            }
            _ => {}
        }
    }

    let in_progress = record
        .as_ref()
        .filter(|r| r.to == f.want && matches!(r.state, Some(State::Snapshotting | State::Rolling)));
    let lowest = f.members.iter().map(runs).min_by_key(|v| parse_version(v)).unwrap_or_default();
    let from = in_progress.map_or(lowest.clone(), |r| r.from.clone());
    let everyone_there = f.members.iter().all(|m| runs(m) == f.want);

    if everyone_there && in_progress.is_none() {
        let reason = match record.as_ref() {
            Some(r) if r.to == f.want && r.state == Some(State::Succeeded) => reasons::SUCCEEDED,
            _ => reasons::AT_VERSION,
        };
        return stay(Some(true), reason, format!("every member runs etcd {}", f.want));
    }
    let Some(target) = release(f.releases, f.want) else {
        return stay(Some(false), reasons::UNKNOWN_VERSION, unknown_version_message(f.want, f.releases));
    };
    if in_progress.is_none() {
        // The lowest: etcd's cluster version, which is what may not go
        // down a minor (members half-way up may still go back).
        if let Err(refusal) = check_move(&lowest, f.want) {
            return stay(Some(false), reasons::REFUSED, format!("spec.version: {refusal}"));
        }
        if !all_healthy {
            let message = format!("waiting for every member to be healthy before upgrading to {}", f.want);
            return UpgradeStep { busy: true, ..stay(Some(false), reasons::UPGRADING, message) };
        }
        let backup = backup_name(f.cluster, f.want, f.now);
        let fresh = EtcdUpgradeStatus {
            from: from.clone(),
            to: f.want.to_string(),
            state: Some(State::Snapshotting),
            backup: Some(backup.clone()),
            ..Default::default()
        };
        let message = format!("taking snapshot {backup} before upgrading from {from} to {}", f.want);
        return UpgradeStep {
            action: Some(Action::CreateBackup(backup)),
            record: Some(fresh),
            condition: cond(Some(false), reasons::UPGRADING, message),
            busy: true,
        };
    }
    let mut r = in_progress.cloned().unwrap_or_default();

    if r.state == Some(State::Snapshotting) {
        let backup = r.backup.clone().unwrap_or_default();
        match &f.snapshot {
            Snapshot::Taken(at) => {
                r.snapshot = Some(at.clone());
                r.state = Some(State::Rolling);
            }
            Snapshot::Failed(why) => {
                r.state = Some(State::SnapshotFailed);
                let message = format!(
                    "snapshot {backup} before upgrading to {} failed, so no member moved: {why}",
                    r.to
                );
                return UpgradeStep {
                    action: None,
                    record: Some(r),
                    condition: cond(Some(false), SNAPSHOT_FAILED, message),
                    busy: false,
                };
            }
            Snapshot::Missing | Snapshot::InProgress => {
                let message =
                    format!("taking snapshot {backup} before upgrading from {} to {}", r.from, r.to);
                return UpgradeStep {
                    action: (f.snapshot == Snapshot::Missing).then_some(Action::CreateBackup(backup)),
                    record: Some(r),
                    condition: cond(Some(false), reasons::UPGRADING, message),
                    busy: true,
                };
            }
        }
    }

    // Rolling: the newest moved member first has to settle.
    if let Some(last) = r.moved.last().and_then(|n| f.members.iter().find(|m| &m.name == n)) {
        let ready = settled(last, &r.to) && all_healthy;
        if !ready {
            if since_move(&r) > f.deadline {
                r.state = Some(State::RollingBack);
                r.failed_member = Some(last.name.clone());
                r.moved_at = None;
                return step(&UpgradeFacts { record: Some(&r), snapshot: f.snapshot.clone(), ..*f });
            }
            let message = format!(
                "upgrading to {}: waiting for {} to be healthy on it ({}s of {}s)",
                r.to,
                last.name,
                since_move(&r).as_secs(),
                f.deadline.as_secs()
            );
            return UpgradeStep {
                action: None,
                record: Some(r),
                condition: cond(Some(false), reasons::UPGRADING, message),
                busy: true,
            };
        }
    }
    let mut left: Vec<&MemberFacts> = f.members.iter().filter(|m| runs(m) != r.to).collect();
    // Followers first, the leader last: one leader election, at the end.
    left.sort_by_key(|m| m.is_leader);
    let Some(next) = left.first() else {
        r.state = Some(State::Succeeded);
        r.moved_at = None;
        let message = format!(
            "every member moved from {} to {}; snapshot before the upgrade: {}",
            r.from,
            r.to,
            r.snapshot.clone().unwrap_or_default()
        );
        return UpgradeStep {
            action: None,
            record: Some(r),
            condition: cond(Some(true), reasons::SUCCEEDED, message),
            busy: false,
        };
    };
    if !all_healthy {
        let message = format!(
            "upgrading to {}: waiting for every member to be healthy before moving {}",
            r.to, next.name
        );
        return UpgradeStep {
            action: None,
            record: Some(r),
            condition: cond(Some(false), reasons::UPGRADING, message),
            busy: true,
        };
    }
    r.moved.push(next.name.clone());
    r.moved_at = Some(Time(f.now));
    let message = format!(
        "upgrading from {} to {}: moving {} ({} of {})",
        r.from,
        r.to,
        next.name,
        r.moved.len(),
        f.members.len()
    );
    UpgradeStep {
        action: Some(Action::Move { member: next.name.clone(), release: target.clone() }),
        record: Some(r),
        condition: cond(Some(false), reasons::UPGRADING, message),
        busy: true,
    }
}

fn rolled_back_message(r: &EtcdUpgradeStatus, cause: &str) -> String {
    format!(
        "{cause} was not healthy on etcd {} in time, so every member runs {} again; snapshot before the \
         attempt: {}. Fix the {} binary, or set spec.version to another release",
        r.to,
        r.from,
        r.snapshot.clone().unwrap_or_else(|| "none".into()),
        r.to
    )
}

#[cfg(test)]
#[path = "etcd_upgrade_tests.rs"]
mod tests;
