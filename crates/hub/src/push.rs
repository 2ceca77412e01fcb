//! Push mode: for clusters where no agent can run, the hub holds the
//! member's kubeconfig (a Secret, key `kubeconfig`) and plays the agent's
//! part itself: it renews the cluster's heartbeat while it can reach the
//! member, reports the member's health and inventory, and applies the
//! cluster's Works to it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use flotilla_api::cluster::{ManagedCluster, SyncMode};
use flotilla_fleet_core::membership;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use tokio::sync::Notify;

use crate::error::Error;

/// Key of the member kubeconfig in a push cluster's Secret.
pub const KUBECONFIG_KEY: &str = "kubeconfig";

/// A reporter task, stopped when its handle is dropped (so dropping
/// [`run`]'s future, as a leader that steps down does, stops them all).
struct Reporter(tokio::task::JoinHandle<()>);

impl Drop for Reporter {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How often the reporters are looked over without a ManagedCluster
/// change (to restart one that stopped).
const RESCAN: Duration = Duration::from_secs(3);

/// Keeps one reporter task per accepted push cluster, starting and stopping
/// them as ManagedClusters come and go: at once on a change of the cache
/// (`changed`, signalled by its watch), and every [`RESCAN`]. Runs until
/// its future is dropped.
pub async fn run(
    hub: Client,
    clusters: kube::runtime::reflector::Store<ManagedCluster>,
    changed: Arc<Notify>,
) -> Result<(), Error> {
    let mut running: HashMap<String, (String, Reporter)> = HashMap::new();
    clusters.wait_until_ready().await.map_err(|e| Error::Other(e.to_string()))?;
    loop {
        let mut wanted = HashMap::new();
        for mc in clusters.state() {
            if mc.spec.sync_mode != SyncMode::Push
                || !mc.spec.hub_accepts_client
                || mc.metadata.deletion_timestamp.is_some()
            {
                continue;
            }
            let Some(secret_ref) = mc.spec.secret_ref.clone() else { continue };
            // Restart the reporter when the credential reference changes.
            let version = format!("{}/{}", secret_ref.namespace, secret_ref.name);
            wanted.insert(mc.name_any(), (version, secret_ref));
        }
        running.retain(|name, (version, task)| {
            // Dropping a reporter that is not kept stops it.
            wanted.get(name).is_some_and(|(v, _)| v == version) && !task.0.is_finished()
        });
        for (name, (version, secret_ref)) in wanted {
            if running.contains_key(&name) {
                continue;
            }
            let hub = hub.clone();
            let task_name = name.clone();
            let task = tokio::spawn(async move {
                if let Err(e) = report(hub, &task_name, &secret_ref.namespace, &secret_ref.name).await {
                    tracing::warn!(cluster = %task_name, error = %e, "push-mode reporting stopped; will retry");
                }
            });
            running.insert(name, (version, Reporter(task)));
        }
        tokio::select! {
            () = changed.notified() => {}
            () = tokio::time::sleep(RESCAN) => {}
        }
    }
}

pub(crate) async fn member_client(hub: &Client, namespace: &str, name: &str) -> Result<Client, Error> {
    let mut config = member_config(hub, namespace, name).await?;
    config.connect_timeout = Some(Duration::from_secs(3));
    config.read_timeout = Some(Duration::from_secs(15));
    Client::try_from(config).map_err(Error::Kube)
}

/// The member's client configuration from its push Secret (no timeouts
/// set: the cluster proxy streams logs and watches through it).
pub(crate) async fn member_config(hub: &Client, namespace: &str, name: &str) -> Result<kube::Config, Error> {
    let secret = Api::<Secret>::namespaced(hub.clone(), namespace).get(name).await?;
    let data =
        secret.data.as_ref().and_then(|d| d.get(KUBECONFIG_KEY)).ok_or_else(|| {
            Error::Other(format!("Secret {namespace}/{name} has no `{KUBECONFIG_KEY}` key"))
        })?;
    let text = String::from_utf8(data.0.clone()).map_err(|e| Error::Other(e.to_string()))?;
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&text).map_err(|e| Error::Other(e.to_string()))?;
    kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .map_err(|e| Error::Other(e.to_string()))
}

async fn report(hub: Client, cluster: &str, namespace: &str, secret: &str) -> Result<(), Error> {
    let member = member_client(&hub, namespace, secret).await?;
    let pods = flotilla_agent::pods::MemberPods::start(member.clone());
    tokio::select! {
        r = flotilla_agent::collect::report_status(member.clone(), hub.clone(), cluster.to_string(), Duration::from_secs(2), pods.clone()) => {
            r.map_err(|e| Error::Other(e.to_string()))
        }
        r = heartbeat_while_reachable(&hub, &member, cluster) => r,
        r = flotilla_agent::apply::run_applier(hub.clone(), ManagedCluster::hub_namespace(cluster), member.clone(), cluster.to_string(), pods.clone()) => {
            r.map_err(|e| Error::Other(e.to_string()))
        }
        r = flotilla_agent::usage::run_usage_reporter(hub.clone(), ManagedCluster::hub_namespace(cluster), member.clone(), pods.clone(), flotilla_agent::usage::USAGE_INTERVAL) => {
            r.map_err(|e| Error::Other(e.to_string()))
        }
        r = flotilla_agent::member_events::run_member_events(hub.clone(), ManagedCluster::hub_namespace(cluster), member.clone(), pods.clone()) => {
            r.map_err(|e| Error::Other(e.to_string()))
        }
    }
}

/// How often a push cluster's heartbeat is renewed.
const HEARTBEAT_EVERY: Duration = Duration::from_millis(2500);
/// The first retry of a renewal the hub refused: a new cluster's reporter
/// starts before the health controller made its namespace, and its first
/// heartbeat is what makes it Available.
const HEARTBEAT_RETRY: Duration = Duration::from_millis(200);

/// Renews the cluster's Lease whenever the member's API answers at all (a
/// member that answers but is unhealthy is False, not Unknown). A renewal
/// that failed is tried again soon, then less often (doubling up to the
/// heartbeat's pace).
async fn heartbeat_while_reachable(hub: &Client, member: &Client, cluster: &str) -> Result<(), Error> {
    let leases: Api<Lease> = Api::namespaced(hub.clone(), &ManagedCluster::hub_namespace(cluster));
    let mut retry = HEARTBEAT_RETRY;
    loop {
        let reachable = match flotilla_agent::collect::probe(member).await {
            Ok(()) => true,
            Err(message) => message.starts_with("/readyz answered") || message.contains("failed: 5"),
        };
        if reachable {
            let lease = membership::heartbeat_lease(
                "flotilla-hub",
                membership::DEFAULT_LEASE_SECONDS,
                k8s_openapi::jiff::Timestamp::now(),
            );
            match leases
                .patch(
                    membership::LEASE_NAME,
                    &PatchParams::apply("flotilla-hub-push").force(),
                    &Patch::Apply(&lease),
                )
                .await
            {
                Ok(_) => retry = HEARTBEAT_RETRY,
                Err(e) => {
                    // Its namespace not made yet (404) is expected for a moment.
                    let expected = matches!(&e, kube::Error::Api(s) if s.code == 404);
                    if !expected || retry >= HEARTBEAT_EVERY {
                        tracing::warn!(cluster, error = %e, "renewing a push cluster's heartbeat failed");
                    }
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(HEARTBEAT_EVERY);
                    continue;
                }
            }
        }
        tokio::time::sleep(HEARTBEAT_EVERY).await;
    }
}
