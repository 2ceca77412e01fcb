//! `flotilla-bench foundation`: how long a localkube cluster and `flotilla up` take to start, and the local fleet's memory.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use flotilla_localkube::{Binaries, Cluster, ClusterConfig};

use crate::measure::summary;

#[derive(Args, Debug)]
pub struct FoundationArgs {
    /// How many 1-node localkube clusters to start (one after another).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Member clusters for the `flotilla up` measurement.
    #[arg(long, default_value_t = 2)]
    pub clusters: u32,
    /// Hollow nodes per member for the `flotilla up` measurement.
    #[arg(long, default_value_t = 2)]
    pub nodes: u32,
}

pub async fn foundation(args: FoundationArgs) -> anyhow::Result<bool> {
    let bin_dir = flotilla_cli::binaries::ensure(None)?;
    let binaries = Binaries::in_dir(&bin_dir)?;
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }

    println!("localkube: start a cluster with 1 hollow node until its node is Ready");
    let mut samples = Vec::new();
    for i in 0..args.runs {
        let mut config = ClusterConfig::new(format!("bench-{i}")).with_nodes(1);
        config.binaries = Some(binaries.clone());
        let started = Instant::now();
        let cluster = Cluster::start(config).await?;
        samples.push(started.elapsed());
        drop(cluster);
    }
    println!("  {}", summary(samples));

    println!(
        "flotilla up: {} member(s) x {} node(s), warm binary cache, until every cluster is ready",
        args.clusters, args.nodes
    );
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("fleet");
    let exe = crate::flotilla_binary::path()?;
    let started = Instant::now();
    let up = std::process::Command::new(&exe)
        .args(["up", "--clusters", &args.clusters.to_string(), "--nodes", &args.nodes.to_string()])
        .arg("--state-dir")
        .arg(&dir)
        .output()
        .context("running flotilla up")?;
    let up_time = started.elapsed();
    let result = if up.status.success() {
        println!("  {:.2}s", up_time.as_secs_f64());
        // Let start-up transients settle before measuring memory.
        tokio::time::sleep(Duration::from_secs(10)).await;
        match fleet_rss(&dir) {
            Ok((total, per_kind)) => {
                println!("local fleet resident memory: {} MiB in all", total / (1 << 20));
                for (kind, bytes) in per_kind {
                    println!("  {kind:<24} {:>5} MiB", bytes / (1 << 20));
                }
                Ok(true)
            }
            Err(e) => Err(e),
        }
    } else {
        Err(anyhow::anyhow!("flotilla up failed:\n{}", String::from_utf8_lossy(&up.stderr)))
    };
    let _ = std::process::Command::new(&exe).arg("down").arg("--state-dir").arg(&dir).output();
    result
}

/// Total RSS of the fleet's processes, and per kind of process.
fn fleet_rss(dir: &Path) -> anyhow::Result<(u64, Vec<(String, u64)>)> {
    let Some(state) = flotilla_cli::fleet::read_state(dir)? else {
        bail!("no fleet state in {}", dir.display())
    };
    let mut per_kind: std::collections::BTreeMap<String, u64> = Default::default();
    let mut total = 0;
    let records = std::iter::once(&state.daemon)
        .chain(state.etcd.iter())
        .chain(state.clusters.iter().flat_map(|c| c.processes.iter()));
    for p in records {
        let rss = flotilla_cli::fleet::rss_bytes(p.pid).unwrap_or(0);
        total += rss;
        let kind =
            if p.name.contains("-node-") { "hollow node (kubemark)".to_string() } else { p.name.clone() };
        *per_kind.entry(kind).or_default() += rss;
    }
    Ok((total, per_kind.into_iter().collect()))
}
