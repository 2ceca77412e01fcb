//! EtcdRestore decisions: which snapshot file to found the new cluster
//! from, with which spec, and the restore's outcome from the new cluster's
//! status. A restore never touches an existing cluster: its target must not
//! exist, or be the one this restore created.

use flotilla_api::kok::{
    EtcdBackup, EtcdCluster, EtcdClusterPhase, EtcdClusterSpec, EtcdRestore, EtcdRestoreStatus, JobPhase,
    SnapshotFile,
};

/// Annotation on the EtcdCluster a restore created: the restore's name.
pub const RESTORED_BY: &str = "kok.flotilla.io/restored-by";

/// What the restore controller does next.
#[derive(Debug, Clone, PartialEq)]
pub enum RestoreStep {
    /// Create the target EtcdCluster with this spec (restoring from
    /// `spec.restoreFrom`).
    Create(EtcdClusterSpec),
    /// Write this status (in progress, or the outcome).
    Report(EtcdRestoreStatus),
}

fn failed(message: String) -> RestoreStep {
    RestoreStep::Report(EtcdRestoreStatus {
        phase: Some(JobPhase::Failed),
        message: Some(message),
        ..Default::default()
    })
}

fn waiting(phase: JobPhase, message: String) -> RestoreStep {
    RestoreStep::Report(EtcdRestoreStatus {
        phase: Some(phase),
        message: Some(message),
        ..Default::default()
    })
}

/// The next step. `backup` is the named EtcdBackup (when the restore names
/// one and it exists), `source` the backed-up cluster (when it still
/// exists), `target` the cluster named `spec.target` (when it exists).
pub fn decide(
    restore: &EtcdRestore,
    backup: Option<&EtcdBackup>,
    source: Option<&EtcdCluster>,
    target: Option<&EtcdCluster>,
) -> RestoreStep {
    let name = restore.metadata.name.as_deref().unwrap_or_default();
    let spec = &restore.spec;
    if let Some(target) = target {
        let ours = target.metadata.annotations.as_ref().and_then(|a| a.get(RESTORED_BY)).map(String::as_str)
            == Some(name);
        if !ours {
            return failed(format!(
                "EtcdCluster {} already exists; a restore only creates a new cluster: choose another spec.target",
                spec.target
            ));
        }
        let status = target.status.clone().unwrap_or_default();
        let revision = backup.and_then(|b| b.status.as_ref()).and_then(|s| s.revision);
        return if status.phase == Some(EtcdClusterPhase::Running) && status.ready_members >= 1 {
            RestoreStep::Report(EtcdRestoreStatus {
                phase: Some(JobPhase::Succeeded),
                revision,
                message: Some(format!("EtcdCluster {} runs the restored data", spec.target)),
                ..Default::default()
            })
        } else {
            let why = target
                .status
                .iter()
                .flat_map(|s| &s.conditions)
                .find(|c| c.status != "True")
                .map(|c| c.message.clone())
                .unwrap_or_else(|| "starting".into());
            waiting(JobPhase::Running, format!("EtcdCluster {} is restoring: {why}", spec.target))
        };
    }
    let snapshot = match (&spec.backup, &spec.snapshot) {
        (Some(_), Some(_)) | (None, None) => {
            return failed("set exactly one of spec.backup and spec.snapshot".into());
        }
        (None, Some(file)) => SnapshotFile { machine: file.machine.clone(), path: file.path.clone() },
        (Some(backup_name), None) => {
            let Some(backup) = backup else {
                return waiting(JobPhase::Pending, format!("EtcdBackup {backup_name} does not exist (yet)"));
            };
            let status = backup.status.clone().unwrap_or_default();
            match (status.phase, status.path) {
                (Some(JobPhase::Succeeded), Some(path)) => {
                    SnapshotFile { machine: backup.spec.destination.machine.clone(), path }
                }
                (Some(JobPhase::Failed), _) => {
                    return failed(format!(
                        "EtcdBackup {backup_name} failed ({}); restore another one",
                        status.message.unwrap_or_default()
                    ));
                }
                _ => {
                    return waiting(
                        JobPhase::Pending,
                        format!("waiting for EtcdBackup {backup_name} to succeed"),
                    )
                }
            }
        }
    };
    if backup.is_some_and(|b| b.spec.prefix.is_some()) {
        return failed("restoring a prefixed (one tenant's) backup is not supported yet".into());
    }
    let template = match (&spec.template, source) {
        (Some(t), _) => t.clone(),
        (None, Some(c)) => c.spec.clone(),
        (None, None) => {
            return failed(
                "the backed-up EtcdCluster no longer exists, so its spec cannot be copied: set spec.template"
                    .into(),
            );
        }
    };
    let mut spec = EtcdClusterSpec { restore_from: Some(snapshot), ..template };
    // A schedule copied from the old cluster would back up into the same
    // directory; the new cluster gets none unless the template says so.
    if restore.spec.template.is_none() {
        spec.backup = None;
    }
    RestoreStep::Create(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_api::kok::{
        EtcdBackupSpec, EtcdBackupStatus, EtcdClusterStatus, EtcdRestoreSpec, MachinePath,
    };
    use std::collections::BTreeMap;

    fn restore(backup: Option<&str>, template: bool) -> EtcdRestore {
        EtcdRestore::new(
            "r1",
            EtcdRestoreSpec {
                backup: backup.map(String::from),
                snapshot: None,
                target: "e2".into(),
                template: template.then(|| EtcdClusterSpec {
                    members: 3,
                    version: "3.4.23".into(),
                    ..Default::default()
                }),
            },
        )
    }

    fn backup(phase: JobPhase) -> EtcdBackup {
        let mut b = EtcdBackup::new(
            "b1",
            EtcdBackupSpec {
                cluster: "e1".into(),
                prefix: None,
                destination: MachinePath { machine: "m1".into(), path: "/backups".into() },
            },
        );
        b.status = Some(EtcdBackupStatus {
            phase: Some(phase),
            path: (phase == JobPhase::Succeeded).then(|| "/backups/b1.db".to_string()),
            revision: Some(42),
            message: (phase == JobPhase::Failed).then(|| "no leader".to_string()),
            ..Default::default()
        });
        b
    }

    fn cluster(name: &str, restored_by: Option<&str>, phase: Option<EtcdClusterPhase>) -> EtcdCluster {
        let mut c = EtcdCluster::new(
            name,
            EtcdClusterSpec { members: 1, version: "3.4.23".into(), ..Default::default() },
        );
        if let Some(r) = restored_by {
            c.metadata.annotations = Some(BTreeMap::from([(RESTORED_BY.to_string(), r.to_string())]));
        }
        c.status = Some(EtcdClusterStatus { phase, ready_members: 1, ..Default::default() });
        c
    }

    #[test]
    fn a_succeeded_backup_founds_a_new_cluster_from_its_file() {
        let step = decide(
            &restore(Some("b1"), false),
            Some(&backup(JobPhase::Succeeded)),
            Some(&cluster("e1", None, None)),
            None,
        );
        let RestoreStep::Create(spec) = step else { panic!("{step:?}") };
        assert_eq!(
            spec.restore_from,
            Some(SnapshotFile { machine: "m1".into(), path: "/backups/b1.db".into() })
        );
        assert_eq!(spec.members, 1, "the old cluster's spec");
        let with_template =
            decide(&restore(Some("b1"), true), Some(&backup(JobPhase::Succeeded)), None, None);
        let RestoreStep::Create(spec) = with_template else { panic!() };
        assert_eq!(spec.members, 3);
    }

    #[test]
    fn it_waits_for_the_backup_and_says_why_it_cannot_go_on() {
        let report = |step: RestoreStep| match step {
            RestoreStep::Report(s) => (s.phase.unwrap(), s.message.unwrap_or_default()),
            other => panic!("{other:?}"),
        };
        let (phase, _) =
            report(decide(&restore(Some("b1"), true), Some(&backup(JobPhase::Running)), None, None));
        assert_eq!(phase, JobPhase::Pending);
        let (phase, message) =
            report(decide(&restore(Some("b1"), true), Some(&backup(JobPhase::Failed)), None, None));
        assert_eq!(phase, JobPhase::Failed);
        assert!(message.contains("no leader"), "{message}");
        let (phase, message) =
            report(decide(&restore(Some("b1"), false), Some(&backup(JobPhase::Succeeded)), None, None));
        assert_eq!(phase, JobPhase::Failed);
        assert!(message.contains("spec.template"), "{message}");
        let (phase, message) =
            report(decide(&restore(Some("b1"), true), None, None, Some(&cluster("e2", None, None))));
        assert_eq!(phase, JobPhase::Failed);
        assert!(message.contains("already exists"), "{message}");
        let (phase, _) = report(decide(&restore(None, true), None, None, None));
        assert_eq!(phase, JobPhase::Failed);
    }

    #[test]
    fn it_succeeds_once_its_own_cluster_runs() {
        let r = restore(Some("b1"), true);
        let b = backup(JobPhase::Succeeded);
        let running =
            decide(&r, Some(&b), None, Some(&cluster("e2", Some("r1"), Some(EtcdClusterPhase::Running))));
        let RestoreStep::Report(s) = running else { panic!() };
        assert_eq!((s.phase, s.revision), (Some(JobPhase::Succeeded), Some(42)));
        let starting = decide(
            &r,
            Some(&b),
            None,
            Some(&cluster("e2", Some("r1"), Some(EtcdClusterPhase::Provisioning))),
        );
        let RestoreStep::Report(s) = starting else { panic!() };
        assert_eq!(s.phase, Some(JobPhase::Running));
    }
}
