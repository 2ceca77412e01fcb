//! `flotilla-bench membership`: join -> Available latency, failure detection, agent memory, and the hub with many simulated agents.

use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use flotilla_localkube::{Binaries, Cluster, ClusterConfig};

use crate::measure::{cpu_seconds, percentile};
use crate::simulated_agent::simulated_agent;

#[derive(Args, Debug)]
pub struct MembershipArgs {
    /// Joins to time (each a new cluster identity registering with the hub).
    #[arg(long, default_value_t = 20)]
    pub joins: usize,
    /// Simulated agents for the scale run (0 skips it). Each has its own
    /// certificate identity, renews its own Lease and writes its status.
    #[arg(long, default_value_t = 0)]
    pub scale: usize,
    /// The simulated agents renew their Lease every quarter of this many
    /// seconds (real agents: 10, i.e. every 2.5 s). The hub's limit stays at
    /// the clusters' leaseDurationSeconds (10) + grace (10).
    #[arg(long, default_value_t = 10)]
    pub scale_lease_seconds: i32,
}

async fn wait_available(
    api: &kube::Api<flotilla_api::ManagedCluster>,
    name: &str,
    want: &str,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(Some(mc)) = api.get_opt(name).await {
            if mc.condition("Available").is_some_and(|c| c.status == want) {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("{name} did not become Available={want} within 120s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn membership(args: MembershipArgs) -> anyhow::Result<bool> {
    let bin_dir = flotilla_cli::binaries::ensure(None)?;
    let binaries = Binaries::in_dir(&bin_dir)?;
    let mut hub_config = ClusterConfig::hub("bench-hub");
    hub_config.binaries = Some(binaries.clone());
    let mut member_config = ClusterConfig::new("bench-member").with_nodes(1);
    member_config.binaries = Some(binaries.clone());
    let (hub, member) = tokio::join!(Cluster::start(hub_config), Cluster::start(member_config));
    let (hub, member) = (hub?, member?);
    flotilla_hub::install(&hub.client()).await?;
    let tmp = tempfile::tempdir()?;
    // The hub controller as its own process, so its memory and CPU are its own.
    let mut controller = flotilla_localkube::ManagedProcess::spawn(
        flotilla_localkube::ProcessSpec::new(
            "flotilla-hub",
            crate::flotilla_binary::path()?,
            tmp.path().join("hub.log"),
        )
        .args(["hub", "run", "--auto-accept", "--kubeconfig"])
        .arg(hub.kubeconfig_path().display().to_string()),
    )?;
    let (_, bootstrap) = flotilla_cli::fleetctl::create_token(
        &hub.client(),
        hub.kubeconfig_path(),
        1,
        Some(tmp.path().join("bootstrap.kubeconfig")),
    )
    .await?;
    let clusters: kube::Api<flotilla_api::ManagedCluster> = kube::Api::all(hub.client());

    println!(
        "registration: agent start -> Available on the hub, {} joins against a real member API server",
        args.joins
    );
    let mut samples = Vec::new();
    let mut agents = Vec::new();
    for i in 0..args.joins {
        let name = format!("join-{i}");
        let mut config = flotilla_agent::AgentConfig::new(
            name.clone(),
            tmp.path().join("agents").join(&name),
            member.kubeconfig_path().to_path_buf(),
        );
        config.bootstrap_kubeconfig = Some(bootstrap.clone());
        let started = Instant::now();
        agents.push(tokio::spawn(flotilla_agent::run(config, std::future::pending())));
        wait_available(&clusters, &name, "True").await?;
        samples.push(started.elapsed());
        controller.check_running()?;
    }
    samples.sort();
    println!(
        "  p50 {:.0} ms  p99 {:.0} ms  max {:.0} ms",
        percentile(&samples, 0.5).as_secs_f64() * 1000.0,
        percentile(&samples, 0.99).as_secs_f64() * 1000.0,
        samples[samples.len() - 1].as_secs_f64() * 1000.0
    );

    println!("failure detection: agent killed -> Unknown (lease 10s, grace 10s)");
    if let Some(first) = agents.first() {
        first.abort();
        let started = Instant::now();
        wait_available(&clusters, "join-0", "Unknown").await?;
        println!("  {:.1} s", started.elapsed().as_secs_f64());
    }

    println!("agent resident memory, idle (a real `flotilla agent` process)");
    let mut agent_process = flotilla_localkube::ManagedProcess::spawn(
        flotilla_localkube::ProcessSpec::new(
            "agent",
            crate::flotilla_binary::path()?,
            tmp.path().join("agent.log"),
        )
        .args(["agent", "--cluster", "rss-probe", "--kubeconfig"])
        .arg(member.kubeconfig_path().display().to_string())
        .arg("--hub-kubeconfig")
        .arg(bootstrap.display().to_string())
        .arg("--state-dir")
        .arg(tmp.path().join("agents/rss-probe").display().to_string()),
    )?;
    wait_available(&clusters, "rss-probe", "True").await?;
    tokio::time::sleep(Duration::from_secs(15)).await;
    agent_process.check_running()?;
    let agent_rss = agent_process.pid().and_then(flotilla_cli::fleet::rss_bytes).unwrap_or(0);
    // Heap versus mapped code: what a change in the figure comes from.
    let field = |name: &str| {
        let pid = agent_process.pid()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace().nth(1)?.parse::<u64>().ok()
    };
    println!(
        "  {:.1} MiB (anonymous {:.1} MiB, file-backed {:.1} MiB)",
        agent_rss as f64 / (1 << 20) as f64,
        field("RssAnon:").unwrap_or(0) as f64 / 1024.0,
        field("RssFile:").unwrap_or(0) as f64 / 1024.0,
    );
    drop(agent_process);

    if args.scale > 0 {
        println!(
            "hub at scale: {} simulated agents (own certificate each, Lease every {:.1}s, status written)",
            args.scale,
            args.scale_lease_seconds as f64 / 4.0
        );
        let started = Instant::now();
        let cpu_before = controller.pid().map(cpu_seconds).unwrap_or(0.0);
        let mut sims = Vec::new();
        for i in 0..args.scale {
            let name = format!("sim-{i}");
            let mut config = flotilla_agent::AgentConfig::new(
                name.clone(),
                tmp.path().join("sims").join(&name),
                member.kubeconfig_path().to_path_buf(),
            );
            config.bootstrap_kubeconfig = Some(bootstrap.clone());
            let lease = args.scale_lease_seconds;
            sims.push(tokio::spawn(async move { simulated_agent(config, lease).await }));
            // Do not stampede the CSR signer: a few hundred per second at most.
            if i % 50 == 49 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let list = clusters.list(&Default::default()).await?;
            let ready = list
                .items
                .iter()
                .filter(|mc| {
                    mc.metadata.name.as_deref().is_some_and(|n| n.starts_with("sim-"))
                        && mc.condition("Available").is_some_and(|c| c.status == "True")
                })
                .count();
            if ready == args.scale {
                break;
            }
            if Instant::now() > deadline || sims.iter().all(|s| s.is_finished()) {
                bail!("only {ready} of {} simulated clusters became Available", args.scale);
            }
            controller.check_running()?;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let all_available = started.elapsed();
        println!("  all Available after {:.1} s", all_available.as_secs_f64());
        // Steady state: heartbeats only.
        let cpu_start = controller.pid().map(cpu_seconds).unwrap_or(0.0);
        let window = Duration::from_secs(30);
        tokio::time::sleep(window).await;
        let cpu_end = controller.pid().map(cpu_seconds).unwrap_or(0.0);
        let rss = controller.pid().and_then(flotilla_cli::fleet::rss_bytes).unwrap_or(0);
        println!("  hub controller resident memory: {:.1} MiB", rss as f64 / (1 << 20) as f64);
        println!(
            "  hub controller CPU: {:.1}% of a core in steady state ({:.1} s CPU during the joins)",
            (cpu_end - cpu_start) / window.as_secs_f64() * 100.0,
            cpu_start - cpu_before
        );
        // Heartbeat processing lag: how much later than the limit a stopped
        // agent is noticed, with all the others still beating.
        if let Some(first) = sims.first() {
            first.abort();
            let started = Instant::now();
            wait_available(&clusters, "sim-0", "Unknown").await?;
            // The hub's limit is the cluster's leaseDurationSeconds (spec,
            // default 10) plus its grace (10): 20 s after the last renewal.
            println!(
                "  failure detection under load: stopped agent noticed after {:.1} s \
                 (limit 20 s after its last renewal; it renewed every {:.1} s)",
                started.elapsed().as_secs_f64(),
                args.scale_lease_seconds as f64 / 4.0
            );
        }
        for s in &sims {
            s.abort();
        }
    }
    for a in &agents {
        a.abort();
    }
    Ok(true)
}
