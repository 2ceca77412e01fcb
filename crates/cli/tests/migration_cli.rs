#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `flotilla promote` and `flotilla release` as a user runs them, against
//! `hub run --require-opt-in` and a push-mode member (the hub holds its
//! kubeconfig, so promote needs no --member-kubeconfig).

mod hub_cli;

use std::collections::BTreeSet;
use std::time::Duration;

use flotilla_localkube::{wait_for, Cluster};
use hub_cli::{flotilla, text, HubAndMember};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

async fn pod_uids(member: &Cluster) -> BTreeSet<String> {
    Api::<Pod>::namespaced(member.client(), "shop")
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap()
        .items
        .iter()
        .map(|p| p.uid().unwrap())
        .collect()
}

#[tokio::test]
async fn promote_and_release_from_the_command_line() {
    let env = HubAndMember::start(&["--require-opt-in"]).await;
    env.join_push();
    let (member, home, hub_kc) = (&env.member, &env.home, env.hub_kc.clone());

    // A Deployment running in the member before the fleet knows it.
    let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}});
    let ns: k8s_openapi::api::core::v1::Namespace = serde_json::from_value(namespace).unwrap();
    Api::<k8s_openapi::api::core::v1::Namespace>::all(member.client())
        .patch("shop", &PatchParams::apply("test"), &Patch::Apply(&ns))
        .await
        .unwrap();
    let web = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "registry.k8s.io/pause:3.10"}]}}}
    });
    let deployments: Api<Deployment> = Api::namespaced(member.client(), "shop");
    deployments.patch("web", &PatchParams::apply("kubectl"), &Patch::Apply(&web)).await.unwrap();
    wait_for("web ready in m1", Duration::from_secs(60), || async {
        deployments.get("web").await.unwrap().status.and_then(|s| s.ready_replicas) == Some(2)
    })
    .await;
    let pods = pod_uids(member).await;

    // Clear errors before anything is written.
    let out =
        flotilla(&["promote", "web", "-n", "shop", "--cluster", "m1", "--kubeconfig", &hub_kc], home.path());
    assert!(!out.status.success());
    assert!(text(&out).contains("is not TYPE/NAME"), "{}", text(&out));
    let out = flotilla(
        &["promote", "deployment/nope", "-n", "shop", "--cluster", "m1", "--kubeconfig", &hub_kc],
        home.path(),
    );
    assert!(!out.status.success());
    assert!(text(&out).contains("cluster m1 has no deployment/nope in namespace shop"), "{}", text(&out));

    // The cluster must be Available before its push agent applies anything;
    // promote waits for the adoption itself.
    let out = flotilla(
        &[
            "promote",
            "deploy/web",
            "-n",
            "shop",
            "--cluster",
            "m1",
            "--kubeconfig",
            &hub_kc,
            "--timeout",
            "90",
        ],
        home.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("PropagationPolicy shop/promoted-deployment-web"), "{said}");
    assert!(said.contains("adopted"), "{said}");
    let adopted = deployments.get("web").await.unwrap();
    assert_eq!(adopted.labels().get("app.flotilla.io/managed-by").map(String::as_str), Some("flotilla"));
    assert_eq!(pod_uids(member).await, pods, "promote restarted pods");

    let out = flotilla(&["release", "deployment/web", "-n", "shop", "--kubeconfig", &hub_kc], home.path());
    assert!(out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("kept their objects") && said.contains("m1"), "{said}");
    assert!(said.contains("PropagationPolicy shop/promoted-deployment-web (made by promote"), "{said}");
    let left = deployments.get("web").await.unwrap();
    assert!(!left.labels().contains_key("app.flotilla.io/managed-by"));
    assert_eq!(pod_uids(member).await, pods, "release restarted pods");
}
