//! The hub: installs Flotilla's resources on a hub API server and runs its
//! controllers (thin: read, call `flotilla-core`, write with server-side
//! apply).

pub mod apps;
pub mod controller;
pub mod install;
pub mod leader;
pub mod machines;
pub mod push;
pub mod webhook;

pub use controller::{run, HubConfig};
pub use install::install;

/// Field manager for everything the hub writes.
pub const FIELD_MANAGER: &str = "flotilla-hub";
/// Namespace for the hub's own objects (leader lease, push credentials).
pub const SYSTEM_NAMESPACE: &str = "flotilla-system";

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
