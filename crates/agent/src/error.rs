//! The agent's errors.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Hub(String),
    #[error("{0}")]
    Member(String),
    #[error("cluster {0} was removed from the fleet (its ManagedCluster is gone or the agent's access was revoked)")]
    Removed(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("encoding: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{0}")]
    Other(String),
    #[error(transparent)]
    Certificate(#[from] flotilla_csr_client::Error),
    #[error(transparent)]
    Metrics(#[from] flotilla_metrics::Error),
}
