#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Which policy takes a template, on a real fleet (a hub and two members
//! joined in pull mode): Karmada's precedence (a PropagationPolicy before
//! any ClusterPropagationPolicy), preemption (`Never` keeps a claim,
//! `Always` takes it over), lazy activation (a policy change waits for the
//! template to change), the PriorityClass of `schedulePriority` reported on
//! the policy, and RBAC templates named `system:...` reaching the members.

use std::time::Duration;

use flotilla_api::work::{ClusterResourceBinding, ResourceBinding};
use flotilla_apps_core::binding::{binding_name, is_dns_subdomain};
use flotilla_localkube::{wait_for, Cluster};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::{Api, Client};
use serde_json::{json, Value};

use flotilla_testkit as support;
use support::{apply, create_namespace, Fleet};

const WAIT: Duration = Duration::from_secs(60);

fn config_map(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "demo", "labels": labels}, "data": {"k": "v"}})
}

/// A (Cluster)PropagationPolicy selecting the ConfigMaps `names`, placed on
/// `cluster`; `extra` is merged into the spec.
fn policy(kind: &str, name: &str, names: &[&str], cluster: &str, extra: Value) -> Value {
    let selectors: Vec<Value> = names
        .iter()
        .map(|n| json!({"apiVersion": "v1", "kind": "ConfigMap", "namespace": "demo", "name": n}))
        .collect();
    let mut spec = json!({"resourceSelectors": selectors,
        "placement": {"clusterAffinity": {"clusterNames": [cluster]}}});
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    let mut metadata = json!({"name": name});
    if kind == "PropagationPolicy" {
        metadata["namespace"] = json!("demo");
    }
    json!({"apiVersion": "policy.flotilla.io/v1alpha1", "kind": kind, "metadata": metadata, "spec": spec})
}

fn policy_api(hub: &Client, kind: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("policy.flotilla.io", "v1alpha1", kind);
    let resource = ApiResource::from_gvk(&gvk);
    if kind == "PropagationPolicy" {
        Api::namespaced_with(hub.clone(), "demo", &resource)
    } else {
        Api::all_with(hub.clone(), &resource)
    }
}

async fn condition(hub: &Client, kind: &str, name: &str, type_: &str) -> Option<(String, String, String)> {
    let p = policy_api(hub, kind).get_opt(name).await.ok()??;
    let c = p.data["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == type_)?.clone();
    let text = |f: &str| c[f].as_str().unwrap_or_default().to_string();
    Some((text("status"), text("reason"), text("message")))
}

/// Applies a policy and waits until the hub judged it valid (it is in the
/// binder's cache from then on).
async fn apply_policy(hub: &Client, object: Value) {
    let kind = object["kind"].as_str().unwrap().to_string();
    let name = object["metadata"]["name"].as_str().unwrap().to_string();
    apply(hub, object).await;
    wait_for(&format!("{kind} {name} judged valid"), WAIT, || async {
        condition(hub, &kind, &name, "Valid").await.is_some_and(|(s, _, _)| s == "True")
    })
    .await;
}

async fn has_config_map(member: &Cluster, name: &str) -> bool {
    Api::<ConfigMap>::namespaced(member.client(), "demo").get_opt(name).await.ok().flatten().is_some()
}

/// Waits until the ConfigMap is in exactly the members `on` of the fleet.
async fn placed(fleet: &Fleet, name: &str, on: &[&str]) {
    wait_for(&format!("ConfigMap {name} on exactly {on:?}"), WAIT, || async {
        for member in &fleet.members {
            if has_config_map(member, name).await != on.contains(&member.name()) {
                return false;
            }
        }
        true
    })
    .await;
}

async fn binding(hub: &Client, name: &str) -> Option<ResourceBinding> {
    let api = Api::<ResourceBinding>::namespaced(hub.clone(), "demo");
    api.get_opt(&binding_name("v1", "ConfigMap", name)).await.ok().flatten()
}

async fn claimed_by(hub: &Client, name: &str) -> Option<String> {
    binding(hub, name).await?.spec.spec.policy.map(|p| format!("{}/{}", p.kind, p.name))
}

#[tokio::test]
async fn policies_claim_templates_as_in_karmada() {
    let fleet = Fleet::start(&["eu", "us"], &[]).await;
    let hub = fleet.hub.client();
    create_namespace(&hub, "demo").await;

    // (1) Precedence: a PropagationPolicy beats a ClusterPropagationPolicy
    // of far higher priority.
    let cpp = policy("ClusterPropagationPolicy", "fleet-wide", &["picked"], "m1", json!({"priority": 100}));
    apply_policy(&hub, cpp).await;
    apply_policy(&hub, policy("PropagationPolicy", "local", &["picked"], "m2", json!({"priority": 0}))).await;
    apply(&hub, config_map("picked", json!({}))).await;
    placed(&fleet, "picked", &["m2"]).await;
    assert_eq!(claimed_by(&hub, "picked").await.as_deref(), Some("PropagationPolicy/local"));

    // (2) Preemption Never (the default): a higher-priority policy arriving
    // later leaves the claimed template alone, while it takes a new one.
    apply_policy(&hub, policy("PropagationPolicy", "low", &["kept"], "m1", json!({"priority": 1}))).await;
    apply(&hub, config_map("kept", json!({}))).await;
    placed(&fleet, "kept", &["m1"]).await;
    let high = policy("PropagationPolicy", "high", &["kept", "fresh"], "m2", json!({"priority": 5}));
    apply_policy(&hub, high).await;
    apply(&hub, config_map("fresh", json!({}))).await;
    placed(&fleet, "fresh", &["m2"]).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    placed(&fleet, "kept", &["m1"]).await;
    assert_eq!(claimed_by(&hub, "kept").await.as_deref(), Some("PropagationPolicy/low"));

    // (3) Preemption Always: a higher-priority policy takes it over ...
    let taker =
        policy("PropagationPolicy", "taker", &["kept"], "m2", json!({"priority": 9, "preemption": "Always"}));
    apply_policy(&hub, taker).await;
    placed(&fleet, "kept", &["m2"]).await;
    assert_eq!(claimed_by(&hub, "kept").await.as_deref(), Some("PropagationPolicy/taker"));
    // ... and a PropagationPolicy takes one from a ClusterPropagationPolicy
    // whatever their priorities.
    let cluster_held =
        policy("ClusterPropagationPolicy", "cluster-held", &["held"], "m1", json!({"priority": 50}));
    apply_policy(&hub, cluster_held).await;
    apply(&hub, config_map("held", json!({}))).await;
    placed(&fleet, "held", &["m1"]).await;
    let namespaced = policy(
        "PropagationPolicy",
        "namespaced",
        &["held"],
        "m2",
        json!({"priority": 0, "preemption": "Always"}),
    );
    apply_policy(&hub, namespaced).await;
    placed(&fleet, "held", &["m2"]).await;
    assert_eq!(claimed_by(&hub, "held").await.as_deref(), Some("PropagationPolicy/namespaced"));

    // (4) Lazy: a new template is propagated at once; a policy change waits
    // for the template to change (a new template gets the new placement).
    let lazy = |cluster: &str| {
        policy(
            "PropagationPolicy",
            "lazy",
            &["lazy-cm", "lazy-new"],
            cluster,
            json!({"activationPreference": "Lazy"}),
        )
    };
    apply_policy(&hub, lazy("m1")).await;
    apply(&hub, config_map("lazy-cm", json!({}))).await;
    placed(&fleet, "lazy-cm", &["m1"]).await;
    apply(&hub, lazy("m2")).await;
    apply(&hub, config_map("lazy-new", json!({}))).await;
    placed(&fleet, "lazy-new", &["m2"]).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    placed(&fleet, "lazy-cm", &["m1"]).await;
    // The template changes (Karmada's example: a label): the policy as it
    // is now applies.
    apply(&hub, config_map("lazy-cm", json!({"refresh-time": "1"}))).await;
    placed(&fleet, "lazy-cm", &["m2"]).await;

    // A template older than its lazy policy waits for its next change.
    apply(&hub, config_map("old", json!({}))).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let lazy_old =
        policy("PropagationPolicy", "lazy-old", &["old"], "m1", json!({"activationPreference": "Lazy"}));
    apply_policy(&hub, lazy_old).await;
    wait_for("the old template's binding to say it waits", WAIT, || async {
        binding(&hub, "old").await.and_then(|b| b.status).is_some_and(|s| {
            s.conditions.iter().any(|c| c.type_ == "Scheduled" && c.reason == "WaitingForTemplateChange")
        })
    })
    .await;
    placed(&fleet, "old", &[]).await;
    apply(&hub, config_map("old", json!({"refresh-time": "1"}))).await;
    placed(&fleet, "old", &["m1"]).await;

    // (5) schedulePriority: a missing PriorityClass is reported on the
    // policy, and resolved once it exists.
    let prioritized = policy(
        "PropagationPolicy",
        "prioritized",
        &["urgent"],
        "m1",
        json!({"schedulePriority": {"priorityClassSource": "KubePriorityClass", "priorityClassName": "fleet-critical"}}),
    );
    apply_policy(&hub, prioritized).await;
    wait_for("the missing PriorityClass reported", WAIT, || async {
        condition(&hub, "PropagationPolicy", "prioritized", "SchedulePriorityResolved").await.is_some_and(
            |(s, r, m)| s == "False" && r == "PriorityClassNotFound" && m.contains("fleet-critical"),
        )
    })
    .await;
    apply(&hub, config_map("urgent", json!({}))).await;
    placed(&fleet, "urgent", &["m1"]).await;
    apply(
        &hub,
        json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
            "metadata": {"name": "fleet-critical"}, "value": 100000}),
    )
    .await;
    wait_for("the PriorityClass resolved", WAIT, || async {
        condition(&hub, "PropagationPolicy", "prioritized", "SchedulePriorityResolved")
            .await
            .is_some_and(|(s, _, m)| s == "True" && m.contains("100000"))
    })
    .await;
}

#[tokio::test]
async fn rbac_templates_named_with_colons_reach_the_members() {
    let fleet = Fleet::start(&["eu", "us"], &[]).await;
    let hub = fleet.hub.client();
    // Colon-rich, and at the 253-character limit of a name.
    let role = "system:flotilla:aggregate-to-view";
    let long = format!("system:{}", "a:".repeat(123));
    assert_eq!(long.len(), 253);
    let binding_of = "system:flotilla:viewers";
    let rule = json!([{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]);
    for name in [role, long.as_str()] {
        apply(
            &hub,
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                "metadata": {"name": name}, "rules": rule}),
        )
        .await;
    }
    apply(
        &hub,
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": binding_of},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "viewers"}]}),
    )
    .await;
    apply_policy(
        &hub,
        json!({"apiVersion": "policy.flotilla.io/v1alpha1", "kind": "ClusterPropagationPolicy",
            "metadata": {"name": "rbac"},
            "spec": {"resourceSelectors": [
                {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "name": role},
                {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "name": long},
                {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "name": binding_of}]}}),
    )
    .await;
    for member in &fleet.members {
        let roles = Api::<ClusterRole>::all(member.client());
        let bindings = Api::<ClusterRoleBinding>::all(member.client());
        wait_for(&format!("the system: RBAC objects in {}", member.name()), WAIT, || async {
            roles.get_opt(role).await.ok().flatten().is_some()
                && roles.get_opt(&long).await.ok().flatten().is_some()
                && bindings.get_opt(binding_of).await.ok().flatten().is_some()
        })
        .await;
    }
    // Their bindings have valid names the hub derives the same way.
    let cluster_bindings = Api::<ClusterResourceBinding>::all(hub.clone());
    for (kind, name) in
        [("ClusterRole", role), ("ClusterRole", long.as_str()), ("ClusterRoleBinding", binding_of)]
    {
        let expected = binding_name("rbac.authorization.k8s.io/v1", kind, name);
        assert!(is_dns_subdomain(&expected, 253), "{expected}");
        let b = cluster_bindings.get(&expected).await.unwrap();
        assert_eq!(b.spec.spec.resource.name, name);
    }
    wait_for("the policy to say every binding was written", WAIT, || async {
        condition(&hub, "ClusterPropagationPolicy", "rbac", "BindingsWritten")
            .await
            .is_some_and(|(s, _, _)| s == "True")
    })
    .await;
}
