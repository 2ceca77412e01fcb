//! Taints and tolerations, with Kubernetes' semantics (and Karmada's keys
//! read as the hub's own).

use std::collections::{BTreeMap, BTreeSet};

use flotilla_api::cluster::{taints, Taint, TaintEffect};
use k8s_openapi::api::core::v1::Toleration;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::snapshot::ClusterSnapshot;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// Karmada's taint keys that mean the same as the hub's own.
pub(super) const KARMADA_NOT_READY: &str = "cluster.karmada.io/not-ready";
pub(super) const KARMADA_UNREACHABLE: &str = "cluster.karmada.io/unreachable";

/// Whether a set of tolerations tolerates a taint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tolerance {
    NotTolerated,
    /// For as long as the taint is there.
    Always,
    /// Until this time: a `NoExecute` taint tolerated with
    /// `tolerationSeconds`, counted from the taint's `timeAdded`.
    Until(Timestamp),
}

/// Whether `tolerations` tolerate `taint`, and until when, with Kubernetes
/// semantics: a toleration matches when its effect is empty or equal, its
/// key is empty or equal (Karmada's `cluster.karmada.io/not-ready` and
/// `cluster.karmada.io/unreachable` read as the hub's own keys), and with
/// `Exists` or an equal value (`Equal`, the default). `tolerationSeconds`
/// counts only for `NoExecute`; when several matching tolerations set it
/// the shortest wins, and `<= 0` means not at all. A `NoExecute` taint
/// without `timeAdded` has no known start, so a limited toleration of it has
/// already run out: the hub stamps its own taints, and the binder stamps
/// its view of a hand-added one with when it first saw it
/// (`stamp_first_seen`).
pub fn toleration_for(taint: &Taint, tolerations: &[Toleration]) -> Tolerance {
    let mut matched = false;
    let mut shortest: Option<i64> = None;
    for toleration in tolerations.iter().filter(|t| tolerates(t, taint)) {
        matched = true;
        if let Some(seconds) = toleration.toleration_seconds {
            shortest = Some(shortest.map_or(seconds, |s| s.min(seconds)));
        }
    }
    match (matched, taint.effect, shortest) {
        (false, _, _) => Tolerance::NotTolerated,
        (true, TaintEffect::NoExecute, Some(seconds)) => {
            let start = taint.time_added.as_ref().map_or(Timestamp::UNIX_EPOCH, |t| t.0);
            let until =
                start.checked_add(SignedDuration::from_secs(seconds.max(0))).unwrap_or(Timestamp::MAX);
            Tolerance::Until(until)
        }
        (true, _, _) => Tolerance::Always,
    }
}

pub(super) fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = toleration.effect.as_deref().filter(|e| !e.is_empty()) {
        if effect != effect_name(taint.effect) {
            return false;
        }
    }
    if let Some(key) = toleration.key.as_deref().filter(|k| !k.is_empty()) {
        // Either side may use Karmada's key for the hub's taint.
        if canonical_taint_key(key) != canonical_taint_key(&taint.key) {
            return false;
        }
    }
    match toleration.operator.as_deref().unwrap_or_default() {
        "" | "Equal" => {
            toleration.value.as_deref().unwrap_or_default() == taint.value.as_deref().unwrap_or_default()
        }
        "Exists" => true,
        _ => false,
    }
}

pub(super) fn canonical_taint_key(key: &str) -> &str {
    match key {
        KARMADA_NOT_READY => taints::NOT_READY,
        KARMADA_UNREACHABLE => taints::UNREACHABLE,
        other => other,
    }
}

pub(super) fn effect_name(effect: TaintEffect) -> &'static str {
    match effect {
        TaintEffect::NoSchedule => "NoSchedule",
        TaintEffect::PreferNoSchedule => "PreferNoSchedule",
        TaintEffect::NoExecute => "NoExecute",
    }
}

/// When the hub first saw each unstamped `NoExecute` taint, by cluster,
/// key and value.
pub type TaintsSeen = BTreeMap<(String, String, String), Timestamp>;

/// The clusters with each `NoExecute` taint that has no `timeAdded` (one a
/// person or another tool added without it) read as added when first seen
/// here, so `tolerationSeconds` count from then instead of having run out
/// before they began. Only this view changes: a taint the hub did not add
/// is never written back. `seen` forgets taints that are gone.
pub fn stamp_first_seen(
    mut clusters: Vec<ClusterSnapshot>,
    seen: &mut TaintsSeen,
    now: Timestamp,
) -> Vec<ClusterSnapshot> {
    let mut present = BTreeSet::new();
    for cluster in &mut clusters {
        for taint in cluster.taints.iter_mut() {
            if taint.effect != TaintEffect::NoExecute || taint.time_added.is_some() {
                continue;
            }
            let id = (cluster.name.clone(), taint.key.clone(), taint.value.clone().unwrap_or_default());
            let first = *seen.entry(id.clone()).or_insert(now);
            taint.time_added = Some(Time(first));
            present.insert(id);
        }
    }
    seen.retain(|id, _| present.contains(id));
    clusters
}
