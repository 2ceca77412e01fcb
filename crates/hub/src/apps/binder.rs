//! The binder: for one template, pick its policy, choose its clusters
//! (scheduler in `flotilla-core`), write its binding and one Work per
//! cluster with overrides applied, and remove what is no longer wanted.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use flotilla_api::policy::{ConflictResolution, Placement, ReplicaSchedulingType};
use flotilla_api::work::{
    keys, BindingSnapshot, BindingSpec, Health, ObjectReference, PolicyReference, ResourceBinding,
    TargetCluster, Work,
};
use flotilla_apps_core::binding::{binding_name, keep_previous, plan_evictions, spec_hash};
use flotilla_apps_core::binding_events::binding_events;
use flotilla_apps_core::failover;
use flotilla_apps_core::interpreter as interpreted;
use flotilla_apps_core::revision::RevisionContent;
use flotilla_apps_core::scheduler::{
    describe_group, group_change_notice, schedule_groups, SchedulingRequest,
};
use flotilla_apps_core::selection::{
    applicable_overrides, pick_propagation_policy, OverrideCandidate, PolicyCandidate, PolicyScope,
    TemplateMeta,
};
use flotilla_apps_core::suspension::dispatch_suspended;
use kube::api::DynamicObject;
use kube::{Api, ResourceExt};
use serde_json::json;

use super::binder_writes::{cleanup, delete_work, write_binding, write_work};
use super::index::{lock, work_step, TemplateKey};
use super::state::Apps;
use crate::error::Error;
use flotilla_apps_core::binding_status::Outcome;

pub(super) async fn worker(apps: Arc<Apps>) {
    apps.wait_ready().await;
    apps.wait_policies_judged().await;
    loop {
        let key = apps.binder.next().await;
        let started = std::time::Instant::now();
        let object = flotilla_metrics::ObjectKey::new(Some(&key.namespace), &key.name);
        let result = flotilla_metrics::observe("binder", &object, reconcile(&apps, &key)).await;
        if let Some(after) = apps.bound(&key, result) {
            apps.binder.add_after(key.clone(), after);
        }
        tracing::debug!(template = %key, elapsed_ms = started.elapsed().as_millis() as u64, "bound");
        apps.binder.done(&key);
    }
}

fn divided(placement: &Placement) -> bool {
    placement
        .replica_scheduling
        .as_ref()
        .is_some_and(|rs| rs.replica_scheduling_type.unwrap_or_default() == ReplicaSchedulingType::Divided)
}

/// The policy (or dependents) that decide a template's fate.
struct Decision {
    policy: Option<PolicyReference>,
    placement: Placement,
    propagate_deps: bool,
    conflict: ConflictResolution,
    preserve: bool,
    /// Replicas go back to a cluster they failed over from once it is
    /// healthy again (the policy may opt out).
    return_after_failover: bool,
    /// The policy's suspension: no Work written or deleted where it holds.
    suspension: Option<flotilla_api::policy::Suspension>,
}

async fn reconcile(apps: &Apps, key: &TemplateKey) -> Result<Option<Duration>, Error> {
    let Some(kind) = apps.kind(&key.api_version, &key.kind) else {
        // Its kind is not watched (yet): a policy for it appears first.
        return Ok(Some(Duration::from_secs(2)));
    };
    let api: Api<DynamicObject> = if kind.namespaced {
        Api::namespaced_with(apps.client.clone(), &key.namespace, &kind.resource)
    } else {
        Api::all_with(apps.client.clone(), &kind.resource)
    };
    let existing = apps.binding_status(key);
    let template = match api.get_opt(&key.name).await? {
        Some(t) if t.metadata.deletion_timestamp.is_none() => t,
        _ => {
            // The binding may be gone already (garbage-collected with the
            // template); the works are found by label either way.
            cleanup(apps, key, existing.as_ref().map(|(s, _, _)| s)).await?;
            return Ok(None);
        }
    };
    let mut template_json = serde_json::to_value(&template)?;
    if let Some(o) = template_json.as_object_mut() {
        o.insert("apiVersion".into(), key.api_version.clone().into());
        o.insert("kind".into(), key.kind.clone().into());
    }
    // A custom kind's WorkloadInterpreter (none for built-in kinds).
    let interpreter = apps.interpreter(&key.api_version, &key.kind);
    let interpreter = interpreter.as_ref();
    let labels = template.metadata.labels.clone().unwrap_or_default();
    let meta = TemplateMeta {
        api_version: &key.api_version,
        kind: &key.kind,
        namespace: &key.namespace,
        name: &key.name,
        labels: &labels,
    };

    let required_by = requirers(apps, key);
    if let Some(why) = super::opt_in::refusal(apps, key, &template, &required_by).await? {
        let reason = flotilla_apps_core::migration::REASON_NOT_OPTED_IN;
        record(apps, key, false, reason, &why, template.metadata.generation);
        return Ok(Some(super::opt_in::RECHECK));
    }
    let mut decision = match pick_policy(apps, &meta) {
        Some(d) => d,
        None if !required_by.is_empty() => Decision {
            policy: None,
            placement: Placement::default(),
            propagate_deps: false,
            conflict: ConflictResolution::Abort,
            preserve: false,
            return_after_failover: true,
            suspension: super::suspended::for_dependency(apps, &key.namespace, &required_by),
        },
        None => {
            match existing {
                // A dependency nothing needs any more: remove it.
                Some((spec, _, _)) if spec.policy.is_none() => cleanup(apps, key, Some(&spec)).await?,
                // No policy selects it any more: leave what runs alone.
                Some(_) => record(
                    apps,
                    key,
                    false,
                    "NoPolicy",
                    "no policy selects this template any more; its members keep what was applied \
                     (delete the template to remove it, or select it again)",
                    template.metadata.generation,
                ),
                None => {}
            }
            return Ok(None);
        }
    };

    // `flotilla release`: the works keep their objects when they go.
    decision.preserve |= flotilla_apps_core::migration::is_released(template.annotations());
    let divided_before = existing.as_ref().is_some_and(|(s, _, _)| s.replicas > 0);
    if let Some(why) = interpreted::missing(&template_json, interpreter, divided_before) {
        // Copying it whole now would give every member all the replicas:
        // keep the works as they are until the interpreter is back.
        record(apps, key, false, interpreted::REASON_INTERPRETER_MISSING, &why, template.metadata.generation);
        return Ok(None);
    }
    let replicas = interpreted::replicas(&template_json, interpreter);
    let requests = interpreted::replica_requirements(&template_json, interpreter);
    // Custom kinds' pods are unconstrained here: the interpreter gives requests only.
    let node_constraints = flotilla_apps_core::workload::node_constraints(&template_json);
    let previous: Vec<TargetCluster> =
        existing.as_ref().map(|(s, _, _)| s.clusters.clone()).unwrap_or_default();
    let view = apps.cluster_view();
    // The scheduler sees clusters whose failover is halted as keeping what
    // they run; everything else reads the clusters as they are.
    let snapshots = &view.clusters;
    let now = k8s_openapi::jiff::Timestamp::now();
    let mut requeue = None;
    let failed_over_before: Vec<String> =
        existing.as_ref().map(|(s, _, _)| s.failed_over_from.clone()).unwrap_or_default();
    let returning = if decision.return_after_failover {
        failover::should_return(&failed_over_before, snapshots, apps.failover.return_after, now)
    } else {
        failover::Return::No
    };
    if let failover::Return::CheckAfter(after) = returning {
        requeue = Some(after);
    }

    let works = apps.works_of(key);
    // A rebalance request divides from scratch once (and forgets the caps);
    // otherwise clusters that cannot schedule their replicas are capped.
    let rebalance = existing.as_ref().and_then(|(s, _, meta)| {
        let requested = meta.annotations.as_ref().and_then(|a| a.get(keys::REBALANCE));
        flotilla_apps_core::rebalance::pending(requested.map(String::as_str), &s.rebalanced).map(String::from)
    });
    let (records_before, rebalanced_before) =
        existing.as_ref().map(|(s, _, _)| (s.descheduled.clone(), s.rebalanced.clone())).unwrap_or_default();
    let descheduling = match rebalance {
        None if replicas.is_some() => super::descheduler::descheduling(
            apps,
            &decision.placement,
            &previous,
            &records_before,
            &works,
            &view.scheduling,
            now,
        ),
        _ => Default::default(),
    };
    requeue = [requeue, descheduling.requeue_after].into_iter().flatten().min();
    let (mut descheduled, mut rebalanced) = (records_before, rebalanced_before);
    let observed_group = super::affinity_groups::observed(
        apps,
        key,
        existing.as_ref().and_then(|(_, status, _)| status.as_ref()),
    );
    let mut group_now: Option<String> = None;
    let mut group_notice = None;
    // workloadAffinity: the template's groups, judged against its
    // namespace's peers (namespaced templates only, as in Karmada).
    let workload_groups = flotilla_apps_core::workload_affinity::groups_of(
        decision.placement.workload_affinity.as_ref(),
        &labels,
    )
    .filter(|_| !key.namespace.is_empty());
    let own_binding = binding_name(&key.api_version, &key.kind, &key.name);
    let mut clusters: Vec<TargetCluster> = if decision.policy.is_some() {
        // Peers read, scheduled and recorded under one lock (no await in
        // this block).
        let (affinity_note, decision_by_group) = {
            let mut decided = workload_groups.as_ref().map(|_| lock(&apps.workload_groups));
            let (excluded, affinity_note) = super::workload_groups::exclusions(
                apps,
                decided.as_ref(),
                key,
                &own_binding,
                workload_groups.as_ref(),
                &view,
            );
            let scheduling_placement =
                flotilla_apps_core::workload_affinity::constrained(&decision.placement, &excluded);
            let request = SchedulingRequest {
                placement: &scheduling_placement,
                replicas: replicas.unwrap_or(0),
                requests: &requests,
                node_constraints: &node_constraints,
                resource: Some((kind.resource.api_version.as_str(), kind.resource.plural.as_str())),
                previous: if rebalance.is_some() { &[] } else { previous.as_slice() },
                caps: &descheduling.caps,
                now,
            };
            // A cluster the replicas failed over from is back for good: take
            // the division the policy asks for again.
            let kept = match &returning {
                failover::Return::Now(_) => None,
                _ if rebalance.is_some() => None,
                _ => existing.as_ref().and_then(|(s, _, _)| {
                    keep_previous(&request, &s.placement, s.replicas, &view.scheduling)
                }),
            };
            let decision_by_group = match kept {
                Some(requeue_after) => flotilla_apps_core::scheduler::GroupDecision {
                    result: Ok(flotilla_apps_core::scheduler::Scheduled {
                        clusters: previous.clone(),
                        requeue_after,
                    }),
                    affinity_name: observed_group
                        .clone()
                        .filter(|_| !decision.placement.cluster_affinities.is_empty()),
                    passed_over: Vec::new(),
                },
                // A rebalance starts again from the first clusterAffinities group.
                None => schedule_groups(
                    &request,
                    &view.scheduling,
                    observed_group.as_deref(),
                    rebalance.is_some(),
                ),
            };
            if let (Some(groups), Some(d), Ok(s)) =
                (&workload_groups, decided.as_mut(), &decision_by_group.result)
            {
                super::workload_groups::record(d, key, &own_binding, groups, &s.clusters);
            }
            (affinity_note, decision_by_group)
        };
        if let Ok(s) = &decision_by_group.result {
            // A new cluster for this binding: is the view of it current?
            if let Some(again) =
                super::fresh_clusters::recheck(apps, key, &view, &s.clusters, &previous).await?
            {
                return Ok(Some(again));
            }
        }
        group_now = decision_by_group.affinity_name.clone();
        group_notice = group_change_notice(observed_group.as_deref(), &decision_by_group);
        let group = describe_group(&decision_by_group);
        match decision_by_group.result {
            Ok(s) => {
                requeue = [requeue, s.requeue_after].into_iter().flatten().min();
                super::descheduler::announce(apps, &template, &kind.resource, &descheduling.moves).await;
                descheduled = descheduling.records;
                rebalanced = rebalance.unwrap_or(rebalanced);
                let placed: Vec<String> =
                    s.clusters.iter().map(|c| describe(c, replicas.is_some())).collect();
                let involved = previous.iter().chain(&s.clusters).map(|c| c.name.as_str());
                match view.disruption.reason_for(involved) {
                    Some(why) => record(
                        apps,
                        key,
                        true,
                        "FailoverHalted",
                        &format!("kept on {}{group}: {why}", placed.join(", ")),
                        template.metadata.generation,
                    ),
                    None => record(
                        apps,
                        key,
                        true,
                        "Scheduled",
                        &format!("placed on {}{group}", placed.join(", ")),
                        template.metadata.generation,
                    ),
                }
                if let failover::Return::Now(back) = &returning {
                    tracing::info!(template = %key, clusters = %back.join(","), placed = %placed.join(", "),
                        "replicas return to clusters healthy again");
                }
                s.clusters
            }
            Err(u) => {
                requeue = Some(
                    u.requeue_after.unwrap_or(Duration::from_secs(30)).min(requeue.unwrap_or(Duration::MAX)),
                );
                // Keep what runs; say why nothing (better) fits.
                let message = format!("{}{affinity_note}", u.message);
                record(apps, key, false, "NoClusterFit", &message, template.metadata.generation);
                previous.clone()
            }
        }
    } else {
        record(
            apps,
            key,
            true,
            "Dependency",
            "follows the templates that need it",
            template.metadata.generation,
        );
        Vec::new()
    };
    if super::affinity_groups::set(apps, key, group_now) {
        apps.status.add(key.clone());
    }
    // Dependencies follow the templates that need them.
    for needed in required_by.iter().flat_map(|b| b.clusters.iter()) {
        if !clusters.iter().any(|c| &c.name == needed) {
            clusters.push(TargetCluster { name: needed.clone(), replicas: 0 });
        }
    }
    clusters.sort();

    let health: BTreeMap<String, Health> = works.iter().map(|(c, w)| (c.clone(), work_health(w))).collect();
    let taints: BTreeMap<String, Vec<flotilla_api::cluster::Taint>> =
        snapshots.iter().map(|s| (s.name.clone(), s.taints.clone())).collect();
    let tasks_before =
        existing.as_ref().map(|(s, _, _)| s.graceful_eviction_tasks.clone()).unwrap_or_default();
    let tasks = plan_evictions(&previous, &clusters, &tasks_before, &taints, &health, now);
    let failed_over_from = failover::failed_over_from(&failed_over_before, &previous, &clusters, snapshots);
    if !tasks.is_empty() {
        // Re-check until the new copies are healthy or the grace ends.
        requeue = Some(requeue.map_or(Duration::from_secs(10), |r: Duration| r.min(Duration::from_secs(10))));
    }

    let dependencies: Vec<ObjectReference> = if decision.propagate_deps {
        interpreted::dependencies(&template_json, interpreter)
            .into_iter()
            .map(|d| ObjectReference {
                api_version: d.api_version,
                kind: d.kind,
                namespace: key.namespace.clone(),
                name: d.name,
                uid: String::new(),
            })
            .collect()
    } else {
        Vec::new()
    };
    let spec = BindingSpec {
        resource: ObjectReference {
            api_version: key.api_version.clone(),
            kind: key.kind.clone(),
            namespace: key.namespace.clone(),
            name: key.name.clone(),
            uid: template.metadata.uid.clone().unwrap_or_default(),
        },
        policy: decision.policy.clone(),
        replicas: replicas.unwrap_or(0),
        replica_requirements: (!requests.is_empty())
            .then(|| flotilla_api::work::ReplicaRequirements { resource_request: requests.clone() }),
        placement: decision.placement.clone(),
        propagate_deps: decision.propagate_deps,
        conflict_resolution: decision.conflict,
        preserve_resources_on_deletion: decision.preserve,
        suspension: decision.suspension.clone(),
        clusters: clusters.clone(),
        graceful_eviction_tasks: tasks.clone(),
        failed_over_from,
        required_by: required_by.clone(),
        dependencies: dependencies.clone(),
        descheduled,
        rebalanced,
        affinity_groups: workload_groups.clone(),
    };
    let dependencies_before: Vec<ObjectReference> =
        existing.as_ref().map(|(s, _, _)| s.dependencies.clone()).unwrap_or_default();
    if existing.as_ref().map(|(s, _, _)| s) != Some(&spec) {
        let binding = write_binding(apps, key, &template, &spec).await?;
        for notice in
            binding_events(existing.as_ref().map(|(s, _, _)| s), &spec).into_iter().chain(group_notice)
        {
            crate::events::publish(&apps.events.binder, &binding, &notice).await;
        }
        // Counted once written: a binding written again keeps its tasks
        // and records, which are then no longer new.
        let evictions = spec
            .graceful_eviction_tasks
            .iter()
            .filter(|t| !tasks_before.iter().any(|b| b.from_cluster == t.from_cluster));
        let failovers = spec.failed_over_from.iter().filter(|c| !failed_over_before.contains(c));
        flotilla_metrics::instruments().evictions.inc_by(evictions.count() as u64);
        flotilla_metrics::instruments().failovers.inc_by(failovers.count() as u64);
    }
    for dep in dependencies.iter().chain(dependencies_before.iter()) {
        apps.binder.add(TemplateKey {
            api_version: dep.api_version.clone(),
            kind: dep.kind.clone(),
            namespace: key.namespace.clone(),
            name: dep.name.clone(),
        });
    }

    // Works: one per chosen cluster; clusters being evicted keep theirs.
    let overrides = super::override_candidates::override_candidates(apps, &meta);
    let candidates: Vec<OverrideCandidate> = overrides
        .iter()
        .map(|(scope, ns, name, spec)| OverrideCandidate { scope: *scope, namespace: ns, name, spec })
        .collect();
    let applicable = applicable_overrides(&meta, &candidates);
    let base = flotilla_apps_core::workload::prepare_for_member(&template_json);
    let cluster_labels: BTreeMap<String, BTreeMap<String, String>> =
        snapshots.iter().map(|s| (s.name.clone(), s.labels.clone())).collect();
    let bname = binding_name(&key.api_version, &key.kind, &key.name);
    let mut override_errors = Vec::new();
    let mut too_large = Vec::new();
    let mut writes = Vec::new();
    let moving_replicas = replicas.is_some() && divided(&decision.placement);
    // A division changes in steps: new copies grow (within the surge) and
    // old ones shrink once those are healthy.
    let steps: Vec<TargetCluster> = if moving_replicas {
        let current: BTreeMap<String, i32> = works
            .iter()
            .filter(|(_, w)| w.metadata.deletion_timestamp.is_none())
            .map(|(c, w)| (c.clone(), written_replicas(w, &clusters, c)))
            .collect();
        // A descheduled cluster's replicas above its cap are Pending anyway:
        // it shrinks without waiting to be healthy (it never would be).
        let settled: BTreeSet<String> = works
            .iter()
            .filter(|(_, w)| work_settled(w))
            .map(|(c, _)| c.clone())
            .chain(descheduling.caps.keys().cloned())
            .collect();
        let total = clusters.iter().map(|c| c.replicas).sum();
        failover::next_step(&current, &clusters, &settled, apps.failover.max_surge.limit(total))
    } else {
        clusters.clone()
    };
    if steps != clusters {
        tracing::debug!(template = %key, ?steps, target = ?clusters, "replicas moving");
        requeue = Some(requeue.map_or(MOVE_RECHECK, |r: Duration| r.min(MOVE_RECHECK)));
    }
    // Under a rollout strategy, each cluster gets the revision its wave is
    // on (a template without one changes everywhere at once).
    // A suspended application takes no rollout step either; clusters
    // suspended one by one are not gated (nothing is dispatched to them).
    let all_suspended = decision.suspension.as_ref().is_some_and(|s| s.dispatching == Some(true));
    let mut given = if decision.policy.is_some() && !all_suspended {
        let mut content = RevisionContent::of(&template_json, &applicable);
        interpreted::without_replicas(&mut content.manifest, interpreter);
        if !dependencies.is_empty() && super::rollouts::takes(apps, &meta) {
            content = content
                .with_dependencies(super::rollout_deps::kept(apps, &key.namespace, &dependencies).await?);
        }
        let uid = template.metadata.uid.clone().unwrap_or_default();
        let suspended: BTreeSet<&str> = clusters
            .iter()
            .map(|c| c.name.as_str())
            .filter(|c| dispatch_suspended(decision.suspension.as_ref(), c))
            .collect();
        let template = super::rollouts::Template {
            meta: &meta,
            uid: &uid,
            content,
            targets: &clusters,
            works: &works,
            suspended: &suspended,
        };
        let given = super::rollouts::plan(apps, key, template).await?;
        if given.is_some() {
            // Its dependencies follow what each cluster was just given.
            for dep in &dependencies {
                apps.binder.add(TemplateKey {
                    api_version: dep.api_version.clone(),
                    kind: dep.kind.clone(),
                    namespace: key.namespace.clone(),
                    name: dep.name.clone(),
                });
            }
        }
        given
    } else if decision.policy.is_none() {
        let current = RevisionContent::of(&template_json, &applicable);
        super::rollout_deps::follow(apps, key, &current, &required_by)
    } else {
        None
    };
    if let Some(after) = given.as_ref().and_then(|g| g.requeue) {
        requeue = Some(requeue.map_or(after, |r: Duration| r.min(after)));
    }
    for (target, step) in clusters.iter().zip(&steps) {
        if dispatch_suspended(decision.suspension.as_ref(), &target.name)
            || given.as_ref().is_some_and(|g| g.holds(&target.name))
        {
            continue;
        }
        let empty = BTreeMap::new();
        let labels = cluster_labels.get(&target.name).unwrap_or(&empty);
        let (rendered, revision, applied_overrides) =
            match given.as_ref().and_then(|g| g.for_cluster(&target.name)) {
                Some((revision, content)) => {
                    let replicas_here = if moving_replicas { Some(step.replicas) } else { replicas };
                    let mut rendered = content.render(&target.name, labels, replicas_here);
                    if let (Ok(manifest), Some(replicas)) = (rendered.as_mut(), replicas_here) {
                        // A custom kind's replicas live where its interpreter says.
                        if interpreter.is_some() {
                            interpreted::set_replicas(manifest, replicas, interpreter);
                        }
                    }
                    (rendered, Some(revision.clone()), content.applied_overrides(&target.name, labels))
                }
                None => {
                    let mut manifest = base.clone();
                    if moving_replicas {
                        interpreted::set_replicas(&mut manifest, step.replicas, interpreter);
                    }
                    let applied = flotilla_apps_core::overrides::apply_overrides(
                        &mut manifest,
                        &target.name,
                        labels,
                        &applicable,
                    );
                    let names = flotilla_apps_core::applied_overrides::applied_overrides(
                        &target.name,
                        labels,
                        &applicable,
                    );
                    (applied.map(|_| manifest), None, names)
                }
            };
        let manifest = match rendered {
            Ok(m) => m,
            Err(e) => {
                // Do not ship a half-overridden object; keep what the member has.
                override_errors.push(format!("{}: {e}", target.name));
                continue;
            }
        };
        let mut work_spec = json!({
            "manifests": [manifest],
            "conflictResolution": decision.conflict,
            "preserveResourcesOnDeletion": decision.preserve,
        });
        // The agent judges a custom kind by its interpreter's health rule,
        // copied here (and part of the hash: a changed rule is re-sent).
        // Left out otherwise, so other Works keep their hash.
        let health_rules =
            interpreted::rules_for(&[&work_spec["manifests"][0]], &Vec::from_iter(interpreter));
        if !health_rules.is_empty() {
            work_spec["healthRules"] = json!(health_rules);
        }
        // The revision is part of what is written: a Work whose manifest is
        // the same in two revisions still says which one it carries.
        let hash = match &revision {
            Some(r) => spec_hash(&json!([work_spec, r])),
            None => spec_hash(&work_spec),
        };
        // The record of the overrides applied is part of it too (only when
        // there is one, so other Works keep their hash).
        let applied_overrides = flotilla_apps_core::applied_overrides::annotation_value(&applied_overrides);
        let hash = match &applied_overrides {
            Some(applied) => spec_hash(&json!([hash, applied])),
            None => hash,
        };
        let current = works.get(&target.name);
        if current.is_some_and(|w| {
            w.annotations().get(keys::SPEC_HASH) == Some(&hash) && w.metadata.deletion_timestamp.is_none()
        }) {
            continue;
        }
        if let Some(message) = flotilla_apps_core::binding_status::work_too_large(&target.name, &work_spec) {
            too_large.push(message);
            continue;
        }
        writes.push(write_work(
            apps,
            key,
            &bname,
            &target.name,
            work_spec,
            hash,
            template.metadata.generation,
            moving_replicas.then_some(step.replicas),
            revision,
            applied_overrides,
        ));
    }
    apps.works_written(key, too_large, futures::future::join_all(writes).await)?;
    if let Some(given) = given.as_mut() {
        super::rollouts::report(apps, key, given).await?;
    }
    if !override_errors.is_empty() {
        record(apps, key, false, "OverrideFailed", &override_errors.join("; "), template.metadata.generation);
    }

    // Works no longer wanted (not chosen, not kept by an eviction task).
    let keep: BTreeSet<&str> = clusters
        .iter()
        .map(|c| c.name.as_str())
        .chain(tasks.iter().map(|t| t.from_cluster.as_str()))
        .collect();
    for (cluster, work) in &works {
        if !keep.contains(cluster.as_str())
            && work.metadata.deletion_timestamp.is_none()
            && !dispatch_suspended(decision.suspension.as_ref(), cluster)
        {
            delete_work(apps, work).await?;
        }
    }
    apps.status.add(key.clone());
    Ok(requeue)
}

fn describe(c: &TargetCluster, has_replicas: bool) -> String {
    if has_replicas {
        format!("{} ({})", c.name, c.replicas)
    } else {
        c.name.clone()
    }
}

/// How often a binding whose replicas are moving looks at its works.
const MOVE_RECHECK: Duration = Duration::from_secs(2);

/// The replicas a work carries now: its step, or (a work written before
/// moves were stepped) the binding's division for its cluster.
fn written_replicas(work: &Work, division: &[TargetCluster], cluster: &str) -> i32 {
    work_step(work).or_else(|| division.iter().find(|t| t.name == cluster).map(|t| t.replicas)).unwrap_or(0)
}

/// Whether a work's member copy is what was last written and healthy.
fn work_settled(work: &Work) -> bool {
    let observed = work.status.as_ref().map(|s| s.observed_spec_hash.as_str());
    observed.is_some()
        && observed == work.annotations().get(keys::SPEC_HASH).map(String::as_str)
        && work_health(work) == Health::Healthy
}

/// Health of a work's first manifest (the template itself).
pub(super) fn work_health(w: &Work) -> Health {
    w.status
        .as_ref()
        .and_then(|s| s.manifest_statuses.iter().find(|m| m.identifier.ordinal == 0))
        .map(|m| if m.applied { m.health } else { Health::Unhealthy })
        .unwrap_or(Health::Unknown)
}

fn record(
    apps: &Apps,
    key: &TemplateKey,
    scheduled: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) {
    let mut outcomes = lock(&apps.outcomes);
    // The group in use is the scheduler's to change (`set_affinity_group`).
    let affinity_name = outcomes.get(key).and_then(|o| o.affinity_name.clone());
    let outcome =
        Outcome { scheduled, reason: reason.into(), message: message.into(), generation, affinity_name };
    let changed = outcomes.insert(key.clone(), outcome.clone()) != Some(outcome);
    drop(outcomes);
    if changed {
        apps.status.add(key.clone());
    }
}

fn pick_policy(apps: &Apps, meta: &TemplateMeta) -> Option<Decision> {
    let pps = apps.pps.state();
    let cpps = apps.cpps.state();
    let mut candidates: Vec<PolicyCandidate> = Vec::new();
    let pp_ns: Vec<(String, String)> =
        pps.iter().map(|p| (p.namespace().unwrap_or_default(), p.name_any())).collect();
    for (p, (ns, name)) in pps.iter().zip(&pp_ns) {
        if ns == meta.namespace && !apps.policy_is_invalid("PropagationPolicy", ns, name) {
            candidates.push(PolicyCandidate {
                scope: PolicyScope::Namespaced,
                namespace: ns,
                name,
                spec: &p.spec.spec,
            });
        }
    }
    let cpp_names: Vec<String> = cpps.iter().map(|p| p.name_any()).collect();
    for (p, name) in cpps.iter().zip(&cpp_names) {
        if !apps.policy_is_invalid("ClusterPropagationPolicy", "", name) {
            candidates.push(PolicyCandidate {
                scope: PolicyScope::Cluster,
                namespace: "",
                name,
                spec: &p.spec.spec,
            });
        }
    }
    let chosen = pick_propagation_policy(meta, &candidates)?;
    let spec = chosen.spec;
    let annotations = match chosen.scope {
        PolicyScope::Namespaced => pps
            .iter()
            .find(|p| p.namespace().as_deref() == Some(chosen.namespace) && p.name_any() == chosen.name)
            .map(|p| p.annotations().clone()),
        PolicyScope::Cluster => {
            cpps.iter().find(|p| p.name_any() == chosen.name).map(|p| p.annotations().clone())
        }
    }
    .unwrap_or_default();
    let return_after_failover =
        annotations.get(failover::RETURN_ANNOTATION).is_none_or(|v| !v.eq_ignore_ascii_case("false"));
    // The hub's default toleration of its own health taints, where the
    // policy does not say otherwise: a blip must not move anything.
    let mut placement = spec.placement.clone();
    placement.cluster_tolerations = failover::with_default_tolerations(
        &placement.cluster_tolerations,
        apps.failover.default_toleration_seconds,
    );
    Some(Decision {
        policy: Some(PolicyReference {
            kind: match chosen.scope {
                PolicyScope::Namespaced => "PropagationPolicy".into(),
                PolicyScope::Cluster => "ClusterPropagationPolicy".into(),
            },
            namespace: chosen.namespace.to_string(),
            name: chosen.name.to_string(),
        }),
        placement,
        propagate_deps: spec.propagate_deps,
        conflict: spec.conflict_resolution.unwrap_or_default(),
        preserve: spec.preserve_resources_on_deletion.unwrap_or(false),
        return_after_failover,
        suspension: spec.suspension.clone(),
    })
}

/// Bindings that need this template (propagateDeps), with their clusters
/// (including those still being evicted, whose copies still need it).
fn requirers(apps: &Apps, key: &TemplateKey) -> Vec<BindingSnapshot> {
    let names: Vec<String> =
        lock(&apps.dependents).get(key).map(|s| s.iter().cloned().collect()).unwrap_or_default();
    let mut out = Vec::new();
    for name in names {
        let r = kube::runtime::reflector::ObjectRef::<ResourceBinding>::new(&name).within(&key.namespace);
        let Some(b) = apps.bindings.get(&r) else { continue };
        let spec = &b.spec.spec;
        let depends = spec.dependencies.iter().any(|d| d.kind == key.kind && d.name == key.name);
        if !depends {
            continue;
        }
        let mut clusters: Vec<String> = spec
            .clusters
            .iter()
            .map(|c| c.name.clone())
            .chain(spec.graceful_eviction_tasks.iter().map(|t| t.from_cluster.clone()))
            .collect();
        clusters.sort();
        clusters.dedup();
        out.push(BindingSnapshot { name, clusters });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}
