//! Warning Events of propagated objects in members, made visible on the
//! hub: which applied object a member Event is about (directly, or through
//! the ReplicaSet or pod of a workload), the bounded list the agent keeps
//! on the Work (`status.memberWarnings`), when that list is worth a write,
//! and which entries the hub has not yet re-emitted. Bounded at every step
//! so a crash-looping pod cannot flood the hub: one entry per manifest and
//! reason, a few entries per Work, count-only changes written at most every
//! [`COUNT_REFRESH`].

use std::time::Duration;

use flotilla_api::work::MemberWarning;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// Entries kept per Work (the most recent).
pub const MAX_WARNINGS_PER_WORK: usize = 5;
/// A warning not seen again for this long leaves the list.
pub const WARNING_TTL: Duration = Duration::from_secs(3600);
/// A change of counts alone is written at most this often.
pub const COUNT_REFRESH: Duration = Duration::from_secs(60);
/// After a hub restart, entries seen this recently are still re-emitted.
pub const RECENT: Duration = Duration::from_secs(120);

/// The objects a Warning Event about `kind/name` may belong to, the object
/// itself first: a pod belongs to its owner (and a ReplicaSet's pod to its
/// Deployment, whose name the pod's `pod-template-hash` label strips from
/// the ReplicaSet's); a ReplicaSet to the Deployment named like it without
/// its last dash-separated part.
pub fn owner_candidates(
    kind: &str,
    name: &str,
    pod_owner: Option<(&str, &str)>,
    pod_template_hash: Option<&str>,
) -> Vec<(String, String)> {
    let mut out = vec![(kind.to_string(), name.to_string())];
    match (kind, pod_owner) {
        ("Pod", Some(("ReplicaSet", rs))) => {
            out.push(("ReplicaSet".into(), rs.into()));
            let deployment = pod_template_hash
                .and_then(|h| rs.strip_suffix(&format!("-{h}")))
                .or_else(|| rs.rsplit_once('-').map(|(d, _)| d));
            if let Some(d) = deployment {
                out.push(("Deployment".into(), d.into()));
            }
        }
        ("Pod", Some((owner_kind, owner))) => out.push((owner_kind.into(), owner.into())),
        ("ReplicaSet", _) => {
            if let Some((d, _)) = name.rsplit_once('-') {
                out.push(("Deployment".into(), d.into()));
            }
        }
        _ => {}
    }
    out
}

/// The list after the agent saw one more Warning Event: the entry of the
/// same manifest and reason takes the newest object and message and counts
/// one more; the list keeps the most recent [`MAX_WARNINGS_PER_WORK`]
/// entries seen within [`WARNING_TTL`], most recent first.
pub fn record(list: &[MemberWarning], seen: MemberWarning, now: Timestamp) -> Vec<MemberWarning> {
    let mut out: Vec<MemberWarning> = Vec::with_capacity(list.len() + 1);
    let mut merged = seen;
    for w in list {
        if w.ordinal == merged.ordinal && w.reason == merged.reason {
            merged.count = w.count.saturating_add(merged.count.max(1));
            if w.last_seen.0 > merged.last_seen.0 {
                merged.last_seen = w.last_seen.clone();
            }
        } else {
            out.push(w.clone());
        }
    }
    merged.count = merged.count.max(1);
    out.push(merged);
    prune(out, now)
}

/// Drops entries older than [`WARNING_TTL`] and keeps the most recent few.
pub fn prune(mut list: Vec<MemberWarning>, now: Timestamp) -> Vec<MemberWarning> {
    list.retain(|w| now.duration_since(w.last_seen.0).as_secs() < WARNING_TTL.as_secs() as i64);
    list.sort_by(|a, b| b.last_seen.0.cmp(&a.last_seen.0).then(a.ordinal.cmp(&b.ordinal)));
    list.truncate(MAX_WARNINGS_PER_WORK);
    list
}

/// Whether the agent writes `current` over `written` (last written at
/// `written_at`): at once when an entry is new, gone or says something
/// else; a change of counts or times alone only every [`COUNT_REFRESH`].
pub fn write_due(
    written: &[MemberWarning],
    current: &[MemberWarning],
    written_at: Option<Timestamp>,
    now: Timestamp,
) -> bool {
    if written == current {
        return false;
    }
    let gist = |l: &[MemberWarning]| {
        let mut v: Vec<(i32, String, String, String)> =
            l.iter().map(|w| (w.ordinal, w.reason.clone(), w.object.clone(), w.message.clone())).collect();
        v.sort();
        v
    };
    if gist(written) != gist(current) {
        return true;
    }
    written_at.is_none_or(|at| now.duration_since(at).as_secs() >= COUNT_REFRESH.as_secs() as i64)
}

/// The entries the hub re-emits as Events: new ones, and those seen again
/// (a higher count). `before` is what it saw of the same Work last time;
/// `None` after a (hub) restart, when only entries seen within [`RECENT`]
/// are re-emitted, so a restart repeats little.
pub fn to_forward<'a>(
    before: Option<&[MemberWarning]>,
    current: &'a [MemberWarning],
    now: Timestamp,
) -> Vec<&'a MemberWarning> {
    current
        .iter()
        .filter(|w| match before {
            None => now.duration_since(w.last_seen.0).as_secs() < RECENT.as_secs() as i64,
            Some(before) => !before.iter().any(|b| {
                b.ordinal == w.ordinal && b.reason == w.reason && b.count >= w.count && b.object == w.object
            }),
        })
        .collect()
}

/// The message of the hub's Event: which cluster, which object, what it said.
pub fn hub_message(cluster: &str, warning: &MemberWarning) -> String {
    format!("{cluster}: {}: {}", warning.object, warning.message)
}

/// A timestamp for a new observation.
pub fn seen_at(now: Timestamp) -> Time {
    Time(now)
}

#[cfg(test)]
#[path = "member_events_tests.rs"]
mod tests;
