#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `flotilla up --real-nodes`: a member whose worker is a real node (a
//! NodePool of the member), where a pod really runs and logs, and `down`
//! removes the node's processes, namespace and cgroups; the pod listed,
//! its log read and a command run in it through the hub's cluster proxy
//! (`flotilla get pods|logs|exec --cluster`, each a process). Needs root and
//! `scripts/node-runtime.sh`'s runtime, like localkube's `real_nodes` test.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

mod fleet_cli;

use fleet_cli::{client, flotilla, text, Fleet};
use flotilla_api::machine::Machine;
use flotilla_localkube::real_node::BUSYBOX_IMAGE;
use flotilla_localkube::{wait_for, Binaries};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, PostParams};

const WAIT: Duration = Duration::from_secs(180);

fn cgroup_exists(name: &str) -> bool {
    ["/sys/fs/cgroup/memory", "/sys/fs/cgroup/cpu", "/sys/fs/cgroup/pids"]
        .iter()
        .any(|h| Path::new(h).join(name).exists())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_with_real_nodes_runs_pods_in_real_containers_and_down_removes_the_nodes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("fleet");
    let d = dir.to_str().unwrap();
    let _fleet = Fleet { dir: dir.clone() };
    let out = flotilla(&["up", "--clusters", "1", "--nodes", "0", "--real-nodes", "1", "--state-dir", d]);
    let shown = text(&out);
    assert!(out.status.success(), "up failed:\n{shown}");
    assert!(shown.contains("with 0 hollow node(s) and 1 real node(s) each"), "{shown}");

    // The member's one node is the real node of its pool.
    let member = client(&dir.join("clusters/member-1.kubeconfig")).await;
    let nodes = Api::<Node>::all(member.clone()).list(&Default::default()).await.unwrap().items;
    let names: Vec<String> = nodes.iter().map(|n| n.metadata.name.clone().unwrap()).collect();
    assert_eq!(names, ["member-1-nodes-0"], "{nodes:?}");

    // A pod runs in a real container and logs.
    let pods: Api<Pod> = Api::namespaced(member.clone(), "default");
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "hello"},
        "spec": {"containers": [{"name": "main", "image": BUSYBOX_IMAGE, "imagePullPolicy": "Never",
            "command": ["sh", "-c", "echo hello from a real node; exec sleep 3600"]}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    wait_for("the pod Running", WAIT, || async {
        pods.get("hello").await.ok().and_then(|p| p.status?.phase).as_deref() == Some("Running")
    })
    .await;
    let kubectl = Binaries::locate().unwrap().path("kubectl");
    let kubeconfig = dir.join("clusters/member-1.kubeconfig");
    let logs = Command::new(&kubectl)
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .args(["logs", "hello"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&logs.stdout).contains("hello from a real node"), "{logs:?}");

    // The same pod through the hub's cluster proxy, as the hub user: the
    // member is a push member (the hub dials it with its credentials).
    assert!(shown.contains("flotilla get pods --cluster member-1"), "up names the proxy:\n{shown}");
    let hub_kubeconfig = dir.join("hub.kubeconfig");
    let through_hub = |args: &[&str]| {
        // The flags before an exec's `--` (what follows is its command).
        let at = args.iter().position(|a| *a == "--").unwrap_or(args.len());
        let mut all = args[..at].to_vec();
        all.extend(["--cluster", "member-1", "--kubeconfig", hub_kubeconfig.to_str().unwrap()]);
        all.extend(&args[at..]);
        flotilla(&all)
    };
    let out = through_hub(&["get", "pods", "-n", "default"]);
    let listed = text(&out);
    assert!(out.status.success(), "get pods --cluster:\n{listed}");
    assert!(
        listed.lines().any(|l| l.trim_start().starts_with("hello ") && l.contains("Running")),
        "{listed}"
    );
    let out = through_hub(&["logs", "hello"]);
    assert!(
        out.status.success() && text(&out).contains("hello from a real node"),
        "logs --cluster:\n{}",
        text(&out)
    );
    let out = through_hub(&["exec", "hello", "--", "sh", "-c", "echo through the hub from $(hostname)"]);
    assert!(out.status.success(), "exec --cluster:\n{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "through the hub from hello");
    // The command's failure is the exit status of `flotilla exec`.
    let out = through_hub(&["exec", "hello", "--", "sh", "-c", "exit 3"]);
    assert!(!out.status.success(), "a failing command ends exec with failure:\n{}", text(&out));
    assert!(text(&out).contains("command failed in cluster member-1"), "{}", text(&out));
    let out = flotilla(&["status", "--state-dir", d]);
    assert!(text(&out).contains("Cluster proxy: https://"), "{}", text(&out));

    // Where the node lives on the host, before `down`.
    let hub = client(&dir.join("hub.kubeconfig")).await;
    let machines = Api::<Machine>::all(hub).list(&Default::default()).await.unwrap().items;
    let node = machines
        .iter()
        .flat_map(|m| m.status.clone().unwrap_or_default().real_nodes)
        .find(|n| n.name == "member-1-nodes-0")
        .unwrap();
    let sandbox = node.sandbox.clone().unwrap();
    let cgroup = sandbox.rsplit(' ').next().unwrap().to_string();
    assert!(cgroup_exists(&cgroup), "{sandbox}");

    let out = flotilla(&["down", "--state-dir", d]);
    assert!(out.status.success(), "down failed:\n{}", text(&out));
    assert!(!cgroup_exists(&cgroup), "cgroup {cgroup} is left after down");
    // "netns NAME, cgroup NAME"
    let netns = sandbox.split(' ').nth(1).unwrap().trim_end_matches(',');
    assert!(!Path::new("/run/netns").join(netns).exists(), "network namespace {netns} is left after down");
}
