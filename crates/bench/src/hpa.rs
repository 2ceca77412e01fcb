//! `flotilla-bench hpa`: fleet autoscaling's latency on real processes: a
//! hub (`flotilla hub run`, the FederatedHPA controller's default 15 s
//! sync), two members on real nodes (containerd, kubelet) each with a real
//! metrics-server (`--metric-resolution=10s`, its minimum), their agents
//! (`flotilla agent`, usage read every 3 s). A Deployment divided over
//! both, a FederatedHPA on 50% cpu (scale-down window 0).
//!
//! Per round: load switched on in m1's pod (it burns CPU while a file
//! exists), then off. Figures, each way:
//! - load switched -> replicas changed in the members (the members'
//!   Deployments' replicas sum differs): the whole path, metrics-server's
//!   resolution included;
//! - usage reported on the Work (its cpu crossed the target) -> replicas
//!   changed in the members: Flotilla's part (hub sync, `/scale`, binder,
//!   applier).

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use flotilla_api::work::Work;
use flotilla_localkube::metrics_server::MetricsServer;
use flotilla_localkube::real_node::{NodeImages, RealNodeConfig, RealNodes, BUSYBOX_IMAGE};
use flotilla_localkube::{Binaries, Cluster, ClusterConfig};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{AttachParams, ListParams};
use kube::Api;
use serde_json::json;
use tokio::io::AsyncReadExt;

use crate::measure::summary;

#[derive(Args, Debug)]
pub struct HpaArgs {
    /// Load on / load off rounds.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
}

const NS: &str = "bench";
const WAIT: Duration = Duration::from_secs(240);
const LOAD_LOOP: &str = "trap 'exit 0' TERM; while true; do if [ -f /tmp/load ]; then \
    nice -n 19 sh -c 'i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done'; else sleep 1; fi; done";

async fn until<F, Fut>(what: &str, mut check: F) -> anyhow::Result<Instant>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if check().await {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn members_total(members: &[Cluster]) -> i32 {
    let mut total = 0;
    for m in members {
        let d = Api::<Deployment>::namespaced(m.client(), NS).get_opt("web").await.ok().flatten();
        total += d.and_then(|d| d.spec.replicas).unwrap_or(0);
    }
    total
}

/// Pods of the Deployment in `member`, terminating ones included.
async fn pods_of(member: &Cluster) -> usize {
    let pods: Api<Pod> = Api::namespaced(member.client(), NS);
    pods.list(&ListParams::default().labels("app=web")).await.map_or(usize::MAX, |l| l.items.len())
}

/// The cpu usage m1's agent last reported for the Deployment, in
/// millicores, against its pods' requests.
async fn reported_cpu(hub: &kube::Client) -> Option<(i64, i64)> {
    let works: Api<Work> = Api::namespaced(hub.clone(), "flotilla-cluster-m1");
    let work = works.get_opt("bench.web-deployment").await.ok()??;
    let usage = work.status?.usage.into_iter().next()?.usage;
    Some((usage.cpu_usage_millicores, usage.cpu_requests_millicores))
}

/// Runs `command` in m1's first running pod, or (`every`) in each.
async fn exec(member: &Cluster, command: &str, every: bool) -> anyhow::Result<()> {
    let pods: Api<Pod> = Api::namespaced(member.client(), NS);
    let list = pods.list(&ListParams::default().labels("app=web")).await?;
    let running: Vec<String> = list
        .items
        .iter()
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        // A pod being deleted after a scale down still says Running.
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    if running.is_empty() {
        bail!("no running pod in m1");
    }
    for pod in running.iter().take(if every { running.len() } else { 1 }) {
        exec_in(&pods, pod, command).await?;
    }
    Ok(())
}

async fn exec_in(pods: &Api<Pod>, pod: &str, command: &str) -> anyhow::Result<()> {
    let mut attached =
        pods.exec(pod, vec!["sh", "-c", command], &AttachParams::default().stderr(false)).await?;
    let mut out = attached.stdout().context("exec stdout")?;
    let status = attached.take_status().context("exec status")?;
    let mut output = String::new();
    out.read_to_string(&mut output).await?;
    let status = status.await;
    attached.join().await?;
    if status.as_ref().and_then(|s| s.status.as_deref()) != Some("Success") {
        bail!("{command} in {pod}: {status:?}");
    }
    Ok(())
}

pub async fn hpa(args: HpaArgs) -> anyhow::Result<bool> {
    let bin_dir = flotilla_cli::binaries::ensure(None)?;
    let binaries = Binaries::in_dir(&bin_dir)?;
    MetricsServer::locate().context("metrics-server (scripts/metrics-server.sh)")?;
    let mut nodes = RealNodes::reserve_with(binaries.clone(), NodeImages::locate()?)?;
    let tmp = tempfile::tempdir()?;
    let configs: Vec<ClusterConfig> = ["m1", "m2"]
        .iter()
        .map(|name| {
            let mut c = ClusterConfig::new(*name).for_real_nodes(nodes.gateway()).with_aggregation();
            c.binaries = Some(binaries.clone());
            c
        })
        .collect();
    let mut hub_config = ClusterConfig::hub("bench-hub");
    hub_config.binaries = Some(binaries.clone());
    let (hub, members) = tokio::join!(
        Cluster::start(hub_config),
        futures::future::join_all(configs.into_iter().map(Cluster::start))
    );
    let hub = hub?;
    let members: Vec<Cluster> = members.into_iter().collect::<Result<_, _>>()?;
    for m in &members {
        nodes.start(m, vec![RealNodeConfig::new(format!("{}-node", m.name()))], WAIT).await?;
    }
    let mut metrics = Vec::new();
    for m in &members {
        metrics.push(MetricsServer::start(m, nodes.gateway(), Duration::from_secs(10)).await?);
    }
    flotilla_hub::install(&hub.client()).await?;
    let mut controller = crate::apps::hub_process(tmp.path(), hub.kubeconfig_path(), "hub.log")?;
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
    let client = hub.client();
    crate::apps::wait_available(&client, &members).await?;
    for object in [
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}),
        json!({"apiVersion": "policy.flotilla.io/v1alpha1", "kind": "PropagationPolicy",
            "metadata": {"name": "web", "namespace": NS},
            "spec": {"resourceSelectors": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}],
                "placement": {"replicaScheduling": {"replicaSchedulingType": "Divided",
                    "replicaDivisionPreference": "Weighted",
                    "weightPreference": {"staticWeightList": [
                        {"targetCluster": {"clusterNames": ["m1"]}, "weight": 1},
                        {"targetCluster": {"clusterNames": ["m2"]}, "weight": 1}]}}}}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": NS},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "main",
                        "image": BUSYBOX_IMAGE, "imagePullPolicy": "IfNotPresent",
                        "resources": {"requests": {"cpu": "100m", "memory": "16Mi"}},
                        "command": ["sh", "-c", LOAD_LOOP]}]}}}}),
        json!({"apiVersion": "autoscaling.flotilla.io/v1alpha1", "kind": "FederatedHPA",
            "metadata": {"name": "web", "namespace": NS},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "minReplicas": 2, "maxReplicas": 4,
                "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": 50}}}],
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 0}}}}),
    ] {
        crate::apply::apply_json(&client, object).await?;
    }
    println!("hpa: 2 members on real nodes with metrics-server (10 s resolution), hub sync 15 s, agents read usage every 3 s");
    until("both members running their pod", || async { members_total(&members).await == 2 }).await?;
    until("m1's idle usage reported", || async {
        reported_cpu(&client).await.is_some_and(|(u, r)| r > 0 && u < r / 2)
    })
    .await?;
    let m1 = &members[0];
    let (mut up_total, mut up_flotilla, mut down_total, mut down_flotilla) = (vec![], vec![], vec![], vec![]);
    for round in 0..args.rounds {
        exec(m1, "touch /tmp/load", false).await?;
        let switched = Instant::now();
        let reported = until("m1's load reported", || async {
            reported_cpu(&client).await.is_some_and(|(u, r)| r > 0 && u * 100 / r > 60)
        })
        .await?;
        let changed =
            until("replicas up in the members", || async { members_total(&members).await > 2 }).await?;
        up_total.push(changed - switched);
        up_flotilla.push(changed.saturating_duration_since(reported));
        until("the maximum in the members", || async { members_total(&members).await == 4 }).await?;

        exec(m1, "rm -f /tmp/load", true).await?;
        let switched = Instant::now();
        let reported = until("m1's idle reported", || async {
            reported_cpu(&client).await.is_some_and(|(u, r)| r > 0 && u * 100 / r < 40)
        })
        .await?;
        let changed =
            until("replicas down in the members", || async { members_total(&members).await < 4 }).await?;
        down_total.push(changed - switched);
        down_flotilla.push(changed.saturating_duration_since(reported));
        until("the minimum in the members", || async { members_total(&members).await == 2 }).await?;
        until("m1 down to one pod", || async { pods_of(m1).await == 1 }).await?;
        println!(
            "  round {}: up {:.1} s (after the report {:.1} s), down {:.1} s (after the report {:.1} s)",
            round + 1,
            up_total[round].as_secs_f64(),
            up_flotilla[round].as_secs_f64(),
            down_total[round].as_secs_f64(),
            down_flotilla[round].as_secs_f64()
        );
    }
    println!("  load on  -> replicas changed in the members: {}  (goal under 20 s)", summary(up_total));
    println!("  usage reported -> replicas changed:          {}", summary(up_flotilla));
    println!("  load off -> replicas changed in the members: {}", summary(down_total));
    println!("  usage reported -> replicas changed:          {}", summary(down_flotilla));
    controller.check_running()?;
    drop(agents);
    drop(controller);
    drop(metrics);
    drop(members);
    let shutdown = nodes.shutdown();
    for problem in &shutdown.problems {
        println!("  cleanup problem: {problem}");
    }
    Ok(shutdown.problems.is_empty())
}
