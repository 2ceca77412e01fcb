use super::*;
use flotilla_api::interpreter::InterpreterTarget;
use serde_json::json;

fn clone_set_spec() -> WorkloadInterpreterSpec {
    WorkloadInterpreterSpec {
        target: InterpreterTarget { api_version: "apps.kruise.io/v1alpha1".into(), kind: "CloneSet".into() },
        replicas_path: Some("spec.replicas".into()),
        pod_template_path: Some("spec.template".into()),
        status_counts: vec!["replicas".into(), "readyReplicas".into(), "rollout.updated".into()],
        health: Some(HealthRule {
            expression: "has(object.status) && object.status.readyReplicas >= object.spec.replicas".into(),
            message: Some(
                "'ready ' + string(object.status.readyReplicas) + ' of ' + string(object.spec.replicas)"
                    .into(),
            ),
        }),
    }
}

const NAME: &str = "cloneset.v1alpha1.apps.kruise.io";

fn clone_set() -> Interpreter {
    Interpreter::from_spec(NAME, &clone_set_spec()).unwrap()
}

fn clone_set_object(replicas: Option<i64>) -> Value {
    let mut object = json!({
        "apiVersion": "apps.kruise.io/v1alpha1", "kind": "CloneSet",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"template": {"spec": {
            "serviceAccountName": "web-sa",
            "containers": [{"name": "app", "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}},
                "envFrom": [{"configMapRef": {"name": "web-config"}}]}]}}}
    });
    if let Some(r) = replicas {
        object["spec"]["replicas"] = r.into();
    }
    object
}

#[test]
fn field_paths() {
    let cases: &[(&str, Result<&str, &str>)] = &[
        ("spec.replicas", Ok("spec.replicas")),
        ("status", Ok("status")),
        ("_a.b_2", Ok("_a.b_2")),
        ("", Err("not a dotted path")),
        ("spec..replicas", Err("not a dotted path")),
        ("spec.replicas[0]", Err("not a dotted path")),
        ("spec.2x", Err("not a dotted path")),
        ("/spec/replicas", Err("not a dotted path")),
    ];
    for (path, want) in cases {
        match (FieldPath::parse(path), want) {
            (Ok(p), Ok(w)) => assert_eq!(p.to_string(), *w, "{path}"),
            (Err(e), Err(w)) => assert!(e.contains(w), "{path}: {e}"),
            (got, _) => panic!("{path}: {got:?}"),
        }
    }
    let long = vec!["a"; 200].join(".");
    assert!(FieldPath::parse(&long).unwrap_err().contains("longer"));

    let path = FieldPath::parse("spec.scale.replicas").unwrap();
    let mut object = json!({"spec": {"other": 1}});
    assert_eq!(path.get(&object), None);
    path.set(&mut object, 4.into());
    assert_eq!(object, json!({"spec": {"other": 1, "scale": {"replicas": 4}}}));
    assert_eq!(path.get(&object), Some(&json!(4)));
    // A scalar on the way is left alone.
    let mut scalar = json!({"spec": 3});
    path.set(&mut scalar, 4.into());
    assert_eq!(scalar, json!({"spec": 3}));
}

#[test]
fn judging_interpreters() {
    type Edit = fn(&mut WorkloadInterpreterSpec);
    let cases: &[(&str, &str, Edit, &[&str])] = &[
        ("valid", NAME, |_| {}, &[]),
        ("wrong name", "clonesets", |_| {}, &["metadata.name: must be cloneset.v1alpha1.apps.kruise.io"]),
        (
            "built-in",
            "deployment.v1.apps",
            |s| s.target = InterpreterTarget { api_version: "apps/v1".into(), kind: "Deployment".into() },
            &["spec.target: apps/v1 Deployment is a built-in kind"],
        ),
        (
            "core",
            "pod.v1.",
            |s| s.target = InterpreterTarget { api_version: "v1".into(), kind: "Pod".into() },
            &["spec.target: v1 Pod is a built-in kind"],
        ),
        (
            "bad path",
            NAME,
            |s| s.replicas_path = Some("spec.replicas[0]".into()),
            &["spec.replicasPath: path \"spec.replicas[0]\" is not a dotted path"],
        ),
        (
            "outside spec",
            NAME,
            |s| s.replicas_path = Some("status.replicas".into()),
            &["spec.replicasPath: must lie under spec"],
        ),
        ("bad count", NAME, |s| s.status_counts.push("a-b".into()), &["spec.statusCounts[3]: path \"a-b\""]),
        (
            "bad cel",
            NAME,
            |s| s.health.as_mut().unwrap().expression = "object.status.ready >=".into(),
            &["spec.health.expression: does not compile"],
        ),
        (
            "bad message",
            NAME,
            |s| s.health.as_mut().unwrap().message = Some("self.x".into()),
            &["spec.health.message: unknown variable 'self'"],
        ),
    ];
    for (name, object_name, edit, want) in cases {
        let mut spec = clone_set_spec();
        edit(&mut spec);
        let judged = Interpreter::from_spec(object_name, &spec);
        let condition = valid_condition(&judged, Some(3));
        assert_eq!(condition.observed_generation, Some(3));
        match judged {
            Ok(_) => {
                assert!(want.is_empty(), "{name}: accepted");
                assert_eq!((condition.status, condition.reason.as_str()), ("True", "Valid"), "{name}");
            }
            Err(problems) => {
                assert_eq!(problems.len(), want.len(), "{name}: {problems:?}");
                for (p, w) in problems.iter().zip(*want) {
                    assert!(p.starts_with(w), "{name}: {p}");
                }
                assert_eq!(condition.status, "False", "{name}");
                assert!(condition.message.contains(&problems[0]), "{name}");
            }
        }
    }
}

#[test]
fn replicas_requests_and_dependencies_by_path() {
    let interpreter = clone_set();
    let with = Some(&interpreter);
    let mut object = clone_set_object(Some(6));
    assert_eq!(replicas(&object, with), Some(6));
    assert_eq!(replicas(&clone_set_object(None), with), Some(1), "absent: 1, as for Deployments");
    assert_eq!(replicas(&object, None), None, "a custom kind without interpreter has no replicas");
    set_replicas(&mut object, 3, with);
    assert_eq!(object["spec"]["replicas"], 3);
    let mut stripped = object.clone();
    without_replicas(&mut stripped, with);
    assert!(stripped["spec"].get("replicas").is_none());
    assert!(stripped["spec"].get("template").is_some());
    let mut untouched = clone_set_object(Some(6));
    set_replicas(&mut untouched, 3, None);
    assert_eq!(untouched["spec"]["replicas"], 6);

    let requests = replica_requirements(&object, with);
    assert_eq!(requests["cpu"], Quantity("250m".into()));
    assert_eq!(requests["memory"], Quantity("64Mi".into()));
    assert!(replica_requirements(&object, None).is_empty());
    let deps: Vec<(String, String)> =
        dependencies(&object, with).into_iter().map(|d| (d.kind, d.name)).collect();
    assert_eq!(
        deps,
        vec![("ConfigMap".to_string(), "web-config".to_string()), ("ServiceAccount".into(), "web-sa".into())]
    );

    // Built-in kinds keep the built-in behaviour whatever is passed.
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"replicas": 4}});
    assert_eq!(replicas(&deployment, None), Some(4));
    // An interpreter without a replicas path: no replicas.
    let mut spec = clone_set_spec();
    spec.replicas_path = None;
    spec.pod_template_path = None;
    let no_replicas = Interpreter::from_spec(NAME, &spec).unwrap();
    assert_eq!(replicas(&object, Some(&no_replicas)), None);
}

#[test]
fn status_counts_are_summed_at_their_paths() {
    let interpreter = clone_set();
    let statuses = [
        json!({"replicas": 3, "readyReplicas": 3, "rollout": {"updated": 2}, "extra": 9}),
        json!({"replicas": 3, "readyReplicas": 1}),
    ];
    let members = vec![
        MemberStatus { cluster: "m1", status: Some(&statuses[0]) },
        MemberStatus { cluster: "m2", status: Some(&statuses[1]) },
        MemberStatus { cluster: "m3", status: None },
    ];
    let status = aggregate_status(&interpreter, Some(5), true, &members, None).unwrap();
    assert_eq!(
        status,
        json!({"observedGeneration": 5, "replicas": 6, "readyReplicas": 4, "rollout": {"updated": 2}})
    );
    let not_current = aggregate_status(&interpreter, Some(5), false, &[], None).unwrap();
    assert_eq!(not_current, json!({"replicas": 0, "readyReplicas": 0, "rollout": {"updated": 0}}));

    let healthy = Condition {
        type_: "Healthy".into(),
        status: "False".into(),
        reason: "Unhealthy".into(),
        message: "m2: ready 1 of 3".into(),
        last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        ),
        observed_generation: None,
    };
    let with_health = aggregate_status(&interpreter, None, true, &members, Some(&healthy)).unwrap();
    assert_eq!(with_health["conditions"][0]["type"], "Healthy");

    let mut spec = clone_set_spec();
    spec.status_counts.clear();
    assert_eq!(
        aggregate_status(&Interpreter::from_spec(NAME, &spec).unwrap(), None, true, &members, None),
        None
    );
}

#[test]
fn health_by_rule() {
    let rules = vec![clone_set().health_rule().unwrap()];
    let with_status = |status: Value| {
        let mut object = clone_set_object(Some(3));
        object["status"] = status;
        object
    };
    struct Case {
        name: &'static str,
        object: Value,
        want: Option<(Health, Option<(&'static str, &'static str)>)>,
    }
    let cases = vec![
        Case {
            name: "ready",
            object: with_status(json!({"readyReplicas": 3})),
            want: Some((Health::Healthy, None)),
        },
        Case {
            name: "not ready, with the message",
            object: with_status(json!({"readyReplicas": 1})),
            want: Some((Health::Unhealthy, Some((REASON_HEALTH_RULE, "ready 1 of 3")))),
        },
        Case {
            name: "no status yet is unhealthy (has())",
            object: clone_set_object(Some(3)),
            want: Some((Health::Unhealthy, Some((REASON_HEALTH_RULE, "the health expression")))),
        },
        Case {
            name: "a missing field is unknown",
            object: with_status(json!({"other": 1})),
            want: Some((Health::Unknown, Some((REASON_HEALTH_RULE_FAILED, "could not be evaluated")))),
        },
        Case {
            name: "other kinds are not judged here",
            object: json!({"apiVersion": "apps/v1", "kind": "Deployment"}),
            want: None,
        },
    ];
    for case in cases {
        let got = judge_health(&case.object, &rules);
        let got = got.map(|(h, d)| (h, d.map(|d| (d.reason, d.message))));
        match (got, case.want) {
            (None, None) => {}
            (Some((health, detail)), Some((want_health, want_detail))) => {
                assert_eq!(health, want_health, "{}", case.name);
                match (detail, want_detail) {
                    (None, None) => {}
                    (Some((reason, message)), Some((want_reason, fragment))) => {
                        assert_eq!(reason, want_reason, "{}", case.name);
                        assert!(message.contains(fragment), "{}: {message}", case.name);
                    }
                    (d, w) => panic!("{}: {d:?} vs {w:?}", case.name),
                }
            }
            (got, want) => panic!("{}: {got:?} vs {want:?}", case.name),
        }
    }
    // A non-bool expression: unknown.
    let odd = vec![KindHealthRule {
        api_version: "apps.kruise.io/v1alpha1".into(),
        kind: "CloneSet".into(),
        rule: HealthRule { expression: "object.spec.replicas".into(), message: None },
    }];
    assert_eq!(judge_health(&clone_set_object(Some(3)), &odd).unwrap().0, Health::Unknown);
}

#[test]
fn works_carry_the_rules_of_their_manifests_kinds() {
    let interpreter = clone_set();
    let object = clone_set_object(Some(2));
    let config = json!({"apiVersion": "v1", "kind": "ConfigMap"});
    let rules = rules_for(&[&object, &config, &object], &[&interpreter]);
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].kind, "CloneSet");
    assert!(rules_for(&[&config], &[&interpreter]).is_empty());
}

#[test]
fn a_divided_custom_kind_waits_for_its_interpreter() {
    let interpreter = clone_set();
    let object = clone_set_object(Some(6));
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"replicas": 4}});
    let mut spec = clone_set_spec();
    spec.replicas_path = None;
    spec.pod_template_path = None;
    let health_only = Interpreter::from_spec(NAME, &spec).unwrap();
    let cases: &[(&str, &Value, Option<&Interpreter>, bool, bool)] = &[
        ("interpreted", &object, Some(&interpreter), true, false),
        ("gone after dividing", &object, None, true, true),
        ("no replicas path any more", &object, Some(&health_only), true, true),
        ("never divided", &object, None, false, false),
        ("built-in kind", &deployment, None, true, false),
    ];
    for (name, template, interpreter, divided_before, want) in cases {
        let got = missing(template, *interpreter, *divided_before);
        assert_eq!(got.is_some(), *want, "{name}: {got:?}");
        if let Some(message) = got {
            assert!(
                message.contains("WorkloadInterpreter cloneset.v1alpha1.apps.kruise.io"),
                "{name}: {message}"
            );
        }
    }
}
