#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The test environment against real binaries.

use flotilla_localkube::wait_for;
use std::collections::BTreeMap;
use std::io::BufRead;
use std::time::Duration;

use flotilla_localkube::process::pid_alive;
use flotilla_localkube::{Cluster, ClusterConfig, Etcd, NodeConfig};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::{Namespace, Node, Secret};
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

fn deployment(name: &str, replicas: i32) -> Deployment {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "nginx",
                    "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}
            }
        }
    }))
    .unwrap()
}

#[tokio::test]
async fn hollow_nodes_have_chosen_capacity_and_run_a_deployment() {
    let cluster = Cluster::start(
        ClusterConfig::new("deploy").with_node(
            NodeConfig::new("deploy-node-1")
                .capacity(3, "5Gi", 40)
                .label("topology.kubernetes.io/zone", "zone-a"),
        ),
    )
    .await
    .unwrap();
    let client = cluster.client();

    let node: Node = Api::all(client.clone()).get("deploy-node-1").await.unwrap();
    let capacity = node.status.unwrap().capacity.unwrap();
    assert_eq!(capacity["cpu"].0, "3");
    assert_eq!(capacity["memory"].0, "5Gi");
    assert_eq!(capacity["pods"].0, "40");
    assert_eq!(node.metadata.labels.unwrap()["topology.kubernetes.io/zone"], "zone-a");

    let deployments: Api<Deployment> = Api::namespaced(client, "default");
    deployments.create(&PostParams::default(), &deployment("web", 3)).await.unwrap();
    wait_for("3 ready replicas", Duration::from_secs(60), || async {
        let d = deployments.get("web").await.unwrap();
        d.status.and_then(|s| s.ready_replicas) == Some(3)
    })
    .await;
}

#[tokio::test]
async fn csrs_are_signed_and_bootstrap_tokens_authenticate() {
    let cluster = Cluster::start(ClusterConfig::hub("csr")).await.unwrap();
    let client = cluster.client();

    // A real bootstrap token.
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "bootstrap-token-abcdef", "namespace": "kube-system"},
        "type": "bootstrap.kubernetes.io/token",
        "stringData": {"token-id": "abcdef", "token-secret": "0123456789abcdef",
            "usage-bootstrap-authentication": "true", "usage-bootstrap-signing": "true"}
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), "kube-system")
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let mut token_config = cluster.admin_config().clone();
    token_config.auth_info = kube::config::AuthInfo {
        token: Some("abcdef.0123456789abcdef".to_string().into()),
        ..Default::default()
    };
    let token_client = kube::Client::try_from(token_config).unwrap();

    // The bootstrap identity may create a CSR (the system:node-bootstrapper role).
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, "flotilla:agent:test");
    let csr_pem = params.serialize_request(&key).unwrap().pem().unwrap();
    let csr: CertificateSigningRequest = serde_json::from_value(serde_json::json!({
        "apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
        "metadata": {"name": "test-csr"},
        "spec": {"request": base64(&csr_pem),
            "signerName": "kubernetes.io/kube-apiserver-client",
            "usages": ["digital signature", "key encipherment", "client auth"]}
    }))
    .unwrap();
    let csrs_as_bootstrap: Api<CertificateSigningRequest> = Api::all(token_client);
    // Authenticated as the token's identity, and RBAC applies to it...
    let err = csrs_as_bootstrap.create(&PostParams::default(), &csr).await.unwrap_err();
    assert!(err.to_string().contains("system:bootstrap:abcdef"), "{err}");
    // ...so once bootstrappers may create CSRs, it can.
    let binding: ClusterRoleBinding = serde_json::from_value(serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "bootstrappers-create-csrs"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
            "name": "system:node-bootstrapper"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group",
            "name": "system:bootstrappers"}]
    }))
    .unwrap();
    Api::<ClusterRoleBinding>::all(client.clone()).create(&PostParams::default(), &binding).await.unwrap();
    wait_for("RBAC to allow the bootstrap token", Duration::from_secs(10), || async {
        csrs_as_bootstrap.create(&PostParams::default(), &csr).await.is_ok()
    })
    .await;

    // Approve as admin; the controller-manager signs it with the cluster CA.
    let csrs: Api<CertificateSigningRequest> = Api::all(client);
    let mut current = csrs.get("test-csr").await.unwrap();
    current.status = Some(
        serde_json::from_value(serde_json::json!({"conditions": [{
        "type": "Approved", "status": "True", "reason": "Test", "message": "approved by test"}]}))
        .unwrap(),
    );
    csrs.replace_subresource("approval", "test-csr", &PostParams::default(), &current).await.unwrap();
    wait_for("the CSR to be signed", Duration::from_secs(30), || async {
        let c = csrs.get("test-csr").await.unwrap();
        c.status.and_then(|s| s.certificate).is_some()
    })
    .await;
}

fn base64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test]
async fn dropping_a_cluster_stops_all_its_processes_and_removes_its_dir() {
    let cluster = Cluster::start(ClusterConfig::new("drop").with_nodes(1)).await.unwrap();
    let info = cluster.info();
    let names: Vec<&str> = info.processes.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "drop-node-1"]);
    let pids: Vec<u32> = info.processes.iter().filter_map(|p| p.pid).collect();
    assert_eq!(pids.len(), 5);
    assert!(pids.iter().all(|p| pid_alive(*p)));
    assert!(info.dir.exists());
    drop(cluster);
    for pid in pids {
        assert!(!pid_alive(pid), "pid {pid} survived the drop");
    }
    assert!(!info.dir.exists());
}

#[tokio::test]
async fn killed_test_process_leaves_no_orphans() {
    // Everything the holder leaves behind on disk goes into this directory.
    let scratch = tempfile::tempdir().unwrap();
    let mut holder = std::process::Command::new(env!("CARGO_BIN_EXE_localkube-hold"))
        .arg("orphan")
        .env("TMPDIR", scratch.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = holder.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        std::io::BufReader::new(stdout).read_line(&mut line).unwrap();
        line
    })
    .await
    .unwrap();
    let report: serde_json::Value =
        serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("localkube-hold printed {line:?}: {e}"));
    let pids: Vec<u32> = serde_json::from_value(report["pids"].clone()).unwrap();
    let etcd_data = std::path::PathBuf::from(report["etcd_data"].as_str().unwrap());
    assert_eq!(pids.len(), 5, "etcd, apiserver, controller-manager, scheduler, node");
    assert!(pids.iter().all(|p| pid_alive(*p)));

    // SIGKILL: no destructor runs; only the kernel can clean up.
    holder.kill().unwrap();
    holder.wait().unwrap();
    wait_for("every child of the killed process to exit", Duration::from_secs(10), || async {
        pids.iter().all(|p| !pid_alive(*p))
    })
    .await;
    if let Some(parent) = etcd_data.parent().filter(|p| p.starts_with("/dev/shm")) {
        std::fs::remove_dir_all(parent).unwrap();
    }
}

#[tokio::test]
async fn clusters_sharing_an_etcd_are_isolated_by_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let binaries = flotilla_localkube::Binaries::locate().unwrap();
    let etcd = Etcd::start(&binaries, dir.path()).await.unwrap();
    let a =
        Cluster::start(ClusterConfig::apiserver_only("shared-a").with_etcd(etcd.client_url())).await.unwrap();
    let b =
        Cluster::start(ClusterConfig::apiserver_only("shared-b").with_etcd(etcd.client_url())).await.unwrap();
    let ns = Namespace {
        metadata: ObjectMeta { name: Some("only-in-a".into()), ..Default::default() },
        ..Default::default()
    };
    Api::<Namespace>::all(a.client()).create(&PostParams::default(), &ns).await.unwrap();
    assert!(Api::<Namespace>::all(b.client()).get_opt("only-in-a").await.unwrap().is_none());
    assert!(Api::<Namespace>::all(a.client()).get_opt("only-in-a").await.unwrap().is_some());
    // Each has its own CA: a's admin credential means nothing to b.
    let a_kubeconfig = Kubeconfig::read_from(a.kubeconfig_path()).unwrap();
    let mut cross =
        kube::Config::from_custom_kubeconfig(a_kubeconfig, &KubeConfigOptions::default()).await.unwrap();
    cross.cluster_url = b.server().parse().unwrap();
    let cross_client = kube::Client::try_from(cross).unwrap();
    assert!(Api::<Namespace>::all(cross_client).list(&Default::default()).await.is_err());
}

#[tokio::test]
async fn a_stopped_apiserver_comes_back_with_its_data() {
    let mut cluster = Cluster::start(ClusterConfig::apiserver_only("restart")).await.unwrap();
    let client = cluster.client();
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some("survives".into()),
            labels: Some(BTreeMap::from([("a".to_string(), "b".to_string())])),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.unwrap();
    cluster.stop("kube-apiserver").unwrap();
    assert!(Api::<Namespace>::all(client.clone()).get("survives").await.is_err());
    cluster.restart("kube-apiserver").await.unwrap();
    assert!(Api::<Namespace>::all(client).get("survives").await.is_ok());
}

#[tokio::test]
async fn invalid_configuration_is_refused_before_starting_anything() {
    let err = Cluster::start(ClusterConfig::new("Not_A_Name")).await.unwrap_err().to_string();
    assert!(err.contains("DNS label"), "{err}");
    let err = Cluster::start(ClusterConfig::hub("hub").with_nodes(1)).await.unwrap_err().to_string();
    assert!(err.contains("all controllers"), "{err}");
}
