//! One shared watch per resource kind (kube-runtime reflectors), however
//! many pages are open: pages read the in-memory stores and get deltas
//! from broadcast channels, so no page ever makes the server poll the
//! apiserver.

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;

use flotilla_api::cluster::ManagedCluster;
use flotilla_api::kok::{EtcdBackup, EtcdCluster, HostedCluster};
use flotilla_api::machine::Machine;
use flotilla_api::rollout::Rollout;
use flotilla_api::work::{ClusterResourceBinding, ResourceBinding, Work};
use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::broadcast;

use crate::view::fleet::{fleet_row, FleetRow};

/// A change of the fleet page's rows, computed (and serialised) once and
/// fanned out to every open fleet page.
#[derive(Debug, Clone)]
pub enum FleetDelta {
    Upsert(Arc<FleetRow>),
    Remove(String),
    /// The watch (re)listed: pages take a fresh snapshot.
    Resync,
}

/// Kinds whose changes the pages other than the fleet refetch on (their
/// JSON is built from the stores, so a refetch costs no apiserver call).
pub mod kinds {
    pub const CLUSTERS: &str = "managedclusters";
    pub const BINDINGS: &str = "bindings";
    pub const WORKS: &str = "works";
    pub const HOSTED: &str = "hostedclusters";
    pub const ETCD: &str = "etcdclusters";
    pub const BACKUPS: &str = "etcdbackups";
    pub const MACHINES: &str = "machines";
    pub const ROLLOUTS: &str = "rollouts";
}

#[derive(Clone)]
pub struct Watches {
    pub clusters: Store<ManagedCluster>,
    pub bindings: Store<ResourceBinding>,
    pub cluster_bindings: Store<ClusterResourceBinding>,
    pub works: Store<Work>,
    pub hosted: Store<HostedCluster>,
    pub etcds: Store<EtcdCluster>,
    pub backups: Store<EtcdBackup>,
    pub machines: Store<Machine>,
    pub rollouts: Store<Rollout>,
    pub fleet: broadcast::Sender<FleetDelta>,
    pub changed: broadcast::Sender<&'static str>,
    tasks: Arc<Vec<tokio::task::AbortHandle>>,
}

impl Watches {
    /// Starts every watch with `client` (the server's own credentials) on
    /// the current Tokio runtime; they run until the runtime stops.
    pub fn start(client: Client) -> Watches {
        // Deltas are small; a page that falls this far behind resyncs.
        let (fleet, _) = broadcast::channel(8192);
        let (changed, _) = broadcast::channel(1024);
        let fleet_tx = fleet.clone();
        let mut tasks = Vec::new();
        let clusters =
            spawn(&mut tasks, Api::all(client.clone()), kinds::CLUSTERS, changed.clone(), move |event| {
                let delta = match event {
                    watcher::Event::Apply(mc) => {
                        FleetDelta::Upsert(Arc::new(fleet_row(mc, Timestamp::now())))
                    }
                    watcher::Event::Delete(mc) => FleetDelta::Remove(mc.name_any()),
                    watcher::Event::InitDone => FleetDelta::Resync,
                    watcher::Event::Init | watcher::Event::InitApply(_) => return,
                };
                // No receiver (no page open) is not an error.
                let _ = fleet_tx.send(delta);
            });
        let bindings = spawn(&mut tasks, Api::all(client.clone()), kinds::BINDINGS, changed.clone(), |_| {});
        Watches {
            clusters,
            bindings,
            cluster_bindings: spawn(
                &mut tasks,
                Api::all(client.clone()),
                kinds::BINDINGS,
                changed.clone(),
                |_| {},
            ),
            works: spawn(&mut tasks, Api::all(client.clone()), kinds::WORKS, changed.clone(), |_| {}),
            hosted: spawn(&mut tasks, Api::all(client.clone()), kinds::HOSTED, changed.clone(), |_| {}),
            etcds: spawn(&mut tasks, Api::all(client.clone()), kinds::ETCD, changed.clone(), |_| {}),
            backups: spawn(&mut tasks, Api::all(client.clone()), kinds::BACKUPS, changed.clone(), |_| {}),
            machines: spawn(&mut tasks, Api::all(client.clone()), kinds::MACHINES, changed.clone(), |_| {}),
            rollouts: spawn(&mut tasks, Api::all(client), kinds::ROLLOUTS, changed.clone(), |_| {}),
            fleet,
            changed,
            tasks: Arc::new(tasks),
        }
    }

    /// Stops every watch (the server is done).
    pub fn stop(&self) {
        for task in self.tasks.iter() {
            task.abort();
        }
    }
}

fn spawn<K>(
    tasks: &mut Vec<tokio::task::AbortHandle>,
    api: Api<K>,
    kind: &'static str,
    changed: broadcast::Sender<&'static str>,
    mut on_event: impl FnMut(&watcher::Event<K>) + Send + 'static,
) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()).default_backoff());
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(event) => {
                    on_event(&event);
                    if matches!(
                        event,
                        watcher::Event::Apply(_) | watcher::Event::Delete(_) | watcher::Event::InitDone
                    ) {
                        let _ = changed.send(kind);
                    }
                }
                // The backoff retries; a kind the server may not read (or
                // whose CRD is missing) just stays empty.
                Err(error) => tracing::warn!(kind, %error, "dashboard watch failed; retrying"),
            }
        }
    });
    tasks.push(task.abort_handle());
    reader
}
