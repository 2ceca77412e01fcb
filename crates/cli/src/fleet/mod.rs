//! The local fleet: `flotilla up`, `status`, `down`.
//!
//! `up` starts a detached daemon (`flotilla fleet-daemon`) that owns every
//! process of the fleet: its children die with it (parent-death signal), it
//! restarts them when they exit (`supervise`), and on SIGTERM it stops them
//! gracefully. The daemon records what runs, with pids, process start times
//! and restart counts, in `<state-dir>/fleet.json`; `status` and `down` read
//! that file and touch only processes whose pid *and* start time match,
//! never anything else.

pub mod daemon;
mod proxy;
pub mod state;
mod supervise;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use comfy_table::{presets::NOTHING, Table};
use flotilla_localkube::process::log_tail;
use k8s_openapi::api::core::v1::Node;
use kube::api::ListParams;
use kube::Api;

use state::refresh_hosted_processes;
pub use state::{read_state, rss_bytes, ClusterRecord, FleetState, MachineRecord, Phase, ProcessRecord};

#[derive(Args, Debug, Clone)]
pub struct StateDirArg {
    /// Where the fleet keeps kubeconfigs, logs and data.
    #[arg(long, env = "FLOTILLA_STATE_DIR", default_value_os_t = crate::paths::default_state_dir())]
    pub state_dir: PathBuf,
}

#[derive(Args, Debug)]
pub struct UpArgs {
    /// Number of member clusters (named member-1, member-2, ...).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(0..=20))]
    pub clusters: u32,
    /// Hollow nodes per member cluster (simulated kubelets: cheap, for
    /// scale; no container runs).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(0..=50))]
    pub nodes: u32,
    /// Real worker nodes per member cluster (containerd, a real kubelet and
    /// kube-proxy each, in a network namespace of its own; a NodePool per
    /// member). Needs root and scripts/node-runtime.sh.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=8))]
    pub real_nodes: u32,
    /// Machines (one node agent each) the members' components and the
    /// clusters you create run on: 3 or 5 for a 3- or 5-member etcd
    /// (`flotilla cluster create --etcd-members 3`). Each costs one node
    /// agent process.
    #[arg(long, default_value_t = DEFAULT_MACHINES, value_parser = parse_machines)]
    pub machines: u32,
    #[command(flatten)]
    pub state: StateDirArg,
    /// Give up if the fleet is not ready within this many seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
}

#[derive(Args, Debug)]
pub struct DownArgs {
    #[command(flatten)]
    pub state: StateDirArg,
    /// Keep the state directory (kubeconfigs, logs, etcd data).
    #[arg(long)]
    pub keep: bool,
}

/// Machines `up` runs unless told otherwise.
pub const DEFAULT_MACHINES: u32 = 2;
/// The most machines `up` runs: room for a 7-member etcd with spares; every
/// machine is a node agent on this one host.
pub const MAX_MACHINES: u32 = 9;

/// `--machines`: a whole number from 1 to [`MAX_MACHINES`].
pub fn parse_machines(value: &str) -> Result<u32, String> {
    let range = format!("from 1 to {MAX_MACHINES}");
    let n: u32 = value
        .trim()
        .parse()
        .map_err(|_| format!("{value:?} is not a number of machines: give a whole number {range}"))?;
    match n {
        0 => {
            Err(format!("the fleet needs at least one machine to run its members on: give a number {range}"))
        }
        n if n > MAX_MACHINES => Err(format!(
            "{n} machines is more than this host's local fleet runs (each is a node agent here): give a \
             number {range}"
        )),
        n => Ok(n),
    }
}

/// A kubectl-style table: no borders, upper-case headers.
fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(NOTHING).set_header(header.to_vec());
    t
}

fn fmt_bytes(b: u64) -> String {
    format!("{} MiB", b / (1024 * 1024))
}

// ---------------------------------------------------------------- up

pub async fn up(args: UpArgs) -> anyhow::Result<bool> {
    let dir = &args.state.state_dir;
    if let Some(state) = read_state(dir)? {
        if state.daemon.alive() {
            println!(
                "A fleet is already running from {} ({:?}); not starting another.\n",
                dir.display(),
                state.phase
            );
            return status(args.state.clone()).await;
        }
        // A fleet whose daemon is gone: its processes died with it.
        println!("Removing the state of a stopped fleet in {}", dir.display());
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }

    let k8s_bin = crate::binaries::ensure(None)?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let log_path = dir.join("fleet.log");
    let log = std::fs::File::create(&log_path)?;
    let exe = std::env::current_exe().context("finding the flotilla binary")?;
    let mut command = std::process::Command::new(exe);
    command
        .arg("fleet-daemon")
        .arg("--clusters")
        .arg(args.clusters.to_string())
        .arg("--nodes")
        .arg(args.nodes.to_string())
        .arg("--real-nodes")
        .arg(args.real_nodes.to_string())
        .arg("--machines")
        .arg(args.machines.to_string())
        .arg("--state-dir")
        .arg(dir)
        .arg("--k8s-bin")
        .arg(&k8s_bin)
        .env("FLOTILLA_LOG", std::env::var("FLOTILLA_LOG").unwrap_or_else(|_| "info".into()))
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    let started = Instant::now();
    let mut daemon = crate::detach::spawn_detached(&mut command).context("starting the fleet daemon")?;

    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.enable_steady_tick(Duration::from_millis(100));
    spinner.set_message("starting the fleet daemon");
    let deadline = started + Duration::from_secs(args.timeout);
    loop {
        if let Some(exit) = daemon.try_wait()? {
            spinner.finish_and_clear();
            bail!(
                "the fleet failed to start ({exit}). Last lines of {}:\n{}",
                log_path.display(),
                log_tail(&log_path, 25)
            );
        }
        if let Ok(Some(state)) = read_state(dir) {
            spinner.set_message(state.message.clone());
            match state.phase {
                Phase::Ready => break,
                Phase::Failed => {
                    spinner.finish_and_clear();
                    let _ = daemon.wait();
                    bail!(
                        "the fleet failed to start: {}\nLast lines of {}:\n{}",
                        state.message,
                        log_path.display(),
                        log_tail(&log_path, 25)
                    );
                }
                _ => {}
            }
        }
        if Instant::now() > deadline {
            spinner.finish_and_clear();
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(daemon.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            bail!(
                "the fleet was not ready after {}s; stopped it. Last lines of {}:\n{}",
                args.timeout,
                log_path.display(),
                log_tail(&log_path, 25)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    spinner.finish_and_clear();
    let elapsed = started.elapsed();
    let Some(state) = read_state(dir)? else { bail!("fleet state vanished") };
    let real =
        if args.real_nodes > 0 { format!(" and {} real node(s)", args.real_nodes) } else { String::new() };
    println!(
        "Fleet ready in {:.1}s: a hub and {} hosted member cluster(s) with {} hollow node(s){real} each, \
         on {} machine(s).\n",
        elapsed.as_secs_f64(),
        args.clusters,
        args.nodes,
        args.machines
    );
    println!("Kubeconfigs:");
    println!("  hub       {}", state.hub_kubeconfig.display());
    for c in state.clusters.iter().filter(|c| c.role == "member") {
        println!("  {:<9} {}", c.name, c.kubeconfig.display());
    }
    let kubectl = k8s_bin.join("kubectl");
    println!("\nTry:");
    if let Some(first) = state.clusters.iter().find(|c| c.role == "member") {
        println!(
            "  {} --kubeconfig {} create deployment web --image=nginx --replicas=3",
            kubectl.display(),
            first.kubeconfig.display()
        );
        println!(
            "  {} --kubeconfig {} get deploy,pods -o wide",
            kubectl.display(),
            first.kubeconfig.display()
        );
    }
    println!(
        "  flotilla cluster get --kubeconfig {}   # the members as hosted clusters",
        state.hub_kubeconfig.display()
    );
    if let (Some(_), Some(first)) = (state.hub_proxy_addr, state.clusters.iter().find(|c| c.role == "member"))
    {
        println!("  flotilla get pods --cluster {} -A   # a member through the hub", first.name);
    }
    println!("  flotilla status        # every cluster and process, and its health");
    println!("  flotilla down          # stop everything and remove {}", dir.display());
    Ok(true)
}
// ---------------------------------------------------------------- status

struct ApiHealth {
    ready: bool,
    nodes_ready: Option<usize>,
    detail: String,
}

async fn api_health(kubeconfig: &Path) -> ApiHealth {
    let probe = async {
        let kc = kube::config::Kubeconfig::read_from(kubeconfig)?;
        let mut config =
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default()).await?;
        config.connect_timeout = Some(Duration::from_secs(2));
        config.read_timeout = Some(Duration::from_secs(3));
        let client = kube::Client::try_from(config)?;
        let body = client.request_text(http::Request::get("/readyz").body(Vec::new())?).await?;
        let nodes = Api::<Node>::all(client).list(&ListParams::default()).await?;
        let ready = nodes.items.iter().filter(|n| flotilla_localkube::node_is_ready(n)).count();
        anyhow::Ok((body.trim() == "ok", ready))
    };
    match tokio::time::timeout(Duration::from_secs(5), probe).await {
        Ok(Ok((ready, nodes))) => ApiHealth { ready, nodes_ready: Some(nodes), detail: String::new() },
        Ok(Err(e)) => ApiHealth { ready: false, nodes_ready: None, detail: format!("{e:#}") },
        Err(_) => ApiHealth { ready: false, nodes_ready: None, detail: "no answer in 5s".into() },
    }
}

/// Where the hub's metrics are, for `status` (a fleet started before the
/// hub served metrics has none).
fn metrics_line(state: &FleetState) -> Option<String> {
    state.hub_metrics_addr.map(|addr| format!("Hub metrics: http://{addr}/metrics"))
}

/// Where the cluster proxy serves, for `status`.
fn proxy_line(state: &FleetState) -> String {
    match state.hub_proxy_addr {
        Some(addr) => format!(
            "Cluster proxy: https://{addr} (members through the hub: flotilla get pods|logs|exec --cluster NAME)"
        ),
        None => "Cluster proxy: none (this host has no address other than loopback to serve it on)".into(),
    }
}

pub async fn status(args: StateDirArg) -> anyhow::Result<bool> {
    let dir = &args.state_dir;
    let Some(state) = read_state(dir)? else {
        println!("No fleet in {}. Start one with `flotilla up`.", dir.display());
        return Ok(false);
    };
    let mut state = state;
    refresh_hosted_processes(&mut state).await;
    let daemon_alive = state.daemon.alive();
    let mut healthy = daemon_alive && state.phase == Phase::Ready;
    println!(
        "Fleet in {}: {:?}{} (daemon pid {} {})",
        dir.display(),
        state.phase,
        if state.phase == Phase::Failed { format!(": {}", state.message) } else { String::new() },
        state.daemon.pid,
        if daemon_alive { "running" } else { "NOT RUNNING" }
    );

    let healths = futures::future::join_all(state.clusters.iter().map(|c| api_health(&c.kubeconfig))).await;
    let mut clusters = table(&["CLUSTER", "ROLE", "API", "NODES", "PROCESSES", "MEMORY"]);
    let mut processes = table(&["CLUSTER", "PROCESS", "PID", "STATE", "RESTARTS", "MEMORY"]);
    let mut total_rss = 0u64;
    let mut problems = Vec::new();
    if let Some(etcd) = &state.etcd {
        let alive = etcd.alive();
        let rss = if alive { rss_bytes(etcd.pid).unwrap_or(0) } else { 0 };
        total_rss += rss;
        healthy &= alive;
        processes.add_row(vec![
            "(shared)".to_string(),
            "etcd".into(),
            etcd.pid.to_string(),
            if alive { "running" } else { "DEAD" }.into(),
            etcd.restarts.to_string(),
            fmt_bytes(rss),
        ]);
    }
    for (c, h) in state.clusters.iter().zip(&healths) {
        let mut alive_count = 0;
        let mut cluster_rss = 0;
        for p in &c.processes {
            let alive = p.alive();
            let rss = if alive { rss_bytes(p.pid).unwrap_or(0) } else { 0 };
            alive_count += usize::from(alive);
            cluster_rss += rss;
            if !alive {
                problems.push(format!("{}/{} is not running; see {}", c.name, p.name, p.log.display()));
            }
            processes.add_row(vec![
                c.name.clone(),
                p.name.clone(),
                p.pid.to_string(),
                if alive { "running" } else { "DEAD" }.into(),
                p.restarts.to_string(),
                fmt_bytes(rss),
            ]);
        }
        total_rss += cluster_rss;
        let nodes = match (c.role.as_str(), h.nodes_ready) {
            ("hub", _) => "-".to_string(),
            (_, Some(n)) => format!("{n}/{}", c.nodes),
            (_, None) => format!("?/{}", c.nodes),
        };
        let nodes_ok = c.role == "hub" || h.nodes_ready == Some(c.nodes as usize);
        if !h.ready {
            problems.push(format!("{}: API not ready: {}", c.name, h.detail));
        }
        healthy &= h.ready && nodes_ok && alive_count == c.processes.len();
        clusters.add_row([
            c.name.as_str(),
            c.role.as_str(),
            if h.ready { "ready" } else { "NOT READY" },
            &nodes,
            &format!("{alive_count}/{}", c.processes.len()),
            &fmt_bytes(cluster_rss),
        ]);
    }
    for m in &state.machines {
        for (name, p) in
            std::iter::once(("node-agent", &m.agent)).chain(m.components.iter().map(|c| (c.name.as_str(), c)))
        {
            let alive = p.alive();
            let rss = if alive { rss_bytes(p.pid).unwrap_or(0) } else { 0 };
            total_rss += rss;
            healthy &= alive;
            if !alive {
                problems.push(format!("{}/{name} is not running; see {}", m.name, p.log.display()));
            }
            processes.add_row(vec![
                format!("({})", m.name),
                name.to_string(),
                p.pid.to_string(),
                if alive { "running" } else { "DEAD" }.into(),
                p.restarts.to_string(),
                fmt_bytes(rss),
            ]);
        }
    }
    let daemon_rss = if daemon_alive { rss_bytes(state.daemon.pid).unwrap_or(0) } else { 0 };
    total_rss += daemon_rss;
    println!("{clusters}\n{processes}");
    println!(
        "Total resident memory: {} (including the fleet daemon, {}). Logs: {}/**/logs/",
        fmt_bytes(total_rss),
        fmt_bytes(daemon_rss),
        dir.display()
    );
    if let Some(line) = metrics_line(&state) {
        println!("{line}");
    }
    println!("{}", proxy_line(&state));
    for p in &problems {
        println!("problem: {p}");
    }
    println!("{}", if healthy { "Fleet healthy." } else { "Fleet NOT healthy." });
    Ok(healthy)
}

// ---------------------------------------------------------------- down

pub async fn down(args: DownArgs) -> anyhow::Result<bool> {
    let dir = &args.state.state_dir;
    let Some(state) = read_state(dir)? else {
        println!("No fleet in {}; nothing to stop.", dir.display());
        return Ok(true);
    };
    if state.daemon.alive() {
        println!("Stopping the fleet (daemon pid {})...", state.daemon.pid);
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(state.daemon.pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        while state.daemon.alive() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if state.daemon.alive() {
            // Its children die with it (parent-death signal).
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(state.daemon.pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    // What the node agents started outlives them (a daemon that was
    // killed could not stop it): each agent's own record says what it is.
    for m in &state.machines {
        flotilla_node_agent::kill_recorded(&m.state_dir);
        flotilla_node_agent::remove_real_nodes(&m.state_dir);
    }
    // Anything the fleet started that is somehow still alive: only processes
    // whose pid and start time both match the record.
    let recorded: Vec<&ProcessRecord> = state
        .etcd
        .iter()
        .chain(state.clusters.iter().flat_map(|c| c.processes.iter()))
        .chain(state.machines.iter().flat_map(|m| std::iter::once(&m.agent).chain(m.components.iter())))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let alive: Vec<&&ProcessRecord> = recorded.iter().filter(|p| p.alive()).collect();
        if alive.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            for p in &alive {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p.pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if args.keep {
        println!("Fleet stopped; state kept in {}.", dir.display());
    } else {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
        println!("Fleet stopped and {} removed.", dir.display());
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn machines_are_a_whole_number_from_one_to_the_most() {
        // (value, Ok(machines) or a piece of the error)
        let table: [(&str, Result<u32, &str>); 8] = [
            ("1", Ok(1)),
            ("3", Ok(3)),
            ("5", Ok(5)),
            (" 9 ", Ok(9)),
            ("0", Err("at least one machine")),
            ("10", Err("10 machines is more than")),
            ("-1", Err("is not a number of machines")),
            ("three", Err("is not a number of machines")),
        ];
        for (value, want) in table {
            match (parse_machines(value), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{value}"),
                (Err(got), Err(want)) => {
                    assert!(got.contains(want), "{value}: {got}");
                    assert!(got.contains("from 1 to 9"), "{value}: {got}");
                }
                (got, want) => panic!("{value}: got {got:?}, want {want:?}"),
            }
        }
    }

    /// `up`'s flags as the binary parses them.
    #[derive(Parser)]
    struct Up {
        #[command(flatten)]
        up: UpArgs,
    }

    #[test]
    fn up_takes_machines_and_defaults_to_two() {
        let parse = |args: &[&str]| Up::try_parse_from(std::iter::once("up").chain(args.iter().copied()));
        assert_eq!(parse(&[]).map(|u| u.up.machines).ok(), Some(DEFAULT_MACHINES));
        assert_eq!(parse(&["--machines", "5"]).map(|u| u.up.machines).ok(), Some(5));
        let Err(refused) = parse(&["--machines", "0"]) else { panic!("0 machines accepted") };
        assert!(refused.to_string().contains("at least one machine"), "{refused}");
    }

    #[test]
    fn status_says_where_the_hub_metrics_are_and_old_state_files_still_read() {
        let old = serde_json::json!({
            "phase": "Ready", "message": "", "started_at_unix": 0, "hub_kubeconfig": "hub.kubeconfig",
            "etcd": null, "clusters": [],
            "daemon": {"name": "fleet-daemon", "pid": 1, "start_time": 0, "log": "fleet.log"}
        });
        let mut state: FleetState = match serde_json::from_value(old.clone()) {
            Ok(s) => s,
            Err(e) => panic!("{e}: {old}"),
        };
        assert_eq!(metrics_line(&state), None, "a fleet from before metrics");
        state.hub_metrics_addr = Some(([127, 0, 0, 1], 9464).into());
        assert_eq!(metrics_line(&state).as_deref(), Some("Hub metrics: http://127.0.0.1:9464/metrics"));
        let back: FleetState = serde_json::from_value(serde_json::to_value(&state).unwrap()).unwrap();
        assert_eq!(back.hub_metrics_addr, state.hub_metrics_addr);
        assert!(proxy_line(&state).starts_with("Cluster proxy: none"), "a fleet from before the proxy");
        state.hub_proxy_addr = Some(([192, 0, 2, 2], 9444).into());
        assert!(proxy_line(&state).starts_with("Cluster proxy: https://192.0.2.2:9444 "));
    }
}
