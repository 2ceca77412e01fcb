#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `flotilla cluster create | kubeconfig | get | delete` as a user runs
//! them, against a real hub with `flotilla hub run` and two real node
//! agents: the created cluster answers kubectl with a Ready node, and
//! deleting it leaves nothing of it on the Machines; a cluster asking for
//! three etcd members on the two Machines makes `create` fail early with
//! the NotEnoughMachines message whole.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use flotilla_api::kok::{EtcdCluster, HostedCluster};
use flotilla_api::machine::{Machine, MachineSpec};
use flotilla_kok_core::hosted::{
    admin_secret_name, bootstrap_secret_name, parse_component_name, pki_secret_name,
};
use flotilla_localkube::{wait_for, Binaries, Cluster, ClusterConfig, ManagedProcess, ProcessSpec};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client, ResourceExt};

const MACHINES: [&str; 2] = ["m1", "m2"];

/// The processes the test starts. On drop (also on panic) the node agents
/// and `hub run` are stopped first, so nothing starts components again,
/// then every component the agents recorded is killed (if it is still that
/// very process).
struct Processes {
    agents: Vec<ManagedProcess>,
    hub_run: Option<ManagedProcess>,
    state_dirs: Vec<PathBuf>,
}

impl Drop for Processes {
    fn drop(&mut self) {
        self.agents.clear();
        self.hub_run.take();
        for dir in &self.state_dirs {
            flotilla_node_agent::kill_recorded(dir);
        }
    }
}

/// Runs the flotilla binary with its own HOME and the binary cache.
fn flotilla(home: &Path, binaries: &Binaries, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(args)
        .env("HOME", home)
        .env("FLOTILLA_K8S_BIN", binaries.dir())
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// A base port with `count` free ports after it.
fn free_range(count: u16) -> u16 {
    flotilla_localkube::ports::free_range(count).unwrap()
}

/// What a failed step shows: the cluster's status, the Machines'
/// components, and the tail of every component log.
async fn diagnostics(client: &Client, state_dirs: &[PathBuf]) -> String {
    let mut out = String::new();
    let clusters = Api::<HostedCluster>::namespaced(client.clone(), "default");
    if let Ok(Some(hc)) = clusters.get_opt("c1").await {
        let status = hc.status.clone().unwrap_or_default();
        out += &format!(
            "HostedCluster c1: phase {:?}, deleting {}, instances {:?}\n",
            status.phase,
            hc.metadata.deletion_timestamp.is_some(),
            status.instances
        );
        for c in &status.conditions {
            out += &format!("  {} {} {}: {}\n", c.type_, c.status, c.reason, c.message);
        }
    }
    if let Ok(Some(etcd)) = Api::<EtcdCluster>::namespaced(client.clone(), "default").get_opt("c1-etcd").await
    {
        out += &format!("EtcdCluster status:\n{}\n", serde_json::to_string_pretty(&etcd.status).unwrap());
    }
    if let Ok(machines) = Api::<Machine>::all(client.clone()).list(&ListParams::default()).await {
        for m in machines.items {
            for c in m.status.iter().flat_map(|s| s.components.iter()) {
                out += &format!(
                    "{}/{}: {} healthy={:?} restarts={} {}\n",
                    m.name_any(),
                    c.name,
                    c.state,
                    c.healthy,
                    c.restarts,
                    c.message.clone().unwrap_or_default()
                );
            }
        }
    }
    for dir in state_dirs {
        let Ok(logs) = std::fs::read_dir(dir.join("logs")) else { continue };
        for log in logs.flatten() {
            out += &format!(
                "---- {}:\n{}\n",
                log.path().display(),
                flotilla_localkube::process::log_tail(&log.path(), 12)
            );
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_use_get_and_delete_a_hosted_cluster_from_the_command_line() {
    let binaries = Binaries::locate().unwrap();
    let hub = Cluster::start(ClusterConfig::apiserver_only("hub")).await.unwrap();
    let client = hub.client();
    let home = tempfile::tempdir().unwrap();
    let hub_kc = hub.kubeconfig_path().to_str().unwrap().to_string();
    let state_dirs: Vec<PathBuf> = MACHINES.iter().map(|m| home.path().join("machines").join(m)).collect();
    let mut processes = Processes { agents: Vec::new(), hub_run: None, state_dirs: state_dirs.clone() };

    let out = flotilla(home.path(), &binaries, &["hub", "install", "--kubeconfig", &hub_kc]);
    assert!(out.status.success(), "{}", text(&out));
    let machines: Api<Machine> = Api::all(client.clone());
    wait_for("the Machine CRD to be served", Duration::from_secs(60), || {
        let machines = machines.clone();
        async move { machines.list(&ListParams::default()).await.is_ok() }
    })
    .await;
    for name in MACHINES {
        let m = Machine::new(name, MachineSpec { address: Some("127.0.0.1".into()), ..Default::default() });
        machines.create(&PostParams::default(), &m).await.unwrap();
    }

    // Ports of its own, so that tests running beside it do not collide.
    let base = free_range(60);
    let port_range = format!("{base}-{}", base + 49);
    let etcd_port_range = format!("{}-{}", base + 50, base + 59);
    let program = PathBuf::from(env!("CARGO_BIN_EXE_flotilla"));
    let with_env = |spec: ProcessSpec| {
        spec.env("HOME", home.path().to_str().unwrap())
            .env("FLOTILLA_K8S_BIN", binaries.dir().to_str().unwrap())
            .env("FLOTILLA_LOG", "info")
    };
    processes.hub_run = Some(
        ManagedProcess::spawn(with_env(
            ProcessSpec::new("hub-run", program.clone(), home.path().join("hub-run.log")).args([
                "hub",
                "run",
                "--auto-accept",
                "--kubeconfig",
                &hub_kc,
                "--kok-port-range",
                &port_range,
                "--etcd-port-range",
                &etcd_port_range,
            ]),
        ))
        .unwrap(),
    );
    for (name, dir) in MACHINES.iter().zip(&state_dirs) {
        processes.agents.push(
            ManagedProcess::spawn(with_env(
                ProcessSpec::new(
                    format!("node-agent-{name}"),
                    program.clone(),
                    home.path().join(format!("{name}.log")),
                )
                .args(["node-agent", "--machine", name, "--kubeconfig", &hub_kc, "--state-dir"])
                .arg(dir.to_str().unwrap()),
            ))
            .unwrap(),
        );
    }

    // create waits until Ready and says how to use the cluster.
    let out = flotilla(
        home.path(),
        &binaries,
        &["cluster", "create", "c1", "--nodes", "1", "--timeout", "300", "--kubeconfig", &hub_kc],
    );
    let shown = text(&out);
    if !out.status.success() {
        panic!("create failed:\n{shown}\n{}", diagnostics(&client, &state_dirs).await);
    }
    for want in [
        "Cluster c1 is Ready after",
        "flotilla cluster kubeconfig c1",
        "kubectl --kubeconfig c1.kubeconfig get nodes",
    ] {
        assert!(shown.contains(want), "{want:?} missing in:\n{shown}");
    }
    let etcd = Api::<EtcdCluster>::namespaced(client.clone(), "default").get("c1-etcd").await.unwrap();
    assert_eq!(etcd.labels().get("kok.flotilla.io/hosted-cluster").map(String::as_str), Some("default.c1"));

    // A second create of the same name is refused and changes nothing.
    let again =
        flotilla(home.path(), &binaries, &["cluster", "create", "c1", "--no-wait", "--kubeconfig", &hub_kc]);
    assert!(!again.status.success() && text(&again).contains("exists already"), "{}", text(&again));

    // The admin kubeconfig works with kubectl: one Ready node.
    let out = flotilla(home.path(), &binaries, &["cluster", "kubeconfig", "c1", "--kubeconfig", &hub_kc]);
    assert!(out.status.success(), "{}", text(&out));
    let c1_kc = home.path().join("c1.kubeconfig");
    std::fs::write(&c1_kc, &out.stdout).unwrap();
    let nodes = Command::new(binaries.path("kubectl"))
        .args(["--kubeconfig", c1_kc.to_str().unwrap(), "get", "nodes", "--no-headers"])
        .output()
        .unwrap();
    let listed = text(&nodes);
    assert!(nodes.status.success(), "kubectl get nodes: {listed}");
    let rows: Vec<Vec<&str>> = listed.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows.len(), 1, "one node:\n{listed}");
    assert_eq!(rows[0].get(1), Some(&"Ready"), "{listed}");

    // get: the detail view and the list both say Ready.
    let out = flotilla(home.path(), &binaries, &["cluster", "get", "c1", "--kubeconfig", &hub_kc]);
    let detail = text(&out);
    assert!(out.status.success() && detail.contains("Phase:       Ready"), "{detail}");
    assert!(detail.contains("Nodes:       1/1 Ready"), "{detail}");
    assert!(detail.lines().all(|l| l.chars().count() <= 100), "wider than 100 columns:\n{detail}");
    let out = flotilla(home.path(), &binaries, &["cluster", "get", "--kubeconfig", &hub_kc]);
    let list = text(&out);
    let row: Vec<&str> =
        list.lines().find(|l| l.trim_start().starts_with("c1 ")).unwrap_or("").split_whitespace().collect();
    assert_eq!(row.get(2), Some(&"Ready"), "{list}");
    assert_eq!(row.get(4), Some(&"1/1"), "{list}");

    // delete waits until the operator removed everything of it.
    let out = flotilla(
        home.path(),
        &binaries,
        &["cluster", "delete", "c1", "--timeout", "180", "--kubeconfig", &hub_kc],
    );
    if !out.status.success() {
        panic!("delete failed:\n{}\n{}", text(&out), diagnostics(&client, &state_dirs).await);
    }
    assert!(Api::<HostedCluster>::namespaced(client.clone(), "default")
        .get_opt("c1")
        .await
        .unwrap()
        .is_none());
    assert!(Api::<EtcdCluster>::namespaced(client.clone(), "default")
        .get_opt("c1-etcd")
        .await
        .unwrap()
        .is_none());
    let etcd_component = flotilla_kok_core::etcd::component_name("default", "c1-etcd");
    for m in machines.list(&ListParams::default()).await.unwrap().items {
        let declared = m.spec.components.iter().map(|c| c.name.clone());
        let running = m.status.iter().flat_map(|s| s.components.iter()).map(|c| c.name.clone());
        let left: Vec<String> = declared
            .chain(running)
            .filter(|c| parse_component_name(c, "default", "c1").is_some() || *c == etcd_component)
            .collect();
        assert!(left.is_empty(), "machine {} still has {left:?}", m.name_any());
    }
    let secrets = Api::<Secret>::namespaced(client.clone(), "default");
    for secret in [pki_secret_name("c1"), admin_secret_name("c1"), bootstrap_secret_name("c1")] {
        assert!(secrets.get_opt(&secret).await.unwrap().is_none(), "Secret {secret} is left");
    }
    let out = flotilla(home.path(), &binaries, &["cluster", "get", "--kubeconfig", &hub_kc]);
    assert!(text(&out).contains("No hosted clusters in namespace default"), "{}", text(&out));

    // Three etcd members on two Machines cannot be built: create stops once
    // NotEnoughMachines has held for the grace, long before its timeout,
    // and says why whole; the cluster is left for the user to fix or delete.
    let started = std::time::Instant::now();
    let out = flotilla(
        home.path(),
        &binaries,
        &[
            "cluster",
            "create",
            "c3",
            "--etcd-members",
            "3",
            "--nodes",
            "0",
            "--timeout",
            "900",
            "--kubeconfig",
            &hub_kc,
        ],
    );
    let shown = text(&out);
    assert!(!out.status.success(), "three etcd members on two machines succeeded:\n{shown}");
    let waited = started.elapsed();
    // Flattened: the error is wrapped at 100 columns.
    let flat = shown.split_whitespace().collect::<Vec<_>>().join(" ");
    for want in [
        "EtcdReady (NotEnoughMachines, for",
        "EtcdCluster c3-etcd is not available: 2 of 3 members placed: too few Machines match \
         spec.machineSelector without already running a member",
        "flotilla cluster delete c3",
    ] {
        assert!(flat.contains(want), "{want:?} missing in:\n{shown}");
    }
    assert!(!flat.contains("not done after"), "it waited out its timeout ({waited:?}):\n{shown}");
    assert!(shown.lines().all(|l| l.chars().count() <= 100), "wider than 100 columns:\n{shown}");
    let out = flotilla(
        home.path(),
        &binaries,
        &["cluster", "delete", "c3", "--timeout", "180", "--kubeconfig", &hub_kc],
    );
    if !out.status.success() {
        panic!("delete c3 failed:\n{}\n{}", text(&out), diagnostics(&client, &state_dirs).await);
    }
    drop(processes);
}
