#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A ManagedCluster's `spec.taints` and `status.conditions` are list-maps
//! under server-side apply on a real API server: the hub applies only its
//! own taints and conditions, the agent only its own condition, and a
//! user's taint is never rewritten or removed by the hub. Ownership is read
//! from `managedFields`.

use std::time::Duration;

use flotilla_api::cluster::{conditions, keys, taints, ManagedCluster};
use flotilla_fleet_core::membership;
use flotilla_hub::{HubConfig, FIELD_MANAGER, TAINT_FIELD_MANAGER};
use flotilla_localkube::{wait_for, Cluster, ClusterConfig};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, Time};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{json, Value};

const NAME: &str = "m";
const USER: &str = "platform-team";
const USER_TAINT: &str = "example.com/maintenance";

/// What `manager` owns on the object (its `fieldsV1`), per subresource.
fn owned_by(cluster: &ManagedCluster, manager: &str) -> Vec<(String, Value)> {
    cluster
        .managed_fields()
        .iter()
        .filter(|e: &&ManagedFieldsEntry| e.manager.as_deref() == Some(manager))
        .map(|e| {
            let fields = e.fields_v1.as_ref().map(|f| f.0.clone()).unwrap_or(Value::Null);
            (e.subresource.clone().unwrap_or_default(), fields)
        })
        .collect()
}

/// Whether `manager` owns the list-map entry `key` (e.g.
/// `k:{"type":"Available"}`) of `list` under `spec` or `status`.
fn owns_entry(cluster: &ManagedCluster, manager: &str, top: &str, list: &str, key: &str) -> bool {
    owned_by(cluster, manager).iter().any(|(_, fields)| {
        fields
            .pointer(&format!("/f:{top}/f:{list}"))
            .and_then(Value::as_object)
            .is_some_and(|l| l.contains_key(key))
    })
}

fn condition_key(type_: &str) -> String {
    format!("k:{}", json!({"type": type_}))
}

fn taint_key(key: &str, effect: &str) -> String {
    // The API server writes the key fields in alphabetical order.
    format!("k:{}", json!({"effect": effect, "key": key}))
}

/// The agent's part as far as the hub can see it: the heartbeat Lease,
/// renewed until the task is aborted.
fn heartbeat(client: Client) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let leases: Api<Lease> = Api::namespaced(client, &ManagedCluster::hub_namespace(NAME));
        loop {
            let lease = membership::heartbeat_lease(NAME, 1, k8s_openapi::jiff::Timestamp::now());
            let apply = PatchParams::apply(flotilla_agent::FIELD_MANAGER).force();
            leases.patch(membership::LEASE_NAME, &apply, &Patch::Apply(&lease)).await.unwrap();
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
}

async fn available(api: &Api<ManagedCluster>) -> Option<String> {
    Some(api.get(NAME).await.ok()?.condition(conditions::AVAILABLE)?.status.clone())
}

fn taint_keys(cluster: &ManagedCluster) -> Vec<String> {
    cluster.spec.taints.iter().map(|t| t.key.clone()).collect()
}

#[tokio::test]
async fn each_writer_applies_only_its_own_taints_and_conditions() {
    let hub = Cluster::start(ClusterConfig::hub("hub")).await.unwrap();
    let client = hub.client();
    flotilla_hub::install(&client).await.unwrap();
    let clusters: Api<ManagedCluster> = Api::all(client.clone());

    // A joined pull cluster (as the hub's registration leaves it), with a
    // taint of the user's own, applied under the user's field manager.
    let namespace = ManagedCluster::hub_namespace(NAME);
    Api::<Namespace>::all(client.clone())
        .patch(
            &namespace,
            &PatchParams::apply(USER),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})),
        )
        .await
        .unwrap();
    let cluster = json!({"apiVersion": "cluster.flotilla.io/v1alpha1", "kind": "ManagedCluster",
        "metadata": {"name": NAME, "annotations": {keys::AGENT_KEY: "0".repeat(64)}},
        "spec": {"hubAcceptsClient": true, "leaseDurationSeconds": 1,
            "taints": [{"key": USER_TAINT, "value": "weekly", "effect": "NoSchedule"}]}});
    clusters.patch(NAME, &PatchParams::apply(USER), &Patch::Apply(&cluster)).await.unwrap();

    // The agent's condition, under the agent's manager, as the agent writes it.
    let member_healthy = json!({"apiVersion": "cluster.flotilla.io/v1alpha1", "kind": "ManagedCluster",
        "status": {"conditions": [{"type": conditions::MEMBER_HEALTHY, "status": "True", "reason": "ReadyzOk",
            "message": "the cluster's API answers /readyz ok",
            "lastTransitionTime": Time(k8s_openapi::jiff::Timestamp::now())}]}});
    let agent_apply = PatchParams::apply(flotilla_agent::FIELD_MANAGER).force();
    clusters.patch_status(NAME, &agent_apply, &Patch::Apply(&member_healthy)).await.unwrap();
    let beating = heartbeat(client.clone());

    let config = HubConfig { grace: Duration::from_secs(1), ..Default::default() };
    let hub_client = client.clone();
    let _controllers = tokio::spawn(async move { flotilla_hub::run(hub_client, config).await.unwrap() });
    wait_for("the cluster Available", Duration::from_secs(30), || async {
        available(&clusters).await.as_deref() == Some("True")
    })
    .await;

    // The agent's and the hub's conditions side by side, each its manager's.
    let mc = clusters.get(NAME).await.unwrap();
    for type_ in [conditions::JOINED, conditions::AVAILABLE, conditions::MEMBER_HEALTHY] {
        assert!(mc.condition(type_).is_some(), "{type_} missing: {:?}", mc.status);
    }
    for hub_condition in [conditions::JOINED, conditions::AVAILABLE] {
        let key = condition_key(hub_condition);
        assert!(owns_entry(&mc, FIELD_MANAGER, "status", "conditions", &key), "{:#?}", mc.managed_fields());
        assert!(!owns_entry(&mc, flotilla_agent::FIELD_MANAGER, "status", "conditions", &key));
    }
    let agents = condition_key(conditions::MEMBER_HEALTHY);
    assert!(owns_entry(&mc, flotilla_agent::FIELD_MANAGER, "status", "conditions", &agents));
    assert!(!owns_entry(&mc, FIELD_MANAGER, "status", "conditions", &agents), "{:#?}", mc.managed_fields());
    assert_eq!(taint_keys(&mc), [USER_TAINT]);

    // The agent reports again (a change of its own): the hub's conditions stay.
    let mut unhealthy = member_healthy.clone();
    unhealthy["status"]["conditions"][0]["status"] = json!("False");
    unhealthy["status"]["conditions"][0]["reason"] = json!("ReadyzFailed");
    unhealthy["status"]["conditions"][0]["message"] = json!("/readyz did not answer within 3s");
    clusters.patch_status(NAME, &agent_apply, &Patch::Apply(&unhealthy)).await.unwrap();
    let mc = clusters.get(NAME).await.unwrap();
    assert_eq!(mc.condition(conditions::MEMBER_HEALTHY).unwrap().status, "False");
    assert!(mc.condition(conditions::JOINED).is_some() && mc.condition(conditions::AVAILABLE).is_some());
    clusters.patch_status(NAME, &agent_apply, &Patch::Apply(&member_healthy)).await.unwrap();

    // The heartbeat stops: the hub adds its taint, and only its own.
    beating.abort();
    let _ = beating.await;
    wait_for("the hub's unreachable taint", Duration::from_secs(30), || async {
        clusters.get(NAME).await.is_ok_and(|mc| taint_keys(&mc).contains(&taints::UNREACHABLE.to_string()))
    })
    .await;
    let mc = clusters.get(NAME).await.unwrap();
    let user_taint =
        mc.spec.taints.iter().find(|t| t.key == USER_TAINT).expect("the user's taint was removed");
    assert_eq!(user_taint.value.as_deref(), Some("weekly"));
    assert!(user_taint.time_added.is_none(), "the hub rewrote the user's taint: {user_taint:?}");
    let hubs = taint_key(taints::UNREACHABLE, "NoExecute");
    let users = taint_key(USER_TAINT, "NoSchedule");
    assert!(owns_entry(&mc, TAINT_FIELD_MANAGER, "spec", "taints", &hubs), "{:#?}", mc.managed_fields());
    assert!(!owns_entry(&mc, TAINT_FIELD_MANAGER, "spec", "taints", &users), "{:#?}", mc.managed_fields());
    assert!(owns_entry(&mc, USER, "spec", "taints", &users));
    assert_eq!(mc.condition(conditions::MEMBER_HEALTHY).unwrap().status, "True");

    // The user changes their taint meanwhile; the hub's stays.
    let mut retagged = cluster.clone();
    retagged["spec"]["taints"][0]["value"] = json!("monthly");
    clusters.patch(NAME, &PatchParams::apply(USER), &Patch::Apply(&retagged)).await.unwrap();

    // The heartbeat returns: the hub takes its taint away by applying
    // without it; the user's (as they left it) stays.
    let beating = heartbeat(client.clone());
    wait_for("the hub's taint removed", Duration::from_secs(30), || async {
        clusters.get(NAME).await.is_ok_and(|mc| !taint_keys(&mc).contains(&taints::UNREACHABLE.to_string()))
    })
    .await;
    let mc = clusters.get(NAME).await.unwrap();
    assert_eq!(taint_keys(&mc), [USER_TAINT]);
    assert_eq!(mc.spec.taints[0].value.as_deref(), Some("monthly"));
    assert_eq!(available(&clusters).await.as_deref(), Some("True"));
    assert!(!owns_entry(&mc, TAINT_FIELD_MANAGER, "spec", "taints", &hubs));

    // A person adds the hub's own key by hand (a drill, or a maintenance
    // that should evacuate). It is theirs: the hub neither takes it over
    // when the cluster goes unreachable nor removes it when it is back.
    let drill_time = Time("2026-01-01T00:00:00Z".parse().unwrap());
    let mut drill = retagged.clone();
    drill["spec"]["taints"] = json!([retagged["spec"]["taints"][0],
        {"key": taints::UNREACHABLE, "value": "drill", "effect": "NoExecute", "timeAdded": drill_time}]);
    clusters.patch(NAME, &PatchParams::apply(USER), &Patch::Apply(&drill)).await.unwrap();
    let the_drill_is_theirs = |mc: &ManagedCluster| {
        let taint = mc.spec.taints.iter().find(|t| t.key == taints::UNREACHABLE);
        assert!(
            taint.is_some_and(
                |t| t.value.as_deref() == Some("drill") && t.time_added.as_ref() == Some(&drill_time)
            ),
            "the hub rewrote or removed the person's taint: {:?}",
            mc.spec.taints
        );
        assert!(owns_entry(mc, USER, "spec", "taints", &hubs));
        assert!(!owns_entry(mc, TAINT_FIELD_MANAGER, "spec", "taints", &hubs), "{:#?}", mc.managed_fields());
    };
    beating.abort();
    let _ = beating.await;
    wait_for("the cluster unreachable", Duration::from_secs(30), || async {
        available(&clusters).await.as_deref() == Some("Unknown")
    })
    .await;
    the_drill_is_theirs(&clusters.get(NAME).await.unwrap());
    let beating = heartbeat(client.clone());
    wait_for("the cluster Available again", Duration::from_secs(30), || async {
        available(&clusters).await.as_deref() == Some("True")
    })
    .await;
    the_drill_is_theirs(&clusters.get(NAME).await.unwrap());
    beating.abort();
}

/// What kok's writers of Machines rely on, and why they empty the list
/// with a merge patch when the last components go: a manager that applies
/// without its components removes only those while others remain, but an
/// apply that would drop the very last item leaves `spec: null` (on 1.37
/// too), which the schema refuses. Should this test start failing at that
/// step, kok's merge patches (`release_machine`, `hosted`) can go.
#[tokio::test]
async fn a_manager_dropping_its_machine_components_leaves_others_but_not_the_last_one() {
    let hub = Cluster::start(ClusterConfig::hub("hub")).await.unwrap();
    let client = hub.client();
    flotilla_hub::install(&client).await.unwrap();
    let machines: Api<flotilla_api::Machine> = Api::all(client.clone());
    // Created as node agents create theirs.
    let machine = flotilla_api::Machine::new("node-1", flotilla_api::MachineSpec::default());
    machines.create(&kube::api::PostParams::default(), &machine).await.unwrap();
    let component = |name: &str| json!({"name": name, "binary": "/bin/true"});
    let apply = |manager: &str, components: Vec<Value>| {
        let machines = machines.clone();
        let params = PatchParams::apply(manager).force();
        let body = json!({"apiVersion": "kok.flotilla.io/v1alpha1", "kind": "Machine",
            "metadata": {"name": "node-1"}, "spec": {"components": components}});
        async move { machines.patch("node-1", &params, &Patch::Apply(&body)).await }
    };
    let names =
        |m: &flotilla_api::Machine| m.spec.components.iter().map(|c| c.name.clone()).collect::<Vec<_>>();

    apply("kok-etcd", vec![component("etcd-0")]).await.unwrap();
    let both =
        apply("kok-cluster-a", vec![component("a-apiserver"), component("a-scheduler")]).await.unwrap();
    assert_eq!(names(&both), ["etcd-0", "a-apiserver", "a-scheduler"]);
    // One manager drops one of its components, then all of them.
    let fewer = apply("kok-cluster-a", vec![component("a-apiserver")]).await.unwrap();
    assert_eq!(names(&fewer), ["etcd-0", "a-apiserver"]);
    assert_eq!(names(&apply("kok-cluster-a", vec![]).await.unwrap()), ["etcd-0"]);
    // Dropping the last component by apply is refused ...
    let last = apply("kok-etcd", vec![]).await.expect_err("the API server now drops the last item cleanly");
    assert!(last.to_string().contains("spec in body must be of type object"), "{last}");
    // ... so kok empties the list with a merge patch on the version read.
    let current = machines.get("node-1").await.unwrap();
    let body =
        json!({"metadata": {"resourceVersion": current.resource_version()}, "spec": {"components": []}});
    let emptied = machines.patch("node-1", &PatchParams::default(), &Patch::Merge(&body)).await.unwrap();
    assert!(emptied.spec.components.is_empty(), "{:?}", emptied.spec);
    // And the Machine still takes new components.
    let added = apply("kok-cluster-b", vec![component("b-apiserver")]).await.unwrap();
    assert_eq!(names(&added), ["b-apiserver"]);
}
