#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Namespaces in members follow the hub's: one the agent created for a
//! template's objects goes when the hub namespace (and so every template
//! in it) is deleted; a namespace that existed in the member before, or one
//! still holding a person's objects, stays.

use std::time::Duration;

use flotilla_localkube::wait_for;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{DeleteParams, PostParams};
use kube::Api;
use serde_json::json;

use flotilla_testkit as support;
use support::{apply, create_namespace, Fleet};

async fn propagate_web_in(hub: &kube::Client, namespace: &str) {
    create_namespace(hub, namespace).await;
    apply(
        hub,
        json!({
            "apiVersion": "policy.flotilla.io/v1alpha1", "kind": "PropagationPolicy",
            "metadata": {"name": "web", "namespace": namespace},
            "spec": {"resourceSelectors": [{"apiVersion": "apps/v1", "kind": "Deployment"}]}
        }),
    )
    .await;
    apply(
        hub,
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": namespace, "labels": {"app": "web"}},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
                    {"name": "app", "image": "nginx:1.25"}]}}}
        }),
    )
    .await;
}

#[tokio::test]
async fn namespaces_flotilla_created_in_members_go_with_the_hub_s_and_no_other() {
    let fleet = Fleet::start(&["eu"], &[]).await;
    let hub = fleet.hub.client();
    let member = fleet.member("m1").client();
    let member_namespaces: Api<Namespace> = Api::all(member.clone());
    // A namespace the member had before Flotilla placed anything there.
    create_namespace(&member, "legacy").await;
    for ns in ["shop", "legacy", "mixed"] {
        propagate_web_in(&hub, ns).await;
    }
    for ns in ["shop", "legacy", "mixed"] {
        let deployments = Api::<Deployment>::namespaced(member.clone(), ns);
        wait_for(&format!("web in the member's {ns}"), Duration::from_secs(60), || async {
            deployments.get_opt("web").await.unwrap().is_some()
        })
        .await;
    }
    // A person's own object in a namespace Flotilla created.
    Api::<ConfigMap>::namespaced(member.clone(), "mixed")
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "mine"}})).unwrap(),
        )
        .await
        .unwrap();

    let hub_namespaces: Api<Namespace> = Api::all(hub.clone());
    for ns in ["shop", "legacy", "mixed"] {
        hub_namespaces.delete(ns, &DeleteParams::default()).await.unwrap();
    }
    wait_for("the member's shop namespace gone", Duration::from_secs(120), || async {
        member_namespaces.get_opt("shop").await.unwrap().is_none()
    })
    .await;
    for ns in ["legacy", "mixed"] {
        let deployments = Api::<Deployment>::namespaced(member.clone(), ns);
        wait_for(&format!("web gone from the member's {ns}"), Duration::from_secs(60), || async {
            deployments.get_opt("web").await.unwrap().is_none()
        })
        .await;
    }
    // Give a wrong sweep its chance before looking.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for ns in ["legacy", "mixed"] {
        let kept = member_namespaces.get_opt(ns).await.unwrap();
        assert!(
            kept.is_some_and(|n| n.metadata.deletion_timestamp.is_none()),
            "the member's {ns} namespace must stay"
        );
    }
    let mine = Api::<ConfigMap>::namespaced(member.clone(), "mixed").get_opt("mine").await.unwrap();
    assert!(mine.is_some(), "the person's ConfigMap stays");
}
