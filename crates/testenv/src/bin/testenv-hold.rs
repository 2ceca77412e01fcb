//! Test helper: starts a one-node cluster, prints the pids of its processes as
//! one JSON line on stdout, then waits forever. The orphan test SIGKILLs this
//! process and checks that every one of those pids goes away.

use flotilla_testenv::{Cluster, ClusterConfig};

#[tokio::main]
async fn main() {
    let name = std::env::args().nth(1).unwrap_or_else(|| "hold".into());
    let cluster = match Cluster::start(ClusterConfig::new(name).with_nodes(1)).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("testenv-hold: {e}");
            std::process::exit(1);
        }
    };
    let pids: Vec<u32> = cluster.info().processes.iter().filter_map(|p| p.pid).collect();
    println!("{}", serde_json::to_string(&pids).unwrap_or_default());
    std::future::pending::<()>().await;
}
