//! What the etcd operator's integration tests share: a hub API server
//! serving the kok CRDs, free port ranges, node-agent logs, and cleanup of
//! every process the node agents started.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use flotilla_api::kok::EtcdCluster;
use flotilla_api::machine::{Machine, MachineSpec};
use flotilla_localkube::{wait_for, Cluster, ClusterConfig};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::task::AbortHandle;

/// On drop (also when the test panics): stops the node agents and the
/// operator first, so nothing starts etcd again, then kills every process
/// the agents recorded, if it is still that very process.
#[derive(Default)]
pub struct Cleanup {
    pub state_dirs: Mutex<Vec<PathBuf>>,
    pub tasks: Mutex<Vec<AbortHandle>>,
}

impl Cleanup {
    pub fn new(state_dirs: Vec<PathBuf>) -> Self {
        Cleanup { state_dirs: Mutex::new(state_dirs), tasks: Mutex::new(Vec::new()) }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for t in self.tasks.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            t.abort();
        }
        // An aborted task finishes the poll it is in; give it that moment.
        std::thread::sleep(Duration::from_millis(300));
        for dir in self.state_dirs.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            flotilla_node_agent::kill_recorded(dir);
        }
    }
}

/// A base port with `count` free ports after it, below the kernel's
/// ephemeral range (32768 and up) so no outgoing connection takes one
/// before a member binds it, and at a random place so tests running at
/// the same time get different ranges.
pub fn free_range(count: u16) -> u16 {
    flotilla_localkube::ports::free_range(count).unwrap()
}

/// A hub API server serving the kok CRDs, with the namespace `ns`.
pub async fn hub(ns: &str, wait: Duration) -> Cluster {
    let _ =
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(flotilla_localkube::TEST_LOG_DIRECTIVES)
            }))
            .with_test_writer()
            .try_init();
    let hub = Cluster::start(ClusterConfig::apiserver_only("hub")).await.unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(hub.client());
    for crd in flotilla_api::crds().into_iter().filter(|c| c.spec.group == "kok.flotilla.io") {
        crds.patch(&crd.name_any(), &PatchParams::apply("test").force(), &Patch::Apply(&crd)).await.unwrap();
    }
    let (machines, clusters): (Api<Machine>, Api<EtcdCluster>) =
        (Api::all(hub.client()), Api::all(hub.client()));
    wait_for("the kok CRDs to be served", wait, || {
        let (machines, clusters) = (machines.clone(), clusters.clone());
        async move {
            machines.list(&Default::default()).await.is_ok()
                && clusters.list(&Default::default()).await.is_ok()
        }
    })
    .await;
    let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
    Api::<Namespace>::all(hub.client())
        .patch(ns, &PatchParams::apply("test"), &Patch::Apply(&namespace))
        .await
        .unwrap();
    hub
}

/// A Machine on loopback in `pool`.
pub async fn create_machine(client: &Client, name: &str, pool: &str) {
    let mut m = Machine::new(name, MachineSpec { address: Some("127.0.0.1".into()), ..Default::default() });
    m.metadata.labels = Some(BTreeMap::from([("pool".to_string(), pool.to_string())]));
    Api::<Machine>::all(client.clone()).create(&PostParams::default(), &m).await.unwrap();
}

/// The last `lines` lines of `component`'s log on each node agent.
pub fn logs(state_dirs: &[PathBuf], component: &str, lines: usize) -> String {
    state_dirs
        .iter()
        .map(|d| {
            let log =
                std::fs::read_to_string(d.join("logs").join(format!("{component}.log"))).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(lines).collect();
            format!("--- {}:\n{}", d.display(), tail.into_iter().rev().collect::<Vec<_>>().join("\n"))
        })
        .collect::<Vec<_>>()
        .join("\n")
}
