#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The EtcdCluster operator's life cycle against a real hub API server,
//! real node agents and real etcd processes: clusters side by side on the
//! same machines (and the same address), deletion that removes the members
//! and their data, a dead member replaced on a spare machine with the data
//! kept, scaling from one member to three through learners, on-demand
//! backups, and scheduled backups with retention.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use flotilla_api::kok::{
    EtcdBackup, EtcdBackupSchedule, EtcdBackupSpec, EtcdCluster, EtcdClusterPhase, EtcdClusterSpec,
    EtcdClusterStatus, JobPhase, MachinePath,
};
use flotilla_api::machine::Machine;
use flotilla_kok::etcd::EtcdOperator;
use flotilla_kok_core::etcd::{component_name, secret_name, EtcdOperatorConfig};
use flotilla_localkube::{wait_for, Binaries, Cluster};
use flotilla_node_agent::NodeAgentConfig;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::task::AbortHandle;

mod support;

use support::{create_machine, free_range, hub, Cleanup};

const WAIT: Duration = Duration::from_secs(180);
const NS: &str = "kok-test";

/// One test's world: a hub, machines with node agents, the operator.
/// Fields drop in order: the processes go first, the directories last.
struct Env {
    cleanup: Cleanup,
    agents: BTreeMap<String, AbortHandle>,
    hub: Cluster,
    binaries: Binaries,
    dir: tempfile::TempDir,
}

impl Env {
    async fn start() -> Env {
        let hub = hub(NS, WAIT).await;
        Env {
            hub,
            binaries: Binaries::locate().unwrap(),
            dir: tempfile::tempdir().unwrap(),
            agents: BTreeMap::new(),
            cleanup: Cleanup::default(),
        }
    }

    fn client(&self) -> Client {
        self.hub.client()
    }

    fn state_dir(&self, machine: &str) -> PathBuf {
        self.dir.path().join(machine)
    }

    /// A Machine at 127.0.0.1 in `pool`, and its node agent.
    async fn machine(&mut self, name: &str, pool: &str) {
        create_machine(&self.client(), name, pool).await;
        let state_dir = self.state_dir(name);
        self.cleanup.state_dirs.lock().unwrap().push(state_dir.clone());
        let mut config = NodeAgentConfig::new(name, self.hub.kubeconfig_path().to_path_buf(), state_dir);
        config.tick = Duration::from_millis(200);
        config.heartbeat = Duration::from_secs(1);
        config.resync = Duration::from_secs(1);
        let agent = tokio::spawn(flotilla_node_agent::run(config, std::future::pending()));
        self.cleanup.tasks.lock().unwrap().push(agent.abort_handle());
        self.agents.insert(name.to_string(), agent.abort_handle());
    }

    fn operator(&self, member_dead_after: Duration) {
        let base = free_range(40);
        let operator = EtcdOperator {
            plan: EtcdOperatorConfig {
                bin_dir: self.binaries.dir().to_path_buf(),
                ports: base..=base + 39,
                member_dead_after,
                ..Default::default()
            },
            resync: Duration::from_secs(1),
            probe_timeout: Duration::from_secs(2),
            ..Default::default()
        };
        let op = tokio::spawn(flotilla_kok::etcd::run(self.client(), operator));
        self.cleanup.tasks.lock().unwrap().push(op.abort_handle());
    }

    fn clusters(&self) -> Api<EtcdCluster> {
        Api::namespaced(self.client(), NS)
    }

    async fn create_cluster(&self, name: &str, members: i32) {
        let spec = EtcdClusterSpec {
            members,
            version: "3.7.4".into(),
            machine_selector: BTreeMap::from([("pool".to_string(), "etcd".to_string())]),
            ..Default::default()
        };
        self.clusters().create(&PostParams::default(), &EtcdCluster::new(name, spec)).await.unwrap();
    }

    /// Waits until the cluster is Running with `members` healthy voters and
    /// `done` holds of its status; panics with the last status and the
    /// members' logs otherwise.
    async fn wait_running(
        &self,
        name: &str,
        members: i32,
        what: &str,
        done: impl Fn(&EtcdClusterStatus) -> bool,
    ) -> EtcdClusterStatus {
        let clusters = self.clusters();
        let mut last = None;
        let deadline = tokio::time::Instant::now() + WAIT;
        while tokio::time::Instant::now() < deadline {
            let status = clusters.get(name).await.unwrap().status.unwrap_or_default();
            let healthy = status.members.iter().filter(|m| m.healthy && !m.is_learner).count();
            if status.phase == Some(EtcdClusterPhase::Running)
                && status.ready_members == members
                && healthy == status.members.len()
                && done(&status)
            {
                return status;
            }
            last = Some(status);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        panic!("{name}: {what}: never happened; last status {last:#?}\nlogs:\n{}", self.logs(name));
    }

    fn logs(&self, cluster: &str) -> String {
        let dirs = self.cleanup.state_dirs.lock().unwrap().clone();
        support::logs(&dirs, &component_name(NS, cluster), 15)
    }

    /// The cluster's CA and client certificate, written out for etcdctl.
    async fn client_pki(&self, cluster: &str) -> PathBuf {
        let secret = Api::<Secret>::namespaced(self.client(), NS).get(&secret_name(cluster)).await.unwrap();
        let pki = self.dir.path().join(format!("client-pki-{cluster}"));
        std::fs::create_dir_all(&pki).unwrap();
        for key in ["etcd-ca.crt", "client.crt", "client.key"] {
            std::fs::write(pki.join(key), &secret.data.as_ref().unwrap()[key].0).unwrap();
        }
        pki
    }

    /// Runs etcdctl (v3 API) against `endpoint` with the cluster's client
    /// certificate.
    async fn etcdctl(&self, pki: &Path, endpoint: &str, args: &[&str]) -> String {
        let out = tokio::process::Command::new(self.binaries.path("etcdctl"))
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

    /// The pids (with start times) the node agents recorded for a
    /// cluster's component.
    fn recorded(&self, cluster: &str) -> Vec<(u32, u64)> {
        let component = component_name(NS, cluster);
        self.cleanup
            .state_dirs
            .lock()
            .unwrap()
            .iter()
            .flat_map(|d| flotilla_node_agent::State::load(d).unwrap().components)
            .filter(|c| c.name == component)
            .map(|c| (c.pid, c.start_ticks))
            .collect()
    }
}

fn placed(status: &EtcdClusterStatus) -> Vec<(String, String)> {
    status.members.iter().map(|m| (m.name.clone(), m.machine.clone().unwrap_or_default())).collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clusters_share_three_machines_and_deleting_them_removes_members_and_data() {
    let mut env = Env::start().await;
    for m in ["m1", "m2", "m3"] {
        env.machine(m, "etcd").await;
    }
    env.operator(Duration::from_secs(60));
    env.create_cluster("a", 3).await;
    env.create_cluster("b", 3).await;
    let a = env.wait_running("a", 3, "three healthy members", |_| true).await;
    let b = env.wait_running("b", 3, "three healthy members", |_| true).await;
    let on_all = pairs(&[("a-0", "m1"), ("a-1", "m2"), ("a-2", "m3")]);
    assert_eq!(placed(&a), on_all);
    assert_eq!(placed(&b), pairs(&[("b-0", "m1"), ("b-1", "m2"), ("b-2", "m3")]));
    // One address, six members: twelve distinct ports.
    let mut urls: Vec<String> = [&a, &b]
        .iter()
        .flat_map(|s| &s.members)
        .flat_map(|m| [m.client_url.clone().unwrap(), m.peer_url.clone().unwrap()])
        .collect();
    urls.sort();
    urls.dedup();
    assert_eq!(urls.len(), 12, "{urls:?}");

    let (pki_a, pki_b) = (env.client_pki("a").await, env.client_pki("b").await);
    env.etcdctl(&pki_a, &a.client_urls[0], &["put", "/which", "a"]).await;
    env.etcdctl(&pki_b, &b.client_urls[0], &["put", "/which", "b"]).await;
    let read = env.etcdctl(&pki_b, &b.client_urls[2], &["get", "/which", "--print-value-only"]).await;
    assert_eq!(read.trim(), "b", "two clusters, two keyspaces");
    let finalizers = env.clusters().get("a").await.unwrap().metadata.finalizers.unwrap_or_default();
    assert_eq!(finalizers, ["kok.flotilla.io/etcd-members"]);

    // Members keep their data inside their component's working directory.
    let work_dir = |machine: &str, cluster: &str| {
        env.state_dir(machine).join("components").join(component_name(NS, cluster))
    };
    assert!(work_dir("m2", "a").join("data/a-1/member").is_dir());
    let pids_a = env.recorded("a");
    assert_eq!(pids_a.len(), 3);

    // Deleting a: its members stop and their data goes; b runs on.
    env.clusters().delete("a", &DeleteParams::default()).await.unwrap();
    let clusters = env.clusters();
    wait_for("EtcdCluster a to be gone", WAIT, || {
        let clusters = clusters.clone();
        async move { clusters.get_opt("a").await.unwrap().is_none() }
    })
    .await;
    let machine_api: Api<Machine> = Api::all(env.client());
    let (component_a, component_b) = (component_name(NS, "a"), component_name(NS, "b"));
    for m in ["m1", "m2", "m3"] {
        let machine = machine_api.get(m).await.unwrap();
        let spec: Vec<&str> = machine.spec.components.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(spec, [component_b.as_str()], "{m}");
        let reported = machine.status.unwrap().components;
        assert!(!reported.iter().any(|c| c.name == component_a), "{m}: {reported:?}");
        assert!(!work_dir(m, "a").exists(), "{m}: a's working directory (and data) must be gone");
        assert!(work_dir(m, "b").join(format!("data/b-{}", &m[1..].parse::<u32>().unwrap() - 1)).is_dir());
    }
    wait_for("a's etcd processes to be gone", Duration::from_secs(30), || async {
        pids_a.iter().all(|(pid, ticks)| !flotilla_node_agent::process::is_alive(*pid, *ticks))
    })
    .await;
    env.wait_running("b", 3, "b still healthy after a went", |_| true).await;
    let read = env.etcdctl(&pki_b, &b.client_urls[1], &["get", "/which", "--print-value-only"]).await;
    assert_eq!(read.trim(), "b");

    // Deleting b too leaves the Machines empty.
    let pids_b = env.recorded("b");
    env.clusters().delete("b", &DeleteParams::default()).await.unwrap();
    wait_for("EtcdCluster b to be gone", WAIT, || {
        let clusters = clusters.clone();
        async move { clusters.get_opt("b").await.unwrap().is_none() }
    })
    .await;
    for m in ["m1", "m2", "m3"] {
        let machine = machine_api.get(m).await.unwrap();
        assert!(machine.spec.components.is_empty(), "{m}: {:?}", machine.spec.components);
        assert!(!work_dir(m, "b").exists(), "{m}");
    }
    wait_for("b's etcd processes to be gone", Duration::from_secs(30), || async {
        pids_b.iter().all(|(pid, ticks)| !flotilla_node_agent::process::is_alive(*pid, *ticks))
    })
    .await;
    drop(env);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_member_is_replaced_on_a_spare_machine_and_the_data_survives() {
    let mut env = Env::start().await;
    for m in ["m1", "m2", "m3", "m4"] {
        env.machine(m, "etcd").await;
    }
    env.operator(Duration::from_secs(5));
    env.create_cluster("e", 3).await;
    let before = env.wait_running("e", 3, "three healthy members", |_| true).await;
    assert_eq!(placed(&before), pairs(&[("e-0", "m1"), ("e-1", "m2"), ("e-2", "m3")]));
    let pki = env.client_pki("e").await;
    env.etcdctl(&pki, &before.client_urls[0], &["put", "/flotilla/kept", "written-before"]).await;

    // m2 dies: its node agent and its etcd are gone, and so is its Machine.
    env.agents["m2"].abort();
    tokio::time::sleep(Duration::from_millis(300)).await;
    flotilla_node_agent::kill_recorded(&env.state_dir("m2"));
    Api::<Machine>::all(env.client()).delete("m2", &DeleteParams::default()).await.unwrap();

    let after = env
        .wait_running("e", 3, "e-1 replaced by a member on m4", |s| {
            s.members.iter().any(|m| m.machine.as_deref() == Some("m4"))
        })
        .await;
    assert_eq!(placed(&after), pairs(&[("e-0", "m1"), ("e-2", "m3"), ("e-3", "m4")]));
    let new = after.members.iter().find(|m| m.name == "e-3").unwrap();
    let endpoint = new.client_url.clone().unwrap();
    // Read from the new member's own store: the data was replicated to it.
    let read = env
        .etcdctl(&pki, &endpoint, &["get", "/flotilla/kept", "--print-value-only", "--consistency=s"])
        .await;
    assert_eq!(read.trim(), "written-before");
    let list = env.etcdctl(&pki, &endpoint, &["member", "list"]).await;
    assert_eq!(list.lines().count(), 3, "e-1 left the membership: {list}");
    assert!(!list.contains(" e-1,"), "{list}");
    let m4 = Api::<Machine>::all(env.client()).get("m4").await.unwrap();
    let args = &m4.spec.components[0].args;
    assert!(args.contains(&"--initial-cluster-state=existing".to_string()), "{args:?}");
    drop(env);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_member_scales_to_three_through_learners() {
    let mut env = Env::start().await;
    for m in ["m1", "m2", "m3"] {
        env.machine(m, "etcd").await;
    }
    env.operator(Duration::from_secs(60));
    env.create_cluster("s", 1).await;
    let one = env.wait_running("s", 1, "one healthy member", |_| true).await;
    assert_eq!(placed(&one), pairs(&[("s-0", "m1")]));
    let pki = env.client_pki("s").await;
    env.etcdctl(&pki, &one.client_urls[0], &["put", "/flotilla/early", "before-scaling"]).await;

    let patch = json!({"spec": {"members": 3}});
    env.clusters().patch("s", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let three = env.wait_running("s", 3, "three healthy voting members", |_| true).await;
    assert_eq!(placed(&three), pairs(&[("s-0", "m1"), ("s-1", "m2"), ("s-2", "m3")]));
    let last = three.members.iter().find(|m| m.name == "s-2").unwrap().client_url.clone().unwrap();
    let read =
        env.etcdctl(&pki, &last, &["get", "/flotilla/early", "--print-value-only", "--consistency=s"]).await;
    assert_eq!(read.trim(), "before-scaling");
    let list = env.etcdctl(&pki, &last, &["member", "list"]).await;
    assert_eq!(list.lines().count(), 3, "{list}");
    assert!(!list.contains("true"), "no learner left: {list}");
    // Each added member was an Event on the EtcdCluster.
    wait_for("MemberAdded Events for s-1 and s-2", WAIT, || async {
        let events = events_about(&env.client(), "EtcdCluster", "s").await;
        ["s-1", "s-2"].iter().all(|m| {
            events.iter().any(|(t, r, msg)| {
                t == "Normal" && r == "MemberAdded" && msg.contains(&format!("member {m} added"))
            })
        })
    })
    .await;
    let machine_api: Api<Machine> = Api::all(env.client());
    for m in ["m2", "m3"] {
        let args = machine_api.get(m).await.unwrap().spec.components[0].args.clone();
        assert!(args.contains(&"--initial-cluster-state=existing".to_string()), "{m}: {args:?}");
    }
    drop(env);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_on_demand_backup_saves_a_snapshot_on_its_machine_or_says_why_not() {
    let mut env = Env::start().await;
    env.machine("m1", "etcd").await;
    env.operator(Duration::from_secs(60));
    env.create_cluster("k", 1).await;
    let status = env.wait_running("k", 1, "one healthy member", |_| true).await;
    let pki = env.client_pki("k").await;
    env.etcdctl(&pki, &status.client_urls[0], &["put", "/flotilla/backed-up", "yes"]).await;

    let backups: Api<EtcdBackup> = Api::namespaced(env.client(), NS);
    let create = |name: &str, path: &Path| {
        let spec = EtcdBackupSpec {
            cluster: "k".into(),
            prefix: None,
            destination: MachinePath { machine: "m1".into(), path: path.display().to_string() },
        };
        let backups = backups.clone();
        let backup = EtcdBackup::new(name, spec);
        async move { backups.create(&PostParams::default(), &backup).await.unwrap() }
    };
    let finished = |name: &'static str| {
        let backups = backups.clone();
        async move {
            let mut last = None;
            let deadline = tokio::time::Instant::now() + WAIT;
            while tokio::time::Instant::now() < deadline {
                let status = backups.get(name).await.unwrap().status.unwrap_or_default();
                if matches!(status.phase, Some(JobPhase::Succeeded | JobPhase::Failed)) {
                    return status;
                }
                last = Some(status);
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            panic!("backup {name} never finished; last status {last:#?}");
        }
    };
    let dir = env.dir.path().join("backups");
    create("snap", &dir).await;
    let done = finished("snap").await;
    assert_eq!(done.phase, Some(JobPhase::Succeeded), "{done:#?}");
    let path = dir.join("k-snap.db");
    assert_eq!(done.path.as_deref(), Some(path.to_str().unwrap()));
    let on_disk = std::fs::metadata(&path).unwrap().len();
    let size = done.size_bytes.unwrap();
    assert!(size > 0 && on_disk >= u64::try_from(size).unwrap(), "{size} vs {on_disk} bytes on disk");
    assert!(done.revision.unwrap() > 1, "{done:#?}");
    assert_eq!(done.member.as_deref(), Some("k-0"));
    assert!(done.started_at.is_some() && done.completed_at.is_some());

    // A destination that cannot be created: Failed, saying why.
    let blocker = env.dir.path().join("not-a-directory");
    std::fs::write(&blocker, "a file").unwrap();
    create("bad", &blocker.join("sub")).await;
    let failed = finished("bad").await;
    assert_eq!(failed.phase, Some(JobPhase::Failed), "{failed:#?}");
    let message = failed.message.unwrap();
    assert!(message.contains("exited with 1") && message.contains("not-a-directory"), "{message}");

    // Both one-shot components left the Machine; the member stays.
    let machine_api: Api<Machine> = Api::all(env.client());
    wait_for("the snapshot components to leave m1", WAIT, || {
        let machine_api = machine_api.clone();
        async move {
            let m = machine_api.get("m1").await.unwrap();
            let names: Vec<String> = m.spec.components.iter().map(|c| c.name.clone()).collect();
            names == [component_name(NS, "k")]
        }
    })
    .await;
    assert!(path.is_file(), "the snapshot outlives its component");
    // Both outcomes are Events on the EtcdCluster, once each.
    let events = events_about(&env.client(), "EtcdCluster", "k").await;
    let taken: Vec<_> =
        events.iter().filter(|(t, r, m)| t == "Normal" && r == "BackupTaken" && m.contains("snap")).collect();
    assert_eq!(taken.len(), 1, "{events:?}");
    let failed: Vec<_> = events
        .iter()
        .filter(|(t, r, m)| t == "Warning" && r == "BackupFailed" && m.contains("not-a-directory"))
        .collect();
    assert_eq!(failed.len(), 1, "{events:?}");
    drop(env);
}

/// `(type, reason, message)` of the Events about an object in the test namespace.
async fn events_about(client: &Client, kind: &str, name: &str) -> Vec<(String, String, String)> {
    let api: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), NS);
    let params = kube::api::ListParams::default()
        .fields(&format!("involvedObject.kind={kind},involvedObject.name={name}"));
    api.list(&params)
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|e| (e.type_.unwrap_or_default(), e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
        .collect()
}

/// The Succeeded scheduled backups not being deleted, with their files.
fn succeeded(list: &[EtcdBackup]) -> Vec<(String, PathBuf)> {
    list.iter()
        .filter(|b| b.metadata.deletion_timestamp.is_none())
        .filter(|b| b.status.as_ref().and_then(|s| s.phase) == Some(JobPhase::Succeeded))
        .map(|b| (b.name_any(), PathBuf::from(b.status.as_ref().unwrap().path.clone().unwrap())))
        .collect()
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(dir).map(|d| d.map(|e| e.unwrap().path()).collect()).unwrap_or_default();
    files.sort();
    files
}

/// Polls the scheduled backups of cluster `sb` until `check` holds of
/// them; panics with what was seen last.
async fn until(
    backups: &Api<EtcdBackup>,
    dir: &Path,
    what: &str,
    check: impl Fn(&[EtcdBackup]) -> bool,
) -> Vec<EtcdBackup> {
    let params = kube::api::ListParams::default().labels("kok.flotilla.io/backup-schedule=sb");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let list = backups.list(&params).await.unwrap().items;
        if check(&list) {
            return list;
        }
        if tokio::time::Instant::now() > deadline {
            let seen: Vec<_> = list
                .iter()
                .map(|b| (b.name_any(), b.metadata.deletion_timestamp.is_some(), b.status.clone()))
                .collect();
            panic!("{what}: never happened; backups {seen:#?}, files {:?}", files_in(dir));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_backups_keep_the_newest_and_remove_older_ones_with_their_files() {
    let mut env = Env::start().await;
    env.machine("m1", "etcd").await;
    env.operator(Duration::from_secs(60));
    let dir = env.dir.path().join("scheduled");
    let spec = EtcdClusterSpec {
        members: 1,
        version: "3.7.4".into(),
        machine_selector: BTreeMap::from([("pool".to_string(), "etcd".to_string())]),
        backup: Some(EtcdBackupSchedule {
            // Seconds first: every 10 s.
            schedule: "*/10 * * * * *".into(),
            destination: MachinePath { machine: "m1".into(), path: dir.display().to_string() },
            retention: 1,
        }),
        ..Default::default()
    };
    env.clusters().create(&PostParams::default(), &EtcdCluster::new("sb", spec)).await.unwrap();
    let backups: Api<EtcdBackup> = Api::namespaced(env.client(), NS);
    // A tick's backup Succeeds, with its file on m1.
    let list = until(&backups, &dir, "a scheduled backup to succeed", |l| !succeeded(l).is_empty()).await;
    let (first, first_file) = succeeded(&list)[0].clone();
    assert!(first.starts_with("sb-2") && first_file.is_file(), "{first}: {first_file:?}");
    let b = list.iter().find(|b| b.name_any() == first).unwrap();
    assert_eq!(b.finalizers(), ["kok.flotilla.io/snapshot-file"]);
    assert_eq!(b.owner_references()[0].name, "sb");

    // A later tick's backup Succeeds; retention 1 deletes the first, and
    // its file goes before it does.
    let list = until(&backups, &dir, "the first backup to be deleted after a newer one succeeded", |l| {
        !l.iter().any(|b| b.name_any() == first) && succeeded(l).iter().any(|(n, _)| *n != first)
    })
    .await;
    assert!(!first_file.exists(), "{first_file:?} outlived its EtcdBackup");
    assert!(succeeded(&list).len() <= 1, "{:?}", succeeded(&list));

    // A schedule that fires no time soon: whatever was under way finishes
    // and exactly one Succeeded backup, and its file, remain.
    let patch = json!({"spec": {"backup": {"schedule": "0 0 29 2 *"}}});
    env.clusters().patch("sb", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let list = until(&backups, &dir, "retention to settle on one backup and one file", |l| {
        let ok = succeeded(l);
        l.len() == 1 && ok.len() == 1 && files_in(&dir) == [ok[0].1.clone()]
    })
    .await;
    let kept = list[0].name_any();
    // The one-shot snapshot and removal components left m1; the member stays.
    let machine_api: Api<Machine> = Api::all(env.client());
    wait_for("the one-shot components to leave m1", WAIT, || {
        let machine_api = machine_api.clone();
        async move {
            let m = machine_api.get("m1").await.unwrap();
            let names: Vec<String> = m.spec.components.iter().map(|c| c.name.clone()).collect();
            names == [component_name(NS, "sb")]
        }
    })
    .await;
    let clusters = env.clusters();
    let kept_name = kept.clone();
    wait_for("the status to name the kept backup and the next tick", WAIT, || {
        let (clusters, kept) = (clusters.clone(), kept_name.clone());
        async move {
            let c = clusters.get("sb").await.unwrap();
            let status = c.status.clone().unwrap_or_default();
            let valid = c.condition("BackupScheduleValid").is_some_and(|c| c.status == "True");
            valid
                && status.last_scheduled_backup.as_deref() == Some(kept.as_str())
                && status.last_schedule_time.is_some()
                && status.next_scheduled_backup.is_some_and(|t| t.0.to_string().contains("-02-29T00:00:00"))
        }
    })
    .await;

    // An expression that does not parse: said on the cluster, nothing done.
    let patch = json!({"spec": {"backup": {"schedule": "61 * * * *"}}});
    env.clusters().patch("sb", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    wait_for("BackupScheduleValid to turn False", WAIT, || {
        let clusters = clusters.clone();
        async move {
            let c = clusters.get("sb").await.unwrap();
            c.condition("BackupScheduleValid")
                .is_some_and(|c| c.status == "False" && c.message.contains("`61 * * * *`"))
        }
    })
    .await;
    let list = until(&backups, &dir, "the kept backup to stay", |_| true).await;
    let names: Vec<String> = list.iter().map(|b| b.name_any()).collect();
    assert_eq!(names, [kept]);
    drop(env);
}
