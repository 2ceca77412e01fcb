#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Gradual migration against a real hub and member: under
//! `--require-opt-in` a template not opted in is left alone; `promote`
//! adopts a running Deployment without restarting its pods and the fleet
//! manages it from then on; a suspended policy ignores template changes
//! until resumed; `release` leaves the member objects running.

use flotilla_testkit as support;

use std::collections::BTreeSet;
use std::time::Duration;

use flotilla_api::work::{keys, ResourceBinding, Work};
use flotilla_apps_core::migration::OptIn;
use flotilla_hub::HubConfig;
use flotilla_localkube::{wait_for, Cluster};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use support::policies::propagate_deployment;
use support::{apply, create_namespace, Fleet};

fn web(replicas: i32) -> serde_json::Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "registry.k8s.io/pause:3.10"}]}
            }
        }
    })
}

async fn pods(member: &Cluster) -> BTreeSet<String> {
    let pods: Api<Pod> = Api::namespaced(member.client(), "shop");
    pods.list(&ListParams::default().labels("app=web"))
        .await
        .unwrap()
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| p.uid().unwrap())
        .collect()
}

async fn replica_sets(member: &Cluster) -> BTreeSet<String> {
    let sets: Api<ReplicaSet> = Api::namespaced(member.client(), "shop");
    sets.list(&ListParams::default()).await.unwrap().items.iter().map(|r| r.uid().unwrap()).collect()
}

async fn member_deployment(member: &Cluster) -> Option<Deployment> {
    Api::<Deployment>::namespaced(member.client(), "shop").get_opt("web").await.unwrap()
}

async fn dispatching(bindings: &Api<ResourceBinding>) -> Option<(String, String)> {
    let b = bindings.get_opt("web-deployment").await.unwrap()?;
    let c = b.status?.conditions.into_iter().find(|c| c.type_ == "Dispatching")?;
    Some((c.status, c.reason))
}

async fn set_hub_replicas(hub: &Cluster, replicas: i32) {
    let patch = json!({"spec": {"replicas": replicas}});
    Api::<Deployment>::namespaced(hub.client(), "shop")
        .patch("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

#[tokio::test]
async fn promote_suspend_resume_and_release_under_require_opt_in() {
    let hub_config =
        HubConfig { opt_in: OptIn { required: true, ..Default::default() }, ..Default::default() };
    let fleet = Fleet::start_with_hub(&["eu"], hub_config).await;
    let hub = fleet.hub.client();
    let member = fleet.member("m1");

    // A workload running in the member before the fleet knows it.
    create_namespace(&member.client(), "shop").await;
    apply(&member.client(), web(2)).await;
    wait_for("web's 2 pods running in m1", Duration::from_secs(60), || async {
        member_deployment(member)
            .await
            .and_then(|d| d.status)
            .is_some_and(|s| s.ready_replicas == Some(2) && s.updated_replicas == Some(2))
    })
    .await;
    let pods_before = pods(member).await;
    let sets_before = replica_sets(member).await;
    let before = member_deployment(member).await.unwrap();
    assert_eq!(pods_before.len(), 2);

    // Not opted in: a template and a policy on the hub move nothing.
    create_namespace(&hub, "legacy").await;
    let mut legacy = web(1);
    legacy["metadata"]["namespace"] = json!("legacy");
    apply(&hub, legacy).await;
    apply(
        &hub,
        json!({
            "apiVersion": "policy.flotilla.io/v1alpha1", "kind": "PropagationPolicy",
            "metadata": {"name": "all", "namespace": "legacy"},
            "spec": {"resourceSelectors": [{"apiVersion": "apps/v1", "kind": "Deployment"}]}
        }),
    )
    .await;
    let events: Api<Event> = Api::namespaced(hub.clone(), "legacy");
    wait_for("a NotOptedIn event on the legacy template", Duration::from_secs(30), || async {
        events.list(&ListParams::default()).await.unwrap().items.iter().any(|e| {
            e.reason.as_deref() == Some("NotOptedIn") && e.involved_object.name.as_deref() == Some("web")
        })
    })
    .await;
    let works: Api<Work> = Api::namespaced(hub.clone(), "flotilla-cluster-m1");
    assert!(
        works.get_opt("legacy.web-deployment").await.unwrap().is_none(),
        "a Work for a template not opted in"
    );
    assert!(Api::<Deployment>::namespaced(member.client(), "legacy").get_opt("web").await.unwrap().is_none());

    // Promote: the hub template and policy come from the member object;
    // the agent takes it over without a restart.
    let promoted =
        flotilla_hub::migration::promote(&hub, &member.client(), "deployments.apps/web", "shop", "m1")
            .await
            .unwrap();
    assert_eq!(promoted.policy, "PropagationPolicy shop/promoted-deployment-web");
    flotilla_hub::migration::wait_adopted(&hub, &promoted, Duration::from_secs(60)).await.unwrap();
    let adopted = member_deployment(member).await.unwrap();
    assert_eq!(adopted.labels().get("app.flotilla.io/managed-by").map(String::as_str), Some("flotilla"));
    // (Its generation moves: Deployments count annotation changes too, and
    // the applier adds its own; the spec, pod template included, does not.)
    assert_eq!(adopted.spec, before.spec, "the member's spec changed");
    let hub_template = Api::<Deployment>::namespaced(hub.clone(), "shop").get("web").await.unwrap();
    assert_eq!(hub_template.labels().get("apps.flotilla.io/managed").map(String::as_str), Some("true"));
    assert!(!hub_template.annotations().contains_key("deployment.kubernetes.io/revision"));
    // Give a restart the time to show.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(pods(member).await, pods_before, "pods were replaced");
    assert_eq!(replica_sets(member).await, sets_before, "a new ReplicaSet was made");

    // The fleet manages it now: a template change reaches the member.
    set_hub_replicas(&fleet.hub, 3).await;
    wait_for("m1 running 3 replicas", Duration::from_secs(30), || async {
        member_deployment(member).await.and_then(|d| d.spec.replicas) == Some(3)
    })
    .await;
    let pods_now = pods(member).await;
    assert!(pods_before.is_subset(&pods_now), "scaling up replaced pods");

    // Suspended: template changes stop at the hub; the member runs on.
    let policies = Api::<flotilla_api::policy::PropagationPolicy>::namespaced(hub.clone(), "shop");
    let suspend = json!({"spec": {"suspension": {"dispatching": true}}});
    policies
        .patch("promoted-deployment-web", &PatchParams::default(), &Patch::Merge(&suspend))
        .await
        .unwrap();
    let bindings: Api<ResourceBinding> = Api::namespaced(hub.clone(), "shop");
    wait_for("the binding to say dispatch is suspended", Duration::from_secs(30), || async {
        dispatching(&bindings).await == Some(("False".into(), "DispatchingSuspended".into()))
    })
    .await;
    let work_before = works.get("shop.web-deployment").await.unwrap();
    set_hub_replicas(&fleet.hub, 1).await;
    wait_for("the binder to see the change", Duration::from_secs(30), || async {
        bindings.get("web-deployment").await.unwrap().spec.spec.replicas == 1
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let work_after = works.get("shop.web-deployment").await.unwrap();
    // Its status may change (the agent reports), its spec may not.
    let spec_hash =
        |w: &Work| w.metadata.annotations.clone().unwrap_or_default().get(keys::SPEC_HASH).cloned();
    assert_eq!(spec_hash(&work_after), spec_hash(&work_before), "the Work was rewritten");
    assert_eq!(
        serde_json::to_value(&work_after.spec).unwrap(),
        serde_json::to_value(&work_before.spec).unwrap(),
        "the Work was rewritten"
    );
    assert_eq!(member_deployment(member).await.and_then(|d| d.spec.replicas), Some(3));
    let template = Api::<Deployment>::namespaced(hub.clone(), "shop").get("web").await.unwrap();
    let template_says = template
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_.as_deref() == Some("Dispatching"))
        .and_then(|c| c.reason);
    assert_eq!(template_says.as_deref(), Some("DispatchingSuspended"));

    // Resumed: the change goes out.
    let resume = json!({"spec": {"suspension": null}});
    policies.patch("promoted-deployment-web", &PatchParams::default(), &Patch::Merge(&resume)).await.unwrap();
    wait_for("m1 scaled to 1 after the resume", Duration::from_secs(30), || async {
        member_deployment(member).await.and_then(|d| d.spec.replicas) == Some(1)
    })
    .await;
    wait_for("the binding to say dispatch runs", Duration::from_secs(30), || async {
        dispatching(&bindings).await == Some(("True".into(), "Dispatching".into()))
    })
    .await;

    // Release: out of the fleet, still running in the member.
    let released = flotilla_hub::migration::release(&hub, "deployment/web", "shop", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(released.clusters, vec!["m1".to_string()]);
    assert_eq!(released.policy_deleted.as_deref(), Some("PropagationPolicy shop/promoted-deployment-web"));
    assert!(Api::<Deployment>::namespaced(hub.clone(), "shop").get_opt("web").await.unwrap().is_none());
    assert!(policies.get_opt("promoted-deployment-web").await.unwrap().is_none());
    assert!(works.get_opt("shop.web-deployment").await.unwrap().is_none());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let left = member_deployment(member).await.expect("release deleted the member's Deployment");
    assert!(left.metadata.deletion_timestamp.is_none());
    assert!(!left.labels().contains_key("app.flotilla.io/managed-by"), "still marked as the fleet's");
    assert_eq!(left.spec.replicas, Some(1));
    assert_eq!(pods(member).await.len(), 1);
}

#[tokio::test]
async fn a_suspended_app_holds_its_dependencies_too_and_release_keeps_them() {
    let fleet = Fleet::start(&["eu"], &[]).await;
    let hub = fleet.hub.client();
    let member = fleet.member("m1");
    create_namespace(&hub, "deps").await;
    let config = |value: &str| {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "api-config", "namespace": "deps"},
            "data": {"mode": value}})
    };
    apply(&hub, config("one")).await;
    apply(
        &hub,
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "api", "namespace": "deps"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "api"}},
                "template": {"metadata": {"labels": {"app": "api"}},
                    "spec": {"containers": [{"name": "api", "image": "registry.k8s.io/pause:3.10",
                        "envFrom": [{"configMapRef": {"name": "api-config"}}]}]}}}
        }),
    )
    .await;
    propagate_deployment(
        &hub,
        "deps",
        "api",
        json!({
            "propagateDeps": true, "placement": {"clusterAffinity": {"clusterNames": ["m1"]}}
        }),
    )
    .await;
    let member_configs: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(member.client(), "deps");
    let mode = || async {
        member_configs.get_opt("api-config").await.unwrap().and_then(|c| c.data?.get("mode").cloned())
    };
    wait_for("the config in m1", Duration::from_secs(60), || async {
        mode().await.as_deref() == Some("one")
    })
    .await;

    // Suspended on m1: the dependency is held too.
    let policies = Api::<flotilla_api::policy::PropagationPolicy>::namespaced(hub.clone(), "deps");
    let suspend = json!({"spec": {"suspension": {"dispatchingOnClusters": {"clusterNames": ["m1"]}}}});
    policies.patch("api", &PatchParams::default(), &Patch::Merge(&suspend)).await.unwrap();
    let bindings: Api<ResourceBinding> = Api::namespaced(hub.clone(), "deps");
    wait_for("the dependency's binding to be suspended on m1", Duration::from_secs(30), || async {
        bindings
            .get_opt("api-config-configmap")
            .await
            .unwrap()
            .and_then(|b| b.spec.spec.suspension)
            .is_some_and(|s| {
                s.dispatching_on_clusters.is_some_and(|c| c.cluster_names == vec!["m1".to_string()])
            })
    })
    .await;
    apply(&hub, config("two")).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(mode().await.as_deref(), Some("one"), "a suspended app's dependency changed");
    let resume = json!({"spec": {"suspension": null}});
    policies.patch("api", &PatchParams::default(), &Patch::Merge(&resume)).await.unwrap();
    wait_for("the config to reach m1 after the resume", Duration::from_secs(30), || async {
        mode().await.as_deref() == Some("two")
    })
    .await;

    // Release: the Deployment and its ConfigMap stay in the member, also
    // once the dependency's own Work is gone.
    let released = flotilla_hub::migration::release(&hub, "deployment/api", "deps", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(released.dependencies, vec!["api-config".to_string()]);
    assert_eq!(released.policy_kept.as_ref().map(|(p, _)| p.as_str()), Some("PropagationPolicy deps/api"));
    let works: Api<Work> = Api::namespaced(hub.clone(), "flotilla-cluster-m1");
    wait_for("the dependency's Work to go", Duration::from_secs(30), || async {
        works.get_opt("deps.api-config-configmap").await.unwrap().is_none()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(mode().await.as_deref(), Some("two"), "release removed the dependency from the member");
    assert!(Api::<Deployment>::namespaced(member.client(), "deps").get_opt("api").await.unwrap().is_some());
}
