//! `flotilla-bench rollout`: progressive delivery's figures on a fleet of
//! real processes: a hub (`flotilla hub run`), members with hollow nodes
//! sharing one etcd, and a last member whose node is a real one
//! (containerd, kubelet) so a bad release really crashes. A
//! RolloutStrategy cuts the members into three waves by label stages
//! (canary: 1, early: 2, the rest: 7 with the real member).
//!
//! - Overhead: a healthy change with zero soak; for each wave after the
//!   first, from the last cluster of the wave before reported healthy on
//!   the new revision (as the hub's Works say) to the first Work of the
//!   wave written with it: what the rollout adds on top of distribution.
//! - Failure: a release whose container exits reaches wave 3; from the
//!   failure visible in the real member (its pod's container terminated
//!   with an error) to the rollback started (the Rollout `RolledBack`) and
//!   to every member back on the good release and available.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use flotilla_api::rollout::Rollout;
use flotilla_api::work::Work;
use flotilla_apps_core::rollout::{report_from_work, Health, REVISION_ANNOTATION};
use flotilla_localkube::real_node::{NodeImages, RealNodeConfig, RealNodes, BUSYBOX_IMAGE};
use flotilla_localkube::{Binaries, Cluster, ClusterConfig, Etcd};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, Patch, PatchParams};
use kube::Api;
use serde_json::json;

use crate::measure::percentile;

#[derive(Args, Debug)]
pub struct RolloutArgs {
    /// Member clusters (the last on a real node); at least 4.
    #[arg(long, default_value_t = 10)]
    pub members: usize,
    /// Healthy changes to time the overhead on.
    #[arg(long, default_value_t = 3)]
    pub changes: usize,
    /// Bad releases to time the rollback on.
    #[arg(long, default_value_t = 5)]
    pub failures: usize,
}

const NS: &str = "bench";
const ROLLOUT: &str = "web-deployment";
const WAIT: Duration = Duration::from_secs(180);
const FAILURE_SOAK_SECONDS: i64 = 5;

fn deployment(command: &str) -> serde_json::Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": NS},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "main",
                    "image": BUSYBOX_IMAGE, "imagePullPolicy": "IfNotPresent",
                    "command": ["sh", "-c", command]}]}}},
    })
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// The member runs `command`, rolled out and available.
async fn runs(member: &Cluster, command: &str) -> bool {
    let Ok(Some(d)) = Api::<Deployment>::namespaced(member.client(), NS).get_opt("web").await else {
        return false;
    };
    let current = d.spec.template.spec.as_ref().and_then(|s| s.containers.first()?.command.clone());
    let status = d.status.unwrap_or_default();
    current.is_some_and(|c| c.last().map(String::as_str) == Some(command))
        && status.observed_generation == d.metadata.generation
        && status.updated_replicas == Some(1)
        && status.available_replicas == Some(1)
        && status.replicas == Some(1)
}

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
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn rollout_status(rollouts: &Api<Rollout>) -> Option<flotilla_api::rollout::RolloutStatus> {
    rollouts.get_opt(ROLLOUT).await.ok().flatten().and_then(|r| r.status)
}

pub async fn rollout(args: RolloutArgs) -> anyhow::Result<bool> {
    if args.members < 4 {
        bail!("--members must be at least 4 (three waves and a real member)");
    }
    let bin_dir = flotilla_cli::binaries::ensure(None)?;
    let binaries = Binaries::in_dir(&bin_dir)?;
    let mut nodes = RealNodes::reserve_with(binaries.clone(), NodeImages::locate()?)?;
    let tmp = tempfile::tempdir()?;
    let etcd = Etcd::start(&binaries, &tmp.path().join("etcd")).await?;
    let names: Vec<String> = (1..=args.members).map(|i| format!("m{i:02}")).collect();
    let real = names[names.len() - 1].clone();
    let configs: Vec<ClusterConfig> = names
        .iter()
        .map(|name| {
            let mut c = if *name == real {
                ClusterConfig::new(name.clone()).for_real_nodes(nodes.gateway())
            } else {
                ClusterConfig::new(name.clone()).with_nodes(1)
            };
            c = c.with_etcd(etcd.client_url());
            c.etcd_prefix = Some(format!("/clusters/{name}"));
            c.binaries = Some(binaries.clone());
            c
        })
        .collect();
    let mut hub_config = ClusterConfig::hub("bench-hub");
    hub_config.binaries = Some(binaries.clone());
    println!(
        "rollout: {} members (hollow nodes, one shared etcd; {real} on a real node), waves by stage 1 / 2 / {}",
        args.members,
        args.members - 3
    );
    let (hub, members) = tokio::join!(
        Cluster::start(hub_config),
        futures::future::join_all(configs.into_iter().map(Cluster::start))
    );
    let hub = hub?;
    let members: Vec<Cluster> = members.into_iter().collect::<Result<_, _>>()?;
    let real_member = members.iter().find(|m| m.name() == real).context("the real member")?;
    nodes.start(real_member, vec![RealNodeConfig::new(format!("{real}-node"))], WAIT).await?;
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
    let clusters: Api<flotilla_api::ManagedCluster> = Api::all(client.clone());
    for (i, name) in names.iter().enumerate() {
        let stage = match i {
            0 => Some("canary"),
            1 | 2 => Some("early"),
            _ => None,
        };
        let patch = json!({"metadata": {"labels": {"bench.flotilla.io/stage": stage}}});
        clusters.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    }
    for object in [
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}),
        json!({"apiVersion": "policy.flotilla.io/v1alpha1", "kind": "PropagationPolicy",
            "metadata": {"name": "web", "namespace": NS},
            "spec": {"resourceSelectors": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}]}}),
        json!({"apiVersion": "rollout.flotilla.io/v1alpha1", "kind": "RolloutStrategy",
            "metadata": {"name": "gray", "namespace": NS},
            "spec": {"resourceSelectors": [{"apiVersion": "apps/v1", "kind": "Deployment"}],
                "waves": {"stages": [
                    {"name": "canary", "clusterLabels": {"bench.flotilla.io/stage": "canary"}},
                    {"name": "early", "clusterLabels": {"bench.flotilla.io/stage": "early"}}]},
                "soakSeconds": 0, "progressDeadlineSeconds": 120, "maxRestarts": 0}}),
    ] {
        crate::apply::apply_json(&client, object).await?;
    }
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let rollouts: Api<Rollout> = Api::namespaced(client.clone(), NS);
    let ssa = PatchParams::apply("bench").force();
    let mut good = "exec sleep 3600".to_string();
    deployments.patch("web", &ssa, &Patch::Apply(&deployment(&good))).await?;
    for m in &members {
        until(&format!("{} running the first release", m.name()), || runs(m, &good)).await?;
    }

    // Overhead: per wave, last of the wave before healthy -> first of the
    // wave written.
    println!("overhead: a healthy change, zero soak ({} changes)", args.changes);
    let mut gaps = Vec::new();
    let mut totals = Vec::new();
    for i in 0..args.changes {
        good = format!("exec sleep {}", 3601 + i);
        let started = Instant::now();
        deployments.patch("web", &ssa, &Patch::Apply(&deployment(&good))).await?;
        let (written, healthy) = watch_waves(&client, &rollouts, &names).await?;
        totals.push(started.elapsed());
        let waves = rollout_status(&rollouts).await.map(|s| s.waves).unwrap_or_default();
        for pair in waves.windows(2) {
            let done = pair[0].clusters.iter().filter_map(|c| healthy.get(c)).max();
            let next = pair[1].clusters.iter().filter_map(|c| written.get(c)).min();
            if let (Some(done), Some(next)) = (done, next) {
                gaps.push(next.saturating_duration_since(*done));
            }
        }
    }
    gaps.sort();
    totals.sort();
    if gaps.is_empty() {
        bail!("no wave transition was observed");
    }
    println!(
        "  per wave: p50 {}  max {}  (n={}; goal under 200 ms)",
        ms(percentile(&gaps, 0.5)),
        ms(gaps[gaps.len() - 1]),
        gaps.len()
    );
    println!("  whole change, 3 waves: p50 {:.1} s", percentile(&totals, 0.5).as_secs_f64());

    // Failures: a release whose container exits, caught in wave 3. A
    // container that exits after starting looks available for a moment
    // (its Deployment completes, then the pod crashes): a soak is what
    // catches it, so the waves soak here.
    let soak = json!({"spec": {"soakSeconds": FAILURE_SOAK_SECONDS}});
    Api::<flotilla_api::rollout::RolloutStrategy>::namespaced(client.clone(), NS)
        .patch("gray", &PatchParams::default(), &Patch::Merge(&soak))
        .await?;
    println!(
        "failure: a crashing release caught in wave 3 on {real} ({} releases, {FAILURE_SOAK_SECONDS}s soaks)",
        args.failures
    );
    let pods: Api<Pod> = Api::namespaced(real_member.client(), NS);
    let mut started_rollback = Vec::new();
    let mut all_back = Vec::new();
    for i in 0..args.failures {
        let bad = format!("echo broken release {i}; exit 1");
        let before = rollout_status(&rollouts).await.map_or(0, |s| s.revision_number);
        deployments.patch("web", &ssa, &Patch::Apply(&deployment(&bad))).await?;
        let visible = until("the crash visible in the real member", || async {
            let Ok(list) = pods.list(&ListParams::default()).await else { return false };
            list.items.iter().any(|p| {
                let statuses =
                    p.status.as_ref().and_then(|s| s.container_statuses.clone()).unwrap_or_default();
                let command = p.spec.as_ref().and_then(|s| s.containers.first()?.command.clone());
                command.is_some_and(|c| c.last() == Some(&bad))
                    && statuses.iter().any(|c| {
                        let state = c.state.clone().unwrap_or_default();
                        let last = c.last_state.clone().unwrap_or_default();
                        state.terminated.iter().chain(last.terminated.iter()).any(|t| t.exit_code != 0)
                    })
            })
        })
        .await?;
        let rolled_back = until("the rollback", || async {
            rollout_status(&rollouts)
                .await
                .is_some_and(|s| s.phase == "RolledBack" && s.revision_number > before)
        })
        .await?;
        let mut back = visible;
        for m in &members {
            back =
                back.max(until(&format!("{} back on the good release", m.name()), || runs(m, &good)).await?);
        }
        started_rollback.push(rolled_back.saturating_duration_since(visible));
        all_back.push(back.saturating_duration_since(visible));
    }
    started_rollback.sort();
    all_back.sort();
    if !started_rollback.is_empty() {
        println!(
            "  failure visible -> rollback started: p50 {}  max {}  (goal p50 under 2 s)",
            ms(percentile(&started_rollback, 0.5)),
            ms(started_rollback[started_rollback.len() - 1])
        );
        println!(
            "  failure visible -> all {} members back and available: p50 {:.1} s  max {:.1} s  (goal under 15 s)",
            args.members,
            percentile(&all_back, 0.5).as_secs_f64(),
            all_back[all_back.len() - 1].as_secs_f64()
        );
    }
    controller.check_running()?;
    drop(agents);
    drop(controller);
    drop(members);
    let shutdown = nodes.shutdown();
    for problem in &shutdown.problems {
        println!("  cleanup problem: {problem}");
    }
    drop(etcd);
    Ok(shutdown.problems.is_empty())
}

/// Follows the template's Works until the rollout is complete: when each
/// cluster's Work was first written with the new revision, and when each
/// was first reported healthy on it.
async fn watch_waves(
    hub: &kube::Client,
    rollouts: &Api<Rollout>,
    names: &[String],
) -> anyhow::Result<(BTreeMap<String, Instant>, BTreeMap<String, Instant>)> {
    let works: Api<Work> = Api::all(hub.clone());
    let mut written = BTreeMap::new();
    let mut healthy = BTreeMap::new();
    let deadline = Instant::now() + WAIT;
    // The revision asked for, once the Rollout says it (it is new when its
    // number changed).
    let before = rollout_status(rollouts).await.map(|s| s.revision_number).unwrap_or(0);
    let revision = loop {
        if let Some(s) = rollout_status(rollouts).await.filter(|s| s.revision_number > before) {
            break s.revision;
        }
        if Instant::now() > deadline {
            bail!("the Rollout never took the change");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    while healthy.len() < names.len() {
        let now = Instant::now();
        for w in works.list(&ListParams::default()).await?.items {
            let Some(cluster) =
                w.metadata.namespace.as_deref().and_then(|n| n.strip_prefix("flotilla-cluster-"))
            else {
                continue;
            };
            let carries =
                w.metadata.annotations.as_ref().and_then(|a| a.get(REVISION_ANNOTATION)) == Some(&revision);
            if carries {
                written.entry(cluster.to_string()).or_insert(now);
            }
            let report = report_from_work(cluster, Some(&w), true, 0);
            if report.health == Health::Healthy && report.revision.as_deref() == Some(revision.as_str()) {
                healthy.entry(cluster.to_string()).or_insert(now);
            }
        }
        if Instant::now() > deadline {
            bail!("the healthy change did not reach every member ({} of {})", healthy.len(), names.len());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok((written, healthy))
}
