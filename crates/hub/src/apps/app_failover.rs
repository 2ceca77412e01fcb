//! The binder's failover inputs that need memory across passes: Karmada's
//! application failover (a copy unhealthy past its toleration leaves its
//! cluster, for this template only) and the first time the hub saw a
//! `NoExecute` taint that carries no `timeAdded` (a taint a person added by
//! hand), so `tolerationSeconds` count from then. Decisions are
//! `apps_core::app_failover`'s and `scheduler::toleration`'s; this keeps the
//! clocks (in memory: after a restart they start again, which only ever
//! delays a failover, never hastens one).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_api::policy_failover::{ApplicationFailoverBehavior, FailoverBehavior};
use flotilla_api::work::{GracefulEvictionTask, Health, TargetCluster, Work};
use flotilla_apps_core::app_failover::{self, REASON_APPLICATION_FAILURE};
use flotilla_apps_core::binding::ClusterEviction;
use flotilla_apps_core::scheduler::{
    schedule, stamp_first_seen, ClusterSnapshot, SchedulingRequest, TaintsSeen,
};
use k8s_openapi::jiff::Timestamp;

use super::index::{lock, TemplateKey};

/// The clocks.
#[derive(Default)]
pub(crate) struct FailoverClocks {
    unhealthy_since: Mutex<HashMap<TemplateKey, BTreeMap<String, Timestamp>>>,
    taints_seen: Mutex<TaintsSeen>,
}

impl FailoverClocks {
    /// The clusters with every unstamped `NoExecute` taint stamped with
    /// when the hub first saw it (the clusters' own objects are untouched).
    pub(crate) fn stamped(&self, clusters: Vec<ClusterSnapshot>, now: Timestamp) -> Vec<ClusterSnapshot> {
        stamp_first_seen(clusters, &mut lock(&self.taints_seen), now)
    }

    pub(super) fn forget(&self, key: &TemplateKey) {
        lock(&self.unhealthy_since).remove(key);
    }
}

/// What application failover asks of this pass.
#[derive(Debug, Default)]
pub(super) struct Step {
    /// Tasks of the failovers that start now.
    pub(super) started: Vec<GracefulEvictionTask>,
    /// Clusters the scheduler must not choose: failing over now, or still
    /// being evicted for an application failure.
    pub(super) excluded: BTreeSet<String>,
    /// Failovers that wait, and why (the state to preserve is not readable).
    pub(super) held: Vec<String>,
    pub(super) requeue: Option<Duration>,
}

/// Application failover for one template: the clusters of `previous`
/// whose copy (the Work's first manifest, as its agent reports it: the
/// Works and their health) was unhealthy past the policy's toleration.
pub(super) fn step(
    clocks: &FailoverClocks,
    key: &TemplateKey,
    behavior: Option<&ApplicationFailoverBehavior>,
    previous: &[TargetCluster],
    tasks_before: &[GracefulEvictionTask],
    (works, work_health): (&BTreeMap<String, Arc<Work>>, &BTreeMap<String, Health>),
    now: Timestamp,
) -> Step {
    let mut out = Step {
        excluded: tasks_before
            .iter()
            .filter(|t| t.reason == REASON_APPLICATION_FAILURE)
            .map(|t| t.from_cluster.clone())
            .collect(),
        ..Default::default()
    };
    let Some(behavior) = behavior else {
        clocks.forget(key);
        return out;
    };
    let evicting: BTreeSet<&str> = tasks_before.iter().map(|t| t.from_cluster.as_str()).collect();
    let health: BTreeMap<String, Health> = previous
        .iter()
        .filter(|c| !evicting.contains(c.name.as_str()))
        .map(|c| (c.name.clone(), work_health.get(&c.name).copied().unwrap_or(Health::Unknown)))
        .collect();
    let mut clocks_now = lock(&clocks.unhealthy_since);
    let before = clocks_now.get(key).cloned().unwrap_or_default();
    let detection = app_failover::detect(&before, &health, behavior.toleration_seconds(), now);
    out.requeue = detection.recheck_after;
    for cluster in &detection.evict {
        let Some(target) = previous.iter().find(|c| &c.name == cluster) else { continue };
        let preserved = match &behavior.state_preservation {
            Some(rules) => match app_failover::preserved_label_state(rules, first_status(works.get(cluster)))
            {
                Ok(labels) => labels,
                Err(why) => {
                    out.held.push(format!("application failover from {cluster} waits: {why}"));
                    out.requeue = Some(out.requeue.map_or(HELD_RECHECK, |r| r.min(HELD_RECHECK)));
                    continue;
                }
            },
            None => BTreeMap::new(),
        };
        out.excluded.insert(cluster.clone());
        out.started.push(app_failover::application_task(target, behavior, preserved, previous, now));
    }
    clocks_now.insert(key.clone(), detection.unhealthy_since);
    out
}

/// How often a held failover looks again.
const HELD_RECHECK: Duration = Duration::from_secs(5);

/// Never fails over into nothing: the failovers of `step` wait (and say
/// why) while no other cluster could take the template. `request` is the
/// template's own, its `previous` replaced here.
pub(super) fn hold_without_alternative(
    step: &mut Step,
    request: &SchedulingRequest,
    previous: &[TargetCluster],
    clusters: &[ClusterSnapshot],
) {
    let others: Vec<ClusterSnapshot> =
        clusters.iter().filter(|c| !step.excluded.contains(&c.name)).cloned().collect();
    let remaining: Vec<TargetCluster> =
        previous.iter().filter(|c| !step.excluded.contains(&c.name)).cloned().collect();
    let probe = SchedulingRequest { previous: &remaining, ..*request };
    if let Err(u) = schedule(&probe, &others) {
        let from: Vec<String> = step.started.drain(..).map(|t| t.from_cluster).collect();
        step.excluded.retain(|c| !from.contains(c));
        step.held.push(format!(
            "application failover from {} waits: no other cluster can take the template ({})",
            from.join(", "),
            u.message
        ));
        step.requeue = Some(step.requeue.map_or(HELD_RECHECK, |r| r.min(HELD_RECHECK)));
    }
}

/// The object's status in a cluster, as its Work reports it.
fn first_status(work: Option<&Arc<Work>>) -> Option<&serde_json::Value> {
    work?.status.as_ref()?.manifest_statuses.iter().find(|m| m.identifier.ordinal == 0)?.status.as_ref()
}

/// How a cluster failover's tasks are made for this template: the
/// policy's `failover.cluster` purge mode, and each previous cluster's
/// preserved state where it can be read (a lost cluster's may not be: its
/// copy then moves without it rather than stay on a failed cluster).
pub(super) fn cluster_eviction(
    failover: Option<&FailoverBehavior>,
    previous: &[TargetCluster],
    works: &BTreeMap<String, Arc<Work>>,
) -> ClusterEviction {
    let Some(cluster) = failover.and_then(|f| f.cluster.as_ref()) else { return ClusterEviction::default() };
    let mut preserved = BTreeMap::new();
    if let Some(rules) = &cluster.state_preservation {
        for c in previous {
            match app_failover::preserved_label_state(rules, first_status(works.get(&c.name))) {
                Ok(labels) => {
                    preserved.insert(c.name.clone(), labels);
                }
                Err(why) => tracing::debug!(cluster = %c.name, %why, "no state to preserve"),
            }
        }
    }
    ClusterEviction { purge_mode: Some(cluster.purge_mode()), preserved }
}
