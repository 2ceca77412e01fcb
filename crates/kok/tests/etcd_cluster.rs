#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The EtcdCluster operator against a real hub API server and three real
//! node agents: three real etcd processes with TLS form one cluster, its
//! status says so, and data written through one member reads back from
//! another.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use flotilla_api::kok::{EtcdCluster, EtcdClusterPhase, EtcdClusterSpec};
use flotilla_api::machine::{Machine, MachineSpec};
use flotilla_kok::etcd::{EtcdOperator, FIELD_MANAGER};
use flotilla_kok_core::etcd::{component_name, secret_name, EtcdOperatorConfig};
use flotilla_localkube::{wait_for, Binaries, Cluster, ClusterConfig};
use flotilla_node_agent::NodeAgentConfig;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::task::AbortHandle;

const WAIT: Duration = Duration::from_secs(120);
const NS: &str = "kok-test";

/// On drop (also when the test panics): stops the node agents and the
/// operator first, so nothing starts etcd again, then kills every process
/// the agents recorded, if it is still that very process.
struct Cleanup {
    state_dirs: Vec<PathBuf>,
    tasks: Mutex<Vec<AbortHandle>>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        for t in tasks.iter() {
            t.abort();
        }
        // An aborted task finishes the poll it is in; give it that moment.
        std::thread::sleep(Duration::from_millis(300));
        for dir in &self.state_dirs {
            flotilla_node_agent::kill_recorded(dir);
        }
    }
}

/// A base port with `count` free ports after it, below the kernel's
/// ephemeral range (32768 and up) so no outgoing connection takes one
/// before a member binds it, and at a random place so tests running at
/// the same time get different ranges.
fn free_range(count: u16) -> u16 {
    use std::hash::{BuildHasher, Hasher};
    loop {
        let mut random = std::collections::hash_map::RandomState::new().build_hasher();
        random.write_u32(std::process::id());
        let base = 20000 + u16::try_from(random.finish() % u64::from(12000 - count)).unwrap();
        if (base..base + count).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()) {
            return base;
        }
    }
}

async fn hub() -> Cluster {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let hub = Cluster::start(ClusterConfig::apiserver_only("hub")).await.unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(hub.client());
    for crd in flotilla_api::crds().into_iter().filter(|c| c.spec.group == "kok.flotilla.io") {
        crds.patch(&crd.name_any(), &PatchParams::apply("test").force(), &Patch::Apply(&crd)).await.unwrap();
    }
    let (machines, clusters): (Api<Machine>, Api<EtcdCluster>) =
        (Api::all(hub.client()), Api::all(hub.client()));
    wait_for("the kok CRDs to be served", WAIT, || {
        let (machines, clusters) = (machines.clone(), clusters.clone());
        async move {
            machines.list(&Default::default()).await.is_ok()
                && clusters.list(&Default::default()).await.is_ok()
        }
    })
    .await;
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}});
    Api::<Namespace>::all(hub.client())
        .patch(NS, &PatchParams::apply("test"), &Patch::Apply(&ns))
        .await
        .unwrap();
    hub
}

async fn create_machine(client: &Client, name: &str, pool: &str) {
    let mut m = Machine::new(name, MachineSpec { address: Some("127.0.0.1".into()), ..Default::default() });
    m.metadata.labels = Some(BTreeMap::from([("pool".to_string(), pool.to_string())]));
    Api::<Machine>::all(client.clone()).create(&PostParams::default(), &m).await.unwrap();
}

/// Runs etcdctl (v3 API) against `endpoint` with the cluster's client
/// certificate.
async fn etcdctl(binaries: &Binaries, pki: &Path, endpoint: &str, args: &[&str]) -> String {
    let out = tokio::process::Command::new(binaries.path("etcdctl"))
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .arg(format!("--cacert={}", pki.join("etcd-ca.crt").display()))
        .arg(format!("--cert={}", pki.join("client.crt").display()))
        .arg(format!("--key={}", pki.join("client.key").display()))
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "etcdctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn logs(state_dirs: &[PathBuf], component: &str) -> String {
    state_dirs
        .iter()
        .map(|d| {
            let log =
                std::fs::read_to_string(d.join("logs").join(format!("{component}.log"))).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            format!("--- {}:\n{}", d.display(), tail.into_iter().rev().collect::<Vec<_>>().join("\n"))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_on_three_machines_form_a_healthy_cluster() {
    let hub = hub().await;
    let client = hub.client();
    let binaries = Binaries::locate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let machines = ["m1", "m2", "m3"];
    let state_dirs: Vec<PathBuf> = machines.iter().map(|m| dir.path().join(m)).collect();
    let cleanup = Cleanup { state_dirs: state_dirs.clone(), tasks: Mutex::new(Vec::new()) };

    for m in machines {
        create_machine(&client, m, "etcd").await;
    }
    // Not selected: it must stay empty.
    create_machine(&client, "w1", "workers").await;
    // Someone else's component on m1: the operator must leave it alone.
    let other = json!({
        "apiVersion": "kok.flotilla.io/v1alpha1", "kind": "Machine", "metadata": {"name": "m1"},
        "spec": {"components": [{"name": "other", "binary": "/bin/sleep", "args": ["300"]}]},
    });
    Api::<Machine>::all(client.clone())
        .patch("m1", &PatchParams::apply("someone-else"), &Patch::Apply(&other))
        .await
        .unwrap();
    for (m, state_dir) in machines.iter().zip(&state_dirs) {
        let mut config = NodeAgentConfig::new(*m, hub.kubeconfig_path().to_path_buf(), state_dir.clone());
        config.tick = Duration::from_millis(200);
        config.heartbeat = Duration::from_secs(1);
        config.resync = Duration::from_secs(1);
        let agent = tokio::spawn(flotilla_node_agent::run(config, std::future::pending()));
        cleanup.tasks.lock().unwrap().push(agent.abort_handle());
    }

    // Three members share 127.0.0.1 here: each gets its own ports from a
    // range no other test uses.
    let base = free_range(20);
    let operator = EtcdOperator {
        plan: EtcdOperatorConfig {
            bin_dir: binaries.dir().to_path_buf(),
            ports: base..=base + 19,
            ..Default::default()
        },
        resync: Duration::from_secs(1),
        probe_timeout: Duration::from_secs(2),
        ..Default::default()
    };
    let op = tokio::spawn(flotilla_kok::etcd::run(client.clone(), operator));
    cleanup.tasks.lock().unwrap().push(op.abort_handle());

    let spec = EtcdClusterSpec {
        members: 3,
        version: "3.7.4".into(),
        machine_selector: BTreeMap::from([("pool".to_string(), "etcd".to_string())]),
        ..Default::default()
    };
    let clusters: Api<EtcdCluster> = Api::namespaced(client.clone(), NS);
    clusters.create(&PostParams::default(), &EtcdCluster::new("e", spec)).await.unwrap();

    let found = Mutex::new(None);
    let running = tokio::time::timeout(WAIT, async {
        loop {
            let c = clusters.get("e").await.unwrap();
            let status = c.status.clone().unwrap_or_default();
            *found.lock().unwrap() = Some(status.clone());
            if status.phase == Some(EtcdClusterPhase::Running) {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
    .await;
    let component = component_name(NS, "e");
    let Ok(status) = running else {
        panic!(
            "the cluster never ran; last status {:#?}\nlogs:\n{}",
            found.lock().unwrap(),
            logs(&state_dirs, &component)
        );
    };

    // Status: three healthy voting members, one per machine, and a leader.
    assert_eq!(status.ready_members, 3, "{status:#?}");
    let leader = status.leader.clone().unwrap();
    assert!(status.members.iter().any(|m| m.name == leader), "{status:#?}");
    let placed: Vec<(&str, &str)> =
        status.members.iter().map(|m| (m.name.as_str(), m.machine.as_deref().unwrap())).collect();
    assert_eq!(placed, [("e-0", "m1"), ("e-1", "m2"), ("e-2", "m3")]);
    for m in &status.members {
        assert!(m.healthy && !m.is_learner, "{m:?}");
        assert!(m.id.is_some() && m.db_size_bytes.unwrap() > 0, "{m:?}");
        assert!(m.version.as_deref().unwrap().starts_with("3.7."), "{m:?}");
    }
    assert_eq!(status.client_urls.len(), 3);
    assert_eq!(status.client_secret.as_deref(), Some(secret_name("e").as_str()));
    let available = status.conditions.iter().find(|c| c.type_ == "Available").unwrap();
    assert_eq!(available.status, "True");

    // The Machines: one component each, written by this cluster's manager;
    // the machine outside the selector got nothing.
    let machine_api: Api<Machine> = Api::all(client.clone());
    for m in machines {
        let spec = machine_api.get(m).await.unwrap().spec;
        let mut names: Vec<&str> = spec.components.iter().map(|c| c.name.as_str()).collect();
        names.sort();
        let want = if m == "m1" { vec![component.as_str(), "other"] } else { vec![component.as_str()] };
        assert_eq!(names, want, "{m}");
    }
    assert!(machine_api.get("w1").await.unwrap().spec.components.is_empty());

    // Real data: written through one member, read through another, with the
    // client certificate from the cluster's Secret.
    let secret = Api::<Secret>::namespaced(client.clone(), NS).get(&secret_name("e")).await.unwrap();
    let owner = &secret.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(owner.kind, "EtcdCluster");
    assert!(secret
        .metadata
        .managed_fields
        .unwrap()
        .iter()
        .any(|f| f.manager.as_deref() == Some(FIELD_MANAGER)));
    let pki = dir.path().join("client-pki");
    std::fs::create_dir_all(&pki).unwrap();
    for key in ["etcd-ca.crt", "client.crt", "client.key"] {
        std::fs::write(pki.join(key), &secret.data.as_ref().unwrap()[key].0).unwrap();
    }
    let urls = &status.client_urls;
    etcdctl(&binaries, &pki, &urls[0], &["put", "/flotilla/hello", "from-e-0"]).await;
    let read = etcdctl(&binaries, &pki, &urls[2], &["get", "/flotilla/hello", "--print-value-only"]).await;
    assert_eq!(read.trim(), "from-e-0");
    let list = etcdctl(&binaries, &pki, &urls[1], &["member", "list"]).await;
    assert_eq!(list.lines().count(), 3, "{list}");

    drop(cleanup);
    let records: Vec<_> =
        state_dirs.iter().flat_map(|d| flotilla_node_agent::State::load(d).unwrap().components).collect();
    assert_eq!(records.len(), 4, "three etcd members and the other component were recorded");
    // SIGKILL is delivered asynchronously: wait for it to take effect.
    wait_for("every component process to be gone", Duration::from_secs(10), || async {
        records.iter().all(|c| !flotilla_node_agent::process::is_alive(c.pid, c.start_ticks))
    })
    .await;
}
