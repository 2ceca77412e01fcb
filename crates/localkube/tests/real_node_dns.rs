#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Cluster DNS on real nodes: the CoreDNS add-on Flotilla renders for
//! hosted clusters (`flotilla_kok_core::addons`), applied to a localkube
//! cluster with two real nodes, answers a pod on the other node with the
//! Services' ClusterIPs, and a Service is reached by its name.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use flotilla_api::kok::{Addon, HostedCluster, HostedClusterSpec, HostedEtcd, NetworkSpec};
use flotilla_kok_core::addons::{self, nth_service_ip, COREDNS};
use flotilla_localkube::real_node::{RealNodeConfig, RealNodes, BUSYBOX_IMAGE, CLUSTER_DNS, CLUSTER_DOMAIN};
use flotilla_localkube::{wait_for, Cluster, ClusterConfig};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, AttachParams, DynamicObject, ListParams, LogParams, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::{pinned_kind, Scope};
use tokio::io::AsyncReadExt;

const NODE_A: &str = "dns-a";
const NODE_B: &str = "dns-b";
/// localkube's service range (its first address is the `kubernetes`
/// Service, checked below against the live cluster).
const SERVICE_CIDR: &str = "10.0.0.0/24";

/// The add-on's manifests for a hosted cluster with this cluster's network.
fn coredns_manifests() -> Vec<serde_json::Value> {
    let hc = HostedCluster::new(
        "dns",
        HostedClusterSpec {
            version: flotilla_localkube::DEFAULT_K8S_VERSION.into(),
            etcd: HostedEtcd { cluster_ref: Some("e".into()), shared: None },
            network: NetworkSpec {
                service_cidr: SERVICE_CIDR.into(),
                pod_cidr: None,
                cluster_domain: CLUSTER_DOMAIN.into(),
            },
            addons: vec![Addon { name: COREDNS.into(), version: None }],
            ..Default::default()
        },
    );
    addons::manifests(&Addon { name: COREDNS.into(), version: None }, &hc, "unused.unused").unwrap()
}

/// Server-side applies any manifest, finding its resource by discovery.
async fn apply(client: &kube::Client, manifest: &serde_json::Value) {
    let (group, version) = match manifest["apiVersion"].as_str().unwrap().split_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (String::new(), manifest["apiVersion"].as_str().unwrap().to_string()),
    };
    let gvk = GroupVersionKind::gvk(&group, &version, manifest["kind"].as_str().unwrap());
    let (resource, caps) = pinned_kind(client, &gvk).await.unwrap();
    let name = manifest["metadata"]["name"].as_str().unwrap();
    let api: Api<DynamicObject> = match caps.scope {
        Scope::Namespaced => Api::namespaced_with(
            client.clone(),
            manifest["metadata"]["namespace"].as_str().unwrap_or("default"),
            &resource,
        ),
        Scope::Cluster => Api::all_with(client.clone(), &resource),
    };
    api.patch(name, &PatchParams::apply("real-node-dns-test").force(), &Patch::Apply(manifest))
        .await
        .unwrap_or_else(|e| panic!("applying {} {name}: {e}", gvk.kind));
}

fn pod(name: &str, node: &str, script: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": node},
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "main", "image": BUSYBOX_IMAGE, "imagePullPolicy": "Never",
                "command": ["sh", "-c", script]}]
        }
    }))
    .unwrap()
}

fn service(name: &str, port: u16, target: u16) -> Service {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": {"app": name}, "ports": [{"port": port, "targetPort": target}]}
    }))
    .unwrap()
}

/// What a command in a pod printed (stdout and stderr) and whether it exited 0.
async fn exec(pods: &Api<Pod>, pod: &str, command: &[&str]) -> (bool, String) {
    let mut attached = pods.exec(pod, command.to_vec(), &AttachParams::default()).await.unwrap();
    let (mut out, mut err) = (attached.stdout().unwrap(), attached.stderr().unwrap());
    let status = attached.take_status().unwrap();
    let (mut stdout, mut stderr) = (String::new(), String::new());
    let (read_out, read_err) = tokio::join!(out.read_to_string(&mut stdout), err.read_to_string(&mut stderr));
    read_out.unwrap();
    read_err.unwrap();
    let status = status.await;
    attached.join().await.unwrap();
    let ok = status.as_ref().and_then(|s| s.status.as_deref()) == Some("Success");
    (ok, format!("{stdout}{stderr}"))
}

/// Runs `command` in `pod` until it succeeds (DNS answers only once
/// CoreDNS and kube-proxy have caught up); fails with the last output and
/// the state of the DNS pods.
async fn exec_until_ok(pods: &Api<Pod>, pod: &str, command: &[&str], timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let (ok, output) = exec(pods, pod, command).await;
        if ok {
            return output;
        }
        if Instant::now() > deadline {
            let report = dns_pods_report(&Api::namespaced(pods.clone().into_client(), "kube-system")).await;
            panic!("{command:?} in {pod} kept failing; last output:\n{output}\nDNS pods:\n{report}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Each CoreDNS pod's node, phase, container state and log tail.
async fn dns_pods_report(system_pods: &Api<Pod>) -> String {
    let list = system_pods.list(&ListParams::default().labels("k8s-app=kube-dns")).await.unwrap();
    let mut report = String::new();
    for p in &list.items {
        let name = p.metadata.name.clone().unwrap_or_default();
        let node = p.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
        let containers = p.status.as_ref().and_then(|s| s.container_statuses.clone()).unwrap_or_default();
        let logs = system_pods
            .logs(&name, &LogParams { tail_lines: Some(15), ..Default::default() })
            .await
            .unwrap_or_else(|e| e.to_string());
        report += &format!("{name} on {node} ({}): {containers:?}\n{logs}\n", phase(p));
    }
    report
}

/// The addresses in the answer section of busybox's nslookup output
/// (after the `Name:` line; the server's own address comes before it).
fn answered_addresses(output: &str) -> Vec<IpAddr> {
    output
        .lines()
        .skip_while(|l| !l.starts_with("Name:"))
        .filter_map(|l| l.strip_prefix("Address:").or_else(|| l.strip_prefix("Address 1:")))
        .filter_map(|a| a.split_whitespace().next()?.parse().ok())
        .collect()
}

fn phase(p: &Pod) -> &str {
    p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coredns_on_real_nodes_answers_service_names_across_nodes() {
    let mut nodes = RealNodes::reserve().unwrap();
    let mut config = ClusterConfig::new("dns").for_real_nodes(nodes.gateway());
    config.wait_for_default_service_account = true;
    let cluster = Cluster::start(config).await.unwrap();
    let client = cluster.client();
    nodes
        .start(
            &cluster,
            vec![RealNodeConfig::new(NODE_A), RealNodeConfig::new(NODE_B)],
            Duration::from_secs(120),
        )
        .await
        .unwrap();

    // The add-on's DNS address is the one the kubelets hand to pods.
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let kubernetes_ip: IpAddr =
        services.get("kubernetes").await.unwrap().spec.unwrap().cluster_ip.unwrap().parse().unwrap();
    assert_eq!(kubernetes_ip, nth_service_ip(SERVICE_CIDR, 1).unwrap(), "localkube's service range");
    assert_eq!(nth_service_ip(SERVICE_CIDR, 10).unwrap(), IpAddr::V4(CLUSTER_DNS));
    let configz = client
        .request_text(
            http::Request::get(format!("/api/v1/nodes/{NODE_B}/proxy/configz")).body(Vec::new()).unwrap(),
        )
        .await
        .unwrap();
    let configz: serde_json::Value = serde_json::from_str(&configz).unwrap();
    assert_eq!(configz["kubeletconfig"]["clusterDNS"], serde_json::json!([CLUSTER_DNS.to_string()]));
    assert_eq!(configz["kubeletconfig"]["clusterDomain"], CLUSTER_DOMAIN);

    let manifests = coredns_manifests();
    let dns_service = manifests.iter().find(|m| m["kind"] == "Service").unwrap();
    assert_eq!(dns_service["spec"]["clusterIP"], CLUSTER_DNS.to_string());
    for manifest in &manifests {
        apply(&client, manifest).await;
    }
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "kube-system");
    let system_pods: Api<Pod> = Api::namespaced(client.clone(), "kube-system");
    let dns_started = Instant::now();
    let deadline = dns_started + Duration::from_secs(180);
    loop {
        let d = deployments.get("coredns").await.unwrap();
        let ready = d.status.and_then(|s| s.ready_replicas).unwrap_or(0);
        if ready == 2 {
            break;
        }
        if Instant::now() > deadline {
            panic!("CoreDNS never had 2 ready replicas ({ready}):\n{}", dns_pods_report(&system_pods).await);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "timing: CoreDNS Ready {:.1}s after the add-on was applied",
        dns_started.elapsed().as_secs_f64()
    );

    // A web server on node A behind a Service, a client on node B.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();
    pods.create(
        &pp,
        &pod(
            "web",
            NODE_A,
            "mkdir -p /www && echo hello-from-web > /www/index.html && exec httpd -f -p 8080 -h /www",
        ),
    )
    .await
    .unwrap();
    let web_ip: IpAddr = services
        .create(&pp, &service("web", 80, 8080))
        .await
        .unwrap()
        .spec
        .unwrap()
        .cluster_ip
        .unwrap()
        .parse()
        .unwrap();
    pods.create(&pp, &pod("client", NODE_B, "exec sleep 3600")).await.unwrap();
    wait_for("web and client Running", Duration::from_secs(90), || async {
        phase(&pods.get("web").await.unwrap()) == "Running"
            && phase(&pods.get("client").await.unwrap()) == "Running"
    })
    .await;

    // The client's resolver is the cluster DNS, with the cluster's search path.
    let (_, resolv) = exec(&pods, "client", &["cat", "/etc/resolv.conf"]).await;
    assert!(resolv.contains(&format!("nameserver {CLUSTER_DNS}")), "{resolv}");
    assert!(resolv.contains(&format!("default.svc.{CLUSTER_DOMAIN}")), "{resolv}");

    let timeout = Duration::from_secs(60);
    for (name, ip) in [("web", web_ip), ("kubernetes", kubernetes_ip)] {
        let full_name = format!("{name}.default.svc.{CLUSTER_DOMAIN}");
        let answer = exec_until_ok(&pods, "client", &["nslookup", &full_name], timeout).await;
        assert_eq!(answered_addresses(&answer), [ip], "nslookup {full_name}:\n{answer}");
    }
    // Short names through the pod's search path and the C library's
    // resolver (busybox's nslookup takes a dotted name as it is): wget says
    // where it connects before the API server refuses plain HTTP.
    let (_, said) =
        exec(&pods, "client", &["timeout", "5", "wget", "-O", "/dev/null", "http://kubernetes.default:443/"])
            .await;
    assert!(said.contains(&format!("Connecting to kubernetes.default:443 ({kubernetes_ip}:443)")), "{said}");

    // The Service by its short name, from the other node.
    let page =
        exec_until_ok(&pods, "client", &["timeout", "5", "wget", "-q", "-O", "-", "http://web/"], timeout)
            .await;
    assert_eq!(page.trim(), "hello-from-web");

    // CoreDNS stayed up all along (forwarding to itself, it would exit).
    let dns_pods = system_pods.list(&ListParams::default().labels("k8s-app=kube-dns")).await.unwrap();
    for p in &dns_pods.items {
        let restarts: i32 = p
            .status
            .iter()
            .flat_map(|s| s.container_statuses.iter().flatten())
            .map(|c| c.restart_count)
            .sum();
        assert_eq!(restarts, 0, "CoreDNS restarted:\n{}", dns_pods_report(&system_pods).await);
    }

    let shutdown = nodes.shutdown();
    assert!(shutdown.problems.is_empty(), "{:?}", shutdown.problems);
}
