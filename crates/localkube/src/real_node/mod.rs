//! Real worker nodes on this machine: containerd, a real kubelet and
//! kube-proxy per node, running real containers from local images (see
//! `scripts/node-runtime.sh`). Needs root, cgroup v1 hierarchies and the
//! runtime that script installs.
//!
//! A [`RealNodes`] group reserves an address slot and a host bridge
//! (`flotilla_kok_core::real_node` decides addresses and configuration);
//! the cluster serves its API on the bridge address
//! ([`crate::ClusterConfig::for_real_nodes`]); each node is a network and
//! mount namespace with its processes in a cgroup subtree of its own.
//! Dropping the group (also while panicking) kills every process of its
//! nodes through their cgroups, deletes namespaces, links and the bridge,
//! and the last group on the host restores the sysctls the kubelet
//! changed. A group whose owner died is cleaned up by the next group
//! started on the host (the journal in `/run/flotilla` names it).
//!
//! ```text
//! let mut nodes = RealNodes::reserve()?;
//! let cluster = Cluster::start(ClusterConfig::new("c").for_real_nodes(nodes.gateway())).await?;
//! nodes.start(&cluster, vec![RealNodeConfig::new("c-1")], timeout).await?;
//! ```

mod cgroups;
mod cleanup;
mod host;
mod images;
mod network;
mod node;
pub mod sandbox;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use flotilla_kok_core::real_node::address::MAX_NODES;
use flotilla_kok_core::real_node::journal::{join, leave};
use flotilla_kok_core::real_node::{GroupAddresses, GroupRecord, NodeAddresses, NodeRecord, Owner};
use k8s_openapi::api::core::v1::Node;
use kube::Api;

use crate::process::log_tail;
use crate::{node_is_ready, Binaries, Cluster, Error, Result};
use cgroups::CgroupTree;
use node::{StartContext, Tools};

pub use images::{NodeImages, BUSYBOX_IMAGE};
pub use node::{RealNode, RealNodeConfig, CLUSTER_DNS, CLUSTER_DOMAIN};

/// A group of real nodes sharing a bridge and an address slot.
pub struct RealNodes {
    owner: Owner,
    group: GroupAddresses,
    dir: PathBuf,
    hierarchies: Vec<PathBuf>,
    tools: Tools,
    binaries: Binaries,
    images: NodeImages,
    nodes: Vec<RealNode>,
    joined_alone: bool,
    closed: bool,
}

/// A node given its place, not started yet.
struct Placed {
    config: RealNodeConfig,
    addresses: NodeAddresses,
    dir: PathBuf,
}

/// What ending a group did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shutdown {
    /// Groups still live on the host (other tests, other processes).
    pub other_groups: usize,
    /// The sysctls written back (the last group out restores them).
    pub restored_sysctls: BTreeMap<String, String>,
    /// What could not be removed (empty when the host is clean of it).
    pub problems: Vec<String>,
}

impl std::fmt::Debug for RealNodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RealNodes")
            .field("slot", &self.group.slot)
            .field("nodes", &self.nodes)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl RealNodes {
    /// Reserves a group with the default Kubernetes binaries and images.
    pub fn reserve() -> Result<Self> {
        Self::reserve_with(Binaries::locate()?, NodeImages::locate()?)
    }

    /// Reserves a group: cleans up stale groups, takes a free address slot
    /// in the host journal and creates the group's bridge. Nodes come with
    /// [`start`](Self::start) or [`add`](Self::add).
    pub fn reserve_with(binaries: Binaries, images: NodeImages) -> Result<Self> {
        for name in ["kubelet", "kube-proxy"] {
            if !binaries.path(name).is_file() {
                return Err(Error::BinariesMissing {
                    dir: binaries.dir().to_path_buf(),
                    missing: name.into(),
                });
            }
        }
        for name in ["containerd-shim-runc-v2", "runc", "iptables", "unshare", "mount"] {
            host::tool(name)?;
        }
        let tools = Tools {
            nsenter: host::tool("nsenter")?,
            containerd: host::tool("containerd")?,
            ctr: host::tool("ctr")?,
            cni_bin_dir: cni_bin_dir()?,
        };
        let hierarchies = cgroups::hierarchies()?;
        let owner = host::this_process()?;
        let dir = group_dir()?;
        let routes = host::host_routes()?;
        let current = host::read_sysctls()?;
        let planned = host::with_journal(|journal| {
            let plan = join(journal, owner, dir.clone(), &host::is_alive, &routes, &current)?;
            let mut still_stale = Vec::new();
            for stale in &plan.stale {
                let problems = cleanup::group(stale, &hierarchies);
                if problems.is_empty() {
                    tracing::info!(
                        slot = stale.slot,
                        owner_pid = stale.owner.pid,
                        "cleaned up a stale real-node group"
                    );
                } else {
                    tracing::warn!(
                        slot = stale.slot,
                        ?problems,
                        "a stale real-node group is not fully cleaned up"
                    );
                    still_stale.push(stale.clone());
                }
            }
            *journal = plan.journal.clone();
            journal.groups.extend(still_stale);
            host::write_sysctls(&plan.restore_sysctls)?;
            host::write_group_sysctls()?;
            Ok(plan)
        });
        let plan = match planned {
            Ok(plan) => plan,
            Err(e) => {
                let _ = cleanup::remove_group_dir(&dir);
                return Err(e);
            }
        };
        let group = GroupAddresses { slot: plan.slot };
        let joined_alone = plan.journal.groups.iter().all(|g| g.owner == owner && g.slot == plan.slot);
        // From here on, dropping `nodes` undoes the reservation.
        let nodes = RealNodes {
            owner,
            group,
            dir,
            hierarchies,
            tools,
            binaries,
            images,
            nodes: Vec::new(),
            joined_alone,
            closed: false,
        };
        network::create_bridge(&nodes.group)?;
        tracing::info!(slot = group.slot, bridge = %group.bridge(), gateway = %group.gateway(), "reserved a real-node group");
        Ok(nodes)
    }

    /// The host's address on the group's bridge: serve the cluster's API
    /// here ([`crate::ClusterConfig::for_real_nodes`]).
    pub fn gateway(&self) -> Ipv4Addr {
        self.group.gateway()
    }

    pub fn slot(&self) -> u8 {
        self.group.slot
    }

    /// The host bridge's name.
    pub fn bridge(&self) -> String {
        self.group.bridge()
    }

    /// Whether no other group was live on the host when this one started.
    pub fn joined_alone(&self) -> bool {
        self.joined_alone
    }

    pub fn nodes(&self) -> &[RealNode] {
        &self.nodes
    }

    pub fn node(&self, name: &str) -> Option<&RealNode> {
        self.nodes.iter().find(|n| n.name() == name)
    }

    pub fn node_mut(&mut self, name: &str) -> Option<&mut RealNode> {
        self.nodes.iter_mut().find(|n| n.name() == name)
    }

    /// Starts nodes (together) and waits (up to `timeout`) until every one
    /// is Ready. A node that fails to start is removed again; the others
    /// stay.
    pub async fn start(
        &mut self,
        cluster: &Cluster,
        configs: Vec<RealNodeConfig>,
        timeout: Duration,
    ) -> Result<()> {
        let names: Vec<String> = configs.iter().map(|c| c.name.clone()).collect();
        let server = self.server_for(cluster)?;
        // Placed one by one (indexes, routes between them), started together.
        let mut placed: Vec<Placed> = Vec::new();
        let mut failure = None;
        for config in configs {
            match self.place(config, &placed) {
                Ok(p) => placed.push(p),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        let started = {
            let context = StartContext {
                cluster,
                server: &server,
                cluster_cidr: self.group.cluster_cidr(),
                tools: &self.tools,
                binaries: &self.binaries,
                images: &self.images,
            };
            let hierarchies = &self.hierarchies;
            futures::future::join_all(placed.iter().map(|p| {
                let cgroup = CgroupTree::new(hierarchies.clone(), &p.addresses.cgroup);
                RealNode::start(&context, &p.config, p.addresses.clone(), p.dir.clone(), cgroup)
            }))
            .await
        };
        for (p, result) in placed.iter().zip(started) {
            match result {
                Ok(node) => self.nodes.push(node),
                Err(e) => {
                    self.discard(&p.addresses, &p.dir);
                    failure.get_or_insert(e);
                }
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        self.wait_ready(cluster, &names, timeout).await
    }

    /// Starts one node and waits until it is Ready.
    pub async fn add(
        &mut self,
        cluster: &Cluster,
        config: RealNodeConfig,
        timeout: Duration,
    ) -> Result<&RealNode> {
        let name = config.name.clone();
        self.start(cluster, vec![config], timeout).await?;
        self.node(&name).ok_or_else(|| Error::Config(format!("real node {name} vanished")))
    }

    /// Stops node `name` and removes its namespace, cgroups and files (its
    /// Node object stays, NotReady, as when a machine goes away).
    pub fn remove(&mut self, name: &str) -> Result<()> {
        let position = self
            .nodes
            .iter()
            .position(|n| n.name() == name)
            .ok_or_else(|| Error::Config(format!("no real node named {name:?}")))?;
        let mut node = self.nodes.remove(position);
        let stopped = node.stop();
        let addresses = node.addresses().clone();
        let dir = node.dir().to_path_buf();
        drop(node);
        self.discard(&addresses, &dir);
        stopped
    }

    /// Gives a node its index and records it in the journal, then creates
    /// its cgroups and network (routes to and from the started and the
    /// `placed` nodes); on failure, undoes what it created.
    fn place(&mut self, config: RealNodeConfig, placed: &[Placed]) -> Result<Placed> {
        if self.node(&config.name).is_some() || placed.iter().any(|p| p.config.name == config.name) {
            return Err(Error::Config(format!("real node {:?} is started twice", config.name)));
        }
        let mut members: Vec<u8> = self.nodes.iter().map(RealNode::index).collect();
        members.extend(placed.iter().map(|p| p.addresses.index));
        let index = (0..MAX_NODES)
            .find(|i| !members.contains(i))
            .ok_or_else(|| Error::Config(format!("a group holds at most {MAX_NODES} real nodes")))?;
        let addresses = self.group.node(index)?;
        let record = NodeRecord {
            index,
            netns: addresses.netns.clone(),
            host_link: addresses.host_link.clone(),
            cgroup: addresses.cgroup.clone(),
        };
        // Recorded first: if this process dies halfway, the next group
        // finds and removes what was created.
        let (owner, slot) = (self.owner, self.group.slot);
        host::with_journal(|journal| {
            journal.record_node(owner, slot, record);
            Ok(())
        })?;
        let dir = self.dir.join(format!("n{index}"));
        let created = CgroupTree::new(self.hierarchies.clone(), &addresses.cgroup)
            .create()
            .and_then(|()| network::create_node(&self.group, &addresses, &members));
        match created {
            Ok(()) => Ok(Placed { config, addresses, dir }),
            Err(e) => {
                self.discard(&addresses, &dir);
                Err(e)
            }
        }
    }

    /// Removes a node's network, cgroups, files and journal record.
    fn discard(&mut self, addresses: &NodeAddresses, dir: &Path) {
        let members: Vec<u8> = self.nodes.iter().map(RealNode::index).collect();
        network::forget_node_routes(&self.group, addresses, &members);
        network::delete_node(addresses);
        let cgroup = CgroupTree::new(self.hierarchies.clone(), &addresses.cgroup);
        let cleaned = cgroup.kill_all(Duration::from_secs(20)).and_then(|()| cgroup.remove());
        if let Err(e) = &cleaned {
            tracing::warn!(node_cgroup = %addresses.cgroup, error = %e, "removing a real node's cgroups");
        }
        let _ = std::fs::remove_dir_all(dir);
        if cleaned.is_ok() {
            let (owner, slot, index) = (self.owner, self.group.slot, addresses.index);
            let _ = host::with_journal(|journal| {
                journal.forget_node(owner, slot, index);
                Ok(())
            });
        }
    }

    /// The API server's URL on this group's bridge.
    fn server_for(&self, cluster: &Cluster) -> Result<String> {
        let wanted = self.gateway().to_string();
        match cluster.external_server() {
            Some(url) if url.contains(&format!("//{wanted}:")) => Ok(url),
            other => Err(Error::Config(format!(
                "cluster {} serves its API on {}, and real nodes reach it on {wanted}: start it with \
                 ClusterConfig::for_real_nodes(real_nodes.gateway())",
                cluster.name(),
                other.unwrap_or_else(|| "loopback only".into())
            ))),
        }
    }

    async fn wait_ready(&mut self, cluster: &Cluster, names: &[String], timeout: Duration) -> Result<()> {
        let api: Api<Node> = Api::all(cluster.client());
        let deadline = Instant::now() + timeout;
        loop {
            let mut waiting = Vec::new();
            for name in names {
                let Some(node) = self.node_mut(name) else {
                    return Err(Error::Config(format!("real node {name} vanished")));
                };
                node.check_running()?;
                if node.ready_after().is_some() {
                    continue;
                }
                match api.get_opt(name).await {
                    Ok(Some(n)) if node_is_ready(&n) => {
                        node.mark_ready();
                        let after = node.ready_after().unwrap_or_default();
                        tracing::info!(node = %name, ready_after_ms = after.as_millis() as u64, "real node Ready");
                    }
                    _ => waiting.push(name.clone()),
                }
            }
            if waiting.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                let logs: Vec<String> = waiting
                    .iter()
                    .filter_map(|n| self.node(n))
                    .map(|n| {
                        let log = n.dir().join("logs/kubelet.log");
                        format!("\n--- {} kubelet ({}):\n{}", n.name(), log.display(), log_tail(&log, 15))
                    })
                    .collect();
                return Err(Error::Timeout {
                    what: format!("real nodes {waiting:?} to be Ready"),
                    seconds: timeout.as_secs(),
                    detail: logs.concat(),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Stops every node and removes the group from the host; says what it
    /// restored and what it could not remove.
    pub fn shutdown(mut self) -> Shutdown {
        self.close()
    }

    fn close(&mut self) -> Shutdown {
        if self.closed {
            return Shutdown::default();
        }
        self.closed = true;
        let mut problems = Vec::new();
        for mut node in self.nodes.drain(..) {
            if let Err(e) = node.stop() {
                problems.push(format!("stopping {}: {e}", node.name()));
            }
        }
        let (owner, slot, hierarchies) = (self.owner, self.group.slot, self.hierarchies.clone());
        let fallback = GroupRecord {
            owner,
            slot,
            bridge: self.group.bridge(),
            dir: self.dir.clone(),
            nodes: Vec::new(),
        };
        let left = host::with_journal(|journal| {
            let mine = journal.group_mut(owner, slot).cloned().unwrap_or(fallback);
            let plan = leave(journal, owner, slot, &host::is_alive);
            let mut unclean = Vec::new();
            let own_problems = cleanup::group(&mine, &hierarchies);
            if !own_problems.is_empty() {
                unclean.push(mine);
            }
            for stale in &plan.stale {
                if !cleanup::group(stale, &hierarchies).is_empty() {
                    unclean.push(stale.clone());
                }
            }
            *journal = plan.journal.clone();
            journal.groups.extend(unclean);
            host::write_sysctls(&plan.restore_sysctls)?;
            Ok((plan, own_problems))
        });
        match left {
            Ok((plan, own_problems)) => {
                problems.extend(own_problems);
                Shutdown {
                    other_groups: plan.journal.groups.len(),
                    restored_sysctls: plan.restore_sysctls,
                    problems,
                }
            }
            Err(e) => {
                problems.push(format!("leaving the host journal: {e}"));
                Shutdown { problems, ..Shutdown::default() }
            }
        }
    }
}

impl Drop for RealNodes {
    fn drop(&mut self) {
        let shutdown = self.close();
        for problem in &shutdown.problems {
            tracing::warn!(%problem, "real-node group not fully cleaned up");
            eprintln!("real nodes (slot {}): {problem}", self.group.slot);
        }
    }
}

/// Where the CNI plugins are (Debian's package, or the upstream path).
fn cni_bin_dir() -> Result<PathBuf> {
    ["/usr/lib/cni", "/opt/cni/bin"]
        .iter()
        .map(PathBuf::from)
        .find(|d| d.join("bridge").is_file() && d.join("host-local").is_file())
        .ok_or_else(|| {
            Error::Config(
                "the CNI plugins are not installed (no bridge in /usr/lib/cni or /opt/cni/bin); run \
                 scripts/node-runtime.sh"
                    .into(),
            )
        })
}

/// A fresh group directory with a short path (unix sockets live inside),
/// outside what a node's mount namespace replaces.
fn group_dir() -> Result<PathBuf> {
    let tmp = std::env::temp_dir();
    let usable = tmp.is_absolute()
        && tmp.as_os_str().len() <= 40
        && !["/run", "/var/log", "/var/lib/cni"].iter().any(|r| tmp.starts_with(r));
    let base = if usable { tmp } else { PathBuf::from("/tmp") };
    let dir = tempfile::Builder::new()
        .prefix(cleanup::GROUP_DIR_PREFIX)
        .tempdir_in(&base)
        .map_err(|e| Error::io(&base, e))?;
    Ok(dir.keep())
}
