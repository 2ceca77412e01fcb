//! On-demand EtcdBackups (process runtime): a one-shot component on the
//! destination Machine runs `etcdctl snapshot save` against a healthy
//! member with the cluster's client certificate; its exit, read from the
//! Machine's component status, becomes the backup's outcome, and then the
//! component is removed again (the snapshot file, outside the component's
//! working directory, stays). A Failed backup is not retried: create a new
//! EtcdBackup.

use std::sync::Arc;
use std::time::Duration;

use flotilla_api::kok::{EtcdBackup, EtcdCluster, JobPhase};
use flotilla_api::machine::Machine;
use flotilla_core::kok::etcd as plan;
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::{watcher, Controller};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::etcd::EtcdOperator;
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
        .run(reconcile, error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "etcd backup reconcile failed");
            }
        })
        .await;
    Ok(())
}

fn error_policy(backup: Arc<EtcdBackup>, error: &Error, _: Arc<Ctx>) -> Action {
    tracing::warn!(backup = %backup.name_any(), error = %error, "etcd backup reconcile failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

async fn reconcile(backup: Arc<EtcdBackup>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let name = backup.name_any();
    let namespace = backup.namespace().unwrap_or_default();
    let machine = backup.spec.destination.machine.clone();
    let machines: Api<Machine> = Api::all(ctx.client.clone());
    let destination = machines.get_opt(&machine).await?;
    let cluster =
        Api::<EtcdCluster>::namespaced(ctx.client.clone(), &namespace).get_opt(&backup.spec.cluster).await?;
    let now = Time(Timestamp::now());
    let step = plan::backup_plan(&backup, cluster.as_ref(), destination.as_ref(), &ctx.config.plan, now);
    let manager = plan::backup_field_manager(&namespace, &name);
    if let Some(component) = &step.run {
        let body = json!({
            "apiVersion": "kok.flotilla.io/v1alpha1", "kind": "Machine",
            "metadata": {"name": machine},
            "spec": {"components": [component]},
        });
        machines.patch(&machine, &PatchParams::apply(&manager).force(), &Patch::Apply(&body)).await?;
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
    }
    // Only once the outcome is recorded: the component's status is its
    // only record.
    if step.release {
        let component = plan::backup_component_name(&namespace, &name);
        crate::etcd::release_machine(&machines, &manager, &machine, &component).await?;
        tracing::info!(backup = %name, machine = %machine, "etcd snapshot component removed");
    }
    let finished = matches!(step.status.phase, Some(JobPhase::Succeeded | JobPhase::Failed));
    Ok(if finished && !step.release {
        Action::await_change()
    } else {
        Action::requeue(Duration::from_secs(1))
    })
}
