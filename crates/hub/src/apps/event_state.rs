//! What the application controllers keep for their Events (`apps::events`):
//! the recorders, what was last seen of each Work's member warnings, and
//! the queue to the task that publishes them.

use std::collections::HashMap;
use std::sync::Mutex;

use flotilla_api::work::MemberWarning;
use flotilla_core::events::Notice;
use futures::channel::mpsc;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::Recorder;
use kube::Client;

use crate::events::{recorder, BINDER_CONTROLLER, MEMBER_EVENTS_CONTROLLER};

/// One Event to publish, off the watch loop.
pub(super) type Outgoing = (ObjectReference, Notice);

pub(crate) struct AppEvents {
    pub(super) binder: Recorder,
    pub(super) members: Recorder,
    /// What was last seen of each Work's member warnings (namespace/name).
    pub(super) seen: Mutex<HashMap<String, Vec<MemberWarning>>>,
    pub(super) outgoing: mpsc::UnboundedSender<Outgoing>,
}

impl AppEvents {
    pub(super) fn new(client: Client) -> (Self, mpsc::UnboundedReceiver<Outgoing>) {
        let (outgoing, rx) = mpsc::unbounded();
        let events = AppEvents {
            binder: recorder(client.clone(), BINDER_CONTROLLER),
            members: recorder(client, MEMBER_EVENTS_CONTROLLER),
            seen: Mutex::default(),
            outgoing,
        };
        (events, rx)
    }
}
