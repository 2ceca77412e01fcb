//! The `kubernetes` runtime of a hosted control plane: kube-apiserver,
//! kube-controller-manager and kube-scheduler as Deployments in the meta
//! cluster, in namespace `kok-<name>`, each reading its certificates from a
//! Secret of its own, with a Service in front of the apiserver.
//!
//! This module only renders the objects (as JSON for server-side apply)
//! and judges a Deployment's status; `flotilla_kok::kube_runtime` applies
//! them. Command lines are `crate::render`'s, so both runtimes run the same
//! flags.
//!
//! A pod-template annotation carries the checksum of exactly what one
//! component reads (its Secret data and its command line): processes do
//! not reload certificates from a mounted Secret, so a change must roll the
//! pods, and a change another component alone reads must not.

use std::collections::BTreeMap;
use std::net::IpAddr;

use base64::Engine as _;
use flotilla_api::kok::{conditions, HostedCluster};
use k8s_openapi::api::apps::v1::Deployment;
use serde_json::{json, Value};

use crate::pki::{keys, PkiInputs};
use crate::render::{self, Component, ComponentPorts, ControlPlaneLayout};
use crate::upgrade::{InstanceObservation, UpgradeInput, UpgradePlan};

/// Pod-template annotation: checksum of a component's Secret data and args.
pub const CONFIG_CHECKSUM_ANNOTATION: &str = "kok.flotilla.io/config-checksum";
/// Label on every object: the HostedCluster's name.
pub const CLUSTER_LABEL: &str = "kok.flotilla.io/hosted-cluster";
/// Label on a component's objects: `kube-apiserver`, ….
pub const COMPONENT_LABEL: &str = "kok.flotilla.io/component";
/// Annotation on the namespace: `<namespace>/<name>` of the HostedCluster
/// it belongs to. Namespaces are named after the HostedCluster only, so two
/// HostedClusters of one name in different namespaces would otherwise share
/// (and delete) each other's control plane.
pub const OWNER_ANNOTATION: &str = "kok.flotilla.io/owner";
const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
const MANAGED_BY: &str = "flotilla";
/// Where a component's Secret is mounted in its container.
pub const PKI_DIR: &str = "/etc/kubernetes/pki";
/// Name of the apiserver's Service (and its in-cluster DNS name's first label).
pub const APISERVER_SERVICE: &str = "kube-apiserver";
pub const APISERVER_PORT: u16 = 6443;
pub const DEFAULT_REGISTRY: &str = "registry.k8s.io";
/// Checksum-input key of a component's command line; `/` cannot occur in a
/// Secret key, so it never collides with one.
const ARGS_CHECKSUM_KEY: &str = "flotilla/args";
/// Environment variable holding the pod's IP (the apiserver advertises it).
const POD_IP_ENV: &str = "POD_IP";

#[derive(Debug, thiserror::Error)]
pub enum KubeRuntimeError {
    #[error("the HostedCluster has no name")]
    NoName,
    #[error("namespace {0:?} is longer than 63 characters; shorten the HostedCluster's name")]
    NameTooLong(String),
    #[error("spec.etcd must name exactly one of clusterRef and shared")]
    InvalidEtcd,
    #[error("no etcd client URLs to give the API server")]
    NoEtcdServers,
    #[error("the control plane's Secret data lacks {key:?}, which {component} needs")]
    MissingKey { component: &'static str, key: String },
    #[error("{key} is not a kubeconfig with a server: {reason}")]
    BadKubeconfig { key: String, reason: String },
    #[error(
        "{key} points at {server}, a loopback address, which inside a pod is not the API server; \
         issue it with PkiInputs.component_server = {want}"
    )]
    LoopbackKubeconfig { key: String, server: String, want: String },
    #[error("encoding the resources of {component}: {reason}")]
    Resources { component: &'static str, reason: String },
    #[error("namespace {namespace} belongs to {owner:?}, not to HostedCluster {wanted}")]
    NamespaceTaken { namespace: String, owner: Option<String>, wanted: String },
}

/// A component of the control plane, as the Kubernetes runtime runs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ControlPlaneComponent {
    KubeApiserver,
    KubeControllerManager,
    KubeScheduler,
}

impl ControlPlaneComponent {
    /// In apply order: the apiserver first, the components that talk to it
    /// after.
    pub const ALL: [Self; 3] = [Self::KubeApiserver, Self::KubeControllerManager, Self::KubeScheduler];

    /// Component (binary, container, Deployment, image) name.
    pub fn name(self) -> &'static str {
        match self {
            Self::KubeApiserver => "kube-apiserver",
            Self::KubeControllerManager => "kube-controller-manager",
            Self::KubeScheduler => "kube-scheduler",
        }
    }

    /// The HostedCluster condition that reports this component.
    pub fn condition_type(self) -> &'static str {
        match self {
            Self::KubeApiserver => conditions::KUBE_APISERVER_READY,
            Self::KubeControllerManager => conditions::KUBE_CONTROLLER_MANAGER_READY,
            Self::KubeScheduler => conditions::KUBE_SCHEDULER_READY,
        }
    }

    pub fn deployment_name(self) -> &'static str {
        self.name()
    }

    /// The Secret holding only what this component reads.
    pub fn secret_name(self) -> String {
        format!("{}-pki", self.name())
    }

    fn render_component(self) -> Component {
        match self {
            Self::KubeApiserver => Component::KubeApiserver,
            Self::KubeControllerManager => Component::KubeControllerManager,
            Self::KubeScheduler => Component::KubeScheduler,
        }
    }

    fn args(self, layout: &ControlPlaneLayout) -> Vec<String> {
        match self {
            Self::KubeApiserver => render::apiserver_args(layout),
            Self::KubeControllerManager => render::controller_manager_args(layout),
            Self::KubeScheduler => render::scheduler_args(layout),
        }
    }

    /// Paths its liveness and readiness probes ask (`/healthz` for the
    /// controller-manager and scheduler, which every supported release serves).
    fn probe_paths(self) -> (&'static str, &'static str) {
        match self {
            Self::KubeApiserver => ("/livez", "/readyz"),
            Self::KubeControllerManager | Self::KubeScheduler => ("/healthz", "/healthz"),
        }
    }
}

/// Where the control plane's images come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageConfig {
    /// Registry (and path) holding `kube-apiserver:v<version>` and the others.
    pub registry: String,
    /// `imagePullPolicy` of the containers; Kubernetes' default when `None`.
    pub pull_policy: Option<String>,
}

impl Default for ImageConfig {
    fn default() -> Self {
        Self { registry: DEFAULT_REGISTRY.to_string(), pull_policy: None }
    }
}

impl ImageConfig {
    /// `<registry>/<component>:v<version>`; `version` may start with `v`.
    pub fn image(&self, component: ControlPlaneComponent, version: &str) -> String {
        let tag = version.strip_prefix('v').unwrap_or(version);
        format!("{}/{}:v{tag}", self.registry.trim_end_matches('/'), component.name())
    }
}

/// How the control plane's pods are built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeRuntimeConfig {
    pub images: ImageConfig,
    /// Liveness and readiness probes on the containers. Off only where no
    /// container really runs (kubemark's hollow kubelets in tests): a probe
    /// there asks an address nothing listens on, so no pod would ever be
    /// ready.
    pub health_probes: bool,
    /// How the API server is reached from outside the meta cluster.
    pub expose: ApiExposure,
}

impl Default for KubeRuntimeConfig {
    fn default() -> Self {
        Self { images: ImageConfig::default(), health_probes: true, expose: ApiExposure::ClusterIp }
    }
}

/// The apiserver Service's type, and with it who reaches the hosted API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ApiExposure {
    /// Only the meta cluster reaches it (its Service DNS name): add-ons,
    /// nodes and fleet registration are skipped.
    #[default]
    ClusterIp,
    /// A NodePort: the operator, kubelets and users reach it at a meta
    /// cluster node's address, checking the certificate against the
    /// Service's DNS name (`tls-server-name`); add-ons, nodes and fleet
    /// registration work as in the process runtime.
    NodePort,
}

/// A meta cluster node as [`external_endpoint`] needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaNode {
    pub name: String,
    pub ready: bool,
    pub internal_ip: Option<String>,
}

/// `https://<node InternalIP>:<nodePort>` of the first Ready node by name
/// (stable while that node stays Ready), or `None` without a node port or
/// a Ready node with an address.
pub fn external_endpoint(node_port: Option<i32>, nodes: &[MetaNode]) -> Option<String> {
    let port = node_port.filter(|p| *p > 0)?;
    let mut ready: Vec<&MetaNode> = nodes.iter().filter(|n| n.ready && n.internal_ip.is_some()).collect();
    ready.sort_by(|a, b| a.name.cmp(&b.name));
    let ip = ready.first()?.internal_ip.as_deref()?;
    Some(format!("https://{ip}:{port}"))
}

/// The meta-cluster namespace of `hosted_cluster`'s objects.
pub fn namespace(hosted_cluster: &str) -> String {
    HostedCluster::runtime_namespace(hosted_cluster)
}

/// In-cluster DNS name of the apiserver's Service.
pub fn apiserver_host(hosted_cluster: &str) -> String {
    format!("{APISERVER_SERVICE}.{}.svc", namespace(hosted_cluster))
}

/// `https://kube-apiserver.kok-<name>.svc:6443`: the endpoint the runtime
/// reports, and what the controller-manager and scheduler kubeconfigs must
/// point at (`PkiInputs::component_server`; `server` too unless clients
/// outside the meta cluster reach it another way).
pub fn endpoint(hosted_cluster: &str) -> String {
    format!("https://{}:{APISERVER_PORT}", apiserver_host(hosted_cluster))
}

/// Names the apiserver is reached by inside the meta cluster; add them to
/// `PkiInputs::endpoint_hosts` so its serving certificate covers them.
pub fn apiserver_hosts(hosted_cluster: &str) -> Vec<String> {
    let ns = namespace(hosted_cluster);
    vec![APISERVER_SERVICE.to_string(), format!("{APISERVER_SERVICE}.{ns}"), apiserver_host(hosted_cluster)]
}

/// The certificates' inputs for `hc` under this runtime: the admin and
/// component kubeconfigs point at the apiserver's Service (a loopback
/// server would reach nothing from another pod), and the serving
/// certificate names the Service's in-cluster DNS names. Clients outside
/// the meta cluster need their address added to `endpoint_hosts` (and
/// `server` changed) by the caller.
pub fn pki_inputs(hc: &HostedCluster) -> Result<PkiInputs, KubeRuntimeError> {
    let cluster = hc.metadata.name.as_deref().filter(|n| !n.is_empty()).ok_or(KubeRuntimeError::NoName)?;
    Ok(PkiInputs {
        server: endpoint(cluster),
        component_server: Some(endpoint(cluster)),
        endpoint_hosts: apiserver_hosts(cluster),
        service_cidr: hc.spec.network.service_cidr.clone(),
        cluster_domain: hc.spec.network.cluster_domain.clone(),
        etcd_members: Vec::new(),
    })
}

/// `<namespace>/<name>` of a HostedCluster, as written in [`OWNER_ANNOTATION`].
pub fn owner(hc: &HostedCluster) -> String {
    format!(
        "{}/{}",
        hc.metadata.namespace.as_deref().unwrap_or_default(),
        hc.metadata.name.as_deref().unwrap_or_default()
    )
}

/// Whether an existing namespace of the runtime's name may be used (and
/// deleted) for `hc`: only when its owner annotation names `hc`. A
/// namespace someone else created, or another HostedCluster of the same
/// name owns, is left alone.
pub fn check_namespace_owner(
    namespace: &str,
    annotations: Option<&BTreeMap<String, String>>,
    hc: &HostedCluster,
) -> Result<(), KubeRuntimeError> {
    let wanted = owner(hc);
    let current = annotations.and_then(|a| a.get(OWNER_ANNOTATION));
    if current == Some(&wanted) {
        return Ok(());
    }
    Err(KubeRuntimeError::NamespaceTaken {
        namespace: namespace.to_string(),
        owner: current.cloned(),
        wanted,
    })
}

/// One component's objects.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedComponent {
    pub component: ControlPlaneComponent,
    /// Its Secret: only the keys its command line names.
    pub secret: Value,
    pub deployment: Value,
    /// The value of [`CONFIG_CHECKSUM_ANNOTATION`] on its pod template.
    pub config_checksum: String,
    pub args: Vec<String>,
}

/// Every object of one hosted control plane.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedControlPlane {
    pub namespace: String,
    /// The Namespace object.
    pub namespace_object: Value,
    /// The apiserver's ClusterIP Service.
    pub apiserver_service: Value,
    /// In [`ControlPlaneComponent::ALL`] order.
    pub components: Vec<RenderedComponent>,
    /// See [`endpoint`].
    pub endpoint: String,
}

impl RenderedControlPlane {
    /// Every object in the order to apply them: namespace, Secrets, Service,
    /// Deployments (a pod never starts before the Secret it mounts exists).
    pub fn objects(&self) -> Vec<&Value> {
        let mut out = vec![&self.namespace_object];
        out.extend(self.components.iter().map(|c| &c.secret));
        out.push(&self.apiserver_service);
        out.extend(self.components.iter().map(|c| &c.deployment));
        out
    }

    pub fn component(&self, component: ControlPlaneComponent) -> Option<&RenderedComponent> {
        self.components.iter().find(|c| c.component == component)
    }
}

fn labels(cluster: &str, component: Option<ControlPlaneComponent>) -> Value {
    let mut labels = json!({ CLUSTER_LABEL: cluster, MANAGED_BY_LABEL: MANAGED_BY });
    if let Some(component) = component {
        labels[COMPONENT_LABEL] = json!(component.name());
    }
    labels
}

/// The labels a component's pods carry and its Deployment selects on
/// (a selector is immutable, so it holds only these two stable labels).
pub fn selector(cluster: &str, component: ControlPlaneComponent) -> BTreeMap<String, String> {
    BTreeMap::from([
        (CLUSTER_LABEL.to_string(), cluster.to_string()),
        (COMPONENT_LABEL.to_string(), component.name().to_string()),
    ])
}

/// The value of `flag` in `args` (the last one given wins, as for the
/// components themselves).
fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    let prefix = format!("{flag}=");
    args.iter().rev().find_map(|a| a.strip_prefix(&prefix))
}

fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The host of `https://host:port/...`.
fn url_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or(rest);
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next().unwrap_or(v6);
    }
    authority.rsplit_once(':').map_or(authority, |(host, _)| host)
}

/// The controller-manager's and scheduler's kubeconfigs must reach the
/// apiserver from their own pods: a loopback server (right for the process
/// runtime, where they run next to the apiserver) would reach nothing.
fn check_kubeconfig(key: &str, data: &[u8], cluster: &str) -> Result<(), KubeRuntimeError> {
    let bad = |reason: String| KubeRuntimeError::BadKubeconfig { key: key.to_string(), reason };
    let text = std::str::from_utf8(data).map_err(|_| bad("not UTF-8".into()))?;
    let config: Value = serde_saphyr::from_str(text).map_err(|e| bad(e.to_string()))?;
    let servers: Vec<&str> = config["clusters"]
        .as_array()
        .map(|clusters| clusters.iter().filter_map(|c| c["cluster"]["server"].as_str()).collect())
        .unwrap_or_default();
    if servers.is_empty() {
        return Err(bad("no clusters[].cluster.server".into()));
    }
    if let Some(server) = servers.into_iter().find(|s| is_loopback_host(url_host(s))) {
        return Err(KubeRuntimeError::LoopbackKubeconfig {
            key: key.to_string(),
            server: server.to_string(),
            want: endpoint(cluster),
        });
    }
    Ok(())
}

/// The component's Secret data (only its keys) and its checksum with `args`.
fn component_data(
    component: ControlPlaneComponent,
    pki_data: &BTreeMap<String, Vec<u8>>,
    args: &[String],
) -> Result<(BTreeMap<String, Vec<u8>>, String), KubeRuntimeError> {
    let mut data = BTreeMap::new();
    for key in render::component_secret_keys(&component.render_component()) {
        let value = pki_data
            .get(&key)
            .ok_or_else(|| KubeRuntimeError::MissingKey { component: component.name(), key: key.clone() })?;
        data.insert(key, value.clone());
    }
    let mut checksum_input = data.clone();
    checksum_input.insert(ARGS_CHECKSUM_KEY.to_string(), args.join("\0").into_bytes());
    Ok((data, render::data_checksum(&checksum_input)))
}

fn secret_object(
    cluster: &str,
    namespace: &str,
    component: ControlPlaneComponent,
    data: &BTreeMap<String, Vec<u8>>,
) -> Value {
    let b64 = base64::engine::general_purpose::STANDARD;
    let data: serde_json::Map<String, Value> =
        data.iter().map(|(key, value)| (key.clone(), json!(b64.encode(value)))).collect();
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": component.secret_name(),
            "namespace": namespace,
            "labels": labels(cluster, Some(component)),
        },
        "type": "Opaque",
        "data": data,
    })
}

fn probe(path: &str, liveness: bool) -> Value {
    let mut probe = json!({
        "httpGet": { "path": path, "port": "https", "scheme": "HTTPS" },
        "periodSeconds": 10,
        "timeoutSeconds": 15,
        "failureThreshold": 3,
    });
    if liveness {
        // As kubeadm's static pods: a slow start (etcd catching up, a big
        // cache to fill) must not get the container killed.
        probe["initialDelaySeconds"] = json!(10);
        probe["failureThreshold"] = json!(8);
    } else {
        probe["periodSeconds"] = json!(2);
    }
    probe
}

#[allow(clippy::too_many_arguments)]
fn deployment_object(
    hc: &HostedCluster,
    cluster: &str,
    namespace: &str,
    component: ControlPlaneComponent,
    version: &str,
    args: &[String],
    port: u16,
    checksum: &str,
    config: &KubeRuntimeConfig,
) -> Result<Value, serde_json::Error> {
    let spec = &hc.spec;
    let mut container = json!({
        "name": component.name(),
        "image": config.images.image(component, version),
        "command": [component.name()],
        "args": args,
        "ports": [{ "name": "https", "containerPort": port, "protocol": "TCP" }],
        "volumeMounts": [{ "name": "pki", "mountPath": PKI_DIR, "readOnly": true }],
    });
    if let Some(policy) = &config.images.pull_policy {
        container["imagePullPolicy"] = json!(policy);
    }
    if component == ControlPlaneComponent::KubeApiserver {
        container["env"] = json!([{
            "name": POD_IP_ENV,
            "valueFrom": { "fieldRef": { "apiVersion": "v1", "fieldPath": "status.podIP" } },
        }]);
    }
    if config.health_probes {
        let (liveness, readiness) = component.probe_paths();
        container["livenessProbe"] = probe(liveness, true);
        container["readinessProbe"] = probe(readiness, false);
    }
    if let Some(resources) = spec.control_plane.resources.get(component.name()) {
        container["resources"] = serde_json::to_value(resources)?;
    }
    let selector = selector(cluster, component);
    Ok(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": component.deployment_name(),
            "namespace": namespace,
            "labels": labels(cluster, Some(component)),
        },
        "spec": {
            "replicas": spec.control_plane.replicas,
            "revisionHistoryLimit": 5,
            "selector": { "matchLabels": selector },
            // A new pod is ready before an old one goes: the apiserver stays
            // reachable through a certificate roll even with one replica.
            "strategy": { "type": "RollingUpdate", "rollingUpdate": { "maxSurge": 1, "maxUnavailable": 0 } },
            "template": {
                "metadata": {
                    "labels": labels(cluster, Some(component)),
                    "annotations": { CONFIG_CHECKSUM_ANNOTATION: checksum },
                },
                "spec": {
                    // The control plane never talks to the meta cluster's API,
                    // and the meta cluster's service variables mean nothing
                    // to it.
                    "automountServiceAccountToken": false,
                    "enableServiceLinks": false,
                    "affinity": spread_over_nodes(&selector),
                    "containers": [container],
                    "volumes": [{
                        "name": "pki",
                        "secret": { "secretName": component.secret_name(), "defaultMode": 0o400 },
                    }],
                },
            },
        },
    }))
}

/// Every object of `hc`'s control plane, from its certificates (`pki_data`,
/// keys as in `pki::keys`, e.g. `ControlPlanePki::to_secret_data`) and the
/// client URLs of its etcd, every component on `spec.version`.
pub fn render(
    hc: &HostedCluster,
    pki_data: &BTreeMap<String, Vec<u8>>,
    etcd_servers: &[String],
    config: &KubeRuntimeConfig,
) -> Result<RenderedControlPlane, KubeRuntimeError> {
    render_versions(hc, pki_data, etcd_servers, config, &ComponentVersions::new())
}

/// The version (image tag) each component runs; a component missing runs
/// `spec.version`. See [`upgrade_versions`].
pub type ComponentVersions = BTreeMap<ControlPlaneComponent, String>;

/// [`render`] with each component on the version `versions` gives it (an
/// upgrade moves them one at a time).
pub fn render_versions(
    hc: &HostedCluster,
    pki_data: &BTreeMap<String, Vec<u8>>,
    etcd_servers: &[String],
    config: &KubeRuntimeConfig,
    versions: &ComponentVersions,
) -> Result<RenderedControlPlane, KubeRuntimeError> {
    let cluster = hc.metadata.name.as_deref().filter(|n| !n.is_empty()).ok_or(KubeRuntimeError::NoName)?;
    let ns = namespace(cluster);
    if ns.len() > 63 {
        return Err(KubeRuntimeError::NameTooLong(ns));
    }
    if etcd_servers.is_empty() {
        return Err(KubeRuntimeError::NoEtcdServers);
    }
    let mut layout = ControlPlaneLayout::for_hosted_cluster(
        cluster,
        &hc.spec,
        PKI_DIR.into(),
        "0.0.0.0",
        ComponentPorts::default(),
        etcd_servers.to_vec(),
    )
    .ok_or(KubeRuntimeError::InvalidEtcd)?;
    // The pod's IP is known only once it runs; the kubelet expands this.
    layout.advertise_address = format!("$({POD_IP_ENV})");
    // A rolling update runs an old and a new pod side by side even with
    // one replica: two controller-managers or schedulers must not both act.
    layout.leader_elect = true;
    for key in [keys::CONTROLLER_MANAGER_KUBECONFIG, keys::SCHEDULER_KUBECONFIG] {
        if let Some(data) = pki_data.get(key) {
            check_kubeconfig(key, data, cluster)?;
        }
    }

    let mut components = Vec::new();
    for component in ControlPlaneComponent::ALL {
        let args = component.args(&layout);
        let (data, checksum) = component_data(component, pki_data, &args)?;
        let default_port = match component {
            ControlPlaneComponent::KubeApiserver => layout.apiserver_port,
            ControlPlaneComponent::KubeControllerManager => layout.controller_manager_port,
            ControlPlaneComponent::KubeScheduler => layout.scheduler_port,
        };
        // Extra args may move the port; the container port and the probes
        // follow the command line.
        let port = flag_value(&args, "--secure-port").and_then(|p| p.parse().ok()).unwrap_or(default_port);
        let version = versions.get(&component).unwrap_or(&hc.spec.version);
        let deployment = deployment_object(
            hc, cluster, &ns, component, version, &args, port, &checksum, config,
        )
        .map_err(|e| KubeRuntimeError::Resources { component: component.name(), reason: e.to_string() })?;
        components.push(RenderedComponent {
            component,
            secret: secret_object(cluster, &ns, component, &data),
            deployment,
            config_checksum: checksum,
            args,
        });
    }
    let apiserver_port = components
        .first()
        .and_then(|c| flag_value(&c.args, "--secure-port"))
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or(APISERVER_PORT);
    let apiserver_service = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": APISERVER_SERVICE,
            "namespace": ns,
            "labels": labels(cluster, Some(ControlPlaneComponent::KubeApiserver)),
        },
        "spec": {
            "type": match config.expose {
                ApiExposure::ClusterIp => "ClusterIP",
                ApiExposure::NodePort => "NodePort",
            },
            "selector": selector(cluster, ControlPlaneComponent::KubeApiserver),
            "ports": [{ "name": "https", "port": APISERVER_PORT, "targetPort": apiserver_port, "protocol": "TCP" }],
        },
    });
    let namespace_object = json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": ns,
            "labels": labels(cluster, None),
            "annotations": { OWNER_ANNOTATION: owner(hc) },
        },
    });
    Ok(RenderedControlPlane {
        namespace: ns,
        namespace_object,
        apiserver_service,
        components,
        endpoint: endpoint(cluster),
    })
}

/// Whether a component's Deployment has rolled out what was last applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentReadiness {
    pub ready: bool,
    /// CamelCase condition reason: `Ready`, `RolloutPending`, `RollingOut`,
    /// `NotReady`.
    pub reason: &'static str,
    pub message: String,
    pub desired_replicas: i32,
    pub ready_replicas: i32,
    pub updated_replicas: i32,
}

/// Ready when the deployment controller has seen the latest spec, every
/// replica runs the current template, none of the old ones is left, and
/// all are ready.
pub fn deployment_readiness(deployment: &Deployment) -> ComponentReadiness {
    let desired = deployment.spec.replicas.unwrap_or(1);
    let status = deployment.status.clone().unwrap_or_default();
    let generation = deployment.metadata.generation.unwrap_or(0);
    let observed = status.observed_generation.unwrap_or(0);
    let total = status.replicas.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    let ready = status.ready_replicas.unwrap_or(0);
    let (is_ready, reason, message) = if observed < generation {
        (false, "RolloutPending", format!("generation {generation} not yet observed (at {observed})"))
    } else if updated < desired {
        (false, "RollingOut", format!("{updated} of {desired} replicas updated"))
    } else if total > updated {
        (false, "RollingOut", format!("{} old replicas still running", total - updated))
    } else if ready < desired {
        (false, "NotReady", format!("{ready} of {desired} replicas ready"))
    } else {
        (true, "Ready", format!("{ready} of {desired} replicas ready"))
    };
    ComponentReadiness {
        ready: is_ready,
        reason,
        message,
        desired_replicas: desired,
        ready_replicas: ready,
        updated_replicas: updated,
    }
}

/// The checksum on a Deployment's pod template (what it runs now).
pub fn template_checksum(deployment: &Deployment) -> Option<&str> {
    deployment
        .spec
        .template
        .metadata
        .as_ref()?
        .annotations
        .as_ref()?
        .get(CONFIG_CHECKSUM_ANNOTATION)
        .map(String::as_str)
}

/// The version a Deployment's pods are configured with: the tag of its
/// container's image (`…/kube-apiserver:v1.20.2` → `1.20.2`).
pub fn deployment_version(deployment: &Deployment) -> Option<String> {
    let image = deployment.spec.template.spec.as_ref()?.containers.first()?.image.as_deref()?;
    let (_, tag) = image.rsplit_once(':').filter(|(repo, _)| !repo.is_empty())?;
    // `host:port/name` without a tag has no version.
    (!tag.contains('/')).then(|| tag.trim_start_matches('v').to_string())
}

/// Fully rolled out and available: the controller has seen the latest
/// spec, every replica runs it, none of the old ones is left, and every
/// one is ready and available (`minReadySeconds` passed).
pub fn deployment_available(deployment: &Deployment) -> bool {
    let readiness = deployment_readiness(deployment);
    let available = deployment.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0);
    readiness.ready && available >= readiness.desired_replicas
}

/// What the upgrade plan (`crate::upgrade::plan`) is told about the
/// Deployments: one instance per component (index 0: a Deployment moves
/// all its replicas to a new image at once, with its own rolling update),
/// configured with its image's version and healthy when
/// [`deployment_available`]. A component without a Deployment is not
/// observed.
pub fn upgrade_observations(
    deployments: &[(ControlPlaneComponent, Option<Deployment>)],
) -> Vec<InstanceObservation> {
    deployments
        .iter()
        .filter_map(|(component, deployment)| {
            let deployment = deployment.as_ref()?;
            Some(InstanceObservation {
                component: component.name().to_string(),
                index: 0,
                version: deployment_version(deployment)?,
                healthy: deployment_available(deployment),
            })
        })
        .collect()
}

/// The process runtime's upgrade plan for this runtime: the same skew
/// rules (kube-apiserver first, then kube-controller-manager, then
/// kube-scheduler; minor +1 at most, no minor downgrade) and the same
/// rollback after `step_deadline`, with each Deployment as one step.
/// Every version has an image, so none is unknown.
pub fn upgrade_plan(
    hc: &HostedCluster,
    deployments: &[(ControlPlaneComponent, Option<Deployment>)],
    now: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
    step_deadline: std::time::Duration,
) -> UpgradePlan {
    crate::upgrade::plan(&UpgradeInput {
        desired: &hc.spec.version,
        desired_known: true,
        status: hc.status.as_ref(),
        generation: hc.metadata.generation,
        replicas: 1,
        // This runtime runs no kubelets (spec.nodes is not acted on).
        nodes: 0,
        observed: &upgrade_observations(deployments),
        now,
        step_deadline,
    })
}

/// The version each component's Deployment is applied with, from a plan.
/// `None` when the plan runs nothing yet (a fresh cluster whose
/// `spec.version` is refused): apply no Deployment.
pub fn upgrade_versions(plan: &UpgradePlan) -> Option<ComponentVersions> {
    let versions: ComponentVersions = ControlPlaneComponent::ALL
        .into_iter()
        .filter_map(|c| Some((c, plan.versions.get(&(c.name().to_string(), 0))?.clone())))
        .collect();
    (versions.len() == ControlPlaneComponent::ALL.len()).then_some(versions)
}

/// Pod affinity that prefers one replica per meta-cluster node (the pods
/// `selector` matches), for the control plane and etcd alike.
pub(crate) fn spread_over_nodes(selector: &BTreeMap<String, String>) -> Value {
    json!({ "podAntiAffinity": {
        "preferredDuringSchedulingIgnoredDuringExecution": [{
            "weight": 100,
            "podAffinityTerm": {
                "labelSelector": { "matchLabels": selector },
                "topologyKey": "kubernetes.io/hostname",
            },
        }],
    }})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{leaves, ControlPlanePki};
    use k8s_openapi::api::apps::v1::DeploymentStatus;
    use time::{Duration, OffsetDateTime};

    const NAME: &str = "team-a";

    fn hosted_cluster(spec: Value) -> HostedCluster {
        let mut base = json!({
            "version": "1.20.2",
            "etcd": {"shared": {"clusterRef": "shared", "prefix": "/clusters/team-a"}},
        });
        if let (Some(base), Some(extra)) = (base.as_object_mut(), spec.as_object()) {
            base.extend(extra.clone());
        }
        let mut hc = HostedCluster::new(NAME, serde_json::from_value(base).unwrap());
        hc.metadata.namespace = Some("tenants".into());
        hc
    }

    fn kubeconfig(server: &str) -> Vec<u8> {
        format!("apiVersion: v1\nkind: Config\nclusters:\n- name: x\n  cluster:\n    server: {server}\n")
            .into_bytes()
    }

    /// Every key the PKI has, each with a distinct value, and kubeconfigs
    /// pointing at the Service.
    fn pki_data() -> BTreeMap<String, Vec<u8>> {
        let mut data: BTreeMap<String, Vec<u8>> = [
            keys::CA_CRT,
            keys::CA_KEY,
            keys::FRONT_PROXY_CA_CRT,
            keys::FRONT_PROXY_CA_KEY,
            keys::ETCD_CA_CRT,
            keys::ETCD_CA_KEY,
            keys::SA_KEY,
            keys::SA_PUB,
            keys::ADMIN_KUBECONFIG,
        ]
        .into_iter()
        .map(String::from)
        .chain(
            [
                leaves::APISERVER,
                leaves::APISERVER_KUBELET_CLIENT,
                leaves::APISERVER_ETCD_CLIENT,
                leaves::FRONT_PROXY_CLIENT,
                leaves::ADMIN,
                leaves::CONTROLLER_MANAGER,
                leaves::SCHEDULER,
                leaves::CONTROLLER_MANAGER_SERVING,
                leaves::SCHEDULER_SERVING,
            ]
            .into_iter()
            .flat_map(|leaf| [keys::crt(leaf), keys::key(leaf)]),
        )
        .map(|key| (key.clone(), format!("value of {key}").into_bytes()))
        .collect();
        for key in [keys::CONTROLLER_MANAGER_KUBECONFIG, keys::SCHEDULER_KUBECONFIG] {
            data.insert(key.into(), kubeconfig(&endpoint(NAME)));
        }
        data
    }

    fn etcd() -> Vec<String> {
        vec!["https://etcd-0.kok-shared.svc:2379".into(), "https://etcd-1.kok-shared.svc:2379".into()]
    }

    fn rendered(hc: &HostedCluster, data: &BTreeMap<String, Vec<u8>>) -> RenderedControlPlane {
        render(hc, data, &etcd(), &KubeRuntimeConfig::default()).unwrap()
    }

    fn checksums(r: &RenderedControlPlane) -> Vec<String> {
        r.components.iter().map(|c| c.config_checksum.clone()).collect()
    }

    fn container(deployment: &Value) -> &Value {
        &deployment["spec"]["template"]["spec"]["containers"][0]
    }

    fn args(deployment: &Value) -> Vec<String> {
        serde_json::from_value(container(deployment)["args"].clone()).unwrap()
    }

    fn flag<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
        let prefix = format!("{flag}=");
        let found: Vec<&str> = args.iter().filter_map(|a| a.strip_prefix(&prefix)).collect();
        assert!(found.len() <= 1, "{flag} given {} times", found.len());
        found.first().copied()
    }

    fn secret_keys(secret: &Value) -> Vec<String> {
        secret["data"].as_object().unwrap().keys().cloned().collect()
    }

    #[test]
    fn every_object_lives_in_the_clusters_namespace_with_its_labels() {
        let r = rendered(&hosted_cluster(json!({})), &pki_data());
        assert_eq!(r.namespace, "kok-team-a");
        assert_eq!(r.endpoint, "https://kube-apiserver.kok-team-a.svc:6443");
        let kinds: Vec<(&str, &str)> = r
            .objects()
            .iter()
            .map(|o| (o["kind"].as_str().unwrap(), o["metadata"]["name"].as_str().unwrap()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("Namespace", "kok-team-a"),
                ("Secret", "kube-apiserver-pki"),
                ("Secret", "kube-controller-manager-pki"),
                ("Secret", "kube-scheduler-pki"),
                ("Service", "kube-apiserver"),
                ("Deployment", "kube-apiserver"),
                ("Deployment", "kube-controller-manager"),
                ("Deployment", "kube-scheduler"),
            ]
        );
        for object in r.objects() {
            assert_eq!(object["metadata"]["labels"][CLUSTER_LABEL], NAME, "{}", object["kind"]);
            if object["kind"] != "Namespace" {
                assert_eq!(object["metadata"]["namespace"], "kok-team-a", "{}", object["kind"]);
            }
        }
        assert_eq!(r.namespace_object["metadata"]["annotations"][OWNER_ANNOTATION], "tenants/team-a");
        for c in &r.components {
            let d = &c.deployment;
            let want = json!({CLUSTER_LABEL: NAME, COMPONENT_LABEL: c.component.name()});
            assert_eq!(d["spec"]["selector"]["matchLabels"], want);
            let pod_labels = &d["spec"]["template"]["metadata"]["labels"];
            assert_eq!(pod_labels[COMPONENT_LABEL], c.component.name());
            assert_eq!(pod_labels[CLUSTER_LABEL], NAME);
            assert_eq!(c.secret["metadata"]["labels"][COMPONENT_LABEL], c.component.name());
        }
    }

    #[test]
    fn the_service_selects_the_apiserver_pods_on_6443() {
        let r = rendered(&hosted_cluster(json!({})), &pki_data());
        let spec = &r.apiserver_service["spec"];
        assert_eq!(spec["type"], "ClusterIP");
        assert_eq!(
            spec["ports"],
            json!([{"name": "https", "port": 6443, "targetPort": 6443, "protocol": "TCP"}])
        );
        assert_eq!(
            spec["selector"],
            r.component(ControlPlaneComponent::KubeApiserver).unwrap().deployment["spec"]["selector"]
                ["matchLabels"]
        );
    }

    #[test]
    fn each_secret_holds_only_what_its_component_reads() {
        let data = pki_data();
        let r = rendered(&hosted_cluster(json!({})), &data);
        let b64 = base64::engine::general_purpose::STANDARD;
        for c in &r.components {
            let mut want = render::component_secret_keys(&c.component.render_component());
            want.sort();
            assert_eq!(secret_keys(&c.secret), want, "{:?}", c.component);
            for (key, value) in c.secret["data"].as_object().unwrap() {
                assert_eq!(b64.decode(value.as_str().unwrap()).unwrap(), data[key], "{key}");
            }
        }
        let keys_of = |c| secret_keys(&r.component(c).unwrap().secret);
        let apiserver = keys_of(ControlPlaneComponent::KubeApiserver);
        let scheduler = keys_of(ControlPlaneComponent::KubeScheduler);
        let controller_manager = keys_of(ControlPlaneComponent::KubeControllerManager);
        for key in [keys::CA_KEY, keys::FRONT_PROXY_CA_KEY, keys::ETCD_CA_KEY, keys::ADMIN_KUBECONFIG] {
            assert!(!apiserver.contains(&key.to_string()), "{key}");
            assert!(!scheduler.contains(&key.to_string()), "{key}");
        }
        // Only the controller-manager signs, so only it holds the CA key.
        assert!(controller_manager.contains(&keys::CA_KEY.to_string()));
        assert!(!controller_manager.contains(&keys::ETCD_CA_KEY.to_string()));
        assert_eq!(
            scheduler,
            ["ca.crt", "scheduler-serving.crt", "scheduler-serving.key", "scheduler.kubeconfig"]
        );
        assert!(r
            .objects()
            .iter()
            .all(|o| !o["data"].as_object().is_some_and(|d| d.contains_key("admin.kubeconfig"))));
    }

    #[test]
    fn pods_run_the_rendered_command_lines_with_their_secret_mounted() {
        let r = rendered(&hosted_cluster(json!({})), &pki_data());
        for c in &r.components {
            let container = container(&c.deployment);
            assert_eq!(container["name"], c.component.name());
            assert_eq!(container["image"], format!("registry.k8s.io/{}:v1.20.2", c.component.name()));
            assert_eq!(container["command"], json!([c.component.name()]));
            assert_eq!(args(&c.deployment), c.args);
            assert_eq!(
                container["volumeMounts"],
                json!([{"name": "pki", "mountPath": PKI_DIR, "readOnly": true}])
            );
            let pod = &c.deployment["spec"]["template"]["spec"];
            assert_eq!(pod["volumes"][0]["secret"]["secretName"], c.component.secret_name());
            assert_eq!(pod["automountServiceAccountToken"], false);
            // Every file the command line names is in the mounted Secret.
            let mounted = secret_keys(&c.secret);
            for value in c.args.iter().filter_map(|a| a.split_once('=').map(|(_, v)| v)) {
                if let Some(file) = value.strip_prefix(&format!("{PKI_DIR}/")) {
                    assert!(mounted.contains(&file.to_string()), "{:?} reads {file}", c.component);
                }
            }
            assert_eq!(flag(&c.args, "--bind-address"), Some("0.0.0.0"), "{:?}", c.component);
        }
        let apiserver = &r.components[0].args;
        assert_eq!(flag(apiserver, "--etcd-servers"), Some(etcd().join(",").as_str()));
        assert_eq!(flag(apiserver, "--etcd-prefix"), Some("/clusters/team-a"));
        assert_eq!(flag(apiserver, "--advertise-address"), Some("$(POD_IP)"));
        assert_eq!(flag(apiserver, "--secure-port"), Some("6443"));
        assert_eq!(flag(apiserver, "--tls-cert-file"), Some("/etc/kubernetes/pki/apiserver.crt"));
        assert_eq!(container(&r.components[0].deployment)["env"][0]["name"], "POD_IP");
        assert_eq!(
            flag(&r.components[2].args, "--kubeconfig"),
            Some("/etc/kubernetes/pki/scheduler.kubeconfig")
        );
        // Leader election even with one replica: a rolling update runs two.
        for c in &r.components[1..] {
            assert_eq!(flag(&c.args, "--leader-elect"), Some("true"), "{:?}", c.component);
        }
    }

    #[test]
    fn probes_ask_https_health_endpoints_unless_turned_off() {
        let hc = hosted_cluster(json!({}));
        let r = rendered(&hc, &pki_data());
        let probe = |c: usize, kind: &str| container(&r.components[c].deployment)[kind]["httpGet"].clone();
        assert_eq!(
            probe(0, "readinessProbe"),
            json!({"path": "/readyz", "port": "https", "scheme": "HTTPS"})
        );
        assert_eq!(probe(0, "livenessProbe"), json!({"path": "/livez", "port": "https", "scheme": "HTTPS"}));
        assert_eq!(probe(1, "livenessProbe")["path"], "/healthz");
        assert_eq!(probe(2, "readinessProbe")["path"], "/healthz");
        let ports: Vec<Value> = r
            .components
            .iter()
            .map(|c| container(&c.deployment)["ports"][0]["containerPort"].clone())
            .collect();
        assert_eq!(ports, [json!(6443), json!(10257), json!(10259)]);

        let config = KubeRuntimeConfig { health_probes: false, ..Default::default() };
        let r = render(&hc, &pki_data(), &etcd(), &config).unwrap();
        for c in &r.components {
            let container = container(&c.deployment);
            assert!(container.get("readinessProbe").is_none() && container.get("livenessProbe").is_none());
        }
    }

    #[test]
    fn replicas_resources_extra_args_and_images_follow_the_spec() {
        let hc = hosted_cluster(json!({
            "version": "v1.20.2",
            "controlPlane": {
                "replicas": 3,
                "extraArgs": {"kubeApiserver": ["--v=4", "--secure-port=7443"], "kubeScheduler": ["--v=3"]},
                "resources": {"kube-apiserver": {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}}},
            },
            "network": {"serviceCIDR": "10.100.0.0/16", "podCIDR": "10.244.0.0/16"},
        }));
        let images =
            ImageConfig { registry: "mirror.example/k8s/".into(), pull_policy: Some("IfNotPresent".into()) };
        let config = KubeRuntimeConfig { images, health_probes: true, ..Default::default() };
        let r = render(&hc, &pki_data(), &etcd(), &config).unwrap();
        for c in &r.components {
            assert_eq!(c.deployment["spec"]["replicas"], 3);
            let container = container(&c.deployment);
            assert_eq!(container["image"], format!("mirror.example/k8s/{}:v1.20.2", c.component.name()));
            assert_eq!(container["imagePullPolicy"], "IfNotPresent");
        }
        let [apiserver, controller_manager, scheduler] = &r.components[..] else {
            panic!("three components")
        };
        assert_eq!(
            container(&apiserver.deployment)["resources"],
            json!({"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}})
        );
        assert!(container(&scheduler.deployment).get("resources").is_none());
        assert_eq!(flag(&apiserver.args, "--v"), Some("4"));
        assert_eq!(flag(&apiserver.args, "--service-cluster-ip-range"), Some("10.100.0.0/16"));
        assert_eq!(flag(&scheduler.args, "--v"), Some("3"));
        assert_eq!(flag(&controller_manager.args, "--v"), None);
        assert_eq!(flag(&controller_manager.args, "--cluster-cidr"), Some("10.244.0.0/16"));
        // A moved port moves the container port; the Service stays on 6443.
        assert_eq!(container(&apiserver.deployment)["ports"][0]["containerPort"], 7443);
        assert_eq!(r.apiserver_service["spec"]["ports"][0]["port"], 6443);
        assert_eq!(r.apiserver_service["spec"]["ports"][0]["targetPort"], 7443);
    }

    #[test]
    fn rendering_is_deterministic() {
        let hc = hosted_cluster(json!({}));
        assert_eq!(rendered(&hc, &pki_data()), rendered(&hc, &pki_data()));
    }

    /// Changing one key of the control plane's Secret changes the checksum
    /// of exactly the components that read it.
    #[test]
    fn a_checksum_changes_exactly_when_its_components_inputs_change() {
        let hc = hosted_cluster(json!({}));
        let base = checksums(&rendered(&hc, &pki_data()));
        let changed = |key: &str| {
            let mut data = pki_data();
            let value = data.get_mut(key).unwrap();
            // A YAML comment, so a changed kubeconfig still parses.
            value.splice(0..0, b"# renewed\n".iter().copied());
            let after = checksums(&rendered(&hc, &data));
            ControlPlaneComponent::ALL
                .into_iter()
                .zip(base.iter().zip(&after))
                .filter(|(_, (before, after))| before != after)
                .map(|(c, _)| c.name())
                .collect::<Vec<_>>()
        };
        let all = ["kube-apiserver", "kube-controller-manager", "kube-scheduler"];
        assert_eq!(changed("scheduler-serving.crt"), ["kube-scheduler"]);
        assert_eq!(changed(keys::SCHEDULER_KUBECONFIG), ["kube-scheduler"]);
        assert_eq!(changed(keys::CONTROLLER_MANAGER_KUBECONFIG), ["kube-controller-manager"]);
        assert_eq!(changed("apiserver.key"), ["kube-apiserver"]);
        assert_eq!(changed(keys::ETCD_CA_CRT), ["kube-apiserver"]);
        assert_eq!(changed(keys::CA_KEY), ["kube-controller-manager"]);
        assert_eq!(changed(keys::SA_KEY), ["kube-apiserver", "kube-controller-manager"]);
        assert_eq!(changed(keys::CA_CRT), all);
        assert_eq!(changed(keys::ADMIN_KUBECONFIG), Vec::<&str>::new());
        assert_eq!(changed(keys::ETCD_CA_KEY), Vec::<&str>::new());

        // Args count too: an extra arg of one component rolls only it.
        let extra =
            hosted_cluster(json!({"controlPlane": {"extraArgs": {"kubeControllerManager": ["--v=5"]}}}));
        let after = checksums(&rendered(&extra, &pki_data()));
        assert_eq!((base[0] == after[0], base[1] == after[1], base[2] == after[2]), (true, false, true));
        // A new etcd member changes only the apiserver's command line.
        let mut more_etcd = etcd();
        more_etcd.push("https://etcd-2.kok-shared.svc:2379".into());
        let after = checksums(&render(&hc, &pki_data(), &more_etcd, &KubeRuntimeConfig::default()).unwrap());
        assert_eq!((base[0] == after[0], base[1] == after[1], base[2] == after[2]), (false, true, true));
        // The pod template carries it.
        let r = rendered(&hc, &pki_data());
        for c in &r.components {
            assert_eq!(
                c.deployment["spec"]["template"]["metadata"]["annotations"][CONFIG_CHECKSUM_ANNOTATION],
                c.config_checksum.as_str()
            );
        }
    }

    #[test]
    fn a_kubeconfig_change_rolls_its_component() {
        let hc = hosted_cluster(json!({}));
        let base = checksums(&rendered(&hc, &pki_data()));
        let mut data = pki_data();
        data.insert(keys::SCHEDULER_KUBECONFIG.into(), kubeconfig("https://10.96.12.7:6443"));
        let after = checksums(&rendered(&hc, &data));
        assert_eq!((base[0] == after[0], base[1] == after[1], base[2] == after[2]), (true, true, false));
    }

    fn inputs(component_server: Option<String>) -> PkiInputs {
        let mut endpoint_hosts = apiserver_hosts(NAME);
        endpoint_hosts.push("api.team-a.example".into());
        PkiInputs {
            server: "https://api.team-a.example:6443".into(),
            component_server,
            endpoint_hosts,
            service_cidr: "10.96.0.0/12".into(),
            cluster_domain: "cluster.local".into(),
            etcd_members: vec![],
        }
    }

    /// With real certificates: renewing the scheduler's serving certificate
    /// rolls only the scheduler; rotating the CAs rolls everything.
    #[test]
    fn real_pki_renewal_and_rotation() {
        let hc = hosted_cluster(json!({}));
        let now = OffsetDateTime::now_utc();
        let pki = ControlPlanePki::generate_at(NAME, &inputs(Some(endpoint(NAME))), now).unwrap();
        let base = checksums(&rendered(&hc, &pki.to_secret_data()));

        let mut renewed = pki.clone();
        let mut spec = flotilla_core::pki::LeafSpec::server("kube-scheduler", &["localhost".to_string()]);
        spec.validity = Duration::days(30);
        renewed.leaves.insert(leaves::SCHEDULER_SERVING.into(), pki.ca.issue_at(&spec, now).unwrap());
        let after = checksums(&rendered(&hc, &renewed.to_secret_data()));
        assert_eq!((base[0] == after[0], base[1] == after[1], base[2] == after[2]), (true, true, false));

        let (same, reissued) =
            pki.renew_leaves(&inputs(Some(endpoint(NAME))), now, Duration::days(30)).unwrap();
        assert!(reissued.is_empty());
        assert_eq!(checksums(&rendered(&hc, &same.to_secret_data())), base);

        let rotated = pki.rotate_ca(&inputs(Some(endpoint(NAME))), now).unwrap();
        let after = checksums(&rendered(&hc, &rotated.to_secret_data()));
        assert!(base.iter().zip(&after).all(|(a, b)| a != b));
    }

    #[test]
    fn pki_inputs_point_every_kubeconfig_at_the_service() {
        let hc = hosted_cluster(json!({"network": {"serviceCIDR": "10.100.0.0/16"}}));
        let inputs = pki_inputs(&hc).unwrap();
        assert_eq!(inputs.server, "https://kube-apiserver.kok-team-a.svc:6443");
        assert_eq!(inputs.component_server.as_deref(), Some(inputs.server.as_str()));
        assert_eq!(inputs.service_cidr, "10.100.0.0/16");
        assert!(inputs.endpoint_hosts.contains(&"kube-apiserver.kok-team-a.svc".to_string()));
        // What it issues renders (no loopback kubeconfig).
        let pki = ControlPlanePki::generate(NAME, &inputs).unwrap();
        assert!(render(&hc, &pki.to_secret_data(), &etcd(), &KubeRuntimeConfig::default()).is_ok());
    }

    #[test]
    fn loopback_component_kubeconfigs_are_refused() {
        let hc = hosted_cluster(json!({}));
        let pki = ControlPlanePki::generate(NAME, &inputs(Some("https://127.0.0.1:6443".into()))).unwrap();
        let err = render(&hc, &pki.to_secret_data(), &etcd(), &KubeRuntimeConfig::default()).unwrap_err();
        assert!(
            matches!(&err, KubeRuntimeError::LoopbackKubeconfig { key, want, .. }
                if key == keys::CONTROLLER_MANAGER_KUBECONFIG && want == "https://kube-apiserver.kok-team-a.svc:6443"),
            "{err}"
        );
        // Without a component server the kubeconfigs follow `server`.
        let pki = ControlPlanePki::generate(NAME, &inputs(None)).unwrap();
        assert!(render(&hc, &pki.to_secret_data(), &etcd(), &KubeRuntimeConfig::default()).is_ok());
        for (url, host) in [
            ("https://[::1]:6443", "::1"),
            ("https://localhost:6443/", "localhost"),
            ("https://10.0.0.1", "10.0.0.1"),
            ("https://kube-apiserver.kok-a.svc:6443", "kube-apiserver.kok-a.svc"),
        ] {
            assert_eq!(url_host(url), host);
        }
        assert!(is_loopback_host("127.0.0.2") && is_loopback_host("[::1]") && !is_loopback_host("10.0.0.1"));
        let mut data = pki_data();
        data.insert(keys::SCHEDULER_KUBECONFIG.into(), b"clusters: []".to_vec());
        assert!(matches!(
            render(&hc, &data, &etcd(), &KubeRuntimeConfig::default()),
            Err(KubeRuntimeError::BadKubeconfig { .. })
        ));
    }

    #[test]
    fn bad_inputs_are_refused() {
        let hc = hosted_cluster(json!({}));
        let config = KubeRuntimeConfig::default();
        let mut data = pki_data();
        data.remove("front-proxy-client.key");
        assert!(matches!(
            render(&hc, &data, &etcd(), &config),
            Err(KubeRuntimeError::MissingKey { component: "kube-apiserver", key }) if key == "front-proxy-client.key"
        ));
        assert!(matches!(render(&hc, &pki_data(), &[], &config), Err(KubeRuntimeError::NoEtcdServers)));
        let mut no_etcd = hc.clone();
        no_etcd.spec.etcd = Default::default();
        assert!(matches!(
            render(&no_etcd, &pki_data(), &etcd(), &config),
            Err(KubeRuntimeError::InvalidEtcd)
        ));
        let mut long = hc.clone();
        long.metadata.name = Some("x".repeat(60));
        assert!(matches!(
            render(&long, &pki_data(), &etcd(), &config),
            Err(KubeRuntimeError::NameTooLong(_))
        ));
        let mut unnamed = hc;
        unnamed.metadata.name = None;
        assert!(matches!(render(&unnamed, &pki_data(), &etcd(), &config), Err(KubeRuntimeError::NoName)));
    }

    #[test]
    fn only_the_owning_hosted_cluster_may_use_the_namespace() {
        let hc = hosted_cluster(json!({}));
        let ours = BTreeMap::from([(OWNER_ANNOTATION.to_string(), "tenants/team-a".to_string())]);
        assert!(check_namespace_owner("kok-team-a", Some(&ours), &hc).is_ok());
        let theirs = BTreeMap::from([(OWNER_ANNOTATION.to_string(), "other/team-a".to_string())]);
        for annotations in [Some(&theirs), None] {
            assert!(matches!(
                check_namespace_owner("kok-team-a", annotations, &hc),
                Err(KubeRuntimeError::NamespaceTaken { wanted, .. }) if wanted == "tenants/team-a"
            ));
        }
    }

    fn deployment(generation: i64, replicas: i32, status: DeploymentStatus) -> Deployment {
        let mut d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "kube-apiserver", "generation": generation},
            "spec": {"replicas": replicas, "selector": {}, "template": {
                "metadata": {"annotations": {CONFIG_CHECKSUM_ANNOTATION: "abc"}}}},
        }))
        .unwrap();
        d.status = Some(status);
        d
    }

    #[test]
    fn readiness_needs_the_latest_generation_all_replicas_updated_and_ready() {
        let status = |observed, replicas, updated, ready| DeploymentStatus {
            observed_generation: Some(observed),
            replicas: Some(replicas),
            updated_replicas: Some(updated),
            ready_replicas: Some(ready),
            ..Default::default()
        };
        for (d, want_ready, want_reason) in [
            (deployment(2, 2, status(2, 2, 2, 2)), true, "Ready"),
            (deployment(3, 2, status(2, 2, 2, 2)), false, "RolloutPending"),
            (deployment(2, 2, status(2, 3, 1, 2)), false, "RollingOut"),
            (deployment(2, 2, status(2, 3, 2, 3)), false, "RollingOut"),
            (deployment(2, 2, status(2, 2, 2, 1)), false, "NotReady"),
            (deployment(1, 1, DeploymentStatus::default()), false, "RolloutPending"),
        ] {
            let readiness = deployment_readiness(&d);
            assert_eq!((readiness.ready, readiness.reason), (want_ready, want_reason), "{readiness:?}");
        }
        let r = deployment_readiness(&deployment(2, 2, status(2, 2, 2, 1)));
        assert_eq!((r.desired_replicas, r.ready_replicas, r.updated_replicas), (2, 1, 2));
        assert_eq!(r.message, "1 of 2 replicas ready");
        assert_eq!(template_checksum(&deployment(1, 1, DeploymentStatus::default())), Some("abc"));
    }

    #[test]
    fn components_name_their_conditions() {
        let types: Vec<&str> = ControlPlaneComponent::ALL.iter().map(|c| c.condition_type()).collect();
        assert_eq!(types, ["KubeApiserverReady", "KubeControllerManagerReady", "KubeSchedulerReady"]);
        assert_eq!(
            apiserver_hosts("a"),
            ["kube-apiserver", "kube-apiserver.kok-a", "kube-apiserver.kok-a.svc"]
        );
    }

    /// A control-plane Deployment on `version`; `rolled` says whether it
    /// finished rolling that version out.
    fn on(
        component: ControlPlaneComponent,
        version: &str,
        rolled: bool,
    ) -> (ControlPlaneComponent, Option<Deployment>) {
        let mut d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": component.deployment_name(), "generation": 4},
            "spec": {"replicas": 1, "selector": {}, "template": {"spec": {"containers": [{
                "name": component.name(),
                "image": ImageConfig::default().image(component, version),
            }]}}},
        }))
        .unwrap();
        d.status = Some(DeploymentStatus {
            observed_generation: Some(if rolled { 4 } else { 3 }),
            replicas: Some(1),
            updated_replicas: Some(1),
            ready_replicas: Some(1),
            available_replicas: Some(1),
            ..Default::default()
        });
        (component, Some(d))
    }

    fn at(second: i64) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::from_second(1_700_000_000 + second).unwrap(),
        )
    }

    fn running(version: &str, spec_version: &str) -> HostedCluster {
        let mut hc = hosted_cluster(json!({"version": spec_version}));
        hc.status = Some(flotilla_api::kok::HostedClusterStatus {
            version: Some(version.into()),
            ..Default::default()
        });
        hc
    }

    /// Feeds a plan's status back, as the controller's status write does.
    fn record(hc: &mut HostedCluster, plan: &UpgradePlan) {
        let status = hc.status.get_or_insert_with(Default::default);
        status.upgrade = plan.upgrade.clone();
        status.version = plan.version.clone().or(status.version.clone());
        status.previous_version = plan.previous_version.clone();
    }

    fn images(versions: &ComponentVersions) -> Vec<(&'static str, &str)> {
        versions.iter().map(|(c, v)| (c.name(), v.as_str())).collect()
    }

    use ControlPlaneComponent::{KubeApiserver as Api, KubeControllerManager as Cm, KubeScheduler as Sched};

    #[test]
    fn deployments_report_their_image_version_and_availability() {
        let (_, d) = on(Api, "1.20.2", true);
        let d = d.unwrap();
        assert_eq!(deployment_version(&d).as_deref(), Some("1.20.2"));
        assert!(deployment_available(&d));
        let mut unavailable = d.clone();
        unavailable.status.as_mut().unwrap().available_replicas = Some(0);
        assert!(!deployment_available(&unavailable));
        let (_, pending) = on(Api, "1.21.0", false);
        assert!(!deployment_available(&pending.unwrap()));
        let mut untagged = d;
        untagged.spec.template.spec.as_mut().unwrap().containers[0].image =
            Some("localhost:5000/kube-apiserver".into());
        assert_eq!(deployment_version(&untagged), None);
        let observed =
            upgrade_observations(&[on(Api, "1.20.2", true), (Cm, None), on(Sched, "1.20.2", false)]);
        let seen: Vec<(&str, bool)> = observed.iter().map(|o| (o.component.as_str(), o.healthy)).collect();
        assert_eq!(seen, [("kube-apiserver", true), ("kube-scheduler", false)]);
    }

    /// 1.20.2 → 1.21.0: the apiserver's Deployment moves first; the others
    /// wait until it has rolled out and is available.
    #[test]
    fn an_upgrade_moves_the_apiserver_first_then_the_others() {
        let deadline = std::time::Duration::from_secs(60);
        let mut hc = running("1.20.2", "1.21.0");
        let old = [on(Api, "1.20.2", true), on(Cm, "1.20.2", true), on(Sched, "1.20.2", true)];
        let plan = upgrade_plan(&hc, &old, at(0), deadline);
        assert!(plan.upgrading);
        assert_eq!(plan.phase(), Some(flotilla_api::kok::HostedClusterPhase::Upgrading));
        let versions = upgrade_versions(&plan).unwrap();
        assert_eq!(
            images(&versions),
            [
                ("kube-apiserver", "1.21.0"),
                ("kube-controller-manager", "1.20.2"),
                ("kube-scheduler", "1.20.2")
            ]
        );
        assert_eq!(plan.upgrade.as_ref().unwrap().component.as_deref(), Some("kube-apiserver"));
        record(&mut hc, &plan);

        // Applied, not rolled out yet: nothing else moves.
        let moving = [on(Api, "1.21.0", false), on(Cm, "1.20.2", true), on(Sched, "1.20.2", true)];
        let plan = upgrade_plan(&hc, &moving, at(5), deadline);
        assert_eq!(upgrade_versions(&plan).unwrap()[&Cm], "1.20.2");
        let message = &plan.condition.as_ref().unwrap().message;
        assert!(message.contains("waiting for kube-apiserver/0 to be healthy on 1.21.0"), "{message}");
        record(&mut hc, &plan);

        // Rolled out and available: the controller-manager is next, the
        // scheduler still waits.
        let rolled = [on(Api, "1.21.0", true), on(Cm, "1.20.2", true), on(Sched, "1.20.2", true)];
        let plan = upgrade_plan(&hc, &rolled, at(10), deadline);
        assert_eq!(
            images(&upgrade_versions(&plan).unwrap()),
            [
                ("kube-apiserver", "1.21.0"),
                ("kube-controller-manager", "1.21.0"),
                ("kube-scheduler", "1.20.2")
            ]
        );
        record(&mut hc, &plan);
        let plan = upgrade_plan(
            &hc,
            &[on(Api, "1.21.0", true), on(Cm, "1.21.0", true), on(Sched, "1.20.2", true)],
            at(15),
            deadline,
        );
        assert_eq!(upgrade_versions(&plan).unwrap()[&Sched], "1.21.0");
        record(&mut hc, &plan);
        let done = [on(Api, "1.21.0", true), on(Cm, "1.21.0", true), on(Sched, "1.21.0", true)];
        let plan = upgrade_plan(&hc, &done, at(20), deadline);
        assert!(!plan.upgrading);
        assert_eq!(
            (plan.version.as_deref(), plan.previous_version.as_deref()),
            (Some("1.21.0"), Some("1.20.2"))
        );
        assert_eq!(plan.upgrade.as_ref().unwrap().state, flotilla_api::kok::UpgradeState::Succeeded);
        assert_eq!(plan.condition.as_ref().unwrap().reason, "Succeeded");
        // The images follow the plan.
        let r = render_versions(&hc, &pki_data(), &etcd(), &KubeRuntimeConfig::default(), &versions).unwrap();
        let tags: Vec<Value> =
            r.components.iter().map(|c| container(&c.deployment)["image"].clone()).collect();
        assert_eq!(
            tags,
            [
                json!("registry.k8s.io/kube-apiserver:v1.21.0"),
                json!("registry.k8s.io/kube-controller-manager:v1.20.2"),
                json!("registry.k8s.io/kube-scheduler:v1.20.2")
            ]
        );
    }

    #[test]
    fn an_apiserver_not_available_in_time_is_rolled_back() {
        let deadline = std::time::Duration::from_secs(30);
        let mut hc = running("1.20.2", "1.21.0");
        let old = [on(Api, "1.20.2", true), on(Cm, "1.20.2", true), on(Sched, "1.20.2", true)];
        let plan = upgrade_plan(&hc, &old, at(0), deadline);
        record(&mut hc, &plan);
        let stuck = [on(Api, "1.21.0", false), on(Cm, "1.20.2", true), on(Sched, "1.20.2", true)];
        let plan = upgrade_plan(&hc, &stuck, at(29), deadline);
        assert_eq!(upgrade_versions(&plan).unwrap()[&Api], "1.21.0");
        let plan = upgrade_plan(&hc, &stuck, at(31), deadline);
        assert_eq!(plan.upgrade.as_ref().unwrap().state, flotilla_api::kok::UpgradeState::RollingBack);
        assert_eq!(
            images(&upgrade_versions(&plan).unwrap()),
            [
                ("kube-apiserver", "1.20.2"),
                ("kube-controller-manager", "1.20.2"),
                ("kube-scheduler", "1.20.2")
            ]
        );
        let message = &plan.condition.as_ref().unwrap().message;
        assert!(message.contains("kube-apiserver/0 was not healthy on 1.21.0 within 30s"), "{message}");
        record(&mut hc, &plan);
        let plan = upgrade_plan(&hc, &old, at(40), deadline);
        assert!(!plan.upgrading);
        assert_eq!(plan.upgrade.as_ref().unwrap().state, flotilla_api::kok::UpgradeState::RolledBack);
        assert_eq!(plan.version.as_deref(), Some("1.20.2"));
        // Not retried while spec.version still asks for it.
        record(&mut hc, &plan);
        let plan = upgrade_plan(&hc, &old, at(50), deadline);
        assert_eq!(upgrade_versions(&plan).unwrap()[&Api], "1.20.2");
        assert_eq!(plan.condition.as_ref().unwrap().reason, "RolledBack");
    }

    #[test]
    fn a_minor_downgrade_is_refused_and_moves_nothing() {
        let hc = running("1.21.0", "1.20.2");
        let now_on = [on(Api, "1.21.0", true), on(Cm, "1.21.0", true), on(Sched, "1.21.0", true)];
        let plan = upgrade_plan(&hc, &now_on, at(0), std::time::Duration::from_secs(60));
        assert!(!plan.upgrading);
        assert!(upgrade_versions(&plan).unwrap().values().all(|v| v == "1.21.0"));
        let condition = plan.condition.unwrap();
        assert_eq!((condition.status.as_str(), condition.reason.as_str()), ("False", "Refused"));
        assert!(
            condition.message.contains("cannot downgrade from 1.21.0 to 1.20.2"),
            "{}",
            condition.message
        );
        // Skipping a minor is refused too; a patch change is not.
        let skip =
            upgrade_plan(&running("1.20.2", "1.22.0"), &now_on, at(0), std::time::Duration::from_secs(60));
        assert_eq!(skip.condition.unwrap().reason, "Refused");
        let patch =
            upgrade_plan(&running("1.21.0", "1.21.1"), &now_on, at(0), std::time::Duration::from_secs(60));
        assert!(patch.upgrading);
    }

    #[test]
    fn a_fresh_cluster_runs_its_version_or_nothing() {
        let hc = hosted_cluster(json!({"version": "1.20.2"}));
        let plan = upgrade_plan(&hc, &[], at(0), std::time::Duration::from_secs(60));
        assert!(upgrade_versions(&plan).unwrap().values().all(|v| v == "1.20.2"));
        assert_eq!(plan.version, None);
        let plan = upgrade_plan(&hc, &[on(Api, "1.20.2", true)], at(0), std::time::Duration::from_secs(60));
        assert_eq!(plan.version.as_deref(), Some("1.20.2"));
        let bad = hosted_cluster(json!({"version": "one-twenty"}));
        let plan = upgrade_plan(&bad, &[], at(0), std::time::Duration::from_secs(60));
        assert_eq!(upgrade_versions(&plan), None);
        assert_eq!(plan.condition.unwrap().reason, "Refused");
    }

    #[test]
    fn a_node_port_is_reached_at_the_first_ready_node() {
        let node = |name: &str, ready: bool, ip: Option<&str>| MetaNode {
            name: name.into(),
            ready,
            internal_ip: ip.map(str::to_string),
        };
        let cases = [
            (
                "first ready by name",
                Some(31443),
                vec![node("b", true, Some("10.0.0.2")), node("a", true, Some("10.0.0.1"))],
                Some("https://10.0.0.1:31443"),
            ),
            (
                "a NotReady one is skipped",
                Some(31443),
                vec![node("a", false, Some("10.0.0.1")), node("b", true, Some("10.0.0.2"))],
                Some("https://10.0.0.2:31443"),
            ),
            ("no address", Some(31443), vec![node("a", true, None)], None),
            ("no port yet", None, vec![node("a", true, Some("10.0.0.1"))], None),
            ("no node", Some(31443), vec![], None),
        ];
        for (name, port, nodes, want) in cases {
            assert_eq!(external_endpoint(port, &nodes).as_deref(), want, "{name}");
        }
        let hc = hosted_cluster(json!({"version": "1.20.2", "etcd": {"clusterRef": "e"}}));
        let config = KubeRuntimeConfig { expose: ApiExposure::NodePort, ..Default::default() };
        let rendered = render(&hc, &pki_data(), &etcd(), &config).unwrap();
        assert_eq!(rendered.apiserver_service["spec"]["type"], "NodePort");
    }
}
