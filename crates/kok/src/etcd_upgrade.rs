//! etcd version changes of process-runtime EtcdClusters: which releases
//! the operator's bin dir holds (found at start and again whenever a spec
//! names one it does not know), and each reconcile's upgrade step
//! ([`flotilla_kok_core::etcd_upgrade::step`]) carried out: the
//! pre-upgrade EtcdBackup created, a member's component rewritten to
//! another binary (the node agent restarts it on the same data dir).

use std::path::Path;
use std::time::Duration;

use flotilla_api::kok::{EtcdBackup, EtcdBackupSpec, EtcdCluster, JobPhase, MachinePath};
use flotilla_api::machine::Machine;
use flotilla_kok_core::etcd::{self as plan, MemberPlan, Observation};
use flotilla_kok_core::etcd_upgrade::{
    self as upgrade, Action, MemberFacts, Snapshot, UpgradeFacts, UpgradeStep,
};
use flotilla_kok_core::etcd_versions::{self as versions, EtcdRelease};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;

use crate::Error;

/// The etcd releases in `bin_dir`: `etcd-X.Y.Z` files, and `etcd` as what
/// its `--version` says. A bin dir that cannot be read has none.
pub async fn discover(bin_dir: &Path) -> Vec<EtcdRelease> {
    let names: Vec<String> = match std::fs::read_dir(bin_dir) {
        Ok(entries) => entries.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect(),
        Err(e) => {
            tracing::warn!(bin_dir = %bin_dir.display(), error = %e, "etcd bin dir not readable");
            return Vec::new();
        }
    };
    let mut unsuffixed = None;
    if names.iter().any(|n| n == "etcd") {
        let run =
            tokio::process::Command::new(bin_dir.join("etcd")).arg("--version").kill_on_drop(true).output();
        match tokio::time::timeout(Duration::from_secs(10), run).await {
            Ok(Ok(out)) => unsuffixed = versions::version_from_output(&String::from_utf8_lossy(&out.stdout)),
            Ok(Err(e)) => tracing::warn!(error = %e, "etcd --version did not run"),
            Err(_) => tracing::warn!("etcd --version did not answer in 10s"),
        }
    }
    let found = versions::releases(&names, unsuffixed.as_deref());
    tracing::info!(bin_dir = %bin_dir.display(),
        releases = ?found.iter().map(|r| r.version.as_str()).collect::<Vec<_>>(), "etcd releases found");
    found
}

/// Where the pre-upgrade snapshot goes: the cluster's backup destination,
/// else `snapshot_dir` on the first member's Machine.
fn destination(cluster: &EtcdCluster, members: &[MemberPlan], snapshot_dir: &Path) -> Option<MachinePath> {
    if let Some(schedule) = &cluster.spec.backup {
        return Some(schedule.destination.clone());
    }
    let first = members.first()?;
    Some(MachinePath { machine: first.machine.clone(), path: snapshot_dir.display().to_string() })
}

/// What an upgrade needs beyond the cluster itself.
pub(crate) struct UpgradeInputs<'a> {
    pub releases: &'a [EtcdRelease],
    pub members: &'a [MemberPlan],
    pub machines: &'a [Machine],
    pub seen: &'a Observation,
    pub config: &'a crate::etcd_operator::EtcdOperator,
}

/// This reconcile's upgrade step for `cluster`, carried out.
pub(crate) async fn step(
    client: &Client,
    cluster: &EtcdCluster,
    inputs: &UpgradeInputs<'_>,
) -> Result<UpgradeStep, Error> {
    let name = cluster.name_any();
    let namespace = cluster.namespace().unwrap_or_default();
    let component = plan::component_name(&namespace, &name);
    let bin_dir = &inputs.config.plan.bin_dir;
    let component_of = |m: &MemberPlan| {
        inputs
            .machines
            .iter()
            .find(|x| x.metadata.name.as_deref() == Some(&m.machine))
            .and_then(|x| x.spec.components.iter().find(|c| c.name == component))
    };
    let leader = inputs.seen.states.values().map(|s| s.leader).find(|l| *l != 0);
    let members: Vec<MemberFacts> = inputs
        .members
        .iter()
        .map(|m| {
            let state = inputs.seen.states.get(&m.name);
            MemberFacts {
                name: m.name.clone(),
                runs: component_of(m)
                    .and_then(|c| versions::release_of(c, bin_dir, inputs.releases))
                    .map(|r| r.version.clone()),
                healthy: state.is_some_and(|s| s.leader != 0),
                reports: state.map(|s| s.version.clone()).filter(|v| !v.is_empty()),
                is_leader: state.is_some_and(|s| Some(s.id) == leader),
            }
        })
        .collect();
    let previous = cluster.status.as_ref();
    let record = previous.and_then(|s| s.upgrade.as_ref());
    let backups: Api<EtcdBackup> = Api::namespaced(client.clone(), &namespace);
    let snapshot = match record.and_then(|r| r.backup.as_deref()) {
        Some(backup) => match backups.get_opt(backup).await? {
            None => Snapshot::Missing,
            Some(b) => {
                let status = b.status.unwrap_or_default();
                match status.phase {
                    Some(JobPhase::Succeeded) => Snapshot::Taken(format!(
                        "{}:{}",
                        b.spec.destination.machine,
                        status.path.unwrap_or_default()
                    )),
                    Some(JobPhase::Failed) => Snapshot::Failed(status.message.unwrap_or_default()),
                    _ => Snapshot::InProgress,
                }
            }
        },
        None => Snapshot::Missing,
    };
    let facts = UpgradeFacts {
        cluster: &name,
        want: &cluster.spec.version,
        releases: inputs.releases,
        members: &members,
        record,
        snapshot,
        conditions: previous.map(|s| s.conditions.as_slice()).unwrap_or_default(),
        generation: cluster.metadata.generation,
        deadline: inputs.config.upgrade_member_deadline,
        now: Timestamp::now(),
    };
    let out = upgrade::step(&facts);
    match &out.action {
        Some(Action::CreateBackup(backup)) => {
            let Some(destination) = destination(cluster, inputs.members, &inputs.config.upgrade_snapshot_dir)
            else {
                return Ok(out);
            };
            let mut object =
                EtcdBackup::new(backup, EtcdBackupSpec { cluster: name.clone(), prefix: None, destination });
            object.metadata.namespace = Some(namespace.clone());
            object.metadata.owner_references = Some(vec![OwnerReference {
                api_version: EtcdCluster::api_version(&()).into_owned(),
                kind: EtcdCluster::kind(&()).into_owned(),
                name: name.clone(),
                uid: cluster.uid().unwrap_or_default(),
                controller: Some(false),
                block_owner_deletion: Some(true),
            }]);
            match backups.create(&PostParams::default(), &object).await {
                Ok(_) => {
                    tracing::info!(cluster = %name, backup = %backup, "etcd snapshot before the upgrade started")
                }
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
        Some(Action::Move { member, release }) => {
            let Some(m) = inputs.members.iter().find(|m| &m.name == member) else { return Ok(out) };
            let binary = bin_dir.join(&release.binary).display().to_string();
            move_member(client, &plan::field_manager(&namespace, &name), &component, m, binary).await?;
            tracing::info!(cluster = %name, member = %member, machine = %m.machine, version = %release.version,
                "etcd member moved to another release");
        }
        None => {}
    }
    Ok(out)
}

/// Rewrites the member's component with `binary`, on a fresh read of its
/// Machine (the write carries that read's resourceVersion).
async fn move_member(
    client: &Client,
    manager: &str,
    component: &str,
    member: &MemberPlan,
    binary: String,
) -> Result<(), Error> {
    let machines: Api<Machine> = Api::all(client.clone());
    let fresh = machines.get(&member.machine).await?;
    let Some(current) = fresh.spec.components.iter().find(|c| c.name == component) else {
        return Err(Error::Other(format!("{} runs no {component} any more", member.machine)));
    };
    let body = json!({
        "apiVersion": "kok.flotilla.io/v1alpha1", "kind": "Machine",
        "metadata": {"name": member.machine, "resourceVersion": fresh.resource_version()},
        "spec": {"components": [versions::with_binary(current, binary)]},
    });
    machines.patch(&member.machine, &PatchParams::apply(manager).force(), &Patch::Apply(&body)).await?;
    Ok(())
}
