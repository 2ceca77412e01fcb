//! The EtcdCluster operator's decision errors.

use flotilla_core::pki::PkiError;

#[derive(Debug, thiserror::Error)]
pub enum EtcdPlanError {
    #[error("certificates: {0}")]
    Pki(#[from] PkiError),
    #[error("etcd API answer: {0}")]
    Parse(String),
}
