//! `flotilla-bench dashboard`: the fleet page with many clusters in
//! Debian's Chromium (playwright-core, `crates/dashboard/e2e/bench.js`):
//! time to interactive (page load -> the page's row model holds every
//! cluster, its count shows them all, and the first screen of rows is
//! drawn and painted: the table is windowed, only visible rows are in the
//! DOM) and a change of the fleet -> visible on the open page (a cluster
//! on the first screen, so its row is drawn).
//!
//! The ManagedClusters are written directly on a real hub apiserver, with
//! a status as an agent reports it (no hub controller runs, so nothing
//! rewrites them); the dashboard serves in local mode in this process.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::Args;
use flotilla_api::cluster::ManagedCluster;
use flotilla_dashboard::{Dashboard, Mode};
use flotilla_localkube::{Binaries, Cluster, ClusterConfig};
use futures::{StreamExt, TryStreamExt};
use kube::api::{Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

use crate::measure::summary;

#[derive(Args, Debug)]
pub struct DashboardArgs {
    /// ManagedClusters on the hub.
    #[arg(long, default_value_t = 1000)]
    pub clusters: usize,
    /// Page loads to time (after one warm-up).
    #[arg(long, default_value_t = 5)]
    pub loads: usize,
    /// Changes to time on the open page.
    #[arg(long, default_value_t = 10)]
    pub changes: usize,
    /// Also write a screenshot of the loaded page here.
    #[arg(long)]
    pub screenshot: Option<PathBuf>,
}

pub async fn dashboard(args: DashboardArgs) -> anyhow::Result<bool> {
    let bin_dir = flotilla_cli::binaries::ensure(None)?;
    let mut hub_config = ClusterConfig::hub("bench-hub");
    hub_config.binaries = Some(Binaries::in_dir(&bin_dir)?);
    let hub = Cluster::start(hub_config).await?;
    flotilla_hub::install(&hub.client()).await?;
    let clusters: Api<ManagedCluster> = Api::all(hub.client());
    let started = std::time::Instant::now();
    futures::stream::iter(0..args.clusters)
        .map(|i| create_cluster(&clusters, i))
        .buffer_unordered(32)
        .try_collect::<Vec<()>>()
        .await?;
    println!("{} ManagedClusters written in {:.1}s", args.clusters, started.elapsed().as_secs_f64());

    let dashboard = Dashboard::bind(hub.admin_config().clone(), Mode::Local, "127.0.0.1:0".parse()?).await?;
    let url = format!("http://{}/", dashboard.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(dashboard.serve(async {
        let _ = stopped.await;
    }));

    let e2e = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../dashboard/e2e");
    let modules = std::env::var_os("FLOTILLA_E2E_NODE_MODULES").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
            .join(".cache/flotilla/dashboard-e2e/node_modules")
    });
    if !modules.join("playwright-core").exists() {
        bail!("playwright-core is not in {}: run scripts/test-tools.sh", modules.display());
    }
    let mut child = Command::new("node")
        .arg(e2e.join("bench.js"))
        .env("NODE_PATH", &modules)
        .env("DASHBOARD_URL", &url)
        .env("CLUSTERS", args.clusters.to_string())
        .env("LOADS", args.loads.to_string())
        .env("CHANGES", args.changes.to_string())
        .env("SCREENSHOT", args.screenshot.clone().unwrap_or_default())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("node (scripts/test-tools.sh installs it)")?;
    let mut stdin = child.stdin.take().context("node's stdin")?;
    let mut lines = BufReader::new(child.stdout.take().context("node's stdout")?).lines();
    let (mut loads, mut changes) = (Vec::new(), Vec::new());
    // Per load: navigation start -> snapshot received, and its drawing.
    let (mut snapshots, mut draws, mut interactive, mut bytes) = (Vec::new(), Vec::new(), Vec::new(), 0usize);
    let mut changed = 0usize;
    while let Some(line) = lines.next_line().await? {
        let Some(message) = line.strip_prefix("@@ ") else {
            eprintln!("[browser] {line}");
            continue;
        };
        let mut words = message.split(' ');
        match (words.next(), words.next()) {
            (Some("LOAD"), Some(ms)) => {
                loads.push(Duration::from_millis(ms.parse()?));
                let mut rest = words.map(str::parse::<u64>);
                if let (Some(Ok(snapshot)), Some(Ok(draw)), Some(Ok(size))) =
                    (rest.next(), rest.next(), rest.next())
                {
                    snapshots.push(Duration::from_millis(snapshot));
                    draws.push(Duration::from_millis(draw));
                    interactive.push(Duration::from_millis(snapshot + draw));
                    bytes = size as usize;
                }
            }
            (Some("SEEN"), Some(ms)) => changes.push(Duration::from_millis(ms.parse()?)),
            (Some("READY"), _) => {
                // A label change on a cluster of the first screen (a row
                // scrolled out of view is not drawn, by design).
                let name = cluster_name((changed * 3) % args.clusters.min(10));
                let value = format!("bench-{changed}");
                changed += 1;
                let sent_at = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();
                let patch = json!({"metadata": {"labels": {"bench": value}}});
                clusters.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
                stdin.write_all(format!("PATCHED {name} bench={value} {sent_at}\n").as_bytes()).await?;
                stdin.flush().await?;
            }
            (Some("DONE"), _) => break,
            _ => eprintln!("[browser] {message}"),
        }
    }
    let ok = child.wait().await?.success() && loads.len() == args.loads && changes.len() == args.changes;
    let _ = stop.send(());
    server.await??;
    println!("dashboard fleet page, {} clusters, Debian Chromium headless", args.clusters);
    let figures =
        |samples: Vec<Duration>| if samples.is_empty() { "no sample".to_string() } else { summary(samples) };
    println!(
        "  time to interactive (navigation start -> {} clusters counted, first screen drawn and painted, in the page): {}   goal < 1 s",
        args.clusters,
        figures(interactive)
    );
    println!("    of which navigation -> snapshot received:  {}", figures(snapshots));
    println!("    of which drawing it ({} KiB; to the frame after): {}", bytes / 1024, figures(draws));
    println!("  the same seen by Playwright (new tab, goto, poll until drawn): {}", figures(loads));
    println!(
        "  fleet change -> visible on the open page (patch sent -> row shows it): {}   goal < 1 s",
        figures(changes)
    );
    Ok(ok)
}

fn cluster_name(i: usize) -> String {
    format!("c-{i:04}")
}

/// A ManagedCluster and the status its agent would report.
async fn create_cluster(api: &Api<ManagedCluster>, i: usize) -> anyhow::Result<()> {
    let name = cluster_name(i);
    let regions = ["eu-west", "eu-north", "us-east", "us-west", "ap-south"];
    let cluster: ManagedCluster = serde_json::from_value(json!({
        "apiVersion": "cluster.flotilla.io/v1alpha1", "kind": "ManagedCluster",
        "metadata": {"name": name, "labels": {"topology.kubernetes.io/region": regions[i % regions.len()], "tier": if i.is_multiple_of(3) { "gold" } else { "standard" }}},
        "spec": {"hubAcceptsClient": true},
    }))?;
    api.create(&PostParams::default(), &cluster).await?;
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let healthy = !i.is_multiple_of(17);
    let status = json!({"status": {
        "conditions": [{"type": "Available", "status": if healthy { "True" } else { "False" },
            "reason": if healthy { "MemberHealthy" } else { "ReadyzFailed" }, "message": "",
            "lastTransitionTime": now}],
        "kubernetesVersion": "v1.37.2",
        "nodeSummary": {"total": 3 + i % 5, "ready": 3 + i % 5, "display": format!("{0}/{0}", 3 + i % 5)},
        "resourceSummary": {
            "allocatable": {"cpu": "16", "memory": "64Gi", "pods": "330"},
            "allocated": {"cpu": format!("{}m", (i * 733) % 16000), "memory": format!("{}Mi", (i * 977) % 65536), "pods": format!("{}", i % 330)}},
    }});
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status)).await?;
    Ok(())
}
