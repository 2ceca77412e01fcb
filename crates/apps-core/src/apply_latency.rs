//! The distribution latency the member's agent reports: from the hub's
//! binder writing a Work's spec to the agent having applied that spec's
//! manifests in the member, counted once per Work generation.

use flotilla_api::work::WorkStatus;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
use k8s_openapi::jiff::Timestamp;

/// The binder's field manager on Works (`hub::apps::binder_writes`).
pub const BINDER_MANAGER: &str = "flotilla-binder";

/// When the binder last changed the Work: its managed-fields entry's time
/// (one-second resolution; written by the hub's API server, so no member
/// clock is involved in it).
pub fn written_at(managed_fields: &[ManagedFieldsEntry]) -> Option<Timestamp> {
    managed_fields
        .iter()
        .filter(|m| {
            m.manager.as_deref() == Some(BINDER_MANAGER) && m.subresource.as_deref().unwrap_or("").is_empty()
        })
        .filter_map(|m| m.time.as_ref().map(|t| t.0))
        .max()
}

fn applied_generation(status: &WorkStatus) -> Option<i64> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == "Applied" && c.status == "True")
        .and_then(|c| c.observed_generation)
}

/// Seconds to observe for this reconcile, if any: only when the new status
/// says `generation` is Applied, the previous status did not, and this
/// agent has not counted `generation` yet (a reconcile that runs before
/// its own status write reached the cache must not count it twice). A
/// write time later than `now` (clock skew) counts as 0.
pub fn apply_latency(
    written: Option<Timestamp>,
    generation: Option<i64>,
    before: Option<&WorkStatus>,
    after: &WorkStatus,
    counted: Option<i64>,
    now: Timestamp,
) -> Option<f64> {
    let written = written?;
    let generation = generation?;
    if applied_generation(after) != Some(generation)
        || before.and_then(applied_generation) == Some(generation)
        || counted == Some(generation)
    {
        return None;
    }
    Some(now.duration_since(written).as_secs_f64().max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    fn status(applied: &str, generation: i64) -> WorkStatus {
        WorkStatus {
            conditions: vec![Condition {
                type_: "Applied".into(),
                status: applied.into(),
                reason: "R".into(),
                message: "m".into(),
                last_transition_time: Time(Timestamp::UNIX_EPOCH),
                observed_generation: Some(generation),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn latency_is_counted_once_per_generation_applied() {
        let at = |s: i64| Timestamp::from_second(s).unwrap();
        let now = at(1_000);
        struct Case {
            name: &'static str,
            written: Option<Timestamp>,
            before: Option<WorkStatus>,
            after: WorkStatus,
            counted: Option<i64>,
            want: Option<f64>,
        }
        let cases = [
            Case {
                name: "first apply of generation 3",
                written: Some(at(996)),
                before: None,
                after: status("True", 3),
                counted: None,
                want: Some(4.0),
            },
            Case {
                name: "new generation after an older one applied",
                written: Some(at(999)),
                before: Some(status("True", 2)),
                after: status("True", 3),
                counted: Some(2),
                want: Some(1.0),
            },
            Case {
                name: "already applied before: a resync counts nothing",
                written: Some(at(900)),
                before: Some(status("True", 3)),
                after: status("True", 3),
                counted: None,
                want: None,
            },
            Case {
                name: "counted by this agent while the cache lagged",
                written: Some(at(990)),
                before: Some(status("True", 2)),
                after: status("True", 3),
                counted: Some(3),
                want: None,
            },
            Case {
                name: "not applied (a conflict)",
                written: Some(at(990)),
                before: None,
                after: status("False", 3),
                counted: None,
                want: None,
            },
            Case {
                name: "applied after failures: counted from the write",
                written: Some(at(940)),
                before: Some(status("False", 3)),
                after: status("True", 3),
                counted: None,
                want: Some(60.0),
            },
            Case {
                name: "no binder write recorded",
                written: None,
                before: None,
                after: status("True", 3),
                counted: None,
                want: None,
            },
            Case {
                name: "hub clock ahead",
                written: Some(at(1_002)),
                before: None,
                after: status("True", 3),
                counted: None,
                want: Some(0.0),
            },
        ];
        for c in cases {
            let got = apply_latency(c.written, Some(3), c.before.as_ref(), &c.after, c.counted, now);
            assert_eq!(got, c.want, "{}", c.name);
        }
    }

    #[test]
    fn written_at_is_the_binders_spec_write() {
        let entry = |manager: &str, subresource: Option<&str>, s: i64| ManagedFieldsEntry {
            manager: Some(manager.into()),
            subresource: subresource.map(str::to_string),
            time: Some(Time(Timestamp::from_second(s).unwrap())),
            ..Default::default()
        };
        let cases = [
            ("none", vec![], None),
            (
                "the binder's",
                vec![entry(BINDER_MANAGER, None, 10), entry("flotilla-agent", None, 20)],
                Some(10),
            ),
            ("not the status subresource", vec![entry(BINDER_MANAGER, Some("status"), 30)], None),
        ];
        for (name, fields, want) in cases {
            assert_eq!(written_at(&fields), want.map(|s| Timestamp::from_second(s).unwrap()), "{name}");
        }
    }
}
