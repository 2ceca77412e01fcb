#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The cluster proxy across a change of hub leader: the leader's proxy
//! (`flotilla_hub::proxy::serve`, as `hub run` runs it while it leads) holds
//! the pull member's tunnel; when it stops, as a leader's that steps down
//! does, the tunnel closes and requests through the hub fail with a clear
//! 503; the next leader's proxy, on another port and with a certificate
//! authority of its own, registers itself in the APIService, the agent
//! reopens its tunnel to it, and the member answers through the hub again.

mod support;

use std::time::Duration;

use flotilla_fleet_core::cluster_proxy;
use flotilla_hub::proxy::{ProxyConfig, SERVICE_NAME};
use flotilla_hub::HubConfig;
use flotilla_localkube::real_node::RealNodes;
use flotilla_localkube::{wait_for, ClusterConfig};
use k8s_openapi::api::core::v1::{Endpoints, Pod, ServiceAccount};
use kube::api::ListParams;
use kube::{Api, Client};
use serde_json::json;
use support::{apply, Fleet};

const WAIT: Duration = Duration::from_secs(120);

/// The hub's admin, reaching member `cluster` through the hub.
async fn through_hub(fleet: &Fleet, cluster: &str) -> Api<Pod> {
    let loaded = kube::config::Kubeconfig::read_from(fleet.hub.kubeconfig_path()).unwrap();
    let mut config = kube::Config::from_custom_kubeconfig(loaded, &Default::default()).await.unwrap();
    let base = config.cluster_url.to_string();
    config.cluster_url =
        format!("{}{}", base.trim_end_matches('/'), cluster_proxy::proxy_path(cluster, "")).parse().unwrap();
    Api::namespaced(Client::try_from(config).unwrap(), "default")
}

async fn lists_the_pod(pods: &Api<Pod>) -> bool {
    pods.list(&ListParams::default())
        .await
        .is_ok_and(|l| l.items.iter().any(|p| p.metadata.name.as_deref() == Some("web")))
}

/// The port the APIService's endpoints point at.
async fn registered_port(hub: &Client) -> Option<i32> {
    let endpoints: Api<Endpoints> = Api::namespaced(hub.clone(), flotilla_hub::SYSTEM_NAMESPACE);
    let found = endpoints.get_opt(SERVICE_NAME).await.ok()??;
    found.subsets?.first()?.ports.as_ref()?.first().map(|p| p.port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leaders_proxy_takes_the_tunnel_over() {
    // Only for an address other than loopback (an APIService endpoint may
    // not be loopback): the bridge's host side; no real node runs.
    let nodes = RealNodes::reserve().unwrap();
    let address = nodes.gateway();
    let fleet = Fleet::start_with_hub_cluster(
        ClusterConfig::hub("hub").with_aggregation(),
        vec![ClusterConfig::new("m1").with_nodes(1)],
        &["eu"],
        HubConfig::default(),
    )
    .await;
    let hub = fleet.hub.client();
    // Pods are refused until the controller-manager made the default ServiceAccount.
    let accounts: Api<ServiceAccount> = Api::namespaced(fleet.member("m1").client(), "default");
    wait_for("m1's default ServiceAccount", WAIT, || async {
        accounts.get_opt("default").await.ok().flatten().is_some()
    })
    .await;
    apply(
        &fleet.member("m1").client(),
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "default"},
            "spec": {"containers": [{"name": "main", "image": "nginx"}]}}),
    )
    .await;
    let config = ProxyConfig { listen: (address, 0).into(), advertise: address.into() };
    let pods = through_hub(&fleet, "m1").await;

    // The first leader's proxy.
    let first = tokio::spawn(flotilla_hub::proxy::serve(hub.clone(), config.clone()));
    wait_for("m1's pod through the first leader's proxy", WAIT, || lists_the_pod(&pods)).await;
    let first_port = registered_port(&hub).await.unwrap();

    // It steps down: its tunnels close with it; no one serves the proxy.
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    let failed = pods.list(&ListParams::default()).await;
    match failed {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 503, "{}", status.message),
        other => panic!("a request with no proxy serving: {other:?}"),
    }

    // The next leader's proxy: another port, another CA.
    let second = tokio::spawn(flotilla_hub::proxy::serve(hub.clone(), config));
    wait_for("the APIService pointing at the new leader", WAIT, || async {
        registered_port(&hub).await.is_some_and(|port| port != first_port)
    })
    .await;
    wait_for("m1's pod through the new leader's proxy (the agent reopened its tunnel)", WAIT, || {
        lists_the_pod(&pods)
    })
    .await;
    second.abort();
    drop(fleet);
    drop(nodes);
}
