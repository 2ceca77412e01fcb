//! Waiting for an aggregated API: an APIService is served once the API
//! server reports it `Available` (its endpoint answered discovery).

use std::time::{Duration, Instant};

use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::{Api, Client};

use crate::{Error, Result};

/// Waits until the APIService `name` is `Available`, or `timeout` passes;
/// the error carries its last reason and message.
pub async fn wait_available(client: &Client, name: &str, timeout: Duration) -> Result<()> {
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("apiregistration.k8s.io", "v1", "APIService"),
        "apiservices",
    );
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Ok(found) = api.get(name).await {
            let conditions = found.data["status"]["conditions"].as_array().cloned().unwrap_or_default();
            if let Some(c) = conditions.iter().find(|c| c["type"] == "Available") {
                if c["status"] == "True" {
                    return Ok(());
                }
                last = format!(": {} {}", c["reason"], c["message"]);
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(Error::Timeout {
        what: format!("the APIService {name} to be Available"),
        seconds: timeout.as_secs(),
        detail: last,
    })
}
