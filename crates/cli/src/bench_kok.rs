//! `flotilla bench kok`: Kube-on-Kube figures. Create → Ready of hosted
//! clusters (one after another and all at once), the operator's resident
//! memory per hosted cluster, and a rolling upgrade of a two-replica
//! control plane under a polling client.
//!
//! Everything is real and out of process: a hub API server, one
//! `flotilla hub run` (the operators, so its RSS is theirs) and one
//! `flotilla node-agent` per Machine, all children of this process; the
//! clusters' etcd, kube-apiserver, controller-manager, scheduler and hollow
//! kubelets are started by the node agents.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use flotilla_api::kok::{conditions, EtcdCluster, HostedCluster, HostedClusterPhase, UpgradeState};
use flotilla_api::machine::Machine;
use flotilla_kok_core::hosted::{admin_secret_name, component_name, owner_label_value, Part, OWNER_LABEL};
use flotilla_localkube::{Binaries, Cluster, ClusterConfig, ManagedProcess, ProcessSpec};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

#[derive(Args, Debug)]
pub struct KokArgs {
    /// Clusters created one after another, each deleted before the next
    /// (0 skips).
    #[arg(long, default_value_t = 10)]
    pub sequential: usize,
    /// Clusters created at once (0 skips).
    #[arg(long, default_value_t = 10)]
    pub concurrent: usize,
    /// Hosted clusters for the operator memory figure (0 skips; else at
    /// least 2). They have no nodes and share one EtcdCluster.
    #[arg(long, default_value_t = 20)]
    pub memory_clusters: usize,
    /// The memory run's clusters after the first are created this many at
    /// a time, each batch Ready before the next: twenty control planes
    /// starting at once on two cores starve the hub API server.
    #[arg(long, default_value_t = 5)]
    pub memory_batch: usize,
    /// Skip the rolling upgrade of a two-replica control plane.
    #[arg(long)]
    pub skip_upgrade: bool,
    /// Worker nodes (hollow kubelets) per cluster in the create and upgrade runs.
    #[arg(long, default_value_t = 1)]
    pub nodes: i32,
    /// Keep logs and node-agent state in this directory (default: a
    /// temporary directory, removed on exit).
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
}

const NS: &str = "kok-bench";
const VERSION: &str = "1.20.2";
/// The upgrade target: a directory of symlinks to the same binaries (only
/// one Kubernetes version can be built here); one minor up is what the
/// version skew rules allow.
const NEXT_VERSION: &str = "1.21.0";
const MACHINES: [&str; 2] = ["m1", "m2"];
const POLL: Duration = Duration::from_millis(100);
/// Conditions in the order a cluster normally reaches them.
const STAGES: [&str; 7] = [
    conditions::ETCD_READY,
    conditions::CERTIFICATES_READY,
    conditions::KUBE_APISERVER_READY,
    conditions::KUBE_CONTROLLER_MANAGER_READY,
    conditions::KUBE_SCHEDULER_READY,
    conditions::ADDONS_APPLIED,
    conditions::NODES_READY,
];

// ------------------------------------------------------------ pure helpers

/// Nearest-rank percentile of sorted samples (`p` in 0..=1).
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A `/proc/PID/status` field in bytes (the kernel reports kB).
fn status_field_bytes(status: &str, field: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.split(':').next() == Some(field))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Rss {
    total: u64,
    anon: u64,
}

fn parse_rss(status: &str) -> Option<Rss> {
    Some(Rss {
        total: status_field_bytes(status, "VmRSS")?,
        anon: status_field_bytes(status, "RssAnon").unwrap_or(0),
    })
}

fn rss_of(pid: u32) -> Option<Rss> {
    parse_rss(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// Growth per added cluster between a measurement at `n1` and one at `n2`
/// clusters (signed: memory can also go down).
fn per_cluster(rss1: u64, n1: usize, rss2: u64, n2: usize) -> f64 {
    if n2 <= n1 {
        return 0.0;
    }
    (rss2 as f64 - rss1 as f64) / (n2 - n1) as f64
}

fn mib(bytes: f64) -> String {
    format!("{:.2} MiB", bytes / (1u64 << 20) as f64)
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// One poll of a client behind a load balancer over the apiservers: the
/// endpoint it went to first, whether that answered, and (when it did not)
/// whether the other one did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Poll {
    endpoint: usize,
    ok: bool,
    failover_ok: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct PollStats {
    polls: usize,
    /// Per endpoint: requests sent (first tries and failovers) and failed.
    attempts: Vec<usize>,
    failures: Vec<usize>,
    /// Polls where both endpoints failed.
    failed_after_failover: usize,
}

fn poll_stats(polls: &[Poll], endpoints: usize) -> PollStats {
    let mut stats = PollStats {
        polls: polls.len(),
        attempts: vec![0; endpoints],
        failures: vec![0; endpoints],
        ..Default::default()
    };
    for p in polls {
        let mut count = |endpoint: usize, ok: bool| {
            if let Some(a) = stats.attempts.get_mut(endpoint) {
                *a += 1;
            }
            if !ok {
                if let Some(f) = stats.failures.get_mut(endpoint) {
                    *f += 1;
                }
            }
        };
        count(p.endpoint, p.ok);
        if let Some(ok) = p.failover_ok {
            count((p.endpoint + 1) % endpoints.max(1), ok);
        }
        if !p.ok && p.failover_ok != Some(true) {
            stats.failed_after_failover += 1;
        }
    }
    stats
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Met,
    Missed,
    Info,
}

struct Row {
    figure: String,
    value: String,
    goal: String,
    verdict: Verdict,
}

impl Row {
    fn new(
        figure: impl Into<String>,
        value: impl Into<String>,
        goal: impl Into<String>,
        verdict: Verdict,
    ) -> Self {
        Self { figure: figure.into(), value: value.into(), goal: goal.into(), verdict }
    }

    fn info(figure: impl Into<String>, value: impl Into<String>) -> Self {
        Self::new(figure, value, "", Verdict::Info)
    }
}

fn goal_verdict(met: bool) -> Verdict {
    if met {
        Verdict::Met
    } else {
        Verdict::Missed
    }
}

/// The figures as an aligned text table.
fn table(rows: &[Row]) -> String {
    let head = ("figure", "measured", "goal", "");
    let width = |f: &dyn Fn(&Row) -> usize, h: &str| rows.iter().map(f).chain([h.len()]).max().unwrap_or(0);
    let w0 = width(&|r| r.figure.chars().count(), head.0);
    let w1 = width(&|r| r.value.chars().count(), head.1);
    let w2 = width(&|r| r.goal.chars().count(), head.2);
    let line = |a: &str, b: &str, c: &str, d: &str| {
        format!("{a:<w0$}  {b:>w1$}  {c:<w2$}  {d}").trim_end().to_string()
    };
    let mut out = vec![line(head.0, head.1, head.2, head.3), "-".repeat(w0 + w1 + w2 + 12)];
    for r in rows {
        let verdict = match r.verdict {
            Verdict::Met => "met",
            Verdict::Missed => "MISSED",
            Verdict::Info => "",
        };
        out.push(line(&r.figure, &r.value, &r.goal, verdict));
    }
    out.join("\n")
}

/// When each stage (condition) first turned True, relative to creation.
fn stages_line(first_true: &BTreeMap<String, Duration>) -> String {
    STAGES
        .iter()
        .filter_map(|s| first_true.get(*s).map(|d| format!("{} {:.1}", short_stage(s), d.as_secs_f64())))
        .collect::<Vec<_>>()
        .join(", ")
}

fn short_stage(condition: &str) -> &str {
    match condition {
        conditions::ETCD_READY => "etcd",
        conditions::CERTIFICATES_READY => "certs",
        conditions::KUBE_APISERVER_READY => "apiserver",
        conditions::KUBE_CONTROLLER_MANAGER_READY => "controller-manager",
        conditions::KUBE_SCHEDULER_READY => "scheduler",
        conditions::ADDONS_APPLIED => "addons",
        conditions::NODES_READY => "nodes",
        other => other,
    }
}

/// `FIRST-LAST` of `count` ports starting at `first`.
fn port_range_arg(first: u16, count: u16) -> String {
    format!("{first}-{}", first.saturating_add(count.saturating_sub(1)))
}

// ------------------------------------------------------------ environment

/// The hub, the operator process and the node agents. Dropping it (also on
/// panic, or when the bench future is dropped on Ctrl-C) stops them all and
/// then every component the agents started, which outlive them by design.
struct Env {
    hub: Cluster,
    client: Client,
    dir: PathBuf,
    operator: ManagedProcess,
    agents: Vec<ManagedProcess>,
    state_dirs: Vec<PathBuf>,
    // Last, so the directory goes after everything that writes into it.
    _tmp: Option<tempfile::TempDir>,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.operator.stop(Duration::ZERO);
        for a in &mut self.agents {
            a.stop(Duration::ZERO);
        }
        for d in &self.state_dirs {
            flotilla_node_agent::kill_recorded(d);
        }
    }
}

/// A range of `count` loopback ports below Linux's ephemeral range (so no
/// outgoing connection holds one) that are free now.
fn free_port_range(count: u16) -> anyhow::Result<u16> {
    let mut first = 20000u16;
    while first + count < 32000 {
        if (first..first + count).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()) {
            return Ok(first);
        }
        first += count;
    }
    bail!("no {count} free loopback ports between 20000 and 32000")
}

/// A directory of symlinks to `bin_dir`'s files: a second "version" made
/// of the same binaries.
fn symlinked_version(bin_dir: &Path, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    for entry in std::fs::read_dir(bin_dir)? {
        let entry = entry?;
        let link = dir.join(entry.file_name());
        if !link.exists() {
            std::os::unix::fs::symlink(entry.path(), &link)
                .with_context(|| format!("linking {}", link.display()))?;
        }
    }
    Ok(())
}

async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        if Instant::now() > deadline {
            bail!("timed out after {}s waiting for {what}", timeout.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

impl Env {
    async fn start(args: &KokArgs, bin_dir: &Path) -> anyhow::Result<Env> {
        let (tmp, dir) = match &args.work_dir {
            Some(d) => {
                std::fs::create_dir_all(d)?;
                (None, d.clone())
            }
            None => {
                let t = tempfile::tempdir()?;
                let d = t.path().to_path_buf();
                (Some(t), d)
            }
        };
        // The hub's files in the work directory, so its logs can be read after a failure.
        let mut hub_config = ClusterConfig::apiserver_only("kok-bench-hub").in_dir(dir.join("hub"));
        hub_config.binaries = Some(Binaries::in_dir(bin_dir)?);
        let hub = Cluster::start(hub_config).await?;
        let client = hub.client();
        flotilla_hub::install(&client).await?;
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}});
        Api::<Namespace>::all(client.clone())
            .patch(NS, &PatchParams::apply("bench"), &Patch::Apply(&ns))
            .await?;
        for m in MACHINES {
            let machine: Machine = serde_json::from_value(json!({
                "apiVersion": "kok.flotilla.io/v1alpha1", "kind": "Machine",
                "metadata": {"name": m}, "spec": {"address": "127.0.0.1"}}))?;
            Api::<Machine>::all(client.clone()).create(&PostParams::default(), &machine).await?;
        }

        let next_dir = dir.join(format!("k8s-{NEXT_VERSION}"));
        symlinked_version(bin_dir, &next_dir)?;
        // Five ports per cluster (three per control-plane instance, two
        // per kubelet); room for the largest batch several times over.
        let ports = free_port_range(500)?;
        let exe = std::env::current_exe()?;
        let kubeconfig = hub.kubeconfig_path().display().to_string();
        // The etcd operator's member ports are fixed (32000-32767) under
        // `hub run`; another fleet on this host using them would clash.
        if std::net::TcpListener::bind(("127.0.0.1", 32000)).is_err() {
            println!("warning: port 32000 (first etcd member port of `hub run`) is in use on this host");
        }
        let operator = ManagedProcess::spawn(
            ProcessSpec::new("flotilla-hub-run", exe.clone(), dir.join("logs/hub-run.log"))
                .env("FLOTILLA_LOG", "warn,flotilla_kok=info")
                .args(["hub", "run", "--auto-accept", "--kubeconfig", &kubeconfig])
                .arg("--kok-version")
                .arg(format!("{VERSION}={}", bin_dir.display()))
                .arg("--kok-version")
                .arg(format!("{NEXT_VERSION}={}", next_dir.display()))
                .arg("--kok-port-range")
                .arg(port_range_arg(ports, 500))
                .args(["--upgrade-step-seconds", "60"]),
        )?;
        let mut agents = Vec::new();
        let mut state_dirs = Vec::new();
        for m in MACHINES {
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
        let mut env = Env { hub, client, dir, operator, agents, state_dirs, _tmp: tmp };
        let machines: Api<Machine> = Api::all(env.client.clone());
        wait_until("the node agents to report", Duration::from_secs(60), || {
            let machines = machines.clone();
            async move {
                machines.list(&ListParams::default()).await.is_ok_and(|l| {
                    l.items.len() == MACHINES.len()
                        && l.items
                            .iter()
                            .all(|m| m.status.as_ref().is_some_and(|s| s.last_heartbeat.is_some()))
                })
            }
        })
        .await?;
        env.check_running()?;
        Ok(env)
    }

    fn check_running(&mut self) -> anyhow::Result<()> {
        for name in self.hub.process_names() {
            if let Some(p) = self.hub.process_mut(&name) {
                p.check_running()?;
            }
        }
        self.operator.check_running()?;
        for a in &mut self.agents {
            a.check_running()?;
        }
        Ok(())
    }

    fn clusters(&self) -> Api<HostedCluster> {
        Api::namespaced(self.client.clone(), NS)
    }

    fn etcds(&self) -> Api<EtcdCluster> {
        Api::namespaced(self.client.clone(), NS)
    }

    async fn create_etcd(&self, name: &str, owner: Option<&str>) -> anyhow::Result<()> {
        let labels = match owner {
            Some(cluster) => json!({OWNER_LABEL: owner_label_value(NS, cluster)}),
            None => json!({}),
        };
        let etcd: EtcdCluster = serde_json::from_value(json!({
            "apiVersion": "kok.flotilla.io/v1alpha1", "kind": "EtcdCluster",
            "metadata": {"name": name, "namespace": NS, "labels": labels},
            "spec": {"members": 1, "version": "3.4.23"},
        }))?;
        self.etcds().create(&PostParams::default(), &etcd).await?;
        Ok(())
    }

    async fn create_cluster(
        &self,
        name: &str,
        etcd: serde_json::Value,
        nodes: i32,
        replicas: i32,
    ) -> anyhow::Result<()> {
        let hc: HostedCluster = serde_json::from_value(json!({
            "apiVersion": "kok.flotilla.io/v1alpha1", "kind": "HostedCluster",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"version": VERSION, "etcd": etcd, "nodes": {"count": nodes},
                     "controlPlane": {"replicas": replicas}},
        }))?;
        self.clusters().create(&PostParams::default(), &hc).await?;
        Ok(())
    }

    /// A cluster with its own one-member EtcdCluster (deleted with it).
    async fn create_dedicated(&self, name: &str, nodes: i32, replicas: i32) -> anyhow::Result<()> {
        let etcd = format!("{name}-etcd");
        self.create_etcd(&etcd, Some(name)).await?;
        self.create_cluster(name, json!({"clusterRef": etcd}), nodes, replicas).await
    }

    /// Waits until every run's cluster is Ready, noting when each of its
    /// conditions first turned True.
    async fn wait_ready(&mut self, runs: &mut [Run], timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let list = self.clusters().list(&ListParams::default()).await?;
            for run in runs.iter_mut().filter(|r| r.ready.is_none()) {
                let Some(hc) = list.items.iter().find(|h| h.name_any() == run.name) else { continue };
                let Some(status) = hc.status.as_ref() else { continue };
                let elapsed = run.started.elapsed();
                for c in status.conditions.iter().filter(|c| c.status == "True") {
                    run.first_true.entry(c.type_.clone()).or_insert(elapsed);
                }
                if status.phase == Some(HostedClusterPhase::Ready) {
                    run.ready = Some(elapsed);
                }
            }
            if runs.iter().all(|r| r.ready.is_some()) {
                return Ok(());
            }
            self.check_running()?;
            if Instant::now() > deadline {
                let waiting: Vec<String> =
                    runs.iter().filter(|r| r.ready.is_none()).map(|r| r.name.clone()).collect();
                let detail = list
                    .items
                    .iter()
                    .filter(|h| waiting.contains(&h.name_any()))
                    .map(|h| {
                        let not_true: Vec<String> = h
                            .status
                            .iter()
                            .flat_map(|s| s.conditions.iter())
                            .filter(|c| c.status != "True")
                            .map(|c| format!("{}={} ({})", c.type_, c.status, c.message))
                            .collect();
                        format!("{}: {}", h.name_any(), not_true.join("; "))
                    })
                    .collect::<Vec<_>>()
                    .join("\n  ");
                bail!(
                    "not Ready within {}s: {}\n  {detail}\nlogs in {}",
                    timeout.as_secs(),
                    waiting.join(", "),
                    self.dir.display()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Deletes clusters and EtcdClusters and waits until they are gone, so
    /// the next measurement starts from an empty hub.
    async fn delete_all(&mut self) -> anyhow::Result<()> {
        let (clusters, etcds) = (self.clusters(), self.etcds());
        for hc in clusters.list(&ListParams::default()).await?.items {
            gone_is_fine(clusters.delete(&hc.name_any(), &DeleteParams::default()).await.map(|_| ()))?;
        }
        wait_until("the hosted clusters to be deleted", Duration::from_secs(300), || {
            let clusters = clusters.clone();
            async move { clusters.list(&ListParams::default()).await.is_ok_and(|l| l.items.is_empty()) }
        })
        .await?;
        for e in etcds.list(&ListParams::default()).await?.items {
            // A dedicated one may be deleted by the operator meanwhile.
            if e.metadata.deletion_timestamp.is_none() {
                gone_is_fine(etcds.delete(&e.name_any(), &DeleteParams::default()).await.map(|_| ()))?;
            }
        }
        wait_until("the EtcdClusters to be deleted", Duration::from_secs(300), || {
            let etcds = etcds.clone();
            async move { etcds.list(&ListParams::default()).await.is_ok_and(|l| l.items.is_empty()) }
        })
        .await?;
        let machines: Api<Machine> = Api::all(self.client.clone());
        wait_until("the Machines to run nothing", Duration::from_secs(120), || {
            let machines = machines.clone();
            async move {
                machines.list(&ListParams::default()).await.is_ok_and(|l| {
                    l.items.iter().all(|m| {
                        m.spec.components.is_empty()
                            && m.status.as_ref().is_none_or(|s| s.components.iter().all(|c| c.pid.is_none()))
                    })
                })
            }
        })
        .await?;
        self.check_running()
    }

    fn operator_rss(&self) -> anyhow::Result<Rss> {
        self.operator.pid().and_then(rss_of).context("reading the operator's /proc status")
    }
}

fn gone_is_fine(result: Result<(), kube::Error>) -> Result<(), kube::Error> {
    match result {
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        other => other,
    }
}

/// One cluster creation being timed.
struct Run {
    name: String,
    started: Instant,
    ready: Option<Duration>,
    first_true: BTreeMap<String, Duration>,
}

impl Run {
    fn new(name: String) -> Self {
        Self { name, started: Instant::now(), ready: None, first_true: BTreeMap::new() }
    }
}

fn ready_times(runs: &[Run]) -> Vec<Duration> {
    let mut t: Vec<Duration> = runs.iter().filter_map(|r| r.ready).collect();
    t.sort();
    t
}

/// Median time each stage was reached over `runs`.
fn median_stages(runs: &[Run]) -> BTreeMap<String, Duration> {
    STAGES
        .iter()
        .filter_map(|s| {
            let mut t: Vec<Duration> = runs.iter().filter_map(|r| r.first_true.get(*s).copied()).collect();
            t.sort();
            (!t.is_empty()).then(|| (s.to_string(), percentile(&t, 0.5)))
        })
        .collect()
}

// ------------------------------------------------------------ the bench

pub async fn kok(args: KokArgs) -> anyhow::Result<bool> {
    if args.memory_clusters == 1 {
        bail!("--memory-clusters must be 0 (skip) or at least 2");
    }
    // Dropping the bench future (Ctrl-C, SIGTERM) drops the environment,
    // which stops everything it started.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = bench(args) => r,
        _ = tokio::signal::ctrl_c() => bail!("interrupted; everything the bench started was stopped"),
        _ = term.recv() => bail!("terminated; everything the bench started was stopped"),
    }
}

async fn bench(args: KokArgs) -> anyhow::Result<bool> {
    let bin_dir = crate::binaries::ensure()?;
    println!(
        "kok: hub API server, `flotilla hub run` (operators) and {} `flotilla node-agent`s as child processes; \
         process runtime, Kubernetes {VERSION}, 1-member etcd 3.4, {} hollow node(s) per cluster, no add-ons \
         beyond the built-in bootstrap one",
        MACHINES.len(),
        args.nodes
    );
    let mut env = Env::start(&args, &bin_dir).await?;
    println!("  logs and state: {}", env.dir.display());
    let mut rows: Vec<Row> = Vec::new();

    // Memory first, while the operator process is fresh: earlier runs would
    // leave allocator pages behind and flatter the per-cluster growth.
    if args.memory_clusters >= 2 {
        memory(&mut env, args.memory_clusters, args.memory_batch, &mut rows).await?;
    }
    if args.sequential > 0 {
        sequential(&mut env, args.sequential, args.nodes, &mut rows).await?;
    }
    if args.concurrent > 0 {
        concurrent(&mut env, args.concurrent, args.nodes, &mut rows).await?;
    }
    if !args.skip_upgrade {
        upgrade(&mut env, args.nodes, &mut rows).await?;
    }
    println!("\n{}", table(&rows));
    drop(env);
    Ok(true)
}

async fn sequential(env: &mut Env, n: usize, nodes: i32, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    println!("\ncreate -> Ready, {n} clusters one after another (each deleted before the next):");
    let mut runs = Vec::new();
    for i in 0..n {
        let mut run = [Run::new(format!("seq-{i}"))];
        env.create_dedicated(&run[0].name, nodes, 1).await?;
        env.wait_ready(&mut run, Duration::from_secs(300)).await?;
        let [run] = run;
        println!(
            "  {:<7} {:>6}   (first True at: {})",
            run.name,
            run.ready.map(secs).unwrap_or_default(),
            stages_line(&run.first_true)
        );
        runs.push(run);
        env.delete_all().await?;
    }
    let t = ready_times(&runs);
    let (p50, max) = (percentile(&t, 0.5), t.last().copied().unwrap_or_default());
    println!(
        "  p50 {}  max {}   median stages: {}",
        secs(p50),
        secs(max),
        stages_line(&median_stages(&runs))
    );
    let goal = Duration::from_secs(15);
    rows.push(Row::new(
        format!("create -> Ready, 1 cluster, p50 of {n} in a row"),
        secs(p50),
        "< 15 s",
        goal_verdict(p50 < goal),
    ));
    rows.push(Row::new(
        format!("create -> Ready, 1 cluster, max of {n} in a row"),
        secs(max),
        "< 15 s",
        goal_verdict(max < goal),
    ));
    Ok(())
}

async fn concurrent(env: &mut Env, n: usize, nodes: i32, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    println!("\ncreate -> Ready, {n} clusters at once (each with its own etcd):");
    let started = Instant::now();
    let mut runs: Vec<Run> = (0..n).map(|i| Run::new(format!("batch-{i}"))).collect();
    for run in &mut runs {
        run.started = Instant::now();
        env.create_dedicated(&run.name, nodes, 1).await?;
    }
    env.wait_ready(&mut runs, Duration::from_secs(600)).await?;
    let wall = started.elapsed();
    for run in &runs {
        println!(
            "  {:<9} {:>6}   (first True at: {})",
            run.name,
            run.ready.map(secs).unwrap_or_default(),
            stages_line(&run.first_true)
        );
    }
    let t = ready_times(&runs);
    let (p50, max) = (percentile(&t, 0.5), t.last().copied().unwrap_or_default());
    println!(
        "  p50 {}  max {}  wall {}   median stages: {}",
        secs(p50),
        secs(max),
        secs(wall),
        stages_line(&median_stages(&runs))
    );
    rows.push(Row::info(format!("create -> Ready, {n} at once, p50"), secs(p50)));
    rows.push(Row::info(format!("create -> Ready, {n} at once, max"), secs(max)));
    rows.push(Row::info(format!("create -> Ready, {n} at once, wall time of the batch"), secs(wall)));
    env.delete_all().await
}

async fn memory(env: &mut Env, n: usize, batch: usize, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    println!(
        "\noperator memory: RSS of the `flotilla hub run` process (hub controllers + etcd and hosted-cluster \
         operators) with 1 and with {n} hosted clusters Ready; these have 0 nodes and share one EtcdCluster \
         under distinct key prefixes (spec.etcd.shared)"
    );
    let settle = Duration::from_secs(15);
    env.create_etcd("shared-etcd", None).await?;
    let shared = |i: usize| json!({"shared": {"clusterRef": "shared-etcd", "prefix": format!("/clusters/mem-{i:02}")}});
    let mut first = [Run::new("mem-00".into())];
    env.create_cluster(&first[0].name, shared(0), 0, 1).await?;
    env.wait_ready(&mut first, Duration::from_secs(300)).await?;
    tokio::time::sleep(settle).await;
    let rss1 = env.operator_rss()?;
    println!(
        "  1 cluster Ready ({}): RSS {} (anonymous {})",
        first[0].ready.map(secs).unwrap_or_default(),
        mib(rss1.total as f64),
        mib(rss1.anon as f64)
    );

    let started = Instant::now();
    let names: Vec<usize> = (1..n).collect();
    for batch in names.chunks(batch.max(1)) {
        let mut runs: Vec<Run> = Vec::new();
        for &i in batch {
            let run = Run::new(format!("mem-{i:02}"));
            env.create_cluster(&run.name, shared(i), 0, 1).await?;
            runs.push(run);
        }
        env.wait_ready(&mut runs, Duration::from_secs(600)).await?;
    }
    println!("  {} more Ready, {} at a time, after {}", n - 1, batch.max(1), secs(started.elapsed()));
    // Steady state, several samples: the figure should not catch a reconcile burst.
    tokio::time::sleep(settle).await;
    let mut samples = Vec::new();
    for _ in 0..5 {
        samples.push(env.operator_rss()?);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    samples.sort_by_key(|r| r.total);
    let rssn = samples[samples.len() / 2];
    let growth = per_cluster(rss1.total, 1, rssn.total, n);
    println!(
        "  {n} clusters Ready: RSS {} (anonymous {}); median of 5 samples, range {} .. {}",
        mib(rssn.total as f64),
        mib(rssn.anon as f64),
        mib(samples[0].total as f64),
        mib(samples[samples.len() - 1].total as f64)
    );
    rows.push(Row::info("operator RSS, 1 hosted cluster", mib(rss1.total as f64)));
    rows.push(Row::info(
        format!("operator RSS, {n} hosted clusters (0 nodes, shared etcd)"),
        mib(rssn.total as f64),
    ));
    rows.push(Row::new(
        format!("operator RSS per hosted cluster (RSS{n} - RSS1)/{}", n - 1),
        mib(growth),
        "< 1 MiB (Kamaji ~6 MiB)",
        goal_verdict(growth < (1u64 << 20) as f64),
    ));
    env.delete_all().await
}

/// Each apiserver instance's URL, by index, from the Machines' components.
async fn apiserver_urls(client: &Client, cluster: &str, replicas: i32) -> anyhow::Result<Vec<String>> {
    let machines = Api::<Machine>::all(client.clone()).list(&ListParams::default()).await?.items;
    (0..replicas)
        .map(|index| {
            let name = component_name(Part::Apiserver, NS, cluster, index);
            machines
                .iter()
                .find_map(|m| {
                    let c = m.spec.components.iter().find(|c| c.name == name)?;
                    let port = flotilla_kok_core::ports::flag_port(c, "--secure-port")?;
                    Some(format!("https://{}:{port}", m.spec.address.as_deref()?))
                })
                .with_context(|| format!("no apiserver component {name} on any Machine"))
        })
        .collect()
}

/// A client of the business cluster that talks to `url` only.
async fn client_at(admin_kubeconfig: &str, url: &str) -> anyhow::Result<Client> {
    let kubeconfig = kube::config::Kubeconfig::from_yaml(admin_kubeconfig)?;
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    config.cluster_url = url.parse()?;
    config.connect_timeout = Some(Duration::from_secs(1));
    config.read_timeout = Some(Duration::from_secs(2));
    Ok(Client::try_from(config)?)
}

async fn answers(client: &Client) -> bool {
    let api: Api<Namespace> = Api::all(client.clone());
    matches!(tokio::time::timeout(Duration::from_secs(2), api.get("default")).await, Ok(Ok(_)))
}

/// Polls every 100 ms like a client behind a load balancer: round robin,
/// and a failed request is retried once on the other endpoint.
async fn poll_through_balancer(clients: Vec<Client>, stop: Arc<AtomicBool>) -> Vec<Poll> {
    let mut polls = Vec::new();
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let n = clients.len().max(1);
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let endpoint = polls.len() % n;
        let ok = answers(&clients[endpoint]).await;
        let failover_ok = if ok { None } else { Some(answers(&clients[(endpoint + 1) % n]).await) };
        polls.push(Poll { endpoint, ok, failover_ok });
    }
    polls
}

async fn upgrade(env: &mut Env, nodes: i32, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    println!(
        "\nupgrade {VERSION} -> {NEXT_VERSION} of a cluster with 2 apiserver replicas on 2 machines \
         ({NEXT_VERSION} is a directory of symlinks to the same binaries), a client polling every 100 ms \
         round robin over both apiservers with failover:"
    );
    let name = "upg";
    let mut run = [Run::new(name.into())];
    env.create_dedicated(name, nodes, 2).await?;
    env.wait_ready(&mut run, Duration::from_secs(300)).await?;
    println!("  Ready after {}", run[0].ready.map(secs).unwrap_or_default());
    let urls = apiserver_urls(&env.client, name, 2).await?;
    let secret = Api::<Secret>::namespaced(env.client.clone(), NS).get(&admin_secret_name(name)).await?;
    let admin = secret
        .data
        .and_then(|d| d.get("kubeconfig").map(|k| String::from_utf8_lossy(&k.0).into_owned()))
        .context("the admin kubeconfig Secret has no kubeconfig")?;
    let mut clients = Vec::new();
    for url in &urls {
        let c = client_at(&admin, url).await?;
        wait_until(&format!("{url} to answer"), Duration::from_secs(60), || {
            let c = c.clone();
            async move { answers(&c).await }
        })
        .await?;
        clients.push(c);
    }
    println!("  endpoints: {}", urls.join(", "));

    let stop = Arc::new(AtomicBool::new(false));
    let poller = tokio::spawn(poll_through_balancer(clients, stop.clone()));
    let started = Instant::now();
    env.clusters()
        .patch(name, &PatchParams::default(), &Patch::Merge(json!({"spec": {"version": NEXT_VERSION}})))
        .await?;
    let mut steps: Vec<(Duration, String)> = Vec::new();
    let deadline = started + Duration::from_secs(300);
    let outcome = loop {
        let hc = env.clusters().get(name).await?;
        let upgrade = hc.status.as_ref().and_then(|s| s.upgrade.clone()).filter(|u| u.to == NEXT_VERSION);
        if let Some(u) = &upgrade {
            let step = match (&u.component, u.instance) {
                (Some(c), Some(i)) => format!("{c}/{i}"),
                _ => format!("{:?}", u.state),
            };
            if steps.last().map(|(_, s)| s) != Some(&step) {
                steps.push((started.elapsed(), step));
            }
            match u.state {
                UpgradeState::Succeeded => break Ok(started.elapsed()),
                UpgradeState::RolledBack => {
                    break Err(format!("rolled back: {}", u.message.clone().unwrap_or_default()))
                }
                _ => {}
            }
        }
        if Instant::now() > deadline {
            break Err(format!("not Succeeded within 300 s; last upgrade status {upgrade:?}"));
        }
        env.check_running()?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    stop.store(true, Ordering::Relaxed);
    let polls = poller.await?;
    let stats = poll_stats(&polls, urls.len());
    println!(
        "  steps (time since the spec change the step was first seen): {}",
        steps.iter().map(|(t, s)| format!("{} {:.1}", s, t.as_secs_f64())).collect::<Vec<_>>().join(", ")
    );
    let after = apiserver_urls(&env.client, name, 2).await?;
    if after != urls {
        println!("  note: the apiserver endpoints changed during the upgrade: {}", after.join(", "));
    }
    for (i, url) in urls.iter().enumerate() {
        println!("  {url}: {} requests, {} failed", stats.attempts[i], stats.failures[i]);
    }
    println!("  {} polls, {} failed on both endpoints", stats.polls, stats.failed_after_failover);
    match outcome {
        Ok(took) => rows.push(Row::new(
            "upgrade, spec change -> Succeeded (2 replicas)",
            secs(took),
            "< 60 s",
            goal_verdict(took < Duration::from_secs(60)),
        )),
        Err(why) => {
            println!("  upgrade did not succeed: {why}");
            rows.push(Row::new(
                "upgrade, spec change -> Succeeded (2 replicas)",
                "failed",
                "< 60 s",
                Verdict::Missed,
            ));
        }
    }
    let raw: Vec<String> =
        stats.failures.iter().zip(&stats.attempts).map(|(f, a)| format!("{f}/{a}")).collect();
    rows.push(Row::info("  failed requests per endpoint (no failover)", raw.join(" + ")));
    rows.push(Row::new(
        format!("  failed polls with failover (of {}, every 100 ms)", stats.polls),
        stats.failed_after_failover.to_string(),
        "0",
        goal_verdict(stats.failed_after_failover == 0),
    ));
    env.delete_all().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|m| Duration::from_millis(*m)).collect()
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let t = ms(&[100, 200, 300, 400, 500, 600, 700, 800, 900, 1000]);
        assert_eq!(percentile(&t, 0.5), Duration::from_millis(500));
        assert_eq!(percentile(&t, 0.99), Duration::from_millis(1000));
        assert_eq!(percentile(&t, 0.0), Duration::from_millis(100));
        assert_eq!(percentile(&ms(&[7]), 0.5), Duration::from_millis(7));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }

    #[test]
    fn rss_is_read_from_proc_status() {
        let status = "Name:\tflotilla\nVmHWM:\t   90000 kB\nVmRSS:\t   81920 kB\nRssAnon:\t   40960 kB\nRssFile:\t   40960 kB\n";
        assert_eq!(parse_rss(status), Some(Rss { total: 81920 * 1024, anon: 40960 * 1024 }));
        assert_eq!(parse_rss("Name:\tx\n"), None);
        // A field is matched by its whole name, not a prefix.
        assert_eq!(status_field_bytes("VmRSSx:\t1 kB\nVmRSS:\t2 kB\n", "VmRSS"), Some(2048));
    }

    #[test]
    fn per_cluster_growth_divides_by_the_added_clusters() {
        let mib = 1u64 << 20;
        assert_eq!(per_cluster(40 * mib, 1, 59 * mib, 20), mib as f64);
        assert!(per_cluster(40 * mib, 1, 39 * mib, 20) < 0.0);
        assert_eq!(per_cluster(40 * mib, 5, 50 * mib, 5), 0.0);
    }

    #[test]
    fn a_poll_fails_only_when_both_endpoints_fail() {
        let polls = [
            Poll { endpoint: 0, ok: true, failover_ok: None },
            Poll { endpoint: 1, ok: false, failover_ok: Some(true) },
            Poll { endpoint: 0, ok: false, failover_ok: Some(false) },
            Poll { endpoint: 1, ok: true, failover_ok: None },
        ];
        let s = poll_stats(&polls, 2);
        assert_eq!(s.polls, 4);
        assert_eq!(s.attempts, vec![3, 3]);
        assert_eq!(s.failures, vec![1, 2]);
        assert_eq!(s.failed_after_failover, 1);
    }

    #[test]
    fn the_table_aligns_columns_and_marks_missed_goals() {
        let rows = [
            Row::new("create", "9.5 s", "< 15 s", Verdict::Met),
            Row::new("memory per cluster", "1.20 MiB", "< 1 MiB", Verdict::Missed),
            Row::info("wall", "30.0 s"),
        ];
        let text = table(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        assert!(lines[2].ends_with("met"), "{text}");
        assert!(lines[3].ends_with("MISSED"), "{text}");
        assert!(!lines[4].ends_with(' '), "{text}");
        // Values are right-aligned in one column.
        let end = |l: &str, v: &str| l.find(v).map(|i| i + v.len());
        assert_eq!(end(lines[2], "9.5 s"), end(lines[3], "1.20 MiB"));
    }

    #[test]
    fn stages_are_listed_in_order_with_short_names() {
        let first_true = BTreeMap::from([
            (conditions::KUBE_APISERVER_READY.to_string(), Duration::from_millis(4200)),
            (conditions::ETCD_READY.to_string(), Duration::from_millis(1500)),
            ("Valid".to_string(), Duration::from_millis(100)),
        ]);
        assert_eq!(stages_line(&first_true), "etcd 1.5, apiserver 4.2");
    }

    #[test]
    fn port_ranges_are_inclusive() {
        assert_eq!(port_range_arg(20000, 500), "20000-20499");
    }
}
