//! Scheduled EtcdBackups (`EtcdCluster.spec.backup`), run from the
//! EtcdCluster reconcile: read the namespace's EtcdBackups, ask
//! [`flotilla_kok_core::etcd_schedule::decide`], create the due backup
//! with server-side apply and delete the ones retention lets go. The
//! backup controller ([`crate::etcd_backup`]) takes the snapshots and,
//! behind the finalizer, removes a deleted backup's file.

use flotilla_api::kok::{EtcdBackup, EtcdCluster};
use flotilla_kok_core::etcd_schedule::{self as schedule, SchedulePlan};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::Error;

/// The schedule's step for `cluster`: the due backup created, expired ones
/// deleted (each with its uid as a precondition, so a backup recreated
/// under the same name is never hit). `None` without a schedule.
pub(crate) async fn step(
    client: &Client,
    cluster: &EtcdCluster,
    now: Timestamp,
) -> Result<Option<SchedulePlan>, Error> {
    if cluster.spec.backup.is_none() {
        return Ok(None);
    }
    let name = cluster.name_any();
    let namespace = cluster.namespace().unwrap_or_default();
    let api: Api<EtcdBackup> = Api::namespaced(client.clone(), &namespace);
    let backups = api.list(&ListParams::default()).await?.items;
    let plan = schedule::decide(cluster, &backups, now);
    if let Some(backup) = &plan.create {
        let backup_name = backup.name_any();
        let body = json!({
            "apiVersion": "kok.flotilla.io/v1alpha1", "kind": "EtcdBackup",
            "metadata": backup.metadata, "spec": backup.spec,
        });
        api.patch(&backup_name, &PatchParams::apply(schedule::FIELD_MANAGER).force(), &Patch::Apply(&body))
            .await?;
        tracing::info!(cluster = %name, backup = %backup_name, tick = ?plan.tick, "scheduled etcd backup created");
    }
    for (backup, uid) in &plan.delete {
        let params = DeleteParams {
            preconditions: Some(Preconditions { uid: uid.clone(), resource_version: None }),
            ..Default::default()
        };
        match api.delete(backup, &params).await {
            Ok(_) => {
                tracing::info!(cluster = %name, backup = %backup, "scheduled etcd backup past retention deleted")
            }
            // Gone already, or another object under that name now.
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {
                tracing::debug!(cluster = %name, backup = %backup, error = %e, "expired backup not deleted");
            }
            Err(e) => return Err(e.into()),
        }
    }
    if let Some(waiting) = &plan.waiting {
        tracing::debug!(cluster = %name, waiting = %waiting, "scheduled etcd backup waits");
    }
    if let Some(c) = plan.condition.as_ref().filter(|c| c.status != "True") {
        tracing::debug!(cluster = %name, reason = %c.reason, message = %c.message, "etcd backup schedule not valid");
    }
    Ok(Some(plan))
}
