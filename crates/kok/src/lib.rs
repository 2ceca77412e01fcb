//! Kubernetes on Kubernetes operators (thin I/O around `flotilla_kok_core`):
//! the EtcdCluster operator, the HostedCluster operator, the Kubernetes
//! runtime of hosted control planes, and `kubelet-join`.
//!
//! Controllers (`etcd`, `etcd_kube`, `etcd_backup`, `etcd_restore`,
//! `hosted`, `hosted_kube`) depend on the shared modules and never on each
//! other's internals: `etcd_operator` (the etcd controllers' configuration,
//! Secret read and status write), `etcd_client` (TLS and member requests),
//! `machine_components` (one-shot components on Machines),
//! `hosted_operator` (both hosted runtimes' configuration, Secrets, etcd
//! gate, certificates and status write), `hosted_addons` (inside a hosted
//! cluster) and `finalizing` (kube-runtime's finalizer helper). The one
//! arrow between controllers is dispatch: `etcd` starts the backup and
//! restore controllers and hands `Kubernetes`-runtime clusters to
//! `etcd_kube`; `hosted` hands them to `hosted_kube`.

pub mod catalog;
pub mod etcd;
pub mod etcd_backup;
pub mod etcd_client;
pub mod etcd_keys;
mod etcd_kube;
pub mod etcd_operator;
pub mod etcd_restore;
mod etcd_schedule;
mod etcd_upgrade;
pub mod etcd_writes;
mod events;
mod finalizing;
pub mod hosted;
pub mod hosted_addons;
mod hosted_kube;
pub mod hosted_operator;
pub mod kube_runtime;
pub mod kubelet_join;
mod machine_components;
mod metrics;
pub mod node_pool;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("encoding: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{0}")]
    Plan(#[from] flotilla_kok_core::etcd::EtcdPlanError),
    #[error("kubernetes runtime: {0}")]
    KubeRuntime(#[from] flotilla_kok_core::kube_runtime::KubeRuntimeError),
    #[error("{0}")]
    Other(String),
    /// A deletion's cleanup waits for something (components to stop, a
    /// namespace to go): the finalizer stays, and the object is looked at
    /// again after `after`.
    #[error("cleanup waits for {waiting_for}")]
    CleanupPending { after: std::time::Duration, waiting_for: String },
}
