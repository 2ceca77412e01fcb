//! EtcdRestores: a restore creates a new EtcdCluster founded from the
//! snapshot file (`spec.restoreFrom`; the EtcdCluster operator's first
//! member restores it before it starts, the rest join as learners) and
//! reports Succeeded once that cluster runs. A restore of a prefixed
//! backup (one tenant's key dump) instead runs a one-shot `flotilla
//! etcd-keys load` on the Machine holding the dump, into the existing
//! `spec.target`, and removes it once its outcome is recorded. Decisions
//! in `flotilla_kok_core::etcd_restore`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use flotilla_api::kok::{EtcdBackup, EtcdCluster, EtcdRestore, EtcdRestoreStatus, JobPhase};
use flotilla_api::machine::Machine;
use flotilla_kok_core::etcd_restore::{self as plan, RestoreStep};
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::{watcher, Controller};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::etcd_operator::EtcdOperator;
use crate::machine_components::{release_machine, run_one_shot};
use crate::Error;

/// Field manager of the restores' status.
pub const FIELD_MANAGER: &str = "flotilla-etcd-restore";

struct Ctx {
    client: Client,
    config: EtcdOperator,
}

/// Reconciles every EtcdRestore until the watch ends.
pub async fn run(client: Client, config: EtcdOperator) -> Result<(), Error> {
    let restores: Api<EtcdRestore> = Api::all(client.clone());
    Controller::new(restores, watcher::Config::default())
        .run(
            |o, c| flotilla_metrics::reconcile("etcd-restore", o, c, reconcile),
            error_policy,
            Arc::new(Ctx { client, config }),
        )
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "etcd restore reconcile failed");
            }
        })
        .await;
    Ok(())
}

fn error_policy(restore: Arc<EtcdRestore>, error: &Error, _: Arc<Ctx>) -> Action {
    tracing::warn!(restore = %restore.name_any(), error = %error, "etcd restore reconcile failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

async fn reconcile(restore: Arc<EtcdRestore>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let client = &ctx.client;
    let name = restore.name_any();
    let namespace = restore.namespace().unwrap_or_default();
    let done =
        matches!(restore.status.as_ref().and_then(|s| s.phase), Some(JobPhase::Succeeded | JobPhase::Failed));
    let backup = match &restore.spec.backup {
        Some(b) => Api::<EtcdBackup>::namespaced(client.clone(), &namespace).get_opt(b).await?,
        None => None,
    };
    let prefixed = backup.as_ref().filter(|b| b.spec.prefix.is_some());
    // A finished prefixed restore may still have its load component to
    // remove; any other finished restore has nothing left to do.
    if done && prefixed.is_none() {
        return Ok(Action::await_change());
    }
    let clusters: Api<EtcdCluster> = Api::namespaced(client.clone(), &namespace);
    let target = clusters.get_opt(&restore.spec.target).await?;
    let step = match prefixed {
        Some(backup) => {
            let holder =
                Api::<Machine>::all(client.clone()).get_opt(&backup.spec.destination.machine).await?;
            plan::decide_keys(&restore, backup, target.as_ref(), holder.as_ref(), &ctx.config.plan)
        }
        None => {
            let source = match &backup {
                Some(b) => clusters.get_opt(&b.spec.cluster).await?,
                None => None,
            };
            plan::decide(&restore, backup.as_ref(), source.as_ref(), target.as_ref())
        }
    };
    match step {
        RestoreStep::Load { machine, component, status } => {
            let manager = plan::load_field_manager(&namespace, &name);
            run_one_shot(&Api::all(client.clone()), &manager, &machine, &component).await?;
            tracing::info!(restore = %name, machine = %machine, target = %restore.spec.target, "etcd key load started");
            report(client, &restore, status).await?;
            Ok(Action::requeue(Duration::from_secs(1)))
        }
        RestoreStep::Release { machine, status } => {
            report(client, &restore, status).await?;
            // Only once the outcome is recorded: the component's status is
            // its only record.
            let manager = plan::load_field_manager(&namespace, &name);
            let component = plan::load_component_name(&namespace, &name);
            release_machine(&Api::all(client.clone()), &manager, &machine, &component).await?;
            tracing::info!(restore = %name, machine = %machine, "etcd key load component removed");
            Ok(Action::await_change())
        }
        RestoreStep::Create(spec) => {
            let mut cluster = EtcdCluster::new(&restore.spec.target, spec);
            cluster.metadata.namespace = Some(namespace.clone());
            cluster.metadata.annotations =
                Some(BTreeMap::from([(plan::RESTORED_BY.to_string(), name.clone())]));
            match clusters.create(&PostParams::default(), &cluster).await {
                Ok(_) => {
                    tracing::info!(restore = %name, target = %restore.spec.target, "restoring into a new etcd cluster")
                }
                // Made by an earlier reconcile (or someone else: the next
                // reconcile tells which).
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
            Ok(Action::requeue(Duration::from_secs(1)))
        }
        RestoreStep::Report(status) => {
            let finished = report(client, &restore, status).await?;
            Ok(if finished { Action::await_change() } else { Action::requeue(Duration::from_secs(1)) })
        }
    }
}

/// Writes `status` when its phase or message changed (with the completion
/// time once finished); whether the restore is finished.
async fn report(
    client: &Client,
    restore: &EtcdRestore,
    mut status: EtcdRestoreStatus,
) -> Result<bool, Error> {
    let (name, namespace) = (restore.name_any(), restore.namespace().unwrap_or_default());
    let finished = matches!(status.phase, Some(JobPhase::Succeeded | JobPhase::Failed));
    if restore.status.as_ref().map(|s| (&s.phase, &s.message)) == Some((&status.phase, &status.message)) {
        return Ok(finished);
    }
    if finished && status.completed_at.is_none() {
        status.completed_at = Some(Time(Timestamp::now()));
    }
    let body = json!({
        "apiVersion": "kok.flotilla.io/v1alpha1", "kind": "EtcdRestore",
        "metadata": {"name": name, "namespace": namespace},
        "status": status,
    });
    Api::<EtcdRestore>::namespaced(client.clone(), &namespace)
        .patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body))
        .await?;
    tracing::info!(restore = %name, phase = ?status.phase, message = ?status.message, "etcd restore");
    Ok(finished)
}
