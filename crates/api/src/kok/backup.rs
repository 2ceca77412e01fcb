//! `EtcdBackup` and `EtcdRestore`: an etcd cluster's snapshots and the
//! restores from them (re-exported by `kok`, whose types they share).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{EtcdClusterSpec, MachinePath};

// ---------------------------------------------------------------- EtcdBackup

/// A snapshot of an EtcdCluster taken once (created by hand, by `flotilla
/// etcd backup`, or by the cluster's backup schedule).
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kok.flotilla.io",
    version = "v1alpha1",
    kind = "EtcdBackup",
    plural = "etcdbackups",
    namespaced,
    status = "EtcdBackupStatus",
    printcolumn = r#"{"name":"Cluster","type":"string","jsonPath":".spec.cluster"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Size","type":"integer","jsonPath":".status.sizeBytes"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EtcdBackupSpec {
    /// Name of the EtcdCluster (same namespace).
    #[schemars(length(min = 1))]
    pub cluster: String,
    /// Only keys under this prefix (one hosted cluster of a shared etcd,
    /// its `spec.etcd.shared.prefix`); the whole keyspace when absent. A
    /// prefixed backup is a key dump, not a snapshot file:
    /// `<destination>/<cluster>-<name>.keys.json`, every key read at one
    /// revision, written by `flotilla etcd-keys dump` on the destination
    /// machine; the status message gives the key count. A plain byte
    /// prefix: `/clusters/a` also covers `/clusters/ab/…`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^/"))]
    pub prefix: Option<String>,
    /// Directory the snapshot is written to.
    pub destination: MachinePath,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum JobPhase {
    Pending,
    Running,
    Succeeded,
    Failed,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EtcdBackupStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<JobPhase>,
    /// Full path of the snapshot file on the destination machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<i64>,
    /// etcd revision the snapshot was taken at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
    /// Member the snapshot was taken from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
    /// Why it failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

// ---------------------------------------------------------------- EtcdRestore

/// Restores a snapshot into a new EtcdCluster (never into a running one),
/// or a prefixed backup (one tenant's keys) into an existing EtcdCluster
/// whose prefix is empty.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kok.flotilla.io",
    version = "v1alpha1",
    kind = "EtcdRestore",
    plural = "etcdrestores",
    namespaced,
    status = "EtcdRestoreStatus",
    printcolumn = r#"{"name":"Target","type":"string","jsonPath":".spec.target"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EtcdRestoreSpec {
    /// Name of a Succeeded EtcdBackup (same namespace). Exactly one of
    /// `backup` and `snapshot` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<String>,
    /// A snapshot file on a machine (`path` is the file, not a directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<MachinePath>,
    /// Name of the EtcdCluster to create; it must not exist yet. For a
    /// prefixed backup (`EtcdBackup.spec.prefix`), the opposite: the
    /// EXISTING EtcdCluster to load the keys into, typically the shared
    /// one the backup was taken from, in which the prefix must be empty
    /// (stop that tenant's API server and delete its keys first). The load
    /// is refused when keys under the prefix differ from the backup's, so
    /// a live tenant is never overwritten; keys that already hold the
    /// backup's values (what an interrupted restore leaves) are kept, so a
    /// new restore finishes an interrupted one.
    #[schemars(length(min = 1, max = 63))]
    pub target: String,
    /// Spec of the new cluster; by default the backed-up cluster's spec
    /// (required with `snapshot`; not allowed with a prefixed backup).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<EtcdClusterSpec>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EtcdRestoreStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<JobPhase>,
    /// Revision of the restored snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
    /// Why it failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
