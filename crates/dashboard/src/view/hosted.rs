//! The hosted-clusters page: each HostedCluster's phase and components per
//! machine, its EtcdCluster's members (leader, database size) and backups,
//! certificate expiries, upgrade progress, and the machines it runs on with
//! their components, restarts and log tails.

use std::sync::Arc;

use flotilla_api::kok::{EtcdBackup, EtcdCluster, HostedCluster};
use flotilla_api::machine::Machine;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use serde::Serialize;

use super::age::{age, time_left};
use super::cluster::{condition_views, ConditionView};
use super::fleet::human_bytes;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HostedView {
    pub namespace: String,
    pub name: String,
    pub phase: String,
    pub version: String,
    pub endpoint: String,
    pub upgrade: String,
    pub conditions: Vec<ConditionView>,
    /// `component/instance` on its machine.
    pub instances: Vec<Instance>,
    pub certificates: Vec<Certificate>,
    pub etcd: Option<EtcdView>,
    pub machines: Vec<MachineView>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Instance {
    pub name: String,
    pub machine: String,
    pub version: String,
    pub healthy: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Certificate {
    pub name: String,
    pub not_after: String,
    pub left: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EtcdView {
    pub name: String,
    pub phase: String,
    pub version: String,
    pub members: Vec<EtcdMember>,
    /// The scheduled destination, prefilled in the backup dialog.
    pub backup_machine: String,
    pub backup_path: String,
    pub next_backup: String,
    pub backups: Vec<BackupView>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EtcdMember {
    pub name: String,
    pub machine: String,
    pub leader: bool,
    pub healthy: bool,
    pub learner: bool,
    pub db_size: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupView {
    pub name: String,
    pub phase: String,
    pub size: String,
    pub age: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MachineView {
    pub name: String,
    pub ready: String,
    pub heartbeat: String,
    pub components: Vec<ComponentView>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ComponentView {
    pub name: String,
    pub state: String,
    pub healthy: String,
    pub restarts: u32,
    pub message: String,
    pub log_tail: Vec<String>,
}

pub struct Inputs<'a> {
    pub etcds: &'a [Arc<EtcdCluster>],
    pub backups: &'a [Arc<EtcdBackup>],
    pub machines: &'a [Arc<Machine>],
}

pub fn hosted_view(hc: &HostedCluster, inputs: &Inputs<'_>, now: Timestamp) -> HostedView {
    let status = hc.status.clone().unwrap_or_default();
    let namespace = hc.namespace().unwrap_or_default();
    let etcd = hc.spec.etcd.resolve().and_then(|(etcd_name, _)| {
        let ec = inputs
            .etcds
            .iter()
            .find(|e| e.name_any() == etcd_name && e.namespace().as_deref() == Some(&namespace))?;
        Some(etcd_view(ec, inputs.backups, now))
    });
    let mut machine_names: Vec<String> = status.instances.iter().filter_map(|i| i.machine.clone()).collect();
    if let Some(e) = &etcd {
        machine_names.extend(e.members.iter().map(|m| m.machine.clone()).filter(|m| !m.is_empty()));
    }
    machine_names.sort();
    machine_names.dedup();
    let machines = machine_names
        .iter()
        .filter_map(|n| inputs.machines.iter().find(|m| &m.name_any() == n))
        .map(|m| machine_view(m, now))
        .collect();
    HostedView {
        name: hc.name_any(),
        namespace,
        phase: status.phase.map(|p| format!("{p:?}")).unwrap_or_else(|| "Pending".into()),
        version: status.version.clone().unwrap_or_default(),
        endpoint: status.endpoint.clone().unwrap_or_default(),
        upgrade: status
            .upgrade
            .as_ref()
            .map(|u| {
                let step = u.component.clone().map(|c| format!(", at {c}")).unwrap_or_default();
                format!("{} → {}: {:?}{step} ({} done)", u.from, u.to, u.state, u.done.len())
            })
            .unwrap_or_default(),
        conditions: condition_views(&status.conditions, now),
        instances: status
            .instances
            .iter()
            .map(|i| Instance {
                name: i.name.clone(),
                machine: i.machine.clone().unwrap_or_default(),
                version: i.version.clone().unwrap_or_default(),
                healthy: i.healthy,
            })
            .collect(),
        certificates: status
            .certificates
            .iter()
            .map(|c| Certificate {
                name: c.name.clone(),
                not_after: c.not_after.0.to_string(),
                left: time_left(c.not_after.0, now),
            })
            .collect(),
        etcd,
        machines,
    }
}

pub fn etcd_view(ec: &EtcdCluster, backups: &[Arc<EtcdBackup>], now: Timestamp) -> EtcdView {
    let status = ec.status.clone().unwrap_or_default();
    let leader = status.leader.clone().unwrap_or_default();
    let mut own: Vec<&Arc<EtcdBackup>> = backups
        .iter()
        .filter(|b| b.spec.cluster == ec.name_any() && b.namespace() == ec.namespace())
        .collect();
    own.sort_by_key(|b| std::cmp::Reverse(b.metadata.creation_timestamp.as_ref().map(|t| t.0.as_second())));
    EtcdView {
        name: ec.name_any(),
        phase: status.phase.map(|p| format!("{p:?}")).unwrap_or_else(|| "Pending".into()),
        version: status.version.clone().unwrap_or_default(),
        members: status
            .members
            .iter()
            .map(|m| EtcdMember {
                name: m.name.clone(),
                machine: m.machine.clone().unwrap_or_default(),
                leader: !leader.is_empty() && (m.name == leader || m.id.as_deref() == Some(leader.as_str())),
                healthy: m.healthy,
                learner: m.is_learner,
                db_size: m.db_size_bytes.map(|b| human_bytes(b.max(0) as u128)).unwrap_or_default(),
            })
            .collect(),
        backup_machine: ec.spec.backup.as_ref().map(|b| b.destination.machine.clone()).unwrap_or_default(),
        backup_path: ec.spec.backup.as_ref().map(|b| b.destination.path.clone()).unwrap_or_default(),
        next_backup: status.next_scheduled_backup.map(|t| t.0.to_string()).unwrap_or_default(),
        backups: own
            .into_iter()
            .take(10)
            .map(|b| {
                let s = b.status.clone().unwrap_or_default();
                BackupView {
                    name: b.name_any(),
                    phase: s.phase.map(|p| format!("{p:?}")).unwrap_or_else(|| "Pending".into()),
                    size: s.size_bytes.map(|b| human_bytes(b.max(0) as u128)).unwrap_or_default(),
                    age: b.metadata.creation_timestamp.as_ref().map(|t| age(t.0, now)).unwrap_or_default(),
                    message: s.message.unwrap_or_default(),
                }
            })
            .collect(),
    }
}

pub fn machine_view(m: &Machine, now: Timestamp) -> MachineView {
    let status = m.status.clone().unwrap_or_default();
    MachineView {
        name: m.name_any(),
        ready: status
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .map(|c| c.status.clone())
            .unwrap_or_else(|| "Unknown".into()),
        heartbeat: status.last_heartbeat.map(|t| age(t.0, now)).unwrap_or_default(),
        components: status
            .components
            .iter()
            .map(|c| ComponentView {
                name: c.name.clone(),
                state: format!("{:?}", c.state),
                healthy: c.healthy.map(|h| if h { "yes" } else { "no" }.to_string()).unwrap_or_default(),
                restarts: c.restarts,
                message: c.message.clone().unwrap_or_default(),
                log_tail: c.log_tail.iter().rev().take(5).rev().cloned().collect(),
            })
            .collect(),
    }
}
