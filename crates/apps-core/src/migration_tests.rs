use super::*;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn which_templates_are_opted_in() {
    let required = OptIn { required: true, namespaces: ["listed".to_string()].into() };
    let on = labels(&[(MANAGED_LABEL, "true")]);
    let off = labels(&[(MANAGED_LABEL, "false")]);
    let none = labels(&[]);
    // (name, opt-in, namespace, namespace labels, template labels, needed by a managed template, want ok, message contains)
    #[allow(clippy::type_complexity)]
    let cases: Vec<(
        &str,
        OptIn,
        &str,
        Option<&BTreeMap<String, String>>,
        &BTreeMap<String, String>,
        bool,
        bool,
        &str,
    )> = vec![
        ("not required: everything", OptIn::default(), "apps", None, &none, false, true, ""),
        ("not required: even opted out", OptIn::default(), "apps", None, &off, false, true, ""),
        ("template label", required.clone(), "apps", None, &on, false, true, ""),
        ("namespace label", required.clone(), "apps", Some(&on), &none, false, true, ""),
        ("listed namespace", required.clone(), "listed", None, &none, false, true, ""),
        ("dependency of a managed template", required.clone(), "apps", None, &none, true, true, ""),
        ("nothing says so", required.clone(), "apps", Some(&none), &none, false, false, "namespace apps"),
        (
            "namespace label false",
            required.clone(),
            "apps",
            Some(&off),
            &none,
            false,
            false,
            "does not carry",
        ),
        (
            "template opts out of an opted-in namespace",
            required.clone(),
            "apps",
            Some(&on),
            &off,
            false,
            false,
            "opts out",
        ),
        (
            "template opts out of a listed namespace",
            required.clone(),
            "listed",
            None,
            &off,
            true,
            false,
            "opts out",
        ),
        (
            "cluster-scoped without the label",
            required.clone(),
            "",
            None,
            &none,
            false,
            false,
            "the template does",
        ),
        ("cluster-scoped with the label", required.clone(), "", None, &on, false, true, ""),
    ];
    for (name, opt_in, ns, ns_labels, template_labels, needed, want_ok, contains) in cases {
        let got = opted_in(&opt_in, ns, ns_labels, template_labels, needed);
        assert_eq!(got.is_ok(), want_ok, "{name}: {got:?}");
        if let Err(message) = got {
            assert!(message.contains(contains), "{name}: {message}");
        }
    }
}

#[test]
fn object_arguments() {
    let cases: Vec<(&str, Option<(&str, &str)>)> = vec![
        ("deployment/web", Some(("deployment", "web"))),
        ("Deployments.apps/web", Some(("deployments.apps", "web"))),
        ("deploy/web-1", Some(("deploy", "web-1"))),
        ("web", None),
        ("/web", None),
        ("deployment/", None),
        ("deployment/a/b", None),
    ];
    for (arg, want) in cases {
        let got = parse_object_arg(arg).ok().map(|o| (o.resource, o.name));
        assert_eq!(got, want.map(|(r, n)| (r.to_string(), n.to_string())), "{arg}");
    }
}

#[test]
fn resource_names() {
    let short = vec!["deploy".to_string()];
    let deployments =
        ResourceNames { group: "apps", kind: "Deployment", plural: "deployments", short_names: &short };
    let services = ResourceNames { group: "", kind: "Service", plural: "services", short_names: &[] };
    let cases: Vec<(&str, &ResourceNames, bool)> = vec![
        ("deployment", &deployments, true),
        ("deployments", &deployments, true),
        ("deploy", &deployments, true),
        ("deployments.apps", &deployments, true),
        ("deployment.apps", &deployments, true),
        ("deployments.extensions", &deployments, false),
        ("statefulsets", &deployments, false),
        ("service", &services, true),
        ("svc", &services, false),
        ("services.apps", &services, false),
    ];
    for (written, names, want) in cases {
        assert_eq!(names_resource(written, names), want, "{written} vs {}", names.plural);
    }
}

fn member_deployment() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {
            "name": "web", "namespace": "shop", "uid": "u-1", "resourceVersion": "42", "generation": 3,
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "managedFields": [{"manager": "kubectl"}],
            "labels": {"app": "web"},
            "annotations": {
                "deployment.kubernetes.io/revision": "2",
                "kubectl.kubernetes.io/last-applied-configuration": "{}",
                "team": "shop"
            }
        },
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "revisionHistoryLimit": 10, "progressDeadlineSeconds": 600,
            "template": {
                "metadata": {"creationTimestamp": null, "labels": {"app": "web"},
                    "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-01-02T00:00:00Z"}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1", "imagePullPolicy": "IfNotPresent",
                    "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
                    "resources": {}}],
                    "restartPolicy": "Always", "dnsPolicy": "ClusterFirst", "schedulerName": "default-scheduler",
                    "securityContext": {}, "terminationGracePeriodSeconds": 30}
            }
        },
        "status": {"replicas": 2, "readyReplicas": 2, "observedGeneration": 3}
    })
}

#[test]
fn templates_from_member_objects() {
    let deployment = member_deployment();
    let mut owned = member_deployment();
    owned["metadata"]["ownerReferences"] = json!([{"apiVersion": "example.com/v1", "kind": "App", "name": "shop", "uid": "x", "controller": true}]);
    let service = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "shop", "uid": "s"},
        "spec": {"clusterIP": "10.0.0.7", "clusterIPs": ["10.0.0.7"], "ports": [{"port": 80}], "selector": {"app": "web"}},
        "status": {"loadBalancer": {}}
    });
    let headless = json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "db", "namespace": "shop"},
        "spec": {"clusterIP": "None", "clusterIPs": ["None"]}
    });
    // (name, member object, want: Ok(pointer checks) or Err(message contains))
    #[allow(clippy::type_complexity)]
    let cases: Vec<(&str, Value, Result<Vec<(&str, Option<Value>)>, &str>)> = vec![
        (
            "deployment: the spec, pod template included, is untouched",
            deployment.clone(),
            Ok(vec![
                ("/spec", deployment.get("spec").cloned()),
                ("/status", None),
                ("/metadata/uid", None),
                ("/metadata/resourceVersion", None),
                ("/metadata/generation", None),
                ("/metadata/creationTimestamp", None),
                ("/metadata/managedFields", None),
                ("/metadata/annotations/deployment.kubernetes.io~1revision", None),
                ("/metadata/annotations/kubectl.kubernetes.io~1last-applied-configuration", None),
                ("/metadata/annotations/team", Some(json!("shop"))),
                ("/metadata/annotations/apps.flotilla.io~1promoted-from", Some(json!("m1"))),
                ("/metadata/labels/app", Some(json!("web"))),
                ("/metadata/labels/apps.flotilla.io~1managed", Some(json!("true"))),
                ("/metadata/name", Some(json!("web"))),
                ("/metadata/namespace", Some(json!("shop"))),
            ]),
        ),
        ("controlled by another object", owned, Err("controlled by App shop")),
        (
            "service: cluster IPs are the member's",
            service,
            Ok(vec![
                ("/spec/clusterIP", None),
                ("/spec/clusterIPs", None),
                ("/spec/ports", Some(json!([{"port": 80}]))),
                ("/status", None),
            ]),
        ),
        (
            "headless service keeps None",
            headless,
            Ok(vec![("/spec/clusterIP", Some(json!("None"))), ("/spec/clusterIPs", Some(json!(["None"])))]),
        ),
        ("not an object", json!("x"), Err("not a JSON object")),
    ];
    for (name, object, want) in cases {
        let got = template_from_member(&object, "m1");
        match (got, want) {
            (Ok(template), Ok(checks)) => {
                for (pointer, value) in checks {
                    assert_eq!(template.pointer(pointer).cloned(), value, "{name}: {pointer}");
                }
            }
            (Err(e), Err(contains)) => assert!(e.to_string().contains(contains), "{name}: {e}"),
            (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn the_pod_template_is_byte_identical() {
    let object = member_deployment();
    let template = template_from_member(&object, "m1").unwrap();
    let member = crate::workload::prepare_for_member(&template);
    assert_eq!(
        serde_json::to_string(&member["spec"]["template"]).unwrap(),
        serde_json::to_string(&object["spec"]["template"]).unwrap()
    );
}

#[test]
fn promoted_policies() {
    let template = template_from_member(&member_deployment(), "m2").unwrap();
    let policy = promoted_policy(&template, "m2");
    let cluster_role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "reader"}});
    let cluster_policy = promoted_policy(&cluster_role, "m1");
    let cases: Vec<(&str, &Value, &str, Value)> = vec![
        ("kind", &policy, "/kind", json!("PropagationPolicy")),
        ("name", &policy, "/metadata/name", json!("promoted-deployment-web")),
        ("namespace", &policy, "/metadata/namespace", json!("shop")),
        ("label", &policy, "/metadata/labels/apps.flotilla.io~1promoted", json!("true")),
        (
            "selects exactly the template",
            &policy,
            "/spec/resourceSelectors",
            json!([{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "namespace": "shop"}]),
        ),
        ("on its cluster", &policy, "/spec/placement/clusterAffinity/clusterNames", json!(["m2"])),
        (
            "every replica there",
            &policy,
            "/spec/placement/replicaScheduling/replicaSchedulingType",
            json!("Duplicated"),
        ),
        ("takes the object over", &policy, "/spec/conflictResolution", json!("Overwrite")),
        ("cluster-scoped", &cluster_policy, "/kind", json!("ClusterPropagationPolicy")),
        ("cluster-scoped name", &cluster_policy, "/metadata/name", json!("promoted-clusterrole-reader")),
    ];
    for (name, policy, pointer, want) in cases {
        assert_eq!(policy.pointer(pointer), Some(&want), "{name}");
    }
    assert!(cluster_policy.pointer("/metadata/namespace").is_none());
    // The policy is a valid PropagationSpec.
    let spec: flotilla_api::policy::PropagationSpec = serde_json::from_value(policy["spec"].clone()).unwrap();
    assert_eq!(spec.conflict_resolution, Some(flotilla_api::policy::ConflictResolution::Overwrite));
}

#[test]
fn long_policy_names_fit() {
    let name = "x".repeat(250);
    let got = promoted_policy_name("Deployment", &name);
    assert!(got.len() <= 253, "{}", got.len());
    assert!(got.starts_with("promoted-deployment-x"));
    assert_ne!(got, promoted_policy_name("Deployment", &"x".repeat(251)));
}

#[test]
fn what_release_does_with_the_policy() {
    let promoted = labels(&[(PROMOTED_LABEL, "true")]);
    let users = vec!["shop/other".to_string()];
    type Case<'a> = (&'a str, BTreeMap<String, String>, &'a [String], PolicyFate);
    let cases: Vec<Case> = vec![
        ("promoted, used by nothing else", promoted.clone(), &[], PolicyFate::Delete),
        (
            "promoted, used by another",
            promoted,
            &users,
            PolicyFate::Keep("it is also used by shop/other".into()),
        ),
        (
            "the user's own",
            labels(&[]),
            &[],
            PolicyFate::Keep("it was not made by `flotilla promote`".into()),
        ),
    ];
    for (name, policy_labels, others, want) in cases {
        assert_eq!(policy_fate(&policy_labels, others), want, "{name}");
    }
}

#[test]
fn releases() {
    let cases = vec![
        ("absent", labels(&[]), false),
        ("true", labels(&[(RELEASE_ANNOTATION, "true")]), true),
        ("other value", labels(&[(RELEASE_ANNOTATION, "yes")]), false),
    ];
    for (name, annotations, want) in cases {
        assert_eq!(is_released(&annotations), want, "{name}");
    }
    let spec = json!({"manifests": [], "conflictResolution": "Overwrite"});
    let (preserved, changed) = preserving(&spec);
    assert!(changed);
    assert_eq!(preserved["preserveResourcesOnDeletion"], json!(true));
    assert_eq!(preserving(&preserved), (preserved.clone(), false));
}
