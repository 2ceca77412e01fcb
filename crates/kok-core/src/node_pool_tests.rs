use super::*;
use flotilla_api::node_pool::{NodeRepairSpec, NodeRolloutSpec};

const NOW: i64 = 10_000;

fn template(version: &str) -> Template {
    Template { version: version.into(), kubelet: KubeletSpec::default() }
}

fn old() -> Template {
    template("1.36.3")
}

fn new() -> Template {
    template("1.37.2")
}

fn spec(replicas: i32) -> NodePoolSpec {
    NodePoolSpec { cluster_ref: "c".into(), replicas, ..Default::default() }
}

fn machine(name: &str, alive: bool, real_nodes: usize) -> MachineView {
    MachineView { name: name.into(), alive, real_nodes }
}

/// A node of revision `t`, Ready on its version, on `m`.
fn node(n: u32, m: &str, t: &Template) -> ObservedNode {
    ObservedNode {
        name: node_name("c", "p", n),
        machine: m.into(),
        revision: t.revision(),
        machine_alive: true,
        node: Some(NodeView {
            ready: true,
            ready_since: Some(0),
            kubelet_version: format!("v{}", t.version),
            ..Default::default()
        }),
    }
}

fn with(mut n: ObservedNode, f: impl FnOnce(&mut NodeView)) -> ObservedNode {
    if let Some(v) = n.node.as_mut() {
        f(v);
    }
    n
}

fn cordoned(n: ObservedNode, at: i64, pods: u32) -> ObservedNode {
    with(n, |v| {
        v.cordoned_at = Some(at);
        v.unschedulable = true;
        v.pods_to_evict = pods;
    })
}

fn not_ready(n: ObservedNode, since: i64) -> ObservedNode {
    with(n, |v| {
        v.ready = false;
        v.ready_since = Some(since);
        v.not_ready_message = Some("container runtime is down".into());
    })
}

fn name(n: u32) -> String {
    node_name("c", "p", n)
}

struct Case {
    name: &'static str,
    spec: NodePoolSpec,
    target: Template,
    nodes: Vec<ObservedNode>,
    machines: Vec<MachineView>,
    budgets_healthy: bool,
    want: Vec<Action>,
}

fn two_machines() -> Vec<MachineView> {
    vec![machine("m1", true, 0), machine("m2", true, 0)]
}

#[test]
fn plan_table() {
    use Action::*;
    let create = |n: u32, m: &str| Create { name: name(n), machine: m.into() };
    let cases = vec![
        Case {
            name: "scale up from nothing spreads over the machines, fewest nodes first",
            spec: spec(3),
            target: new(),
            nodes: vec![],
            machines: vec![machine("m1", true, 0), machine("m2", true, 5)],
            budgets_healthy: true,
            want: vec![create(0, "m1"), create(1, "m2"), create(2, "m1")],
        },
        Case {
            name: "scale up skips machines that stopped reporting and full ones, and takes a free ordinal",
            spec: spec(2),
            target: new(),
            nodes: vec![node(1, "m3", &new())],
            machines: vec![
                machine("m1", false, 0),
                machine("m2", true, MAX_NODES_PER_MACHINE),
                machine("m3", true, 1),
            ],
            budgets_healthy: true,
            want: vec![create(0, "m3")],
        },
        Case {
            name: "scale down cordons the highest ordinal first",
            spec: spec(2),
            target: new(),
            nodes: vec![node(0, "m1", &new()), node(1, "m2", &new()), node(2, "m1", &new())],
            machines: two_machines(),
            budgets_healthy: true,
            want: vec![Cordon { name: name(2) }],
        },
        Case {
            name: "scale down prefers a node of an old revision and keeps the one already leaving",
            spec: spec(1),
            target: new(),
            nodes: vec![
                node(0, "m1", &old()),
                cordoned(node(1, "m1", &new()), 9_000, 2),
                node(2, "m2", &new()),
            ],
            machines: two_machines(),
            budgets_healthy: true,
            want: vec![Drain { name: name(1) }, Cordon { name: name(0) }],
        },
        Case {
            name: "a drained leaving node is removed",
            spec: spec(1),
            target: new(),
            nodes: vec![node(0, "m1", &new()), cordoned(node(1, "m2", &new()), 9_000, 0)],
            machines: two_machines(),
            budgets_healthy: true,
            want: vec![Remove { name: name(1), machine: "m2".into() }],
        },
        Case {
            name: "a new revision takes one node at a time, by name",
            spec: spec(3),
            target: new(),
            nodes: vec![node(0, "m1", &old()), node(1, "m2", &old()), node(2, "m1", &old())],
            machines: two_machines(),
            budgets_healthy: true,
            want: vec![Cordon { name: name(0) }],
        },
        Case {
            name: "maxUnavailable 2 takes two",
            spec: NodePoolSpec {
                rollout: NodeRolloutSpec { max_unavailable: 2, ..Default::default() },
                ..spec(3)
            },
            target: new(),
            nodes: vec![node(0, "m1", &old()), node(1, "m2", &old()), node(2, "m1", &old())],
            machines: two_machines(),
            budgets_healthy: true,
            want: vec![Cordon { name: name(0) }, Cordon { name: name(1) }],
        },
        Case {
            name: "a NotReady node of the old revision goes first and costs no budget",
            spec: spec(3),
            target: new(),
            nodes: vec![
                node(0, "m1", &old()),
                node(1, "m2", &old()),
                not_ready(node(2, "m1", &old()), 9_990),
            ],
            machines: two_machines(),
            budgets_healthy: true,
            want: vec![Cordon { name: name(2) }],
        },
        Case {
            name: "no node is taken while a PodDisruptionBudget is unhealthy",
            spec: spec(2),
            target: new(),
            nodes: vec![node(0, "m1", &old()), node(1, "m2", &old())],
            machines: two_machines(),
            budgets_healthy: false,
            want: vec![],
        },
        Case {
            name: "a cordoned node of the old revision is drained, then updated",
            spec: spec(2),
            target: new(),
            nodes: vec![cordoned(node(0, "m1", &old()), 9_990, 3), cordoned(node(1, "m2", &old()), 9_990, 0)],
            machines: two_machines(),
            budgets_healthy: true,
            want: vec![Drain { name: name(0) }, Update { name: name(1), machine: "m2".into() }],
        },
        Case {
            name: "an updated node not yet Ready holds the budget",
            spec: spec(2),
            target: new(),
            nodes: vec![cordoned(not_ready(node(0, "m1", &new()), 9_995), 9_990, 0), node(1, "m2", &old())],
            machines: two_machines(),
            budgets_healthy: true,
            want: vec![],
        },
        Case {
            name: "an updated node Ready on the version is uncordoned; the next waits for the budget",
            spec: spec(2),
            target: new(),
            nodes: vec![cordoned(node(0, "m1", &new()), 9_990, 0), node(1, "m2", &old())],
            machines: two_machines(),
            budgets_healthy: true,
            want: vec![Uncordon { name: name(0) }],
        },
        Case {
            name: "Ready but on the old kubelet version is not done",
            spec: spec(1),
            target: new(),
            nodes: vec![cordoned(
                with(node(0, "m1", &new()), |v| v.kubelet_version = "v1.36.3".into()),
                9_990,
                0,
            )],
            machines: two_machines(),
            budgets_healthy: true,
            want: vec![],
        },
        Case {
            name: "a node whose Machine stopped reporting is replaced on another",
            spec: spec(2),
            target: new(),
            nodes: vec![
                ObservedNode { machine_alive: false, ..node(0, "m1", &new()) },
                node(1, "m2", &new()),
            ],
            machines: vec![machine("m1", false, 1), machine("m2", true, 1), machine("m3", true, 3)],
            budgets_healthy: true,
            want: vec![Remove { name: name(0), machine: "m1".into() }, create(2, "m3")],
        },
        Case {
            name: "a node NotReady past the replacement threshold is replaced, preferring another machine",
            spec: spec(1),
            target: new(),
            nodes: vec![not_ready(node(0, "m1", &new()), NOW - 301)],
            machines: two_machines(),
            budgets_healthy: true,
            want: vec![Remove { name: name(0), machine: "m1".into() }, create(1, "m2")],
        },
        Case {
            name: "NotReady under the threshold, or with replacement off, is left to the node agent",
            spec: NodePoolSpec {
                repair: NodeRepairSpec { replace_after_seconds: 0, ..Default::default() },
                ..spec(2)
            },
            target: new(),
            nodes: vec![not_ready(node(0, "m1", &new()), NOW - 1_000), node(1, "m2", &new())],
            machines: two_machines(),
            budgets_healthy: true,
            want: vec![],
        },
        Case {
            name: "every node Ready on the target: nothing to do",
            spec: spec(2),
            target: new(),
            nodes: vec![node(0, "m1", &new()), node(1, "m2", &new())],
            machines: two_machines(),
            budgets_healthy: false,
            want: vec![],
        },
    ];
    for case in cases {
        let input = PoolInput {
            cluster: "c",
            pool: "p",
            spec: &case.spec,
            target: &case.target,
            nodes: &case.nodes,
            machines: &case.machines,
            budgets_healthy: case.budgets_healthy,
            now: NOW,
        };
        let got = plan(&input);
        assert_eq!(got.actions, case.want, "{}: {got:#?}", case.name);
        assert!(got.failure.is_none(), "{}: {:?}", case.name, got.failure);
    }
}

#[test]
fn a_node_not_ready_past_its_deadline_fails_the_rollout_with_the_reason() {
    let spec = spec(2);
    let nodes = [cordoned(not_ready(node(0, "m1", &new()), 9_000), NOW - 300, 0), node(1, "m2", &old())];
    let machines = two_machines();
    let input = PoolInput {
        cluster: "c",
        pool: "p",
        spec: &spec,
        target: &new(),
        nodes: &nodes,
        machines: &machines,
        budgets_healthy: true,
        now: NOW,
    };
    let got = plan(&input);
    let failure = got.failure.clone().unwrap();
    assert_eq!(failure.node, name(0));
    assert!(
        failure.message.contains("not Ready on 1.37.2 300s after it was cordoned"),
        "{}",
        failure.message
    );
    assert!(failure.message.contains("container runtime is down"), "{}", failure.message);
    // Nothing more is taken once the revision failed.
    assert_eq!(got.actions, vec![]);
    // One second earlier it was still within the deadline.
    let got = plan(&PoolInput { now: NOW - 1, ..input });
    assert!(got.failure.is_none());
}

#[test]
fn plan_reports_each_node_and_the_counts() {
    let spec = spec(3);
    let nodes = [
        node(0, "m1", &new()),
        cordoned(node(1, "m2", &old()), NOW, 2),
        not_ready(node(2, "m1", &new()), NOW),
    ];
    let machines = two_machines();
    let got = plan(&PoolInput {
        cluster: "c",
        pool: "p",
        spec: &spec,
        target: &new(),
        nodes: &nodes,
        machines: &machines,
        budgets_healthy: true,
        now: NOW,
    });
    let states: Vec<(&str, &str)> = got.nodes.iter().map(|n| (n.name.as_str(), n.state.as_str())).collect();
    assert_eq!(states, [("c-p-0", "Running"), ("c-p-1", "Draining"), ("c-p-2", "NotReady")]);
    assert_eq!((got.ready, got.updated), (1, 2));
    assert_eq!(got.nodes[1].version.as_deref(), Some("1.36.3"));
    assert!(!got.complete(3));
}

#[test]
fn unplaced_nodes_are_counted_and_explained() {
    let spec = spec(2);
    let machines = [machine("m1", false, 0)];
    let got = plan(&PoolInput {
        cluster: "c",
        pool: "p",
        spec: &spec,
        target: &new(),
        nodes: &[],
        machines: &machines,
        budgets_healthy: true,
        now: NOW,
    });
    assert_eq!(got.unplaced, 2);
    assert!(
        got.waiting[0].contains("1 Machines match the selector, 0 of them reporting"),
        "{:?}",
        got.waiting
    );
    let rollout = rollout_status(None, &new(), &Target::Spec, &got, 2, &time(NOW));
    let degraded = conditions(&got, &rollout, 2).into_iter().find(|c| c.type_ == "Degraded").unwrap();
    assert_eq!((degraded.status, degraded.reason.as_str()), ("True", "Unplaced"));
}

#[test]
fn node_names_carry_the_cluster_once() {
    assert_eq!(node_name("c", "workers", 3), "c-workers-3");
    assert_eq!(node_name("member-1", "member-1-nodes", 0), "member-1-nodes-0");
    assert_eq!(node_name("member-1", "member-10-nodes", 0), "member-1-member-10-nodes-0");
    assert_eq!(node_name("member", "member", 0), "member-member-0");
}

#[test]
fn revisions_differ_by_version_and_kubelet_configuration() {
    let mut labelled = new();
    labelled.kubelet.labels.insert("tier".into(), "web".into());
    let mut pods = new();
    pods.kubelet.max_pods = Some(50);
    let revisions: BTreeSet<String> = [old(), new(), labelled, pods].iter().map(Template::revision).collect();
    assert_eq!(revisions.len(), 4);
    assert_eq!(new().revision(), new().revision());
    assert_eq!(new().revision().len(), 10);
}

#[test]
fn validate_table() {
    let known: BTreeSet<String> = ["1.36.3".to_string(), "1.37.2".to_string()].into();
    let cases: Vec<(&str, NodePoolSpec, &str, Result<&str, &str>)> = vec![
        ("the cluster's version by default", spec(1), "1.37.2", Ok("1.37.2")),
        (
            "an older kubelet",
            NodePoolSpec { version: Some("v1.36.3".into()), ..spec(1) },
            "1.37.2",
            Ok("1.36.3"),
        ),
        (
            "newer than the control plane",
            NodePoolSpec { version: Some("1.37.2".into()), ..spec(1) },
            "1.36.3",
            Err("cannot run against kube-apiserver 1.36.3"),
        ),
        (
            "no binaries",
            NodePoolSpec { version: Some("1.37.0".into()), ..spec(1) },
            "1.37.2",
            Err("no binaries for Kubernetes 1.37.0: the operator has 1.36.3, 1.37.2"),
        ),
        (
            "names too long",
            NodePoolSpec { cluster_ref: "a-very-long-cluster-name-indeed-longer".into(), ..spec(1) },
            "1.37.2",
            Err("longer than 45 characters"),
        ),
    ];
    for (name, spec, cluster_version, want) in cases {
        let got = validate(&spec, "workers", cluster_version, &known);
        match (got, want) {
            (Ok(t), Ok(version)) => assert_eq!(t.version, version, "{name}"),
            (Err(e), Err(part)) => assert!(e.contains(part), "{name}: {e}"),
            (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
        }
    }
}

fn time(seconds: i64) -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_second(seconds).unwrap())
}

fn complete_plan(replicas: usize) -> PoolPlan {
    let nodes: Vec<ObservedNode> = (0..replicas as u32).map(|i| node(i, "m1", &new())).collect();
    let spec = spec(replicas as i32);
    plan(&PoolInput {
        cluster: "c",
        pool: "p",
        spec: &spec,
        target: &new(),
        nodes: &nodes,
        machines: &two_machines(),
        budgets_healthy: true,
        now: NOW,
    })
}

#[test]
fn a_failed_revision_is_rolled_back_and_not_tried_again_until_the_spec_changes() {
    // The pool completed 1.36.3 once.
    let done = complete_plan(2);
    let first = rollout_status(None, &new(), &Target::Spec, &done, 2, &time(1));
    assert_eq!(first.state, rollout_state::COMPLETE);
    assert_eq!(first.last_good_version.as_deref(), Some("1.37.2"));
    assert_eq!(choose_target(&new().revision(), Some(&first)), Target::Spec);

    // The next revision fails on a node.
    let mut next = new();
    next.kubelet.max_pods = Some(50);
    let failing = PoolPlan {
        failure: Some(RolloutFailure { node: "c-p-0".into(), message: "node c-p-0 not Ready".into() }),
        ..done.clone()
    };
    let failed = rollout_status(Some(&first), &next, &Target::Spec, &failing, 2, &time(2));
    assert_eq!(failed.state, rollout_state::ROLLED_BACK);
    assert_eq!(failed.failed_revision.as_deref(), Some(next.revision().as_str()));
    assert_eq!(failed.message.as_deref(), Some("node c-p-0 not Ready"));
    // The pool goes back to the last good revision while the spec stays.
    assert_eq!(choose_target(&next.revision(), Some(&failed)), Target::LastGood(new()));
    let back = rollout_status(Some(&failed), &next, &Target::LastGood(new()), &done, 2, &time(3));
    assert_eq!(back.state, rollout_state::ROLLED_BACK);
    assert_eq!(back.failed_revision, failed.failed_revision);
    let degraded = conditions(&done, &back, 2).into_iter().find(|c| c.type_ == "Degraded").unwrap();
    assert_eq!(degraded.status, "True");
    assert!(degraded.message.contains("node c-p-0 not Ready"), "{}", degraded.message);

    // A new spec revision is tried afresh.
    let mut third = new();
    third.kubelet.max_pods = Some(60);
    assert_eq!(choose_target(&third.revision(), Some(&back)), Target::Spec);
    let fresh = rollout_status(Some(&back), &third, &Target::Spec, &done, 2, &time(4));
    assert_eq!(fresh.failed_revision, None);
    assert_eq!(fresh.started_at, Some(time(4)));
}

#[test]
fn a_first_revision_that_fails_has_nothing_to_go_back_to() {
    let failing = PoolPlan {
        failure: Some(RolloutFailure { node: "c-p-0".into(), message: "boom".into() }),
        ..complete_plan(1)
    };
    let failed = rollout_status(None, &new(), &Target::Spec, &failing, 1, &time(1));
    assert_eq!(failed.state, rollout_state::PROGRESSING);
    assert_eq!(choose_target(&new().revision(), Some(&failed)), Target::Hold);
}

#[test]
fn conditions_say_what_the_pool_is_doing() {
    let done = complete_plan(2);
    let rollout = rollout_status(None, &new(), &Target::Spec, &done, 2, &time(1));
    let got: Vec<(String, &str, String)> =
        conditions(&done, &rollout, 2).into_iter().map(|c| (c.type_, c.status, c.reason)).collect();
    assert_eq!(
        got,
        [
            ("Ready".to_string(), "True", "NodesReady".to_string()),
            ("Progressing".to_string(), "False", "Complete".to_string()),
            ("Degraded".to_string(), "False", "AsExpected".to_string()),
        ]
    );
    // Rolling: 1 of 2 updated, blocked by a budget.
    let spec = spec(2);
    let nodes = [node(0, "m1", &new()), node(1, "m2", &old())];
    let rolling = plan(&PoolInput {
        cluster: "c",
        pool: "p",
        spec: &spec,
        target: &new(),
        nodes: &nodes,
        machines: &two_machines(),
        budgets_healthy: false,
        now: NOW,
    });
    let rollout = rollout_status(None, &new(), &Target::Spec, &rolling, 2, &time(1));
    let progressing =
        conditions(&rolling, &rollout, 2).into_iter().find(|c| c.type_ == "Progressing").unwrap();
    assert_eq!((progressing.status, progressing.reason.as_str()), ("True", "RollingOut"));
    assert!(progressing.message.contains("1 of 2 nodes on revision"), "{}", progressing.message);
    assert!(progressing.message.contains("PodDisruptionBudget"), "{}", progressing.message);
}

#[test]
fn entries_get_the_cluster_image_directory_without_rolling() {
    let dir = "/images/clusters/ns.c";
    let entry = |extra: Option<&str>| RealNodeSpec {
        name: name(0),
        bin_dir: "/k8s/1.37.2".into(),
        images_dir: "/images".into(),
        labels: [(REVISION_LABEL.to_string(), new().revision())].into(),
        extra_images_dir: extra.map(Into::into),
        ..Default::default()
    };
    let cases = [
        ("an entry written before images could be loaded", entry(None), Some(entry(Some(dir)))),
        ("an entry with another directory", entry(Some("/old")), Some(entry(Some(dir)))),
        ("an entry already right is left alone", entry(Some(dir)), None),
    ];
    for (what, given, want) in cases {
        let got = with_images_dir(&given, dir);
        assert_eq!(got, want, "{what}");
        if let Some(got) = got {
            assert_eq!(got.labels.get(REVISION_LABEL), given.labels.get(REVISION_LABEL), "{what}");
        }
    }
    // The revision is the version and the kubelet configuration only.
    assert_eq!(new().revision(), template("1.37.2").revision());
}
