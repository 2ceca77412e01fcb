#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The `kubernetes` runtime against a real meta cluster (kube-apiserver,
//! every workload controller, a scheduler and a hollow kubemark node): the
//! control plane's Secrets, Service and Deployments land in `kok-<name>`,
//! its Deployments reach ready replicas, applying again rolls nothing, a
//! renewed certificate rolls exactly the components that read it, and
//! `delete` removes it all.

use std::collections::BTreeMap;
use std::time::Duration;

use flotilla_api::kok::{HostedCluster, HostedClusterSpec};
use flotilla_kok::kube_runtime::{
    self, ControlPlaneComponent, KubeRuntimeConfig, KubeRuntimeReport, FIELD_MANAGER,
};
use flotilla_kok_core::kube_runtime::{
    template_checksum, CLUSTER_LABEL, COMPONENT_LABEL, CONFIG_CHECKSUM_ANNOTATION,
};
use flotilla_kok_core::pki::{keys, leaves, ControlPlanePki, PkiInputs};
use flotilla_kok_core::render::{component_secret_keys, Component};
use flotilla_localkube::{wait_for, Cluster, ClusterConfig};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, Service};
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(180);
const NAME: &str = "team-a";
const NS: &str = "kok-team-a";

fn hosted_cluster(namespace: &str) -> HostedCluster {
    let spec: HostedClusterSpec = serde_json::from_value(json!({
        "version": "1.36.2",
        "etcd": {"shared": {"clusterRef": "shared", "prefix": "/clusters/team-a"}},
        "controlPlane": {
            "runtime": "Kubernetes",
            "replicas": 1,
            "extraArgs": {"kubeScheduler": ["--v=3"]},
            "resources": {"kube-apiserver": {"requests": {"cpu": "100m", "memory": "128Mi"}}},
        },
    }))
    .unwrap();
    let mut hc = HostedCluster::new(NAME, spec);
    hc.metadata.namespace = Some(namespace.into());
    hc
}

/// The runtime's own inputs: every kubeconfig points at the apiserver's
/// Service (the controller-manager and scheduler run in their own pods and
/// cannot reach it over loopback).
fn pki_inputs() -> PkiInputs {
    kube_runtime::pki_inputs(&hosted_cluster("tenants")).unwrap()
}

/// Hollow kubelets run no container, so a probe would ask an address
/// nothing listens on; everything else is the production rendering.
fn config() -> KubeRuntimeConfig {
    KubeRuntimeConfig { health_probes: false, ..KubeRuntimeConfig::default() }
}

fn etcd_servers() -> Vec<String> {
    vec!["https://etcd-0.kok-shared.svc:2379".into()]
}

fn selector(component: ControlPlaneComponent) -> ListParams {
    ListParams::default().labels(&format!("{CLUSTER_LABEL}={NAME},{COMPONENT_LABEL}={}", component.name()))
}

/// Applies (as the HostedCluster controller does on every reconcile) until
/// every component reports ready.
async fn apply_until_ready(client: &Client, hc: &HostedCluster, pki: &ControlPlanePki) -> KubeRuntimeReport {
    let data = pki.to_secret_data();
    let mut last = None;
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let report = kube_runtime::apply_with(client, hc, &data, &etcd_servers(), &config()).await.unwrap();
        if report.ready() {
            return report;
        }
        assert!(std::time::Instant::now() < deadline, "control plane never ready: {last:#?}");
        last = Some(report);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// What a Deployment runs now: its generation, its template's checksum and
/// its ReplicaSets (by name).
#[derive(Debug, Clone, PartialEq)]
struct Rollout {
    generation: Option<i64>,
    checksum: Option<String>,
    replica_sets: Vec<String>,
}

async fn rollout(client: &Client, component: ControlPlaneComponent) -> Rollout {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), NS);
    let deployment = deployments.get(component.deployment_name()).await.unwrap();
    let mut names: Vec<String> =
        replica_sets.list(&selector(component)).await.unwrap().items.iter().map(|rs| rs.name_any()).collect();
    names.sort();
    Rollout {
        generation: deployment.metadata.generation,
        checksum: template_checksum(&deployment).map(String::from),
        replica_sets: names,
    }
}

async fn rollouts(client: &Client) -> BTreeMap<ControlPlaneComponent, Rollout> {
    let mut out = BTreeMap::new();
    for component in ControlPlaneComponent::ALL {
        out.insert(component, rollout(client, component).await);
    }
    out
}

/// Ready pods of `component` whose template carries `checksum`.
async fn ready_pods_with(client: &Client, component: ControlPlaneComponent, checksum: &str) -> usize {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let list = pods.list(&selector(component)).await.unwrap();
    list.items
        .iter()
        .filter(|pod| {
            pod.annotations().get(CONFIG_CHECKSUM_ANNOTATION).map(String::as_str) == Some(checksum)
                && pod.metadata.deletion_timestamp.is_none()
                && pod.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|conditions| {
                    conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                })
        })
        .count()
}

fn rendered(component: ControlPlaneComponent) -> Component {
    match component {
        ControlPlaneComponent::KubeApiserver => Component::KubeApiserver,
        ControlPlaneComponent::KubeControllerManager => Component::KubeControllerManager,
        ControlPlaneComponent::KubeScheduler => Component::KubeScheduler,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_runtime_runs_the_control_plane_in_the_meta_cluster_and_rolls_on_certificate_changes() {
    let _ =
        tracing_subscriber::fmt().with_env_filter("info,flotilla_kok=debug").with_test_writer().try_init();
    let meta = Cluster::start(ClusterConfig::new("meta").with_nodes(1)).await.unwrap();
    let client = meta.client();
    let hc = hosted_cluster("tenants");
    let pki = ControlPlanePki::generate(NAME, &pki_inputs()).unwrap();

    // 1. Applied and ready.
    let report = apply_until_ready(&client, &hc, &pki).await;
    assert_eq!(report.namespace, NS);
    assert_eq!(report.endpoint, "https://kube-apiserver.kok-team-a.svc:6443");
    assert!(report.service_ip.is_some(), "{report:?}");
    let order: Vec<ControlPlaneComponent> = report.components.iter().map(|c| c.component).collect();
    assert_eq!(order, ControlPlaneComponent::ALL);
    for c in &report.components {
        assert_eq!(c.readiness.ready_replicas, 1, "{c:?}");
        assert_eq!(ready_pods_with(&client, c.component, &c.config_checksum).await, 1, "{c:?}");
    }

    // The objects, in the meta cluster, each component's Secret holding
    // exactly its keys.
    let namespace = Api::<Namespace>::all(client.clone()).get(NS).await.unwrap();
    assert_eq!(namespace.labels().get(CLUSTER_LABEL).map(String::as_str), Some(NAME));
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let data = pki.to_secret_data();
    for component in ControlPlaneComponent::ALL {
        let secret = secrets.get(&component.secret_name()).await.unwrap();
        let stored = secret.data.unwrap_or_default();
        let mut want = component_secret_keys(&rendered(component));
        want.sort();
        assert_eq!(stored.keys().cloned().collect::<Vec<_>>(), want, "{component:?}");
        for (key, value) in &stored {
            assert_eq!(value.0, data[key], "{component:?} {key}");
        }
        let managers: Vec<String> = secret
            .metadata
            .managed_fields
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| m.manager)
            .collect();
        assert!(managers.contains(&FIELD_MANAGER.to_string()), "{managers:?}");
    }
    let service = Api::<Service>::namespaced(client.clone(), NS).get("kube-apiserver").await.unwrap();
    let service_spec = service.spec.unwrap();
    assert_eq!(service_spec.type_.as_deref(), Some("ClusterIP"));
    assert_eq!(service_spec.ports.unwrap()[0].port, 6443);
    assert_eq!(service_spec.cluster_ip, report.service_ip);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let scheduler = deployments.get("kube-scheduler").await.unwrap();
    let container = &scheduler.spec.template.spec.unwrap().containers[0];
    assert_eq!(container.image.as_deref(), Some("registry.k8s.io/kube-scheduler:v1.36.2"));
    assert!(container.args.as_ref().unwrap().contains(&"--v=3".to_string()));
    let apiserver = deployments.get("kube-apiserver").await.unwrap();
    let resources = apiserver.spec.template.spec.unwrap().containers[0].resources.clone().unwrap();
    assert_eq!(resources.requests.unwrap()["cpu"].0, "100m");

    // 2. Applying the same inputs again changes nothing: no new
    // generation, no new ReplicaSet.
    let before = rollouts(&client).await;
    for rollout in before.values() {
        assert_eq!(rollout.replica_sets.len(), 1, "{rollout:?}");
    }
    for _ in 0..2 {
        let again = kube_runtime::apply_with(&client, &hc, &data, &etcd_servers(), &config()).await.unwrap();
        assert!(again.ready(), "{again:?}");
    }
    assert_eq!(rollouts(&client).await, before);

    // 3. The scheduler's serving certificate is renewed (a missing leaf is
    // reissued, and nothing else): only the scheduler rolls.
    let mut expiring = pki.clone();
    expiring.leaves.remove(leaves::SCHEDULER_SERVING);
    let (renewed, reissued) = expiring
        .renew_leaves(&pki_inputs(), time::OffsetDateTime::now_utc(), time::Duration::days(30))
        .unwrap();
    assert_eq!(reissued, [leaves::SCHEDULER_SERVING]);
    let report = apply_until_ready(&client, &hc, &renewed).await;
    let after = rollouts(&client).await;
    let scheduler_before = &before[&ControlPlaneComponent::KubeScheduler];
    let scheduler_after = &after[&ControlPlaneComponent::KubeScheduler];
    assert_ne!(scheduler_after.checksum, scheduler_before.checksum);
    assert_eq!(
        scheduler_after.checksum.as_deref(),
        Some(report.component(ControlPlaneComponent::KubeScheduler).unwrap().config_checksum.as_str())
    );
    assert_eq!(scheduler_after.replica_sets.len(), 2, "a new ReplicaSet: {scheduler_after:?}");
    assert!(scheduler_after.generation > scheduler_before.generation);
    for unaffected in [ControlPlaneComponent::KubeApiserver, ControlPlaneComponent::KubeControllerManager] {
        assert_eq!(after[&unaffected], before[&unaffected], "{unaffected:?} rolled");
    }
    let scheduler_checksum = scheduler_after.checksum.clone().unwrap();
    wait_for("the scheduler's new pod ready", WAIT, || {
        let client = client.clone();
        let checksum = scheduler_checksum.clone();
        async move { ready_pods_with(&client, ControlPlaneComponent::KubeScheduler, &checksum).await == 1 }
    })
    .await;
    let scheduler_secret = secrets.get(&ControlPlaneComponent::KubeScheduler.secret_name()).await.unwrap();
    let cert_key = keys::crt(leaves::SCHEDULER_SERVING);
    assert_eq!(
        scheduler_secret.data.unwrap()[&cert_key].0,
        renewed.leaf(leaves::SCHEDULER_SERVING).unwrap().cert_pem.as_bytes()
    );

    // 4. A CA rotation reaches every component: all three roll.
    let rotated = renewed.rotate_ca(&pki_inputs(), time::OffsetDateTime::now_utc()).unwrap();
    apply_until_ready(&client, &hc, &rotated).await;
    let rotated_rollouts = rollouts(&client).await;
    for component in ControlPlaneComponent::ALL {
        assert_ne!(rotated_rollouts[&component].checksum, after[&component].checksum, "{component:?}");
        assert_eq!(
            rotated_rollouts[&component].replica_sets.len(),
            after[&component].replica_sets.len() + 1,
            "{component:?}"
        );
    }

    // 5. Another HostedCluster of the same name (another namespace) can
    // neither take over nor delete this control plane.
    let other = hosted_cluster("elsewhere");
    let taken = kube_runtime::apply_with(&client, &other, &data, &etcd_servers(), &config()).await;
    assert!(matches!(taken, Err(flotilla_kok::Error::KubeRuntime(_))), "{taken:?}");
    assert!(kube_runtime::delete(&client, &other).await.unwrap());
    assert!(Api::<Namespace>::all(client.clone()).get_opt(NS).await.unwrap().is_some());

    // 6. Deleted: everything goes.
    let client_for_delete = client.clone();
    let hc_for_delete = hc.clone();
    wait_for("the control plane deleted", WAIT, move || {
        let client = client_for_delete.clone();
        let hc = hc_for_delete.clone();
        async move { kube_runtime::delete(&client, &hc).await.unwrap() }
    })
    .await;
    assert!(Api::<Namespace>::all(client.clone()).get_opt(NS).await.unwrap().is_none());
    let pods: Api<Pod> = Api::all(client.clone());
    let left = pods.list(&ListParams::default().labels(&format!("{CLUSTER_LABEL}={NAME}"))).await.unwrap();
    assert!(left.items.is_empty(), "{:?}", left.items.iter().map(|p| p.name_any()).collect::<Vec<_>>());
}
