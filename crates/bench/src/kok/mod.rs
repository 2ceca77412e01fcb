//! `flotilla-bench kok`: Kube-on-Kube figures. Create → Ready of hosted
//! clusters (one after another and all at once), the operator's resident
//! memory per hosted cluster, and a rolling upgrade of a two-replica
//! control plane under a polling client.
//!
//! Everything is real and out of process: a hub API server, one
//! `flotilla hub run` (the operators, so its RSS is theirs) and one
//! `flotilla node-agent` per Machine, all children of this process; the
//! clusters' etcd, kube-apiserver, controller-manager, scheduler and hollow
//! kubelets are started by the node agents.

mod args;
pub(crate) mod env;
mod etcd_upgrade;
pub(crate) mod report;
mod runs;
mod upgrade;

use anyhow::bail;

pub use args::{KokArgs, KokRun};
use env::{Env, MACHINES, PREVIOUS_VERSION, VERSION};
use report::{table, Row};

// ------------------------------------------------------------ the bench

pub async fn kok(args: KokArgs) -> anyhow::Result<bool> {
    if args.memory_clusters == 1 {
        bail!("--memory-clusters must be 0 (skip) or at least 2");
    }
    // Dropping the bench future (Ctrl-C, SIGTERM) drops the environment,
    // which stops everything it started.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = bench(args) => r,
        _ = tokio::signal::ctrl_c() => bail!("interrupted; everything the bench started was stopped"),
        _ = term.recv() => bail!("terminated; everything the bench started was stopped"),
    }
}

async fn bench(args: KokArgs) -> anyhow::Result<bool> {
    let bin_dir = flotilla_cli::binaries::ensure(None)?;
    println!(
        "kok: hub API server, `flotilla hub run` (operators) and {} `flotilla node-agent`s as child processes; \
         process runtime, Kubernetes {VERSION} (upgrade run: from {PREVIOUS_VERSION}), 1-member etcd 3.7.4, {} hollow node(s) per cluster, no add-ons \
         beyond the built-in bootstrap one",
        MACHINES.len(),
        args.nodes
    );
    let mut env = Env::start(&args, &bin_dir).await?;
    println!("  logs and state: {}", env.dir.display());
    let mut rows: Vec<Row> = Vec::new();
    if args.run == Some(KokRun::EtcdUpgrade) {
        etcd_upgrade::etcd_upgrade(&mut env, &mut rows).await?;
        println!("\n{}", table(&rows));
        return Ok(true);
    }

    // Memory first, while the operator process is fresh: earlier runs would
    // leave allocator pages behind and flatter the per-cluster growth.
    if args.memory_clusters >= 2 {
        runs::memory(&mut env, args.memory_clusters, args.memory_batch, &mut rows).await?;
    }
    if args.sequential > 0 {
        runs::sequential(&mut env, args.sequential, args.nodes, &mut rows).await?;
    }
    if args.concurrent > 0 {
        runs::concurrent(&mut env, args.concurrent, args.nodes, &mut rows).await?;
    }
    if !args.skip_upgrade {
        upgrade::upgrade(&mut env, args.nodes, &mut rows).await?;
    }
    etcd_upgrade::etcd_upgrade(&mut env, &mut rows).await?;
    println!("\n{}", table(&rows));
    drop(env);
    Ok(true)
}
