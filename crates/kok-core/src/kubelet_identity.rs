//! The identity of a hosted cluster's kubelets: the user and group their
//! client certificates carry, the request `kubelet-join` sends, and
//! whether a kubelet's kubeconfig can be kept.

use time::{Duration, OffsetDateTime};

/// The identity a kubelet's client certificate must carry.
pub fn node_user(node: &str) -> String {
    format!("system:node:{node}")
}

/// Group of kubelets.
pub const NODES_GROUP: &str = "system:nodes";
/// Signer of kubelet client certificates (approved and signed by the
/// cluster's own controller-manager).
pub const KUBELET_CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";

/// A PEM certificate request for kubelet `node`'s client certificate.
pub fn node_csr(node: &str, key_pem: &str) -> Result<String, String> {
    let key = rcgen::KeyPair::from_pem(key_pem).map_err(|e| format!("kubelet key: {e}"))?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::OrganizationName, NODES_GROUP);
    params.distinguished_name.push(rcgen::DnType::CommonName, node_user(node));
    let csr = params.serialize_request(&key).map_err(|e| format!("certificate request: {e}"))?;
    csr.pem().map_err(|e| format!("certificate request: {e}"))
}

/// Whether a kubelet's kubeconfig can be used as it is: it trusts the
/// bootstrap kubeconfig's CA, and its certificate is for `node` and valid
/// for at least a fifth of a year more.
pub fn kubelet_credential_current(
    kubelet: &flotilla_core::kubeconfig::ParsedKubeconfig,
    bootstrap_ca_pem: &str,
    now: OffsetDateTime,
) -> bool {
    let Some(cert) = kubelet.client_cert_pem.as_deref() else { return false };
    kubelet.ca_pem.trim() == bootstrap_ca_pem.trim()
        && flotilla_core::pki::inspect_certificate(cert).is_ok_and(|f| f.not_after > now + Duration::days(73))
}
