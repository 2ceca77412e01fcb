#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Karmada's application failover with a container that really crashes:
//! a member on a real node (containerd and a real kubelet) where the
//! busybox container exits at once and crash-loops, and a member with a
//! hollow node. The copy unhealthy past its toleration fails over, and the
//! failed copy's state reaches the new one as a label.

use flotilla_testkit as support;

use std::time::Duration;

use flotilla_api::cluster::ManagedCluster;
use flotilla_api::work::ResourceBinding;
use flotilla_localkube::real_node::{RealNodes, BUSYBOX_IMAGE};
use flotilla_localkube::wait_for;
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use serde_json::json;
use support::bindings::chosen;
use support::clusters::set_taints;
use support::policies::{graceful_app_failover, propagate_deployment};
use support::{apply, create_namespace, Fleet};

const WAIT: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_looping_application_fails_over_with_its_state_from_a_real_node() {
    let mut nodes = RealNodes::reserve().unwrap();
    let fleet = Fleet::start_with_real_m1(&mut nodes, &["eu", "eu"]).await;
    let hub = fleet.hub.client();
    create_namespace(&hub, "demo").await;
    // m2 takes nothing new yet, so the template starts on the real node.
    let clusters: Api<ManagedCluster> = Api::all(hub.clone());
    set_taints(&clusters, "m2", json!([{"key": "example.com/not-yet", "effect": "NoSchedule"}])).await;
    let rules =
        json!([{"aliasLabelName": "failover.example.com/unavailable", "jsonPath": "{.unavailableReplicas}"}]);
    propagate_deployment(&hub, "demo", "web", graceful_app_failover(300, rules)).await;
    apply(
        &hub,
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "demo", "labels": {"app": "web"}},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "main",
                        "image": BUSYBOX_IMAGE, "imagePullPolicy": "IfNotPresent",
                        "command": ["sh", "-c", "echo starting; exit 1"]}]}}}
        }),
    )
    .await;
    let bindings = Api::<ResourceBinding>::namespaced(hub.clone(), "demo");
    wait_for("web placed on the real node's member", WAIT, || async {
        chosen(&bindings, "web-deployment").await == ["m1"]
    })
    .await;
    // The container really crashes there: the kubelet restarts it.
    let pods = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(fleet.member("m1").client(), "demo");
    wait_for("the container restarting on the real node", WAIT, || async {
        pods.list(&Default::default()).await.unwrap().items.iter().any(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.restart_count > 0))
        })
    })
    .await;
    set_taints(&clusters, "m2", json!([])).await;

    wait_for("web failed over to m2", WAIT, || async { chosen(&bindings, "web-deployment").await == ["m2"] })
        .await;
    let b = bindings.get("web-deployment").await.unwrap();
    let preserved = &b.spec.spec.preserved_states;
    assert_eq!(preserved.len(), 1, "{preserved:?}");
    assert_eq!(preserved[0].cluster, "m2");
    assert_eq!(preserved[0].labels.get("failover.example.com/unavailable").map(String::as_str), Some("1"));
    let copies = Api::<Deployment>::namespaced(fleet.member("m2").client(), "demo");
    wait_for("the new copy on m2 available, with the preserved state", WAIT, || async {
        copies.get_opt("web").await.unwrap().is_some_and(|d| {
            let label =
                d.metadata.labels.unwrap_or_default().get("failover.example.com/unavailable").cloned();
            label.as_deref() == Some("1") && d.status.and_then(|s| s.available_replicas) == Some(1)
        })
    })
    .await;
    let failed = Api::<Deployment>::namespaced(fleet.member("m1").client(), "demo");
    wait_for("the crash-looping copy removed from the real node's member", WAIT, || async {
        failed.get_opt("web").await.unwrap().is_none()
    })
    .await;
    assert_eq!(chosen(&bindings, "web-deployment").await, ["m2"], "the template stays where it is healthy");
}
