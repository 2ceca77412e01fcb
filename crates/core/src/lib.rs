//! Flotilla's pure base: building blocks every domain shares — status
//! conditions, resource quantities, certificates and kubeconfig files. No
//! I/O and no Flotilla API types: the domain crates (`flotilla-fleet-core`,
//! `flotilla-apps-core`, `flotilla-kok-core`) build on it.

pub mod certificate;
pub mod conditions;
pub mod events;
pub mod kubeconfig;
pub mod pki;
pub mod quantity;
