//! Certificates for Kubernetes control planes: a CA, leaf certificates signed
//! by it (serving, client, or both) and bare key pairs (service-account
//! signing). Keys are ECDSA P-256, which Kubernetes accepts everywhere
//! (serving, client auth, CSR signing, ES256 service-account tokens).

use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("generating a key pair: {0}")]
    KeyGeneration(rcgen::Error),
    #[error("signing the certificate for {subject:?}: {source}")]
    Signing { subject: String, source: rcgen::Error },
    #[error("{what} is not a valid PEM {expected}: {source}")]
    Parse { what: String, expected: &'static str, source: rcgen::Error },
    #[error("invalid subject alternative name {0:?}")]
    InvalidSan(String),
    #[error("not a PEM X.509 certificate: {0}")]
    Inspect(String),
}

/// A PEM certificate and its PEM (PKCS#8) private key.
#[derive(Clone, PartialEq, Eq)]
pub struct CertAndKey {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for CertAndKey {
    // Never print private keys.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertAndKey").field("cert_pem", &self.cert_pem).finish_non_exhaustive()
    }
}

/// A certificate authority able to sign leaf certificates.
#[derive(Debug, Clone)]
pub struct CertificateAuthority {
    pub pem: CertAndKey,
}

/// What a leaf certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    Server,
    Client,
    ServerAndClient,
}

/// A request for a leaf certificate. Kubernetes reads the user name from the
/// common name and the groups from the organizations.
#[derive(Debug, Clone)]
pub struct LeafSpec {
    pub common_name: String,
    pub organizations: Vec<String>,
    /// DNS names and IP addresses (written as text; IPs become IP SANs).
    pub alt_names: Vec<String>,
    pub usage: Usage,
    pub validity: Duration,
}

impl LeafSpec {
    pub fn client(common_name: impl Into<String>, organizations: &[&str]) -> Self {
        Self {
            common_name: common_name.into(),
            organizations: organizations.iter().map(|o| o.to_string()).collect(),
            alt_names: Vec::new(),
            usage: Usage::Client,
            validity: DEFAULT_LEAF_VALIDITY,
        }
    }

    pub fn server(common_name: impl Into<String>, alt_names: &[String]) -> Self {
        Self {
            common_name: common_name.into(),
            organizations: Vec::new(),
            alt_names: alt_names.to_vec(),
            usage: Usage::Server,
            validity: DEFAULT_LEAF_VALIDITY,
        }
    }
}

pub const DEFAULT_CA_VALIDITY: Duration = Duration::days(3650);
pub const DEFAULT_LEAF_VALIDITY: Duration = Duration::days(365);
/// Certificates start being valid a little in the past so that a peer whose
/// clock is slightly behind does not reject them.
const CLOCK_SKEW_ALLOWANCE: Duration = Duration::minutes(5);

fn new_key() -> Result<KeyPair, PkiError> {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(PkiError::KeyGeneration)
}

fn subject(common_name: &str, organizations: &[String]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    for org in organizations {
        dn.push(DnType::OrganizationName, org.as_str());
    }
    dn.push(DnType::CommonName, common_name);
    dn
}

fn san(name: &str) -> Result<SanType, PkiError> {
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let valid_dns = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '*')
        });
    if !valid_dns {
        return Err(PkiError::InvalidSan(name.to_string()));
    }
    name.try_into().map(SanType::DnsName).map_err(|_| PkiError::InvalidSan(name.to_string()))
}

impl CertificateAuthority {
    /// Generates a new self-signed CA.
    pub fn generate(common_name: &str) -> Result<Self, PkiError> {
        Self::generate_at(common_name, OffsetDateTime::now_utc(), DEFAULT_CA_VALIDITY)
    }

    /// Generates a new self-signed CA valid from `now` for `validity`.
    pub fn generate_at(common_name: &str, now: OffsetDateTime, validity: Duration) -> Result<Self, PkiError> {
        let key = new_key()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = subject(common_name, &[]);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        params.not_before = now - CLOCK_SKEW_ALLOWANCE;
        params.not_after = now + validity;
        let cert = params
            .self_signed(&key)
            .map_err(|source| PkiError::Signing { subject: common_name.to_string(), source })?;
        Ok(Self { pem: CertAndKey { cert_pem: cert.pem(), key_pem: key.serialize_pem() } })
    }

    /// Loads a CA from its PEM certificate and key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let ca = Self { pem: CertAndKey { cert_pem: cert_pem.into(), key_pem: key_pem.into() } };
        ca.issuer()?;
        Ok(ca)
    }

    fn issuer(&self) -> Result<Issuer<'static, KeyPair>, PkiError> {
        let key = KeyPair::from_pem(&self.pem.key_pem).map_err(|source| PkiError::Parse {
            what: "the CA key".into(),
            expected: "private key",
            source,
        })?;
        Issuer::from_ca_cert_pem(&self.pem.cert_pem, key).map_err(|source| PkiError::Parse {
            what: "the CA certificate".into(),
            expected: "certificate",
            source,
        })
    }

    /// Issues a leaf certificate valid from now.
    pub fn issue(&self, spec: &LeafSpec) -> Result<CertAndKey, PkiError> {
        self.issue_at(spec, OffsetDateTime::now_utc())
    }

    /// Issues a leaf certificate valid from `now` for `spec.validity`.
    pub fn issue_at(&self, spec: &LeafSpec, now: OffsetDateTime) -> Result<CertAndKey, PkiError> {
        let issuer = self.issuer()?;
        let key = new_key()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = subject(&spec.common_name, &spec.organizations);
        params.subject_alt_names = spec.alt_names.iter().map(|n| san(n)).collect::<Result<_, _>>()?;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = match spec.usage {
            Usage::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
            Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
            Usage::ServerAndClient => {
                vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth]
            }
        };
        params.use_authority_key_identifier_extension = true;
        params.not_before = now - CLOCK_SKEW_ALLOWANCE;
        params.not_after = now + spec.validity;
        let cert = params
            .signed_by(&key, &issuer)
            .map_err(|source| PkiError::Signing { subject: spec.common_name.clone(), source })?;
        Ok(CertAndKey { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }
}

/// A bare key pair, e.g. for signing service-account tokens.
#[derive(Clone)]
pub struct KeyPairPem {
    pub private_pem: String,
    pub public_pem: String,
}

impl std::fmt::Debug for KeyPairPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPairPem").field("public_pem", &self.public_pem).finish_non_exhaustive()
    }
}

pub fn generate_key_pair() -> Result<KeyPairPem, PkiError> {
    let key = new_key()?;
    Ok(KeyPairPem { private_pem: key.serialize_pem(), public_pem: key.public_key_pem() })
}

/// What a certificate is for and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFacts {
    /// DNS names and IP addresses (as text) of its subject alternative names.
    pub names: Vec<String>,
    /// The subject's organizations (for a client certificate: its groups).
    pub organizations: Vec<String>,
    pub not_after: OffsetDateTime,
}

impl CertificateFacts {
    /// Whether it names `host` (a DNS name or an IP address, IPv6 with or
    /// without brackets) and is still valid `margin` after `now`.
    pub fn covers(&self, host: &str, now: OffsetDateTime, margin: Duration) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let host_ip = host.parse::<IpAddr>().ok();
        let named = self.names.iter().any(|name| match (host_ip, name.parse::<IpAddr>()) {
            (Some(ip), Ok(name_ip)) => ip == name_ip,
            _ => name.eq_ignore_ascii_case(host),
        });
        named && self.not_after > now + margin
    }
}

/// Reads the subject alternative names and expiry of a PEM certificate.
pub fn inspect_certificate(cert_pem: &str) -> Result<CertificateFacts, PkiError> {
    use x509_parser::extensions::GeneralName;
    use x509_parser::prelude::FromDer as _;
    let (_, block) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
        .map_err(|e| PkiError::Inspect(e.to_string()))?;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&block.contents)
        .map_err(|e| PkiError::Inspect(e.to_string()))?;
    let sans = cert.subject_alternative_name().map_err(|e| PkiError::Inspect(e.to_string()))?;
    let names = sans
        .iter()
        .flat_map(|san| san.value.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some(dns.to_string()),
            GeneralName::IPAddress(bytes) => match bytes.len() {
                4 => <[u8; 4]>::try_from(*bytes).ok().map(|b| IpAddr::from(b).to_string()),
                16 => <[u8; 16]>::try_from(*bytes).ok().map(|b| IpAddr::from(b).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect();
    let not_after = OffsetDateTime::from_unix_timestamp(cert.validity().not_after.timestamp())
        .map_err(|e| PkiError::Inspect(e.to_string()))?;
    let organizations =
        cert.subject().iter_organization().filter_map(|o| o.as_str().ok().map(str::to_string)).collect();
    Ok(CertificateFacts { names, organizations, not_after })
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::*;

    fn parse(pem: &str) -> (Vec<u8>, String) {
        let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        (p.contents.clone(), pem.to_string())
    }

    #[test]
    fn leaf_carries_user_groups_and_sans_and_chains_to_ca() {
        let ca = CertificateAuthority::generate("flotilla-test-ca").unwrap();
        let mut spec =
            LeafSpec::server("kube-apiserver", &["127.0.0.1".into(), "kubernetes.default.svc".into()]);
        spec.usage = Usage::ServerAndClient;
        spec.organizations = vec!["system:masters".into()];
        let leaf = ca.issue(&spec).unwrap();

        let (der, _) = parse(&leaf.cert_pem);
        let (_, cert) = X509Certificate::from_der(&der).unwrap();
        let subject = cert.subject().to_string();
        assert!(subject.contains("CN=kube-apiserver"), "{subject}");
        assert!(subject.contains("O=system:masters"), "{subject}");
        let sans = cert.subject_alternative_name().unwrap().unwrap().value;
        let names: Vec<String> = sans.general_names.iter().map(|n| n.to_string()).collect();
        assert!(names.iter().any(|n| n.contains("7f:00:00:01")), "{names:?}");
        assert!(names.iter().any(|n| n.contains("kubernetes.default.svc")), "{names:?}");
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && eku.client_auth);

        let (ca_der, _) = parse(&ca.pem.cert_pem);
        let (_, ca_cert) = X509Certificate::from_der(&ca_der).unwrap();
        assert_eq!(cert.issuer(), ca_cert.subject());
        cert.verify_signature(Some(ca_cert.public_key())).unwrap();
        assert!(ca_cert.is_ca());
    }

    #[test]
    fn client_leaf_is_client_only_and_validity_is_bounded() {
        let ca = CertificateAuthority::generate("ca").unwrap();
        let now = OffsetDateTime::now_utc();
        let mut spec = LeafSpec::client("system:node:n1", &["system:nodes"]);
        spec.validity = Duration::hours(2);
        let leaf = ca.issue_at(&spec, now).unwrap();
        let (der, _) = parse(&leaf.cert_pem);
        let (_, cert) = X509Certificate::from_der(&der).unwrap();
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);
        let not_after = cert.validity().not_after.timestamp();
        assert!((not_after - (now + Duration::hours(2)).unix_timestamp()).abs() <= 1);
    }

    #[test]
    fn ca_round_trips_through_pem() {
        let ca = CertificateAuthority::generate("ca").unwrap();
        let again = CertificateAuthority::from_pem(&ca.pem.cert_pem, &ca.pem.key_pem).unwrap();
        let leaf = again.issue(&LeafSpec::client("u", &[])).unwrap();
        let (der, _) = parse(&leaf.cert_pem);
        let (_, cert) = X509Certificate::from_der(&der).unwrap();
        let (ca_der, _) = parse(&ca.pem.cert_pem);
        let (_, ca_cert) = X509Certificate::from_der(&ca_der).unwrap();
        cert.verify_signature(Some(ca_cert.public_key())).unwrap();
    }

    #[test]
    fn garbage_pem_is_a_clear_error() {
        let err = CertificateAuthority::from_pem("nope", "nope").unwrap_err();
        assert!(err.to_string().contains("the CA key"), "{err}");
        let err = LeafSpec::server("x", &["not a name!".into()]);
        let ca = CertificateAuthority::generate("ca").unwrap();
        assert!(matches!(ca.issue(&err), Err(PkiError::InvalidSan(_))));
    }

    #[test]
    fn inspected_certificates_cover_their_names_until_they_expire() {
        let ca = CertificateAuthority::generate("ca").unwrap();
        let now = OffsetDateTime::now_utc();
        let leaf = ca
            .issue_at(
                &LeafSpec::server("webhook", &["127.0.0.1".into(), "::1".into(), "hub.example".into()]),
                now,
            )
            .unwrap();
        let facts = inspect_certificate(&leaf.cert_pem).unwrap();
        assert_eq!(facts.names, ["127.0.0.1", "::1", "hub.example"]);
        let month = Duration::days(30);
        for host in ["127.0.0.1", "[::1]", "::1", "HUB.example"] {
            assert!(facts.covers(host, now, month), "{host}");
        }
        assert!(!facts.covers("127.0.0.2", now, month));
        assert!(!facts.covers("other.example", now, month));
        assert!(!facts.covers("127.0.0.1", now + DEFAULT_LEAF_VALIDITY - Duration::days(10), month));
        assert!(matches!(inspect_certificate("nope"), Err(PkiError::Inspect(_))));
    }

    #[test]
    fn key_pair_has_both_halves() {
        let kp = generate_key_pair().unwrap();
        assert!(kp.private_pem.contains("PRIVATE KEY"));
        assert!(kp.public_pem.contains("PUBLIC KEY"));
        assert!(!format!("{kp:?}").contains("PRIVATE"));
    }
}
