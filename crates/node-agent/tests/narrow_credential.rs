#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The node agent on its own narrow credential against a real hub (API
//! server + controller-manager signing client certificates) with the hub's
//! controllers running in-process: bootstrap with a token, acceptance by
//! annotation, a component whose file comes from a Secret, and everything
//! else the credential must not reach.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use flotilla_api::machine::{ComponentFile, ComponentSpec, ComponentState, KeyRef, Machine, MachineSpec};
use flotilla_core::kubeconfig::{self, Credential, KubeconfigSpec};
use flotilla_fleet_core::bootstrap_token::{self, BootstrapToken};
use flotilla_kok_core::machine_identity::{ACCEPTED_ANNOTATION, AGENT_KEY_ANNOTATION, MACHINE_LABEL};
use flotilla_localkube::{wait_for, Cluster, ClusterConfig};
use flotilla_node_agent::{process, NodeAgentConfig};
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_openapi::api::events::v1::Event as EventsV1;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

/// Kills, on drop (also when the test panics), the component processes the
/// agents recorded, if they are still those very processes.
struct Cleanup(Vec<PathBuf>, Mutex<Vec<(u32, u64)>>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for dir in &self.0 {
            flotilla_node_agent::kill_recorded(dir);
        }
        for (pid, ticks) in self.1.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            process::kill_now(*pid, *ticks);
        }
    }
}

/// A real bootstrap token in the Flotilla group and a kubeconfig using it.
async fn bootstrap_kubeconfig(hub: &Cluster, dir: &Path) -> PathBuf {
    let token = BootstrapToken::new("abcdef", "0123456789abcdef").unwrap();
    Api::<Secret>::namespaced(hub.client(), bootstrap_token::NAMESPACE)
        .create(&PostParams::default(), &token.fleet_secret().build())
        .await
        .unwrap();
    let path = dir.join("bootstrap.kubeconfig");
    std::fs::write(
        &path,
        kubeconfig::render(&KubeconfigSpec {
            name: "hub".into(),
            server: hub.server().into(),
            ca_pem: hub.ca().pem.cert_pem.clone(),
            credential: Credential::Token(token.token()),
        }),
    )
    .unwrap();
    path
}

fn forbidden<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> bool {
    match r {
        Err(kube::Error::Api(e)) => e.code == 403,
        other => {
            eprintln!("expected 403, got {other:?}");
            false
        }
    }
}

fn secret_file(path: &str, namespace: &str, name: &str) -> ComponentFile {
    ComponentFile {
        path: path.into(),
        secret_ref: Some(KeyRef { namespace: namespace.into(), name: name.into(), key: "data".into() }),
        ..Default::default()
    }
}

fn sleeper(files: Vec<ComponentFile>) -> MachineSpec {
    MachineSpec {
        components: vec![ComponentSpec {
            name: "sleeper".into(),
            binary: "/bin/sleep".into(),
            args: vec!["600".into()],
            files,
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn agent(machine: &str, bootstrap: &Path, state_dir: &Path) -> NodeAgentConfig {
    let mut config =
        NodeAgentConfig::bootstrapped(machine, Some(bootstrap.to_path_buf()), state_dir.to_path_buf());
    config.tick = Duration::from_millis(200);
    config.heartbeat = Duration::from_secs(1);
    config.resync = Duration::from_secs(1);
    config
}

#[tokio::test]
async fn a_node_agent_bootstraps_its_own_credential_and_reaches_only_what_its_machine_references() {
    let _ =
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(flotilla_localkube::TEST_LOG_DIRECTIVES)
            }))
            .with_test_writer()
            .try_init();
    let hub = Cluster::start(ClusterConfig::hub("hub")).await.unwrap();
    flotilla_hub::install(&hub.client()).await.unwrap();
    let _controllers = tokio::spawn({
        let client = hub.client();
        async move {
            let config = flotilla_hub::HubConfig { auto_accept: false, ..Default::default() };
            flotilla_hub::run(client, config).await.unwrap();
        }
    });
    let tmp = tempfile::tempdir().unwrap();
    let bootstrap = bootstrap_kubeconfig(&hub, tmp.path()).await;
    let (m1_dir, m3_dir) = (tmp.path().join("m1"), tmp.path().join("m3"));
    let cleanup = Cleanup(vec![m1_dir.clone(), m3_dir.clone()], Mutex::new(Vec::new()));

    let admin = hub.client();
    for ns in ["kok-a", "kok-b"] {
        Api::<Namespace>::all(admin.clone())
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
            )
            .await
            .unwrap();
    }
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), "kok-a");
    for (name, data) in [("referenced", "hello"), ("unreferenced", "secret!")] {
        let s = serde_json::from_value(json!({"metadata": {"name": name}, "stringData": {"data": data}}))
            .unwrap();
        secrets.create(&PostParams::default(), &s).await.unwrap();
    }
    let cm =
        serde_json::from_value(json!({"metadata": {"name": "settings"}, "data": {"data": "x=1"}})).unwrap();
    Api::<ConfigMap>::namespaced(admin.clone(), "kok-b").create(&PostParams::default(), &cm).await.unwrap();

    // The admin creates and accepts m1; m2 is someone else's machine.
    let machines: Api<Machine> = Api::all(admin.clone());
    let mut m1 = Machine::new(
        "m1",
        sleeper(vec![
            secret_file("data.txt", "kok-a", "referenced"),
            ComponentFile {
                path: "settings.conf".into(),
                config_map_ref: Some(KeyRef {
                    namespace: "kok-b".into(),
                    name: "settings".into(),
                    key: "data".into(),
                }),
                ..Default::default()
            },
        ]),
    );
    m1.metadata.annotations = Some([(ACCEPTED_ANNOTATION.to_string(), "true".to_string())].into());
    machines.create(&PostParams::default(), &m1).await.unwrap();
    machines.create(&PostParams::default(), &Machine::new("m2", MachineSpec::default())).await.unwrap();

    let m1_agent =
        tokio::spawn(flotilla_node_agent::run(agent("m1", &bootstrap, &m1_dir), std::future::pending()));

    // The component runs with its file rendered from the referenced Secret
    // (read with the agent's own credential), and the status is written.
    wait_for("m1's component to run", WAIT, || async {
        let m = machines.get("m1").await.unwrap();
        let running = m
            .status
            .and_then(|s| s.components.into_iter().find(|c| c.name == "sleeper"))
            .filter(|c| c.state == ComponentState::Running);
        if let Some(pid) = running.as_ref().and_then(|c| c.pid) {
            if let Some(ticks) = process::start_ticks(pid) {
                cleanup.1.lock().unwrap().push((pid, ticks));
            }
        }
        running.is_some()
    })
    .await;
    assert!(!m1_agent.is_finished());
    let workdir = m1_dir.join("components/sleeper");
    assert_eq!(std::fs::read_to_string(workdir.join("data.txt")).unwrap(), "hello");
    assert_eq!(std::fs::read_to_string(workdir.join("settings.conf")).unwrap(), "x=1");

    // It got its certificate through a bootstrap CSR, approved by the hub,
    // which bound the name to its key.
    let csrs: Api<CertificateSigningRequest> = Api::all(admin.clone());
    let ours = csrs.list(&ListParams::default().labels(&format!("{MACHINE_LABEL}=m1"))).await.unwrap();
    assert_eq!(ours.items.len(), 1);
    assert_eq!(ours.items[0].spec.username.as_deref(), Some("system:bootstrap:abcdef"));
    let m1_now = machines.get("m1").await.unwrap();
    assert!(m1_now.metadata.annotations.unwrap().contains_key(AGENT_KEY_ANNOTATION));

    // What the agent's own credential may and may not do.
    let narrow = flotilla_node_agent::client_from_kubeconfig(&m1_dir.join("hub.kubeconfig")).await.unwrap();
    let n_machines: Api<Machine> = Api::all(narrow.clone());
    let n_secrets: Api<Secret> = Api::namespaced(narrow.clone(), "kok-a");
    assert!(n_machines.get("m1").await.is_ok());
    assert!(n_secrets.get("referenced").await.is_ok());
    assert!(Api::<ConfigMap>::namespaced(narrow.clone(), "kok-b").get("settings").await.is_ok());
    assert!(forbidden(n_machines.get("m2").await));
    assert!(forbidden(n_machines.list(&ListParams::default()).await));
    let status = json!({"status": {"componentSummary": "9/9"}});
    assert!(forbidden(n_machines.patch_status("m2", &PatchParams::default(), &Patch::Merge(&status)).await));
    assert!(forbidden(
        n_machines.create(&PostParams::default(), &Machine::new("m9", Default::default())).await
    ));
    // It cannot change its own spec or annotations (e.g. accept another key).
    let annotate = json!({"metadata": {"annotations": {AGENT_KEY_ANNOTATION: "other"}}});
    assert!(forbidden(n_machines.patch("m1", &PatchParams::default(), &Patch::Merge(&annotate)).await));
    assert!(forbidden(n_secrets.get("unreferenced").await));
    assert!(forbidden(n_secrets.list(&ListParams::default()).await));
    assert!(forbidden(Api::<Secret>::all(narrow.clone()).list(&ListParams::default()).await));
    assert!(forbidden(
        Api::<Secret>::namespaced(narrow.clone(), "kube-system").get("bootstrap-token-abcdef").await
    ));

    // Another host (another key) cannot take over the name m1, even with a
    // valid bootstrap token and although m1 is accepted.
    let impostor =
        flotilla_node_agent::register::register("m1", &tmp.path().join("impostor"), Some(&bootstrap))
            .await
            .err()
            .expect("a second key for m1 is refused");
    assert!(impostor.to_string().contains("already held"), "{impostor}");

    // A spec change moves the access with it: the newly referenced Secret
    // becomes readable, the dropped one and the dropped namespace do not.
    let mut spec = m1_now.spec.clone();
    spec.components[0].files = vec![secret_file("data.txt", "kok-a", "unreferenced")];
    machines
        .patch("m1", &PatchParams::default(), &Patch::Merge(json!({"spec": {"components": spec.components}})))
        .await
        .unwrap();
    wait_for("access to follow the spec", WAIT, || async {
        n_secrets.get("unreferenced").await.is_ok()
            && forbidden(n_secrets.get("referenced").await)
            && forbidden(Api::<ConfigMap>::namespaced(narrow.clone(), "kok-b").get("settings").await)
    })
    .await;
    wait_for("the component to be restarted with the new file", WAIT, || async {
        std::fs::read_to_string(workdir.join("data.txt")).is_ok_and(|s| s == "secret!")
    })
    .await;

    // Its own credential records Events on m1 (in `default`, where a
    // cluster-scoped object's Events go), and nowhere else.
    for reason in ["ComponentStarted", "ComponentUpdated"] {
        wait_for(&format!("a {reason} Event on m1"), WAIT, || async {
            let events: Api<EventsV1> = Api::namespaced(admin.clone(), "default");
            events.list(&ListParams::default()).await.unwrap().items.iter().any(|e| {
                e.reason.as_deref() == Some(reason)
                    && e.reporting_instance.as_deref() == Some("m1")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("m1")
            })
        })
        .await;
    }
    let event: EventsV1 = serde_json::from_value(json!({
        "metadata": {"generateName": "m1-"}, "eventTime": "2026-01-01T00:00:00.000000Z",
        "reportingController": "flotilla-node-agent", "reportingInstance": "m1",
        "action": "Start", "reason": "ComponentStarted", "type": "Normal",
    }))
    .unwrap();
    assert!(forbidden(
        Api::<EventsV1>::namespaced(narrow.clone(), "kok-a").create(&PostParams::default(), &event).await
    ));

    // An unknown machine registers itself through its CSR but waits until
    // an admin accepts it.
    let m3_agent =
        tokio::spawn(flotilla_node_agent::run(agent("m3", &bootstrap, &m3_dir), std::future::pending()));
    wait_for("m3 to be registered, unaccepted", WAIT, || async {
        machines.get_opt("m3").await.unwrap().is_some()
    })
    .await;
    let pending = csrs.list(&ListParams::default().labels(&format!("{MACHINE_LABEL}=m3"))).await.unwrap();
    assert_eq!(pending.items.len(), 1);
    assert!(pending.items[0].status.as_ref().and_then(|s| s.certificate.as_ref()).is_none());
    assert!(!m3_dir.join("hub.kubeconfig").exists());
    assert!(!m3_agent.is_finished());
    let accept = json!({"metadata": {"annotations": {ACCEPTED_ANNOTATION: "true"}}});
    machines.patch("m3", &PatchParams::default(), &Patch::Merge(&accept)).await.unwrap();
    wait_for("m3's agent to get its certificate and report", WAIT, || async {
        machines.get("m3").await.unwrap().status.is_some_and(|s| s.last_heartbeat.is_some())
    })
    .await;
    let as_m3 = flotilla_node_agent::client_from_kubeconfig(&m3_dir.join("hub.kubeconfig")).await.unwrap();
    assert!(forbidden(Api::<Machine>::all(as_m3.clone()).get("m1").await));
    assert!(forbidden(Api::<Secret>::namespaced(as_m3, "kok-a").get("unreferenced").await));
    drop(cleanup);
}

#[tokio::test]
async fn an_auto_accepting_hub_registers_the_machine_and_the_agent_renews_without_restarting_components() {
    let mut hub_config = ClusterConfig::hub("hub");
    // The signer backdates certificates by 5 minutes but, for a duration
    // under 8 hours, counts it from now: a minute of validity puts the renewal
    // (at 70% of what the agent was given) within the test.
    hub_config.csr_signing_duration = Some(Duration::from_secs(60));
    let hub = Cluster::start(hub_config).await.unwrap();
    flotilla_hub::install(&hub.client()).await.unwrap();
    let _controllers = tokio::spawn({
        let client = hub.client();
        async move {
            let config = flotilla_hub::HubConfig { auto_accept: true, ..Default::default() };
            flotilla_hub::run(client, config).await.unwrap();
        }
    });
    let tmp = tempfile::tempdir().unwrap();
    let bootstrap = bootstrap_kubeconfig(&hub, tmp.path()).await;
    let state = tmp.path().join("r1");
    let cleanup = Cleanup(vec![state.clone()], Mutex::new(Vec::new()));
    let agent_task =
        tokio::spawn(flotilla_node_agent::run(agent("r1", &bootstrap, &state), std::future::pending()));

    // Registered by the hub (accepted, since it auto-accepts) on the first
    // request; the admin then gives it something to run.
    let machines: Api<Machine> = Api::all(hub.client());
    wait_for("r1 to be registered and reporting", WAIT, || async {
        machines.get_opt("r1").await.unwrap().is_some_and(|m| m.status.is_some())
    })
    .await;
    let m = machines.get("r1").await.unwrap();
    assert_eq!(m.metadata.annotations.unwrap().get(ACCEPTED_ANNOTATION).map(String::as_str), Some("true"));
    let spec = json!({"spec": {"components": sleeper(Vec::new()).components}});
    machines.patch("r1", &PatchParams::default(), &Patch::Merge(&spec)).await.unwrap();
    let pid = Mutex::new(None);
    wait_for("r1's component to run", WAIT, || async {
        let c = machines.get("r1").await.unwrap().status.and_then(|s| s.components.into_iter().next());
        let running = c.filter(|c| c.state == ComponentState::Running).and_then(|c| c.pid);
        if let Some(p) = running {
            if let Some(ticks) = process::start_ticks(p) {
                cleanup.1.lock().unwrap().push((p, ticks));
            }
        }
        *pid.lock().unwrap() = running;
        running.is_some()
    })
    .await;
    let pid = pid.into_inner().unwrap().unwrap();

    let first = std::fs::read_to_string(state.join("node-agent.crt")).unwrap();
    wait_for("a renewed certificate", Duration::from_secs(75), || async {
        std::fs::read_to_string(state.join("node-agent.crt")).is_ok_and(|c| c != first)
    })
    .await;
    // The renewal was asked for by the machine itself, under the one name
    // its RBAC allows.
    let csrs: Api<CertificateSigningRequest> = Api::all(hub.client());
    let renewal = csrs.get("flotilla-machine-r1-renewal").await.unwrap();
    assert_eq!(renewal.spec.username.as_deref(), Some("flotilla:machine:r1"));
    // The agent carries on with the new credential: status keeps coming, and
    // the component was adopted, not restarted.
    let renewed_at = k8s_openapi::jiff::Timestamp::now();
    wait_for("a status written after the renewal", WAIT, || async {
        let s = machines.get("r1").await.unwrap().status.unwrap();
        s.last_heartbeat.is_some_and(|t| t.0 > renewed_at)
    })
    .await;
    let c = machines.get("r1").await.unwrap().status.unwrap().components.into_iter().next().unwrap();
    assert_eq!((c.state, c.pid, c.restarts), (ComponentState::Running, Some(pid), 0));
    assert!(!agent_task.is_finished());
    let renewed = flotilla_node_agent::client_from_kubeconfig(&state.join("hub.kubeconfig")).await.unwrap();
    assert!(Api::<Machine>::all(renewed).get("r1").await.is_ok());
    drop(cleanup);
}
