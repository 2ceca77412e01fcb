//! `kok.flotilla.io/v1alpha1` `Machine`: one host and the processes its node
//! agent (`flotilla node-agent`) must run there.
//!
//! The spec is written by people or by Flotilla's operators (etcd, hosted
//! clusters); the status only by the machine's node agent (field manager
//! `flotilla-node-agent`).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const GROUP: &str = "kok.flotilla.io";

/// Condition types on a Machine.
pub mod conditions {
    /// Every component in the spec is running and passes its health check.
    pub const READY: &str = "Ready";
}

/// One host. Cluster-scoped; its name is the name its node agent is started
/// with. Pool membership and placement hints live in its labels.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kok.flotilla.io",
    version = "v1alpha1",
    kind = "Machine",
    plural = "machines",
    shortname = "mach",
    status = "MachineStatus",
    printcolumn = r#"{"name":"Role","type":"string","jsonPath":".spec.role"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Components","type":"string","jsonPath":".status.componentSummary"}"#,
    printcolumn = r#"{"name":"Internal-IP","type":"string","jsonPath":".status.addresses[?(@.type==\"InternalIP\")].address"}"#,
    printcolumn = r#"{"name":"Address","type":"string","jsonPath":".spec.address","priority":1}"#,
    printcolumn = r#"{"name":"CPU","type":"string","jsonPath":".status.capacity.cpu","priority":1}"#,
    printcolumn = r#"{"name":"Memory","type":"string","jsonPath":".status.capacity.memory","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MachineSpec {
    /// The address other machines reach this one at (an IP or DNS name).
    /// When absent, Flotilla uses the first InternalIP the node agent
    /// reports in `status.addresses`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// What the machine is for, e.g. `etcd`, `control-plane`, `worker`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// The processes the node agent runs. A component removed from this list
    /// is stopped; a changed one (binary, args, env or rendered files) is
    /// restarted, and only that one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub components: Vec<ComponentSpec>,
    /// While true the node agent starts, stops and restarts nothing; it only
    /// reports.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
    /// Real worker nodes of hosted clusters on this machine (containerd,
    /// kubelet, kube-proxy in a sandbox of their own). Declared as nodes,
    /// not as sandboxes plus components, because a sandbox's addresses,
    /// bridge and cgroups depend on the host (free address slots, other
    /// groups, cgroup hierarchies): only the node agent can choose them. It
    /// renders each node into components (`<name>-holder`,
    /// `<name>-containerd`, `<name>-kubelet`, `<name>-kube-proxy`, reported
    /// in `status.components`) and supervises them like any other. A node
    /// removed from this list is stopped and its sandbox removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]), length(max = 16))]
    pub real_nodes: Vec<RealNodeSpec>,
}

/// A real worker node of a hosted cluster, run on this machine.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RealNodeSpec {
    /// The Node's name in its cluster; its components are named after it.
    /// At most 45 characters so `<name>-kube-proxy` is a component name.
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"), length(max = 45))]
    pub name: String,
    /// The directory holding the `kubelet` and `kube-proxy` binaries of the
    /// node's Kubernetes release.
    #[schemars(regex(pattern = r"^/"))]
    pub bin_dir: String,
    /// A directory of OCI image tarballs (`*.tar`) imported into the node's
    /// containerd before its kubelet starts; it must hold the pod sandbox
    /// image `flotilla.local/pause:1`.
    #[schemars(regex(pattern = r"^/"))]
    pub images_dir: String,
    /// A directory of further OCI (or `docker save`) image tarballs
    /// (`*.tar`), imported into the node's containerd while it runs:
    /// looked at again every few seconds, each file imported once (again
    /// when it changes), the names reported in `status.realNodes[].images`.
    /// It may not exist yet (nothing to import). Changing it restarts
    /// nothing. `flotilla images load` copies tarballs into it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^/"))]
    pub extra_images_dir: Option<String>,
    /// The cluster's CA certificate (PEM): the kubelet accepts API server
    /// clients it signed.
    pub ca_ref: KeyRef,
    /// A kubeconfig for the kubelet (user `system:node:<name>`, group
    /// `system:nodes`), with the API server's URL as the node reaches it.
    pub kubelet_kubeconfig_ref: KeyRef,
    /// A kubeconfig for kube-proxy (`system:kube-proxy`).
    pub kube_proxy_kubeconfig_ref: KeyRef,
    /// Pods the node takes (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 250))]
    pub max_pods: Option<u32>,
    /// Labels the kubelet registers the Node with.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The cluster DNS Service's IPv4 address (default 10.0.0.10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]{1,3}(\.[0-9]{1,3}){3}$"))]
    pub cluster_dns: Option<String>,
    /// When the node agent repairs the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repair: Option<RepairPolicy>,
}

/// The node agent's repair of a real node: a node NotReady for longer than
/// `notReadySeconds` gets its kubelet and containerd restarted, at most once
/// per threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RepairPolicy {
    #[schemars(range(min = 5, max = 3600))]
    pub not_ready_seconds: u32,
}

impl Default for RepairPolicy {
    fn default() -> Self {
        Self { not_ready_seconds: 60 }
    }
}

/// A process the node agent runs and supervises.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ComponentSpec {
    /// Unique within the machine; names its log file and working directory.
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"), length(max = 63))]
    pub name: String,
    /// Absolute path of the executable.
    pub binary: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Environment variables; the process inherits none of the node agent's
    /// (PATH defaults to the usual system directories).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Files written before the process starts. Relative paths are under the
    /// component's working directory.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<ComponentFile>,
    /// How the node agent decides the process is healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthCheck>,
    #[serde(default)]
    pub restart_policy: RestartPolicy,
}

/// A file rendered for a component: exactly one of `content`, `secretRef`,
/// `configMapRef`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ComponentFile {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// A key of a Secret on the hub.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<KeyRef>,
    /// A key of a ConfigMap on the hub.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_ref: Option<KeyRef>,
    /// Permission bits (decimal in JSON, e.g. 384 for 0600); default 0600.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 511))]
    pub mode: Option<u32>,
}

/// One key of a namespaced Secret or ConfigMap.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyRef {
    pub namespace: String,
    pub name: String,
    pub key: String,
}

/// Exactly one of `http`, `tcp`, `exec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthCheck {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpCheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpCheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecCheck>,
    /// Seconds between probes (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub period_seconds: Option<u32>,
}

/// Healthy when a GET of `url` answers 2xx.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpCheck {
    /// `http://` or `https://` URL.
    pub url: String,
    /// PEM CA bundle that signs the server's certificate (https).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// Accept any server certificate (https).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
}

/// Healthy when a TCP connection to `host:port` succeeds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpCheck {
    /// Default `127.0.0.1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    pub port: u16,
}

/// Healthy when the command exits 0.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecCheck {
    pub command: Vec<String>,
}

/// When an exited process is started again (with backoff).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RestartPolicy {
    #[default]
    Always,
    OnFailure,
    Never,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MachineStatus {
    /// `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_agent_version: Option<String>,
    /// When the node agent last wrote this status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat: Option<Time>,
    /// `running/total`, for display.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component_summary: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub components: Vec<ComponentStatus>,
    /// The host's addresses, as its node agent finds them: the InternalIPs
    /// of the interfaces holding a default route first (or only the one
    /// given with `--address`), then its other global addresses, and its
    /// Hostname. Atomic, not keyed by type: a host has several InternalIPs
    /// (dual stack), their order says which one is used, and the node agent
    /// is the only writer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub addresses: Vec<MachineAddress>,
    /// What the host has: `cpu` (online CPUs), `memory` (MemTotal) and
    /// `ephemeral-storage` (the file system of the node agent's state
    /// directory).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub capacity: BTreeMap<String, Quantity>,
    /// Facts about the host's software.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_info: Option<MachineInfo>,
    /// One entry per real node the agent runs or is removing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub real_nodes: Vec<RealNodeStatus>,
}

/// What the node agent knows of one real node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RealNodeStatus {
    pub name: String,
    /// `Pending` (no sandbox yet), `Running` (sandbox up, components
    /// supervised) or `Failed` (the sandbox cannot be made; see `message`).
    pub phase: String,
    /// The node's InternalIP on the machine's real-node bridge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// The node's cgroup root and network namespace name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    /// The Node's Ready condition as its kubelet's credential reads it;
    /// absent while unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<bool>,
    /// Repairs: the kubelet or containerd started again after it exited,
    /// or both restarted because the node stayed NotReady.
    #[serde(default)]
    pub repairs: u32,
    /// Why the last repair was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_repair: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_repair_time: Option<Time>,
    /// The names of the images imported from `extraImagesDir`, sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<String>,
    /// What is wrong: the sandbox cannot be made, or a tarball of
    /// `extraImagesDir` was not imported (its file name and ctr's error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One address of the host, as in a Kubernetes Node's `status.addresses`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MachineAddress {
    #[serde(rename = "type")]
    pub type_: MachineAddressType,
    pub address: String,
}

impl MachineAddress {
    pub fn new(type_: MachineAddressType, address: impl Into<String>) -> Self {
        Self { type_, address: address.into() }
    }
}

/// The kinds of address a Kubernetes Node reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum MachineAddressType {
    /// An IP reachable from the other machines of the fleet.
    #[serde(rename = "InternalIP")]
    InternalIp,
    #[serde(rename = "ExternalIP")]
    ExternalIp,
    Hostname,
    #[serde(rename = "InternalDNS")]
    InternalDns,
    #[serde(rename = "ExternalDNS")]
    ExternalDns,
}

/// What runs the host, as in a Kubernetes Node's `status.nodeInfo`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MachineInfo {
    /// `uname -r`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_version: Option<String>,
    /// `PRETTY_NAME` of `/etc/os-release`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_image: Option<String>,
    /// As Go names it (`amd64`, `arm64`), like a Node's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    /// `v1` or `v2`: a kubelet from 1.35 on refuses cgroup v1 unless told.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_version: Option<String>,
    /// `containerd://1.6.20`, when a container runtime is installed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_runtime_version: Option<String>,
    /// Changes when the host reboots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
}

impl Machine {
    /// Where Flotilla reaches this machine: `spec.address` when set, else
    /// the first InternalIP its node agent reports.
    pub fn address(&self) -> Option<&str> {
        let given = self.spec.address.as_deref().filter(|a| !a.is_empty());
        given.or_else(|| {
            self.status
                .as_ref()?
                .addresses
                .iter()
                .find(|a| a.type_ == MachineAddressType::InternalIp && !a.address.is_empty())
                .map(|a| a.address.as_str())
        })
    }

    /// Why [`Machine::address`] has nothing, and what to do about it: for
    /// the refusals of whatever needs the address.
    pub fn no_address_reason(&self) -> String {
        let name = self.metadata.name.as_deref().unwrap_or_default();
        let reported = self.status.as_ref().is_some_and(|s| !s.addresses.is_empty());
        if reported {
            format!(
                "{name} has no address: set spec.address, or restart its node agent with --address: \
                 it reports no InternalIP in status.addresses"
            )
        } else {
            format!(
                "{name} has no address: set spec.address, or start its node agent, which reports \
                 status.addresses"
            )
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentStatus {
    pub name: String,
    pub state: ComponentState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// How often the process was started again after it exited.
    #[serde(default)]
    pub restarts: u32,
    /// The exit code, or 128 + the signal number if a signal ended it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit_time: Option<Time>,
    /// The last health probe's verdict; absent without a health check or
    /// while the process is not running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The last lines of its log when it last exited.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log_tail: Vec<String>,
    /// Hash of what the process was started with (binary, args, env, files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec_hash: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ComponentState {
    /// Alive, waiting for its first good health probe.
    #[default]
    Starting,
    /// Alive (and healthy at least once if it has a health check).
    Running,
    /// Exited; will be started again after a delay.
    Backoff,
    /// Exited and will not be restarted (clean exit, or paused).
    Stopped,
    /// Exited with an error and will not be restarted, or cannot be started.
    Failed,
}

impl std::fmt::Display for ComponentState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ComponentState::Starting => "Starting",
            ComponentState::Running => "Running",
            ComponentState::Backoff => "Backoff",
            ComponentState::Stopped => "Stopped",
            ComponentState::Failed => "Failed",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    #[test]
    fn machine_crd_is_cluster_scoped_with_status_and_columns() {
        let crd = Machine::crd();
        assert_eq!(crd.spec.scope, "Cluster");
        assert_eq!(crd.spec.group, GROUP);
        let v = &crd.spec.versions[0];
        assert!(v.subresources.as_ref().unwrap().status.is_some());
        let cols: Vec<&str> =
            v.additional_printer_columns.as_ref().unwrap().iter().map(|c| c.name.as_str()).collect();
        for want in ["Role", "Ready", "Components", "Internal-IP", "Address", "CPU", "Memory", "Age"] {
            assert!(cols.contains(&want), "{cols:?}");
        }
    }

    #[test]
    fn reported_addresses_are_an_atomic_list_and_capacity_holds_quantities() {
        let crd = serde_json::to_value(Machine::crd()).unwrap();
        let status = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"];
        let addresses = &status["properties"]["addresses"];
        assert_eq!(addresses["x-kubernetes-list-type"], "atomic");
        let mut types: Vec<&str> = addresses["items"]["properties"]["type"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        types.sort();
        assert_eq!(types, ["ExternalDNS", "ExternalIP", "Hostname", "InternalDNS", "InternalIP"]);
        let capacity = &status["properties"]["capacity"]["additionalProperties"];
        assert_eq!(capacity["x-kubernetes-int-or-string"], true, "{capacity}");
    }

    #[test]
    fn a_real_node_takes_an_absolute_extra_images_dir_and_reports_image_names() {
        let crd =
            serde_json::to_value(crate::crds().into_iter().find(|c| c.spec.names.kind == "Machine").unwrap())
                .unwrap();
        let root = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"];
        let spec = &root["spec"]["properties"]["realNodes"]["items"]["properties"];
        assert_eq!(spec["extraImagesDir"]["type"], "string", "{spec}");
        assert_eq!(spec["extraImagesDir"]["pattern"], "^/", "{spec}");
        let status = &root["status"]["properties"]["realNodes"]["items"]["properties"];
        assert_eq!(status["images"]["type"], "array", "{status}");
        assert_eq!(status["images"]["items"]["type"], "string", "{status}");
        let none = serde_json::to_value(RealNodeStatus::default()).unwrap();
        assert!(none.get("images").is_none() && none.get("message").is_none(), "no nulls: {none}");
    }

    #[test]
    fn the_address_is_the_spec_one_else_the_first_reported_internal_ip() {
        use MachineAddressType::{Hostname, InternalIp};
        struct Case {
            name: &'static str,
            spec: Option<&'static str>,
            reported: Option<Vec<(MachineAddressType, &'static str)>>,
            want: Option<&'static str>,
            reason: &'static str,
        }
        let cases = [
            Case {
                name: "spec wins over what is reported",
                spec: Some("10.0.0.9"),
                reported: Some(vec![(InternalIp, "192.0.2.2")]),
                want: Some("10.0.0.9"),
                reason: "",
            },
            Case {
                name: "the first InternalIP, not the hostname before it",
                spec: None,
                reported: Some(vec![(Hostname, "h"), (InternalIp, "192.0.2.2"), (InternalIp, "fd00::2")]),
                want: Some("192.0.2.2"),
                reason: "",
            },
            Case {
                name: "an empty spec address counts as none",
                spec: Some(""),
                reported: Some(vec![(InternalIp, "fd00::2")]),
                want: Some("fd00::2"),
                reason: "",
            },
            Case {
                name: "no node agent yet",
                spec: None,
                reported: None,
                want: None,
                reason: "m2 has no address: set spec.address, or start its node agent, which reports \
                         status.addresses",
            },
            Case {
                name: "a node agent that found only its hostname",
                spec: None,
                reported: Some(vec![(Hostname, "h")]),
                want: None,
                reason: "m2 has no address: set spec.address, or restart its node agent with --address: \
                         it reports no InternalIP in status.addresses",
            },
        ];
        for case in cases {
            let mut m =
                Machine::new("m2", MachineSpec { address: case.spec.map(Into::into), ..Default::default() });
            m.status = case.reported.map(|list| MachineStatus {
                addresses: list.into_iter().map(|(t, a)| MachineAddress::new(t, a)).collect(),
                ..Default::default()
            });
            assert_eq!(m.address(), case.want, "{}", case.name);
            if case.want.is_none() {
                assert_eq!(m.no_address_reason(), case.reason, "{}", case.name);
            }
        }
    }

    #[test]
    fn a_machine_parses_from_yaml() {
        let yaml = r#"
apiVersion: kok.flotilla.io/v1alpha1
kind: Machine
metadata:
  name: m1
  labels: {pool: etcd}
spec:
  address: 10.0.0.1
  role: etcd
  components:
    - name: etcd
      binary: /usr/bin/etcd
      args: [--data-dir=data]
      env: {ETCD_UNSUPPORTED_ARCH: arm64}
      files:
        - path: pki/ca.crt
          secretRef: {namespace: kok-a, name: etcd-ca, key: tls.crt}
          mode: 420
        - path: config.yaml
          content: "a: 1"
      health:
        http: {url: "https://127.0.0.1:2379/health", caFile: pki/ca.crt}
      restartPolicy: OnFailure
"#;
        let m: Machine = serde_saphyr::from_str(yaml).unwrap();
        let c = &m.spec.components[0];
        assert_eq!(c.restart_policy, RestartPolicy::OnFailure);
        assert_eq!(c.files[0].secret_ref.as_ref().unwrap().key, "tls.crt");
        assert_eq!(c.files[0].mode, Some(0o644));
        assert_eq!(c.health.as_ref().unwrap().http.as_ref().unwrap().ca_file.as_deref(), Some("pki/ca.crt"));
    }
}
