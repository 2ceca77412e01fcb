#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The HostedCluster operator with `spec.controlPlane.runtime: Kubernetes`
//! against a real meta cluster (kube-apiserver, every workload controller,
//! a scheduler and a hollow kubemark node): it waits for the EtcdCluster,
//! issues the certificates, runs the control plane as Deployments in
//! `kok-<name>` until they are ready and the HostedCluster is Ready, rolls
//! all three on a CA rotation, and removes the namespace before letting
//! the HostedCluster go.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use flotilla_api::kok::{conditions, HostedCluster, HostedClusterPhase, ROTATE_CERTS_ANNOTATION};
use flotilla_core::kok::hosted::{admin_secret_name, pki_secret_name, HostedOperatorConfig};
use flotilla_core::kok::kube_runtime::{
    template_checksum, CLUSTER_LABEL, COMPONENT_LABEL, CONFIG_CHECKSUM_ANNOTATION,
};
use flotilla_core::kok::pki::keys;
use flotilla_core::pki::CertificateAuthority;
use flotilla_kok::hosted::HostedOperator;
use flotilla_kok::kube_runtime::{ControlPlaneComponent, KubeRuntimeConfig};
use flotilla_testenv::{wait_for, Cluster, ClusterConfig};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(180);
const TENANTS: &str = "tenants";
const NAME: &str = "team-k";
const RUNTIME_NS: &str = "kok-team-k";
const ETCD: &str = "etcd-k";
const ETCD_URL: &str = "https://etcd-k-0.kok-etcd.svc:2379";

/// Stops the operator when the test ends (also on panic).
struct Abort(tokio::task::AbortHandle);

impl Drop for Abort {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn install_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in flotilla_api::crds() {
        crds.patch(&crd.name_any(), &PatchParams::apply("test").force(), &Patch::Apply(&crd)).await.unwrap();
    }
    let (clusters, etcds): (Api<HostedCluster>, Api<flotilla_api::kok::EtcdCluster>) =
        (Api::all(client.clone()), Api::all(client.clone()));
    wait_for("the CRDs to be served", WAIT, || {
        let (clusters, etcds) = (clusters.clone(), etcds.clone());
        async move {
            clusters.list(&Default::default()).await.is_ok() && etcds.list(&Default::default()).await.is_ok()
        }
    })
    .await;
}

/// The EtcdCluster the HostedCluster names, made ready by hand: etcd is
/// not what is under test here, and the control plane's pods run no
/// container on a hollow node, so nothing would ever dial it. What the
/// operator reads is real: the `Available` condition, the client URLs and
/// the CA in the client Secret (it signs the apiserver's etcd client
/// certificate).
async fn fake_ready_etcd(client: &Client) {
    let etcds: Api<flotilla_api::kok::EtcdCluster> = Api::namespaced(client.clone(), TENANTS);
    let etcd: flotilla_api::kok::EtcdCluster = serde_json::from_value(json!({
        "apiVersion": "kok.flotilla.io/v1alpha1", "kind": "EtcdCluster",
        "metadata": {"name": ETCD, "namespace": TENANTS},
        "spec": {"members": 1, "version": "3.4.23"},
    }))
    .unwrap();
    etcds.create(&PostParams::default(), &etcd).await.unwrap();
    let ca = CertificateAuthority::generate("etcd-k-etcd-ca").unwrap();
    let secret_name = flotilla_core::kok::etcd::secret_name(ETCD);
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": secret_name, "namespace": TENANTS},
        "stringData": {keys::ETCD_CA_CRT: ca.pem.cert_pem, keys::ETCD_CA_KEY: ca.pem.key_pem},
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), TENANTS).create(&PostParams::default(), &secret).await.unwrap();
    let status = json!({
        "apiVersion": "kok.flotilla.io/v1alpha1", "kind": "EtcdCluster",
        "metadata": {"name": ETCD, "namespace": TENANTS},
        "status": {
            "phase": "Running",
            "readyMembers": 1,
            "clientUrls": [ETCD_URL],
            "clientSecret": secret_name,
            "conditions": [{
                "type": conditions::ETCD_AVAILABLE, "status": "True", "reason": "Healthy",
                "message": "set by the test", "lastTransitionTime": "2024-01-01T00:00:00Z",
            }],
        },
    });
    etcds.patch_status(ETCD, &PatchParams::apply("test").force(), &Patch::Apply(&status)).await.unwrap();
}

/// Polls the HostedCluster until `check` holds; on timeout shows its status.
async fn hc_until(
    api: &Api<HostedCluster>,
    what: &str,
    check: impl Fn(&HostedCluster) -> bool,
) -> HostedCluster {
    let deadline = Instant::now() + WAIT;
    loop {
        let hc = api.get(NAME).await.unwrap();
        if check(&hc) {
            return hc;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}: {:#?}", hc.status);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn is_true(hc: &HostedCluster, type_: &str) -> bool {
    hc.condition(type_).is_some_and(|c| c.status == "True")
}

fn ready(hc: &HostedCluster) -> bool {
    hc.status.as_ref().and_then(|s| s.phase) == Some(HostedClusterPhase::Ready)
        && is_true(hc, conditions::READY)
}

fn selector(component: ControlPlaneComponent) -> ListParams {
    ListParams::default().labels(&format!("{CLUSTER_LABEL}={NAME},{COMPONENT_LABEL}={}", component.name()))
}

/// A Deployment's pod-template checksum and its ReplicaSets (by name).
async fn rollout(client: &Client, component: ControlPlaneComponent) -> (String, Vec<String>) {
    let deployment = Api::<Deployment>::namespaced(client.clone(), RUNTIME_NS)
        .get(component.deployment_name())
        .await
        .unwrap();
    let mut sets: Vec<String> = Api::<ReplicaSet>::namespaced(client.clone(), RUNTIME_NS)
        .list(&selector(component))
        .await
        .unwrap()
        .items
        .iter()
        .map(|rs| rs.name_any())
        .collect();
    sets.sort();
    (template_checksum(&deployment).unwrap().to_string(), sets)
}

/// Ready pods of `component` carrying `checksum`, each bound to a node.
async fn ready_pods_with(client: &Client, component: ControlPlaneComponent, checksum: &str) -> usize {
    let pods = Api::<Pod>::namespaced(client.clone(), RUNTIME_NS).list(&selector(component)).await.unwrap();
    pods.items
        .iter()
        .filter(|pod| {
            pod.annotations().get(CONFIG_CHECKSUM_ANNOTATION).map(String::as_str) == Some(checksum)
                && pod.metadata.deletion_timestamp.is_none()
                && pod.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some()
                && pod.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|conditions| {
                    conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                })
        })
        .count()
}

async fn secret(client: &Client, namespace: &str, name: &str) -> BTreeMap<String, Vec<u8>> {
    let secret = Api::<Secret>::namespaced(client.clone(), namespace).get(name).await.unwrap();
    secret.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosted_cluster_with_the_kubernetes_runtime_becomes_ready_rotates_and_is_deleted() {
    let _ =
        tracing_subscriber::fmt().with_env_filter("info,flotilla_kok=debug").with_test_writer().try_init();
    let meta = Cluster::start(ClusterConfig::new("meta").with_nodes(1)).await.unwrap();
    let client = meta.client();
    install_crds(&client).await;
    let mut namespace = Namespace::default();
    namespace.metadata.name = Some(TENANTS.into());
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &namespace).await.unwrap();

    let operator = HostedOperator {
        plan: HostedOperatorConfig {
            // No binaries registered at all: this runtime runs images.
            versions: BTreeMap::new(),
            ..Default::default()
        },
        resync: Duration::from_secs(2),
        settle: Duration::from_millis(500),
        // Hollow kubelets run no container: a probe would never succeed.
        kube_runtime: KubeRuntimeConfig { health_probes: false, ..KubeRuntimeConfig::default() },
        ..Default::default()
    };
    let task = tokio::spawn(flotilla_kok::hosted::run(client.clone(), operator));
    let _abort = Abort(task.abort_handle());

    // 1. No EtcdCluster yet: the operator waits and renders nothing.
    let clusters: Api<HostedCluster> = Api::namespaced(client.clone(), TENANTS);
    let hc: HostedCluster = serde_json::from_value(json!({
        "apiVersion": "kok.flotilla.io/v1alpha1", "kind": "HostedCluster",
        "metadata": {"name": NAME, "namespace": TENANTS},
        "spec": {
            "version": "1.20.2",
            "etcd": {"clusterRef": ETCD},
            "controlPlane": {"runtime": "Kubernetes", "replicas": 1},
        },
    }))
    .unwrap();
    clusters.create(&PostParams::default(), &hc).await.unwrap();
    let waiting = hc_until(&clusters, "EtcdReady=False", |hc| {
        hc.condition(conditions::ETCD_READY).is_some_and(|c| c.status == "False" && c.reason == "NotFound")
    })
    .await;
    assert_eq!(waiting.status.as_ref().and_then(|s| s.phase), Some(HostedClusterPhase::Provisioning));
    assert!(Api::<Namespace>::all(client.clone()).get_opt(RUNTIME_NS).await.unwrap().is_none());

    // 2. etcd is there: the control plane runs in kok-<name> and the
    // HostedCluster becomes Ready.
    fake_ready_etcd(&client).await;
    let hc = hc_until(&clusters, "phase Ready", ready).await;
    let status = hc.status.clone().unwrap();
    assert_eq!(status.endpoint.as_deref(), Some("https://kube-apiserver.kok-team-k.svc:6443"));
    assert_eq!(status.version.as_deref(), Some("1.20.2"));
    assert!(!status.certificates.is_empty(), "{status:#?}");
    for type_ in [conditions::VALID, conditions::ETCD_READY] {
        assert!(is_true(&hc, type_), "{type_}: {status:#?}");
    }
    for component in ControlPlaneComponent::ALL {
        let c = hc.condition(component.condition_type()).unwrap();
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", "Ready"), "{c:?}");
    }
    // What this runtime skips is said, not claimed.
    let addons = hc.condition(conditions::ADDONS_APPLIED).unwrap();
    assert_eq!((addons.status.as_str(), addons.reason.as_str()), ("False", "SkippedByRuntime"), "{addons:?}");
    assert!(Api::<flotilla_api::cluster::ManagedCluster>::all(client.clone())
        .get_opt(NAME)
        .await
        .unwrap()
        .is_none());

    let mut before = BTreeMap::new();
    for component in ControlPlaneComponent::ALL {
        let (checksum, sets) = rollout(&client, component).await;
        // Reconciling again and again rolled nothing.
        assert_eq!(sets.len(), 1, "{component:?}: {sets:?}");
        assert_eq!(ready_pods_with(&client, component, &checksum).await, 1, "{component:?}");
        before.insert(component, (checksum, sets));
    }
    let apiserver =
        Api::<Deployment>::namespaced(client.clone(), RUNTIME_NS).get("kube-apiserver").await.unwrap();
    let args = apiserver.spec.template.spec.unwrap().containers[0].args.clone().unwrap();
    assert!(args.contains(&format!("--etcd-servers={ETCD_URL}")), "{args:?}");
    let pki = secret(&client, TENANTS, &pki_secret_name(NAME)).await;
    let admin =
        String::from_utf8(secret(&client, TENANTS, &admin_secret_name(NAME)).await["kubeconfig"].clone())
            .unwrap();
    assert!(admin.contains("server: https://kube-apiserver.kok-team-k.svc:6443"), "{admin}");
    let apiserver_pki =
        secret(&client, RUNTIME_NS, &ControlPlaneComponent::KubeApiserver.secret_name()).await;
    assert_eq!(apiserver_pki[keys::CA_CRT], pki[keys::CA_CRT]);

    // 3. A CA rotation: handled once, a new CA, all three roll.
    let annotate = json!({"metadata": {"annotations": {ROTATE_CERTS_ANNOTATION: "ca/1"}}});
    clusters.patch(NAME, &PatchParams::default(), &Patch::Merge(&annotate)).await.unwrap();
    hc_until(&clusters, "handledRotation ca/1", |hc| {
        hc.status.as_ref().and_then(|s| s.handled_rotation.as_deref()) == Some("ca/1")
    })
    .await;
    let rotated = secret(&client, TENANTS, &pki_secret_name(NAME)).await;
    assert_ne!(rotated[keys::CA_CRT], pki[keys::CA_CRT], "the CA did not change");
    let deadline = Instant::now() + WAIT;
    loop {
        let mut rolled = true;
        for component in ControlPlaneComponent::ALL {
            let (checksum, sets) = rollout(&client, component).await;
            let (old_checksum, old_sets) = &before[&component];
            rolled &= checksum != *old_checksum
                && sets.len() == old_sets.len() + 1
                && ready_pods_with(&client, component, &checksum).await == 1;
        }
        if rolled {
            break;
        }
        assert!(Instant::now() < deadline, "not every component rolled: {:#?}", rollouts_now(&client).await);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    hc_until(&clusters, "Ready after the rotation", |hc| {
        ready(hc) && ControlPlaneComponent::ALL.iter().all(|c| is_true(hc, c.condition_type()))
    })
    .await;
    let apiserver_pki =
        secret(&client, RUNTIME_NS, &ControlPlaneComponent::KubeApiserver.secret_name()).await;
    assert_eq!(apiserver_pki[keys::CA_CRT], rotated[keys::CA_CRT]);
    // Handled means handled: later reconciles do not rotate again.
    let settled = rollouts_now(&client).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(secret(&client, TENANTS, &pki_secret_name(NAME)).await[keys::CA_CRT], rotated[keys::CA_CRT]);
    assert_eq!(rollouts_now(&client).await, settled);

    // 4. Deleted: the namespace goes, then the finalizer.
    clusters.delete(NAME, &DeleteParams::default()).await.unwrap();
    let clusters_for_wait = clusters.clone();
    wait_for("the HostedCluster gone", WAIT, move || {
        let clusters = clusters_for_wait.clone();
        async move { clusters.get_opt(NAME).await.unwrap().is_none() }
    })
    .await;
    let left = Api::<Namespace>::all(client.clone()).get_opt(RUNTIME_NS).await.unwrap();
    assert!(left.is_none(), "the finalizer went before the namespace: {:?}", left.map(|n| n.status));
    assert!(Api::<Secret>::namespaced(client.clone(), TENANTS)
        .get_opt(&pki_secret_name(NAME))
        .await
        .unwrap()
        .is_none());
}

async fn rollouts_now(client: &Client) -> BTreeMap<ControlPlaneComponent, (String, Vec<String>)> {
    let mut out = BTreeMap::new();
    for component in ControlPlaneComponent::ALL {
        out.insert(component, rollout(client, component).await);
    }
    out
}
