//! Real Kubernetes for tests and for `flotilla up`: etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler and hollow (kubemark) nodes, each a
//! real process from the binaries built by `scripts/k8s-binaries.sh`; and
//! real worker nodes (`real_node`: containerd, kubelet, kube-proxy running
//! real containers from local images).
//!
//! Every process is owned by a handle; dropping the handle (or the test
//! process dying, even by SIGKILL) stops it. Ports are allocated free and
//! every cluster has its own directory, so tests run in parallel.

pub mod api_service;
pub mod balanced;
mod binaries;
mod cluster;
mod etcd;
pub mod metrics_server;
pub mod netns;
pub mod ports;
pub mod process;
pub mod real_node;

use std::path::{Path, PathBuf};

pub use binaries::{Binaries, DEFAULT_K8S_VERSION, PREVIOUS_K8S_VERSION};
pub use cluster::{
    node_is_ready, Cluster, ClusterConfig, ClusterInfo, ControllerSet, NodeConfig, ProcessInfo,
};
pub use etcd::Etcd;
pub use process::{ManagedProcess, ProcessSpec};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "Kubernetes binaries not found: {missing} is missing in {dir}. \
         Run scripts/k8s-binaries.sh (or `flotilla up`, which runs it) to build them, \
         or point FLOTILLA_K8S_BIN at a directory that has them"
    )]
    BinariesMissing { dir: PathBuf, missing: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("cannot start {program}: {source}")]
    Spawn { program: PathBuf, source: std::io::Error },
    #[error("{name} exited ({status}); last lines of {log_path}:\n{log_tail}")]
    Exited { name: String, status: String, log_path: PathBuf, log_tail: String },
    #[error("timed out after {seconds}s waiting for {what}{detail}")]
    Timeout { what: String, seconds: u64, detail: String },
    #[error("generating certificates: {0}")]
    Pki(#[from] flotilla_core::pki::PkiError),
    #[error("building a Kubernetes client: {0}")]
    Client(String),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("real nodes: {0}")]
    RealNode(#[from] flotilla_kok_core::real_node::RealNodeError),
}

impl Error {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io { path: path.to_path_buf(), source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The tests' log filter when `RUST_LOG` is unset: errors only, without the
/// client's one ERROR per retry of an apiserver that is starting or already
/// stopped (the tests report what they could not reach themselves), which
/// buried a failure's message under thousands of lines.
pub const TEST_LOG_DIRECTIVES: &str = "error,kube_client::client::builder=off";

/// Polls `check` every 200 ms until it holds; panics (failing the test) with
/// `what` after `timeout`. For tests.
pub async fn wait_for<F, Fut>(what: &str, timeout: std::time::Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + timeout;
    while !check().await {
        assert!(std::time::Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// As [`wait_for`], with `check` saying what it saw when the condition does
/// not hold yet: the last of those is in the panic message, so a timeout in
/// CI says where things stood. For tests.
pub async fn wait_for_state<F, Fut>(what: &str, timeout: std::time::Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<(), String>>,
{
    let deadline = std::time::Instant::now() + timeout;
    while let Err(seen) = check().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}; last seen: {seen}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
