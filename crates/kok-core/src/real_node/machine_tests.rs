use super::*;

fn facts() -> MachineFacts {
    MachineFacts {
        group_dir: PathBuf::from("/tmp/flt-rn-agent"),
        hierarchies: vec![PathBuf::from("/sys/fs/cgroup/cpu"), PathBuf::from("/sys/fs/cgroup/memory")],
        nsenter: PathBuf::from("/usr/bin/nsenter"),
        containerd: PathBuf::from("/usr/bin/containerd"),
        ctr: PathBuf::from("/usr/bin/ctr"),
        cni_bin_dir: PathBuf::from("/usr/lib/cni"),
    }
}

fn key(name: &str) -> KeyRef {
    KeyRef { namespace: "kok-a".into(), name: name.into(), key: "value".into() }
}

fn spec() -> RealNodeSpec {
    RealNodeSpec {
        name: "a-1".into(),
        bin_dir: "/k8s/bin".into(),
        images_dir: "/images".into(),
        ca_ref: key("ca"),
        kubelet_kubeconfig_ref: key("kubelet"),
        kube_proxy_kubeconfig_ref: key("proxy"),
        labels: [("pool".to_string(), "p1".to_string())].into(),
        ..Default::default()
    }
}

fn rendered(spec: &RealNodeSpec, repairs: u32) -> (NodeRuntime, Vec<ComponentSpec>) {
    let group = GroupAddresses { slot: 7 };
    let addresses = group.node(1).unwrap();
    let runtime = runtime(spec, &group, &addresses, &facts()).unwrap();
    let components = components(spec, &runtime, &addresses, &facts(), repairs);
    (runtime, components)
}

#[test]
fn a_node_is_four_components_named_after_it_in_start_order() {
    let (_, components) = rendered(&spec(), 0);
    let names: Vec<&str> = components.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["a-1-holder", "a-1-containerd", "a-1-kubelet", "a-1-kube-proxy"]);
    assert_eq!(component_names("a-1").to_vec(), names);
    for c in &components {
        assert_eq!(c.binary, "/bin/sh");
        assert_eq!(c.restart_policy, RestartPolicy::Always);
        assert!(c.health.is_some(), "{}", c.name);
        let script = &c.args[1];
        // Every process joins the node's cgroups in every hierarchy first.
        for h in ["/sys/fs/cgroup/cpu", "/sys/fs/cgroup/memory"] {
            assert!(script.contains(&format!("'{h}/flotilla-s7-n1/system'")), "{}: {script}", c.name);
        }
    }
}

#[test]
fn the_runtime_uses_the_group_and_node_addresses() {
    let (runtime, _) = rendered(&spec(), 0);
    assert_eq!(runtime.node_ip, Ipv4Addr::new(172, 30, 7, 3));
    assert_eq!(runtime.dir, PathBuf::from("/tmp/flt-rn-agent/n1"));
    assert_eq!(runtime.cgroup, "flotilla-s7-n1");
    assert_eq!(runtime.cluster_dns, DEFAULT_CLUSTER_DNS);
    assert_eq!(runtime.max_pods, DEFAULT_MAX_PODS);
    assert_eq!(runtime.labels, ["pool=p1"]);
}

#[test]
fn bad_inputs_are_refused_with_the_reason() {
    let group = GroupAddresses { slot: 7 };
    let addresses = group.node(0).unwrap();
    let cases: Vec<(&str, RealNodeSpec, MachineFacts, &str)> = vec![
        ("dns", RealNodeSpec { cluster_dns: Some("ten".into()), ..spec() }, facts(), "not an IPv4 address"),
        ("dir under /run", spec(), MachineFacts { group_dir: "/run/x".into(), ..facts() }, "under /run"),
        ("relative dir", spec(), MachineFacts { group_dir: "rel".into(), ..facts() }, "absolute"),
        (
            "long dir",
            spec(),
            MachineFacts { group_dir: PathBuf::from(format!("/{}", "d".repeat(100))), ..facts() },
            "too long",
        ),
    ];
    for (case, spec, facts, want) in cases {
        let err = runtime(&spec, &group, &addresses, &facts).unwrap_err().to_string();
        assert!(err.contains(want), "{case}: {err}");
    }
}

#[test]
fn processes_run_inside_the_holder_and_wait_for_what_they_need() {
    let (runtime, components) = rendered(&spec(), 0);
    let p = runtime.paths();
    let script = |i: usize| components[i].args[1].clone();
    let holder = script(0);
    assert!(holder.contains("--net=/run/netns/flt7n1"), "{holder}");
    assert!(holder.contains("rm -f"), "stale ready/pid files go first: {holder}");
    assert!(holder.contains("holder.pid"), "{holder}");
    let mkdir = holder.find("mkdir -p").unwrap();
    assert!(mkdir < holder.find("exec").unwrap(), "the node's directories exist before its mounts: {holder}");
    for dir in runtime.directories() {
        assert!(holder.contains(&format!("'{}'", dir.display())), "{}: {holder}", dir.display());
    }
    for i in 1..4 {
        let s = script(i);
        assert!(s.contains(&format!("while [ ! -e '{}' ]", p.holder_ready.display())), "{s}");
        assert!(s.contains("--target=\"$holder\" --mount --net --"), "{s}");
    }
    let kubelet = script(2);
    assert!(kubelet.contains("'/k8s/bin/kubelet'"), "{kubelet}");
    let wait = kubelet.find("until '/usr/bin/ctr'").unwrap();
    let import = kubelet.find("images import").unwrap();
    let exec = kubelet.find("exec '/usr/bin/nsenter'").unwrap();
    assert!(
        wait < import && import < exec,
        "containerd answers, images imported, then the kubelet: {kubelet}"
    );
    assert!(script(3).contains("'/k8s/bin/kube-proxy'"));
}

#[test]
fn credentials_come_from_the_referenced_secrets_and_configs_are_rendered() {
    let (runtime, components) = rendered(&spec(), 0);
    let p = runtime.paths();
    let file = |c: usize, path: &Path| {
        components[c].files.iter().find(|f| f.path == path.display().to_string()).cloned().unwrap()
    };
    assert_eq!(file(2, &p.kubelet_kubeconfig).secret_ref, Some(key("kubelet")));
    assert_eq!(file(2, &p.client_ca).secret_ref, Some(key("ca")));
    assert_eq!(file(3, &p.kube_proxy_kubeconfig).secret_ref, Some(key("proxy")));
    assert_eq!(file(1, &p.containerd_config).content, Some(runtime.containerd_config()));
    assert_eq!(file(2, &p.kubelet_config).content, Some(runtime.kubelet_config()));
    assert!(components.iter().flat_map(|c| &c.files).all(|f| Path::new(&f.path).is_absolute()));
}

#[test]
fn a_repair_changes_only_the_kubelet_and_containerd() {
    let (_, before) = rendered(&spec(), 0);
    let (_, after) = rendered(&spec(), 1);
    let changed: Vec<&str> =
        before.iter().zip(&after).filter(|(b, a)| b != a).map(|(b, _)| b.name.as_str()).collect();
    assert_eq!(changed, repaired_components("a-1").iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(after[2].env.get(REPAIR_ENV).map(String::as_str), Some("1"));
}

fn at(s: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + s).unwrap()
}

#[test]
fn not_ready_episodes_start_at_the_first_not_ready_and_end_when_ready() {
    let cases = [
        ("ready", None, Some(true), None),
        ("ready ends an episode", Some(at(0)), Some(true), None),
        ("first NotReady", None, Some(false), Some(at(9))),
        ("still NotReady", Some(at(0)), Some(false), Some(at(0))),
        ("unknown keeps the episode", Some(at(0)), None, Some(at(0))),
        ("unknown starts nothing", None, None, None),
    ];
    for (case, previous, ready, want) in cases {
        assert_eq!(not_ready_since(previous, ready, at(9)), want, "{case}");
    }
}

#[test]
fn repairs_come_after_the_threshold_and_not_more_often() {
    let policy = RepairPolicy { not_ready_seconds: 30 };
    let cases = [
        ("ready", None, None, 100, false),
        ("not long enough", Some(at(80)), None, 100, false),
        ("just at the threshold", Some(at(70)), None, 100, true),
        ("long NotReady", Some(at(0)), None, 100, true),
        ("repaired recently", Some(at(0)), Some(at(80)), 100, false),
        ("repaired a threshold ago", Some(at(0)), Some(at(70)), 100, true),
    ];
    for (case, since, last, now, want) in cases {
        let reason = repair_reason(policy, since, last, at(now));
        assert_eq!(reason.is_some(), want, "{case}: {reason:?}");
        if let Some(r) = reason {
            assert!(r.contains("threshold 30s") && r.contains("kubelet and containerd"), "{r}");
        }
    }
    assert_eq!(
        exit_repair_reason("a-1-kubelet", Some(137)),
        "a-1-kubelet exited with code 137: started again"
    );
}

#[test]
fn the_extra_images_directory_changes_no_component() {
    let (_, before) = rendered(&spec(), 0);
    let with_dir = RealNodeSpec { extra_images_dir: Some("/images/clusters/ns.c".into()), ..spec() };
    let (_, after) = rendered(&with_dir, 0);
    assert_eq!(before, after, "the node agent imports them; no component is restarted");
}
