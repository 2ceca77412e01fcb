//! Status back on the hub: each binding gets its per-cluster status from
//! its works, and the template gets the fleet-wide status (for workloads,
//! replica counts summed over the chosen clusters), so `kubectl get deploy`
//! on the hub shows the whole fleet.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use flotilla_api::policy::{Placement, ReplicaSchedulingType};
use flotilla_api::work::{conditions, BindingStatus, ClusterResourceBinding, ResourceBinding, Work};
use flotilla_apps_core::aggregate::{aggregate_status, MemberStatus};
use flotilla_apps_core::binding::binding_name;
use flotilla_apps_core::binding_status::{self, Decided, Observed};
use flotilla_apps_core::suspension::{dispatching_condition, CONDITION_DISPATCHING};
use kube::api::{DynamicObject, Patch, PatchParams};
use kube::{Api, Resource};
use serde_json::json;

use super::index::{hash_of, lock, work_step, TemplateKey};
use super::state::{now, refusal, Apps};
use crate::error::Error;

const MANAGER: &str = "flotilla-status";

pub(super) async fn worker(apps: Arc<Apps>) {
    apps.wait_ready().await;
    loop {
        let key = apps.status.next().await;
        let object = flotilla_metrics::ObjectKey::new(Some(&key.namespace), &key.name);
        let result = flotilla_metrics::observe("status", &object, reconcile(&apps, &key)).await;
        let refused = match &result {
            Err(Error::Kube(e)) => refusal(e),
            _ => None,
        };
        match (result, refused) {
            (Ok(()), _) => {
                lock(&apps.status_refusals).remove(&key);
            }
            // The API server refuses what was written: retrying the same
            // write cannot help. Said once; the next change (or the
            // periodic resync) tries again.
            (Err(_), Some(message)) => {
                let before = lock(&apps.status_refusals).insert(key.clone(), message.clone());
                if before.as_ref() != Some(&message) {
                    tracing::warn!(template = %key, error = %message, "the hub's API server refused a status write");
                }
            }
            (Err(e), None) => {
                tracing::debug!(template = %key, error = %e, "status aggregation failed; retrying");
                apps.status.add_after(key.clone(), Duration::from_secs(2));
            }
        }
        apps.status.done(&key);
    }
}

/// How often every binding is bound again, and its status recomputed, even
/// when no event says so: whatever an event missed (a watch that broke and
/// came back, a race) is repaired within this time.
const RESYNC_BINDINGS: Duration = Duration::from_secs(300);
const RESYNC_STATUS: Duration = Duration::from_secs(30);

pub(super) async fn resync(apps: Arc<Apps>) {
    apps.wait_ready().await;
    let mut last_binding = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(RESYNC_STATUS).await;
        let bind = last_binding.elapsed() >= RESYNC_BINDINGS;
        if bind {
            last_binding = tokio::time::Instant::now();
        }
        for key in apps.binding_keys() {
            if bind || apps.scheduling_failed(&key) {
                apps.binder.add(key.clone());
            }
            apps.status.add(key);
        }
    }
}

fn divided(placement: &Placement) -> bool {
    placement
        .replica_scheduling
        .as_ref()
        .is_some_and(|rs| rs.replica_scheduling_type.unwrap_or_default() == ReplicaSchedulingType::Divided)
}

async fn reconcile(apps: &Apps, key: &TemplateKey) -> Result<(), Error> {
    let Some((spec, status, _meta)) = apps.binding_status(key) else { return Ok(()) };
    let works = apps.works_of(key);
    let generation = lock(&apps.seen).get(key).and_then(|s| s.generation);
    let previous = status.unwrap_or_default();
    let outcome = lock(&apps.outcomes).get(key).cloned();
    let refused = lock(&apps.refused).get(key).cloned();
    // The steps the binder wrote (Work annotations) against the division.
    let written: BTreeMap<String, i32> =
        works.iter().filter_map(|(c, w)| Some((c.clone(), work_step(w)?))).collect();
    let evicting: Vec<String> = spec.graceful_eviction_tasks.iter().map(|t| t.from_cluster.clone()).collect();
    let moving = flotilla_apps_core::failover::move_in_progress(&spec.clusters, &written, &evicting);
    let work_refs: BTreeMap<String, &Work> = works.iter().map(|(c, w)| (c.clone(), w.as_ref())).collect();
    let now = now();
    let observed = Observed {
        previous: &previous,
        outcome: outcome.as_ref(),
        clusters: &spec.clusters,
        works: &work_refs,
        template_generation: generation,
        divided_replicas: divided(&spec.placement).then_some(spec.replicas),
        refused: refused.as_ref().map(|(r, m)| (r.as_str(), m.as_str())),
        moving: moving.as_deref(),
    };
    let Some(Decided { status: mut wanted, all_current }) = binding_status::binding_status(&observed, &now)
    else {
        return Ok(());
    };
    // Whether dispatch is suspended (Karmada's `Dispatching` condition).
    let had = previous.conditions.iter().any(|c| c.type_ == CONDITION_DISPATCHING);
    if let Some(dispatching) = dispatching_condition(spec.suspension.as_ref(), had) {
        wanted.conditions.push(flotilla_core::conditions::condition(&previous.conditions, dispatching, &now));
    }
    if !binding_status::same_status(&wanted, &previous) {
        let result = write_binding_status(apps, key, &wanted).await;
        let refused = match &result {
            Err(Error::Kube(e)) => refusal(e),
            _ => None,
        };
        match (result, refused) {
            (Err(e), Some(message)) => {
                // Say so on the binding with what surely passes: the
                // conditions alone.
                if let Some(minimal) = binding_status::refused_status(&previous, &wanted, &message, &now) {
                    write_binding_status(apps, key, &minimal).await?;
                }
                return Err(e);
            }
            (result, _) => result?,
        }
    }

    // The template's own status, for the kinds Flotilla aggregates.
    let Some(kind) = apps.kind(&key.api_version, &key.kind) else { return Ok(()) };
    if !kind.has_status {
        return Ok(());
    }
    let members: Vec<MemberStatus> = wanted
        .aggregated_status
        .iter()
        .map(|i| MemberStatus { cluster: &i.cluster_name, status: i.status.as_ref() })
        .collect();
    // The binding's Healthy condition goes on the template too: where the
    // template is not healthy, and why, readable on the hub.
    let healthy = wanted.conditions.iter().find(|c| c.type_ == conditions::HEALTHY);
    let fleet = aggregate_status(&key.api_version, &key.kind, generation, all_current, &members, healthy)
        .or_else(|| {
            // A custom kind: the counts its WorkloadInterpreter names.
            let interpreter = apps.interpreter(&key.api_version, &key.kind)?;
            flotilla_apps_core::interpreter::aggregate_status(
                &interpreter,
                generation,
                all_current,
                &members,
                healthy,
            )
        });
    let Some(mut fleet) = fleet else {
        return Ok(());
    };
    if let Some(dispatching) = wanted.conditions.iter().find(|c| c.type_ == CONDITION_DISPATCHING) {
        let conditions = fleet.as_object_mut().map(|f| f.entry("conditions").or_insert_with(|| json!([])));
        if let Some(list) = conditions.and_then(|c| c.as_array_mut()) {
            list.push(flotilla_apps_core::fleet_health::template_condition(dispatching));
        }
    }
    let digest = hash_of(&fleet.to_string());
    if lock(&apps.written_status).get(key) == Some(&digest) {
        return Ok(());
    }
    let api: Api<DynamicObject> = if kind.namespaced {
        Api::namespaced_with(apps.client.clone(), &key.namespace, &kind.resource)
    } else {
        Api::all_with(apps.client.clone(), &kind.resource)
    };
    let mut metadata = json!({"name": key.name});
    if kind.namespaced {
        metadata["namespace"] = json!(key.namespace);
    }
    let body =
        json!({"apiVersion": key.api_version, "kind": key.kind, "metadata": metadata, "status": fleet});
    match api.patch_status(&key.name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&body)).await {
        Ok(_) => {
            lock(&apps.written_status).insert(key.clone(), digest);
        }
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

async fn write_binding_status(apps: &Apps, key: &TemplateKey, status: &BindingStatus) -> Result<(), Error> {
    let name = binding_name(&key.api_version, &key.kind, &key.name);
    let params = PatchParams::apply(MANAGER).force();
    let result = if key.namespace.is_empty() {
        let body = json!({
            "apiVersion": ClusterResourceBinding::api_version(&()), "kind": ClusterResourceBinding::kind(&()),
            "metadata": {"name": name}, "status": status,
        });
        Api::<ClusterResourceBinding>::all(apps.client.clone())
            .patch_status(&name, &params, &Patch::Apply(&body))
            .await
            .map(|_| ())
    } else {
        let body = json!({
            "apiVersion": ResourceBinding::api_version(&()), "kind": ResourceBinding::kind(&()),
            "metadata": {"name": name, "namespace": key.namespace}, "status": status,
        });
        Api::<ResourceBinding>::namespaced(apps.client.clone(), &key.namespace)
            .patch_status(&name, &params, &Patch::Apply(&body))
            .await
            .map(|_| ())
    };
    match result {
        Ok(()) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}
