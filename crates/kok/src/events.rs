//! Publishing the operators' Events: a decision's [`Notice`] (decided in
//! `kok_core::events`, on status transitions) through kube-runtime's
//! recorder. A failure to record is logged, never a reconcile error.

use flotilla_core::events::{bounded_note, Notice, Severity};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::Client;

/// Publishes `notices` about `regarding`, reporting as `controller`.
pub(crate) async fn publish(
    client: &Client,
    controller: &str,
    regarding: &ObjectReference,
    notices: &[Notice],
) {
    if notices.is_empty() {
        return;
    }
    let recorder = Recorder::new(client.clone(), Reporter { controller: controller.into(), instance: None });
    for notice in notices {
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
                name = regarding.name.as_deref().unwrap_or_default(),
                reason = %notice.reason,
                error = %e,
                "could not record an event"
            );
        }
    }
}
