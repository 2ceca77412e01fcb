//! What the local fleet records in `<state-dir>/fleet.json`: its phase, the
//! processes it runs (pid and start time, so that a reused pid is never
//! taken for one of them) and the members' components as the node agents
//! report them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use flotilla_api::machine::Machine;
use flotilla_kok_core::hosted::parse_component_name;
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    Starting,
    Ready,
    Failed,
    Stopping,
}

/// `<state-dir>/fleet.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FleetState {
    pub phase: Phase,
    pub message: String,
    pub daemon: ProcessRecord,
    pub started_at_unix: u64,
    pub hub_kubeconfig: PathBuf,
    /// The etcd every cluster of the fleet stores its data in.
    pub etcd: Option<ProcessRecord>,
    pub clusters: Vec<ClusterRecord>,
    /// The node agents and what they run beside the members' components.
    #[serde(default)]
    pub machines: Vec<MachineRecord>,
    /// Where `hub run` serves `/metrics` (`--metrics-addr`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub_metrics_addr: Option<std::net::SocketAddr>,
    /// Where `hub run` serves the cluster proxy (`--proxy-listen`); None
    /// when the host has no address the hub's API server may route to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub_proxy_addr: Option<std::net::SocketAddr>,
}

/// A machine of the fleet: its node agent and the components it runs that
/// belong to no member cluster (the members' etcd).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MachineRecord {
    pub name: String,
    pub agent: ProcessRecord,
    /// The agent's `--state-dir`: its record of running components.
    pub state_dir: PathBuf,
    pub components: Vec<ProcessRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterRecord {
    pub name: String,
    pub role: String,
    pub server: String,
    pub kubeconfig: PathBuf,
    pub nodes: u32,
    pub processes: Vec<ProcessRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProcessRecord {
    pub name: String,
    pub pid: u32,
    /// Start time in clock ticks since boot (`/proc/<pid>/stat` field 22):
    /// with the pid, it identifies the process even if the pid is reused.
    pub start_time: u64,
    pub log: PathBuf,
    /// Times the fleet daemon started it again after it exited.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub restarts: u32,
    /// How its last run ended (e.g. `signal: 9 (SIGKILL)`), once it has
    /// been restarted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl ProcessRecord {
    pub fn of(name: &str, pid: u32, log: PathBuf) -> Self {
        Self {
            name: name.into(),
            pid,
            start_time: proc_start_time(pid).unwrap_or(0),
            log,
            restarts: 0,
            last_exit: None,
        }
    }

    /// True if this very process (not a later one with the same pid) is alive.
    pub fn alive(&self) -> bool {
        flotilla_localkube::process::pid_alive(self.pid) && proc_start_time(self.pid) == Some(self.start_time)
    }
}

fn proc_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command; starttime is field 22 overall,
    // i.e. the 20th after the command.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn state_path(dir: &Path) -> PathBuf {
    dir.join("fleet.json")
}

pub fn read_state(dir: &Path) -> anyhow::Result<Option<FleetState>> {
    let path = state_path(dir);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            Ok(Some(serde_json::from_str(&text).with_context(|| format!("{} is corrupt", path.display()))?))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

pub fn write_state(dir: &Path, state: &FleetState) -> anyhow::Result<()> {
    let path = state_path(dir);
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(state)?)?;
    std::fs::rename(&tmp, &path)?;
    Ok(())
}

/// Where `up` creates the members' HostedClusters (so `flotilla cluster get`
/// finds them without `-n`).
pub const MEMBER_NAMESPACE: &str = "default";
/// The members' component processes as the node agents report them now
/// (a restarted component has a new pid); what was recorded when the hub
/// does not answer.
pub async fn refresh_hosted_processes(state: &mut FleetState) {
    if state.machines.is_empty() {
        return;
    }
    let refreshed = async {
        let kc = kube::config::Kubeconfig::read_from(&state.hub_kubeconfig)?;
        let mut config =
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default()).await?;
        config.connect_timeout = Some(Duration::from_secs(2));
        config.read_timeout = Some(Duration::from_secs(3));
        let client = kube::Client::try_from(config)?;
        let members: Vec<String> =
            state.clusters.iter().filter(|c| c.role == "member").map(|c| c.name.clone()).collect();
        hosted_processes(&client, &state.machines, &members).await
    };
    let Ok(Ok((by_cluster, by_machine))) = tokio::time::timeout(Duration::from_secs(5), refreshed).await
    else {
        return;
    };
    for c in state.clusters.iter_mut().filter(|c| c.role == "member") {
        c.processes = by_cluster.get(&c.name).cloned().unwrap_or_default();
    }
    for m in &mut state.machines {
        m.components = by_machine.get(&m.name).cloned().unwrap_or_default();
    }
}

/// The members' components and the others (etcd members) as the node agents
/// report them: by cluster and by machine.
pub async fn hosted_processes(
    hub: &kube::Client,
    machines: &[MachineRecord],
    clusters: &[String],
) -> anyhow::Result<(BTreeMap<String, Vec<ProcessRecord>>, BTreeMap<String, Vec<ProcessRecord>>)> {
    let listed = Api::<Machine>::all(hub.clone()).list(&ListParams::default()).await?;
    let (mut by_cluster, mut by_machine) = (BTreeMap::new(), BTreeMap::<String, Vec<ProcessRecord>>::new());
    for m in &listed.items {
        let Some(record) = machines.iter().find(|r| r.name == m.name_any()) else { continue };
        for c in m.status.iter().flat_map(|s| s.components.iter()) {
            let Some(pid) = c.pid else { continue };
            let log = record.state_dir.join("logs").join(format!("{}.log", c.name));
            let owner = clusters.iter().find_map(|cluster| {
                parse_component_name(&c.name, MEMBER_NAMESPACE, cluster)
                    .map(|(part, index)| (cluster, part, index))
            });
            match owner {
                Some((cluster, part, index)) => {
                    let name = format!("{}-{index}", part.upstream());
                    by_cluster
                        .entry(cluster.clone())
                        .or_insert_with(Vec::new)
                        .push(ProcessRecord { restarts: c.restarts, ..ProcessRecord::of(&name, pid, log) });
                }
                None => by_machine
                    .entry(record.name.clone())
                    .or_default()
                    .push(ProcessRecord { restarts: c.restarts, ..ProcessRecord::of(&c.name, pid, log) }),
            }
        }
    }
    Ok((by_cluster, by_machine))
}
