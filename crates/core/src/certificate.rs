//! A client certificate's life as its holder sees it: when it is valid, and
//! when to renew it. Shared by every agent that renews its own certificate
//! (the cluster agent, the node agent).

/// Validity of a PEM certificate (notBefore, notAfter) in seconds since the
/// epoch.
pub fn cert_validity(cert_pem: &str) -> Option<(i64, i64)> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()).ok()?;
    let cert = pem.parse_x509().ok()?;
    Some((cert.validity().not_before.timestamp(), cert.validity().not_after.timestamp()))
}

/// When to renew a certificate issued at `issued` and valid until
/// `not_after`: at 70% of its life (seconds since the epoch).
pub fn renew_at(issued: i64, not_after: i64) -> i64 {
    let lifetime = (not_after - issued).max(1);
    issued + lifetime * 7 / 10
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_at_seventy_percent() {
        let cases = [
            // (issued, not_after, renew at)
            (1000, 2000, 1700),
            (0, 3600, 2520),
            // An expired-at-birth certificate renews at once.
            (1000, 1000, 1000),
            (1000, 900, 1000),
        ];
        for (issued, not_after, at) in cases {
            assert_eq!(renew_at(issued, not_after), at, "{issued} {not_after}");
        }
    }

    #[test]
    fn validity_of_a_real_certificate_and_of_garbage() {
        assert!(cert_validity("garbage").is_none());
        let now = time::OffsetDateTime::from_unix_timestamp(1_000_000).unwrap();
        let ca =
            crate::pki::CertificateAuthority::generate_at("test", now, time::Duration::hours(1)).unwrap();
        let (not_before, not_after) = cert_validity(&ca.pem.cert_pem).unwrap();
        assert!(not_before <= 1_000_000, "backdated for clock skew: {not_before}");
        assert_eq!(not_after, 1_000_000 + 3600);
    }
}
