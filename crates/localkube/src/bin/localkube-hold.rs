//! Test helper: starts a one-node cluster, prints the pids of its processes as
//! one JSON line on stdout, then waits forever. The orphan test SIGKILLs this
//! process and checks that every one of those pids goes away.
//!
//! With `--real-node`, the node is a real one running a pod, and the line
//! also names what the real node put on the host: the real-node test
//! SIGKILLs this process and checks that the next group cleans it all up.

use std::time::Duration;

use flotilla_localkube::real_node::{RealNodeConfig, RealNodes, BUSYBOX_IMAGE};
use flotilla_localkube::{Cluster, ClusterConfig};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};

#[tokio::main]
async fn main() {
    let name = std::env::args().nth(1).unwrap_or_else(|| "hold".into());
    let real = std::env::args().any(|a| a == "--real-node");
    let result = if real { hold_real_node(&name).await } else { hold_hollow_node(&name).await };
    if let Err(e) = result {
        eprintln!("localkube-hold: {e}");
        std::process::exit(1);
    }
    std::future::pending::<()>().await;
}

async fn hold_hollow_node(name: &str) -> Result<(), flotilla_localkube::Error> {
    let cluster = Cluster::start(ClusterConfig::new(name).with_nodes(1)).await?;
    let pids: Vec<u32> = cluster.info().processes.iter().filter_map(|p| p.pid).collect();
    // The etcd data directory may be in /dev/shm, outside TMPDIR: report it
    // so the test can remove it (no destructor runs after SIGKILL).
    let etcd_data = cluster.etcd().map(|e| e.data_dir().display().to_string()).unwrap_or_default();
    println!("{}", serde_json::json!({"pids": pids, "etcd_data": etcd_data}));
    // Kept until the process is killed.
    std::mem::forget(cluster);
    Ok(())
}

async fn hold_real_node(name: &str) -> Result<(), flotilla_localkube::Error> {
    let mut nodes = RealNodes::reserve()?;
    let mut config = ClusterConfig::new(name).for_real_nodes(nodes.gateway());
    config.wait_for_default_service_account = true;
    let cluster = Cluster::start(config).await?;
    let node_name = format!("{name}-real");
    nodes.start(&cluster, vec![RealNodeConfig::new(&node_name)], Duration::from_secs(120)).await?;
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "sleeper"},
        "spec": {"containers": [{"name": "main", "image": BUSYBOX_IMAGE, "imagePullPolicy": "Never",
            "command": ["sleep", "3600"]}]}
    }))
    .map_err(|e| flotilla_localkube::Error::Config(e.to_string()))?;
    let pods: Api<Pod> = Api::namespaced(cluster.client(), "default");
    pods.create(&PostParams::default(), &pod).await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let phase = pods.get("sleeper").await?.status.and_then(|s| s.phase);
        if phase.as_deref() == Some("Running") {
            break;
        }
        if std::time::Instant::now() > deadline {
            return Err(flotilla_localkube::Error::Config("the pod never ran".into()));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let node = nodes.node(&node_name).ok_or_else(|| flotilla_localkube::Error::Config("no node".into()))?;
    let pids: Vec<u32> = cluster.info().processes.iter().filter_map(|p| p.pid).collect();
    println!(
        "{}",
        serde_json::json!({
            "pids": pids,
            "etcd_data": cluster.etcd().map(|e| e.data_dir().display().to_string()).unwrap_or_default(),
            "slot": nodes.slot(),
            "bridge": nodes.bridge(),
            "netns": node.netns(),
            "link": node.host_link(),
            "cgroup": node.cgroup(),
            "dir": node.dir(),
            "node_pids": node.pids(),
        })
    );
    // Kept until the process is killed: what a killed test leaves behind.
    std::mem::forget(nodes);
    std::mem::forget(cluster);
    Ok(())
}
