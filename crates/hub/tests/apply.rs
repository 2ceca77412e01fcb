#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The work applier against a real hub and real members: Works are applied,
//! updated, pruned, repaired and cleaned up in the member, conflicts with
//! objects Flotilla did not create are reported, and health comes back;
//! for a push cluster the hub applies and reports its Warning Events.

use flotilla_testkit as support;

use std::time::Duration;

use flotilla_api::work::{keys, Health, ManifestStatus, Work, WorkStatus};
use flotilla_localkube::{wait_for, Cluster, ClusterConfig};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::{json, Value};
use support::clusters::join_push;

/// A hub with Flotilla's CRDs, the member's namespace on it, and the
/// applier running for that member with admin clients.
async fn start(member: ClusterConfig) -> (Cluster, Cluster, Api<Work>, tokio::task::JoinHandle<()>) {
    let name = member.name.clone();
    let (hub, member) = tokio::join!(Cluster::start(ClusterConfig::hub("hub")), Cluster::start(member));
    let (hub, member) = (hub.unwrap(), member.unwrap());
    flotilla_hub::install(&hub.client()).await.unwrap();
    let namespace = format!("flotilla-cluster-{name}");
    let ns: Namespace = serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}),
    )
    .unwrap();
    Api::<Namespace>::all(hub.client()).create(&PostParams::default(), &ns).await.unwrap();
    let applier = tokio::spawn(flotilla_agent::apply::run_applier(
        hub.client(),
        namespace.clone(),
        member.client(),
        name.clone(),
        flotilla_agent::pods::MemberPods::start(member.client()),
    ));
    let applier = tokio::spawn(async move {
        let result = applier.await.unwrap();
        panic!("the applier stopped: {result:?}");
    });
    let works = Api::namespaced(hub.client(), &namespace);
    (hub, member, works, applier)
}

fn work(name: &str, hash: &str, manifests: Vec<Value>) -> Work {
    serde_json::from_value(json!({
        "apiVersion": "work.flotilla.io/v1alpha1", "kind": "Work",
        "metadata": {"name": name, "annotations": {keys::SPEC_HASH: hash}},
        "spec": {"manifests": manifests}
    }))
    .unwrap()
}

fn config_map(name: &str, namespace: &str, value: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": name, "namespace": namespace}, "data": {"key": value}})
}

fn deployment(name: &str, replicas: i32) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": name, "namespace": "default", "labels": {"app": name}},
           "spec": {"replicas": replicas,
                    "selector": {"matchLabels": {"app": name}},
                    "template": {"metadata": {"labels": {"app": name}},
                                 "spec": {"containers": [{"name": "main", "image": "example/web:1"}]}}}})
}

fn widget(name: &str, size: i64) -> Value {
    json!({"apiVersion": "example.com/v1", "kind": "Widget",
           "metadata": {"name": name, "namespace": "default"}, "spec": {"size": size}})
}

async fn set_manifests(works: &Api<Work>, name: &str, hash: &str, manifests: Vec<Value>) {
    let patch =
        json!({"metadata": {"annotations": {keys::SPEC_HASH: hash}}, "spec": {"manifests": manifests}});
    works.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
}

async fn status(works: &Api<Work>, name: &str) -> WorkStatus {
    works.get(name).await.unwrap().status.unwrap_or_default()
}

fn manifest<'a>(status: &'a WorkStatus, kind: &str, name: &str) -> Option<&'a ManifestStatus> {
    status.manifest_statuses.iter().find(|m| m.identifier.kind == kind && m.identifier.name == name)
}

fn condition<'a>(status: &'a WorkStatus, type_: &str) -> Option<&'a str> {
    status.conditions.iter().find(|c| c.type_ == type_).map(|c| c.status.as_str())
}

fn managed(object: &impl ResourceExt, work: &str) -> bool {
    object.labels().get(keys::MANAGED_BY).map(String::as_str) == Some(keys::MANAGED_BY_VALUE)
        && object.annotations().get(keys::APPLIED_BY_WORK).map(String::as_str) == Some(work)
}

async fn install_widget_crd(member: &Cluster) {
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
                 "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                 "versions": [{"name": "v1", "served": true, "storage": true,
                               "schema": {"openAPIV3Schema": {"type": "object",
                                   "x-kubernetes-preserve-unknown-fields": true}}}]}
    }))
    .unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(member.client());
    crds.create(&PostParams::default(), &crd).await.unwrap();
    wait_for("the Widget CRD to be established", Duration::from_secs(20), || async {
        crds.get("widgets.example.com").await.unwrap().status.is_some_and(|s| {
            s.conditions.iter().flatten().any(|c| c.type_ == "Established" && c.status == "True")
        })
    })
    .await;
}

#[tokio::test]
async fn works_are_applied_kept_healthy_repaired_pruned_and_cleaned_up() {
    let (_hub, member, works, _applier) = start(ClusterConfig::new("m1").with_nodes(2)).await;
    let config_maps: Api<ConfigMap> = Api::namespaced(member.client(), "default");
    let deployments: Api<Deployment> = Api::namespaced(member.client(), "default");
    let applied_by = "flotilla-cluster-m1/web";

    // A ConfigMap and a Deployment: applied, marked, and the Deployment's
    // availability comes back to the hub.
    let manifests = vec![config_map("web-config", "default", "v1"), deployment("web", 2)];
    works.create(&PostParams::default(), &work("web", "h1", manifests)).await.unwrap();
    wait_for("the Work's objects in the member", Duration::from_secs(10), || async {
        let cm = config_maps.get_opt("web-config").await.unwrap();
        let deploy = deployments.get_opt("web").await.unwrap();
        cm.is_some_and(|c| managed(&c, applied_by)) && deploy.is_some_and(|d| managed(&d, applied_by))
    })
    .await;
    let w = works.get("web").await.unwrap();
    assert!(w.finalizers().iter().any(|f| f == keys::WORK_FINALIZER), "finalizer added");
    wait_for("the Deployment reported Healthy with 2 available", Duration::from_secs(60), || async {
        let s = status(&works, "web").await;
        let Some(d) = manifest(&s, "Deployment", "web") else { return false };
        d.applied
            && d.health == Health::Healthy
            && d.status.as_ref().is_some_and(|st| st["availableReplicas"] == 2)
            && condition(&s, "Applied") == Some("True")
            && condition(&s, "Available") == Some("True")
            && s.observed_spec_hash == "h1"
    })
    .await;
    let s = status(&works, "web").await;
    let d = manifest(&s, "Deployment", "web").unwrap();
    assert_eq!(
        (d.identifier.group.as_str(), d.identifier.version.as_str(), d.identifier.resource.as_str()),
        ("apps", "v1", "deployments")
    );
    assert_eq!((d.identifier.ordinal, d.identifier.namespace.as_str()), (1, "default"));
    assert!(d.generation.is_some());
    assert_eq!(manifest(&s, "ConfigMap", "web-config").unwrap().health, Health::Healthy);

    // Editing the Work updates the member.
    let manifests = vec![config_map("web-config", "default", "v2"), deployment("web", 3)];
    set_manifests(&works, "web", "h2", manifests).await;
    wait_for("the edit in the member", Duration::from_secs(10), || async {
        let cm = config_maps.get("web-config").await.unwrap();
        let deploy = deployments.get("web").await.unwrap();
        cm.data.unwrap_or_default().get("key").map(String::as_str) == Some("v2")
            && deploy.spec.replicas == Some(3)
    })
    .await;
    wait_for("3 available reported", Duration::from_secs(60), || async {
        let s = status(&works, "web").await;
        s.observed_spec_hash == "h2"
            && manifest(&s, "Deployment", "web").is_some_and(|d| {
                d.health == Health::Healthy && d.status.as_ref().unwrap()["availableReplicas"] == 3
            })
    })
    .await;

    // Drift: an object deleted in the member comes back; an edit is undone.
    let old_uid = config_maps.get("web-config").await.unwrap().uid();
    config_maps.delete("web-config", &DeleteParams::default()).await.unwrap();
    wait_for("the deleted ConfigMap re-applied", Duration::from_secs(10), || async {
        config_maps.get_opt("web-config").await.unwrap().is_some_and(|c| c.uid() != old_uid)
    })
    .await;
    let scale = json!({"spec": {"replicas": 1}});
    deployments.patch("web", &PatchParams::default(), &Patch::Merge(&scale)).await.unwrap();
    wait_for("the edited Deployment repaired", Duration::from_secs(10), || async {
        deployments.get("web").await.unwrap().spec.replicas == Some(3)
    })
    .await;

    // Removing a manifest deletes its object from the member.
    set_manifests(&works, "web", "h3", vec![deployment("web", 3)]).await;
    wait_for("the removed ConfigMap deleted", Duration::from_secs(10), || async {
        config_maps.get_opt("web-config").await.unwrap().is_none()
    })
    .await;
    wait_for("the status to list only the Deployment", Duration::from_secs(10), || async {
        let s = status(&works, "web").await;
        s.observed_spec_hash == "h3" && s.manifest_statuses.len() == 1
    })
    .await;

    // A custom resource whose CRD the member does not have yet: reported,
    // then applied once the CRD is installed.
    let widgets: Api<DynamicObject> = Api::namespaced_with(
        member.client(),
        "default",
        &ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("example.com", "v1", "Widget"), "widgets"),
    );
    works.create(&PostParams::default(), &work("gadgets", "g1", vec![widget("small", 1)])).await.unwrap();
    wait_for("the unknown kind reported", Duration::from_secs(10), || async {
        let s = status(&works, "gadgets").await;
        manifest(&s, "Widget", "small").is_some_and(|m| !m.applied && m.reason == "UnknownKind")
            && condition(&s, "Applied") == Some("False")
    })
    .await;
    install_widget_crd(&member).await;
    wait_for("the Widget applied", Duration::from_secs(15), || async {
        widgets.get_opt("small").await.unwrap().is_some_and(|w| w.data["spec"]["size"] == 1)
    })
    .await;
    wait_for("the Widget reported applied", Duration::from_secs(10), || async {
        let s = status(&works, "gadgets").await;
        manifest(&s, "Widget", "small").is_some_and(|m| m.applied && m.identifier.resource == "widgets")
    })
    .await;
    set_manifests(&works, "gadgets", "g2", vec![widget("small", 2)]).await;
    wait_for("the Widget updated", Duration::from_secs(10), || async {
        widgets.get("small").await.unwrap().data["spec"]["size"] == 2
    })
    .await;

    // Deleting Works removes their objects, then the finalizer lets them go.
    works.delete("web", &DeleteParams::default()).await.unwrap();
    works.delete("gadgets", &DeleteParams::default()).await.unwrap();
    wait_for("the Works gone", Duration::from_secs(15), || async {
        works.get_opt("web").await.unwrap().is_none() && works.get_opt("gadgets").await.unwrap().is_none()
    })
    .await;
    assert!(widgets.get_opt("small").await.unwrap().is_none_or(|w| w.metadata.deletion_timestamp.is_some()));
    assert!(deployments
        .get_opt("web")
        .await
        .unwrap()
        .is_none_or(|d| d.metadata.deletion_timestamp.is_some()));
}

#[tokio::test]
async fn conflicts_overwrite_preservation_and_cleanup_after_a_member_returns() {
    let (_hub, mut member, works, _applier) = start(ClusterConfig::apiserver_only("m2")).await;
    let deployments: Api<Deployment> = Api::namespaced(member.client(), "default");

    // Someone else's Deployment.
    let mut theirs: Deployment = serde_json::from_value(deployment("legacy", 5)).unwrap();
    theirs.metadata.labels.as_mut().unwrap().insert("owner".into(), "team-a".into());
    deployments.create(&PostParams::default(), &theirs).await.unwrap();

    works.create(&PostParams::default(), &work("legacy", "l1", vec![deployment("legacy", 2)])).await.unwrap();
    wait_for("the conflict reported", Duration::from_secs(10), || async {
        let s = status(&works, "legacy").await;
        manifest(&s, "Deployment", "legacy").is_some_and(|m| !m.applied && m.reason == "Conflict")
            && condition(&s, "Applied") == Some("False")
    })
    .await;
    let s = status(&works, "legacy").await;
    let message = &manifest(&s, "Deployment", "legacy").unwrap().message;
    for expected in [
        "Deployment default/legacy",
        "cluster m2",
        "not created by Flotilla",
        "conflictResolution: Overwrite",
    ] {
        assert!(message.contains(expected), "{expected:?} not in {message:?}");
    }
    let applied = s.conditions.iter().find(|c| c.type_ == "Applied").unwrap();
    assert_eq!((applied.reason.as_str(), applied.message.as_str()), ("Conflict", message.as_str()));
    let untouched = deployments.get("legacy").await.unwrap();
    assert_eq!(untouched.spec.replicas, Some(5));
    assert!(!untouched.labels().contains_key(keys::MANAGED_BY));

    // Overwrite takes it over.
    let overwrite = json!({"spec": {"conflictResolution": "Overwrite"}});
    works.patch("legacy", &PatchParams::default(), &Patch::Merge(&overwrite)).await.unwrap();
    wait_for("the Deployment taken over", Duration::from_secs(10), || async {
        let d = deployments.get("legacy").await.unwrap();
        managed(&d, "flotilla-cluster-m2/legacy") && d.spec.replicas == Some(2)
    })
    .await;
    wait_for("the takeover reported", Duration::from_secs(10), || async {
        let s = status(&works, "legacy").await;
        manifest(&s, "Deployment", "legacy").is_some_and(|m| m.applied)
            && condition(&s, "Applied") == Some("True")
    })
    .await;

    // Another Work wanting the same object is told who has it, and its
    // deletion leaves the object alone.
    works.create(&PostParams::default(), &work("copy", "c1", vec![deployment("legacy", 4)])).await.unwrap();
    wait_for("the other Work's conflict", Duration::from_secs(10), || async {
        let s = status(&works, "copy").await;
        manifest(&s, "Deployment", "legacy").is_some_and(|m| {
            m.reason == "Conflict" && m.message.contains("another Work (flotilla-cluster-m2/legacy)")
        })
    })
    .await;
    works.delete("copy", &DeleteParams::default()).await.unwrap();
    wait_for("the other Work gone", Duration::from_secs(10), || async {
        works.get_opt("copy").await.unwrap().is_none()
    })
    .await;
    let d = deployments.get("legacy").await.unwrap();
    assert!(managed(&d, "flotilla-cluster-m2/legacy") && d.spec.replicas == Some(2));

    // preserveResourcesOnDeletion: the objects stay, no longer Flotilla's.
    // Their namespace does not exist yet: the applier creates it.
    let keep_maps: Api<ConfigMap> = Api::namespaced(member.client(), "keep");
    let mut keep = work("keep", "k1", vec![config_map("settings", "keep", "x")]);
    keep.spec.preserve_resources_on_deletion = true;
    works.create(&PostParams::default(), &keep).await.unwrap();
    wait_for("the preserved ConfigMap applied", Duration::from_secs(10), || async {
        keep_maps.get_opt("settings").await.unwrap().is_some_and(|c| managed(&c, "flotilla-cluster-m2/keep"))
    })
    .await;
    works.delete("keep", &DeleteParams::default()).await.unwrap();
    wait_for("the preserving Work gone", Duration::from_secs(10), || async {
        works.get_opt("keep").await.unwrap().is_none()
    })
    .await;
    let kept = keep_maps.get("settings").await.unwrap();
    assert!(kept.metadata.deletion_timestamp.is_none());
    assert!(!kept.labels().contains_key(keys::MANAGED_BY));
    assert!(!kept.annotations().contains_key(keys::APPLIED_BY_WORK));
    assert_eq!(kept.data.unwrap()["key"], "x");

    // Deleting the Work that took the Deployment over deletes it.
    works.delete("legacy", &DeleteParams::default()).await.unwrap();
    wait_for("the taken-over Deployment deleted", Duration::from_secs(10), || async {
        works.get_opt("legacy").await.unwrap().is_none()
            && deployments.get_opt("legacy").await.unwrap().is_none()
    })
    .await;

    // A Work deleted while its member is down waits for the member and
    // cleans up when it is back.
    let config_maps: Api<ConfigMap> = Api::namespaced(member.client(), "default");
    works
        .create(&PostParams::default(), &work("away", "a1", vec![config_map("away", "default", "x")]))
        .await
        .unwrap();
    wait_for("the ConfigMap applied", Duration::from_secs(10), || async {
        config_maps.get_opt("away").await.unwrap().is_some()
    })
    .await;
    member.stop("kube-apiserver").unwrap();
    works.delete("away", &DeleteParams::default()).await.unwrap();
    let held = works.get("away").await.unwrap();
    assert!(
        held.metadata.deletion_timestamp.is_some()
            && held.finalizers().iter().any(|f| f == keys::WORK_FINALIZER)
    );
    member.restart("kube-apiserver").await.unwrap();
    wait_for("the Work cleaned up after the member came back", Duration::from_secs(30), || async {
        works.get_opt("away").await.unwrap().is_none()
    })
    .await;
    assert!(config_maps.get_opt("away").await.unwrap().is_none());
}

#[tokio::test]
async fn the_hub_applies_works_to_push_clusters() {
    use flotilla_api::cluster::ManagedCluster;
    use futures::StreamExt;
    use kube::runtime::{reflector, watcher, WatchStreamExt};

    let (hub, member) = tokio::join!(
        Cluster::start(ClusterConfig::hub("hub")),
        Cluster::start(ClusterConfig::apiserver_only("p"))
    );
    let (hub, member) = (hub.unwrap(), member.unwrap());
    flotilla_hub::install(&hub.client()).await.unwrap();
    // What `flotilla join p --mode push` and the hub's registration write.
    join_push(&hub.client(), "p", member.kubeconfig_path()).await;
    let ns: Namespace = serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "flotilla-cluster-p"}}),
    )
    .unwrap();
    Api::<Namespace>::all(hub.client()).create(&PostParams::default(), &ns).await.unwrap();

    let (store, writer) = reflector::store();
    let clusters = watcher(Api::<ManagedCluster>::all(hub.client()), watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .for_each(|_| async {});
    let _clusters = tokio::spawn(clusters);
    // No change signal: the reporters start at push mode's periodic rescan.
    let changed = std::sync::Arc::new(tokio::sync::Notify::new());
    let _push = tokio::spawn(flotilla_hub::push::run(hub.client(), store, changed));

    let works: Api<Work> = Api::namespaced(hub.client(), "flotilla-cluster-p");
    works
        .create(&PostParams::default(), &work("settings", "s1", vec![config_map("settings", "default", "x")]))
        .await
        .unwrap();
    let config_maps: Api<ConfigMap> = Api::namespaced(member.client(), "default");
    wait_for("the push cluster's Work applied", Duration::from_secs(20), || async {
        config_maps
            .get_opt("settings")
            .await
            .unwrap()
            .is_some_and(|c| managed(&c, "flotilla-cluster-p/settings"))
    })
    .await;
    wait_for("the push cluster's Work status", Duration::from_secs(10), || async {
        condition(&status(&works, "settings").await, "Applied") == Some("True")
    })
    .await;

    // A Warning Event about the applied ConfigMap in the member (as a
    // controller there records one) reaches the Work's memberWarnings,
    // which the hub re-emits on the template: push members' warnings are
    // reported by the hub itself.
    let now = serde_json::to_value(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now(),
    ))
    .unwrap();
    let event: k8s_openapi::api::core::v1::Event = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": "settings.bad", "namespace": "default"},
        "involvedObject": {"apiVersion": "v1", "kind": "ConfigMap", "name": "settings", "namespace": "default"},
        "type": "Warning", "reason": "BadSetting", "message": "key x is not understood",
        "source": {"component": "settings-checker"}, "count": 1,
        "firstTimestamp": now, "lastTimestamp": now,
    }))
    .unwrap();
    Api::namespaced(member.client(), "default").create(&PostParams::default(), &event).await.unwrap();
    wait_for("the member's Warning on the push Work's memberWarnings", Duration::from_secs(90), || async {
        status(&works, "settings")
            .await
            .member_warnings
            .iter()
            .any(|w| w.reason == "BadSetting" && w.message.contains("key x is not understood"))
    })
    .await;
}
