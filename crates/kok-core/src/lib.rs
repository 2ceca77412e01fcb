//! Pure decisions for Kubernetes on Kubernetes (`kok.flotilla.io`): etcd
//! clusters (membership, backups, restores), hosted control planes (their
//! certificates, command lines, both runtimes, upgrades, add-ons), the node
//! agent (which components a machine runs, its hub identity) and real worker
//! nodes on one machine (`real_node`). No I/O: the operators in
//! `flotilla-kok`, the node agent and `flotilla-localkube` observe, then ask
//! here.

pub mod addons;
pub mod blockers;
pub mod catalog;
pub mod component_events;
pub mod etcd;
pub mod etcd_backup;
pub mod etcd_error;
pub mod etcd_gateway;
pub mod etcd_keys;
pub mod etcd_kube;
pub mod etcd_member;
pub mod etcd_restore;
pub mod etcd_schedule;
pub mod etcd_status;
pub mod etcd_teardown;
pub mod etcd_upgrade;
pub mod etcd_versions;
pub mod events;
pub mod hosted;
pub mod hosted_pki;
pub mod hosted_status;
pub mod kok_metrics;
pub mod kube_runtime;
pub mod kubelet_identity;
pub mod machine_identity;
pub mod node;
pub mod node_pool;
pub mod node_pool_observe;
pub mod pki;
pub mod ports;
pub mod real_node;
pub mod render;
pub mod upgrade;
pub mod upgrade_observe;
pub mod wait;
