//! What the EtcdCluster operator's controllers share (both runtimes, the
//! backups and the restores): their configuration, the cluster's Secret
//! as read, and the status write.

use std::collections::BTreeMap;
use std::time::Duration;

use flotilla_api::kok::EtcdCluster;
use flotilla_api::machine::Machine;
use flotilla_kok_core::etcd::{self as plan, EtcdOperatorConfig};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;

use crate::Error;

/// Field manager of the status and the Secret.
pub const FIELD_MANAGER: &str = "flotilla-etcd";
/// How soon a cluster is looked at again while it is changing.
pub(crate) const STEP: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct EtcdOperator {
    pub plan: EtcdOperatorConfig,
    /// How often a cluster's members are probed while nothing changes.
    pub resync: Duration,
    /// How long one request to a member may take.
    pub probe_timeout: Duration,
    /// How the `Kubernetes` runtime builds the members' pods.
    pub kube: flotilla_kok_core::etcd_kube::EtcdKubeConfig,
    /// Upgrades: how long a member moved to another etcd release has to
    /// answer healthy on it before the moved members go back.
    pub upgrade_member_deadline: Duration,
    /// Upgrades of clusters without `spec.backup`: the directory, on the
    /// first member's Machine, the snapshot before the upgrade goes to.
    pub upgrade_snapshot_dir: std::path::PathBuf,
}

impl Default for EtcdOperator {
    fn default() -> Self {
        Self {
            plan: EtcdOperatorConfig::default(),
            resync: Duration::from_secs(10),
            probe_timeout: Duration::from_secs(3),
            kube: flotilla_kok_core::etcd_kube::EtcdKubeConfig::default(),
            upgrade_member_deadline: Duration::from_secs(60),
            upgrade_snapshot_dir: "/var/lib/flotilla/etcd-upgrade-snapshots".into(),
        }
    }
}

pub(crate) async fn write_status(
    client: &Client,
    cluster: &EtcdCluster,
    status: &flotilla_api::kok::EtcdClusterStatus,
) -> Result<(), Error> {
    if cluster.status.as_ref() == Some(status) {
        return Ok(());
    }
    let name = cluster.name_any();
    let namespace = cluster.namespace().unwrap_or_default();
    let body = json!({
        "apiVersion": "kok.flotilla.io/v1alpha1", "kind": "EtcdCluster",
        "metadata": {"name": name, "namespace": namespace},
        "status": status,
    });
    Api::<EtcdCluster>::namespaced(client.clone(), &namespace)
        .patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body))
        .await?;
    let notices = flotilla_kok_core::events::etcd_events(&name, cluster.status.as_ref(), status);
    crate::events::publish(client, FIELD_MANAGER, &cluster.object_ref(&()), &notices).await;
    for (machine, notice) in flotilla_kok_core::events::machine_events(&name, cluster.status.as_ref(), status)
    {
        // With its uid, or `kubectl describe machine` does not find it.
        if let Ok(Some(m)) = Api::<Machine>::all(client.clone()).get_opt(&machine).await {
            crate::events::publish(client, FIELD_MANAGER, &m.object_ref(&()), &[notice]).await;
        }
    }
    let condition = status.conditions.first();
    tracing::info!(
        cluster = %name, phase = ?status.phase, ready = status.ready_members, leader = ?status.leader,
        reason = ?condition.map(|c| &c.reason), message = ?condition.map(|c| &c.message), "etcd status"
    );
    Ok(())
}

/// The data of the cluster's Secret (empty before the first reconcile).
pub(crate) async fn read_pki(
    client: &Client,
    cluster: &EtcdCluster,
) -> Result<BTreeMap<String, Vec<u8>>, Error> {
    let namespace = cluster.namespace().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    Ok(secrets
        .get_opt(&plan::secret_name(&cluster.name_any()))
        .await?
        .and_then(|s| s.data)
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect())
}
