//! Descheduling (Karmada's karmada-descheduler): replicas a member's own
//! scheduler leaves Pending as unschedulable for longer than a threshold
//! move to clusters that can take them. This decides, per cluster of a
//! binding, how many replicas it keeps at most (a cap the scheduler
//! honours, `SchedulingRequest::caps`); the capacity-driven division then
//! places the rest on the others.
//!
//! Nothing moves while a member is merely slow (pods not yet judged
//! unschedulable, or not for long enough), and nothing ping-pongs: a
//! cluster that gave replicas away keeps its cap, recorded on the binding
//! with a fingerprint of its reported capacity, until that capacity
//! changes.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::time::Duration;

use flotilla_api::work::{DescheduledCluster, UnschedulableReplicas};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use sha2::{Digest, Sha256};

use crate::scheduler::ClusterSnapshot;

/// Karmada's default: replicas unschedulable this long are moved.
pub const DEFAULT_UNSCHEDULABLE_THRESHOLD: Duration = Duration::from_secs(300);

/// The hub's descheduling settings (`hub run --unschedulable-threshold`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DescheduleSettings {
    /// How long replicas stay unschedulable in a member before they move.
    pub unschedulable_threshold: Duration,
}

impl Default for DescheduleSettings {
    fn default() -> Self {
        DescheduleSettings { unschedulable_threshold: DEFAULT_UNSCHEDULABLE_THRESHOLD }
    }
}

/// One cluster of a binding: its replicas in the binding and what its
/// member reports unschedulable (from a Work status describing the
/// current spec only; a stale report would move replicas twice).
#[derive(Debug, Clone, Copy)]
pub struct ClusterReplicas<'a> {
    pub name: &'a str,
    pub replicas: i32,
    pub unschedulable: Option<&'a UnschedulableReplicas>,
}

/// Everything one descheduling decision depends on.
#[derive(Debug, Clone, Copy)]
pub struct DescheduleInput<'a> {
    /// The binding's clusters.
    pub clusters: &'a [ClusterReplicas<'a>],
    /// The binding's records of earlier moves (`spec.descheduled`).
    pub records: &'a [DescheduledCluster],
    /// Every cluster of the fleet as the scheduler sees it (for capacity
    /// fingerprints; a cluster gone from the fleet loses its record).
    pub fleet: &'a [ClusterSnapshot],
    pub threshold: Duration,
    pub now: Timestamp,
}

/// Replicas moved away from one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    pub cluster: String,
    /// How many leave it.
    pub replicas: i32,
    /// How many it keeps.
    pub keeps: i32,
    /// How long the oldest of them was unschedulable.
    pub unschedulable_for: Duration,
}

impl Move {
    /// The Event message: "Descheduled 3 replicas from m1: unschedulable
    /// for 5m".
    pub fn message(&self) -> String {
        let noun = if self.replicas == 1 { "replica" } else { "replicas" };
        format!(
            "Descheduled {} {noun} from {}: unschedulable for {} (it keeps {})",
            self.replicas,
            self.cluster,
            human(self.unschedulable_for),
            self.keeps
        )
    }
}

/// What to do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Descheduled {
    /// The most replicas each capped cluster keeps (for the scheduler).
    pub caps: BTreeMap<String, i32>,
    /// The records to keep on the binding, sorted by cluster.
    pub records: Vec<DescheduledCluster>,
    /// The moves decided now (for Events).
    pub moves: Vec<Move>,
    /// Look again then: the earliest time unschedulable replicas reach
    /// the threshold.
    pub requeue_after: Option<Duration>,
}

/// Decides each cluster's cap: earlier records hold while the cluster's
/// capacity fingerprint is unchanged; replicas unschedulable for at least
/// the threshold leave (the cluster keeps the rest, those its scheduler
/// placed); younger ones are looked at again when they reach it.
pub fn decide(input: &DescheduleInput) -> Descheduled {
    let mut out = Descheduled::default();
    let stuck = input.clusters.iter().any(|c| c.unschedulable.is_some_and(|u| u.replicas > 0));
    if input.records.is_empty() && !stuck {
        return out;
    }
    let fleet: HashMap<&str, &ClusterSnapshot> = input.fleet.iter().map(|c| (c.name.as_str(), c)).collect();
    let mut fingerprints: HashMap<&str, String> = HashMap::new();
    let mut fingerprint = |name: &str| -> Option<String> {
        let snapshot = fleet.get(name)?;
        Some(
            fingerprints
                .entry(snapshot.name.as_str())
                .or_insert_with(|| capacity_fingerprint(snapshot))
                .clone(),
        )
    };
    let mut records: BTreeMap<String, DescheduledCluster> = BTreeMap::new();
    for record in input.records {
        if fingerprint(&record.cluster).is_some_and(|now| now == record.capacity) {
            records.insert(record.cluster.clone(), record.clone());
        }
    }
    for cluster in input.clusters {
        let Some(stuck) = cluster.unschedulable.filter(|u| u.replicas > 0) else { continue };
        if cluster.replicas <= 0 {
            continue;
        }
        let age = Duration::try_from(input.now.duration_since(stuck.since.0)).unwrap_or(Duration::ZERO);
        if age < input.threshold {
            let wait = input.threshold - age;
            out.requeue_after = Some(out.requeue_after.map_or(wait, |r| r.min(wait)));
            continue;
        }
        let keeps = (cluster.replicas - stuck.replicas).max(0);
        if records.get(cluster.name).is_some_and(|r| r.keeps <= keeps) {
            continue;
        }
        let Some(capacity) = fingerprint(cluster.name) else { continue };
        records.insert(
            cluster.name.to_string(),
            DescheduledCluster { cluster: cluster.name.to_string(), keeps, capacity, time: Time(input.now) },
        );
        out.moves.push(Move {
            cluster: cluster.name.to_string(),
            replicas: cluster.replicas - keeps,
            keeps,
            unschedulable_for: age,
        });
    }
    out.caps = records.values().map(|r| (r.cluster.clone(), r.keeps)).collect();
    out.records = records.into_values().collect();
    out
}

/// A short fingerprint of what a cluster reported of its capacity
/// (allocatable and allocated per resource): any change lifts the caps
/// recorded against it.
pub fn capacity_fingerprint(cluster: &ClusterSnapshot) -> String {
    let mut hasher = Sha256::new();
    for (part, amounts) in [("allocatable", &cluster.allocatable), ("allocated", &cluster.allocated)] {
        hasher.update(part.as_bytes());
        for (resource, amount) in amounts {
            hasher.update(resource.as_bytes());
            hasher.update([0]);
            hasher.update(amount.to_be_bytes());
        }
    }
    hex::encode(&hasher.finalize()[..8])
}

/// "5m", "1h30m", "45s".
fn human(d: Duration) -> String {
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        let _ = write!(out, "{h}h");
    }
    if m > 0 {
        let _ = write!(out, "{m}m");
    }
    if s > 0 || out.is_empty() {
        let _ = write!(out, "{s}s");
    }
    out
}

#[cfg(test)]
#[path = "deschedule_tests.rs"]
mod tests;
