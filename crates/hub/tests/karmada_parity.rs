#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Karmada's policy fields and scenarios on a real fleet (a hub and pull
//! members with hollow nodes): dependencies inheriting their workloads'
//! policy, `association`, the fieldOverrider, OverridePolicy's deprecated
//! shape and `dependentOverrides`.

use std::time::Duration;

use flotilla_api::work::ResourceBinding;
use flotilla_localkube::wait_for;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::PostParams;
use kube::{Api, Client};
use serde_json::json;

mod support;
use support::{apply, create_namespace, Fleet};

fn deployment(name: &str, secret: &str) -> serde_json::Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "demo", "labels": {"app": name}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{
                "name": "app", "image": "busybox",
                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                "envFrom": [{"secretRef": {"name": secret}}]}]}}}
    })
}

fn propagation_policy(name: &str, deployment: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut spec = json!({
        "resourceSelectors": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment}],
        "placement": {"clusterAffinity": {"clusterNames": ["m1"]}}
    });
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    json!({"apiVersion": "policy.flotilla.io/v1alpha1", "kind": "PropagationPolicy",
        "metadata": {"name": name, "namespace": "demo"}, "spec": spec})
}

/// The `Scheduled` message of the binding of `kind`/`name` in `demo`.
async fn scheduled_message(hub: &Client, kind: &str, name: &str) -> Option<String> {
    let bindings = Api::<ResourceBinding>::namespaced(hub.clone(), "demo").list(&Default::default()).await.ok()?;
    let binding = bindings
        .items
        .into_iter()
        .find(|b| b.spec.spec.resource.kind == kind && b.spec.spec.resource.name == name)?;
    let status = binding.status?;
    status.conditions.into_iter().find(|c| c.type_ == "Scheduled").map(|c| c.message)
}

#[tokio::test]
async fn a_dependency_inherits_overwrite_and_preserve_from_the_workloads_that_need_it() {
    let fleet = Fleet::start(&["eu"], &[]).await;
    let hub = fleet.hub.client();
    let member = fleet.member("m1").client();
    create_namespace(&hub, "demo").await;
    create_namespace(&member, "demo").await;
    // A Secret of the same name already in the member, not Flotilla's.
    Api::<Secret>::namespaced(member.clone(), "demo")
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "db"}, "stringData": {"PASSWORD": "old"}}))
                .unwrap(),
        )
        .await
        .unwrap();
    apply(
        &hub,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": "demo"},
            "stringData": {"PASSWORD": "fleet"}}),
    )
    .await;
    // `association` is Karmada's old name of `propagateDeps`.
    apply(
        &hub,
        propagation_policy("web", "web", json!({"association": true, "conflictResolution": "Overwrite"})),
    )
    .await;
    apply(&hub, deployment("web", "db")).await;

    let secrets = Api::<Secret>::namespaced(member.clone(), "demo");
    wait_for("the member's Secret taken over by the hub's", Duration::from_secs(60), || async {
        let data = secrets.get("db").await.ok().and_then(|s| s.data).unwrap_or_default();
        data.get("PASSWORD").map(|v| v.0.as_slice()) == Some(b"fleet".as_slice())
    })
    .await;
    wait_for("the Secret's binding to say where Overwrite came from", Duration::from_secs(30), || async {
        scheduled_message(&hub, "Secret", "db")
            .await
            .is_some_and(|m| m.contains("conflictResolution Overwrite, from web-deployment"))
    })
    .await;

    // A second workload sharing the Secret under a policy that preserves
    // (and would abort): Overwrite stays, preserve is added, both named.
    apply(
        &hub,
        propagation_policy(
            "api",
            "api",
            json!({"propagateDeps": true, "preserveResourcesOnDeletion": true}),
        ),
    )
    .await;
    apply(&hub, deployment("api", "db")).await;
    wait_for("the Secret's binding to name both settings' sources", Duration::from_secs(60), || async {
        scheduled_message(&hub, "Secret", "db").await.is_some_and(|m| {
            m.contains("conflictResolution Overwrite, from web-deployment")
                && m.contains("preserveResourcesOnDeletion, from api-deployment")
        })
    })
    .await;
    let bindings = Api::<ResourceBinding>::namespaced(hub.clone(), "demo");
    let list = bindings.list(&Default::default()).await.unwrap();
    let secret_binding = list.items.iter().find(|b| b.spec.spec.resource.kind == "Secret").unwrap();
    assert_eq!(secret_binding.spec.spec.conflict_resolution, flotilla_api::policy::ConflictResolution::Overwrite);
    assert!(secret_binding.spec.spec.preserve_resources_on_deletion);
}
