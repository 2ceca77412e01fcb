use super::*;

fn target(name: &str, labels: &[(&str, &str)]) -> TargetCluster {
    TargetCluster {
        name: name.into(),
        labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    }
}

fn strategy(waves: WavePlan) -> Strategy {
    Strategy {
        waves,
        canary_names: Vec::new(),
        canary_labels: BTreeMap::new(),
        soak_seconds: 60,
        progress_deadline_seconds: 300,
    }
}

fn members(n: usize) -> Vec<TargetCluster> {
    (1..=n).map(|i| target(&format!("m{i:02}"), &[])).collect()
}

/// (name, shares, clusters, canaries, wanted sizes)
type SizeCase = (&'static str, &'static [u32], usize, usize, &'static [usize]);

#[test]
fn wave_sizes_table() {
    let cases: &[SizeCase] = &[
        ("1:2:7 over 10", &[1, 2, 7], 10, 0, &[1, 2, 7]),
        ("1:2:7 over 4: each wave at least one", &[1, 2, 7], 4, 0, &[1, 1, 2]),
        ("1:2:7 over 2: fewer waves", &[1, 2, 7], 2, 0, &[1, 1]),
        ("1:2:7 over 1", &[1, 2, 7], 1, 0, &[1]),
        ("1:2:7 over 20", &[1, 2, 7], 20, 0, &[2, 4, 14]),
        ("canaries widen the first wave", &[1, 2, 7], 10, 3, &[3, 1, 6]),
        ("one share: one wave", &[5], 7, 0, &[7]),
        ("zero shares are ignored", &[0, 1, 1], 4, 0, &[2, 2]),
        ("no clusters", &[1, 2, 7], 0, 0, &[]),
    ];
    for (name, shares, n, canaries, want) in cases {
        let got = wave_sizes(shares, *n, *canaries);
        assert_eq!(got, *want, "{name}");
        assert_eq!(got.iter().sum::<usize>(), *n, "{name}: every cluster once");
    }
}

#[test]
fn ratio_waves_are_by_name_with_canaries_first_whatever_the_order() {
    let mut targets = members(10);
    targets.reverse();
    targets.push(target("m05", &[]));
    let mut s = strategy(WavePlan::Ratio(vec![1, 2, 7]));
    let waves = plan_waves(&s, &targets);
    assert_eq!(waves[0], ["m01"]);
    assert_eq!(waves[1], ["m02", "m03"]);
    assert_eq!(waves[2].len(), 7);
    s.canary_names = vec!["m07".into()];
    s.canary_labels = BTreeMap::from([("canary".to_string(), "true".to_string())]);
    targets.push(target("m11", &[("canary", "true")]));
    let waves = plan_waves(&s, &targets);
    assert_eq!(waves[0], ["m07", "m11"]);
    assert_eq!(waves.iter().map(Vec::len).sum::<usize>(), 11);
}

#[test]
fn stage_waves_follow_the_labels_and_the_rest_go_last() {
    let stage = |v: &str| BTreeMap::from([("env".to_string(), v.to_string())]);
    let s = strategy(WavePlan::Stages(vec![stage("test"), stage("pre"), stage("prod")]));
    let targets = [
        target("a", &[("env", "prod")]),
        target("b", &[("env", "test")]),
        target("c", &[]),
        target("d", &[("env", "prod")]),
        target("e", &[("env", "test")]),
    ];
    let waves = plan_waves(&s, &targets);
    assert_eq!(waves, vec![vec!["b", "e"], vec!["a", "d"], vec!["c"]], "no pre cluster: no pre wave");
}

const NOW: i64 = 1_000;

fn waves() -> Vec<Vec<String>> {
    vec![vec!["a".into()], vec!["b".into(), "c".into()], vec!["d".into()]]
}

fn report(name: &str, revision: &str, health: Health) -> ClusterReport {
    ClusterReport { name: name.into(), revision: Some(revision.into()), health }
}

fn healthy(names: &[&str], revision: &str) -> Vec<ClusterReport> {
    names.iter().map(|n| report(n, revision, Health::Healthy)).collect()
}

fn record(wave: usize, phase: Phase, soak: Option<i64>) -> Record {
    Record {
        revision: "r2".into(),
        waves: waves(),
        stable: Some("r1".into()),
        wave,
        wave_started_at: NOW - 100,
        soak_started_at: soak,
        phase,
        failure: None,
    }
}

fn input<'a>(
    waves: &'a [Vec<String>],
    record: Option<&'a Record>,
    reports: &'a [ClusterReport],
    control: Control,
) -> StepInput<'a> {
    StepInput {
        waves,
        revision: "r2",
        record,
        reports,
        control,
        soak_seconds: 60,
        progress_deadline_seconds: 300,
        now: NOW,
    }
}

fn new_upto(step: &Step) -> Vec<&str> {
    step.assigned.iter().filter(|(_, a)| **a == Assigned::New).map(|(c, _)| c.as_str()).collect()
}

struct Case {
    name: &'static str,
    record: Option<Record>,
    reports: Vec<ClusterReport>,
    control: Control,
    want_phase: Phase,
    want_wave: usize,
    want_new: &'static [&'static str],
    want_event: Option<&'static str>,
}

#[test]
fn step_table() {
    let w = waves();
    let complete_r1 = Record {
        revision: "r1".into(),
        stable: Some("r1".into()),
        phase: Phase::Complete,
        ..record(2, Phase::Complete, None)
    };
    let cases = vec![
        Case {
            name: "a first revision goes everywhere at once",
            record: None,
            reports: vec![],
            control: Control::default(),
            want_phase: Phase::Complete,
            want_wave: 2,
            want_new: &["a", "b", "c", "d"],
            want_event: Some("RolloutComplete"),
        },
        Case {
            name: "a new revision after a complete one starts at wave 1",
            record: Some(complete_r1.clone()),
            reports: healthy(&["a", "b", "c", "d"], "r1"),
            control: Control::default(),
            want_phase: Phase::Progressing,
            want_wave: 0,
            want_new: &["a"],
            want_event: Some("RolloutStarted"),
        },
        Case {
            name: "a wave not yet healthy on the revision keeps rolling",
            record: Some(record(0, Phase::Progressing, None)),
            reports: vec![report("a", "r1", Health::Healthy)],
            control: Control::default(),
            want_phase: Phase::Progressing,
            want_wave: 0,
            want_new: &["a"],
            want_event: None,
        },
        Case {
            name: "a healthy wave soaks",
            record: Some(record(0, Phase::Progressing, None)),
            reports: healthy(&["a"], "r2"),
            control: Control::default(),
            want_phase: Phase::Soaking,
            want_wave: 0,
            want_new: &["a"],
            want_event: None,
        },
        Case {
            name: "a soaked wave hands over to the next",
            record: Some(record(0, Phase::Soaking, Some(NOW - 60))),
            reports: healthy(&["a"], "r2"),
            control: Control::default(),
            want_phase: Phase::Progressing,
            want_wave: 1,
            want_new: &["a", "b", "c"],
            want_event: Some("WaveStarted"),
        },
        Case {
            name: "promote skips the soak",
            record: Some(record(0, Phase::Soaking, Some(NOW - 1))),
            reports: healthy(&["a"], "r2"),
            control: Control { skip_soak: true, ..Control::default() },
            want_phase: Phase::Progressing,
            want_wave: 1,
            want_new: &["a", "b", "c"],
            want_event: Some("WaveStarted"),
        },
        Case {
            name: "finish sends every wave",
            record: Some(record(0, Phase::Soaking, Some(NOW - 1))),
            reports: healthy(&["a"], "r2"),
            control: Control { finish: true, ..Control::default() },
            want_phase: Phase::Progressing,
            want_wave: 2,
            want_new: &["a", "b", "c", "d"],
            want_event: None,
        },
        Case {
            name: "paused: the next wave waits",
            record: Some(record(0, Phase::Soaking, Some(NOW - 600))),
            reports: healthy(&["a"], "r2"),
            control: Control { paused: true, ..Control::default() },
            want_phase: Phase::Paused,
            want_wave: 0,
            want_new: &["a"],
            want_event: None,
        },
        Case {
            name: "the last wave soaked: complete, the revision is stable",
            record: Some(record(2, Phase::Soaking, Some(NOW - 60))),
            reports: healthy(&["a", "b", "c", "d"], "r2"),
            control: Control::default(),
            want_phase: Phase::Complete,
            want_wave: 2,
            want_new: &["a", "b", "c", "d"],
            want_event: Some("RolloutComplete"),
        },
        Case {
            name: "a failed cluster rolls everything back, even while paused",
            record: Some(record(1, Phase::Progressing, None)),
            reports: vec![
                report("a", "r2", Health::Healthy),
                report("b", "r2", Health::Failed("pod web-1 CrashLoopBackOff (3 restarts)".into())),
            ],
            control: Control { paused: true, ..Control::default() },
            want_phase: Phase::RolledBack,
            want_wave: 1,
            want_new: &[],
            want_event: Some("RolledBack"),
        },
        Case {
            name: "a failure in a later wave's cluster does not count before its wave",
            record: Some(record(0, Phase::Progressing, None)),
            reports: vec![
                report("a", "r2", Health::Healthy),
                report("d", "r1", Health::Failed("old".into())),
            ],
            control: Control::default(),
            want_phase: Phase::Soaking,
            want_wave: 0,
            want_new: &["a"],
            want_event: None,
        },
        Case {
            name: "a wave past its deadline rolls back",
            record: Some(Record { wave_started_at: NOW - 300, ..record(0, Phase::Progressing, None) }),
            reports: vec![report("a", "r2", Health::Progressing)],
            control: Control::default(),
            want_phase: Phase::RolledBack,
            want_wave: 0,
            want_new: &[],
            want_event: Some("RolledBack"),
        },
        Case {
            name: "abort rolls back now",
            record: Some(record(1, Phase::Soaking, Some(NOW - 1))),
            reports: healthy(&["a", "b", "c"], "r2"),
            control: Control { abort: true, ..Control::default() },
            want_phase: Phase::RolledBack,
            want_wave: 1,
            want_new: &[],
            want_event: Some("RolledBack"),
        },
        Case {
            name: "a failed revision stays rolled back while it is the desired one",
            record: Some(Record {
                phase: Phase::RolledBack,
                failure: Some(Failure {
                    revision: "r2".into(),
                    cluster: Some("a".into()),
                    reason: "x".into(),
                }),
                ..record(0, Phase::RolledBack, None)
            }),
            reports: healthy(&["a", "b", "c", "d"], "r1"),
            control: Control::default(),
            want_phase: Phase::RolledBack,
            want_wave: 0,
            want_new: &[],
            want_event: None,
        },
    ];
    for case in cases {
        let step = step(&input(&w, case.record.as_ref(), &case.reports, case.control));
        assert_eq!(step.record.phase, case.want_phase, "{}: {step:#?}", case.name);
        assert_eq!(step.record.wave, case.want_wave, "{}", case.name);
        assert_eq!(new_upto(&step), case.want_new, "{}", case.name);
        assert_eq!(
            step.events.first().map(|e| e.0.as_str()),
            case.want_event,
            "{}: {:?}",
            case.name,
            step.events
        );
        assert_eq!(step.assigned.len(), 4, "{}: every cluster assigned", case.name);
    }
}

#[test]
fn a_rollback_says_which_cluster_and_why_and_a_new_revision_tries_again_from_the_stable_one() {
    let w = waves();
    let failing = [
        report("a", "r2", Health::Healthy),
        report("b", "r2", Health::Failed("pod web-1: CrashLoopBackOff, 3 restarts".into())),
    ];
    let rolling = record(1, Phase::Progressing, None);
    let back = step(&input(&w, Some(&rolling), &failing, Control::default()));
    let failure = back.record.failure.clone().unwrap();
    assert_eq!((failure.revision.as_str(), failure.cluster.as_deref()), ("r2", Some("b")));
    assert!(failure.reason.contains("CrashLoopBackOff"));
    assert!(back.events[0].1.contains("rolled back to revision r1 (b failed)"), "{:?}", back.events);
    // r3 supersedes: wave 1 from r1, the failure forgotten.
    let next =
        step(&StepInput { revision: "r3", ..input(&w, Some(&back.record), &failing, Control::default()) });
    assert_eq!((next.record.phase, next.record.wave), (Phase::Progressing, 0));
    assert_eq!(next.record.stable.as_deref(), Some("r1"));
    assert_eq!(next.record.failure, None);
    // A change mid-rollout starts over from the stable revision too.
    let soaking = record(1, Phase::Soaking, Some(NOW - 1));
    let superseded =
        step(&StepInput { revision: "r3", ..input(&w, Some(&soaking), &[], Control::default()) });
    assert_eq!(superseded.record.stable.as_deref(), Some("r1"));
    assert_eq!(new_upto(&superseded), ["a"]);
}

#[test]
fn a_deadline_failure_names_the_clusters_still_progressing() {
    let w = waves();
    let late = Record { wave: 1, wave_started_at: NOW - 301, ..record(1, Phase::Progressing, None) };
    let reports = [
        report("a", "r2", Health::Healthy),
        report("b", "r2", Health::Healthy),
        report("c", "r1", Health::Progressing),
    ];
    let got = step(&input(&w, Some(&late), &reports, Control::default()));
    let failure = got.record.failure.unwrap();
    assert_eq!(failure.cluster.as_deref(), Some("c"));
    assert!(
        failure.reason.contains("wave 2 not healthy 301s after it started (deadline 300s): c"),
        "{}",
        failure.reason
    );
}

#[test]
fn a_spec_becomes_a_strategy_or_says_why_not() {
    use flotilla_api::rollout::{Canary, RolloutStrategySpec, Stage, Waves};
    let spec = |waves: Waves, canary: Canary| RolloutStrategySpec {
        resource_selectors: Vec::new(),
        waves,
        canary,
        soak_seconds: 30,
        progress_deadline_seconds: 120,
        max_restarts: 2,
        metric_gates: Vec::new(),
        history_limit: 10,
    };
    let ratio = |r: &str| Waves { ratio: Some(r.into()), stages: None };
    let got = from_spec(&spec(ratio("1:2:7"), Canary::default())).unwrap();
    assert_eq!(got.waves, WavePlan::Ratio(vec![1, 2, 7]));
    assert_eq!((got.soak_seconds, got.progress_deadline_seconds), (30, 120));
    let stages = Waves {
        ratio: None,
        stages: Some(vec![Stage {
            name: "test".into(),
            cluster_labels: BTreeMap::from([("env".to_string(), "test".to_string())]),
        }]),
    };
    assert!(
        matches!(from_spec(&spec(stages.clone(), Canary::default())).unwrap().waves, WavePlan::Stages(s) if s.len() == 1)
    );
    let canary = Canary { cluster_names: vec!["m1".into()], ..Default::default() };
    assert!(from_spec(&spec(stages, canary)).unwrap_err().contains("ratio waves only"));
    for bad in ["1:0:7", "one", "", "1::2"] {
        assert!(
            from_spec(&spec(ratio(bad), Canary::default())).unwrap_err().contains("not a ratio"),
            "{bad}"
        );
    }
    let neither = Waves { ratio: None, stages: None };
    assert!(from_spec(&spec(neither, Canary::default())).unwrap_err().contains("exactly one"));
}

#[test]
fn gate_table() {
    use flotilla_api::work::{AggregatedStatusItem, Health as Reported, HealthDetail};
    let item = |applied: bool, message: &str, health: Reported, detail: Option<(&str, Option<i32>)>| {
        AggregatedStatusItem {
            cluster_name: "m1".into(),
            applied,
            applied_message: message.into(),
            health,
            health_detail: detail.map(|(reason, restarts)| HealthDetail {
                reason: reason.into(),
                message: "container main of pod web-1".into(),
                restart_count: restarts,
            }),
            status: None,
            replicas_owner: None,
        }
    };
    let cases = [
        ("applied and healthy", item(true, "", Reported::Healthy, None), Health::Healthy),
        ("not applied yet", item(false, "", Reported::Unknown, None), Health::Progressing),
        (
            "refused by the member",
            item(false, "conflict with an object Flotilla did not create", Reported::Unknown, None),
            Health::Failed("m1: not applied: conflict with an object Flotilla did not create".into()),
        ),
        (
            "a crash loop",
            item(true, "", Reported::Unhealthy, Some(("CrashLoopBackOff", Some(3)))),
            Health::Failed("m1: CrashLoopBackOff: container main of pod web-1".into()),
        ),
        (
            "an image that cannot be pulled",
            item(true, "", Reported::Unhealthy, Some(("ImagePullBackOff", None))),
            Health::Failed("m1: ImagePullBackOff: container main of pod web-1".into()),
        ),
        (
            "too many restarts, though healthy now",
            item(true, "", Reported::Healthy, Some(("Progressing", Some(3)))),
            Health::Failed("m1: 3 restarts (more than 2): container main of pod web-1".into()),
        ),
        (
            "restarts within the limit",
            item(true, "", Reported::Unhealthy, Some(("Progressing", Some(2)))),
            Health::Progressing,
        ),
        (
            "unschedulable waits for its deadline",
            item(true, "", Reported::Unhealthy, Some(("Unschedulable", None))),
            Health::Progressing,
        ),
    ];
    for (name, item, want) in cases {
        assert_eq!(gate(&item, 2), want, "{name}");
    }
}

#[test]
fn waves_are_kept_for_a_revision_and_joiners_wait_for_the_last_wave() {
    let s = strategy(WavePlan::Ratio(vec![1, 2, 7]));
    let ten = members(10);
    let rolling = Record {
        revision: "r2".into(),
        waves: plan_waves(&s, &ten),
        wave: 1,
        ..record(1, Phase::Progressing, None)
    };
    // m00 sorts first: a fresh plan would make it the canary.
    let mut joined = ten.clone();
    joined.push(target("m00", &[]));
    let left: Vec<TargetCluster> = ten.iter().filter(|t| t.name != "m02").cloned().collect();
    let stage = |v: &str| BTreeMap::from([("env".to_string(), v.to_string())]);
    let staged = strategy(WavePlan::Stages(vec![stage("test"), stage("pre"), stage("prod")]));
    let staged_targets = [target("t", &[("env", "test")]), target("p", &[("env", "pre")]), target("x", &[])];
    let staged_rolling = Record {
        revision: "r2".into(),
        waves: plan_waves(&staged, &staged_targets),
        wave: 0,
        ..record(0, Phase::Progressing, None)
    };
    let mut staged_joined = staged_targets.to_vec();
    staged_joined.push(target("p2", &[("env", "pre")]));
    let mut staged_late = staged_rolling.clone();
    staged_late.wave = 1;
    type WavesCase<'a> =
        (&'a str, &'a Strategy, &'a [TargetCluster], Option<&'a Record>, &'a str, Vec<&'a str>);
    let cases: Vec<WavesCase> = vec![
        ("no record: a fresh plan", &s, &joined, None, "r2", vec!["m00", "m01"]),
        ("a joiner goes last, the canary stays", &s, &joined, Some(&rolling), "r2", vec!["m01"]),
        ("a new revision: a fresh plan", &s, &joined, Some(&rolling), "r3", vec!["m00", "m01"]),
        ("a cluster that left drops out", &s, &left, Some(&rolling), "r2", vec!["m01"]),
    ];
    for (name, strategy, targets, record, revision, first) in cases {
        let got = waves_for(strategy, targets, record, revision);
        assert_eq!(got[0], first, "{name}");
        assert_eq!(got.iter().map(Vec::len).sum::<usize>(), targets.len(), "{name}: every cluster once");
        if name.starts_with("a joiner") {
            assert!(got.last().unwrap().contains(&"m00".to_string()), "{name}: {got:?}");
            assert_eq!(got[1], ["m02", "m03"], "{name}: the waves reached stay as they were");
        }
        if name.starts_with("a cluster that left") {
            assert_eq!(got[1], ["m03"], "{name}");
        }
    }
    // Stages: a joiner whose stage is still ahead goes there, else last.
    let got = waves_for(&staged, &staged_joined, Some(&staged_rolling), "r2");
    assert_eq!(got[1], ["p", "p2"]);
    let got = waves_for(&staged, &staged_joined, Some(&staged_late), "r2");
    assert_eq!(got[1], ["p"]);
    assert_eq!(got[2], ["x", "p2"]);
}

#[test]
fn an_unreachable_cluster_neither_passes_nor_fails_a_wave() {
    let w = waves();
    let unreachable = |n: &str| ClusterReport { name: n.into(), revision: None, health: Health::Unreachable };
    // Wave 2 (b, c): c cannot be reached, b is healthy: the wave soaks.
    let rolling = record(1, Phase::Progressing, None);
    let reports = [report("a", "r2", Health::Healthy), report("b", "r2", Health::Healthy), unreachable("c")];
    let got = step(&input(&w, Some(&rolling), &reports, Control::default()));
    assert_eq!(got.record.phase, Phase::Soaking);
    // Wave 3 is d alone, unreachable: it waits...
    let last = record(2, Phase::Progressing, None);
    let reports = [
        report("a", "r2", Health::Healthy),
        report("b", "r2", Health::Healthy),
        report("c", "r2", Health::Healthy),
        unreachable("d"),
    ];
    let got = step(&input(&w, Some(&last), &reports, Control::default()));
    assert_eq!(got.record.phase, Phase::Progressing);
    // ... and fails at its deadline, naming it.
    let late = Record { wave_started_at: NOW - 301, ..last };
    let got = step(&input(&w, Some(&late), &reports, Control::default()));
    let failure = got.record.failure.unwrap();
    assert_eq!(failure.cluster.as_deref(), Some("d"));
    assert!(failure.reason.contains("d (unreachable)"), "{}", failure.reason);
}

#[test]
fn report_from_work_table() {
    use flotilla_api::work::{Work, WorkStatus};
    let work = |annotated: &str, observed: &str, health: &str, detail: Option<&str>, refused: bool| -> Work {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "work.flotilla.io/v1alpha1", "kind": "Work",
            "metadata": {"name": "w", "namespace": "flotilla-cluster-a",
                "annotations": {"work.flotilla.io/spec-hash": "h2", REVISION_ANNOTATION: annotated}},
            "spec": {"manifests": []},
            "status": serde_json::to_value(WorkStatus {
                observed_spec_hash: observed.into(),
                usage: Vec::new(),
                member_warnings: Vec::new(),
                conditions: serde_json::from_value(serde_json::json!([{
                    "type": "Applied", "status": if refused { "False" } else { "True" },
                    "reason": if refused { "Conflict" } else { "Applied" },
                    "message": if refused { "web exists and was not created by Flotilla" } else { "applied" },
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }])).unwrap(),
                manifest_statuses: serde_json::from_value(serde_json::json!([{
                    "identifier": {"ordinal": 0, "version": "v1", "kind": "Deployment", "name": "web", "namespace": "shop"},
                    "applied": true, "health": health, "generation": 2,
                    "status": {"observedGeneration": 2},
                    "healthDetail": detail.map(|r| serde_json::json!({"reason": r, "message": "pod web-1"})),
                }])).unwrap(),
            }).unwrap(),
        }))
        .unwrap()
    };
    let applied_healthy = work("r2", "h2", "Healthy", None, false);
    let not_yet = work("r2", "h1", "Healthy", None, false);
    let refused_before = work("r2", "h1", "Healthy", None, true);
    let crashing = work("r2", "h2", "Unhealthy", Some("CrashLoopBackOff"), false);
    let refused = work("r2", "h2", "Unknown", None, true);
    /// (name, the Work, reachable, the revision reported, the gate)
    type Case<'a> = (&'a str, Option<&'a Work>, bool, Option<&'a str>, Health);
    let cases: &[Case] = &[
        ("applied and healthy", Some(&applied_healthy), true, Some("r2"), Health::Healthy),
        ("the member has not applied it yet", Some(&not_yet), true, None, Health::Progressing),
        ("no Work yet", None, true, None, Health::Progressing),
        ("refused an older spec: still on its way", Some(&refused_before), true, None, Health::Progressing),
        ("unreachable", Some(&applied_healthy), false, None, Health::Unreachable),
    ];
    for (name, w, reachable, revision, health) in cases {
        let got = report_from_work("a", *w, *reachable, 2);
        assert_eq!(got.revision.as_deref(), *revision, "{name}");
        assert_eq!(got.health, *health, "{name}");
    }
    let got = report_from_work("a", Some(&crashing), true, 2);
    assert!(matches!(&got.health, Health::Failed(why) if why.contains("CrashLoopBackOff")), "{got:?}");
    let got = report_from_work("a", Some(&refused), true, 2);
    assert!(matches!(&got.health, Health::Failed(why) if why.contains("not created by Flotilla")), "{got:?}");
}
