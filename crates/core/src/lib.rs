//! Flotilla's pure logic: no I/O, no Kubernetes client. Everything here is a
//! function of its inputs, so it is tested without a server.

pub mod affinity;
pub mod aggregate;
pub mod apply;
pub mod binding;
pub mod failover;
pub mod health;
pub mod kok;
pub mod kubeconfig;
pub mod machine_identity;
pub mod membership;
pub mod node;
pub mod overrides;
pub mod pki;
pub mod quantity;
pub mod scheduler;
pub mod selection;
pub mod validation;
pub mod workload;
