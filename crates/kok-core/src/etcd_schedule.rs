//! Scheduled EtcdBackups (`EtcdCluster.spec.backup`): which tick of the
//! cron expression is due, the EtcdBackup it becomes, which scheduled
//! backups retention deletes, the `BackupScheduleValid` condition and the
//! next tick to wake up for; and, when a scheduled backup is deleted, the
//! one-shot component that removes its snapshot file from the Machine.
//!
//! The EtcdBackups are the record: each carries its tick (annotation
//! [`SCHEDULED_AT`]) and its name encodes it, so deciding twice, or after
//! an operator restart, creates nothing twice. Only ticks newer than every
//! scheduled backup's count, so missed ticks are never made up beyond the
//! most recent one.

use std::collections::BTreeMap;
use std::time::Duration;

use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;
use flotilla_api::kok::{conditions, EtcdBackup, EtcdBackupSpec, EtcdCluster, EtcdClusterStatus, JobPhase};
use flotilla_api::machine::{ComponentSpec, Machine, RestartPolicy};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, OwnerReference, Time};
use k8s_openapi::jiff::tz::TimeZone;
use k8s_openapi::jiff::{Timestamp, Zoned};

use crate::etcd::{backup_component_name, one_shot_exit, snapshot_path, EtcdOperatorConfig};

/// Label on every scheduled EtcdBackup; its value names the cluster
/// ([`label_value`]).
pub const SCHEDULE_LABEL: &str = "kok.flotilla.io/backup-schedule";
/// Annotation on every scheduled EtcdBackup: the tick it was made for
/// (RFC 3339, UTC).
pub const SCHEDULED_AT: &str = "kok.flotilla.io/scheduled-at";
/// Finalizer on every scheduled EtcdBackup: its snapshot file is removed
/// from the Machine before the object goes.
pub const FILE_FINALIZER: &str = "kok.flotilla.io/snapshot-file";
/// Field manager of the scheduled EtcdBackups the operator creates.
pub const FIELD_MANAGER: &str = "flotilla-etcd-schedule";

/// Shell that removes a snapshot file (`$1`) and what an interrupted
/// `etcdctl snapshot save` leaves (`$1.part`); removing a file that is not
/// there succeeds.
const REMOVE_SCRIPT: &str = r#"set -e
rm -f -- "$1" "$1.part"
echo "removed $1""#;
const SHELL: &str = "/bin/sh";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("spec.backup.schedule `{expression}` is not a valid cron expression: {reason}")]
pub struct ScheduleError {
    pub expression: String,
    pub reason: String,
}

/// Parses a schedule: 5 fields (minute resolution), 6 with seconds first,
/// or a nickname (`@hourly`, ...). A year field is refused.
pub fn parse(expression: &str) -> Result<Cron, ScheduleError> {
    let invalid = |reason: String| ScheduleError { expression: expression.to_string(), reason };
    let fields = expression.split_whitespace().count();
    if !expression.trim_start().starts_with('@') && !(5..=6).contains(&fields) {
        return Err(invalid(format!(
            "{fields} fields; use 5 (minute hour day-of-month month day-of-week) or 6 (seconds first)"
        )));
    }
    let cron = CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
        .parse(expression)
        .map_err(|e| invalid(e.to_string()))?;
    Ok(cron)
}

fn utc(t: Timestamp) -> Zoned {
    t.to_zoned(TimeZone::UTC)
}

/// Whole seconds: ticks never carry the sub-second part of `now`.
fn whole(z: &Zoned) -> Option<Timestamp> {
    Timestamp::from_second(z.timestamp().as_second()).ok()
}

/// The most recent tick at or before `now`.
pub fn previous_tick(cron: &Cron, now: Timestamp) -> Option<Timestamp> {
    cron.find_previous_occurrence(&utc(now), true).ok().as_ref().and_then(whole)
}

/// The first tick after `now`.
pub fn next_tick(cron: &Cron, now: Timestamp) -> Option<Timestamp> {
    cron.find_next_occurrence(&utc(now), false).ok().as_ref().and_then(whole)
}

/// Shortens `name` to 63 characters (a label value, a component name):
/// long ones end in a hash of the whole.
fn bounded(name: String) -> String {
    use sha2::{Digest, Sha256};
    if name.len() <= 63 {
        return name;
    }
    let hash = hex::encode(Sha256::digest(name.as_bytes()));
    format!("{}-{}", name[..50].trim_end_matches('-'), &hash[..12])
}

/// Value of [`SCHEDULE_LABEL`] for a cluster's backups.
pub fn label_value(cluster: &str) -> String {
    bounded(cluster.to_string())
}

/// Name of the scheduled backup of `tick`: `<cluster>-<yyyymmdd>-<hhmm>`,
/// `-<hhmmss>` when the tick is not on a whole minute.
pub fn backup_name(cluster: &str, tick: Timestamp) -> String {
    let z = utc(tick);
    let format = if z.second() == 0 { "%Y%m%d-%H%M" } else { "%Y%m%d-%H%M%S" };
    format!("{cluster}-{}", z.strftime(format))
}

/// The tick a scheduled backup was made for (its creation time when the
/// annotation is missing or unreadable).
pub fn tick_of(backup: &EtcdBackup) -> Option<Timestamp> {
    backup
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(SCHEDULED_AT))
        .and_then(|v| v.parse().ok())
        .or_else(|| backup.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

fn owned_by(backup: &EtcdBackup, cluster: &EtcdCluster) -> bool {
    let uid = cluster.metadata.uid.as_deref().unwrap_or_default();
    backup
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == "EtcdCluster" && o.uid == uid && Some(&o.name) == cluster.metadata.name.as_ref())
}

/// The cluster's scheduled backups among `backups`: labelled for it and
/// owned by it. Oldest tick first.
pub fn scheduled_backups<'a>(cluster: &EtcdCluster, backups: &'a [EtcdBackup]) -> Vec<&'a EtcdBackup> {
    let name = cluster.metadata.name.as_deref().unwrap_or_default();
    let value = label_value(name);
    let mut out: Vec<&EtcdBackup> = backups
        .iter()
        .filter(|b| b.metadata.namespace == cluster.metadata.namespace)
        .filter(|b| b.metadata.labels.as_ref().and_then(|l| l.get(SCHEDULE_LABEL)) == Some(&value))
        .filter(|b| owned_by(b, cluster))
        .collect();
    out.sort_by(|a, b| (tick_of(a), &a.metadata.name).cmp(&(tick_of(b), &b.metadata.name)));
    out
}

/// The EtcdBackup of `tick`: labelled, annotated with its tick, owned by
/// the cluster and guarded by [`FILE_FINALIZER`] from its creation on.
pub fn scheduled_backup(cluster: &EtcdCluster, tick: Timestamp) -> Option<EtcdBackup> {
    let schedule = cluster.spec.backup.as_ref()?;
    let name = cluster.metadata.name.clone()?;
    let mut backup = EtcdBackup::new(
        &backup_name(&name, tick),
        EtcdBackupSpec { cluster: name.clone(), prefix: None, destination: schedule.destination.clone() },
    );
    let meta = &mut backup.metadata;
    meta.namespace = cluster.metadata.namespace.clone();
    meta.labels = Some(BTreeMap::from([(SCHEDULE_LABEL.to_string(), label_value(&name))]));
    meta.annotations = Some(BTreeMap::from([(SCHEDULED_AT.to_string(), tick.to_string())]));
    meta.finalizers = Some(vec![FILE_FINALIZER.to_string()]);
    meta.owner_references = Some(vec![OwnerReference {
        api_version: "kok.flotilla.io/v1alpha1".into(),
        kind: "EtcdCluster".into(),
        name,
        uid: cluster.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }]);
    Some(backup)
}

/// What the schedule asks for now.
#[derive(Debug, Clone, Default)]
pub struct SchedulePlan {
    /// The backup of the tick that is due, to create.
    pub create: Option<EtcdBackup>,
    /// Scheduled backups retention deletes (name, uid), oldest first.
    pub delete: Vec<(String, Option<String>)>,
    /// The most recent tick at or before now.
    pub tick: Option<Timestamp>,
    /// The first tick after now: when to look again.
    pub next: Option<Timestamp>,
    /// The newest scheduled backup (the one created now, if any).
    pub last: Option<String>,
    /// The newest tick that has had its backup.
    pub last_tick: Option<Timestamp>,
    /// Why the most recent tick has no backup yet, when it is waiting.
    pub waiting: Option<String>,
    /// `BackupScheduleValid`; `None` without a schedule.
    pub condition: Option<Condition>,
}

impl SchedulePlan {
    /// How long until the next tick.
    pub fn requeue_after(&self, now: Timestamp) -> Option<Duration> {
        let next = self.next?;
        let ms = next.as_millisecond().saturating_sub(now.as_millisecond()).max(0);
        Some(Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
    }

    /// Writes the schedule's condition and fields into `status` (which
    /// holds the operator's other conditions).
    pub fn fill(&self, status: &mut EtcdClusterStatus) {
        status.conditions.retain(|c| c.type_ != conditions::BACKUP_SCHEDULE_VALID);
        status.conditions.extend(self.condition.clone());
        status.last_scheduled_backup = self.last.clone();
        status.last_schedule_time = self.last_tick.map(Time);
        status.next_scheduled_backup = self.next.map(Time);
    }
}

/// When the schedule could not be looked at (the backups could not be
/// read): what the last status said about it stays.
pub fn carry_over(status: &mut EtcdClusterStatus, previous: Option<&EtcdClusterStatus>) {
    let Some(previous) = previous else { return };
    status.conditions.retain(|c| c.type_ != conditions::BACKUP_SCHEDULE_VALID);
    status
        .conditions
        .extend(previous.conditions.iter().filter(|c| c.type_ == conditions::BACKUP_SCHEDULE_VALID).cloned());
    status.last_scheduled_backup = previous.last_scheduled_backup.clone();
    status.last_schedule_time = previous.last_schedule_time.clone();
    status.next_scheduled_backup = previous.next_scheduled_backup.clone();
}

fn condition(cluster: &EtcdCluster, valid: bool, reason: &str, message: String, now: Timestamp) -> Condition {
    let status = if valid { "True" } else { "False" };
    let old = cluster.condition(conditions::BACKUP_SCHEDULE_VALID);
    Condition {
        type_: conditions::BACKUP_SCHEDULE_VALID.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: cluster.metadata.generation,
        // The transition time moves only when the verdict changes.
        last_transition_time: old
            .filter(|c| c.status == status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or(Time(now)),
    }
}

fn phase(b: &EtcdBackup) -> Option<JobPhase> {
    b.status.as_ref().and_then(|s| s.phase)
}

fn name_of(b: &EtcdBackup) -> String {
    b.metadata.name.clone().unwrap_or_default()
}

/// Which scheduled backups retention deletes, oldest first: Succeeded ones
/// beyond the newest `retention`, and Failed ones with a newer Succeeded
/// one or more than `retention` newer Failed ones. Pending and Running
/// ones, and ones already being deleted, stay.
pub fn expired<'a>(ours: &[&'a EtcdBackup], retention: i32) -> Vec<&'a EtcdBackup> {
    let keep = usize::try_from(retention.max(1)).unwrap_or(1);
    let (mut succeeded, mut failed) = (0usize, 0usize);
    let mut out = Vec::new();
    for b in ours.iter().rev().filter(|b| b.metadata.deletion_timestamp.is_none()) {
        match phase(b) {
            Some(JobPhase::Succeeded) => {
                if succeeded >= keep {
                    out.push(*b);
                }
                succeeded += 1;
            }
            Some(JobPhase::Failed) => {
                if succeeded > 0 || failed >= keep {
                    out.push(*b);
                }
                failed += 1;
            }
            _ => {}
        }
    }
    out.reverse();
    out
}

/// The schedule's next step for `cluster`, from every EtcdBackup in its
/// namespace and the time.
pub fn decide(cluster: &EtcdCluster, backups: &[EtcdBackup], now: Timestamp) -> SchedulePlan {
    let Some(schedule) = cluster.spec.backup.as_ref() else { return SchedulePlan::default() };
    let cluster_name = cluster.metadata.name.as_deref().unwrap_or_default();
    let ours = scheduled_backups(cluster, backups);
    // The newest tick taken: from the backups, and from the status (its
    // backup may have been deleted by hand since).
    let recorded = cluster.status.as_ref().and_then(|s| s.last_schedule_time.as_ref()).map(|t| t.0);
    let newest = ours.iter().filter_map(|b| tick_of(b)).chain(recorded).max();
    let previous_last = cluster.status.as_ref().and_then(|s| s.last_scheduled_backup.clone());
    let mut plan = SchedulePlan {
        last: ours.last().map(|b| name_of(b)).or(previous_last),
        last_tick: newest,
        ..Default::default()
    };
    let cron = parse(&schedule.schedule);
    let (cron, next) = match cron {
        Ok(cron) => {
            let next = next_tick(&cron, now);
            (cron, next)
        }
        Err(e) => {
            plan.condition = Some(condition(cluster, false, "InvalidSchedule", e.to_string(), now));
            return plan;
        }
    };
    let Some(next) = next else {
        let e = ScheduleError {
            expression: schedule.schedule.clone(),
            reason: "it never fires after now".into(),
        };
        plan.condition = Some(condition(cluster, false, "InvalidSchedule", e.to_string(), now));
        return plan;
    };
    plan.next = Some(next);
    plan.tick = previous_tick(&cron, now);
    plan.delete = expired(&ours, schedule.retention)
        .into_iter()
        .map(|b| (name_of(b), b.metadata.uid.clone()))
        .collect();
    let destination = &schedule.destination;
    let mut valid = condition(
        cluster,
        true,
        "ScheduleValid",
        format!(
            "backups at `{}` (UTC) to {}:{}, keeping the newest {}",
            schedule.schedule,
            destination.machine,
            destination.path,
            schedule.retention.max(1)
        ),
        now,
    );
    let created = cluster.metadata.creation_timestamp.as_ref().map(|t| t.0);
    let due = plan
        .tick
        .filter(|tick| newest.is_none_or(|n| n < *tick))
        .filter(|tick| created.is_none_or(|c| c <= *tick));
    if let Some(tick) = due {
        let name = backup_name(cluster_name, tick);
        let running = ours
            .iter()
            .filter(|b| b.metadata.deletion_timestamp.is_none())
            .find(|b| !matches!(phase(b), Some(JobPhase::Succeeded | JobPhase::Failed)));
        if let Some(b) = running {
            plan.waiting =
                Some(format!("the backup of {tick} waits for scheduled backup {} to finish", name_of(b)));
        } else if backups.iter().any(|b| b.metadata.name.as_deref() == Some(name.as_str())) {
            // Not ours (else its tick would not be due): never taken over.
            valid = condition(
                cluster,
                false,
                "BackupNameTaken",
                format!(
                    "the backup of {tick} would be EtcdBackup {name}, but one not made by this schedule has \
                     that name; rename or delete it"
                ),
                now,
            );
        } else {
            plan.create = scheduled_backup(cluster, tick);
            plan.last = Some(name);
            plan.last_tick = Some(tick);
        }
    }
    plan.condition = Some(valid);
    plan
}

// ---------------------------------------------------------------- file removal

/// Name of the one-shot component that removes a backup's snapshot file
/// (at most 63 characters).
pub fn removal_component_name(namespace: &str, backup: &str) -> String {
    bounded(format!("etcd-snapshot-rm-{namespace}-{}", backup.replace('.', "-")))
}

/// What deleting a scheduled backup still has to do.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RemovalPlan {
    /// The one-shot component to write on the destination Machine (with
    /// the backup's field manager, so it replaces a snapshot still there).
    pub run: Option<ComponentSpec>,
    /// A component of the backup to remove from the Machine.
    pub release: Option<String>,
    /// Nothing is left to wait for: the finalizer can go.
    pub done: bool,
    /// What happens, for the log.
    pub message: String,
}

/// How long ago the Machine's node agent last reported, when it is more
/// than `limit`.
fn silent_for(machine: &Machine, now: Timestamp, limit: Duration) -> Option<Duration> {
    let beat = machine.status.as_ref()?.last_heartbeat.as_ref()?.0;
    let age = u64::try_from(now.as_second().saturating_sub(beat.as_second())).unwrap_or(0);
    (Duration::from_secs(age) > limit).then_some(Duration::from_secs(age))
}

/// Whether the cluster that owns `backup` is still there (the same one:
/// same uid) and not being deleted.
fn owner_alive(backup: &EtcdBackup, cluster: Option<&EtcdCluster>) -> bool {
    let Some(cluster) = cluster else { return false };
    let owner = backup.metadata.owner_references.iter().flatten().find(|o| o.kind == "EtcdCluster");
    let same = owner.is_none_or(|o| Some(&o.uid) == cluster.metadata.uid.as_ref());
    same && cluster.metadata.deletion_timestamp.is_none()
}

/// The next step of removing a deleted backup's snapshot file, from the
/// backup's EtcdCluster (`spec.cluster`) and its destination Machine.
pub fn removal_plan(
    backup: &EtcdBackup,
    cluster: Option<&EtcdCluster>,
    destination: Option<&Machine>,
    config: &EtcdOperatorConfig,
    now: Timestamp,
) -> RemovalPlan {
    let namespace = backup.metadata.namespace.as_deref().unwrap_or_default();
    let name = backup.metadata.name.as_deref().unwrap_or_default();
    let machine = &backup.spec.destination.machine;
    let path = backup.status.as_ref().and_then(|s| s.path.clone()).unwrap_or_else(|| snapshot_path(backup));
    let snapshot = backup_component_name(namespace, name);
    let removal = removal_component_name(namespace, name);
    let mut plan = RemovalPlan::default();
    let Some(destination) = destination else {
        plan.done = true;
        plan.message = format!("Machine {machine} is gone: no snapshot file to remove");
        return plan;
    };
    let on_machine = |c: &str| destination.spec.components.iter().any(|x| x.name == c);
    let ours = [&removal, &snapshot].into_iter().find(|c| on_machine(c)).cloned();
    if !owner_alive(backup, cluster) {
        plan.done = true;
        plan.release = ours;
        plan.message = format!(
            "EtcdCluster {} is being deleted or gone: its snapshot {path} stays on {machine}",
            backup.spec.cluster
        );
        return plan;
    }
    if let Some(age) = silent_for(destination, now, config.member_dead_after) {
        plan.done = true;
        plan.release = ours;
        plan.message = format!(
            "the node agent of {machine} has not reported for {}s: {path} stays there",
            age.as_secs()
        );
        return plan;
    }
    if on_machine(&removal) {
        let reported = destination.status.iter().flat_map(|s| &s.components).find(|c| c.name == removal);
        plan.release = Some(removal.clone());
        match reported {
            Some(c) if c.last_exit_time.is_some() && c.pid.is_none() => {
                if c.last_exit_code == Some(0) {
                    plan.done = true;
                    plan.message = format!("removed {path} from {machine}");
                } else {
                    let exit = one_shot_exit(c);
                    plan.message = format!("removing {path} on {machine} {exit}; trying again");
                }
            }
            _ => {
                plan.release = None;
                plan.message = format!("removing {path} on {machine}");
            }
        }
        return plan;
    }
    plan.run = Some(ComponentSpec {
        name: removal,
        binary: SHELL.into(),
        args: vec!["-c".into(), REMOVE_SCRIPT.into(), "flotilla-etcd-backup-rm".into(), path.clone()],
        restart_policy: RestartPolicy::Never,
        ..Default::default()
    });
    plan.message = format!("removing {path} on {machine}");
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_api::kok::{EtcdBackupSchedule, EtcdBackupStatus, EtcdClusterSpec, MachinePath};
    use flotilla_api::machine::{ComponentState, ComponentStatus, MachineSpec, MachineStatus};

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn cluster(schedule: &str, retention: i32) -> EtcdCluster {
        let mut c = EtcdCluster::new(
            "e",
            EtcdClusterSpec {
                members: 1,
                version: "3.4.13".into(),
                backup: Some(EtcdBackupSchedule {
                    schedule: schedule.into(),
                    destination: MachinePath { machine: "m1".into(), path: "/backups".into() },
                    retention,
                }),
                ..Default::default()
            },
        );
        c.metadata.namespace = Some("ns".into());
        c.metadata.uid = Some("uid-e".into());
        c.metadata.generation = Some(3);
        c.metadata.creation_timestamp = Some(Time(at("2026-01-01T00:00:00Z")));
        c
    }

    /// What the API server would hold after the plan's create, with `phase`.
    fn made(c: &EtcdCluster, tick: &str, phase: Option<JobPhase>) -> EtcdBackup {
        let mut b = scheduled_backup(c, at(tick)).unwrap();
        b.metadata.uid = Some(format!("uid-{tick}"));
        b.status = phase.map(|p| EtcdBackupStatus { phase: Some(p), ..Default::default() });
        b
    }

    /// Name of the backup the plan creates.
    fn created(plan: &SchedulePlan) -> Option<&str> {
        plan.create.as_ref().and_then(|b| b.metadata.name.as_deref())
    }

    fn names(list: &[(String, Option<String>)]) -> Vec<&str> {
        list.iter().map(|(n, _)| n.as_str()).collect()
    }

    #[test]
    fn five_and_six_field_expressions_and_nicknames_parse_others_do_not() {
        for good in ["0 */6 * * *", "*/10 * * * * *", "@hourly", "30 2 * * MON-FRI", "0 0 L * *"] {
            assert!(parse(good).is_ok(), "{good}");
        }
        for bad in ["61 * * * *", "* * * *", "0 0 0 1 1 * 2030", "every day", "*/0 * * * *"] {
            let e = parse(bad).unwrap_err();
            assert!(e.to_string().contains(&format!("`{bad}`")), "{e}");
        }
        // Seconds come first in a 6-field expression.
        let cron = parse("*/10 * * * * *").unwrap();
        assert_eq!(next_tick(&cron, at("2026-12-01T06:00:01.5Z")), Some(at("2026-12-01T06:00:10Z")));
    }

    #[test]
    fn ticks_are_utc_whole_seconds_and_cross_day_month_and_year_boundaries() {
        let cron = parse("0 6 * * *").unwrap();
        // Exactly on the tick: that tick is the previous one (inclusive).
        let on = at("2026-12-01T06:00:00Z");
        assert_eq!(previous_tick(&cron, on), Some(on));
        assert_eq!(next_tick(&cron, on), Some(at("2026-12-02T06:00:00Z")));
        // Just before: yesterday's.
        assert_eq!(previous_tick(&cron, at("2026-12-01T05:59:59.999Z")), Some(at("2026-11-30T06:00:00Z")));
        assert_eq!(previous_tick(&cron, at("2026-12-01T06:00:00.250Z")), Some(on));
        let new_year = parse("0 0 1 1 *").unwrap();
        assert_eq!(next_tick(&new_year, at("2026-12-31T23:59:59Z")), Some(at("2027-01-01T00:00:00Z")));
        assert_eq!(previous_tick(&new_year, at("2027-01-01T00:00:30Z")), Some(at("2027-01-01T00:00:00Z")));
        // The last day of February in a leap year.
        let last = parse("0 12 L * *").unwrap();
        assert_eq!(next_tick(&last, at("2028-02-01T00:00:00Z")), Some(at("2028-02-29T12:00:00Z")));
        // Names encode the tick in UTC; seconds only when there are some.
        assert_eq!(backup_name("e", on), "e-20261201-0600");
        assert_eq!(backup_name("e", at("2027-01-01T00:00:10Z")), "e-20270101-000010");
        assert_eq!(backup_name("e", at("2026-12-01T07:00:00+01:00")), "e-20261201-0600");
    }

    #[test]
    fn the_most_recent_tick_becomes_one_backup_and_deciding_again_creates_nothing() {
        let c = cluster("0 */6 * * *", 7);
        let now = at("2026-12-01T13:15:00Z");
        let plan = decide(&c, &[], now);
        let b = plan.create.clone().unwrap();
        assert_eq!(b.metadata.name.as_deref(), Some("e-20261201-1200"));
        assert_eq!(plan.last.as_deref(), Some("e-20261201-1200"));
        assert_eq!(
            (plan.tick, plan.next),
            (Some(at("2026-12-01T12:00:00Z")), Some(at("2026-12-01T18:00:00Z")))
        );
        assert_eq!(plan.requeue_after(now), Some(Duration::from_secs(4 * 3600 + 45 * 60)));
        assert_eq!(b.spec.cluster, "e");
        assert_eq!(b.spec.destination, MachinePath { machine: "m1".into(), path: "/backups".into() });
        assert_eq!(b.metadata.labels.as_ref().unwrap()[SCHEDULE_LABEL], "e");
        assert_eq!(b.metadata.annotations.as_ref().unwrap()[SCHEDULED_AT], "2026-12-01T12:00:00Z");
        assert_eq!(b.metadata.finalizers.as_deref(), Some(&[FILE_FINALIZER.to_string()][..]));
        let owner = &b.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("EtcdCluster", "uid-e", Some(true))
        );
        let condition = plan.condition.clone().unwrap();
        assert_eq!((condition.status.as_str(), condition.reason.as_str()), ("True", "ScheduleValid"));

        // Created (in any phase): the same tick never gets a second one,
        // however often and whenever before the next tick it is decided.
        for phase in [None, Some(JobPhase::Running), Some(JobPhase::Succeeded), Some(JobPhase::Failed)] {
            let existing = [made(&c, "2026-12-01T12:00:00Z", phase)];
            for later in ["2026-12-01T12:00:00Z", "2026-12-01T13:15:00Z", "2026-12-01T17:59:59Z"] {
                let again = decide(&c, &existing, at(later));
                assert_eq!((created(&again), again.delete.len()), (None, 0), "{phase:?} {later}");
                assert_eq!(again.last.as_deref(), Some("e-20261201-1200"));
            }
        }
        // Deleted by hand: the status remembers the tick was taken.
        let mut c2 = c.clone();
        let mut status = EtcdClusterStatus::default();
        plan.fill(&mut status);
        assert_eq!(status.last_schedule_time, Some(Time(at("2026-12-01T12:00:00Z"))));
        c2.status = Some(status);
        let after = decide(&c2, &[], at("2026-12-01T13:20:00Z"));
        assert_eq!((created(&after), after.last.as_deref()), (None, Some("e-20261201-1200")));
        assert!(created(&decide(&c2, &[], at("2026-12-01T18:00:00Z"))).is_some());
        // Even while it is being deleted.
        let mut deleting = made(&c, "2026-12-01T12:00:00Z", Some(JobPhase::Succeeded));
        deleting.metadata.deletion_timestamp = Some(Time(now));
        assert_eq!(created(&decide(&c, &[deleting], now)), None);
    }

    #[test]
    fn missed_ticks_are_not_made_up_beyond_the_latest_nor_from_before_the_cluster() {
        let c = cluster("0 * * * *", 3);
        let existing = [made(&c, "2026-12-01T01:00:00Z", Some(JobPhase::Succeeded))];
        // The operator was away for five ticks: one backup, of the latest.
        let plan = decide(&c, &existing, at("2026-12-01T06:30:00Z"));
        assert_eq!(created(&plan), Some("e-20261201-0600"));
        // A cluster created after the last tick waits for the next one.
        let mut young = cluster("0 * * * *", 3);
        young.metadata.creation_timestamp = Some(Time(at("2026-12-01T06:10:00Z")));
        let plan = decide(&young, &[], at("2026-12-01T06:30:00Z"));
        assert_eq!((created(&plan), plan.next), (None, Some(at("2026-12-01T07:00:00Z"))));
        assert!(decide(&young, &[], at("2026-12-01T07:00:00Z")).create.is_some());
    }

    #[test]
    fn a_backup_still_running_holds_the_next_tick_which_is_then_taken_late() {
        let c = cluster("*/10 * * * * *", 2);
        let running = [made(&c, "2026-12-01T06:00:00Z", Some(JobPhase::Pending))];
        let plan = decide(&c, &running, at("2026-12-01T06:00:25Z"));
        assert_eq!(created(&plan), None);
        assert!(plan.waiting.unwrap().contains("e-20261201-0600"));
        let done = [made(&c, "2026-12-01T06:00:00Z", Some(JobPhase::Succeeded))];
        let plan = decide(&c, &done, at("2026-12-01T06:00:25Z"));
        assert_eq!(created(&plan), Some("e-20261201-060020"));
    }

    #[test]
    fn retention_keeps_the_newest_succeeded_and_never_touches_running_or_hand_made_ones() {
        let c = cluster("0 * * * *", 2);
        let s = Some(JobPhase::Succeeded);
        let mut backups = vec![
            // Listed out of order: the tick orders them, not the list.
            made(&c, "2026-12-01T03:00:00Z", s),
            made(&c, "2026-12-01T01:00:00Z", s),
            made(&c, "2026-12-01T00:00:00Z", Some(JobPhase::Running)),
            made(&c, "2026-12-01T02:00:00Z", s),
            made(&c, "2026-12-01T04:00:00Z", Some(JobPhase::Pending)),
        ];
        // A hand-made backup of the same cluster, and one of another
        // cluster's schedule with the same label but another owner.
        let mut hand = EtcdBackup::new("e-20261101-0000", backups[0].spec.clone());
        hand.metadata.namespace = Some("ns".into());
        hand.status = Some(EtcdBackupStatus { phase: s, ..Default::default() });
        backups.push(hand);
        let mut other = cluster("0 * * * *", 2);
        other.metadata.uid = Some("uid-old-e".into());
        backups.push(made(&other, "2026-11-01T00:00:00Z", s));
        let now = at("2026-12-01T04:30:00Z");
        let plan = decide(&c, &backups, now);
        assert_eq!(names(&plan.delete), ["e-20261201-0100"]);
        assert_eq!(plan.delete[0].1.as_deref(), Some("uid-2026-12-01T01:00:00Z"));
        assert_eq!(created(&plan), None, "04:00 has its backup");
        assert_eq!(plan.last.as_deref(), Some("e-20261201-0400"));
        // Retention 1: everything Succeeded but the newest.
        let plan = decide(&cluster("0 * * * *", 1), &backups, now);
        assert_eq!(names(&plan.delete), ["e-20261201-0100", "e-20261201-0200"]);
        // Once the deletions are under way they are not asked for again.
        for b in &mut backups {
            if b.metadata.name.as_deref() == Some("e-20261201-0100") {
                b.metadata.deletion_timestamp = Some(Time(now));
            }
        }
        assert_eq!(names(&decide(&c, &backups, now).delete), Vec::<&str>::new());
    }

    #[test]
    fn failed_backups_go_once_a_newer_one_succeeded_or_too_many_failed_after_them() {
        let c = cluster("0 * * * *", 2);
        let (ok, bad) = (Some(JobPhase::Succeeded), Some(JobPhase::Failed));
        let now = at("2026-12-01T09:30:00Z");
        let backups = [
            made(&c, "2026-12-01T01:00:00Z", bad),
            made(&c, "2026-12-01T02:00:00Z", ok),
            made(&c, "2026-12-01T03:00:00Z", bad),
            made(&c, "2026-12-01T04:00:00Z", bad),
            made(&c, "2026-12-01T05:00:00Z", bad),
        ];
        // 01:00 is superseded by 02:00; of the three newest failures the
        // newest two stay (they say why backups fail), 03:00 goes.
        let plan = decide(&c, &backups, now);
        assert_eq!(names(&plan.delete), ["e-20261201-0100", "e-20261201-0300"]);
        // The newest backup is never deleted, so its tick is never redone.
        let only = [made(&c, "2026-12-01T09:00:00Z", bad)];
        let plan = decide(&cluster("0 * * * *", 1), &only, now);
        assert_eq!((plan.delete.len(), created(&plan)), (0, None));
    }

    #[test]
    fn an_invalid_expression_is_a_condition_and_nothing_is_created_or_deleted() {
        let mut c = cluster("61 * * * *", 1);
        let backups = [
            made(&c, "2026-12-01T01:00:00Z", Some(JobPhase::Succeeded)),
            made(&c, "2026-12-01T02:00:00Z", Some(JobPhase::Succeeded)),
        ];
        let now = at("2026-12-01T09:30:00Z");
        let plan = decide(&c, &backups, now);
        assert_eq!((created(&plan), plan.delete.len(), plan.next), (None, 0, None));
        assert_eq!(plan.requeue_after(now), None);
        let condition = plan.condition.clone().unwrap();
        assert_eq!((condition.status.as_str(), condition.reason.as_str()), ("False", "InvalidSchedule"));
        assert!(condition.message.contains("`61 * * * *`"), "{}", condition.message);
        assert_eq!(condition.observed_generation, Some(3));
        // The status keeps the last backup's name, drops the next tick, and
        // the condition's time moves only when the verdict changes.
        let mut status = EtcdClusterStatus {
            conditions: vec![Condition { type_: "Available".into(), ..condition.clone() }],
            next_scheduled_backup: Some(Time(now)),
            ..Default::default()
        };
        plan.fill(&mut status);
        assert_eq!(status.conditions.len(), 2);
        assert_eq!(status.last_scheduled_backup.as_deref(), Some("e-20261201-0200"));
        assert_eq!(status.next_scheduled_backup, None);
        c.status = Some(status.clone());
        let later = decide(&c, &backups, at("2026-12-01T10:00:00Z")).condition.unwrap();
        assert_eq!(later.last_transition_time, Time(now));
        c.spec.backup.as_mut().unwrap().schedule = "0 * * * *".into();
        let fixed = decide(&c, &backups, at("2026-12-01T10:00:00Z")).condition.unwrap();
        assert_eq!(
            (fixed.status.as_str(), fixed.last_transition_time),
            ("True", Time(at("2026-12-01T10:00:00Z")))
        );
        // An expression that never fires is refused too.
        let never = decide(&cluster("0 0 30 2 *", 1), &[], now).condition.unwrap();
        assert_eq!(never.status, "False");
        assert!(never.message.contains("never fires"), "{}", never.message);
        // Without a schedule: no condition, nothing done, and fill clears it.
        let mut none = cluster("0 * * * *", 1);
        none.spec.backup = None;
        let plan = decide(&none, &backups, now);
        assert!(
            plan.create.is_none()
                && plan.delete.is_empty()
                && plan.condition.is_none()
                && plan.next.is_none()
        );
        plan.fill(&mut status);
        assert_eq!(status.conditions.len(), 1);
        assert_eq!(status.last_scheduled_backup, None);
    }

    #[test]
    fn a_hand_made_backup_with_the_ticks_name_is_never_taken_over() {
        let c = cluster("0 6 * * *", 1);
        let mut hand = EtcdBackup::new(
            "e-20261201-0600",
            EtcdBackupSpec { cluster: "e".into(), prefix: None, destination: MachinePath::default() },
        );
        hand.metadata.namespace = Some("ns".into());
        let plan = decide(&c, &[hand], at("2026-12-01T06:00:05Z"));
        assert_eq!(created(&plan), None);
        let condition = plan.condition.unwrap();
        assert_eq!((condition.status.as_str(), condition.reason.as_str()), ("False", "BackupNameTaken"));
    }

    #[test]
    fn carry_over_keeps_the_last_verdict_when_the_backups_could_not_be_read() {
        let c = cluster("61 * * * *", 1);
        let mut previous = EtcdClusterStatus::default();
        decide(&c, &[], at("2026-12-01T06:00:00Z")).fill(&mut previous);
        let mut fresh = EtcdClusterStatus::default();
        carry_over(&mut fresh, Some(&previous));
        assert_eq!(fresh, previous);
    }

    fn config() -> EtcdOperatorConfig {
        EtcdOperatorConfig {
            bin_dir: "/opt/bin".into(),
            member_dead_after: Duration::from_secs(60),
            ..Default::default()
        }
    }

    fn machine(beat: Timestamp) -> Machine {
        let mut m = Machine::new("m1", MachineSpec::default());
        m.status = Some(MachineStatus { last_heartbeat: Some(Time(beat)), ..Default::default() });
        m
    }

    #[test]
    fn deleting_a_scheduled_backup_removes_its_file_with_a_one_shot_rm_then_lets_it_go() {
        let c = cluster("0 6 * * *", 1);
        let now = at("2026-12-02T06:00:10Z");
        let mut b = made(&c, "2026-12-01T06:00:00Z", Some(JobPhase::Succeeded));
        b.status.as_mut().unwrap().path = Some("/backups/e-e-20261201-0600.db".into());
        b.metadata.deletion_timestamp = Some(Time(now));
        let cfg = config();
        let mut m1 = machine(now);

        let plan = removal_plan(&b, Some(&c), Some(&m1), &cfg, now);
        let run = plan.run.clone().unwrap();
        assert_eq!(run.name, "etcd-snapshot-rm-ns-e-20261201-0600");
        assert_eq!((run.binary.as_str(), run.restart_policy), ("/bin/sh", RestartPolicy::Never));
        assert!(run.args[1].contains(r#"rm -f -- "$1" "$1.part""#), "{:?}", run.args);
        assert_eq!(run.args[3], "/backups/e-e-20261201-0600.db");
        assert!(!plan.done && plan.release.is_none());

        // Written, not yet reported (or still running): wait.
        m1.spec.components.push(run.clone());
        let wait = removal_plan(&b, Some(&c), Some(&m1), &cfg, now);
        assert_eq!((wait.run, wait.release, wait.done), (None, None, false));

        let exited = |code: i32| MachineStatus {
            last_heartbeat: Some(Time(now)),
            components: vec![ComponentStatus {
                name: run.name.clone(),
                state: ComponentState::Stopped,
                last_exit_code: Some(code),
                last_exit_time: Some(Time(now)),
                log_tail: vec![
                    "---- flotilla-node-agent: starting".into(),
                    "rm: Operation not permitted".into(),
                ],
                ..Default::default()
            }],
            ..Default::default()
        };
        // Failed: the component goes and the removal is tried again.
        m1.status = Some(exited(1));
        let failed = removal_plan(&b, Some(&c), Some(&m1), &cfg, now);
        assert_eq!((failed.done, failed.release.as_deref()), (false, Some(run.name.as_str())));
        assert!(failed.message.contains("Operation not permitted") && !failed.message.contains("node-agent"));
        // Done: release it and drop the finalizer.
        m1.status = Some(exited(0));
        let done = removal_plan(&b, Some(&c), Some(&m1), &cfg, now);
        assert_eq!((done.done, done.release.as_deref(), done.run), (true, Some(run.name.as_str()), None));
    }

    #[test]
    fn a_snapshot_still_running_is_replaced_by_the_removal() {
        let c = cluster("0 6 * * *", 1);
        let now = at("2026-12-01T06:00:10Z");
        let mut b = made(&c, "2026-12-01T06:00:00Z", Some(JobPhase::Running));
        b.metadata.deletion_timestamp = Some(Time(now));
        let mut m1 = machine(now);
        m1.spec.components.push(ComponentSpec {
            name: backup_component_name("ns", "e-20261201-0600"),
            ..Default::default()
        });
        let plan = removal_plan(&b, Some(&c), Some(&m1), &config(), now);
        // No path recorded: the one the snapshot would have had.
        assert_eq!(plan.run.unwrap().args[3], "/backups/e-e-20261201-0600.db");
    }

    #[test]
    fn files_stay_when_the_cluster_the_machine_or_its_agent_is_gone() {
        let c = cluster("0 6 * * *", 1);
        let now = at("2026-12-01T06:10:00Z");
        let mut b = made(&c, "2026-12-01T06:00:00Z", Some(JobPhase::Succeeded));
        b.metadata.deletion_timestamp = Some(Time(now));
        let cfg = config();
        let m1 = machine(now);
        let keeps = |plan: RemovalPlan, why: &str| {
            assert!(plan.done && plan.run.is_none(), "{plan:?}");
            assert!(plan.message.contains(why), "{}", plan.message);
        };
        keeps(removal_plan(&b, None, Some(&m1), &cfg, now), "stays on m1");
        let mut deleting = c.clone();
        deleting.metadata.deletion_timestamp = Some(Time(now));
        keeps(removal_plan(&b, Some(&deleting), Some(&m1), &cfg, now), "being deleted or gone");
        let mut another = c.clone();
        another.metadata.uid = Some("uid-new-e".into());
        keeps(removal_plan(&b, Some(&another), Some(&m1), &cfg, now), "gone");
        keeps(removal_plan(&b, Some(&c), None, &cfg, now), "Machine m1 is gone");
        let silent = machine(at("2026-12-01T06:00:00Z"));
        keeps(removal_plan(&b, Some(&c), Some(&silent), &cfg, now), "has not reported for 600s");
        // A component of the backup still on the Machine is released then.
        let mut busy = silent.clone();
        busy.spec.components.push(ComponentSpec {
            name: backup_component_name("ns", "e-20261201-0600"),
            ..Default::default()
        });
        let plan = removal_plan(&b, Some(&c), Some(&busy), &cfg, now);
        assert_eq!(plan.release, Some(backup_component_name("ns", "e-20261201-0600")));
    }

    #[test]
    fn long_names_stay_within_63_characters() {
        let long = "a".repeat(80);
        assert!(label_value(&long).len() <= 63);
        assert_eq!(label_value("e"), "e");
        let name = removal_component_name("a-rather-long-namespace-name", "and-an-even-longer-backup-name");
        assert!(name.len() <= 63 && name.starts_with("etcd-snapshot-rm-a-rather"), "{name}");
    }
}
