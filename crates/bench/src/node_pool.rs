//! `flotilla-bench node-pool`: a NodePool of real nodes under `flotilla hub
//! run` and node agents (all children of this process). Figures: the pool
//! created -> every node Ready; a rolling upgrade of the pool (1.36.3 ->
//! 1.37.2, `maxUnavailable: 1`) while a Deployment runs under a
//! PodDisruptionBudget, with the time per node and the seconds the
//! Deployment spent below the budget's minimum (the goal is 0). Needs root
//! and `scripts/node-runtime.sh`'s runtime and images.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use flotilla_api::kok::{HostedCluster, HostedClusterPhase};
use flotilla_api::machine::Machine;
use flotilla_api::node_pool::NodePool;
use flotilla_kok_core::hosted::admin_secret_name;
use flotilla_kok_core::node_pool::rollout_state;
use flotilla_localkube::real_node::{RealNodes, BUSYBOX_IMAGE};
use flotilla_localkube::{Binaries, Cluster, ClusterConfig, ManagedProcess, ProcessSpec};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use serde_json::json;

use crate::kok::env::{free_port_range, wait_until};

const NS: &str = "pool-bench";
const OLD: &str = "1.36.3";
const NEW: &str = "1.37.2";
const ROLE: &str = "bench/role";
const WORKERS: [&str; 2] = ["w1", "w2"];
const TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Args, Debug)]
pub struct NodePoolArgs {
    /// Nodes in the pool, spread over two worker Machines.
    #[arg(long, default_value_t = 4)]
    pub nodes: i32,
    /// The Deployment's replicas; its PodDisruptionBudget keeps all but one
    /// available.
    #[arg(long, default_value_t = 4)]
    pub replicas: i32,
}

/// The hub, `hub run` and the node agents; dropping it stops them, kills
/// what the agents started and removes their real nodes from the host.
struct PoolEnv {
    _hub: Cluster,
    client: Client,
    operator: ManagedProcess,
    agents: Vec<ManagedProcess>,
    state_dirs: Vec<PathBuf>,
    _bridge: RealNodes,
    _tmp: tempfile::TempDir,
}

impl Drop for PoolEnv {
    fn drop(&mut self) {
        self.operator.stop(Duration::ZERO);
        for a in &mut self.agents {
            a.stop(Duration::ZERO);
        }
        for d in &self.state_dirs {
            flotilla_node_agent::kill_recorded(d);
            flotilla_node_agent::remove_real_nodes(d);
        }
    }
}

impl PoolEnv {
    async fn start() -> anyhow::Result<PoolEnv> {
        // Real nodes reach the Machines' address from their namespaces: the
        // host side of a real-node bridge of the bench's own.
        let bridge = RealNodes::reserve().context("reserving a real-node bridge")?;
        let address = bridge.gateway().to_string();
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().to_path_buf();
        let hub =
            Cluster::start(ClusterConfig::apiserver_only("pool-bench-hub").in_dir(dir.join("hub"))).await?;
        let client = hub.client();
        flotilla_hub::install(&client).await?;
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}});
        Api::<Namespace>::all(client.clone())
            .patch(NS, &PatchParams::apply("bench"), &Patch::Apply(&ns))
            .await?;
        let machines = ["cp"].into_iter().chain(WORKERS);
        for m in machines.clone() {
            let role = if m == "cp" { "control-plane" } else { "worker" };
            let machine: Machine = serde_json::from_value(json!({
                "apiVersion": "kok.flotilla.io/v1alpha1", "kind": "Machine",
                "metadata": {"name": m, "labels": {ROLE: role}}, "spec": {"address": address}}))?;
            Api::<Machine>::all(client.clone()).create(&PostParams::default(), &machine).await?;
        }
        let new_dir = Binaries::locate_version(NEW)?.dir().to_path_buf();
        let old_dir = Binaries::locate_version(OLD)
            .with_context(|| format!("the {OLD} build (scripts/k8s-binaries.sh {OLD})"))?
            .dir()
            .to_path_buf();
        let ports = free_port_range(100)?;
        let exe = crate::flotilla_binary::path()?;
        let kubeconfig = hub.kubeconfig_path().display().to_string();
        let operator = ManagedProcess::spawn(
            ProcessSpec::new("flotilla-hub-run", exe.clone(), dir.join("logs/hub-run.log"))
                .env("FLOTILLA_LOG", "warn,flotilla_kok=info")
                .args(["hub", "run", "--auto-accept", "--kubeconfig", &kubeconfig])
                .arg("--kok-version")
                .arg(format!("{NEW}={}", new_dir.display()))
                .arg("--kok-version")
                .arg(format!("{OLD}={}", old_dir.display()))
                .arg("--kok-port-range")
                .arg(format!("{ports}-{}", ports + 99)),
        )?;
        let mut agents = Vec::new();
        let mut state_dirs = Vec::new();
        for m in machines {
            let state_dir = dir.join("machines").join(m);
            agents.push(ManagedProcess::spawn(
                ProcessSpec::new(
                    format!("node-agent-{m}"),
                    exe.clone(),
                    dir.join(format!("logs/node-agent-{m}.log")),
                )
                .args(["node-agent", "--machine", m, "--kubeconfig", &kubeconfig, "--heartbeat", "5"])
                .arg("--state-dir")
                .arg(state_dir.display().to_string()),
            )?);
            state_dirs.push(state_dir);
        }
        Ok(PoolEnv { _hub: hub, client, operator, agents, state_dirs, _bridge: bridge, _tmp: tmp })
    }
}

fn complete_on(p: &NodePool, version: &str, nodes: i32) -> bool {
    let Some(s) = &p.status else { return false };
    s.observed_generation == p.metadata.generation
        && s.rollout.as_ref().is_some_and(|r| r.state == rollout_state::COMPLETE)
        && s.ready_nodes == nodes
        && s.nodes_count == nodes
        && s.nodes.iter().all(|n| n.version.as_deref() == Some(version) && n.ready)
}

async fn wait_pool(pools: &Api<NodePool>, what: &str, version: &str, nodes: i32) -> anyhow::Result<Duration> {
    let start = Instant::now();
    wait_until(what, TIMEOUT, || async {
        pools.get("workers").await.is_ok_and(|p| complete_on(&p, version, nodes))
    })
    .await?;
    Ok(start.elapsed())
}

pub async fn node_pool(args: NodePoolArgs) -> anyhow::Result<bool> {
    if !(1..=16).contains(&args.nodes) || args.replicas < 2 {
        bail!("--nodes must be 1 to 16 and --replicas at least 2");
    }
    println!(
        "node pool: a hosted cluster ({NEW}) under `flotilla hub run`, its control plane on one Machine; \
         a pool of {} real nodes on two Machines rolled {OLD} -> {NEW} with maxUnavailable 1, \
         under a Deployment of {} busybox pods with a PodDisruptionBudget minAvailable {}",
        args.nodes,
        args.replicas,
        args.replicas - 1
    );
    let env = PoolEnv::start().await?;
    let selector = json!({ROLE: "control-plane"});
    let etcd = json!({"apiVersion": "kok.flotilla.io/v1alpha1", "kind": "EtcdCluster",
        "metadata": {"name": "bench-etcd", "namespace": NS},
        "spec": {"members": 1, "version": "3.7.4", "machineSelector": selector}});
    Api::<flotilla_api::kok::EtcdCluster>::namespaced(env.client.clone(), NS)
        .create(&PostParams::default(), &serde_json::from_value(etcd)?)
        .await?;
    let hc = json!({"apiVersion": "kok.flotilla.io/v1alpha1", "kind": "HostedCluster",
        "metadata": {"name": "bench", "namespace": NS},
        "spec": {"version": NEW, "etcd": {"clusterRef": "bench-etcd"},
                 "controlPlane": {"machineSelector": selector}}});
    let clusters: Api<HostedCluster> = Api::namespaced(env.client.clone(), NS);
    clusters.create(&PostParams::default(), &serde_json::from_value(hc)?).await?;
    wait_until("the hosted cluster Ready", TIMEOUT, || async {
        clusters
            .get("bench")
            .await
            .is_ok_and(|c| c.status.and_then(|s| s.phase) == Some(HostedClusterPhase::Ready))
    })
    .await?;
    let admin = Api::<Secret>::namespaced(env.client.clone(), NS)
        .get(&admin_secret_name("bench"))
        .await?
        .data
        .and_then(|d| d.get("kubeconfig").cloned())
        .context("the admin kubeconfig")?;
    let inside = flotilla_kok::hosted_addons::business_client(&admin.0).await?;

    let pools: Api<NodePool> = Api::namespaced(env.client.clone(), NS);
    let pool = json!({"apiVersion": "kok.flotilla.io/v1alpha1", "kind": "NodePool",
        "metadata": {"name": "workers", "namespace": NS},
        "spec": {"clusterRef": "bench", "replicas": args.nodes, "version": OLD,
                 "machineSelector": {ROLE: "worker"}}});
    pools.create(&PostParams::default(), &serde_json::from_value(pool)?).await?;
    let joined = wait_pool(&pools, "every node of the pool Ready", OLD, args.nodes).await?;
    println!("  pool of {} created -> every node Ready: {:.1}s", args.nodes, joined.as_secs_f64());

    let deployments: Api<Deployment> = Api::namespaced(inside.clone(), "default");
    let deployment = json!({"metadata": {"name": "web"},
        "spec": {"replicas": args.replicas, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "main",
                    "image": BUSYBOX_IMAGE, "imagePullPolicy": "Never",
                    "command": ["sh", "-c", "exec sleep 3600"]}]}}}});
    deployments.create(&PostParams::default(), &serde_json::from_value(deployment)?).await?;
    let min_available = args.replicas - 1;
    let budget = json!({"metadata": {"name": "web"},
        "spec": {"minAvailable": min_available, "selector": {"matchLabels": {"app": "web"}}}});
    Api::<k8s_openapi::api::policy::v1::PodDisruptionBudget>::namespaced(inside.clone(), "default")
        .create(&PostParams::default(), &serde_json::from_value(budget)?)
        .await?;
    wait_until("the Deployment available", TIMEOUT, || async {
        deployments.get("web").await.ok().and_then(|d| d.status?.available_replicas) == Some(args.replicas)
    })
    .await?;

    // Every status change of the Deployment, timed.
    let timeline: Arc<Mutex<Vec<(Instant, i32)>>> = Arc::new(Mutex::new(Vec::new()));
    let watch = {
        let (timeline, deployments) = (timeline.clone(), deployments.clone());
        tokio::spawn(async move {
            let config = watcher::Config::default().fields("metadata.name=web");
            let mut stream = watcher(deployments, config).applied_objects().boxed();
            while let Some(Ok(d)) = stream.next().await {
                let available = d.status.and_then(|s| s.available_replicas).unwrap_or(0);
                if let Ok(mut t) = timeline.lock() {
                    t.push((Instant::now(), available));
                }
            }
        })
    };
    let start = Instant::now();
    pools
        .patch("workers", &PatchParams::default(), &Patch::Merge(&json!({"spec": {"version": NEW}})))
        .await?;
    let rolled = wait_pool(&pools, "the pool rolled to the new version", NEW, args.nodes).await?;
    let end = Instant::now();
    watch.abort();
    let timeline = timeline.lock().map(|t| t.clone()).unwrap_or_default();
    let (below, fewest) = below_minimum(&timeline, start, end, min_available);
    println!(
        "  rolling upgrade of {} nodes ({OLD} -> {NEW}, maxUnavailable 1): {:.1}s, {:.1}s per node",
        args.nodes,
        rolled.as_secs_f64(),
        rolled.as_secs_f64() / f64::from(args.nodes)
    );
    println!(
        "  Deployment below the budget's minimum ({min_available} of {}): {:.1}s (fewest available: {fewest})",
        args.replicas,
        below.as_secs_f64()
    );
    Ok(below.is_zero())
}

/// How long the Deployment had fewer than `minimum` available between
/// `start` and `end`, and the fewest it reported.
fn below_minimum(timeline: &[(Instant, i32)], start: Instant, end: Instant, minimum: i32) -> (Duration, i32) {
    let mut below = Duration::ZERO;
    let mut fewest = i32::MAX;
    for (i, (at, available)) in timeline.iter().enumerate() {
        fewest = fewest.min(*available);
        if *available < minimum {
            let from = (*at).max(start);
            let to = timeline.get(i + 1).map_or(end, |(next, _)| *next).min(end);
            below += to.saturating_duration_since(from);
        }
    }
    (below, if fewest == i32::MAX { 0 } else { fewest })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_below_the_minimum_is_summed_between_changes() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let cases = [
            ("never below", vec![(at(0), 4), (at(5), 3)], Duration::ZERO, 3),
            ("below from 5 to 8", vec![(at(0), 4), (at(5), 2), (at(8), 4)], Duration::from_secs(3), 2),
            ("below until the end", vec![(at(0), 4), (at(9), 1)], Duration::from_secs(1), 1),
        ];
        for (name, timeline, want, fewest) in cases {
            assert_eq!(below_minimum(&timeline, at(0), at(10), 3), (want, fewest), "{name}");
        }
    }
}
