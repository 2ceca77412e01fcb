//! `placement.workloadAffinity`: affinity and anti-affinity between
//! groups of workloads across clusters, as Karmada's proposal "Workload
//! Affinity / Anti-Affinity Support" (KEP 521) defines it.
//!
//! A workload's group is the value of its template's label
//! `groupByLabelKey` (serialized `key=value`, as in Karmada's
//! `BindingAffinityGroups`), scoped to its namespace; a template without
//! the label is in no group and unconstrained. Both rules are required
//! during scheduling and ignored during execution (a placement already
//! made is never moved because a peer moved):
//! - `affinity`: only clusters where a peer of the same affinity group is
//!   placed; the first workload of a group goes anywhere its placement
//!   allows (no deadlock on a new group);
//! - `antiAffinity`: never a cluster where a peer of the same
//!   anti-affinity group is placed.

use std::collections::BTreeSet;

use flotilla_api::policy::{ClusterAffinity, Placement, WorkloadAffinity};
use flotilla_api::work::BindingAffinityGroups;

/// The groups a template is in, from its labels (None: in none).
pub fn groups_of(
    affinity: Option<&WorkloadAffinity>,
    labels: &std::collections::BTreeMap<String, String>,
) -> Option<BindingAffinityGroups> {
    let affinity = affinity?;
    let group =
        |key: Option<&str>| key.and_then(|k| labels.get(k).map(|v| format!("{k}={v}"))).unwrap_or_default();
    let groups = BindingAffinityGroups {
        affinity_group: group(affinity.affinity.as_ref().map(|t| t.group_by_label_key.as_str())),
        anti_affinity_group: group(affinity.anti_affinity.as_ref().map(|t| t.group_by_label_key.as_str())),
    };
    (!groups.affinity_group.is_empty() || !groups.anti_affinity_group.is_empty()).then_some(groups)
}

/// Another workload of the namespace and where it is placed.
#[derive(Debug, Clone, Copy)]
pub struct Peer<'a> {
    pub groups: &'a BindingAffinityGroups,
    pub clusters: &'a [String],
}

/// The clusters the rules keep a workload in `mine` away from, out of
/// `all` (the fleet's cluster names); empty when nothing applies.
pub fn excluded_clusters(mine: &BindingAffinityGroups, peers: &[Peer], all: &[&str]) -> BTreeSet<String> {
    let mut excluded = BTreeSet::new();
    if !mine.anti_affinity_group.is_empty() {
        for peer in peers.iter().filter(|p| p.groups.anti_affinity_group == mine.anti_affinity_group) {
            excluded.extend(peer.clusters.iter().cloned());
        }
    }
    if !mine.affinity_group.is_empty() {
        let together: BTreeSet<&str> = peers
            .iter()
            .filter(|p| p.groups.affinity_group == mine.affinity_group)
            .flat_map(|p| p.clusters.iter().map(String::as_str))
            .collect();
        // No peer placed yet: the group starts wherever this one goes.
        if !together.is_empty() {
            excluded.extend(all.iter().filter(|c| !together.contains(*c)).map(|c| c.to_string()));
        }
    }
    excluded
}

/// The placement to schedule with: `placement` with `excluded` added to
/// the exclusions of its affinity (or of each of its affinity groups).
pub fn constrained(placement: &Placement, excluded: &BTreeSet<String>) -> Placement {
    let mut out = placement.clone();
    if excluded.is_empty() {
        return out;
    }
    let exclude = |affinity: &mut ClusterAffinity| {
        let new: Vec<String> = excluded.iter().filter(|c| !affinity.exclude.contains(*c)).cloned().collect();
        affinity.exclude.extend(new);
    };
    if out.cluster_affinities.is_empty() {
        exclude(out.cluster_affinity.get_or_insert_with(ClusterAffinity::default));
    } else {
        for term in &mut out.cluster_affinities {
            exclude(&mut term.affinity);
        }
    }
    out
}

/// Why a workload found no cluster, for the `Scheduled` message when the
/// rules excluded some.
pub fn describe(mine: &BindingAffinityGroups, excluded: &BTreeSet<String>) -> String {
    let groups: Vec<String> =
        [("affinity", &mine.affinity_group), ("anti-affinity", &mine.anti_affinity_group)]
            .into_iter()
            .filter(|(_, g)| !g.is_empty())
            .map(|(kind, g)| format!("{kind} group {g}"))
            .collect();
    let names: Vec<&str> = excluded.iter().map(String::as_str).take(10).collect();
    format!("workloadAffinity ({}) rules out {}", groups.join(", "), names.join(", "))
}

#[cfg(test)]
#[path = "workload_affinity_tests.rs"]
mod tests;
