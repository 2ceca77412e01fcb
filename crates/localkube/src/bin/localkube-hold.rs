//! Test helper: starts a one-node cluster, prints the pids of its processes as
//! one JSON line on stdout, then waits forever. The orphan test SIGKILLs this
//! process and checks that every one of those pids goes away.

use flotilla_localkube::{Cluster, ClusterConfig};

#[tokio::main]
async fn main() {
    let name = std::env::args().nth(1).unwrap_or_else(|| "hold".into());
    let cluster = match Cluster::start(ClusterConfig::new(name).with_nodes(1)).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("localkube-hold: {e}");
            std::process::exit(1);
        }
    };
    let pids: Vec<u32> = cluster.info().processes.iter().filter_map(|p| p.pid).collect();
    // The etcd data directory may be in /dev/shm, outside TMPDIR: report it
    // so the test can remove it (no destructor runs after SIGKILL).
    let etcd_data = cluster.etcd().map(|e| e.data_dir().display().to_string()).unwrap_or_default();
    println!("{}", serde_json::json!({"pids": pids, "etcd_data": etcd_data}));
    std::future::pending::<()>().await;
}
