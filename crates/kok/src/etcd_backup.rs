//! On-demand EtcdBackups (process runtime): a one-shot component on the
//! destination Machine runs `etcdctl snapshot save` against a healthy
//! member with the cluster's client certificate; its exit, read from the
//! Machine's component status, becomes the backup's outcome, and then the
//! component is removed again (the snapshot file, outside the component's
//! working directory, stays). A Failed backup is not retried: create a new
//! EtcdBackup.
//!
//! A scheduled backup (made by the EtcdCluster controller's schedule) carries the finalizer
//! `kok.flotilla.io/snapshot-file`: deleting it runs a one-shot `rm -f` of
//! its snapshot file on the destination Machine (in place of the snapshot
//! component, if that still runs), and the finalizer goes once it exited 0
//! (or when the file cannot or must not be removed: see
//! [`flotilla_kok_core::etcd_schedule::removal_plan`]).

use std::sync::Arc;
use std::time::Duration;

use flotilla_api::kok::{EtcdBackup, EtcdCluster, JobPhase};
use flotilla_api::machine::Machine;
use flotilla_kok_core::etcd_backup;
use flotilla_kok_core::etcd_schedule as schedule;
use flotilla_kok_core::events::backup_event;
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{finalizer, Event};
use kube::runtime::{watcher, Controller};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;

use crate::etcd_operator::EtcdOperator;
use crate::finalizing::{finalizer_error, pending};
use crate::machine_components::{release_machine, run_one_shot};
use crate::Error;

/// Field manager of the backups' status.
pub const FIELD_MANAGER: &str = "flotilla-etcd-backup";

struct Ctx {
    client: Client,
    config: EtcdOperator,
}

/// Reconciles every EtcdBackup until the watch ends.
pub async fn run(client: Client, config: EtcdOperator) -> Result<(), Error> {
    let backups: Api<EtcdBackup> = Api::all(client.clone());
    let ctx = Arc::new(Ctx { client, config });
    Controller::new(backups, watcher::Config::default())
        .run(|o, c| flotilla_metrics::reconcile("etcd-backup", o, c, reconcile), error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "etcd backup reconcile failed");
            }
        })
        .await;
    Ok(())
}

fn error_policy(backup: Arc<EtcdBackup>, error: &Error, _: Arc<Ctx>) -> Action {
    if let Some(action) = pending(error) {
        return action;
    }
    tracing::warn!(backup = %backup.name_any(), error = %error, "etcd backup reconcile failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

/// What a backup's plans read: its destination Machine and its EtcdCluster
/// (either may be gone).
async fn read_inputs(
    backup: &EtcdBackup,
    machines: &Api<Machine>,
    ctx: &Ctx,
) -> Result<(Option<Machine>, Option<EtcdCluster>), Error> {
    let namespace = backup.namespace().unwrap_or_default();
    let destination = machines.get_opt(&backup.spec.destination.machine).await?;
    let cluster =
        Api::<EtcdCluster>::namespaced(ctx.client.clone(), &namespace).get_opt(&backup.spec.cluster).await?;
    Ok((destination, cluster))
}

/// Only scheduled backups carry the finalizer (put there when the
/// schedule creates them): those go through the finalizer helper, which
/// removes it once their file is gone; an on-demand backup is never given
/// one.
async fn reconcile(backup: Arc<EtcdBackup>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if backup.finalizers().iter().any(|f| f == schedule::FILE_FINALIZER) {
        let api: Api<EtcdBackup> =
            Api::namespaced(ctx.client.clone(), &backup.namespace().unwrap_or_default());
        return finalizer(&api, schedule::FILE_FINALIZER, backup, |event| async {
            match event {
                Event::Apply(backup) => take_snapshot(&backup, &ctx).await,
                Event::Cleanup(backup) => remove_file(&backup, &ctx).await,
            }
        })
        .await
        .map_err(finalizer_error);
    }
    if backup.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    take_snapshot(&backup, &ctx).await
}

/// The snapshot: started, its outcome recorded, its component removed.
async fn take_snapshot(backup: &EtcdBackup, ctx: &Ctx) -> Result<Action, Error> {
    let name = backup.name_any();
    let namespace = backup.namespace().unwrap_or_default();
    let machine = backup.spec.destination.machine.clone();
    let machines: Api<Machine> = Api::all(ctx.client.clone());
    let (destination, cluster) = read_inputs(backup, &machines, ctx).await?;
    let now = Time(Timestamp::now());
    let step =
        etcd_backup::backup_plan(backup, cluster.as_ref(), destination.as_ref(), &ctx.config.plan, now);
    let manager = etcd_backup::backup_field_manager(&namespace, &name);
    if let Some(component) = &step.run {
        run_one_shot(&machines, &manager, &machine, component).await?;
        tracing::info!(backup = %name, machine = %machine, member = ?step.status.member,
            path = ?step.status.path, "etcd snapshot started");
    }
    if backup.status.as_ref() != Some(&step.status) {
        let body = json!({
            "apiVersion": "kok.flotilla.io/v1alpha1", "kind": "EtcdBackup",
            "metadata": {"name": name, "namespace": namespace},
            "status": step.status,
        });
        Api::<EtcdBackup>::namespaced(ctx.client.clone(), &namespace)
            .patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body))
            .await?;
        tracing::info!(backup = %name, phase = ?step.status.phase, path = ?step.status.path,
            size = ?step.status.size_bytes, message = ?step.status.message, "etcd backup status");
        let before = backup.status.as_ref().and_then(|s| s.phase);
        let message = step.status.message.clone().unwrap_or_default();
        let cluster_name = cluster.as_ref().map(|c| c.name_any()).unwrap_or_default();
        if let Some(notice) = backup_event(&cluster_name, &name, before, step.status.phase, &message) {
            // On the EtcdCluster, where a person looks; on the backup if it is gone.
            let regarding = cluster.as_ref().map_or_else(|| backup.object_ref(&()), |c| c.object_ref(&()));
            crate::events::publish(&ctx.client, FIELD_MANAGER, &regarding, &[notice]).await;
        }
    }
    // Only once the outcome is recorded: the component's status is its
    // only record.
    if step.release {
        let component = etcd_backup::backup_component_name(&namespace, &name);
        release_machine(&machines, &manager, &machine, &component).await?;
        tracing::info!(backup = %name, machine = %machine, "etcd snapshot component removed");
    }
    let finished = matches!(step.status.phase, Some(JobPhase::Succeeded | JobPhase::Failed));
    Ok(if finished && !step.release {
        Action::await_change()
    } else {
        Action::requeue(Duration::from_secs(1))
    })
}

/// A deleted scheduled backup: its snapshot file is removed from the
/// Machine by a one-shot component, then the finalizer goes (the caller
/// removes it).
async fn remove_file(backup: &EtcdBackup, ctx: &Ctx) -> Result<Action, Error> {
    let name = backup.name_any();
    let namespace = backup.namespace().unwrap_or_default();
    let machine = backup.spec.destination.machine.clone();
    let machines: Api<Machine> = Api::all(ctx.client.clone());
    let (destination, cluster) = read_inputs(backup, &machines, ctx).await?;
    let step = schedule::removal_plan(
        backup,
        cluster.as_ref(),
        destination.as_ref(),
        &ctx.config.plan,
        Timestamp::now(),
    );
    let manager = etcd_backup::backup_field_manager(&namespace, &name);
    if let Some(component) = &step.run {
        // The backup's own field manager: a snapshot component still there
        // is replaced (and stopped), not left running beside it.
        run_one_shot(&machines, &manager, &machine, component).await?;
        tracing::info!(backup = %name, machine = %machine, message = %step.message, "etcd snapshot file removal started");
    }
    if let Some(component) = &step.release {
        release_machine(&machines, &manager, &machine, component).await?;
        tracing::info!(backup = %name, machine = %machine, component = %component, "backup component removed");
    }
    if !step.done {
        if step.release.is_some() {
            tracing::warn!(backup = %name, machine = %machine, message = %step.message, "etcd snapshot file not removed");
            return Err(Error::CleanupPending { after: Duration::from_secs(10), waiting_for: step.message });
        }
        return Err(Error::CleanupPending { after: Duration::from_secs(1), waiting_for: step.message });
    }
    tracing::info!(backup = %name, machine = %machine, message = %step.message, "scheduled etcd backup deleted");
    Ok(Action::await_change())
}
