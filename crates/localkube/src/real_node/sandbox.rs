//! The host plumbing of real nodes for an owner other than this process:
//! the node agent, whose nodes must outlive it (an agent restart adopts
//! them). The group's owner in the host journal is a process the caller
//! keeps alive (the agent's detached anchor), so the group stays live while
//! the agent restarts, and is cleaned up as stale by the next group on the
//! host if the anchor dies with the machine's nodes still recorded.
//!
//! The same steps as [`super::RealNodes`] (journal, bridge, cgroups, veth,
//! routes, sysctls), without starting any process: the agent runs the
//! node's processes as Machine components.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use flotilla_kok_core::real_node::journal::{join, leave};
use flotilla_kok_core::real_node::{GroupAddresses, GroupRecord, NodeAddresses, NodeRecord, Owner};

use super::cgroups::{self, CgroupTree};
use super::{cleanup, host, network};
use crate::{Error, Result};

pub use cleanup::GROUP_DIR_PREFIX;

/// The host programs and places real nodes need; fails with what to install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostTools {
    pub nsenter: PathBuf,
    pub containerd: PathBuf,
    pub ctr: PathBuf,
    pub cni_bin_dir: PathBuf,
    pub hierarchies: Vec<PathBuf>,
}

impl HostTools {
    pub fn locate() -> Result<Self> {
        for name in ["containerd-shim-runc-v2", "runc", "iptables", "unshare", "mount"] {
            host::tool(name)?;
        }
        Ok(Self {
            nsenter: host::tool("nsenter")?,
            containerd: host::tool("containerd")?,
            ctr: host::tool("ctr")?,
            cni_bin_dir: super::cni_bin_dir()?,
            hierarchies: cgroups::hierarchies()?,
        })
    }
}

/// The journal's name for process `pid` (pid and start time), if it runs.
pub fn owner_of(pid: u32) -> Result<Owner> {
    let stat =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| Error::io(Path::new("/proc"), e))?;
    flotilla_kok_core::real_node::host::process_start_time(&stat)
        .map(|start_time| Owner { pid, start_time })
        .ok_or_else(|| Error::Config(format!("cannot read the start time of process {pid}")))
}

pub fn is_alive(owner: &Owner) -> bool {
    host::is_alive(owner)
}

/// Whether `owner` holds a group in the host journal, and its slot.
pub fn group_of(owner: Owner) -> Result<Option<u8>> {
    host::with_journal(|journal| Ok(journal.groups.iter().find(|g| g.owner == owner).map(|g| g.slot)))
}

/// Joins the host journal as a new group of `owner` keeping its files in
/// `dir` (named `flt-rn-*`): cleans up stale groups, takes a free slot and
/// creates the bridge.
pub fn join_group(owner: Owner, dir: &Path, hierarchies: &[PathBuf]) -> Result<GroupAddresses> {
    if !dir.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(GROUP_DIR_PREFIX)) {
        return Err(Error::Config(format!(
            "a real-node group directory is named {GROUP_DIR_PREFIX}*, not {}",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let routes = host::host_routes()?;
    let current = host::read_sysctls()?;
    let plan = host::with_journal(|journal| {
        let plan = join(journal, owner, dir.to_path_buf(), &host::is_alive, &routes, &current)?;
        let mut still_stale = Vec::new();
        for stale in &plan.stale {
            if !cleanup::group(stale, hierarchies).is_empty() {
                still_stale.push(stale.clone());
            }
        }
        *journal = plan.journal.clone();
        journal.groups.extend(still_stale);
        host::write_sysctls(&plan.restore_sysctls)?;
        host::write_group_sysctls()?;
        Ok(plan)
    })?;
    let group = GroupAddresses { slot: plan.slot };
    if let Err(e) = network::create_bridge(&group) {
        let _ = leave_group(owner, plan.slot, hierarchies);
        return Err(e);
    }
    tracing::info!(slot = group.slot, bridge = %group.bridge(), "joined the host as a real-node group");
    Ok(group)
}

/// Records node `addresses` in the journal, then creates its cgroup subtree
/// and network (routes to and from `members`); undoes it on failure.
pub fn create_node(
    owner: Owner,
    group: &GroupAddresses,
    addresses: &NodeAddresses,
    members: &[u8],
    hierarchies: &[PathBuf],
) -> Result<()> {
    let record = NodeRecord {
        index: addresses.index,
        netns: addresses.netns.clone(),
        host_link: addresses.host_link.clone(),
        cgroup: addresses.cgroup.clone(),
    };
    host::with_journal(|journal| {
        journal.record_node(owner, group.slot, record);
        Ok(())
    })?;
    let created = CgroupTree::new(hierarchies.to_vec(), &addresses.cgroup)
        .create()
        .and_then(|()| network::create_node(group, addresses, members));
    if let Err(e) = created {
        let _ = remove_node(owner, group, addresses, members, hierarchies, None);
        return Err(e);
    }
    Ok(())
}

/// Kills whatever is left in the node's cgroup subtree (its processes
/// should be stopped first), removes the subtree, the node's routes,
/// namespace, link and directory `dir`, and forgets it in the journal.
pub fn remove_node(
    owner: Owner,
    group: &GroupAddresses,
    addresses: &NodeAddresses,
    members: &[u8],
    hierarchies: &[PathBuf],
    dir: Option<&Path>,
) -> Result<()> {
    let cgroup = CgroupTree::new(hierarchies.to_vec(), &addresses.cgroup);
    let cleaned = cgroup.kill_all(Duration::from_secs(20)).and_then(|()| cgroup.remove());
    network::forget_node_routes(group, addresses, members);
    network::delete_node(addresses);
    if let Some(dir) = dir {
        let _ = std::fs::remove_dir_all(dir);
    }
    cleaned?;
    host::with_journal(|journal| {
        journal.forget_node(owner, group.slot, addresses.index);
        Ok(())
    })
}

/// Leaves the journal: removes the group (nodes left, bridge, directory)
/// and stale groups; the last group out restores the host's sysctls.
/// Returns the sysctls restored, or what could not be removed.
pub fn leave_group(owner: Owner, slot: u8, hierarchies: &[PathBuf]) -> Result<BTreeMap<String, String>> {
    let mut problems = Vec::new();
    let restored = host::with_journal(|journal| {
        let Some(mine) = journal.groups.iter().find(|g| g.owner == owner && g.slot == slot).cloned() else {
            return Ok(BTreeMap::new());
        };
        let plan = leave(journal, owner, slot, &host::is_alive);
        let mut unclean: Vec<GroupRecord> = Vec::new();
        let own = cleanup::group(&mine, hierarchies);
        if !own.is_empty() {
            unclean.push(mine);
        }
        problems.extend(own);
        for stale in &plan.stale {
            if !cleanup::group(stale, hierarchies).is_empty() {
                unclean.push(stale.clone());
            }
        }
        *journal = plan.journal.clone();
        journal.groups.extend(unclean);
        host::write_sysctls(&plan.restore_sysctls)?;
        Ok(plan.restore_sysctls)
    })?;
    if problems.is_empty() {
        Ok(restored)
    } else {
        Err(Error::Config(format!("the real-node group is not fully removed: {}", problems.join("; "))))
    }
}
