//! The Events the Kube-on-Kube operators publish on HostedClusters and
//! EtcdClusters: decided from the status read and the status about to be
//! written, so they fire on transitions (ready, not ready, each upgrade
//! step, rollback, a member added or removed, a new leader, a backup
//! scheduled) and never on a reconcile that writes the same status.

use flotilla_api::kok::{conditions, EtcdClusterStatus, HostedClusterStatus, JobPhase};
use flotilla_core::events::Notice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use crate::upgrade::reasons;

/// The Events of a HostedCluster's status change.
pub fn hosted_events(
    name: &str,
    before: Option<&HostedClusterStatus>,
    after: &HostedClusterStatus,
) -> Vec<Notice> {
    let was = before.map(|s| s.conditions.as_slice()).unwrap_or_default();
    let now = after.conditions.as_slice();
    let mut out = Vec::new();
    if let Some((c, old)) = changed_status(was, now, conditions::READY) {
        match (c.status.as_str(), old) {
            ("True", _) => out.push(Notice::normal(
                "ClusterReady",
                "Reconcile",
                format!("hosted cluster {name} is ready: every control-plane component is healthy"),
            )),
            // Not ready while it is still coming up is no news.
            (_, Some("True")) => out.push(Notice::warning(
                "ClusterNotReady",
                "Reconcile",
                format!("hosted cluster {name} is not ready ({}): {}", c.reason, c.message),
            )),
            _ => {}
        }
    }
    if let Some((c, old)) = changed_status(was, now, conditions::CERTIFICATES_READY) {
        if c.status != "True" && old == Some("True") {
            out.push(Notice::warning(
                "CertificatesNotReady",
                "Certificates",
                format!(
                    "hosted cluster {name}: {} (annotate it kok.flotilla.io/rotate-certs to rotate)",
                    c.message
                ),
            ));
        }
    }
    if let Some((c, _)) = changed_status(was, now, conditions::VALID) {
        if c.status == "False" {
            out.push(Notice::warning(
                "InvalidSpec",
                "Validate",
                format!("hosted cluster {name}: {}", c.message),
            ));
        }
    }
    out.extend(upgrade_event(&format!("hosted cluster {name}"), was, now));
    out
}

/// The Events of an EtcdCluster's status change.
pub fn etcd_events(name: &str, before: Option<&EtcdClusterStatus>, after: &EtcdClusterStatus) -> Vec<Notice> {
    let empty = EtcdClusterStatus::default();
    let before = before.unwrap_or(&empty);
    let mut out = Vec::new();
    let first_members = before.members.is_empty();
    for m in after.members.iter().filter(|m| !before.members.iter().any(|b| b.name == m.name)) {
        let on = m.machine.as_deref().map(|machine| format!(" on machine {machine}")).unwrap_or_default();
        let how = if m.is_learner { " as a learner" } else { "" };
        let message = format!("etcd cluster {name}: member {} added{on}{how}", m.name);
        // The first members are the cluster's creation, not a change.
        if !first_members {
            out.push(Notice::normal("MemberAdded", &format!("Add {}", m.name), message));
        }
    }
    for m in before.members.iter().filter(|b| !after.members.iter().any(|m| m.name == b.name)) {
        out.push(Notice::normal(
            "MemberRemoved",
            &format!("Remove {}", m.name),
            format!("etcd cluster {name}: member {} removed", m.name),
        ));
    }
    if after.leader.is_some() && before.leader.is_some() && after.leader != before.leader {
        let leader = after.leader.clone().unwrap_or_default();
        out.push(Notice::normal(
            "LeaderChanged",
            &format!("Elect {leader}"),
            format!(
                "etcd cluster {name}: {leader} leads (was {})",
                before.leader.as_deref().unwrap_or_default()
            ),
        ));
    }
    if let Some((c, old)) = changed_status(&before.conditions, &after.conditions, conditions::ETCD_AVAILABLE)
    {
        match (c.status.as_str(), old) {
            ("True", _) => out.push(Notice::normal(
                "Available",
                "Probe",
                format!("etcd cluster {name} is available: {}", c.message),
            )),
            (_, Some("True")) => out.push(Notice::warning(
                "Unavailable",
                "Probe",
                format!("etcd cluster {name} is unavailable ({}): {}", c.reason, c.message),
            )),
            _ => {}
        }
    }
    if let Some(backup) = &after.last_scheduled_backup {
        if before.last_scheduled_backup.as_ref() != Some(backup) {
            out.push(Notice::normal(
                "BackupScheduled",
                &format!("Backup {backup}"),
                format!("etcd cluster {name}: scheduled backup {backup} created"),
            ));
        }
    }
    out.extend(upgrade_event(&format!("etcd cluster {name}"), &before.conditions, &after.conditions));
    out
}

/// The Events on Machines of an EtcdCluster's status change: a member
/// placed on or removed from each, by machine name (what `kubectl describe
/// machine` should say ran there).
pub fn machine_events(
    cluster: &str,
    before: Option<&EtcdClusterStatus>,
    after: &EtcdClusterStatus,
) -> Vec<(String, Notice)> {
    let empty = EtcdClusterStatus::default();
    let before = before.unwrap_or(&empty);
    let mut out = Vec::new();
    for m in &after.members {
        let Some(machine) = &m.machine else { continue };
        if !before.members.iter().any(|b| b.name == m.name && b.machine.as_ref() == Some(machine)) {
            out.push((
                machine.clone(),
                Notice::normal(
                    "EtcdMemberPlaced",
                    &format!("Place {}", m.name),
                    format!("etcd cluster {cluster}: member {} runs on this machine", m.name),
                ),
            ));
        }
    }
    for b in &before.members {
        let Some(machine) = &b.machine else { continue };
        if !after.members.iter().any(|m| m.name == b.name && m.machine.as_ref() == Some(machine)) {
            out.push((
                machine.clone(),
                Notice::normal(
                    "EtcdMemberRemoved",
                    &format!("Remove {}", b.name),
                    format!("etcd cluster {cluster}: member {} no longer runs on this machine", b.name),
                ),
            ));
        }
    }
    out
}

/// The Event of an EtcdBackup's outcome, on its EtcdCluster: its phase
/// before and after (`Succeeded` or `Failed` are news once).
pub fn backup_event(
    cluster: &str,
    backup: &str,
    before: Option<JobPhase>,
    after: Option<JobPhase>,
    message: &str,
) -> Option<Notice> {
    if before == after {
        return None;
    }
    match after? {
        JobPhase::Succeeded => Some(Notice::normal(
            "BackupTaken",
            &format!("Backup {backup}"),
            format!("etcd cluster {cluster}: backup {backup} taken{}", suffix(message)),
        )),
        JobPhase::Failed => Some(Notice::warning(
            "BackupFailed",
            &format!("Backup {backup}"),
            format!("etcd cluster {cluster}: backup {backup} failed{}", suffix(message)),
        )),
        JobPhase::Pending | JobPhase::Running => None,
    }
}

fn suffix(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

/// A version change's progress from its `Upgraded` condition: each step
/// (a new reason or message) once.
fn upgrade_event(what: &str, was: &[Condition], now: &[Condition]) -> Option<Notice> {
    let c = now.iter().find(|c| c.type_ == conditions::UPGRADED)?;
    let old = was.iter().find(|c| c.type_ == conditions::UPGRADED);
    if old.is_some_and(|o| o.status == c.status && o.reason == c.reason && o.message == c.message) {
        return None;
    }
    let message = format!("{what}: {}", c.message);
    let notice = match c.reason.as_str() {
        reasons::AT_VERSION => return None,
        reasons::UPGRADING => Notice::normal("UpgradeStep", "Upgrade", message),
        reasons::SUCCEEDED => Notice::normal("Upgraded", "Upgrade", message),
        reasons::ROLLING_BACK => Notice::warning("RollingBack", "Rollback", message),
        reasons::ROLLED_BACK => Notice::warning("RolledBack", "Rollback", message),
        reasons::REFUSED | reasons::UNKNOWN_VERSION => Notice::warning("UpgradeRefused", "Upgrade", message),
        _ if c.status == "True" => Notice::normal("Upgraded", "Upgrade", message),
        other => Notice::normal("UpgradeStep", "Upgrade", format!("{what}: {other}: {}", c.message)),
    };
    Some(notice.distinct())
}

/// The condition `type_` when its status changed, with the old status.
fn changed_status<'a, 'b>(
    was: &'b [Condition],
    now: &'a [Condition],
    type_: &str,
) -> Option<(&'a Condition, Option<&'b str>)> {
    let c = now.iter().find(|c| c.type_ == type_)?;
    let old = was.iter().find(|c| c.type_ == type_).map(|c| c.status.as_str());
    (old != Some(c.status.as_str())).then_some((c, old))
}

#[cfg(test)]
#[path = "events_tests.rs"]
mod tests;
