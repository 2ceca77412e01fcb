//! `flotilla-bench metrics`: how long a scrape of `hub run`'s `/metrics`
//! takes on a hub holding many templates (goal: under 50 ms at 5,000), and
//! what the reconcile instrumentation costs per reconcile. Real API
//! servers, a real `flotilla hub run --metrics-addr` and real agents.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use flotilla_api::work::ResourceBinding;
use flotilla_localkube::{Binaries, Cluster, ClusterConfig, ManagedProcess, ProcessSpec};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{ListParams, Patch, PatchParams};
use kube::Api;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Args, Debug)]
pub struct MetricsArgs {
    /// Deployment templates on the hub, each propagated to every member.
    #[arg(long, default_value_t = 5000)]
    pub templates: usize,
    /// Member clusters (API servers only: applying needs no nodes).
    #[arg(long, default_value_t = 3)]
    pub members: usize,
    /// Scrapes to time.
    #[arg(long, default_value_t = 200)]
    pub scrapes: usize,
}

const NAMESPACE: &str = "bench";

fn template(name: &str) -> serde_json::Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app": name}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "nginx:1.25"}]}}}
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One scrape over a fresh connection, as Prometheus does it: (time, body).
async fn scrape(addr: &str) -> anyhow::Result<(Duration, String)> {
    let started = Instant::now();
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let elapsed = started.elapsed();
    let Some((head, body)) = response.split_once("\r\n\r\n") else { bail!("no HTTP answer from {addr}") };
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        bail!("{addr} answered {}", head.lines().next().unwrap_or_default());
    }
    Ok((elapsed, body.to_string()))
}

fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines().find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

/// The per-reconcile cost of `flotilla_metrics::observe` (span, counters,
/// histogram, in-flight gauge) around a reconcile that does nothing.
async fn instrumentation_cost() -> Duration {
    let key = flotilla_metrics::ObjectKey::new(Some("bench"), "object");
    let rounds = 200_000u32;
    let started = Instant::now();
    for _ in 0..rounds {
        let done: Result<(), ()> = flotilla_metrics::observe("bench", &key, async { Ok(()) }).await;
        std::hint::black_box(done).ok();
    }
    started.elapsed() / rounds
}

pub async fn metrics(args: MetricsArgs) -> anyhow::Result<bool> {
    if args.members == 0 || args.scrapes == 0 {
        bail!("--members and --scrapes must be at least 1");
    }
    let per_reconcile = instrumentation_cost().await;
    println!(
        "reconcile instrumentation (span, counts, duration, in flight) around an empty reconcile: {:.2} µs per reconcile",
        per_reconcile.as_secs_f64() * 1e6
    );

    let bin_dir = flotilla_cli::binaries::ensure(None)?;
    let binaries = Binaries::in_dir(&bin_dir)?;
    let mut hub_config = ClusterConfig::hub("metrics-bench-hub");
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
    let port = flotilla_localkube::ports::free_port()?;
    let addr = format!("127.0.0.1:{port}");
    let mut controller = ManagedProcess::spawn(
        ProcessSpec::new("flotilla-hub", crate::flotilla_binary::path()?, tmp.path().join("hub.log"))
            .env("FLOTILLA_LOG", "warn")
            .args(["hub", "run", "--auto-accept", "--metrics-addr", &addr, "--kubeconfig"])
            .arg(hub.kubeconfig_path().display().to_string()),
    )?;
    let (_, bootstrap) = flotilla_cli::fleetctl::create_token(
        &hub.client(),
        hub.kubeconfig_path(),
        1,
        Some(tmp.path().join("bootstrap.kubeconfig")),
    )
    .await?;
    let mut agents = Vec::new();
    for m in &members {
        agents.push(crate::apps::agent_process(tmp.path(), m, &bootstrap)?);
    }
    crate::apps::wait_available(&hub.client(), &members).await?;
    let hub_client = hub.client();
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
    let (idle, _) = scrape(&addr).await.context("scraping the hub before the templates")?;

    let deployments: Api<Deployment> = Api::namespaced(hub_client.clone(), NAMESPACE);
    let ssa = PatchParams::apply("bench").force();
    let created = Instant::now();
    futures::stream::iter(0..args.templates)
        .map(|i| {
            let deployments = deployments.clone();
            let ssa = ssa.clone();
            async move {
                let name = format!("t-{i}");
                deployments.patch(&name, &ssa, &Patch::Apply(&template(&name))).await.map(|_| ())
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await?;
    // Bound: a binding per template and the binder's queue empty.
    let bindings: Api<ResourceBinding> = Api::namespaced(hub_client.clone(), NAMESPACE);
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        let bound = bindings.list_metadata(&ListParams::default()).await?.items.len();
        let (_, body) = scrape(&addr).await?;
        let queued = sample(&body, "flotilla_queue_depth{queue=\"binder\"}").unwrap_or(f64::NAN);
        if bound >= args.templates && queued == 0.0 {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {bound} of {} templates bound after 30 min", args.templates);
        }
        controller.check_running()?;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    println!(
        "{} templates over {} members bound in {:.1} s",
        args.templates,
        members.len(),
        created.elapsed().as_secs_f64()
    );

    let mut samples = Vec::with_capacity(args.scrapes);
    let mut size = 0;
    let mut series = 0;
    for _ in 0..args.scrapes {
        let (elapsed, body) = scrape(&addr).await?;
        samples.push(elapsed);
        size = body.len();
        series = body.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).count();
    }
    controller.check_running()?;
    samples.sort();
    let pct = |p: f64| samples[((samples.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "/metrics scrape of `hub run` with {} templates: p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms  (n={}, {} samples, {:.1} KiB; before the templates {:.2} ms; goal < 50 ms)",
        args.templates,
        ms(pct(0.5)),
        ms(pct(0.99)),
        ms(samples[samples.len() - 1]),
        samples.len(),
        series,
        size as f64 / 1024.0,
        ms(idle),
    );
    drop(agents);
    Ok(pct(0.99) < Duration::from_millis(50))
}
