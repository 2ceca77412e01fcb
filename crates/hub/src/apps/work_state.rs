//! What a Work says about its member copy: the replicas it carries, whether
//! the copy is settled, and the template's health there.

use flotilla_api::work::{keys, Health, TargetCluster, Work};
use kube::ResourceExt;

use super::index::work_step;

/// The replicas a work carries now: its step, or (a work written before
/// moves were stepped) the binding's division for its cluster.
pub(super) fn written_replicas(work: &Work, division: &[TargetCluster], cluster: &str) -> i32 {
    work_step(work).or_else(|| division.iter().find(|t| t.name == cluster).map(|t| t.replicas)).unwrap_or(0)
}

/// Whether a work's member copy is what was last written and healthy.
pub(super) fn work_settled(work: &Work) -> bool {
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
