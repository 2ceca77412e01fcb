//! A rollout as its `Rollout` object shows it: the status from the
//! rollout's record and the clusters' reports, the record read back from
//! the status (so a restarted hub carries on where it was), the user's
//! controls from the object's annotations, and which strategy takes a
//! template.

use std::collections::BTreeMap;

use flotilla_api::rollout::{
    control, ClusterRolloutStatus, RolloutFailure, RolloutStatus, RolloutStrategySpec, WaveStatus,
};
use flotilla_core::conditions::{set, Wanted};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::rollout::{Assigned, ClusterReport, Control, Failure, Health, Phase, Record, Strategy};
use crate::selection::{policy_matches, PolicyScope, TemplateMeta};

pub fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Progressing => "Progressing",
        Phase::Soaking => "Soaking",
        Phase::Paused => "Paused",
        Phase::Complete => "Complete",
        Phase::RolledBack => "RolledBack",
    }
}

fn phase_of(name: &str) -> Option<Phase> {
    Some(match name {
        "Progressing" => Phase::Progressing,
        "Soaking" => Phase::Soaking,
        "Paused" => Phase::Paused,
        "Complete" => Phase::Complete,
        "RolledBack" => Phase::RolledBack,
        _ => return None,
    })
}

fn time(seconds: i64) -> Option<Time> {
    k8s_openapi::jiff::Timestamp::from_second(seconds).ok().map(Time)
}

/// The record a status holds (`None`: no rollout recorded yet).
pub fn record_of(status: &RolloutStatus) -> Option<Record> {
    let phase = phase_of(&status.phase)?;
    if status.revision.is_empty() {
        return None;
    }
    Some(Record {
        revision: status.revision.clone(),
        waves: status.waves.iter().map(|w| w.clusters.clone()).collect(),
        stable: status.stable_revision.clone(),
        wave: usize::try_from(status.wave.max(1) - 1).unwrap_or(0),
        wave_started_at: status.wave_started_at.as_ref().map_or(0, |t| t.0.as_second()),
        soak_started_at: status.soak_started_at.as_ref().map(|t| t.0.as_second()),
        phase,
        failure: status.failure.as_ref().map(|f| Failure {
            revision: f.revision.clone(),
            cluster: f.cluster.clone(),
            reason: f.reason.clone(),
        }),
    })
}

/// What the user asks, from the Rollout's annotations, for `revision` at
/// `wave` (from 0): `paused: "true"`; `promote: "<revision>/<wave from 1>"`
/// skips that wave's soak, `"<revision>/all"` runs every remaining wave;
/// `abort: "<revision>"` rolls it back. Promotions and aborts of another
/// revision are old news and ignored.
pub fn control_of(annotations: &BTreeMap<String, String>, revision: &str, wave: usize) -> Control {
    let promote = annotations.get(control::PROMOTE).and_then(|v| v.split_once('/'));
    let promoted = |what: &str| promote.is_some_and(|(r, w)| r == revision && w == what);
    Control {
        paused: annotations.get(control::PAUSED).is_some_and(|v| v.eq_ignore_ascii_case("true")),
        skip_soak: promoted(&(wave + 1).to_string()),
        finish: promoted("all"),
        abort: annotations.get(control::ABORT).is_some_and(|v| v == revision),
    }
}

/// The strategy (by name) that takes a template: of those in its
/// namespace that select it, the most specific, then the first by name.
pub fn pick_strategy<'a>(
    strategies: &[(&'a str, &'a str, &'a RolloutStrategySpec)],
    template: &TemplateMeta,
) -> Option<&'a str> {
    strategies
        .iter()
        .filter(|(namespace, _, _)| *namespace == template.namespace)
        .filter_map(|(namespace, name, spec)| {
            policy_matches(PolicyScope::Namespaced, namespace, &spec.resource_selectors, template)
                .map(|s| (s, *name))
        })
        .max_by(|(a, an), (b, bn)| a.cmp(b).then(bn.cmp(an)))
        .map(|(_, name)| name)
}

/// A step's message for people: `revision <hash>` becomes `revision <n>`
/// for the revisions whose numbers are known.
pub fn with_numbers(message: &str, numbers: &[(&str, i64)]) -> String {
    numbers.iter().fold(message.to_string(), |m, (hash, n)| {
        m.replace(&format!("revision {hash}"), &format!("revision {n}"))
    })
}

pub struct StatusInput<'a> {
    pub record: &'a Record,
    pub assigned: &'a BTreeMap<String, Assigned>,
    pub reports: &'a [ClusterReport],
    /// The numbers of the revision and of the stable one.
    pub revision_number: i64,
    pub stable_number: Option<i64>,
    pub strategy: &'a Strategy,
    pub previous: &'a [Condition],
    pub now: i64,
}

fn gate_of(report: Option<&ClusterReport>) -> (&'static str, String) {
    match report.map(|r| &r.health) {
        Some(Health::Healthy) => ("Healthy", String::new()),
        Some(Health::Failed(why)) => ("Failed", why.clone()),
        Some(Health::Unreachable) => ("Unreachable", "its agent stopped reporting: not gated".into()),
        Some(Health::Progressing) | None => ("Progressing", String::new()),
    }
}

/// One line on where the rollout is.
fn message(input: &StatusInput) -> String {
    let r = input.record;
    let waves = r.waves.len().max(1);
    let wave = r.wave.min(waves - 1);
    let clusters = r.waves.get(wave).map(|w| w.join(", ")).unwrap_or_default();
    match r.phase {
        Phase::Complete => format!("revision {} is on every cluster", input.revision_number),
        Phase::RolledBack => {
            let why = r.failure.as_ref().map(|f| f.reason.clone()).unwrap_or_default();
            let back = input.stable_number.map_or("nothing".to_string(), |n| format!("revision {n}"));
            format!("revision {} rolled back to {back}: {why}", input.revision_number)
        }
        Phase::Paused => format!("paused at wave {} of {waves} ({clusters})", wave + 1),
        Phase::Soaking => {
            let left = r
                .soak_started_at
                .map_or(input.strategy.soak_seconds, |s| input.strategy.soak_seconds - (input.now - s))
                .max(0);
            format!("wave {} of {waves} ({clusters}) healthy, soaking: {left}s left", wave + 1)
        }
        Phase::Progressing => {
            let left = (input.strategy.progress_deadline_seconds - (input.now - r.wave_started_at)).max(0);
            format!("wave {} of {waves} ({clusters}) rolling out: {left}s to its deadline", wave + 1)
        }
    }
}

/// The Rollout's status.
pub fn status(input: &StatusInput) -> RolloutStatus {
    let r = input.record;
    let report = |name: &str| input.reports.iter().find(|c| c.name == name);
    let mut clusters = Vec::new();
    for (i, wave) in r.waves.iter().enumerate() {
        for name in wave {
            let (gate, message) = gate_of(report(name));
            clusters.push(ClusterRolloutStatus {
                name: name.clone(),
                wave: i32::try_from(i + 1).unwrap_or(i32::MAX),
                given: match input.assigned.get(name) {
                    Some(Assigned::New) => "new".into(),
                    _ => "stable".into(),
                },
                running: report(name).and_then(|c| c.revision.clone()),
                gate: gate.into(),
                message,
            });
        }
    }
    let waves = r.waves.len();
    let wave = i32::try_from(r.wave.min(waves.saturating_sub(1)) + 1).unwrap_or(i32::MAX);
    let message = message(input);
    let now = time(input.now).unwrap_or(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
    let mut conditions = input.previous.to_vec();
    let progressing = matches!(r.phase, Phase::Progressing | Phase::Soaking | Phase::Paused);
    set(&mut conditions, Wanted::new("Progressing", progressing, phase_name(r.phase), message.clone()), &now);
    let degraded = r.phase == Phase::RolledBack;
    set(
        &mut conditions,
        Wanted::new(
            "Degraded",
            degraded,
            if degraded { "RolledBack" } else { "AsExpected" },
            if degraded { message.clone() } else { "no revision failed".to_string() },
        ),
        &now,
    );
    RolloutStatus {
        phase: phase_name(r.phase).into(),
        revision: r.revision.clone(),
        revision_number: input.revision_number,
        stable_revision: r.stable.clone(),
        stable_revision_number: input.stable_number,
        wave,
        wave_text: format!("{wave}/{waves}"),
        waves: r.waves.iter().map(|w| WaveStatus { clusters: w.clone() }).collect(),
        wave_started_at: time(r.wave_started_at),
        soak_started_at: r.soak_started_at.and_then(time),
        soak_seconds: input.strategy.soak_seconds,
        progress_deadline_seconds: input.strategy.progress_deadline_seconds,
        clusters,
        failure: r.failure.as_ref().map(|f| RolloutFailure {
            revision: f.revision.clone(),
            cluster: f.cluster.clone(),
            reason: f.reason.clone(),
        }),
        message,
        conditions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::WavePlan;

    fn strategy() -> Strategy {
        Strategy {
            waves: WavePlan::Ratio(vec![1, 2, 7]),
            canary_names: vec![],
            canary_labels: BTreeMap::new(),
            soak_seconds: 60,
            progress_deadline_seconds: 300,
        }
    }

    fn record(phase: Phase) -> Record {
        Record {
            revision: "r2".into(),
            waves: vec![vec!["a".into()], vec!["b".into(), "c".into()], vec!["d".into()]],
            stable: Some("r1".into()),
            wave: 1,
            wave_started_at: 1_000,
            soak_started_at: (phase == Phase::Soaking).then_some(1_030),
            phase,
            failure: (phase == Phase::RolledBack).then(|| Failure {
                revision: "r2".into(),
                cluster: Some("b".into()),
                reason: "b: CrashLoopBackOff: pod web-1".into(),
            }),
        }
    }

    #[test]
    fn status_says_where_the_rollout_is_and_reads_back_as_the_same_record() {
        let cases: &[(Phase, &str, bool, bool)] = &[
            (Phase::Progressing, "wave 2 of 3 (b, c) rolling out: 250s to its deadline", true, false),
            (Phase::Soaking, "wave 2 of 3 (b, c) healthy, soaking: 40s left", true, false),
            (Phase::Paused, "paused at wave 2 of 3 (b, c)", true, false),
            (Phase::Complete, "revision 2 is on every cluster", false, false),
            (
                Phase::RolledBack,
                "revision 2 rolled back to revision 1: b: CrashLoopBackOff: pod web-1",
                false,
                true,
            ),
        ];
        for (phase, want, progressing, degraded) in cases {
            let r = record(*phase);
            let assigned =
                BTreeMap::from([("a".to_string(), Assigned::New), ("b".to_string(), Assigned::Stable)]);
            let reports = [
                ClusterReport { name: "a".into(), revision: Some("r2".into()), health: Health::Healthy },
                ClusterReport { name: "c".into(), revision: None, health: Health::Unreachable },
            ];
            let s = status(&StatusInput {
                record: &r,
                assigned: &assigned,
                reports: &reports,
                revision_number: 2,
                stable_number: Some(1),
                strategy: &strategy(),
                previous: &[],
                now: 1_050,
            });
            assert_eq!(s.message, *want, "{phase:?}");
            assert_eq!(s.wave_text, "2/3");
            let cond = |t: &str| s.conditions.iter().find(|c| c.type_ == t).unwrap().status.clone();
            assert_eq!(cond("Progressing") == "True", *progressing, "{phase:?}");
            assert_eq!(cond("Degraded") == "True", *degraded, "{phase:?}");
            let a = &s.clusters[0];
            assert_eq!((a.wave, a.given.as_str(), a.gate.as_str()), (1, "new", "Healthy"));
            assert_eq!(s.clusters[2].gate, "Unreachable");
            assert_eq!(s.clusters.len(), 4);
            assert_eq!(record_of(&s).as_ref(), Some(&r), "{phase:?}: read back");
        }
        assert_eq!(record_of(&RolloutStatus::default()), None);
    }

    #[test]
    fn messages_name_revisions_by_number() {
        let cases: &[(&str, &str)] = &[
            (
                "revision abc rolls out in 3 waves from revision def",
                "revision 2 rolls out in 3 waves from revision 1",
            ),
            ("revision xyz is on every cluster", "revision xyz is on every cluster"),
        ];
        for (message, want) in cases {
            assert_eq!(with_numbers(message, &[("abc", 2), ("def", 1)]), *want);
        }
    }

    #[test]
    fn control_table() {
        let a = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        let none = Control::default();
        let cases: &[(&str, BTreeMap<String, String>, Control)] = &[
            ("nothing", a(&[]), none),
            ("paused", a(&[(control::PAUSED, "true")]), Control { paused: true, ..none }),
            ("paused false", a(&[(control::PAUSED, "false")]), none),
            ("promote this wave", a(&[(control::PROMOTE, "r2/2")]), Control { skip_soak: true, ..none }),
            ("promote another wave", a(&[(control::PROMOTE, "r2/1")]), none),
            ("promote all", a(&[(control::PROMOTE, "r2/all")]), Control { finish: true, ..none }),
            ("promote of an older revision", a(&[(control::PROMOTE, "r1/all")]), none),
            ("abort", a(&[(control::ABORT, "r2")]), Control { abort: true, ..none }),
            ("abort of an older revision", a(&[(control::ABORT, "r1")]), none),
        ];
        for (name, annotations, want) in cases {
            assert_eq!(control_of(annotations, "r2", 1), *want, "{name}");
        }
    }

    #[test]
    fn the_most_specific_strategy_of_the_namespace_takes_a_template() {
        let spec = |selector: serde_json::Value| -> RolloutStrategySpec {
            serde_json::from_value(serde_json::json!({
                "resourceSelectors": [selector], "waves": {"ratio": "1:2:7"},
            }))
            .unwrap()
        };
        let by_kind = spec(serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment"}));
        let by_name = spec(serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}));
        let labels = BTreeMap::new();
        let meta = |name: &'static str, namespace: &'static str| TemplateMeta {
            api_version: "apps/v1",
            kind: "Deployment",
            namespace,
            name,
            labels: &labels,
        };
        let all = [("shop", "z-all", &by_kind), ("shop", "a-all", &by_kind), ("shop", "web", &by_name)];
        let cases: &[(&str, TemplateMeta, Option<&str>)] = &[
            ("by name wins", meta("web", "shop"), Some("web")),
            ("then the first by name", meta("api", "shop"), Some("a-all")),
            ("another namespace: none", meta("web", "other"), None),
        ];
        for (name, t, want) in cases {
            assert_eq!(pick_strategy(&all, t), *want, "{name}");
        }
    }
}
