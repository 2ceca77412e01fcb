//! The binder's Works step: one Work per chosen cluster, with the overrides
//! that apply there, written when its hash changed. A division changes in
//! steps (`failover::next_step`); under a rollout strategy each cluster
//! gets the revision its wave is on (`rollouts`), a dependency the one its
//! requirers have (`rollout_deps`). Then the Works no longer wanted are
//! deleted (`apps_core::work_removal`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use flotilla_api::policy::{Placement, ReplicaSchedulingType};
use flotilla_api::work::{keys, TargetCluster};
use flotilla_apps_core::app_failover;
use flotilla_apps_core::binding::binding_name;
use flotilla_apps_core::failover;
use flotilla_apps_core::interpreter as interpreted;
use flotilla_apps_core::overrides::OverrideError;
use flotilla_apps_core::revision::RevisionContent;
use flotilla_apps_core::selection::{applicable_overrides, OverrideCandidate};
use flotilla_apps_core::suspension::dispatch_suspended;
use flotilla_apps_core::work_content::{work_content, WorkContent};
use flotilla_apps_core::work_removal::works_to_delete;
use kube::ResourceExt;
use serde_json::Value;

use super::binder_binding::{dependency_key, Bound};
use super::binder_outcome::record;
use super::binder_pass::{Pass, Requeue};
use super::binder_writes::{delete_work, write_work};
use super::rollouts::Given;
use super::work_state::{work_settled, written_replicas};
use crate::error::Error;

/// How often a binding whose replicas are moving looks at its works.
const MOVE_RECHECK: Duration = Duration::from_secs(2);

fn divided(placement: &Placement) -> bool {
    placement
        .replica_scheduling
        .as_ref()
        .is_some_and(|rs| rs.replica_scheduling_type.unwrap_or_default() == ReplicaSchedulingType::Divided)
}

/// Works: one per chosen cluster; clusters being evicted keep theirs.
pub(super) async fn write_works(pass: &Pass<'_>, bound: &Bound, requeue: &mut Requeue) -> Result<(), Error> {
    let (apps, key, decision, inputs) = (pass.apps, pass.key, &pass.claim.decision, &pass.inputs);
    let template = &pass.template;
    let meta = template.meta(key);
    let clusters = &bound.clusters;
    let overrides = super::override_candidates::override_candidates(apps, &meta);
    let candidates: Vec<OverrideCandidate> = overrides
        .iter()
        .map(|(scope, ns, name, spec)| OverrideCandidate { scope: *scope, namespace: ns, name, spec })
        .collect();
    let applicable = applicable_overrides(&meta, &candidates);
    let cluster_labels: BTreeMap<String, BTreeMap<String, String>> =
        inputs.view.clusters.iter().map(|s| (s.name.clone(), s.labels.clone())).collect();
    let bname = binding_name(&key.api_version, &key.kind, &key.name);
    let no_labels = BTreeMap::new();
    let mut override_errors = Vec::new();
    let mut too_large = Vec::new();
    let mut writes = Vec::new();
    let moving_replicas = inputs.replicas.is_some() && divided(&decision.placement);
    let steps = division_steps(pass, bound, moving_replicas);
    if &steps != clusters {
        tracing::debug!(template = %key, ?steps, target = ?clusters, "replicas moving");
        requeue.sooner(Some(MOVE_RECHECK));
    }
    let mut given = revisions(pass, bound, &applicable).await?;
    if let Some(after) = given.as_ref().and_then(|g| g.requeue) {
        requeue.sooner(Some(after));
    }
    let base = flotilla_apps_core::workload::prepare_for_member(&template.json);
    let source = Source { base, applicable: &applicable, given: given.as_ref(), moving_replicas };
    for (target, step) in clusters.iter().zip(&steps) {
        if dispatch_suspended(decision.suspension.as_ref(), &target.name)
            || source.given.is_some_and(|g| g.holds(&target.name))
        {
            continue;
        }
        let labels = cluster_labels.get(&target.name).unwrap_or(&no_labels);
        match planned_work(pass, bound, &source, target, step, labels) {
            Planned::Current => {}
            Planned::OverrideFailed(message) => override_errors.push(message),
            Planned::TooLarge(message) => too_large.push(message),
            Planned::Write(work, revision) => writes.push(write_work(
                apps,
                key,
                &bname,
                &target.name,
                work.spec,
                work.hash,
                template.generation(),
                moving_replicas.then_some(step.replicas),
                revision,
                work.applied_overrides,
            )),
        }
    }
    apps.works_written(key, too_large, futures::future::join_all(writes).await)?;
    if let Some(given) = given.as_mut() {
        super::rollouts::report(apps, key, given).await?;
    }
    if !override_errors.is_empty() {
        record(apps, key, false, "OverrideFailed", &override_errors.join("; "), template.generation());
    }
    Ok(())
}

/// What one cluster's Work needs this pass.
enum Planned {
    /// The Work there is current.
    Current,
    /// An override failed: nothing half-overridden is shipped, the member
    /// keeps what it has.
    OverrideFailed(String),
    TooLarge(String),
    /// Write this Work (with the revision it carries).
    Write(WorkContent, Option<String>),
}

/// The Work `target` gets: its copy of the template with the overrides
/// that apply there and any failed-over copy's preserved state, unless
/// the Work there already has it.
fn planned_work(
    pass: &Pass<'_>,
    bound: &Bound,
    source: &Source<'_>,
    target: &TargetCluster,
    step: &TargetCluster,
    labels: &BTreeMap<String, String>,
) -> Planned {
    let decision = &pass.claim.decision;
    let copy = copy_for(pass, source, target, step, labels);
    let (revision, applied_overrides) = (copy.revision, copy.applied_overrides);
    let mut manifest = match copy.manifest {
        Ok(m) => m,
        Err(e) => return Planned::OverrideFailed(format!("{}: {e}", target.name)),
    };
    // A copy a failover moved here carries the failed copy's state.
    if let Some(state) = bound.preserved_states.iter().find(|p| p.cluster == target.name) {
        app_failover::inject_labels(&mut manifest, &state.labels);
    }
    let work = work_content(
        manifest,
        decision.conflict,
        decision.preserve,
        pass.template.interpreter(),
        revision.as_deref(),
        &applied_overrides,
    );
    let current = pass.inputs.works.get(&target.name);
    if current.is_some_and(|w| {
        w.annotations().get(keys::SPEC_HASH) == Some(&work.hash) && w.metadata.deletion_timestamp.is_none()
    }) {
        return Planned::Current;
    }
    if let Some(message) = flotilla_apps_core::binding_status::work_too_large(&target.name, &work.spec) {
        return Planned::TooLarge(message);
    }
    Planned::Write(work, revision)
}

/// A division changes in steps: new copies grow (within the surge) and
/// old ones shrink once those are healthy. Without a division, the target.
fn division_steps(pass: &Pass<'_>, bound: &Bound, moving_replicas: bool) -> Vec<TargetCluster> {
    let (works, clusters) = (&pass.inputs.works, &bound.clusters);
    if !moving_replicas {
        return clusters.clone();
    }
    let current: BTreeMap<String, i32> = works
        .iter()
        .filter(|(_, w)| w.metadata.deletion_timestamp.is_none())
        .map(|(c, w)| (c.clone(), written_replicas(w, clusters, c)))
        .collect();
    // A descheduled cluster's replicas above its cap are Pending anyway:
    // it shrinks without waiting to be healthy (it never would be).
    let settled: BTreeSet<String> = works
        .iter()
        .filter(|(_, w)| work_settled(w))
        .map(|(c, _)| c.clone())
        .chain(bound.caps.keys().cloned())
        .collect();
    let total = clusters.iter().map(|c| c.replicas).sum();
    failover::next_step(&current, clusters, &settled, pass.apps.failover.max_surge.limit(total))
}

/// Under a rollout strategy, each cluster gets the revision its wave is
/// on (a template without one changes everywhere at once). A suspended
/// application takes no rollout step either; clusters suspended one by
/// one are not gated (nothing is dispatched to them). A dependency
/// follows what its requirers were given.
async fn revisions(
    pass: &Pass<'_>,
    bound: &Bound,
    applicable: &[&OverrideCandidate<'_>],
) -> Result<Option<Given>, Error> {
    let (apps, key, decision, template) = (pass.apps, pass.key, &pass.claim.decision, &pass.template);
    let (meta, dependencies) = (template.meta(key), &bound.dependencies);
    let all_suspended = decision.suspension.as_ref().is_some_and(|s| s.dispatching == Some(true));
    if decision.policy.is_none() {
        let current = RevisionContent::of(&template.json, applicable);
        return Ok(super::rollout_deps::follow(apps, key, &current, &pass.claim.required_by));
    }
    if all_suspended {
        return Ok(None);
    }
    let mut content = RevisionContent::of(&template.json, applicable);
    interpreted::without_replicas(&mut content.manifest, template.interpreter());
    if !dependencies.is_empty() && super::rollouts::takes(apps, &meta) {
        content =
            content.with_dependencies(super::rollout_deps::kept(apps, &key.namespace, dependencies).await?);
    }
    let uid = template.object.metadata.uid.clone().unwrap_or_default();
    let suspended: BTreeSet<&str> = bound
        .clusters
        .iter()
        .map(|c| c.name.as_str())
        .filter(|c| dispatch_suspended(decision.suspension.as_ref(), c))
        .collect();
    let rollout_template = super::rollouts::Template {
        meta: &meta,
        uid: &uid,
        content,
        targets: &bound.clusters,
        works: &pass.inputs.works,
        suspended: &suspended,
    };
    let given = super::rollouts::plan(apps, key, rollout_template).await?;
    if given.is_some() {
        // Its dependencies follow what each cluster was just given.
        for dep in dependencies {
            apps.binder.add(dependency_key(key, dep));
        }
    }
    Ok(given)
}

/// What every cluster's copy of the template is made from.
struct Source<'a> {
    /// The member copy of the template (outside a rollout).
    base: Value,
    applicable: &'a [&'a OverrideCandidate<'a>],
    /// The revision each cluster is given, under a rollout strategy.
    given: Option<&'a Given>,
    /// The division moves in steps: each copy carries its step's replicas.
    moving_replicas: bool,
}

/// One cluster's copy of the template.
struct Copy {
    /// The manifest, or why an override could not be applied.
    manifest: Result<Value, OverrideError>,
    /// The revision it carries, under a rollout.
    revision: Option<String>,
    /// The override policies applied, in order.
    applied_overrides: Vec<String>,
}

/// `target`'s copy: its revision's content under a rollout, else the
/// template; with its step's replicas and the overrides that apply there.
fn copy_for(
    pass: &Pass<'_>,
    source: &Source<'_>,
    target: &TargetCluster,
    step: &TargetCluster,
    labels: &BTreeMap<String, String>,
) -> Copy {
    let interpreter = pass.template.interpreter();
    match source.given.and_then(|g| g.for_cluster(&target.name)) {
        Some((revision, content)) => {
            let replicas_here =
                if source.moving_replicas { Some(step.replicas) } else { pass.inputs.replicas };
            let mut manifest = content.render(&target.name, labels, replicas_here);
            if let (Ok(manifest), Some(replicas)) = (manifest.as_mut(), replicas_here) {
                // A custom kind's replicas live where its interpreter says.
                if interpreter.is_some() {
                    interpreted::set_replicas(manifest, replicas, interpreter);
                }
            }
            let applied_overrides = content.applied_overrides(&target.name, labels);
            Copy { manifest, revision: Some(revision.clone()), applied_overrides }
        }
        None => {
            let mut manifest = source.base.clone();
            if source.moving_replicas {
                interpreted::set_replicas(&mut manifest, step.replicas, interpreter);
            }
            let (cluster, applicable) = (target.name.as_str(), source.applicable);
            let applied =
                flotilla_apps_core::overrides::apply_overrides(&mut manifest, cluster, labels, applicable);
            let applied_overrides =
                flotilla_apps_core::applied_overrides::applied_overrides(cluster, labels, applicable);
            Copy { manifest: applied.map(|_| manifest), revision: None, applied_overrides }
        }
    }
}

/// Works no longer wanted (not chosen, not kept by an eviction task) are
/// deleted, except where the policy suspends dispatching
/// (`apps_core::work_removal`).
pub(super) async fn remove_unwanted(pass: &Pass<'_>, bound: &Bound) -> Result<(), Error> {
    let works = &pass.inputs.works;
    let existing: Vec<(&str, bool)> = works
        .iter()
        .map(|(cluster, w)| (cluster.as_str(), w.metadata.deletion_timestamp.is_some()))
        .collect();
    let suspension = pass.claim.decision.suspension.as_ref();
    for cluster in works_to_delete(&existing, &bound.clusters, &bound.tasks, suspension) {
        if let Some(work) = works.get(cluster) {
            delete_work(pass.apps, work).await?;
        }
    }
    Ok(())
}
