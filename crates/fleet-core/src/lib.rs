//! Pure decisions of fleet membership: registration and certificate
//! requests, heartbeats and leases, cluster conditions and taints, inventory.
//! No I/O: the hub and the agent observe, then ask here what to do.

pub mod bootstrap_token;
pub mod cluster_events;
pub mod cluster_proxy;
pub mod condition_history;
pub mod fleet_metrics;
pub mod membership;
pub mod taint_owner;
pub mod tunnel;
