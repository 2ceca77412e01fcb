//! The peers a binding's `workloadAffinity` is judged against (decisions
//! in `flotilla_apps_core::workload_affinity`): the namespace's bindings
//! in the cache, and the placements this hub decided that the cache may
//! not show yet. Like Karmada's scheduler with its assumed bindings, the
//! binder reads the peers, schedules and records its decision under one
//! lock, so two workloads of one group scheduled at once see each other.

use std::collections::{BTreeSet, HashMap};
use std::sync::MutexGuard;
use std::time::{Duration, Instant};

use flotilla_api::work::{BindingAffinityGroups, TargetCluster};
use flotilla_apps_core::workload_affinity::{describe, excluded_clusters, Peer};

use super::index::{ClusterView, Index, TemplateKey};

/// How long a decision counts beside the cache: by then the binding
/// written with it is in the cache (or was never written).
const DECIDED_FOR: Duration = Duration::from_secs(30);

/// Placements decided by this hub, by (namespace, binding name).
#[derive(Default)]
pub(crate) struct Decided(HashMap<(String, String), (BindingAffinityGroups, Vec<String>, Instant)>);

/// The peers of `key`'s binding `name` in its namespace: (groups,
/// clusters) of every other binding with groups.
pub(super) fn peers(
    apps: &Index,
    decided: &MutexGuard<'_, Decided>,
    key: &TemplateKey,
    name: &str,
) -> Vec<(BindingAffinityGroups, Vec<String>)> {
    let now = Instant::now();
    let mut by_name: HashMap<String, (BindingAffinityGroups, Vec<String>)> = HashMap::new();
    for binding in apps.bindings.state() {
        let binding_name = binding.metadata.name.clone().unwrap_or_default();
        if binding.metadata.namespace.as_deref() != Some(key.namespace.as_str()) || binding_name == name {
            continue;
        }
        if let Some(groups) = &binding.spec.spec.affinity_groups {
            let clusters = binding.spec.spec.clusters.iter().map(|c| c.name.clone()).collect();
            by_name.insert(binding_name, (groups.clone(), clusters));
        }
    }
    for ((namespace, binding_name), (groups, clusters, at)) in &decided.0 {
        if namespace == &key.namespace && binding_name != name && now.duration_since(*at) < DECIDED_FOR {
            by_name.insert(binding_name.clone(), (groups.clone(), clusters.clone()));
        }
    }
    by_name.into_values().collect()
}

/// Records what the binder just decided for a binding with groups.
pub(super) fn record(
    decided: &mut MutexGuard<'_, Decided>,
    key: &TemplateKey,
    name: &str,
    groups: &BindingAffinityGroups,
    clusters: &[TargetCluster],
) {
    let now = Instant::now();
    decided.0.retain(|_, (_, _, at)| now.duration_since(*at) < DECIDED_FOR);
    let names = clusters.iter().map(|c| c.name.clone()).collect();
    decided.0.insert((key.namespace.clone(), name.to_string()), (groups.clone(), names, now));
}

/// The clusters `groups` rule out for `key`'s binding `name`, and the note
/// for its `Scheduled` message ("" when none).
pub(super) fn exclusions(
    apps: &Index,
    decided: Option<&MutexGuard<'_, Decided>>,
    key: &TemplateKey,
    name: &str,
    groups: Option<&BindingAffinityGroups>,
    view: &ClusterView,
) -> (BTreeSet<String>, String) {
    let (Some(groups), Some(decided)) = (groups, decided) else { return (BTreeSet::new(), String::new()) };
    let peers = peers(apps, decided, key, name);
    let peers: Vec<Peer> = peers.iter().map(|(g, c)| Peer { groups: g, clusters: c }).collect();
    let all: Vec<&str> = view.scheduling.iter().map(|c| c.name.as_str()).collect();
    let excluded = excluded_clusters(groups, &peers, &all);
    let note = if excluded.is_empty() { String::new() } else { format!("; {}", describe(groups, &excluded)) };
    (excluded, note)
}
