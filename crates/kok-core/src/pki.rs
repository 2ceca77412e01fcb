//! The certificates of a hosted control plane, the way kubeadm lays them
//! out: the cluster CA and what it signs (apiserver serving and kubelet
//! client certificates, component identities and their kubeconfigs), the
//! front-proxy CA and its client, the etcd CA with a server and a peer
//! certificate per member and the apiserver's etcd client, and the
//! service-account key pair.
//!
//! Every leaf is described by a plan derived from [`PkiInputs`], so issuing,
//! renewing (only what expires soon or lacks a name it now needs) and CA
//! rotation (everything) are the same loop. The whole set serializes to the
//! data of one Secret whose keys are also the file names the components'
//! command lines refer to (see `render`).

use std::collections::BTreeMap;
use std::net::IpAddr;

use time::{Duration, OffsetDateTime};

use flotilla_core::kubeconfig::{self, Credential, KubeconfigSpec};
use flotilla_core::pki::{
    self, inspect_certificate, CertAndKey, CertificateAuthority, KeyPairPem, LeafSpec, PkiError, Usage,
    DEFAULT_CA_VALIDITY, DEFAULT_LEAF_VALIDITY,
};

#[derive(Debug, thiserror::Error)]
pub enum KokPkiError {
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error("invalid service CIDR {0:?}")]
    InvalidCidr(String),
    #[error("the control plane's Secret has no key {0:?}")]
    Missing(String),
    #[error("the control plane's Secret key {0:?} is not UTF-8 text")]
    NotText(String),
    #[error("invalid etcd member name {0:?} (lower-case letters, digits and '-')")]
    InvalidMemberName(String),
}

/// Secret data keys (and file names) of the CAs, the service-account key
/// pair and the kubeconfigs. A leaf `L` is stored as `L.crt` and `L.key`.
pub mod keys {
    pub const CA_CRT: &str = "ca.crt";
    pub const CA_KEY: &str = "ca.key";
    pub const FRONT_PROXY_CA_CRT: &str = "front-proxy-ca.crt";
    pub const FRONT_PROXY_CA_KEY: &str = "front-proxy-ca.key";
    pub const ETCD_CA_CRT: &str = "etcd-ca.crt";
    pub const ETCD_CA_KEY: &str = "etcd-ca.key";
    pub const SA_KEY: &str = "sa.key";
    pub const SA_PUB: &str = "sa.pub";
    pub const ADMIN_KUBECONFIG: &str = "admin.kubeconfig";
    pub const CONTROLLER_MANAGER_KUBECONFIG: &str = "controller-manager.kubeconfig";
    pub const SCHEDULER_KUBECONFIG: &str = "scheduler.kubeconfig";

    /// `L.crt` of leaf `L`.
    pub fn crt(leaf: &str) -> String {
        format!("{leaf}.crt")
    }

    /// `L.key` of leaf `L`.
    pub fn key(leaf: &str) -> String {
        format!("{leaf}.key")
    }
}

/// Names of the leaf certificates.
pub mod leaves {
    pub const APISERVER: &str = "apiserver";
    pub const APISERVER_KUBELET_CLIENT: &str = "apiserver-kubelet-client";
    pub const APISERVER_ETCD_CLIENT: &str = "apiserver-etcd-client";
    pub const FRONT_PROXY_CLIENT: &str = "front-proxy-client";
    pub const ADMIN: &str = "admin";
    pub const CONTROLLER_MANAGER: &str = "controller-manager";
    pub const SCHEDULER: &str = "scheduler";
    /// Serving certificates of the controller-manager and scheduler (their
    /// `/healthz` is then verifiable with the cluster CA).
    pub const CONTROLLER_MANAGER_SERVING: &str = "controller-manager-serving";
    pub const SCHEDULER_SERVING: &str = "scheduler-serving";

    /// Serving (and client, for its own health checks) certificate of etcd
    /// member `member`.
    pub fn etcd_server(member: &str) -> String {
        format!("etcd-member-{member}-server")
    }

    /// Peer certificate of etcd member `member`.
    pub fn etcd_peer(member: &str) -> String {
        format!("etcd-member-{member}-peer")
    }
}

/// Identities the components authenticate as (common name, organization).
pub mod identities {
    pub const ADMIN_USER: &str = "kubernetes-admin";
    pub const ADMIN_GROUP: &str = "system:masters";
    pub const CONTROLLER_MANAGER_USER: &str = "system:kube-controller-manager";
    pub const SCHEDULER_USER: &str = "system:kube-scheduler";
    pub const KUBELET_CLIENT_USER: &str = "kube-apiserver-kubelet-client";
    pub const FRONT_PROXY_CLIENT_USER: &str = "front-proxy-client";
    pub const ETCD_CLIENT_USER: &str = "kube-apiserver-etcd-client";
}

/// An etcd member and the names it is reached by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdMemberHosts {
    pub name: String,
    /// DNS names and IP addresses of the member (loopback is always added).
    pub hosts: Vec<String>,
}

/// What the certificates depend on. Changing these and calling
/// [`ControlPlanePki::renew_leaves`] reissues exactly the affected leaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PkiInputs {
    /// `https://host:port` the admin kubeconfig points at.
    pub server: String,
    /// What the controller-manager and scheduler kubeconfigs point at
    /// (e.g. `https://127.0.0.1:6443` next to the apiserver); `server` when
    /// absent.
    pub component_server: Option<String>,
    /// DNS names and IPs clients use to reach the API server (endpoint,
    /// load balancer, machine addresses).
    pub endpoint_hosts: Vec<String>,
    /// Its first address is the `kubernetes` Service's IP.
    pub service_cidr: String,
    /// e.g. `cluster.local`.
    pub cluster_domain: String,
    pub etcd_members: Vec<EtcdMemberHosts>,
}

/// Which CA signs a leaf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signer {
    Cluster,
    FrontProxy,
    Etcd,
}

/// One leaf certificate the control plane needs.
#[derive(Debug, Clone)]
struct LeafPlan {
    name: String,
    signer: Signer,
    spec: LeafSpec,
}

/// Every certificate, key and kubeconfig of one hosted control plane.
#[derive(Debug, Clone)]
pub struct ControlPlanePki {
    /// The cluster's name (kubeconfig cluster/context name).
    pub name: String,
    pub ca: CertificateAuthority,
    pub front_proxy_ca: CertificateAuthority,
    pub etcd_ca: CertificateAuthority,
    /// Signs and verifies ServiceAccount tokens. Kept across CA rotation:
    /// replacing it would invalidate every token in the cluster.
    pub service_account: KeyPairPem,
    /// Leaf certificates by name (see [`leaves`]).
    pub leaves: BTreeMap<String, CertAndKey>,
    /// Rendered kubeconfigs by Secret key (see [`keys`]).
    pub kubeconfigs: BTreeMap<String, String>,
}

/// The first address of a CIDR after the network address: the IP of the
/// `kubernetes` Service.
pub fn first_service_ip(cidr: &str) -> Result<IpAddr, KokPkiError> {
    let bad = || KokPkiError::InvalidCidr(cidr.to_string());
    let (addr, len) = cidr.trim().split_once('/').ok_or_else(bad)?;
    let addr: IpAddr = addr.parse().map_err(|_| bad())?;
    let len: u32 = len.parse().map_err(|_| bad())?;
    match addr {
        IpAddr::V4(v4) if len <= 30 => {
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            Ok(IpAddr::from(std::net::Ipv4Addr::from((u32::from(v4) & mask) + 1)))
        }
        IpAddr::V6(v6) if len <= 126 => {
            let mask = if len == 0 { 0 } else { u128::MAX << (128 - len) };
            Ok(IpAddr::from(std::net::Ipv6Addr::from((u128::from(v6) & mask) + 1)))
        }
        _ => Err(bad()),
    }
}

/// Whether a certificate must be reissued: it expires within `threshold` of
/// `now` (or cannot be read at all).
pub fn leaf_needs_renewal(cert_pem: &str, now: OffsetDateTime, threshold: Duration) -> bool {
    match inspect_certificate(cert_pem) {
        Ok(facts) => facts.not_after <= now + threshold,
        Err(_) => true,
    }
}

/// Whether two lists hold the same names, in any order.
fn same_set(a: &[String], b: &[String]) -> bool {
    let (mut a, mut b) = (a.to_vec(), b.to_vec());
    a.sort();
    b.sort();
    a == b
}

fn dedup(names: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for name in names {
        if !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

fn valid_member_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// The leaves `inputs` call for.
fn plan(inputs: &PkiInputs) -> Result<Vec<LeafPlan>, KokPkiError> {
    let service_ip = first_service_ip(&inputs.service_cidr)?;
    let loopback = ["127.0.0.1".to_string(), "localhost".to_string()];
    let domain = inputs.cluster_domain.trim_matches('.');
    let apiserver_sans = dedup(
        [
            "kubernetes".to_string(),
            "kubernetes.default".into(),
            "kubernetes.default.svc".into(),
            format!("kubernetes.default.svc.{domain}"),
            service_ip.to_string(),
        ]
        .into_iter()
        .chain(inputs.endpoint_hosts.iter().cloned())
        .chain(loopback.iter().cloned()),
    );
    let component_sans = dedup(loopback.iter().cloned().chain(inputs.endpoint_hosts.iter().cloned()));
    let leaf = |name: &str, signer, spec| LeafPlan { name: name.to_string(), signer, spec };
    let mut plans = vec![
        leaf(leaves::APISERVER, Signer::Cluster, LeafSpec::server("kube-apiserver", &apiserver_sans)),
        leaf(
            leaves::APISERVER_KUBELET_CLIENT,
            Signer::Cluster,
            LeafSpec::client(identities::KUBELET_CLIENT_USER, &[identities::ADMIN_GROUP]),
        ),
        leaf(
            leaves::ADMIN,
            Signer::Cluster,
            LeafSpec::client(identities::ADMIN_USER, &[identities::ADMIN_GROUP]),
        ),
        leaf(
            leaves::CONTROLLER_MANAGER,
            Signer::Cluster,
            // In system:masters so its controllers can share its credential
            // (`--use-service-account-credentials=false`: no wait for a token
            // per controller at start, which delayed node joins by seconds).
            // No privilege is added: it holds the cluster CA's key to sign
            // certificates, so it could issue itself any identity anyway.
            LeafSpec::client(identities::CONTROLLER_MANAGER_USER, &[identities::ADMIN_GROUP]),
        ),
        leaf(leaves::SCHEDULER, Signer::Cluster, LeafSpec::client(identities::SCHEDULER_USER, &[])),
        leaf(
            leaves::CONTROLLER_MANAGER_SERVING,
            Signer::Cluster,
            LeafSpec::server("kube-controller-manager", &component_sans),
        ),
        leaf(leaves::SCHEDULER_SERVING, Signer::Cluster, LeafSpec::server("kube-scheduler", &component_sans)),
        leaf(
            leaves::FRONT_PROXY_CLIENT,
            Signer::FrontProxy,
            LeafSpec::client(identities::FRONT_PROXY_CLIENT_USER, &[]),
        ),
        leaf(
            leaves::APISERVER_ETCD_CLIENT,
            Signer::Etcd,
            LeafSpec::client(identities::ETCD_CLIENT_USER, &[]),
        ),
    ];
    for member in &inputs.etcd_members {
        if !valid_member_name(&member.name) {
            return Err(KokPkiError::InvalidMemberName(member.name.clone()));
        }
        let sans = dedup(member.hosts.iter().cloned().chain(loopback.iter().cloned()));
        // etcd presents its serving certificate as a client too (e.g. to
        // its own gRPC gateway), and its peer certificate in both roles.
        let both = |cn: &str| LeafSpec { usage: Usage::ServerAndClient, ..LeafSpec::server(cn, &sans) };
        plans.push(leaf(&leaves::etcd_server(&member.name), Signer::Etcd, both(&member.name)));
        plans.push(leaf(&leaves::etcd_peer(&member.name), Signer::Etcd, both(&member.name)));
    }
    Ok(plans)
}

impl ControlPlanePki {
    /// New CAs, service-account key pair, leaves and kubeconfigs.
    pub fn generate(name: &str, inputs: &PkiInputs) -> Result<Self, KokPkiError> {
        Self::generate_at(name, inputs, OffsetDateTime::now_utc())
    }

    /// [`generate`](Self::generate) with certificates valid from `now`.
    pub fn generate_at(name: &str, inputs: &PkiInputs, now: OffsetDateTime) -> Result<Self, KokPkiError> {
        let mut pki = Self {
            name: name.to_string(),
            ca: CertificateAuthority::generate_at(&format!("{name}-ca"), now, DEFAULT_CA_VALIDITY)?,
            front_proxy_ca: CertificateAuthority::generate_at(
                &format!("{name}-front-proxy-ca"),
                now,
                DEFAULT_CA_VALIDITY,
            )?,
            etcd_ca: CertificateAuthority::generate_at(&format!("{name}-etcd-ca"), now, DEFAULT_CA_VALIDITY)?,
            service_account: pki::generate_key_pair()?,
            leaves: BTreeMap::new(),
            kubeconfigs: BTreeMap::new(),
        };
        for leaf in plan(inputs)? {
            let issued = pki.signer(leaf.signer).issue_at(&leaf.spec, now)?;
            pki.leaves.insert(leaf.name, issued);
        }
        pki.render_kubeconfigs(inputs);
        Ok(pki)
    }

    fn signer(&self, signer: Signer) -> &CertificateAuthority {
        match signer {
            Signer::Cluster => &self.ca,
            Signer::FrontProxy => &self.front_proxy_ca,
            Signer::Etcd => &self.etcd_ca,
        }
    }

    /// A leaf certificate by name (see [`leaves`]).
    pub fn leaf(&self, name: &str) -> Option<&CertAndKey> {
        self.leaves.get(name)
    }

    fn render_kubeconfigs(&mut self, inputs: &PkiInputs) {
        let component_server = inputs.component_server.as_deref().unwrap_or(&inputs.server);
        for (key, leaf, server) in [
            (keys::ADMIN_KUBECONFIG, leaves::ADMIN, inputs.server.as_str()),
            (keys::CONTROLLER_MANAGER_KUBECONFIG, leaves::CONTROLLER_MANAGER, component_server),
            (keys::SCHEDULER_KUBECONFIG, leaves::SCHEDULER, component_server),
        ] {
            let Some(cert) = self.leaves.get(leaf) else { continue };
            let yaml = kubeconfig::render(&KubeconfigSpec {
                name: self.name.clone(),
                server: server.to_string(),
                ca_pem: self.ca.pem.cert_pem.clone(),
                credential: Credential::ClientCert {
                    cert_pem: cert.cert_pem.clone(),
                    key_pem: cert.key_pem.clone(),
                },
            });
            self.kubeconfigs.insert(key.to_string(), yaml);
        }
    }

    /// Reissues the leaves that expire within `threshold` of `now`, lack a
    /// name `inputs` now require (e.g. a new endpoint host), or are missing
    /// (a new etcd member); drops those `inputs` no longer call for (a
    /// removed member). CAs and the service-account key stay. Returns the
    /// new set and the names of the reissued leaves (empty: nothing to do).
    pub fn renew_leaves(
        &self,
        inputs: &PkiInputs,
        now: OffsetDateTime,
        threshold: Duration,
    ) -> Result<(Self, Vec<String>), KokPkiError> {
        let mut next = self.clone();
        next.leaves.clear();
        let mut renewed = Vec::new();
        for leaf in plan(inputs)? {
            let current = self.leaves.get(&leaf.name).filter(|current| {
                !leaf_needs_renewal(&current.cert_pem, now, threshold)
                    && inspect_certificate(&current.cert_pem).is_ok_and(|facts| {
                        leaf.spec.alt_names.iter().all(|name| facts.covers(name, now, threshold))
                            && same_set(&facts.organizations, &leaf.spec.organizations)
                    })
            });
            let cert = match current {
                Some(cert) => cert.clone(),
                None => {
                    renewed.push(leaf.name.clone());
                    self.signer(leaf.signer).issue_at(&leaf.spec, now)?
                }
            };
            next.leaves.insert(leaf.name, cert);
        }
        next.kubeconfigs.clear();
        next.render_kubeconfigs(inputs);
        Ok((next, renewed))
    }

    /// New cluster, front-proxy and etcd CAs and every certificate and
    /// kubeconfig derived from them (`rotate-certs --ca`). The
    /// service-account key pair stays so existing tokens remain valid.
    pub fn rotate_ca(&self, inputs: &PkiInputs, now: OffsetDateTime) -> Result<Self, KokPkiError> {
        let service_account = self.service_account.clone();
        let mut next = Self::generate_at(&self.name, inputs, now)?;
        next.service_account = service_account;
        Ok(next)
    }

    /// The Secret data holding everything (keys are the file names
    /// components are started with).
    pub fn to_secret_data(&self) -> BTreeMap<String, Vec<u8>> {
        let mut data = BTreeMap::new();
        let mut put = |key: String, value: &str| {
            data.insert(key, value.as_bytes().to_vec());
        };
        for (ca, crt, key) in [
            (&self.ca, keys::CA_CRT, keys::CA_KEY),
            (&self.front_proxy_ca, keys::FRONT_PROXY_CA_CRT, keys::FRONT_PROXY_CA_KEY),
            (&self.etcd_ca, keys::ETCD_CA_CRT, keys::ETCD_CA_KEY),
        ] {
            put(crt.to_string(), &ca.pem.cert_pem);
            put(key.to_string(), &ca.pem.key_pem);
        }
        put(keys::SA_KEY.to_string(), &self.service_account.private_pem);
        put(keys::SA_PUB.to_string(), &self.service_account.public_pem);
        for (name, leaf) in &self.leaves {
            put(keys::crt(name), &leaf.cert_pem);
            put(keys::key(name), &leaf.key_pem);
        }
        for (key, yaml) in &self.kubeconfigs {
            put(key.clone(), yaml);
        }
        data
    }

    /// Reads back what [`to_secret_data`](Self::to_secret_data) wrote.
    pub fn from_secret_data(name: &str, data: &BTreeMap<String, Vec<u8>>) -> Result<Self, KokPkiError> {
        let text = |key: &str| -> Result<String, KokPkiError> {
            let bytes = data.get(key).ok_or_else(|| KokPkiError::Missing(key.to_string()))?;
            String::from_utf8(bytes.clone()).map_err(|_| KokPkiError::NotText(key.to_string()))
        };
        let ca = |crt: &str, key: &str| -> Result<CertificateAuthority, KokPkiError> {
            Ok(CertificateAuthority::from_pem(&text(crt)?, &text(key)?)?)
        };
        let ca_keys = [
            keys::CA_CRT,
            keys::CA_KEY,
            keys::FRONT_PROXY_CA_CRT,
            keys::FRONT_PROXY_CA_KEY,
            keys::ETCD_CA_CRT,
        ];
        let mut leaves = BTreeMap::new();
        for key in data.keys() {
            let Some(leaf) = key.strip_suffix(".crt") else { continue };
            if ca_keys.contains(&key.as_str()) {
                continue;
            }
            let pem = CertAndKey { cert_pem: text(key)?, key_pem: text(&keys::key(leaf))? };
            leaves.insert(leaf.to_string(), pem);
        }
        let mut kubeconfigs = BTreeMap::new();
        for key in data.keys().filter(|k| k.ends_with(".kubeconfig")) {
            kubeconfigs.insert(key.clone(), text(key)?);
        }
        Ok(Self {
            name: name.to_string(),
            ca: ca(keys::CA_CRT, keys::CA_KEY)?,
            front_proxy_ca: ca(keys::FRONT_PROXY_CA_CRT, keys::FRONT_PROXY_CA_KEY)?,
            etcd_ca: ca(keys::ETCD_CA_CRT, keys::ETCD_CA_KEY)?,
            service_account: KeyPairPem { private_pem: text(keys::SA_KEY)?, public_pem: text(keys::SA_PUB)? },
            leaves,
            kubeconfigs,
        })
    }

    /// Expiry of every certificate (CAs first, then leaves by name), for
    /// status and renewal decisions.
    pub fn expiries(&self) -> Result<Vec<CertificateExpiry>, KokPkiError> {
        let cas = [("ca", &self.ca), ("front-proxy-ca", &self.front_proxy_ca), ("etcd-ca", &self.etcd_ca)];
        cas.iter()
            .map(|(name, ca)| (name.to_string(), &ca.pem.cert_pem))
            .chain(self.leaves.iter().map(|(name, leaf)| (name.clone(), &leaf.cert_pem)))
            .map(|(name, pem)| {
                let facts = inspect_certificate(pem)?;
                Ok(CertificateExpiry { name, not_after: facts.not_after })
            })
            .collect()
    }
}

/// When one certificate expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateExpiry {
    pub name: String,
    pub not_after: OffsetDateTime,
}

/// The default leaf lifetime, re-exported for callers choosing a renewal
/// threshold (kubeadm renews within 30 days of expiry of a one-year leaf).
pub const LEAF_VALIDITY: Duration = DEFAULT_LEAF_VALIDITY;

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use x509_parser::prelude::*;

    fn inputs() -> PkiInputs {
        PkiInputs {
            server: "https://api.team-a.example:6443".into(),
            component_server: Some("https://127.0.0.1:6443".into()),
            endpoint_hosts: vec!["api.team-a.example".into(), "192.0.2.10".into()],
            service_cidr: "10.96.0.0/12".into(),
            cluster_domain: "cluster.local".into(),
            etcd_members: vec![
                EtcdMemberHosts { name: "etcd-0".into(), hosts: vec!["192.0.2.21".into()] },
                EtcdMemberHosts { name: "etcd-1".into(), hosts: vec!["192.0.2.22".into()] },
            ],
        }
    }

    fn der(pem: &str) -> Vec<u8> {
        x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap().1.contents
    }

    /// Subject, SANs (as text) and whether `ca_pem` signed `pem`.
    fn examine(pem: &str, ca_pem: &str) -> (String, Vec<String>, bool) {
        let leaf_der = der(pem);
        let ca_der = der(ca_pem);
        let (_, cert) = X509Certificate::from_der(&leaf_der).unwrap();
        let (_, ca) = X509Certificate::from_der(&ca_der).unwrap();
        let names = inspect_certificate(pem).unwrap().names;
        let signed = cert.issuer() == ca.subject() && cert.verify_signature(Some(ca.public_key())).is_ok();
        (cert.subject().to_string(), names, signed)
    }

    fn kubeconfig_identity(yaml: &str) -> (String, String, String) {
        let v: serde_json::Value = serde_saphyr::from_str(yaml).unwrap();
        let b64 = |s: &serde_json::Value| {
            String::from_utf8(base64::engine::general_purpose::STANDARD.decode(s.as_str().unwrap()).unwrap())
                .unwrap()
        };
        let cert = b64(&v["users"][0]["user"]["client-certificate-data"]);
        let ca = b64(&v["clusters"][0]["cluster"]["certificate-authority-data"]);
        let server = v["clusters"][0]["cluster"]["server"].as_str().unwrap().to_string();
        let (_, cert_der) = x509_parser::pem::parse_x509_pem(cert.as_bytes()).unwrap();
        let (_, parsed) = X509Certificate::from_der(&cert_der.contents).unwrap();
        (parsed.subject().to_string(), server, ca)
    }

    #[test]
    fn service_ip_is_the_first_address_of_the_range() {
        assert_eq!(first_service_ip("10.96.0.0/12").unwrap().to_string(), "10.96.0.1");
        assert_eq!(first_service_ip("10.0.0.7/24").unwrap().to_string(), "10.0.0.1");
        assert_eq!(first_service_ip("fd00:10:96::/112").unwrap().to_string(), "fd00:10:96::1");
        for bad in ["10.96.0.0", "10.96.0.0/33", "x/12", "10.0.0.0/31"] {
            assert!(matches!(first_service_ip(bad), Err(KokPkiError::InvalidCidr(_))), "{bad}");
        }
    }

    #[test]
    fn apiserver_certificate_names_every_way_to_reach_it() {
        let pki = ControlPlanePki::generate("team-a", &inputs()).unwrap();
        let (subject, names, signed) =
            examine(&pki.leaf(leaves::APISERVER).unwrap().cert_pem, &pki.ca.pem.cert_pem);
        assert!(subject.contains("CN=kube-apiserver"), "{subject}");
        assert!(signed);
        for want in [
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
            "10.96.0.1",
            "api.team-a.example",
            "192.0.2.10",
            "127.0.0.1",
            "localhost",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} missing from {names:?}");
        }
    }

    #[test]
    fn every_leaf_chains_to_its_own_ca() {
        let pki = ControlPlanePki::generate("team-a", &inputs()).unwrap();
        let expect = |leaf: &str, ca: &CertificateAuthority, others: &[&CertificateAuthority]| {
            let pem = &pki.leaf(leaf).unwrap().cert_pem;
            assert!(examine(pem, &ca.pem.cert_pem).2, "{leaf} not signed by its CA");
            for other in others {
                assert!(!examine(pem, &other.pem.cert_pem).2, "{leaf} signed by the wrong CA");
            }
        };
        let (cluster, front, etcd) = (&pki.ca, &pki.front_proxy_ca, &pki.etcd_ca);
        for leaf in [
            leaves::APISERVER,
            leaves::APISERVER_KUBELET_CLIENT,
            leaves::ADMIN,
            leaves::CONTROLLER_MANAGER,
            leaves::SCHEDULER,
            leaves::CONTROLLER_MANAGER_SERVING,
            leaves::SCHEDULER_SERVING,
        ] {
            expect(leaf, cluster, &[front, etcd]);
        }
        expect(leaves::FRONT_PROXY_CLIENT, front, &[cluster, etcd]);
        expect(leaves::APISERVER_ETCD_CLIENT, etcd, &[cluster, front]);
        for member in ["etcd-0", "etcd-1"] {
            expect(&leaves::etcd_server(member), etcd, &[cluster]);
            expect(&leaves::etcd_peer(member), etcd, &[cluster]);
            let (_, names, _) =
                examine(&pki.leaf(&leaves::etcd_peer(member)).unwrap().cert_pem, &etcd.pem.cert_pem);
            assert!(names.contains(&"127.0.0.1".to_string()), "{names:?}");
        }
        let (_, names, _) =
            examine(&pki.leaf(&leaves::etcd_server("etcd-1")).unwrap().cert_pem, &etcd.pem.cert_pem);
        assert!(names.contains(&"192.0.2.22".to_string()) && !names.contains(&"192.0.2.21".to_string()));
        assert_eq!(pki.leaves.len(), 9 + 2 * 2);
    }

    #[test]
    fn kubeconfigs_carry_the_right_identities_and_servers() {
        let pki = ControlPlanePki::generate("team-a", &inputs()).unwrap();
        let (subject, server, ca) = kubeconfig_identity(&pki.kubeconfigs[keys::ADMIN_KUBECONFIG]);
        assert!(subject.contains("O=system:masters") && subject.contains("CN=kubernetes-admin"), "{subject}");
        assert_eq!(server, "https://api.team-a.example:6443");
        assert_eq!(ca, pki.ca.pem.cert_pem);
        let (subject, server, _) = kubeconfig_identity(&pki.kubeconfigs[keys::CONTROLLER_MANAGER_KUBECONFIG]);
        // Its controllers share its credential (see `plan`).
        assert_eq!(subject, "O=system:masters, CN=system:kube-controller-manager");
        assert_eq!(server, "https://127.0.0.1:6443");
        let (subject, _, _) = kubeconfig_identity(&pki.kubeconfigs[keys::SCHEDULER_KUBECONFIG]);
        assert!(subject.ends_with("CN=system:kube-scheduler"), "{subject}");
        let (subject, _, _) = examine(&pki.leaf(leaves::APISERVER_KUBELET_CLIENT).unwrap().cert_pem, &ca);
        assert!(subject.contains("O=system:masters"), "{subject}");
    }

    #[test]
    fn renewal_threshold_is_measured_from_expiry() {
        let ca = CertificateAuthority::generate("ca").unwrap();
        let now = OffsetDateTime::now_utc();
        let mut spec = LeafSpec::client("u", &[]);
        spec.validity = Duration::days(100);
        let leaf = ca.issue_at(&spec, now).unwrap();
        let month = Duration::days(30);
        assert!(!leaf_needs_renewal(&leaf.cert_pem, now, month));
        assert!(!leaf_needs_renewal(&leaf.cert_pem, now + Duration::days(69), month));
        assert!(leaf_needs_renewal(&leaf.cert_pem, now + Duration::days(71), month));
        assert!(leaf_needs_renewal(&leaf.cert_pem, now + Duration::days(200), month));
        assert!(leaf_needs_renewal("garbage", now, month));
    }

    #[test]
    fn renewal_reissues_only_what_expires_or_lacks_a_name() {
        let now = OffsetDateTime::now_utc();
        let pki = ControlPlanePki::generate_at("team-a", &inputs(), now).unwrap();
        let month = Duration::days(30);

        let (same, renewed) = pki.renew_leaves(&inputs(), now, month).unwrap();
        assert!(renewed.is_empty(), "{renewed:?}");
        assert_eq!(same.to_secret_data(), pki.to_secret_data());

        // A new endpoint host: only the certificates that name endpoint
        // hosts are reissued; a new member gets its two; a removed one
        // loses them.
        let mut changed = inputs();
        changed.endpoint_hosts.push("api2.team-a.example".into());
        changed.etcd_members.remove(1);
        changed.etcd_members.push(EtcdMemberHosts { name: "etcd-2".into(), hosts: vec![] });
        let (next, mut renewed) = pki.renew_leaves(&changed, now, month).unwrap();
        renewed.sort();
        assert_eq!(
            renewed,
            [
                leaves::APISERVER,
                leaves::CONTROLLER_MANAGER_SERVING,
                "etcd-member-etcd-2-peer",
                "etcd-member-etcd-2-server",
                leaves::SCHEDULER_SERVING
            ]
        );
        assert!(next.leaf(&leaves::etcd_peer("etcd-1")).is_none());
        assert_eq!(next.leaf(leaves::ADMIN), pki.leaf(leaves::ADMIN));
        assert_eq!(next.kubeconfigs, pki.kubeconfigs);
        assert_eq!(next.ca.pem, pki.ca.pem);

        // A client certificate whose groups differ from what is asked for
        // now (the controller-manager's, issued before it joined
        // system:masters) is reissued; only that one.
        let mut old_groups = pki.clone();
        let without =
            pki.ca.issue_at(&LeafSpec::client(identities::CONTROLLER_MANAGER_USER, &[]), now).unwrap();
        old_groups.leaves.insert(leaves::CONTROLLER_MANAGER.to_string(), without);
        let (fixed, renewed) = old_groups.renew_leaves(&inputs(), now, month).unwrap();
        assert_eq!(renewed, [leaves::CONTROLLER_MANAGER]);
        let facts = flotilla_core::pki::inspect_certificate(
            &fixed.leaf(leaves::CONTROLLER_MANAGER).unwrap().cert_pem,
        )
        .unwrap();
        assert_eq!(facts.organizations, [identities::ADMIN_GROUP]);

        // Eleven months on, every leaf is within a month of expiry.
        let later = now + Duration::days(340);
        let (renewed_pki, renewed) = pki.renew_leaves(&inputs(), later, month).unwrap();
        assert_eq!(renewed.len(), pki.leaves.len());
        assert_ne!(renewed_pki.kubeconfigs, pki.kubeconfigs);
        assert_eq!(renewed_pki.ca.pem, pki.ca.pem);
        for leaf in renewed_pki.leaves.values() {
            assert!(!leaf_needs_renewal(&leaf.cert_pem, later, month));
        }
    }

    #[test]
    fn ca_rotation_replaces_every_derived_certificate() {
        let pki = ControlPlanePki::generate("team-a", &inputs()).unwrap();
        let rotated = pki.rotate_ca(&inputs(), OffsetDateTime::now_utc()).unwrap();
        assert_ne!(rotated.ca.pem, pki.ca.pem);
        assert_ne!(rotated.front_proxy_ca.pem, pki.front_proxy_ca.pem);
        assert_ne!(rotated.etcd_ca.pem, pki.etcd_ca.pem);
        assert_eq!(rotated.service_account.private_pem, pki.service_account.private_pem);
        assert_eq!(rotated.leaves.keys().collect::<Vec<_>>(), pki.leaves.keys().collect::<Vec<_>>());
        for (name, leaf) in &rotated.leaves {
            assert_ne!(leaf.cert_pem, pki.leaves[name].cert_pem, "{name}");
            let old_cas = [&pki.ca, &pki.front_proxy_ca, &pki.etcd_ca];
            for ca in old_cas {
                assert!(!examine(&leaf.cert_pem, &ca.pem.cert_pem).2, "{name} still signed by an old CA");
            }
        }
        for (key, yaml) in &rotated.kubeconfigs {
            assert_ne!(yaml, &pki.kubeconfigs[key]);
            assert_eq!(kubeconfig_identity(yaml).2, rotated.ca.pem.cert_pem, "{key}");
        }
    }

    #[test]
    fn secret_data_round_trips() {
        let pki = ControlPlanePki::generate("team-a", &inputs()).unwrap();
        let data = pki.to_secret_data();
        for key in [
            keys::CA_CRT,
            keys::SA_PUB,
            keys::ADMIN_KUBECONFIG,
            "apiserver.crt",
            "etcd-member-etcd-0-peer.key",
        ] {
            assert!(data.contains_key(key), "{key}");
        }
        // Secret keys must match [-._a-zA-Z0-9]+.
        for key in data.keys() {
            assert!(key.chars().all(|c| c.is_ascii_alphanumeric() || "-._".contains(c)), "{key}");
        }
        let back = ControlPlanePki::from_secret_data("team-a", &data).unwrap();
        assert_eq!(back.to_secret_data(), data);
        assert_eq!(back.leaves.len(), pki.leaves.len());

        let mut broken = data.clone();
        broken.remove("apiserver.key");
        assert!(
            matches!(ControlPlanePki::from_secret_data("team-a", &broken), Err(KokPkiError::Missing(k)) if k == "apiserver.key")
        );
        let mut broken = data;
        broken.insert(keys::CA_KEY.into(), vec![0xff, 0xfe]);
        assert!(matches!(ControlPlanePki::from_secret_data("team-a", &broken), Err(KokPkiError::NotText(_))));
    }

    #[test]
    fn expiries_list_cas_and_leaves() {
        let now = OffsetDateTime::now_utc();
        let pki = ControlPlanePki::generate_at("team-a", &inputs(), now).unwrap();
        let expiries = pki.expiries().unwrap();
        assert_eq!(expiries.len(), 3 + pki.leaves.len());
        assert_eq!(expiries[0].name, "ca");
        assert!((expiries[0].not_after - (now + DEFAULT_CA_VALIDITY)).abs() < Duration::seconds(2));
        let apiserver = expiries.iter().find(|e| e.name == leaves::APISERVER).unwrap();
        assert!((apiserver.not_after - (now + LEAF_VALIDITY)).abs() < Duration::seconds(2));
    }

    #[test]
    fn bad_member_names_are_refused() {
        let mut bad = inputs();
        bad.etcd_members[0].name = "Etcd_0".into();
        assert!(matches!(ControlPlanePki::generate("x", &bad), Err(KokPkiError::InvalidMemberName(_))));
    }
}
