//! The binder's binding step: the eviction tasks of clusters left (taint
//! evictions planned here, application failovers started by the
//! scheduling step), the states failovers carry, the dependencies, and the
//! binding's spec, written when it changed, with its Events (`Scheduled`,
//! `FailedOver`, `Evicting`, a group change) and the eviction and failover
//! counts. The dependencies (now and before) are bound again.

use std::collections::BTreeMap;
use std::time::Duration;

use flotilla_api::policy_failover::PreservedState;
use flotilla_api::work::{BindingSpec, GracefulEvictionTask, ObjectReference, TargetCluster};
use flotilla_apps_core::app_failover;
use flotilla_apps_core::binding::plan_evictions_with;
use flotilla_apps_core::binding_events::binding_events;
use flotilla_apps_core::failover;
use flotilla_apps_core::interpreter as interpreted;

use super::binder_pass::{Pass, Requeue};
use super::binder_schedule::Placed;
use super::binder_writes::{binding_record, template_reference, write_claimed_binding};
use super::index::TemplateKey;
use crate::error::Error;

/// What the Works step needs of the binding written.
pub(super) struct Bound {
    /// The clusters chosen (`Placed::clusters`).
    pub(super) clusters: Vec<TargetCluster>,
    /// The most replicas each descheduled cluster keeps.
    pub(super) caps: BTreeMap<String, i32>,
    /// Clusters being evicted: they keep their Works.
    pub(super) tasks: Vec<GracefulEvictionTask>,
    /// The states failovers carry to the clusters they moved to.
    pub(super) preserved_states: Vec<PreservedState>,
    pub(super) dependencies: Vec<ObjectReference>,
}

pub(super) async fn bind(pass: &Pass<'_>, placed: Placed, requeue: &mut Requeue) -> Result<Bound, Error> {
    let (apps, key, decision, inputs) = (pass.apps, pass.key, &pass.claim.decision, &pass.inputs);
    let (template, existing) = (&pass.template, &pass.template.existing);
    let Placed {
        clusters,
        previous,
        failovers_started,
        caps,
        descheduled,
        rebalanced,
        workload_groups,
        group_notice,
    } = placed;
    let (clusters, previous) = (clusters, &previous);
    let snapshots = &inputs.view.clusters;
    let taints: BTreeMap<String, Vec<flotilla_api::cluster::Taint>> =
        snapshots.iter().map(|s| (s.name.clone(), s.taints.clone())).collect();
    let eviction = super::app_failover::cluster_eviction(decision.failover.as_ref(), previous, &inputs.works);
    let tasks_now: Vec<_> = inputs.tasks_before.iter().chain(&failovers_started).cloned().collect();
    let evictions =
        plan_evictions_with(previous, &clusters, &tasks_now, &taints, &inputs.health, inputs.now, &eviction);
    let tasks = evictions.tasks;
    let started: Vec<_> = failovers_started.iter().chain(&evictions.started).cloned().collect();
    let preserved_before = template.before().map(|s| s.preserved_states.clone()).unwrap_or_default();
    let preserved_states = app_failover::carry_preserved_states(&preserved_before, &started, &clusters);
    let failed_over_from =
        failover::failed_over_from(&inputs.failed_over_before, previous, &clusters, snapshots);
    if !tasks.is_empty() {
        // Re-check until the new copies are healthy or the grace ends.
        requeue.sooner(Some(Duration::from_secs(10)));
    }

    let dependencies = dependencies(pass);
    let spec = BindingSpec {
        resource: template_reference(key, &template.object),
        policy: decision.policy.clone(),
        replicas: inputs.replicas.unwrap_or(0),
        replica_requirements: (!inputs.requests.is_empty())
            .then(|| flotilla_api::work::ReplicaRequirements { resource_request: inputs.requests.clone() }),
        placement: decision.placement.clone(),
        propagate_deps: decision.propagate_deps,
        conflict_resolution: decision.conflict,
        preserve_resources_on_deletion: decision.preserve,
        suspension: decision.suspension.clone(),
        clusters: clusters.clone(),
        graceful_eviction_tasks: tasks.clone(),
        failed_over_from,
        required_by: pass.claim.required_by.clone(),
        dependencies: dependencies.clone(),
        descheduled,
        rebalanced,
        failover: decision.failover.clone(),
        preserved_states: preserved_states.clone(),
        affinity_groups: workload_groups,
    };
    let dependencies_before: Vec<ObjectReference> =
        template.before().map(|s| s.dependencies.clone()).unwrap_or_default();
    let lazy_value = pass.claim.lazy_record.as_ref().map(|r| r.value());
    if existing.as_ref().map(|(s, _, m)| (s, binding_record(m))) != Some((&spec, lazy_value.clone())) {
        let binding =
            write_claimed_binding(apps, key, &template.object, &spec, lazy_value, decision.policy.as_ref())
                .await?;
        for notice in binding_events(template.before(), &spec).into_iter().chain(group_notice) {
            crate::events::publish(&apps.events.binder, &binding, &notice).await;
        }
        // Counted once written: a binding written again keeps its tasks
        // and records, which are then no longer new.
        let evictions = spec
            .graceful_eviction_tasks
            .iter()
            .filter(|t| !inputs.tasks_before.iter().any(|b| b.from_cluster == t.from_cluster));
        let failovers = spec.failed_over_from.iter().filter(|c| !inputs.failed_over_before.contains(c));
        flotilla_metrics::instruments().evictions.inc_by(evictions.count() as u64);
        flotilla_metrics::instruments().failovers.inc_by(failovers.count() as u64);
    }
    for dep in dependencies.iter().chain(dependencies_before.iter()) {
        apps.binder.add(dependency_key(key, dep));
    }
    Ok(Bound { clusters, caps, tasks, preserved_states, dependencies })
}

/// The template's dependencies, when its policy propagates them.
fn dependencies(pass: &Pass<'_>) -> Vec<ObjectReference> {
    if !pass.claim.decision.propagate_deps {
        return Vec::new();
    }
    interpreted::dependencies(&pass.template.json, pass.template.interpreter())
        .into_iter()
        .map(|d| ObjectReference {
            api_version: d.api_version,
            kind: d.kind,
            namespace: pass.key.namespace.clone(),
            name: d.name,
            uid: String::new(),
        })
        .collect()
}

/// The key of a dependency of `key`'s template (in its namespace).
pub(super) fn dependency_key(key: &TemplateKey, dep: &ObjectReference) -> TemplateKey {
    TemplateKey {
        api_version: dep.api_version.clone(),
        kind: dep.kind.clone(),
        namespace: key.namespace.clone(),
        name: dep.name.clone(),
    }
}
