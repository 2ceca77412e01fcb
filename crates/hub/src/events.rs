//! Publishing the hub's Events: a decision's [`Notice`] (decided in the
//! pure crates, on transitions) through kube-runtime's recorder. A failure
//! to record is logged and never fails a reconcile: Events are for people,
//! the status is the record.

use flotilla_core::events::{bounded_note, Notice, Severity};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
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

/// Publishes `notice` about the object `regarding` (cluster-scoped objects'
/// Events go to `default`).
pub async fn publish(recorder: &Recorder, regarding: &ObjectReference, notice: &Notice) {
    let event = Event {
        type_: match notice.severity {
            Severity::Normal => EventType::Normal,
            Severity::Warning => EventType::Warning,
        },
        reason: notice.reason.clone(),
        note: Some(bounded_note(&notice.message)),
        action: notice.action.chars().take(128).collect(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, regarding).await {
        tracing::debug!(
            kind = regarding.kind.as_deref().unwrap_or_default(),
            name = regarding.name.as_deref().unwrap_or_default(),
            reason = %notice.reason,
            error = %e,
            "could not record an event"
        );
    }
}
