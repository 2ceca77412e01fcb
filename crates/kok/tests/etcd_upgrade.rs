#![allow(clippy::unwrap_used, clippy::expect_used)]
//! etcd version changes of a real three-member EtcdCluster, run by the
//! operator through three real node agents: an unknown version is refused,
//! a release that cannot start (learned by the operator while it runs)
//! rolls back and leaves the cluster healthy, 3.6.17 -> 3.7.4 loses no
//! acknowledged write of a client writing throughout, and going back a
//! minor afterwards is refused.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use flotilla_api::kok::{EtcdCluster, EtcdClusterSpec, EtcdClusterStatus, EtcdUpgradeState};
use flotilla_api::machine::{Machine, MachineSpec};
use flotilla_kok::etcd::{client_tls, EtcdOperator};
use flotilla_kok::etcd_writes::{lost_writes, write_until};
use flotilla_kok_core::etcd::{component_name, secret_name, EtcdOperatorConfig};
use flotilla_localkube::{wait_for, Binaries, Cluster, ClusterConfig};
use flotilla_node_agent::NodeAgentConfig;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::task::AbortHandle;

const WAIT: Duration = Duration::from_secs(180);
const NS: &str = "kok-upgrade";

/// On drop (also on panic): the agents and the operator stop first, then
/// every process the agents recorded is killed, if it is still that one.
struct Cleanup {
    state_dirs: Vec<PathBuf>,
    tasks: Mutex<Vec<AbortHandle>>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for t in self.tasks.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            t.abort();
        }
        std::thread::sleep(Duration::from_millis(300));
        for dir in &self.state_dirs {
            flotilla_node_agent::kill_recorded(dir);
        }
    }
}

/// `count` free loopback ports below the ephemeral range, at a random place.
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

/// A bin dir of its own: links to the cached etcd releases, so the test
/// can add a broken one.
fn bin_dir(binaries: &Binaries, dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for name in ["etcd", "etcdctl", "etcdutl", "etcd-3.6.17", "etcdctl-3.6.17", "etcdutl-3.6.17"] {
        std::os::unix::fs::symlink(binaries.dir().join(name), bin.join(name)).unwrap();
    }
    bin
}

fn logs(state_dirs: &[PathBuf], component: &str) -> String {
    state_dirs
        .iter()
        .map(|d| {
            let log =
                std::fs::read_to_string(d.join("logs").join(format!("{component}.log"))).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(12).collect();
            format!("--- {}:\n{}", d.display(), tail.into_iter().rev().collect::<Vec<_>>().join("\n"))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn upgraded(status: &EtcdClusterStatus) -> Option<(&str, &str, &str)> {
    let c = status.conditions.iter().find(|c| c.type_ == "Upgraded")?;
    Some((c.status.as_str(), c.reason.as_str(), c.message.as_str()))
}

/// Every member healthy, voting, reporting `version`, and a leader.
fn all_on(status: &EtcdClusterStatus, version: &str) -> bool {
    status.ready_members == 3
        && status.leader.is_some()
        && status.members.len() == 3
        && status.members.iter().all(|m| m.healthy && !m.is_learner && m.version.as_deref() == Some(version))
}

struct Fixture {
    clusters: Api<EtcdCluster>,
    state_dirs: Vec<PathBuf>,
}

impl Fixture {
    async fn wait(&self, what: &str, done: impl Fn(&EtcdClusterStatus) -> bool) -> EtcdClusterStatus {
        let last = Mutex::new(EtcdClusterStatus::default());
        let outcome = tokio::time::timeout(WAIT, async {
            loop {
                let status = self.clusters.get("e").await.unwrap().status.unwrap_or_default();
                if done(&status) {
                    return status;
                }
                *last.lock().unwrap() = status;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
        .await;
        outcome.unwrap_or_else(|_| {
            panic!(
                "{what}: not reached; last status {:#?}\nlogs:\n{}",
                last.lock().unwrap(),
                logs(&self.state_dirs, &component_name(NS, "e"))
            )
        })
    }

    async fn set_version(&self, version: &str) {
        let patch = json!({"spec": {"version": version}});
        self.clusters.patch("e", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    }
}

async fn member_binaries(client: &Client) -> Vec<String> {
    let component = component_name(NS, "e");
    let mut out: Vec<String> = Api::<Machine>::all(client.clone())
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .iter()
        .flat_map(|m| m.spec.components.iter().filter(|c| c.name == component).map(|c| c.binary.clone()))
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_3_6_to_3_7_under_writes_loses_nothing_and_a_broken_release_rolls_back() {
    let hub = hub().await;
    let client = hub.client();
    let binaries = Binaries::locate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bin = bin_dir(&binaries, dir.path());
    let machines = ["m1", "m2", "m3"];
    let state_dirs: Vec<PathBuf> = machines.iter().map(|m| dir.path().join(m)).collect();
    let cleanup = Cleanup { state_dirs: state_dirs.clone(), tasks: Mutex::new(Vec::new()) };
    for (m, state_dir) in machines.iter().zip(&state_dirs) {
        let mut machine =
            Machine::new(m, MachineSpec { address: Some("127.0.0.1".into()), ..Default::default() });
        machine.metadata.labels = Some(BTreeMap::from([("pool".to_string(), "etcd".to_string())]));
        Api::<Machine>::all(client.clone()).create(&PostParams::default(), &machine).await.unwrap();
        let mut config = NodeAgentConfig::new(*m, hub.kubeconfig_path().to_path_buf(), state_dir.clone());
        config.tick = Duration::from_millis(200);
        config.heartbeat = Duration::from_secs(1);
        config.resync = Duration::from_secs(1);
        let agent = tokio::spawn(flotilla_node_agent::run(config, std::future::pending()));
        cleanup.tasks.lock().unwrap().push(agent.abort_handle());
    }
    let base = free_range(20);
    let snapshots = dir.path().join("snapshots");
    let operator = EtcdOperator {
        plan: EtcdOperatorConfig { bin_dir: bin.clone(), ports: base..=base + 19, ..Default::default() },
        resync: Duration::from_secs(1),
        probe_timeout: Duration::from_secs(2),
        upgrade_member_deadline: Duration::from_secs(15),
        upgrade_snapshot_dir: snapshots.clone(),
        ..Default::default()
    };
    let op = tokio::spawn(flotilla_kok::etcd::run(client.clone(), operator));
    cleanup.tasks.lock().unwrap().push(op.abort_handle());

    let spec = EtcdClusterSpec {
        members: 3,
        version: "3.6.17".into(),
        machine_selector: BTreeMap::from([("pool".to_string(), "etcd".to_string())]),
        ..Default::default()
    };
    let clusters: Api<EtcdCluster> = Api::namespaced(client.clone(), NS);
    clusters.create(&PostParams::default(), &EtcdCluster::new("e", spec)).await.unwrap();
    let f = Fixture { clusters: clusters.clone(), state_dirs: state_dirs.clone() };
    let status = f.wait("three members on 3.6.17", |s| all_on(s, "3.6.17")).await;
    assert_eq!(status.version.as_deref(), Some("3.6.17"));
    assert_eq!(member_binaries(&client).await, vec![bin.join("etcd-3.6.17").display().to_string(); 3]);

    // A version there is no binary for: refused, naming what there is.
    f.set_version("3.9.0").await;
    let refused = f.wait("3.9.0 refused", |s| upgraded(s).is_some_and(|u| u.1 == "UnknownVersion")).await;
    assert!(upgraded(&refused).unwrap().2.contains("it has 3.6.17, 3.7.4"), "{refused:#?}");

    // A release that exits at once, added while the operator runs: the
    // first member moved to it never gets healthy and goes back.
    let broken = bin.join("etcd-3.7.99");
    std::fs::write(&broken, "#!/bin/sh\necho 'broken etcd stand-in' >&2\nexit 3\n").unwrap();
    std::os::unix::fs::PermissionsExt::set_mode(
        &mut std::fs::metadata(&broken).unwrap().permissions(),
        0o755,
    );
    std::fs::set_permissions(&broken, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    f.set_version("3.7.99").await;
    let rolled = f.wait("3.7.99 rolled back", |s| upgraded(s).is_some_and(|u| u.1 == "RolledBack")).await;
    let record = rolled.upgrade.clone().unwrap();
    assert_eq!((record.from.as_str(), record.to.as_str()), ("3.6.17", "3.7.99"));
    assert_eq!(record.state, Some(EtcdUpgradeState::RolledBack));
    let failed = record.failed_member.clone().unwrap();
    assert!(upgraded(&rolled).unwrap().2.contains(&format!("{failed} was not healthy on etcd 3.7.99")));
    assert_ne!(Some(&failed), rolled.leader.as_ref(), "a follower moves first");
    assert!(record.snapshot.is_some(), "the snapshot came first: {record:?}");
    f.wait("healthy on 3.6.17 after the rollback", |s| all_on(s, "3.6.17")).await;
    assert_eq!(member_binaries(&client).await, vec![bin.join("etcd-3.6.17").display().to_string(); 3]);

    // 3.6.17 -> 3.7.4 while a client writes sequential keys throughout.
    let secret = Api::<Secret>::namespaced(client.clone(), NS).get(&secret_name("e")).await.unwrap();
    let data: BTreeMap<String, Vec<u8>> = secret.data.unwrap().into_iter().map(|(k, v)| (k, v.0)).collect();
    let tls = client_tls(&data).unwrap();
    let endpoints = f.wait("client URLs", |s| s.client_urls.len() == 3).await.client_urls;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let writer = tokio::spawn(write_until(
        tls.clone(),
        endpoints.clone(),
        "/upgrade-test/".into(),
        Duration::from_secs(2),
        stopped,
    ));
    tokio::time::sleep(Duration::from_secs(1)).await;
    f.set_version("3.7.4").await;
    let done = f.wait("3.7.4 succeeded", |s| upgraded(s).is_some_and(|u| u.1 == "Succeeded")).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.send(true).unwrap();
    let tally = writer.await.unwrap();
    assert!(tally.acked.len() > 10, "the writer wrote throughout: {tally:?}");
    let lost =
        lost_writes(&tls, &endpoints, "/upgrade-test/", &tally.acked, Duration::from_secs(5)).await.unwrap();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?} of {}", tally.acked.len());

    let record = done.upgrade.clone().unwrap();
    assert_eq!((record.from.as_str(), record.to.as_str()), ("3.6.17", "3.7.4"));
    assert_eq!(record.moved.len(), 3, "{record:?}");
    let (machine, path) = record.snapshot.as_deref().unwrap().split_once(':').unwrap();
    assert!(machines.contains(&machine), "{record:?}");
    assert!(path.starts_with(snapshots.to_str().unwrap()), "{record:?}");
    assert!(std::fs::metadata(path).unwrap().len() > 0, "the snapshot is on disk: {path}");
    let status = f.wait("every member on 3.7.4", |s| all_on(s, "3.7.4")).await;
    assert_eq!(status.version.as_deref(), Some("3.7.4"));
    assert_eq!(member_binaries(&client).await, vec![bin.join("etcd").display().to_string(); 3]);

    // Every member ran 3.7: the cluster version moved, no way back.
    f.set_version("3.6.17").await;
    let refused = f.wait("3.6.17 refused", |s| upgraded(s).is_some_and(|u| u.1 == "Refused")).await;
    assert!(upgraded(&refused).unwrap().2.contains("downgrade across a minor"), "{refused:#?}");
    assert_eq!(member_binaries(&client).await, vec![bin.join("etcd").display().to_string(); 3]);
    drop(cleanup);
}
