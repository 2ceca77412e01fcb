//! Dynamic division with clusters that report their nodes: the per-node
//! estimate, not the cluster's sums, decides.

use std::collections::BTreeMap;
use std::sync::Arc;

use flotilla_api::cluster::{ApiEnablement, ManagedCluster, ManagedClusterSpec, ManagedClusterStatus};
use flotilla_api::policy::{
    ClusterPreferences, DynamicWeightFactor, Placement, ReplicaDivisionPreference, ReplicaSchedulingStrategy,
    ReplicaSchedulingType,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::jiff::Timestamp;

use super::*;
use crate::estimator::{NodeConstraints, NodeRooms, NodeState, HOSTNAME_LABEL, UNCONSTRAINED};

const GI: u128 = 1 << 30;

fn node(name: &str, cpu_milli: u128, labels: &[(&str, &str)]) -> NodeState {
    let mut node_labels: BTreeMap<String, String> =
        labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    node_labels.insert(HOSTNAME_LABEL.into(), name.into());
    NodeState {
        name: name.into(),
        labels: node_labels,
        allocatable: [("cpu", cpu_milli), ("memory", 64 * GI), ("pods", 110)]
            .into_iter()
            .map(|(r, a)| (r.to_string(), a))
            .collect(),
        ready: true,
        ..Default::default()
    }
}

/// A cluster whose sums are those of its nodes, and which reports them
/// (or not).
fn cluster(name: &str, nodes: Vec<NodeState>, reported: bool) -> ClusterSnapshot {
    let mut allocatable: BTreeMap<String, u128> = BTreeMap::new();
    for n in &nodes {
        for (r, a) in &n.allocatable {
            *allocatable.entry(r.clone()).or_default() += a;
        }
    }
    ClusterSnapshot {
        name: name.into(),
        schedulable: true,
        api_enablements: vec![ApiEnablement {
            group_version: "apps/v1".into(),
            resources: vec!["deployments".into()],
        }],
        allocatable,
        nodes: reported.then(|| Arc::new(NodeRooms::from_states(&nodes))),
        ..Default::default()
    }
}

fn one_big(reported: bool) -> ClusterSnapshot {
    cluster("big", vec![node("big-0", 16_000, &[])], reported)
}

/// Eight nodes of 1.5 cpu: 12 cpu summed, but no node takes a 2-cpu pod.
fn many_small(reported: bool) -> ClusterSnapshot {
    cluster(
        "small",
        (0..8).map(|i| node(&format!("small-{i}"), 1_500, &[("disk", "ssd")])).collect(),
        reported,
    )
}

fn dynamic(preference: ReplicaDivisionPreference) -> Placement {
    let dynamic_weight = (preference == ReplicaDivisionPreference::Weighted).then_some(ClusterPreferences {
        dynamic_weight: Some(DynamicWeightFactor::AvailableReplicas),
        ..Default::default()
    });
    Placement {
        replica_scheduling: Some(ReplicaSchedulingStrategy {
            replica_scheduling_type: Some(ReplicaSchedulingType::Divided),
            replica_division_preference: Some(preference),
            weight_preference: dynamic_weight,
        }),
        ..Default::default()
    }
}

fn place(
    placement: &Placement,
    replicas: i32,
    cpu: &str,
    constraints: &NodeConstraints,
    clusters: &[ClusterSnapshot],
) -> Result<Vec<(String, i32)>, String> {
    let requests: BTreeMap<String, Quantity> = [("cpu".to_string(), Quantity(cpu.into()))].into();
    let request = SchedulingRequest {
        placement,
        replicas,
        requests: &requests,
        node_constraints: constraints,
        resource: Some(("apps/v1", "deployments")),
        previous: &[],
        caps: &BTreeMap::new(),
        now: Timestamp::from_second(10_000).unwrap(),
    };
    schedule(&request, clusters)
        .map(|s| s.clusters.into_iter().map(|t| (t.name, t.replicas)).collect())
        .map_err(|e| e.message)
}

fn pairs(list: &[(&str, i32)]) -> Vec<(String, i32)> {
    list.iter().map(|(n, r)| (n.to_string(), *r)).collect()
}

#[test]
fn dynamic_division_follows_the_per_node_estimate() {
    let weighted = dynamic(ReplicaDivisionPreference::Weighted);
    let aggregated = dynamic(ReplicaDivisionPreference::Aggregated);
    let ssd = NodeConstraints {
        node_selector: [("disk".to_string(), "ssd".to_string())].into(),
        ..Default::default()
    };
    type Case<'a> = (
        &'a str,
        &'a Placement,
        i32,
        &'a str,
        &'a NodeConstraints,
        bool,
        Result<Vec<(String, i32)>, &'a str>,
    );
    let cases: Vec<Case> = vec![
        // Summed, the small cluster looks like room for 6 two-cpu replicas.
        ("sums mislead", &weighted, 8, "2", &UNCONSTRAINED, false, Ok(pairs(&[("big", 5), ("small", 3)]))),
        (
            "per node: only the big node takes them",
            &weighted,
            8,
            "2",
            &UNCONSTRAINED,
            true,
            Ok(pairs(&[("big", 8)])),
        ),
        (
            "per node: more than the big node holds",
            &weighted,
            9,
            "2",
            &UNCONSTRAINED,
            true,
            Err("not enough capacity"),
        ),
        (
            "small pods: 16 on the big node, one per small node",
            &weighted,
            20,
            "1",
            &UNCONSTRAINED,
            true,
            Ok(pairs(&[("big", 13), ("small", 7)])),
        ),
        (
            "a node selector leaves the big node out",
            &weighted,
            8,
            "1",
            &ssd,
            true,
            Ok(pairs(&[("small", 8)])),
        ),
        ("aggregated, per node", &aggregated, 10, "2", &UNCONSTRAINED, true, Err("not enough capacity")),
        ("aggregated fits in one", &aggregated, 8, "2", &UNCONSTRAINED, true, Ok(pairs(&[("big", 8)]))),
    ];
    for (name, placement, replicas, cpu, constraints, reported, want) in cases {
        let clusters = [one_big(reported), many_small(reported)];
        let got = place(placement, replicas, cpu, constraints, &clusters);
        match want {
            Ok(want) => assert_eq!(got, Ok(want), "{name}"),
            Err(part) => {
                let message = got.expect_err(name);
                assert!(message.contains(part), "{name}: {message}");
            }
        }
    }
}

#[test]
fn available_replicas_use_the_nodes_when_reported() {
    let two: BTreeMap<String, Quantity> = [("cpu".to_string(), Quantity("2".into()))].into();
    assert_eq!(available_replicas(&many_small(false), &two), 6);
    assert_eq!(available_replicas(&many_small(true), &two), 0);
    assert_eq!(available_replicas(&one_big(true), &two), 8);
    let elsewhere = NodeConstraints {
        node_selector: [("disk".to_string(), "hdd".to_string())].into(),
        ..Default::default()
    };
    assert_eq!(available_replicas_with(&many_small(true), &BTreeMap::new(), &elsewhere), 0);
    // Without reported nodes the constraints cannot be judged: the sums stand.
    assert_eq!(available_replicas_with(&many_small(false), &two, &elsewhere), 6);
}

#[test]
fn the_snapshot_reads_the_reported_nodes() {
    let rooms = NodeRooms::from_states(&[node("a", 4_000, &[("zone", "z1")]), node("b", 2_000, &[])]);
    let mut mc =
        ManagedCluster::new("m1", ManagedClusterSpec { hub_accepts_client: true, ..Default::default() });
    mc.status = Some(ManagedClusterStatus { node_capacity: Some(rooms.to_api()), ..Default::default() });
    let snapshot = ClusterSnapshot::from_managed_cluster(&mc);
    assert_eq!(snapshot.nodes.as_deref(), Some(&rooms));
    mc.status = Some(ManagedClusterStatus::default());
    assert_eq!(ClusterSnapshot::from_managed_cluster(&mc).nodes, None);
}
