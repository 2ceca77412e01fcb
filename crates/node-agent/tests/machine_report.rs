#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Machines report themselves: node agents on their own narrow credentials
//! (the README's registration) against a real hub write the host's
//! addresses, capacity and software on their Machines, and the real etcd
//! operator places a member on a Machine with no `spec.address` at the
//! address its node agent reports, after having said what was missing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use flotilla_api::kok::{EtcdCluster, EtcdClusterPhase, EtcdClusterSpec};
use flotilla_api::machine::{Machine, MachineAddressType, MachineSpec, MachineStatus};
use flotilla_core::kubeconfig::{self, Credential, KubeconfigSpec};
use flotilla_fleet_core::bootstrap_token::{self, BootstrapToken};
use flotilla_kok::etcd::EtcdOperator;
use flotilla_kok_core::etcd::EtcdOperatorConfig;
use flotilla_kok_core::machine_identity::ACCEPTED_ANNOTATION;
use flotilla_localkube::{wait_for, Binaries, Cluster, ClusterConfig};
use flotilla_node_agent::NodeAgentConfig;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::json;
use tokio::task::AbortHandle;

const WAIT: Duration = Duration::from_secs(120);
const NS: &str = "kok-test";

/// On drop (also when the test panics): stops the agents and the operators
/// first, so nothing starts etcd again, then kills every process the
/// agents recorded, if it is still that very process.
struct Cleanup {
    state_dirs: Vec<PathBuf>,
    tasks: Mutex<Vec<AbortHandle>>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for t in self.tasks.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            t.abort();
        }
        // An aborted task finishes the poll it is in; give it that moment.
        std::thread::sleep(Duration::from_millis(300));
        for dir in &self.state_dirs {
            flotilla_node_agent::kill_recorded(dir);
        }
    }
}

/// A base port with 20 free ports after it, below the ephemeral range and
/// at a random place, so tests running at the same time differ.
fn free_range() -> u16 {
    flotilla_localkube::ports::free_range(20).unwrap()
}

/// Standard output of a command that must succeed.
fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The host's global addresses as iproute2 lists them, by interface.
fn ip_global_addresses() -> Vec<(String, String)> {
    run("ip", &["-o", "addr", "show", "up", "scope", "global"])
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let address = f.get(3)?.split('/').next()?;
            Some((f.get(1)?.to_string(), address.to_string()))
        })
        .collect()
}

/// Interfaces holding a default route, as iproute2 lists them.
fn ip_default_route_devices() -> BTreeSet<String> {
    ["-4", "-6"]
        .iter()
        .flat_map(|family| {
            run("ip", &[family, "-o", "route", "show", "default"])
                .lines()
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let dev = f.iter().position(|w| *w == "dev")?;
            Some(f.get(dev + 1)?.to_string())
        })
        .collect()
}

fn internal_ips(status: &MachineStatus) -> Vec<String> {
    status
        .addresses
        .iter()
        .filter(|a| a.type_ == MachineAddressType::InternalIp)
        .map(|a| a.address.clone())
        .collect()
}

fn hostname(status: &MachineStatus) -> Option<&str> {
    status.addresses.iter().find(|a| a.type_ == MachineAddressType::Hostname).map(|a| a.address.as_str())
}

fn agent(machine: &str, bootstrap: &Path, state_dir: &Path) -> NodeAgentConfig {
    let mut config =
        NodeAgentConfig::bootstrapped(machine, Some(bootstrap.to_path_buf()), state_dir.to_path_buf());
    config.tick = Duration::from_millis(200);
    config.heartbeat = Duration::from_secs(1);
    config.resync = Duration::from_secs(1);
    config
}

/// Waits until a condition of EtcdCluster `name` says `what`; returns its message.
async fn wait_condition_saying(clusters: &Api<EtcdCluster>, name: &str, what: &str) -> String {
    let said = Mutex::new(String::new());
    wait_for(&format!("EtcdCluster {name} to say {what:?}"), WAIT, || async {
        let c = clusters.get(name).await.unwrap();
        let conditions = c.status.map(|s| s.conditions).unwrap_or_default();
        match conditions.into_iter().find(|c| c.message.contains(what)) {
            Some(c) => {
                *said.lock().unwrap() = c.message;
                true
            }
            None => false,
        }
    })
    .await;
    said.into_inner().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_agents_report_their_hosts_and_etcd_is_placed_at_the_reported_address() {
    let _ =
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(flotilla_localkube::TEST_LOG_DIRECTIVES)
            }))
            .with_test_writer()
            .try_init();
    let hub = Cluster::start(ClusterConfig::hub("hub")).await.unwrap();
    let client = hub.client();
    flotilla_hub::install(&client).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (given_dir, found_dir) = (tmp.path().join("m1"), tmp.path().join("m2"));
    let cleanup =
        Cleanup { state_dirs: vec![given_dir.clone(), found_dir.clone()], tasks: Mutex::new(Vec::new()) };
    let controllers = tokio::spawn({
        let client = client.clone();
        async move {
            let config = flotilla_hub::HubConfig { auto_accept: true, ..Default::default() };
            flotilla_hub::run(client, config).await.unwrap();
        }
    });
    cleanup.tasks.lock().unwrap().push(controllers.abort_handle());
    let binaries = Binaries::locate().unwrap();
    let base = free_range();
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
    let etcd_operator = tokio::spawn(flotilla_kok::etcd::run(client.clone(), operator));
    cleanup.tasks.lock().unwrap().push(etcd_operator.abort_handle());
    let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}});
    Api::<Namespace>::all(client.clone())
        .patch(NS, &PatchParams::apply("test"), &Patch::Apply(&namespace))
        .await
        .unwrap();

    // A Machine registered and accepted as the README does it: no
    // spec.address. An etcd cluster selecting it is refused, saying what to
    // do.
    let machines: Api<Machine> = Api::all(client.clone());
    let mut m1 = Machine::new("m1", MachineSpec::default());
    m1.metadata.labels = Some(BTreeMap::from([("pool".to_string(), "etcd".to_string())]));
    m1.metadata.annotations = Some(BTreeMap::from([(ACCEPTED_ANNOTATION.to_string(), "true".to_string())]));
    machines.create(&PostParams::default(), &m1).await.unwrap();
    let clusters: Api<EtcdCluster> = Api::namespaced(client.clone(), NS);
    let spec = EtcdClusterSpec {
        members: 1,
        version: "3.7.4".into(),
        machine_selector: BTreeMap::from([("pool".to_string(), "etcd".to_string())]),
        ..Default::default()
    };
    clusters.create(&PostParams::default(), &EtcdCluster::new("e", spec)).await.unwrap();
    let refusal = wait_condition_saying(
        &clusters,
        "e",
        "m1 has no address: set spec.address, or start its node agent, which reports status.addresses",
    )
    .await;
    assert!(
        refusal.contains("0 of 1 members placed: too few Machines match spec.machineSelector"),
        "{refusal}"
    );

    // Its node agent (told its address) and another one (finding its own),
    // both on bootstrap tokens.
    let token = BootstrapToken::new("report", "0123456789abcdef").unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), bootstrap_token::NAMESPACE);
    secrets.create(&PostParams::default(), &token.fleet_secret().build()).await.unwrap();
    let bootstrap = tmp.path().join("bootstrap.kubeconfig");
    let kubeconfig = kubeconfig::render(&KubeconfigSpec {
        name: "hub".into(),
        server: hub.server().into(),
        ca_pem: hub.ca().pem.cert_pem.clone(),
        credential: Credential::Token(token.token()),
    });
    std::fs::write(&bootstrap, kubeconfig).unwrap();
    let mut given = agent("m1", &bootstrap, &given_dir);
    given.address = Some("127.0.0.1".parse().unwrap());
    for config in [given, agent("m2", &bootstrap, &found_dir)] {
        let task = tokio::spawn(flotilla_node_agent::run(config, std::future::pending()));
        cleanup.tasks.lock().unwrap().push(task.abort_handle());
    }

    // The member runs on m1 at the address its agent reports; the spec
    // still has none.
    let last = Mutex::new(None);
    let running = tokio::time::timeout(WAIT, async {
        loop {
            let status = clusters.get("e").await.unwrap().status.unwrap_or_default();
            *last.lock().unwrap() = Some(status.clone());
            if status.phase == Some(EtcdClusterPhase::Running) {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
    .await;
    let Ok(status) = running else { panic!("etcd never ran on m1; last status {:#?}", last.lock().unwrap()) };
    let member = &status.members[0];
    assert_eq!((member.machine.as_deref(), member.healthy), (Some("m1"), true), "{status:#?}");
    let client_url = member.client_url.as_deref().unwrap();
    assert!(client_url.starts_with("https://127.0.0.1:"), "{client_url}");
    let m1 = machines.get("m1").await.unwrap();
    assert_eq!(m1.spec.address, None);
    let m1_status = m1.status.unwrap();
    assert_eq!(internal_ips(&m1_status), ["127.0.0.1"], "--address is the only InternalIP");

    // m2 found its own: the global addresses iproute2 lists, those of an
    // interface holding a default route first. Other tests may add and
    // remove interfaces meanwhile: the agent reads them again every
    // heartbeat, so wait for the two views to agree.
    let seen = Mutex::new(None);
    wait_for("m2's addresses to be those iproute2 lists", WAIT, || async {
        let Some(status) = machines.get("m2").await.unwrap().status else { return false };
        let reported = internal_ips(&status);
        let listed = ip_global_addresses();
        let same = reported.iter().collect::<BTreeSet<_>>() == listed.iter().map(|(_, a)| a).collect();
        let defaults = ip_default_route_devices();
        let on_default: Vec<&String> =
            listed.iter().filter(|(dev, _)| defaults.contains(dev)).map(|(_, a)| a).collect();
        let first_ok = on_default.is_empty() || reported.first().is_some_and(|a| on_default.contains(&a));
        *seen.lock().unwrap() = Some((reported, listed, defaults));
        same && first_ok
    })
    .await;
    eprintln!("m2 reported (and iproute2 listed): {:?}", seen.lock().unwrap());
    let m2 = machines.get("m2").await.unwrap().status.unwrap();
    let uname_n = run("uname", &["-n"]).trim().to_lowercase();
    assert_eq!(hostname(&m2), Some(uname_n.as_str()));
    assert_eq!(hostname(&m1_status), Some(uname_n.as_str()));

    // Capacity and software, as the system's own tools say.
    let cpu = run("getconf", &["_NPROCESSORS_ONLN"]).trim().to_string();
    let mem_total = std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:").map(|v| v.trim().trim_end_matches("kB").trim().to_string()))
        .unwrap();
    let df = run("df", &["-k", "--output=size", found_dir.to_str().unwrap()]);
    let disk_kib = df.lines().nth(1).unwrap().trim().to_string();
    let capacity: BTreeMap<&str, String> =
        m2.capacity.iter().map(|(k, v)| (k.as_str(), v.0.clone())).collect();
    assert_eq!(
        capacity,
        BTreeMap::from([
            ("cpu", cpu),
            ("memory", format!("{mem_total}Ki")),
            ("ephemeral-storage", format!("{disk_kib}Ki"))
        ])
    );
    let info = m2.machine_info.clone().unwrap();
    assert_eq!(info.kernel_version.as_deref(), Some(run("uname", &["-r"]).trim()));
    let unified = run("stat", &["-fc", "%T", "/sys/fs/cgroup"]).trim() == "cgroup2fs";
    assert_eq!(info.cgroup_version.as_deref(), Some(if unified { "v2" } else { "v1" }));
    assert!(info.os_image.as_deref().is_some_and(|o| !o.is_empty()), "{info:?}");
    assert!(info.boot_id.as_deref().is_some_and(|b| b.len() == 36), "{info:?}");
    let containerd = Command::new("containerd").arg("--version").output().is_ok_and(|o| o.status.success());
    assert_eq!(
        info.container_runtime_version.as_deref().is_some_and(|v| v.starts_with("containerd://")),
        containerd,
        "{info:?}"
    );

    // `kubectl get machines` shows the address (the README's sample).
    let table = run(
        binaries.path("kubectl").to_str().unwrap(),
        &["--kubeconfig", hub.kubeconfig_path().to_str().unwrap(), "get", "machines"],
    );
    eprintln!("{table}");
    // Columns are aligned (an empty one is blank): cut m1's row where the
    // header's INTERNAL-IP starts.
    let at = table.lines().next().unwrap().find("INTERNAL-IP").unwrap();
    let row = table.lines().find(|l| l.starts_with("m1 ")).unwrap();
    assert_eq!(row.get(at..).and_then(|r| r.split_whitespace().next()), Some("127.0.0.1"), "{table}");
    drop(cleanup);
}
