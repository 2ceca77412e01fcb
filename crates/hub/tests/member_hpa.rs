#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A member's own HorizontalPodAutoscaler owns its workload's replicas:
//! the member's real HPA controller raises a propagated Deployment to the
//! HPA's minReplicas (it does so without metrics), a change of the hub's
//! template reaches the member without reverting those replicas, the Work
//! and the binding say who owns them, and once the HPA is deleted the
//! template's replicas come back. In a pull member (its agent applies) and
//! in a push member (the hub applies).

use flotilla_testkit as support;

use std::time::Duration;

use flotilla_api::cluster::ManagedCluster;
use flotilla_api::work::{ResourceBinding, Work};
use flotilla_localkube::{wait_for, Cluster, ClusterConfig};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use support::clusters::join_push;
use support::rollout::place_web_everywhere;
use support::{apply, create_namespace, Fleet};

const NS: &str = "shop";
const OWNER: &str = "HorizontalPodAutoscaler/web";

fn web(replicas: i32, image: &str) -> serde_json::Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": "web", "namespace": NS, "labels": {"app": "web"}},
           "spec": {"replicas": replicas,
                    "selector": {"matchLabels": {"app": "web"}},
                    "template": {"metadata": {"labels": {"app": "web"}},
                                 "spec": {"containers": [{"name": "main", "image": image}]}}}})
}

/// `(replicas, image)` of `web` in the member.
async fn member_web(deployments: &Api<Deployment>) -> Option<(i32, String)> {
    let d = deployments.get_opt("web").await.unwrap()?;
    let image = d.spec.template.spec.as_ref()?.containers.first()?.image.clone()?;
    Some((d.spec.replicas?, image))
}

/// The `replicasOwner` the member's Work reports for `web`.
async fn work_owner(works: &Api<Work>) -> Option<String> {
    let works = works.list(&ListParams::default()).await.unwrap().items;
    works
        .iter()
        .filter_map(|w| w.status.as_ref())
        .flat_map(|s| &s.manifest_statuses)
        .find(|m| m.identifier.kind == "Deployment" && m.identifier.name == "web")
        .and_then(|m| m.replicas_owner.clone())
}

async fn binding_owner(bindings: &Api<ResourceBinding>, cluster: &str) -> Option<String> {
    let binding = bindings.get_opt("web-deployment").await.unwrap()?;
    binding.status?.aggregated_status.into_iter().find(|i| i.cluster_name == cluster)?.replicas_owner
}

#[tokio::test]
async fn a_member_hpa_keeps_its_replicas_until_it_goes() {
    let fleet = Fleet::start(&["eu"], &[]).await;
    scenario(&fleet.hub.client(), fleet.member("m1").client(), "m1").await;
}

/// The same in a push member: the hub runs the applier for it.
#[tokio::test]
async fn a_push_member_s_hpa_is_respected_too() {
    let fleet = Fleet::start(&["eu"], &[]).await;
    let hub = fleet.hub.client();
    let push = Cluster::start(ClusterConfig::new("p").with_nodes(1)).await.unwrap();
    // What `flotilla join p --mode push` writes.
    join_push(&hub, "p", push.kubeconfig_path()).await;
    let clusters: Api<ManagedCluster> = Api::all(hub.clone());
    wait_for("p Available with its APIs reported", Duration::from_secs(60), || async {
        let Some(mc) = clusters.get_opt("p").await.unwrap() else { return false };
        mc.condition("Available").is_some_and(|c| c.status == "True")
            && mc.status.as_ref().is_some_and(|s| !s.api_enablements.is_empty())
    })
    .await;
    scenario(&hub, push.client(), "p").await;
}

/// The HPA story in `cluster` (`member` its client); the template `web`
/// is placed on every cluster.
async fn scenario(hub: &Client, member: Client, cluster: &str) {
    let hub = hub.clone();
    create_namespace(&hub, NS).await;
    place_web_everywhere(&hub, NS, false).await;
    apply(&hub, web(2, "example/web:1")).await;
    let deployments: Api<Deployment> = Api::namespaced(member.clone(), NS);
    wait_for(&format!("web with 2 replicas in {cluster}"), Duration::from_secs(60), || async {
        member_web(&deployments).await == Some((2, "example/web:1".into()))
    })
    .await;

    // The member's HPA: its controller raises the replicas to minReplicas.
    let hpa: HorizontalPodAutoscaler = serde_json::from_value(json!({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "web", "namespace": NS},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                 "minReplicas": 4, "maxReplicas": 6,
                 "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                     "target": {"type": "Utilization", "averageUtilization": 80}}}]}
    }))
    .unwrap();
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(member.clone(), NS);
    hpas.create(&PostParams::default(), &hpa).await.unwrap();
    wait_for(&format!("the HPA raised web to 4 replicas in {cluster}"), Duration::from_secs(90), || async {
        member_web(&deployments).await.is_some_and(|(replicas, _)| replicas == 4)
    })
    .await;
    let works: Api<Work> = Api::namespaced(hub.clone(), &format!("flotilla-cluster-{cluster}"));
    let bindings: Api<ResourceBinding> = Api::namespaced(hub.clone(), NS);
    wait_for("the Work and the binding name the HPA", Duration::from_secs(60), || async {
        work_owner(&works).await.as_deref() == Some(OWNER)
            && binding_owner(&bindings, cluster).await.as_deref() == Some(OWNER)
    })
    .await;

    // A template change reaches the member; the HPA's replicas are never
    // reverted meanwhile (a revert would show for the HPA's 15 s period).
    apply(&hub, web(2, "example/web:2")).await;
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut settled_until = None;
    loop {
        let now = member_web(&deployments).await.unwrap();
        if seen.last() != Some(&now) {
            seen.push(now.clone());
        }
        if now.1 == "example/web:2" && settled_until.is_none() {
            // Watch a little longer after the re-apply.
            settled_until = Some(tokio::time::Instant::now() + Duration::from_secs(5));
        }
        if settled_until.is_some_and(|t| tokio::time::Instant::now() > t) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the new image never reached {cluster}: {seen:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen.iter().all(|(replicas, _)| *replicas == 4), "the replicas stayed the HPA's: {seen:?}");
    assert_eq!(member_web(&deployments).await, Some((4, "example/web:2".into())));

    // A change of the template's replicas does not override the HPA either.
    apply(&hub, web(3, "example/web:2")).await;
    wait_for("the binding's Work carries 3 replicas", Duration::from_secs(30), || async {
        let works = works.list(&ListParams::default()).await.unwrap().items;
        works.iter().flat_map(|w| &w.spec.manifests).any(|m| m.0.pointer("/spec/replicas") == Some(&json!(3)))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(member_web(&deployments).await, Some((4, "example/web:2".into())));

    // Without the HPA the template's replicas come back, and the status
    // no longer names an owner.
    hpas.delete("web", &DeleteParams::default()).await.unwrap();
    wait_for(
        &format!("web back to the template's 3 replicas in {cluster}"),
        Duration::from_secs(60),
        || async { member_web(&deployments).await == Some((3, "example/web:2".into())) },
    )
    .await;
    wait_for("no replicas owner reported", Duration::from_secs(60), || async {
        work_owner(&works).await.is_none() && binding_owner(&bindings, cluster).await.is_none()
    })
    .await;
}
