//! What a cluster is asked to be: its controllers, nodes, binaries and
//! place.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

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
    pub(crate) fn flag(self) -> &'static str {
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
    /// Real kubelets will join (see [`crate::real_node`]): the API server
    /// advertises `serve_on` (so the `kubernetes` Service leads there),
    /// dials kubelets on their InternalIP, and presents a client
    /// certificate of the cluster CA to them.
    pub real_kubelets: bool,
    /// The API aggregation layer for extension API servers run beside the
    /// cluster (e.g. metrics-server, see [`crate::metrics_server`]): a
    /// front-proxy CA and client certificate, the request-header flags, and
    /// routing to an APIService's endpoints rather than its Service IP (no
    /// kube-proxy runs on the host).
    pub aggregation: bool,
}

/// The admission plugins a hub's API server runs without.
pub const HUB_DISABLED_ADMISSION: &str = "--disable-admission-plugins=StorageObjectInUseProtection";

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
            real_kubelets: false,
            aggregation: false,
        }
    }

    /// A hub: template-only controllers, no scheduler, no nodes. Its API
    /// server does not add the `kubernetes.io/pvc-protection` finalizer
    /// (as Karmada's turns `StorageObjectInUseProtection` off): the
    /// controller that removes it does not run on a hub, so a
    /// PersistentVolumeClaim template would never go.
    pub fn hub(name: impl Into<String>) -> Self {
        Self {
            controllers: Some(ControllerSet::TemplatesOnly),
            scheduler: false,
            extra_apiserver_args: vec![HUB_DISABLED_ADMISSION.into()],
            ..Self::new(name)
        }
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

    /// Serves the API on `gateway` (the real nodes' bridge address, see
    /// [`crate::real_node::RealNodes::gateway`]) for real kubelets.
    pub fn for_real_nodes(mut self, gateway: std::net::Ipv4Addr) -> Self {
        self.serve_on = Some(gateway);
        self.real_kubelets = true;
        self
    }

    /// Enables the API aggregation layer ([`Self::aggregation`]).
    pub fn with_aggregation(mut self) -> Self {
        self.aggregation = true;
        self
    }

    pub fn with_etcd(mut self, client_url: impl Into<String>) -> Self {
        self.etcd_url = Some(client_url.into());
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
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
        if self.real_kubelets && self.serve_on.is_none() {
            return Err(Error::Config(
                "real kubelets need serve_on: the address their network reaches".into(),
            ));
        }
        if !self.nodes.is_empty() && self.controllers != Some(ControllerSet::All) {
            return Err(Error::Config("nodes need a cluster with all controllers".into()));
        }
        Ok(())
    }
}
