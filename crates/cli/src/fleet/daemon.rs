//! The fleet daemon (`flotilla fleet-daemon`): starts the fleet (etcd, the
//! hub, `hub run`, the node agents, then the members as HostedClusters),
//! supervises it once ready (`super::supervise`), and stops it on SIGTERM.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use flotilla_api::kok::{
    EtcdCluster, EtcdClusterSpec, HostedCluster, HostedClusterPhase, Runtime, SharedEtcd,
};
use flotilla_api::kok_request::HostedClusterRequest;
use flotilla_api::machine::{Machine, MachineSpec};
use flotilla_api::node_pool::{NodePool, NodePoolSpec};
use flotilla_kok_core::hosted::admin_secret_name;
use flotilla_localkube::real_node::{NodeImages, RealNodes};
use flotilla_localkube::{Binaries, Cluster, ClusterConfig, ClusterInfo, Etcd, ManagedProcess, ProcessSpec};
use k8s_openapi::api::core::v1::Secret;
use kube::api::PostParams;
use kube::Api;

use super::state::{
    hosted_processes, write_state, ClusterRecord, FleetState, MachineRecord, Phase, ProcessRecord,
    MEMBER_NAMESPACE,
};
use super::supervise;

/// `flotilla fleet-daemon`, as `up` starts it.
#[derive(Args, Debug)]
pub struct DaemonArgs {
    #[arg(long)]
    pub clusters: u32,
    #[arg(long)]
    pub nodes: u32,
    #[arg(long)]
    pub state_dir: PathBuf,
    #[arg(long)]
    pub k8s_bin: PathBuf,
    /// Real worker nodes per member (a NodePool each), 0 for none.
    #[arg(long, default_value_t = 0)]
    pub real_nodes: u32,
    /// Machines (node agents) the fleet runs.
    #[arg(long, default_value_t = super::DEFAULT_MACHINES, value_parser = super::parse_machines)]
    pub machines: u32,
}

/// A pid whose end also stops the fleet, for tests: `flotilla up` run by a
/// test process that is killed (no destructor runs) must not leave a fleet
/// behind. Unset for a person's `up`, whose fleet outlives the shell.
pub const OWNER_PID_ENV: &str = "FLOTILLA_FLEET_OWNER_PID";

/// Returns once the owner process (see [`OWNER_PID_ENV`]) is gone; never
/// without one.
async fn owner_gone() {
    let owner = std::env::var(OWNER_PID_ENV).ok().and_then(|p| p.parse::<i32>().ok());
    let Some(owner) = owner else { return std::future::pending().await };
    let pid = nix::unistd::Pid::from_raw(owner);
    while nix::sys::signal::kill(pid, None).is_ok() {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    tracing::info!(owner, "the owner process is gone");
}

pub async fn run(args: DaemonArgs) -> anyhow::Result<()> {
    let dir = args.state_dir.clone();
    let me = std::process::id();
    let mut state = FleetState {
        phase: Phase::Starting,
        message: "starting etcd".into(),
        daemon: ProcessRecord::of("fleet-daemon", me, dir.join("fleet.log")),
        started_at_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        hub_kubeconfig: dir.join("hub.kubeconfig"),
        etcd: None,
        clusters: Vec::new(),
        machines: Vec::new(),
        hub_metrics_addr: None,
        hub_proxy_addr: None,
    };
    write_state(&dir, &state)?;

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;

    let start = start_fleet(&args, &mut state);
    let started = tokio::select! {
        r = start => r,
        _ = sigterm.recv() => Err(anyhow::anyhow!("stopped by SIGTERM while starting")),
        _ = sigint.recv() => Err(anyhow::anyhow!("stopped by SIGINT while starting")),
        _ = owner_gone() => Err(anyhow::anyhow!("stopped while starting: its owner process is gone")),
    };
    let (mut etcd, mut hub, mut processes, bridge) = match started {
        Ok(parts) => parts,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "fleet failed to start");
            // The processes `start_fleet` started are gone with it; what the
            // node agents started outlives them.
            for m in &state.machines {
                flotilla_node_agent::kill_recorded(&m.state_dir);
                flotilla_node_agent::remove_real_nodes(&m.state_dir);
            }
            state.phase = Phase::Failed;
            state.message = format!("{e:#}");
            write_state(&dir, &state)?;
            return Err(e);
        }
    };
    state.phase = Phase::Ready;
    state.message = "ready".into();
    write_state(&dir, &state)?;
    tracing::info!(members = args.clusters, "fleet ready");

    let stop = async {
        tokio::select! {
            _ = sigterm.recv() => {},
            _ = sigint.recv() => {},
            _ = owner_gone() => {},
        }
    };
    let owned = supervise::Owned { etcd: &mut etcd, hub: &mut hub, processes: &mut processes };
    supervise::run(&dir, &mut state, owned, stop).await?;
    tracing::info!("stopping the fleet");
    state.phase = Phase::Stopping;
    state.message = "stopping".into();
    write_state(&dir, &state)?;
    // `hub run` first, so no operator reacts to what stops next; then the
    // node agents, and the components they started (which outlive their
    // agent by design).
    for p in processes.iter_mut() {
        p.stop(Duration::from_secs(5));
    }
    for m in &state.machines {
        flotilla_node_agent::kill_recorded(&m.state_dir);
        flotilla_node_agent::remove_real_nodes(&m.state_dir);
    }
    // The machines' address goes last: the real nodes are gone.
    drop(bridge);
    hub.shutdown(Duration::from_secs(5));
    etcd.process_mut().stop(Duration::from_secs(5));
    Ok(())
}

/// Waits until every member's ManagedCluster is Available on the hub.
async fn wait_members_available(
    hub: &kube::Client,
    members: &[String],
    processes: &mut [ManagedProcess],
) -> anyhow::Result<()> {
    let api: Api<flotilla_api::ManagedCluster> = Api::all(hub.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for p in processes.iter_mut() {
            p.check_running()?;
        }
        let mut missing = Vec::new();
        for name in members {
            let available = api
                .get_opt(name)
                .await
                .ok()
                .flatten()
                .and_then(|mc| mc.condition("Available").map(|c| c.status == "True"))
                .unwrap_or(false);
            if !available {
                missing.push(name.clone());
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("members not Available on the hub after 60s: {}", missing.join(", "));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What `start_fleet` leaves running; the bridge (with real nodes) holds
/// the machines' address.
type Started = (Etcd, Cluster, Vec<ManagedProcess>, Option<RealNodes>);

async fn start_fleet(args: &DaemonArgs, state: &mut FleetState) -> anyhow::Result<Started> {
    let dir = &args.state_dir;
    let binaries = Binaries::in_dir(&args.k8s_bin)?;
    // Real nodes reach the members' API servers from their own network
    // namespaces, so the machines serve on the host side of a real-node
    // bridge instead of loopback.
    let bridge = if args.real_nodes > 0 {
        let images = NodeImages::locate().context(
            "real nodes need the local images, containerd, runc and the CNI plugins: run scripts/node-runtime.sh",
        )?;
        Some(RealNodes::reserve_with(binaries.clone(), images).context(
            "reserving a real-node bridge (real nodes need root and scripts/node-runtime.sh's runtime)",
        )?)
    } else {
        None
    };
    let address = bridge.as_ref().map_or_else(|| "127.0.0.1".to_string(), |b| b.gateway().to_string());
    let etcd = Etcd::start(&binaries, dir).await.context("starting etcd")?;
    let etcd_proc = etcd.process();
    state.etcd =
        Some(ProcessRecord::of("etcd", etcd_proc.pid().unwrap_or(0), etcd_proc.log_path().to_path_buf()));
    state.message = "starting the hub".into();
    write_state(dir, state)?;

    // The aggregation layer, for the cluster proxy (`flotilla get pods --cluster`).
    let proxy_ip = super::proxy::advertise_address(
        bridge.as_ref().map(|b| b.gateway()),
        &super::proxy::interface_addresses(),
    );
    let mut hub_config = ClusterConfig::hub("hub").in_dir(dir.join("hub")).with_etcd(etcd.client_url());
    if proxy_ip.is_some() {
        hub_config = hub_config.with_aggregation();
    }
    hub_config.binaries = Some(binaries.clone());
    let hub = Cluster::start(hub_config).await.context("starting the hub")?;
    std::fs::copy(hub.kubeconfig_path(), &state.hub_kubeconfig)?;
    state.clusters.push(record(&hub, "hub", state.hub_kubeconfig.clone(), 0));

    // Fleet membership and Kube-on-Kube: the hub's controllers and
    // operators (`hub run`), and a node agent per machine.
    state.message = "starting the hub's operators and node agents".into();
    write_state(dir, state)?;
    let hub_client = hub.client();
    flotilla_hub::install(&hub_client).await.context("installing Flotilla on the hub")?;
    let exe = std::env::current_exe()?;
    let log_dir = dir.join("hub").join("logs");
    // The policy admission webhook, reached by the hub's API server on loopback.
    let webhook_port = flotilla_localkube::ports::free_port()?;
    let (kok_ports, etcd_ports) = member_port_ranges(args.clusters, args.nodes, args.machines)?;
    // Fixed for the daemon's life: a restarted `hub run` serves on the same
    // address, which `status` shows.
    let metrics_addr = std::net::SocketAddr::from(([127, 0, 0, 1], flotilla_localkube::ports::free_port()?));
    state.hub_metrics_addr = Some(metrics_addr);
    let proxy_args = match proxy_ip {
        Some(ip) => {
            let addr = std::net::SocketAddr::from((ip, flotilla_localkube::ports::free_port()?));
            state.hub_proxy_addr = Some(addr);
            vec!["--proxy-listen".to_string(), addr.to_string(), "--proxy-advertise".into(), ip.to_string()]
        }
        None => {
            tracing::warn!(
                "this host has no network address other than loopback: the hub serves no cluster proxy \
                 (`flotilla get pods/logs/exec --cluster` will not work)"
            );
            Vec::new()
        }
    };
    let hub_run = ManagedProcess::spawn(
        ProcessSpec::new("flotilla-hub", exe.clone(), log_dir.join("flotilla-hub.log"))
            .args(["hub", "run", "--auto-accept", "--kubeconfig"])
            .arg(state.hub_kubeconfig.display().to_string())
            .arg("--webhook-listen")
            .arg(format!("127.0.0.1:{webhook_port}"))
            .arg("--webhook-url")
            .arg(format!("https://127.0.0.1:{webhook_port}"))
            // One replica, restarted only once it has exited (`supervise`):
            // the restarted process takes the lease back at once.
            .arg("--identity")
            .arg("flotilla-up")
            .args(hosted_versions(&args.k8s_bin))
            .arg("--etcd-bin-dir")
            .arg(args.k8s_bin.display().to_string())
            .arg("--kok-port-range")
            .arg(kok_ports)
            .arg("--etcd-port-range")
            .arg(etcd_ports)
            .arg("--metrics-addr")
            .arg(metrics_addr.to_string())
            .args(proxy_args)
            .env("FLOTILLA_LOG", "info"),
    )?;
    state.clusters[0].processes.push(ProcessRecord::of(
        "flotilla-hub",
        hub_run.pid().unwrap_or(0),
        hub_run.log_path().to_path_buf(),
    ));
    let machines: Api<Machine> = Api::all(hub_client.clone());
    let mut processes = vec![hub_run];
    for i in 1..=args.machines {
        let name = format!("machine-{i}");
        let machine =
            Machine::new(&name, MachineSpec { address: Some(address.clone()), ..Default::default() });
        machines
            .create(&PostParams::default(), &machine)
            .await
            .with_context(|| format!("registering {name}"))?;
        let state_dir = dir.join("machines").join(&name);
        let agent = ManagedProcess::spawn(
            ProcessSpec::new(format!("node-agent-{name}"), exe.clone(), state_dir.join("node-agent.log"))
                .args(["node-agent", "--machine", &name, "--kubeconfig"])
                .arg(state.hub_kubeconfig.display().to_string())
                .arg("--state-dir")
                .arg(state_dir.display().to_string())
                .env("FLOTILLA_LOG", "info"),
        )?;
        state.machines.push(MachineRecord {
            name,
            agent: ProcessRecord::of("node-agent", agent.pid().unwrap_or(0), agent.log_path().to_path_buf()),
            state_dir,
            components: Vec::new(),
        });
        processes.push(agent);
    }
    write_state(dir, state)?;

    // The members: hosted clusters whose control planes and hollow nodes
    // the node agents run, all storing their data in one EtcdCluster under
    // a prefix each.
    let etcd_spec = EtcdClusterSpec { members: 1, version: FLEET_ETCD_VERSION.into(), ..Default::default() };
    let mut fleet_etcd = EtcdCluster::new(FLEET_ETCD, etcd_spec);
    fleet_etcd.metadata.namespace = Some(MEMBER_NAMESPACE.into());
    Api::<EtcdCluster>::namespaced(hub_client.clone(), MEMBER_NAMESPACE)
        .create(&PostParams::default(), &fleet_etcd)
        .await
        .context("creating the members' EtcdCluster")?;
    let hosted: Api<HostedCluster> = Api::namespaced(hub_client.clone(), MEMBER_NAMESPACE);
    let names: Vec<String> = (1..=args.clusters).map(|i| format!("member-{i}")).collect();
    for name in &names {
        hosted
            .create(&PostParams::default(), &member_cluster(name, args.nodes))
            .await
            .with_context(|| format!("creating {name}"))?;
    }
    wait_members_ready(&hub_client, &names, &mut processes, state, dir).await?;
    if args.real_nodes > 0 {
        create_node_pools(&hub_client, &names, args.real_nodes).await?;
        wait_node_pools(&hub_client, &names, args.real_nodes, &mut processes, state, dir).await?;
    }

    let secrets: Api<Secret> = Api::namespaced(hub_client.clone(), MEMBER_NAMESPACE);
    let (by_cluster, by_machine) = hosted_processes(&hub_client, &state.machines, &names).await?;
    for name in &names {
        let secret = secrets
            .get(&admin_secret_name(name))
            .await
            .with_context(|| format!("reading {name}'s admin kubeconfig"))?;
        let kubeconfig = secret
            .data
            .and_then(|d| d.get("kubeconfig").cloned())
            .with_context(|| format!("{name}'s admin Secret has no kubeconfig"))?;
        let path = dir.join("clusters").join(format!("{name}.kubeconfig"));
        std::fs::create_dir_all(dir.join("clusters"))?;
        std::fs::write(&path, &kubeconfig.0)?;
        let server = hosted.get(name).await?.status.and_then(|s| s.endpoint).unwrap_or_default();
        state.clusters.push(ClusterRecord {
            name: name.clone(),
            role: "member".into(),
            server,
            kubeconfig: path,
            nodes: args.nodes,
            processes: by_cluster.get(name).cloned().unwrap_or_default(),
        });
    }
    for m in &mut state.machines {
        m.components = by_machine.get(&m.name).cloned().unwrap_or_default();
    }
    state.message = "waiting for the members to be Available on the hub".into();
    write_state(dir, state)?;
    wait_members_available(&hub_client, &names, &mut processes).await?;
    if state.hub_proxy_addr.is_some() {
        state.message = "waiting for the hub's cluster proxy".into();
        write_state(dir, state)?;
        // So that `flotilla get pods --cluster member-1` works as soon as `up` returns.
        let api_service = flotilla_fleet_core::cluster_proxy::API_SERVICE;
        flotilla_localkube::api_service::wait_available(&hub_client, api_service, Duration::from_secs(60))
            .await
            .context("the hub's cluster proxy did not come up")?;
    }
    Ok((etcd, hub, processes, bridge))
}

/// The NodePool of each member's real nodes.
pub const REAL_NODE_POOL: &str = "nodes";

async fn create_node_pools(hub: &kube::Client, names: &[String], nodes: u32) -> anyhow::Result<()> {
    let pools: Api<NodePool> = Api::namespaced(hub.clone(), MEMBER_NAMESPACE);
    for name in names {
        let spec = NodePoolSpec {
            cluster_ref: name.clone(),
            replicas: i32::try_from(nodes).unwrap_or(i32::MAX),
            ..Default::default()
        };
        let mut pool = NodePool::new(REAL_NODE_POOL, spec);
        // One pool name per member cluster, so one object per namespace
        // would clash: the pool is named after its cluster.
        pool.metadata.name = Some(format!("{name}-{REAL_NODE_POOL}"));
        pools
            .create(&PostParams::default(), &pool)
            .await
            .with_context(|| format!("creating {name}'s NodePool"))?;
    }
    Ok(())
}

/// Waits until every member's NodePool has its real nodes Ready.
async fn wait_node_pools(
    hub: &kube::Client,
    names: &[String],
    nodes: u32,
    processes: &mut [ManagedProcess],
    state: &mut FleetState,
    dir: &Path,
) -> anyhow::Result<()> {
    let pools: Api<NodePool> = Api::namespaced(hub.clone(), MEMBER_NAMESPACE);
    let wanted = i32::try_from(nodes).unwrap_or(i32::MAX);
    wait_showing(processes, state, dir, || async {
        let mut waiting = Vec::new();
        for name in names {
            let pool = pools.get_opt(&format!("{name}-{REAL_NODE_POOL}")).await.ok().flatten();
            let ready = pool.as_ref().and_then(|p| p.status.as_ref()).map_or(0, |s| s.ready_nodes);
            if ready < wanted {
                waiting.push(format!("{name} ({ready} of {nodes} real nodes Ready)"));
            }
        }
        waiting
    })
    .await
}

/// The EtcdCluster every member stores its data in, under its own prefix.
const FLEET_ETCD: &str = "fleet-etcd";
const FLEET_ETCD_VERSION: &str = "3.7.4";

/// A member of `up`: a hosted cluster with `nodes` hollow nodes and the
/// default add-ons, on the fleet's shared etcd.
fn member_cluster(name: &str, nodes: u32) -> HostedCluster {
    HostedClusterRequest {
        namespace: MEMBER_NAMESPACE.into(),
        name: name.into(),
        version: crate::kokctl::DEFAULT_VERSION.into(),
        etcd_members: 1,
        etcd_version: FLEET_ETCD_VERSION.into(),
        runtime: Runtime::Process,
        replicas: 1,
        nodes: i32::try_from(nodes).unwrap_or(i32::MAX),
        addons: true,
        machine_pool: None,
        node_pool: None,
    }
    .hosted_cluster_sharing(SharedEtcd {
        cluster_ref: FLEET_ETCD.into(),
        prefix: format!("/clusters/{name}"),
    })
}

/// Loopback port ranges for the members' components and the etcd members
/// that are free now, away from other fleets on this host (`--kok-port-range`,
/// `--etcd-port-range` of `hub run`).
fn member_port_ranges(clusters: u32, nodes: u32, machines: u32) -> anyhow::Result<(String, String)> {
    let (kok, etcd) = port_counts(clusters, nodes, machines);
    let total = kok + etcd;
    let free =
        |first: u16| (first..first + total).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok());
    // Start at a place of our own, so fleets started together try different ranges.
    let slots = (32000 - 20000) / u32::from(total);
    let offset = std::process::id() % slots.max(1);
    for i in 0..slots {
        let first = 20000 + ((offset + i) % slots) * u32::from(total);
        let first = u16::try_from(first).unwrap_or(20000);
        if free(first) {
            return Ok((
                format!("{first}-{}", first + kok - 1),
                format!("{}-{}", first + kok, first + total - 1),
            ));
        }
    }
    bail!("no {total} free loopback ports between 20000 and 32000 for the members")
}

/// How many ports the members' components and the etcd members need.
/// Every machine has the same address, so they share both ranges.
fn port_counts(clusters: u32, nodes: u32, machines: u32) -> (u16, u16) {
    // Three ports per control-plane instance, two per kubelet, with room.
    let kok = u16::try_from(clusters * (10 + 2 * nodes) + 20).unwrap_or(u16::MAX);
    // Two per etcd member: the members' one, and room for two clusters
    // created with a member on every machine.
    let etcd = u16::try_from(10 + 4 * machines).unwrap_or(u16::MAX);
    (kok, etcd)
}

/// Waits until `pending` names nothing left to wait for, checking the
/// fleet's processes and showing what it waits for in the state's message.
async fn wait_showing<F, Fut>(
    processes: &mut [ManagedProcess],
    state: &mut FleetState,
    dir: &Path,
    mut pending: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Vec<String>>,
{
    loop {
        for p in processes.iter_mut() {
            p.check_running()?;
        }
        let waiting = pending().await;
        if waiting.is_empty() {
            return Ok(());
        }
        let message = format!("waiting for {}", waiting.join("; "));
        if message != state.message {
            state.message = message;
            write_state(dir, state)?;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Waits until every member's HostedCluster is Ready, showing their phases.
async fn wait_members_ready(
    hub: &kube::Client,
    names: &[String],
    processes: &mut [ManagedProcess],
    state: &mut FleetState,
    dir: &Path,
) -> anyhow::Result<()> {
    let api: Api<HostedCluster> = Api::namespaced(hub.clone(), MEMBER_NAMESPACE);
    wait_showing(processes, state, dir, || async {
        let mut waiting = Vec::new();
        for name in names {
            let hc = api.get_opt(name).await.ok().flatten();
            let status = hc.and_then(|h| h.status).unwrap_or_default();
            if status.phase != Some(HostedClusterPhase::Ready) {
                let pending: Vec<&str> = status
                    .conditions
                    .iter()
                    .filter(|c| c.status != "True")
                    .map(|c| c.type_.as_str())
                    .collect();
                waiting.push(format!(
                    "{name} ({})",
                    if pending.is_empty() { "starting".to_string() } else { pending.join(", ") }
                ));
            }
        }
        waiting
    })
    .await
}

fn record(cluster: &Cluster, role: &str, kubeconfig: PathBuf, nodes: u32) -> ClusterRecord {
    let ClusterInfo { name, server, processes, .. } = cluster.info();
    ClusterRecord {
        name,
        role: role.into(),
        server,
        kubeconfig,
        nodes,
        processes: processes
            .into_iter()
            .filter_map(|p| p.pid.map(|pid| ProcessRecord::of(&p.name, pid, p.log)))
            .collect(),
    }
}

/// How the hub's hosted operator finds Kubernetes releases: the binary
/// cache `k8s_bin` is a release of (`ROOT/vX.Y.Z/bin`), so releases built
/// later (`flotilla k8s-binaries 1.36.3`) are usable without a restart;
/// a directory outside a cache is the default version alone.
fn hosted_versions(k8s_bin: &Path) -> Vec<String> {
    let release = k8s_bin
        .parent()
        .filter(|_| k8s_bin.file_name().is_some_and(|n| n == "bin"))
        .and_then(|release| Some((release.file_name()?.to_str()?, release.parent()?)));
    match release {
        Some((name, root)) if flotilla_kok_core::catalog::release_version(name).is_some() => {
            vec!["--kok-version-cache".into(), root.display().to_string()]
        }
        _ => {
            vec!["--kok-version".into(), format!("{}={}", crate::kokctl::DEFAULT_VERSION, k8s_bin.display())]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_etcd_port_range_grows_with_the_machines() {
        // (clusters, nodes, machines) -> (component ports, etcd ports)
        let table =
            [((2, 2, 2), (48, 18)), ((2, 2, 5), (48, 30)), ((0, 0, 1), (20, 14)), ((1, 0, 9), (30, 46))];
        for ((clusters, nodes, machines), want) in table {
            assert_eq!(port_counts(clusters, nodes, machines), want, "{clusters} {nodes} {machines}");
        }
    }

    #[test]
    fn a_cache_release_hands_the_cache_to_the_hub() {
        let cases = [
            ("/c/kubernetes/v1.37.2/bin", vec!["--kok-version-cache", "/c/kubernetes"]),
            ("/opt/k8s/bin", vec!["--kok-version", "1.37.2=/opt/k8s/bin"]),
            ("/c/kubernetes/v1.37.2", vec!["--kok-version", "1.37.2=/c/kubernetes/v1.37.2"]),
        ];
        for (dir, want) in cases {
            assert_eq!(hosted_versions(Path::new(dir)), want, "{dir}");
        }
    }
}
