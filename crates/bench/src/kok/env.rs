//! The environment `flotilla-bench kok` measures in: a hub, the operators
//! (`flotilla hub run`) and node agents, all children of this process.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use flotilla_api::kok::{EtcdCluster, HostedCluster, HostedClusterPhase};
use flotilla_api::machine::Machine;
use flotilla_kok_core::hosted::{owner_label_value, OWNER_LABEL};
use flotilla_localkube::{Binaries, Cluster, ClusterConfig, ManagedProcess, ProcessSpec};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use super::args::KokArgs;
use super::report::*;

pub const NS: &str = "kok-bench";
/// The version clusters are created on (the binary cache's default).
pub const VERSION: &str = "1.37.2";
/// The previous minor: the upgrade run starts there and moves to
/// [`VERSION`], both real builds from the binary cache.
pub const PREVIOUS_VERSION: &str = "1.36.3";
pub const MACHINES: [&str; 2] = ["m1", "m2"];
pub const POLL: Duration = Duration::from_millis(100);

/// The hub, the operator process and the node agents. Dropping it (also on
/// panic, or when the bench future is dropped on Ctrl-C) stops them all and
/// then every component the agents started, which outlive them by design.
pub struct Env {
    pub hub: Cluster,
    pub client: Client,
    pub dir: PathBuf,
    pub operator: ManagedProcess,
    pub agents: Vec<ManagedProcess>,
    pub state_dirs: Vec<PathBuf>,
    // Last, so the directory goes after everything that writes into it.
    pub _tmp: Option<tempfile::TempDir>,
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
pub fn free_port_range(count: u16) -> anyhow::Result<u16> {
    let mut first = 20000u16;
    while first + count < 32000 {
        if (first..first + count).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()) {
            return Ok(first);
        }
        first += count;
    }
    bail!("no {count} free loopback ports between 20000 and 32000")
}

pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<()>
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
    pub async fn start(args: &KokArgs, bin_dir: &Path) -> anyhow::Result<Env> {
        Self::start_logging(args.work_dir.as_deref(), bin_dir, "warn,flotilla_kok=info").await
    }

    /// [`start`](Self::start) with `hub run` logging at `log` (a
    /// `FLOTILLA_LOG` filter) into `<dir>/logs/hub-run.log`.
    pub async fn start_logging(work_dir: Option<&Path>, bin_dir: &Path, log: &str) -> anyhow::Result<Env> {
        let (tmp, dir) = match work_dir {
            Some(d) => {
                std::fs::create_dir_all(d)?;
                (None, d.to_path_buf())
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

        let previous_dir = Binaries::locate_version(PREVIOUS_VERSION)
            .with_context(|| {
                format!("the {PREVIOUS_VERSION} build (scripts/k8s-binaries.sh {PREVIOUS_VERSION})")
            })?
            .dir()
            .to_path_buf();
        // Five ports per cluster (three per control-plane instance, two
        // per kubelet); room for the largest batch several times over.
        let ports = free_port_range(500)?;
        let exe = crate::flotilla_binary::path()?;
        let kubeconfig = hub.kubeconfig_path().display().to_string();
        // The etcd operator's member ports are fixed (32000-32767) under
        // `hub run`; another fleet on this host using them would clash.
        if std::net::TcpListener::bind(("127.0.0.1", 32000)).is_err() {
            println!("warning: port 32000 (first etcd member port of `hub run`) is in use on this host");
        }
        let operator = ManagedProcess::spawn(
            ProcessSpec::new("flotilla-hub-run", exe.clone(), dir.join("logs/hub-run.log"))
                .env("FLOTILLA_LOG", log)
                .args(["hub", "run", "--auto-accept", "--kubeconfig", &kubeconfig])
                .arg("--kok-version")
                .arg(format!("{VERSION}={}", bin_dir.display()))
                .arg("--kok-version")
                .arg(format!("{PREVIOUS_VERSION}={}", previous_dir.display()))
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

    pub fn check_running(&mut self) -> anyhow::Result<()> {
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

    pub fn clusters(&self) -> Api<HostedCluster> {
        Api::namespaced(self.client.clone(), NS)
    }

    pub fn etcds(&self) -> Api<EtcdCluster> {
        Api::namespaced(self.client.clone(), NS)
    }

    pub async fn create_etcd(&self, name: &str, owner: Option<&str>) -> anyhow::Result<()> {
        let labels = match owner {
            Some(cluster) => json!({OWNER_LABEL: owner_label_value(NS, cluster)}),
            None => json!({}),
        };
        let etcd: EtcdCluster = serde_json::from_value(json!({
            "apiVersion": "kok.flotilla.io/v1alpha1", "kind": "EtcdCluster",
            "metadata": {"name": name, "namespace": NS, "labels": labels},
            "spec": {"members": 1, "version": "3.7.4"},
        }))?;
        self.etcds().create(&PostParams::default(), &etcd).await?;
        Ok(())
    }

    pub async fn create_cluster(
        &self,
        name: &str,
        etcd: serde_json::Value,
        nodes: i32,
        replicas: i32,
        version: &str,
    ) -> anyhow::Result<()> {
        let hc: HostedCluster = serde_json::from_value(json!({
            "apiVersion": "kok.flotilla.io/v1alpha1", "kind": "HostedCluster",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"version": version, "etcd": etcd, "nodes": {"count": nodes},
                     "controlPlane": {"replicas": replicas}},
        }))?;
        self.clusters().create(&PostParams::default(), &hc).await?;
        Ok(())
    }

    /// A cluster on `version` with its own one-member EtcdCluster (deleted with it).
    pub async fn create_dedicated(
        &self,
        name: &str,
        nodes: i32,
        replicas: i32,
        version: &str,
    ) -> anyhow::Result<()> {
        let etcd = format!("{name}-etcd");
        self.create_etcd(&etcd, Some(name)).await?;
        self.create_cluster(name, json!({"clusterRef": etcd}), nodes, replicas, version).await
    }

    /// Waits until every run's cluster is Ready, noting when each of its
    /// conditions first turned True.
    pub async fn wait_ready(&mut self, runs: &mut [Run], timeout: Duration) -> anyhow::Result<()> {
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
    pub async fn delete_all(&mut self) -> anyhow::Result<()> {
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

    pub fn operator_rss(&self) -> anyhow::Result<Rss> {
        self.operator.pid().and_then(rss_of).context("reading the operator's /proc status")
    }
}

pub fn gone_is_fine(result: Result<(), kube::Error>) -> Result<(), kube::Error> {
    match result {
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        other => other,
    }
}
