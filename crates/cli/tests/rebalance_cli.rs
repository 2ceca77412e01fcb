#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `flotilla rebalance` as a user runs it, against `hub run` and a
//! push-mode member: a propagated Deployment is divided again and the
//! result printed; a template nothing propagates fails, with the reason.

mod hub_cli;
// The hub tests' server-side apply, shared rather than copied.
use flotilla_testkit as support;

use std::time::Duration;

use flotilla_localkube::wait_for;
use hub_cli::{flotilla, text, HubAndMember};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::Api;
use serde_json::json;
use support::apply;

#[tokio::test]
async fn rebalance_from_the_command_line() {
    let env = HubAndMember::start(&["--unschedulable-threshold", "30s"]).await;
    env.join_push();
    let (hub, home, hub_kc) = (&env.hub, &env.home, env.hub_kc.clone());

    let client = hub.client();
    apply(&client, json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}})).await;
    apply(
        &client,
        json!({
            "apiVersion": "policy.flotilla.io/v1alpha1", "kind": "PropagationPolicy",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"resourceSelectors": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}],
                "placement": {"replicaScheduling": {"replicaSchedulingType": "Divided"}}}
        }),
    )
    .await;
    apply(
        &client,
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "registry.k8s.io/pause:3.10"}]}}}
        }),
    )
    .await;
    let gvk = GroupVersionKind::gvk("work.flotilla.io", "v1alpha1", "ResourceBinding");
    let bindings: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "shop",
        &ApiResource::from_gvk_with_plural(&gvk, "resourcebindings"),
    );
    wait_for("web bound to m1", Duration::from_secs(90), || async {
        bindings
            .get_opt("web-deployment")
            .await
            .unwrap()
            .is_some_and(|b| b.data["spec"]["clusters"][0]["name"] == "m1")
    })
    .await;

    let out =
        flotilla(&["rebalance", "deploy/web", "-n", "shop", "--wait", "--kubeconfig", &hub_kc], home.path());
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("deployment/web in namespace shop: divided again from scratch"),
        "{}",
        text(&out)
    );
    let binding = bindings.get("web-deployment").await.unwrap();
    assert!(
        binding.data["spec"]["rebalanced"].as_str().is_some_and(|t| t.contains("/rebalance-")),
        "{binding:?}"
    );

    let out = flotilla(
        &["rebalance", "deployment/nothing", "-n", "shop", "--wait", "--kubeconfig", &hub_kc],
        home.path(),
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("deployment/nothing in namespace shop: failed: ReferencedBindingNotFound"),
        "{}",
        text(&out)
    );

    let out = flotilla(&["rebalance", "web", "--kubeconfig", &hub_kc], home.path());
    assert!(!out.status.success());
}
