#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Member clusters through the hub (as Karmada's cluster proxy): the hub's
//! API server (with the aggregation layer) forwards
//! `/apis/proxy.flotilla.io/v1alpha1/clusters/{name}/proxy/...` to the hub's
//! proxy, which reaches a pull member (m1, a real node running busybox)
//! through the tunnel its agent opened, and a push member (p, a hollow node)
//! directly. Either way the member sees the hub user (impersonated): alice,
//! whom the member's RBAC lets read pods and logs, lists pods and reads
//! (and follows) a real container's log; bob, whom it does not, gets the
//! member's 403 (for exec too, which runs a command in m1's container
//! over an upgraded stream end to end); carol, whom the hub does not let use the proxy, gets the
//! hub's 403; an unknown cluster is a 404.

use flotilla_testkit as support;

use std::time::Duration;

use flotilla_core::kubeconfig::{self, Credential, KubeconfigSpec};
use flotilla_core::pki::LeafSpec;
use flotilla_fleet_core::cluster_proxy;
use flotilla_hub::HubConfig;
use flotilla_localkube::real_node::{RealNodeConfig, RealNodes, BUSYBOX_IMAGE};
use flotilla_localkube::{wait_for, Cluster, ClusterConfig};
use futures::{AsyncBufReadExt, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{AttachParams, ListParams, LogParams};
use kube::{Api, Client};
use serde_json::json;
use support::clusters::join_push;
use support::{apply, create_namespace, Fleet};
use tokio::io::AsyncReadExt;

const NS: &str = "shop";
const WAIT: Duration = Duration::from_secs(180);

/// A hub user's kubeconfig file (a client certificate of the hub's CA).
fn user_kubeconfig(fleet: &Fleet, user: &str) -> std::path::PathBuf {
    let cert = fleet.hub.ca().issue(&LeafSpec::client(user, &["people"])).unwrap();
    let path = fleet.tmp.path().join(format!("{user}.kubeconfig"));
    let text = kubeconfig::render(&KubeconfigSpec {
        name: "hub".into(),
        server: fleet.hub.server().into(),
        ca_pem: fleet.hub.ca().pem.cert_pem.clone(),
        credential: Credential::ClientCert { cert_pem: cert.cert_pem, key_pem: cert.key_pem },
    });
    std::fs::write(&path, text).unwrap();
    path
}

/// A client for member `cluster` through the hub, as the kubeconfig's user.
async fn through_hub(kubeconfig: &std::path::Path, cluster: &str) -> Client {
    let loaded = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
    let mut config = kube::Config::from_custom_kubeconfig(loaded, &Default::default()).await.unwrap();
    let base = config.cluster_url.to_string();
    let url = format!("{}{}", base.trim_end_matches('/'), cluster_proxy::proxy_path(cluster, ""));
    config.cluster_url = url.parse().unwrap();
    Client::try_from(config).unwrap()
}

/// Lets alice read pods and their logs in the member's namespace.
async fn grant_alice(member: &Client) {
    create_namespace(member, NS).await;
    // Pods are refused until the controller-manager made the namespace's
    // default ServiceAccount.
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(member.clone(), NS);
    wait_for("the namespace's default ServiceAccount", WAIT, || async {
        accounts.get_opt("default").await.ok().flatten().is_some()
    })
    .await;
    apply(
        member,
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "pod-reader", "namespace": NS},
        "rules": [{"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list", "watch"]},
                  {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["get", "create"]}]}),
    )
    .await;
    apply(
        member,
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "alice-reads-pods", "namespace": NS},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}]}),
    )
    .await;
}

fn pod(name: &str, command: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "main",
            "image": BUSYBOX_IMAGE, "imagePullPolicy": "IfNotPresent", "command": ["sh", "-c", command]}]}})
}

fn api_code(result: Result<impl std::fmt::Debug, kube::Error>) -> (u16, String) {
    match result {
        Err(kube::Error::Api(status)) => (status.code, status.message),
        other => panic!("expected an API error, got {other:?}"),
    }
}

async fn names(pods: &Api<Pod>) -> Vec<String> {
    pods.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_are_reached_through_the_hub_as_the_hub_user() {
    let mut nodes = RealNodes::reserve().unwrap();
    let hub_config = HubConfig {
        proxy: Some(flotilla_hub::proxy::ProxyConfig {
            listen: "0.0.0.0:0".parse().unwrap(),
            advertise: nodes.gateway().into(),
        }),
        ..Default::default()
    };
    let members = vec![ClusterConfig::new("m1").for_real_nodes(nodes.gateway())];
    let fleet = Fleet::start_with_hub_cluster(
        ClusterConfig::hub("hub").with_aggregation(),
        members,
        &["eu"],
        hub_config,
    )
    .await;
    let push_member = Cluster::start(ClusterConfig::new("p").with_nodes(1)).await.unwrap();
    nodes
        .start(fleet.member("m1"), vec![RealNodeConfig::new("m1-real-1")], Duration::from_secs(120))
        .await
        .unwrap();
    let hub = fleet.hub.client();

    // p joins in push mode (what `flotilla join p --mode push` writes).
    join_push(&hub, "p", push_member.kubeconfig_path()).await;

    // On the hub, alice and bob are bound to the ClusterRole `hub install`
    // ships for the proxy; carol is not given it.
    apply(&hub, json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "cluster-proxy-users"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": flotilla_hub::install::PROXY_ROLE},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"},
                     {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "bob"}]}))
    .await;

    // In each member, only alice may read pods.
    let m1 = fleet.member("m1").client();
    for member in [&m1, &push_member.client()] {
        grant_alice(member).await;
    }
    apply(
        &m1,
        pod("talker", "echo hello-from-m1; i=0; while true; do i=$((i+1)); echo tick $i; sleep 1; done"),
    )
    .await;
    apply(&push_member.client(), pod("quiet", "sleep 3600")).await;
    let m1_pods: Api<Pod> = Api::namespaced(m1.clone(), NS);
    wait_for("the real pod running in m1", WAIT, || async {
        let pod = m1_pods.get_opt("talker").await.ok().flatten();
        pod.and_then(|p| p.status?.phase).as_deref() == Some("Running")
    })
    .await;

    let alice = user_kubeconfig(&fleet, "alice");
    let bob = user_kubeconfig(&fleet, "bob");
    let carol = user_kubeconfig(&fleet, "carol");

    // The pull member, through its agent's tunnel.
    let alice_m1: Api<Pod> = Api::namespaced(through_hub(&alice, "m1").await, NS);
    wait_for("alice lists m1's pods through the hub", WAIT, || async {
        alice_m1
            .list(&ListParams::default())
            .await
            .is_ok_and(|l| l.items.iter().any(|p| p.metadata.name.as_deref() == Some("talker")))
    })
    .await;
    assert_eq!(names(&alice_m1).await, ["talker"]);
    let log = alice_m1.logs("talker", &LogParams::default()).await.unwrap();
    assert!(log.starts_with("hello-from-m1\n"), "{log}");
    // A followed log streams: lines arrive while the container still runs.
    let follow = LogParams { follow: true, tail_lines: Some(1), ..Default::default() };
    let lines: Vec<String> =
        alice_m1.log_stream("talker", &follow).await.unwrap().lines().take(3).try_collect().await.unwrap();
    let ticks: Vec<u64> = lines.iter().map(|l| l.trim_start_matches("tick ").parse().unwrap()).collect();
    assert!(ticks.windows(2).all(|w| w[1] == w[0] + 1), "consecutive ticks as they are written: {lines:?}");
    let (code, message) = api_code(
        Api::<Pod>::namespaced(through_hub(&bob, "m1").await, NS).list(&ListParams::default()).await,
    );
    assert_eq!(code, 403, "{message}");
    assert!(
        message.contains("User \"bob\" cannot list resource \"pods\""),
        "the member's own message: {message}"
    );
    let (code, message) = api_code(
        Api::<Pod>::namespaced(through_hub(&bob, "m1").await, NS).logs("talker", &LogParams::default()).await,
    );
    assert_eq!(code, 403, "{message}");

    // exec: an upgraded stream (WebSocket, v5 channel protocol) end to end.
    let exec = AttachParams::default().stderr(false);
    let mut attached = alice_m1.exec("talker", ["sh", "-c", "echo 6x7=$((6*7))"], &exec).await.unwrap();
    let mut out = String::new();
    attached.stdout().unwrap().read_to_string(&mut out).await.unwrap();
    attached.join().await.unwrap();
    assert_eq!(out, "6x7=42\n");
    let bob_exec =
        Api::<Pod>::namespaced(through_hub(&bob, "m1").await, NS).exec("talker", ["true"], &exec).await;
    match bob_exec {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{}", status.message),
        Err(other) => panic!("bob's exec: {other}"),
        Ok(_) => panic!("bob may not exec in m1"),
    }

    // kubectl itself, pointed at the hub path.
    let kubectl = flotilla_localkube::Binaries::locate().unwrap().path("kubectl");
    let server = format!("{}{}", fleet.hub.server(), cluster_proxy::proxy_path("m1", ""));
    // kubectl as alice in namespace NS of m1, through the hub: its stdout.
    let kubectl_as_alice = |args: &[&str]| {
        let output = std::process::Command::new(&kubectl)
            .args(["--kubeconfig", alice.to_str().unwrap(), "--server", &server, "-n", NS])
            .args(args)
            .output()
            .unwrap();
        assert!(output.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    assert_eq!(kubectl_as_alice(&["logs", "talker", "--limit-bytes=14"]), "hello-from-m1\n");
    assert_eq!(kubectl_as_alice(&["exec", "talker", "--", "echo", "via-kubectl"]), "via-kubectl\n");

    // The push member, dialled by the hub.
    let alice_p: Api<Pod> = Api::namespaced(through_hub(&alice, "p").await, NS);
    wait_for("alice lists p's pods through the hub", WAIT, || async {
        alice_p.list(&ListParams::default()).await.is_ok_and(|l| !l.items.is_empty())
    })
    .await;
    assert_eq!(names(&alice_p).await, ["quiet"]);
    let (code, message) =
        api_code(Api::<Pod>::namespaced(through_hub(&bob, "p").await, NS).list(&ListParams::default()).await);
    assert_eq!(code, 403, "{message}");
    assert!(message.contains("User \"bob\" cannot list resource \"pods\""), "{message}");

    // The hub's own refusals: no proxy rights, an unknown cluster.
    let (code, message) = api_code(
        Api::<Pod>::namespaced(through_hub(&carol, "m1").await, NS).list(&ListParams::default()).await,
    );
    assert_eq!(code, 403, "{message}");
    assert!(message.contains("clusters/proxy"), "the hub's RBAC refuses: {message}");
    let (code, message) = api_code(
        Api::<Pod>::namespaced(through_hub(&alice, "nope").await, NS).list(&ListParams::default()).await,
    );
    assert_eq!(code, 404, "{message}");
    assert!(message.contains("cluster nope is not a member of the fleet"), "{message}");

    drop(fleet);
    drop(push_member);
    drop(nodes);
}
