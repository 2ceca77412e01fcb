//! `flotilla-bench foundation`: how long a kube-apiserver, a localkube
//! cluster and `flotilla up` take to start, and their memory. `--k8s-bin`
//! measures another release's binaries (e.g. an old one beside the current).

use std::path::{Path, PathBuf};
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
    /// Measure the binaries in DIR (etcd, kube-apiserver, ...) instead of
    /// the cache's default release; `flotilla up` is then skipped (it runs
    /// the default release).
    #[arg(long, value_name = "DIR")]
    pub k8s_bin: Option<PathBuf>,
}

pub async fn foundation(args: FoundationArgs) -> anyhow::Result<bool> {
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let bin_dir = match &args.k8s_bin {
        Some(dir) => dir.clone(),
        None => flotilla_cli::binaries::ensure(None)?,
    };
    let binaries = Binaries::in_dir(&bin_dir)?;
    println!("binaries: {} ({})", bin_dir.display(), release(&binaries));

    apiserver_start(&binaries, args.runs).await?;

    println!("localkube: start a cluster with 1 hollow node until its node is Ready");
    let mut samples = Vec::new();
    for i in 0..args.runs {
        let mut config = ClusterConfig::new(format!("bench-{i}")).with_nodes(1);
        config.binaries = Some(binaries.clone());
        let started = Instant::now();
        match Cluster::start(config).await {
            Ok(cluster) => {
                samples.push(started.elapsed());
                drop(cluster);
            }
            // Another release's hollow node may not take our flags: the
            // apiserver figures above still stand.
            Err(e) => {
                println!("  failed: {e}");
                break;
            }
        }
    }
    if !samples.is_empty() {
        println!("  {}", summary(samples));
    }
    if args.k8s_bin.is_some() {
        println!("flotilla up: skipped (it runs the cache's default release, not --k8s-bin)");
        return Ok(true);
    }

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

/// What `kube-apiserver --version` says.
fn release(binaries: &Binaries) -> String {
    std::process::Command::new(binaries.path("kube-apiserver"))
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|e| format!("unknown: {e}"))
}

/// kube-apiserver alone: from spawning it (its certificates written, etcd
/// already up) to `/readyz` answering, and its resident memory then and
/// once start-up work settles. One etcd serves every run (a key prefix
/// each), so etcd's own start is not counted.
async fn apiserver_start(binaries: &Binaries, runs: usize) -> anyhow::Result<()> {
    println!("kube-apiserver: spawn until ready (etcd already running), resident memory");
    let tmp = tempfile::tempdir()?;
    let etcd = flotilla_localkube::Etcd::start_in_memory(binaries, tmp.path()).await?;
    let (mut ready, mut rss_ready, mut rss_settled) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..runs {
        let mut config = ClusterConfig::apiserver_only(format!("api-{i}")).with_etcd(etcd.client_url());
        config.etcd_prefix = Some(format!("/bench-{i}"));
        config.binaries = Some(binaries.clone());
        let started = Instant::now();
        let cluster = Cluster::start(config).await?;
        ready.push(started.elapsed());
        let pid = cluster.info().processes.iter().find(|p| p.name == "kube-apiserver").and_then(|p| p.pid);
        let rss = || pid.and_then(flotilla_cli::fleet::rss_bytes).unwrap_or(0);
        rss_ready.push(rss());
        tokio::time::sleep(Duration::from_secs(10)).await;
        rss_settled.push(rss());
        drop(cluster);
    }
    let mib = |v: &mut Vec<u64>| {
        v.sort();
        format!("median {} MiB (min {}, max {})", v[v.len() / 2] >> 20, v[0] >> 20, v[v.len() - 1] >> 20)
    };
    println!("  ready: {}", summary(ready));
    println!("  RSS at ready: {}", mib(&mut rss_ready));
    println!("  RSS 10 s later: {}", mib(&mut rss_settled));
    Ok(())
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
