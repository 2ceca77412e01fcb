//! Publishing a decision's [`Notice`] (decided in the pure crates, on
//! transitions) as a Kubernetes Event through kube-runtime's recorder, for
//! every process that reports Events (hub, Kube-on-Kube operators, node
//! agent). A failure to record is logged and never fails a reconcile:
//! Events are for people, the status is the record.

use flotilla_core::events::{bounded_note, Notice, Severity};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder};

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
        // The API's limit on an Event's action.
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
