#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The hub's admission webhook, on a real hub API server, refuses what the
//! policy CRDs cannot say (selectors outside a namespaced policy's
//! namespace, malformed label selectors and tolerations, `exclude` against
//! `clusterNames`), fails open, and the hub judges what it missed. What the
//! CRDs refuse by themselves is in `policy_schema.rs`.

use std::net::SocketAddr;
use std::time::Duration;

use flotilla_hub::webhook::{WebhookConfig, CONFIGURATION_NAME, TLS_SECRET, WEBHOOK_NAME};
use flotilla_hub::HubConfig;
use flotilla_localkube::{ports::free_port, wait_for, Cluster, ClusterConfig};
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, PostParams};
use kube::{Api, Client};
use serde_json::{json, Value};

fn webhook_on_free_port(host: &str) -> WebhookConfig {
    let port = free_port().unwrap();
    WebhookConfig { listen: SocketAddr::from(([127, 0, 0, 1], port)), url: format!("https://{host}:{port}") }
}

fn policies(client: &Client, kind: &str, namespace: Option<&str>) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("policy.flotilla.io", "v1alpha1", kind);
    let resource = ApiResource::from_gvk(&gvk);
    match namespace {
        Some(namespace) => Api::namespaced_with(client.clone(), namespace, &resource),
        None => Api::all_with(client.clone(), &resource),
    }
}

/// Creates the object as given (unknown fields included); the API server's
/// message if it refuses.
async fn create(api: &Api<DynamicObject>, object: Value) -> Result<DynamicObject, String> {
    let object: DynamicObject = serde_json::from_value(object).unwrap();
    api.create(&PostParams::default(), &object).await.map_err(|e| match e {
        kube::Error::Api(status) => status.message,
        other => other.to_string(),
    })
}

fn propagation(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "policy.flotilla.io/v1alpha1", "kind": "PropagationPolicy",
        "metadata": {"name": name}, "spec": spec})
}

fn nginx() -> Value {
    json!([{"apiVersion": "apps/v1", "kind": "Deployment", "name": "nginx"}])
}

/// A spec only the webhook refuses (in a policy of namespace `default`).
fn foreign_selector() -> Value {
    json!({"resourceSelectors": [{"apiVersion": "apps/v1", "kind": "Deployment", "namespace": "other"}]})
}

fn assert_rejected(result: Result<DynamicObject, String>, needles: &[&str]) {
    let message = result.expect_err("the API server accepted a malformed policy");
    for needle in needles {
        assert!(message.contains(needle), "{needle:?} is not in the API server's message: {message}");
    }
}

async fn hub_with_webhook(webhook: WebhookConfig) -> (Cluster, tokio::task::JoinHandle<()>) {
    let hub = Cluster::start(ClusterConfig::hub("hub")).await.unwrap();
    flotilla_hub::install(&hub.client()).await.unwrap();
    let config = HubConfig { webhook: Some(webhook), ..Default::default() };
    let client = hub.client();
    let controller = tokio::spawn(async move { flotilla_hub::run(client, config).await.unwrap() });
    // Ready when the API server gets answers from the webhook.
    let pps = policies(&hub.client(), "PropagationPolicy", Some("default"));
    wait_for("the webhook to answer the API server", Duration::from_secs(30), || async {
        let probe = propagation("probe", foreign_selector());
        let object: DynamicObject = serde_json::from_value(probe).unwrap();
        let dry_run = PostParams { dry_run: true, ..Default::default() };
        matches!(pps.create(&dry_run, &object).await,
            Err(kube::Error::Api(status)) if status.message.contains(WEBHOOK_NAME))
    })
    .await;
    (hub, controller)
}

/// Karmada policies with only the apiVersion changed (shared test data).
const KARMADA_PROPAGATION: &str =
    include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/karmada/propagation-policy.yaml"));

const KARMADA_OVERRIDE: &str =
    include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/karmada/override-policy.yaml"));

#[tokio::test]
async fn the_hub_rejects_malformed_policies_with_clear_messages() {
    let (hub, _controller) = hub_with_webhook(webhook_on_free_port("127.0.0.1")).await;
    let client = hub.client();
    let pps = policies(&client, "PropagationPolicy", Some("default"));
    let ops = policies(&client, "OverridePolicy", Some("default"));

    // (a) Karmada policies with only the apiVersion changed are accepted, whole.
    let karmada: Value = serde_saphyr::from_str(KARMADA_PROPAGATION).unwrap();
    let stored = create(&pps, karmada.clone()).await.unwrap();
    assert_eq!(stored.data["spec"]["placement"], karmada["spec"]["placement"]);
    create(&ops, serde_saphyr::from_str(KARMADA_OVERRIDE).unwrap()).await.unwrap();

    // (b) A namespaced policy selecting elsewhere, on create and update.
    assert_rejected(
        create(&pps, propagation("foreign", foreign_selector())).await,
        &[
            &format!("admission webhook \"{WEBHOOK_NAME}\" denied the request"),
            "PropagationPolicy default/foreign is invalid",
            "spec.resourceSelectors[0].namespace: a PropagationPolicy selects only in its own namespace \"default\", not \"other\"",
        ],
    );
    // The hub's controllers write the policy too (finalizer, status): an
    // update that lost that race is made again on the newer version.
    let update = loop {
        let mut updated = pps.get("nginx-propagation").await.unwrap();
        updated.data["spec"]["resourceSelectors"][0]["namespace"] = json!("other");
        match pps.replace("nginx-propagation", &PostParams::default(), &updated).await {
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            other => break other,
        }
    };
    assert_rejected(
        update.map_err(|e| e.to_string()),
        &["spec.resourceSelectors[0].namespace: a PropagationPolicy selects only in its own namespace"],
    );

    // (c) Embedded Kubernetes types and lists compared with each other.
    let selector = propagation(
        "selector",
        json!({"resourceSelectors": nginx(), "placement": {"clusterAffinity": {"labelSelector": {
            "matchExpressions": [{"key": "tier", "operator": "Has"}]}}}}),
    );
    assert_rejected(
        create(&pps, selector).await,
        &["spec.placement.clusterAffinity.labelSelector.matchExpressions[0].operator: \"Has\" is not one of In, NotIn, Exists, DoesNotExist"],
    );
    let toleration = propagation(
        "toleration",
        json!({"resourceSelectors": nginx(), "placement": {"clusterTolerations": [
            {"key": "k", "operator": "Equal", "effect": "NoSchedule", "tolerationSeconds": 30}]}}),
    );
    assert_rejected(
        create(&pps, toleration).await,
        &["spec.placement.clusterTolerations[0].tolerationSeconds: only applies to effect NoExecute"],
    );
    let cops = policies(&client, "ClusterOverridePolicy", None);
    let nothing = json!({"apiVersion": "policy.flotilla.io/v1alpha1", "kind": "ClusterOverridePolicy",
        "metadata": {"name": "nothing"},
        "spec": {"overrideRules": [{"targetCluster": {"clusterNames": ["m1"], "exclude": ["m1"]},
            "overriders": {"labelsOverrider": [{"operator": "add", "value": {"a": "b"}}]}}]}});
    assert_rejected(
        create(&cops, nothing).await,
        &["spec.overrideRules[0].targetCluster.exclude: excludes every cluster in clusterNames, so nothing is selected"],
    );

    // A plaintext overrider's value is any JSON, which CEL cannot see.
    let valueless = json!({"apiVersion": "policy.flotilla.io/v1alpha1", "kind": "OverridePolicy",
        "metadata": {"name": "valueless"},
        "spec": {"overrideRules": [{"overriders": {"plaintext": [{"path": "/spec/replicas", "operator": "replace"}]}}]}});
    assert_rejected(
        create(&ops, valueless).await,
        &["spec.overrideRules[0].overriders.plaintext[0].value: required for operator replace"],
    );

    // Deleting is never held up.
    pps.delete("nginx-propagation", &Default::default()).await.unwrap();
}

#[tokio::test]
async fn replicas_share_one_certificate_and_a_new_host_keeps_the_ca() {
    let first = webhook_on_free_port("127.0.0.1");
    let (hub, _controller) = hub_with_webhook(first).await;
    let client = hub.client();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "flotilla-system");
    let configurations: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let ca_bundle =
        |c: ValidatingWebhookConfiguration| c.webhooks.unwrap()[0].client_config.ca_bundle.clone();
    let issued = secrets.get(TLS_SECRET).await.unwrap();
    let bundle = ca_bundle(configurations.get(CONFIGURATION_NAME).await.unwrap());
    assert!(bundle.is_some());

    // A second replica on the same host reuses the Secret as it is, and
    // points the API server at itself.
    let second = webhook_on_free_port("127.0.0.1");
    let second_url = format!("{}/validate", second.url);
    let _replica = tokio::spawn(flotilla_hub::webhook::serve(client.clone(), second));
    wait_for("the second replica to register", Duration::from_secs(20), || async {
        let configuration = configurations.get(CONFIGURATION_NAME).await.unwrap();
        configuration.webhooks.unwrap()[0].client_config.url.as_deref() == Some(second_url.as_str())
    })
    .await;
    let again = secrets.get(TLS_SECRET).await.unwrap();
    assert_eq!(again.metadata.resource_version, issued.metadata.resource_version);
    assert_eq!(ca_bundle(configurations.get(CONFIGURATION_NAME).await.unwrap()), bundle);
    let pps = policies(&client, "PropagationPolicy", Some("default"));
    let denied_by_webhook = format!("admission webhook \"{WEBHOOK_NAME}\" denied the request");
    assert_rejected(create(&pps, propagation("foreign", foreign_selector())).await, &[&denied_by_webhook]);

    // One reached by another name gets a certificate for it, from the same CA.
    let third = webhook_on_free_port("localhost");
    let third_url = format!("{}/validate", third.url);
    let _replica = tokio::spawn(flotilla_hub::webhook::serve(client.clone(), third));
    wait_for("the third replica to register", Duration::from_secs(20), || async {
        let configuration = configurations.get(CONFIGURATION_NAME).await.unwrap();
        configuration.webhooks.unwrap()[0].client_config.url.as_deref() == Some(third_url.as_str())
    })
    .await;
    let reissued = secrets.get(TLS_SECRET).await.unwrap();
    let data = |s: &Secret, key: &str| s.data.as_ref().unwrap()[key].clone();
    assert_ne!(data(&reissued, "tls.crt"), data(&issued, "tls.crt"));
    assert_eq!(data(&reissued, "ca.crt"), data(&issued, "ca.crt"));
    assert_eq!(ca_bundle(configurations.get(CONFIGURATION_NAME).await.unwrap()), bundle);
    assert_rejected(create(&pps, propagation("foreign", foreign_selector())).await, &[&denied_by_webhook]);
}

/// The `Valid` condition the hub wrote on a policy: (status, message).
async fn valid_condition(api: &Api<DynamicObject>, name: &str) -> Option<(String, String)> {
    let policy = api.get(name).await.ok()?;
    let conditions = policy.data["status"]["conditions"].as_array()?.clone();
    let valid = conditions.iter().find(|c| c["type"] == "Valid")?;
    Some((valid["status"].as_str()?.to_string(), valid["message"].as_str().unwrap_or("").to_string()))
}

#[tokio::test]
async fn policies_are_written_while_no_hub_runs_and_the_hub_ignores_invalid_ones_when_back() {
    let _ =
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(flotilla_localkube::TEST_LOG_DIRECTIVES)
            }))
            .with_test_writer()
            .try_init();
    let (hub, controller) = hub_with_webhook(webhook_on_free_port("127.0.0.1")).await;
    let client = hub.client();
    let pps = policies(&client, "PropagationPolicy", Some("default"));
    // The hub (and its webhook) goes away; the API server still points at it.
    controller.abort();
    let _ = controller.await;
    let configurations: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    assert!(configurations.get_opt(CONFIGURATION_NAME).await.unwrap().is_some());

    // Policy writes do not depend on the webhook: a valid one, and one the
    // webhook would have turned away (it takes precedence if it were used).
    let selectors = json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "settings"}]);
    create(&pps, propagation("valid", json!({"resourceSelectors": selectors})))
        .await
        .expect("a policy write failed while the webhook was down");
    let tolerating = json!({"resourceSelectors": selectors, "priority": 10, "placement": {"clusterTolerations": [
        {"key": "k", "operator": "Equal", "effect": "NoSchedule", "tolerationSeconds": 30}]}});
    create(&pps, propagation("tolerating", tolerating))
        .await
        .expect("a policy write failed while the webhook was down");
    let configmap: DynamicObject = serde_json::from_value(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "settings", "namespace": "default"}, "data": {"a": "b"}}))
    .unwrap();
    let configmaps = Api::<DynamicObject>::namespaced_with(
        client.clone(),
        "default",
        &ApiResource::from_gvk(&GroupVersionKind::gvk("", "v1", "ConfigMap")),
    );
    configmaps.create(&PostParams::default(), &configmap).await.unwrap();

    // The hub comes back: it marks the invalid policy and ignores it.
    let back = client.clone();
    let _controller =
        tokio::spawn(async move { flotilla_hub::run(back, HubConfig::default()).await.unwrap() });
    wait_for("the hub to judge both policies", Duration::from_secs(30), || async {
        valid_condition(&pps, "tolerating").await.is_some_and(|(status, _)| status == "False")
            && valid_condition(&pps, "valid").await.is_some_and(|(status, _)| status == "True")
    })
    .await;
    let (_, message) = valid_condition(&pps, "tolerating").await.unwrap();
    assert!(
        message.contains(
            "spec.placement.clusterTolerations[0].tolerationSeconds: only applies to effect NoExecute"
        ),
        "{message}"
    );
    let bindings: Api<flotilla_api::work::ResourceBinding> = Api::namespaced(client.clone(), "default");
    wait_for("the template's binding", Duration::from_secs(30), || async {
        bindings.get_opt("settings-configmap").await.unwrap().is_some()
    })
    .await;
    let binding = bindings.get("settings-configmap").await.unwrap();
    assert_eq!(binding.spec.spec.policy.map(|p| p.name), Some("valid".to_string()));
}
