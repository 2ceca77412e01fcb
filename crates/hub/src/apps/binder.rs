//! The binder: for one template, pick its policy, choose its clusters
//! (scheduler in `flotilla-core`), write its binding and one Work per
//! cluster with overrides applied, and remove what is no longer wanted.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use flotilla_api::policy::{Placement, ReplicaSchedulingType};
use flotilla_api::work::{
    keys, BindingSnapshot, BindingSpec, Health, ObjectReference, ResourceBinding, TargetCluster,
};
use flotilla_apps_core::app_failover;
use flotilla_apps_core::binding::{binding_name, keep_previous, plan_evictions_with, spec_hash};
use flotilla_apps_core::binding_events::binding_events;
use flotilla_apps_core::claim::{Activation, How};
use flotilla_apps_core::failover;
use flotilla_apps_core::interpreter as interpreted;
use flotilla_apps_core::revision::RevisionContent;
use flotilla_apps_core::scheduler::{
    describe_group, group_change_notice, schedule_groups, SchedulingRequest,
};
use flotilla_apps_core::selection::{applicable_overrides, OverrideCandidate, TemplateMeta};
use flotilla_apps_core::suspension::dispatch_suspended;
use kube::api::DynamicObject;
use kube::{Api, ResourceExt};
use serde_json::json;

use super::binder_writes::{
    binding_record, cleanup, delete_work, template_reference, write_claimed_binding, write_work,
};
use super::claims::{self, Decision};
use super::index::{lock, TemplateKey};
use super::state::Apps;
use super::work_state::{work_health, work_settled, written_replicas};
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

async fn reconcile(apps: &Apps, key: &TemplateKey) -> Result<Option<Duration>, Error> {
    let Some(kind) = apps.kind(&key.api_version, &key.kind) else {
        let gone = lock(&apps.kinds_gone).contains(&(key.api_version.clone(), key.kind.clone()));
        // Asked again: a copy removed for a kind served after all is lost work.
        if gone && !super::served::still_served(apps, &key.api_version, &key.kind).await {
            // Its CRD was deleted, and the template with it.
            let existing = apps.binding_status(key);
            cleanup(apps, key, existing.as_ref().map(|(s, _, _)| s)).await?;
            return Ok(None);
        }
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
        deleting => {
            // The binding may be gone already (garbage-collected with the
            // template); the works are found by label either way.
            cleanup(apps, key, existing.as_ref().map(|(s, _, _)| s)).await?;
            if let Some(t) = deleting {
                super::pvc_protection::lift_if_unused(apps, &api, key, &t).await?;
            }
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
    let claimed = existing.as_ref().and_then(|(s, _, _)| s.policy.clone());
    let mut lazy_record = None;
    let mut waiting = false;
    let mut decision = match claims::pick_policy(apps, &meta, claimed.as_ref()) {
        Some(mut picked) => {
            let priority = apps.queue_priority(picked.schedule_priority.as_ref());
            apps.binder.set_priority(key, Some(priority));
            if picked.how == How::Preempted {
                tracing::info!(template = %key, from = ?claimed, to = ?picked.decision.policy,
                    "a policy with preemption: Always took the template over");
            }
            let (activation, record) =
                claims::activate(&mut picked, &template.metadata, existing.as_ref().map(|(s, _, m)| (s, m)));
            lazy_record = record;
            waiting = activation == Activation::Wait;
            picked.decision
        }
        None if !required_by.is_empty() => {
            // It takes the settings of the templates that need it.
            let inherited = super::dependency_policy::for_dependency(apps, &key.namespace, &required_by);
            Decision {
                policy: None,
                placement: Placement::default(),
                propagate_deps: false,
                conflict: inherited.conflict_resolution,
                preserve: inherited.preserve_resources_on_deletion,
                return_after_failover: true,
                suspension: super::suspended::for_dependency(apps, &key.namespace, &required_by),
                follows: inherited.message,
                waiting_for: None,
                failover: None,
            }
        }
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

    if let Some(why) = decision.waiting_for.take() {
        // As in Karmada: nothing is applied (or removed) until they exist.
        let reason = flotilla_apps_core::dependent_overrides::REASON_WAITING;
        record(apps, key, false, reason, &why, template.metadata.generation);
        return Ok(Some(super::dependent_overrides::RECHECK));
    }
    if waiting {
        // A lazy policy claimed a template older than itself: nothing is
        // propagated until the template changes (Karmada's Lazy).
        let spec = BindingSpec {
            resource: template_reference(key, &template),
            policy: decision.policy.clone(),
            placement: decision.placement.clone(),
            ..Default::default()
        };
        let lazy_value = lazy_record.as_ref().map(|r| r.value());
        if existing.as_ref().map(|(s, _, m)| (s, binding_record(m))) != Some((&spec, lazy_value.clone())) {
            write_claimed_binding(apps, key, &template, &spec, lazy_value, decision.policy.as_ref()).await?;
        }
        record(
            apps,
            key,
            false,
            flotilla_apps_core::claim::REASON_WAITING,
            "the policy's activationPreference is Lazy and this template existed before it: it is \
             propagated when the template next changes",
            template.metadata.generation,
        );
        return Ok(None);
    }
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
    let health: BTreeMap<String, Health> = works.iter().map(|(c, w)| (c.clone(), work_health(w))).collect();
    let tasks_before =
        existing.as_ref().map(|(s, _, _)| s.graceful_eviction_tasks.clone()).unwrap_or_default();
    // Application failover: copies unhealthy past the policy's toleration
    // leave their clusters (for this template only), which the scheduler
    // then does not see while they are being evicted.
    // Karmada's `suspension.scheduling`: what runs stays where it is.
    let hold = flotilla_apps_core::suspension::scheduling_suspended(decision.suspension.as_ref());
    let application = decision.failover.as_ref().and_then(|f| f.application.as_ref()).filter(|_| !hold);
    let mut app = super::app_failover::step(
        &apps.failover_clocks,
        key,
        application,
        &previous,
        &tasks_before,
        (&works, &health),
        now,
    );
    if !app.started.is_empty() && decision.policy.is_some() {
        let probe = SchedulingRequest {
            placement: &decision.placement,
            replicas: replicas.unwrap_or(0),
            requests: &requests,
            node_constraints: &node_constraints,
            resource: Some((kind.resource.api_version.as_str(), kind.resource.plural.as_str())),
            previous: &[],
            caps: &Default::default(),
            now,
        };
        super::app_failover::hold_without_alternative(&mut app, &probe, &previous, &view.scheduling);
    }
    requeue = [requeue, app.requeue].into_iter().flatten().min();
    for why in &app.held {
        tracing::warn!(template = %key, reason = %why, "application failover held");
    }
    let filtered: Vec<flotilla_apps_core::scheduler::ClusterSnapshot>;
    let mut scheduling: &[flotilla_apps_core::scheduler::ClusterSnapshot] = &view.scheduling;
    if !app.excluded.is_empty() {
        filtered = view.scheduling.iter().filter(|c| !app.excluded.contains(&c.name)).cloned().collect();
        scheduling = &filtered;
    }
    let previous: Vec<TargetCluster> =
        previous.into_iter().filter(|c| !app.excluded.contains(&c.name)).collect();
    // A rebalance request divides from scratch once (and forgets the caps);
    // otherwise clusters that cannot schedule their replicas are capped.
    let rebalance = existing.as_ref().filter(|_| !hold).and_then(|(s, _, meta)| {
        let requested = meta.annotations.as_ref().and_then(|a| a.get(keys::REBALANCE));
        flotilla_apps_core::rebalance::pending(requested.map(String::as_str), &s.rebalanced).map(String::from)
    });
    let (records_before, rebalanced_before) =
        existing.as_ref().map(|(s, _, _)| (s.descheduled.clone(), s.rebalanced.clone())).unwrap_or_default();
    let descheduling = match rebalance {
        None if replicas.is_some() && !hold => super::descheduler::descheduling(
            apps,
            &decision.placement,
            &previous,
            &records_before,
            &works,
            scheduling,
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
                _ if hold => Some(None),
                failover::Return::Now(_) => None,
                _ if rebalance.is_some() || !app.started.is_empty() => None,
                _ => existing
                    .as_ref()
                    .and_then(|(s, _, _)| keep_previous(&request, &s.placement, s.replicas, scheduling)),
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
                None => schedule_groups(&request, scheduling, observed_group.as_deref(), rebalance.is_some()),
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
                let suspended =
                    hold.then(|| flotilla_apps_core::suspension::scheduling_suspended_outcome(&placed));
                let (scheduled, reason, message) = match (suspended, view.disruption.reason_for(involved)) {
                    (Some((scheduled, message)), _) => {
                        (scheduled, flotilla_apps_core::suspension::REASON_SCHEDULING_SUSPENDED, message)
                    }
                    (None, Some(why)) => {
                        (true, "FailoverHalted", format!("kept on {}{group}: {why}", placed.join(", ")))
                    }
                    (None, None) => (true, "Scheduled", format!("placed on {}{group}", placed.join(", "))),
                };
                record(apps, key, scheduled, reason, &message, template.metadata.generation);
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
        record(apps, key, true, "Dependency", &decision.follows, template.metadata.generation);
        Vec::new()
    };
    if !app.held.is_empty() && decision.policy.is_some() {
        // Say why a copy that should fail over stays, where people look.
        let kept: Vec<String> = clusters.iter().map(|c| describe(c, replicas.is_some())).collect();
        let why = format!("kept on {}: {}", kept.join(", "), app.held.join("; "));
        record(apps, key, true, "ApplicationFailoverHeld", &why, template.metadata.generation);
    }
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

    let taints: BTreeMap<String, Vec<flotilla_api::cluster::Taint>> =
        snapshots.iter().map(|s| (s.name.clone(), s.taints.clone())).collect();
    let eviction = super::app_failover::cluster_eviction(decision.failover.as_ref(), &previous, &works);
    let tasks_now: Vec<_> = tasks_before.iter().chain(&app.started).cloned().collect();
    let evictions = plan_evictions_with(&previous, &clusters, &tasks_now, &taints, &health, now, &eviction);
    let tasks = evictions.tasks;
    let started: Vec<_> = app.started.iter().chain(&evictions.started).cloned().collect();
    let preserved_before = existing.as_ref().map(|(s, _, _)| s.preserved_states.clone()).unwrap_or_default();
    let preserved_states = app_failover::carry_preserved_states(&preserved_before, &started, &clusters);
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
        resource: template_reference(key, &template),
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
        failover: decision.failover.clone(),
        preserved_states: preserved_states.clone(),
        affinity_groups: workload_groups.clone(),
    };
    let dependencies_before: Vec<ObjectReference> =
        existing.as_ref().map(|(s, _, _)| s.dependencies.clone()).unwrap_or_default();
    let lazy_value = lazy_record.as_ref().map(|r| r.value());
    if existing.as_ref().map(|(s, _, m)| (s, binding_record(m))) != Some((&spec, lazy_value.clone())) {
        let binding =
            write_claimed_binding(apps, key, &template, &spec, lazy_value, decision.policy.as_ref()).await?;
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
        let mut manifest = match rendered {
            Ok(m) => m,
            Err(e) => {
                // Do not ship a half-overridden object; keep what the member has.
                override_errors.push(format!("{}: {e}", target.name));
                continue;
            }
        };
        // A copy a failover moved here carries the failed copy's state.
        if let Some(state) = preserved_states.iter().find(|p| p.cluster == target.name) {
            app_failover::inject_labels(&mut manifest, &state.labels);
        }
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
