#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Applications across a real fleet: a hub and three members with hollow
//! nodes, agents joined in pull mode. Templates and policies go in on the
//! hub; the members run the result.

use std::collections::BTreeMap;
use std::time::Duration;

use flotilla_api::cluster::ManagedCluster;
use flotilla_api::work::{keys, ResourceBinding, Work};
use flotilla_apps_core::applied_overrides::APPLIED_OVERRIDES_ANNOTATION;
use flotilla_apps_core::failover::{FailoverSettings, MaxSurge};
use flotilla_localkube::{wait_for, Cluster};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use flotilla_testkit as support;
use support::bindings::{binding_condition, is_true, pairs, replicas_by_cluster};
use support::policies::{divided_by_weights, propagate_deployment, propagate_every_deployment};
use support::workloads::deployment;
use support::{apply, create_namespace, widget_api, Fleet};

async fn member_replicas(member: &Cluster, name: &str) -> Option<(i32, i32)> {
    let d = Api::<Deployment>::namespaced(member.client(), "demo").get_opt(name).await.ok()??;
    let spec = d.spec.replicas.unwrap_or(1);
    let available = d.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0);
    Some((spec, available))
}

async fn hub_available(hub: &Cluster, name: &str) -> (i32, i32) {
    let d = Api::<Deployment>::namespaced(hub.client(), "demo").get(name).await.unwrap();
    let status = d.status.unwrap_or_default();
    (status.ready_replicas.unwrap_or(0), status.available_replicas.unwrap_or(0))
}

#[tokio::test]
async fn templates_are_divided_overridden_followed_by_their_config_and_removed_everywhere() {
    let fleet = Fleet::start(&["eu", "us", "us"], &[0, 1]).await;
    let hub = fleet.hub.client();
    create_namespace(&hub, "demo").await;

    // (iii) a ConfigMap the Deployment needs; (ii) an image override for eu.
    apply(
        &hub,
        json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "web-config", "namespace": "demo"}, "data": {"MODE": "fleet"}}),
    )
    .await;
    apply(
        &hub,
        json!({
            "apiVersion": "policy.flotilla.io/v1alpha1", "kind": "OverridePolicy",
            "metadata": {"name": "eu-registry", "namespace": "demo"},
            "spec": {"resourceSelectors": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}],
                "overrideRules": [{
                    "targetCluster": {"fieldSelector": {"matchExpressions": [
                        {"key": "region", "operator": "In", "values": ["eu"]}]}},
                    "overriders": {"imageOverrider": [{"component": "Registry", "operator": "replace",
                        "value": "registry.eu.example.com"}]}}]}
        }),
    )
    .await;
    // (i) 10 replicas divided 1:2:2.
    let divided = divided_by_weights(&[(&["m1"], 1), (&["m2"], 2), (&["m3"], 2)]);
    propagate_deployment(&hub, "demo", "web", json!({"propagateDeps": true, "placement": divided})).await;
    apply(&hub, deployment("web", 10, "docker.io/library/nginx:1.25", Some("web-config"))).await;

    for (member, want) in [("m1", 2), ("m2", 4), ("m3", 4)] {
        let m = fleet.member(member);
        wait_for(&format!("{want} web replicas available in {member}"), Duration::from_secs(60), || async {
            member_replicas(m, "web").await == Some((want, want))
        })
        .await;
        let cm = Api::<ConfigMap>::namespaced(m.client(), "demo").get("web-config").await.unwrap();
        assert_eq!(cm.data.unwrap()["MODE"], "fleet", "the ConfigMap followed the Deployment to {member}");
    }
    wait_for("the hub's web to show 10/10 across the fleet", Duration::from_secs(30), || async {
        hub_available(&fleet.hub, "web").await == (10, 10)
    })
    .await;
    let image = |d: Deployment| d.spec.template.spec.unwrap().containers[0].image.clone().unwrap();
    let eu = Api::<Deployment>::namespaced(fleet.member("m1").client(), "demo").get("web").await.unwrap();
    assert_eq!(image(eu), "registry.eu.example.com/library/nginx:1.25");
    let us = Api::<Deployment>::namespaced(fleet.member("m2").client(), "demo").get("web").await.unwrap();
    assert_eq!(image(us), "docker.io/library/nginx:1.25");
    // Each cluster's Work records the overrides applied to its copy.
    for (member, want) in [("m1", Some("demo/eu-registry")), ("m2", None), ("m3", None)] {
        let works = Api::<Work>::namespaced(hub.clone(), &ManagedCluster::hub_namespace(member));
        let list = works.list(&Default::default()).await.unwrap();
        let work = list
            .items
            .iter()
            .find(|w| w.annotations().get(keys::BINDING).map(String::as_str) == Some("demo/web-deployment"))
            .unwrap_or_else(|| panic!("web's Work for {member}"));
        assert_eq!(
            work.annotations().get(APPLIED_OVERRIDES_ANNOTATION).map(String::as_str),
            want,
            "the overrides {member}'s Work records"
        );
    }
    let binding =
        Api::<ResourceBinding>::namespaced(hub.clone(), "demo").get("web-deployment").await.unwrap();
    let status = binding.status.unwrap();
    assert_eq!(status.aggregated_status.len(), 3);
    assert!(status.conditions.iter().any(|c| c.type_ == "Scheduled" && c.status == "True"));

    // An update reaches every member.
    apply(&hub, deployment("web", 10, "docker.io/library/nginx:1.26", Some("web-config"))).await;
    for member in ["m1", "m2", "m3"] {
        let api = Api::<Deployment>::namespaced(fleet.member(member).client(), "demo");
        wait_for(&format!("the new image in {member}"), Duration::from_secs(30), || async {
            image(api.get("web").await.unwrap()).ends_with("nginx:1.26")
        })
        .await;
    }

    // (vi) a Deployment that already exists in m1 and is not Flotilla's.
    let m1 = fleet.member("m1").client();
    create_namespace(&m1, "demo").await;
    apply(&m1, deployment("legacy", 1, "legacy:1", None)).await;
    let on_m1 = json!({"clusterAffinity": {"clusterNames": ["m1"]}});
    propagate_deployment(&hub, "demo", "legacy", json!({"placement": on_m1})).await;
    apply(&hub, deployment("legacy", 1, "fleet:2", None)).await;
    let bindings = Api::<ResourceBinding>::namespaced(hub.clone(), "demo");
    wait_for("the conflict to be reported on the binding", Duration::from_secs(30), || async {
        let Some(b) = bindings.get_opt("legacy-deployment").await.unwrap() else { return false };
        b.status.is_some_and(|s| {
            s.aggregated_status
                .iter()
                .any(|i| i.cluster_name == "m1" && !i.applied && i.applied_message.contains("Overwrite"))
        })
    })
    .await;
    let legacy = Api::<Deployment>::namespaced(m1.clone(), "demo").get("legacy").await.unwrap();
    assert_eq!(image(legacy), "legacy:1", "a Deployment Flotilla did not create was overwritten");
    // The policy says to take it over: now it is.
    propagate_deployment(
        &hub,
        "demo",
        "legacy",
        json!({"conflictResolution": "Overwrite", "placement": on_m1}),
    )
    .await;
    let legacy_api = Api::<Deployment>::namespaced(m1.clone(), "demo");
    wait_for("legacy taken over with Overwrite", Duration::from_secs(30), || async {
        image(legacy_api.get("legacy").await.unwrap()) == "fleet:2"
    })
    .await;

    // (viii) a CRD instance propagates like a built-in kind, only to the
    // members that serve its API (m3 does not).
    apply(
        &hub,
        json!({
            "apiVersion": "policy.flotilla.io/v1alpha1", "kind": "ClusterPropagationPolicy",
            "metadata": {"name": "widgets"},
            "spec": {"resourceSelectors": [{"apiVersion": "example.com/v1", "kind": "Widget"}]}
        }),
    )
    .await;
    apply(
        &hub,
        json!({"apiVersion": "example.com/v1", "kind": "Widget",
        "metadata": {"name": "gear", "namespace": "demo"}, "spec": {"teeth": 12}}),
    )
    .await;
    for member in ["m1", "m2"] {
        let widgets = widget_api(fleet.member(member).client(), "demo");
        wait_for(&format!("the Widget in {member}"), Duration::from_secs(30), || async {
            widgets.get_opt("gear").await.ok().flatten().is_some_and(|w| w.data["spec"]["teeth"] == 12)
        })
        .await;
    }
    let binding = Api::<ResourceBinding>::namespaced(hub.clone(), "demo").get("gear-widget").await.unwrap();
    let placed: Vec<String> = binding.spec.spec.clusters.iter().map(|c| c.name.clone()).collect();
    assert_eq!(placed, ["m1", "m2"], "a Widget was placed on a member that does not serve it");

    // (iv) deleting the template removes it (and its now unneeded
    // ConfigMap) from every member.
    Api::<Deployment>::namespaced(hub.clone(), "demo").delete("web", &DeleteParams::default()).await.unwrap();
    for member in ["m1", "m2", "m3"] {
        let m = fleet.member(member);
        wait_for(&format!("web gone from {member}"), Duration::from_secs(30), || async {
            member_replicas(m, "web").await.is_none()
                && Api::<ConfigMap>::namespaced(m.client(), "demo")
                    .get_opt("web-config")
                    .await
                    .unwrap()
                    .is_none()
        })
        .await;
    }
    wait_for("the binding gone", Duration::from_secs(15), || async {
        bindings.get_opt("web-deployment").await.unwrap().is_none()
    })
    .await;
}

/// Replicas per member (spec, available), members that have none left out.
async fn placement(fleet: &Fleet, name: &str) -> BTreeMap<String, (i32, i32)> {
    let mut out = BTreeMap::new();
    for m in &fleet.members {
        if let Some(r) = member_replicas(m, name).await {
            out.insert(m.name().to_string(), r);
        }
    }
    out
}

#[tokio::test]
async fn a_lost_member_s_replicas_move_after_the_toleration_and_come_back_within_the_surge() {
    let failover = FailoverSettings {
        default_toleration_seconds: Some(3),
        return_after: Duration::from_secs(8),
        max_surge: MaxSurge::Count(1),
        ..Default::default()
    };
    let mut fleet = Fleet::start_with(&["eu", "us", "us"], &[], failover, false).await;
    let hub = fleet.hub.client();
    create_namespace(&hub, "demo").await;
    // The policy is silent on taints: the hub's default toleration applies.
    let divided = divided_by_weights(&[(&["m1"], 1), (&["m2", "m3"], 2)]);
    propagate_every_deployment(&hub, "demo", "web", json!({"placement": divided})).await;
    apply(&hub, deployment("web", 10, "nginx:1.25", None)).await;
    wait_for("10/10 on the hub", Duration::from_secs(60), || async {
        hub_available(&fleet.hub, "web").await == (10, 10)
    })
    .await;
    assert_eq!(member_replicas(fleet.member("m1"), "web").await, Some((2, 2)));
    let bindings = Api::<ResourceBinding>::namespaced(hub.clone(), "demo");
    let b = bindings.get("web-deployment").await.unwrap();
    let tolerated: Vec<(String, Option<i64>)> = b
        .spec
        .spec
        .placement
        .cluster_tolerations
        .iter()
        .map(|t| (t.key.clone().unwrap_or_default(), t.toleration_seconds))
        .collect();
    assert_eq!(
        tolerated,
        [
            ("cluster.flotilla.io/not-ready".to_string(), Some(3)),
            ("cluster.flotilla.io/unreachable".into(), Some(3))
        ],
        "the binding shows the default toleration it was scheduled with"
    );

    // m1 is lost: its agent and its API server stop.
    fleet.agents.remove("m1").unwrap().abort();
    fleet.members[0].stop("kube-apiserver").unwrap();
    let clusters: Api<ManagedCluster> = Api::all(hub.clone());
    wait_for("m1 tainted unreachable", Duration::from_secs(60), || async {
        clusters
            .get("m1")
            .await
            .unwrap()
            .spec
            .taints
            .iter()
            .any(|t| t.key == "cluster.flotilla.io/unreachable")
    })
    .await;
    let tainted_at = clusters.get("m1").await.unwrap().spec.taints[0].time_added.clone().unwrap().0;
    wait_for("m1's replicas to move to m2 and m3", Duration::from_secs(60), || async {
        replicas_by_cluster(&bindings.get("web-deployment").await.unwrap()) == pairs(&[("m2", 5), ("m3", 5)])
    })
    .await;
    // Not before the toleration ran out (seconds precision on the taint).
    let moved_after = k8s_openapi::jiff::Timestamp::now().duration_since(tainted_at);
    assert!(
        moved_after >= k8s_openapi::jiff::SignedDuration::from_secs(2),
        "moved {moved_after} after the taint"
    );
    for member in ["m2", "m3"] {
        let m = fleet.member(member);
        wait_for(&format!("5 replicas available in {member}"), Duration::from_secs(30), || async {
            member_replicas(m, "web").await == Some((5, 5))
        })
        .await;
    }
    wait_for("the hub back at 10/10 without m1", Duration::from_secs(60), || async {
        hub_available(&fleet.hub, "web").await == (10, 10)
    })
    .await;
    let b = bindings.get("web-deployment").await.unwrap();
    assert_eq!(b.spec.spec.failed_over_from, ["m1"], "the binding remembers where it came from");

    // m1 returns: its old copy goes, then once m1 is healthy for the
    // stabilisation period the policy's division comes back, one replica
    // of surge at a time, never counted twice.
    fleet.members[0].restart("kube-apiserver").await.unwrap();
    fleet.start_agent(0, None);
    wait_for("m1 Available again", Duration::from_secs(60), || async {
        clusters.get("m1").await.unwrap().condition("Available").is_some_and(|c| c.status == "True")
    })
    .await;
    let mut peak = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let placed = placement(&fleet, "web").await;
        let (ready, available) = hub_available(&fleet.hub, "web").await;
        assert!(ready <= 11 && available <= 11, "replicas counted twice: {ready}/{available}");
        let b = bindings.get("web-deployment").await.unwrap();
        let back = replicas_by_cluster(&b) == pairs(&[("m1", 2), ("m2", 4), ("m3", 4)]);
        // Once the old copy has gone, the surplus stays within the surge.
        if back || placed.get("m1").is_some_and(|(spec, _)| *spec < 2) {
            peak = peak.max(placed.values().map(|(spec, _)| spec).sum::<i32>());
        }
        let settled = placed.values().map(|(spec, available)| (*spec, *available)).collect::<Vec<_>>()
            == [(2, 2), (4, 4), (4, 4)];
        if back && settled && hub_available(&fleet.hub, "web").await == (10, 10) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "replicas did not come back: {placed:?}, binding {b:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(peak <= 11, "{peak} replicas at once during the return (10 wanted, surge 1)");
    assert!(bindings.get("web-deployment").await.unwrap().spec.spec.failed_over_from.is_empty());
}

#[tokio::test]
async fn a_blip_or_a_mass_disruption_moves_nothing() {
    // The toleration outlasts a blip by far: on a loaded machine restarting
    // the API server alone took long enough to outlast 20 s, and a failover
    // after the toleration is then right, not a blip.
    let failover = FailoverSettings { default_toleration_seconds: Some(45), ..Default::default() };
    let mut fleet = Fleet::start_with(&["eu", "us", "us"], &[], failover, true).await;
    let hub = fleet.hub.client();
    create_namespace(&hub, "demo").await;
    let divided = json!({"replicaScheduling": {"replicaSchedulingType": "Divided",
        "replicaDivisionPreference": "Weighted"}});
    propagate_every_deployment(&hub, "demo", "web", json!({"placement": divided})).await;
    apply(&hub, deployment("web", 6, "nginx:1.25", None)).await;
    let even = pairs(&[("m1", 2), ("m2", 2), ("m3", 2)]);
    let bindings = Api::<ResourceBinding>::namespaced(hub.clone(), "demo");
    wait_for("6/6 on the hub, 2 per member", Duration::from_secs(60), || async {
        hub_available(&fleet.hub, "web").await == (6, 6)
            && replicas_by_cluster(&bindings.get("web-deployment").await.unwrap()) == even
    })
    .await;

    // A blip: m1's API server restarts; nothing moves.
    fleet.members[0].stop("kube-apiserver").unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    fleet.members[0].restart("kube-apiserver").await.unwrap();
    let clusters: Api<ManagedCluster> = Api::all(hub.clone());
    wait_for("m1 Available again", Duration::from_secs(60), || async {
        clusters.get("m1").await.unwrap().condition("Available").is_some_and(|c| c.status == "True")
    })
    .await;
    assert_eq!(
        replicas_by_cluster(&bindings.get("web-deployment").await.unwrap()),
        even,
        "a blip moved replicas"
    );

    // The members' shared etcd stops for a few seconds: every member is
    // unhealthy at once; nothing moves, nothing is lost.
    fleet.etcd.as_mut().unwrap().process_mut().stop(Duration::from_secs(0));
    wait_for("a member to notice its etcd is gone", Duration::from_secs(30), || async {
        clusters
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .iter()
            .any(|mc| mc.condition("Available").is_some_and(|c| c.status != "True"))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    fleet.etcd.as_mut().unwrap().process_mut().restart().unwrap();
    for name in ["m1", "m2", "m3"] {
        wait_for(&format!("{name} Available after the etcd blip"), Duration::from_secs(60), || async {
            clusters.get(name).await.unwrap().condition("Available").is_some_and(|c| c.status == "True")
        })
        .await;
    }
    assert_eq!(
        replicas_by_cluster(&bindings.get("web-deployment").await.unwrap()),
        even,
        "an etcd blip moved replicas"
    );
    wait_for("every member back at 2/2", Duration::from_secs(60), || async {
        placement(&fleet, "web").await.values().all(|r| *r == (2, 2))
    })
    .await;

    // Two of three agents go silent (as when the hub's own view breaks):
    // failover halts, says so, and nothing moves past the toleration.
    for name in ["m1", "m2"] {
        fleet.agents.remove(name).unwrap().abort();
    }
    // Waited on whole: the hub may see one silent agent before the other.
    wait_for("the binding to say failover is halted, 2 of 3 unhealthy", Duration::from_secs(60), || async {
        let b = bindings.get("web-deployment").await.unwrap();
        b.status.as_ref().is_some_and(|s| {
            s.conditions.iter().any(|c| {
                c.type_ == "Scheduled"
                    && c.reason == "FailoverHalted"
                    && c.message.contains("2 of 3 clusters are unhealthy")
            })
        })
    })
    .await;
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(hub.clone(), "default");
    wait_for("a FailoverHalted Event on m1", Duration::from_secs(20), || async {
        events.list(&Default::default()).await.unwrap().items.iter().any(|e| {
            e.reason.as_deref() == Some("FailoverHalted")
                && e.involved_object.kind.as_deref() == Some("ManagedCluster")
                && e.involved_object.name.as_deref() == Some("m1")
        })
    })
    .await;
    // Well past the 45 s toleration.
    tokio::time::sleep(Duration::from_secs(49)).await;
    assert_eq!(replicas_by_cluster(&bindings.get("web-deployment").await.unwrap()), even, "failover went on");
    for m in &fleet.members {
        assert_eq!(member_replicas(m, "web").await, Some((2, 2)), "{} lost or gained replicas", m.name());
    }

    // The agents come back: failover resumes (nothing to do), nothing lost.
    fleet.start_agent(0, None);
    fleet.start_agent(1, None);
    wait_for("the binding scheduled normally again", Duration::from_secs(60), || async {
        let b = bindings.get("web-deployment").await.unwrap();
        b.status
            .as_ref()
            .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Scheduled" && c.reason == "Scheduled"))
    })
    .await;
    assert_eq!(replicas_by_cluster(&bindings.get("web-deployment").await.unwrap()), even);
    let placed = placement(&fleet, "web").await;
    assert_eq!(
        placed.values().map(|(spec, _)| spec).sum::<i32>(),
        6,
        "lost or duplicated replicas: {placed:?}"
    );
}

async fn taint_all(clusters: &Api<ManagedCluster>, names: &[&str], taints: serde_json::Value) {
    for name in names {
        let patch = json!({"spec": {"taints": taints}});
        clusters.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    }
}

fn policy_condition(policy: &DynamicObject, type_: &str) -> Option<(String, String, String)> {
    let c = policy.data["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == type_)?.clone();
    let text = |f: &str| c[f].as_str().unwrap_or_default().to_string();
    Some((text("status"), text("reason"), text("message")))
}

#[tokio::test]
async fn status_tells_the_truth_about_apis_size_placement_and_bad_manifests() {
    let mut fleet = Fleet::start(&["eu", "us"], &[0, 1]).await;
    let hub = fleet.hub.client();
    create_namespace(&hub, "demo").await;
    let pp_resource =
        ApiResource::from_gvk(&GroupVersionKind::gvk("policy.flotilla.io", "v1alpha1", "PropagationPolicy"));
    let pps: Api<DynamicObject> = Api::namespaced_with(hub.clone(), "demo", &pp_resource);

    // A policy naming an API nobody serves says so; a good one is resolved.
    apply(
        &hub,
        json!({
            "apiVersion": "policy.flotilla.io/v1alpha1", "kind": "PropagationPolicy",
            "metadata": {"name": "nonsense", "namespace": "demo"},
            "spec": {"resourceSelectors": [{"apiVersion": "nonsense/v1", "kind": "Thing"}]}
        }),
    )
    .await;
    let divided = divided_by_weights(&[(&["m1"], 1), (&["m2"], 1)]);
    propagate_deployment(&hub, "demo", "web", json!({"placement": divided})).await;
    wait_for("the nonsense policy's ResourcesResolved=False", Duration::from_secs(30), || async {
        let p = pps.get("nonsense").await.unwrap();
        policy_condition(&p, "ResourcesResolved").is_some_and(|(s, r, m)| {
            s == "False" && r == "KindNotServed" && m.contains("nonsense/v1 Thing is not served by the hub")
        })
    })
    .await;
    let nonsense = pps.get("nonsense").await.unwrap();
    assert_eq!(policy_condition(&nonsense, "Valid").unwrap().0, "True", "its syntax is fine");
    wait_for("the web policy's ResourcesResolved=True", Duration::from_secs(30), || async {
        let p = pps.get("web").await.unwrap();
        policy_condition(&p, "ResourcesResolved").is_some_and(|(s, _, _)| s == "True")
    })
    .await;

    // A Deployment divided 2:2, fully applied.
    apply(&hub, deployment("web", 4, "nginx:1.25", None)).await;
    let bindings = Api::<ResourceBinding>::namespaced(hub.clone(), "demo");
    wait_for(
        "web scheduled and fully applied, 2 replicas in each member",
        Duration::from_secs(60),
        || async {
            is_true(&bindings, "web-deployment", "Scheduled").await
                && is_true(&bindings, "web-deployment", "FullyApplied").await
                && member_replicas(fleet.member("m1"), "web").await == Some((2, 2))
                && member_replicas(fleet.member("m2"), "web").await == Some((2, 2))
        },
    )
    .await;

    // An object too big for one Work: a clear message, nothing sent.
    apply(
        &hub,
        json!({
            "apiVersion": "policy.flotilla.io/v1alpha1", "kind": "PropagationPolicy",
            "metadata": {"name": "big", "namespace": "demo"},
            "spec": {"resourceSelectors": [{"apiVersion": "example.com/v1", "kind": "Widget", "name": "big"}]}
        }),
    )
    .await;
    // (A ConfigMap cannot be that big: the API server stops it at 1 MiB.)
    let big = "x".repeat(1_520_000);
    apply(
        &hub,
        json!({"apiVersion": "example.com/v1", "kind": "Widget",
            "metadata": {"name": "big", "namespace": "demo"}, "spec": {"blob": big}}),
    )
    .await;
    wait_for("the big Widget's binding to say TooLarge", Duration::from_secs(30), || async {
        binding_condition(&bindings, "big-widget", "FullyApplied").await.is_some_and(|(s, r, m)| {
            s == "False"
                && r == "TooLarge"
                && m.contains("would be 1.45 MiB")
                && m.contains("at most 1.44 MiB")
        })
    })
    .await;
    for member in ["m1", "m2"] {
        let widgets = widget_api(fleet.member(member).client(), "demo");
        assert!(widgets.get_opt("big").await.unwrap().is_none(), "a too-large Widget reached {member}");
    }

    // Every cluster tainted: nothing fits, and the binding does not claim
    // to be fully applied meanwhile; once the taints clear it is again,
    // without any other change.
    let clusters: Api<ManagedCluster> = Api::all(hub.clone());
    let maintenance = json!([{"key": "example.com/maintenance", "effect": "NoExecute"}]);
    taint_all(&clusters, &["m1", "m2"], maintenance).await;
    wait_for("web NoClusterFit", Duration::from_secs(30), || async {
        binding_condition(&bindings, "web-deployment", "Scheduled")
            .await
            .is_some_and(|(s, r, _)| s == "False" && r == "NoClusterFit")
    })
    .await;
    let (status, reason, message) =
        binding_condition(&bindings, "web-deployment", "FullyApplied").await.unwrap();
    assert_eq!((status.as_str(), reason.as_str()), ("False", "NotScheduled"), "{message}");
    taint_all(&clusters, &["m1", "m2"], json!([])).await;
    wait_for(
        "web scheduled and fully applied again after the taints cleared",
        Duration::from_secs(60),
        || async {
            is_true(&bindings, "web-deployment", "Scheduled").await
                && is_true(&bindings, "web-deployment", "FullyApplied").await
        },
    )
    .await;

    // A Work whose manifest has no kind: the agent says so on the Work,
    // once.
    let works: Api<flotilla_api::work::Work> = Api::namespaced(hub.clone(), "flotilla-cluster-m1");
    let kindless: flotilla_api::work::Work = serde_json::from_value(json!({
        "apiVersion": "work.flotilla.io/v1alpha1", "kind": "Work",
        "metadata": {"name": "kindless", "annotations": {"work.flotilla.io/spec-hash": "k1"}},
        "spec": {"manifests": [{"apiVersion": "v1", "metadata": {"name": "x", "namespace": "demo"}}]}
    }))
    .unwrap();
    works.create(&PostParams::default(), &kindless).await.unwrap();
    wait_for("the kindless Work's Applied=False with why", Duration::from_secs(30), || async {
        let w = works.get("kindless").await.unwrap();
        w.status.is_some_and(|s| {
            s.conditions.iter().any(|c| {
                c.type_ == "Applied"
                    && c.status == "False"
                    && c.reason == "InvalidManifest"
                    && c.message.contains("manifest 0 of this work: the manifest has no kind")
            })
        })
    })
    .await;
    let version = works.get("kindless").await.unwrap().metadata.resource_version;
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(
        works.get("kindless").await.unwrap().metadata.resource_version,
        version,
        "the kindless Work's status was written again and again"
    );
    works.delete("kindless", &DeleteParams::default()).await.unwrap();

    // The hub's etcd goes away for a while (long enough for the heartbeats
    // to expire, so clusters may be tainted and replicas move): once it is
    // back, the binding is scheduled and fully applied again without
    // restarting the hub, and what it says is so: every chosen cluster
    // holds its share, 4 in all.
    fleet.hub.stop("etcd").unwrap();
    tokio::time::sleep(Duration::from_secs(20)).await;
    fleet.hub.restart("etcd").await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    loop {
        let scheduled = binding_condition(&bindings, "web-deployment", "Scheduled").await;
        let applied = binding_condition(&bindings, "web-deployment", "FullyApplied").await;
        let placed = bindings.get_opt("web-deployment").await.ok().flatten().map(|b| b.spec.spec.clusters);
        let mut held = Vec::new();
        for target in placed.iter().flatten() {
            held.push((target.replicas, member_replicas(fleet.member(&target.name), "web").await));
        }
        let truthful = scheduled.as_ref().is_some_and(|c| c.0 == "True")
            && applied.as_ref().is_some_and(|c| c.0 == "True")
            && held.iter().map(|(r, _)| r).sum::<i32>() == 4
            && held.iter().all(|(r, member)| *member == Some((*r, *r)));
        if truthful {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "web not scheduled and fully applied after the etcd blip: Scheduled {scheduled:?}, \
             FullyApplied {applied:?}, clusters {placed:?}, held (wanted, member) {held:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
