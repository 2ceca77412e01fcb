//! `kok.flotilla.io/v1alpha1`: Kubernetes on Kubernetes. Hosted control
//! planes (`HostedCluster`) and the etcd clusters they store their data in
//! (`EtcdCluster`, `EtcdBackup`, `EtcdRestore`). The machines that run
//! process-runtime components are `Machine` objects (see `machine`).
//!
//! Every object here is namespaced: a HostedCluster and its EtcdCluster
//! live in the same namespace and refer to each other by name.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

mod backup;

pub use backup::*;

pub const GROUP: &str = "kok.flotilla.io";

/// Condition types.
pub mod conditions {
    /// On an EtcdCluster: every member is healthy and there is a leader.
    pub const ETCD_AVAILABLE: &str = "Available";
    /// On an EtcdCluster with `spec.backup`: its schedule is a cron
    /// expression that fires (False with the expression and why not).
    pub const BACKUP_SCHEDULE_VALID: &str = "BackupScheduleValid";
    /// On a HostedCluster: the certificates and kubeconfig Secrets exist and
    /// none is about to expire.
    pub const CERTIFICATES_READY: &str = "CertificatesReady";
    /// On a HostedCluster: its etcd (dedicated or shared) is available.
    pub const ETCD_READY: &str = "EtcdReady";
    /// On a HostedCluster, one per component: it runs the desired version
    /// and answers its health check.
    pub const KUBE_APISERVER_READY: &str = "KubeApiserverReady";
    pub const KUBE_CONTROLLER_MANAGER_READY: &str = "KubeControllerManagerReady";
    pub const KUBE_SCHEDULER_READY: &str = "KubeSchedulerReady";
    /// On a HostedCluster: the requested worker nodes are Ready.
    pub const NODES_READY: &str = "NodesReady";
    /// On a HostedCluster: every add-on is applied into the cluster.
    pub const ADDONS_APPLIED: &str = "AddonsApplied";
    /// On a HostedCluster and a process-runtime EtcdCluster: the last
    /// version change (False with the reason while it runs or when it was
    /// refused or rolled back).
    pub const UPGRADED: &str = "Upgraded";
    /// On a HostedCluster: the spec can be acted on (False with a message
    /// that says what to fix).
    pub const VALID: &str = "Valid";
    /// On a HostedCluster: every control-plane component is healthy.
    pub const READY: &str = "Ready";
}

/// Where a hosted control plane's (or an etcd cluster's) components run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Runtime {
    /// Supervised processes on Machines, run by their node agents (local,
    /// edge, tests: no container runtime needed).
    #[default]
    Process,
    /// Deployments/StatefulSets, Services and Secrets in the meta cluster,
    /// in namespace `kok-<name>`.
    Kubernetes,
}

/// A directory on a Machine.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MachinePath {
    /// Name of the Machine (cluster-scoped) that holds the directory.
    #[schemars(length(min = 1))]
    pub machine: String,
    /// Absolute path of the directory on that machine.
    #[schemars(regex(pattern = r"^/"))]
    pub path: String,
}

// ---------------------------------------------------------------- EtcdCluster

/// An etcd cluster of 1, 3 or 5 members with peer and client TLS from a CA
/// the operator generates.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kok.flotilla.io",
    version = "v1alpha1",
    kind = "EtcdCluster",
    plural = "etcdclusters",
    shortname = "etcd",
    namespaced,
    status = "EtcdClusterStatus",
    printcolumn = r#"{"name":"Members","type":"integer","jsonPath":".spec.members"}"#,
    printcolumn = r#"{"name":"Ready","type":"integer","jsonPath":".status.readyMembers"}"#,
    printcolumn = r#"{"name":"Leader","type":"string","jsonPath":".status.leader"}"#,
    printcolumn = r#"{"name":"Version","type":"string","jsonPath":".status.version"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EtcdClusterSpec {
    /// Number of voting members. Scaling up adds learners and promotes them
    /// one at a time.
    #[schemars(extend("enum" = [1, 3, 5]))]
    pub members: i32,
    /// etcd version, e.g. `3.7.4`. Process runtime: one the operator has a
    /// binary for (`etcd`, `etcd-X.Y.Z` in its bin dir); changing it rolls
    /// the members one at a time after a snapshot (`status.upgrade`,
    /// condition `Upgraded`); one minor up at a time, never a minor down.
    #[schemars(length(min = 1))]
    pub version: String,
    /// Process: members run on Machines; Kubernetes: a StatefulSet.
    #[serde(default)]
    pub runtime: Runtime,
    /// Process runtime: labels a Machine must have to host a member; members
    /// go to distinct machines.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub machine_selector: BTreeMap<String, String>,
    /// Where members keep their data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<EtcdStorage>,
    /// Scheduled backups (on-demand ones are EtcdBackup objects).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<EtcdBackupSchedule>,
    /// Found the cluster from this snapshot file (`path` is the file) on
    /// that Machine: the first member restores it before it starts, the
    /// others join it as learners. Set by EtcdRestore; read only when the
    /// cluster has no member yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_from: Option<SnapshotFile>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EtcdStorage {
    /// Process runtime: a directory on the machine holding one
    /// subdirectory per member; it is yours and is kept when the cluster is
    /// deleted. By default each member keeps its data in its component's
    /// working directory, which is removed with the member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^/"))]
    pub data_dir: Option<String>,
    /// Size of the volume (Kubernetes runtime) and the backend quota
    /// (both runtimes), e.g. `8Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<Quantity>,
}

/// Scheduled backups of an EtcdCluster.
///
/// At every fire time of `schedule` (UTC) the operator creates an EtcdBackup
/// named `<cluster>-<yyyymmdd>-<hhmm>` (`-<hhmmss>` when the tick is not on a
/// whole minute), labelled `kok.flotilla.io/backup-schedule=<cluster>`, owned
/// by the EtcdCluster and annotated `kok.flotilla.io/scheduled-at` with its
/// tick. Its snapshot is the file `<path>/<cluster>-<backup>.db` on
/// `destination.machine`, taken like any EtcdBackup's.
///
/// - Ticks missed (operator down, cluster just created) are not made up:
///   only the most recent one is taken, late, and never a tick from before
///   the cluster existed. Each tick gets at most one backup (one deleted by
///   hand is not made again; `status.lastScheduleTime` records the tick).
/// - While a scheduled backup is Pending or Running no new one starts
///   (a cluster without a healthy member holds one Pending backup, not one
///   per tick).
/// - Retention: the newest `retention` Succeeded scheduled backups are kept;
///   older ones are deleted, and so are Failed ones once a newer one
///   Succeeded (or more than `retention` newer ones Failed). Pending and
///   Running backups and backups without the label (made by hand) are never
///   deleted.
/// - Deleting a scheduled backup (by retention or by hand) removes its
///   snapshot file from the Machine first (finalizer
///   `kok.flotilla.io/snapshot-file`), unless the EtcdCluster is being
///   deleted or gone: a deleted cluster's snapshots stay on disk for an
///   EtcdRestore from `spec.snapshot`. A Machine that is gone or whose node
///   agent is silent keeps its file.
/// - An expression that does not parse sets condition `BackupScheduleValid`
///   False (with the expression and why) and nothing is created or deleted.
///   Removing `spec.backup` stops new backups and keeps the existing ones.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EtcdBackupSchedule {
    /// Cron expression, in UTC: 5 fields (`minute hour day-of-month month
    /// day-of-week`, e.g. `0 */6 * * *`), or 6 with seconds first (e.g.
    /// `*/30 * * * * *`), or `@hourly`, `@daily`, `@weekly`, `@monthly`,
    /// `@yearly`.
    #[schemars(regex(pattern = r"^\s*(@[a-zA-Z]+|(\S+\s+){4,5}\S+)\s*$"))]
    pub schedule: String,
    /// Directory the snapshots are written to.
    pub destination: MachinePath,
    /// How many Succeeded scheduled snapshots to keep; older ones are
    /// deleted with their files.
    #[serde(default = "default_retention")]
    #[schemars(range(min = 1, max = 1000))]
    pub retention: i32,
}

fn default_retention() -> i32 {
    7
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum EtcdClusterPhase {
    /// Members are being created.
    Provisioning,
    /// All members healthy, a leader elected.
    Running,
    /// Adding or promoting learners, or removing members.
    Scaling,
    /// A member is unhealthy or missing (it is being replaced), or quorum is
    /// at risk.
    Degraded,
    /// The object is being deleted.
    Deleting,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EtcdClusterStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<EtcdClusterPhase>,
    /// One entry per member, learners included.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub members: Vec<EtcdMemberStatus>,
    /// Healthy voting members.
    #[serde(default)]
    pub ready_members: i32,
    /// Name of the member that is leader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// Lowest version among the members (the cluster version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Client URLs of the voting members, for `--etcd-servers`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub client_urls: Vec<String>,
    /// Secret holding the CA and a client certificate for this cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// With `spec.backup`: the newest EtcdBackup the schedule created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scheduled_backup: Option<String>,
    /// With `spec.backup`: the tick of the newest backup the schedule
    /// created (a tick is never taken twice, even when its backup was
    /// deleted by hand).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,
    /// With `spec.backup`: the schedule's next fire time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_scheduled_backup: Option<Time>,
    /// The running or last change of `spec.version` (process runtime).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<EtcdUpgradeStatus>,
}

/// Where an etcd version change stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum EtcdUpgradeState {
    /// The snapshot taken before any member moves is being written.
    Snapshotting,
    /// Members move to the new binary one at a time, followers first.
    Rolling,
    /// A member did not become healthy in time: the moved members go back,
    /// newest first.
    RollingBack,
    /// Every member runs the new version.
    Succeeded,
    /// Every member runs the old version again.
    RolledBack,
    /// The snapshot failed; no member moved.
    SnapshotFailed,
}

/// An etcd version change: members move one at a time (followers first,
/// the leader last), each only once the one before is healthy on its new
/// binary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EtcdUpgradeStatus {
    pub from: String,
    pub to: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<EtcdUpgradeState>,
    /// The EtcdBackup taken before the first member moved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<String>,
    /// Where that snapshot is: `<machine>:<path>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// Members moved to `to`, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub moved: Vec<String>,
    /// When the newest move (or move back) was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moved_at: Option<Time>,
    /// The member that did not become healthy on `to` (a rollback's cause).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_member: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EtcdMemberStatus {
    /// Member name (`<cluster>-<index>`).
    pub name: String,
    /// Process runtime: the Machine it runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<String>,
    #[serde(default, rename = "peerURL", skip_serializing_if = "Option::is_none")]
    pub peer_url: Option<String>,
    #[serde(default, rename = "clientURL", skip_serializing_if = "Option::is_none")]
    pub client_url: Option<String>,
    /// etcd member ID in hex, once it joined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// A learner receives the log but does not vote until promoted.
    #[serde(default)]
    pub is_learner: bool,
    /// Its `/health` answered true at the last probe.
    #[serde(default)]
    pub healthy: bool,
    /// Size of its backend database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_size_bytes: Option<i64>,
    /// Server version it reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// A snapshot file on a Machine.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SnapshotFile {
    /// Name of the Machine that holds the file.
    #[schemars(length(min = 1))]
    pub machine: String,
    /// Absolute path of the file (no quotes or whitespace).
    #[schemars(regex(pattern = r#"^/[^'"\s]*$"#))]
    pub path: String,
}

// ---------------------------------------------------------------- HostedCluster

/// A Kubernetes control plane the fleet runs for a business cluster:
/// kube-apiserver, kube-controller-manager and kube-scheduler with their
/// certificates, on Machines (process runtime) or in the meta cluster
/// (Kubernetes runtime), storing data in an EtcdCluster.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kok.flotilla.io",
    version = "v1alpha1",
    kind = "HostedCluster",
    plural = "hostedclusters",
    shortname = "hc",
    namespaced,
    status = "HostedClusterStatus",
    printcolumn = r#"{"name":"Version","type":"string","jsonPath":".status.version"}"#,
    printcolumn = r#"{"name":"Desired","type":"string","jsonPath":".spec.version","priority":1}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Endpoint","type":"string","jsonPath":".status.endpoint"}"#,
    printcolumn = r#"{"name":"Runtime","type":"string","jsonPath":".spec.controlPlane.runtime","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostedClusterSpec {
    /// Kubernetes version of the control plane, e.g. `1.37.2`. Changing it
    /// upgrades (one minor version at a time).
    #[schemars(regex(pattern = r"^v?[0-9]+\.[0-9]+\.[0-9]+.*$"))]
    pub version: String,
    /// The etcd the API server stores its data in.
    pub etcd: HostedEtcd,
    #[serde(default)]
    pub control_plane: ControlPlaneSpec,
    #[serde(default)]
    pub network: NetworkSpec,
    /// Add-ons installed into the cluster once it is Ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub addons: Vec<Addon>,
    /// Worker nodes (hollow kubelets joined with bootstrap tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<NodesSpec>,
}

/// Exactly one of `clusterRef` and `shared`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("oneOf" = [{"required": ["clusterRef"]}, {"required": ["shared"]}]))]
pub struct HostedEtcd {
    /// A dedicated EtcdCluster (same namespace); keys under `/registry`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_ref: Option<String>,
    /// An EtcdCluster shared with other hosted clusters, each under its own
    /// key prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared: Option<SharedEtcd>,
}

impl HostedEtcd {
    /// The EtcdCluster name and the API server's `--etcd-prefix`, or `None`
    /// when neither or both forms are given.
    pub fn resolve(&self) -> Option<(&str, &str)> {
        match (&self.cluster_ref, &self.shared) {
            (Some(cluster), None) => Some((cluster, "/registry")),
            (None, Some(shared)) => Some((&shared.cluster_ref, &shared.prefix)),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SharedEtcd {
    /// The shared EtcdCluster (same namespace).
    #[schemars(length(min = 1))]
    pub cluster_ref: String,
    /// Key prefix of this cluster, e.g. `/clusters/team-a`; must not be a
    /// prefix of another cluster's.
    #[schemars(regex(pattern = r"^/[^\s]*[^/\s]$"))]
    pub prefix: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ControlPlaneSpec {
    /// Instances of each component (apiserver, controller-manager,
    /// scheduler); more than one turns on leader election.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = 5))]
    pub replicas: i32,
    #[serde(default)]
    pub runtime: Runtime,
    /// Extra command-line flags per component (`--name=value`); a flag
    /// Flotilla sets is replaced by the one given here.
    #[serde(default)]
    pub extra_args: ExtraArgs,
    /// Process runtime: the machine pool whose Machines host the
    /// components (Machines labelled `kok.flotilla.io/machine-pool: NAME`);
    /// an instance whose machine is lost moves to another Machine of the
    /// pool. Any usable Machine when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_pool: Option<String>,
    /// Process runtime: labels a Machine must have to host components.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub machine_selector: BTreeMap<String, String>,
    /// Kubernetes runtime: resource requests/limits per container, keyed
    /// by component name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub resources: BTreeMap<String, k8s_openapi::api::core::v1::ResourceRequirements>,
}

impl Default for ControlPlaneSpec {
    fn default() -> Self {
        Self {
            replicas: default_replicas(),
            runtime: Runtime::default(),
            extra_args: ExtraArgs::default(),
            machine_pool: None,
            machine_selector: BTreeMap::new(),
            resources: BTreeMap::new(),
        }
    }
}

fn default_replicas() -> i32 {
    1
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExtraArgs {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kube_apiserver: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kube_controller_manager: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kube_scheduler: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkSpec {
    /// Service IP range; its first address is the `kubernetes` Service.
    #[serde(default = "default_service_cidr", rename = "serviceCIDR")]
    #[schemars(length(min = 1))]
    pub service_cidr: String,
    /// Pod IP range; node CIDRs are allocated from it when set.
    #[serde(default, rename = "podCIDR", skip_serializing_if = "Option::is_none")]
    pub pod_cidr: Option<String>,
    /// DNS domain of the cluster.
    #[serde(default = "default_cluster_domain")]
    #[schemars(length(min = 1))]
    pub cluster_domain: String,
}

impl Default for NetworkSpec {
    fn default() -> Self {
        Self {
            service_cidr: default_service_cidr(),
            pod_cidr: None,
            cluster_domain: default_cluster_domain(),
        }
    }
}

fn default_service_cidr() -> String {
    "10.96.0.0/12".into()
}

fn default_cluster_domain() -> String {
    "cluster.local".into()
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Addon {
    /// Add-on name, e.g. `coredns`.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Its version; the one matching the cluster version when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodesSpec {
    /// Number of worker nodes.
    #[schemars(range(min = 0, max = 1000))]
    pub count: i32,
    /// Process runtime: the machine pool whose Machines run the kubelets
    /// (Machines labelled `kok.flotilla.io/machine-pool: NAME`); any usable
    /// Machine when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_pool: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum HostedClusterPhase {
    /// Certificates, etcd and components are being created.
    Provisioning,
    /// Every component runs the desired version and is healthy.
    Ready,
    /// Components are moving to a new version (or back, on rollback).
    Upgrading,
    /// A component is unhealthy; it is being repaired.
    Degraded,
    /// The object is being deleted.
    Deleting,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostedClusterStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<HostedClusterPhase>,
    /// `https://host:port` of the API server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Secret (same namespace) whose key `kubeconfig` is an admin kubeconfig.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_kubeconfig_secret: Option<String>,
    /// Version every component runs (the older one while upgrading).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The version before the last upgrade, to roll back to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_version: Option<String>,
    /// Expiry of each certificate (the CAs and every leaf).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub certificates: Vec<CertificateStatus>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The upgrade in progress (or the last one, with its outcome).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<UpgradeStatus>,
    /// Add-ons applied into the cluster, with the hash of what was applied:
    /// an add-on is applied again only when its manifests change, so a
    /// user's edits inside the cluster survive otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub addons: Vec<AddonStatus>,
    /// Where each control-plane instance runs (process runtime).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub instances: Vec<ControlPlaneInstanceStatus>,
    /// Worker nodes registered and Ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_nodes: Option<i32>,
    /// When the leaf certificates were last issued (renewal or rotation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificates_issued_at: Option<Time>,
    /// The value of the `kok.flotilla.io/rotate-certs` annotation last acted
    /// on (a new value forces a rotation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled_rotation: Option<String>,
    /// One per component (see `conditions`), plus CertificatesReady,
    /// EtcdReady and NodesReady.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// Progress of a version change, one component at a time.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeStatus {
    /// Version the cluster ran before.
    pub from: String,
    /// Version asked for.
    pub to: String,
    /// `InProgress`, `RollingBack`, `Succeeded`, `RolledBack`.
    pub state: UpgradeState,
    /// Component (`kube-apiserver`, `kube-controller-manager`,
    /// `kube-scheduler`, `kubelet`) being moved now, and the instance
    /// index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<i32>,
    /// Components (`name/index`) already running `to` (or, when rolling
    /// back, already back on `from`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub done: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the current step began (its health deadline counts from here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_started_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
    /// What happened, in words (why it rolled back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Rolling back or rolled back: `spec.version` has been set to something
    /// other than `to` since the rollback began, so asking for `to` again is
    /// a new attempt. While false, a rolled-back `to` is not retried (no
    /// upgrade/rollback loop).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retry_allowed: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum UpgradeState {
    #[default]
    InProgress,
    RollingBack,
    Succeeded,
    RolledBack,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AddonStatus {
    pub name: String,
    /// SHA-256 of the manifests last applied.
    pub hash: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_at: Option<Time>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ControlPlaneInstanceStatus {
    /// `<component>-<index>`, e.g. `kube-apiserver-0`.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default)]
    pub healthy: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertificateStatus {
    /// Certificate name, e.g. `apiserver`, `ca`, `etcd-member-0-peer`.
    pub name: String,
    pub not_after: Time,
    /// Common name of the CA that signed it (its own for a CA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
}

/// Annotation that forces a certificate rotation when its value changes:
/// `leaves/<anything>` reissues every leaf, `ca/<anything>` also the CAs
/// (`flotilla cluster rotate-certs NAME [--ca]` writes it).
pub const ROTATE_CERTS_ANNOTATION: &str = "kok.flotilla.io/rotate-certs";

/// Label that puts a Machine in a machine pool: `machinePool: NAME` of a
/// HostedCluster's control plane or nodes means the Machines labelled
/// `kok.flotilla.io/machine-pool: NAME`.
pub const MACHINE_POOL_LABEL: &str = "kok.flotilla.io/machine-pool";

impl HostedCluster {
    /// The meta-cluster namespace of the Kubernetes runtime's objects.
    pub fn runtime_namespace(name: &str) -> String {
        format!("kok-{name}")
    }

    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_)
    }
}

impl EtcdCluster {
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    fn schema(crd: &crate::Crd) -> serde_json::Value {
        serde_json::to_value(&crd.spec.versions[0].schema).unwrap()
    }

    #[test]
    fn crds_are_namespaced_with_status_and_printer_columns() {
        for (crd, want) in [
            (EtcdCluster::crd(), &["Members", "Ready", "Leader", "Version", "Phase", "Age"][..]),
            (EtcdBackup::crd(), &["Cluster", "Phase", "Size", "Age"][..]),
            (EtcdRestore::crd(), &["Target", "Phase", "Age"][..]),
            (HostedCluster::crd(), &["Version", "Phase", "Endpoint", "Age"][..]),
        ] {
            assert_eq!(crd.spec.group, GROUP);
            assert_eq!(crd.spec.scope, "Namespaced");
            let v = &crd.spec.versions[0];
            assert!(v.subresources.as_ref().unwrap().status.is_some(), "{}", crd.spec.names.kind);
            let cols: Vec<&str> =
                v.additional_printer_columns.as_ref().unwrap().iter().map(|c| c.name.as_str()).collect();
            for w in want {
                assert!(cols.contains(w), "{}: {cols:?}", crd.spec.names.kind);
            }
        }
    }

    #[test]
    fn member_count_is_an_enum_and_defaults_are_published() {
        let etcd = schema(&EtcdCluster::crd());
        let members = etcd.pointer("/openAPIV3Schema/properties/spec/properties/members").unwrap();
        assert_eq!(members["enum"], serde_json::json!([1, 3, 5]));
        let hc = schema(&HostedCluster::crd());
        let network = hc.pointer("/openAPIV3Schema/properties/spec/properties/network/properties").unwrap();
        assert_eq!(network["serviceCIDR"]["default"], "10.96.0.0/12", "{network}");
        assert_eq!(network["clusterDomain"]["default"], "cluster.local");
        let schedule = etcd
            .pointer("/openAPIV3Schema/properties/spec/properties/backup/properties/schedule/pattern")
            .and_then(|p| p.as_str())
            .unwrap();
        assert!(schedule.contains("{4,5}"), "5 or 6 fields: {schedule}");
        let status = etcd.pointer("/openAPIV3Schema/properties/status/properties").unwrap();
        assert!(status.get("lastScheduledBackup").is_some() && status.get("nextScheduledBackup").is_some());
        let etcd_ref = hc.pointer("/openAPIV3Schema/properties/spec/properties/etcd/oneOf").unwrap();
        assert_eq!(etcd_ref.as_array().unwrap().len(), 2);
    }

    #[test]
    fn sample_hosted_cluster_parses_with_defaults() {
        let yaml = r#"
apiVersion: kok.flotilla.io/v1alpha1
kind: HostedCluster
metadata:
  name: team-a
  namespace: kok
spec:
  version: 1.36.2
  etcd:
    shared:
      clusterRef: shared-etcd
      prefix: /clusters/team-a
  controlPlane:
    replicas: 3
    runtime: Kubernetes
    extraArgs:
      kubeApiserver: ["--v=2"]
  addons:
    - name: coredns
  nodes:
    count: 3
"#;
        let hc: HostedCluster = serde_saphyr::from_str(yaml).unwrap();
        assert_eq!(hc.spec.etcd.resolve(), Some(("shared-etcd", "/clusters/team-a")));
        assert_eq!(hc.spec.control_plane.runtime, Runtime::Kubernetes);
        assert_eq!(hc.spec.control_plane.extra_args.kube_apiserver, ["--v=2"]);
        assert_eq!(hc.spec.network.service_cidr, "10.96.0.0/12");
        assert_eq!(hc.spec.network.cluster_domain, "cluster.local");
        assert_eq!(hc.spec.nodes.as_ref().unwrap().count, 3);
        assert_eq!(HostedCluster::runtime_namespace("team-a"), "kok-team-a");

        let dedicated = HostedEtcd { cluster_ref: Some("e".into()), shared: None };
        assert_eq!(dedicated.resolve(), Some(("e", "/registry")));
        assert_eq!(HostedEtcd::default().resolve(), None);
    }

    #[test]
    fn sample_etcd_objects_parse() {
        let yaml = r#"
apiVersion: kok.flotilla.io/v1alpha1
kind: EtcdCluster
metadata:
  name: shared-etcd
spec:
  members: 3
  version: 3.7.4
  storage:
    dataDir: /var/lib/etcd
    size: 8Gi
  backup:
    schedule: "0 */6 * * *"
    destination:
      machine: m1
      path: /var/backups/etcd
status:
  phase: Running
  leader: shared-etcd-0
  readyMembers: 3
  members:
    - name: shared-etcd-0
      machine: m1
      peerURL: https://10.0.0.1:2380
      clientURL: https://10.0.0.1:2379
      id: 8e9e05c52164694d
      isLearner: false
      healthy: true
      dbSizeBytes: 20480
      version: 3.7.4
"#;
        let etcd: EtcdCluster = serde_saphyr::from_str(yaml).unwrap();
        assert_eq!(etcd.spec.runtime, Runtime::Process);
        assert_eq!(etcd.spec.backup.as_ref().unwrap().retention, 7);
        let status = etcd.status.unwrap();
        assert_eq!(status.members[0].peer_url.as_deref(), Some("https://10.0.0.1:2380"));
        assert_eq!(status.members[0].db_size_bytes, Some(20480));

        let backup: EtcdBackup = serde_saphyr::from_str(
            "apiVersion: kok.flotilla.io/v1alpha1\nkind: EtcdBackup\nmetadata: {name: b1}\n\
             spec: {cluster: shared-etcd, prefix: /clusters/team-a, destination: {machine: m1, path: /b}}\n",
        )
        .unwrap();
        assert_eq!(backup.spec.prefix.as_deref(), Some("/clusters/team-a"));
        let restore: EtcdRestore = serde_saphyr::from_str(
            "apiVersion: kok.flotilla.io/v1alpha1\nkind: EtcdRestore\nmetadata: {name: r1}\n\
             spec: {backup: b1, target: restored}\n",
        )
        .unwrap();
        assert_eq!(restore.spec.target, "restored");
    }

    #[test]
    fn unknown_spec_fields_are_rejected() {
        let err = serde_json::from_value::<HostedClusterSpec>(serde_json::json!({
            "version": "1.36.2", "etcd": {"clusterRef": "e"}, "controlPlan": {}
        }));
        assert!(err.is_err());
    }
}
