//! The Machine's real nodes (`spec.realNodes`): their sandboxes on this
//! host (a real-node group: bridge, per node a network namespace, veth,
//! routes and a cgroup subtree; `flotilla_localkube::real_node::sandbox`),
//! the components each node is rendered into
//! (`flotilla_kok_core::real_node::machine`), the NotReady repair, and
//! teardown when a node leaves the spec.
//!
//! The group is owned in the host journal by a detached *anchor* process
//! (`sleep infinity`) recorded in the agent's state: an agent restart
//! leaves anchor, sandboxes and components running and adopts them.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use flotilla_api::machine::{MachineSpec, RealNodeSpec, RealNodeStatus};
use flotilla_kok_core::node::RunningComponent;
use flotilla_kok_core::real_node::extra_images::{self as image_rules, ImportedFile};
use flotilla_kok_core::real_node::machine::{
    self as rn, component_names, exit_repair_reason, not_ready_since, repair_reason, MachineFacts,
};
use flotilla_kok_core::real_node::{GroupAddresses, NodeAddresses, Owner};
use flotilla_localkube::real_node::sandbox::{self, HostTools};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use serde::{Deserialize, Serialize};

use crate::register::{CONNECT_TIMEOUT, READ_TIMEOUT};
use crate::{extra_images, process};

/// The group directory under the state directory (the journal removes
/// only directories named `flt-rn-*`).
const GROUP_DIR: &str = "flt-rn-nodes";
/// How often a node's Ready condition is read.
const READY_EVERY: Duration = Duration::from_secs(2);

/// The agent's record of its real nodes, kept in `state.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RealNodesState {
    /// The process owning the group in the host journal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anchor: Option<Anchor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<u8>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeRecord>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Anchor {
    pub pid: u32,
    pub start_ticks: u64,
}

impl Anchor {
    fn owner(&self) -> Owner {
        Owner { pid: self.pid, start_time: self.start_ticks }
    }
}

/// One node with a sandbox on this host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRecord {
    pub name: String,
    pub index: u8,
    /// NotReady repairs made (each restarted the kubelet and containerd).
    #[serde(default)]
    pub ready_repairs: u32,
    /// Exits of the kubelet and containerd already explained.
    #[serde(default)]
    pub counted_exits: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_repair: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_repair_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_ready_since: Option<Timestamp>,
    /// The tarballs of the node's `extraImagesDir` tried so far, with what
    /// came of them: kept with the sandbox, whose containerd holds the
    /// images, so an agent restart imports nothing again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_images: Vec<ImportedFile>,
}

/// What the agent keeps in memory about its real nodes.
#[derive(Default)]
pub struct RealNodes {
    tools: Option<HostTools>,
    ready: std::collections::HashMap<String, (Option<bool>, Instant)>,
    problems: std::collections::HashMap<String, String>,
    images: extra_images::Importer,
}

impl RealNodes {
    /// Makes sure every node of `spec` has a sandbox and returns the
    /// components they are rendered into. Problems are kept for status.
    pub fn prepare(
        &mut self,
        state_dir: &Path,
        state: &mut RealNodesState,
        spec: &MachineSpec,
    ) -> Vec<flotilla_api::machine::ComponentSpec> {
        self.problems.clear();
        if spec.real_nodes.is_empty() || spec.paused {
            return self.render_existing(state_dir, state, spec);
        }
        if self.tools.is_none() {
            match HostTools::locate() {
                Ok(tools) => self.tools = Some(tools),
                Err(e) => {
                    for n in &spec.real_nodes {
                        self.problems.insert(n.name.clone(), e.to_string());
                    }
                    return Vec::new();
                }
            }
        }
        if let Err(e) = self.ensure_group(state_dir, state) {
            for n in &spec.real_nodes {
                self.problems.insert(n.name.clone(), e.clone());
            }
            return Vec::new();
        }
        for node in &spec.real_nodes {
            if state.nodes.iter().any(|r| r.name == node.name) {
                continue;
            }
            if let Err(e) = self.create(state, node) {
                tracing::error!(node = %node.name, error = %e, "cannot create a real node's sandbox");
                self.problems.insert(node.name.clone(), e);
            }
        }
        self.render_existing(state_dir, state, spec)
    }

    fn render_existing(
        &mut self,
        state_dir: &Path,
        state: &RealNodesState,
        spec: &MachineSpec,
    ) -> Vec<flotilla_api::machine::ComponentSpec> {
        let (Some(tools), Some(slot)) = (&self.tools, state.slot) else { return Vec::new() };
        let group = GroupAddresses { slot };
        let facts = facts(state_dir, tools);
        let mut components = Vec::new();
        for node in &spec.real_nodes {
            let Some(record) = state.nodes.iter().find(|r| r.name == node.name) else { continue };
            let rendered = group.node(record.index).map_err(|e| e.to_string()).and_then(|addresses| {
                let runtime = rn::runtime(node, &group, &addresses, &facts).map_err(|e| e.to_string())?;
                Ok(rn::components(node, &runtime, &addresses, &facts, record.ready_repairs))
            });
            match rendered {
                Ok(c) => components.extend(c),
                Err(e) => {
                    self.problems.insert(node.name.clone(), e);
                }
            }
        }
        components
    }

    /// Starts the anchor and joins the host journal, unless a live anchor
    /// already holds a group.
    fn ensure_group(&mut self, state_dir: &Path, state: &mut RealNodesState) -> Result<(), String> {
        let tools = self.tools.as_ref().ok_or("no host tools")?;
        if let (Some(anchor), Some(_)) = (state.anchor, state.slot) {
            if process::is_alive(anchor.pid, anchor.start_ticks) {
                return Ok(());
            }
            // The anchor died (the host rebooted, or someone killed it): its
            // group is stale and the next join cleans it up.
            tracing::warn!(pid = anchor.pid, "the real-node anchor is gone; starting a new group");
            state.nodes.clear();
        }
        let anchor = process::spawn(
            Path::new("/bin/sleep"),
            &["infinity".to_string()],
            &Default::default(),
            state_dir,
            &state_dir.join("logs/real-node-anchor.log"),
        )
        .map_err(|e| format!("starting the real-node anchor: {e}"))?;
        let anchor = Anchor { pid: anchor.pid, start_ticks: anchor.start_ticks };
        match sandbox::join_group(anchor.owner(), &state_dir.join(GROUP_DIR), &tools.hierarchies) {
            Ok(group) => {
                state.anchor = Some(anchor);
                state.slot = Some(group.slot);
                state.nodes.clear();
                Ok(())
            }
            Err(e) => {
                process::kill_now(anchor.pid, anchor.start_ticks);
                Err(e.to_string())
            }
        }
    }

    fn create(&mut self, state: &mut RealNodesState, node: &RealNodeSpec) -> Result<(), String> {
        let tools = self.tools.as_ref().ok_or("no host tools")?;
        let (Some(anchor), Some(slot)) = (state.anchor, state.slot) else { return Err("no group".into()) };
        let group = GroupAddresses { slot };
        let members: Vec<u8> = state.nodes.iter().map(|n| n.index).collect();
        let index = (0..flotilla_kok_core::real_node::address::MAX_NODES)
            .find(|i| !members.contains(i))
            .ok_or("the machine's real-node group is full")?;
        let addresses = group.node(index).map_err(|e| e.to_string())?;
        sandbox::create_node(anchor.owner(), &group, &addresses, &members, &tools.hierarchies)
            .map_err(|e| e.to_string())?;
        tracing::info!(node = %node.name, index, ip = %addresses.ip, "created a real node's sandbox");
        state.nodes.push(NodeRecord {
            name: node.name.clone(),
            index,
            ready_repairs: 0,
            counted_exits: 0,
            last_repair: None,
            last_repair_at: None,
            not_ready_since: None,
            extra_images: Vec::new(),
        });
        Ok(())
    }

    /// Removes the sandboxes of nodes no longer in `spec` (their
    /// components are already stopped), and the group with the last one.
    pub fn remove_unwanted(&mut self, state_dir: &Path, state: &mut RealNodesState, spec: &MachineSpec) {
        if spec.paused {
            return;
        }
        let (Some(anchor), Some(slot)) = (state.anchor, state.slot) else { return };
        let hierarchies = match self.tools.as_ref() {
            Some(t) => t.hierarchies.clone(),
            None => match HostTools::locate() {
                Ok(t) => {
                    let h = t.hierarchies.clone();
                    self.tools = Some(t);
                    h
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot remove real nodes");
                    return;
                }
            },
        };
        let group = GroupAddresses { slot };
        let unwanted: Vec<NodeRecord> = state
            .nodes
            .iter()
            .filter(|r| !spec.real_nodes.iter().any(|n| n.name == r.name))
            .cloned()
            .collect();
        for record in unwanted {
            let Ok(addresses) = group.node(record.index) else { continue };
            let members: Vec<u8> =
                state.nodes.iter().map(|n| n.index).filter(|i| *i != record.index).collect();
            let dir = node_dir(state_dir, &addresses);
            match sandbox::remove_node(anchor.owner(), &group, &addresses, &members, &hierarchies, Some(&dir))
            {
                Ok(()) => {
                    tracing::info!(node = %record.name, "removed a real node's sandbox");
                    state.nodes.retain(|n| n.name != record.name);
                    self.ready.remove(&record.name);
                    self.images.forget(&record.name);
                }
                Err(e) => tracing::warn!(node = %record.name, error = %e, "removing a real node's sandbox"),
            }
        }
        if state.nodes.is_empty() {
            match sandbox::leave_group(anchor.owner(), slot, &hierarchies) {
                Ok(restored) => {
                    tracing::info!(slot, ?restored, "left the host's real-node journal");
                    process::kill_now(anchor.pid, anchor.start_ticks);
                    state.anchor = None;
                    state.slot = None;
                }
                Err(e) => tracing::warn!(slot, error = %e, "leaving the host's real-node journal"),
            }
        }
    }

    /// Reads each node's Ready condition (with its kubelet's credential),
    /// applies the repair rule and counts the exits of its kubelet and
    /// containerd. Returns whether a repair was decided (the next render
    /// restarts the components).
    pub async fn observe(
        &mut self,
        state_dir: &Path,
        state: &mut RealNodesState,
        spec: &MachineSpec,
        components: &[RunningComponent],
    ) -> bool {
        let now = Timestamp::now();
        let mut repaired = false;
        let Some(slot) = state.slot else { return false };
        let group = GroupAddresses { slot };
        for record in state.nodes.iter_mut() {
            let Some(node) = spec.real_nodes.iter().find(|n| n.name == record.name) else { continue };
            let Ok(addresses) = group.node(record.index) else { continue };
            let kubeconfig = node_dir(state_dir, &addresses).join("kubelet.kubeconfig");
            let ready = self.read_ready(&node.name, &kubeconfig).await;
            record.not_ready_since = not_ready_since(record.not_ready_since, ready, now);
            let [_, containerd, kubelet, _] = component_names(&node.name);
            let exits: Vec<&RunningComponent> =
                components.iter().filter(|c| c.name == containerd || c.name == kubelet).collect();
            let total: u32 = exits.iter().map(|c| c.restarts).sum();
            if total > record.counted_exits {
                if let Some(latest) = exits.iter().filter(|c| c.restarts > 0).max_by_key(|c| c.started_at) {
                    let code = latest.last_exit.as_ref().and_then(|e| e.code);
                    record.last_repair = Some(exit_repair_reason(&latest.name, code));
                    record.last_repair_at = Some(latest.started_at);
                }
                record.counted_exits = total;
            }
            let policy = node.repair.unwrap_or_default();
            if let Some(reason) = repair_reason(policy, record.not_ready_since, record.last_repair_at, now) {
                tracing::warn!(node = %node.name, %reason, "repairing a real node");
                record.ready_repairs += 1;
                record.last_repair = Some(reason);
                record.last_repair_at = Some(now);
                repaired = true;
            }
        }
        repaired
    }

    async fn read_ready(&mut self, node: &str, kubeconfig: &Path) -> Option<bool> {
        if let Some((ready, at)) = self.ready.get(node) {
            if at.elapsed() < READY_EVERY {
                return *ready;
            }
        }
        let ready = if kubeconfig.is_file() {
            match flotilla_csr_client::client_from_kubeconfig(kubeconfig, CONNECT_TIMEOUT, READ_TIMEOUT).await
            {
                Ok(client) => match Api::<Node>::all(client).get_opt(node).await {
                    Ok(Some(n)) => Some(node_ready(&n)),
                    Ok(None) => Some(false),
                    Err(e) => {
                        tracing::debug!(%node, error = %e, "reading the Node");
                        None
                    }
                },
                Err(_) => None,
            }
        } else {
            None
        };
        self.ready.insert(node.to_string(), (ready, Instant::now()));
        ready
    }

    /// Records the outcomes of finished imports of the nodes'
    /// `extraImagesDir` and starts the next ones: for each node whose
    /// containerd is healthy (`healthy` says so of a component), the files
    /// `extra_images::to_import` picks from a fresh listing. Returns
    /// whether the record changed.
    pub fn import_images(
        &mut self,
        state_dir: &Path,
        state: &mut RealNodesState,
        spec: &MachineSpec,
        healthy: &dyn Fn(&str) -> bool,
    ) -> bool {
        let now = Timestamp::now().as_second();
        let mut changed = false;
        for (node, outcomes) in self.images.finished() {
            let Some(record) = state.nodes.iter_mut().find(|r| r.name == node) else { continue };
            for outcome in outcomes {
                image_rules::record_outcome(&mut record.extra_images, &outcome.file, outcome.result, now);
            }
            changed = true;
        }
        let (Some(tools), Some(slot)) = (&self.tools, state.slot) else { return changed };
        if spec.paused {
            return changed;
        }
        let group = GroupAddresses { slot };
        let facts = facts(state_dir, tools);
        for node in &spec.real_nodes {
            let Some(dir) = &node.extra_images_dir else { continue };
            let Some(record) = state.nodes.iter_mut().find(|r| r.name == node.name) else { continue };
            let [_, containerd, _, _] = component_names(&node.name);
            if !healthy(&containerd) || !self.images.scan_due(&node.name) {
                continue;
            }
            let listing = match extra_images::list(Path::new(dir)) {
                Ok(listing) => listing,
                Err(e) => {
                    tracing::warn!(node = %node.name, dir = %dir, error = %e, "cannot list the extra images");
                    continue;
                }
            };
            let before = record.extra_images.len();
            image_rules::forget_removed_failures(&mut record.extra_images, &listing);
            changed |= record.extra_images.len() != before;
            let files = image_rules::to_import(&listing, &record.extra_images, now);
            if files.is_empty() {
                continue;
            }
            let Ok(addresses) = group.node(record.index) else { continue };
            let Ok(runtime) = rn::runtime(node, &group, &addresses, &facts) else { continue };
            let socket = runtime.paths().containerd_socket;
            tracing::info!(node = %node.name, files = ?files.iter().map(|f| &f.name).collect::<Vec<_>>(), "importing image tarballs");
            self.images.start(&node.name, tools.ctr.clone(), socket, PathBuf::from(dir), files);
        }
        changed
    }

    /// One status entry per node in the spec or still on the host.
    pub fn statuses(
        &self,
        state: &RealNodesState,
        spec: &MachineSpec,
        components: &[RunningComponent],
    ) -> Vec<RealNodeStatus> {
        let mut names: Vec<String> = spec.real_nodes.iter().map(|n| n.name.clone()).collect();
        names.extend(
            state
                .nodes
                .iter()
                .map(|n| n.name.clone())
                .filter(|n| !spec.real_nodes.iter().any(|s| &s.name == n)),
        );
        names
            .into_iter()
            .map(|name| {
                let record = state.nodes.iter().find(|r| r.name == name);
                let addresses =
                    record.zip(state.slot).and_then(|(r, slot)| GroupAddresses { slot }.node(r.index).ok());
                let problem = self.problems.get(&name).cloned();
                let removing = !spec.real_nodes.iter().any(|n| n.name == name);
                let phase = match (&addresses, &problem) {
                    _ if removing => "Removing",
                    (None, Some(_)) => "Failed",
                    (None, None) => "Pending",
                    (Some(_), _) => "Running",
                };
                let (images, failures) = image_rules::node_status(record.map_or(&[], |r| &r.extra_images));
                let message = match (problem, failures) {
                    (Some(p), Some(f)) => Some(format!("{p}; {f}")),
                    (p, f) => p.or(f),
                };
                let [_, containerd, kubelet, _] = component_names(&name);
                let exits: u32 = components
                    .iter()
                    .filter(|c| c.name == containerd || c.name == kubelet)
                    .map(|c| c.restarts)
                    .sum();
                RealNodeStatus {
                    name: name.clone(),
                    phase: phase.into(),
                    ip: addresses.as_ref().map(|a| a.ip.to_string()),
                    sandbox: addresses.as_ref().map(|a| format!("netns {}, cgroup {}", a.netns, a.cgroup)),
                    ready: self.ready.get(&name).and_then(|(r, _)| *r),
                    repairs: record.map_or(0, |r| r.ready_repairs) + exits,
                    last_repair: record.and_then(|r| r.last_repair.clone()),
                    last_repair_time: record.and_then(|r| r.last_repair_at).map(Time),
                    images,
                    message,
                }
            })
            .collect()
    }
}

fn facts(state_dir: &Path, tools: &HostTools) -> MachineFacts {
    MachineFacts {
        group_dir: state_dir.join(GROUP_DIR),
        hierarchies: tools.hierarchies.clone(),
        nsenter: tools.nsenter.clone(),
        containerd: tools.containerd.clone(),
        ctr: tools.ctr.clone(),
        cni_bin_dir: tools.cni_bin_dir.clone(),
    }
}

fn node_dir(state_dir: &Path, addresses: &NodeAddresses) -> PathBuf {
    state_dir.join(GROUP_DIR).join(format!("n{}", addresses.index))
}

fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}
