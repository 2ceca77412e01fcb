//! `flotilla-bench faults`: what a fault does to the fleet's workloads.
//! Real API servers sharing one real etcd (as the local fleet's members
//! do), one hollow node each, a real `flotilla hub run` and real `flotilla
//! agent` processes; N Deployments divided evenly. Each fault is followed
//! until the fleet settles, and prints: time to converge, replicas that
//! moved, lost and duplicated replicas after settling (both must be 0), and
//! for failover and return the peak surplus and the failover time after the
//! toleration ran out.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use flotilla_api::work::ResourceBinding;
use flotilla_api::ManagedCluster;
use flotilla_localkube::{Binaries, Cluster, ClusterConfig, Etcd, ManagedProcess, ProcessSpec};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Patch, PatchParams};
use kube::Api;
use serde_json::json;

#[derive(Args, Debug)]
pub struct FaultsArgs {
    /// Member clusters (one hollow node each, one shared etcd).
    #[arg(long, default_value_t = 3)]
    pub members: usize,
    /// Deployments divided over the members (one replica per member each).
    #[arg(long, default_value_t = 40)]
    pub templates: usize,
    /// The hub's default toleration of its health taints (hub run
    /// --default-toleration-seconds); short so the run stays short.
    #[arg(long, default_value_t = 20)]
    pub toleration_seconds: u64,
    /// How long a returning member must be healthy before replicas return.
    #[arg(long, default_value_t = 10)]
    pub return_after_seconds: u64,
    /// How long each blip (member API, shared etcd) lasts.
    #[arg(long, default_value_t = 5)]
    pub blip_seconds: u64,
}

const NAMESPACE: &str = "faults";

/// Replicas per (member, template): spec and available, from the members
/// that answer.
type Snapshot = BTreeMap<(String, String), (i32, i32)>;

struct Bench {
    hub: Cluster,
    etcd: Etcd,
    members: Vec<Cluster>,
    agents: Vec<Option<ManagedProcess>>,
    agent_specs: Vec<ProcessSpec>,
    _controller: ManagedProcess,
    templates: usize,
    _tmp: tempfile::TempDir,
}

impl Bench {
    async fn snapshot(&self) -> Snapshot {
        let mut out = Snapshot::new();
        for m in &self.members {
            let api: Api<Deployment> = Api::namespaced(m.client(), NAMESPACE);
            let Ok(list) = tokio::time::timeout(Duration::from_secs(2), api.list(&Default::default())).await
            else {
                continue;
            };
            for d in list.into_iter().flat_map(|l| l.items) {
                let spec = d.spec.replicas.unwrap_or(1);
                let available = d.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0);
                out.insert((m.name().to_string(), d.metadata.name.unwrap_or_default()), (spec, available));
            }
        }
        out
    }

    /// Each binding's division, by template.
    async fn divisions(&self) -> anyhow::Result<BTreeMap<String, Vec<(String, i32)>>> {
        let api: Api<ResourceBinding> = Api::namespaced(self.hub.client(), NAMESPACE);
        Ok(api
            .list(&Default::default())
            .await?
            .items
            .into_iter()
            .map(|b| {
                let division = b.spec.spec.clusters.iter().map(|c| (c.name.clone(), c.replicas)).collect();
                (b.spec.spec.resource.name, division)
            })
            .collect())
    }

    fn even(&self) -> Vec<(String, i32)> {
        self.members.iter().map(|m| (m.name().to_string(), 1)).collect()
    }

    /// Settled: every binding evenly divided (or, with `without`, over the
    /// others), every member copy available at its spec, every template
    /// at its count.
    async fn settled(&self, without: Option<&str>) -> anyhow::Result<bool> {
        let wanted: Vec<(String, i32)> = match without {
            None => self.even(),
            Some(gone) => {
                let rest: Vec<&Cluster> = self.members.iter().filter(|m| m.name() != gone).collect();
                let n = self.members.len() as i32;
                // Karmada's remainder rule: the first clusters by name get one more.
                let base = n / rest.len() as i32;
                let extra = n % rest.len() as i32;
                rest.iter()
                    .enumerate()
                    .map(|(i, m)| (m.name().to_string(), base + i32::from((i as i32) < extra)))
                    .collect()
            }
        };
        let divisions = self.divisions().await?;
        if divisions.len() != self.templates || divisions.values().any(|d| d != &wanted) {
            return Ok(false);
        }
        let snap = self.snapshot().await;
        let (lost, duplicated) = self.count(&snap, without);
        Ok(lost == 0 && duplicated == 0 && snap.values().all(|(spec, available)| spec == available))
    }

    /// Lost and duplicated replicas: per template, the members' available
    /// replicas against the template's count (a member not answering, or
    /// `without`, is left out).
    fn count(&self, snap: &Snapshot, without: Option<&str>) -> (i32, i32) {
        let wanted = self.members.len() as i32;
        let mut lost = 0;
        let mut duplicated = 0;
        for t in 0..self.templates {
            let name = format!("app-{t:03}");
            let have: i32 = snap
                .iter()
                .filter(|((m, n), _)| n == &name && Some(m.as_str()) != without)
                .map(|(_, (_, available))| available)
                .sum();
            lost += (wanted - have).max(0);
            duplicated += (have - wanted).max(0);
        }
        (lost, duplicated)
    }

    fn spec_total(snap: &Snapshot) -> i32 {
        snap.values().map(|(spec, _)| spec).sum()
    }

    async fn wait_settled(
        &self,
        what: &str,
        without: Option<&str>,
        limit: Duration,
    ) -> anyhow::Result<Duration> {
        let started = Instant::now();
        while !self.settled(without).await? {
            if started.elapsed() > limit {
                bail!("{what}: the fleet did not settle within {}s", limit.as_secs());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(started.elapsed())
    }

    async fn available(&self, name: &str) -> anyhow::Result<bool> {
        let api: Api<ManagedCluster> = Api::all(self.hub.client());
        Ok(api.get(name).await?.condition("Available").is_some_and(|c| c.status == "True"))
    }
}

fn report(
    fault: &str,
    converged: Duration,
    moved: usize,
    snap: &Snapshot,
    bench: &Bench,
    without: Option<&str>,
) {
    let (lost, duplicated) = bench.count(snap, without);
    println!(
        "  {fault}: converged {:.1} s after the fault ended; {moved} templates moved; lost {lost}, duplicated {duplicated}",
        converged.as_secs_f64()
    );
}

pub async fn faults(args: FaultsArgs) -> anyhow::Result<bool> {
    if args.members < 2 {
        bail!("--members must be at least 2 (a failover needs somewhere to go)");
    }
    let bench = start(&args).await?;
    let wanted_total = (args.templates * args.members) as i32;
    let even = bench.even();
    println!(
        "fleet: {} members sharing one etcd, {} Deployments x {} replicas divided evenly; toleration {} s, return after {} s",
        args.members, args.templates, args.members, args.toleration_seconds, args.return_after_seconds
    );
    let mut bench = bench;

    // 1. A member's API server restarts.
    let before = bench.divisions().await?;
    bench.members[0].stop("kube-apiserver")?;
    tokio::time::sleep(Duration::from_secs(args.blip_seconds)).await;
    bench.members[0].restart("kube-apiserver").await?;
    let converged = bench.wait_settled("member API restart", None, Duration::from_secs(120)).await?;
    let moved = count_moved(&before, &bench.divisions().await?);
    report(
        &format!("member API down {} s", args.blip_seconds),
        converged,
        moved,
        &bench.snapshot().await,
        &bench,
        None,
    );

    // 2. The shared etcd stops and comes back: every member at once.
    let before = bench.divisions().await?;
    bench.etcd.process_mut().stop(Duration::ZERO);
    tokio::time::sleep(Duration::from_secs(args.blip_seconds)).await;
    bench.etcd.process_mut().restart()?;
    let converged = bench.wait_settled("shared etcd blip", None, Duration::from_secs(180)).await?;
    let moved = count_moved(&before, &bench.divisions().await?);
    report(
        &format!("shared etcd down {} s", args.blip_seconds),
        converged,
        moved,
        &bench.snapshot().await,
        &bench,
        None,
    );

    // 3. A member is gone for good: failover after the toleration.
    let last = bench.members.len() - 1;
    let gone = bench.members[last].name().to_string();
    bench.agents[last].take();
    bench.members[last].stop("kube-apiserver")?;
    let clusters: Api<ManagedCluster> = Api::all(bench.hub.client());
    let tainted_at = loop {
        let mc = clusters.get(&gone).await?;
        if let Some(t) = mc.spec.taints.iter().find(|t| t.key.starts_with("cluster.flotilla.io/")) {
            break t.time_added.clone().context("the hub's taint has no timeAdded")?.0;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let toleration_ends =
        tainted_at + k8s_openapi::jiff::SignedDuration::from_secs(args.toleration_seconds as i64);
    let mut peak = 0;
    let mut rescheduled = None;
    let started = Instant::now();
    loop {
        let snap = bench.snapshot().await;
        peak = peak.max(Bench::spec_total(&snap));
        if rescheduled.is_none() {
            let divisions = bench.divisions().await?;
            if divisions.values().all(|d| d.iter().all(|(c, _)| c != &gone)) {
                rescheduled = Some(k8s_openapi::jiff::Timestamp::now().duration_since(toleration_ends));
            }
        }
        if bench.settled(Some(&gone)).await? {
            break;
        }
        if started.elapsed() > Duration::from_secs(args.toleration_seconds + 180) {
            bail!("failover: the fleet did not settle without {gone}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after_toleration = k8s_openapi::jiff::Timestamp::now().duration_since(toleration_ends);
    let gone_share = args.templates as i32;
    let (lost, duplicated) = bench.count(&bench.snapshot().await, Some(&gone));
    let rescheduled = rescheduled.map_or("?".to_string(), |d| format!("{:.1}", d.as_secs_f64()));
    println!(
        "  member gone for good: every binding left {gone} {rescheduled} s after the toleration ran out, \
         replicas available elsewhere {:.1} s after it (goal < 10 s); \
         peak {} replicas on the remaining members (+{} while {}'s {} unreachable copies may still run); lost {}, duplicated {}",
        after_toleration.as_secs_f64(),
        peak,
        (peak + gone_share - wanted_total).max(0),
        gone,
        gone_share,
        lost,
        duplicated,
    );

    // 4. It comes back: the division returns within the surge.
    bench.members[last].restart("kube-apiserver").await?;
    bench.agents[last] = Some(ManagedProcess::spawn(bench.agent_specs[last].clone())?);
    while !bench.available(&gone).await? {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let back_at = Instant::now();
    let mut peak = 0;
    loop {
        let snap = bench.snapshot().await;
        // The returning member's stale copies go first; count the surplus
        // of the move itself once they are gone.
        let stale = snap.iter().any(|((m, _), (spec, _))| m == &gone && *spec > 1);
        if !stale {
            peak = peak.max(Bench::spec_total(&snap));
        }
        let divisions = bench.divisions().await?;
        if divisions.values().all(|d| d == &even) && bench.settled(None).await? {
            break;
        }
        if back_at.elapsed() > Duration::from_secs(args.return_after_seconds + 240) {
            bail!("return: the division did not come back to {gone}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let snap = bench.snapshot().await;
    let (lost, duplicated) = bench.count(&snap, None);
    println!(
        "  member back: division restored {:.1} s after it was Available again (stabilisation {} s); \
         peak surplus {} replicas (max-surge 25% of each template); lost {lost}, duplicated {duplicated}",
        back_at.elapsed().as_secs_f64(),
        args.return_after_seconds,
        (peak - wanted_total).max(0),
    );
    Ok(true)
}

fn count_moved(
    before: &BTreeMap<String, Vec<(String, i32)>>,
    after: &BTreeMap<String, Vec<(String, i32)>>,
) -> usize {
    before.iter().filter(|(name, division)| after.get(*name) != Some(division)).count()
}

async fn start(args: &FaultsArgs) -> anyhow::Result<Bench> {
    let bin_dir = flotilla_cli::binaries::ensure(None)?;
    let binaries = Binaries::in_dir(&bin_dir)?;
    let tmp = tempfile::tempdir()?;
    let etcd = Etcd::start(&binaries, &tmp.path().join("shared-etcd")).await?;
    let mut hub_config = ClusterConfig::hub("faults-hub");
    hub_config.binaries = Some(binaries.clone());
    let member_configs: Vec<ClusterConfig> = (0..args.members)
        .map(|i| {
            let name = format!("member-{}", i + 1);
            let mut c = ClusterConfig::new(name.clone()).with_nodes(1).with_etcd(etcd.client_url());
            c.etcd_prefix = Some(format!("/clusters/{name}"));
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
    let controller = ManagedProcess::spawn(
        ProcessSpec::new("flotilla-hub", crate::flotilla_binary::path()?, tmp.path().join("hub.log"))
            .env("FLOTILLA_LOG", "info")
            .args(["hub", "run", "--auto-accept", "--kubeconfig"])
            .arg(hub.kubeconfig_path().display().to_string())
            .args(["--default-toleration-seconds", &args.toleration_seconds.to_string()])
            .args(["--return-after-seconds", &args.return_after_seconds.to_string()]),
    )?;
    let (_, bootstrap) = flotilla_cli::fleetctl::create_token(
        &hub.client(),
        hub.kubeconfig_path(),
        1,
        Some(tmp.path().join("bootstrap.kubeconfig")),
    )
    .await?;
    let mut agents = Vec::new();
    let mut agent_specs = Vec::new();
    for m in &members {
        let name = m.name().to_string();
        let spec = ProcessSpec::new(
            format!("agent-{name}"),
            crate::flotilla_binary::path()?,
            tmp.path().join(format!("agent-{name}.log")),
        )
        .args(["agent", "--cluster", &name, "--kubeconfig"])
        .arg(m.kubeconfig_path().display().to_string())
        .arg("--hub-kubeconfig")
        .arg(bootstrap.display().to_string())
        .arg("--state-dir")
        .arg(tmp.path().join("agents").join(&name).display().to_string());
        agents.push(Some(ManagedProcess::spawn(spec.clone())?));
        agent_specs.push(spec);
    }
    let clusters: Api<ManagedCluster> = Api::all(hub.client());
    let deadline = Instant::now() + Duration::from_secs(120);
    for m in &members {
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
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // They share one etcd: one failure domain.
        let label =
            json!({"metadata": {"labels": {flotilla_apps_core::failover::ETCD_DOMAIN_LABEL: "shared"}}});
        clusters.patch(m.name(), &PatchParams::default(), &Patch::Merge(label)).await?;
    }
    let hub_client = hub.client();
    crate::apply::apply_json(
        &hub_client,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}),
    )
    .await?;
    crate::apply::apply_json(
        &hub_client,
        json!({"apiVersion": "policy.flotilla.io/v1alpha1", "kind": "PropagationPolicy",
            "metadata": {"name": "even", "namespace": NAMESPACE},
            "spec": {"resourceSelectors": [{"apiVersion": "apps/v1", "kind": "Deployment"}],
                "placement": {"replicaScheduling": {"replicaSchedulingType": "Divided",
                    "replicaDivisionPreference": "Weighted"}}}}),
    )
    .await?;
    for t in 0..args.templates {
        let name = format!("app-{t:03}");
        crate::apply::apply_json(
            &hub_client,
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": name, "namespace": NAMESPACE},
                "spec": {"replicas": args.members, "selector": {"matchLabels": {"app": name}},
                    "template": {"metadata": {"labels": {"app": name}},
                        "spec": {"containers": [{"name": "app", "image": "nginx:1.25",
                            "resources": {"requests": {"cpu": "1m", "memory": "1Mi"}}}]}}}}),
        )
        .await?;
    }
    let bench = Bench {
        hub,
        etcd,
        members,
        agents,
        agent_specs,
        _controller: controller,
        templates: args.templates,
        _tmp: tmp,
    };
    let took = bench.wait_settled("initial placement", None, Duration::from_secs(300)).await?;
    println!("  initial placement settled in {:.1} s", took.as_secs_f64());
    Ok(bench)
}
