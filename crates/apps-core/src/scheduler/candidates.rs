//! The clusters that passed the filters, the placement's strategy and
//! spread constraints as the scheduler reads them, and the binding's
//! current clusters.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use flotilla_api::policy::{
    cluster_field_label, DynamicWeightFactor, Placement, ReplicaDivisionPreference, ReplicaSchedulingType,
    SpreadByField, SpreadConstraint, StaticClusterWeight,
};
use flotilla_api::work::TargetCluster;

use super::snapshot::ClusterSnapshot;

/// A spread constraint over groups of clusters sharing a label value.
#[derive(Debug, Clone, Copy)]
pub(super) struct GroupConstraint<'a> {
    /// The label whose value names a cluster's group.
    pub(super) label: &'a str,
    /// Plural noun for messages ("regions").
    pub(super) noun: &'a str,
    pub(super) min: usize,
    pub(super) max: usize,
}

impl GroupConstraint<'_> {
    pub(super) fn key_of<'c>(&self, cluster: &'c ClusterSnapshot) -> Option<&'c str> {
        cluster.labels.get(self.label).map(String::as_str)
    }
}

/// The placement's spread constraints: group constraints from the widest
/// (provider) to the narrowest (labels), then the per-cluster one.
#[derive(Debug, Default)]
pub(super) struct SpreadPlan<'a> {
    pub(super) groups: Vec<GroupConstraint<'a>>,
    /// (min, max) clusters.
    pub(super) clusters: Option<(usize, usize)>,
}

impl<'a> SpreadPlan<'a> {
    pub(super) fn new(constraints: &'a [SpreadConstraint]) -> Self {
        let mut plan = SpreadPlan::default();
        let mut ranked: Vec<(u8, GroupConstraint<'a>)> = Vec::new();
        for c in constraints {
            let min = usize::try_from(c.min_groups).unwrap_or(0);
            let max = usize::try_from(c.max_groups).unwrap_or(0);
            let (rank, label, noun) = match (c.spread_by_field, c.spread_by_label.as_deref()) {
                (Some(SpreadByField::Cluster), _) => {
                    plan.clusters = Some(match plan.clusters {
                        None => (min, max),
                        Some((min0, max0)) => (min0.max(min), tighter_max(max0, max)),
                    });
                    continue;
                }
                (Some(field), _) => {
                    let (rank, name, noun) = match field {
                        SpreadByField::Provider => (0, "provider", "providers"),
                        SpreadByField::Region => (1, "region", "regions"),
                        _ => (2, "zone", "zones"),
                    };
                    let Some(label) = cluster_field_label(name) else { continue };
                    (rank, label, noun)
                }
                (None, Some(label)) if !label.is_empty() => (3, label, "label values"),
                (None, _) => continue,
            };
            ranked.push((rank, GroupConstraint { label, noun, min, max }));
        }
        ranked.sort_by_key(|(rank, _)| *rank);
        plan.groups = ranked.into_iter().map(|(_, g)| g).collect();
        plan
    }

    pub(super) fn is_empty(&self) -> bool {
        self.groups.is_empty() && self.clusters.is_none()
    }
}

pub(super) fn tighter_max(a: usize, b: usize) -> usize {
    match (a, b) {
        (0, x) | (x, 0) => x,
        (a, b) => a.min(b),
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Strategy<'a> {
    Duplicated,
    /// Weighted by a static list; empty means equal weights.
    StaticWeights(&'a [StaticClusterWeight]),
    AvailableReplicas,
    Aggregated,
}

impl<'a> Strategy<'a> {
    pub(super) fn of(placement: &'a Placement) -> Self {
        let Some(rs) = &placement.replica_scheduling else { return Strategy::Duplicated };
        if rs.replica_scheduling_type.unwrap_or_default() == ReplicaSchedulingType::Duplicated {
            return Strategy::Duplicated;
        }
        match rs.replica_division_preference.unwrap_or_default() {
            ReplicaDivisionPreference::Aggregated => Strategy::Aggregated,
            ReplicaDivisionPreference::Weighted => match &rs.weight_preference {
                Some(p) if p.dynamic_weight == Some(DynamicWeightFactor::AvailableReplicas) => {
                    Strategy::AvailableReplicas
                }
                Some(p) => Strategy::StaticWeights(&p.static_weight_list),
                None => Strategy::StaticWeights(&[]),
            },
        }
    }

    pub(super) fn needs_capacity(self) -> bool {
        matches!(self, Strategy::AvailableReplicas | Strategy::Aggregated)
    }
}

/// A cluster that passed the filters.
#[derive(Debug, Clone, Copy)]
pub(super) struct Candidate<'c> {
    pub(super) cluster: &'c ClusterSnapshot,
    /// Its replicas in the binding's current placement, if it is there.
    pub(super) previous: Option<i32>,
    /// Replicas that still fit (computed only when something needs it).
    pub(super) available: i64,
    /// Preference rank of its group under the narrowest group constraint.
    pub(super) group_rank: usize,
    /// Its rank inside that group (for round-robin across groups).
    pub(super) member_rank: usize,
    /// Its group under the constraint being applied.
    pub(super) group_key: &'c str,
}

impl Candidate<'_> {
    pub(super) fn name(&self) -> &str {
        &self.cluster.name
    }
    pub(super) fn in_previous(&self) -> bool {
        self.previous.is_some()
    }
}

/// Clusters already used first, then more room first, then by name.
pub(super) fn preference(a: &Candidate, b: &Candidate) -> Ordering {
    b.in_previous()
        .cmp(&a.in_previous())
        .then(b.available.cmp(&a.available))
        .then_with(|| a.name().cmp(b.name()))
}

/// The binding's current clusters, looked up by name once per cluster and
/// call, so with a cheap hash (names are not attacker-chosen keys here).
pub(super) struct Previous<'a>(HashMap<&'a str, i32, BuildHasherDefault<FxHasher>>);

impl<'a> Previous<'a> {
    pub(super) fn new(previous: &'a [TargetCluster]) -> Self {
        let mut map = HashMap::with_capacity_and_hasher(previous.len(), Default::default());
        for t in previous {
            map.entry(t.name.as_str()).or_insert(t.replicas);
        }
        Previous(map)
    }
    pub(super) fn get(&self, name: &str) -> Option<i32> {
        if self.0.is_empty() {
            return None;
        }
        self.0.get(name).copied()
    }
}

/// The Fx hash (rustc's): a multiply and rotate per word.
#[derive(Default)]
pub(super) struct FxHasher(u64);

impl FxHasher {
    pub(super) fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }
    fn write_u8(&mut self, byte: u8) {
        self.add(u64::from(byte));
    }
    fn finish(&self) -> u64 {
        self.0
    }
}
