use super::*;
use crate::real_node::{GroupAddresses, SANDBOX_IMAGE};
use serde_json::Value;

fn node(dir: &str) -> NodeRuntime {
    let group = GroupAddresses::for_slot(7).unwrap();
    let addresses = group.node(1).unwrap();
    NodeRuntime {
        node_name: "rn-2".into(),
        node_ip: addresses.ip,
        pod_cidr: addresses.pod_cidr,
        cluster_cidr: group.cluster_cidr(),
        dir: PathBuf::from(dir),
        cgroup: addresses.cgroup,
        cluster_dns: Ipv4Addr::new(10, 0, 0, 10),
        cluster_domain: "cluster.local".into(),
        cni_bin_dir: PathBuf::from("/usr/lib/cni"),
        sandbox_image: SANDBOX_IMAGE.into(),
        max_pods: 30,
        labels: vec!["pool=a".into(), "zone=z1".into()],
    }
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

#[test]
fn the_node_directory_must_be_usable_from_inside_the_node() {
    let long = format!("/tmp/{}", "x".repeat(90));
    let cases: &[(&str, Option<&str>)] = &[
        ("/tmp/flt-abc/n1", None),
        ("relative/dir", Some("must be absolute")),
        ("/run/user/0/flt/n1", Some("under /run")),
        ("/var/log/flotilla", Some("under /var/log")),
        ("/var/lib/cni/x", Some("under /var/lib/cni")),
        ("/runner/n1", None),
        (&long, Some("too long")),
    ];
    for (dir, want) in cases {
        let got = node(dir).validate().err().map(|e| e.to_string());
        match (want, got) {
            (None, None) => {}
            (Some(w), Some(g)) => assert!(g.contains(w), "{dir}: {g}"),
            (w, g) => panic!("{dir}: want {w:?}, got {g:?}"),
        }
    }
}

#[test]
fn containerd_is_the_nodes_own_with_the_settings_this_host_needs() {
    let text = node("/tmp/n").containerd_config();
    for want in [
        "version = 2",
        r#"root = "/tmp/n/containerd/root""#,
        r#"state = "/tmp/n/containerd/state""#,
        r#"address = "/tmp/n/containerd.sock""#,
        r#"path = "/tmp/n/containerd/opt""#,
        r#"sandbox_image = "flotilla.local/pause:1""#,
        "restrict_oom_score_adj = true",
        r#"runtime_type = "io.containerd.runc.v2""#,
        r#"bin_dir = "/usr/lib/cni""#,
        r#"conf_dir = "/tmp/n/cni/net.d""#,
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    // Paths are TOML strings, whatever they hold.
    assert!(node(r#"/tmp/a"b\c"#).containerd_config().contains(r#"root = "/tmp/a\"b\\c/containerd/root""#));
}

#[test]
fn the_cni_network_bridges_the_nodes_pod_cidr_without_masquerade() {
    let conf = json(&node("/tmp/n").cni_conflist());
    let types: Vec<&str> =
        conf["plugins"].as_array().unwrap().iter().map(|p| p["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["bridge", "portmap", "loopback"]);
    let bridge = &conf["plugins"][0];
    assert_eq!(bridge["ipMasq"], false);
    assert_eq!(bridge["isGateway"], true);
    assert_eq!(bridge["ipam"]["type"], "host-local");
    assert_eq!(bridge["ipam"]["ranges"][0][0]["subnet"], "10.107.2.0/24");
    assert_eq!(bridge["ipam"]["dataDir"], "/tmp/n/cni/ipam");
    assert_eq!(conf["cniVersion"], "1.0.0");
}

#[test]
fn the_kubelet_config_carries_every_non_default_setting() {
    let conf = json(&node("/tmp/n").kubelet_config());
    let cases: &[(&str, Value)] = &[
        ("/kind", "KubeletConfiguration".into()),
        ("/failCgroupV1", false.into()),
        ("/cgroupDriver", "cgroupfs".into()),
        ("/cgroupRoot", "/flotilla-s7-n1".into()),
        ("/failSwapOn", false.into()),
        ("/makeIPTablesUtilChains", false.into()),
        (
            "/evictionHard",
            serde_json::json!({"memory.available": "100Mi", "nodefs.available": "0%", "nodefs.inodesFree": "0%",
                "imagefs.available": "0%", "imagefs.inodesFree": "0%"}),
        ),
        ("/address", "172.30.7.3".into()),
        ("/healthzPort", 0.into()),
        ("/readOnlyPort", 0.into()),
        ("/authentication/anonymous/enabled", false.into()),
        ("/authentication/x509/clientCAFile", "/tmp/n/ca.crt".into()),
        ("/authorization/mode", "AlwaysAllow".into()),
        ("/containerRuntimeEndpoint", "unix:///tmp/n/containerd.sock".into()),
        ("/podCIDR", "10.107.2.0/24".into()),
        ("/clusterDNS/0", "10.0.0.10".into()),
        ("/clusterDomain", "cluster.local".into()),
        ("/maxPods", 30.into()),
    ];
    for (pointer, want) in cases {
        assert_eq!(conf.pointer(pointer), Some(want), "{pointer}");
    }
    // Off, the kubelet's stats summary has no filesystem and fails.
    assert_eq!(conf.pointer("/localStorageCapacityIsolation"), None);
}

#[test]
fn kube_proxy_runs_iptables_and_leaves_host_conntrack_alone() {
    let conf = json(&node("/tmp/n").kube_proxy_config());
    let cases: &[(&str, Value)] = &[
        ("/kind", "KubeProxyConfiguration".into()),
        ("/mode", "iptables".into()),
        ("/hostnameOverride", "rn-2".into()),
        ("/clusterCIDR", "10.107.0.0/16".into()),
        ("/clientConnection/kubeconfig", "/tmp/n/kube-proxy.kubeconfig".into()),
        ("/healthzBindAddress", "172.30.7.3:10256".into()),
        ("/nodePortAddresses", serde_json::json!(["primary"])),
        ("/conntrack/maxPerCore", 0.into()),
        ("/conntrack/tcpEstablishedTimeout", "0s".into()),
        ("/conntrack/tcpCloseWaitTimeout", "0s".into()),
        ("/oomScoreAdj", 0.into()),
    ];
    for (pointer, want) in cases {
        assert_eq!(conf.pointer(pointer), Some(want), "{pointer}");
    }
}

#[test]
fn command_lines_name_the_nodes_files_and_identity() {
    let n = node("/tmp/n");
    assert_eq!(n.containerd_args(), ["--config", "/tmp/n/containerd.toml", "--log-level=warn"]);
    let kubelet = n.kubelet_args();
    for want in [
        "--config=/tmp/n/kubelet-config.yaml",
        "--kubeconfig=/tmp/n/kubelet.kubeconfig",
        "--root-dir=/tmp/n/kubelet",
        "--cert-dir=/tmp/n/kubelet-pki",
        "--hostname-override=rn-2",
        "--node-ip=172.30.7.3",
        "--node-labels=pool=a,zone=z1",
    ] {
        assert!(kubelet.iter().any(|a| a == want), "missing {want} in {kubelet:?}");
    }
    let unlabelled = NodeRuntime { labels: vec![], ..n.clone() };
    assert!(!unlabelled.kubelet_args().iter().any(|a| a.starts_with("--node-labels")));
    assert_eq!(n.kube_proxy_args()[0], "--config=/tmp/n/kube-proxy-config.yaml");

    let line = in_node(4242, Path::new("/usr/bin/containerd"), &n.containerd_args());
    assert_eq!(line[..5], ["--target=4242", "--mount", "--net", "--", "/usr/bin/containerd"]);
    assert_eq!(line[5..], n.containerd_args()[..]);
}

#[test]
fn the_holder_replaces_the_nodes_shared_directories_then_signals_ready() {
    let script = node("/tmp/it's").holder_script();
    let lines: Vec<&str> = script.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        lines,
        [
            "set -e",
            "mount -t tmpfs -o mode=0755 flotilla-node-run /run",
            "mkdir -p /run/netns",
            r"mount --bind '/tmp/it'\''s/var-log' /var/log",
            "mkdir -p /var/lib/cni",
            r"mount --bind '/tmp/it'\''s/cni/cache' /var/lib/cni",
            r"touch '/tmp/it'\''s/holder.ready'",
            "exec sleep infinity",
        ]
    );
    let args = holder_args("flt7n1", &script);
    assert_eq!(args[0], "--net=/run/netns/flt7n1");
    assert!(args.windows(3).any(|w| w == ["--mount", "--propagation", "private"]));
    assert!(args.contains(&"--kill-child".to_string()));
    assert_eq!(args.last().unwrap(), &script);
}

#[test]
fn every_path_lives_in_the_node_directory() {
    let n = node("/tmp/n");
    for dir in n.directories() {
        assert!(dir.starts_with("/tmp/n"), "{}", dir.display());
    }
    assert_eq!(n.directories().len(), 10);
}
