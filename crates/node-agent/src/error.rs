//! The node agent's errors.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Hub(String),
    #[error("Machine {0} was deleted; its components were stopped")]
    Removed(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{path}: {source}")]
    State { path: PathBuf, source: serde_json::Error },
    #[error(transparent)]
    Certificate(#[from] flotilla_csr_client::Error),
    #[error(transparent)]
    Metrics(#[from] flotilla_metrics::Error),
    #[error("{path}: {source}")]
    Archive { path: PathBuf, source: flotilla_kok_core::real_node::extra_images::ArchiveError },
}

pub(crate) fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}
