//! One real node's files and command lines: containerd's config.toml, the
//! CNI conflist, the kubelet's and kube-proxy's configurations, the
//! holder's script (the process owning the node's namespaces) and how a
//! program is run inside them.
//!
//! Why the settings are not defaults (see issue 12):
//! - one containerd per node (own root, state, socket): two kubelets on one
//!   containerd kill each other's pods;
//! - containerd `restrict_oom_score_adj`: root here may lack
//!   CAP_SYS_RESOURCE, and every sandbox then fails ("can't get final
//!   child's PID from pipe: EOF");
//! - the node's own mount namespace, where `/var/log` is the node's log
//!   directory (the kubelet hard-codes `/var/log/pods` and deletes other
//!   nodes' logs), `/var/lib/cni` its CNI cache and `/run` a private tmpfs
//!   (runc state, shim sockets, pod network namespaces), so nothing of a
//!   node outlives its namespace on the host;
//! - kubelet `cgroupDriver: cgroupfs` under a cgroup root per node,
//!   `failSwapOn: false`, `makeIPTablesUtilChains: false`, and memory as
//!   the only eviction signal: the nodes share the host's disk, so one
//!   node's disk signal is every node's (disk thresholds at 0% are off;
//!   leaving them out would bring back the defaults). Local storage
//!   capacity isolation stays on: without it cAdvisor collects no
//!   filesystem stats and the kubelet's stats summary fails.
//! - kube-proxy leaves conntrack sysctls alone (`maxPerCore: 0`, zero
//!   timeouts): `nf_conntrack_max` and the hash size are host-global.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde_json::json;

use super::address::Ipv4Cidr;
use super::RealNodeError;

/// Longest unix socket path (`sun_path` holds 108 bytes with the NUL).
const MAX_SOCKET_PATH: usize = 107;
/// Directories the node's mount namespace replaces: a node directory
/// inside one would vanish from the node's view.
const REPLACED_IN_NODE: [&str; 3] = ["/run", "/var/log", "/var/lib/cni"];
/// The kubelet's port on the node IP (the API server dials it for logs,
/// exec and the stats summary).
pub const KUBELET_PORT: u16 = 10250;
/// kube-proxy's health port on the node IP (200 once rules are synced).
pub const KUBE_PROXY_HEALTH_PORT: u16 = 10256;

/// What one node is: its identity, addresses, directory and cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRuntime {
    pub node_name: String,
    pub node_ip: Ipv4Addr,
    pub pod_cidr: Ipv4Cidr,
    /// Every pod address of the cluster (kube-proxy masquerades what
    /// comes from elsewhere).
    pub cluster_cidr: Ipv4Cidr,
    /// The node's directory: every file it writes lives here.
    pub dir: PathBuf,
    /// The node's cgroup root, a top-level cgroup name (`flotilla-s7-n0`).
    pub cgroup: String,
    pub cluster_dns: Ipv4Addr,
    pub cluster_domain: String,
    pub cni_bin_dir: PathBuf,
    pub sandbox_image: String,
    pub max_pods: u32,
    /// `key=value` labels the kubelet registers the node with.
    pub labels: Vec<String>,
}

/// Where a node keeps each file, all under [`NodeRuntime::dir`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePaths {
    pub containerd_config: PathBuf,
    pub containerd_root: PathBuf,
    pub containerd_state: PathBuf,
    pub containerd_socket: PathBuf,
    pub containerd_opt: PathBuf,
    pub cni_conf_dir: PathBuf,
    pub cni_ipam_dir: PathBuf,
    /// Mounted on `/var/lib/cni` in the node (libcni's result cache).
    pub cni_cache_dir: PathBuf,
    /// Mounted on `/var/log` in the node (`pods/`, `containers/`).
    pub log_dir: PathBuf,
    pub kubelet_root: PathBuf,
    pub kubelet_config: PathBuf,
    pub kubelet_kubeconfig: PathBuf,
    pub kubelet_cert_dir: PathBuf,
    /// The cluster CA: the kubelet accepts clients it signed.
    pub client_ca: PathBuf,
    pub kube_proxy_config: PathBuf,
    pub kube_proxy_kubeconfig: PathBuf,
    /// Created by the holder once the node's mounts are in place.
    pub holder_ready: PathBuf,
    /// The processes' logs (on the host side).
    pub process_logs: PathBuf,
}

impl NodeRuntime {
    pub fn paths(&self) -> NodePaths {
        let d = &self.dir;
        NodePaths {
            containerd_config: d.join("containerd.toml"),
            containerd_root: d.join("containerd/root"),
            containerd_state: d.join("containerd/state"),
            containerd_socket: d.join("containerd.sock"),
            containerd_opt: d.join("containerd/opt"),
            cni_conf_dir: d.join("cni/net.d"),
            cni_ipam_dir: d.join("cni/ipam"),
            cni_cache_dir: d.join("cni/cache"),
            log_dir: d.join("var-log"),
            kubelet_root: d.join("kubelet"),
            kubelet_config: d.join("kubelet-config.yaml"),
            kubelet_kubeconfig: d.join("kubelet.kubeconfig"),
            kubelet_cert_dir: d.join("kubelet-pki"),
            client_ca: d.join("ca.crt"),
            kube_proxy_config: d.join("kube-proxy-config.yaml"),
            kube_proxy_kubeconfig: d.join("kube-proxy.kubeconfig"),
            holder_ready: d.join("holder.ready"),
            process_logs: d.join("logs"),
        }
    }

    /// The directories to create before the node starts.
    pub fn directories(&self) -> Vec<PathBuf> {
        let p = self.paths();
        vec![
            p.containerd_root,
            p.containerd_state,
            p.containerd_opt,
            p.cni_conf_dir,
            p.cni_ipam_dir,
            p.cni_cache_dir,
            p.log_dir,
            p.kubelet_root,
            p.kubelet_cert_dir,
            p.process_logs,
        ]
    }

    /// Refuses a directory the node could not use: relative, inside a
    /// directory its mount namespace replaces, or too long for sockets.
    pub fn validate(&self) -> Result<(), RealNodeError> {
        let dir = &self.dir;
        if !dir.is_absolute() {
            return Err(RealNodeError::BadPath(format!(
                "the node directory {} must be absolute",
                dir.display()
            )));
        }
        if let Some(replaced) = REPLACED_IN_NODE.iter().find(|r| dir.starts_with(r)) {
            return Err(RealNodeError::BadPath(format!(
                "the node directory {} is under {replaced}, which the node's mount namespace replaces; \
                 put it elsewhere (e.g. TMPDIR=/tmp)",
                dir.display()
            )));
        }
        // containerd also listens on `<socket>.ttrpc`.
        let longest = self.paths().containerd_socket.as_os_str().len() + ".ttrpc".len();
        if longest > MAX_SOCKET_PATH {
            return Err(RealNodeError::BadPath(format!(
                "the node directory {} is too long: containerd's socket path would be {longest} bytes, \
                 unix sockets allow {MAX_SOCKET_PATH}",
                dir.display()
            )));
        }
        Ok(())
    }

    /// containerd's config.toml (version 2).
    pub fn containerd_config(&self) -> String {
        let p = self.paths();
        let s = |path: &Path| toml_string(&path.display().to_string());
        format!(
            r#"version = 2
root = {root}
state = {state}
# Snapshotters this host has no use for; they only log failures.
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]

[grpc]
  address = {socket}

[plugins."io.containerd.internal.v1.opt"]
  path = {opt}

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = {sandbox}
  restrict_oom_score_adj = true
  enable_cdi = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = {cni_bin}
    conf_dir = {cni_conf}
    max_conf_num = 1
"#,
            root = s(&p.containerd_root),
            state = s(&p.containerd_state),
            socket = s(&p.containerd_socket),
            opt = s(&p.containerd_opt),
            sandbox = toml_string(&self.sandbox_image),
            cni_bin = s(&self.cni_bin_dir),
            cni_conf = s(&p.cni_conf_dir),
        )
    }

    /// The CNI network: a bridge (`cni0`, the pods' gateway) with host-local
    /// addresses from the node's pod CIDR, port mappings and loopback.
    /// No masquerading: pods on other nodes and the host see pod addresses.
    pub fn cni_conflist(&self) -> String {
        let p = self.paths();
        let conf = json!({
            "cniVersion": "1.0.0",
            "name": "flotilla",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": "cni0",
                    "isGateway": true,
                    "ipMasq": false,
                    "hairpinMode": true,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": self.pod_cidr.to_string()}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": p.cni_ipam_dir.display().to_string(),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": true}},
                {"type": "loopback"},
            ],
        });
        pretty(&conf)
    }

    /// The conflist's file name in [`NodePaths::cni_conf_dir`].
    pub fn cni_conflist_name(&self) -> &'static str {
        "10-flotilla.conflist"
    }

    /// The kubelet's KubeletConfiguration (JSON, which the kubelet reads as
    /// YAML).
    pub fn kubelet_config(&self) -> String {
        let p = self.paths();
        let conf = json!({
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            // Hosts with cgroup v1 still run nodes (the kubelet refuses by default).
            "failCgroupV1": false,
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": format!("/{}", self.cgroup),
            "cgroupsPerQOS": true,
            "failSwapOn": false,
            "makeIPTablesUtilChains": false,
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "0%",
                "nodefs.inodesFree": "0%",
                "imagefs.available": "0%",
                "imagefs.inodesFree": "0%",
            },
            "address": self.node_ip.to_string(),
            "port": KUBELET_PORT,
            "healthzPort": 0,
            "readOnlyPort": 0,
            // Only clients with a certificate of the cluster CA (the API
            // server) reach the kubelet; they may do anything.
            "authentication": {
                "anonymous": {"enabled": false},
                "webhook": {"enabled": false},
                "x509": {"clientCAFile": p.client_ca.display().to_string()},
            },
            "authorization": {"mode": "AlwaysAllow"},
            "containerRuntimeEndpoint": format!("unix://{}", p.containerd_socket.display()),
            "podCIDR": self.pod_cidr.to_string(),
            "clusterDNS": [self.cluster_dns.to_string()],
            "clusterDomain": self.cluster_domain,
            "resolvConf": "/etc/resolv.conf",
            "maxPods": self.max_pods,
            // Ready within a couple of seconds of registering (default 10s).
            "nodeStatusUpdateFrequency": "2s",
            "rotateCertificates": false,
            "serializeImagePulls": false,
        });
        pretty(&conf)
    }

    /// kube-proxy's KubeProxyConfiguration (iptables, in the node's network
    /// namespace).
    pub fn kube_proxy_config(&self) -> String {
        let p = self.paths();
        let conf = json!({
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": p.kube_proxy_kubeconfig.display().to_string()},
            "hostnameOverride": self.node_name,
            "mode": "iptables",
            "clusterCIDR": self.cluster_cidr.to_string(),
            "healthzBindAddress": format!("{}:{KUBE_PROXY_HEALTH_PORT}", self.node_ip),
            "metricsBindAddress": "127.0.0.1:10249",
            // NodePorts on the node's own IP (not on every address).
            "nodePortAddresses": ["primary"],
            // Host-global values stay as they are (see the module docs).
            "conntrack": {
                "maxPerCore": 0,
                "min": 0,
                "tcpEstablishedTimeout": "0s",
                "tcpCloseWaitTimeout": "0s",
            },
            // Lowering a score needs CAP_SYS_RESOURCE; keep the inherited one.
            "oomScoreAdj": 0,
        });
        pretty(&conf)
    }

    /// containerd's arguments.
    pub fn containerd_args(&self) -> Vec<String> {
        vec![
            "--config".into(),
            self.paths().containerd_config.display().to_string(),
            "--log-level=warn".into(),
        ]
    }

    /// The kubelet's arguments.
    pub fn kubelet_args(&self) -> Vec<String> {
        let p = self.paths();
        let mut args = vec![
            format!("--config={}", p.kubelet_config.display()),
            format!("--kubeconfig={}", p.kubelet_kubeconfig.display()),
            format!("--root-dir={}", p.kubelet_root.display()),
            format!("--cert-dir={}", p.kubelet_cert_dir.display()),
            format!("--hostname-override={}", self.node_name),
            format!("--node-ip={}", self.node_ip),
            "--v=1".into(),
        ];
        if !self.labels.is_empty() {
            args.push(format!("--node-labels={}", self.labels.join(",")));
        }
        args
    }

    /// kube-proxy's arguments.
    pub fn kube_proxy_args(&self) -> Vec<String> {
        vec![format!("--config={}", self.paths().kube_proxy_config.display()), "--v=1".into()]
    }

    /// The holder's script, run by `sh -c` in the node's fresh mount
    /// namespace (private propagation): the node's own `/run`, `/var/log`
    /// and `/var/lib/cni`, then the ready file, then sleep until killed.
    pub fn holder_script(&self) -> String {
        let p = self.paths();
        let q = |path: &Path| shell_quote(&path.display().to_string());
        format!(
            "set -e\n\
             mount -t tmpfs -o mode=0755 flotilla-node-run /run\n\
             mkdir -p /run/netns\n\
             mount --bind {log} /var/log\n\
             # The mount point itself is on the host (the path CNI packages use).\n\
             mkdir -p /var/lib/cni\n\
             mount --bind {cni_cache} /var/lib/cni\n\
             touch {ready}\n\
             exec sleep infinity\n",
            log = q(&p.log_dir),
            cni_cache = q(&p.cni_cache_dir),
            ready = q(&p.holder_ready),
        )
    }
}

/// The command line running `program args` in the namespaces of the
/// holder `holder_pid` (mount and network). Paths must be absolute:
/// entering a mount namespace resets the working directory.
pub fn in_node(holder_pid: u32, program: &Path, args: &[String]) -> Vec<String> {
    let mut line = vec![
        format!("--target={holder_pid}"),
        "--mount".into(),
        "--net".into(),
        "--".into(),
        program.display().to_string(),
    ];
    line.extend(args.iter().cloned());
    line
}

/// The holder's command line (after `nsenter`): enter the node's network
/// namespace, make a private mount namespace, run the script. The shell
/// dies with `unshare` (`--kill-child`), `unshare` with its parent.
pub fn holder_args(netns: &str, script: &str) -> Vec<String> {
    vec![
        format!("--net=/run/netns/{netns}"),
        "--".into(),
        "unshare".into(),
        "--mount".into(),
        "--propagation".into(),
        "private".into(),
        "--fork".into(),
        "--kill-child".into(),
        "--".into(),
        "/bin/sh".into(),
        "-c".into(),
        script.into(),
    ]
}

fn pretty(value: &serde_json::Value) -> String {
    // Serializing a Value built by json! cannot fail.
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    text
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::from('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A POSIX shell single-quoted word.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
#[path = "render_tests.rs"]
mod tests;
