//! A node's cgroup root, a top-level cgroup in every hierarchy: the
//! kubelet's `cgroupRoot` (pods go below it) with a `system` child holding
//! the node's own processes. Whatever a node runs, containerd's daemonized
//! shims and the pods included, is in this subtree, so stopping a node is
//! killing the subtree: freeze, SIGKILL every pid, thaw, until empty.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use flotilla_kok_core::real_node::host::{cgroup_pids, CgroupMounts};

use crate::{Error, Result};

/// The cgroup hierarchies mounted on this host (v1, and the unified one
/// of a hybrid host).
pub fn hierarchies() -> Result<Vec<PathBuf>> {
    let path = Path::new("/proc/self/mountinfo");
    let mountinfo = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mounts = CgroupMounts::parse(&mountinfo);
    if mounts.v1.is_empty() {
        return Err(Error::Config(
            "real nodes run under cgroup v1 hierarchies, and this host mounts none \
             (a cgroup v2-only host is not supported yet)"
                .into(),
        ));
    }
    Ok(mounts.all())
}

/// One node's cgroup subtree across the hierarchies.
#[derive(Debug, Clone)]
pub struct CgroupTree {
    hierarchies: Vec<PathBuf>,
    name: String,
}

impl CgroupTree {
    pub fn new(hierarchies: Vec<PathBuf>, name: impl Into<String>) -> Self {
        Self { hierarchies, name: name.into() }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Creates the root and its `system` child in every hierarchy; cpuset
    /// children start with no CPUs or memory nodes, so they get their
    /// parent's.
    pub fn create(&self) -> Result<()> {
        for h in &self.hierarchies {
            let root = h.join(&self.name);
            for dir in [root.clone(), root.join("system")] {
                mkdir(&dir)?;
                let parent = dir.parent().unwrap_or(h);
                for file in ["cpuset.cpus", "cpuset.mems"] {
                    if parent.join(file).exists() {
                        let value = std::fs::read_to_string(parent.join(file))
                            .map_err(|e| Error::io(&parent.join(file), e))?;
                        std::fs::write(dir.join(file), value.trim())
                            .map_err(|e| Error::io(&dir.join(file), e))?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The `system` cgroup in every hierarchy, for the node's processes to
    /// join ([`crate::ProcessSpec::cgroups`]).
    pub fn system_dirs(&self) -> Vec<PathBuf> {
        self.hierarchies.iter().map(|h| h.join(&self.name).join("system")).collect()
    }

    /// Every pid in the subtree, in any hierarchy.
    pub fn pids(&self) -> Vec<u32> {
        let mut pids = Vec::new();
        for h in &self.hierarchies {
            for dir in subtree(&h.join(&self.name)) {
                if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                    pids.extend(cgroup_pids(&procs));
                }
            }
        }
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Kills every process in the subtree and waits until it is empty.
    pub fn kill_all(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let freezer =
            self.hierarchies.iter().map(|h| h.join(&self.name)).find(|d| d.join("freezer.state").exists());
        loop {
            let pids = self.pids();
            if pids.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout {
                    what: format!("the processes of cgroup {} to exit", self.name),
                    seconds: timeout.as_secs(),
                    detail: format!(" (left: {pids:?})"),
                });
            }
            // Frozen, nothing forks between listing and killing.
            if let Some(f) = &freezer {
                let _ = std::fs::write(f.join("freezer.state"), "FROZEN");
                wait_frozen(f, Instant::now() + Duration::from_secs(2));
            }
            for pid in self.pids() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            if let Some(f) = &freezer {
                let _ = std::fs::write(f.join("freezer.state"), "THAWED");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Removes the subtree, deepest cgroups first (they must be empty).
    pub fn remove(&self) -> Result<()> {
        let mut first_error = None;
        for h in &self.hierarchies {
            let mut dirs = subtree(&h.join(&self.name));
            dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
            for dir in dirs {
                if let Err(e) = rmdir_retrying(&dir) {
                    first_error.get_or_insert(Error::io(&dir, e));
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

fn mkdir(dir: &Path) -> Result<()> {
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::io(dir, e)),
    }
}

/// `dir` and every cgroup below it (none if it does not exist).
fn subtree(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                pending.push(entry.path());
            }
        }
        found.push(d);
    }
    found
}

fn wait_frozen(dir: &Path, deadline: Instant) {
    while Instant::now() < deadline {
        match std::fs::read_to_string(dir.join("freezer.state")) {
            Ok(state) if state.trim() == "FREEZING" => std::thread::sleep(Duration::from_millis(5)),
            _ => return,
        }
    }
}

/// A cgroup whose last process just exited may still be busy for a moment.
fn rmdir_retrying(dir: &Path) -> std::io::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if Instant::now() < deadline && e.raw_os_error() == Some(libc::EBUSY) => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e),
        }
    }
}
