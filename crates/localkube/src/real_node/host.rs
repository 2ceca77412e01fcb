//! The host as real nodes see it: the tools they run, this process's
//! identity, host routes, the kubelet's host-global sysctls, and the
//! journal file every process starting real nodes shares (under a lock).

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use flotilla_kok_core::real_node::address::Ipv4Cidr;
use flotilla_kok_core::real_node::host::{process_start_time, route_destinations};
use flotilla_kok_core::real_node::journal::{tracked_sysctls, GROUP_SYSCTLS};
use flotilla_kok_core::real_node::{HostJournal, Owner};
use nix::fcntl::{Flock, FlockArg};

use crate::{Error, Result};

/// Where the journal and its lock live: shared by every process on the
/// host, gone on reboot (as is everything a journal could name).
const JOURNAL_DIR: &str = "/run/flotilla";
const JOURNAL_FILE: &str = "real-nodes.json";
const LOCK_FILE: &str = "real-nodes.lock";

/// The PATH real nodes' processes run with: containerd finds its shim and
/// runc, the kubelet `mount`, kube-proxy `iptables`.
pub const NODE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A host program, found on [`NODE_PATH`].
pub fn tool(name: &str) -> Result<PathBuf> {
    NODE_PATH.split(':').map(|dir| Path::new(dir).join(name)).find(|p| p.is_file()).ok_or_else(|| {
        Error::Config(format!(
            "{name} is not installed (looked in {NODE_PATH}); run scripts/node-runtime.sh, which installs \
             containerd, runc, the CNI plugins, iptables and busybox-static"
        ))
    })
}

/// Runs `program args` to completion; its stdout, or an error with stderr.
pub fn run(program: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .env("PATH", NODE_PATH)
        .output()
        .map_err(|e| Error::Spawn { program: program.to_path_buf(), source: e })?;
    if !out.status.success() {
        return Err(Error::Config(format!(
            "`{} {}` failed ({}): {}",
            program.display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// [`run`] without blocking the thread (nodes start together).
pub async fn run_async(program: &Path, args: &[&str]) -> Result<String> {
    let out = tokio::process::Command::new(program)
        .args(args)
        .env("PATH", NODE_PATH)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| Error::Spawn { program: program.to_path_buf(), source: e })?;
    if !out.status.success() {
        return Err(Error::Config(format!(
            "`{} {}` failed ({}): {}",
            program.display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ip args`.
pub fn ip(args: &[&str]) -> Result<String> {
    run(&tool("ip")?, args)
}

/// This process, as the journal names owners.
pub fn this_process() -> Result<Owner> {
    let pid = std::process::id();
    start_time(pid)
        .map(|start_time| Owner { pid, start_time })
        .ok_or_else(|| Error::Config("cannot read this process's start time in /proc/self/stat".into()))
}

fn start_time(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().as_deref().and_then(process_start_time)
}

/// Whether `owner` is still the process that started its group.
pub fn is_alive(owner: &Owner) -> bool {
    start_time(owner.pid) == Some(owner.start_time)
}

/// Every IPv4 route destination on the host, all tables.
pub fn host_routes() -> Result<Vec<Ipv4Cidr>> {
    let json = ip(&["-j", "-4", "route", "show", "table", "all"])?;
    route_destinations(&json).map_err(Error::Config)
}

/// What a live group needs of the host ([`GROUP_SYSCTLS`]).
pub fn write_group_sysctls() -> Result<()> {
    let current = read_sysctls()?;
    let raised: BTreeMap<String, String> = GROUP_SYSCTLS
        .iter()
        .filter(|(name, wanted)| {
            let now = current.get(*name).and_then(|v| v.parse::<u64>().ok());
            now.is_none_or(|now| wanted.parse::<u64>().is_ok_and(|wanted| now < wanted))
        })
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    write_sysctls(&raised)
}

/// The current values of the sysctls the kubelet and the groups set.
pub fn read_sysctls() -> Result<BTreeMap<String, String>> {
    tracked_sysctls()
        .map(|name| {
            let path = Path::new("/proc/sys").join(name);
            let value = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
            Ok((name.to_string(), value.trim().to_string()))
        })
        .collect()
}

/// Writes sysctls (names are paths under `/proc/sys`).
pub fn write_sysctls(values: &BTreeMap<String, String>) -> Result<()> {
    for (name, value) in values {
        let path = Path::new("/proc/sys").join(name);
        std::fs::write(&path, value).map_err(|e| Error::io(&path, e))?;
        tracing::info!(sysctl = %name, %value, "restored host sysctl");
    }
    Ok(())
}

/// Reads the journal under the host-wide lock, lets `change` act on it
/// (the lock is held throughout) and writes it back atomically.
pub fn with_journal<T>(change: impl FnOnce(&mut HostJournal) -> Result<T>) -> Result<T> {
    let dir = Path::new(JOURNAL_DIR);
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let lock_path = dir.join(LOCK_FILE);
    let lock_file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| Error::io(&lock_path, e))?;
    // Held until `_lock` drops at the end of this function.
    let _lock = Flock::lock(lock_file, FlockArg::LockExclusive)
        .map_err(|(_, errno)| Error::io(&lock_path, std::io::Error::from(errno)))?;
    let path = dir.join(JOURNAL_FILE);
    let mut journal = match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| {
            Error::Config(format!("{}: {e} (remove it once no real node runs)", path.display()))
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => HostJournal::default(),
        Err(e) => return Err(Error::io(&path, e)),
    };
    let result = change(&mut journal);
    let text = serde_json::to_string_pretty(&journal).map_err(|e| Error::Config(e.to_string()))?;
    let tmp = dir.join(format!("{JOURNAL_FILE}.{}", std::process::id()));
    let mut file = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    file.write_all(text.as_bytes()).and_then(|()| file.sync_all()).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
    result
}
