//! Removing what a group created, from its journal record alone: so the
//! same code cleans up a group at its end and a stale group whose owner
//! died (no destructor ran) at the next start on the host.

use std::path::{Path, PathBuf};
use std::time::Duration;

use flotilla_kok_core::real_node::GroupRecord;

use super::cgroups::CgroupTree;
use super::network;

/// Prefix of a group's directory name: only such a directory is removed.
pub const GROUP_DIR_PREFIX: &str = "flt-rn-";

/// Kills every process left in the group's cgroups and removes them, its
/// namespaces, links and bridge, and its directory. Returns what could not
/// be removed (empty when the host is clean of it).
pub fn group(record: &GroupRecord, hierarchies: &[PathBuf]) -> Vec<String> {
    let mut problems = Vec::new();
    for node in &record.nodes {
        let tree = CgroupTree::new(hierarchies.to_vec(), &node.cgroup);
        if let Err(e) = tree.kill_all(Duration::from_secs(20)) {
            problems.push(e.to_string());
        }
        if let Err(e) = tree.remove() {
            problems.push(format!("removing cgroup {}: {e}", node.cgroup));
        }
        network::delete_netns_and_link(&node.netns, &node.host_link);
        if network::netns_exists(&node.netns) {
            problems.push(format!("network namespace {} is still there", node.netns));
        }
        if network::link_exists(&node.host_link) {
            problems.push(format!("link {} is still there", node.host_link));
        }
    }
    network::delete_bridge(&record.bridge);
    if network::link_exists(&record.bridge) {
        problems.push(format!("bridge {} is still there", record.bridge));
    }
    if let Err(e) = remove_group_dir(&record.dir) {
        problems.push(e);
    }
    problems
}

/// Removes a group directory, refusing any path that is not one.
pub fn remove_group_dir(dir: &Path) -> Result<(), String> {
    let is_group_dir = dir.is_absolute()
        && dir.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(GROUP_DIR_PREFIX));
    if !is_group_dir {
        return Err(format!("{} is not a real-node group directory; left alone", dir.display()));
    }
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("removing {}: {e}", dir.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_group_directories_are_removed() {
        let parent = tempfile::tempdir().unwrap();
        let group = parent.path().join("flt-rn-abc");
        std::fs::create_dir_all(group.join("n0/kubelet")).unwrap();
        let other = parent.path().join("precious");
        std::fs::create_dir_all(&other).unwrap();
        assert!(remove_group_dir(&other).unwrap_err().contains("left alone"));
        assert!(other.exists());
        assert!(remove_group_dir(Path::new("flt-rn-relative")).is_err());
        remove_group_dir(&group).unwrap();
        assert!(!group.exists());
        remove_group_dir(&group).unwrap();
    }
}
