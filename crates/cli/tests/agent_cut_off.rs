#![allow(clippy::unwrap_used, clippy::expect_used)]
//! An agent cut off from the hub for 60 s, on a test host of its own (a
//! network namespace joined by a veth pair; the link goes down and comes
//! back): the member's workloads are untouched (no pod restarted, nothing
//! moved), and on heal the member converges to what changed on the hub
//! meanwhile. Real hub and member API servers, a real `flotilla hub run`,
//! real `flotilla agent` processes.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use flotilla_api::work::ResourceBinding;
use flotilla_api::ManagedCluster;
use flotilla_localkube::netns::NetnsHost;
use flotilla_localkube::{wait_for, Cluster, ClusterConfig, ManagedProcess, ProcessSpec};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;

const FLOTILLA: &str = env!("CARGO_BIN_EXE_flotilla");

fn flotilla(args: &[&str]) -> Output {
    Command::new(FLOTILLA).args(args).output().unwrap()
}

async fn apply(client: &Client, object: serde_json::Value) {
    let api_version = object["apiVersion"].as_str().unwrap().to_string();
    let kind = object["kind"].as_str().unwrap().to_string();
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", &api_version));
    let gvk = kube::api::GroupVersionKind::gvk(group, version, &kind);
    let (resource, _) = kube::discovery::pinned_kind(client, &gvk).await.unwrap();
    let name = object["metadata"]["name"].as_str().unwrap().to_string();
    let api: Api<kube::api::DynamicObject> = match object["metadata"]["namespace"].as_str() {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    api.patch(&name, &PatchParams::apply("test").force(), &Patch::Apply(&object)).await.unwrap();
}

/// A copy of `kubeconfig` that reaches its server on `ip` instead of loopback.
fn reached_on(kubeconfig: &Path, ip: std::net::Ipv4Addr, out: &Path) -> String {
    let text = std::fs::read_to_string(kubeconfig).unwrap();
    assert!(text.contains("https://127.0.0.1:"), "{text}");
    std::fs::write(out, text.replace("https://127.0.0.1:", &format!("https://{ip}:"))).unwrap();
    out.display().to_string()
}

/// Pod uid -> restarts, of the member's `web` pods.
async fn pods(member: &Cluster) -> BTreeMap<String, i32> {
    let pods: Api<Pod> = Api::namespaced(member.client(), "demo");
    pods.list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|p| {
            let restarts = p
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .map(|cs| cs.iter().map(|c| c.restart_count).sum())
                .unwrap_or(0);
            (p.metadata.uid.unwrap_or_default(), restarts)
        })
        .collect()
}

async fn replicas(member: &Cluster) -> Option<(i32, i32)> {
    let d = Api::<Deployment>::namespaced(member.client(), "demo").get_opt("web").await.ok()??;
    Some((d.spec.replicas.unwrap_or(1), d.status.and_then(|s| s.available_replicas).unwrap_or(0)))
}

#[tokio::test]
async fn an_agent_cut_off_from_the_hub_for_a_minute_leaves_its_member_alone_and_converges_on_heal() {
    let host = NetnsHost::create("cut")
        .expect("a network namespace for the agent's test host (needs root and iproute2)");
    let mut hub_config = ClusterConfig::hub("hub");
    hub_config.serve_on = Some(host.host_ip);
    let mut m1_config = ClusterConfig::new("m1").with_nodes(1);
    m1_config.serve_on = Some(host.host_ip);
    let (hub, m1, m2) = tokio::join!(
        Cluster::start(hub_config),
        Cluster::start(m1_config),
        Cluster::start(ClusterConfig::new("m2").with_nodes(1))
    );
    let (hub, m1, m2) = (hub.unwrap(), m1.unwrap(), m2.unwrap());
    let tmp = tempfile::tempdir().unwrap();
    let hub_kc = hub.kubeconfig_path().display().to_string();
    let out = flotilla(&["hub", "install", "--kubeconfig", &hub_kc]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let _hub_run =
        ManagedProcess::spawn(ProcessSpec::new("hub", FLOTILLA.into(), tmp.path().join("hub.log")).args([
            "hub",
            "run",
            "--auto-accept",
            "--grace-seconds",
            "2",
            "--kubeconfig",
            &hub_kc,
        ]))
        .unwrap();
    let bootstrap = tmp.path().join("bootstrap.kubeconfig");
    let out = flotilla(&["token", "create", "--kubeconfig", &hub_kc, "-o", bootstrap.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // m1's agent lives on the test host and reaches both APIs over the link.
    let ns_bootstrap = reached_on(&bootstrap, host.host_ip, &tmp.path().join("ns-bootstrap.kubeconfig"));
    let ns_member = reached_on(m1.kubeconfig_path(), host.host_ip, &tmp.path().join("ns-m1.kubeconfig"));
    let agent = |name: &str, kubeconfig: &str, hub_kubeconfig: &str, netns: Option<&NetnsHost>| {
        let state = tmp.path().join("agents").join(name).display().to_string();
        let args =
            ["agent", "--cluster", name, "--kubeconfig", kubeconfig, "--hub-kubeconfig", hub_kubeconfig];
        let spec = match netns {
            Some(host) => {
                ProcessSpec::new(format!("agent-{name}"), "ip".into(), tmp.path().join(format!("{name}.log")))
                    .args(host.exec_prefix())
                    .arg(FLOTILLA)
            }
            None => ProcessSpec::new(
                format!("agent-{name}"),
                FLOTILLA.into(),
                tmp.path().join(format!("{name}.log")),
            ),
        };
        ManagedProcess::spawn(spec.args(args).args(["--state-dir", &state])).unwrap()
    };
    let _m1_agent = agent("m1", &ns_member, &ns_bootstrap, Some(&host));
    let m2_kc = m2.kubeconfig_path().display().to_string();
    let _m2_agent = agent("m2", &m2_kc, bootstrap.to_str().unwrap(), None);

    let client = hub.client();
    let clusters: Api<ManagedCluster> = Api::all(client.clone());
    let available = |name: &'static str| {
        let clusters = clusters.clone();
        async move {
            clusters
                .get_opt(name)
                .await
                .unwrap()
                .and_then(|mc| mc.condition("Available").map(|c| c.status.clone()))
        }
    };
    for name in ["m1", "m2"] {
        wait_for(&format!("{name} Available"), Duration::from_secs(90), || async {
            available(name).await.as_deref() == Some("True")
                && clusters.get(name).await.unwrap().status.is_some_and(|s| !s.api_enablements.is_empty())
        })
        .await;
    }
    apply(&client, json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo"}})).await;
    apply(
        &client,
        json!({"apiVersion": "policy.flotilla.io/v1alpha1", "kind": "PropagationPolicy",
            "metadata": {"name": "all", "namespace": "demo"},
            "spec": {"resourceSelectors": [{"apiVersion": "apps/v1", "kind": "Deployment"},
                    {"apiVersion": "v1", "kind": "ConfigMap"}],
                "placement": {"replicaScheduling": {"replicaSchedulingType": "Divided",
                    "replicaDivisionPreference": "Weighted"}}}}),
    )
    .await;
    apply(
        &client,
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "demo"},
            "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "app", "image": "nginx:1.25"}]}}}}),
    )
    .await;
    wait_for("2 replicas available in each member", Duration::from_secs(180), || async {
        replicas(&m1).await == Some((2, 2)) && replicas(&m2).await == Some((2, 2))
    })
    .await;
    let pods_before = pods(&m1).await;
    assert_eq!(pods_before.len(), 2, "{pods_before:?}");
    let bindings: Api<ResourceBinding> = Api::namespaced(client.clone(), "demo");
    let division = |b: ResourceBinding| -> Vec<(String, i32)> {
        b.spec.spec.clusters.iter().map(|c| (c.name.clone(), c.replicas)).collect()
    };
    let even = vec![("m1".to_string(), 2), ("m2".to_string(), 2)];
    assert_eq!(division(bindings.get("web-deployment").await.unwrap()), even);

    // The cut: a minute without the hub (and without its own API, which the
    // agent reaches over the same link).
    host.cut().unwrap();
    let cut_at = Instant::now();
    wait_for("m1 Unknown (no heartbeat)", Duration::from_secs(40), || async {
        available("m1").await.as_deref() == Some("Unknown")
    })
    .await;
    // Something changes on the hub meanwhile.
    apply(
        &client,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings", "namespace": "demo"},
            "data": {"mode": "cut"}}),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(60).saturating_sub(cut_at.elapsed())).await;
    assert_eq!(
        division(bindings.get("web-deployment").await.unwrap()),
        even,
        "replicas moved during a minute's cut (the default toleration is 300 s)"
    );
    assert_eq!(replicas(&m1).await, Some((2, 2)), "m1's workload changed while its agent was cut off");
    assert_eq!(replicas(&m2).await, Some((2, 2)), "m2 took over replicas");
    host.heal().unwrap();

    wait_for("m1 Available after the heal", Duration::from_secs(60), || async {
        available("m1").await.as_deref() == Some("True")
    })
    .await;
    let configmaps: Api<ConfigMap> = Api::namespaced(m1.client(), "demo");
    wait_for("the change made during the cut reaches m1", Duration::from_secs(60), || async {
        configmaps
            .get_opt("settings")
            .await
            .unwrap()
            .is_some_and(|c| c.data.is_some_and(|d| d.get("mode").map(String::as_str) == Some("cut")))
    })
    .await;
    assert_eq!(division(bindings.get("web-deployment").await.unwrap()), even);
    assert_eq!(pods(&m1).await, pods_before, "m1's pods were replaced or restarted");
    let total: i32 = [replicas(&m1).await, replicas(&m2).await].iter().flatten().map(|(spec, _)| spec).sum();
    assert_eq!(total, 4, "lost or duplicated replicas");
}
