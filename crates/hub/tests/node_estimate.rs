//! The per-node capacity estimate against the member's real kube-scheduler:
//! what the hub computes from the agent's `status.nodeCapacity` is exactly
//! how many replicas the member places, on mixed hollow nodes (sizes,
//! labels, taints, a pod limit); and a dynamic division over two members
//! follows that estimate where the cluster's sums would mislead.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use flotilla_testkit as support;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::Duration;

use flotilla_api::cluster::ManagedCluster;
use flotilla_api::work::ResourceBinding;
use flotilla_apps_core::estimator::NodeRooms;
use flotilla_apps_core::scheduler::{available_replicas_with, ClusterSnapshot};
use flotilla_apps_core::workload;
use flotilla_localkube::{wait_for, Cluster, ClusterConfig, NodeConfig};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::{json, Value};
use support::policies::propagate_deployment;
use support::{apply, create_namespace, Fleet};

const NS: &str = "estimate";

fn hollow(name: &str, cpu: u32, memory: &str, max_pods: u32) -> NodeConfig {
    NodeConfig::new(name).capacity(cpu, memory, max_pods)
}

/// m1: one big node, two small ones, one dedicated (tainted) node, one
/// with room for only three pods and a big one cordoned. m2: six small nodes, 12 cpu summed.
fn members() -> Vec<ClusterConfig> {
    let mut db = hollow("m1-db", 4, "8Gi", 110).label("pool", "db");
    db.taints = vec!["dedicated=db:NoSchedule".into()];
    let mut m1 = ClusterConfig::new("m1");
    m1.nodes = vec![
        hollow("m1-big", 8, "16Gi", 110).label("disk", "ssd"),
        hollow("m1-small-a", 2, "4Gi", 110).label("disk", "hdd"),
        hollow("m1-small-b", 2, "4Gi", 110).label("disk", "hdd"),
        db,
        hollow("m1-few-pods", 4, "8Gi", 3),
        // Cordoned by the test once started.
        hollow("m1-cordoned", 8, "16Gi", 110).label("disk", "ssd"),
    ];
    let mut m2 = ClusterConfig::new("m2");
    m2.nodes = (0..6).map(|i| hollow(&format!("m2-small-{i}"), 2, "4Gi", 110)).collect();
    vec![m1, m2]
}

fn deployment(name: &str, replicas: i32, pod_spec: Value) -> Value {
    let mut spec = pod_spec;
    spec["containers"] = json!([{"name": "app", "image": "busybox:1.36",
        "resources": {"requests": spec["requests"].take()}}]);
    spec.as_object_mut().unwrap().remove("requests");
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": spec}}
    })
}

async fn snapshot(hub: &Client, cluster: &str) -> ClusterSnapshot {
    let mc = Api::<ManagedCluster>::all(hub.clone()).get(cluster).await.unwrap();
    ClusterSnapshot::from_managed_cluster(&mc)
}

/// Waits until no pod of `NS` is left in `member` and its agent reports
/// every node Ready with the room of `baseline` (or, without one, the
/// same room over two reads further apart than the agent's room interval);
/// returns what it reported.
async fn settled_rooms(
    hub: &Client,
    member: &Cluster,
    nodes: usize,
    baseline: Option<&NodeRooms>,
) -> NodeRooms {
    let pods = Api::<Pod>::namespaced(member.client(), NS);
    wait_for("the test's pods to be gone", Duration::from_secs(120), || async {
        pods.list(&ListParams::default()).await.unwrap().items.is_empty()
    })
    .await;
    let rooms = RefCell::new(None);
    let rooms_ref = &rooms;
    wait_for("the agent to report every node with its room back", Duration::from_secs(120), || async move {
        let snap = snapshot(hub, member.name()).await;
        let Some(reported) = snap.nodes else { return false };
        let reported = (*reported).clone();
        if reported.node_count() != nodes {
            return false;
        }
        if let Some(baseline) = baseline {
            let back = reported == *baseline;
            *rooms_ref.borrow_mut() = Some(reported);
            return back;
        }
        // The agent reports a change of room alone at most every 5 probes
        // (2.5 s here): stable over a longer wait, nothing is in flight.
        tokio::time::sleep(Duration::from_secs(4)).await;
        let again = snapshot(hub, member.name()).await.nodes.map(|n| (*n).clone());
        let stable = again.as_ref() == Some(&reported);
        *rooms_ref.borrow_mut() = Some(reported);
        stable
    })
    .await;
    rooms.into_inner().unwrap()
}

/// (scheduled, unschedulable) pods of the Deployment once every one of
/// `total` pods has the scheduler's verdict.
async fn placed(member: &Cluster, name: &str, total: usize) -> (usize, usize) {
    let pods = &Api::<Pod>::namespaced(member.client(), NS);
    let counts = RefCell::new((0, 0));
    let counts_ref = &counts;
    wait_for(
        &format!("the scheduler's verdict on all {total} pods of {name}"),
        Duration::from_secs(180),
        || async move {
            let list = pods.list(&ListParams::default().labels(&format!("app={name}"))).await.unwrap().items;
            let scheduled =
                list.iter().filter(|p| p.spec.as_ref().is_some_and(|s| s.node_name.is_some())).count();
            let unschedulable = list
                .iter()
                .filter(|p| {
                    p.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|cs| {
                        cs.iter().any(|c| {
                            c.type_ == "PodScheduled"
                                && c.status == "False"
                                && c.reason.as_deref() == Some("Unschedulable")
                        })
                    })
                })
                .count();
            *counts_ref.borrow_mut() = (scheduled, unschedulable);
            list.len() == total && scheduled + unschedulable == total
        },
    )
    .await;
    counts.into_inner()
}

#[tokio::test]
async fn the_estimate_is_what_the_member_scheduler_places() {
    let fleet = Fleet::start_with_members(members(), &["eu", "us"]).await;
    let hub = fleet.hub.client();
    let m1 = fleet.member("m1");
    create_namespace(&m1.client(), NS).await;
    let cordon = json!({"spec": {"unschedulable": true}});
    Api::<Node>::all(m1.client())
        .patch("m1-cordoned", &PatchParams::default(), &Patch::Merge(cordon))
        .await
        .unwrap();

    let requests = |cpu: &str, memory: &str| json!({"cpu": cpu, "memory": memory});
    let shapes: Vec<(&str, Value)> = vec![
        ("plain", json!({"requests": requests("1", "1Gi")})),
        ("selector", json!({"requests": requests("1", "1Gi"), "nodeSelector": {"disk": "ssd"}})),
        (
            "toleration",
            json!({"requests": requests("1", "1Gi"),
                "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}]}),
        ),
        ("big", json!({"requests": requests("5", "2Gi")})),
        (
            "affinity",
            json!({"requests": requests("2", "1Gi"),
                "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "disk", "operator": "NotIn", "values": ["hdd"]}]}]}}}}),
        ),
    ];
    let baseline = settled_rooms(&hub, m1, 6, None).await;
    let mut estimates = BTreeMap::new();
    for (name, pod_spec) in shapes {
        let rooms = settled_rooms(&hub, m1, 6, Some(&baseline)).await;
        let probe = deployment(name, 1, pod_spec.clone());
        let (requests, constraints) =
            (workload::replica_requirements(&probe), workload::node_constraints(&probe));
        let mut snap = snapshot(&hub, "m1").await;
        snap.nodes = Some(rooms.into());
        let estimate = available_replicas_with(&snap, &requests, &constraints);
        let summed = ClusterSnapshot { nodes: None, ..snap.clone() };
        let summed = available_replicas_with(&summed, &requests, &constraints);
        eprintln!("shape {name}: per-node estimate {estimate}, summed {summed}");
        estimates.insert(name, (estimate, summed));

        let total = estimate as usize + 3;
        apply(&m1.client(), deployment(name, total as i32, pod_spec)).await;
        let (scheduled, unschedulable) = placed(m1, name, total).await;
        assert_eq!(
            (scheduled, unschedulable),
            (estimate as usize, 3),
            "shape {name}: the member's scheduler placed {scheduled} of {total} (estimate {estimate})"
        );
        Api::<Deployment>::namespaced(m1.client(), NS)
            .delete(name, &DeleteParams::foreground())
            .await
            .unwrap();
    }
    // The shapes tell the nodes apart: the selector and the big requests
    // take only the big node, the toleration adds the dedicated one.
    let per_node = |name| estimates[name].0;
    assert!(per_node("selector") < per_node("plain"), "{estimates:?}");
    assert!(per_node("toleration") > per_node("plain"), "{estimates:?}");
    assert!(
        per_node("big") >= 1 && per_node("big") < estimates["big"].1,
        "sums over-count big pods: {estimates:?}"
    );
}

#[tokio::test]
async fn dynamic_division_follows_the_per_node_estimate() {
    let fleet = Fleet::start_with_members(members(), &["eu", "us"]).await;
    let hub = fleet.hub.client();
    // m2's six 2-cpu nodes sum to 12 cpu, room for four 3-cpu replicas by
    // the sums, but no node of m2 takes one.
    let m2_rooms = settled_rooms(&hub, fleet.member("m2"), 6, None).await;
    settled_rooms(&hub, fleet.member("m1"), 6, None).await;
    let template = deployment("wide", 3, json!({"requests": {"cpu": "3", "memory": "1Gi"}}));
    let requests = workload::replica_requirements(&template);
    let mut m2 = snapshot(&hub, "m2").await;
    m2.nodes = None;
    let summed = available_replicas_with(&m2, &requests, &workload::node_constraints(&template));
    assert!(summed >= 3, "by the sums m2 would take replicas (it has {summed})");
    m2.nodes = Some(m2_rooms.into());
    assert_eq!(available_replicas_with(&m2, &requests, &workload::node_constraints(&template)), 0);

    create_namespace(&hub, NS).await;
    propagate_deployment(
        &hub,
        NS,
        "wide",
        json!({
            "placement": {"replicaScheduling": {"replicaSchedulingType": "Divided",
                "replicaDivisionPreference": "Weighted",
                "weightPreference": {"dynamicWeight": "AvailableReplicas"}}}
        }),
    )
    .await;
    apply(&hub, template).await;
    let bindings = &Api::<ResourceBinding>::namespaced(hub.clone(), NS);
    let division = RefCell::new(Vec::new());
    let division_ref = &division;
    wait_for("the binding to be scheduled", Duration::from_secs(60), || async move {
        let Some(b) = bindings.get_opt("wide-deployment").await.unwrap() else { return false };
        let clusters: Vec<(String, i32)> =
            b.spec.spec.clusters.iter().map(|c| (c.name.clone(), c.replicas)).collect();
        let scheduled = !clusters.is_empty();
        *division_ref.borrow_mut() = clusters;
        scheduled
    })
    .await;
    let division = division.into_inner();
    assert_eq!(division, vec![("m1".to_string(), 3)], "every replica goes where a node takes it");
    let m1 = fleet.member("m1");
    let pods = Api::<Pod>::namespaced(m1.client(), NS);
    wait_for("three wide pods scheduled in m1", Duration::from_secs(120), || async {
        let list = pods.list(&ListParams::default().labels("app=wide")).await.unwrap().items;
        list.iter().filter(|p| p.spec.as_ref().is_some_and(|s| s.node_name.is_some())).count() == 3
    })
    .await;
}
