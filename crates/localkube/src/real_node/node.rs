//! One real node: its files, its namespaces (held by the *holder*
//! process), and containerd, the kubelet and kube-proxy running inside
//! them, all in the node's cgroup subtree.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use flotilla_core::kubeconfig::{self, Credential, KubeconfigSpec};
use flotilla_core::pki::LeafSpec;
use flotilla_kok_core::real_node::render::{holder_args, in_node};
use flotilla_kok_core::real_node::{Ipv4Cidr, NodeAddresses, NodeRuntime, SANDBOX_IMAGE};

use super::cgroups::CgroupTree;
use super::host::{run_async, NODE_PATH};
use super::images::NodeImages;
use crate::process::{ManagedProcess, ProcessSpec};
use crate::{Binaries, Cluster, Error, Result};

/// The cluster's DNS Service address (in localkube's service range).
pub const CLUSTER_DNS: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 10);
pub const CLUSTER_DOMAIN: &str = "cluster.local";
/// How long a node's containerd may take to answer.
const CONTAINERD_READY: Duration = Duration::from_secs(30);

/// What to start: a node's name, labels and pod capacity, and optionally
/// the Kubernetes release its kubelet and kube-proxy come from.
#[derive(Debug, Clone)]
pub struct RealNodeConfig {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub max_pods: u32,
    /// The group's binaries when `None`.
    pub binaries: Option<Binaries>,
}

impl RealNodeConfig {
    /// A node with room for 30 pods.
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into(), labels: BTreeMap::new(), max_pods: 30, binaries: None }
    }

    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }
}

/// The host programs a node runs.
#[derive(Debug, Clone)]
pub struct Tools {
    pub nsenter: PathBuf,
    pub containerd: PathBuf,
    pub ctr: PathBuf,
    pub cni_bin_dir: PathBuf,
}

/// What every node of a group starts from.
pub(crate) struct StartContext<'a> {
    pub cluster: &'a Cluster,
    /// The API server's URL as the nodes reach it.
    pub server: &'a str,
    pub cluster_cidr: Ipv4Cidr,
    pub tools: &'a Tools,
    pub binaries: &'a Binaries,
    pub images: &'a NodeImages,
}

/// A running real node. Stopping it kills its whole
/// cgroup subtree; its network and files are the group's to remove.
pub struct RealNode {
    name: String,
    addresses: NodeAddresses,
    runtime: NodeRuntime,
    cgroup: CgroupTree,
    /// holder, containerd, kubelet, kube-proxy (stopped in reverse).
    processes: Vec<ManagedProcess>,
    started: Instant,
    ready_after: Option<Duration>,
}

impl std::fmt::Debug for RealNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RealNode")
            .field("name", &self.name)
            .field("ip", &self.addresses.ip)
            .field("dir", &self.runtime.dir)
            .finish_non_exhaustive()
    }
}

impl RealNode {
    /// Writes the node's files and starts its holder, containerd (with the
    /// images imported), kubelet and kube-proxy; does not wait for Ready.
    pub(crate) async fn start(
        context: &StartContext<'_>,
        config: &RealNodeConfig,
        addresses: NodeAddresses,
        dir: PathBuf,
        cgroup: CgroupTree,
    ) -> Result<RealNode> {
        let started = Instant::now();
        let runtime = NodeRuntime {
            node_name: config.name.clone(),
            node_ip: addresses.ip,
            pod_cidr: addresses.pod_cidr,
            cluster_cidr: context.cluster_cidr,
            dir,
            cgroup: addresses.cgroup.clone(),
            cluster_dns: CLUSTER_DNS,
            cluster_domain: CLUSTER_DOMAIN.into(),
            cni_bin_dir: context.tools.cni_bin_dir.clone(),
            sandbox_image: SANDBOX_IMAGE.into(),
            max_pods: config.max_pods,
            labels: config.labels.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        };
        runtime.validate()?;
        write_files(context.cluster, context.server, &runtime)?;
        let mut node = RealNode {
            name: config.name.clone(),
            addresses,
            runtime,
            cgroup,
            processes: Vec::new(),
            started,
            ready_after: None,
        };
        let binaries = config.binaries.as_ref().unwrap_or(context.binaries);
        node.start_processes(context.tools, binaries, context.images).await?;
        Ok(node)
    }

    async fn start_processes(
        &mut self,
        tools: &Tools,
        binaries: &Binaries,
        images: &NodeImages,
    ) -> Result<()> {
        let paths = self.runtime.paths();
        let logs = paths.process_logs.clone();
        let cgroups = self.cgroup.system_dirs();
        let spec = |name: &str, program: &Path, args: Vec<String>| {
            let mut spec = ProcessSpec::new(name, program.to_path_buf(), logs.join(format!("{name}.log")))
                .args(args)
                .env("PATH", NODE_PATH);
            spec.cgroups = cgroups.clone();
            spec
        };

        let script = self.runtime.holder_script();
        let holder = ManagedProcess::spawn(spec(
            "holder",
            &tools.nsenter,
            holder_args(&self.addresses.netns, &script),
        ))?;
        self.processes.push(holder);
        self.wait_holder_ready(&paths.holder_ready).await?;
        let holder_pid = self.processes[0].pid().ok_or_else(|| Error::Config("the holder stopped".into()))?;
        let inside = |program: &Path, args: Vec<String>| in_node(holder_pid, program, &args);

        let containerd = ManagedProcess::spawn(spec(
            "containerd",
            &tools.nsenter,
            inside(&tools.containerd, self.runtime.containerd_args()),
        ))?;
        self.processes.push(containerd);
        self.wait_containerd(tools, &paths.containerd_socket).await?;
        images.import(&tools.ctr, &paths.containerd_socket).await?;

        let kubelet =
            spec("kubelet", &tools.nsenter, inside(&binaries.path("kubelet"), self.runtime.kubelet_args()));
        self.processes.push(ManagedProcess::spawn(kubelet)?);
        let proxy = spec(
            "kube-proxy",
            &tools.nsenter,
            inside(&binaries.path("kube-proxy"), self.runtime.kube_proxy_args()),
        );
        self.processes.push(ManagedProcess::spawn(proxy)?);
        tracing::info!(node = %self.name, ip = %self.addresses.ip, elapsed_ms = self.started.elapsed().as_millis() as u64, "real node processes started");
        Ok(())
    }

    async fn wait_holder_ready(&mut self, ready: &Path) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ready.exists() {
            self.processes[0].check_running()?;
            if Instant::now() > deadline {
                return Err(self.timeout("the node's mounts (holder)", 10));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    async fn wait_containerd(&mut self, tools: &Tools, socket: &Path) -> Result<()> {
        let deadline = Instant::now() + CONTAINERD_READY;
        let address = socket.display().to_string();
        loop {
            self.processes[1].check_running()?;
            if socket.exists() && run_async(&tools.ctr, &["--address", &address, "version"]).await.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(self.timeout("containerd to answer", CONTAINERD_READY.as_secs()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn timeout(&self, what: &str, seconds: u64) -> Error {
        Error::Timeout { what: format!("{what} on real node {}", self.name), seconds, detail: String::new() }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn addresses(&self) -> &NodeAddresses {
        &self.addresses
    }

    pub fn index(&self) -> u8 {
        self.addresses.index
    }

    /// The node's InternalIP (on the group's bridge).
    pub fn ip(&self) -> Ipv4Addr {
        self.addresses.ip
    }

    pub fn pod_cidr(&self) -> Ipv4Cidr {
        self.addresses.pod_cidr
    }

    /// The node's network namespace (`/run/netns/<name>`).
    pub fn netns(&self) -> &str {
        &self.addresses.netns
    }

    /// The host end of the node's veth pair.
    pub fn host_link(&self) -> &str {
        &self.addresses.host_link
    }

    /// The node's cgroup root (a top-level cgroup in each hierarchy).
    pub fn cgroup(&self) -> &str {
        self.cgroup.name()
    }

    pub fn dir(&self) -> &Path {
        &self.runtime.dir
    }

    /// Every process of the node now: its own and its pods'.
    pub fn pids(&self) -> Vec<u32> {
        self.cgroup.pids()
    }

    /// `holder`, `containerd`, `kubelet` or `kube-proxy`.
    pub fn process_mut(&mut self, name: &str) -> Option<&mut ManagedProcess> {
        self.processes.iter_mut().find(|p| p.name() == name)
    }

    /// How long the node took from start to Ready (once it was).
    pub fn ready_after(&self) -> Option<Duration> {
        self.ready_after
    }

    pub(crate) fn mark_ready(&mut self) {
        self.ready_after.get_or_insert(self.started.elapsed());
    }

    /// Fails (with its log tail) if one of the node's processes exited.
    pub fn check_running(&mut self) -> Result<()> {
        self.processes.iter_mut().try_for_each(ManagedProcess::check_running)
    }

    /// Stops the node: its processes, then whatever is left in its cgroup
    /// subtree (shims, pods), then the subtree itself.
    pub(crate) fn stop(&mut self) -> Result<()> {
        for process in self.processes.iter_mut().rev() {
            process.stop(Duration::ZERO);
        }
        self.cgroup.kill_all(Duration::from_secs(20))?;
        self.cgroup.remove()
    }
}

impl Drop for RealNode {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::warn!(node = %self.name, error = %e, "stopping a real node");
        }
    }
}

/// The node's configuration files, credentials and directories.
fn write_files(cluster: &Cluster, server: &str, runtime: &NodeRuntime) -> Result<()> {
    for dir in runtime.directories() {
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    }
    let paths = runtime.paths();
    let kubelet = cluster
        .ca()
        .issue(&LeafSpec::client(format!("system:node:{}", runtime.node_name), &["system:nodes"]))?;
    let proxy = cluster.ca().issue(&LeafSpec::client("system:kube-proxy", &[]))?;
    let kubeconfig = |cert: flotilla_core::pki::CertAndKey| {
        kubeconfig::render(&KubeconfigSpec {
            name: cluster.name().to_string(),
            server: server.to_string(),
            ca_pem: cluster.ca().pem.cert_pem.clone(),
            credential: Credential::ClientCert { cert_pem: cert.cert_pem, key_pem: cert.key_pem },
        })
    };
    let files = [
        (paths.containerd_config, runtime.containerd_config()),
        (paths.cni_conf_dir.join(runtime.cni_conflist_name()), runtime.cni_conflist()),
        (paths.kubelet_config, runtime.kubelet_config()),
        (paths.kube_proxy_config, runtime.kube_proxy_config()),
        (paths.client_ca, cluster.ca().pem.cert_pem.clone()),
        (paths.kubelet_kubeconfig, kubeconfig(kubelet)),
        (paths.kube_proxy_kubeconfig, kubeconfig(proxy)),
    ];
    for (path, contents) in files {
        crate::cluster::write_private(&path, &contents)?;
    }
    Ok(())
}
