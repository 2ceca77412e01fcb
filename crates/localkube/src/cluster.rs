use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use flotilla_core::kubeconfig::{self, Credential, KubeconfigSpec};
use flotilla_core::pki::{self, CertificateAuthority, LeafSpec, Usage};
use k8s_openapi::api::core::v1::{Node, ServiceAccount};
use kube::api::ListParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use serde::{Deserialize, Serialize};

use crate::etcd::{is_port_clash, Etcd};
use crate::ports::free_port;
use crate::process::{log_tail, ManagedProcess, ProcessSpec};
use crate::{Binaries, Error, Result};

/// Which kube-controller-manager controllers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControllerSet {
    /// Every default controller: a member cluster that runs workloads.
    All,
    /// Only what an API server holding templates needs (no workload
    /// controllers), as on Flotilla's hub; see DESIGN.md.
    TemplatesOnly,
}

impl ControllerSet {
    fn flag(self) -> &'static str {
        match self {
            ControllerSet::All => "*,bootstrapsigner,tokencleaner",
            ControllerSet::TemplatesOnly => {
                "namespace,garbagecollector,serviceaccount-token,serviceaccount,csrsigning,\
                 csrcleaner,bootstrapsigner,tokencleaner,root-ca-cert-publisher"
            }
        }
    }
}

/// A hollow (kubemark) node: a real kubelet with a fake container runtime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeConfig {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// `key=value:Effect`, as for `kubelet --register-with-taints`.
    pub taints: Vec<String>,
    pub cpu: u32,
    /// A Kubernetes quantity, e.g. `8Gi`.
    pub memory: String,
    pub max_pods: u32,
}

impl NodeConfig {
    /// A node with 4 CPUs, 8 GiB and 110 pods.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            labels: BTreeMap::new(),
            taints: Vec::new(),
            cpu: 4,
            memory: "8Gi".into(),
            max_pods: 110,
        }
    }

    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    pub fn capacity(mut self, cpu: u32, memory: impl Into<String>, max_pods: u32) -> Self {
        self.cpu = cpu;
        self.memory = memory.into();
        self.max_pods = max_pods;
        self
    }
}

/// What to start. See [`Cluster::start`].
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub name: String,
    pub nodes: Vec<NodeConfig>,
    pub controllers: Option<ControllerSet>,
    pub scheduler: bool,
    /// Where the cluster keeps its files; a fresh temporary directory
    /// (removed on drop) when `None`.
    pub dir: Option<PathBuf>,
    /// Use this etcd (client URL) instead of starting one for the cluster.
    pub etcd_url: Option<String>,
    /// Key prefix in etcd; `/<name>` by default.
    pub etcd_prefix: Option<String>,
    /// Validity of certificates signed through CertificateSigningRequests.
    pub csr_signing_duration: Option<Duration>,
    pub extra_apiserver_args: Vec<String>,
    pub binaries: Option<Binaries>,
    /// How long to wait for each stage (apiserver, nodes) to be ready.
    pub ready_timeout: Duration,
    /// Also wait for the `default` ServiceAccount of namespace `default`
    /// (needed before creating bare Pods there; workload controllers retry
    /// on their own). Off by default: it adds ~2s of controller-manager start.
    pub wait_for_default_service_account: bool,
    /// Also serve the API on this address (the apiserver binds every
    /// address and its certificate names this one), for clients in another
    /// network namespace. Loopback only when `None`.
    pub serve_on: Option<std::net::Ipv4Addr>,
}

impl ClusterConfig {
    /// A member-like cluster: all controllers, a scheduler, no nodes yet.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            nodes: Vec::new(),
            controllers: Some(ControllerSet::All),
            scheduler: true,
            dir: None,
            etcd_url: None,
            etcd_prefix: None,
            csr_signing_duration: None,
            extra_apiserver_args: Vec::new(),
            binaries: None,
            ready_timeout: Duration::from_secs(90),
            wait_for_default_service_account: false,
            serve_on: None,
        }
    }

    /// A hub: template-only controllers, no scheduler, no nodes.
    pub fn hub(name: impl Into<String>) -> Self {
        Self { controllers: Some(ControllerSet::TemplatesOnly), scheduler: false, ..Self::new(name) }
    }

    /// Just a kube-apiserver (and its etcd).
    pub fn apiserver_only(name: impl Into<String>) -> Self {
        Self { controllers: None, scheduler: false, ..Self::new(name) }
    }

    /// Adds `count` default nodes named `<cluster>-node-<i>`.
    pub fn with_nodes(mut self, count: usize) -> Self {
        let start = self.nodes.len();
        for i in start..start + count {
            self.nodes.push(NodeConfig::new(format!("{}-node-{}", self.name, i + 1)));
        }
        self
    }

    pub fn with_node(mut self, node: NodeConfig) -> Self {
        self.nodes.push(node);
        self
    }

    pub fn in_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    pub fn with_etcd(mut self, client_url: impl Into<String>) -> Self {
        self.etcd_url = Some(client_url.into());
        self
    }

    fn validate(&self) -> Result<()> {
        let dns_label = |s: &str| {
            !s.is_empty()
                && s.len() <= 63
                && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !s.starts_with('-')
                && !s.ends_with('-')
        };
        if !dns_label(&self.name) {
            return Err(Error::Config(format!(
                "cluster name {:?} must be a DNS label (lower-case letters, digits, '-')",
                self.name
            )));
        }
        let mut seen = std::collections::HashSet::new();
        for node in &self.nodes {
            if !seen.insert(&node.name) {
                return Err(Error::Config(format!("node name {:?} is used twice", node.name)));
            }
            if node.cpu == 0 || node.max_pods == 0 {
                return Err(Error::Config(format!("node {:?} needs at least 1 CPU and 1 pod", node.name)));
            }
        }
        if !self.nodes.is_empty() && self.controllers != Some(ControllerSet::All) {
            return Err(Error::Config("nodes need a cluster with all controllers".into()));
        }
        Ok(())
    }
}

/// Where the cluster's files live.
#[derive(Debug)]
enum ClusterDir {
    Temp(tempfile::TempDir),
    Kept(PathBuf),
}

impl ClusterDir {
    fn path(&self) -> &Path {
        match self {
            ClusterDir::Temp(t) => t.path(),
            ClusterDir::Kept(p) => p,
        }
    }
}

/// A description of a running cluster, for state files and status output.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClusterInfo {
    pub name: String,
    pub server: String,
    pub kubeconfig: PathBuf,
    pub dir: PathBuf,
    pub processes: Vec<ProcessInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProcessInfo {
    pub name: String,
    pub pid: Option<u32>,
    pub log: PathBuf,
    /// `https://127.0.0.1:<port>` of its health endpoint, if it has one.
    pub health_url: Option<String>,
}

/// A running Kubernetes cluster made of real processes. Dropping it stops
/// them all and removes its temporary directory.
pub struct Cluster {
    name: String,
    server: String,
    kubeconfig_path: PathBuf,
    ca: CertificateAuthority,
    admin_config: kube::Config,
    client: Client,
    /// apiserver first, then controller-manager, scheduler, nodes.
    processes: Vec<Component>,
    etcd: Option<Etcd>,
    nodes: Vec<NodeConfig>,
    /// Short-path scratch space for hollow kubelets: their fake runtime's
    /// unix socket lives in their root directory, and socket paths are
    /// limited to 108 bytes.
    node_scratch: tempfile::TempDir,
    dir: ClusterDir,
}

struct Component {
    process: ManagedProcess,
    health_port: Option<u16>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("name", &self.name)
            .field("server", &self.server)
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

const SERVICE_CIDR: &str = "10.0.0.0/24";
const SERVICE_IP: &str = "10.0.0.1";
const START_ATTEMPTS: usize = 3;

/// Paths of the cluster's PKI and kubeconfig files.
struct Files {
    ca_crt: PathBuf,
    ca_key: PathBuf,
    sa_key: PathBuf,
    sa_pub: PathBuf,
}

impl Cluster {
    /// Starts etcd (unless shared), kube-apiserver, the controller-manager and
    /// scheduler (if configured) and the hollow nodes, and returns when the
    /// API is ready and every node is Ready.
    pub async fn start(config: ClusterConfig) -> Result<Cluster> {
        config.validate()?;
        let binaries = match &config.binaries {
            Some(b) => b.clone(),
            None => Binaries::locate()?,
        };
        let dir = match &config.dir {
            Some(d) => {
                std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
                ClusterDir::Kept(d.clone())
            }
            None => ClusterDir::Temp(
                tempfile::Builder::new()
                    .prefix(&format!("flotilla-{}-", config.name))
                    .tempdir()
                    .map_err(|e| Error::io(&std::env::temp_dir(), e))?,
            ),
        };
        let root = dir.path().to_path_buf();
        let started = Instant::now();

        let ca = CertificateAuthority::generate(&format!("{}-ca", config.name))?;
        let files = write_static_pki(&root, &ca)?;

        let etcd = match &config.etcd_url {
            Some(_) => None,
            // A throw-away cluster keeps its etcd data in memory.
            None if config.dir.is_none() => Some(Etcd::start_in_memory(&binaries, &root).await?),
            None => Some(Etcd::start(&binaries, &root).await?),
        };
        let etcd_url = match (&config.etcd_url, &etcd) {
            (Some(url), _) => url.clone(),
            (None, Some(e)) => e.client_url().to_string(),
            (None, None) => unreachable!("etcd started above when no URL is given"),
        };
        let etcd_prefix = config.etcd_prefix.clone().unwrap_or_else(|| format!("/{}", config.name));

        // kube-apiserver
        let mut apiserver = None;
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            let port = free_port().map_err(|e| Error::io(&root, e))?;
            let server = format!("https://127.0.0.1:{port}");
            let spec = apiserver_spec(&binaries, &root, &config, &files, &ca, port, &etcd_url, &etcd_prefix)?;
            let kubeconfig_path = root.join("admin.kubeconfig");
            let admin = ca.issue(&LeafSpec::client("flotilla-admin", &["system:masters"]))?;
            write(&kubeconfig_path, &render_kubeconfig(&config.name, &server, &ca, admin))?;
            let mut process = ManagedProcess::spawn(spec)?;
            let admin_config = config_from_kubeconfig(&kubeconfig_path).await?;
            let client = client_for(admin_config.clone())?;
            match wait_apiserver_ready(&mut process, &client, config.ready_timeout).await {
                Ok(()) => {
                    apiserver = Some((process, port, server, kubeconfig_path, admin_config, client));
                    break;
                }
                Err(e) if is_port_clash(&e) => last_error = Some(e),
                Err(e) => return Err(e),
            }
        }
        let Some((process, port, server, kubeconfig_path, admin_config, client)) = apiserver else {
            return Err(last_error.unwrap_or_else(|| Error::Config("apiserver never started".into())));
        };
        tracing::info!(cluster = %config.name, %server, elapsed_ms = started.elapsed().as_millis() as u64, "kube-apiserver ready");

        let mut cluster = Cluster {
            name: config.name.clone(),
            server,
            kubeconfig_path,
            ca,
            admin_config,
            client,
            processes: vec![Component { process, health_port: Some(port) }],
            etcd,
            nodes: config.nodes.clone(),
            node_scratch: node_scratch_dir()?,
            dir,
        };

        // Controller-manager, scheduler and nodes start together; none of
        // them needs another to come up.
        for node in &config.nodes {
            let spec = cluster.node_spec(&binaries, node)?;
            let process = ManagedProcess::spawn(spec)?;
            cluster.processes.push(Component { process, health_port: None });
        }
        let admin = cluster.admin_config.clone();
        let ca = cluster.ca.clone();
        let timeout = config.ready_timeout;
        let controller_manager = async {
            match config.controllers {
                Some(set) => {
                    start_health_checked(&root, &admin, "kube-controller-manager", timeout, |dir, port| {
                        controller_manager_spec(&binaries, dir, &config, &files, &ca, set, port)
                    })
                    .await
                    .map(Some)
                }
                None => Ok(None),
            }
        };
        let scheduler = async {
            if config.scheduler {
                start_health_checked(&root, &admin, "kube-scheduler", timeout, |dir, port| {
                    scheduler_spec(&binaries, dir, &ca, port)
                })
                .await
                .map(Some)
            } else {
                Ok(None)
            }
        };
        let (controller_manager, scheduler, ()) =
            tokio::try_join!(controller_manager, scheduler, cluster.wait_nodes_ready(&binaries, timeout))?;
        tracing::info!(cluster = %cluster.name, elapsed_ms = started.elapsed().as_millis() as u64, "nodes ready");
        // Keep the order apiserver, controller-manager, scheduler, nodes.
        for component in [scheduler, controller_manager].into_iter().flatten() {
            cluster.processes.insert(1, component);
        }
        if config.wait_for_default_service_account && config.controllers == Some(ControllerSet::All) {
            cluster.wait_default_service_account(timeout).await?;
        }
        tracing::info!(cluster = %cluster.name, nodes = config.nodes.len(), elapsed_ms = started.elapsed().as_millis() as u64, "cluster ready");
        Ok(cluster)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A client with cluster-admin rights (group `system:masters`).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The admin client configuration (to derive other clients from).
    pub fn admin_config(&self) -> &kube::Config {
        &self.admin_config
    }

    /// Path of the admin kubeconfig.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig_path
    }

    /// `https://127.0.0.1:<port>` of the kube-apiserver.
    pub fn server(&self) -> &str {
        &self.server
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The cluster CA (it also signs CertificateSigningRequests).
    pub fn ca(&self) -> &CertificateAuthority {
        &self.ca
    }

    pub fn etcd(&self) -> Option<&Etcd> {
        self.etcd.as_ref()
    }

    /// A kubeconfig for `user` in `groups`, signed by the cluster CA.
    pub fn kubeconfig_for(&self, user: &str, groups: &[&str]) -> Result<String> {
        let cert = self.ca.issue(&LeafSpec::client(user, groups))?;
        Ok(render_kubeconfig(&self.name, &self.server, &self.ca, cert))
    }

    /// A client authenticated as `user` in `groups`.
    pub async fn client_for(&self, user: &str, groups: &[&str]) -> Result<Client> {
        let yaml = self.kubeconfig_for(user, groups)?;
        let kubeconfig = Kubeconfig::from_yaml(&yaml).map_err(|e| Error::Client(e.to_string()))?;
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(|e| Error::Client(e.to_string()))?;
        client_for(config)
    }

    /// Names of the cluster's processes (`etcd` when it has its own).
    pub fn process_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.processes.iter().map(|c| c.process.name().to_string()).collect();
        if self.etcd.is_some() {
            names.insert(0, "etcd".into());
        }
        names
    }

    /// The process named `name` (`kube-apiserver`, `kube-controller-manager`,
    /// `kube-scheduler`, a node's name, or `etcd`).
    pub fn process_mut(&mut self, name: &str) -> Option<&mut ManagedProcess> {
        if name == "etcd" {
            return self.etcd.as_mut().map(Etcd::process_mut);
        }
        self.processes.iter_mut().find(|c| c.process.name() == name).map(|c| &mut c.process)
    }

    /// Stops one process (it stays stopped until [`restart`](Self::restart)).
    pub fn stop(&mut self, name: &str) -> Result<()> {
        let process =
            self.process_mut(name).ok_or_else(|| Error::Config(format!("no process named {name:?}")))?;
        process.stop(Duration::ZERO);
        Ok(())
    }

    /// Starts a process again with its previous command line; for the
    /// apiserver, waits until it is ready again.
    pub async fn restart(&mut self, name: &str) -> Result<()> {
        let process =
            self.process_mut(name).ok_or_else(|| Error::Config(format!("no process named {name:?}")))?;
        process.restart()?;
        if name == "kube-apiserver" {
            let client = self.client.clone();
            let timeout = Duration::from_secs(60);
            let process = self.process_mut(name).ok_or_else(|| Error::Config(name.into()))?;
            wait_apiserver_ready(process, &client, timeout).await?;
        }
        Ok(())
    }

    /// What is running, for state files and `flotilla status`.
    pub fn info(&self) -> ClusterInfo {
        let mut processes: Vec<ProcessInfo> = Vec::new();
        if let Some(etcd) = &self.etcd {
            processes.push(ProcessInfo {
                name: "etcd".into(),
                pid: etcd.process().pid(),
                log: etcd.process().log_path().to_path_buf(),
                health_url: Some(etcd.client_url().to_string()),
            });
        }
        for c in &self.processes {
            processes.push(ProcessInfo {
                name: c.process.name().to_string(),
                pid: c.process.pid(),
                log: c.process.log_path().to_path_buf(),
                health_url: c.health_port.map(|p| format!("https://127.0.0.1:{p}")),
            });
        }
        ClusterInfo {
            name: self.name.clone(),
            server: self.server.clone(),
            kubeconfig: self.kubeconfig_path.clone(),
            dir: self.dir.path().to_path_buf(),
            processes,
        }
    }

    /// Stops everything, giving each process `grace` to exit after SIGTERM.
    pub fn shutdown(mut self, grace: Duration) {
        self.stop_all(grace);
    }

    fn stop_all(&mut self, grace: Duration) {
        // Nodes and controllers first, the apiserver last, then etcd.
        for c in self.processes.iter_mut().rev() {
            c.process.stop(grace);
        }
        if let Some(etcd) = self.etcd.as_mut() {
            etcd.process_mut().stop(grace);
        }
    }

    fn node_spec(&self, binaries: &Binaries, node: &NodeConfig) -> Result<ProcessSpec> {
        let root = self.dir.path();
        let node_dir = root.join("nodes").join(&node.name);
        std::fs::create_dir_all(&node_dir).map_err(|e| Error::io(&node_dir, e))?;
        let cert =
            self.ca.issue(&LeafSpec::client(format!("system:node:{}", node.name), &["system:nodes"]))?;
        let kubeconfig_path = node_dir.join("kubelet.kubeconfig");
        write(&kubeconfig_path, &render_kubeconfig(&self.name, &self.server, &self.ca, cert))?;
        let index = self.nodes.iter().position(|n| n.name == node.name).unwrap_or(self.nodes.len());
        let scratch = self.node_scratch.path().join(format!("n{index}"));
        std::fs::create_dir_all(&scratch).map_err(|e| Error::io(&scratch, e))?;
        let kubelet_port = free_port().map_err(|e| Error::io(root, e))?;
        let read_only_port = free_port().map_err(|e| Error::io(root, e))?;
        let labels: Vec<String> = node.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut spec = ProcessSpec::new(
            node.name.clone(),
            binaries.path("kubemark"),
            root.join("logs").join(format!("{}.log", node.name)),
        )
        .args([
            "--morph=kubelet".to_string(),
            format!("--name={}", node.name),
            format!("--kubeconfig={}", kubeconfig_path.display()),
            format!("--kubelet-port={kubelet_port}"),
            format!("--kubelet-read-only-port={read_only_port}"),
            format!("--node-cpu={}", node.cpu),
            format!("--node-memory={}", node.memory),
            format!("--max-pods={}", node.max_pods),
            // Report Ready within ~1s of registering (upstream: 10s). Only
            // changes are posted, so this costs the API server little.
            "--node-status-update-frequency=1s".to_string(),
            // JSON is what our API server speaks best; protobuf works too.
            "--kube-api-content-type=application/vnd.kubernetes.protobuf".to_string(),
        ])
        // The hollow kubelet keeps its root directory under TMPDIR.
        .env("TMPDIR", scratch.display().to_string());
        if !labels.is_empty() {
            spec = spec.arg(format!("--node-labels={}", labels.join(",")));
        }
        if !node.taints.is_empty() {
            spec = spec.arg(format!("--register-with-taints={}", node.taints.join(",")));
        }
        Ok(spec)
    }

    /// Waits until every configured node is registered and Ready.
    async fn wait_nodes_ready(&mut self, binaries: &Binaries, timeout: Duration) -> Result<()> {
        if self.nodes.is_empty() {
            return Ok(());
        }
        let deadline = Instant::now() + timeout;
        let nodes_api: Api<Node> = Api::all(self.client.clone());
        let mut respawns = 0;
        loop {
            // A hollow node that lost a port race is started again on new ports.
            for i in 0..self.processes.len() {
                let Some(node) =
                    self.nodes.iter().find(|n| n.name == self.processes[i].process.name()).cloned()
                else {
                    continue;
                };
                if let Err(e) = self.processes[i].process.check_running() {
                    if is_port_clash(&e) && respawns < START_ATTEMPTS {
                        respawns += 1;
                        let spec = self.node_spec(binaries, &node)?;
                        self.processes[i].process = ManagedProcess::spawn(spec)?;
                    } else {
                        return Err(e);
                    }
                }
            }
            let ready = match nodes_api.list(&ListParams::default()).await {
                Ok(list) => list.items.iter().filter(|n| node_is_ready(n)).count(),
                Err(_) => 0,
            };
            if ready >= self.nodes.len() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout {
                    what: format!("{} nodes of cluster {} to be Ready", self.nodes.len(), self.name),
                    seconds: timeout.as_secs(),
                    detail: format!(" ({ready} Ready)"),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn wait_default_service_account(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), "default");
        loop {
            if let Ok(Some(_)) = api.get_opt("default").await {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout {
                    what: "the default service account".into(),
                    seconds: timeout.as_secs(),
                    detail: String::new(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `count` nodes are Ready (e.g. after restarting some).
    pub async fn wait_ready_nodes(&self, count: usize, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let nodes_api: Api<Node> = Api::all(self.client.clone());
        loop {
            let ready = match nodes_api.list(&ListParams::default()).await {
                Ok(list) => list.items.iter().filter(|n| node_is_ready(n)).count(),
                Err(_) => 0,
            };
            if ready >= count {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout {
                    what: format!("{count} Ready nodes in cluster {}", self.name),
                    seconds: timeout.as_secs(),
                    detail: format!(" ({ready} Ready)"),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_all(Duration::ZERO);
    }
}

/// A short directory for hollow kubelets' root directories: TMPDIR if its
/// path is short enough for the unix socket inside, else /tmp.
fn node_scratch_dir() -> Result<tempfile::TempDir> {
    let tmp = std::env::temp_dir();
    let base = if tmp.as_os_str().len() <= 40 { tmp } else { PathBuf::from("/tmp") };
    tempfile::Builder::new().prefix("flk-").tempdir_in(&base).map_err(|e| Error::io(&base, e))
}

pub fn node_is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn write(path: &Path, contents: &str) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    std::fs::write(path, contents).map_err(|e| Error::io(path, e))?;
    // Keys and credentials: owner only.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|e| Error::io(path, e))
}

fn write_static_pki(root: &Path, ca: &CertificateAuthority) -> Result<Files> {
    let pki_dir = root.join("pki");
    let files = Files {
        ca_crt: pki_dir.join("ca.crt"),
        ca_key: pki_dir.join("ca.key"),
        sa_key: pki_dir.join("sa.key"),
        sa_pub: pki_dir.join("sa.pub"),
    };
    write(&files.ca_crt, &ca.pem.cert_pem)?;
    write(&files.ca_key, &ca.pem.key_pem)?;
    let sa = pki::generate_key_pair()?;
    write(&files.sa_key, &sa.private_pem)?;
    write(&files.sa_pub, &sa.public_pem)?;
    Ok(files)
}

fn render_kubeconfig(name: &str, server: &str, ca: &CertificateAuthority, cert: pki::CertAndKey) -> String {
    kubeconfig::render(&KubeconfigSpec {
        name: name.to_string(),
        server: server.to_string(),
        ca_pem: ca.pem.cert_pem.clone(),
        credential: Credential::ClientCert { cert_pem: cert.cert_pem, key_pem: cert.key_pem },
    })
}

/// Writes a serving certificate for `name` on loopback and returns its paths.
fn serving_cert(
    root: &Path,
    ca: &CertificateAuthority,
    name: &str,
    extra_sans: &[&str],
) -> Result<(PathBuf, PathBuf)> {
    let mut sans: Vec<String> = vec!["127.0.0.1".into(), "localhost".into()];
    sans.extend(extra_sans.iter().map(|s| s.to_string()));
    let cert = ca.issue(&LeafSpec { usage: Usage::Server, ..LeafSpec::server(name, &sans) })?;
    let crt = root.join("pki").join(format!("{name}.crt"));
    let key = root.join("pki").join(format!("{name}.key"));
    write(&crt, &cert.cert_pem)?;
    write(&key, &cert.key_pem)?;
    Ok((crt, key))
}

/// A kubeconfig for a control-plane component, with its own client identity.
fn component_kubeconfig(root: &Path, ca: &CertificateAuthority, user: &str) -> Result<PathBuf> {
    let server = std::fs::read_to_string(root.join("server")).map_err(|e| Error::io(root, e))?;
    let cert = ca.issue(&LeafSpec::client(user, &[]))?;
    let path = root.join(format!("{}.kubeconfig", user.trim_start_matches("system:")));
    write(&path, &render_kubeconfig("cluster", server.trim(), ca, cert))?;
    Ok(path)
}

#[allow(clippy::too_many_arguments)]
fn apiserver_spec(
    binaries: &Binaries,
    root: &Path,
    config: &ClusterConfig,
    files: &Files,
    ca: &CertificateAuthority,
    port: u16,
    etcd_url: &str,
    etcd_prefix: &str,
) -> Result<ProcessSpec> {
    let serve_on = config.serve_on.map(|ip| ip.to_string());
    let mut sans = vec![
        SERVICE_IP,
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ];
    sans.extend(serve_on.as_deref());
    let (crt, key) = serving_cert(root, ca, "kube-apiserver", &sans)?;
    let bind = if serve_on.is_some() { "0.0.0.0" } else { "127.0.0.1" };
    // Components read the server address from here.
    write(&root.join("server"), &format!("https://127.0.0.1:{port}"))?;
    let mut spec = ProcessSpec::new(
        "kube-apiserver",
        binaries.path("kube-apiserver"),
        root.join("logs/kube-apiserver.log"),
    )
    .args([
        format!("--etcd-servers={etcd_url}"),
        format!("--etcd-prefix={etcd_prefix}"),
        format!("--bind-address={bind}"),
        "--advertise-address=127.0.0.1".into(),
        format!("--secure-port={port}"),
        "--insecure-port=0".into(),
        format!("--cert-dir={}", root.join("pki").display()),
        format!("--tls-cert-file={}", crt.display()),
        format!("--tls-private-key-file={}", key.display()),
        format!("--client-ca-file={}", files.ca_crt.display()),
        "--authorization-mode=Node,RBAC".into(),
        "--enable-bootstrap-token-auth=true".into(),
        "--enable-admission-plugins=NodeRestriction".into(),
        format!("--service-cluster-ip-range={SERVICE_CIDR}"),
        format!("--service-account-key-file={}", files.sa_pub.display()),
        format!("--service-account-signing-key-file={}", files.sa_key.display()),
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
        "--api-audiences=https://kubernetes.default.svc.cluster.local".into(),
        "--allow-privileged=true".into(),
        "--profiling=false".into(),
        "--v=1".into(),
    ]);
    spec.args.extend(config.extra_apiserver_args.iter().cloned());
    Ok(spec)
}

fn controller_manager_spec(
    binaries: &Binaries,
    root: &Path,
    config: &ClusterConfig,
    files: &Files,
    ca: &CertificateAuthority,
    controllers: ControllerSet,
    port: u16,
) -> Result<ProcessSpec> {
    let kubeconfig = component_kubeconfig(root, ca, "system:kube-controller-manager")?;
    let (crt, key) = serving_cert(root, ca, "kube-controller-manager", &[])?;
    let mut spec = ProcessSpec::new(
        "kube-controller-manager",
        binaries.path("kube-controller-manager"),
        root.join("logs/kube-controller-manager.log"),
    )
    .args([
        format!("--kubeconfig={}", kubeconfig.display()),
        format!("--authentication-kubeconfig={}", kubeconfig.display()),
        format!("--authorization-kubeconfig={}", kubeconfig.display()),
        "--bind-address=127.0.0.1".into(),
        format!("--secure-port={port}"),
        "--port=0".into(),
        format!("--tls-cert-file={}", crt.display()),
        format!("--tls-private-key-file={}", key.display()),
        format!("--cluster-signing-cert-file={}", files.ca_crt.display()),
        format!("--cluster-signing-key-file={}", files.ca_key.display()),
        format!("--service-account-private-key-file={}", files.sa_key.display()),
        format!("--root-ca-file={}", files.ca_crt.display()),
        "--use-service-account-credentials=true".into(),
        format!("--controllers={}", controllers.flag()),
        "--leader-elect=false".into(),
        format!("--cluster-name={}", config.name),
        format!("--service-cluster-ip-range={SERVICE_CIDR}"),
        "--profiling=false".into(),
    ]);
    if let Some(d) = config.csr_signing_duration {
        spec = spec.arg(format!("--cluster-signing-duration={}s", d.as_secs()));
    }
    Ok(spec)
}

fn scheduler_spec(
    binaries: &Binaries,
    root: &Path,
    ca: &CertificateAuthority,
    port: u16,
) -> Result<ProcessSpec> {
    let kubeconfig = component_kubeconfig(root, ca, "system:kube-scheduler")?;
    let (crt, key) = serving_cert(root, ca, "kube-scheduler", &[])?;
    Ok(ProcessSpec::new(
        "kube-scheduler",
        binaries.path("kube-scheduler"),
        root.join("logs/kube-scheduler.log"),
    )
    .args([
        format!("--kubeconfig={}", kubeconfig.display()),
        format!("--authentication-kubeconfig={}", kubeconfig.display()),
        format!("--authorization-kubeconfig={}", kubeconfig.display()),
        "--bind-address=127.0.0.1".into(),
        format!("--secure-port={port}"),
        "--port=0".into(),
        format!("--tls-cert-file={}", crt.display()),
        format!("--tls-private-key-file={}", key.display()),
        "--leader-elect=false".into(),
        "--profiling=false".into(),
    ]))
}

/// Starts a component that serves `/healthz` on `port` and waits until it
/// answers; on a port clash, tries again on another port.
async fn start_health_checked(
    root: &Path,
    admin_config: &kube::Config,
    name: &str,
    timeout: Duration,
    make_spec: impl Fn(&Path, u16) -> Result<ProcessSpec>,
) -> Result<Component> {
    let mut last_error = None;
    for _ in 0..START_ATTEMPTS {
        let port = free_port().map_err(|e| Error::io(root, e))?;
        let mut process = ManagedProcess::spawn(make_spec(root, port)?)?;
        let mut health_config = admin_config.clone();
        health_config.cluster_url = format!("https://127.0.0.1:{port}")
            .parse()
            .map_err(|e| Error::Config(format!("health URL: {e}")))?;
        let health = client_for(health_config)?;
        match wait_healthz(&mut process, &health, "/healthz", timeout).await {
            Ok(()) => return Ok(Component { process, health_port: Some(port) }),
            Err(e) if is_port_clash(&e) => last_error = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last_error.unwrap_or_else(|| Error::Config(format!("{name} never started"))))
}

async fn config_from_kubeconfig(path: &Path) -> Result<kube::Config> {
    let kubeconfig = Kubeconfig::read_from(path).map_err(|e| Error::Client(e.to_string()))?;
    kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| Error::Client(e.to_string()))
}

fn client_for(mut config: kube::Config) -> Result<Client> {
    // Fail fast while polling a server that is still starting.
    config.connect_timeout = Some(Duration::from_secs(2));
    config.read_timeout = Some(Duration::from_secs(30));
    Client::try_from(config).map_err(|e| Error::Client(e.to_string()))
}

async fn wait_apiserver_ready(
    process: &mut ManagedProcess,
    client: &Client,
    timeout: Duration,
) -> Result<()> {
    wait_healthz(process, client, "/readyz", timeout).await
}

/// Polls `path` until it answers `ok`, failing early (with the log tail) if
/// the process exits.
async fn wait_healthz(
    process: &mut ManagedProcess,
    client: &Client,
    path: &str,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        process.check_running()?;
        let request = http::Request::get(path).body(Vec::new()).map_err(|e| Error::Client(e.to_string()))?;
        let last = match client.request_text(request).await {
            Ok(body) if body.trim() == "ok" => return Ok(()),
            Ok(body) => body,
            Err(e) => e.to_string(),
        };
        if Instant::now() > deadline {
            return Err(Error::Timeout {
                what: format!("{} {path}", process.name()),
                seconds: timeout.as_secs(),
                detail: format!(
                    "; last answer: {last}; last lines of {}:\n{}",
                    process.log_path().display(),
                    log_tail(process.log_path(), 15)
                ),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
