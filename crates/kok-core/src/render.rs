//! Command lines of a hosted control plane's processes (process runtime):
//! etcd, kube-apiserver, kube-controller-manager and kube-scheduler.
//!
//! The flags are those `flotilla-localkube` starts its clusters with (known
//! to work with our Kubernetes 1.36/1.37 and etcd 3.6/3.7 binaries), plus TLS for
//! etcd, the front proxy and the kubelet client. Certificate paths are
//! `pki_dir/<Secret key>` (see `crate::pki::keys`), so a node agent that
//! writes the control plane's Secret data as files into one directory can
//! run these command lines unchanged.

use std::path::{Path, PathBuf};

use flotilla_api::kok::{ExtraArgs, HostedClusterSpec};

use crate::pki::{keys, leaves};

/// The controllers a hosted cluster runs: all defaults plus the ones that
/// make bootstrap-token node joins work.
pub const DEFAULT_CONTROLLERS: &str = "*,bootstrapsigner,tokencleaner";

/// Where one control-plane instance finds its files and what it listens on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlPlaneLayout {
    /// Cluster name (`--cluster-name` of the controller-manager).
    pub name: String,
    /// Directory holding the control plane's Secret data, one file per key.
    pub pki_dir: PathBuf,
    /// Address the components listen on (e.g. `127.0.0.1` or `0.0.0.0`).
    pub bind_address: String,
    /// The apiserver's address as published in the `kubernetes` Endpoints.
    pub advertise_address: String,
    pub apiserver_port: u16,
    pub controller_manager_port: u16,
    pub scheduler_port: u16,
    pub service_cidr: String,
    /// Node CIDRs are allocated from it when set.
    pub pod_cidr: Option<String>,
    pub cluster_domain: String,
    /// Client URLs (`https://…`) of the etcd members.
    pub etcd_servers: Vec<String>,
    /// The cluster's key prefix in etcd (`/registry` when dedicated).
    pub etcd_prefix: String,
    /// On when more than one instance of each component runs.
    pub leader_elect: bool,
    /// `--controllers` of the controller-manager.
    pub controllers: String,
    pub extra_args: ExtraArgs,
}

/// The ports of one control-plane instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ComponentPorts {
    pub apiserver: u16,
    pub controller_manager: u16,
    pub scheduler: u16,
}

impl Default for ComponentPorts {
    /// The upstream defaults.
    fn default() -> Self {
        Self { apiserver: 6443, controller_manager: 10257, scheduler: 10259 }
    }
}

impl ControlPlaneLayout {
    /// One instance of `spec`'s control plane on a machine reached at
    /// `address` (components bind there), reading its files from `pki_dir`.
    /// `None` when `spec.etcd` names neither or both of its forms.
    pub fn for_hosted_cluster(
        name: &str,
        spec: &HostedClusterSpec,
        pki_dir: PathBuf,
        address: &str,
        ports: ComponentPorts,
        etcd_servers: Vec<String>,
    ) -> Option<Self> {
        let (_, prefix) = spec.etcd.resolve()?;
        Some(Self {
            name: name.to_string(),
            pki_dir,
            bind_address: address.to_string(),
            advertise_address: address.to_string(),
            apiserver_port: ports.apiserver,
            controller_manager_port: ports.controller_manager,
            scheduler_port: ports.scheduler,
            service_cidr: spec.network.service_cidr.clone(),
            pod_cidr: spec.network.pod_cidr.clone(),
            cluster_domain: spec.network.cluster_domain.clone(),
            etcd_servers,
            etcd_prefix: prefix.to_string(),
            // Several instances must not all run controllers at once.
            leader_elect: spec.control_plane.replicas > 1,
            controllers: DEFAULT_CONTROLLERS.to_string(),
            extra_args: spec.control_plane.extra_args.clone(),
        })
    }

    fn file(&self, key: &str) -> String {
        self.pki_dir.join(key).display().to_string()
    }

    fn crt(&self, leaf: &str) -> String {
        self.file(&keys::crt(leaf))
    }

    fn key(&self, leaf: &str) -> String {
        self.file(&keys::key(leaf))
    }

    /// The service-account issuer, also the tokens' audience.
    pub fn service_account_issuer(&self) -> String {
        format!("https://kubernetes.default.svc.{}", self.cluster_domain.trim_matches('.'))
    }
}

/// Appends `extra` to `base`, dropping every base flag that `extra` sets
/// again (a user's flag wins over ours; both given would make the last one
/// win for some flags and repeat list-valued ones for others).
pub fn merge_args(base: Vec<String>, extra: &[String]) -> Vec<String> {
    fn flag_name(arg: &str) -> &str {
        arg.split_once('=').map_or(arg, |(name, _)| name)
    }
    let overridden: Vec<&str> = extra.iter().map(|a| flag_name(a)).collect();
    base.into_iter().filter(|a| !overridden.contains(&flag_name(a))).chain(extra.iter().cloned()).collect()
}

pub fn apiserver_args(l: &ControlPlaneLayout) -> Vec<String> {
    let issuer = l.service_account_issuer();
    let base = vec![
        format!("--etcd-servers={}", l.etcd_servers.join(",")),
        format!("--etcd-prefix={}", l.etcd_prefix),
        format!("--etcd-cafile={}", l.file(keys::ETCD_CA_CRT)),
        format!("--etcd-certfile={}", l.crt(leaves::APISERVER_ETCD_CLIENT)),
        format!("--etcd-keyfile={}", l.key(leaves::APISERVER_ETCD_CLIENT)),
        format!("--bind-address={}", l.bind_address),
        format!("--advertise-address={}", l.advertise_address),
        format!("--secure-port={}", l.apiserver_port),
        format!("--tls-cert-file={}", l.crt(leaves::APISERVER)),
        format!("--tls-private-key-file={}", l.key(leaves::APISERVER)),
        format!("--client-ca-file={}", l.file(keys::CA_CRT)),
        format!("--kubelet-client-certificate={}", l.crt(leaves::APISERVER_KUBELET_CLIENT)),
        format!("--kubelet-client-key={}", l.key(leaves::APISERVER_KUBELET_CLIENT)),
        // Real nodes register names nothing resolves; logs, exec and
        // port-forward reach the kubelet at the node's address.
        "--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname".into(),
        format!("--requestheader-client-ca-file={}", l.file(keys::FRONT_PROXY_CA_CRT)),
        format!("--requestheader-allowed-names={}", crate::pki::identities::FRONT_PROXY_CLIENT_USER),
        "--requestheader-username-headers=X-Remote-User".into(),
        "--requestheader-group-headers=X-Remote-Group".into(),
        "--requestheader-extra-headers-prefix=X-Remote-Extra-".into(),
        format!("--proxy-client-cert-file={}", l.crt(leaves::FRONT_PROXY_CLIENT)),
        format!("--proxy-client-key-file={}", l.key(leaves::FRONT_PROXY_CLIENT)),
        "--authorization-mode=Node,RBAC".into(),
        "--enable-bootstrap-token-auth=true".into(),
        "--enable-admission-plugins=NodeRestriction".into(),
        format!("--service-cluster-ip-range={}", l.service_cidr),
        format!("--service-account-key-file={}", l.file(keys::SA_PUB)),
        format!("--service-account-signing-key-file={}", l.file(keys::SA_KEY)),
        format!("--service-account-issuer={issuer}"),
        format!("--api-audiences={issuer}"),
        "--allow-privileged=true".into(),
        "--profiling=false".into(),
        "--v=1".into(),
    ];
    let base = base
        .into_iter()
        .chain(endpoint_reconciler_arg(&l.advertise_address))
        .chain(
            l.leader_elect.then(|| format!("--shutdown-delay-duration={APISERVER_SHUTDOWN_DELAY_SECONDS}s")),
        )
        .collect();
    merge_args(base, &l.extra_args.kube_apiserver)
}

/// When one of several kube-apiservers is stopped (an upgrade step), it
/// keeps serving this long after SIGTERM while its /readyz fails, so load
/// balancers and clients that check /readyz stop sending to it before it
/// closes its listener: no request is refused. Whoever stops it must allow
/// this plus the drain of in-flight requests (the node agent's stop grace,
/// 10 s by default).
pub const APISERVER_SHUTDOWN_DELAY_SECONDS: u32 = 3;

/// kube-apiserver refuses to advertise a loopback address while it keeps
/// the `kubernetes` Service's endpoints (the default reconciler); an
/// apiserver on loopback keeps none, as nothing can reach it through the
/// Service anyway.
fn endpoint_reconciler_arg(advertise_address: &str) -> Option<String> {
    let loopback = advertise_address
        .trim_matches(|c| c == '[' || c == ']')
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback());
    loopback.then(|| "--endpoint-reconciler-type=none".to_string())
}

pub fn controller_manager_args(l: &ControlPlaneLayout) -> Vec<String> {
    let kubeconfig = l.file(keys::CONTROLLER_MANAGER_KUBECONFIG);
    let mut base = vec![
        format!("--kubeconfig={kubeconfig}"),
        format!("--authentication-kubeconfig={kubeconfig}"),
        format!("--authorization-kubeconfig={kubeconfig}"),
        format!("--bind-address={}", l.bind_address),
        format!("--secure-port={}", l.controller_manager_port),
        format!("--tls-cert-file={}", l.crt(leaves::CONTROLLER_MANAGER_SERVING)),
        format!("--tls-private-key-file={}", l.key(leaves::CONTROLLER_MANAGER_SERVING)),
        format!("--client-ca-file={}", l.file(keys::CA_CRT)),
        format!("--requestheader-client-ca-file={}", l.file(keys::FRONT_PROXY_CA_CRT)),
        format!("--cluster-signing-cert-file={}", l.file(keys::CA_CRT)),
        format!("--cluster-signing-key-file={}", l.file(keys::CA_KEY)),
        format!("--service-account-private-key-file={}", l.file(keys::SA_KEY)),
        format!("--root-ca-file={}", l.file(keys::CA_CRT)),
        // Controllers share the controller-manager's own credential (in
        // system:masters, see `kok::pki`): with one service-account token
        // per controller they start one by one, each waiting for its token,
        // and the CSR signer came up seconds after the API.
        "--use-service-account-credentials=false".into(),
        format!("--controllers={}", l.controllers),
        format!("--leader-elect={}", l.leader_elect),
        format!("--cluster-name={}", l.name),
        format!("--service-cluster-ip-range={}", l.service_cidr),
        "--profiling=false".into(),
    ];
    if let Some(pod_cidr) = &l.pod_cidr {
        base.push(format!("--cluster-cidr={pod_cidr}"));
        base.push("--allocate-node-cidrs=true".into());
    }
    merge_args(base, &l.extra_args.kube_controller_manager)
}

pub fn scheduler_args(l: &ControlPlaneLayout) -> Vec<String> {
    let kubeconfig = l.file(keys::SCHEDULER_KUBECONFIG);
    let base = vec![
        format!("--kubeconfig={kubeconfig}"),
        format!("--authentication-kubeconfig={kubeconfig}"),
        format!("--authorization-kubeconfig={kubeconfig}"),
        format!("--bind-address={}", l.bind_address),
        format!("--secure-port={}", l.scheduler_port),
        format!("--tls-cert-file={}", l.crt(leaves::SCHEDULER_SERVING)),
        format!("--tls-private-key-file={}", l.key(leaves::SCHEDULER_SERVING)),
        format!("--client-ca-file={}", l.file(keys::CA_CRT)),
        format!("--leader-elect={}", l.leader_elect),
        "--profiling=false".into(),
    ];
    merge_args(base, &l.extra_args.kube_scheduler)
}

/// A process of a hosted control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Component {
    /// The etcd member of this name.
    Etcd(String),
    KubeApiserver,
    KubeControllerManager,
    KubeScheduler,
}

/// The Secret keys (= files in `pki_dir`) a component's command line needs,
/// and no more: a machine running only an etcd member never receives the
/// cluster CA key, and the apiserver never the CA keys at all.
pub fn component_secret_keys(component: &Component) -> Vec<String> {
    let pair = |leaf: &str| [keys::crt(leaf), keys::key(leaf)];
    let mut out: Vec<String> = Vec::new();
    match component {
        Component::Etcd(member) => {
            out.push(keys::ETCD_CA_CRT.into());
            out.extend(pair(&leaves::etcd_server(member)));
            out.extend(pair(&leaves::etcd_peer(member)));
        }
        Component::KubeApiserver => {
            out.extend(
                [keys::CA_CRT, keys::FRONT_PROXY_CA_CRT, keys::ETCD_CA_CRT, keys::SA_KEY, keys::SA_PUB]
                    .map(String::from),
            );
            for leaf in [
                leaves::APISERVER,
                leaves::APISERVER_ETCD_CLIENT,
                leaves::APISERVER_KUBELET_CLIENT,
                leaves::FRONT_PROXY_CLIENT,
            ] {
                out.extend(pair(leaf));
            }
        }
        Component::KubeControllerManager => {
            out.extend(
                [
                    keys::CA_CRT,
                    keys::CA_KEY,
                    keys::FRONT_PROXY_CA_CRT,
                    keys::SA_KEY,
                    keys::CONTROLLER_MANAGER_KUBECONFIG,
                ]
                .map(String::from),
            );
            out.extend(pair(leaves::CONTROLLER_MANAGER_SERVING));
        }
        Component::KubeScheduler => {
            out.extend([keys::CA_CRT, keys::SCHEDULER_KUBECONFIG].map(String::from));
            out.extend(pair(leaves::SCHEDULER_SERVING));
        }
    }
    out
}

/// SHA-256 (hex) of Secret or ConfigMap data, for a pod annotation or a
/// process spec: a component restarts when (and only when) its
/// certificates or configuration change.
pub fn data_checksum(data: &std::collections::BTreeMap<String, Vec<u8>>) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for (key, value) in data {
        // Length prefixes keep ("ab", "c") and ("a", "bc") apart.
        hasher.update((key.len() as u64).to_be_bytes());
        hasher.update(key.as_bytes());
        hasher.update((value.len() as u64).to_be_bytes());
        hasher.update(value);
    }
    hex::encode(hasher.finalize())
}

/// An etcd member as its peers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdPeer {
    /// Member name; also names its certificates (see `leaves::etcd_server`).
    pub name: String,
    /// `https://host:port` for peer traffic.
    pub peer_url: String,
    /// `https://host:port` for clients.
    pub client_url: String,
}

/// Whether a member starts a new cluster or joins a running one (after
/// `member add`, e.g. as a learner).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitialClusterState {
    New,
    Existing,
}

/// Where one etcd member keeps its data and finds its certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdMemberLayout {
    pub data_dir: PathBuf,
    /// Directory holding the Secret data (at least the etcd CA certificate
    /// and this member's server and peer certificates).
    pub pki_dir: PathBuf,
    /// URLs to listen on for clients; the advertised client URL when empty
    /// (set e.g. `https://0.0.0.0:2379` to accept on every address).
    pub listen_client_urls: Vec<String>,
    /// URLs to listen on for peers; the advertised peer URL when empty.
    pub listen_peer_urls: Vec<String>,
    /// Backend quota (etcd's default is 2 GiB).
    pub quota_backend_bytes: Option<u64>,
    /// Distinguishes this cluster's members from another's on the same
    /// network (`--initial-cluster-token`).
    pub cluster_token: String,
}

/// The command line of `member` in a cluster whose members (at start, for
/// `--initial-cluster`) are `peers` (`member` is added if absent).
pub fn etcd_args(
    member: &EtcdPeer,
    peers: &[EtcdPeer],
    layout: &EtcdMemberLayout,
    state: InitialClusterState,
) -> Vec<String> {
    let file = |key: &str| layout.pki_dir.join(key).display().to_string();
    let at = |dir: &Path| dir.display().to_string();
    let or_advertised = |urls: &[String], advertised: &str| {
        if urls.is_empty() {
            advertised.to_string()
        } else {
            urls.join(",")
        }
    };
    let mut initial: Vec<String> = peers.iter().map(|p| format!("{}={}", p.name, p.peer_url)).collect();
    if !peers.iter().any(|p| p.name == member.name) {
        initial.push(format!("{}={}", member.name, member.peer_url));
    }
    let server = leaves::etcd_server(&member.name);
    let peer = leaves::etcd_peer(&member.name);
    let mut args = vec![
        format!("--name={}", member.name),
        format!("--data-dir={}", at(&layout.data_dir)),
        format!("--listen-client-urls={}", or_advertised(&layout.listen_client_urls, &member.client_url)),
        format!("--advertise-client-urls={}", member.client_url),
        format!("--listen-peer-urls={}", or_advertised(&layout.listen_peer_urls, &member.peer_url)),
        format!("--initial-advertise-peer-urls={}", member.peer_url),
        format!("--initial-cluster={}", initial.join(",")),
        format!(
            "--initial-cluster-state={}",
            match state {
                InitialClusterState::New => "new",
                InitialClusterState::Existing => "existing",
            }
        ),
        format!("--initial-cluster-token={}", layout.cluster_token),
        format!("--cert-file={}", file(&keys::crt(&server))),
        format!("--key-file={}", file(&keys::key(&server))),
        "--client-cert-auth=true".into(),
        format!("--trusted-ca-file={}", file(keys::ETCD_CA_CRT)),
        format!("--peer-cert-file={}", file(&keys::crt(&peer))),
        format!("--peer-key-file={}", file(&keys::key(&peer))),
        "--peer-client-cert-auth=true".into(),
        format!("--peer-trusted-ca-file={}", file(keys::ETCD_CA_CRT)),
        "--snapshot-count=10000".into(),
        "--logger=zap".into(),
        "--log-level=warn".into(),
    ];
    if let Some(bytes) = layout.quota_backend_bytes {
        args.push(format!("--quota-backend-bytes={bytes}"));
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> ControlPlaneLayout {
        ControlPlaneLayout {
            name: "team-a".into(),
            pki_dir: "/srv/kok/team-a/pki".into(),
            bind_address: "0.0.0.0".into(),
            advertise_address: "192.0.2.10".into(),
            apiserver_port: 6443,
            controller_manager_port: 10257,
            scheduler_port: 10259,
            service_cidr: "10.96.0.0/12".into(),
            pod_cidr: None,
            cluster_domain: "cluster.local".into(),
            etcd_servers: vec!["https://192.0.2.21:2379".into(), "https://192.0.2.22:2379".into()],
            etcd_prefix: "/clusters/team-a".into(),
            leader_elect: true,
            controllers: DEFAULT_CONTROLLERS.into(),
            extra_args: ExtraArgs::default(),
        }
    }

    fn value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
        let prefix = format!("{flag}=");
        let found: Vec<&str> = args.iter().filter_map(|a| a.strip_prefix(&prefix)).collect();
        assert!(found.len() <= 1, "{flag} given {} times", found.len());
        found.first().copied()
    }

    #[test]
    fn apiserver_gets_etcd_tls_serving_client_ca_front_proxy_and_service_accounts() {
        let args = apiserver_args(&layout());
        let pki = "/srv/kok/team-a/pki";
        for (flag, want) in [
            ("--etcd-servers", "https://192.0.2.21:2379,https://192.0.2.22:2379".to_string()),
            ("--etcd-prefix", "/clusters/team-a".into()),
            ("--etcd-cafile", format!("{pki}/etcd-ca.crt")),
            ("--etcd-certfile", format!("{pki}/apiserver-etcd-client.crt")),
            ("--etcd-keyfile", format!("{pki}/apiserver-etcd-client.key")),
            ("--secure-port", "6443".into()),
            ("--advertise-address", "192.0.2.10".into()),
            ("--tls-cert-file", format!("{pki}/apiserver.crt")),
            ("--tls-private-key-file", format!("{pki}/apiserver.key")),
            ("--client-ca-file", format!("{pki}/ca.crt")),
            ("--kubelet-client-certificate", format!("{pki}/apiserver-kubelet-client.crt")),
            ("--requestheader-client-ca-file", format!("{pki}/front-proxy-ca.crt")),
            ("--requestheader-allowed-names", "front-proxy-client".into()),
            ("--proxy-client-cert-file", format!("{pki}/front-proxy-client.crt")),
            ("--service-cluster-ip-range", "10.96.0.0/12".into()),
            ("--service-account-key-file", format!("{pki}/sa.pub")),
            ("--service-account-signing-key-file", format!("{pki}/sa.key")),
            ("--service-account-issuer", "https://kubernetes.default.svc.cluster.local".into()),
            ("--authorization-mode", "Node,RBAC".into()),
            ("--enable-bootstrap-token-auth", "true".into()),
        ] {
            assert_eq!(value(&args, flag), Some(want.as_str()), "{flag}");
        }
    }

    #[test]
    fn only_one_of_several_apiservers_delays_its_shutdown_and_extra_args_win() {
        let mut l = layout();
        assert_eq!(value(&apiserver_args(&l), "--shutdown-delay-duration"), Some("3s"));
        l.extra_args.kube_apiserver = vec!["--shutdown-delay-duration=9s".into()];
        assert_eq!(value(&apiserver_args(&l), "--shutdown-delay-duration"), Some("9s"));
        l.extra_args.kube_apiserver.clear();
        l.leader_elect = false;
        assert_eq!(value(&apiserver_args(&l), "--shutdown-delay-duration"), None);
    }

    #[test]
    fn only_a_loopback_apiserver_turns_the_endpoint_reconciler_off() {
        for (address, want) in [
            ("127.0.0.1", Some("--endpoint-reconciler-type=none")),
            ("::1", Some("--endpoint-reconciler-type=none")),
            ("[::1]", Some("--endpoint-reconciler-type=none")),
            ("192.0.2.10", None),
            ("not-an-ip", None),
        ] {
            assert_eq!(endpoint_reconciler_arg(address).as_deref(), want, "{address}");
        }
    }

    #[test]
    fn controller_manager_signs_with_the_cluster_ca_and_allocates_pod_cidrs_when_asked() {
        let mut l = layout();
        let args = controller_manager_args(&l);
        let pki = "/srv/kok/team-a/pki";
        for (flag, want) in [
            ("--kubeconfig", format!("{pki}/controller-manager.kubeconfig")),
            ("--authentication-kubeconfig", format!("{pki}/controller-manager.kubeconfig")),
            ("--cluster-signing-cert-file", format!("{pki}/ca.crt")),
            ("--cluster-signing-key-file", format!("{pki}/ca.key")),
            ("--service-account-private-key-file", format!("{pki}/sa.key")),
            ("--root-ca-file", format!("{pki}/ca.crt")),
            ("--tls-cert-file", format!("{pki}/controller-manager-serving.crt")),
            ("--secure-port", "10257".into()),
            ("--controllers", "*,bootstrapsigner,tokencleaner".into()),
            ("--leader-elect", "true".into()),
            ("--cluster-name", "team-a".into()),
        ] {
            assert_eq!(value(&args, flag), Some(want.as_str()), "{flag}");
        }
        assert_eq!(value(&args, "--cluster-cidr"), None);
        l.pod_cidr = Some("10.244.0.0/16".into());
        let args = controller_manager_args(&l);
        assert_eq!(value(&args, "--cluster-cidr"), Some("10.244.0.0/16"));
        assert_eq!(value(&args, "--allocate-node-cidrs"), Some("true"));
    }

    #[test]
    fn scheduler_uses_its_own_kubeconfig_and_serving_certificate() {
        let mut l = layout();
        l.leader_elect = false;
        let args = scheduler_args(&l);
        assert_eq!(value(&args, "--kubeconfig"), Some("/srv/kok/team-a/pki/scheduler.kubeconfig"));
        assert_eq!(value(&args, "--tls-cert-file"), Some("/srv/kok/team-a/pki/scheduler-serving.crt"));
        assert_eq!(value(&args, "--secure-port"), Some("10259"));
        assert_eq!(value(&args, "--leader-elect"), Some("false"));
    }

    #[test]
    fn extra_args_replace_ours_and_add_new_ones() {
        let mut l = layout();
        l.extra_args.kube_apiserver = vec!["--v=4".into(), "--audit-log-path=-".into()];
        l.extra_args.kube_scheduler = vec!["--leader-elect=false".into()];
        let args = apiserver_args(&l);
        assert_eq!(value(&args, "--v"), Some("4"));
        assert_eq!(value(&args, "--audit-log-path"), Some("-"));
        assert_eq!(value(&scheduler_args(&l), "--leader-elect"), Some("false"));
        // Extras go to their own component only.
        assert_eq!(value(&controller_manager_args(&l), "--v"), None);
        assert_eq!(merge_args(vec!["--a=1".into(), "--b".into()], &["--b=2".into()]), ["--a=1", "--b=2"]);
    }

    /// Every file a command line names (under `pki_dir`) is in the
    /// component's key set, and the set holds nothing else.
    #[test]
    fn component_key_sets_are_exactly_the_files_their_args_name() {
        let l = layout();
        let etcd_layout = EtcdMemberLayout {
            data_dir: "/var/lib/etcd".into(),
            pki_dir: l.pki_dir.clone(),
            listen_client_urls: vec![],
            listen_peer_urls: vec![],
            quota_backend_bytes: None,
            cluster_token: "t".into(),
        };
        let peer = EtcdPeer {
            name: "etcd-0".into(),
            peer_url: "https://a:2380".into(),
            client_url: "https://a:2379".into(),
        };
        let prefix = format!("{}/", l.pki_dir.display());
        for (component, args) in [
            (Component::Etcd("etcd-0".into()), etcd_args(&peer, &[], &etcd_layout, InitialClusterState::New)),
            (Component::KubeApiserver, apiserver_args(&l)),
            (Component::KubeControllerManager, controller_manager_args(&l)),
            (Component::KubeScheduler, scheduler_args(&l)),
        ] {
            let mut named: Vec<String> = args
                .iter()
                .filter_map(|a| a.split_once('=').map(|(_, v)| v))
                .filter_map(|v| v.strip_prefix(&prefix))
                .map(String::from)
                .collect();
            named.sort();
            named.dedup();
            let mut keys = component_secret_keys(&component);
            keys.sort();
            assert_eq!(named, keys, "{component:?}");
        }
        assert!(!component_secret_keys(&Component::KubeApiserver).contains(&keys::CA_KEY.to_string()));
    }

    #[test]
    fn layout_follows_the_hosted_cluster_spec() {
        let spec: HostedClusterSpec = serde_json::from_value(serde_json::json!({
            "version": "1.36.2",
            "etcd": {"shared": {"clusterRef": "shared", "prefix": "/clusters/team-a"}},
            "controlPlane": {"replicas": 3, "extraArgs": {"kubeScheduler": ["--v=3"]}},
            "network": {"podCIDR": "10.244.0.0/16"}
        }))
        .unwrap();
        let l = ControlPlaneLayout::for_hosted_cluster(
            "team-a",
            &spec,
            "/pki".into(),
            "192.0.2.10",
            ComponentPorts::default(),
            vec!["https://192.0.2.21:2379".into()],
        )
        .unwrap();
        assert_eq!(l.etcd_prefix, "/clusters/team-a");
        assert!(l.leader_elect);
        assert_eq!(l.service_cidr, "10.96.0.0/12");
        assert_eq!(l.pod_cidr.as_deref(), Some("10.244.0.0/16"));
        assert_eq!(l.apiserver_port, 6443);
        assert_eq!(value(&scheduler_args(&l), "--v"), Some("3"));
        let mut no_etcd = spec;
        no_etcd.etcd = Default::default();
        let none = ControlPlaneLayout::for_hosted_cluster(
            "x",
            &no_etcd,
            "/p".into(),
            "a",
            ComponentPorts::default(),
            vec![],
        );
        assert!(none.is_none());
    }

    #[test]
    fn checksum_changes_with_any_key_or_value() {
        let data = |pairs: &[(&str, &str)]| {
            pairs.iter().map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())).collect()
        };
        let base = data_checksum(&data(&[("a", "1"), ("b", "2")]));
        assert_eq!(base, data_checksum(&data(&[("b", "2"), ("a", "1")])));
        assert_ne!(base, data_checksum(&data(&[("a", "1"), ("b", "3")])));
        assert_ne!(base, data_checksum(&data(&[("a", "1"), ("c", "2")])));
        assert_ne!(data_checksum(&data(&[("ab", "c")])), data_checksum(&data(&[("a", "bc")])));
        assert_eq!(base.len(), 64);
    }

    #[test]
    fn etcd_member_gets_peer_and_client_tls_and_the_initial_cluster() {
        let peers: Vec<EtcdPeer> = (0..3)
            .map(|i| EtcdPeer {
                name: format!("etcd-{i}"),
                peer_url: format!("https://192.0.2.2{i}:2380"),
                client_url: format!("https://192.0.2.2{i}:2379"),
            })
            .collect();
        let layout = EtcdMemberLayout {
            data_dir: "/var/lib/etcd".into(),
            pki_dir: "/srv/etcd/pki".into(),
            listen_client_urls: vec!["https://0.0.0.0:2379".into()],
            listen_peer_urls: vec![],
            quota_backend_bytes: Some(8 << 30),
            cluster_token: "kok-shared-etcd".into(),
        };
        let args = etcd_args(&peers[1], &peers, &layout, InitialClusterState::New);
        for (flag, want) in [
            ("--name", "etcd-1"),
            ("--data-dir", "/var/lib/etcd"),
            ("--listen-client-urls", "https://0.0.0.0:2379"),
            ("--advertise-client-urls", "https://192.0.2.21:2379"),
            ("--listen-peer-urls", "https://192.0.2.21:2380"),
            ("--initial-advertise-peer-urls", "https://192.0.2.21:2380"),
            (
                "--initial-cluster",
                "etcd-0=https://192.0.2.20:2380,etcd-1=https://192.0.2.21:2380,etcd-2=https://192.0.2.22:2380",
            ),
            ("--initial-cluster-state", "new"),
            ("--initial-cluster-token", "kok-shared-etcd"),
            ("--cert-file", "/srv/etcd/pki/etcd-member-etcd-1-server.crt"),
            ("--key-file", "/srv/etcd/pki/etcd-member-etcd-1-server.key"),
            ("--client-cert-auth", "true"),
            ("--trusted-ca-file", "/srv/etcd/pki/etcd-ca.crt"),
            ("--peer-cert-file", "/srv/etcd/pki/etcd-member-etcd-1-peer.crt"),
            ("--peer-client-cert-auth", "true"),
            ("--peer-trusted-ca-file", "/srv/etcd/pki/etcd-ca.crt"),
            ("--quota-backend-bytes", "8589934592"),
        ] {
            assert_eq!(value(&args, flag), Some(want), "{flag}");
        }
        // A learner joining a running cluster lists itself too.
        let joining = EtcdPeer {
            name: "etcd-3".into(),
            peer_url: "https://192.0.2.23:2380".into(),
            client_url: "https://192.0.2.23:2379".into(),
        };
        let args = etcd_args(&joining, &peers, &layout, InitialClusterState::Existing);
        assert!(value(&args, "--initial-cluster").unwrap().ends_with(",etcd-3=https://192.0.2.23:2380"));
        assert_eq!(value(&args, "--initial-cluster-state"), Some("existing"));
    }
}
