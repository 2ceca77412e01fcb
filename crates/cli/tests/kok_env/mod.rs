#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]
//! A Kube-on-Kube site for tests: a hub API server with Flotilla's CRDs,
//! node agents for a few machines on 127.0.0.1, and the EtcdCluster and
//! HostedCluster operators, all in this process; the components the node
//! agents start are killed on drop (also on panic).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use flotilla_api::kok::{EtcdCluster, HostedCluster, HostedClusterPhase};
use flotilla_api::machine::Machine;
use flotilla_kok::etcd::EtcdOperator;
use flotilla_kok::hosted::HostedOperator;
use flotilla_kok_core::hosted::{
    admin_secret_name, component_name, owner_label_value, HostedOperatorConfig, Part, OWNER_LABEL,
};
use flotilla_localkube::{wait_for, Binaries, Cluster, ClusterConfig};
use flotilla_node_agent::NodeAgentConfig;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::task::AbortHandle;

pub const WAIT: Duration = Duration::from_secs(240);
pub const NS: &str = "kok-test";

/// Stops the agents and operators, then kills every process the agents
/// recorded, if it is still that very process.
struct Cleanup {
    state_dirs: Vec<PathBuf>,
    tasks: Mutex<Vec<AbortHandle>>,
}

/// The lines the operators logged, in this process.
static OPERATOR_LOG: Mutex<Vec<u8>> = Mutex::new(Vec::new());
/// How many of the last logged lines a failing test shows.
const LOG_TAIL: usize = 150;

struct OperatorLog;

impl std::io::Write for OperatorLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        OPERATOR_LOG.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The last [`LOG_TAIL`] lines of the operators' log, printed (to the
/// test's captured output) when the test is failing.
fn show_operator_log_if_failing() {
    if !std::thread::panicking() {
        return;
    }
    let log = OPERATOR_LOG.lock().unwrap_or_else(|p| p.into_inner());
    let text = String::from_utf8_lossy(&log);
    let lines: Vec<&str> = text.lines().collect();
    println!("--- the operators' last {} log lines ---", LOG_TAIL.min(lines.len()));
    for line in &lines[lines.len().saturating_sub(LOG_TAIL)..] {
        println!("{line}");
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        show_operator_log_if_failing();
        for t in self.tasks.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            t.abort();
        }
        std::thread::sleep(Duration::from_millis(300));
        for dir in &self.state_dirs {
            flotilla_node_agent::kill_recorded(dir);
            flotilla_node_agent::remove_real_nodes(dir);
        }
    }
}

pub struct KokEnv {
    // Field order is drop order: the processes go before the hub and the
    // directory they live in.
    cleanup: Cleanup,
    pub hub: Cluster,
    pub client: Client,
    pub dir: tempfile::TempDir,
    pub state_dirs: Vec<PathBuf>,
    /// The node agents' tasks, in the order of the machines.
    agents: Vec<AbortHandle>,
}

/// A base port with `count` free ports after it.
pub fn free_range(count: u16) -> u16 {
    flotilla_localkube::ports::free_range(count).unwrap()
}

impl KokEnv {
    /// The site with `machines`, the operators configured with the cluster
    /// version of the binary cache plus `extra_versions`, then `tweak`.
    pub async fn start(
        machines: &[&str],
        extra_versions: BTreeMap<String, PathBuf>,
        tweak: impl FnOnce(&mut HostedOperator),
    ) -> KokEnv {
        Self::start_at(machines, "127.0.0.1", extra_versions, tweak).await
    }

    /// [`start`](Self::start) with the machines at `address` (real nodes
    /// need an address their network namespaces reach, not loopback).
    pub async fn start_at(
        machines: &[&str],
        address: &str,
        extra_versions: BTreeMap<String, PathBuf>,
        tweak: impl FnOnce(&mut HostedOperator),
    ) -> KokEnv {
        // Kept in memory and shown only when a test fails, after its panic
        // message (so the reason comes first in a cut CI log): the
        // operators' steps by default.
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error,flotilla_kok=info"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_writer(|| OperatorLog)
            .try_init();
        let hub = Cluster::start(ClusterConfig::apiserver_only("hub")).await.unwrap();
        let client = hub.client();
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        for crd in flotilla_api::crds() {
            crds.patch(&crd.name_any(), &PatchParams::apply("test").force(), &Patch::Apply(&crd))
                .await
                .unwrap();
        }
        let (m_api, hc_api): (Api<Machine>, Api<HostedCluster>) =
            (Api::all(client.clone()), Api::all(client.clone()));
        wait_for("the CRDs to be served", WAIT, || {
            let (m_api, hc_api) = (m_api.clone(), hc_api.clone());
            async move {
                m_api.list(&Default::default()).await.is_ok()
                    && hc_api.list(&Default::default()).await.is_ok()
            }
        })
        .await;
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}});
        Api::<Namespace>::all(client.clone())
            .patch(NS, &PatchParams::apply("test"), &Patch::Apply(&ns))
            .await
            .unwrap();

        let binaries = Binaries::locate().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let state_dirs: Vec<PathBuf> = machines.iter().map(|m| dir.path().join(m)).collect();
        let cleanup = Cleanup { state_dirs: state_dirs.clone(), tasks: Mutex::new(Vec::new()) };
        for m in machines {
            let machine = json!({"apiVersion": "kok.flotilla.io/v1alpha1", "kind": "Machine",
                                 "metadata": {"name": m}, "spec": {"address": address}});
            m_api.create(&PostParams::default(), &serde_json::from_value(machine).unwrap()).await.unwrap();
        }
        let mut agents = Vec::new();
        for (m, state_dir) in machines.iter().zip(&state_dirs) {
            let mut config = NodeAgentConfig::new(*m, hub.kubeconfig_path().to_path_buf(), state_dir.clone());
            config.tick = Duration::from_millis(200);
            config.heartbeat = Duration::from_secs(2);
            config.resync = Duration::from_secs(1);
            config.stop_grace = Duration::from_secs(5);
            let agent = tokio::spawn(flotilla_node_agent::run(config, std::future::pending()));
            cleanup.tasks.lock().unwrap().push(agent.abort_handle());
            agents.push(agent.abort_handle());
        }
        // Everything shares 127.0.0.1: the operators hand out ports from
        // ranges no other test uses.
        let etcd_base = free_range(10);
        let mut etcd = EtcdOperator::default();
        etcd.plan.bin_dir = binaries.dir().to_path_buf();
        etcd.plan.ports = etcd_base..=etcd_base + 9;
        etcd.resync = Duration::from_secs(1);
        etcd.plan.flotilla_binary = env!("CARGO_BIN_EXE_flotilla").into();
        let base = free_range(40);
        let mut versions = BTreeMap::from([("1.37.2".to_string(), binaries.dir().to_path_buf())]);
        versions.extend(extra_versions);
        let mut hosted = HostedOperator {
            plan: HostedOperatorConfig {
                versions,
                port_range: base..=base + 39,
                flotilla_binary: env!("CARGO_BIN_EXE_flotilla").into(),
                ..Default::default()
            },
            resync: Duration::from_secs(2),
            node_images_dir: flotilla_localkube::real_node::NodeImages::default_dir(),
            ..Default::default()
        };
        tweak(&mut hosted);
        let etcd_task = tokio::spawn(flotilla_kok::etcd::run(client.clone(), etcd));
        let hosted_task = tokio::spawn(flotilla_kok::hosted::run(client.clone(), hosted.clone()));
        let pool_task = tokio::spawn(flotilla_kok::node_pool::run(client.clone(), hosted));
        cleanup.tasks.lock().unwrap().extend([
            etcd_task.abort_handle(),
            hosted_task.abort_handle(),
            pool_task.abort_handle(),
        ]);
        KokEnv { cleanup, hub, client, dir, state_dirs, agents }
    }

    /// What `flotilla cluster create` makes: a dedicated one-member
    /// EtcdCluster labelled as the cluster's own, and the HostedCluster
    /// with `spec` merged over a default one.
    pub async fn create_cluster(&self, name: &str, spec: serde_json::Value) {
        self.create_cluster_with_etcd(name, 1, spec).await
    }

    /// [`create_cluster`](Self::create_cluster) with `members` etcd members.
    pub async fn create_cluster_with_etcd(&self, name: &str, members: i32, spec: serde_json::Value) {
        let label = owner_label_value(NS, name);
        let etcd: EtcdCluster = serde_json::from_value(json!({
            "apiVersion": "kok.flotilla.io/v1alpha1", "kind": "EtcdCluster",
            "metadata": {"name": format!("{name}-etcd"), "namespace": NS, "labels": {OWNER_LABEL: label}},
            "spec": {"members": members, "version": "3.7.4"},
        }))
        .unwrap();
        Api::<EtcdCluster>::namespaced(self.client.clone(), NS)
            .create(&PostParams::default(), &etcd)
            .await
            .unwrap();
        let mut full = json!({"version": "1.37.2", "etcd": {"clusterRef": format!("{name}-etcd")}});
        if let (Some(base), Some(extra)) = (full.as_object_mut(), spec.as_object()) {
            for (k, v) in extra {
                base.insert(k.clone(), v.clone());
            }
        }
        let hc: HostedCluster = serde_json::from_value(json!({
            "apiVersion": "kok.flotilla.io/v1alpha1", "kind": "HostedCluster",
            "metadata": {"name": name, "namespace": NS}, "spec": full,
        }))
        .unwrap();
        self.clusters().create(&PostParams::default(), &hc).await.unwrap();
    }

    /// The machine at `index` dies: its node agent stops reporting and
    /// every process it ran is gone.
    pub async fn lose_machine(&self, index: usize) {
        self.agents[index].abort();
        tokio::time::sleep(Duration::from_millis(300)).await;
        flotilla_node_agent::kill_recorded(&self.state_dirs[index]);
    }

    pub fn clusters(&self) -> Api<HostedCluster> {
        Api::namespaced(self.client.clone(), NS)
    }

    /// Waits until `check` holds for the cluster; panics with its status and
    /// the components' logs otherwise.
    pub async fn wait_cluster(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&HostedCluster) -> bool,
    ) -> HostedCluster {
        let api = self.clusters();
        let last = Mutex::new(None);
        let found = tokio::time::timeout(WAIT, async {
            loop {
                let hc = api.get(name).await.unwrap();
                *last.lock().unwrap() = Some(hc.clone());
                if check(&hc) {
                    return hc;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
        .await;
        match found {
            Ok(hc) => hc,
            Err(_) => panic!(
                "{name}: never {what}; last status {:#?}\nlogs:\n{}",
                last.lock().unwrap().as_ref().and_then(|h| h.status.clone()),
                self.logs()
            ),
        }
    }

    pub async fn wait_phase(&self, name: &str, phase: HostedClusterPhase) -> HostedCluster {
        self.wait_cluster(name, &format!("{phase:?}"), |hc| {
            hc.status.as_ref().and_then(|s| s.phase) == Some(phase)
        })
        .await
    }

    /// The admin kubeconfig as it is now, written to a file.
    pub async fn kubeconfig(&self, name: &str, file: &str) -> PathBuf {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), NS);
        let admin =
            secrets.get(&admin_secret_name(name)).await.unwrap().data.unwrap()["kubeconfig"].0.clone();
        let path = self.dir.path().join(file);
        std::fs::write(&path, &admin).unwrap();
        path
    }

    /// The Machine and pid of a cluster's component instance.
    pub async fn component_pid(&self, cluster: &str, part: Part, index: i32) -> Option<(String, u32)> {
        let machines = Api::<Machine>::all(self.client.clone()).list(&Default::default()).await.ok()?.items;
        let name = component_name(part, NS, cluster, index);
        machines.iter().find_map(|m| {
            let status = m.status.as_ref()?.components.iter().find(|c| c.name == name)?;
            Some((m.name_any(), status.pid?))
        })
    }

    pub fn logs(&self) -> String {
        let mut out = String::new();
        for d in &self.state_dirs {
            let Ok(entries) = std::fs::read_dir(d.join("logs")) else { continue };
            for e in entries.flatten() {
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(12).collect();
                out.push_str(&format!(
                    "--- {}:\n{}\n",
                    e.path().display(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                ));
            }
        }
        out
    }
}

pub async fn kubectl(kubeconfig: &Path, args: &[&str]) -> (bool, String) {
    let out = tokio::process::Command::new(Binaries::locate().unwrap().path("kubectl"))
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}
