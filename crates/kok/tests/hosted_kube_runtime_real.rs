#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The `Kubernetes` runtime for real: a meta cluster with two real nodes
//! (containerd, kubelet, kube-proxy; CoreDNS) runs a hosted cluster's etcd
//! as a StatefulSet and its control plane as Deployments, from local
//! images of the cached binaries (`scripts/control-plane-images.sh`). The
//! API server is exposed by a NodePort: the operator reaches it there
//! (checking the certificate against the Service's name), so add-ons are
//! applied, the cluster registers in the fleet, kubectl works through the
//! admin kubeconfig, and a NodePool gives the cluster a real node of its
//! own where a pod runs and logs. Needs root and `scripts/node-runtime.sh`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use flotilla_api::cluster::ManagedCluster;
use flotilla_api::kok::{conditions, HostedCluster, HostedClusterPhase};
use flotilla_api::machine::Machine;
use flotilla_api::node_pool::NodePool;
use flotilla_kok::etcd::EtcdOperator;
use flotilla_kok::hosted::HostedOperator;
use flotilla_kok::hosted_addons::apply_manifests;
use flotilla_kok::kube_runtime::KubeRuntimeConfig;
use flotilla_kok_core::addons::{self, COREDNS};
use flotilla_kok_core::etcd_kube::EtcdKubeConfig;
use flotilla_kok_core::hosted::{admin_secret_name, HostedOperatorConfig};
use flotilla_kok_core::kube_runtime::{ApiExposure, ImageConfig};
use flotilla_kok_core::node_pool::rollout_state;
use flotilla_localkube::real_node::{NodeImages, RealNodeConfig, RealNodes, BUSYBOX_IMAGE, CLUSTER_DOMAIN};
use flotilla_localkube::{wait_for, Binaries, Cluster, ClusterConfig};
use flotilla_node_agent::NodeAgentConfig;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(300);
const NS: &str = "tenants";
const NAME: &str = "real-k";

/// The base images (sandbox, busybox, CoreDNS) and the control-plane
/// images, as one image directory for the meta cluster's nodes.
fn meta_images(dir: &Path) -> NodeImages {
    let base = NodeImages::default_dir();
    let version = flotilla_localkube::DEFAULT_K8S_VERSION.trim_start_matches('v');
    let control_plane = base.parent().unwrap().join("control-plane-images").join(format!("v{version}"));
    assert!(
        control_plane.join(".complete").is_file(),
        "{} is missing: run scripts/control-plane-images.sh",
        control_plane.display()
    );
    std::fs::create_dir_all(dir).unwrap();
    let mut list = String::new();
    for source in [&base, &control_plane] {
        let text = std::fs::read_to_string(source.join("images.list")).unwrap();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let file = line.split_whitespace().next().unwrap();
            std::os::unix::fs::symlink(source.join(file), dir.join(file)).unwrap();
            list.push_str(line);
            list.push('\n');
        }
    }
    std::fs::write(dir.join("images.list"), list).unwrap();
    std::fs::write(dir.join(".complete"), "test\n").unwrap();
    NodeImages::in_dir(dir).unwrap()
}

/// The meta cluster's own DNS (the hosted control plane finds etcd by
/// name): the CoreDNS add-on Flotilla renders, for localkube's network.
async fn meta_dns(client: &Client) {
    let mut hc: HostedCluster = serde_json::from_value(json!({
        "apiVersion": "kok.flotilla.io/v1alpha1", "kind": "HostedCluster", "metadata": {"name": "meta"},
        "spec": {"version": "1.37.2", "etcd": {"clusterRef": "e"}},
    }))
    .unwrap();
    hc.spec.network.service_cidr = "10.0.0.0/24".into();
    hc.spec.network.cluster_domain = CLUSTER_DOMAIN.into();
    let addon = flotilla_api::kok::Addon { name: COREDNS.into(), version: None };
    let manifests = addons::manifests(&addon, &hc, "unused.unused").unwrap();
    apply_manifests(client, &manifests).await.unwrap();
}

/// The last lines of every log the node agent's components wrote.
fn log_tails(state_dir: &Path) -> String {
    let mut out = String::new();
    for entry in std::fs::read_dir(state_dir.join("logs")).into_iter().flatten().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let tail: Vec<&str> =
            text.lines().rev().filter(|l| !l.contains("Unable to register mirror pod")).take(15).collect();
        out += &format!(
            "--- {}\n{}\n",
            entry.path().display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    out
}

/// Stops the operators and the node agent, then what it started.
struct Cleanup {
    tasks: Vec<tokio::task::AbortHandle>,
    state_dir: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        std::thread::sleep(Duration::from_millis(300));
        flotilla_node_agent::kill_recorded(&self.state_dir);
        flotilla_node_agent::remove_real_nodes(&self.state_dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hosted_control_plane_in_real_pods_serves_through_a_node_port_and_gets_a_real_node() {
    let _ =
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(flotilla_localkube::TEST_LOG_DIRECTIVES)
            }))
            .with_test_writer()
            .try_init();
    let tmp = tempfile::tempdir().unwrap();
    let binaries = Binaries::locate().unwrap();
    let mut meta_nodes =
        RealNodes::reserve_with(binaries.clone(), meta_images(&tmp.path().join("images"))).unwrap();
    let gateway = meta_nodes.gateway();
    let mut config = ClusterConfig::new("meta").for_real_nodes(gateway);
    config.wait_for_default_service_account = true;
    let meta = Cluster::start(config).await.unwrap();
    let client = meta.client();
    meta_nodes
        .start(
            &meta,
            vec![RealNodeConfig::new("meta-a"), RealNodeConfig::new("meta-b")],
            Duration::from_secs(120),
        )
        .await
        .unwrap();
    meta_dns(&client).await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in flotilla_api::crds() {
        crds.patch(&crd.name_any(), &PatchParams::apply("test").force(), &Patch::Apply(&crd)).await.unwrap();
    }
    let machines: Api<Machine> = Api::all(client.clone());
    wait_for("the CRDs to be served", WAIT, || async { machines.list(&Default::default()).await.is_ok() })
        .await;
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}});
    Api::<Namespace>::all(client.clone())
        .patch(NS, &PatchParams::apply("test"), &Patch::Apply(&ns))
        .await
        .unwrap();

    // The operators, with the local images and the API behind a NodePort;
    // a node agent for the hosted cluster's own worker.
    let state_dir = tmp.path().join("w1");
    let mut cleanup = Cleanup { tasks: Vec::new(), state_dir: state_dir.clone() };
    let etcd = EtcdOperator {
        kube: EtcdKubeConfig {
            image_repository: "flotilla.local/etcd".into(),
            pull_policy: Some("Never".into()),
            health_probes: true,
        },
        resync: Duration::from_secs(2),
        ..Default::default()
    };
    let hosted = HostedOperator {
        plan: HostedOperatorConfig {
            versions: BTreeMap::from([("1.37.2".to_string(), binaries.dir().to_path_buf())]),
            ..Default::default()
        },
        resync: Duration::from_secs(2),
        kube_runtime: KubeRuntimeConfig {
            images: ImageConfig { registry: "flotilla.local".into(), pull_policy: Some("Never".into()) },
            health_probes: true,
            expose: ApiExposure::NodePort,
        },
        node_images_dir: NodeImages::default_dir(),
        ..Default::default()
    };
    cleanup.tasks.push(tokio::spawn(flotilla_kok::etcd::run(client.clone(), etcd)).abort_handle());
    cleanup
        .tasks
        .push(tokio::spawn(flotilla_kok::hosted::run(client.clone(), hosted.clone())).abort_handle());
    cleanup.tasks.push(tokio::spawn(flotilla_kok::node_pool::run(client.clone(), hosted)).abort_handle());
    let machine = json!({"apiVersion": "kok.flotilla.io/v1alpha1", "kind": "Machine",
        "metadata": {"name": "w1"}, "spec": {"address": gateway.to_string()}});
    machines.create(&PostParams::default(), &serde_json::from_value(machine).unwrap()).await.unwrap();
    let mut agent = NodeAgentConfig::new("w1", meta.kubeconfig_path().to_path_buf(), state_dir.clone());
    agent.tick = Duration::from_millis(300);
    agent.heartbeat = Duration::from_secs(2);
    agent.stop_grace = Duration::from_secs(5);
    cleanup.tasks.push(tokio::spawn(flotilla_node_agent::run(agent, std::future::pending())).abort_handle());

    // etcd and the control plane, all in real pods.
    let etcd: serde_json::Value = json!({"apiVersion": "kok.flotilla.io/v1alpha1", "kind": "EtcdCluster",
        "metadata": {"name": "real-k-etcd", "namespace": NS},
        "spec": {"members": 1, "version": "3.7.4", "runtime": "Kubernetes"}});
    apply_manifests(&client, &[etcd]).await.unwrap();
    let hc = json!({"apiVersion": "kok.flotilla.io/v1alpha1", "kind": "HostedCluster",
        "metadata": {"name": NAME, "namespace": NS},
        "spec": {"version": "1.37.2", "etcd": {"clusterRef": "real-k-etcd"},
                 "controlPlane": {"runtime": "Kubernetes"}, "addons": [{"name": COREDNS}]}});
    apply_manifests(&client, &[hc]).await.unwrap();
    let clusters: Api<HostedCluster> = Api::namespaced(client.clone(), NS);
    let mut last = None;
    let ready = tokio::time::timeout(WAIT, async {
        loop {
            let hc = clusters.get(NAME).await.unwrap();
            if hc.status.as_ref().and_then(|s| s.phase) == Some(HostedClusterPhase::Ready) {
                return hc;
            }
            last = hc.status.clone();
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
    .await;
    let pods_report = || async {
        let pods = Api::<Pod>::all(client.clone()).list(&Default::default()).await.unwrap();
        pods.items
            .iter()
            .map(|p| {
                format!(
                    "{}/{}: {:?}",
                    p.namespace().unwrap_or_default(),
                    p.name_any(),
                    p.status.as_ref().and_then(|s| s.container_statuses.clone())
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let Ok(hc) = ready else {
        panic!("never Ready: {last:#?}\npods:\n{}", pods_report().await);
    };
    let status = hc.status.clone().unwrap();
    let endpoint = status.endpoint.clone().unwrap();
    assert!(endpoint.starts_with("https://172.30."), "the NodePort on a meta node: {endpoint}");
    let addons_applied = hc.condition(conditions::ADDONS_APPLIED).unwrap();
    assert_eq!(addons_applied.status, "True", "{addons_applied:?}");
    assert!(status.addons.iter().any(|a| a.name == COREDNS), "{:?}", status.addons);

    // kubectl through the NodePort with the admin kubeconfig.
    let admin = Api::<Secret>::namespaced(client.clone(), NS).get(&admin_secret_name(NAME)).await.unwrap();
    let admin = admin.data.unwrap()["kubeconfig"].0.clone();
    let admin_path = tmp.path().join("admin.kubeconfig");
    std::fs::write(&admin_path, &admin).unwrap();
    let kubectl = |args: &[&str]| {
        let out = std::process::Command::new(binaries.path("kubectl"))
            .arg(format!("--kubeconfig={}", admin_path.display()))
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    };
    let (ok, out) = kubectl(&["get", "--raw", "/readyz"]);
    assert!(ok && out.trim() == "ok", "{out}");

    // It joined the fleet as a push member at that endpoint.
    let member = Api::<ManagedCluster>::all(client.clone()).get(NAME).await.unwrap();
    assert_eq!(member.spec.api_endpoint.as_deref(), Some(endpoint.as_str()));

    // A real node of its own, and a pod on it.
    let pools: Api<NodePool> = Api::namespaced(client.clone(), NS);
    let pool = json!({"apiVersion": "kok.flotilla.io/v1alpha1", "kind": "NodePool",
        "metadata": {"name": "real-k-workers", "namespace": NS},
        "spec": {"clusterRef": NAME, "replicas": 1}});
    apply_manifests(&client, &[pool]).await.unwrap();
    let joined = tokio::time::timeout(WAIT, async {
        loop {
            let ready = pools.get("real-k-workers").await.ok().and_then(|p| p.status).is_some_and(|s| {
                s.ready_nodes == 1 && s.rollout.is_some_and(|r| r.state == rollout_state::COMPLETE)
            });
            if ready {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
    .await;
    if joined.is_err() {
        let pool = pools.get("real-k-workers").await.ok().and_then(|p| p.status);
        let machine = machines.get("w1").await.ok().and_then(|m| m.status);
        panic!("the pool's node never Ready: {pool:#?}\n{machine:#?}\nlogs:\n{}", log_tails(&state_dir));
    }
    let inside = flotilla_kok::hosted_addons::business_client(&admin).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(inside, "default");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "hello"},
        "spec": {"containers": [{"name": "main", "image": BUSYBOX_IMAGE, "imagePullPolicy": "Never",
            "command": ["sh", "-c", "echo hello from the hosted cluster; exec sleep 3600"]}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    wait_for("the pod Running on the hosted cluster's node", WAIT, || async {
        pods.get("hello").await.ok().and_then(|p| p.status?.phase).as_deref() == Some("Running")
    })
    .await;
    let (ok, out) = kubectl(&["logs", "hello"]);
    assert!(ok && out.contains("hello from the hosted cluster"), "{out}");
    let node = pods.get("hello").await.unwrap().spec.unwrap().node_name.unwrap();
    assert_eq!(node, "real-k-workers-0");

    drop(cleanup);
    drop(meta_nodes);
    drop(meta);
}
