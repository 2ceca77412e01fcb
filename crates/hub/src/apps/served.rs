//! Whether the hub serves a template kind, and when CRDs changed: a watch
//! of a kind whose CRD was deleted stops, and discovery is asked about a
//! missing kind again only when CRDs change (or rarely,
//! `flotilla_apps_core::kind_discovery`), not every round for hours.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::StreamExt;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{GroupVersionKind, PartialObjectMeta};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};

use super::index::lock;
use super::state::Apps;

/// When a CRD last changed on the hub (`None`: not seen yet).
pub(super) type LastCrdChange = Arc<Mutex<Option<Instant>>>;

/// Records every CRD change into `last`, forever.
pub(super) async fn watch_crds(client: Client, last: LastCrdChange) {
    let api: Api<PartialObjectMeta<CustomResourceDefinition>> = Api::all(client);
    let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Apply(_) | Event::Delete(_) | Event::InitDone) => *lock(&last) = Some(Instant::now()),
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "CRD watch error (retrying)"),
        }
    }
}

/// Whether discovery's error says the kind is not served (rather than
/// that discovery failed).
pub(super) fn not_served(error: &kube::Error) -> bool {
    match error {
        kube::Error::Discovery(_) => true,
        kube::Error::Api(e) => e.code == 404,
        _ => false,
    }
}

/// Whether the hub's discovery still serves the kind (a failed discovery
/// counts as served: the caller keeps what it has).
pub(super) async fn still_served(apps: &Apps, api_version: &str, kind: &str) -> bool {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind);
    match kube::discovery::pinned_kind(&apps.client, &gvk).await {
        Ok(_) => true,
        Err(e) => !not_served(&e),
    }
}
