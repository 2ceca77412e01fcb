#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Replicas of custom workloads: a CRD shaped like OpenKruise's CloneSet
//! (`spec.replicas`, `spec.template`, a status with replica counts, the
//! scale subresource) on the hub and two members, and a
//! `WorkloadInterpreter` for it. The template is divided like a Deployment,
//! its pod template's requests and dependencies are read through the
//! interpreter, the members' statuses are summed on the hub, and the
//! interpreter's CEL health expression judges each member's object.
//!
//! No Kruise controller runs in the members: the test writes the members'
//! status itself, as their controller would.
//!
//! And the API refuses malformed interpreters with messages (schema and CEL
//! rules; the webhook for a CEL expression that does not compile).

use flotilla_testkit as support;

use std::net::SocketAddr;
use std::time::Duration;

use flotilla_api::cluster::ManagedCluster;
use flotilla_api::interpreter::WorkloadInterpreter;
use flotilla_api::work::{Health, ResourceBinding};
use flotilla_hub::webhook::{WebhookConfig, WEBHOOK_NAME};
use flotilla_hub::HubConfig;
use flotilla_localkube::{ports::free_port, wait_for, Cluster, ClusterConfig};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{json, Value};
use support::{apply, create_namespace, Fleet};

const INTERPRETER: &str = "cloneset.v1alpha1.apps.kruise.io";

fn clone_set_crd() -> Value {
    let open = json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
    json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "clonesets.apps.kruise.io"},
        "spec": {"group": "apps.kruise.io", "scope": "Namespaced",
            "names": {"plural": "clonesets", "singular": "cloneset", "kind": "CloneSet"},
            "versions": [{"name": "v1alpha1", "served": true, "storage": true,
                "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.replicas",
                    "statusReplicasPath": ".status.replicas", "labelSelectorPath": ".status.labelSelector"}},
                "schema": {"openAPIV3Schema": {"type": "object",
                    "properties": {"spec": open.clone(), "status": open}}}}]}
    })
}

async fn install_clone_set_crd(client: Client) {
    let crd: CustomResourceDefinition = serde_json::from_value(clone_set_crd()).unwrap();
    Api::<CustomResourceDefinition>::all(client.clone())
        .patch("clonesets.apps.kruise.io", &PatchParams::apply("test"), &Patch::Apply(&crd))
        .await
        .unwrap();
    let api = clone_sets(client, "default");
    wait_for("the CloneSet CRD to be served", Duration::from_secs(20), || async {
        api.list(&Default::default()).await.is_ok()
    })
    .await;
}

fn clone_sets(client: Client, namespace: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("apps.kruise.io", "v1alpha1", "CloneSet");
    Api::namespaced_with(client, namespace, &ApiResource::from_gvk_with_plural(&gvk, "clonesets"))
}

fn interpreters(client: Client) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("config.flotilla.io", "v1alpha1", "WorkloadInterpreter");
    Api::all_with(client, &ApiResource::from_gvk_with_plural(&gvk, "workloadinterpreters"))
}

/// The interpreter with `health` as its health expression.
fn interpreter(name: &str, health: &str) -> Value {
    json!({
        "apiVersion": "config.flotilla.io/v1alpha1", "kind": "WorkloadInterpreter",
        "metadata": {"name": name},
        "spec": {
            "target": {"apiVersion": "apps.kruise.io/v1alpha1", "kind": "CloneSet"},
            "replicasPath": "spec.replicas",
            "podTemplatePath": "spec.template",
            "statusCounts": ["replicas", "readyReplicas", "availableReplicas", "updatedReplicas"],
            "health": {
                "expression": health,
                "message": "'ready ' + string(has(object.status) && has(object.status.readyReplicas) \
                            ? object.status.readyReplicas : 0) + ' of ' + string(object.spec.replicas)",
            },
        },
    })
}

const READY: &str = "has(object.status) && has(object.status.readyReplicas) \
                     && object.status.readyReplicas >= object.spec.replicas";

/// The `Valid` condition of the interpreter: (status, message).
async fn valid(client: &Client) -> Option<(String, String)> {
    let object = Api::<WorkloadInterpreter>::all(client.clone()).get_opt(INTERPRETER).await.unwrap()?;
    let status = object.status?;
    if status.observed_generation != object.metadata.generation {
        return None;
    }
    let c = status.conditions.into_iter().find(|c| c.type_ == "Valid")?;
    Some((c.status, c.message))
}

async fn replicas_in(member: &Cluster) -> Option<i64> {
    let object = clone_sets(member.client(), "shop").get_opt("web").await.unwrap()?;
    object.data["spec"]["replicas"].as_i64()
}

/// Writes the member object's status, as its own controller would.
async fn report(member: &Cluster, replicas: i64, ready: i64) {
    let api = clone_sets(member.client(), "shop");
    let generation = api.get("web").await.unwrap().metadata.generation.unwrap();
    let status = json!({"status": {"observedGeneration": generation, "replicas": replicas,
        "readyReplicas": ready, "availableReplicas": ready, "updatedReplicas": replicas}});
    api.patch_status("web", &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();
}

/// The binding's `Healthy` condition and each cluster's health.
async fn binding_health(hub: &Client) -> Option<(String, String, Vec<(String, Health)>)> {
    let name = flotilla_apps_core::binding::binding_name("apps.kruise.io/v1alpha1", "CloneSet", "web");
    let binding = Api::<ResourceBinding>::namespaced(hub.clone(), "shop").get_opt(&name).await.unwrap()?;
    let status = binding.status?;
    let healthy = status.conditions.iter().find(|c| c.type_ == "Healthy")?;
    let clusters = status.aggregated_status.iter().map(|i| (i.cluster_name.clone(), i.health)).collect();
    Some((healthy.status.clone(), healthy.message.clone(), clusters))
}

#[tokio::test]
async fn a_clone_set_is_divided_aggregated_and_judged_by_its_interpreter() {
    let fleet = Fleet::start(&["east", "west"], &[]).await;
    let hub = fleet.hub.client();
    install_clone_set_crd(hub.clone()).await;
    for member in &fleet.members {
        install_clone_set_crd(member.client()).await;
    }
    let clusters: Api<ManagedCluster> = Api::all(hub.clone());
    wait_for("both members report serving CloneSets", Duration::from_secs(60), || async {
        let mut serving = 0;
        for name in ["m1", "m2"] {
            let mc = clusters.get(name).await.unwrap();
            let apis = mc.status.map(|s| s.api_enablements).unwrap_or_default();
            if apis.iter().any(|a| a.group_version == "apps.kruise.io/v1alpha1") {
                serving += 1;
            }
        }
        serving == 2
    })
    .await;

    // No webhook runs here: an expression that does not compile is
    // admitted, and the hub says why it ignores the interpreter.
    apply(&hub, interpreter(INTERPRETER, "object.status.readyReplicas >=")).await;
    wait_for("the broken interpreter Valid=False", Duration::from_secs(30), || async {
        valid(&hub)
            .await
            .is_some_and(|(s, m)| s == "False" && m.contains("spec.health.expression: does not compile"))
    })
    .await;
    apply(&hub, interpreter(INTERPRETER, READY)).await;
    wait_for("the fixed interpreter Valid=True", Duration::from_secs(30), || async {
        valid(&hub).await.is_some_and(|(s, _)| s == "True")
    })
    .await;

    create_namespace(&hub, "shop").await;
    apply(
        &hub,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "web-config", "namespace": "shop"},
            "data": {"greeting": "hello"}}),
    )
    .await;
    apply(
        &hub,
        json!({
            "apiVersion": "policy.flotilla.io/v1alpha1", "kind": "PropagationPolicy",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"resourceSelectors": [{"apiVersion": "apps.kruise.io/v1alpha1", "kind": "CloneSet"}],
                "propagateDeps": true,
                "placement": {"replicaScheduling": {"replicaSchedulingType": "Divided",
                    "replicaDivisionPreference": "Weighted",
                    "weightPreference": {"staticWeightList": [
                        {"targetCluster": {"clusterNames": ["m1"]}, "weight": 1},
                        {"targetCluster": {"clusterNames": ["m2"]}, "weight": 2}]}}}}
        }),
    )
    .await;
    apply(
        &hub,
        json!({
            "apiVersion": "apps.kruise.io/v1alpha1", "kind": "CloneSet",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"replicas": 6,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{
                    "name": "web", "image": "nginx:1.25",
                    "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}},
                    "envFrom": [{"configMapRef": {"name": "web-config"}}]}]}}}
        }),
    )
    .await;

    let (m1, m2) = (fleet.member("m1"), fleet.member("m2"));
    wait_for("the CloneSet divided 2 + 4 in the members", Duration::from_secs(60), || async {
        replicas_in(m1).await == Some(2) && replicas_in(m2).await == Some(4)
    })
    .await;
    // The pod template was read through the interpreter: its requests are
    // the binding's, its ConfigMap followed it.
    let name = flotilla_apps_core::binding::binding_name("apps.kruise.io/v1alpha1", "CloneSet", "web");
    let binding = Api::<ResourceBinding>::namespaced(hub.clone(), "shop").get(&name).await.unwrap();
    assert_eq!(binding.spec.spec.replicas, 6);
    let requests = &binding.spec.spec.replica_requirements.as_ref().unwrap().resource_request;
    assert_eq!(requests["cpu"].0, "250m");
    for member in [m1, m2] {
        let config_maps = Api::<ConfigMap>::namespaced(member.client(), "shop");
        wait_for("the ConfigMap the pod template names", Duration::from_secs(30), || async {
            config_maps.get_opt("web-config").await.unwrap().is_some()
        })
        .await;
    }

    // No controller has written a status yet: unhealthy by the expression.
    wait_for("both members unhealthy before any status", Duration::from_secs(30), || async {
        binding_health(&hub)
            .await
            .is_some_and(|(s, m, _)| s == "False" && m.contains("m1") && m.contains("m2"))
    })
    .await;

    // The members' controllers (here, the test) report: m2 is short.
    report(m1, 2, 2).await;
    report(m2, 4, 1).await;
    let hub_clone_sets = clone_sets(hub.clone(), "shop");
    wait_for("the hub's CloneSet sums the members' counts", Duration::from_secs(30), || async {
        let status = hub_clone_sets.get("web").await.unwrap().data["status"].clone();
        status["replicas"] == 6
            && status["readyReplicas"] == 3
            && status["availableReplicas"] == 3
            && status["updatedReplicas"] == 6
    })
    .await;
    wait_for("m2 unhealthy by the expression, with its message", Duration::from_secs(30), || async {
        binding_health(&hub).await.is_some_and(|(s, m, clusters)| {
            s == "False"
                && m.contains("m2: HealthRuleFalse: ready 1 of 4")
                && !m.contains("m1")
                && clusters.contains(&("m1".into(), Health::Healthy))
                && clusters.contains(&("m2".into(), Health::Unhealthy))
        })
    })
    .await;
    // The template says so too.
    let template = hub_clone_sets.get("web").await.unwrap();
    let conditions = template.data["status"]["conditions"].as_array().cloned().unwrap_or_default();
    assert!(
        conditions.iter().any(|c| c["type"] == "Healthy" && c["status"] == "False"),
        "the template's conditions: {conditions:?}"
    );

    report(m2, 4, 4).await;
    wait_for("healthy everywhere once m2 is ready", Duration::from_secs(30), || async {
        binding_health(&hub).await.is_some_and(|(s, _, _)| s == "True")
            && hub_clone_sets.get("web").await.unwrap().data["status"]["readyReplicas"] == 6
    })
    .await;

    // A changed interpreter reaches the members' judgement: now a member is
    // healthy only with more ready replicas than wanted (none is).
    apply(
        &hub,
        interpreter(INTERPRETER, "has(object.status) && object.status.readyReplicas > object.spec.replicas"),
    )
    .await;
    wait_for("the new expression judges both unhealthy", Duration::from_secs(30), || async {
        binding_health(&hub).await.is_some_and(|(s, m, _)| {
            s == "False"
                && m.contains("m1: HealthRuleFalse: ready 2 of 2")
                && m.contains("m2: HealthRuleFalse")
        })
    })
    .await;

    // Scaled on the hub: divided again.
    clone_sets(hub.clone(), "shop")
        .patch(
            "web",
            &PatchParams::apply("test").force(),
            &Patch::Apply(&json!({
            "apiVersion": "apps.kruise.io/v1alpha1", "kind": "CloneSet",
            "metadata": {"name": "web", "namespace": "shop"}, "spec": {"replicas": 9}})),
        )
        .await
        .unwrap();
    wait_for("9 divided 3 + 6", Duration::from_secs(60), || async {
        replicas_in(m1).await == Some(3) && replicas_in(m2).await == Some(6)
    })
    .await;

    // The interpreter goes: copying the template whole would give each
    // member all 9 replicas, so the members keep their share and the
    // binding says why.
    interpreters(hub.clone()).delete(INTERPRETER, &Default::default()).await.unwrap();
    wait_for("Scheduled=False for the missing interpreter", Duration::from_secs(30), || async {
        scheduled(&hub)
            .await
            .is_some_and(|(s, r, m)| s == "False" && r == "InterpreterMissing" && m.contains(INTERPRETER))
    })
    .await;
    assert_eq!((replicas_in(m1).await, replicas_in(m2).await), (Some(3), Some(6)));
    apply(&hub, interpreter(INTERPRETER, READY)).await;
    wait_for("Scheduled=True once the interpreter is back", Duration::from_secs(30), || async {
        scheduled(&hub).await.is_some_and(|(s, _, _)| s == "True")
    })
    .await;
    assert_eq!((replicas_in(m1).await, replicas_in(m2).await), (Some(3), Some(6)));
}

/// The binding's `Scheduled` condition: (status, reason, message).
async fn scheduled(hub: &Client) -> Option<(String, String, String)> {
    let name = flotilla_apps_core::binding::binding_name("apps.kruise.io/v1alpha1", "CloneSet", "web");
    let binding = Api::<ResourceBinding>::namespaced(hub.clone(), "shop").get_opt(&name).await.unwrap()?;
    let c = binding.status?.conditions.into_iter().find(|c| c.type_ == "Scheduled")?;
    Some((c.status, c.reason, c.message))
}

fn webhook_on_free_port() -> WebhookConfig {
    let port = free_port().unwrap();
    WebhookConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], port)),
        url: format!("https://127.0.0.1:{port}"),
    }
}

async fn create(api: &Api<DynamicObject>, object: Value) -> Result<DynamicObject, String> {
    let object: DynamicObject = serde_json::from_value(object).unwrap();
    api.create(&PostParams::default(), &object).await.map_err(|e| match e {
        kube::Error::Api(status) => status.message,
        other => other.to_string(),
    })
}

#[tokio::test]
async fn malformed_interpreters_are_refused_with_messages() {
    let hub = Cluster::start(ClusterConfig::hub("hub")).await.unwrap();
    flotilla_hub::install(&hub.client()).await.unwrap();
    let config = HubConfig { webhook: Some(webhook_on_free_port()), ..Default::default() };
    let client = hub.client();
    let _controllers = tokio::spawn(async move { flotilla_hub::run(client, config).await.unwrap() });
    let api = interpreters(hub.client());
    let does_not_compile = interpreter(INTERPRETER, "object.status.readyReplicas >=");
    wait_for("the webhook to answer the API server", Duration::from_secs(30), || async {
        let object: DynamicObject = serde_json::from_value(does_not_compile.clone()).unwrap();
        let dry_run = PostParams { dry_run: true, ..Default::default() };
        matches!(api.create(&dry_run, &object).await,
            Err(kube::Error::Api(status)) if status.message.contains(WEBHOOK_NAME))
    })
    .await;

    type Edit = fn(&mut Value);
    let cases: &[(&str, Edit, &[&str])] = &[
        (
            "a path with an index",
            |i| i["spec"]["replicasPath"] = json!("spec.replicas[0]"),
            &["replicasPath must be a dotted path of identifiers under spec"],
        ),
        (
            "replicas outside the spec",
            |i| i["spec"]["replicasPath"] = json!("status.replicas"),
            &["replicasPath must be a dotted path of identifiers under spec"],
        ),
        (
            "a status count with a wildcard",
            |i| i["spec"]["statusCounts"] = json!(["readyReplicas", "pods.*"]),
            &["statusCounts entries must be dotted paths"],
        ),
        (
            "a second interpreter for the kind",
            |i| i["metadata"]["name"] = json!("clonesets-too"),
            &["must be <kind in lower case>.<version>.<group>", "one interpreter per kind"],
        ),
        (
            "a built-in kind",
            |i| {
                i["metadata"]["name"] = json!("deployment.v1.apps");
                i["spec"]["target"] = json!({"apiVersion": "apps/v1", "kind": "Deployment"});
            },
            &["built-in kinds (apps, batch, extensions, core) keep their built-in interpretation"],
        ),
        (
            "no target",
            |i| {
                i["spec"].as_object_mut().unwrap().remove("target");
            },
            &["spec.target: Required value"],
        ),
        (
            "a health expression that does not compile",
            |i| i["spec"]["health"]["expression"] = json!("object.status.readyReplicas >="),
            &[
                &format!("admission webhook \"{WEBHOOK_NAME}\" denied the request"),
                "spec.health.expression: does not compile",
            ],
        ),
        (
            "a health expression naming another variable",
            |i| i["spec"]["health"]["expression"] = json!("self.status.ready"),
            &["spec.health.expression: unknown variable 'self': only 'object' is defined"],
        ),
        (
            "nested list macros",
            |i| {
                i["spec"]["health"]["expression"] =
                    json!("object.status.conditions.all(c, object.status.conditions.exists(d, c == d))")
            },
            &["inside another is too costly"],
        ),
    ];
    for (name, edit, needles) in cases {
        let mut object = interpreter(INTERPRETER, READY);
        edit(&mut object);
        let message = create(&api, object).await.expect_err(&format!("{name}: accepted"));
        for needle in *needles {
            assert!(
                message.contains(needle),
                "{name}: {needle:?} is not in the API server's message: {message}"
            );
        }
    }

    // The well-formed one is accepted and judged valid.
    create(&api, interpreter(INTERPRETER, READY)).await.unwrap();
    wait_for("the interpreter Valid=True", Duration::from_secs(30), || async {
        valid(&hub.client()).await.is_some_and(|(s, m)| s == "True" && m.contains("CloneSet"))
    })
    .await;
}
