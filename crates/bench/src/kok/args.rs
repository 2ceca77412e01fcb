//! The flags of `flotilla-bench kok`.

use std::path::PathBuf;

use clap::Args;

/// One run of `flotilla-bench kok` alone.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum KokRun {
    /// A 3-member EtcdCluster moved from etcd 3.6.17 to 3.7.4 under a writer.
    EtcdUpgrade,
}

#[derive(Args, Debug)]
pub struct KokArgs {
    /// Only this run (default: every run).
    #[arg(value_enum)]
    pub run: Option<KokRun>,
    /// Clusters created one after another, each deleted before the next
    /// (0 skips).
    #[arg(long, default_value_t = 10)]
    pub sequential: usize,
    /// Clusters created at once (0 skips).
    #[arg(long, default_value_t = 10)]
    pub concurrent: usize,
    /// Hosted clusters for the operator memory figure (0 skips; else at
    /// least 2). They have no nodes and share one EtcdCluster.
    #[arg(long, default_value_t = 20)]
    pub memory_clusters: usize,
    /// The memory run's clusters after the first are created this many at
    /// a time, each batch Ready before the next: twenty control planes
    /// starting at once on two cores starve the hub API server.
    #[arg(long, default_value_t = 5)]
    pub memory_batch: usize,
    /// Skip the rolling upgrade of a two-replica control plane.
    #[arg(long)]
    pub skip_upgrade: bool,
    /// Worker nodes (hollow kubelets) per cluster in the create and upgrade runs.
    #[arg(long, default_value_t = 1)]
    pub nodes: i32,
    /// Keep logs and node-agent state in this directory (default: a
    /// temporary directory, removed on exit).
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
}
