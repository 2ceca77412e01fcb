//! Publishing the operators' Events: a decision's [`Notice`] (decided in
//! `kok_core::events`, on status transitions) through kube-runtime's
//! recorder. A failure to record is logged, never a reconcile error.

use flotilla_core::events::Notice;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Recorder, Reporter};
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
        flotilla_metrics::events::publish(&recorder, regarding, notice).await;
    }
}
