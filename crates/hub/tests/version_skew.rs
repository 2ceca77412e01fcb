#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Members older than the hub keep working: a hub on the current release
//! (1.37.2) and a member on the previous minor (1.36.3, from the binary
//! cache), both real. The member joins with a bootstrap token, reports its
//! inventory (its own version, its node) and runs a Deployment propagated
//! from the hub, whose status comes back to the hub's template.

use flotilla_testkit as support;

use std::time::Duration;

use flotilla_api::cluster::ManagedCluster;
use flotilla_hub::HubConfig;
use flotilla_localkube::{
    wait_for, Binaries, Cluster, ClusterConfig, DEFAULT_K8S_VERSION, PREVIOUS_K8S_VERSION,
};
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use serde_json::json;
use support::policies::propagate_deployment;
use support::workloads::deployment;
use support::{agent_config, apply, create_namespace, write_bootstrap_kubeconfig};

const WAIT: Duration = Duration::from_secs(90);

#[tokio::test]
async fn a_member_on_the_previous_minor_joins_reports_and_runs_propagated_work() {
    let mut old = ClusterConfig::new("old").with_nodes(1);
    old.binaries = Some(Binaries::locate_version(PREVIOUS_K8S_VERSION).unwrap());
    let (hub, member) = tokio::join!(Cluster::start(ClusterConfig::hub("hub")), Cluster::start(old));
    let (hub, member) = (hub.unwrap(), member.unwrap());
    // The two really run different releases.
    assert_eq!(hub.client().apiserver_version().await.unwrap().git_version, DEFAULT_K8S_VERSION);
    assert_eq!(member.client().apiserver_version().await.unwrap().git_version, PREVIOUS_K8S_VERSION);

    let tmp = tempfile::tempdir().unwrap();
    flotilla_hub::install(&hub.client()).await.unwrap();
    let client = hub.client();
    let _controllers = tokio::spawn(async move {
        let config = HubConfig { auto_accept: true, grace: Duration::from_secs(2), ..Default::default() };
        flotilla_hub::run(client, config).await.unwrap();
    });
    let bootstrap = tmp.path().join("bootstrap.kubeconfig");
    write_bootstrap_kubeconfig(&hub, "skewab", &bootstrap).await;
    let agent = agent_config("old", &tmp.path().join("old"), &member, Some(bootstrap));
    let _agent = tokio::spawn(flotilla_agent::run(agent, std::future::pending()));

    // Joined, Available, its inventory reported.
    let clusters: Api<ManagedCluster> = Api::all(hub.client());
    wait_for("old Available with its version and node reported", WAIT, || async {
        let Some(mc) = clusters.get_opt("old").await.unwrap() else { return false };
        let status = mc.status.clone().unwrap_or_default();
        mc.condition("Available").is_some_and(|c| c.status == "True")
            && status.kubernetes_version.is_some()
            && status.node_summary.as_ref().is_some_and(|n| n.ready == 1)
            && !status.api_enablements.is_empty()
    })
    .await;
    let status = clusters.get("old").await.unwrap().status.unwrap();
    assert_eq!(status.kubernetes_version.as_deref(), Some(PREVIOUS_K8S_VERSION), "{status:?}");
    assert_eq!(status.node_summary.as_ref().unwrap().total, 1, "{status:?}");

    // A Deployment propagated from the hub runs there; its status comes back.
    let hub_client = hub.client();
    create_namespace(&hub_client, "demo").await;
    let on_old = json!({"clusterAffinity": {"clusterNames": ["old"]}});
    propagate_deployment(&hub_client, "demo", "web", json!({"placement": on_old})).await;
    apply(&hub_client, deployment("web", 2, "docker.io/library/nginx:1.25", None)).await;
    let on_member: Api<Deployment> = Api::namespaced(member.client(), "demo");
    wait_for("web's two replicas available on the 1.36 member", WAIT, || async {
        let Some(d) = on_member.get_opt("web").await.unwrap() else { return false };
        d.status.and_then(|s| s.available_replicas) == Some(2)
    })
    .await;
    let on_hub: Api<Deployment> = Api::namespaced(hub.client(), "demo");
    wait_for("the hub's template to show 2 available", WAIT, || async {
        on_hub.get("web").await.unwrap().status.and_then(|s| s.available_replicas) == Some(2)
    })
    .await;
}
