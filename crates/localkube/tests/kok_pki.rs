#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A hosted control plane's certificates and command lines
//! (`flotilla_kok_core`) against the real binaries: etcd with peer and
//! client TLS, and kube-apiserver, kube-controller-manager and
//! kube-scheduler started with exactly the rendered arguments and the
//! Secret data written out as files.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use flotilla_core::kubeconfig::{self, Credential, KubeconfigSpec};
use flotilla_core::pki::{CertificateAuthority, LeafSpec};
use flotilla_kok_core::pki::{keys, ControlPlanePki, EtcdMemberHosts, PkiInputs};
use flotilla_kok_core::render::{
    apiserver_args, component_secret_keys, controller_manager_args, etcd_args, scheduler_args, Component,
    ControlPlaneLayout, EtcdMemberLayout, EtcdPeer, InitialClusterState, DEFAULT_CONTROLLERS,
};
use flotilla_localkube::ports::free_port;
use flotilla_localkube::{wait_for, Binaries, ManagedProcess, ProcessSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::Client;

const START_ATTEMPTS: usize = 3;
const READY_TIMEOUT: Duration = Duration::from_secs(90);

struct ControlPlane {
    _dir: tempfile::TempDir,
    pki: ControlPlanePki,
    server: String,
    /// etcd, kube-apiserver, kube-controller-manager, kube-scheduler.
    processes: Vec<ManagedProcess>,
}

async fn client_from_yaml(yaml: &str) -> Client {
    let kubeconfig = Kubeconfig::from_yaml(yaml).unwrap();
    let mut config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.unwrap();
    config.connect_timeout = Some(Duration::from_secs(2));
    Client::try_from(config).unwrap()
}

/// Writes every Secret key as a file, as a node agent would.
fn write_secret_files(dir: &Path, data: &BTreeMap<String, Vec<u8>>) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).unwrap();
    for (key, value) in data {
        let path = dir.join(key);
        std::fs::write(&path, value).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

fn read_secret_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap()))
        .collect()
}

/// GET `path` until it answers `ok`; Err(log tail) if a process exits.
async fn wait_ok(client: &Client, path: &str, processes: &mut [ManagedProcess]) -> Result<(), String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        for p in processes.iter_mut() {
            p.check_running().map_err(|e| e.to_string())?;
        }
        let request = http::Request::get(path).body(Vec::new()).unwrap();
        let last = match client.request_text(request).await {
            Ok(body) if body.trim() == "ok" => return Ok(()),
            Ok(body) => body,
            Err(e) => e.to_string(),
        };
        assert!(Instant::now() < deadline, "timed out waiting for {path}: {last}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Generates the PKI for fresh ports, writes it out, starts the four
/// processes with the rendered arguments and waits until each is healthy.
async fn try_start(binaries: &Binaries) -> Result<ControlPlane, String> {
    let dir = tempfile::Builder::new().prefix("flotilla-kok-pki-").tempdir().unwrap();
    let port = || free_port().unwrap();
    let (etcd_client, etcd_peer, api, cm, sched) = (port(), port(), port(), port(), port());
    let server = format!("https://127.0.0.1:{api}");
    let inputs = PkiInputs {
        server: server.clone(),
        component_server: None,
        endpoint_hosts: vec!["127.0.0.1".into()],
        service_cidr: "10.0.0.0/24".into(),
        cluster_domain: "cluster.local".into(),
        etcd_members: vec![EtcdMemberHosts { name: "etcd-0".into(), hosts: vec!["127.0.0.1".into()] }],
    };
    let generated = ControlPlanePki::generate("kok-pki", &inputs).unwrap();
    let pki_dir = dir.path().join("pki");
    write_secret_files(&pki_dir, &generated.to_secret_data());
    // What the processes run with is what an operator reloads from the Secret.
    let pki = ControlPlanePki::from_secret_data("kok-pki", &read_secret_files(&pki_dir)).unwrap();
    // Each process gets a directory with only the files its component
    // needs, as a node agent would give it: that must be enough.
    let data = pki.to_secret_data();
    let component_dir = |component: Component| {
        let name = match &component {
            Component::Etcd(member) => member.clone(),
            other => format!("{other:?}"),
        };
        let subset: BTreeMap<String, Vec<u8>> = component_secret_keys(&component)
            .into_iter()
            .map(|key| {
                let value = data[&key].clone();
                (key, value)
            })
            .collect();
        let path = dir.path().join(format!("{name}-pki"));
        write_secret_files(&path, &subset);
        path
    };

    let member = EtcdPeer {
        name: "etcd-0".into(),
        peer_url: format!("https://127.0.0.1:{etcd_peer}"),
        client_url: format!("https://127.0.0.1:{etcd_client}"),
    };
    let etcd_layout = EtcdMemberLayout {
        data_dir: dir.path().join("etcd-data"),
        pki_dir: component_dir(Component::Etcd("etcd-0".into())),
        listen_client_urls: vec![],
        listen_peer_urls: vec![],
        quota_backend_bytes: Some(2 << 30),
        cluster_token: "kok-pki".into(),
    };
    let layout = ControlPlaneLayout {
        name: "kok-pki".into(),
        pki_dir: component_dir(Component::KubeApiserver),
        bind_address: "127.0.0.1".into(),
        advertise_address: "127.0.0.1".into(),
        apiserver_port: api,
        controller_manager_port: cm,
        scheduler_port: sched,
        service_cidr: inputs.service_cidr.clone(),
        pod_cidr: Some("10.244.0.0/16".into()),
        cluster_domain: inputs.cluster_domain.clone(),
        etcd_servers: vec![member.client_url.clone()],
        etcd_prefix: "/registry".into(),
        leader_elect: false,
        controllers: DEFAULT_CONTROLLERS.into(),
        extra_args: Default::default(),
    };
    let spawn = |name: &str, args: Vec<String>| {
        let log = dir.path().join("logs").join(format!("{name}.log"));
        ManagedProcess::spawn(ProcessSpec::new(name, binaries.path(name), log).args(args)).unwrap()
    };
    let mut processes = vec![
        spawn(
            "etcd",
            etcd_args(&member, std::slice::from_ref(&member), &etcd_layout, InitialClusterState::New),
        ),
        spawn("kube-apiserver", apiserver_args(&layout)),
    ];
    let admin = client_from_yaml(&pki.kubeconfigs[keys::ADMIN_KUBECONFIG]).await;
    // /readyz includes the apiserver's etcd check: it passes only once the
    // apiserver reaches etcd over mutual TLS.
    wait_ok(&admin, "/readyz", &mut processes).await?;
    let cm_layout =
        ControlPlaneLayout { pki_dir: component_dir(Component::KubeControllerManager), ..layout.clone() };
    let scheduler_layout = ControlPlaneLayout { pki_dir: component_dir(Component::KubeScheduler), ..layout };
    processes.push(spawn("kube-controller-manager", controller_manager_args(&cm_layout)));
    processes.push(spawn("kube-scheduler", scheduler_args(&scheduler_layout)));
    for port in [cm, sched] {
        // Their serving certificates verify against the cluster CA (the
        // admin kubeconfig's), on the address the layout bound them to.
        let mut yaml = pki.kubeconfigs[keys::ADMIN_KUBECONFIG].clone();
        yaml = yaml.replace(&server, &format!("https://127.0.0.1:{port}"));
        wait_ok(&client_from_yaml(&yaml).await, "/healthz", &mut processes).await?;
    }
    Ok(ControlPlane { _dir: dir, pki, server, processes })
}

async fn start() -> ControlPlane {
    let binaries = Binaries::locate().unwrap();
    let mut last = String::new();
    for _ in 0..START_ATTEMPTS {
        match try_start(&binaries).await {
            Ok(cp) => return cp,
            // Another test process took one of our ports in between.
            Err(e) if e.contains("address already in use") => last = e,
            Err(e) => panic!("{e}"),
        }
    }
    panic!("ports kept clashing: {last}")
}

fn status_code(err: kube::Error) -> u16 {
    match err {
        kube::Error::Api(status) => status.code,
        other => panic!("expected an API error, got {other}"),
    }
}

#[tokio::test]
async fn rendered_pki_and_args_run_a_real_control_plane_that_trusts_only_its_own_ca() {
    let mut cp = start().await;
    for p in cp.processes.iter_mut() {
        p.check_running().unwrap();
    }
    let admin = client_from_yaml(&cp.pki.kubeconfigs[keys::ADMIN_KUBECONFIG]).await;

    let names: Vec<String> = Api::<Namespace>::all(admin.clone())
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    assert!(names.contains(&"default".into()) && names.contains(&"kube-system".into()), "{names:?}");

    // The controller-manager works with its own identity: its service
    // account controller creates the default ServiceAccount.
    let sa: Api<ServiceAccount> = Api::namespaced(admin.clone(), "default");
    wait_for("the default ServiceAccount", Duration::from_secs(60), || async {
        sa.get_opt("default").await.ok().flatten().is_some()
    })
    .await;
    // And the scheduler's kubeconfig authenticates as system:kube-scheduler.
    let scheduler = client_from_yaml(&cp.pki.kubeconfigs[keys::SCHEDULER_KUBECONFIG]).await;
    let err = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(scheduler.clone(), "kube-system")
        .list(&Default::default())
        .await
        .unwrap_err();
    assert_eq!(status_code(err), 403);
    Api::<k8s_openapi::api::core::v1::Pod>::all(scheduler).list(&Default::default()).await.unwrap();

    // A client certificate from another CA (same server CA, so TLS itself
    // succeeds) is not authenticated.
    let intruder_ca = CertificateAuthority::generate("intruder").unwrap();
    let stolen_identity =
        intruder_ca.issue(&LeafSpec::client("kubernetes-admin", &["system:masters"])).unwrap();
    let intruder = client_from_yaml(&kubeconfig::render(&KubeconfigSpec {
        name: "intruder".into(),
        server: cp.server.clone(),
        ca_pem: cp.pki.ca.pem.cert_pem.clone(),
        credential: Credential::ClientCert {
            cert_pem: stolen_identity.cert_pem,
            key_pem: stolen_identity.key_pem,
        },
    }))
    .await;
    let err = Api::<Namespace>::all(intruder).list(&Default::default()).await.unwrap_err();
    assert_eq!(status_code(err), 401);

    // A whole control plane of another cluster is refused the same way,
    // and its admin kubeconfig cannot even verify this server.
    let other = ControlPlanePki::generate(
        "other",
        &PkiInputs {
            server: cp.server.clone(),
            component_server: None,
            endpoint_hosts: vec!["127.0.0.1".into()],
            service_cidr: "10.0.0.0/24".into(),
            cluster_domain: "cluster.local".into(),
            etcd_members: vec![],
        },
    )
    .unwrap();
    let other_admin = client_from_yaml(&other.kubeconfigs[keys::ADMIN_KUBECONFIG]).await;
    assert!(Api::<Namespace>::all(other_admin).list(&Default::default()).await.is_err());

    // The kok CRDs are valid structural schemas for this 1.20 API server,
    // and a HostedCluster gets its defaults from them.
    install_kok_crds(&admin).await;
    let hosted = kube::Api::<flotilla_api::kok::HostedCluster>::namespaced(admin.clone(), "default");
    let applied = hosted
        .patch(
            "team-a",
            &PatchParams::apply("kok-test"),
            &Patch::Apply(serde_json::json!({
                "apiVersion": "kok.flotilla.io/v1alpha1",
                "kind": "HostedCluster",
                "metadata": {"name": "team-a"},
                "spec": {"version": "1.37.2", "etcd": {"shared": {"clusterRef": "e", "prefix": "/clusters/team-a"}},
                         "controlPlane": {"replicas": 1}}
            })),
        )
        .await
        .unwrap();
    assert_eq!(applied.spec.version, "1.37.2");
    // Defaults are filled in by the API server, not only by serde.
    let raw: serde_json::Value = admin
        .request(
            http::Request::get("/apis/kok.flotilla.io/v1alpha1/namespaces/default/hostedclusters/team-a")
                .body(Vec::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(raw["spec"]["network"]["serviceCIDR"], "10.96.0.0/12", "{raw}");
    assert_eq!(raw["spec"]["controlPlane"]["runtime"], "Process", "{raw}");
    let bad = hosted
        .patch(
            "team-b",
            &PatchParams::apply("kok-test"),
            &Patch::Apply(serde_json::json!({
                "apiVersion": "kok.flotilla.io/v1alpha1",
                "kind": "HostedCluster",
                "metadata": {"name": "team-b"},
                "spec": {"version": "1.37.2", "etcd": {}}
            })),
        )
        .await
        .unwrap_err();
    assert_eq!(status_code(bad), 422, "etcd needs clusterRef or shared");
    let etcd = kube::Api::<flotilla_api::kok::EtcdCluster>::namespaced(admin.clone(), "default");
    let bad = etcd
        .patch(
            "e",
            &PatchParams::apply("kok-test"),
            &Patch::Apply(serde_json::json!({
                "apiVersion": "kok.flotilla.io/v1alpha1",
                "kind": "EtcdCluster",
                "metadata": {"name": "e"},
                "spec": {"members": 2, "version": "3.7.4"}
            })),
        )
        .await
        .unwrap_err();
    assert_eq!(status_code(bad), 422, "an even member count is refused");

    for p in cp.processes.iter_mut() {
        p.check_running().unwrap();
    }
}

async fn install_kok_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let kok: Vec<CustomResourceDefinition> =
        flotilla_api::crds().into_iter().filter(|c| c.spec.group == flotilla_api::kok::GROUP).collect();
    assert!(kok.len() >= 4);
    for crd in &kok {
        let name = crd.metadata.name.clone().unwrap();
        crds.patch(&name, &PatchParams::apply("kok-test").force(), &Patch::Apply(crd)).await.unwrap();
    }
    for crd in &kok {
        let name = crd.metadata.name.clone().unwrap();
        wait_for(&format!("CRD {name} established"), Duration::from_secs(30), || async {
            crds.get(&name)
                .await
                .ok()
                .and_then(|c| c.status)
                .and_then(|s| s.conditions)
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Established" && c.status == "True"))
        })
        .await;
    }
}
