//! EtcdRestore decisions: which snapshot file to found the new cluster
//! from, with which spec, and the restore's outcome from the new cluster's
//! status. A snapshot restore never touches an existing cluster: its target
//! must not exist, or be the one this restore created.
//!
//! A prefixed backup (one tenant's keys, [`crate::etcd_keys`]) is restored
//! the other way round ([`decide_keys`]): into an existing EtcdCluster,
//! typically the shared one it came from, by a one-shot `flotilla etcd-keys
//! load` on the Machine holding the dump. The load refuses when the
//! prefix holds keys that differ from the backup's, so a live tenant is
//! never overwritten.

use flotilla_api::kok::{
    EtcdBackup, EtcdCluster, EtcdClusterPhase, EtcdClusterSpec, EtcdRestore, EtcdRestoreStatus, JobPhase,
    SnapshotFile,
};
use flotilla_api::machine::{ComponentSpec, Machine, RestartPolicy};

use crate::etcd::EtcdOperatorConfig;
use crate::etcd_backup::{self, one_shot_exit};
use crate::etcd_keys::{self, LoadSummary};

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
    /// A prefixed backup's load: write this one-shot component on
    /// `machine` (the one holding the dump), then write `status`.
    Load { machine: String, component: ComponentSpec, status: EtcdRestoreStatus },
    /// The load is over: write `status` (its outcome), then remove the
    /// load's component from `machine`.
    Release { machine: String, status: EtcdRestoreStatus },
}

/// Name of a prefixed restore's one-shot component on the Machine holding
/// the dump.
pub fn load_component_name(namespace: &str, restore: &str) -> String {
    etcd_backup::one_shot_component_name("etcd-restore", namespace, restore)
}

/// Field manager of that component: one per restore.
pub fn load_field_manager(namespace: &str, restore: &str) -> String {
    format!("flotilla-{}", load_component_name(namespace, restore))
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
    if let Some(prefix) = backup.and_then(|b| b.spec.prefix.as_deref()) {
        // The controller asks `decide_keys` for these.
        return failed(format!(
            "the backup holds only the keys under {prefix}: it restores into an existing cluster"
        ));
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

/// The next step of a restore from a prefixed `backup` (one tenant's key
/// dump) into the existing cluster `spec.target` (`target`, when it
/// exists). `holder` is the Machine that holds the dump, when it exists.
pub fn decide_keys(
    restore: &EtcdRestore,
    backup: &EtcdBackup,
    target: Option<&EtcdCluster>,
    holder: Option<&Machine>,
    config: &EtcdOperatorConfig,
) -> RestoreStep {
    let name = restore.metadata.name.as_deref().unwrap_or_default();
    let namespace = restore.metadata.namespace.as_deref().unwrap_or_default();
    let spec = &restore.spec;
    let backup_name = backup.metadata.name.as_deref().unwrap_or_default();
    let prefix = backup.spec.prefix.as_deref().unwrap_or_default();
    let machine = backup.spec.destination.machine.clone();
    let component = load_component_name(namespace, name);
    let on_machine = holder.is_some_and(|m| m.spec.components.iter().any(|c| c.name == component));
    let previous = restore.status.clone().unwrap_or_default();
    if matches!(previous.phase, Some(JobPhase::Succeeded | JobPhase::Failed)) {
        return if on_machine {
            RestoreStep::Release { machine, status: previous }
        } else {
            RestoreStep::Report(previous)
        };
    }
    let backup_status = backup.status.clone().unwrap_or_default();
    if on_machine {
        let reported =
            holder.iter().flat_map(|m| &m.status).flat_map(|s| &s.components).find(|c| c.name == component);
        let status = match reported {
            Some(c) if c.last_exit_time.is_some() && c.pid.is_none() => {
                if c.last_exit_code == Some(0) {
                    let summary: Option<LoadSummary> = etcd_keys::last_summary(&c.log_tail);
                    let counts = summary.as_ref().map_or(String::new(), |s| {
                        format!("{} key(s) written, {} already there: ", s.written, s.present)
                    });
                    EtcdRestoreStatus {
                        phase: Some(JobPhase::Succeeded),
                        revision: backup_status.revision.or(summary.as_ref().map(|s| s.revision)),
                        message: Some(format!(
                            "{counts}EtcdCluster {} holds the keys under {prefix} of EtcdBackup {backup_name}",
                            spec.target
                        )),
                        ..Default::default()
                    }
                } else {
                    let exit = one_shot_exit(c);
                    EtcdRestoreStatus {
                        phase: Some(JobPhase::Failed),
                        message: Some(format!("the key load on {machine} {exit}")),
                        ..Default::default()
                    }
                }
            }
            _ => {
                return RestoreStep::Report(EtcdRestoreStatus {
                    phase: Some(JobPhase::Running),
                    message: Some(format!(
                        "loading the keys under {prefix} into EtcdCluster {}",
                        spec.target
                    )),
                    ..Default::default()
                })
            }
        };
        return RestoreStep::Release { machine, status };
    }
    if spec.snapshot.is_some() {
        return failed("set exactly one of spec.backup and spec.snapshot".into());
    }
    if spec.template.is_some() {
        return failed(format!(
            "EtcdBackup {backup_name} holds only the keys under {prefix}: it restores into the existing \
             EtcdCluster spec.target, so spec.template does not apply: remove it"
        ));
    }
    let path = match (backup_status.phase, backup_status.path) {
        (Some(JobPhase::Succeeded), Some(path)) => path,
        (Some(JobPhase::Failed), _) => {
            return failed(format!(
                "EtcdBackup {backup_name} failed ({}); restore another one",
                backup_status.message.unwrap_or_default()
            ));
        }
        _ => return waiting(JobPhase::Pending, format!("waiting for EtcdBackup {backup_name} to succeed")),
    };
    let Some(target) = target else {
        return waiting(
            JobPhase::Pending,
            format!(
                "EtcdCluster {} (spec.target) does not exist: EtcdBackup {backup_name} holds only the keys under \
                 {prefix} and restores into an existing cluster (typically the shared one it was taken from): \
                 create it or name another",
                spec.target
            ),
        );
    };
    if target.metadata.deletion_timestamp.is_some() {
        return failed(format!("EtcdCluster {} (spec.target) is being deleted: name another", spec.target));
    }
    let Some(holder) = holder else {
        return waiting(
            JobPhase::Pending,
            format!("waiting for Machine {machine} (it holds the key dump) to exist"),
        );
    };
    let members = etcd_backup::serving_members(target);
    if members.is_empty() {
        return waiting(
            JobPhase::Pending,
            format!("EtcdCluster {} has no healthy member to restore into", spec.target),
        );
    }
    let mut args = vec!["etcd-keys".to_string(), "load".into()];
    args.extend(etcd_backup::etcd_keys_client_args(&members));
    args.extend(["--prefix".into(), prefix.to_string(), "--in".into(), path.clone()]);
    let component = ComponentSpec {
        name: component,
        binary: config.flotilla_binary.display().to_string(),
        args,
        files: etcd_backup::client_pki_files(target),
        restart_policy: RestartPolicy::Never,
        ..Default::default()
    };
    RestoreStep::Load {
        machine: holder.metadata.name.clone().unwrap_or(machine),
        component,
        status: EtcdRestoreStatus {
            phase: Some(JobPhase::Running),
            message: Some(format!("loading the keys under {prefix} into EtcdCluster {}", spec.target)),
            ..Default::default()
        },
    }
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
                    version: "3.7.4".into(),
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
            EtcdClusterSpec { members: 1, version: "3.7.4".into(), ..Default::default() },
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

    fn keys_backup(phase: JobPhase) -> EtcdBackup {
        let mut b = backup(phase);
        b.spec.cluster = "shared".into();
        b.spec.prefix = Some("/clusters/a".into());
        if let Some(s) = b.status.as_mut() {
            s.path = s.path.as_ref().map(|_| "/backups/shared-b1.keys.json".to_string());
        }
        b
    }

    fn keys_restore() -> EtcdRestore {
        let mut r = restore(Some("b1"), false);
        r.spec.target = "shared".into();
        r.metadata.namespace = Some("ns".into());
        r
    }

    fn shared(healthy: bool) -> EtcdCluster {
        let mut c = cluster("shared", None, Some(EtcdClusterPhase::Running));
        c.metadata.namespace = Some("ns".into());
        let member = |name: &str, port: u16| flotilla_api::kok::EtcdMemberStatus {
            name: name.into(),
            client_url: Some(format!("https://127.0.0.1:{port}")),
            healthy,
            ..Default::default()
        };
        let status = c.status.get_or_insert_with(Default::default);
        status.members = vec![member("shared-0", 1), member("shared-1", 2)];
        status.leader = Some("shared-1".into());
        c
    }

    fn holder() -> Machine {
        Machine::new("m1", Default::default())
    }

    fn config() -> EtcdOperatorConfig {
        EtcdOperatorConfig { flotilla_binary: "/opt/flotilla".into(), ..Default::default() }
    }

    fn report(step: RestoreStep) -> (JobPhase, String) {
        match step {
            RestoreStep::Report(s) => (s.phase.unwrap(), s.message.unwrap_or_default()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_prefixed_backup_loads_into_the_existing_cluster_from_the_machine_holding_it() {
        let (r, b, cfg) = (keys_restore(), keys_backup(JobPhase::Succeeded), config());
        let step = decide_keys(&r, &b, Some(&shared(true)), Some(&holder()), &cfg);
        let RestoreStep::Load { machine, component, status } = step else { panic!("{step:?}") };
        assert_eq!((machine.as_str(), component.name.as_str()), ("m1", "etcd-restore-ns-r1"));
        assert_eq!(
            (component.binary.as_str(), component.restart_policy),
            ("/opt/flotilla", RestartPolicy::Never)
        );
        assert_eq!(
            component.args,
            [
                "etcd-keys",
                "load",
                "--endpoints",
                "https://127.0.0.1:2,https://127.0.0.1:1",
                "--cacert",
                "pki/etcd-ca.crt",
                "--cert",
                "pki/client.crt",
                "--key",
                "pki/client.key",
                "--prefix",
                "/clusters/a",
                "--in",
                "/backups/shared-b1.keys.json"
            ],
            "the leader first"
        );
        let secrets: Vec<(&str, &str)> = component
            .files
            .iter()
            .map(|f| f.secret_ref.as_ref().map(|s| (s.name.as_str(), s.key.as_str())).unwrap())
            .collect();
        assert_eq!(
            secrets,
            [
                ("shared-etcd-pki", "etcd-ca.crt"),
                ("shared-etcd-pki", "client.crt"),
                ("shared-etcd-pki", "client.key")
            ],
            "the target's client certificate"
        );
        assert_eq!(status.phase, Some(JobPhase::Running));

        // Placed and still running, then done: the outcome, then release.
        let mut m1 = holder();
        m1.spec.components.push(component.clone());
        let mut r = r;
        r.status = Some(status);
        assert_eq!(report(decide_keys(&r, &b, Some(&shared(true)), Some(&m1), &cfg)).0, JobPhase::Running);
        let exited = |code: i32, tail: Vec<String>| flotilla_api::machine::MachineStatus {
            components: vec![flotilla_api::machine::ComponentStatus {
                name: component.name.clone(),
                last_exit_code: Some(code),
                last_exit_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::from_second(5).unwrap(),
                )),
                log_tail: tail,
                ..Default::default()
            }],
            ..Default::default()
        };
        let summary = LoadSummary {
            loaded: "/backups/shared-b1.keys.json".into(),
            prefix: "/clusters/a".into(),
            revision: 42,
            written: 3,
            present: 1,
        };
        m1.status = Some(exited(0, vec![serde_json::to_string(&summary).unwrap()]));
        let RestoreStep::Release { machine, status } =
            decide_keys(&r, &b, Some(&shared(true)), Some(&m1), &cfg)
        else {
            panic!()
        };
        assert_eq!(
            (machine.as_str(), status.phase, status.revision),
            ("m1", Some(JobPhase::Succeeded), Some(42))
        );
        let message = status.message.clone().unwrap();
        assert!(message.starts_with("3 key(s) written, 1 already there"), "{message}");
        // Recorded: only the release is left, and once released, nothing.
        let mut finished = r.clone();
        finished.status = Some(status.clone());
        assert_eq!(
            decide_keys(&finished, &b, Some(&shared(true)), Some(&m1), &cfg),
            RestoreStep::Release { machine: "m1".into(), status: status.clone() }
        );
        assert_eq!(
            decide_keys(&finished, &b, Some(&shared(true)), Some(&holder()), &cfg),
            RestoreStep::Report(status)
        );

        // A refused load: Failed with what the load said.
        m1.status = Some(exited(
            1,
            vec![
                "---- flotilla-node-agent: starting".into(),
                "error: refusing to restore: prefix /clusters/a already holds 1 key(s)".into(),
            ],
        ));
        let RestoreStep::Release { status, .. } = decide_keys(&r, &b, Some(&shared(true)), Some(&m1), &cfg)
        else {
            panic!()
        };
        let message = status.message.unwrap();
        assert_eq!(status.phase, Some(JobPhase::Failed));
        assert!(
            message.contains("exited with 1: error: refusing to restore") && !message.contains("node-agent"),
            "{message}"
        );
    }

    #[test]
    fn a_prefixed_restore_says_what_it_waits_for_or_why_it_cannot() {
        let (r, cfg) = (keys_restore(), config());
        let ok = keys_backup(JobPhase::Succeeded);
        let (phase, message) = report(decide_keys(&r, &ok, None, Some(&holder()), &cfg));
        assert_eq!(phase, JobPhase::Pending);
        assert!(
            message.contains("EtcdCluster shared (spec.target) does not exist")
                && message.contains("existing"),
            "{message}"
        );
        let (phase, message) = report(decide_keys(
            &r,
            &keys_backup(JobPhase::Running),
            Some(&shared(true)),
            Some(&holder()),
            &cfg,
        ));
        assert_eq!((phase, message.contains("to succeed")), (JobPhase::Pending, true));
        let (phase, message) = report(decide_keys(
            &r,
            &keys_backup(JobPhase::Failed),
            Some(&shared(true)),
            Some(&holder()),
            &cfg,
        ));
        assert_eq!((phase, message.contains("no leader")), (JobPhase::Failed, true));
        let (phase, message) = report(decide_keys(&r, &ok, Some(&shared(false)), Some(&holder()), &cfg));
        assert_eq!((phase, message.contains("no healthy member")), (JobPhase::Pending, true));
        let (phase, message) = report(decide_keys(&r, &ok, Some(&shared(true)), None, &cfg));
        assert_eq!((phase, message.contains("Machine m1")), (JobPhase::Pending, true));
        let mut templated = r.clone();
        templated.spec.template = Some(EtcdClusterSpec::default());
        let (phase, message) =
            report(decide_keys(&templated, &ok, Some(&shared(true)), Some(&holder()), &cfg));
        assert_eq!((phase, message.contains("spec.template does not apply")), (JobPhase::Failed, true));
        // `decide` never founds a new cluster from a key dump.
        let (phase, _) = report(decide(&r, Some(&ok), None, None));
        assert_eq!(phase, JobPhase::Failed);
    }
}
