#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Scheduling on a real fleet (a hub and members with hollow nodes of
//! limited capacity): Karmada's `clusterAffinities` primary/backup groups,
//! and `NoSchedule` taints written just before a policy.

use std::time::Duration;

use flotilla_api::work::ResourceBinding;
use flotilla_localkube::{wait_for, ClusterConfig, NodeConfig};
use k8s_openapi::api::core::v1::Event;
use kube::api::{Patch, PatchParams};
use kube::Api;
use serde_json::json;

use flotilla_testkit as support;
use support::{apply, create_namespace, Fleet};

fn nginx(replicas: i32) -> serde_json::Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "nginx", "namespace": "demo", "labels": {"app": "nginx"}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "nginx"}},
            "template": {"metadata": {"labels": {"app": "nginx"}}, "spec": {"containers": [{
                "name": "nginx", "image": "nginx",
                "resources": {"requests": {"cpu": "1", "memory": "64Mi"}}}]}}}
    })
}

/// (clusters with their replicas, the group in use) of a binding.
async fn placement(bindings: &Api<ResourceBinding>, name: &str) -> (Vec<(String, i32)>, Option<String>) {
    let Some(b) = bindings.get_opt(name).await.unwrap() else { return (Vec::new(), None) };
    let clusters = b.spec.spec.clusters.iter().map(|c| (c.name.clone(), c.replicas)).collect();
    (clusters, b.status.and_then(|s| s.scheduler_observed_affinity_name))
}

/// Karmada's documented disaster-recovery groups (its user guide,
/// "Multiple cluster affinity groups"), with only the apiVersion changed;
/// its `#...` are this fleet's cluster names (m1, m2 for member1,
/// member2) and a division by room (Karmada's Aggregated), so that a full
/// primary is a primary that cannot hold the replicas.
const KARMADA_PRIMARY_BACKUP: &str = r#"
apiVersion: policy.flotilla.io/v1alpha1
kind: PropagationPolicy
metadata:
  name: nginx-propagation
  namespace: demo
spec:
  resourceSelectors:
    - apiVersion: apps/v1
      kind: Deployment
      name: nginx
  placement:
    clusterAffinities:
      - affinityName: primary-clusters
        clusterNames:
          - m1
      - affinityName: backup-clusters
        clusterNames:
          - m1
          - m2
    replicaScheduling:
      replicaSchedulingType: Divided
      replicaDivisionPreference: Aggregated
"#;

#[tokio::test]
async fn a_full_primary_group_moves_the_workload_to_the_backup_group_and_it_stays_there() {
    // m1 (the primary) has room for 3 replicas of 1 cpu, m2 for 16.
    let m1 = ClusterConfig::new("m1").with_node(NodeConfig::new("m1-a").capacity(3, "8Gi", 110));
    let m2 = ClusterConfig::new("m2").with_node(NodeConfig::new("m2-a").capacity(16, "32Gi", 110));
    let fleet = Fleet::start_with_members(vec![m1, m2], &["eu", "us"]).await;
    let hub = fleet.hub.client();
    create_namespace(&hub, "demo").await;
    let policy: serde_json::Value = serde_saphyr::from_str(KARMADA_PRIMARY_BACKUP).unwrap();
    apply(&hub, policy).await;
    apply(&hub, nginx(2)).await;
    let bindings: Api<ResourceBinding> = Api::namespaced(hub.clone(), "demo");
    let primary = (vec![("m1".to_string(), 2)], Some("primary-clusters".to_string()));
    wait_for("2 replicas on the primary group", Duration::from_secs(60), || async {
        placement(&bindings, "nginx-deployment").await == primary
    })
    .await;

    // 8 replicas: the primary holds 3 at most, so the backup group takes them.
    apply(&hub, nginx(8)).await;
    wait_for("8 replicas on the backup group, m2 among them", Duration::from_secs(60), || async {
        let (clusters, group) = placement(&bindings, "nginx-deployment").await;
        group.as_deref() == Some("backup-clusters")
            && clusters.iter().map(|(_, r)| r).sum::<i32>() == 8
            && clusters.iter().any(|(c, r)| c == "m2" && *r > 0)
    })
    .await;
    let binding = bindings.get("nginx-deployment").await.unwrap();
    let scheduled = binding.status.unwrap().conditions.into_iter().find(|c| c.type_ == "Scheduled").unwrap();
    assert_eq!(scheduled.status, "True");
    // The pass that moved the binding says why the primary was passed
    // over; any later pass (a Work's status, a cluster's summary) starts
    // from the backup and says why the binding stays there.
    let moved = scheduled.message.contains("group primary-clusters passed over: not enough capacity");
    let kept = scheduled.message.contains("kept, as in Karmada, until a WorkloadRebalancer starts again");
    assert!(
        scheduled.message.contains("clusterAffinities group backup-clusters") && (moved || kept),
        "{}",
        scheduled.message
    );
    let events: Api<Event> = Api::namespaced(hub.clone(), "demo");
    wait_for("a ClusterAffinityGroupChanged Event on the binding", Duration::from_secs(20), || async {
        events.list(&Default::default()).await.unwrap().items.iter().any(|e| {
            e.reason.as_deref() == Some("ClusterAffinityGroupChanged")
                && e.involved_object.name.as_deref() == Some("nginx-deployment")
                && e.message
                    .as_deref()
                    .unwrap_or_default()
                    .contains("moved from clusterAffinities group primary-clusters to backup-clusters")
        })
    })
    .await;

    // Back to 2 replicas: the primary could hold them again, but as in
    // Karmada the binding stays on the group it uses.
    apply(&hub, nginx(2)).await;
    wait_for("2 replicas, still on the backup group", Duration::from_secs(60), || async {
        let (clusters, group) = placement(&bindings, "nginx-deployment").await;
        group.as_deref() == Some("backup-clusters") && clusters.iter().map(|(_, r)| r).sum::<i32>() == 2
    })
    .await;
}

fn web(name: &str) -> serde_json::Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "demo", "labels": {"app": name}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{
                "name": "app", "image": "registry.example.com/web:1"}]}}}
    })
}

#[tokio::test]
async fn a_no_schedule_taint_written_just_before_a_policy_is_always_honoured() {
    let fleet = Fleet::start(&["eu", "us"], &[]).await;
    let hub = fleet.hub.client();
    create_namespace(&hub, "demo").await;
    let clusters: Api<flotilla_api::cluster::ManagedCluster> = Api::all(hub.clone());
    let bindings: Api<ResourceBinding> = Api::namespaced(hub.clone(), "demo");
    // Each round taints one member (a person's own taint, by its own field
    // manager; the one of the round before is dropped) and at once writes
    // a policy and a template for both members: the template must land on
    // the other member only, and stay off the tainted one.
    for round in 0..4 {
        let (tainted, other) = if round % 2 == 0 { ("m1", "m2") } else { ("m2", "m1") };
        for name in ["m1", "m2"] {
            let taints = if name == tainted {
                json!([{"key": format!("maintenance-{round}"), "value": "true", "effect": "NoSchedule"}])
            } else {
                json!([])
            };
            let body = json!({"apiVersion": "cluster.flotilla.io/v1alpha1", "kind": "ManagedCluster",
                "metadata": {"name": name}, "spec": {"taints": taints}});
            clusters
                .patch(name, &PatchParams::apply("maintainer").force(), &Patch::Apply(&body))
                .await
                .unwrap();
        }
        let name = format!("web-{round}");
        apply(
            &hub,
            json!({
                "apiVersion": "policy.flotilla.io/v1alpha1", "kind": "PropagationPolicy",
                "metadata": {"name": name, "namespace": "demo"},
                "spec": {"resourceSelectors": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": name}],
                    "placement": {"clusterAffinity": {"clusterNames": ["m1", "m2"]}}}
            }),
        )
        .await;
        apply(&hub, web(&name)).await;
        let binding = format!("{name}-deployment");
        wait_for(&format!("{name} scheduled"), Duration::from_secs(60), || async {
            !placement(&bindings, &binding).await.0.is_empty()
        })
        .await;
        for _ in 0..6 {
            let (placed, _) = placement(&bindings, &binding).await;
            assert_eq!(placed, vec![(other.to_string(), 1)], "{name} on the cluster tainted {tainted}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

fn labelled(name: &str, labels: serde_json::Value) -> serde_json::Value {
    let mut deployment = web(name);
    deployment["metadata"]["labels"] = labels;
    deployment
}

fn policy(name: &str, selector: serde_json::Value, placement: serde_json::Value) -> serde_json::Value {
    json!({
        "apiVersion": "policy.flotilla.io/v1alpha1", "kind": "PropagationPolicy",
        "metadata": {"name": name, "namespace": "demo"},
        "spec": {"resourceSelectors": [selector], "placement": placement}
    })
}

/// Karmada's `workloadAffinity` (KEP 521): anti-affine pipelines on
/// different clusters, an affine training job where its group is.
#[tokio::test]
async fn workload_affinity_keeps_groups_apart_and_together() {
    let fleet = Fleet::start(&["eu", "us", "ap"], &[]).await;
    let hub = fleet.hub.client();
    create_namespace(&hub, "demo").await;
    let bindings: Api<ResourceBinding> = Api::namespaced(hub.clone(), "demo");
    let one_cluster = json!({"replicaSchedulingType": "Divided", "replicaDivisionPreference": "Aggregated"});

    // Three HA pipelines written at once: one cluster each, never shared.
    apply(
        &hub,
        policy(
            "pipelines",
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "labelSelector": {"matchLabels": {"ha.group": "flink"}}}),
            json!({"replicaScheduling": one_cluster,
                "workloadAffinity": {"antiAffinity": {"groupByLabelKey": "ha.group"}}}),
        ),
    )
    .await;
    for name in ["pipeline-a", "pipeline-b", "pipeline-c"] {
        apply(&hub, labelled(name, json!({"ha.group": "flink"}))).await;
    }
    let placed = |name: &'static str| {
        let bindings = bindings.clone();
        async move { placement(&bindings, &format!("{name}-deployment")).await.0 }
    };
    wait_for("three pipelines on three clusters", Duration::from_secs(60), || async {
        let mut clusters = Vec::new();
        for name in ["pipeline-a", "pipeline-b", "pipeline-c"] {
            clusters.extend(placed(name).await.into_iter().map(|(c, _)| c));
        }
        clusters.sort();
        clusters == ["m1", "m2", "m3"]
    })
    .await;
    let binding = bindings.get("pipeline-a-deployment").await.unwrap();
    assert_eq!(binding.spec.spec.affinity_groups.unwrap().anti_affinity_group, "ha.group=flink");
    // A fourth has nowhere to go, and is told why.
    apply(&hub, labelled("pipeline-d", json!({"ha.group": "flink"}))).await;
    wait_for("pipeline-d unschedulable for its anti-affinity", Duration::from_secs(60), || async {
        let Some(b) = bindings.get_opt("pipeline-d-deployment").await.unwrap() else { return false };
        b.status.and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Scheduled")).is_some_and(|c| {
            c.status == "False"
                && c.message
                    .contains("workloadAffinity (anti-affinity group ha.group=flink) rules out m1, m2, m3")
        })
    })
    .await;

    // Training: the first job is pinned to m3 by its own policy; the next
    // one, free to go anywhere (by name, m1 first), joins its group on m3.
    let training = json!({"affinity": {"groupByLabelKey": "train.group"}});
    apply(
        &hub,
        policy(
            "train-first",
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "train-1"}),
            json!({"clusterAffinity": {"clusterNames": ["m3"]}, "replicaScheduling": one_cluster,
                "workloadAffinity": training}),
        ),
    )
    .await;
    apply(&hub, labelled("train-1", json!({"train.group": "bert"}))).await;
    wait_for("train-1 on m3", Duration::from_secs(60), || async {
        placed("train-1").await == [("m3".to_string(), 1)]
    })
    .await;
    apply(
        &hub,
        policy(
            "train-rest",
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "train-2"}),
            json!({"replicaScheduling": one_cluster, "workloadAffinity": training}),
        ),
    )
    .await;
    apply(&hub, labelled("train-2", json!({"train.group": "bert"}))).await;
    wait_for("train-2 with its group on m3", Duration::from_secs(60), || async {
        placed("train-2").await == [("m3".to_string(), 1)]
    })
    .await;
}
