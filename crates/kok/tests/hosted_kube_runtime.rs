#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The HostedCluster and EtcdCluster operators with the `Kubernetes`
//! runtime against a real meta cluster (kube-apiserver, every workload
//! controller, a scheduler and a hollow kubemark node): the HostedCluster
//! waits for its EtcdCluster, which runs as a StatefulSet; the control
//! plane runs as Deployments in `kok-<name>` until they are ready and the
//! HostedCluster is Ready; a CA rotation rolls all three; a version change
//! moves the apiserver's Deployment first and the others only once it has
//! rolled out; a minor downgrade is refused; deleting removes the
//! namespace before the HostedCluster goes, and the EtcdCluster's objects
//! with it.
//!
//! Hollow kubelets run no container: no etcd member and no control-plane
//! process really runs, and every pod becomes Ready once scheduled (health
//! probes are off). So what this test checks is the objects rendered and
//! applied, that their pods become Ready on the hollow node, that each
//! status is read from them, and the order in which Deployments move; not
//! that etcd forms a cluster or that the apiserver serves.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use flotilla_api::kok::{conditions, HostedCluster, HostedClusterPhase, ROTATE_CERTS_ANNOTATION};
use flotilla_api::kok::{EtcdCluster, EtcdClusterPhase, UpgradeState};
use flotilla_kok::etcd::EtcdOperator;
use flotilla_kok::hosted::HostedOperator;
use flotilla_kok::kube_runtime::{ControlPlaneComponent, KubeRuntimeConfig};
use flotilla_kok_core::etcd_kube::{self, EtcdKubeConfig, TLS_CHECKSUM_ANNOTATION};
use flotilla_kok_core::hosted::{admin_secret_name, pki_secret_name, HostedOperatorConfig};
use flotilla_kok_core::kube_runtime::{deployment_available, deployment_version};
use flotilla_kok_core::kube_runtime::{
    template_checksum, CLUSTER_LABEL, COMPONENT_LABEL, CONFIG_CHECKSUM_ANNOTATION,
};
use flotilla_kok_core::pki::keys;
use flotilla_localkube::{wait_for, Cluster, ClusterConfig};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(180);
const TENANTS: &str = "tenants";
const NAME: &str = "team-k";
const RUNTIME_NS: &str = "kok-team-k";
const ETCD: &str = "etcd-k";
const ETCD_URL: &str = "https://etcd-k-0.etcd-k.tenants.svc:2379";

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

/// The EtcdCluster the HostedCluster names, `runtime: Kubernetes`: once
/// its StatefulSet's (hollow) pod is Ready it is Available, and what the
/// HostedCluster operator reads is the operator's: the client URLs and the
/// CA in the client Secret (it signs the apiserver's etcd client
/// certificate).
async fn kubernetes_etcd(client: &Client) {
    let etcds: Api<EtcdCluster> = Api::namespaced(client.clone(), TENANTS);
    let etcd: EtcdCluster = serde_json::from_value(json!({
        "apiVersion": "kok.flotilla.io/v1alpha1", "kind": "EtcdCluster",
        "metadata": {"name": ETCD, "namespace": TENANTS},
        "spec": {"members": 1, "version": "3.7.4", "runtime": "Kubernetes"},
    }))
    .unwrap();
    etcds.create(&PostParams::default(), &etcd).await.unwrap();
    let deadline = Instant::now() + WAIT;
    let etcd = loop {
        let etcd = etcds.get(ETCD).await.unwrap();
        if etcd.condition(conditions::ETCD_AVAILABLE).is_some_and(|c| c.status == "True") {
            break etcd;
        }
        assert!(Instant::now() < deadline, "EtcdCluster not available: {:#?}", etcd.status);
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let status = etcd.status.clone().unwrap();
    assert_eq!((status.phase, status.ready_members), (Some(EtcdClusterPhase::Running), 1), "{status:#?}");
    assert_eq!(status.client_urls, [ETCD_URL]);
    assert_eq!(status.client_secret.as_deref(), Some("etcd-k-etcd-pki"));
    let set = Api::<StatefulSet>::namespaced(client.clone(), TENANTS).get(ETCD).await.unwrap();
    let owner = &set.metadata.owner_references.clone().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str()),
        ("EtcdCluster", etcd.metadata.uid.as_deref().unwrap())
    );
    let spec = set.spec;
    assert_eq!((spec.replicas, spec.service_name.as_deref()), (Some(1), Some(ETCD)));
    let template = spec.template.spec.unwrap();
    assert!(template.volumes.unwrap().iter().any(|v| v.name == "data" && v.empty_dir.is_some()));
    let args = template.containers[0].args.clone().unwrap();
    assert!(args.contains(&"--initial-cluster=etcd-k-0=https://etcd-k-0.etcd-k.tenants.svc:2380".to_string()));
    let members = secret(client, TENANTS, &etcd_kube::member_secret_name(ETCD)).await;
    assert!(
        members.contains_key("etcd-member-etcd-k-0-server.crt") && !members.contains_key(keys::ETCD_CA_KEY)
    );
    let checksum = spec.template.metadata.unwrap().annotations.unwrap()[TLS_CHECKSUM_ANNOTATION].clone();
    let pod = Api::<Pod>::namespaced(client.clone(), TENANTS).get("etcd-k-0").await.unwrap();
    assert_eq!(pod.annotations()[TLS_CHECKSUM_ANNOTATION], checksum);
    let service = Api::<Service>::namespaced(client.clone(), TENANTS).get(ETCD).await.unwrap();
    assert_eq!(service.spec.unwrap().cluster_ip.as_deref(), Some("None"));
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
async fn hosted_cluster_with_the_kubernetes_runtime_becomes_ready_rotates_upgrades_in_order_and_is_deleted() {
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
    let etcd_operator = EtcdOperator {
        resync: Duration::from_secs(1),
        kube: EtcdKubeConfig { health_probes: false, ..EtcdKubeConfig::default() },
        ..Default::default()
    };
    let etcd_task = tokio::spawn(flotilla_kok::etcd::run(client.clone(), etcd_operator));
    let _abort_etcd = Abort(etcd_task.abort_handle());

    // 1. No EtcdCluster yet: the operator waits and renders nothing.
    let clusters: Api<HostedCluster> = Api::namespaced(client.clone(), TENANTS);
    let hc: HostedCluster = serde_json::from_value(json!({
        "apiVersion": "kok.flotilla.io/v1alpha1", "kind": "HostedCluster",
        "metadata": {"name": NAME, "namespace": TENANTS},
        "spec": {
            "version": "1.36.2",
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

    // 2. etcd is there (a StatefulSet): the control plane runs in
    // kok-<name> and the HostedCluster becomes Ready.
    kubernetes_etcd(&client).await;
    let hc = hc_until(&clusters, "phase Ready", ready).await;
    let status = hc.status.clone().unwrap();
    assert_eq!(status.endpoint.as_deref(), Some("https://kube-apiserver.kok-team-k.svc:6443"));
    assert_eq!(status.version.as_deref(), Some("1.36.2"));
    assert!(!status.certificates.is_empty(), "{status:#?}");
    for type_ in [conditions::VALID, conditions::ETCD_READY, conditions::CERTIFICATES_READY] {
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
    let etcd_ca = secret(&client, TENANTS, &flotilla_kok_core::etcd::secret_name(ETCD)).await;
    assert_eq!(apiserver_pki[keys::ETCD_CA_CRT], etcd_ca[keys::ETCD_CA_CRT]);

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

    // 4. 1.36.2 -> 1.37.0: the apiserver's Deployment first; the others
    // only once it has rolled out and is available.
    let version = |v: &str| json!({"spec": {"version": v}});
    let before = sample(&client).await;
    assert_eq!(before.images, ["1.36.2"; 3]);
    // Every change of the control plane's Deployments, in the order the API
    // server wrote them (one watch delivers them so): which component
    // moved to 1.37.0 first, and whether the apiserver's Deployment was
    // available when each later one moved. Polling alone can miss the
    // moment between two moves when the next one follows within
    // milliseconds.
    let moves = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(String, bool)>::new()));
    let watch = {
        use futures::StreamExt;
        use kube::runtime::{watcher, WatchStreamExt};
        let moves = moves.clone();
        let deployments = Api::<Deployment>::namespaced(client.clone(), RUNTIME_NS);
        let apiserver = ControlPlaneComponent::KubeApiserver.deployment_name();
        tokio::spawn(async move {
            let mut apiserver_available = false;
            let mut stream = watcher(deployments, watcher::Config::default()).applied_objects().boxed();
            while let Some(Ok(d)) = stream.next().await {
                let name = d.name_any();
                if name == apiserver {
                    apiserver_available =
                        deployment_available(&d) && deployment_version(&d).as_deref() == Some("1.37.0");
                }
                let mut moves = moves.lock().unwrap();
                if deployment_version(&d).as_deref() == Some("1.37.0")
                    && moves.iter().all(|(n, _)| *n != name)
                {
                    moves.push((name, apiserver_available));
                }
            }
        })
    };
    clusters.patch(NAME, &PatchParams::default(), &Patch::Merge(&version("1.37.0"))).await.unwrap();
    let mut samples: Vec<Sample> = Vec::new();
    let deadline = Instant::now() + WAIT;
    loop {
        let sample = sample(&client).await;
        let hc = clusters.get(NAME).await.unwrap();
        let done = sample.images == ["1.37.0"; 3]
            && sample.api_available
            && hc.status.as_ref().and_then(|s| s.upgrade.as_ref()).map(|u| u.state)
                == Some(UpgradeState::Succeeded);
        samples.push(sample);
        if done {
            break;
        }
        assert!(Instant::now() < deadline, "upgrade not done: {:#?} {samples:#?}", hc.status);
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    wait_for("the watch to see all three moves", WAIT, || async { moves.lock().unwrap().len() == 3 }).await;
    watch.abort();
    let moves = moves.lock().unwrap().clone();
    let order: Vec<&str> = moves.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        order[0],
        ControlPlaneComponent::KubeApiserver.deployment_name(),
        "not the apiserver first: {moves:?}"
    );
    // When the others moved, the apiserver was rolled out on 1.37.0.
    assert!(moves[1..].iter().all(|(_, api_available)| *api_available), "{moves:?}");
    // And where polling caught the moment in between, only the
    // apiserver's Deployment had changed its spec.
    let first = |i: usize| samples.iter().position(|s| s.images[i] == "1.37.0").unwrap();
    let (api, cm, sched) = (first(0), first(1), first(2));
    if api < cm && api < sched {
        let between = &samples[api];
        assert!(between.generations[0] > before.generations[0], "{samples:#?}");
        assert_eq!(between.generations[1..], before.generations[1..], "{samples:#?}");
    }
    let hc = hc_until(&clusters, "Ready on 1.37.0", ready).await;
    let status = hc.status.clone().unwrap();
    assert_eq!(
        (status.version.as_deref(), status.previous_version.as_deref()),
        (Some("1.37.0"), Some("1.36.2"))
    );
    let upgraded = hc.condition(conditions::UPGRADED).unwrap();
    assert_eq!((upgraded.status.as_str(), upgraded.reason.as_str()), ("True", "Succeeded"), "{upgraded:?}");

    // 5. A minor downgrade is refused; nothing moves.
    clusters.patch(NAME, &PatchParams::default(), &Patch::Merge(&version("1.36.2"))).await.unwrap();
    let hc = hc_until(&clusters, "the downgrade refused", |hc| {
        hc.condition(conditions::UPGRADED).is_some_and(|c| c.reason == "Refused")
    })
    .await;
    let refused = hc.condition(conditions::UPGRADED).unwrap();
    assert!(refused.message.contains("cannot downgrade from 1.37.0 to 1.36.2"), "{refused:?}");
    assert_eq!(hc.status.as_ref().and_then(|s| s.version.as_deref()), Some("1.37.0"));
    assert_eq!(sample(&client).await.images, ["1.37.0"; 3]);

    // 6. Deleted: the namespace goes, then the finalizer.
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
    // The EtcdCluster's objects go with it.
    let etcds: Api<EtcdCluster> = Api::namespaced(client.clone(), TENANTS);
    etcds.delete(ETCD, &DeleteParams::default()).await.unwrap();
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), TENANTS);
    wait_for("the EtcdCluster and its StatefulSet gone", WAIT, move || {
        let (etcds, sets) = (etcds.clone(), sets.clone());
        async move { etcds.get_opt(ETCD).await.unwrap().is_none() && sets.get_opt(ETCD).await.unwrap().is_none() }
    })
    .await;
}

/// The control plane's Deployments at one moment.
#[derive(Debug)]
struct Sample {
    /// Image versions, in `ControlPlaneComponent::ALL` order.
    images: Vec<String>,
    generations: Vec<i64>,
    /// The apiserver's Deployment has rolled out and is available.
    api_available: bool,
}

/// Reads the scheduler and controller-manager before the apiserver: the
/// operator moves them only after seeing the apiserver available (which,
/// on a hollow node, it stays), so a sample never shows them moved while
/// the apiserver was not.
async fn sample(client: &Client) -> Sample {
    let api = Api::<Deployment>::namespaced(client.clone(), RUNTIME_NS);
    let mut read = BTreeMap::new();
    for component in ControlPlaneComponent::ALL.iter().rev() {
        read.insert(*component, api.get(component.deployment_name()).await.unwrap());
    }
    Sample {
        images: ControlPlaneComponent::ALL.iter().map(|c| deployment_version(&read[c]).unwrap()).collect(),
        generations: ControlPlaneComponent::ALL
            .iter()
            .map(|c| read[c].metadata.generation.unwrap())
            .collect(),
        api_available: deployment_available(&read[&ControlPlaneComponent::KubeApiserver]),
    }
}

async fn rollouts_now(client: &Client) -> BTreeMap<ControlPlaneComponent, (String, Vec<String>)> {
    let mut out = BTreeMap::new();
    for component in ControlPlaneComponent::ALL {
        out.insert(component, rollout(client, component).await);
    }
    out
}
