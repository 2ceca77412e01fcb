#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The node agent runs a real node declared on its Machine
//! (`spec.realNodes`): the node joins a real cluster and runs a busybox pod,
//! imports the tarballs put in its `extraImagesDir` while it runs (each
//! once: a restarted agent imports nothing again), a killed kubelet is
//! repaired and counted, and removing the node from the spec leaves none of
//! its processes, namespace, cgroups or link behind.
//! Needs root and `scripts/node-runtime.sh`'s runtime, like localkube's
//! `real_nodes` test.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use flotilla_api::machine::{KeyRef, Machine, MachineSpec, RealNodeSpec, RealNodeStatus};
use flotilla_core::kubeconfig::{self, Credential, KubeconfigSpec};
use flotilla_core::pki::LeafSpec;
use flotilla_localkube::real_node::{NodeImages, RealNodes, BUSYBOX_IMAGE};
use flotilla_localkube::{node_is_ready, wait_for, Binaries, Cluster, ClusterConfig};
use flotilla_node_agent::{process, NodeAgentConfig, State};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, CustomResourceExt};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(120);
const MACHINE: &str = "worker-1";
const NODE: &str = "rn-agent-1";

/// Kills, on drop, every process the agent recorded, and whatever is left
/// in the node's cgroups (through the agent's group, removed on leave).
struct Cleanup(std::path::PathBuf, Option<tokio::task::JoinHandle<Result<(), flotilla_node_agent::Error>>>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        // The agent first, or it starts what is killed here again.
        if let Some(agent) = self.1.take() {
            agent.abort();
            std::thread::sleep(Duration::from_millis(500));
        }
        flotilla_node_agent::kill_recorded(&self.0);
        if let Ok(state) = State::load(&self.0) {
            if let Some(anchor) = state.real_nodes.anchor {
                // The anchor's death makes the group stale: the next real-node
                // group on the host removes its namespaces, cgroups and bridge.
                process::kill_now(anchor.pid, anchor.start_ticks);
            }
        }
    }
}

async fn real_node(client: &Client) -> Option<RealNodeStatus> {
    let m = Api::<Machine>::all(client.clone()).get(MACHINE).await.ok()?;
    m.status?.real_nodes.into_iter().find(|n| n.name == NODE)
}

/// The busybox tarball (a `docker save` archive) with its image named
/// `name` instead, written to a hidden file first and renamed to `out`
/// (the agent never sees half of it).
fn renamed_busybox(name: &str, out: &Path) {
    let tmp = out.with_file_name(format!(".{}.tmp", out.file_name().unwrap().to_string_lossy()));
    let mut archive =
        tar::Archive::new(std::fs::File::open(NodeImages::default_dir().join("busybox.tar")).unwrap());
    let mut builder = tar::Builder::new(std::fs::File::create(&tmp).unwrap());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let mut content = Vec::new();
        entry.read_to_end(&mut content).unwrap();
        if path.trim_start_matches("./") == "manifest.json" {
            let mut manifest: serde_json::Value = serde_json::from_slice(&content).unwrap();
            manifest[0]["RepoTags"] = json!([name]);
            content = serde_json::to_vec(&manifest).unwrap();
        }
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, &path, &content[..]).unwrap();
    }
    builder.into_inner().unwrap().sync_all().unwrap();
    std::fs::rename(&tmp, out).unwrap();
}

/// When the agent last tried `file` of the node's extra images.
fn tried_at(state_dir: &Path, file: &str) -> Option<i64> {
    let state = State::load(state_dir).unwrap();
    let node = state.real_nodes.nodes.iter().find(|n| n.name == NODE)?;
    node.extra_images.iter().find(|f| f.file == file).map(|f| f.tried_at)
}

async fn secret(client: &Client, name: &str, value: String) -> KeyRef {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "nodes");
    let s: Secret = serde_json::from_value(json!({
        "metadata": {"name": name}, "stringData": {"value": value}
    }))
    .unwrap();
    secrets.create(&PostParams::default(), &s).await.unwrap();
    KeyRef { namespace: "nodes".into(), name: name.into(), key: "value".into() }
}

fn cgroup_exists(name: &str) -> bool {
    ["/sys/fs/cgroup/memory", "/sys/fs/cgroup/cpu", "/sys/fs/cgroup/pids"]
        .iter()
        .any(|h| Path::new(h).join(name).exists())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_runs_repairs_and_removes_a_real_node() {
    let _ =
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(flotilla_localkube::TEST_LOG_DIRECTIVES)
            }))
            .with_test_writer()
            .try_init();
    // The hub, with the Machine CRD.
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
    // The node's cluster serves its API on a real-node bridge of the test;
    // the agent's node reaches it through its own group's gateway.
    let api_bridge = RealNodes::reserve().unwrap();
    let mut config = ClusterConfig::new("rna").for_real_nodes(api_bridge.gateway());
    config.wait_for_default_service_account = true;
    let cluster = Cluster::start(config).await.unwrap();
    let server = cluster.external_server().unwrap();

    let hc = hub.client();
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "nodes"}})).unwrap();
    Api::<Namespace>::all(hc.clone()).create(&PostParams::default(), &ns).await.unwrap();
    let kubeconfig_for = |user: &str, groups: &[&str]| {
        let cert = cluster.ca().issue(&LeafSpec::client(user, groups)).unwrap();
        kubeconfig::render(&KubeconfigSpec {
            name: "rna".into(),
            server: server.clone(),
            ca_pem: cluster.ca().pem.cert_pem.clone(),
            credential: Credential::ClientCert { cert_pem: cert.cert_pem, key_pem: cert.key_pem },
        })
    };
    let extra = tempfile::tempdir().unwrap();
    let spec = RealNodeSpec {
        name: NODE.into(),
        bin_dir: Binaries::locate().unwrap().dir().display().to_string(),
        images_dir: NodeImages::default_dir().display().to_string(),
        ca_ref: secret(&hc, "ca", cluster.ca().pem.cert_pem.clone()).await,
        kubelet_kubeconfig_ref: secret(
            &hc,
            "kubelet",
            kubeconfig_for(&format!("system:node:{NODE}"), &["system:nodes"]),
        )
        .await,
        kube_proxy_kubeconfig_ref: secret(&hc, "proxy", kubeconfig_for("system:kube-proxy", &[])).await,
        // Not made yet: nothing to import until it is.
        extra_images_dir: Some(extra.path().join("later").display().to_string()),
        ..Default::default()
    };

    let state_dir = tempfile::Builder::new().prefix("rna").tempdir_in("/tmp").unwrap();
    let extra_dir = extra.path().join("later");
    let mut cleanup = Cleanup(state_dir.path().to_path_buf(), None);
    let mut agent_config =
        NodeAgentConfig::new(MACHINE, hub.kubeconfig_path().to_path_buf(), state_dir.path().to_path_buf());
    agent_config.tick = Duration::from_millis(300);
    agent_config.heartbeat = Duration::from_secs(2);
    agent_config.stop_grace = Duration::from_secs(5);
    cleanup.1 = Some(tokio::spawn(flotilla_node_agent::run(agent_config.clone(), std::future::pending())));
    // The agent may have registered the Machine already: merge the spec in.
    let machine = Machine::new(MACHINE, MachineSpec { real_nodes: vec![spec], ..Default::default() });
    if let Err(kube::Error::Api(e)) = machines.create(&PostParams::default(), &machine).await {
        assert_eq!(e.code, 409, "{e:?}");
        let spec = json!({"spec": {"realNodes": machine.spec.real_nodes}});
        machines.patch(MACHINE, &PatchParams::default(), &Patch::Merge(&spec)).await.unwrap();
    }

    // The node joins and is Ready.
    let nodes: Api<Node> = Api::all(cluster.client());
    wait_for("the real node Ready", WAIT, || async {
        nodes.get_opt(NODE).await.ok().flatten().is_some_and(|n| node_is_ready(&n))
    })
    .await;
    let status = real_node(&hc).await.unwrap();
    assert_eq!(status.phase, "Running", "{status:?}");
    let cgroup = status.sandbox.as_deref().unwrap().rsplit(' ').next().unwrap().to_string();
    let ip = status.ip.clone().unwrap();

    // A busybox pod runs on it.
    let pods: Api<Pod> = Api::namespaced(cluster.client(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "hello"},
        "spec": {"nodeName": NODE, "containers": [{"name": "main", "image": BUSYBOX_IMAGE,
            "imagePullPolicy": "Never", "command": ["sh", "-c", "exec sleep 3600"]}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    wait_for("the busybox pod Running", WAIT, || async {
        pods.get("hello").await.ok().and_then(|p| p.status?.phase).as_deref() == Some("Running")
    })
    .await;

    // A tarball put in the extra images directory is imported while the
    // node runs, and reported.
    std::fs::create_dir_all(&extra_dir).unwrap();
    renamed_busybox("flotilla.local/first:1", &extra_dir.join("first.tar"));
    wait_for("the first extra image reported", WAIT, || async {
        real_node(&hc).await.is_some_and(|n| n.images == ["flotilla.local/first:1"])
    })
    .await;
    let first_tried = tried_at(state_dir.path(), "first.tar").unwrap();
    // A restarted agent imports the second tarball, not the first again.
    cleanup.1.take().unwrap().abort();
    tokio::time::sleep(Duration::from_millis(500)).await;
    cleanup.1 = Some(tokio::spawn(flotilla_node_agent::run(agent_config, std::future::pending())));
    renamed_busybox("flotilla.local/second:1", &extra_dir.join("second.tar"));
    wait_for("the second extra image reported after the agent's restart", WAIT, || async {
        real_node(&hc)
            .await
            .is_some_and(|n| n.images == ["flotilla.local/first:1", "flotilla.local/second:1"])
    })
    .await;
    assert_eq!(tried_at(state_dir.path(), "first.tar"), Some(first_tried), "imported once");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "second"},
        "spec": {"nodeName": NODE, "containers": [{"name": "main", "image": "flotilla.local/second:1",
            "imagePullPolicy": "Never", "command": ["sh", "-c", "exec sleep 3600"]}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    wait_for("the pod of the second extra image Running", WAIT, || async {
        pods.get("second").await.ok().and_then(|p| p.status?.phase).as_deref() == Some("Running")
    })
    .await;

    // The kubelet, killed by its pid, is started again and the repair counted.
    let kubelet = format!("{NODE}-kubelet");
    let machine_now = machines.get(MACHINE).await.unwrap();
    let component = machine_now.status.unwrap().components.into_iter().find(|c| c.name == kubelet).unwrap();
    let pid = component.pid.unwrap();
    let repairs_before = real_node(&hc).await.unwrap().repairs;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL)
        .unwrap();
    wait_for("the kubelet repaired and counted", WAIT, || async {
        real_node(&hc).await.is_some_and(|n| {
            n.repairs > repairs_before && n.last_repair.as_deref().is_some_and(|r| r.contains(&kubelet))
        })
    })
    .await;
    wait_for("the real node Ready again with a new kubelet", WAIT, || async {
        let m = machines.get(MACHINE).await.unwrap();
        let new_pid =
            m.status.and_then(|s| s.components.into_iter().find(|c| c.name == kubelet)).and_then(|c| c.pid);
        new_pid.is_some_and(|p| p != pid)
            && nodes.get_opt(NODE).await.ok().flatten().is_some_and(|n| node_is_ready(&n))
    })
    .await;

    // Removed from the spec: nothing of it stays on the host.
    let pids_before: Vec<u32> = State::load(state_dir.path())
        .unwrap()
        .components
        .iter()
        .filter(|c| c.alive())
        .map(|c| c.pid)
        .collect();
    assert_eq!(pids_before.len(), 4, "{pids_before:?}");
    // A merge patch: the spec was written by create, not by an apply.
    let removed = json!({"spec": {"realNodes": null}});
    let patched = machines.patch(MACHINE, &PatchParams::default(), &Patch::Merge(&removed)).await.unwrap();
    assert!(patched.spec.real_nodes.is_empty(), "{:?}", patched.spec);
    wait_for("the real node's sandbox removed", WAIT, || async {
        let state = State::load(state_dir.path()).unwrap();
        state.real_nodes.nodes.is_empty() && state.real_nodes.anchor.is_none() && state.components.is_empty()
    })
    .await;
    let netns = format!("/run/netns/flt{}n0", status_slot(&ip));
    assert!(!Path::new(&netns).exists(), "{netns} is left");
    assert!(!cgroup_exists(&cgroup), "cgroup {cgroup} is left");
    let link = format!("/sys/class/net/flt{}v0", status_slot(&ip));
    assert!(!Path::new(&link).exists(), "{link} is left");
    for pid in pids_before {
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "process {pid} is left");
    }
    assert!(!state_dir.path().join("flt-rn-nodes").exists());
    drop(cleanup);
    drop(api_bridge);
}

/// The slot of a node address 172.30.S.x.
fn status_slot(ip: &str) -> String {
    ip.split('.').nth(2).unwrap().to_string()
}
