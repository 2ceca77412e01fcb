//! The `flotilla` command's modules, as a library so that tools beside it
//! (`flotilla-bench`) run the same code: the local fleet, the hub and its
//! members, hosted clusters.
//!
//! Every import points one way: the command modules (`fleet`, `fleetctl`,
//! `get_cmd`, `completion`, `hub_cmd`, `kokctl`, `etcd_cmd` (with `etcd_get`), `member_cmd`, `migrate`,
//! `node_agent`, `rebalance_cmd`, `rollout_cmd`) use the shared ones (`paths`,
//! `hub_kubeconfig`, `member_access`, `output`, `detach`, `binaries`) and never each other's
//! commands, except that `fleet`'s daemon (which creates the members as
//! HostedClusters) takes `kokctl`'s default Kubernetes version. Inside a
//! command's directory the parent only declares and dispatches: `fleet`'s
//! children share `fleet::state`, `kokctl`'s share `args` and `render`.

pub mod binaries;
pub mod completion;
pub mod dashboard_cmd;
pub mod detach;
pub mod etcd_cmd;
pub mod etcd_get;
pub mod fleet;
pub mod fleetctl;
pub mod get_cmd;
pub mod hub_cmd;
pub mod hub_kubeconfig;
pub mod kokctl;
pub mod member_access;
pub mod member_cmd;
pub mod migrate;
pub mod node_agent;
pub mod output;
pub mod paths;
pub mod rebalance_cmd;
pub mod rollout_cmd;
