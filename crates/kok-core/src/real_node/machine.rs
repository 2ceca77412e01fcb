//! A real node declared on a Machine (`spec.realNodes[]`), rendered for the
//! machine that runs it: its [`NodeRuntime`] and four ordinary Machine
//! components the node agent supervises like any other:
//!
//! - `<node>-holder` owns the node's mount namespace (inside its network
//!   namespace) and writes its pid and a ready file;
//! - `<node>-containerd`, `<node>-kubelet`, `<node>-kube-proxy` wait for the
//!   holder and run inside its namespaces (`nsenter --target`), the kubelet
//!   once containerd answers and the images are imported.
//!
//! Every component first moves itself into the node's `system` cgroup, so
//! whatever the node runs (shims and pods included) is in the node's cgroup
//! subtree and removing the node is killing that subtree. The repair rule
//! (a node NotReady for longer than its threshold gets its kubelet and
//! containerd restarted) is here too: the agent counts repairs into the
//! components' environment, so a repair is an ordinary spec change.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use flotilla_api::machine::{
    ComponentFile, ComponentSpec, ExecCheck, HealthCheck, KeyRef, RealNodeSpec, RepairPolicy, RestartPolicy,
    TcpCheck,
};
use k8s_openapi::jiff::Timestamp;

use super::address::{GroupAddresses, NodeAddresses};
use super::render::{holder_args, NodeRuntime, KUBELET_PORT, KUBE_PROXY_HEALTH_PORT};
use super::{RealNodeError, SANDBOX_IMAGE};

/// PATH of every node process.
pub const NODE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The cluster DNS address when the spec names none (localkube's).
pub const DEFAULT_CLUSTER_DNS: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 10);
pub const CLUSTER_DOMAIN: &str = "cluster.local";
pub const DEFAULT_MAX_PODS: u32 = 30;
/// The environment variable carrying a node's repair count: raising it
/// changes the kubelet's and containerd's spec hash, so the agent restarts
/// them through its ordinary plan.
pub const REPAIR_ENV: &str = "FLOTILLA_REPAIR";

/// The host programs and places a machine's real nodes use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineFacts {
    /// The group's directory; node `i` lives in `n<i>` below it.
    pub group_dir: PathBuf,
    /// The cgroup hierarchies mounted on the host.
    pub hierarchies: Vec<PathBuf>,
    pub nsenter: PathBuf,
    pub containerd: PathBuf,
    pub ctr: PathBuf,
    pub cni_bin_dir: PathBuf,
}

/// The components of node `node`, in start order.
pub fn component_names(node: &str) -> [String; 4] {
    ["holder", "containerd", "kubelet", "kube-proxy"].map(|c| format!("{node}-{c}"))
}

/// The components a repair restarts.
pub fn repaired_components(node: &str) -> [String; 2] {
    [format!("{node}-containerd"), format!("{node}-kubelet")]
}

/// What node `spec` is on this machine.
pub fn runtime(
    spec: &RealNodeSpec,
    group: &GroupAddresses,
    addresses: &NodeAddresses,
    facts: &MachineFacts,
) -> Result<NodeRuntime, RealNodeError> {
    let cluster_dns = match &spec.cluster_dns {
        Some(text) => text.parse().map_err(|_| {
            RealNodeError::BadPath(format!(
                "clusterDns {text:?} of real node {} is not an IPv4 address",
                spec.name
            ))
        })?,
        None => DEFAULT_CLUSTER_DNS,
    };
    let runtime = NodeRuntime {
        node_name: spec.name.clone(),
        node_ip: addresses.ip,
        pod_cidr: addresses.pod_cidr,
        cluster_cidr: group.cluster_cidr(),
        dir: facts.group_dir.join(format!("n{}", addresses.index)),
        cgroup: addresses.cgroup.clone(),
        cluster_dns,
        cluster_domain: CLUSTER_DOMAIN.into(),
        cni_bin_dir: facts.cni_bin_dir.clone(),
        sandbox_image: SANDBOX_IMAGE.into(),
        max_pods: spec.max_pods.unwrap_or(DEFAULT_MAX_PODS),
        labels: spec.labels.iter().map(|(k, v)| format!("{k}={v}")).collect(),
    };
    runtime.validate()?;
    Ok(runtime)
}

/// The node's four components (see the module docs); `repairs` goes into
/// the environment of the components a repair restarts.
pub fn components(
    spec: &RealNodeSpec,
    runtime: &NodeRuntime,
    addresses: &NodeAddresses,
    facts: &MachineFacts,
    repairs: u32,
) -> Vec<ComponentSpec> {
    let paths = runtime.paths();
    let names = component_names(&spec.name);
    let pid_file = runtime.dir.join("holder.pid");
    let q = |p: &Path| shell_quote(&p.display().to_string());
    let join_cgroup = {
        let dirs: Vec<String> = facts
            .hierarchies
            .iter()
            .map(|h| shell_quote(&h.join(&addresses.cgroup).join("system").display().to_string()))
            .collect();
        format!("set -e\nfor d in {}; do echo $$ > \"$d/cgroup.procs\"; done\n", dirs.join(" "))
    };
    // The holder's pid is the shell's inside the new mount namespace: the
    // one `nsenter --target` must name (`unshare` itself stays outside).
    let wait_holder = format!(
        "while [ ! -e {ready} ]; do sleep 0.2; done\nholder=$(cat {pid})\n",
        ready = q(&paths.holder_ready),
        pid = q(&pid_file),
    );
    let inside = |program: &Path, args: &[String]| {
        let words: Vec<String> = std::iter::once(program.display().to_string())
            .chain(args.iter().cloned())
            .map(|w| shell_quote(&w))
            .collect();
        format!("exec {} --target=\"$holder\" --mount --net -- {}\n", q(&facts.nsenter), words.join(" "))
    };
    let env: BTreeMap<String, String> = [("PATH".to_string(), NODE_PATH.to_string())].into();
    let repaired_env = {
        let mut env = env.clone();
        env.insert(REPAIR_ENV.into(), repairs.to_string());
        env
    };
    let content = |path: &Path, text: String, mode: u32| ComponentFile {
        path: path.display().to_string(),
        content: Some(text),
        mode: Some(mode),
        ..Default::default()
    };
    let secret = |path: &Path, r: &KeyRef, mode: u32| ComponentFile {
        path: path.display().to_string(),
        secret_ref: Some(r.clone()),
        mode: Some(mode),
        ..Default::default()
    };
    let shell = |name: &str, script: String, env: &BTreeMap<String, String>| ComponentSpec {
        name: name.to_string(),
        binary: "/bin/sh".into(),
        args: vec!["-c".into(), script],
        env: env.clone(),
        restart_policy: RestartPolicy::Always,
        ..Default::default()
    };
    let socket = paths.containerd_socket.display().to_string();
    let ctr_version = format!("{} --address {} version", q(&facts.ctr), shell_quote(&socket));

    let holder_script = format!("echo $$ > {}\n{}", q(&pid_file), runtime.holder_script());
    let holder_words: Vec<String> =
        holder_args(&addresses.netns, &holder_script).iter().map(|w| shell_quote(w)).collect();
    let mut holder = shell(
        &names[0],
        format!(
            "{join_cgroup}rm -f {ready} {pid}\nmkdir -p {dirs}\nexec {nsenter} {args}\n",
            ready = q(&paths.holder_ready),
            dirs = runtime.directories().iter().map(|d| q(d)).collect::<Vec<_>>().join(" "),
            pid = q(&pid_file),
            nsenter = q(&facts.nsenter),
            args = holder_words.join(" "),
        ),
        &env,
    );
    holder.health =
        Some(exec_check(vec!["test".into(), "-e".into(), paths.holder_ready.display().to_string()]));

    let mut containerd = shell(
        &names[1],
        format!("{join_cgroup}{wait_holder}{}", inside(&facts.containerd, &runtime.containerd_args())),
        &repaired_env,
    );
    containerd.files = vec![
        content(&paths.containerd_config, runtime.containerd_config(), 0o600),
        content(&paths.cni_conf_dir.join(runtime.cni_conflist_name()), runtime.cni_conflist(), 0o644),
    ];
    containerd.health = Some(exec_check(vec![
        facts.ctr.display().to_string(),
        "--address".into(),
        socket.clone(),
        "version".into(),
    ]));

    let import = format!(
        "for f in {images}/*.tar; do {ctr} --address {socket} --namespace k8s.io images import \"$f\" >/dev/null; done\n",
        images = shell_quote(&spec.images_dir),
        ctr = q(&facts.ctr),
        socket = shell_quote(&socket),
    );
    let mut kubelet = shell(
        &names[2],
        format!(
            "{join_cgroup}{wait_holder}until {ctr_version} >/dev/null 2>&1; do sleep 0.2; done\n{import}{}",
            inside(&Path::new(&spec.bin_dir).join("kubelet"), &runtime.kubelet_args()),
        ),
        &repaired_env,
    );
    kubelet.files = vec![
        content(&paths.kubelet_config, runtime.kubelet_config(), 0o600),
        secret(&paths.client_ca, &spec.ca_ref, 0o644),
        secret(&paths.kubelet_kubeconfig, &spec.kubelet_kubeconfig_ref, 0o600),
    ];
    kubelet.health = Some(tcp_check(addresses.ip, KUBELET_PORT));

    let mut proxy = shell(
        &names[3],
        format!(
            "{join_cgroup}{wait_holder}{}",
            inside(&Path::new(&spec.bin_dir).join("kube-proxy"), &runtime.kube_proxy_args())
        ),
        &env,
    );
    proxy.files = vec![
        content(&paths.kube_proxy_config, runtime.kube_proxy_config(), 0o600),
        secret(&paths.kube_proxy_kubeconfig, &spec.kube_proxy_kubeconfig_ref, 0o600),
    ];
    proxy.health = Some(tcp_check(addresses.ip, KUBE_PROXY_HEALTH_PORT));

    vec![holder, containerd, kubelet, proxy]
}

fn exec_check(command: Vec<String>) -> HealthCheck {
    HealthCheck { exec: Some(ExecCheck { command }), period_seconds: Some(2), ..Default::default() }
}

fn tcp_check(ip: Ipv4Addr, port: u16) -> HealthCheck {
    HealthCheck {
        tcp: Some(TcpCheck { host: Some(ip.to_string()), port }),
        period_seconds: Some(2),
        ..Default::default()
    }
}

/// A POSIX shell single-quoted word.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Since when the node has been NotReady, given what was known before and
/// what is seen now (`None`: unknown, e.g. the API server did not answer,
/// which neither starts nor ends an episode).
pub fn not_ready_since(
    previous: Option<Timestamp>,
    ready: Option<bool>,
    now: Timestamp,
) -> Option<Timestamp> {
    match ready {
        Some(true) => None,
        Some(false) => Some(previous.unwrap_or(now)),
        None => previous,
    }
}

/// Whether to repair the node now, and why: NotReady for at least the
/// policy's threshold, and no repair within the last threshold (a repair
/// needs that long to show its effect).
pub fn repair_reason(
    policy: RepairPolicy,
    not_ready_since: Option<Timestamp>,
    last_repair: Option<Timestamp>,
    now: Timestamp,
) -> Option<String> {
    let threshold = i64::from(policy.not_ready_seconds);
    let since = not_ready_since?;
    let not_ready_for = (now.as_second() - since.as_second()).max(0);
    if not_ready_for < threshold {
        return None;
    }
    if last_repair.is_some_and(|at| now.as_second() - at.as_second() < threshold) {
        return None;
    }
    Some(format!(
        "the node was NotReady for {not_ready_for}s (threshold {threshold}s): restarted its kubelet and containerd"
    ))
}

/// Why an exit of one of the node's components counts as a repair.
pub fn exit_repair_reason(component: &str, code: Option<i32>) -> String {
    match code {
        Some(code) => format!("{component} exited with code {code}: started again"),
        None => format!("{component} exited: started again"),
    }
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
