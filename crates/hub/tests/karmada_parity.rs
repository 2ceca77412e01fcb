#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Karmada's policy fields and scenarios on a real fleet (a hub and pull
//! members with hollow nodes): dependencies inheriting their workloads'
//! policy, `association`, the fieldOverrider, OverridePolicy's deprecated
//! shape, `dependentOverrides`, and claim templates deleted on the hub.

use std::time::Duration;

use flotilla_api::work::ResourceBinding;
use flotilla_apps_core::pvc_protection::PVC_PROTECTION;
use flotilla_localkube::wait_for;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Secret};
use kube::api::{DynamicObject, PostParams};
use kube::{Api, Client};
use serde_json::json;

use flotilla_testkit as support;
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
    let bindings =
        Api::<ResourceBinding>::namespaced(hub.clone(), "demo").list(&Default::default()).await.ok()?;
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
        propagation_policy("api", "api", json!({"propagateDeps": true, "preserveResourcesOnDeletion": true})),
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
    assert_eq!(
        secret_binding.spec.spec.conflict_resolution,
        flotilla_api::policy::ConflictResolution::Overwrite
    );
    assert!(secret_binding.spec.spec.preserve_resources_on_deletion);
}

const DB_CONFIG: &str = "database:\n  host: localhost\n  port: 3306\n";

fn override_policy(name: &str, spec: serde_json::Value) -> serde_json::Value {
    json!({"apiVersion": "policy.flotilla.io/v1alpha1", "kind": "OverridePolicy",
        "metadata": {"name": name, "namespace": "demo"}, "spec": spec})
}

/// The conditions of a policy on the hub, as (type, status, message).
async fn policy_condition(hub: &Client, plural: &str, name: &str, type_: &str) -> Option<(String, String)> {
    let gvk = kube::api::GroupVersionKind::gvk("policy.flotilla.io", "v1alpha1", "PropagationPolicy");
    let resource = kube::api::ApiResource::from_gvk_with_plural(&gvk, plural);
    let policy =
        Api::<DynamicObject>::namespaced_with(hub.clone(), "demo", &resource).get(name).await.ok()?;
    let conditions = policy.data.pointer("/status/conditions")?.as_array()?.clone();
    let c = conditions.into_iter().find(|c| c["type"] == type_)?;
    Some((c["status"].as_str()?.to_string(), c["message"].as_str()?.to_string()))
}

#[tokio::test]
async fn karmadas_override_shapes_reach_the_members_once_the_dependent_overrides_exist() {
    let fleet = Fleet::start(&["eu", "us"], &[]).await;
    let hub = fleet.hub.client();
    create_namespace(&hub, "demo").await;
    apply(
        &hub,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "myconfigmap", "namespace": "demo"},
            "data": {"db-config.yaml": DB_CONFIG}}),
    )
    .await;
    // The policy waits for two override policies; one exists so far.
    apply(
        &hub,
        json!({"apiVersion": "policy.flotilla.io/v1alpha1", "kind": "PropagationPolicy",
            "metadata": {"name": "config", "namespace": "demo"},
            "spec": {"resourceSelectors": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "myconfigmap"}],
                "dependentOverrides": ["example", "legacy"], "schedulerName": "default-scheduler",
                "placement": {"clusterAffinity": {"clusterNames": ["m1", "m2"]}}}}),
    )
    .await;
    // Karmada's documented fieldOverrider example: edits in the YAML
    // document of a ConfigMap's data entry, for m1 only.
    apply(
        &hub,
        override_policy(
            "example",
            json!({"resourceSelectors": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "myconfigmap"}],
                "overrideRules": [{"targetCluster": {"clusterNames": ["m1"]},
                    "overriders": {"fieldOverrider": [{"fieldPath": "/data/db-config.yaml", "yaml": [
                        {"subPath": "/database/host", "operator": "replace", "value": "remote-db.example.com"},
                        {"subPath": "/database/port", "operator": "replace", "value": "3307"}]}]}}]}),
        ),
    )
    .await;
    wait_for("the policy to say it waits for legacy", Duration::from_secs(60), || async {
        policy_condition(&hub, "propagationpolicies", "config", "DependentOverridesPresent")
            .await
            .is_some_and(|(status, message)| status == "False" && message.contains("OverridePolicy legacy"))
    })
    .await;
    for member in ["m1", "m2"] {
        let configs = Api::<ConfigMap>::namespaced(fleet.member(member).client(), "demo");
        assert!(configs.get_opt("myconfigmap").await.unwrap().is_none(), "nothing reached {member} yet");
    }

    // Karmada's deprecated shape (its e2e suite's): spec-level
    // targetCluster + overriders, one rule.
    apply(
        &hub,
        override_policy(
            "legacy",
            json!({"resourceSelectors": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "myconfigmap"}],
                "targetCluster": {"clusterNames": ["m2"]},
                "overriders": {"labelsOverrider": [{"operator": "add", "value": {"tier": "legacy"}}]}}),
        ),
    )
    .await;
    let m1 = Api::<ConfigMap>::namespaced(fleet.member("m1").client(), "demo");
    wait_for("m1's YAML edited by the fieldOverrider", Duration::from_secs(60), || async {
        let Some(cm) = m1.get_opt("myconfigmap").await.ok().flatten() else { return false };
        let text = cm.data.unwrap_or_default().remove("db-config.yaml").unwrap_or_default();
        let doc: serde_json::Value = serde_saphyr::from_str(&text).unwrap_or_default();
        doc == json!({"database": {"host": "remote-db.example.com", "port": "3307"}})
    })
    .await;
    let m2 = Api::<ConfigMap>::namespaced(fleet.member("m2").client(), "demo");
    wait_for("m2's copy labelled by the deprecated shape", Duration::from_secs(60), || async {
        m2.get_opt("myconfigmap").await.ok().flatten().is_some_and(|cm| {
            cm.metadata.labels.unwrap_or_default().get("tier").map(String::as_str) == Some("legacy")
        })
    })
    .await;
    let cm = m2.get("myconfigmap").await.unwrap();
    assert_eq!(cm.data.unwrap()["db-config.yaml"], DB_CONFIG, "m2's YAML is the template's, untouched");
    let cm = m1.get("myconfigmap").await.unwrap();
    assert!(!cm.metadata.labels.unwrap_or_default().contains_key("tier"), "m1 is not m2's target");
    wait_for("the policy to say every dependent override exists", Duration::from_secs(60), || async {
        policy_condition(&hub, "propagationpolicies", "config", "DependentOverridesPresent")
            .await
            .is_some_and(|(status, _)| status == "True")
    })
    .await;
}

fn claim(name: &str, finalizers: &[&str]) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": "demo", "finalizers": finalizers},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})
}

#[tokio::test]
async fn a_deleted_claim_template_goes_and_a_later_one_of_the_same_name_propagates() {
    let fleet = Fleet::start(&["eu"], &[]).await;
    let hub = fleet.hub.client();
    create_namespace(&hub, "demo").await;
    apply(
        &hub,
        json!({"apiVersion": "policy.flotilla.io/v1alpha1", "kind": "PropagationPolicy",
            "metadata": {"name": "claims", "namespace": "demo"},
            "spec": {"resourceSelectors": [{"apiVersion": "v1", "kind": "PersistentVolumeClaim"}],
                "placement": {"clusterAffinity": {"clusterNames": ["m1"]}}}}),
    )
    .await;
    let hub_claims = Api::<PersistentVolumeClaim>::namespaced(hub.clone(), "demo");
    let member_claims = Api::<PersistentVolumeClaim>::namespaced(fleet.member("m1").client(), "demo");
    let uid_of = |c: Option<PersistentVolumeClaim>| c.and_then(|c| c.metadata.uid);

    // Rounds: the hub's own API server adds no protection; one that does
    // (as a hub whose flags Flotilla does not set would) has it lifted.
    for (round, finalizers) in [("plain", vec![]), ("protected", vec![PVC_PROTECTION]), ("again", vec![])] {
        apply(&hub, claim("data", &finalizers)).await;
        let stored = hub_claims.get("data").await.unwrap();
        assert_eq!(
            stored.metadata.finalizers.unwrap_or_default(),
            finalizers.iter().map(|f| f.to_string()).collect::<Vec<_>>(),
            "{round}: the hub's API server adds no pvc-protection finalizer"
        );
        let member_uid_before = uid_of(member_claims.get_opt("data").await.unwrap());
        wait_for(&format!("{round}: the claim in m1"), Duration::from_secs(60), || async {
            let now = uid_of(member_claims.get_opt("data").await.unwrap());
            now.is_some() && now != member_uid_before
        })
        .await;
        hub_claims.delete("data", &Default::default()).await.unwrap();
        wait_for(
            &format!("{round}: the claim template gone from the hub"),
            Duration::from_secs(60),
            || async { hub_claims.get_opt("data").await.unwrap().is_none() },
        )
        .await;
        wait_for(&format!("{round}: the claim gone from m1"), Duration::from_secs(60), || async {
            member_claims.get_opt("data").await.unwrap().is_none()
        })
        .await;
    }
}

/// Karmada's `suspension.scheduling`: what runs stays where it is (a policy
/// change does not move it, a new template is not placed) while template
/// changes still reach the clusters it has; resuming schedules at once.
#[tokio::test]
async fn a_policy_that_suspends_scheduling_keeps_its_templates_where_they_are() {
    let fleet = Fleet::start(&["eu", "us"], &[]).await;
    let hub = fleet.hub.client();
    create_namespace(&hub, "demo").await;
    let on = |cluster: &str, suspended: bool| {
        let mut extra = json!({"resourceSelectors": [
                {"apiVersion": "apps/v1", "kind": "Deployment", "name": "held"},
                {"apiVersion": "apps/v1", "kind": "Deployment", "name": "fresh"}],
            "placement": {"clusterAffinity": {"clusterNames": [cluster]}}});
        if suspended {
            extra["suspension"] = json!({"scheduling": true});
        }
        propagation_policy("held", "held", extra)
    };
    apply(&hub, on("m1", false)).await;
    apply(&hub, deployment("held", "none")).await;
    let deployments = |cluster: &str| {
        Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(fleet.member(cluster).client(), "demo")
    };
    let image = |d: k8s_openapi::api::apps::v1::Deployment| {
        d.spec.template.spec.and_then(|s| s.containers.first().and_then(|c| c.image.clone()))
    };
    wait_for("the Deployment in m1", Duration::from_secs(60), || async {
        deployments("m1").get_opt("held").await.ok().flatten().is_some()
    })
    .await;

    // Suspended, the policy now asks for m2: nothing moves.
    apply(&hub, on("m2", true)).await;
    wait_for("the binding to say scheduling is suspended", Duration::from_secs(30), || async {
        scheduled_message(&hub, "Deployment", "held").await.is_some_and(|m| m.starts_with("kept on m1"))
    })
    .await;
    // Dispatch goes on: a template change reaches m1.
    let mut changed = deployment("held", "none");
    changed["spec"]["template"]["spec"]["containers"][0]["image"] = json!("busybox:1.37");
    apply(&hub, changed).await;
    wait_for("the changed image in m1", Duration::from_secs(60), || async {
        deployments("m1").get_opt("held").await.ok().flatten().and_then(image).as_deref()
            == Some("busybox:1.37")
    })
    .await;
    // A new template is not placed at all.
    apply(&hub, deployment("fresh", "none")).await;
    wait_for("the new template's binding to say it is not scheduled", Duration::from_secs(30), || async {
        scheduled_message(&hub, "Deployment", "fresh")
            .await
            .is_some_and(|m| m.starts_with("not scheduled: the policy suspends scheduling"))
    })
    .await;
    for cluster in ["m1", "m2"] {
        assert!(deployments(cluster).get_opt("fresh").await.unwrap().is_none(), "fresh in {cluster}");
    }
    assert!(deployments("m2").get_opt("held").await.unwrap().is_none(), "held moved while suspended");

    // Resumed: both go where the policy says.
    apply(&hub, on("m2", false)).await;
    wait_for("both in m2 and held gone from m1", Duration::from_secs(90), || async {
        deployments("m2").get_opt("held").await.ok().flatten().is_some()
            && deployments("m2").get_opt("fresh").await.ok().flatten().is_some()
            && deployments("m1").get_opt("held").await.ok().flatten().is_none()
    })
    .await;
}
