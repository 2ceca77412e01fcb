//! EtcdBackups (process runtime): the one-shot component that takes a
//! snapshot (or dumps one tenant's keys) on the destination Machine, its
//! names, paths and client certificate files, and the backup's outcome
//! read back from the Machine's component status. Also shared by the
//! scheduled backups and the restores: how a one-shot component ended.
use std::collections::BTreeMap;

use flotilla_api::kok::{EtcdBackup, EtcdBackupStatus, EtcdCluster, EtcdMemberStatus, JobPhase};
use flotilla_api::machine::{ComponentFile, ComponentSpec, ComponentStatus, KeyRef, Machine, RestartPolicy};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::Deserialize;

use crate::etcd::{names, secret_name, EtcdOperatorConfig, CLIENT_LEAF, PKI_DIR};
use crate::etcd_keys;
use crate::pki::keys;

/// Shell that runs a backup's script (etcdctl itself cannot create the
/// destination directory or report the snapshot's size).
const SHELL: &str = "/bin/sh";
/// Creates the directory, saves the snapshot, then prints its revision and
/// size as the log's last line (read back from the component's log tail).
/// `$1` is etcdctl, `$2` the snapshot file, `$3` etcdutl (`snapshot
/// status` left etcdctl in etcd 3.6); the endpoint and the client
/// certificate come from `ETCDCTL_*` variables, so nothing is quoted.
const BACKUP_SCRIPT: &str = r#"set -e
mkdir -p "$(dirname "$2")"
"$1" snapshot save "$2"
"$3" --write-out=json snapshot status "$2""#;

/// How a one-shot component ended, for a status message: `exited with
/// CODE: <its last log lines>` (without the agent's own banner lines).
pub fn one_shot_exit(component: &ComponentStatus) -> String {
    let code = component.last_exit_code.map_or("an unknown code".to_string(), |c| c.to_string());
    let tail: Vec<&str> =
        component.log_tail.iter().map(String::as_str).filter(|l| !l.starts_with("---- flotilla")).collect();
    format!("exited with {code}: {}", tail.join("\n"))
}

/// Name of a backup's one-shot component on its destination Machine (a
/// component name is at most 63 characters: long ones end in a hash).
pub fn backup_component_name(namespace: &str, backup: &str) -> String {
    one_shot_component_name("etcd-backup", namespace, backup)
}

/// `<kind>-<namespace>-<name>` as a component name (dots become dashes; at
/// most 63 characters: long ones end in a hash).
pub fn one_shot_component_name(kind: &str, namespace: &str, object: &str) -> String {
    use sha2::{Digest, Sha256};
    let name = format!("{kind}-{namespace}-{}", object.replace('.', "-"));
    if name.len() <= 63 {
        return name;
    }
    let hash = hex::encode(Sha256::digest(name.as_bytes()));
    format!("{}-{}", name[..50].trim_end_matches('-'), &hash[..12])
}

/// Field manager of a backup's component: one per backup.
pub fn backup_field_manager(namespace: &str, backup: &str) -> String {
    format!("flotilla-{}", backup_component_name(namespace, backup))
}

/// The snapshot file: `<destination>/<cluster>-<backup>.db`.
pub fn snapshot_path(backup: &EtcdBackup) -> String {
    let dir = backup.spec.destination.path.trim_end_matches('/');
    let name = backup.metadata.name.as_deref().unwrap_or_default();
    format!("{dir}/{}-{name}.db", backup.spec.cluster)
}

/// A prefixed backup's key dump: `<destination>/<cluster>-<backup>.keys.json`.
pub fn keys_dump_path(backup: &EtcdBackup) -> String {
    let dir = backup.spec.destination.path.trim_end_matches('/');
    let name = backup.metadata.name.as_deref().unwrap_or_default();
    format!("{dir}/{}-{name}.keys.json", backup.spec.cluster)
}

/// The file a backup writes: the key dump of a prefixed one, the snapshot
/// of any other.
pub fn backup_file_path(backup: &EtcdBackup) -> String {
    match backup.spec.prefix {
        Some(_) => keys_dump_path(backup),
        None => snapshot_path(backup),
    }
}

/// The cluster's healthy voters that have a client URL, the leader first
/// (it is never behind).
pub fn serving_members(cluster: &EtcdCluster) -> Vec<&EtcdMemberStatus> {
    let leader = cluster.status.as_ref().and_then(|s| s.leader.as_ref());
    let mut members: Vec<&EtcdMemberStatus> = cluster
        .status
        .iter()
        .flat_map(|s| &s.members)
        .filter(|m| m.healthy && !m.is_learner && m.client_url.is_some())
        .collect();
    members.sort_by_key(|m| Some(&m.name) != leader);
    members
}

/// The files of a one-shot component that connects to the cluster: its CA
/// and client certificate from the cluster's Secret, under `pki/` of the
/// component's working directory.
pub fn client_pki_files(cluster: &EtcdCluster) -> Vec<ComponentFile> {
    let (cluster_name, cluster_namespace) = names(cluster);
    let secret = secret_name(cluster_name);
    let file = |key: String| ComponentFile {
        path: format!("{PKI_DIR}/{key}"),
        secret_ref: Some(KeyRef { namespace: cluster_namespace.to_string(), name: secret.clone(), key }),
        mode: Some(0o600),
        ..Default::default()
    };
    vec![file(keys::ETCD_CA_CRT.to_string()), file(keys::crt(CLIENT_LEAF)), file(keys::key(CLIENT_LEAF))]
}

/// `flotilla etcd-keys` flags that reach `members` with the files of
/// [`client_pki_files`].
pub fn etcd_keys_client_args(members: &[&EtcdMemberStatus]) -> Vec<String> {
    let endpoints: Vec<&str> = members.iter().filter_map(|m| m.client_url.as_deref()).collect();
    vec![
        "--endpoints".into(),
        endpoints.join(","),
        "--cacert".into(),
        format!("{PKI_DIR}/{}", keys::ETCD_CA_CRT),
        "--cert".into(),
        format!("{PKI_DIR}/{}", keys::crt(CLIENT_LEAF)),
        "--key".into(),
        format!("{PKI_DIR}/{}", keys::key(CLIENT_LEAF)),
    ]
}

/// What to do about one EtcdBackup.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BackupPlan {
    pub status: EtcdBackupStatus,
    /// The one-shot component to write on the destination Machine.
    pub run: Option<ComponentSpec>,
    /// The component has done its job (its outcome is in `status`): remove
    /// it from the Machine.
    pub release: bool,
}

/// What `etcdctl snapshot status -w json` prints.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SnapshotInfo {
    revision: i64,
    total_size: i64,
}

fn snapshot_info(log_tail: &[String]) -> Option<SnapshotInfo> {
    log_tail.iter().rev().find_map(|line| serde_json::from_str(line.trim()).ok())
}

/// The next step of a backup, from the cluster's status and the
/// destination Machine (its spec and what its node agent reports).
pub fn backup_plan(
    backup: &EtcdBackup,
    cluster: Option<&EtcdCluster>,
    destination: Option<&Machine>,
    config: &EtcdOperatorConfig,
    now: Time,
) -> BackupPlan {
    let previous = backup.status.clone().unwrap_or_default();
    let namespace = backup.metadata.namespace.as_deref().unwrap_or_default();
    let name = backup.metadata.name.as_deref().unwrap_or_default();
    let component = backup_component_name(namespace, name);
    let on_machine = destination.is_some_and(|m| m.spec.components.iter().any(|c| c.name == component));
    let mut plan = BackupPlan { status: previous.clone(), ..Default::default() };
    let waiting = |message: String| EtcdBackupStatus {
        phase: Some(JobPhase::Pending),
        message: Some(message),
        ..previous.clone()
    };
    if matches!(previous.phase, Some(JobPhase::Succeeded | JobPhase::Failed)) {
        plan.release = on_machine;
        return plan;
    }
    let prefix = backup.spec.prefix.as_deref();
    let what = if prefix.is_some() { "key dump" } else { "snapshot" };
    let machine = &backup.spec.destination.machine;
    let Some(destination) = destination else {
        plan.status = waiting(format!("waiting for Machine {machine} (spec.destination.machine) to exist"));
        return plan;
    };
    if on_machine {
        let reported = destination.status.iter().flat_map(|s| &s.components).find(|c| c.name == component);
        plan.status = match reported {
            Some(c) if c.last_exit_time.is_some() && c.pid.is_none() => {
                let done = EtcdBackupStatus { completed_at: c.last_exit_time.clone(), ..previous.clone() };
                if c.last_exit_code == Some(0) && prefix.is_some() {
                    let info: Option<etcd_keys::DumpSummary> = etcd_keys::last_summary(&c.log_tail);
                    EtcdBackupStatus {
                        phase: Some(JobPhase::Succeeded),
                        size_bytes: info.as_ref().and_then(|i| i64::try_from(i.bytes).ok()),
                        revision: info.as_ref().map(|i| i.revision),
                        message: info.as_ref().map(|i| {
                            format!("{} keys under {} at revision {}", i.keys, i.prefix, i.revision)
                        }),
                        ..done
                    }
                } else if c.last_exit_code == Some(0) {
                    let info = snapshot_info(&c.log_tail);
                    EtcdBackupStatus {
                        phase: Some(JobPhase::Succeeded),
                        size_bytes: info.as_ref().map(|i| i.total_size),
                        revision: info.as_ref().map(|i| i.revision),
                        message: None,
                        ..done
                    }
                } else {
                    let exit = one_shot_exit(c);
                    EtcdBackupStatus {
                        phase: Some(JobPhase::Failed),
                        message: Some(format!("the {what} on {machine} {exit}")),
                        ..done
                    }
                }
            }
            Some(c) => EtcdBackupStatus {
                phase: Some(JobPhase::Running),
                message: c.message.clone(),
                ..previous.clone()
            },
            None => EtcdBackupStatus { phase: Some(JobPhase::Running), ..previous.clone() },
        };
        plan.release = matches!(plan.status.phase, Some(JobPhase::Succeeded | JobPhase::Failed));
        return plan;
    }
    let Some(cluster) = cluster else {
        plan.status =
            waiting(format!("waiting for EtcdCluster {} (spec.cluster) to exist", backup.spec.cluster));
        return plan;
    };
    let members = serving_members(cluster);
    let Some(member) = members.first() else {
        plan.status = waiting(format!(
            "EtcdCluster {} has no healthy member to take a {what} from",
            backup.spec.cluster
        ));
        return plan;
    };
    let path = backup_file_path(backup);
    plan.run = Some(match prefix {
        // One tenant's keys: `flotilla etcd-keys dump` (see
        // `crate::etcd_keys`), against every healthy voter in turn.
        Some(prefix) => {
            let mut args = vec!["etcd-keys".to_string(), "dump".into()];
            args.extend(etcd_keys_client_args(&members));
            args.extend(["--prefix".into(), prefix.to_string(), "--out".into(), path.clone()]);
            ComponentSpec {
                name: component,
                binary: config.flotilla_binary.display().to_string(),
                args,
                files: client_pki_files(cluster),
                restart_policy: RestartPolicy::Never,
                ..Default::default()
            }
        }
        None => {
            let env = BTreeMap::from([
                ("ETCDCTL_API".to_string(), "3".to_string()),
                ("ETCDCTL_ENDPOINTS".to_string(), member.client_url.clone().unwrap_or_default()),
                ("ETCDCTL_CACERT".to_string(), format!("{PKI_DIR}/{}", keys::ETCD_CA_CRT)),
                ("ETCDCTL_CERT".to_string(), format!("{PKI_DIR}/{}", keys::crt(CLIENT_LEAF))),
                ("ETCDCTL_KEY".to_string(), format!("{PKI_DIR}/{}", keys::key(CLIENT_LEAF))),
            ]);
            ComponentSpec {
                name: component,
                binary: SHELL.into(),
                args: vec![
                    "-c".into(),
                    BACKUP_SCRIPT.into(),
                    "flotilla-etcd-backup".into(),
                    config.bin_dir.join("etcdctl").display().to_string(),
                    path.clone(),
                    config.bin_dir.join("etcdutl").display().to_string(),
                ],
                env,
                files: client_pki_files(cluster),
                restart_policy: RestartPolicy::Never,
                ..Default::default()
            }
        }
    });
    plan.status = EtcdBackupStatus {
        phase: Some(JobPhase::Running),
        path: Some(path),
        member: Some(member.name.clone()),
        started_at: Some(now),
        message: None,
        ..previous
    };
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etcd::tests::*;
    use crate::etcd::Plan;
    use crate::etcd_status::status;
    use flotilla_api::machine::MachineStatus;

    fn backup(prefix: Option<&str>) -> EtcdBackup {
        let mut b = EtcdBackup::new(
            "nightly",
            flotilla_api::kok::EtcdBackupSpec {
                cluster: "e".into(),
                prefix: prefix.map(str::to_string),
                destination: flotilla_api::kok::MachinePath {
                    machine: "m1".into(),
                    path: "/backups/".into(),
                },
            },
        );
        b.metadata.namespace = Some("ns".into());
        b
    }

    fn running_cluster() -> EtcdCluster {
        let (mut c, _, members) = running_three();
        let seen = observed(&members, &[], &["e-0", "e-1", "e-2"]);
        let plan = Plan { members, ..Default::default() };
        c.status = Some(status(&c, &plan, &seen, Time(t(1000))));
        c
    }

    #[test]
    fn a_backup_runs_etcdctl_once_on_its_machine_and_reads_the_outcome_back() {
        let (b, c, cfg, now) = (backup(None), running_cluster(), config(), Time(t(2000)));
        let mut m1 = machine("m1", "etcd");
        // Nothing placed yet: a one-shot component that saves a snapshot from
        // the leader with the client certificate.
        let plan = backup_plan(&b, Some(&c), Some(&m1), &cfg, now.clone());
        let run = plan.run.clone().unwrap();
        assert_eq!(run.name, "etcd-backup-ns-nightly");
        assert_eq!(run.restart_policy, RestartPolicy::Never);
        assert_eq!(
            run.args[3..],
            ["/opt/bin/etcdctl".to_string(), "/backups/e-nightly.db".into(), "/opt/bin/etcdutl".into()]
        );
        assert_eq!(
            run.env["ETCDCTL_ENDPOINTS"],
            c.status.as_ref().unwrap().members[0].client_url.clone().unwrap()
        );
        assert_eq!(run.env["ETCDCTL_CERT"], "pki/client.crt");
        let keys: Vec<&str> = run.files.iter().map(|f| f.secret_ref.as_ref().unwrap().key.as_str()).collect();
        assert_eq!(keys, ["etcd-ca.crt", "client.crt", "client.key"]);
        let s = &plan.status;
        assert_eq!(
            (s.phase, s.member.as_deref(), s.path.as_deref()),
            (Some(JobPhase::Running), Some("e-0"), Some("/backups/e-nightly.db"))
        );
        let mut b = b;
        b.status = Some(plan.status.clone());
        m1.spec.components.push(run.clone());

        // Still running: nothing new.
        let again = backup_plan(&b, Some(&c), Some(&m1), &cfg, now.clone());
        assert_eq!(
            (again.run.is_none(), again.release, again.status.phase),
            (true, false, Some(JobPhase::Running))
        );

        // Exited 0: Succeeded with the size and revision it printed last.
        let exited = |code: i32, tail: &[&str]| MachineStatus {
            components: vec![flotilla_api::machine::ComponentStatus {
                name: run.name.clone(),
                state: flotilla_api::machine::ComponentState::Stopped,
                last_exit_code: Some(code),
                last_exit_time: Some(Time(t(2005))),
                log_tail: tail.iter().map(|l| l.to_string()).collect(),
                ..Default::default()
            }],
            ..Default::default()
        };
        m1.status = Some(exited(
            0,
            &[
                "Snapshot saved at /backups/e-nightly.db",
                r#"{"hash":1,"revision":42,"totalKey":7,"totalSize":20480}"#,
            ],
        ));
        let done = backup_plan(&b, Some(&c), Some(&m1), &cfg, now.clone());
        let s = &done.status;
        assert_eq!((s.phase, s.size_bytes, s.revision), (Some(JobPhase::Succeeded), Some(20480), Some(42)));
        assert_eq!(s.completed_at, Some(Time(t(2005))));
        assert!(done.release, "the finished component leaves the Machine");
        // Once recorded, the outcome stays and only the release is left.
        let mut finished = b.clone();
        finished.status = Some(done.status.clone());
        let after = backup_plan(&finished, Some(&c), Some(&m1), &cfg, now.clone());
        assert_eq!((after.status, after.release, after.run), (done.status.clone(), true, None));

        // Exited 1: Failed, with what it printed.
        m1.status = Some(exited(
            1,
            &[
                "---- flotilla-node-agent: starting",
                "mkdir: cannot create directory '/backups': Permission denied",
            ],
        ));
        let failed = backup_plan(&b, Some(&c), Some(&m1), &cfg, now).status;
        assert_eq!(failed.phase, Some(JobPhase::Failed));
        let message = failed.message.unwrap();
        assert!(
            message.contains("exited with 1")
                && message.contains("Permission denied")
                && !message.contains("flotilla-node-agent"),
            "{message}"
        );
    }

    #[test]
    fn a_prefixed_backup_dumps_the_keys_with_flotilla_and_reports_their_count() {
        let (b, c, cfg, now) = (backup(Some("/clusters/a")), running_cluster(), config(), Time(t(2000)));
        let mut m1 = machine("m1", "etcd");
        let plan = backup_plan(&b, Some(&c), Some(&m1), &cfg, now.clone());
        let run = plan.run.clone().unwrap();
        assert_eq!((run.name.as_str(), run.binary.as_str()), ("etcd-backup-ns-nightly", "/opt/bin/flotilla"));
        assert_eq!(run.restart_policy, RestartPolicy::Never);
        let urls: Vec<String> =
            c.status.as_ref().unwrap().members.iter().map(|m| m.client_url.clone().unwrap()).collect();
        assert_eq!(
            run.args,
            [
                "etcd-keys",
                "dump",
                "--endpoints",
                &urls.join(","),
                "--cacert",
                "pki/etcd-ca.crt",
                "--cert",
                "pki/client.crt",
                "--key",
                "pki/client.key",
                "--prefix",
                "/clusters/a",
                "--out",
                "/backups/e-nightly.keys.json"
            ]
        );
        let keys: Vec<&str> = run.files.iter().map(|f| f.secret_ref.as_ref().unwrap().key.as_str()).collect();
        assert_eq!(keys, ["etcd-ca.crt", "client.crt", "client.key"]);
        assert_eq!(plan.status.path.as_deref(), Some("/backups/e-nightly.keys.json"));
        let mut b = b;
        b.status = Some(plan.status.clone());
        m1.spec.components.push(run.clone());
        let summary = crate::etcd_keys::DumpSummary {
            dumped: "/backups/e-nightly.keys.json".into(),
            prefix: "/clusters/a".into(),
            revision: 77,
            keys: 12,
            bytes: 4096,
        };
        let exited = |code: i32, tail: Vec<String>| MachineStatus {
            components: vec![flotilla_api::machine::ComponentStatus {
                name: run.name.clone(),
                state: flotilla_api::machine::ComponentState::Stopped,
                last_exit_code: Some(code),
                last_exit_time: Some(Time(t(2005))),
                log_tail: tail,
                ..Default::default()
            }],
            ..Default::default()
        };
        m1.status = Some(exited(0, vec![serde_json::to_string(&summary).unwrap()]));
        let done = backup_plan(&b, Some(&c), Some(&m1), &cfg, now.clone());
        let s = &done.status;
        assert_eq!((s.phase, s.size_bytes, s.revision), (Some(JobPhase::Succeeded), Some(4096), Some(77)));
        assert_eq!(s.message.as_deref(), Some("12 keys under /clusters/a at revision 77"));
        assert!(done.release);
        m1.status = Some(exited(1, vec!["error: https://127.0.0.1:1: connection refused".into()]));
        let failed = backup_plan(&b, Some(&c), Some(&m1), &cfg, now).status;
        let message = failed.message.unwrap();
        assert_eq!(failed.phase, Some(JobPhase::Failed));
        assert!(message.contains("the key dump on m1 exited with 1: error: https"), "{message}");
    }

    #[test]
    fn a_backup_waits_for_its_machine_and_a_healthy_cluster() {
        let (cfg, now) = (config(), Time(t(2000)));
        let m1 = machine("m1", "etcd");
        let wait = |b: &EtcdBackup, c: Option<&EtcdCluster>, m: Option<&Machine>| {
            let plan = backup_plan(b, c, m, &cfg, now.clone());
            assert!(plan.run.is_none());
            (plan.status.phase, plan.status.message.unwrap_or_default())
        };
        let (phase, message) = wait(&backup(None), Some(&running_cluster()), None);
        assert_eq!(phase, Some(JobPhase::Pending));
        assert!(message.contains("Machine m1"), "{message}");
        let (phase, message) = wait(&backup(None), None, Some(&m1));
        assert_eq!((phase, message.contains("EtcdCluster e")), (Some(JobPhase::Pending), true));
        let (phase, message) = wait(&backup(None), Some(&cluster(3)), Some(&m1));
        assert_eq!((phase, message.contains("no healthy member")), (Some(JobPhase::Pending), true));
        let (phase, message) = wait(&backup(Some("/a")), Some(&cluster(3)), Some(&m1));
        assert_eq!(
            (phase, message.contains("no healthy member to take a key dump")),
            (Some(JobPhase::Pending), true)
        );
        assert_eq!(backup_component_name("ns", "b.1"), "etcd-backup-ns-b-1");
        let long = backup_component_name("a-rather-long-namespace-name", "and-an-even-longer-backup-name");
        assert!(long.len() <= 63 && long.starts_with("etcd-backup-a-rather"), "{long}");
    }
}
