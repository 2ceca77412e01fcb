use super::*;
use flotilla_api::policy_failover::{DecisionConditions, StatePreservationRule};
use serde_json::json;

fn ts(s: i64) -> Timestamp {
    Timestamp::from_second(s).unwrap()
}

fn target(name: &str, replicas: i32) -> TargetCluster {
    TargetCluster { name: name.into(), replicas }
}

type DetectCase<'a> = (
    &'a str,
    Vec<(&'a str, i64)>,
    Vec<(&'a str, Health)>,
    i64,
    Vec<(&'a str, i64)>,
    Vec<&'a str>,
    Option<u64>,
);

#[test]
fn an_application_unhealthy_past_its_toleration_fails_over() {
    // (name, since before, health now, now, since after, evicted, recheck ms)
    let cases: Vec<DetectCase> = vec![
        (
            "first seen unhealthy: the clock starts",
            vec![],
            vec![("m1", Health::Unhealthy)],
            100,
            vec![("m1", 100)],
            vec![],
            Some(10_200),
        ),
        (
            "still within the toleration",
            vec![("m1", 100)],
            vec![("m1", Health::Unhealthy)],
            105,
            vec![("m1", 100)],
            vec![],
            Some(5_200),
        ),
        (
            "exactly at the toleration: not yet",
            vec![("m1", 100)],
            vec![("m1", Health::Unhealthy)],
            110,
            vec![("m1", 100)],
            vec![],
            Some(200),
        ),
        (
            "past the toleration: fails over",
            vec![("m1", 100)],
            vec![("m1", Health::Unhealthy)],
            111,
            vec![("m1", 100)],
            vec!["m1"],
            None,
        ),
        (
            "healthy again: forgiven",
            vec![("m1", 100)],
            vec![("m1", Health::Healthy)],
            111,
            vec![],
            vec![],
            None,
        ),
        (
            "unknown keeps the clock but does not fail over",
            vec![("m1", 100)],
            vec![("m1", Health::Unknown)],
            200,
            vec![("m1", 100)],
            vec![],
            None,
        ),
        ("unknown starts no clock", vec![], vec![("m1", Health::Unknown)], 200, vec![], vec![], None),
        (
            "a cluster no longer chosen is forgotten",
            vec![("gone", 1)],
            vec![("m1", Health::Healthy)],
            200,
            vec![],
            vec![],
            None,
        ),
        (
            "each cluster on its own clock",
            vec![("m1", 100)],
            vec![("m1", Health::Unhealthy), ("m2", Health::Unhealthy), ("m3", Health::Healthy)],
            111,
            vec![("m1", 100), ("m2", 111)],
            vec!["m1"],
            Some(10_200),
        ),
    ];
    for (name, before, health, now, want_since, want_evict, want_recheck) in cases {
        let before: BTreeMap<String, Timestamp> =
            before.iter().map(|(c, s)| (c.to_string(), ts(*s))).collect();
        let health: BTreeMap<String, Health> = health.iter().map(|(c, h)| (c.to_string(), *h)).collect();
        let got = detect(&before, &health, 10, ts(now));
        let want_since: BTreeMap<String, Timestamp> =
            want_since.iter().map(|(c, s)| (c.to_string(), ts(*s))).collect();
        assert_eq!(got.unhealthy_since, want_since, "{name}");
        assert_eq!(got.evict, want_evict, "{name}");
        assert_eq!(got.recheck_after, want_recheck.map(Duration::from_millis), "{name}");
    }
}

fn behavior(mode: Option<PurgeMode>, grace: Option<i32>) -> ApplicationFailoverBehavior {
    ApplicationFailoverBehavior {
        decision_conditions: DecisionConditions { toleration_seconds: Some(30) },
        purge_mode: mode,
        grace_period_seconds: grace,
        state_preservation: None,
    }
}

#[test]
fn application_tasks_carry_the_purge_mode_as_karmada_writes_it() {
    // (name, purge mode, grace, want mode, want grace, want suppress)
    type Case<'a> = (&'a str, Option<PurgeMode>, Option<i32>, PurgeMode, Option<i32>, Option<bool>);
    let cases: Vec<Case> = vec![
        ("default: gracious, 600 s", None, None, PurgeMode::Graciously, Some(600), None),
        (
            "gracious with its own grace",
            Some(PurgeMode::Graciously),
            Some(60),
            PurgeMode::Graciously,
            Some(60),
            None,
        ),
        (
            "gracefully is the newer name",
            Some(PurgeMode::Gracefully),
            None,
            PurgeMode::Gracefully,
            Some(600),
            None,
        ),
        ("immediately: no grace", Some(PurgeMode::Immediately), None, PurgeMode::Immediately, None, None),
        ("directly: no grace", Some(PurgeMode::Directly), None, PurgeMode::Directly, None, None),
        ("never: deletion suppressed", Some(PurgeMode::Never), None, PurgeMode::Never, None, Some(true)),
    ];
    for (name, mode, grace, want_mode, want_grace, want_suppress) in cases {
        let before = [target("m1", 2), target("m2", 1)];
        let task = application_task(&before[0], &behavior(mode, grace), BTreeMap::new(), &before, ts(5));
        assert_eq!(task.purge_mode, Some(want_mode), "{name}");
        assert_eq!(task.grace_period_seconds, want_grace, "{name}");
        assert_eq!(task.suppress_deletion, want_suppress, "{name}");
        assert_eq!((task.from_cluster.as_str(), task.replicas), ("m1", 2), "{name}");
        assert_eq!(task.reason, REASON_APPLICATION_FAILURE, "{name}");
        assert_eq!(task.clusters_before_failover, vec!["m1", "m2"], "{name}");
        assert!(task.message.contains("more than 30 s"), "{name}: {}", task.message);
    }
}

#[test]
fn a_task_keeps_its_copy_by_its_purge_mode() {
    let task = |mode: Option<PurgeMode>, grace: Option<i32>, suppress: Option<bool>| GracefulEvictionTask {
        from_cluster: "m1".into(),
        replicas: 1,
        reason: "x".into(),
        message: String::new(),
        creation_timestamp: Time(ts(1_000)),
        producer: String::new(),
        purge_mode: mode,
        grace_period_seconds: grace,
        suppress_deletion: suppress,
        preserved_label_state: BTreeMap::new(),
        clusters_before_failover: Vec::new(),
    };
    // (name, task, new copies healthy, now, remains)
    let cases = vec![
        ("graceful waits for the new copies", task(None, None, None), false, 1_010, true),
        ("graceful ends once they are healthy", task(None, None, None), true, 1_010, false),
        ("graceful ends at the default 600 s", task(None, None, None), false, 1_600, false),
        (
            "graceful ends at its own grace",
            task(Some(PurgeMode::Graciously), Some(30), None),
            false,
            1_030,
            false,
        ),
        ("within its own grace", task(Some(PurgeMode::Gracefully), Some(30), None), false, 1_029, true),
        ("direct never keeps the copy", task(Some(PurgeMode::Directly), None, None), false, 1_000, false),
        (
            "immediately never keeps the copy",
            task(Some(PurgeMode::Immediately), None, None),
            false,
            1_000,
            false,
        ),
        ("never keeps it, whatever", task(Some(PurgeMode::Never), None, Some(true)), true, 99_999, true),
        ("never, released by a person", task(Some(PurgeMode::Never), None, Some(false)), true, 1_001, false),
    ];
    for (name, task, healthy, now, want) in cases {
        assert_eq!(task_remains(&task, healthy, ts(now)), want, "{name}");
    }
}

#[test]
fn json_paths_read_the_status_as_kubectl_would() {
    let status = json!({
        "replicas": 3, "ready": true, "phase": "Running",
        "jobStatus": {"checkpoint": {"id": "chk-42"}},
        "conditions": [{"type": "Available", "status": "False"}],
        "a.b": "dotted"
    });
    // (path, want)
    let cases: Vec<(&str, Result<serde_json::Value, &str>)> = vec![
        ("{.replicas}", Ok(json!(3))),
        ("{ .ready }", Ok(json!(true))),
        (".phase", Ok(json!("Running"))),
        ("phase", Ok(json!("Running"))),
        ("{$.jobStatus.checkpoint.id}", Ok(json!("chk-42"))),
        ("{.conditions[0].status}", Ok(json!("False"))),
        ("{['a.b']}", Ok(json!("dotted"))),
        ("{.missing}", Err("no field \"missing\"")),
        ("{.conditions[3]}", Err("no item 3")),
        ("{.conditions[*].status}", Err("only field names and list indexes")),
        ("{.conditions[?(@.type=='Available')]}", Err("only field names and list indexes")),
        ("{..replicas}", Err("empty field name")),
    ];
    for (path, want) in cases {
        match (json_path(path, &status), want) {
            (Ok(got), Ok(want)) => assert_eq!(got, &want, "{path}"),
            (Err(got), Err(want)) => assert!(got.contains(want), "{path}: {got}"),
            (got, want) => panic!("{path}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn preserved_state_is_read_as_label_values_or_refused_with_the_reason() {
    let rules = |paths: &[(&str, &str)]| StatePreservation {
        rules: paths
            .iter()
            .map(|(alias, path)| StatePreservationRule {
                alias_label_name: alias.to_string(),
                json_path: path.to_string(),
            })
            .collect(),
    };
    let status = json!({"replicas": 2, "restarts": 7, "message": "not a label value!", "id": "chk-42"});
    let got =
        preserved_label_state(&rules(&[("app/replicas", "{.replicas}"), ("ckpt", "{.id}")]), Some(&status));
    assert_eq!(
        got,
        Ok([("app/replicas".to_string(), "2".to_string()), ("ckpt".to_string(), "chk-42".to_string())]
            .into())
    );
    let not_label = preserved_label_state(&rules(&[("m", "{.message}")]), Some(&status)).unwrap_err();
    assert!(not_label.contains("cannot be a label value"), "{not_label}");
    let missing = preserved_label_state(&rules(&[("x", "{.nothing}")]), Some(&status)).unwrap_err();
    assert!(missing.contains("\"x\"") && missing.contains("no field"), "{missing}");
    let unreported = preserved_label_state(&rules(&[("x", "{.replicas}")]), None).unwrap_err();
    assert!(unreported.contains("not been reported"), "{unreported}");
}

#[test]
fn preserved_states_go_to_the_new_copies_and_stay_while_they_do() {
    let task = |before: &[&str], labels: &[(&str, &str)]| GracefulEvictionTask {
        from_cluster: "m1".into(),
        replicas: 1,
        reason: REASON_APPLICATION_FAILURE.into(),
        message: String::new(),
        creation_timestamp: Time(ts(0)),
        producer: String::new(),
        purge_mode: None,
        grace_period_seconds: None,
        suppress_deletion: None,
        preserved_label_state: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        clusters_before_failover: before.iter().map(|c| c.to_string()).collect(),
    };
    let state = |cluster: &str, labels: &[(&str, &str)]| PreservedState {
        cluster: cluster.into(),
        labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    };
    // (name, before, started, chosen, want)
    type Case<'a> =
        (&'a str, Vec<PreservedState>, Vec<GracefulEvictionTask>, Vec<&'a str>, Vec<PreservedState>);
    let cases: Vec<Case> = vec![
        ("nothing preserved", vec![], vec![task(&["m1"], &[])], vec!["m2"], vec![]),
        (
            "the new copy takes the labels",
            vec![],
            vec![task(&["m1"], &[("k", "v")])],
            vec!["m2"],
            vec![state("m2", &[("k", "v")])],
        ),
        (
            "a copy that was there before does not",
            vec![],
            vec![task(&["m1", "m2"], &[("k", "v")])],
            vec!["m2", "m3"],
            vec![state("m3", &[("k", "v")])],
        ),
        (
            "kept while chosen",
            vec![state("m2", &[("k", "v")])],
            vec![],
            vec!["m2"],
            vec![state("m2", &[("k", "v")])],
        ),
        ("dropped once it leaves", vec![state("m2", &[("k", "v")])], vec![], vec!["m3"], vec![]),
        (
            "a later failover's labels win",
            vec![state("m2", &[("k", "old"), ("j", "kept")])],
            vec![task(&["m1"], &[("k", "new")])],
            vec!["m2"],
            vec![state("m2", &[("j", "kept"), ("k", "new")])],
        ),
    ];
    for (name, before, started, chosen, want) in cases {
        let chosen: Vec<TargetCluster> = chosen.iter().map(|c| target(c, 1)).collect();
        assert_eq!(carry_preserved_states(&before, &started, &chosen), want, "{name}");
    }
}

#[test]
fn injected_labels_join_the_template_s_own() {
    let mut manifest = json!({"metadata": {"name": "web", "labels": {"app": "web", "k": "template"}}});
    inject_labels(&mut manifest, &[("k".to_string(), "preserved".to_string())].into());
    assert_eq!(manifest["metadata"]["labels"], json!({"app": "web", "k": "preserved"}));
    let mut bare = json!({"metadata": {"name": "web"}});
    inject_labels(&mut bare, &[("k".to_string(), "v".to_string())].into());
    assert_eq!(bare["metadata"]["labels"], json!({"k": "v"}));
}

#[test]
fn failover_rules_are_checked_on_stored_policies() {
    use flotilla_api::policy_failover::ClusterFailoverBehavior;
    let app = |mode, grace| FailoverBehavior { application: Some(behavior(mode, grace)), cluster: None };
    let cluster = |mode| FailoverBehavior {
        application: None,
        cluster: Some(ClusterFailoverBehavior { purge_mode: mode, state_preservation: None }),
    };
    // (name, failover, want an error mentioning)
    let cases: Vec<(&str, FailoverBehavior, Option<&str>)> = vec![
        ("grace with the default purge", app(None, Some(30)), None),
        ("grace with Graciously", app(Some(PurgeMode::Graciously), Some(30)), None),
        ("grace with Gracefully", app(Some(PurgeMode::Gracefully), Some(30)), None),
        ("grace with Never", app(Some(PurgeMode::Never), Some(30)), Some("gracePeriodSeconds")),
        ("grace with Immediately", app(Some(PurgeMode::Immediately), Some(30)), Some("gracePeriodSeconds")),
        ("never without grace", app(Some(PurgeMode::Never), None), None),
        ("cluster directly", cluster(Some(PurgeMode::Directly)), None),
        ("cluster gracefully", cluster(Some(PurgeMode::Gracefully)), None),
        ("cluster never", cluster(Some(PurgeMode::Never)), Some("cluster.purgeMode")),
        (
            "cluster graciously (application's old name)",
            cluster(Some(PurgeMode::Graciously)),
            Some("Directly or Gracefully"),
        ),
    ];
    for (name, failover, want) in cases {
        let errors = rule_errors(&failover);
        match want {
            None => assert!(errors.is_empty(), "{name}: {errors:?}"),
            Some(needle) => assert!(errors.len() == 1 && errors[0].contains(needle), "{name}: {errors:?}"),
        }
    }
}
