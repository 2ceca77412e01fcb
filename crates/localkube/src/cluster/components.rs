//! The control plane's processes and files: the static PKI, component
//! kubeconfigs and serving certificates, and the command lines of
//! kube-apiserver, kube-controller-manager and kube-scheduler.

use std::path::{Path, PathBuf};

use flotilla_core::kubeconfig::{self, Credential, KubeconfigSpec};
use flotilla_core::pki::{self, CertificateAuthority, LeafSpec, Usage};

use super::config::{ClusterConfig, ControllerSet};
use crate::process::ProcessSpec;
use crate::{Binaries, Error, Result};

pub const SERVICE_CIDR: &str = "10.0.0.0/24";
pub const SERVICE_IP: &str = "10.0.0.1";

/// Paths of the cluster's PKI and kubeconfig files.
pub struct Files {
    pub ca_crt: PathBuf,
    pub ca_key: PathBuf,
    pub sa_key: PathBuf,
    pub sa_pub: PathBuf,
}

/// A short directory for hollow kubelets' root directories: TMPDIR if its
/// path is short enough for the unix socket inside, else /tmp.
pub fn node_scratch_dir() -> Result<tempfile::TempDir> {
    let tmp = std::env::temp_dir();
    let base = if tmp.as_os_str().len() <= 40 { tmp } else { PathBuf::from("/tmp") };
    tempfile::Builder::new().prefix("flk-").tempdir_in(&base).map_err(|e| Error::io(&base, e))
}

pub fn write(path: &Path, contents: &str) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    std::fs::write(path, contents).map_err(|e| Error::io(path, e))?;
    // Keys and credentials: owner only.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|e| Error::io(path, e))
}

pub fn write_static_pki(root: &Path, ca: &CertificateAuthority) -> Result<Files> {
    let pki_dir = root.join("pki");
    let files = Files {
        ca_crt: pki_dir.join("ca.crt"),
        ca_key: pki_dir.join("ca.key"),
        sa_key: pki_dir.join("sa.key"),
        sa_pub: pki_dir.join("sa.pub"),
    };
    write(&files.ca_crt, &ca.pem.cert_pem)?;
    write(&files.ca_key, &ca.pem.key_pem)?;
    let sa = pki::generate_key_pair()?;
    write(&files.sa_key, &sa.private_pem)?;
    write(&files.sa_pub, &sa.public_pem)?;
    Ok(files)
}

pub fn render_kubeconfig(
    name: &str,
    server: &str,
    ca: &CertificateAuthority,
    cert: pki::CertAndKey,
) -> String {
    kubeconfig::render(&KubeconfigSpec {
        name: name.to_string(),
        server: server.to_string(),
        ca_pem: ca.pem.cert_pem.clone(),
        credential: Credential::ClientCert { cert_pem: cert.cert_pem, key_pem: cert.key_pem },
    })
}

/// Writes a serving certificate for `name` on loopback and returns its paths.
pub fn serving_cert(
    root: &Path,
    ca: &CertificateAuthority,
    name: &str,
    extra_sans: &[&str],
) -> Result<(PathBuf, PathBuf)> {
    let mut sans: Vec<String> = vec!["127.0.0.1".into(), "localhost".into()];
    sans.extend(extra_sans.iter().map(|s| s.to_string()));
    let cert = ca.issue(&LeafSpec { usage: Usage::Server, ..LeafSpec::server(name, &sans) })?;
    let crt = root.join("pki").join(format!("{name}.crt"));
    let key = root.join("pki").join(format!("{name}.key"));
    write(&crt, &cert.cert_pem)?;
    write(&key, &cert.key_pem)?;
    Ok((crt, key))
}

/// A kubeconfig for a control-plane component, with its own client identity.
pub fn component_kubeconfig(root: &Path, ca: &CertificateAuthority, user: &str) -> Result<PathBuf> {
    let server = std::fs::read_to_string(root.join("server")).map_err(|e| Error::io(root, e))?;
    let cert = ca.issue(&LeafSpec::client(user, &[]))?;
    let path = root.join(format!("{}.kubeconfig", user.trim_start_matches("system:")));
    write(&path, &render_kubeconfig("cluster", server.trim(), ca, cert))?;
    Ok(path)
}

#[allow(clippy::too_many_arguments)]
pub fn apiserver_spec(
    binaries: &Binaries,
    root: &Path,
    config: &ClusterConfig,
    files: &Files,
    ca: &CertificateAuthority,
    port: u16,
    etcd_url: &str,
    etcd_prefix: &str,
) -> Result<ProcessSpec> {
    let serve_on = config.serve_on.map(|ip| ip.to_string());
    let mut sans = vec![
        SERVICE_IP,
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ];
    sans.extend(serve_on.as_deref());
    let (crt, key) = serving_cert(root, ca, "kube-apiserver", &sans)?;
    let bind = if serve_on.is_some() { "0.0.0.0" } else { "127.0.0.1" };
    // Real kubelets' pods reach the API through the `kubernetes` Service
    // at the address their nodes route to; otherwise nothing does, and the
    // Service's endpoints may not be loopback.
    let advertised = match (&serve_on, config.real_kubelets) {
        (Some(address), true) => vec![format!("--advertise-address={address}")],
        _ => vec!["--advertise-address=127.0.0.1".into(), "--endpoint-reconciler-type=none".into()],
    };
    // Components read the server address from here.
    write(&root.join("server"), &format!("https://127.0.0.1:{port}"))?;
    let mut spec = ProcessSpec::new(
        "kube-apiserver",
        binaries.path("kube-apiserver"),
        root.join("logs/kube-apiserver.log"),
    )
    .args([
        format!("--etcd-servers={etcd_url}"),
        format!("--etcd-prefix={etcd_prefix}"),
        format!("--bind-address={bind}"),
        format!("--secure-port={port}"),
        format!("--cert-dir={}", root.join("pki").display()),
        format!("--tls-cert-file={}", crt.display()),
        format!("--tls-private-key-file={}", key.display()),
        format!("--client-ca-file={}", files.ca_crt.display()),
        "--authorization-mode=Node,RBAC".into(),
        "--enable-bootstrap-token-auth=true".into(),
        "--enable-admission-plugins=NodeRestriction".into(),
        format!("--service-cluster-ip-range={SERVICE_CIDR}"),
        format!("--service-account-key-file={}", files.sa_pub.display()),
        format!("--service-account-signing-key-file={}", files.sa_key.display()),
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
        "--api-audiences=https://kubernetes.default.svc.cluster.local".into(),
        "--allow-privileged=true".into(),
        "--profiling=false".into(),
        "--v=1".into(),
    ]);
    spec.args.extend(advertised);
    if config.real_kubelets {
        // Real kubelets accept only clients of the cluster CA (logs, exec,
        // stats), and are found by their node IP, not by name.
        let cert = ca.issue(&LeafSpec::client("kube-apiserver-kubelet-client", &["system:masters"]))?;
        let client_crt = root.join("pki/apiserver-kubelet-client.crt");
        let client_key = root.join("pki/apiserver-kubelet-client.key");
        write(&client_crt, &cert.cert_pem)?;
        write(&client_key, &cert.key_pem)?;
        spec = spec.args([
            format!("--kubelet-client-certificate={}", client_crt.display()),
            format!("--kubelet-client-key={}", client_key.display()),
            "--kubelet-preferred-address-types=InternalIP,Hostname".into(),
        ]);
    }
    if config.aggregation {
        spec.args.extend(aggregation_args(root, &config.name)?);
    }
    spec.args.extend(config.extra_apiserver_args.iter().cloned());
    Ok(spec)
}

/// The aggregation layer's flags: a front-proxy CA of its own (a client
/// certificate of the cluster CA must not be able to assert identities) and
/// the apiserver's client certificate under it.
fn aggregation_args(root: &Path, cluster: &str) -> Result<Vec<String>> {
    let front_proxy = CertificateAuthority::generate(&format!("{cluster}-front-proxy-ca"))?;
    let client = front_proxy.issue(&LeafSpec::client("front-proxy-client", &[]))?;
    let ca_crt = root.join("pki/front-proxy-ca.crt");
    let client_crt = root.join("pki/front-proxy-client.crt");
    let client_key = root.join("pki/front-proxy-client.key");
    write(&ca_crt, &front_proxy.pem.cert_pem)?;
    write(&client_crt, &client.cert_pem)?;
    write(&client_key, &client.key_pem)?;
    Ok(vec![
        format!("--requestheader-client-ca-file={}", ca_crt.display()),
        "--requestheader-allowed-names=front-proxy-client".into(),
        "--requestheader-extra-headers-prefix=X-Remote-Extra-".into(),
        "--requestheader-group-headers=X-Remote-Group".into(),
        "--requestheader-username-headers=X-Remote-User".into(),
        format!("--proxy-client-cert-file={}", client_crt.display()),
        format!("--proxy-client-key-file={}", client_key.display()),
        "--enable-aggregator-routing=true".into(),
    ])
}

pub fn controller_manager_spec(
    binaries: &Binaries,
    root: &Path,
    config: &ClusterConfig,
    files: &Files,
    ca: &CertificateAuthority,
    controllers: ControllerSet,
    port: u16,
) -> Result<ProcessSpec> {
    let kubeconfig = component_kubeconfig(root, ca, "system:kube-controller-manager")?;
    let (crt, key) = serving_cert(root, ca, "kube-controller-manager", &[])?;
    let mut spec = ProcessSpec::new(
        "kube-controller-manager",
        binaries.path("kube-controller-manager"),
        root.join("logs/kube-controller-manager.log"),
    )
    .args(serving_component_args(&kubeconfig, port, &crt, &key))
    .args([
        format!("--cluster-signing-cert-file={}", files.ca_crt.display()),
        format!("--cluster-signing-key-file={}", files.ca_key.display()),
        format!("--service-account-private-key-file={}", files.sa_key.display()),
        format!("--root-ca-file={}", files.ca_crt.display()),
        "--use-service-account-credentials=true".into(),
        format!("--controllers={}", controllers.flag()),
        "--leader-elect=false".into(),
        format!("--cluster-name={}", config.name),
        format!("--service-cluster-ip-range={SERVICE_CIDR}"),
        "--profiling=false".into(),
    ]);
    if let Some(d) = config.csr_signing_duration {
        spec = spec.arg(format!("--cluster-signing-duration={}s", d.as_secs()));
    }
    Ok(spec)
}

/// What kube-controller-manager and kube-scheduler are both given: their
/// kubeconfig for every client, and a loopback-only TLS port of their own.
fn serving_component_args(kubeconfig: &Path, port: u16, crt: &Path, key: &Path) -> Vec<String> {
    vec![
        format!("--kubeconfig={}", kubeconfig.display()),
        format!("--authentication-kubeconfig={}", kubeconfig.display()),
        format!("--authorization-kubeconfig={}", kubeconfig.display()),
        "--bind-address=127.0.0.1".into(),
        format!("--secure-port={port}"),
        format!("--tls-cert-file={}", crt.display()),
        format!("--tls-private-key-file={}", key.display()),
    ]
}

pub fn scheduler_spec(
    binaries: &Binaries,
    root: &Path,
    ca: &CertificateAuthority,
    port: u16,
) -> Result<ProcessSpec> {
    let kubeconfig = component_kubeconfig(root, ca, "system:kube-scheduler")?;
    let (crt, key) = serving_cert(root, ca, "kube-scheduler", &[])?;
    Ok(ProcessSpec::new(
        "kube-scheduler",
        binaries.path("kube-scheduler"),
        root.join("logs/kube-scheduler.log"),
    )
    .args(serving_component_args(&kubeconfig, port, &crt, &key))
    .args(["--leader-elect=false", "--profiling=false"]))
}
