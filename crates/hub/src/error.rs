//! The hub's errors.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("encoding: {0}")]
    Json(#[from] serde_json::Error),
    #[error("timed out waiting for {0}")]
    Timeout(String),
    #[error("{0}")]
    Other(String),
}
