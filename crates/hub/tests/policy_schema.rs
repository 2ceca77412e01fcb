#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The policy CRDs alone, with no hub running and no webhook registered,
//! make a real 1.37 API server refuse malformed policies: a misspelt field
//! for a strict client (named by the server), an unsupported Karmada field
//! for any client (named, with the reason), and contradictory fields by the
//! CEL rules (each with its message). Valid policies are admitted.

use flotilla_localkube::{Cluster, ClusterConfig};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{json, Value};

const KARMADA_PROPAGATION: &str =
    include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/karmada/propagation-policy.yaml"));

const KARMADA_OVERRIDE: &str =
    include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/karmada/override-policy.yaml"));

fn policies(client: &Client, kind: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("policy.flotilla.io", "v1alpha1", kind);
    Api::namespaced_with(client.clone(), "default", &ApiResource::from_gvk(&gvk))
}

fn message(error: kube::Error) -> String {
    match error {
        kube::Error::Api(status) => status.message,
        other => other.to_string(),
    }
}

/// Creates the object as given (a plain create: no strict validation).
async fn create(api: &Api<DynamicObject>, object: Value) -> Result<DynamicObject, String> {
    let object: DynamicObject = serde_json::from_value(object).unwrap();
    api.create(&PostParams::default(), &object).await.map_err(message)
}

/// Creates the object asking for strict field validation, as `kubectl
/// create` does by default (kube's PostParams cannot ask for it).
async fn create_strict(client: &Client, object: Value) -> Result<DynamicObject, String> {
    let gvk = GroupVersionKind::gvk("policy.flotilla.io", "v1alpha1", object["kind"].as_str().unwrap());
    let plural = ApiResource::from_gvk(&gvk).plural;
    let url = format!("/apis/policy.flotilla.io/v1alpha1/namespaces/default/{plural}?fieldValidation=Strict");
    let request = axum::http::Request::post(url)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&object).unwrap())
        .unwrap();
    client.request::<DynamicObject>(request).await.map_err(message)
}

/// Server-side applies the object asking for strict field validation, as
/// `kubectl apply --server-side` does by default.
async fn apply_strict(api: &Api<DynamicObject>, object: Value) -> Result<DynamicObject, String> {
    let name = object["metadata"]["name"].as_str().unwrap().to_string();
    let params = PatchParams::apply("flotilla-test").validation_strict();
    api.patch(&name, &params, &Patch::Apply(&object)).await.map_err(message)
}

fn policy(kind: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": "policy.flotilla.io/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec})
}

fn nginx() -> Value {
    json!([{"apiVersion": "apps/v1", "kind": "Deployment", "name": "nginx"}])
}

fn with_placement(name: &str, placement: Value) -> Value {
    policy("PropagationPolicy", name, json!({"resourceSelectors": nginx(), "placement": placement}))
}

fn with_overriders(name: &str, overriders: Value) -> Value {
    policy(
        "OverridePolicy",
        name,
        json!({"resourceSelectors": nginx(), "overrideRules": [{"overriders": overriders}]}),
    )
}

fn assert_refused(result: Result<DynamicObject, String>, needles: &[&str]) {
    let message = result.expect_err("the API server accepted a malformed policy");
    for needle in needles {
        assert!(message.contains(needle), "{needle:?} is not in the API server's message: {message}");
    }
}

async fn hub_without_flotilla() -> Cluster {
    let hub = Cluster::start(ClusterConfig::hub("hub")).await.unwrap();
    flotilla_hub::install(&hub.client()).await.unwrap();
    hub
}

#[tokio::test]
async fn valid_policies_are_admitted_and_misspelt_or_unsupported_fields_refused_by_name_without_a_hub() {
    let hub = hub_without_flotilla().await;
    let client = hub.client();
    let pps = policies(&client, "PropagationPolicy");
    let ops = policies(&client, "OverridePolicy");

    // Karmada policies with only the apiVersion changed are admitted whole,
    // strictly or not.
    let karmada: Value = serde_saphyr::from_str(KARMADA_PROPAGATION).unwrap();
    let stored = apply_strict(&pps, karmada.clone()).await.unwrap();
    assert_eq!(stored.data["spec"]["placement"], karmada["spec"]["placement"]);
    let karmada_override: Value = serde_saphyr::from_str(KARMADA_OVERRIDE).unwrap();
    let stored = create(&ops, karmada_override.clone()).await.unwrap();
    assert_eq!(stored.data["spec"]["overrideRules"], karmada_override["spec"]["overrideRules"]);

    // A misspelt field: a strict client is told which, on create and on
    // server-side apply.
    let typo = with_placement("typo", json!({"clusterAfinity": {"clusterNames": ["m1"]}}));
    assert_refused(
        create_strict(&client, typo.clone()).await,
        &["strict decoding error", "unknown field \"spec.placement.clusterAfinity\""],
    );
    assert_refused(
        apply_strict(&pps, typo).await,
        &[".spec.placement.clusterAfinity: field not declared in schema"],
    );
    let typo = with_overriders("typo", json!({"plaintext": [], "lables": []}));
    assert_refused(
        create_strict(&client, typo).await,
        &["unknown field \"spec.overrideRules[0].overriders.lables\""],
    );
    // A lenient client gets the policy without the misspelt field (and a
    // warning); the hub then sees what is stored.
    let typo = policy("PropagationPolicy", "lenient", json!({"resourceSelectors": nginx(), "priorty": 3}));
    let stored = create(&pps, typo).await.unwrap();
    assert_eq!(stored.data["spec"].get("priorty"), None);

    // Karmada's suspension, of dispatch and of scheduling, is Flotilla's too.
    let suspended = policy(
        "PropagationPolicy",
        "suspended",
        json!({"resourceSelectors": nginx(), "suspension": {"dispatching": true,
            "dispatchingOnClusters": {"clusterNames": ["m1"]}, "scheduling": true}}),
    );
    let stored = create_strict(&client, suspended).await.unwrap();
    assert_eq!(stored.data["spec"]["suspension"]["dispatchingOnClusters"]["clusterNames"], json!(["m1"]));
    assert_eq!(stored.data["spec"]["suspension"]["scheduling"], json!(true));
    // Karmada's failover, application and cluster, with each purge mode's
    // names (older and newer), as its documentation writes them.
    for (name, failover) in [
        (
            "app-never",
            json!({"application": {"decisionConditions": {"tolerationSeconds": 120}, "purgeMode": "Never"}}),
        ),
        (
            "app-graciously",
            json!({"application": {"decisionConditions": {"tolerationSeconds": 300},
                "purgeMode": "Graciously", "gracePeriodSeconds": 600,
                "statePreservation": {"rules": [{"aliasLabelName": "failover.example.com/ckpt",
                    "jsonPath": "{ .jobStatus.checkpointInfo.lastCheckpoint }"}]}}}),
        ),
        ("app-directly", json!({"application": {"decisionConditions": {}, "purgeMode": "Directly"}})),
        (
            "cluster",
            json!({"cluster": {"purgeMode": "Directly",
                "statePreservation": {"rules": [{"aliasLabelName": "replicas", "jsonPath": "{.replicas}"}]}}}),
        ),
    ] {
        let spec = json!({"resourceSelectors": nginx(), "propagateDeps": true, "failover": failover});
        let stored = create_strict(&client, policy("PropagationPolicy", name, spec)).await.unwrap();
        assert_eq!(stored.data["spec"]["failover"], failover, "{name}");
    }
    for (failover, needles) in [
        (
            json!({"application": {"decisionConditions": {}, "purgeMode": "Never", "gracePeriodSeconds": 30}}),
            vec![
                "spec.failover.application.gracePeriodSeconds",
                "only takes effect when purgeMode is Graciously",
            ],
        ),
        (
            json!({"application": {"purgeMode": "Immediately"}}),
            vec!["spec.failover.application.decisionConditions", "Required value"],
        ),
        (
            json!({"application": {"decisionConditions": {}, "purgeMode": "Sometimes"}}),
            vec!["spec.failover.application.purgeMode", "Unsupported value"],
        ),
        (
            json!({"cluster": {"purgeMode": "Never"}}),
            vec!["spec.failover.cluster.purgeMode", "Directly or Gracefully"],
        ),
        (
            json!({"cluster": {"statePreservation": {"rules": [{"aliasLabelName": "not a label", "jsonPath": "{.a}"}]}}}),
            vec!["spec.failover.cluster.statePreservation.rules[0].aliasLabelName", "should match"],
        ),
    ] {
        let spec = json!({"resourceSelectors": nginx(), "failover": failover});
        assert_refused(create(&pps, policy("PropagationPolicy", "bad-failover", spec)).await, &needles);
    }
    // Implemented since: the fieldOverrider (exactly one format), the
    // deprecated spec-level override shape, `association`,
    // `dependentOverrides`, and `schedulerName` naming the one scheduler.
    let field_overrider = with_overriders("fields", json!({"fieldOverrider": [{"fieldPath": "/data/c"}]}));
    assert_refused(
        create(&ops, field_overrider).await,
        &["spec.overrideRules[0].overriders.fieldOverrider[0]", "set exactly one of json and yaml"],
    );
    let field_overrider = with_overriders(
        "fields",
        json!({"fieldOverrider": [{"fieldPath": "/data/c", "yaml": [{"subPath": "/a", "operator": "remove"}]}]}),
    );
    create_strict(&client, field_overrider).await.unwrap();
    let deprecated = policy(
        "OverridePolicy",
        "deprecated",
        json!({"resourceSelectors": nginx(), "targetCluster": {"clusterNames": ["m1"]},
            "overriders": {"labelsOverrider": [{"operator": "add", "value": {"a": "b"}}]}}),
    );
    let stored = create_strict(&client, deprecated).await.unwrap();
    assert_eq!(stored.data["spec"]["targetCluster"]["clusterNames"], json!(["m1"]));
    let karmada_names = policy(
        "PropagationPolicy",
        "karmada-names",
        json!({"resourceSelectors": nginx(), "association": true, "schedulerName": "default-scheduler",
            "dependentOverrides": ["eu-images"]}),
    );
    let stored = create_strict(&client, karmada_names).await.unwrap();
    assert_eq!(stored.data["spec"]["dependentOverrides"], json!(["eu-images"]));
    let other_scheduler = policy(
        "PropagationPolicy",
        "volcano",
        json!({"resourceSelectors": nginx(), "schedulerName": "volcano"}),
    );
    assert_refused(
        create(&pps, other_scheduler).await,
        &["spec.schedulerName", "no scheduler of that name", "default-scheduler"],
    );
}

#[tokio::test]
async fn each_rule_across_fields_is_enforced_by_the_api_server_with_its_message() {
    let hub = hub_without_flotilla().await;
    let client = hub.client();
    let pps = policies(&client, "PropagationPolicy");
    let ops = policies(&client, "OverridePolicy");

    let spread = |constraint: Value| with_placement("spread", json!({"spreadConstraints": [constraint]}));
    let scheduling = |strategy: Value| with_placement("scheduling", json!({"replicaScheduling": strategy}));
    let field_selector = |requirement: Value| {
        with_placement(
            "fields",
            json!({"clusterAffinity": {"fieldSelector": {"matchExpressions": [requirement]}}}),
        )
    };
    let weights = json!({"staticWeightList": [{"targetCluster": {"clusterNames": ["m1"]}, "weight": 1}]});
    let cases: Vec<(Value, Vec<&str>)> = vec![
        (
            spread(json!({"spreadByField": "region", "minGroups": 3, "maxGroups": 2})),
            vec![
                "spec.placement.spreadConstraints[0].minGroups",
                "minGroups must not be more than maxGroups",
            ],
        ),
        (
            spread(json!({"maxGroups": 2})),
            vec!["spec.placement.spreadConstraints[0]", "set exactly one of spreadByField and spreadByLabel"],
        ),
        (
            spread(json!({"spreadByField": "zone", "spreadByLabel": "rack"})),
            vec!["set exactly one of spreadByField and spreadByLabel"],
        ),
        (
            scheduling(
                json!({"replicaSchedulingType": "Duplicated", "replicaDivisionPreference": "Weighted"}),
            ),
            vec![
                "spec.placement.replicaScheduling.replicaDivisionPreference",
                "only applies to replicaSchedulingType Divided, not Duplicated",
            ],
        ),
        (
            scheduling(json!({"replicaSchedulingType": "Duplicated", "weightPreference": weights})),
            vec![
                "spec.placement.replicaScheduling.weightPreference",
                "weightPreference only applies to replicaSchedulingType Divided",
            ],
        ),
        (
            scheduling(json!({"replicaDivisionPreference": "Aggregated", "weightPreference": weights})),
            vec![
                "spec.placement.replicaScheduling.weightPreference.staticWeightList",
                "only applies to replicaDivisionPreference Weighted, not Aggregated",
            ],
        ),
        (
            scheduling(json!({"weightPreference": {
                "staticWeightList": weights["staticWeightList"], "dynamicWeight": "AvailableReplicas"}})),
            vec!["set staticWeightList or dynamicWeight, not both"],
        ),
        (
            scheduling(json!({"weightPreference": {"staticWeightList": [
                {"targetCluster": {"clusterNames": ["m1"]}, "weight": 0}]}})),
            vec![
                "spec.placement.replicaScheduling.weightPreference.staticWeightList[0].weight",
                "greater than or equal to 1",
            ],
        ),
        (
            field_selector(json!({"key": "region", "operator": "In"})),
            vec![
                "matchExpressions[0].values",
                "values are required (at least one) for operators In and NotIn",
            ],
        ),
        (
            field_selector(json!({"key": "region", "operator": "Exists", "values": ["eu"]})),
            vec!["matchExpressions[0].values", "values must be empty for operators Exists and DoesNotExist"],
        ),
        (
            with_placement(
                "groups",
                json!({"clusterAffinity": {"clusterNames": ["m1"]},
                    "clusterAffinities": [{"affinityName": "primary", "clusterNames": ["m1"]}]}),
            ),
            vec!["spec.placement.clusterAffinities", "set clusterAffinity or clusterAffinities, not both"],
        ),
        (
            with_placement(
                "groups",
                json!({"clusterAffinities": [
                    {"affinityName": "primary", "clusterNames": ["m1"]},
                    {"affinityName": "primary", "clusterNames": ["m2"]}]}),
            ),
            vec![
                "spec.placement.clusterAffinities",
                "each clusterAffinities term needs its own affinityName",
            ],
        ),
        (
            with_overriders("pointer", json!({"plaintext": [{"path": "/spec/~2", "operator": "remove"}]})),
            vec!["spec.overrideRules[0].overriders.plaintext[0].path", "should match"],
        ),
        (
            with_overriders("image", json!({"imageOverrider": [{"component": "Tag", "operator": "add"}]})),
            vec![
                "spec.overrideRules[0].overriders.imageOverrider[0].value",
                "value must not be empty for operators add and replace",
            ],
        ),
        (
            with_overriders(
                "args",
                json!({"argsOverrider": [
                {"containerName": "app", "operator": "replace", "value": ["-v"]}]}),
            ),
            vec![
                "spec.overrideRules[0].overriders.argsOverrider[0].operator",
                "must be add or remove (as in Karmada), not replace",
            ],
        ),
    ];
    for (object, needles) in cases {
        let api = if object["kind"] == "OverridePolicy" { &ops } else { &pps };
        assert_refused(create(api, object).await, &needles);
    }

    // The same rules admit what is consistent.
    for object in [
        spread(json!({"spreadByField": "region", "minGroups": 2, "maxGroups": 2})),
        spread(json!({"spreadByLabel": "rack", "minGroups": 3})),
        // Karmada's documented primary/backup groups.
        with_placement(
            "groups",
            json!({"clusterAffinities": [
                {"affinityName": "primary-clusters", "clusterNames": ["member1"]},
                {"affinityName": "backup-clusters", "clusterNames": ["member1", "member2"]}]}),
        ),
        scheduling(json!({"replicaSchedulingType": "Duplicated"})),
        scheduling(json!({"replicaDivisionPreference": "Weighted", "weightPreference": weights})),
        field_selector(json!({"key": "region", "operator": "NotIn", "values": ["eu"]})),
        with_overriders(
            "ok",
            json!({
            "plaintext": [{"path": "/metadata/annotations/a~1b", "operator": "remove"}],
            "imageOverrider": [{"component": "Tag", "operator": "remove"}],
            "commandOverrider": [{"containerName": "app", "operator": "add", "value": ["-v"]}]}),
        ),
    ] {
        let name = object["metadata"]["name"].as_str().unwrap().to_string();
        let api = if object["kind"] == "OverridePolicy" { &ops } else { &pps };
        create(api, object).await.unwrap_or_else(|e| panic!("{name} refused: {e}"));
        api.delete(&name, &Default::default()).await.unwrap();
    }
}

#[tokio::test]
async fn a_rollout_strategy_is_refused_by_the_api_server_when_its_waves_are_malformed() {
    let hub = hub_without_flotilla().await;
    let gvk = GroupVersionKind::gvk("rollout.flotilla.io", "v1alpha1", "RolloutStrategy");
    let api: Api<DynamicObject> = Api::namespaced_with(hub.client(), "default", &ApiResource::from_gvk(&gvk));
    let strategy = |name: &str, waves: Value| {
        json!({"apiVersion": "rollout.flotilla.io/v1alpha1", "kind": "RolloutStrategy",
            "metadata": {"name": name},
            "spec": {"resourceSelectors": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}],
                     "waves": waves}})
    };
    let created = create(&api, strategy("ok", json!({"ratio": "1:2:7"}))).await.unwrap();
    // Defaults are filled in by the schema.
    assert_eq!(created.data["spec"]["soakSeconds"], 300, "{:?}", created.data);
    assert_eq!(created.data["spec"]["progressDeadlineSeconds"], 600);
    let stages = json!({"stages": [{"name": "test", "clusterLabels": {"env": "test"}}]});
    create(&api, strategy("staged", stages.clone())).await.unwrap();
    let both = json!({"ratio": "1:2:7", "stages": stages["stages"]});
    assert_refused(create(&api, strategy("both", both)).await, &["set exactly one of waves.ratio"]);
    assert_refused(create(&api, strategy("neither", json!({}))).await, &["set exactly one of waves.ratio"]);
    assert_refused(create(&api, strategy("bad", json!({"ratio": "1:0:7"}))).await, &["spec.waves.ratio"]);
}
