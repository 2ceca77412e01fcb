//! Status back on the hub: each binding gets its per-cluster status from
//! its works, and the template gets the fleet-wide status (for workloads,
//! replica counts summed over the chosen clusters), so `kubectl get deploy`
//! on the hub shows the whole fleet.

use std::sync::Arc;
use std::time::Duration;

use flotilla_api::work::{
    conditions, keys, AggregatedStatusItem, BindingStatus, ClusterResourceBinding, Health, ResourceBinding,
    Work,
};
use flotilla_core::aggregate::{aggregate_status, MemberStatus};
use flotilla_core::binding::binding_name;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{DynamicObject, Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use super::{hash_of, lock, Apps, TemplateKey};
use crate::Error;

const MANAGER: &str = "flotilla-status";

pub(super) async fn worker(apps: Arc<Apps>) {
    apps.wait_ready().await;
    loop {
        let key = apps.status.next().await;
        if let Err(e) = reconcile(&apps, &key).await {
            tracing::debug!(template = %key, error = %e, "status aggregation failed; retrying");
            apps.status.add_after(key.clone(), Duration::from_secs(2));
        }
        apps.status.done(&key);
    }
}

fn condition(type_: &str, ok: bool, reason: &str, message: &str, previous: Option<&Condition>) -> Condition {
    let status = if ok { "True" } else { "False" };
    let since = previous
        .filter(|c| c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| Time(k8s_openapi::jiff::Timestamp::now()));
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: since,
        observed_generation: None,
    }
}

fn same(a: &[Condition], b: &[Condition]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.type_ == y.type_ && x.status == y.status && x.reason == y.reason && x.message == y.message
        })
}

/// One cluster's view of a work: applied?, why not, health, fed-back status,
/// and whether it reflects the current template.
fn cluster_item(
    cluster: &str,
    work: Option<&Arc<Work>>,
    template_generation: Option<i64>,
) -> (AggregatedStatusItem, bool) {
    let Some(work) = work else {
        let item = AggregatedStatusItem {
            cluster_name: cluster.into(),
            applied: false,
            applied_message: "the work is not written yet".into(),
            health: Health::Unknown,
            status: None,
        };
        return (item, false);
    };
    let status = work.status.as_ref();
    let applied_condition = status.and_then(|s| s.conditions.iter().find(|c| c.type_ == conditions::APPLIED));
    let applied = applied_condition.is_some_and(|c| c.status == "True");
    let message = match applied_condition {
        Some(c) if !applied => c.message.clone(),
        None => "waiting for the member's agent to apply it".into(),
        _ => String::new(),
    };
    let first = status.and_then(|s| s.manifest_statuses.iter().find(|m| m.identifier.ordinal == 0));
    let spec_hash = work.annotations().get(keys::SPEC_HASH).cloned().unwrap_or_default();
    let observed_spec = status.is_some_and(|s| s.observed_spec_hash == spec_hash);
    let built_from_current = template_generation.is_none_or(|g| {
        work.annotations().get(keys::TEMPLATE_GENERATION).and_then(|v| v.parse::<i64>().ok()) == Some(g)
    });
    let member_caught_up = first.is_some_and(|m| {
        let observed = m.status.as_ref().and_then(|s| s.get("observedGeneration")).and_then(|v| v.as_i64());
        match (m.generation, observed) {
            (Some(g), Some(o)) => o >= g,
            (Some(_), None) => false,
            _ => true,
        }
    });
    let item = AggregatedStatusItem {
        cluster_name: cluster.into(),
        applied,
        applied_message: message,
        health: if applied { first.map(|m| m.health).unwrap_or_default() } else { Health::Unknown },
        status: first.and_then(|m| m.status.clone()),
    };
    (item, applied && observed_spec && built_from_current && member_caught_up)
}

async fn reconcile(apps: &Apps, key: &TemplateKey) -> Result<(), Error> {
    let Some((spec, status, _meta)) = apps.binding_status(key) else { return Ok(()) };
    let works = apps.works_of(key);
    let generation = lock(&apps.seen).get(key).and_then(|s| s.generation);
    let mut items = Vec::new();
    let mut all_current = true;
    for target in &spec.clusters {
        let (item, current) = cluster_item(&target.name, works.get(&target.name), generation);
        all_current &= current;
        items.push(item);
    }

    let previous = status.clone().unwrap_or_default();
    let find = |t: &str| previous.conditions.iter().find(|c| c.type_ == t).cloned();
    let outcome = lock(&apps.outcomes).get(key).cloned();
    let scheduled = match outcome {
        Some(o) => condition(
            conditions::SCHEDULED,
            o.scheduled,
            &o.reason,
            &o.message,
            find(conditions::SCHEDULED).as_ref(),
        ),
        // The binder has not run since this process started: keep what the
        // binding says.
        None => match find(conditions::SCHEDULED) {
            Some(c) => c,
            None => return Ok(()),
        },
    };
    let not_applied: Vec<String> = items
        .iter()
        .filter(|i| !i.applied)
        .map(|i| format!("{}: {}", i.cluster_name, i.applied_message))
        .collect();
    let fully_applied = if spec.clusters.is_empty() {
        condition(
            conditions::FULLY_APPLIED,
            false,
            "NoCluster",
            "no cluster is chosen",
            find(conditions::FULLY_APPLIED).as_ref(),
        )
    } else if not_applied.is_empty() {
        condition(
            conditions::FULLY_APPLIED,
            true,
            "Applied",
            "applied in every chosen cluster",
            find(conditions::FULLY_APPLIED).as_ref(),
        )
    } else {
        condition(
            conditions::FULLY_APPLIED,
            false,
            "NotApplied",
            &not_applied.join("; "),
            find(conditions::FULLY_APPLIED).as_ref(),
        )
    };
    let wanted = BindingStatus {
        scheduler_observed_generation: outcome_generation(apps, key)
            .or(previous.scheduler_observed_generation),
        conditions: vec![scheduled, fully_applied],
        aggregated_status: items,
    };
    let unchanged = same(&wanted.conditions, &previous.conditions)
        && wanted.aggregated_status == previous.aggregated_status
        && wanted.scheduler_observed_generation == previous.scheduler_observed_generation;
    if !unchanged {
        write_binding_status(apps, key, &wanted).await?;
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
    let Some(fleet) = aggregate_status(&key.api_version, &key.kind, generation, all_current, &members) else {
        return Ok(());
    };
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

fn outcome_generation(apps: &Apps, key: &TemplateKey) -> Option<i64> {
    lock(&apps.outcomes).get(key).and_then(|o| o.generation)
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
