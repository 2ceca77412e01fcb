//! The `flotilla` command's modules, as a library so that tools beside it
//! (`flotilla-bench`) run the same code: the local fleet, the hub and its
//! members, hosted clusters.
//!
//! Every import points one way: the command modules (`fleet`, `fleetctl`,
//! `kokctl`, `etcd_cmd`, `node_agent`) use the shared ones (`paths`,
//! `hub_kubeconfig`, `detach`, `binaries`) and never each other's
//! commands; `fleet` (whose daemon creates the members as HostedClusters)
//! uses `kokctl`'s default version only.

pub mod binaries;
pub mod detach;
pub mod etcd_cmd;
pub mod fleet;
pub mod fleetctl;
pub mod hub_kubeconfig;
pub mod kokctl;
pub mod node_agent;
pub mod paths;
