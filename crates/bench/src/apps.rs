//! `flotilla-bench apps`: distribution latency (template change → applied
//! in every member) and the hub controller's memory with many templates,
//! after a cold restart. Real API servers, a real `flotilla hub run` and
//! real `flotilla agent` processes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use flotilla_api::work::ResourceBinding;
use flotilla_localkube::{Binaries, Cluster, ClusterConfig, ManagedProcess, ProcessSpec};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;
use serde_json::json;

#[derive(Args, Debug)]
pub struct AppsArgs {
    /// Template changes to time (half creations, half updates).
    #[arg(long, default_value_t = 200)]
    pub changes: usize,
    /// Templates for the memory measurement (0 skips it).
    #[arg(long, default_value_t = 5000)]
    pub templates: usize,
    /// Member clusters (API servers only: applying needs no nodes).
    #[arg(long, default_value_t = 3)]
    pub members: usize,
}

const NAMESPACE: &str = "bench";

/// When each (template name, change number) reached each member.
type Arrivals = HashMap<(String, usize), Vec<Instant>>;
const SEQ: &str = "bench.flotilla.io/seq";

fn template(name: &str, seq: usize) -> serde_json::Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app": name}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}, "annotations": {SEQ: seq.to_string()}},
                "spec": {"containers": [{"name": "app", "image": "nginx:1.25"}]}}}
    })
}

fn seq_of(d: &Deployment) -> Option<usize> {
    d.spec.template.metadata.as_ref()?.annotations.as_ref()?.get(SEQ)?.parse().ok()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn peak_rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Waits (up to two minutes) until every member is Available with its APIs
/// reported.
pub(crate) async fn wait_available(hub: &kube::Client, members: &[Cluster]) -> anyhow::Result<()> {
    let clusters: Api<flotilla_api::ManagedCluster> = Api::all(hub.clone());
    let deadline = Instant::now() + Duration::from_secs(120);
    for m in members {
        loop {
            let ready = clusters.get_opt(m.name()).await?.is_some_and(|mc| {
                mc.condition("Available").is_some_and(|c| c.status == "True")
                    && mc.status.as_ref().is_some_and(|s| !s.api_enablements.is_empty())
            });
            if ready {
                break;
            }
            if Instant::now() > deadline {
                bail!("member {} did not become Available", m.name());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// A `flotilla agent` for `member`, joining with `bootstrap`.
pub(crate) fn agent_process(
    dir: &std::path::Path,
    member: &Cluster,
    bootstrap: &std::path::Path,
) -> anyhow::Result<ManagedProcess> {
    let name = member.name().to_string();
    Ok(ManagedProcess::spawn(
        ProcessSpec::new(
            format!("agent-{name}"),
            crate::flotilla_binary::path()?,
            dir.join(format!("agent-{name}.log")),
        )
        .args(["agent", "--cluster", &name, "--kubeconfig"])
        .arg(member.kubeconfig_path().display().to_string())
        .arg("--hub-kubeconfig")
        .arg(bootstrap.display().to_string())
        .arg("--state-dir")
        .arg(dir.join("agents").join(&name).display().to_string()),
    )?)
}

pub(crate) fn hub_process(
    dir: &std::path::Path,
    kubeconfig: &std::path::Path,
    log: &str,
) -> anyhow::Result<ManagedProcess> {
    Ok(ManagedProcess::spawn(
        ProcessSpec::new("flotilla-hub", crate::flotilla_binary::path()?, dir.join(log))
            .env("FLOTILLA_LOG", "warn,flotilla_hub::apps=info")
            .args(["hub", "run", "--auto-accept", "--kubeconfig"])
            .arg(kubeconfig.display().to_string()),
    )?)
}

pub async fn apps(args: AppsArgs) -> anyhow::Result<bool> {
    if args.members == 0 {
        bail!("--members must be at least 1");
    }
    let bin_dir = flotilla_cli::binaries::ensure(None)?;
    let binaries = Binaries::in_dir(&bin_dir)?;
    let mut hub_config = ClusterConfig::hub("bench-hub");
    hub_config.binaries = Some(binaries.clone());
    let member_configs: Vec<ClusterConfig> = (0..args.members)
        .map(|i| {
            let mut c = ClusterConfig::apiserver_only(format!("member-{}", i + 1));
            c.binaries = Some(binaries.clone());
            c
        })
        .collect();
    let (hub, members) = tokio::join!(
        Cluster::start(hub_config),
        futures::future::join_all(member_configs.into_iter().map(Cluster::start))
    );
    let hub = hub?;
    let members: Vec<Cluster> = members.into_iter().collect::<Result<_, _>>()?;
    flotilla_hub::install(&hub.client()).await?;
    let tmp = tempfile::tempdir()?;
    let mut controller = hub_process(tmp.path(), hub.kubeconfig_path(), "hub.log")?;
    let (_, bootstrap) = flotilla_cli::fleetctl::create_token(
        &hub.client(),
        hub.kubeconfig_path(),
        1,
        Some(tmp.path().join("bootstrap.kubeconfig")),
    )
    .await?;
    let mut agents = Vec::new();
    for m in &members {
        agents.push(agent_process(tmp.path(), m, &bootstrap)?);
    }
    wait_available(&hub.client(), &members).await?;
    let hub_client = hub.client();
    let ssa = PatchParams::apply("bench").force();
    crate::apply::apply_json(
        &hub_client,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}),
    )
    .await?;
    crate::apply::apply_json(
        &hub_client,
        json!({"apiVersion": "policy.flotilla.io/v1alpha1", "kind": "PropagationPolicy",
            "metadata": {"name": "all", "namespace": NAMESPACE},
            "spec": {"resourceSelectors": [{"apiVersion": "apps/v1", "kind": "Deployment"}]}}),
    )
    .await?;

    // Member watches record when each (name, seq) first arrives.
    let arrivals: Arc<Mutex<Arrivals>> = Arc::default();
    let mut watches = Vec::new();
    for m in &members {
        let api: Api<Deployment> = Api::namespaced(m.client(), NAMESPACE);
        let arrivals = arrivals.clone();
        watches.push(tokio::spawn(async move {
            let mut seen: HashMap<String, usize> = HashMap::new();
            let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                let now = Instant::now();
                let Ok(watcher::Event::Apply(d) | watcher::Event::InitApply(d)) = event else { continue };
                let (Some(name), Some(seq)) = (d.metadata.name.clone(), seq_of(&d)) else { continue };
                if seen.get(&name) == Some(&seq) {
                    continue;
                }
                seen.insert(name.clone(), seq);
                if let Ok(mut a) = arrivals.lock() {
                    a.entry((name, seq)).or_default().push(now);
                }
            }
        }));
    }

    let deployments: Api<Deployment> = Api::namespaced(hub_client.clone(), NAMESPACE);
    // Warm-up: the hub starts watching a kind once a policy names it, and
    // the first change also opens every connection; not part of the figure.
    deployments.patch("warmup", &ssa, &Patch::Apply(&template("warmup", 0))).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let warm = |a: &Arrivals| a.get(&("warmup".to_string(), 0)).is_some_and(|v| v.len() >= members.len());
    while !arrivals.lock().ok().is_some_and(|a| warm(&a)) {
        if Instant::now() > deadline {
            bail!("the warm-up template did not reach every member within 60s");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "distribution: template created or updated on the hub -> applied in all {} members ({} changes)",
        members.len(),
        args.changes
    );
    let creations = args.changes.div_ceil(2);
    let mut samples = Vec::new();
    for i in 0..args.changes {
        let (name, seq) =
            if i < creations { (format!("lat-{i}"), 0) } else { (format!("lat-{}", i - creations), 1) };
        let started = Instant::now();
        deployments.patch(&name, &ssa, &Patch::Apply(&template(&name, seq))).await?;
        let deadline = started + Duration::from_secs(30);
        loop {
            let done = arrivals
                .lock()
                .ok()
                .and_then(|a| {
                    a.get(&(name.clone(), seq))
                        .filter(|v| v.len() >= members.len())
                        .map(|v| v.iter().max().copied())
                })
                .flatten();
            if let Some(last) = done {
                samples.push(last.saturating_duration_since(started));
                break;
            }
            if Instant::now() > deadline {
                bail!("{name} (change {seq}) did not reach every member within 30s");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    samples.sort();
    let pct = |p: f64| samples[((samples.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "  p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms  (n={})",
        ms(pct(0.5)),
        ms(pct(0.99)),
        ms(samples[samples.len() - 1]),
        samples.len()
    );
    controller.check_running()?;

    if args.templates > 0 {
        println!(
            "hub controller memory: {} Deployment templates over {} members",
            args.templates,
            members.len()
        );
        let created = Instant::now();
        futures::stream::iter(0..args.templates)
            .map(|i| {
                let deployments = deployments.clone();
                let ssa = ssa.clone();
                async move {
                    let name = format!("mem-{i}");
                    deployments.patch(&name, &ssa, &Patch::Apply(&template(&name, 0))).await.map(|_| ())
                }
            })
            .buffer_unordered(16)
            .try_collect::<Vec<()>>()
            .await?;
        println!("  created in {:.1} s", created.elapsed().as_secs_f64());
        let bindings: Api<ResourceBinding> = Api::namespaced(hub_client.clone(), NAMESPACE);
        let wanted = args.templates + creations + 1;
        let fully_applied = || async {
            let list = bindings.list(&ListParams::default()).await?;
            let n = list
                .items
                .iter()
                .filter(|b| {
                    b.status.as_ref().is_some_and(|s| {
                        s.conditions.iter().any(|c| c.type_ == "FullyApplied" && c.status == "True")
                    })
                })
                .count();
            anyhow::Ok(n)
        };
        let deadline = Instant::now() + Duration::from_secs(1800);
        loop {
            let n = fully_applied().await?;
            if n >= wanted {
                break;
            }
            if Instant::now() > deadline {
                bail!("only {n} of {wanted} bindings were fully applied after 30 min");
            }
            controller.check_running()?;
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        let pid = controller.pid().context("hub controller pid")?;
        println!(
            "  all {} templates applied in every member after {:.1} s; hub controller RSS {:.1} MiB (peak {:.1} MiB)",
            wanted,
            created.elapsed().as_secs_f64(),
            flotilla_cli::fleet::rss_bytes(pid).unwrap_or(0) as f64 / (1 << 20) as f64,
            peak_rss_bytes(pid).unwrap_or(0) as f64 / (1 << 20) as f64,
        );

        // Cold restart: a new process lists and re-reconciles everything.
        controller.stop(Duration::from_secs(5));
        let restarted = Instant::now();
        let mut controller = hub_process(tmp.path(), hub.kubeconfig_path(), "hub-restarted.log")?;
        let pid = controller.pid().context("hub controller pid")?;
        // It waits to lead (the old leader's Lease runs out), then lists
        // everything; only after that does settling mean anything.
        let log = tmp.path().join("hub-restarted.log");
        let deadline = Instant::now() + Duration::from_secs(120);
        while !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("application controllers have their caches")
        {
            controller.check_running()?;
            if Instant::now() > deadline {
                bail!("the restarted hub controller did not start its application controllers within 120s");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let caches = restarted.elapsed();
        // Settled: CPU use below 5% of a core over 5 s.
        let mut last_cpu = crate::measure::cpu_seconds(pid);
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            controller.check_running()?;
            let cpu = crate::measure::cpu_seconds(pid);
            let busy = (cpu - last_cpu) / 5.0;
            last_cpu = cpu;
            if busy < 0.05 {
                break;
            }
        }
        let n = fully_applied().await?;
        println!(
            "  after a cold restart (caches after {:.1} s, settled after {:.1} s, {} of {} bindings fully applied): \
             RSS {:.1} MiB, peak {:.1} MiB",
            caches.as_secs_f64(),
            restarted.elapsed().as_secs_f64(),
            n,
            wanted,
            flotilla_cli::fleet::rss_bytes(pid).unwrap_or(0) as f64 / (1 << 20) as f64,
            peak_rss_bytes(pid).unwrap_or(0) as f64 / (1 << 20) as f64,
        );
    }
    for w in watches {
        w.abort();
    }
    drop(agents);
    Ok(true)
}
