#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The node agent against a real hub API server, running a real etcd:
//! start, health, crash and restart, a spec change, adoption after the agent
//! restarts, removal; and failures reported in status.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use flotilla_api::machine::{
    ComponentFile, ComponentSpec, ComponentState, ComponentStatus, HealthCheck, HttpCheck, KeyRef, Machine,
    MachineSpec, RestartPolicy,
};
use flotilla_localkube::ports::free_port;
use flotilla_localkube::{wait_for, Binaries, Cluster, ClusterConfig};
use flotilla_node_agent::{process, NodeAgentConfig, State};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::api::events::v1::Event as EventsV1;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, CustomResourceExt};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

/// Kills, on drop (also when a test panics), every component process the
/// agent recorded or the test saw, if it is still that very process.
struct Cleanup {
    state_dir: PathBuf,
    seen: Mutex<Vec<(u32, u64)>>,
}

impl Cleanup {
    fn new(state_dir: &Path) -> Self {
        Self { state_dir: state_dir.to_path_buf(), seen: Mutex::new(Vec::new()) }
    }

    fn saw(&self, pid: u32) {
        if let Some(ticks) = process::start_ticks(pid) {
            self.seen.lock().unwrap().push((pid, ticks));
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        flotilla_node_agent::kill_recorded(&self.state_dir);
        for (pid, ticks) in self.seen.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            process::kill_now(*pid, *ticks);
        }
    }
}

async fn hub_with_machine_crd() -> Cluster {
    let _ =
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(flotilla_localkube::TEST_LOG_DIRECTIVES)
            }))
            .with_test_writer()
            .try_init();
    let hub = Cluster::start(ClusterConfig::apiserver_only("hub")).await.unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(hub.client());
    let crd = flotilla_api::crds().into_iter().find(|c| c.spec.names.kind == "Machine").unwrap();
    crds.patch(Machine::crd_name(), &PatchParams::apply("test").force(), &Patch::Apply(&crd)).await.unwrap();
    let machines: Api<Machine> = Api::all(hub.client());
    wait_for("the Machine CRD to be served", WAIT, || {
        let machines = machines.clone();
        async move { machines.list(&Default::default()).await.is_ok() }
    })
    .await;
    hub
}

fn agent_config(hub: &Cluster, machine: &str, state_dir: &Path) -> NodeAgentConfig {
    let mut config =
        NodeAgentConfig::new(machine, hub.kubeconfig_path().to_path_buf(), state_dir.to_path_buf());
    config.tick = Duration::from_millis(200);
    config.heartbeat = Duration::from_secs(1);
    config.stop_grace = Duration::from_secs(5);
    config.resync = Duration::from_secs(1);
    config
}

fn start_agent(config: NodeAgentConfig) -> tokio::task::JoinHandle<Result<(), flotilla_node_agent::Error>> {
    tokio::spawn(flotilla_node_agent::run(config, std::future::pending()))
}

async fn component(client: &Client, machine: &str, name: &str) -> Option<ComponentStatus> {
    let m = Api::<Machine>::all(client.clone()).get(machine).await.ok()?;
    m.status?.components.into_iter().find(|c| c.name == name)
}

/// Waits until the component's status satisfies `check`, and returns it.
async fn wait_component(
    client: &Client,
    machine: &str,
    name: &str,
    what: &str,
    check: impl Fn(&ComponentStatus) -> bool,
) -> ComponentStatus {
    let found = Mutex::new(None);
    wait_for(what, WAIT, || async {
        let c = component(client, machine, name).await;
        let ok = c.as_ref().is_some_and(&check);
        *found.lock().unwrap() = c;
        ok
    })
    .await;
    found.into_inner().unwrap().unwrap()
}

fn running_healthy(c: &ComponentStatus) -> bool {
    c.state == ComponentState::Running && c.healthy == Some(true)
}

fn etcd(binaries: &Binaries, data: &Path, client_port: u16, peer_port: u16, extra: &[&str]) -> ComponentSpec {
    let client = format!("http://127.0.0.1:{client_port}");
    let peer = format!("http://127.0.0.1:{peer_port}");
    let mut args = vec![
        "--name=m1".to_string(),
        format!("--data-dir={}", data.display()),
        format!("--listen-client-urls={client}"),
        format!("--advertise-client-urls={client}"),
        format!("--listen-peer-urls={peer}"),
        format!("--initial-advertise-peer-urls={peer}"),
        format!("--initial-cluster=m1={peer}"),
        "--logger=zap".to_string(),
        "--log-level=warn".to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    ComponentSpec {
        name: "etcd".into(),
        binary: binaries.path("etcd").to_string_lossy().into_owned(),
        args,
        files: vec![ComponentFile {
            path: "extra/note.txt".into(),
            secret_ref: Some(KeyRef {
                namespace: "kok-test".into(),
                name: "note".into(),
                key: "note".into(),
            }),
            ..Default::default()
        }],
        health: Some(HealthCheck {
            http: Some(HttpCheck { url: format!("{client}/health"), ..Default::default() }),
            period_seconds: Some(1),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn set_components(client: &Client, machine: &str, components: Vec<ComponentSpec>) {
    Api::<Machine>::all(client.clone())
        .patch(machine, &PatchParams::default(), &Patch::Merge(json!({"spec": {"components": components}})))
        .await
        .unwrap();
}

async fn create_secret(client: &Client, namespace: &str, name: &str, data: BTreeMap<&str, &str>) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}});
    namespaces.patch(namespace, &PatchParams::apply("test"), &Patch::Apply(&ns)).await.unwrap();
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "stringData": data,
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
}

/// The Event of `reason` about Machine `machine`, once it lands.
async fn wait_machine_event(client: &Client, machine: &str, reason: &str) -> EventsV1 {
    let events: Api<EventsV1> = Api::namespaced(client.clone(), "default");
    let mut found = None;
    for _ in 0..120 {
        let list = events.list(&Default::default()).await.unwrap();
        found = list.items.into_iter().find(|e| {
            e.reason.as_deref() == Some(reason)
                && e.regarding.as_ref().is_some_and(|r| {
                    r.kind.as_deref() == Some("Machine") && r.name.as_deref() == Some(machine)
                })
        });
        if found.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    found.unwrap_or_else(|| panic!("no {reason} Event on Machine {machine}"))
}

fn starts_in_log(state_dir: &Path) -> usize {
    let log = std::fs::read_to_string(state_dir.join("logs/etcd.log")).unwrap_or_default();
    log.matches("flotilla-node-agent: starting etcd").count()
}

fn port_answers(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

fn recorded_ticks(state_dir: &Path, name: &str) -> u64 {
    let state = State::load(state_dir).unwrap();
    state.components.iter().find(|c| c.name == name).unwrap().start_ticks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_restarts_changes_adopts_and_stops_a_real_etcd() {
    let hub = hub_with_machine_crd().await;
    let client = hub.client();
    let binaries = Binaries::locate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    let cleanup = Cleanup::new(&state_dir);
    create_secret(&client, "kok-test", "note", BTreeMap::from([("note", "from a secret")])).await;

    // The agent registers its Machine itself.
    let agent = start_agent(agent_config(&hub, "m1", &state_dir));
    let machines: Api<Machine> = Api::all(client.clone());
    wait_for("the node agent to register its Machine", WAIT, || {
        let machines = machines.clone();
        async move { machines.get_opt("m1").await.ok().flatten().is_some() }
    })
    .await;

    let (client_port, peer_port) = (free_port().unwrap(), free_port().unwrap());
    let data = dir.path().join("etcd-data");
    set_components(&client, "m1", vec![etcd(&binaries, &data, client_port, peer_port, &[])]).await;
    let first = wait_component(&client, "m1", "etcd", "etcd running and healthy", running_healthy).await;
    let pid1 = first.pid.unwrap();
    cleanup.saw(pid1);
    assert!(port_answers(client_port));
    assert_eq!(first.restarts, 0);
    let note = state_dir.join("components/etcd/extra/note.txt");
    assert_eq!(std::fs::read_to_string(&note).unwrap(), "from a secret");
    let m = machines.get("m1").await.unwrap();
    let ready = m.status.as_ref().unwrap().conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(ready.status, "True", "{ready:?}");
    assert_eq!(m.status.unwrap().component_summary.as_deref(), Some("1/1"));

    // A crash: restarted, counted, exit code recorded.
    assert_eq!(process::start_ticks(pid1), Some(recorded_ticks(&state_dir, "etcd")));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid1 as i32), nix::sys::signal::Signal::SIGKILL)
        .unwrap();
    let second = wait_component(&client, "m1", "etcd", "etcd restarted after SIGKILL", |c| {
        running_healthy(c) && c.restarts == 1 && c.pid != Some(pid1)
    })
    .await;
    assert_eq!(second.last_exit_code, Some(137));
    assert!(second.last_exit_time.is_some());
    let pid2 = second.pid.unwrap();
    cleanup.saw(pid2);
    let ticks2 = recorded_ticks(&state_dir, "etcd");
    assert_eq!(starts_in_log(&state_dir), 2);
    // The repair is told on the Machine: a Warning Event with the exit
    // status and the restart count (and the first start, a Normal one).
    let restarted = wait_machine_event(&client, "m1", "ComponentRestarted").await;
    assert_eq!(restarted.type_.as_deref(), Some("Warning"));
    let note = restarted.note.clone().unwrap_or_default();
    assert!(note.contains("etcd") && note.contains("signal 9") && note.contains("1 restart"), "{note}");
    assert_eq!(restarted.reporting_controller.as_deref(), Some(flotilla_node_agent::events::CONTROLLER));
    let started = wait_machine_event(&client, "m1", "ComponentStarted").await;
    assert_eq!(started.type_.as_deref(), Some("Normal"));

    // Changed args: restarted once, with the new spec hash.
    let changed = etcd(&binaries, &data, client_port, peer_port, &["--snapshot-count=5000"]);
    set_components(&client, "m1", vec![changed]).await;
    let third = wait_component(&client, "m1", "etcd", "etcd restarted with the new args", |c| {
        running_healthy(c) && c.spec_hash != second.spec_hash
    })
    .await;
    let pid3 = third.pid.unwrap();
    cleanup.saw(pid3);
    assert_ne!(pid3, pid2);
    assert_eq!(third.restarts, 1, "a spec change is not a crash");
    assert!(!process::is_alive(pid2, ticks2), "the old etcd was stopped");
    assert_eq!(starts_in_log(&state_dir), 3);
    let cmdline = std::fs::read_to_string(format!("/proc/{pid3}/cmdline")).unwrap();
    assert!(cmdline.contains("--snapshot-count=5000"), "{cmdline}");

    // The agent goes away; etcd keeps running; a new agent adopts it.
    agent.abort();
    assert!(agent.await.unwrap_err().is_cancelled());
    assert!(port_answers(client_port), "etcd must outlive its node agent");
    let restarted_at = k8s_openapi::jiff::Timestamp::now();
    let agent = start_agent(agent_config(&hub, "m1", &state_dir));
    let adopted =
        wait_component(&client, "m1", "etcd", "the new agent to report etcd", running_healthy).await;
    wait_for("a heartbeat from the new agent", WAIT, || {
        let machines = machines.clone();
        async move {
            let m = machines.get("m1").await.unwrap();
            let beat = m.status.and_then(|s| s.last_heartbeat).map(|t| t.0);
            beat.is_some_and(|b| b.as_second() > restarted_at.as_second())
        }
    })
    .await;
    let after = component(&client, "m1", "etcd").await.unwrap();
    assert_eq!((adopted.pid, after.pid), (Some(pid3), Some(pid3)), "the running etcd is adopted");
    assert_eq!(after.restarts, 1);
    assert_eq!(starts_in_log(&state_dir), 3, "no second etcd was started");
    assert!(process::is_alive(pid3, recorded_ticks(&state_dir, "etcd")));
    assert!(port_answers(client_port));

    // Removed from the spec: stopped (SIGTERM first) and forgotten.
    let ticks3 = recorded_ticks(&state_dir, "etcd");
    set_components(&client, "m1", vec![]).await;
    wait_for("etcd to leave the status", WAIT, || {
        let machines = machines.clone();
        async move {
            let m = machines.get("m1").await.unwrap();
            m.status.is_some_and(|s| s.components.is_empty() && s.component_summary.as_deref() == Some("0/0"))
        }
    })
    .await;
    assert!(!process::is_alive(pid3, ticks3));
    assert!(State::load(&state_dir).unwrap().components.is_empty());
    let log = std::fs::read_to_string(state_dir.join("logs/etcd.log")).unwrap();
    assert!(log.contains("removed from the spec"), "{log}");
    assert!(!state_dir.join("components/etcd").exists(), "the working directory goes with the component");
    assert!(state_dir.join("logs/etcd.log").exists(), "the log stays");

    agent.abort();
    let _ = agent.await;
    drop(cleanup);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_reported_and_missing_files_wait_for_their_secret() {
    let hub = hub_with_machine_crd().await;
    let client = hub.client();
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    let cleanup = Cleanup::new(&state_dir);
    let machines: Api<Machine> = Api::all(client.clone());
    machines.create(&PostParams::default(), &Machine::new("m2", MachineSpec::default())).await.unwrap();

    let failing = ComponentSpec {
        name: "fails".into(),
        binary: "/bin/sh".into(),
        args: vec!["-c".into(), "echo boom; echo; exit 3".into()],
        restart_policy: RestartPolicy::Never,
        ..Default::default()
    };
    let needs_secret = ComponentSpec {
        name: "waits".into(),
        binary: "/bin/sh".into(),
        args: vec!["-c".into(), "cat token; exec sleep 300".into()],
        files: vec![ComponentFile {
            path: "token".into(),
            secret_ref: Some(KeyRef {
                namespace: "kok-test".into(),
                name: "later".into(),
                key: "token".into(),
            }),
            mode: Some(0o400),
            ..Default::default()
        }],
        ..Default::default()
    };
    let missing_binary =
        ComponentSpec { name: "missing".into(), binary: "/nonexistent/bin".into(), ..Default::default() };
    set_components(&client, "m2", vec![failing, needs_secret, missing_binary]).await;
    let agent = start_agent(agent_config(&hub, "m2", &state_dir));

    let fails = wait_component(&client, "m2", "fails", "the failing component to be Failed", |c| {
        c.state == ComponentState::Failed
    })
    .await;
    assert_eq!(fails.last_exit_code, Some(3));
    assert_eq!(fails.restarts, 0, "restartPolicy Never");
    assert!(fails.log_tail.contains(&"boom".to_string()), "{:?}", fails.log_tail);

    let missing = wait_component(&client, "m2", "missing", "the missing binary to back off", |c| {
        c.state == ComponentState::Backoff && c.restarts >= 1
    })
    .await;
    assert!(missing.message.unwrap().contains("/nonexistent/bin"));

    let waits =
        wait_component(&client, "m2", "waits", "the component without its Secret to be Failed", |c| {
            c.state == ComponentState::Failed
        })
        .await;
    assert_eq!(waits.message.as_deref(), Some("file token: Secret kok-test/later not found"));
    let m = machines.get("m2").await.unwrap();
    let ready = m.status.unwrap().conditions.into_iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(ready.status, "False");

    create_secret(&client, "kok-test", "later", BTreeMap::from([("token", "s3cret")])).await;
    let waits =
        wait_component(&client, "m2", "waits", "the component to start once its Secret exists", |c| {
            c.state == ComponentState::Running
        })
        .await;
    cleanup.saw(waits.pid.unwrap());
    let token = state_dir.join("components/waits/token");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&token).unwrap().permissions().mode() & 0o777, 0o400);
    wait_for("the component to read its file", WAIT, || async {
        std::fs::read_to_string(state_dir.join("logs/waits.log")).unwrap_or_default().contains("s3cret")
    })
    .await;

    agent.abort();
    let _ = agent.await;
    drop(cleanup);
}
