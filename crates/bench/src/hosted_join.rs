//! `flotilla-bench hosted-join`: seconds from a HostedCluster turning Ready
//! to its ManagedCluster being an Available member of the fleet, with the
//! steps between (registered, first heartbeat, health reported).
//!
//! Everything is real and out of process, as in `flotilla-bench kok`: a hub
//! API server, `flotilla hub run` (the hub's controllers, push mode and the
//! operators) and two `flotilla node-agent`s; each run creates a hosted
//! cluster with its own etcd, waits, and deletes it before the next.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use flotilla_api::cluster::{conditions as mc_conditions, ManagedCluster};
use flotilla_api::kok::HostedClusterPhase;
use flotilla_fleet_core::membership::LEASE_NAME;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;

use crate::kok::env::{Env, POLL, VERSION};
use crate::kok::report::{goal_verdict, percentile, secs, table, Row};

#[derive(Args, Debug)]
pub struct HostedJoinArgs {
    /// Hosted clusters created one after another (each deleted before the next).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Hollow nodes per hosted cluster.
    #[arg(long, default_value_t = 1)]
    pub nodes: i32,
    /// Keep logs and node-agent state in this directory (default: a
    /// temporary directory, removed on exit).
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
}

/// When each step of one join was first seen, from the HostedCluster's Ready.
#[derive(Debug, Default, Clone, Copy)]
struct Join {
    ready: Option<Instant>,
    registered: Option<Instant>,
    heartbeat: Option<Instant>,
    health_reported: Option<Instant>,
    available: Option<Instant>,
}

impl Join {
    fn after_ready(&self, at: Option<Instant>) -> String {
        match (self.ready, at) {
            (Some(r), Some(a)) => {
                // A step seen before Ready (the lease, say) reads as 0.
                secs(a.saturating_duration_since(r))
            }
            _ => "-".into(),
        }
    }
}

pub async fn hosted_join(args: HostedJoinArgs) -> anyhow::Result<bool> {
    let bin_dir = flotilla_cli::binaries::ensure(None)?;
    println!(
        "hosted-join: hub API server, `flotilla hub run` and 2 `flotilla node-agent`s as child processes; \
         process runtime, Kubernetes {VERSION}, 1-member etcd, {} hollow node(s); {} cluster(s) one after \
         another, the hub and the cluster polled every {} ms",
        args.nodes,
        args.runs,
        POLL.as_millis()
    );
    let mut env =
        Env::start_logging(args.work_dir.as_deref(), &bin_dir, "warn,flotilla_kok=info,flotilla_hub=info")
            .await?;
    println!("  logs and state: {}", env.dir.display());
    println!(
        "\n  {:<8} {:>8} {:>11} {:>11} {:>15} {:>11}",
        "cluster", "Ready", "registered", "heartbeat", "health report", "Available"
    );
    let mut figures = Vec::new();
    for i in 0..args.runs {
        let name = format!("join-{i}");
        let started = Instant::now();
        env.create_dedicated(&name, args.nodes, 1, VERSION).await?;
        let join = watch_join(&mut env, &name, Duration::from_secs(300)).await?;
        println!(
            "  {:<8} {:>8} {:>11} {:>11} {:>15} {:>11}",
            name,
            join.ready.map(|r| secs(r - started)).unwrap_or_default(),
            join.after_ready(join.registered),
            join.after_ready(join.heartbeat),
            join.after_ready(join.health_reported),
            join.after_ready(join.available),
        );
        if let (Some(r), Some(a)) = (join.ready, join.available) {
            figures.push(a.saturating_duration_since(r));
        }
        env.delete_all().await?;
        // The ManagedCluster goes with its namespace; the next run must not
        // see the last one's.
        let fleet: Api<ManagedCluster> = Api::all(env.client.clone());
        crate::kok::env::wait_until("the ManagedCluster to be gone", Duration::from_secs(120), || {
            let (fleet, name) = (fleet.clone(), name.clone());
            async move { fleet.get_opt(&name).await.is_ok_and(|m| m.is_none()) }
        })
        .await?;
    }
    figures.sort();
    let (p50, max) = (percentile(&figures, 0.5), figures.last().copied().unwrap_or_default());
    let rows = vec![
        Row::new(
            format!("HostedCluster Ready -> ManagedCluster Available, p50 of {}", figures.len()),
            secs(p50),
            "< 3 s",
            goal_verdict(p50 < Duration::from_secs(3)),
        ),
        Row::new(
            format!("HostedCluster Ready -> ManagedCluster Available, max of {}", figures.len()),
            secs(max),
            "< 3 s",
            goal_verdict(max < Duration::from_secs(3)),
        ),
    ];
    println!("\n{}", table(&rows));
    Ok(true)
}

/// Polls the HostedCluster, its ManagedCluster and heartbeat Lease until the
/// ManagedCluster is Available, noting when each step was first seen.
async fn watch_join(env: &mut Env, name: &str, timeout: Duration) -> anyhow::Result<Join> {
    let clusters = env.clusters();
    let fleet: Api<ManagedCluster> = Api::all(env.client.clone());
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), &ManagedCluster::hub_namespace(name));
    let deadline = Instant::now() + timeout;
    let mut join = Join::default();
    loop {
        let now = Instant::now();
        if join.ready.is_none() {
            let hc = clusters.get_opt(name).await?;
            if hc.and_then(|h| h.status).and_then(|s| s.phase) == Some(HostedClusterPhase::Ready) {
                join.ready = Some(now);
            }
        }
        if let Some(mc) = fleet.get_opt(name).await? {
            join.registered.get_or_insert(now);
            if join.health_reported.is_none() && mc.condition(mc_conditions::MEMBER_HEALTHY).is_some() {
                join.health_reported = Some(now);
            }
            if mc.condition(mc_conditions::AVAILABLE).is_some_and(|c| c.status == "True") {
                join.available.get_or_insert(now);
            }
        }
        if join.heartbeat.is_none() && join.registered.is_some() {
            let renewed = leases
                .get_opt(LEASE_NAME)
                .await
                .ok()
                .flatten()
                .and_then(|l| l.spec)
                .is_some_and(|s| s.renew_time.is_some());
            if renewed {
                join.heartbeat = Some(now);
            }
        }
        if join.ready.is_some() && join.available.is_some() {
            return Ok(join);
        }
        env.check_running()?;
        if Instant::now() > deadline {
            anyhow::bail!(
                "{name}: not Ready and Available within {}s (seen: {join:?}); logs in {}",
                timeout.as_secs(),
                env.dir.display()
            );
        }
        tokio::time::sleep(POLL).await;
    }
}
