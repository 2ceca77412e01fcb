//! A cluster agent without a member, for the hub-at-scale figures.

use std::time::Duration;

/// A cluster agent without a member: registers with its own certificate,
/// writes a status once and renews its Lease, as a real agent does.
pub async fn simulated_agent(config: flotilla_agent::AgentConfig, lease_seconds: i32) -> anyhow::Result<()> {
    use kube::api::{Patch, PatchParams};
    use serde_json::json;
    // Like a supervised agent process: start over if registration fails.
    let registration = loop {
        match flotilla_agent::register(&config).await {
            Ok(r) => break r,
            Err(e) => {
                tracing::warn!(cluster = %config.cluster, error = %e, "simulated agent registration failed; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    };
    let hub = registration.client;
    let name = config.cluster.clone();
    let clusters: kube::Api<flotilla_api::ManagedCluster> = kube::Api::all(hub.clone());
    let status = json!({"apiVersion": "cluster.flotilla.io/v1alpha1", "kind": "ManagedCluster",
        "status": {"conditions": [{"type": flotilla_api::cluster::conditions::MEMBER_HEALTHY, "status": "True",
            "reason": "Simulated", "message": "simulated",
            "lastTransitionTime": k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now())}],
            "kubernetesVersion": "v1.20.2",
            "nodeSummary": {"total": 3, "ready": 3, "display": "3/3"}}});
    // As the real agent does: a failed write is retried, not fatal.
    while let Err(e) = clusters
        .patch_status(
            &name,
            &PatchParams::apply(flotilla_agent::FIELD_MANAGER).force(),
            &Patch::Apply(&status),
        )
        .await
    {
        tracing::warn!(cluster = %name, error = %e, "simulated agent status write failed; retrying");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let leases: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
        kube::Api::namespaced(hub, &flotilla_api::ManagedCluster::hub_namespace(&name));
    loop {
        let lease = flotilla_fleet_core::membership::heartbeat_lease(
            &name,
            lease_seconds,
            k8s_openapi::jiff::Timestamp::now(),
        );
        let _ = leases
            .patch(
                flotilla_fleet_core::membership::LEASE_NAME,
                &PatchParams::apply(flotilla_agent::FIELD_MANAGER).force(),
                &Patch::Apply(&lease),
            )
            .await;
        tokio::time::sleep(Duration::from_millis(lease_seconds as u64 * 250)).await;
    }
}
