#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Real worker nodes (containerd, kubelet, kube-proxy) under a real local
//! cluster: pods run, serve, crash, burn CPU, log and take exec; a Service
//! reaches a pod on the other node; and the host is as it was afterwards.
//! One cluster and two nodes serve every scenario; timings are printed for
//! the benchmark's sake, never asserted. A group whose owner was killed is
//! cleaned up by the next one. The tests take turns: the host's sysctls
//! are restored only once no group is left, which the first test checks.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use flotilla_localkube::process::pid_alive;
use flotilla_localkube::real_node::{RealNodeConfig, RealNodes, BUSYBOX_IMAGE};
use flotilla_localkube::{wait_for, Cluster, ClusterConfig};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, AttachParams, LogParams, PostParams};
use tokio::io::AsyncReadExt;

/// One test at a time in this process (see the module docs).
static TURNS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const NODE_A: &str = "rn-a";
const NODE_B: &str = "rn-b";
const SYSCTLS: [&str; 6] = [
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
];

fn sysctls() -> BTreeMap<String, String> {
    SYSCTLS
        .iter()
        .map(|s| {
            (
                s.to_string(),
                std::fs::read_to_string(Path::new("/proc/sys").join(s)).unwrap().trim().to_string(),
            )
        })
        .collect()
}

fn pod(name: &str, node: &str, script: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": node},
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "main", "image": BUSYBOX_IMAGE, "imagePullPolicy": "Never",
                "command": ["sh", "-c", script]}]
        }
    }))
    .unwrap()
}

/// Two busybox web servers, one per node, each answering its own name.
fn web_deployment() -> Deployment {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                        {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}
                    ]}},
                    "containers": [{"name": "httpd", "image": BUSYBOX_IMAGE, "imagePullPolicy": "Never",
                        "command": ["sh", "-c",
                            "mkdir -p /www && hostname > /www/index.html && echo serving $(hostname) && exec httpd -f -p 8080 -h /www"],
                        "ports": [{"containerPort": 8080}],
                        "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1}}]
                }
            }
        }
    }))
    .unwrap()
}

fn web_service() -> Service {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}
    }))
    .unwrap()
}

/// What a command run in a pod printed, and whether it exited 0.
struct Exec {
    stdout: String,
    stderr: String,
    ok: bool,
    /// The API server's word on how the command ended.
    status: String,
}

async fn exec(pods: &Api<Pod>, pod: &str, command: &[&str]) -> Exec {
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
    let status = status.and_then(|s| s.message).unwrap_or_default();
    Exec { stdout, stderr, ok, status }
}

fn phase(p: &Pod) -> &str {
    p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_nodes_serve_crash_burn_cpu_and_leave_the_host_as_it_was() {
    let _turn = TURNS.lock().await;
    let before = sysctls();
    let mut nodes = RealNodes::reserve().unwrap();
    let mut config = ClusterConfig::new("rn").for_real_nodes(nodes.gateway());
    config.wait_for_default_service_account = true;
    let cluster = Cluster::start(config).await.unwrap();
    let client = cluster.client();

    let started = Instant::now();
    nodes
        .start(
            &cluster,
            vec![RealNodeConfig::new(NODE_A), RealNodeConfig::new(NODE_B)],
            Duration::from_secs(120),
        )
        .await
        .unwrap();
    for node in nodes.nodes() {
        println!(
            "timing: real node {} Ready after {:.1}s",
            node.name(),
            node.ready_after().unwrap().as_secs_f64()
        );
    }
    println!("timing: both real nodes Ready after {:.1}s", started.elapsed().as_secs_f64());
    // The kubelet set its host-global values: restoring them below is real.
    assert_eq!(sysctls()["vm/overcommit_memory"], "1", "the kubelet sets vm.overcommit_memory");

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();
    // (b) and (c) run while (a) is checked.
    pods.create(&pp, &pod("crash", NODE_B, "echo about to fail; exit 1")).await.unwrap();
    pods.create(&pp, &pod("busy", NODE_A, "while :; do :; done")).await.unwrap();
    pods.create(&pp, &pod("client", NODE_A, "exec sleep 3600")).await.unwrap();

    // (a) A Deployment spread over both nodes, behind a ClusterIP Service.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let created = Instant::now();
    deployments.create(&pp, &web_deployment()).await.unwrap();
    let service = services.create(&pp, &web_service()).await.unwrap();
    let cluster_ip = service.spec.unwrap().cluster_ip.unwrap();
    wait_for("both web pods Running", Duration::from_secs(120), || async {
        let list = pods.list(&kube::api::ListParams::default().labels("app=web")).await.unwrap();
        list.items.len() == 2 && list.items.iter().all(|p| phase(p) == "Running")
    })
    .await;
    println!(
        "timing: 2 web pods Running {:.1}s after the Deployment was created",
        created.elapsed().as_secs_f64()
    );
    let web = pods.list(&kube::api::ListParams::default().labels("app=web")).await.unwrap().items;
    let on_node = |node: &str| {
        web.iter()
            .find(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node))
            .map(|p| p.metadata.name.clone().unwrap())
            .unwrap_or_else(|| panic!("no web pod on {node}"))
    };
    let (web_a, web_b) = (on_node(NODE_A), on_node(NODE_B));
    wait_for("the client pod Running", Duration::from_secs(60), || async {
        phase(&pods.get("client").await.unwrap()) == "Running"
    })
    .await;

    // From node A, the ClusterIP leads (among others) to the pod on node B.
    let url = format!("http://{cluster_ip}/");
    let mut answers = std::collections::BTreeSet::new();
    let mut last_error = String::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    while !answers.contains(&web_b) {
        assert!(
            Instant::now() < deadline,
            "the Service never led to {web_b} on {NODE_B}; answers: {answers:?}, last error: {last_error}"
        );
        // Debian's busybox 1.35 wget crashes on -T: `timeout` bounds it.
        let got = exec(&pods, "client", &["timeout", "3", "wget", "-q", "-O", "-", &url]).await;
        if got.ok {
            answers.insert(got.stdout.trim().to_string());
        } else {
            last_error = format!("{} {}", got.stderr, got.status);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    for answer in &answers {
        assert!(*answer == web_a || *answer == web_b, "an answer from no web pod: {answer:?}");
    }

    // Pods reach the API server through the `kubernetes` Service (busybox
    // speaks no TLS the API server accepts: plain HTTP gets Go's answer).
    let api = exec(
        &pods,
        "client",
        &["sh", "-c", "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | timeout 5 nc 10.0.0.1 443"],
    )
    .await;
    assert!(
        api.stdout.contains("Client sent an HTTP request to an HTTPS server"),
        "{} {}",
        api.stdout,
        api.stderr
    );

    // Logs and exec reach the containers through the kubelets.
    let logs = pods.logs(&web_b, &LogParams::default()).await.unwrap();
    assert!(logs.contains(&format!("serving {web_b}")), "logs of {web_b}: {logs:?}");
    let served = exec(&pods, &web_a, &["cat", "/www/index.html"]).await;
    assert!(served.ok, "{}", served.stderr);
    assert_eq!(served.stdout.trim(), web_a);

    // (b) A container that exits 1 is restarted, again and again: at least
    // two restarts, its last run ended with code 1, and it is not running.
    // Between restarts a 1.37 kubelet shows `waiting: CrashLoopBackOff` only
    // some of the time and the failed run (`terminated`) the rest, so both
    // count.
    wait_for("crash restarted twice after exiting 1 (a crash loop)", Duration::from_secs(180), || async {
        let p = pods.get("crash").await.unwrap();
        let status = p.status.and_then(|s| s.container_statuses).and_then(|c| c.into_iter().next());
        status.is_some_and(|c| {
            let state = c.state.unwrap_or_default();
            let backing_off = state.waiting.and_then(|w| w.reason).as_deref() == Some("CrashLoopBackOff");
            let failed_again = state.terminated.is_some_and(|t| t.exit_code == 1);
            let last_failed = c.last_state.and_then(|s| s.terminated).is_some_and(|t| t.exit_code == 1);
            c.restart_count >= 2 && (backing_off && last_failed || failed_again)
        })
    })
    .await;
    let crash_logs = pods.logs("crash", &LogParams::default()).await.unwrap();
    assert!(crash_logs.contains("about to fail"), "{crash_logs:?}");

    // (c) The kubelet's summary shows the busy pod's real CPU.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut cpu = 0;
    let mut last = String::new();
    while cpu <= 100_000_000 {
        assert!(
            Instant::now() < deadline,
            "the busy pod's CPU never exceeded 100m; last {cpu} nanocores; last answer: {last}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let request = http::Request::get(format!("/api/v1/nodes/{NODE_A}/proxy/stats/summary"))
            .body(Vec::new())
            .unwrap();
        let summary: serde_json::Value = match client.request_text(request).await {
            Ok(text) => serde_json::from_str(&text).unwrap(),
            Err(e) => {
                last = e.to_string();
                continue;
            }
        };
        let busy = summary["pods"].as_array().into_iter().flatten().find(|p| p["podRef"]["name"] == "busy");
        last =
            busy.map(|b| b.to_string()).unwrap_or_else(|| summary.to_string()).chars().take(3000).collect();
        cpu = busy.and_then(|p| p["cpu"]["usageNanoCores"].as_u64()).unwrap_or(0);
    }
    println!("busy pod CPU: {}m", cpu / 1_000_000);

    // (d) Everything of the nodes is gone afterwards.
    let node_pids: Vec<u32> = nodes.nodes().iter().flat_map(|n| n.pids()).collect();
    assert!(node_pids.len() > 8, "the nodes' processes and pods: {node_pids:?}");
    let netns: Vec<String> = nodes.nodes().iter().map(|n| n.netns().to_string()).collect();
    let links: Vec<String> =
        nodes.nodes().iter().map(|n| n.host_link().to_string()).chain([nodes.bridge()]).collect();
    let cgroups: Vec<String> = nodes.nodes().iter().map(|n| n.cgroup().to_string()).collect();
    let dirs: Vec<_> = nodes.nodes().iter().map(|n| n.dir().to_path_buf()).collect();
    let joined_alone = nodes.joined_alone();
    let shutdown = nodes.shutdown();
    assert!(shutdown.problems.is_empty(), "{:?}", shutdown.problems);
    for pid in &node_pids {
        assert!(!pid_alive(*pid), "process {pid} of a real node survived");
    }
    for ns in &netns {
        assert!(!Path::new("/run/netns").join(ns).exists(), "network namespace {ns} remains");
    }
    for link in &links {
        assert!(!Path::new("/sys/class/net").join(link).exists(), "link {link} remains");
    }
    for hierarchy in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        for cgroup in &cgroups {
            assert!(
                !hierarchy.path().join(cgroup).exists(),
                "cgroup {cgroup} remains in {}",
                hierarchy.path().display()
            );
        }
    }
    for dir in &dirs {
        assert!(!dir.exists(), "{} remains", dir.display());
    }
    if joined_alone && shutdown.other_groups == 0 {
        assert_eq!(sysctls(), before, "the sysctls the kubelet changed are restored");
        assert!(!shutdown.restored_sysctls.is_empty());
    } else {
        println!("other real-node groups ran meanwhile: the last one out restores the sysctls");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_owners_real_node_is_cleaned_up_by_the_next_group() {
    let _turn = TURNS.lock().await;
    let before = sysctls();
    // Everything the killed owner leaves in TMPDIR goes here.
    let scratch = tempfile::tempdir().unwrap();
    let mut owner = std::process::Command::new(env!("CARGO_BIN_EXE_localkube-hold"))
        .args(["stale", "--real-node"])
        .env("TMPDIR", scratch.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = owner.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        std::io::BufReader::new(stdout).read_line(&mut line).unwrap();
        line
    })
    .await
    .unwrap();
    let report: serde_json::Value =
        serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("localkube-hold printed {line:?}: {e}"));
    let text = |key: &str| report[key].as_str().unwrap().to_string();
    let (bridge, netns, link, cgroup) = (text("bridge"), text("netns"), text("link"), text("cgroup"));
    let dir = PathBuf::from(text("dir"));
    let node_pids: Vec<u32> = serde_json::from_value(report["node_pids"].clone()).unwrap();
    let owner_pids: Vec<u32> = serde_json::from_value(report["pids"].clone()).unwrap();
    let etcd_data = PathBuf::from(text("etcd_data"));

    // SIGKILL: no destructor runs. The owner's own children die with it;
    // containerd's shims and the pod do not.
    owner.kill().unwrap();
    owner.wait().unwrap();
    wait_for("the killed owner's cluster to exit", Duration::from_secs(20), || async {
        owner_pids.iter().all(|p| !pid_alive(*p))
    })
    .await;
    let survivors: Vec<u32> = node_pids.iter().copied().filter(|p| pid_alive(*p)).collect();
    assert!(!survivors.is_empty(), "the shims and the pod outlive their owner");
    assert!(Path::new("/run/netns").join(&netns).exists());
    assert!(Path::new("/sys/class/net").join(&bridge).exists());
    assert!(Path::new("/sys/fs/cgroup/pids").join(&cgroup).exists());
    assert_eq!(sysctls()["vm/overcommit_memory"], "1", "the killed owner's kubelet set it");

    let next = RealNodes::reserve().unwrap();
    for pid in &survivors {
        assert!(!pid_alive(*pid), "process {pid} of the stale node survived the cleanup");
    }
    assert!(!Path::new("/run/netns").join(&netns).exists(), "network namespace {netns} remains");
    for l in [&bridge, &link] {
        assert!(!Path::new("/sys/class/net").join(l).exists(), "link {l} remains");
    }
    for hierarchy in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        assert!(
            !hierarchy.path().join(&cgroup).exists(),
            "cgroup {cgroup} remains in {}",
            hierarchy.path().display()
        );
    }
    assert!(!dir.exists(), "{} remains", dir.display());
    let joined_alone = next.joined_alone();
    let shutdown = next.shutdown();
    assert!(shutdown.problems.is_empty(), "{:?}", shutdown.problems);
    if joined_alone && shutdown.other_groups == 0 {
        assert_eq!(sysctls(), before, "the sysctls the dead owner's kubelet changed are restored");
    }
    if let Some(parent) = etcd_data.parent().filter(|p| p.starts_with("/dev/shm")) {
        std::fs::remove_dir_all(parent).unwrap();
    }
}
