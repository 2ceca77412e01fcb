//! The binder's scheduling step: where the template's replicas go this
//! pass. Application failover first (`app_failover`: copies that leave,
//! clusters the scheduler must not choose), a return after failover, a
//! rebalance request or descheduling (`descheduler`); then the placement
//! under the `workloadAffinity` lock (`workload_groups`), one
//! `clusterAffinities` group after another (`affinity_groups`), kept when
//! nothing must move; a new cluster's view is checked first
//! (`fresh_clusters`). The outcome is recorded; dependencies follow the
//! templates that need them.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::time::Duration;

use flotilla_api::work::{
    keys, BindingAffinityGroups, DescheduledCluster, GracefulEvictionTask, TargetCluster,
};
use flotilla_apps_core::binding::{binding_name, keep_previous};
use flotilla_apps_core::deschedule::Descheduled;
use flotilla_apps_core::failover;
use flotilla_apps_core::placed_outcome::placed_outcome;
use flotilla_apps_core::scheduler::{
    describe_group, group_change_notice, schedule_groups, ClusterSnapshot, GroupDecision, Scheduled,
    SchedulingRequest, Unschedulable,
};
use flotilla_core::events::Notice;

use super::app_failover;
use super::binder_outcome::{describe, record};
use super::binder_pass::{Pass, Requeue, Step};
use super::index::lock;

/// Where the template goes, and what the binding records of how.
pub(super) struct Placed {
    /// The clusters chosen, with those of the templates needing this one.
    pub(super) clusters: Vec<TargetCluster>,
    /// The clusters before, less those application failover excludes.
    pub(super) previous: Vec<TargetCluster>,
    /// The application failovers that start now.
    pub(super) failovers_started: Vec<GracefulEvictionTask>,
    /// The most replicas each descheduled cluster keeps.
    pub(super) caps: BTreeMap<String, i32>,
    pub(super) descheduled: Vec<DescheduledCluster>,
    pub(super) rebalanced: String,
    pub(super) workload_groups: Option<BindingAffinityGroups>,
    /// The Event of a change of `clusterAffinities` group.
    pub(super) group_notice: Option<Notice>,
}

/// What the placement starts from, once failover, rebalancing and
/// descheduling spoke.
struct Ground<'p> {
    /// The policy suspends scheduling: what runs stays where it is.
    hold: bool,
    returning: failover::Return,
    app: app_failover::Step,
    /// The clusters the scheduler sees (less application failover's).
    scheduling: Cow<'p, [ClusterSnapshot]>,
    previous: Vec<TargetCluster>,
    /// A rebalance request not yet honoured.
    rebalance: Option<String>,
    descheduling: Descheduled,
    observed_group: Option<String>,
    workload_groups: Option<BindingAffinityGroups>,
    own_binding: String,
}

pub(super) async fn schedule(pass: &Pass<'_>, requeue: &mut Requeue) -> Step<Placed> {
    let (apps, key, decision) = (pass.apps, pass.key, &pass.claim.decision);
    let ground = ground(pass, requeue);
    let (mut descheduled, mut rebalanced) =
        pass.template.before().map(|s| (s.descheduled.clone(), s.rebalanced.clone())).unwrap_or_default();
    let mut group_now: Option<String> = None;
    let mut group_notice = None;
    let clusters: Vec<TargetCluster> = if decision.policy.is_some() {
        let (affinity_note, decision_by_group) = place(pass, &ground);
        if let Ok(s) = &decision_by_group.result {
            // A new cluster for this binding: is the view of it current?
            let view = &pass.inputs.view;
            if let Some(again) =
                super::fresh_clusters::recheck(apps, key, view, &s.clusters, &ground.previous).await?
            {
                return Ok(ControlFlow::Break(Some(again)));
            }
        }
        group_now = decision_by_group.affinity_name.clone();
        group_notice = group_change_notice(ground.observed_group.as_deref(), &decision_by_group);
        let group = describe_group(&decision_by_group, &decision.placement.cluster_affinities);
        match decision_by_group.result {
            Ok(s) => {
                descheduled = ground.descheduling.records.clone();
                rebalanced = ground.rebalance.clone().unwrap_or(rebalanced);
                scheduled(pass, &ground, s, &group, requeue).await
            }
            Err(u) => unschedulable(pass, &ground, u, &affinity_note, requeue),
        }
    } else {
        record(apps, key, true, "Dependency", &decision.follows, pass.template.generation());
        Vec::new()
    };
    let clusters = settle(pass, &ground, clusters, group_now);
    Ok(ControlFlow::Continue(Placed {
        clusters,
        previous: ground.previous,
        failovers_started: ground.app.started,
        caps: ground.descheduling.caps,
        descheduled,
        rebalanced,
        workload_groups: ground.workload_groups,
        group_notice,
    }))
}

/// Application failover, a return after failover, a rebalance request and
/// descheduling: what the placement starts from.
fn ground<'p>(pass: &'p Pass<'_>, requeue: &mut Requeue) -> Ground<'p> {
    let (apps, key, decision, inputs) = (pass.apps, pass.key, &pass.claim.decision, &pass.inputs);
    let returning = returning(pass, requeue);
    // Karmada's `suspension.scheduling`: what runs stays where it is.
    let hold = flotilla_apps_core::suspension::scheduling_suspended(decision.suspension.as_ref());
    let app = application_failover(pass, hold);
    requeue.sooner(app.requeue);
    for why in &app.held {
        tracing::warn!(template = %key, reason = %why, "application failover held");
    }
    let scheduling: Cow<'p, [ClusterSnapshot]> = if app.excluded.is_empty() {
        Cow::Borrowed(inputs.view.scheduling.as_slice())
    } else {
        Cow::Owned(
            inputs.view.scheduling.iter().filter(|c| !app.excluded.contains(&c.name)).cloned().collect(),
        )
    };
    let previous: Vec<TargetCluster> =
        inputs.previous.iter().filter(|c| !app.excluded.contains(&c.name)).cloned().collect();
    let (rebalance, descheduling) = rebalance_or_deschedule(pass, hold, &previous, &scheduling);
    requeue.sooner(descheduling.requeue_after);
    let observed_group = super::affinity_groups::observed(
        apps,
        key,
        pass.template.existing.as_ref().and_then(|(_, status, _)| status.as_ref()),
    );
    // workloadAffinity: the template's groups, judged against its
    // namespace's peers (namespaced templates only, as in Karmada).
    let workload_groups = flotilla_apps_core::workload_affinity::groups_of(
        decision.placement.workload_affinity.as_ref(),
        &pass.template.labels,
    )
    .filter(|_| !key.namespace.is_empty());
    let own_binding = binding_name(&key.api_version, &key.kind, &key.name);
    Ground {
        hold,
        returning,
        app,
        scheduling,
        previous,
        rebalance,
        descheduling,
        observed_group,
        workload_groups,
        own_binding,
    }
}

/// Whether replicas that failed over return to a cluster back for good
/// (and when to look again).
fn returning(pass: &Pass<'_>, requeue: &mut Requeue) -> failover::Return {
    let (apps, inputs) = (pass.apps, &pass.inputs);
    if !pass.claim.decision.return_after_failover {
        return failover::Return::No;
    }
    let returning = failover::should_return(
        &inputs.failed_over_before,
        &inputs.view.clusters,
        apps.failover.return_after,
        inputs.now,
    );
    if let failover::Return::CheckAfter(after) = returning {
        requeue.sooner(Some(after));
    }
    returning
}

/// A rebalance request not yet honoured divides from scratch once (and
/// forgets the caps); otherwise clusters that cannot schedule their
/// replicas are capped (descheduling).
fn rebalance_or_deschedule(
    pass: &Pass<'_>,
    hold: bool,
    previous: &[TargetCluster],
    scheduling: &[ClusterSnapshot],
) -> (Option<String>, Descheduled) {
    let (apps, inputs) = (pass.apps, &pass.inputs);
    let rebalance = pass.template.existing.as_ref().filter(|_| !hold).and_then(|(s, _, meta)| {
        let requested = meta.annotations.as_ref().and_then(|a| a.get(keys::REBALANCE));
        flotilla_apps_core::rebalance::pending(requested.map(String::as_str), &s.rebalanced).map(String::from)
    });
    let records_before = pass.template.before().map(|s| s.descheduled.clone()).unwrap_or_default();
    let descheduling = match rebalance {
        None if inputs.replicas.is_some() && !hold => super::descheduler::descheduling(
            apps,
            &pass.claim.decision.placement,
            previous,
            &records_before,
            &inputs.works,
            scheduling,
            inputs.now,
        ),
        _ => Default::default(),
    };
    (rebalance, descheduling)
}

/// Application failover: copies unhealthy past the policy's toleration
/// leave their clusters (for this template only), which the scheduler
/// then does not see while they are being evicted.
fn application_failover(pass: &Pass<'_>, hold: bool) -> app_failover::Step {
    let (apps, decision, inputs) = (pass.apps, &pass.claim.decision, &pass.inputs);
    let application = decision.failover.as_ref().and_then(|f| f.application.as_ref()).filter(|_| !hold);
    let mut app = app_failover::step(
        &apps.failover_clocks,
        pass.key,
        application,
        &inputs.previous,
        &inputs.tasks_before,
        (&inputs.works, &inputs.health),
        inputs.now,
    );
    if !app.started.is_empty() && decision.policy.is_some() {
        let resource = &pass.template.kind.resource;
        let probe = SchedulingRequest {
            placement: &decision.placement,
            replicas: inputs.replicas.unwrap_or(0),
            requests: &inputs.requests,
            node_constraints: &inputs.node_constraints,
            resource: Some((resource.api_version.as_str(), resource.plural.as_str())),
            previous: &[],
            caps: &Default::default(),
            now: inputs.now,
        };
        app_failover::hold_without_alternative(&mut app, &probe, &inputs.previous, &inputs.view.scheduling);
    }
    app
}

/// The placement: the previous clusters kept, or the groups scheduled.
/// Peers are read, scheduled and recorded under one lock (no await here),
/// so two workloads of one group scheduled at once see each other. Also
/// the note on the clusters `workloadAffinity` ruled out.
fn place(pass: &Pass<'_>, ground: &Ground<'_>) -> (String, GroupDecision) {
    let (apps, key, decision, inputs) = (pass.apps, pass.key, &pass.claim.decision, &pass.inputs);
    let mut decided = ground.workload_groups.as_ref().map(|_| lock(&apps.workload_groups));
    let (excluded, affinity_note) = super::workload_groups::exclusions(
        apps,
        decided.as_ref(),
        key,
        &ground.own_binding,
        ground.workload_groups.as_ref(),
        &inputs.view,
    );
    let scheduling_placement =
        flotilla_apps_core::workload_affinity::constrained(&decision.placement, &excluded);
    let resource = &pass.template.kind.resource;
    let request = SchedulingRequest {
        placement: &scheduling_placement,
        replicas: inputs.replicas.unwrap_or(0),
        requests: &inputs.requests,
        node_constraints: &inputs.node_constraints,
        resource: Some((resource.api_version.as_str(), resource.plural.as_str())),
        previous: if ground.rebalance.is_some() { &[] } else { ground.previous.as_slice() },
        caps: &ground.descheduling.caps,
        now: inputs.now,
    };
    let scheduling: &[ClusterSnapshot] = &ground.scheduling;
    // A cluster the replicas failed over from is back for good: take
    // the division the policy asks for again.
    let kept = match &ground.returning {
        _ if ground.hold => Some(None),
        failover::Return::Now(_) => None,
        _ if ground.rebalance.is_some() || !ground.app.started.is_empty() => None,
        _ => {
            pass.template.before().and_then(|s| keep_previous(&request, &s.placement, s.replicas, scheduling))
        }
    };
    let decision_by_group = match kept {
        Some(requeue_after) => GroupDecision {
            result: Ok(Scheduled { clusters: ground.previous.clone(), requeue_after }),
            affinity_name: ground
                .observed_group
                .clone()
                .filter(|_| !decision.placement.cluster_affinities.is_empty()),
            passed_over: Vec::new(),
        },
        // A rebalance starts again from the first clusterAffinities group.
        None => schedule_groups(
            &request,
            scheduling,
            ground.observed_group.as_deref(),
            ground.rebalance.is_some(),
        ),
    };
    if let (Some(groups), Some(d), Ok(s)) =
        (&ground.workload_groups, decided.as_mut(), &decision_by_group.result)
    {
        super::workload_groups::record(d, key, &ground.own_binding, groups, &s.clusters);
    }
    (affinity_note, decision_by_group)
}

/// Placed: the descheduling Events, the outcome recorded.
async fn scheduled(
    pass: &Pass<'_>,
    ground: &Ground<'_>,
    s: Scheduled,
    group: &str,
    requeue: &mut Requeue,
) -> Vec<TargetCluster> {
    let (apps, key, inputs) = (pass.apps, pass.key, &pass.inputs);
    requeue.sooner(s.requeue_after);
    let resource = &pass.template.kind.resource;
    super::descheduler::announce(apps, &pass.template.object, resource, &ground.descheduling.moves).await;
    let placed: Vec<String> = s.clusters.iter().map(|c| describe(c, inputs.replicas.is_some())).collect();
    let involved = ground.previous.iter().chain(&s.clusters).map(|c| c.name.as_str());
    let outcome = placed_outcome(&placed, group, ground.hold, inputs.view.disruption.reason_for(involved));
    record(apps, key, outcome.scheduled, outcome.reason, &outcome.message, pass.template.generation());
    if let failover::Return::Now(back) = &ground.returning {
        tracing::info!(template = %key, clusters = %back.join(","), placed = %placed.join(", "),
            "replicas return to clusters healthy again");
    }
    s.clusters
}

/// Nothing (better) fits: keep what runs, and say why.
fn unschedulable(
    pass: &Pass<'_>,
    ground: &Ground<'_>,
    u: Unschedulable,
    affinity_note: &str,
    requeue: &mut Requeue,
) -> Vec<TargetCluster> {
    requeue.sooner(Some(u.requeue_after.unwrap_or(Duration::from_secs(30))));
    let message = format!("{}{affinity_note}", u.message);
    record(pass.apps, pass.key, false, "NoClusterFit", &message, pass.template.generation());
    ground.previous.clone()
}

/// After the placement: a held failover said where people look, the group
/// in use kept, and the clusters of the templates that need this one.
fn settle(
    pass: &Pass<'_>,
    ground: &Ground<'_>,
    mut clusters: Vec<TargetCluster>,
    group_now: Option<String>,
) -> Vec<TargetCluster> {
    let (apps, key) = (pass.apps, pass.key);
    if !ground.app.held.is_empty() && pass.claim.decision.policy.is_some() {
        // Say why a copy that should fail over stays, where people look.
        let kept: Vec<String> =
            clusters.iter().map(|c| describe(c, pass.inputs.replicas.is_some())).collect();
        let why = format!("kept on {}: {}", kept.join(", "), ground.app.held.join("; "));
        record(apps, key, true, "ApplicationFailoverHeld", &why, pass.template.generation());
    }
    if super::affinity_groups::set(apps, key, group_now) {
        apps.status.add(key.clone());
    }
    // Dependencies follow the templates that need them.
    for needed in pass.claim.required_by.iter().flat_map(|b| b.clusters.iter()) {
        if !clusters.iter().any(|c| &c.name == needed) {
            clusters.push(TargetCluster { name: needed.clone(), replicas: 0 });
        }
    }
    clusters.sort();
    clusters
}
