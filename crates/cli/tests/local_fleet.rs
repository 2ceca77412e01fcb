#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `flotilla up` / `status` / `down` end to end, on real binaries: the
//! members are hosted clusters (HostedCluster on the hub, control planes
//! and hollow nodes run by node agents).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

fn flotilla(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flotilla")).args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Runs `flotilla down` when the test ends, however it ends.
struct Fleet {
    dir: PathBuf,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if self.dir.join("fleet.json").exists() {
            let _ = flotilla(&["down", "--state-dir", self.dir.to_str().unwrap()]);
        }
    }
}

async fn client(kubeconfig: &Path) -> kube::Client {
    let kc = Kubeconfig::read_from(kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.unwrap();
    kube::Client::try_from(config).unwrap()
}

fn deployment(replicas: i32) -> Deployment {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "nginx", "image": "nginx"}]}}}
    }))
    .unwrap()
}

fn recorded_pids(state: &serde_json::Value) -> Vec<u64> {
    let mut pids = vec![state["daemon"]["pid"].as_u64().unwrap(), state["etcd"]["pid"].as_u64().unwrap()];
    for c in state["clusters"].as_array().unwrap() {
        for p in c["processes"].as_array().unwrap() {
            pids.push(p["pid"].as_u64().unwrap());
        }
    }
    for m in state["machines"].as_array().unwrap() {
        pids.push(m["agent"]["pid"].as_u64().unwrap());
        for p in m["components"].as_array().unwrap() {
            pids.push(p["pid"].as_u64().unwrap());
        }
    }
    pids
}

fn alive(pid: u64) -> bool {
    flotilla_testenv::process::pid_alive(pid as u32)
}

#[tokio::test]
async fn up_runs_a_fleet_that_runs_workloads_and_down_removes_it_all() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("fleet");
    let d = dir.to_str().unwrap();
    let _guard = Fleet { dir: dir.clone() };

    let out = flotilla(&["up", "--clusters", "1", "--nodes", "2", "--state-dir", d]);
    assert!(out.status.success(), "up failed:\n{}", text(&out));
    let shown = text(&out);
    assert!(shown.contains(&format!("{d}/hub.kubeconfig")), "{shown}");
    assert!(shown.contains(&format!("{d}/clusters/member-1.kubeconfig")), "{shown}");

    // A Deployment on the member reaches 3/3 on hollow nodes.
    let member = client(&dir.join("clusters/member-1.kubeconfig")).await;
    let deployments: Api<Deployment> = Api::namespaced(member, "default");
    deployments.create(&PostParams::default(), &deployment(3)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let d = deployments.get("web").await.unwrap();
        if d.status.and_then(|s| s.ready_replicas) == Some(3) {
            break;
        }
        assert!(Instant::now() < deadline, "web never reached 3/3 on member-1");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // The hub holds templates only: no deployment controller acts on them.
    let hub = client(&dir.join("hub.kubeconfig")).await;
    let hub_deployments: Api<Deployment> = Api::namespaced(hub, "default");
    hub_deployments.create(&PostParams::default(), &deployment(2)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let template = hub_deployments.get("web").await.unwrap();
    assert_eq!(template.status.and_then(|s| s.replicas), None, "a workload controller runs on the hub");

    // A template with a policy goes to the member; the hub shows its
    // fleet-wide status. The policy passes through `up`'s admission webhook,
    // which turns away a misspelt field.
    let hub = client(&dir.join("hub.kubeconfig")).await;
    let policies: Api<kube::api::DynamicObject> = Api::namespaced_with(
        hub.clone(),
        "default",
        &kube::api::ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk("policy.flotilla.io", "v1alpha1", "PropagationPolicy"),
            "propagationpolicies",
        ),
    );
    let policy = |spec: serde_json::Value| {
        serde_json::from_value::<kube::api::DynamicObject>(serde_json::json!({
            "apiVersion": "policy.flotilla.io/v1alpha1", "kind": "PropagationPolicy",
            "metadata": {"name": "fleet-web", "namespace": "default"}, "spec": spec}))
        .unwrap()
    };
    let selectors = serde_json::json!([{"apiVersion": "apps/v1", "kind": "Deployment", "name": "fleet-web"}]);
    let misspelt = policy(serde_json::json!({"resourceSelectors": selectors, "placment": {}}));
    let err = policies.create(&PostParams::default(), &misspelt).await.unwrap_err().to_string();
    assert!(err.contains("placment"), "{err}");
    policies
        .create(&PostParams::default(), &policy(serde_json::json!({"resourceSelectors": selectors})))
        .await
        .unwrap();
    let mut template = deployment(2);
    template.metadata.name = Some("fleet-web".into());
    hub_deployments.create(&PostParams::default(), &template).await.unwrap();
    let member_deployments: Api<Deployment> =
        Api::namespaced(client(&dir.join("clusters/member-1.kubeconfig")).await, "default");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let on_member = member_deployments.get_opt("fleet-web").await.unwrap();
        let on_hub = hub_deployments.get("fleet-web").await.unwrap();
        if on_member.and_then(|d| d.status).and_then(|s| s.ready_replicas) == Some(2)
            && on_hub.status.and_then(|s| s.ready_replicas) == Some(2)
        {
            break;
        }
        assert!(Instant::now() < deadline, "fleet-web never reached 2/2 on member-1 and on the hub");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let out = flotilla(&["get", "bindings", "--kubeconfig", dir.join("hub.kubeconfig").to_str().unwrap()]);
    let shown = text(&out);
    assert!(
        out.status.success() && shown.contains("Deployment/fleet-web") && shown.contains("member-1:2"),
        "{shown}"
    );

    let out = flotilla(&["status", "--state-dir", d]);
    let shown = text(&out);
    assert!(out.status.success(), "status says unhealthy:\n{shown}");
    assert!(shown.contains("member-1") && shown.contains("2/2"), "{shown}");
    assert!(shown.contains("Fleet healthy."), "{shown}");

    // The member is a hosted cluster, registered in the fleet by the
    // HostedCluster operator (push mode) and Available.
    let out = flotilla(&["get", "clusters", "--kubeconfig", dir.join("hub.kubeconfig").to_str().unwrap()]);
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    let row =
        shown.lines().find(|l| l.trim_start().starts_with("member-1")).unwrap_or_else(|| panic!("{shown}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cells[..6], ["member-1", "Push", "true", "True", "v1.20.2", "2/2"], "{shown}");

    // A second `up` reports the running fleet instead of starting another.
    let out = flotilla(&["up", "--clusters", "1", "--state-dir", d]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("already running"), "{}", text(&out));

    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("fleet.json")).unwrap()).unwrap();
    let pids = recorded_pids(&state);
    // daemon + etcd + hub (apiserver, controller-manager, flotilla hub) +
    // 2 node agents + the members' etcd member + member-1's components
    // (apiserver, controller-manager, scheduler, 2 kubelets)
    assert_eq!(pids.len(), 13, "{state}");
    assert!(pids.iter().all(|p| alive(*p)));

    let out = flotilla(&["down", "--state-dir", d]);
    assert!(out.status.success(), "down failed:\n{}", text(&out));
    for pid in pids {
        assert!(!alive(pid), "pid {pid} survived `flotilla down`");
    }
    assert!(!dir.exists(), "state dir not removed");
}

#[test]
fn status_and_down_without_a_fleet_say_so() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().to_str().unwrap();
    let out = flotilla(&["status", "--state-dir", d]);
    assert!(!out.status.success());
    assert!(text(&out).contains("No fleet"), "{}", text(&out));
    let out = flotilla(&["down", "--state-dir", d]);
    assert!(out.status.success());
    assert!(text(&out).contains("nothing to stop"), "{}", text(&out));
}

#[test]
fn up_rejects_out_of_range_counts_with_a_clear_message() {
    let out = flotilla(&["up", "--clusters", "500"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("--clusters"), "{}", text(&out));
}
