#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `flotilla up` / `status` / `down` end to end, on real binaries: the
//! members are hosted clusters (HostedCluster on the hub, control planes
//! and hollow nodes run by node agents).

use std::path::Path;
use std::time::{Duration, Instant};

mod fleet_cli;

use fleet_cli::{client, flotilla, text, Fleet};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, PostParams};

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
    flotilla_localkube::process::pid_alive(pid as u32)
}

#[tokio::test]
async fn up_runs_a_fleet_that_runs_workloads_and_down_removes_it_all() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("fleet");
    let d = dir.to_str().unwrap();
    let _guard = Fleet { dir: dir.clone() };

    // Three machines, so a 3-member etcd fits (below).
    let out = flotilla(&["up", "--clusters", "1", "--nodes", "2", "--machines", "3", "--state-dir", d]);
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
    // Refused by the API server itself when the client asks for strict
    // field validation (kubectl's default), naming the field.
    let misspelt = policy(serde_json::json!({"resourceSelectors": selectors, "placment": {}}));
    let strict = kube::api::PatchParams::apply("flotilla-test").validation_strict();
    let err = policies
        .patch("fleet-web", &strict, &kube::api::Patch::Apply(&misspelt))
        .await
        .unwrap_err()
        .to_string();
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

    // The member's web pods through the hub's cluster proxy, served on an
    // address of this host other than loopback.
    let out = flotilla(&[
        "get",
        "pods",
        "--cluster",
        "member-1",
        "-n",
        "default",
        "-l",
        "app=web",
        "--kubeconfig",
        dir.join("hub.kubeconfig").to_str().unwrap(),
    ]);
    let shown = text(&out);
    assert!(out.status.success(), "get pods --cluster:\n{shown}");
    assert_eq!(
        shown.lines().filter(|l| l.trim_start().starts_with("web-") && l.contains("Running")).count(),
        3,
        "{shown}"
    );

    let out = flotilla(&["status", "--state-dir", d]);
    let shown = text(&out);
    assert!(out.status.success(), "status says unhealthy:\n{shown}");
    assert!(shown.contains("member-1") && shown.contains("2/2"), "{shown}");
    assert!(shown.contains("Fleet healthy."), "{shown}");
    // It says where the hub's metrics are, and they are served there.
    let metrics_url = shown
        .lines()
        .find_map(|l| l.strip_prefix("Hub metrics: "))
        .unwrap_or_else(|| panic!("no metrics address in:\n{shown}"));
    let addr = metrics_url.trim_start_matches("http://").trim_end_matches("/metrics");
    let scraped = scrape(addr);
    assert!(scraped.contains("flotilla_reconcile"), "{scraped}");

    // The member is a hosted cluster, registered in the fleet by the
    // HostedCluster operator (push mode) and Available.
    let out = flotilla(&["get", "clusters", "--kubeconfig", dir.join("hub.kubeconfig").to_str().unwrap()]);
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    let row =
        shown.lines().find(|l| l.trim_start().starts_with("member-1")).unwrap_or_else(|| panic!("{shown}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        &cells[..6],
        ["member-1", "Push", "true", "True", flotilla_localkube::DEFAULT_K8S_VERSION, "2/2"],
        "{shown}"
    );

    // A second `up` reports the running fleet instead of starting another.
    let out = flotilla(&["up", "--clusters", "1", "--state-dir", d]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("already running"), "{}", text(&out));

    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("fleet.json")).unwrap()).unwrap();
    let mut pids = recorded_pids(&state);
    // daemon + etcd + hub (apiserver, controller-manager, flotilla hub) +
    // 3 node agents + the members' etcd member + member-1's components
    // (apiserver, controller-manager, scheduler, 2 kubelets)
    assert_eq!(pids.len(), 14, "{state}");
    assert!(pids.iter().all(|p| alive(*p)));

    // The three machines run a cluster with a 3-member etcd, one member on
    // each; `down` stops its processes too.
    let hub_kc = dir.join("hub.kubeconfig");
    let out = flotilla(&[
        "cluster",
        "create",
        "e3",
        "--etcd-members",
        "3",
        "--nodes",
        "0",
        "--timeout",
        "300",
        "--kubeconfig",
        hub_kc.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "a 3-member etcd on 3 machines:\n{}", text(&out));
    let hub = client(&hub_kc).await;
    let etcd = Api::<flotilla_api::kok::EtcdCluster>::namespaced(hub.clone(), "default")
        .get("e3-etcd")
        .await
        .unwrap();
    let status = etcd.status.unwrap_or_default();
    let machines: std::collections::BTreeSet<String> =
        status.members.iter().filter_map(|m| m.machine.clone()).collect();
    assert_eq!((status.ready_members, machines.len()), (3, 3), "{:?}", status.members);
    for m in Api::<flotilla_api::machine::Machine>::all(hub).list(&Default::default()).await.unwrap().items {
        let components = m.status.iter().flat_map(|s| s.components.iter());
        pids.extend(components.filter(|c| c.name.contains("e3")).filter_map(|c| c.pid).map(u64::from));
    }

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
    // (machines, what the refusal says)
    for (machines, want) in
        [("0", "at least one machine"), ("10", "10 machines is more than"), ("x", "not a number")]
    {
        let out = flotilla(&["up", "--machines", machines]);
        assert!(!out.status.success(), "--machines {machines} accepted");
        assert!(text(&out).contains("--machines") && text(&out).contains(want), "{}", text(&out));
    }
}

/// The record of the hub's process `name` in `fleet.json`.
fn hub_process(dir: &Path, name: &str) -> serde_json::Value {
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("fleet.json")).unwrap()).unwrap();
    let hub = state["clusters"].as_array().unwrap().iter().find(|c| c["role"] == "hub").unwrap().clone();
    hub["processes"].as_array().unwrap().iter().find(|p| p["name"] == name).unwrap().clone()
}

/// SIGKILLs a process of the fleet by its record (pid and start time).
fn kill_recorded(record: &serde_json::Value) {
    let pid = record["pid"].as_u64().unwrap() as i32;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let start: u64 = stat.rsplit_once(')').unwrap().1.split_whitespace().nth(19).unwrap().parse().unwrap();
    assert_eq!(start, record["start_time"].as_u64().unwrap(), "pid {pid} is not the recorded process");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
}

/// Waits until the daemon has restarted the hub's process `name` (a live
/// process other than `old`); returns its new record.
async fn restarted(dir: &Path, name: &str, old: &serde_json::Value) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let now = hub_process(dir, name);
        if now["pid"] != old["pid"] && alive(now["pid"].as_u64().unwrap()) {
            return now;
        }
        assert!(Instant::now() < deadline, "the daemon did not restart {name}: {now}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Templates on the hub, `count` of them named `<prefix>-<i>`, 1 or 2
/// replicas each; retried while the hub API is away.
async fn burst(hub: &Api<Deployment>, prefix: &str, count: usize, made: &mut Vec<(String, i32)>) {
    for i in 0..count {
        let name = format!("{prefix}-{i}");
        let replicas = 1 + (i % 2) as i32;
        let mut d = deployment(replicas);
        d.metadata.name = Some(name.clone());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match hub.create(&PostParams::default(), &d).await {
                Ok(_) => break,
                Err(kube::Error::Api(e)) if e.code == 409 => break,
                Err(e) => assert!(Instant::now() < deadline, "creating {name}: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        made.push((name, replicas));
    }
}

/// Replicas lost and duplicated on the member, against the templates.
async fn lost_and_duplicated(member: &Api<Deployment>, templates: &[(String, i32)]) -> (i32, i32) {
    let Ok(list) = member.list(&Default::default()).await else { return (i32::MAX, 0) };
    let mut lost = 0;
    let mut duplicated = 0;
    for (name, want) in templates {
        let have: i32 = list
            .items
            .iter()
            .filter(|d| d.metadata.name.as_deref() == Some(name))
            .map(|d| d.spec.replicas.unwrap_or(1))
            .sum();
        lost += (want - have).max(0);
        duplicated += (have - want).max(0);
    }
    (lost, duplicated)
}

async fn settle(member: &Api<Deployment>, templates: &[(String, i32)], case: &str) {
    let started = Instant::now();
    let mut last = lost_and_duplicated(member, templates).await;
    while last != (0, 0) && started.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        last = lost_and_duplicated(member, templates).await;
    }
    assert_eq!(last, (0, 0), "{case}: (lost, duplicated) replicas after 120 s");
    eprintln!("{case}: {} templates converged in {:.1}s", templates.len(), started.elapsed().as_secs_f64());
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(lost_and_duplicated(member, templates).await, (0, 0), "{case}: after settling");
}

#[tokio::test]
async fn the_daemon_restarts_the_hub_and_nothing_is_lost() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("fleet");
    let d = dir.to_str().unwrap();
    let _guard = Fleet { dir: dir.clone() };
    let out = flotilla(&["up", "--clusters", "1", "--nodes", "1", "--state-dir", d]);
    assert!(out.status.success(), "up failed:\n{}", text(&out));

    let hub = client(&dir.join("hub.kubeconfig")).await;
    let policy: kube::api::DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "policy.flotilla.io/v1alpha1", "kind": "PropagationPolicy",
        "metadata": {"name": "all", "namespace": "default"},
        "spec": {"resourceSelectors": [{"apiVersion": "apps/v1", "kind": "Deployment"}]}}))
    .unwrap();
    let resource = kube::api::ApiResource::from_gvk_with_plural(
        &kube::api::GroupVersionKind::gvk("policy.flotilla.io", "v1alpha1", "PropagationPolicy"),
        "propagationpolicies",
    );
    Api::<kube::api::DynamicObject>::namespaced_with(hub.clone(), "default", &resource)
        .create(&PostParams::default(), &policy)
        .await
        .unwrap();
    let templates: Api<Deployment> = Api::namespaced(hub.clone(), "default");
    let member: Api<Deployment> =
        Api::namespaced(client(&dir.join("clusters/member-1.kubeconfig")).await, "default");
    let mut made = Vec::new();

    // `hub run` killed mid-burst: the daemon starts it again, and every
    // template, including those created while it was down, converges.
    burst(&templates, "burst-a", 10, &mut made).await;
    let old = hub_process(&dir, "flotilla-hub");
    kill_recorded(&old);
    burst(&templates, "burst-b", 10, &mut made).await;
    let new = restarted(&dir, "flotilla-hub", &old).await;
    assert_eq!(new["restarts"], 1, "{new}");
    assert!(new["last_exit"].as_str().unwrap().contains("SIGKILL"), "{new}");
    settle(&member, &made, "hub run killed mid-burst").await;
    let out = flotilla(&["status", "--state-dir", d]);
    let shown = text(&out);
    let row = shown
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("flotilla-hub"))
        .unwrap_or_else(|| panic!("{shown}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cells[..5], ["hub", "flotilla-hub", &new["pid"].to_string(), "running", "1"], "{shown}");

    // The hub's API server killed: restarted by the daemon, and `hub run`
    // carries on (it may step down and lead again) without a person.
    let old_api = hub_process(&dir, "kube-apiserver");
    kill_recorded(&old_api);
    let new_api = restarted(&dir, "kube-apiserver", &old_api).await;
    assert_eq!(new_api["restarts"], 1, "{new_api}");
    burst(&templates, "burst-c", 10, &mut made).await;
    settle(&member, &made, "hub API restart").await;
    assert_eq!(hub_process(&dir, "flotilla-hub")["pid"], new["pid"], "hub run exited with its API away");

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = flotilla(&["status", "--state-dir", d]);
        if out.status.success() {
            assert!(text(&out).contains("Fleet healthy."), "{}", text(&out));
            break;
        }
        assert!(Instant::now() < deadline, "the fleet is not healthy again:\n{}", text(&out));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // `down` stops what runs now, restarted processes included.
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("fleet.json")).unwrap()).unwrap();
    let pids = recorded_pids(&state);
    let out = flotilla(&["down", "--state-dir", d]);
    assert!(out.status.success(), "down failed:\n{}", text(&out));
    for pid in pids {
        assert!(!alive(pid), "pid {pid} survived `flotilla down`");
    }
}

/// GET `/metrics` from `addr` over plain HTTP/1.0: the response as text.
fn scrape(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).unwrap();
    body
}
