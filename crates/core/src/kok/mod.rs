//! Pure decisions for Kubernetes on Kubernetes (`kok.flotilla.io`): the
//! certificates of a hosted control plane and the command lines of its
//! processes.

pub mod addons;
pub mod etcd;
pub mod etcd_keys;
pub mod etcd_kube;
pub mod etcd_restore;
pub mod etcd_schedule;
pub mod hosted;
pub mod kube_runtime;
pub mod pki;
pub mod ports;
pub mod render;
pub mod upgrade;
