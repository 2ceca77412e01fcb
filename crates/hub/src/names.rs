//! Names the hub writes under: its field managers and its own namespace.

/// Field manager for everything the hub writes.
pub const FIELD_MANAGER: &str = "flotilla-hub";
/// Namespace for the hub's own objects (leader lease, push credentials).
pub const SYSTEM_NAMESPACE: &str = "flotilla-system";
/// Field manager for the hub's taints on ManagedCluster specs.
pub const TAINT_FIELD_MANAGER: &str = "flotilla-hub-taints";
