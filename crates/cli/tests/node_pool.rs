#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A NodePool gives a hosted cluster real worker nodes (containerd, kubelet
//! and kube-proxy under the node agents of two Machines), rolls a new
//! Kubernetes version through them one node at a time (cordon, drain by
//! eviction, update, Ready on the version, uncordon) while a Deployment
//! protected by a PodDisruptionBudget never drops below the budget, and
//! rolls a broken release back (the first node fails its deadline and
//! returns to the last good revision, the other never sees it, the reason
//! is on the status and an Event); scales down by draining and removing a
//! node; a killed containerd is
//! started again by the node agent, and a node whose Machine is lost is
//! replaced on another. Needs root and
//! `scripts/node-runtime.sh`'s runtime, like localkube's `real_nodes` test.

mod kok_env;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;

use flotilla_api::kok::{EtcdCluster, HostedCluster, HostedClusterPhase};
use flotilla_api::machine::Machine;
use flotilla_api::node_pool::{NodePool, POOL_LABEL};
use flotilla_kok_core::hosted::admin_secret_name;
use flotilla_kok_core::node_pool::{rollout_state, CORDONED_AT_ANNOTATION};
use flotilla_localkube::real_node::{RealNodes, BUSYBOX_IMAGE};
use flotilla_localkube::Binaries;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Secret};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kok_env::{KokEnv, NS, WAIT};
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use serde_json::json;

const OLD: &str = "1.36.3";
const BROKEN: &str = "1.37.0";
const NEW: &str = "1.37.2";
const CLUSTER: &str = "np";
const POOL: &str = "workers";
const ROLE: &str = "kok-test/role";

async fn pool_until(pools: &Api<NodePool>, what: &str, check: impl Fn(&NodePool) -> bool) -> NodePool {
    let mut last = None;
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if let Ok(p) = pools.get(POOL).await {
            if check(&p) {
                return p;
            }
            last = Some(p);
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    panic!("node pool never {what}: {:#?}", last.and_then(|p| p.status));
}

fn rollout_complete_on(p: &NodePool, version: &str, replicas: i32) -> bool {
    let Some(s) = &p.status else { return false };
    s.observed_generation == p.metadata.generation
        && s.rollout.as_ref().is_some_and(|r| r.state == rollout_state::COMPLETE)
        && s.ready_nodes == replicas
        && s.nodes_count == replicas
        && s.nodes.iter().all(|n| n.version.as_deref() == Some(version) && n.ready)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_pool_rolls_a_new_version_through_real_nodes_within_a_pdb_and_scales_down() {
    // An address the nodes' network namespaces reach: the host side of a
    // real-node bridge of the test's own, for every Machine.
    let api_bridge = RealNodes::reserve().unwrap();
    let old_bin = Binaries::locate_version(OLD).unwrap().dir().to_path_buf();
    // A release whose kubelet and kube-proxy exit at once.
    let broken = tempfile::tempdir().unwrap();
    for part in ["kubelet", "kube-proxy"] {
        let path = broken.path().join(part);
        std::fs::write(&path, "#!/bin/sh\necho \"this build is broken\" >&2\nexit 1\n").unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    // The control plane and etcd on one Machine, the pool's nodes on two
    // others, so losing a node's Machine leaves the cluster serving.
    let env = KokEnv::start_at(
        &["cp", "w1", "w2"],
        &api_bridge.gateway().to_string(),
        BTreeMap::from([(OLD.to_string(), old_bin), (BROKEN.to_string(), broken.path().to_path_buf())]),
        // A lost Machine is noticed in seconds, not the default 40.
        |hosted| hosted.plan.machine_lost_after = time::Duration::seconds(10),
    )
    .await;
    let machines: Api<Machine> = Api::all(env.client.clone());
    for (machine, role) in [("cp", "control-plane"), ("w1", "worker"), ("w2", "worker")] {
        let labels = json!({"metadata": {"labels": {ROLE: role}}});
        machines.patch(machine, &PatchParams::default(), &Patch::Merge(&labels)).await.unwrap();
    }
    let etcd: EtcdCluster = serde_json::from_value(json!({
        "apiVersion": "kok.flotilla.io/v1alpha1", "kind": "EtcdCluster",
        "metadata": {"name": "np-etcd", "namespace": NS},
        "spec": {"members": 1, "version": "3.7.4", "machineSelector": {ROLE: "control-plane"}},
    }))
    .unwrap();
    Api::<EtcdCluster>::namespaced(env.client.clone(), NS)
        .create(&PostParams::default(), &etcd)
        .await
        .unwrap();
    let hc: HostedCluster = serde_json::from_value(json!({
        "apiVersion": "kok.flotilla.io/v1alpha1", "kind": "HostedCluster",
        "metadata": {"name": CLUSTER, "namespace": NS},
        "spec": {"version": NEW, "etcd": {"clusterRef": "np-etcd"},
                 "controlPlane": {"machineSelector": {ROLE: "control-plane"}}},
    }))
    .unwrap();
    env.clusters().create(&PostParams::default(), &hc).await.unwrap();
    env.wait_phase(CLUSTER, HostedClusterPhase::Ready).await;
    let admin = Api::<Secret>::namespaced(env.client.clone(), NS)
        .get(&admin_secret_name(CLUSTER))
        .await
        .unwrap()
        .data
        .unwrap()["kubeconfig"]
        .0
        .clone();
    let inside: Client = flotilla_kok::hosted_addons::business_client(&admin).await.unwrap();

    // Two real nodes on the old version, one per Machine.
    let pools: Api<NodePool> = Api::namespaced(env.client.clone(), NS);
    let pool: NodePool = serde_json::from_value(json!({
        "apiVersion": "kok.flotilla.io/v1alpha1", "kind": "NodePool",
        "metadata": {"name": POOL, "namespace": NS},
        "spec": {"clusterRef": CLUSTER, "replicas": 2, "version": OLD,
                 "machineSelector": {ROLE: "worker"}, "kubelet": {"labels": {"tier": "web"}}},
    }))
    .unwrap();
    pools.create(&PostParams::default(), &pool).await.unwrap();
    let joined = pool_until(&pools, "Ready with 2 nodes on 1.36.3", |p| rollout_complete_on(p, OLD, 2)).await;
    let status = joined.status.unwrap();
    let placed: Vec<&str> = status.nodes.iter().map(|n| n.machine.as_str()).collect();
    assert_eq!(placed, ["w1", "w2"], "{:?}", status.nodes);
    let nodes: Api<Node> = Api::all(inside.clone());
    let listed = nodes.list(&Default::default()).await.unwrap().items;
    assert_eq!(listed.len(), 2, "only the pool's nodes: {listed:?}");
    for n in &listed {
        let labels = n.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels.get(POOL_LABEL).map(String::as_str), Some(POOL));
        assert_eq!(labels.get("tier").map(String::as_str), Some("web"));
    }

    // A Deployment that must keep one pod available.
    let deployments: Api<Deployment> = Api::namespaced(inside.clone(), "default");
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "main",
                    "image": BUSYBOX_IMAGE, "imagePullPolicy": "Never",
                    "command": ["sh", "-c", "exec sleep 3600"]}]}}},
    }))
    .unwrap();
    deployments.create(&PostParams::default(), &deployment).await.unwrap();
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(inside.clone(), "default");
    let budget: PodDisruptionBudget = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}},
    }))
    .unwrap();
    budgets.create(&PostParams::default(), &budget).await.unwrap();
    flotilla_localkube::wait_for("the Deployment available and its budget healthy", WAIT, || async {
        let available = deployments.get("web").await.ok().and_then(|d| d.status?.available_replicas);
        let healthy = budgets.get("web").await.ok().and_then(|b| b.status).and_then(|s| s.current_healthy);
        available == Some(2) && healthy == Some(2)
    })
    .await;

    // Every change of the Deployment's status, from now on: the fewest
    // available replicas it ever reported.
    let fewest = Arc::new(AtomicI32::new(2));
    let watch = {
        let (fewest, deployments) = (fewest.clone(), deployments.clone());
        tokio::spawn(async move {
            let config = watcher::Config::default().fields("metadata.name=web");
            let mut stream = watcher(deployments, config).applied_objects().boxed();
            while let Some(Ok(d)) = stream.next().await {
                let available = d.status.and_then(|s| s.available_replicas).unwrap_or(0);
                fewest.fetch_min(available, Ordering::SeqCst);
            }
        })
    };

    // The new version rolls through, one node at a time.
    let patch = json!({"spec": {"version": NEW}});
    pools.patch(POOL, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let rolled = pool_until(&pools, "rolled to 1.37.2", |p| rollout_complete_on(p, NEW, 2)).await;
    let rollout = rolled.status.clone().unwrap().rollout.unwrap();
    assert_eq!(rollout.last_good_version.as_deref(), Some(NEW), "{rollout:?}");
    for n in nodes.list(&Default::default()).await.unwrap().items {
        let info = n.status.clone().unwrap().node_info.unwrap();
        assert_eq!(info.kubelet_version, format!("v{NEW}"));
        assert_ne!(n.spec.as_ref().and_then(|s| s.unschedulable), Some(true), "left cordoned: {n:?}");
        assert!(!n.metadata.annotations.unwrap_or_default().contains_key(CORDONED_AT_ANNOTATION));
    }
    flotilla_localkube::wait_for("the Deployment fully available again", WAIT, || async {
        deployments.get("web").await.ok().and_then(|d| d.status?.available_replicas) == Some(2)
    })
    .await;
    // Both nodes were drained: every pod of the Deployment was replaced.
    assert!(
        fewest.load(Ordering::SeqCst) >= 1,
        "the budget was broken: {} available",
        fewest.load(Ordering::SeqCst)
    );

    // A broken release fails on the first node past its deadline: that node
    // goes back to the last good revision, the other never sees the broken
    // one, and the failure is on the status.
    let good = pools.get(POOL).await.unwrap().status.unwrap().rollout.unwrap().revision;
    let patch = json!({"spec": {"version": BROKEN, "rollout": {"nodeDeadlineSeconds": 10}}});
    pools.patch(POOL, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let rolled_back = pool_until(&pools, "rolled back from the broken release", |p| {
        let Some(s) = &p.status else { return false };
        s.observed_generation == p.metadata.generation
            && s.rollout
                .as_ref()
                .is_some_and(|r| r.state == rollout_state::ROLLED_BACK && r.failed_revision.is_some())
            && s.ready_nodes == 2
            && s.nodes.iter().all(|n| n.revision == good && n.ready && n.version.as_deref() == Some(NEW))
    })
    .await;
    let status = rolled_back.status.unwrap();
    let message = status.rollout.clone().unwrap().message.unwrap();
    assert!(message.contains(&format!("not Ready on {BROKEN}")), "{message}");
    let degraded = status.conditions.iter().find(|c| c.type_ == "Degraded").unwrap();
    assert_eq!((degraded.status.as_str(), degraded.reason.as_str()), ("True", "RolledBack"), "{degraded:?}");
    let failed_node = status.nodes.iter().find(|n| message.contains(&n.name)).unwrap().name.clone();
    let untouched = status.nodes.iter().find(|n| n.name != failed_node).unwrap().name.clone();
    let events = Api::<k8s_openapi::api::core::v1::Event>::namespaced(env.client.clone(), NS)
        .list(&Default::default())
        .await
        .unwrap();
    assert!(events.items.iter().any(|e| e.reason.as_deref() == Some("RolloutFailed")), "{events:?}");
    let untouched_node = nodes.get(&untouched).await.unwrap();
    assert!(!untouched_node.metadata.annotations.unwrap_or_default().contains_key(CORDONED_AT_ANNOTATION));
    flotilla_localkube::wait_for("the Deployment fully available after the rollback", WAIT, || async {
        deployments.get("web").await.ok().and_then(|d| d.status?.available_replicas) == Some(2)
    })
    .await;
    flotilla_localkube::wait_for("the rolled-back node uncordoned", WAIT, || async {
        nodes.list(&Default::default()).await.unwrap().items.iter().all(|n| {
            n.spec.as_ref().and_then(|s| s.unschedulable) != Some(true)
                && !n.metadata.annotations.clone().unwrap_or_default().contains_key(CORDONED_AT_ANNOTATION)
        })
    })
    .await;

    // Scale down (the version back to the good one): a node drained and
    // removed, its Machine entry gone.
    let patch = json!({"spec": {"replicas": 1, "version": NEW}});
    pools.patch(POOL, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    pool_until(&pools, "down to 1 node", |p| rollout_complete_on(p, NEW, 1)).await;
    flotilla_localkube::wait_for("one Node left and one Machine entry", WAIT, || async {
        let left = nodes.list(&Default::default()).await.unwrap().items.len();
        let entries: usize = machines
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .iter()
            .map(|m| m.spec.real_nodes.len())
            .sum();
        left == 1 && entries == 1
    })
    .await;
    flotilla_localkube::wait_for("the Deployment available on the node left", WAIT, || async {
        deployments.get("web").await.ok().and_then(|d| d.status?.available_replicas) == Some(2)
    })
    .await;
    watch.abort();
    assert!(fewest.load(Ordering::SeqCst) >= 1, "the budget was broken while scaling down");

    // Repair in place: the node's containerd, killed, is started again by
    // its node agent and the repair counted on the Machine.
    let left = pools.get(POOL).await.unwrap().status.unwrap().nodes.remove(0);
    let component = format!("{}-containerd", left.name);
    let status_of = |m: Machine| m.status.unwrap_or_default();
    let before = status_of(machines.get(&left.machine).await.unwrap());
    let pid = before.components.iter().find(|c| c.name == component).and_then(|c| c.pid).unwrap();
    let repairs = before.real_nodes.iter().find(|n| n.name == left.name).unwrap().repairs;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL)
        .unwrap();
    flotilla_localkube::wait_for("containerd started again and the repair counted", WAIT, || async {
        let now = status_of(machines.get(&left.machine).await.unwrap());
        let restarted =
            now.components.iter().find(|c| c.name == component).and_then(|c| c.pid).is_some_and(|p| p != pid);
        let node = now.real_nodes.iter().find(|n| n.name == left.name).cloned().unwrap_or_default();
        restarted && node.repairs > repairs && node.last_repair.is_some_and(|r| r.contains(&component))
    })
    .await;
    pool_until(&pools, "Ready after the repair", |p| rollout_complete_on(p, NEW, 1)).await;

    // Replacement: the node's Machine is lost, so the pool replaces the node
    // on the other Machine and its pods come back there. (A node NotReady
    // for 30 s is replaced too: either way out of the lost Machine counts.)
    let patch = json!({"spec": {"repair": {"replaceAfterSeconds": 30}}});
    pools.patch(POOL, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    env.lose_machine(if left.machine == "w1" { 1 } else { 2 }).await;
    let lost_at = k8s_openapi::jiff::Timestamp::now();
    let replaced = tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(p) = pools.get(POOL).await {
                let done = rollout_complete_on(&p, NEW, 1)
                    && p.status
                        .as_ref()
                        .is_some_and(|s| s.replacements == 1 && s.nodes[0].machine != left.machine);
                if done {
                    return p;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
    })
    .await;
    let Ok(replaced) = replaced else {
        // What the pool saw: the Machines' heartbeats against the loss.
        let beats: Vec<(String, Option<String>)> = machines
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|m| {
                let beat = m.status.and_then(|s| s.last_heartbeat).map(|t| t.0.to_string());
                (m.metadata.name.unwrap_or_default(), beat)
            })
            .collect();
        panic!(
            "the node on the lost Machine {} was never replaced; lost at {lost_at}, heartbeats {beats:?}, pool {:#?}",
            left.machine,
            pools.get(POOL).await.ok().and_then(|p| p.status)
        );
    };
    let why = replaced.status.unwrap().last_replacement.unwrap();
    assert!(
        why.contains(&format!("its Machine {} stopped reporting", left.machine))
            || why.contains(&format!("node {} replaced: NotReady", left.name)),
        "{why}"
    );
    flotilla_localkube::wait_for("the Deployment available on the replacement", WAIT, || async {
        let names: Vec<String> = nodes
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|n| n.metadata.name.unwrap())
            .collect();
        names.len() == 1
            && names[0] != left.name
            && deployments.get("web").await.ok().and_then(|d| d.status?.available_replicas) == Some(2)
    })
    .await;
    drop(env);
    drop(api_bridge);
}
