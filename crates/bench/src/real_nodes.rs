//! `flotilla-bench real-nodes`: real worker nodes (containerd, a real
//! kubelet and kube-proxy per node, `flotilla_localkube::real_node`) under
//! one localkube cluster. Three figures: a node's join -> Ready (each node
//! added alone), pod create -> Running (one pod at a time, round robin
//! over the nodes), and a SIGKILLed kubelet -> node Ready again (the
//! node controller's detection, then a restart of the same process).
//! Needs root and `scripts/node-runtime.sh`'s runtime and images.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use flotilla_localkube::real_node::{NodeImages, RealNodeConfig, RealNodes, BUSYBOX_IMAGE};
use flotilla_localkube::{node_is_ready, Binaries, Cluster, ClusterConfig, DEFAULT_K8S_VERSION};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{DeleteParams, PostParams};
use kube::Api;

/// How long one node may take to join, one pod to run, a node to recover.
const NODE_TIMEOUT: Duration = Duration::from_secs(120);
const POD_TIMEOUT: Duration = Duration::from_secs(60);
/// Beyond the controller-manager's node-monitor grace period.
const DETECTION_TIMEOUT: Duration = Duration::from_secs(180);
/// Polling interval: small next to the figures it measures.
const POLL: Duration = Duration::from_millis(50);

#[derive(Args, Debug)]
pub struct RealNodesArgs {
    /// Real nodes to start, one at a time.
    #[arg(long, default_value_t = 4)]
    pub nodes: usize,
    /// Pods to start, one at a time, round robin over the nodes.
    #[arg(long, default_value_t = 20)]
    pub pods: usize,
    /// Kubelets to kill, one node after another (0 skips the figure, which
    /// waits out the node controller's grace period each time).
    #[arg(long, default_value_t = 2)]
    pub kills: usize,
    /// Kubernetes release of the cluster and the nodes (a built cache).
    #[arg(long, default_value = DEFAULT_K8S_VERSION)]
    pub k8s_version: String,
}

/// One figure: its name, samples and goal.
struct Row {
    what: &'static str,
    samples: Vec<Duration>,
    goal: &'static str,
}

pub async fn real_nodes(args: RealNodesArgs) -> anyhow::Result<bool> {
    if args.nodes == 0 || args.nodes > 8 {
        bail!("--nodes must be 1 to 8 (a real-node group's address slot holds 8)");
    }
    let binaries = Binaries::locate_version(&args.k8s_version)?;
    let images = NodeImages::locate()?;
    println!(
        "real nodes: 1 localkube cluster (Kubernetes {}), {} real node(s) (containerd {}, kubelet, kube-proxy; \
         busybox pods from local images), added one at a time",
        args.k8s_version,
        args.nodes,
        containerd_version()
    );
    let mut nodes = RealNodes::reserve_with(binaries.clone(), images)?;
    let mut config = ClusterConfig::new("bench-real").for_real_nodes(nodes.gateway());
    config.binaries = Some(binaries);
    config.wait_for_default_service_account = true;
    let cluster = Cluster::start(config).await?;

    let mut rows = Vec::new();
    rows.push(join(&mut nodes, &cluster, args.nodes).await?);
    println!(
        "  memory: {} MiB resident per node with no pods (containerd, kubelet, kube-proxy, holder)",
        node_rss_mib(&nodes)
    );
    if args.pods > 0 {
        rows.push(pods(&nodes, &cluster, args.pods).await?);
    }
    if args.kills > 0 {
        rows.extend(kubelet_kills(&mut nodes, &cluster, args.kills.min(args.nodes)).await?);
    }
    println!("\n{}", table(&rows));
    let shutdown = nodes.shutdown();
    for problem in &shutdown.problems {
        println!("  cleanup problem: {problem}");
    }
    drop(cluster);
    Ok(shutdown.problems.is_empty())
}

/// (a) Each node alone: from starting its processes (containerd, images
/// imported, kubelet, kube-proxy) to its Node Ready.
async fn join(nodes: &mut RealNodes, cluster: &Cluster, count: usize) -> anyhow::Result<Row> {
    let mut samples = Vec::new();
    for i in 0..count {
        let name = format!("bench-real-{}", i + 1);
        let node = nodes.add(cluster, RealNodeConfig::new(&name), NODE_TIMEOUT).await?;
        let ready = node.ready_after().context("an added node is Ready")?;
        println!("  {name}: Ready after {:.2}s", ready.as_secs_f64());
        samples.push(ready);
    }
    Ok(Row { what: "node join -> Ready", samples, goal: "p50 < 10 s" })
}

/// (b) One busybox pod at a time, bound to the next node by its
/// selector: from the create call to phase Running, then deleted.
async fn pods(nodes: &RealNodes, cluster: &Cluster, count: usize) -> anyhow::Result<Row> {
    let api: Api<Pod> = Api::namespaced(cluster.client(), "default");
    let names: Vec<String> = nodes.nodes().iter().map(|n| n.name().to_string()).collect();
    let mut samples = Vec::new();
    for i in 0..count {
        let name = format!("bench-pod-{i}");
        let pod = busybox_pod(&name, &names[i % names.len()])?;
        let started = Instant::now();
        api.create(&PostParams::default(), &pod).await?;
        loop {
            let phase = api.get(&name).await?.status.and_then(|s| s.phase).unwrap_or_default();
            if phase == "Running" {
                break;
            }
            if phase == "Failed" || started.elapsed() > POD_TIMEOUT {
                bail!("pod {name} on {} is {phase:?} after {:?}", names[i % names.len()], started.elapsed());
            }
            tokio::time::sleep(POLL).await;
        }
        samples.push(started.elapsed());
        api.delete(&name, &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await?;
    }
    Ok(Row { what: "pod create -> Running", samples, goal: "p50 < 2 s" })
}

/// (c) SIGKILL a node's kubelet; the node controller marks the node not
/// Ready after its grace period; the same kubelet is started again and
/// the node turns Ready. Nodes one after another.
async fn kubelet_kills(nodes: &mut RealNodes, cluster: &Cluster, count: usize) -> anyhow::Result<Vec<Row>> {
    let api: Api<Node> = Api::all(cluster.client());
    let names: Vec<String> = nodes.nodes().iter().take(count).map(|n| n.name().to_string()).collect();
    let (mut detected, mut recovered, mut total) = (Vec::new(), Vec::new(), Vec::new());
    for name in names {
        let kubelet = nodes
            .node_mut(&name)
            .and_then(|n| n.process_mut("kubelet"))
            .context("every real node runs a kubelet")?;
        let pid = kubelet.pid().context("the kubelet is running")?;
        let killed = Instant::now();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL)
            .with_context(|| format!("killing the kubelet of {name} (pid {pid})"))?;
        wait_node(&api, &name, false, killed, DETECTION_TIMEOUT).await?;
        let not_ready = killed.elapsed();
        let restarted = Instant::now();
        kubelet.restart()?;
        wait_node(&api, &name, true, restarted, NODE_TIMEOUT).await?;
        println!(
            "  {name}: kubelet killed -> NotReady {:.1}s, restarted -> Ready {:.2}s",
            not_ready.as_secs_f64(),
            restarted.elapsed().as_secs_f64()
        );
        detected.push(not_ready);
        recovered.push(restarted.elapsed());
        total.push(killed.elapsed());
    }
    Ok(vec![
        Row {
            what: "kubelet killed -> node NotReady",
            samples: detected,
            goal: "the node controller's grace (50 s default)",
        },
        Row { what: "kubelet restarted -> node Ready", samples: recovered, goal: "" },
        Row { what: "kubelet killed -> node Ready again", samples: total, goal: "" },
    ])
}

/// Waits until node `name` is Ready (`ready`) or not.
async fn wait_node(
    api: &Api<Node>,
    name: &str,
    ready: bool,
    since: Instant,
    timeout: Duration,
) -> anyhow::Result<()> {
    loop {
        if node_is_ready(&api.get(name).await?) == ready {
            return Ok(());
        }
        if since.elapsed() > timeout {
            bail!("node {name} not {} after {timeout:?}", if ready { "Ready" } else { "NotReady" });
        }
        tokio::time::sleep(POLL).await;
    }
}

fn busybox_pod(name: &str, node: &str) -> anyhow::Result<Pod> {
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": node},
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "main", "image": BUSYBOX_IMAGE, "imagePullPolicy": "Never",
                "command": ["sleep", "3600"]}]
        }
    }))?)
}

/// Median resident memory of the nodes' processes (their cgroups' pids).
fn node_rss_mib(nodes: &RealNodes) -> u64 {
    let mut per_node: Vec<u64> = nodes
        .nodes()
        .iter()
        .map(|n| n.pids().into_iter().filter_map(flotilla_cli::fleet::rss_bytes).sum::<u64>())
        .collect();
    per_node.sort();
    per_node.get(per_node.len() / 2).copied().unwrap_or(0) >> 20
}

fn containerd_version() -> String {
    std::process::Command::new("containerd")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|v| v.split_whitespace().nth(2).map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

/// Nearest-rank percentile of sorted samples (`p` in 0..=1): the median
/// of two samples is the first, not the larger.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len().max(1)) - 1).copied().unwrap_or_default()
}

fn table(rows: &[Row]) -> String {
    let secs = |d: Duration| format!("{:.2}s", d.as_secs_f64());
    let mut out = format!("{:<36} {:>4} {:>8} {:>8} {:>8}  goal\n", "figure", "n", "p50", "p90", "max");
    for row in rows {
        let mut sorted = row.samples.clone();
        sorted.sort();
        if sorted.is_empty() {
            continue;
        }
        out += &format!(
            "{:<36} {:>4} {:>8} {:>8} {:>8}  {}\n",
            row.what,
            sorted.len(),
            secs(percentile(&sorted, 0.5)),
            secs(percentile(&sorted, 0.9)),
            secs(sorted[sorted.len() - 1]),
            row.goal
        );
    }
    out
}
