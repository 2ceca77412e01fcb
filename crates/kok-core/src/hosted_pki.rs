//! A hosted control plane's certificates: what its PKI Secret holds
//! (generated, renewed, rotated on request, the etcd client certificate
//! reissued for a new etcd CA), the verdict behind `CertificatesReady`,
//! and the kubeconfigs and bootstrap token made from them. Both runtimes
//! use these; the process runtime's inputs come from its placement.

use std::collections::BTreeMap;

use flotilla_api::kok::{HostedCluster, ROTATE_CERTS_ANNOTATION};
use flotilla_core::pki::CertificateAuthority;
use time::{Duration, OffsetDateTime};

use crate::hosted::{HostedPlanError, Placement};
use crate::pki::{keys, leaves, ControlPlanePki, PkiInputs};

/// What forces a rotation, from the `rotate-certs` annotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotation {
    None,
    Leaves,
    Ca,
}

/// The rotation the annotation asks for, unless it was handled already.
pub fn requested_rotation(hc: &HostedCluster) -> (Rotation, Option<String>) {
    let value = hc.metadata.annotations.as_ref().and_then(|a| a.get(ROTATE_CERTS_ANNOTATION)).cloned();
    let handled = hc.status.as_ref().and_then(|s| s.handled_rotation.clone());
    match value {
        Some(v) if Some(&v) != handled.as_ref() => {
            let rotation = if v.starts_with("ca/") { Rotation::Ca } else { Rotation::Leaves };
            (rotation, Some(v))
        }
        _ => (Rotation::None, None),
    }
}

/// The certificates' inputs for a placement.
pub fn pki_inputs(hc: &HostedCluster, placement: &Placement) -> Option<PkiInputs> {
    let server = placement.endpoint()?;
    let mut hosts: Vec<String> = Vec::new();
    for i in &placement.instances {
        if !hosts.contains(&i.address) {
            hosts.push(i.address.clone());
        }
    }
    Some(PkiInputs {
        server: server.clone(),
        component_server: Some(server),
        endpoint_hosts: hosts,
        service_cidr: hc.spec.network.service_cidr.clone(),
        cluster_domain: hc.spec.network.cluster_domain.clone(),
        etcd_members: Vec::new(),
    })
}

/// The EtcdCluster's CA (from its Secret): it signs the apiserver's etcd
/// client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdCa {
    pub cert_pem: String,
    pub key_pem: String,
}

/// Outcome of [`pki_data`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PkiUpdate {
    pub data: BTreeMap<String, Vec<u8>>,
    /// Names of what was (re)issued; empty when nothing changed.
    pub issued: Vec<String>,
}

/// The CertificatesReady verdict for the PKI Secret's data: whether every
/// certificate is readable and outside the renewal window, with a message
/// naming the next to expire (or what a person must do).
pub fn certificates_verdict(
    cluster: &str,
    data: &BTreeMap<String, Vec<u8>>,
    now: OffsetDateTime,
    renew_before: Duration,
) -> (bool, &'static str, String) {
    if data.is_empty() {
        return (false, "NotIssued", "the certificates are not issued yet".into());
    }
    let expiries = match ControlPlanePki::from_secret_data(cluster, data).and_then(|p| p.expiries()) {
        Ok(list) => list,
        Err(e) => return (false, "Unreadable", format!("the certificate Secret cannot be read: {e}")),
    };
    let day = |t: OffsetDateTime| format!("{}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day());
    if let Some(e) = expiries.iter().find(|e| e.not_after <= now) {
        return (false, "Expired", format!("certificate {} expired on {}", e.name, day(e.not_after)));
    }
    const CAS: [&str; 3] = ["ca", "front-proxy-ca", "etcd-ca"];
    if let Some(e) =
        expiries.iter().find(|e| CAS.contains(&e.name.as_str()) && e.not_after <= now + renew_before)
    {
        let fix = if e.name == "etcd-ca" {
            "the EtcdCluster owns it: restore or recreate the etcd with a new CA".to_string()
        } else {
            format!("rotate it with `flotilla cluster rotate-certs {cluster} --ca`")
        };
        return (false, "CaExpiring", format!("{} expires on {}: {fix}", e.name, day(e.not_after)));
    }
    if let Some(e) = expiries.iter().find(|e| e.not_after <= now + renew_before) {
        return (
            false,
            "Renewing",
            format!("certificate {} expires on {} and is being renewed", e.name, day(e.not_after)),
        );
    }
    let next = expiries.iter().min_by_key(|e| e.not_after);
    let message = match next {
        Some(e) => format!(
            "{} certificates; the next to expire is {} on {} (renewed from {})",
            expiries.len(),
            e.name,
            day(e.not_after),
            day(e.not_after - renew_before)
        ),
        None => "no certificates".into(),
    };
    (true, "Valid", message)
}

/// The Secret data: generated when `existing` is empty, rotated when asked,
/// leaves renewed when they expire within the threshold or lack a name the
/// placement needs, and the etcd client certificate reissued when the
/// EtcdCluster's CA changed (a restored or replaced etcd).
pub fn pki_data(
    cluster: &str,
    existing: &BTreeMap<String, Vec<u8>>,
    etcd_ca: &EtcdCa,
    inputs: &PkiInputs,
    rotation: Rotation,
    now: OffsetDateTime,
    renew_before: Duration,
) -> Result<PkiUpdate, HostedPlanError> {
    let etcd = CertificateAuthority::from_pem(&etcd_ca.cert_pem, &etcd_ca.key_pem)?;
    let (mut pki, mut issued) = if existing.is_empty() {
        (ControlPlanePki::generate_at(cluster, inputs, now)?, vec!["all".to_string()])
    } else {
        match (ControlPlanePki::from_secret_data(cluster, existing), rotation) {
            (Ok(current), Rotation::Ca) => (current.rotate_ca(inputs, now)?, vec!["ca".to_string()]),
            (Ok(current), _) => (current, Vec::new()),
            // Unreadable data is replaced rather than crash-looping on it.
            (Err(_), _) => (ControlPlanePki::generate_at(cluster, inputs, now)?, vec!["all".to_string()]),
        }
    };
    if pki.etcd_ca.pem.cert_pem != etcd.pem.cert_pem {
        pki.etcd_ca = etcd;
        pki.leaves.remove(leaves::APISERVER_ETCD_CLIENT);
    }
    let threshold = match rotation {
        // Everything counts as expiring.
        Rotation::Leaves => Duration::days(365 * 200),
        _ => renew_before,
    };
    let (next, renewed) = pki.renew_leaves(inputs, now, threshold)?;
    issued.extend(renewed);
    let data = next.to_secret_data();
    if issued.is_empty() && data == *existing {
        return Ok(PkiUpdate { data, issued });
    }
    if issued.is_empty() {
        issued.push("kubeconfigs".into());
    }
    Ok(PkiUpdate { data, issued })
}

/// An admin kubeconfig for the cluster from its Secret data.
pub fn admin_kubeconfig(data: &BTreeMap<String, Vec<u8>>) -> Option<Vec<u8>> {
    data.get(keys::ADMIN_KUBECONFIG).cloned()
}

/// A kubeconfig `kubeconfig` (one [`flotilla_core::kubeconfig::render`]
/// wrote) pointing at `server` instead, checking the API server's
/// certificate against `tls_server_name`: the admin kubeconfig as clients
/// outside the meta cluster use it. `None` when it cannot be read.
pub fn reached_at(kubeconfig: &[u8], cluster: &str, server: &str, tls_server_name: &str) -> Option<Vec<u8>> {
    use flotilla_core::kubeconfig::{parse, render_for, Credential, KubeconfigSpec};
    let parsed = parse(&String::from_utf8_lossy(kubeconfig)).ok()?;
    let credential = match (parsed.client_cert_pem, parsed.client_key_pem, parsed.token) {
        (Some(cert_pem), Some(key_pem), _) => Credential::ClientCert { cert_pem, key_pem },
        (_, _, Some(token)) => Credential::Token(token),
        _ => return None,
    };
    let spec = KubeconfigSpec {
        name: cluster.to_string(),
        server: server.to_string(),
        ca_pem: parsed.ca_pem,
        credential,
    };
    Some(render_for(&spec, Some(tls_server_name)).into_bytes())
}

/// The kubelets' bootstrap kubeconfig: the cluster CA and a bootstrap token.
pub fn bootstrap_kubeconfig(cluster: &str, server: &str, ca_pem: &str, token: &str) -> String {
    flotilla_core::kubeconfig::render(&flotilla_core::kubeconfig::KubeconfigSpec {
        name: cluster.to_string(),
        server: server.to_string(),
        ca_pem: ca_pem.to_string(),
        credential: flotilla_core::kubeconfig::Credential::Token(token.to_string()),
    })
}

/// A bootstrap token `<id>.<secret>` from 22 random bytes' worth of hex
/// (the caller supplies the randomness: `core` reads no entropy itself).
pub fn bootstrap_token(random_hex: &str) -> Option<String> {
    let lower: String =
        random_hex.chars().filter(|c| c.is_ascii_hexdigit()).map(|c| c.to_ascii_lowercase()).collect();
    (lower.len() >= 22).then(|| format!("{}.{}", &lower[..6], &lower[6..22]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hosted::place;
    use crate::hosted::tests::{config, hc, machine, now};

    fn etcd_ca() -> EtcdCa {
        let ca = CertificateAuthority::generate("etcd-ca").unwrap();
        EtcdCa { cert_pem: ca.pem.cert_pem.clone(), key_pem: ca.pem.key_pem.clone() }
    }

    #[test]
    fn pki_is_generated_once_renewed_when_inputs_change_and_rotated_on_request() {
        let hc = hc(1, 0);
        let placement = place(&hc, &[machine("m1", true)], &config(), now()).unwrap();
        let inputs = pki_inputs(&hc, &placement).unwrap();
        let etcd = etcd_ca();
        let first =
            pki_data("team-a", &BTreeMap::new(), &etcd, &inputs, Rotation::None, now(), Duration::days(30))
                .unwrap();
        assert!(!first.issued.is_empty());
        let pki = ControlPlanePki::from_secret_data("team-a", &first.data).unwrap();
        assert_eq!(pki.etcd_ca.pem.cert_pem, etcd.cert_pem, "the EtcdCluster's CA signs the etcd client");
        let pem = pki.leaf(leaves::APISERVER_ETCD_CLIENT).unwrap().cert_pem.clone();
        let (_, parsed) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        let cert = parsed.parse_x509().unwrap();
        assert_eq!(cert.issuer().to_string(), "CN=etcd-ca");

        let again =
            pki_data("team-a", &first.data, &etcd, &inputs, Rotation::None, now(), Duration::days(30))
                .unwrap();
        assert!(again.issued.is_empty());
        assert_eq!(again.data, first.data);

        let mut moved = inputs.clone();
        moved.endpoint_hosts.push("10.0.0.9".into());
        let renewed =
            pki_data("team-a", &first.data, &etcd, &moved, Rotation::None, now(), Duration::days(30))
                .unwrap();
        // Every serving certificate that names the endpoint hosts.
        assert_eq!(
            renewed.issued,
            [leaves::APISERVER, leaves::CONTROLLER_MANAGER_SERVING, leaves::SCHEDULER_SERVING]
        );
        assert_eq!(renewed.data[keys::CA_CRT], first.data[keys::CA_CRT]);

        let leaves_rotated =
            pki_data("team-a", &first.data, &etcd, &inputs, Rotation::Leaves, now(), Duration::days(30))
                .unwrap();
        assert!(leaves_rotated.issued.len() >= 9, "{:?}", leaves_rotated.issued);
        assert_eq!(leaves_rotated.data[keys::CA_CRT], first.data[keys::CA_CRT]);
        assert_ne!(leaves_rotated.data[&keys::crt(leaves::ADMIN)], first.data[&keys::crt(leaves::ADMIN)]);

        let ca_rotated =
            pki_data("team-a", &first.data, &etcd, &inputs, Rotation::Ca, now(), Duration::days(30)).unwrap();
        assert_ne!(ca_rotated.data[keys::CA_CRT], first.data[keys::CA_CRT]);
        assert_eq!(ca_rotated.data[keys::SA_KEY], first.data[keys::SA_KEY], "tokens stay valid");
        assert_eq!(
            ca_rotated.data[keys::ETCD_CA_CRT],
            first.data[keys::ETCD_CA_CRT],
            "etcd's CA is not ours to rotate"
        );

        let other_etcd = etcd_ca();
        let restored =
            pki_data("team-a", &first.data, &other_etcd, &inputs, Rotation::None, now(), Duration::days(30))
                .unwrap();
        assert_eq!(restored.issued, [leaves::APISERVER_ETCD_CLIENT.to_string()]);
    }

    #[test]
    fn certificates_verdict_names_the_next_expiry_and_what_to_do() {
        let hc = hc(1, 0);
        let placement = place(&hc, &[machine("m1", true)], &config(), now()).unwrap();
        let inputs = pki_inputs(&hc, &placement).unwrap();
        let data = pki_data(
            "team-a",
            &BTreeMap::new(),
            &etcd_ca(),
            &inputs,
            Rotation::None,
            now(),
            Duration::days(30),
        )
        .unwrap()
        .data;
        let renew = Duration::days(30);
        let (ok, reason, message) = certificates_verdict("team-a", &data, now(), renew);
        assert!(ok, "{message}");
        assert_eq!(reason, "Valid");
        assert!(message.contains("the next to expire is"), "{message}");

        let late = now() + crate::pki::LEAF_VALIDITY - Duration::days(3);
        let (ok, reason, message) = certificates_verdict("team-a", &data, late, renew);
        assert!(!ok);
        assert_eq!(reason, "Renewing", "{message}");

        let after = now() + crate::pki::LEAF_VALIDITY + Duration::days(1);
        assert_eq!(certificates_verdict("team-a", &data, after, renew).1, "Expired");

        // A window longer than the CAs' lifetime: the cluster CA needs a rotation.
        let (ok, reason, message) = certificates_verdict("team-a", &data, now(), Duration::days(365 * 50));
        assert!(!ok);
        assert_eq!(reason, "CaExpiring");
        assert!(message.contains("flotilla cluster rotate-certs team-a --ca"), "{message}");

        assert_eq!(certificates_verdict("team-a", &BTreeMap::new(), now(), renew).1, "NotIssued");
        let garbage = BTreeMap::from([(keys::CA_CRT.to_string(), b"not a certificate".to_vec())]);
        assert_eq!(certificates_verdict("team-a", &garbage, now(), renew).1, "Unreadable");
    }

    #[test]
    fn rotation_is_requested_by_a_new_annotation_value_only() {
        let mut hc = hc(1, 0);
        assert_eq!(requested_rotation(&hc).0, Rotation::None);
        hc.metadata.annotations =
            Some(BTreeMap::from([(ROTATE_CERTS_ANNOTATION.to_string(), "ca/1".to_string())]));
        assert_eq!(requested_rotation(&hc), (Rotation::Ca, Some("ca/1".into())));
        hc.status = Some(flotilla_api::kok::HostedClusterStatus {
            handled_rotation: Some("ca/1".into()),
            ..Default::default()
        });
        assert_eq!(requested_rotation(&hc).0, Rotation::None);
        hc.metadata.annotations =
            Some(BTreeMap::from([(ROTATE_CERTS_ANNOTATION.to_string(), "leaves/2".to_string())]));
        assert_eq!(requested_rotation(&hc).0, Rotation::Leaves);
    }

    #[test]
    fn bootstrap_tokens_have_the_kubernetes_shape() {
        let t = bootstrap_token("0123456789ABCDEF0123456789abcdef").unwrap();
        assert_eq!(t, "012345.6789abcdef012345");
        assert!(bootstrap_token("abc").is_none());
    }

    #[test]
    fn the_admin_kubeconfig_reached_at_another_address_keeps_its_credential() {
        let admin = flotilla_core::kubeconfig::render(&flotilla_core::kubeconfig::KubeconfigSpec {
            name: "c".into(),
            server: "https://kube-apiserver.kok-c.svc:6443".into(),
            ca_pem: "CA".into(),
            credential: flotilla_core::kubeconfig::Credential::ClientCert {
                cert_pem: "CERT".into(),
                key_pem: "KEY".into(),
            },
        });
        let outside =
            reached_at(admin.as_bytes(), "c", "https://172.30.1.2:31000", "kube-apiserver.kok-c.svc")
                .unwrap();
        let parsed = flotilla_core::kubeconfig::parse(&String::from_utf8(outside).unwrap()).unwrap();
        assert_eq!(parsed.server, "https://172.30.1.2:31000");
        assert_eq!(parsed.tls_server_name.as_deref(), Some("kube-apiserver.kok-c.svc"));
        assert_eq!(
            (parsed.client_cert_pem.as_deref(), parsed.client_key_pem.as_deref()),
            (Some("CERT"), Some("KEY"))
        );
        assert_eq!(parsed.ca_pem, "CA");
        assert_eq!(reached_at(b"not yaml: [", "c", "https://x", "y"), None);
    }
}
