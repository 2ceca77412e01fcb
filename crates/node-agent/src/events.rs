//! Publishing the node agent's Events on its Machine: the [`Notice`]s
//! `kok_core::component_events` decided from the process records before
//! and after a reconcile, through kube-runtime's recorder (one per agent, so
//! a repeated Event becomes a series). The agent's credential may create
//! Events in `default` only, where a cluster-scoped Machine's Events go. A
//! failure to record is logged (`flotilla_metrics::events`), never a
//! reconcile error.

use flotilla_core::events::Notice;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Recorder, Reporter};
use kube::Client;

/// Reporting controller of the node agent's Events.
pub const CONTROLLER: &str = "flotilla-node-agent";

/// A recorder reporting as the node agent of `machine`.
pub fn recorder(client: Client, machine: &str) -> Recorder {
    Recorder::new(client, Reporter { controller: CONTROLLER.into(), instance: Some(machine.into()) })
}

/// Publishes `notices` about the Machine `regarding`.
pub async fn publish(recorder: &Recorder, regarding: &ObjectReference, notices: &[Notice]) {
    for notice in notices {
        flotilla_metrics::events::publish(recorder, regarding, notice).await;
    }
}
