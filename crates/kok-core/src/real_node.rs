//! Real worker nodes on one machine: what each node's containerd, CNI,
//! kubelet and kube-proxy are configured with, where every node of a group
//! sits on the network, and what the host journal decides (which groups
//! are stale, which host values to restore). No I/O: `flotilla-localkube`'s
//! `real_node` reads the host, asks here, and acts.
//!
//! A *group* is the nodes one owner (a test, `flotilla up`) starts: a host
//! bridge and a slot of addresses of its own. Each node is a network and a
//! mount namespace holding a containerd, a kubelet and a kube-proxy, under
//! a cgroup root of its own.

pub mod address;
pub mod extra_images;
pub mod host;
pub mod journal;
pub mod machine;
pub mod render;

pub use address::{GroupAddresses, Ipv4Cidr, NodeAddresses, Route, RoutePlace};
pub use journal::{GroupRecord, HostJournal, NodeRecord, Owner};
pub use render::{NodePaths, NodeRuntime};

/// The pod sandbox image every node's containerd runs (built by
/// `scripts/node-runtime.sh`).
pub const SANDBOX_IMAGE: &str = "flotilla.local/pause:1";

/// What is wrong with a request for real nodes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RealNodeError {
    #[error(
        "no free address slot for real nodes: each of the {slots} slots is used by a live group \
         or overlaps a host route (172.30.S.0/24 for the bridge, 10.(100+S).0.0/16 for pods); \
         stop other real-node groups or free those routes"
    )]
    NoFreeSlot { slots: usize },
    #[error("a group holds at most {max} real nodes; node index {index} is beyond it")]
    TooManyNodes { index: u16, max: u8 },
    #[error("{0}")]
    BadPath(String),
}
