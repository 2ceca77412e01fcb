#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Karmada fields Flotilla once refused and now implements: how the policy
//! judge (`validate_policy`, the same rules as the CRD's and the webhook's)
//! reads them, and what the overrides do with the deprecated shape.

use std::collections::BTreeMap;

use flotilla_api::policy::OverrideSpec;
use flotilla_apps_core::overrides::apply_overrides;
use flotilla_apps_core::selection::{OverrideCandidate, PolicyScope};
use flotilla_apps_core::validation::{validate_policy, validate_policy_beyond_schema};
use serde_json::{json, Value};

fn pp(spec: Value) -> Value {
    json!({"apiVersion": "policy.flotilla.io/v1alpha1", "kind": "PropagationPolicy",
        "metadata": {"name": "p", "namespace": "apps"}, "spec": spec})
}

fn op(spec: Value) -> Value {
    json!({"apiVersion": "policy.flotilla.io/v1alpha1", "kind": "OverridePolicy",
        "metadata": {"name": "o", "namespace": "apps"}, "spec": spec})
}

fn selectors() -> Value {
    json!([{"apiVersion": "apps/v1", "kind": "Deployment", "name": "nginx"}])
}

#[test]
fn karmada_fields_are_accepted_or_refused_with_the_field_named() {
    let cases: Vec<(&str, &str, Value, Vec<&str>)> = vec![
        (
            "association (old propagateDeps)",
            "PropagationPolicy",
            pp(json!({"resourceSelectors": selectors(), "association": true})),
            vec![],
        ),
        (
            "Karmada's default scheduler",
            "PropagationPolicy",
            pp(json!({"resourceSelectors": selectors(), "schedulerName": "default-scheduler"})),
            vec![],
        ),
        (
            "a scheduler nobody runs",
            "ClusterPropagationPolicy",
            json!({"spec": {"resourceSelectors": selectors(), "schedulerName": "volcano"}}),
            vec!["spec.schedulerName: no scheduler named \"volcano\": Flotilla has one scheduler, \
                  `default-scheduler` (Karmada's default); set it or remove the field"],
        ),
        (
            "dependentOverrides",
            "PropagationPolicy",
            pp(json!({"resourceSelectors": selectors(), "dependentOverrides": ["eu-images"]})),
            vec![],
        ),
        (
            "deprecated targetCluster + overriders",
            "OverridePolicy",
            op(json!({"resourceSelectors": selectors(), "targetCluster": {"clusterNames": ["m1"]},
                "overriders": {"plaintext": [{"path": "/spec/replicas", "operator": "replace", "value": 2}]}})),
            vec![],
        ),
        (
            "deprecated shape with overrideRules",
            "OverridePolicy",
            op(json!({"resourceSelectors": selectors(), "overriders": {"labelsOverrider": []},
                "overrideRules": [{"overriders": {"labelsOverrider": []}}]})),
            vec!["spec.overriders: set overrideRules, or the deprecated targetCluster and overriders, not both"],
        ),
        (
            "deprecated shape's plaintext without value",
            "OverridePolicy",
            op(json!({"overriders": {"plaintext": [{"path": "/spec/replicas", "operator": "add"}]}})),
            vec!["spec.overriders.plaintext[0].value: required for operator add"],
        ),
        (
            "fieldOverrider (Karmada's documented example)",
            "OverridePolicy",
            op(json!({"resourceSelectors": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "db-config"}],
                "overrideRules": [{"targetCluster": {"clusterNames": ["m1"]}, "overriders": {"fieldOverrider": [{
                    "fieldPath": "/data/db-config.yaml",
                    "yaml": [{"subPath": "/database/host", "operator": "replace", "value": "remote-db.example.com"},
                             {"subPath": "/database/port", "operator": "replace", "value": "3307"}]}]}}]})),
            vec![],
        ),
        (
            "fieldOverrider with json and yaml",
            "OverridePolicy",
            op(json!({"overrideRules": [{"overriders": {"fieldOverrider": [{"fieldPath": "/data/c",
                "json": [{"subPath": "/a", "operator": "remove"}],
                "yaml": [{"subPath": "/a", "operator": "remove"}]}]}}]})),
            vec!["spec.overrideRules[0].overriders.fieldOverrider[0]: set exactly one of json and yaml"],
        ),
        (
            "fieldOverrider misspelt",
            "OverridePolicy",
            op(json!({"overrideRules": [{"overriders": {"fieldOverrider": [{"fieldPath": "/data/c",
                "yaml": [{"subpath": "/a", "operator": "remove"}]}]}}]})),
            vec![
                "spec.overrideRules[0].overriders.fieldOverrider[0].yaml[0].subpath: unknown field (did you mean subPath?)",
                "spec.overrideRules[0].overriders.fieldOverrider[0].yaml[0].subPath: required",
            ],
        ),
    ];
    for (name, kind, object, want) in cases {
        let errors = validate_policy(kind, &object);
        assert_eq!(errors.len(), want.len(), "{name}: {errors:#?}");
        for needle in want {
            assert!(errors.iter().any(|e| e.starts_with(needle)), "{name}: {needle:?} not in {errors:#?}");
        }
    }
}

#[test]
fn the_webhook_refuses_what_no_schema_rule_can_say() {
    // The co-existence of the two shapes and a value of any JSON type are
    // the webhook's: the CRD has no rule for them.
    let both = op(json!({"targetCluster": {"clusterNames": ["m1"]},
        "overrideRules": [{"overriders": {"labelsOverrider": []}}]}));
    let errors = validate_policy_beyond_schema("OverridePolicy", &both);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    let no_value = op(json!({"overrideRules": [{"overriders": {"fieldOverrider": [{"fieldPath": "/data/c",
        "yaml": [{"subPath": "/a", "operator": "replace"}]}]}}]}));
    assert_eq!(
        validate_policy_beyond_schema("OverridePolicy", &no_value),
        ["spec.overrideRules[0].overriders.fieldOverrider[0].yaml[0].value: required for operator replace"]
    );
}

#[test]
fn the_deprecated_shape_is_one_rule() {
    let manifest = || {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "nginx"},
        "spec": {"replicas": 1}})
    };
    let spec: OverrideSpec = serde_json::from_value(json!({
        "targetCluster": {"clusterNames": ["m1"]},
        "overriders": {"plaintext": [{"path": "/spec/replicas", "operator": "replace", "value": 3}]}
    }))
    .unwrap();
    let candidate =
        OverrideCandidate { scope: PolicyScope::Namespaced, namespace: "apps", name: "old", spec: &spec };
    for (cluster, want) in [("m1", 3), ("m2", 1)] {
        let mut m = manifest();
        let changed = apply_overrides(&mut m, cluster, &BTreeMap::new(), &[&candidate]).unwrap();
        assert_eq!(m["spec"]["replicas"], want, "{cluster}");
        assert_eq!(changed.len(), usize::from(want == 3), "{cluster}");
    }
}
