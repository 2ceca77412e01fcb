//! The member-side agent (pull mode): registers its cluster with the hub,
//! renews a heartbeat Lease in its hub namespace, reports its member's
//! health and inventory on its ManagedCluster's status, and applies the
//! Works in its hub namespace to the member ([`apply`]), and keeps the
//! tunnel through which the hub reaches its member ([`tunnel`]).
//!
//! The same status collection and work applier also run inside the hub for
//! push-mode clusters (see [`collect`], [`apply`]).

pub mod apply;
pub mod collect;
mod config;
mod error;
pub mod member_events;
pub mod pods;
pub mod register;
pub mod tunnel;
pub mod tunnel_io;
pub mod usage;

use std::time::Duration;

use flotilla_api::cluster::ManagedCluster;
use flotilla_fleet_core::membership;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};

pub use config::{AgentConfig, FIELD_MANAGER};
pub use error::Error;
pub use register::{register, Registration};

/// A client for a kubeconfig file, with short timeouts suited to probing.
pub async fn client_from_kubeconfig(path: &std::path::Path) -> Result<(Client, kube::Config), String> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path)
        .map_err(|e| format!("cannot read kubeconfig {}: {e}", path.display()))?;
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .map_err(|e| format!("invalid kubeconfig {}: {e}", path.display()))?;
    config.connect_timeout = Some(Duration::from_secs(3));
    config.read_timeout = Some(Duration::from_secs(15));
    let client =
        Client::try_from(config.clone()).map_err(|e| format!("kubeconfig {}: {e}", path.display()))?;
    Ok((client, config))
}

/// Registers (if needed) and then runs until the cluster is removed from
/// the fleet (then its credentials are deleted) or `shutdown` resolves.
pub async fn run(config: AgentConfig, shutdown: impl std::future::Future<Output = ()>) -> Result<(), Error> {
    flotilla_metrics::serving(config.metrics_addr, run_agent(&config, shutdown)).await?
}

async fn run_agent(
    config: &AgentConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), Error> {
    let (member, member_config) =
        client_from_kubeconfig(&config.member_kubeconfig).await.map_err(Error::Member)?;
    collect::check_member(&member, &member_config).await?;
    // One pod watch for the collector and the applier, kept across
    // re-registrations.
    let pods = pods::MemberPods::start(member.clone());
    // The cluster proxy streams logs and watches: no read timeout.
    let mut proxy_config = member_config.clone();
    proxy_config.read_timeout = None;
    let proxy_member = Client::try_from(proxy_config).map_err(|e| Error::Member(e.to_string()))?;
    tokio::pin!(shutdown);
    let result = loop {
        let registration = register(config).await?;
        let _certificate = flotilla_metrics::register_certificate(flotilla_metrics::ClientCertificate {
            component: "agent",
            name: config.cluster.clone(),
            not_after: registration.not_after,
        });
        tracing::info!(cluster = %config.cluster, "agent running");
        let hub = registration.client.clone();
        let outcome = tokio::select! {
            r = heartbeat(&hub, &config.cluster) => Some(r),
            r = collect::report_status(member.clone(), hub.clone(), config.cluster.clone(), config.health_interval, pods.clone()) => Some(r),
            r = apply::run_applier(hub.clone(), ManagedCluster::hub_namespace(&config.cluster), member.clone(), config.cluster.clone(), pods.clone()) => Some(r),
            r = usage::run_usage_reporter(hub.clone(), ManagedCluster::hub_namespace(&config.cluster), member.clone(), pods.clone(), usage::USAGE_INTERVAL) => Some(r),
            r = member_events::run_member_events(hub.clone(), ManagedCluster::hub_namespace(&config.cluster), member.clone(), pods.clone()) => Some(r),
            r = watch_removal(&hub, &config.cluster) => Some(r),
            r = tunnel::run_tunnel(hub.clone(), config.cluster.clone(), proxy_member.clone()) => Some(r),
            // A renewed certificate: start over with it.
            r = register::renew_before_expiry(config, &registration) => r.err().map(Err),
            () = &mut shutdown => Some(Ok(())),
        };
        if let Some(outcome) = outcome {
            break outcome;
        }
    };
    if let Err(Error::Removed(_)) = &result {
        tracing::warn!(cluster = %config.cluster, "cluster removed from the fleet; deleting the agent's credentials");
        register::forget_credentials(&config.state_dir)?;
    }
    result
}

fn credential_rejected(cluster: &str) -> Error {
    Error::Hub(format!(
        "the hub no longer accepts cluster {cluster}'s certificate (401: expired or revoked); \
         join again with a new bootstrap token"
    ))
}

/// Renews the Lease `cluster-heartbeat` in the cluster's hub namespace every
/// quarter of the lease duration.
async fn heartbeat(hub: &Client, cluster: &str) -> Result<(), Error> {
    let clusters: Api<ManagedCluster> = Api::all(hub.clone());
    let leases: Api<Lease> = Api::namespaced(hub.clone(), &ManagedCluster::hub_namespace(cluster));
    let mut seconds = membership::DEFAULT_LEASE_SECONDS;
    let mut ticks = 0u64;
    loop {
        // Pick up a changed lease duration now and then.
        if ticks.is_multiple_of(20) {
            match clusters.get(cluster).await {
                Ok(mc) => {
                    seconds =
                        mc.spec.lease_duration_seconds.unwrap_or(membership::DEFAULT_LEASE_SECONDS).max(1)
                }
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 403 => {
                    return Err(Error::Removed(cluster.to_string()));
                }
                Err(kube::Error::Api(e)) if e.code == 401 => return Err(credential_rejected(cluster)),
                Err(e) => tracing::warn!(error = %e, "reading the ManagedCluster failed"),
            }
        }
        ticks += 1;
        let lease = membership::heartbeat_lease(
            &membership::agent_user(cluster),
            seconds,
            k8s_openapi::jiff::Timestamp::now(),
        );
        match leases
            .patch(membership::LEASE_NAME, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&lease))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 401 => return Err(credential_rejected(cluster)),
            Err(e) => tracing::warn!(error = %e, "renewing the heartbeat lease failed"),
        }
        tokio::time::sleep(Duration::from_millis((seconds as u64 * 1000 / 4).max(500))).await;
    }
}

/// Returns `Removed` once the cluster's ManagedCluster is deleted or the
/// agent's access to it is revoked. Watches the one object (RBAC allows
/// watching it by name).
async fn watch_removal(hub: &Client, cluster: &str) -> Result<(), Error> {
    use futures::StreamExt;
    use kube::runtime::watcher;
    let clusters: Api<ManagedCluster> = Api::all(hub.clone());
    let config = watcher::Config::default().fields(&format!("metadata.name={cluster}"));
    let mut events = watcher(clusters, config).boxed();
    let mut seen_in_list = false;
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Init) => seen_in_list = false,
            Ok(watcher::Event::InitApply(mc)) | Ok(watcher::Event::Apply(mc)) => {
                seen_in_list = true;
                if mc.metadata.deletion_timestamp.is_some() {
                    return Err(Error::Removed(cluster.to_string()));
                }
            }
            Ok(watcher::Event::InitDone) if !seen_in_list => return Err(Error::Removed(cluster.to_string())),
            Ok(watcher::Event::InitDone) => {}
            Ok(watcher::Event::Delete(_)) => return Err(Error::Removed(cluster.to_string())),
            Err(e) => {
                let code = match &e {
                    watcher::Error::InitialListFailed(kube::Error::Api(s))
                    | watcher::Error::WatchFailed(kube::Error::Api(s)) => s.code,
                    _ => 0,
                };
                if code == 401 {
                    return Err(credential_rejected(cluster));
                }
                let revoked = code == 403;
                if revoked {
                    return Err(Error::Removed(cluster.to_string()));
                }
                tracing::debug!(error = %e, "watching the ManagedCluster failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    Ok(())
}
