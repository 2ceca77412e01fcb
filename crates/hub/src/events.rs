//! The hub's Event reporters; publishing is `flotilla_metrics::events`,
//! shared with the operators and the node agent.

use kube::runtime::events::{Recorder, Reporter};
use kube::Client;

/// Reporting controller of the fleet controllers' Events on ManagedClusters.
pub const CLUSTER_CONTROLLER: &str = "flotilla-hub";
/// Reporting controller of the binder's Events on bindings.
pub const BINDER_CONTROLLER: &str = "flotilla-binder";
/// Reporting controller of member warnings re-emitted on templates.
pub const MEMBER_EVENTS_CONTROLLER: &str = "flotilla-member-events";

/// A recorder reporting as `controller`.
pub fn recorder(client: Client, controller: &str) -> Recorder {
    Recorder::new(client, Reporter { controller: controller.into(), instance: None })
}

pub use flotilla_metrics::events::publish;
