//! The `WorkloadRebalancer` controller: marks each workload's binding for
//! a division from scratch (annotation `work.flotilla.io/rebalance`, field
//! manager `flotilla-rebalancer`), reports each result once the binder
//! recorded the token (`flotilla_apps_core::rebalance`), and deletes the
//! rebalancer `ttlSecondsAfterFinished` after it finished.

use std::sync::Arc;
use std::time::Duration;

use flotilla_api::rebalancer::WorkloadRebalancer;
use flotilla_api::work::keys;
use flotilla_apps_core::binding::binding_name;
use flotilla_apps_core::rebalance::{self, BindingState};
use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use serde_json::json;

use super::index::TemplateKey;
use super::state::Apps;
use crate::error::Error;

/// Field manager of the rebalance annotation and the rebalancers' status.
const MANAGER: &str = "flotilla-rebalancer";

pub(super) async fn run(apps: Arc<Apps>) {
    // Bindings read from a cache that has not listed yet would look missing.
    apps.wait_ready().await;
    let rebalancers: Api<WorkloadRebalancer> = Api::all(apps.client.clone());
    Controller::new(rebalancers, watcher::Config::default())
        .run(|o, c| flotilla_metrics::reconcile("workload-rebalancer", o, c, reconcile), error_policy, apps)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "rebalancer reconcile failed");
            }
        })
        .await;
}

fn error_policy(rebalancer: Arc<WorkloadRebalancer>, error: &Error, _: Arc<Apps>) -> Action {
    tracing::warn!(rebalancer = %rebalancer.name_any(), %error, "rebalancer reconcile failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

async fn reconcile(rebalancer: Arc<WorkloadRebalancer>, apps: Arc<Apps>) -> Result<Action, Error> {
    let name = rebalancer.name_any();
    let now = Timestamp::now();
    let created = rebalancer.metadata.creation_timestamp.as_ref().map_or(now, |t| t.0);
    let token = rebalance::token(created, &name);
    let keys: Vec<TemplateKey> = rebalancer
        .spec
        .workloads
        .iter()
        .map(|w| TemplateKey {
            api_version: w.api_version.clone(),
            kind: w.kind.clone(),
            namespace: w.namespace.clone(),
            name: w.name.clone(),
        })
        .collect();
    let found: Vec<Option<(Option<String>, String)>> = keys
        .iter()
        .map(|key| {
            apps.with_binding(key, |spec, _, meta| {
                let requested = meta.annotations.as_ref().and_then(|a| a.get(keys::REBALANCE)).cloned();
                (requested, spec.rebalanced.clone())
            })
        })
        .collect();
    let states: Vec<BindingState> = found
        .iter()
        .map(|f| match f {
            Some((requested, rebalanced)) => {
                BindingState::Present { requested: requested.as_deref(), rebalanced }
            }
            None => BindingState::Missing,
        })
        .collect();
    let plan = rebalance::plan(
        &rebalancer.spec.workloads,
        &states,
        rebalancer.status.as_ref(),
        &token,
        rebalancer.metadata.generation,
        rebalancer.spec.ttl_seconds_after_finished,
        now,
    );
    let api: Api<WorkloadRebalancer> = Api::all(apps.client.clone());
    if plan.delete {
        tracing::info!(rebalancer = %name, "finished and past its ttl: deleting");
        api.delete(&name, &DeleteParams::default()).await?;
        return Ok(Action::await_change());
    }
    for &i in &plan.mark {
        mark(&apps, &keys[i], &token).await?;
    }
    if rebalancer.status.as_ref() != Some(&plan.status) {
        let status = json!({"status": plan.status});
        let params = PatchParams { field_manager: Some(MANAGER.into()), ..Default::default() };
        api.patch_status(&name, &params, &Patch::Merge(&status)).await?;
    }
    Ok(plan.requeue_after.map_or_else(Action::await_change, Action::requeue))
}

/// Asks the binder to divide the template's binding from scratch.
async fn mark(apps: &Apps, key: &TemplateKey, token: &str) -> Result<(), Error> {
    let name = binding_name(&key.api_version, &key.kind, &key.name);
    let annotation = json!({"metadata": {"annotations": {keys::REBALANCE: token}}});
    let params = PatchParams { field_manager: Some(MANAGER.into()), ..Default::default() };
    // A merge patch of metadata only: a binding deleted meanwhile is not
    // created again half-empty.
    let patch = Patch::Merge(&annotation);
    if key.namespace.is_empty() {
        let api: Api<flotilla_api::work::ClusterResourceBinding> = Api::all(apps.client.clone());
        api.patch(&name, &params, &patch).await?;
    } else {
        let api: Api<flotilla_api::work::ResourceBinding> =
            Api::namespaced(apps.client.clone(), &key.namespace);
        api.patch(&name, &params, &patch).await?;
    }
    tracing::info!(template = %key, %token, "binding marked for a division from scratch");
    Ok(())
}
