//! `flotilla bench`: commands that print the figures each issue asks for.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use flotilla_localkube::{Binaries, Cluster, ClusterConfig};

#[derive(Subcommand, Debug)]
pub enum Bench {
    /// Foundation figures: testenv cluster start time, `flotilla up` time to
    /// ready (warm cache) and the local fleet's resident memory.
    Foundation(FoundationArgs),
    /// Fleet membership figures: join -> Available latency (p50/p99), failure
    /// detection, agent memory, and (with --scale N) the hub with N agents.
    Membership(MembershipArgs),
    /// Scheduler figures: time of one scheduling decision (p50/p99/max) on
    /// synthetic fleets of 1,000 and 10,000 clusters, per strategy.
    Scheduling(scheduling::SchedulingArgs),
    /// Applications across the fleet: distribution latency (template change
    /// -> applied in every member, p50/p99) and the hub controller's memory
    /// with many templates after a cold restart.
    Apps(crate::bench_apps::AppsArgs),
    /// Kube-on-Kube: hosted cluster create -> Ready (one, in a row, at
    /// once), the operator's memory per hosted cluster, and a rolling
    /// upgrade of two apiservers under a polling client.
    Kok(crate::bench_kok::KokArgs),
    /// Faults without harm: a member API restart, a shared etcd blip, a
    /// member gone for good and back: time to converge, replicas moved,
    /// lost and duplicated, failover time after the toleration, peak surplus.
    Faults(crate::bench_faults::FaultsArgs),
    /// Faults of the hub in a local fleet: time to converge after `hub run`
    /// is killed mid-burst and after the hub's API server is killed, with
    /// the replicas lost and duplicated.
    HubFaults(crate::bench_hub_faults::HubFaultsArgs),
}

#[derive(Args, Debug)]
pub struct FoundationArgs {
    /// How many 1-node testenv clusters to start (one after another).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Member clusters for the `flotilla up` measurement.
    #[arg(long, default_value_t = 2)]
    pub clusters: u32,
    /// Hollow nodes per member for the `flotilla up` measurement.
    #[arg(long, default_value_t = 2)]
    pub nodes: u32,
}

pub async fn run(bench: Bench) -> anyhow::Result<bool> {
    match bench {
        Bench::Foundation(args) => foundation(args).await,
        Bench::Membership(args) => membership(args).await,
        Bench::Scheduling(args) => scheduling::run(args),
        Bench::Apps(args) => crate::bench_apps::apps(args).await,
        Bench::Kok(args) => crate::bench_kok::kok(args).await,
        Bench::Faults(args) => crate::bench_faults::faults(args).await,
        Bench::HubFaults(args) => crate::bench_hub_faults::hub_faults(args).await,
    }
}

fn summary(mut samples: Vec<Duration>) -> String {
    samples.sort();
    let secs = |d: Duration| d.as_secs_f64();
    let median = samples[samples.len() / 2];
    format!(
        "min {:.2}s  median {:.2}s  max {:.2}s  (n={})",
        secs(samples[0]),
        secs(median),
        secs(samples[samples.len() - 1]),
        samples.len()
    )
}

async fn foundation(args: FoundationArgs) -> anyhow::Result<bool> {
    let bin_dir = crate::binaries::ensure()?;
    let binaries = Binaries::in_dir(&bin_dir)?;
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }

    println!("testenv: start a cluster with 1 hollow node until its node is Ready");
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
    let exe = std::env::current_exe()?;
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
    let Some(state) = crate::fleet::read_state(dir)? else { bail!("no fleet state in {}", dir.display()) };
    let mut per_kind: std::collections::BTreeMap<String, u64> = Default::default();
    let mut total = 0;
    let records = std::iter::once(&state.daemon)
        .chain(state.etcd.iter())
        .chain(state.clusters.iter().flat_map(|c| c.processes.iter()));
    for p in records {
        let rss = crate::fleet::rss_bytes(p.pid).unwrap_or(0);
        total += rss;
        let kind =
            if p.name.contains("-node-") { "hollow node (kubemark)".to_string() } else { p.name.clone() };
        *per_kind.entry(kind).or_default() += rss;
    }
    Ok((total, per_kind.into_iter().collect()))
}

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

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

pub(crate) fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    let Some((_, rest)) = stat.rsplit_once(')') else { return 0.0 };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 overall (11 and 12 after the command).
    let ticks: f64 = fields.get(11).and_then(|u| u.parse::<f64>().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / 100.0
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

async fn membership(args: MembershipArgs) -> anyhow::Result<bool> {
    let bin_dir = crate::binaries::ensure()?;
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
            std::env::current_exe()?,
            tmp.path().join("hub.log"),
        )
        .args(["hub", "run", "--auto-accept", "--kubeconfig"])
        .arg(hub.kubeconfig_path().display().to_string()),
    )?;
    let (_, bootstrap) = crate::fleetctl::create_token(
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
        flotilla_localkube::ProcessSpec::new("agent", std::env::current_exe()?, tmp.path().join("agent.log"))
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
    let agent_rss = agent_process.pid().and_then(crate::fleet::rss_bytes).unwrap_or(0);
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
        let rss = controller.pid().and_then(crate::fleet::rss_bytes).unwrap_or(0);
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

/// A cluster agent without a member: registers with its own certificate,
/// writes a status once and renews its Lease, as a real agent does.
async fn simulated_agent(config: flotilla_agent::AgentConfig, lease_seconds: i32) -> anyhow::Result<()> {
    use kube::api::{Patch, PatchParams};
    use serde_json::json;
    // Like a supervised agent process: start over if registration fails.
    let registration = loop {
        match flotilla_agent::register(&config).await {
            Ok(r) => break r,
            Err(e) => {
                tracing::warn!(cluster = %config.cluster, error = %e, "simulated agent registration failed; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    };
    let hub = registration.client;
    let name = config.cluster.clone();
    let clusters: kube::Api<flotilla_api::ManagedCluster> = kube::Api::all(hub.clone());
    let status = json!({"apiVersion": "cluster.flotilla.io/v1alpha1", "kind": "ManagedCluster",
        "status": {"memberHealth": {"healthy": true, "message": "simulated",
            "since": k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now())},
            "kubernetesVersion": "v1.20.2",
            "nodeSummary": {"total": 3, "ready": 3, "display": "3/3"}}});
    // As the real agent does: a failed write is retried, not fatal.
    while let Err(e) = clusters
        .patch_status(
            &name,
            &PatchParams::apply(flotilla_agent::FIELD_MANAGER).force(),
            &Patch::Apply(&status),
        )
        .await
    {
        tracing::warn!(cluster = %name, error = %e, "simulated agent status write failed; retrying");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let leases: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
        kube::Api::namespaced(hub, &flotilla_api::ManagedCluster::hub_namespace(&name));
    loop {
        let lease = flotilla_fleet_core::membership::heartbeat_lease(
            &name,
            lease_seconds,
            k8s_openapi::jiff::Timestamp::now(),
        );
        let _ = leases
            .patch(
                flotilla_fleet_core::membership::LEASE_NAME,
                &PatchParams::apply(flotilla_agent::FIELD_MANAGER).force(),
                &Patch::Apply(&lease),
            )
            .await;
        tokio::time::sleep(Duration::from_millis(lease_seconds as u64 * 250)).await;
    }
}

/// `bench scheduling`: the scheduler's decision time on synthetic fleets.
pub mod scheduling {
    use std::collections::BTreeMap;
    use std::hint::black_box;
    use std::time::{Duration, Instant};

    use clap::Args;
    use flotilla_api::cluster::{ApiEnablement, Taint, TaintEffect};
    use flotilla_api::policy::{
        cluster_field_label, ClusterAffinity, ClusterPreferences, DynamicWeightFactor, FieldSelector,
        FieldSelectorOperator, FieldSelectorRequirement, Placement, ReplicaDivisionPreference,
        ReplicaSchedulingStrategy, ReplicaSchedulingType, SpreadByField, SpreadConstraint,
        StaticClusterWeight,
    };
    use flotilla_api::work::TargetCluster;
    use flotilla_apps_core::scheduler::{schedule, ClusterSnapshot, SchedulingRequest};
    use k8s_openapi::api::core::v1::Toleration;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement, Time};
    use k8s_openapi::jiff::{SignedDuration, Timestamp};

    #[derive(Args, Debug)]
    pub struct SchedulingArgs {
        /// Fleet sizes to measure, comma-separated.
        #[arg(long, value_delimiter = ',', default_values_t = [1000usize, 10000])]
        pub clusters: Vec<usize>,
        /// Bindings per fleet size; each is scheduled twice (first placement,
        /// then a scale-up from that placement).
        #[arg(long, default_value_t = 1000)]
        pub bindings: usize,
    }

    const REGIONS: [&str; 12] = [
        "us-east-1",
        "us-west-2",
        "eu-west-1",
        "eu-central-1",
        "ap-south-1",
        "ap-northeast-1",
        "sa-east-1",
        "ca-central-1",
        "me-south-1",
        "af-south-1",
        "eu-north-1",
        "ap-southeast-2",
    ];
    const PROVIDERS: [&str; 4] = ["aws", "gcp", "azure", "onprem"];
    const KINDS: [&str; 5] =
        ["duplicated", "static weights", "available replicas", "aggregated", "spread by region"];

    /// A small deterministic generator, so every run measures the same fleet.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn api_enablements(with_apps: bool) -> Vec<ApiEnablement> {
        let mut list = vec![
            ("v1", &["configmaps", "namespaces", "pods", "secrets", "serviceaccounts", "services"][..]),
            ("batch/v1", &["cronjobs", "jobs"][..]),
            ("networking.k8s.io/v1", &["ingresses", "networkpolicies"][..]),
            (
                "rbac.authorization.k8s.io/v1",
                &["clusterrolebindings", "clusterroles", "rolebindings", "roles"][..],
            ),
            ("policy/v1beta1", &["poddisruptionbudgets", "podsecuritypolicies"][..]),
            ("autoscaling/v2beta2", &["horizontalpodautoscalers"][..]),
            ("storage.k8s.io/v1", &["storageclasses", "volumeattachments"][..]),
            ("coordination.k8s.io/v1", &["leases"][..]),
            ("discovery.k8s.io/v1beta1", &["endpointslices"][..]),
            ("apiextensions.k8s.io/v1", &["customresourcedefinitions"][..]),
            ("scheduling.k8s.io/v1", &["priorityclasses"][..]),
            ("node.k8s.io/v1", &["runtimeclasses"][..]),
        ];
        if with_apps {
            list.push(("apps/v1", &["daemonsets", "deployments", "replicasets", "statefulsets"][..]));
        }
        list.sort_by_key(|(gv, _)| *gv);
        list.into_iter()
            .map(|(gv, resources)| ApiEnablement {
                group_version: gv.to_string(),
                resources: resources.iter().map(|r| r.to_string()).collect(),
            })
            .collect()
    }

    /// A fleet of `n` clusters: 12 regions over 4 providers, 3 zones each,
    /// prod/staging/dev, a few tainted (unreachable, maintenance), a few
    /// without apps/v1 or not reporting yet, 3-50 nodes of varied size at
    /// 10-90% allocated.
    pub fn synthetic_clusters(n: usize, now: Timestamp) -> Vec<ClusterSnapshot> {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let with_apps = api_enablements(true);
        let without_apps = api_enablements(false);
        let label = |field: &str| cluster_field_label(field).unwrap_or(field).to_string();
        (0..n)
            .map(|i| {
                let region_index = rng.below(REGIONS.len() as u64) as usize;
                let region = REGIONS[region_index];
                let zone = format!("{region}{}", ["a", "b", "c"][rng.below(3) as usize]);
                let env = match rng.below(10) {
                    0..=5 => "prod",
                    6..=8 => "staging",
                    _ => "dev",
                };
                let mut labels: BTreeMap<String, String> = [
                    (label("region"), region.to_string()),
                    (label("zone"), zone),
                    (label("provider"), PROVIDERS[region_index % PROVIDERS.len()].to_string()),
                    ("env".to_string(), env.to_string()),
                ]
                .into();
                if rng.below(20) == 0 {
                    labels.insert("accelerator".into(), "gpu".into());
                }
                let mut taints = Vec::new();
                let roll = rng.below(100);
                let taint = |key: &str, effect| Taint {
                    key: key.into(),
                    value: None,
                    effect,
                    time_added: now.checked_sub(SignedDuration::from_secs(100)).ok().map(Time),
                };
                match roll {
                    0..=1 => {
                        taints.push(taint(flotilla_api::cluster::taints::UNREACHABLE, TaintEffect::NoExecute))
                    }
                    2..=4 => taints.push(taint("maintenance", TaintEffect::NoSchedule)),
                    5 => taints.push(taint("spot", TaintEffect::PreferNoSchedule)),
                    _ => {}
                }
                let api_enablements = match rng.below(200) {
                    0 => Vec::new(),
                    1..=4 => without_apps.clone(),
                    _ => with_apps.clone(),
                };
                let nodes = 3 + rng.below(48) as u128;
                let cpu_per_node = [8_000u128, 16_000, 32_000][rng.below(3) as usize];
                let mem_per_node = [32u128 << 30, 64 << 30, 128 << 30][rng.below(3) as usize];
                let used_percent = 10 + rng.below(81) as u128;
                let allocatable: BTreeMap<String, u128> = [
                    ("cpu".to_string(), nodes * cpu_per_node),
                    ("memory".to_string(), nodes * mem_per_node),
                    ("pods".to_string(), nodes * 110),
                ]
                .into();
                let allocated =
                    allocatable.iter().map(|(k, v)| (k.clone(), v * used_percent / 100)).collect();
                ClusterSnapshot {
                    name: format!("member-{i:05}"),
                    labels,
                    taints,
                    api_enablements,
                    allocatable,
                    allocated,
                    schedulable: rng.below(200) != 0,
                    available_since: None,
                }
            })
            .collect()
    }

    fn divided(preference: ReplicaDivisionPreference, weights: Option<ClusterPreferences>) -> Placement {
        Placement {
            replica_scheduling: Some(ReplicaSchedulingStrategy {
                replica_scheduling_type: Some(ReplicaSchedulingType::Divided),
                replica_division_preference: Some(preference),
                weight_preference: weights,
            }),
            ..Default::default()
        }
    }

    fn field(key: &str, values: &[&str]) -> FieldSelector {
        FieldSelector {
            match_expressions: vec![FieldSelectorRequirement {
                key: key.into(),
                operator: FieldSelectorOperator::In,
                values: values.iter().map(|v| v.to_string()).collect(),
            }],
        }
    }

    fn env_in(values: &[&str]) -> ClusterAffinity {
        ClusterAffinity {
            label_selector: Some(LabelSelector {
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: "env".into(),
                    operator: "In".into(),
                    values: Some(values.iter().map(|v| v.to_string()).collect()),
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// The placement of binding kind `kind` (an index into `KINDS`), varied by `seed`.
    fn placement(kind: usize, seed: usize) -> Placement {
        let tolerate_unreachable = vec![Toleration {
            key: Some("cluster.karmada.io/unreachable".into()),
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            toleration_seconds: Some(300),
            value: None,
        }];
        let region = |k: usize| REGIONS[(seed + k) % REGIONS.len()];
        match kind {
            0 => Placement {
                cluster_affinity: Some(env_in(&["prod"])),
                cluster_tolerations: tolerate_unreachable,
                ..Default::default()
            },
            1 => Placement {
                cluster_affinity: Some(ClusterAffinity {
                    field_selector: Some(field("provider", &["aws", "gcp"])),
                    ..Default::default()
                }),
                ..divided(
                    ReplicaDivisionPreference::Weighted,
                    Some(ClusterPreferences {
                        static_weight_list: vec![
                            StaticClusterWeight {
                                target_cluster: ClusterAffinity {
                                    field_selector: Some(field("region", &[region(0), region(1)])),
                                    ..Default::default()
                                },
                                weight: 1,
                            },
                            StaticClusterWeight {
                                target_cluster: ClusterAffinity {
                                    field_selector: Some(field("region", &[region(2)])),
                                    ..Default::default()
                                },
                                weight: 2,
                            },
                            StaticClusterWeight { target_cluster: env_in(&["prod"]), weight: 3 },
                        ],
                        ..Default::default()
                    }),
                )
            },
            2 => Placement {
                cluster_affinity: Some(env_in(&["prod", "staging"])),
                cluster_tolerations: tolerate_unreachable,
                ..divided(
                    ReplicaDivisionPreference::Weighted,
                    Some(ClusterPreferences {
                        dynamic_weight: Some(DynamicWeightFactor::AvailableReplicas),
                        ..Default::default()
                    }),
                )
            },
            3 => Placement {
                cluster_affinity: Some(ClusterAffinity {
                    field_selector: Some(field("region", &[region(0), region(3), region(6)])),
                    ..Default::default()
                }),
                ..divided(ReplicaDivisionPreference::Aggregated, None)
            },
            _ => Placement {
                spread_constraints: vec![
                    SpreadConstraint {
                        spread_by_field: Some(SpreadByField::Region),
                        min_groups: 2,
                        max_groups: 3,
                        ..Default::default()
                    },
                    SpreadConstraint {
                        spread_by_field: Some(SpreadByField::Cluster),
                        min_groups: 3,
                        max_groups: 10,
                        ..Default::default()
                    },
                ],
                ..divided(
                    ReplicaDivisionPreference::Weighted,
                    Some(ClusterPreferences {
                        dynamic_weight: Some(DynamicWeightFactor::AvailableReplicas),
                        ..Default::default()
                    }),
                )
            },
        }
    }

    fn requests(kind: usize) -> BTreeMap<String, Quantity> {
        let (cpu, memory) = match kind {
            3 => ("2", "4Gi"),
            0 | 1 => ("100m", "128Mi"),
            _ => ("500m", "512Mi"),
        };
        [("cpu".to_string(), Quantity(cpu.into())), ("memory".to_string(), Quantity(memory.into()))].into()
    }

    /// CPU time of the calling thread: unlike wall time it leaves out the
    /// time other processes held the CPU, which on a busy machine is most
    /// of the tail.
    fn thread_cpu_time() -> Duration {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: clock_gettime only writes the timespec we pass.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        if rc != 0 {
            return Duration::ZERO;
        }
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }

    #[derive(Default, Clone)]
    struct Samples {
        wall: Vec<Duration>,
        cpu: Vec<Duration>,
        unschedulable: usize,
    }

    fn line(label: &str, samples: &Samples) -> String {
        let (mut wall, mut cpu) = (samples.wall.clone(), samples.cpu.clone());
        wall.sort();
        cpu.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        format!(
            "  {label:<20} wall p50 {:>7.3}  p99 {:>7.3}  max {:>7.3} ms | cpu p50 {:>7.3}  p99 {:>7.3}  max {:>7.3} ms \
             (n={}, unschedulable {})",
            ms(super::percentile(&wall, 0.50)),
            ms(super::percentile(&wall, 0.99)),
            ms(wall.last().copied().unwrap_or_default()),
            ms(super::percentile(&cpu, 0.50)),
            ms(super::percentile(&cpu, 0.99)),
            ms(cpu.last().copied().unwrap_or_default()),
            wall.len(),
            samples.unschedulable,
        )
    }

    pub fn run(args: SchedulingArgs) -> anyhow::Result<bool> {
        if args.bindings == 0 || args.clusters.is_empty() {
            anyhow::bail!("--bindings and --clusters must not be empty");
        }
        let now = Timestamp::now();
        println!(
            "scheduler: one `schedule` call per binding, first placement then a scale-up (+5) from it; \
             bindings rotate over {}",
            KINDS.join(", ")
        );
        for &n in &args.clusters {
            let clusters = synthetic_clusters(n, now);
            let mut per_kind: Vec<Samples> = vec![Samples::default(); KINDS.len()];
            for b in 0..args.bindings {
                let kind = b % KINDS.len();
                let placement = placement(kind, b);
                let requests = requests(kind);
                let replicas = 3 + (b % 97) as i32;
                let mut previous: Vec<TargetCluster> = Vec::new();
                for (round, replicas) in [replicas, replicas + 5].into_iter().enumerate() {
                    let req = SchedulingRequest {
                        placement: &placement,
                        replicas,
                        requests: &requests,
                        resource: Some(("apps/v1", "deployments")),
                        previous: &previous,
                        now,
                    };
                    let cpu_start = thread_cpu_time();
                    let started = Instant::now();
                    let result = black_box(schedule(black_box(&req), black_box(&clusters)));
                    let took = started.elapsed();
                    let cpu = thread_cpu_time().saturating_sub(cpu_start);
                    let samples = &mut per_kind[kind];
                    samples.wall.push(took);
                    samples.cpu.push(cpu);
                    match result {
                        Ok(scheduled) if round == 0 => previous = scheduled.clusters,
                        Ok(_) => {}
                        Err(_) => samples.unschedulable += 1,
                    }
                }
            }
            println!("{n} clusters, {} bindings x 2 calls:", args.bindings);
            let all = Samples {
                wall: per_kind.iter().flat_map(|s| s.wall.iter().copied()).collect(),
                cpu: per_kind.iter().flat_map(|s| s.cpu.iter().copied()).collect(),
                unschedulable: per_kind.iter().map(|s| s.unschedulable).sum(),
            };
            println!("{}", line("all", &all));
            for (kind, samples) in per_kind.iter().enumerate() {
                println!("{}", line(KINDS[kind], samples));
            }
        }
        Ok(true)
    }
}
