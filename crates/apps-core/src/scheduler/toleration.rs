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

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn taint(key: &str, effect: TaintEffect, added: Option<i64>) -> Taint {
        Taint { key: key.into(), value: None, effect, time_added: added.map(|s| Time(ts(s))) }
    }

    fn toleration(key: &str, seconds: Option<i64>) -> Toleration {
        Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            toleration_seconds: seconds,
            value: None,
        }
    }

    #[test]
    fn karmada_and_flotilla_keys_match_on_either_side() {
        let karmada = "cluster.karmada.io/not-ready";
        let flotilla = taints::NOT_READY;
        // (name, taint key, toleration key, tolerated)
        let cases = [
            ("Karmada's key on both sides (a hand-added taint)", karmada, karmada, true),
            ("Karmada's toleration of the hub's taint", flotilla, karmada, true),
            ("Flotilla's toleration of a Karmada-named taint", karmada, flotilla, true),
            ("unreachable is another taint", "cluster.karmada.io/unreachable", karmada, false),
            ("any other key only by itself", "example.com/maintenance", "example.com/maintenance", true),
        ];
        for (name, taint_key, toleration_key, want) in cases {
            let got = toleration_for(
                &taint(taint_key, TaintEffect::NoExecute, Some(0)),
                &[toleration(toleration_key, None)],
            );
            assert_eq!(got != Tolerance::NotTolerated, want, "{name}");
        }
    }

    #[test]
    fn unstamped_no_execute_taints_count_from_when_first_seen() {
        let cluster =
            |taints: Vec<Taint>| ClusterSnapshot { name: "m1".into(), taints, ..Default::default() };
        let mut seen = TaintsSeen::new();
        let hand = taint("example.com/maintenance", TaintEffect::NoExecute, None);
        let stamped = taint(taints::NOT_READY, TaintEffect::NoExecute, Some(50));
        let no_schedule = taint("example.com/drain", TaintEffect::NoSchedule, None);
        let first = stamp_first_seen(
            vec![cluster(vec![hand.clone(), stamped.clone(), no_schedule.clone()])],
            &mut seen,
            ts(100),
        );
        assert_eq!(first[0].taints[0].time_added, Some(Time(ts(100))), "first seen now");
        assert_eq!(first[0].taints[1], stamped, "a stamped taint keeps its time");
        assert_eq!(first[0].taints[2], no_schedule, "only NoExecute taints count time");
        // Seen again later: still from the first sighting, so a 2 s
        // toleration runs out 2 s after it, not before and not never.
        let again = stamp_first_seen(vec![cluster(vec![hand.clone()])], &mut seen, ts(130));
        assert_eq!(again[0].taints[0].time_added, Some(Time(ts(100))));
        assert_eq!(
            toleration_for(&again[0].taints[0], &[toleration("example.com/maintenance", Some(2))]),
            Tolerance::Until(ts(102))
        );
        // Removed, then added again: a new episode.
        stamp_first_seen(vec![cluster(vec![])], &mut seen, ts(140));
        let back = stamp_first_seen(vec![cluster(vec![hand])], &mut seen, ts(150));
        assert_eq!(back[0].taints[0].time_added, Some(Time(ts(150))));
    }
}
