//! Whether the hub still serves a template kind: a watch of a kind whose
//! CRD was deleted stops instead of retrying `404 page not found` forever.

use kube::api::GroupVersionKind;

use super::state::Apps;

/// Whether the hub's discovery still serves the kind (an error other than
/// "not found" counts as served: the watch keeps retrying).
pub(super) async fn still_served(apps: &Apps, api_version: &str, kind: &str) -> bool {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind);
    match kube::discovery::pinned_kind(&apps.client, &gvk).await {
        Ok(_) => true,
        Err(kube::Error::Discovery(_)) => false,
        Err(kube::Error::Api(e)) => e.code != 404,
        Err(_) => true,
    }
}

