#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Events across a real fleet (a hub and two members with hollow nodes,
//! pull agents): the binder's `Scheduled` on a binding, a member's Warning
//! Event about a propagated Deployment's pod re-emitted on the hub's
//! template, and a cluster whose agent is gone turning unreachable and
//! tainted on its ManagedCluster; and, on the binding of a member that
//! fails, `FailedOver` and `Evicting` once its replicas move, then
//! `Evicted` once they run elsewhere.

use std::time::Duration;

use flotilla_api::work::ResourceBinding;
use flotilla_apps_core::failover::FailoverSettings;
use flotilla_localkube::wait_for;
use k8s_openapi::api::core::v1::Event;
use kube::api::ListParams;
use kube::{Api, Client};
use serde_json::json;

use flotilla_testkit as support;
use support::policies::propagate_deployment;
use support::{apply, create_namespace, Fleet};

const WAIT: Duration = Duration::from_secs(120);

/// `(type, reason, message)` of the Events about an object.
async fn events_about(
    client: &Client,
    namespace: &str,
    kind: &str,
    name: &str,
) -> Vec<(String, String, String)> {
    let api: Api<Event> = Api::namespaced(client.clone(), namespace);
    let params =
        ListParams::default().fields(&format!("involvedObject.kind={kind},involvedObject.name={name}"));
    api.list(&params)
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|e| (e.type_.unwrap_or_default(), e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
        .collect()
}

#[tokio::test]
async fn decisions_and_member_warnings_are_events_on_the_hub() {
    let mut fleet = Fleet::start(&["eu", "us"], &[]).await;
    let hub = fleet.hub.client();
    create_namespace(&hub, "shop").await;

    // Joining was news: each ManagedCluster says so.
    wait_for("m1's Joined and ClusterReady Events", Duration::from_secs(30), || async {
        let events = events_about(&hub, "default", "ManagedCluster", "m1").await;
        ["Joined", "ClusterReady"]
            .iter()
            .all(|r| events.iter().any(|(t, reason, _)| t == "Normal" && reason == r))
    })
    .await;

    // A Deployment no member node can take: its pods stay Pending and the
    // member's scheduler records FailedScheduling about them.
    propagate_deployment(
        &hub,
        "shop",
        "web",
        json!({
            "placement": {"clusterAffinity": {"clusterNames": ["m1"]}}
        }),
    )
    .await;
    apply(
        &hub,
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                    "nodeSelector": {"example.com/no-such-pool": "true"},
                    "containers": [{"name": "app", "image": "docker.io/library/nginx:1.25"}]}}}
        }),
    )
    .await;

    wait_for("a Scheduled Event on the binding", Duration::from_secs(60), || async {
        events_about(&hub, "shop", "ResourceBinding", "web-deployment")
            .await
            .iter()
            .any(|(t, reason, message)| t == "Normal" && reason == "Scheduled" && message.contains("m1"))
    })
    .await;

    wait_for("the member's FailedScheduling on the hub's Deployment", Duration::from_secs(90), || async {
        events_about(&hub, "shop", "Deployment", "web").await.iter().any(|(t, reason, message)| {
            t == "Warning" && reason == "FailedScheduling" && message.starts_with("m1: Pod/web-")
        })
    })
    .await;
    // The Work carries the bounded list the agent keeps.
    let works: Api<flotilla_api::work::Work> = Api::namespaced(hub.clone(), "flotilla-cluster-m1");
    let work = works.list(&ListParams::default()).await.unwrap().items.into_iter().next().unwrap();
    let warnings = work.status.unwrap().member_warnings;
    assert_eq!(warnings.iter().filter(|w| w.reason == "FailedScheduling").count(), 1, "{warnings:?}");
    // Nothing of m2 (it runs no copy).
    let on_template = events_about(&hub, "shop", "Deployment", "web").await;
    assert!(on_template.iter().all(|(_, _, m)| !m.starts_with("m2:")), "{on_template:?}");

    // m1's agent goes: unreachable, then tainted, each said once.
    fleet.agents.remove("m1").unwrap().abort();
    wait_for("m1's ClusterUnreachable and ClusterTainted Events", Duration::from_secs(60), || async {
        let events = events_about(&hub, "default", "ManagedCluster", "m1").await;
        ["ClusterUnreachable", "ClusterTainted"]
            .iter()
            .all(|r| events.iter().any(|(t, reason, _)| t == "Warning" && reason == r))
    })
    .await;
    let events = events_about(&hub, "default", "ManagedCluster", "m1").await;
    let unreachable: Vec<_> = events.iter().filter(|(_, r, _)| r == "ClusterUnreachable").collect();
    assert_eq!(unreachable.len(), 1, "{events:?}");
    assert!(unreachable[0].2.contains("m1"), "{events:?}");
    // m2 stayed healthy, and its bring-up taint was no news.
    let m2 = events_about(&hub, "default", "ManagedCluster", "m2").await;
    let alarming = ["ClusterUnreachable", "ClusterNotReady", "ClusterTainted"];
    assert!(m2.iter().all(|(_, r, _)| !alarming.contains(&r.as_str())), "{m2:?}");
}

/// A member whose agent goes: the hub taints it unreachable (NoExecute),
/// and once the toleration runs out the binder moves its replicas to the
/// other member, which had no copy: `FailedOver` and `Evicting` on the
/// binding (the old copy is kept until the new one is healthy), then
/// `Evicted` when it is.
#[tokio::test]
async fn failover_and_eviction_are_events_on_the_binding() {
    let failover = FailoverSettings { default_toleration_seconds: Some(3), ..Default::default() };
    let mut fleet = Fleet::start_with(&["eu", "us"], &[], failover, false).await;
    let hub = fleet.hub.client();
    create_namespace(&hub, "shop").await;
    // Aggregated: as few clusters as fit, so the replicas start on one.
    propagate_deployment(
        &hub,
        "shop",
        "web",
        json!({
            "placement": {"replicaScheduling": {"replicaSchedulingType": "Divided",
                "replicaDivisionPreference": "Aggregated"}}
        }),
    )
    .await;
    apply(
        &hub,
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                    "containers": [{"name": "app", "image": "docker.io/library/nginx:1.25"}]}}}
        }),
    )
    .await;
    let bindings: Api<ResourceBinding> = Api::namespaced(hub.clone(), "shop");
    let placed = || async {
        let b = bindings.get_opt("web-deployment").await.unwrap();
        b.map(|b| b.spec.spec.clusters.iter().map(|c| c.name.clone()).collect::<Vec<_>>()).unwrap_or_default()
    };
    wait_for("web placed on one member", WAIT, || async { placed().await.len() == 1 }).await;
    let lost = placed().await.remove(0);
    let other = if lost == "m1" { "m2" } else { "m1" };
    wait_for("web's Scheduled Event", WAIT, || async {
        events_about(&hub, "shop", "ResourceBinding", "web-deployment")
            .await
            .iter()
            .any(|(_, r, _)| r == "Scheduled")
    })
    .await;

    fleet.agents.remove(&lost).unwrap().abort();
    let said = |reason: &'static str, kind: &'static str| {
        let (hub, lost) = (&hub, &lost);
        async move {
            events_about(hub, "shop", "ResourceBinding", "web-deployment")
                .await
                .iter()
                .any(|(t, r, m)| t == kind && r == reason && m.contains(&format!("cluster {lost}")))
        }
    };
    wait_for("FailedOver and Evicting on the binding", WAIT, || async {
        said("FailedOver", "Warning").await && said("Evicting", "Warning").await
    })
    .await;
    wait_for("Evicted once the replicas run elsewhere", WAIT, || said("Evicted", "Normal")).await;
    let b = bindings.get("web-deployment").await.unwrap();
    assert_eq!(b.spec.spec.failed_over_from, [lost.as_str()], "{:?}", b.spec.spec);
    let now_on: Vec<&str> = b.spec.spec.clusters.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(now_on, [other]);
    assert!(b.spec.spec.graceful_eviction_tasks.is_empty(), "{:?}", b.spec.spec.graceful_eviction_tasks);
    // Each decision said once.
    let events = events_about(&hub, "shop", "ResourceBinding", "web-deployment").await;
    for reason in ["FailedOver", "Evicting", "Evicted"] {
        assert_eq!(events.iter().filter(|(_, r, _)| r == reason).count(), 1, "{reason}: {events:?}");
    }
}
