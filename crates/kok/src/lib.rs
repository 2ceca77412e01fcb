//! Kubernetes on Kubernetes operators (thin I/O around `flotilla_kok_core`):
//! the EtcdCluster operator, the HostedCluster operator, the Kubernetes
//! runtime of hosted control planes, and `kubelet-join`.

pub mod etcd;
pub mod etcd_backup;
pub mod etcd_keys;
mod etcd_kube;
pub mod etcd_restore;
mod etcd_schedule;
pub mod hosted;
mod hosted_kube;
pub mod kube_runtime;
pub mod kubelet_join;

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
}
