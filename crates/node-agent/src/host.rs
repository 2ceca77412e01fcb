//! What the node agent reports about its host on the Machine's status:
//! addresses, capacity and software facts. This module reads the system;
//! [`parse`] makes sense of what it read. Nothing here fails: what cannot
//! be read is left out of the report.

pub mod parse;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use flotilla_api::machine::{MachineAddress, MachineInfo};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// How long `containerd --version` may take.
const RUNTIME_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// What the host is, as written into `status.addresses`, `status.capacity`
/// and `status.machineInfo`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostFacts {
    pub addresses: Vec<MachineAddress>,
    pub capacity: BTreeMap<String, Quantity>,
    pub info: MachineInfo,
}

fn read(path: &str) -> Option<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => Some(text),
        Err(e) => {
            tracing::debug!(path, error = %e, "cannot read a host fact");
            None
        }
    }
}

/// The IPs of the interfaces that are up, with their interface's name.
fn interface_ips() -> Vec<(String, IpAddr)> {
    use nix::net::if_::InterfaceFlags;
    let list = match nix::ifaddrs::getifaddrs() {
        Ok(list) => list,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the host's addresses");
            return Vec::new();
        }
    };
    list.filter(|i| i.flags.contains(InterfaceFlags::IFF_UP))
        .filter_map(|i| {
            let address = i.address?;
            let ip = match (address.as_sockaddr_in(), address.as_sockaddr_in6()) {
                (Some(v4), _) => IpAddr::V4(v4.ip()),
                (None, Some(v6)) => IpAddr::V6(v6.ip()),
                (None, None) => return None,
            };
            Some((i.interface_name, ip))
        })
        .collect()
}

/// Size in bytes of the file system holding `dir`.
fn disk_bytes(dir: &Path) -> Option<u64> {
    match nix::sys::statvfs::statvfs(dir) {
        Ok(fs) => fs.blocks().checked_mul(fs.fragment_size()),
        Err(e) => {
            tracing::debug!(dir = %dir.display(), error = %e, "cannot measure the state directory's file system");
            None
        }
    }
}

/// `v2` when `/sys/fs/cgroup` is the unified hierarchy (as the kubelet
/// decides it), else `v1`.
fn cgroup_version() -> Option<String> {
    let fs = nix::sys::statfs::statfs("/sys/fs/cgroup").ok()?;
    let unified = fs.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC;
    Some(if unified { "v2" } else { "v1" }.to_string())
}

/// The host as it is now. `given` replaces the InternalIPs found;
/// `container_runtime` is what [`container_runtime_version`] found.
pub fn detect(state_dir: &Path, given: Option<IpAddr>, container_runtime: Option<String>) -> HostFacts {
    let default_v4 = read("/proc/net/route").map(|t| parse::default_route_interfaces(&t)).unwrap_or_default();
    let default_v6 =
        read("/proc/net/ipv6_route").map(|t| parse::default_route_interfaces(&t)).unwrap_or_default();
    let ips = match given {
        Some(_) => Vec::new(),
        None => parse::ordered_ips(&interface_ips(), &default_v4, &default_v6),
    };
    let hostname = read("/proc/sys/kernel/hostname").and_then(|t| parse::hostname(&t));
    let cpus = read("/sys/devices/system/cpu/online").and_then(|t| parse::cpu_count(&t));
    let memory = read("/proc/meminfo").and_then(|t| parse::mem_total_kib(&t));
    let os_release = read("/etc/os-release").or_else(|| read("/usr/lib/os-release"));
    HostFacts {
        addresses: parse::addresses(&ips, given, hostname.as_deref()),
        capacity: parse::capacity(cpus, memory, disk_bytes(state_dir)),
        info: MachineInfo {
            kernel_version: read("/proc/sys/kernel/osrelease").and_then(|t| parse::line(&t)),
            os_image: os_release.and_then(|t| parse::os_image(&t)),
            architecture: Some(parse::go_arch(std::env::consts::ARCH)),
            cgroup_version: cgroup_version(),
            container_runtime_version: container_runtime,
            boot_id: read("/proc/sys/kernel/random/boot_id").and_then(|t| parse::line(&t)),
        },
    }
}

/// `containerd://VERSION` when `containerd` is on the PATH.
pub async fn container_runtime_version() -> Option<String> {
    let run = tokio::process::Command::new("containerd").arg("--version").kill_on_drop(true).output();
    match tokio::time::timeout(RUNTIME_PROBE_TIMEOUT, run).await {
        Ok(Ok(out)) if out.status.success() => {
            parse::containerd_version(&String::from_utf8_lossy(&out.stdout))
        }
        Ok(Ok(_)) | Err(_) => None,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "no container runtime found");
            None
        }
    }
}
