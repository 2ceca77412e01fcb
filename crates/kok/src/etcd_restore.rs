//! EtcdRestores: a restore creates a new EtcdCluster founded from the
//! snapshot file (`spec.restoreFrom`; the EtcdCluster operator's first
//! member restores it before it starts, the rest join as learners) and
//! reports Succeeded once that cluster runs. Decisions in
//! `flotilla_core::kok::etcd_restore`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use flotilla_api::kok::{EtcdBackup, EtcdCluster, EtcdRestore, JobPhase};
use flotilla_core::kok::etcd_restore::{self as plan, RestoreStep};
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::{watcher, Controller};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::Error;

/// Field manager of the restores' status.
pub const FIELD_MANAGER: &str = "flotilla-etcd-restore";

/// Reconciles every EtcdRestore until the watch ends.
pub async fn run(client: Client) -> Result<(), Error> {
    let restores: Api<EtcdRestore> = Api::all(client.clone());
    Controller::new(restores, watcher::Config::default())
        .run(reconcile, error_policy, Arc::new(client))
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "etcd restore reconcile failed");
            }
        })
        .await;
    Ok(())
}

fn error_policy(restore: Arc<EtcdRestore>, error: &Error, _: Arc<Client>) -> Action {
    tracing::warn!(restore = %restore.name_any(), error = %error, "etcd restore reconcile failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

async fn reconcile(restore: Arc<EtcdRestore>, client: Arc<Client>) -> Result<Action, Error> {
    let name = restore.name_any();
    let namespace = restore.namespace().unwrap_or_default();
    let done = restore.status.as_ref().and_then(|s| s.phase);
    if matches!(done, Some(JobPhase::Succeeded | JobPhase::Failed)) {
        return Ok(Action::await_change());
    }
    let clusters: Api<EtcdCluster> = Api::namespaced((*client).clone(), &namespace);
    let backup = match &restore.spec.backup {
        Some(b) => Api::<EtcdBackup>::namespaced((*client).clone(), &namespace).get_opt(b).await?,
        None => None,
    };
    let source = match &backup {
        Some(b) => clusters.get_opt(&b.spec.cluster).await?,
        None => None,
    };
    let target = clusters.get_opt(&restore.spec.target).await?;
    match plan::decide(&restore, backup.as_ref(), source.as_ref(), target.as_ref()) {
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
        RestoreStep::Report(mut status) => {
            let finished = matches!(status.phase, Some(JobPhase::Succeeded | JobPhase::Failed));
            if finished {
                status.completed_at = Some(Time(Timestamp::now()));
            }
            if restore.status.as_ref().map(|s| (&s.phase, &s.message))
                != Some((&status.phase, &status.message))
            {
                let body = json!({
                    "apiVersion": "kok.flotilla.io/v1alpha1", "kind": "EtcdRestore",
                    "metadata": {"name": name, "namespace": namespace},
                    "status": status,
                });
                Api::<EtcdRestore>::namespaced((*client).clone(), &namespace)
                    .patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body))
                    .await?;
                tracing::info!(restore = %name, phase = ?status.phase, message = ?status.message, "etcd restore");
            }
            Ok(if finished { Action::await_change() } else { Action::requeue(Duration::from_secs(1)) })
        }
    }
}
