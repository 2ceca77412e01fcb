use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, Node, NodeCondition, NodeSelectorRequirement, NodeSelectorTerm, NodeSpec, NodeStatus, Pod,
    PodSpec, PodStatus, ResourceRequirements, Taint as K8sTaint, Toleration,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::report::{node_states, pod_requests, report_due};
use super::*;

const GI: u128 = 1 << 30;

fn node(name: &str, cpu_milli: u128, memory: u128, max_pods: u128) -> NodeState {
    NodeState {
        name: name.into(),
        labels: [(HOSTNAME_LABEL.to_string(), name.to_string())].into(),
        allocatable: [("cpu", cpu_milli), ("memory", memory), ("pods", max_pods)]
            .into_iter()
            .map(|(r, a)| (r.to_string(), a))
            .collect(),
        ready: true,
        ..Default::default()
    }
}

/// The standard test node: 4 cpu, 8Gi, 110 pods.
fn std_node(name: &str) -> NodeState {
    node(name, 4_000, 8 * GI, 110)
}

fn used(mut n: NodeState, cpu_milli: u128, memory: u128, pods: u128) -> NodeState {
    n.requested.insert("cpu".into(), cpu_milli);
    n.requested.insert("memory".into(), memory);
    n.pods = pods;
    n
}

fn label(mut n: NodeState, key: &str, value: &str) -> NodeState {
    n.labels.insert(key.into(), value.into());
    n
}

fn taint(mut n: NodeState, key: &str, value: &str, effect: Effect) -> NodeState {
    n.taints.push(Taint { key: key.into(), value: value.into(), effect });
    n
}

fn extended(mut n: NodeState, resource: &str, amount: u128) -> NodeState {
    n.allocatable.insert(resource.into(), amount);
    n
}

fn cordoned(mut n: NodeState) -> NodeState {
    n.unschedulable = true;
    n
}

fn not_ready(mut n: NodeState) -> NodeState {
    n.ready = false;
    n
}

fn toleration(key: &str, operator: &str, value: &str, effect: &str) -> Toleration {
    let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
    Toleration {
        key: some(key),
        operator: some(operator),
        value: some(value),
        effect: some(effect),
        toleration_seconds: None,
    }
}

fn req(key: &str, operator: &str, values: &[&str]) -> NodeSelectorRequirement {
    NodeSelectorRequirement {
        key: key.into(),
        operator: operator.into(),
        values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
    }
}

fn term(expressions: Vec<NodeSelectorRequirement>) -> NodeSelectorTerm {
    NodeSelectorTerm { match_expressions: Some(expressions), match_fields: None }
}

fn fields(fields: Vec<NodeSelectorRequirement>) -> NodeSelectorTerm {
    NodeSelectorTerm { match_expressions: None, match_fields: Some(fields) }
}

fn selector(pairs: &[(&str, &str)]) -> NodeConstraints {
    NodeConstraints {
        node_selector: pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ..Default::default()
    }
}

fn affinity(terms: Vec<NodeSelectorTerm>) -> NodeConstraints {
    NodeConstraints { required_terms: Some(terms), ..Default::default() }
}

fn tolerating(tolerations: Vec<Toleration>) -> NodeConstraints {
    NodeConstraints { tolerations, ..Default::default() }
}

const ONE_CPU: &[(&str, u128)] = &[("cpu", 1_000), ("memory", GI)];
const TWO_CPU: &[(&str, u128)] = &[("cpu", 2_000)];
const NOTHING: &[(&str, u128)] = &[];

struct Case {
    name: &'static str,
    nodes: Vec<NodeState>,
    requests: &'static [(&'static str, u128)],
    constraints: NodeConstraints,
    want: u128,
}

fn case(
    name: &'static str,
    nodes: Vec<NodeState>,
    requests: &'static [(&'static str, u128)],
    constraints: NodeConstraints,
    want: u128,
) -> Case {
    Case { name, nodes, requests, constraints, want }
}

fn cases() -> Vec<Case> {
    let none = NodeConstraints::default;
    let zone = |n, z| label(std_node(n), "zone", z);
    vec![
        // NodeResourcesFit
        case("one node, cpu bound", vec![std_node("a")], ONE_CPU, none(), 4),
        case("memory bound", vec![node("a", 8_000, 3 * GI, 110)], ONE_CPU, none(), 3),
        case("pod count bound", vec![node("a", 8_000, 8 * GI, 3)], ONE_CPU, none(), 3),
        case("no requests: pods alone", vec![std_node("a"), node("b", 1_000, GI, 5)], NOTHING, none(), 115),
        case("requests already on the node", vec![used(std_node("a"), 2_500, GI, 4)], ONE_CPU, none(), 1),
        case(
            "pods already on the node",
            vec![used(node("a", 8_000, 8 * GI, 6), 0, 0, 4)],
            ONE_CPU,
            none(),
            2,
        ),
        case("over-committed node has no room", vec![used(std_node("a"), 6_000, 0, 1)], ONE_CPU, none(), 0),
        case("a full pod table takes nothing", vec![used(std_node("a"), 0, 0, 110)], NOTHING, none(), 0),
        case(
            "one big node and many small: per node, not summed",
            (0..8)
                .map(|i| node(&format!("small-{i}"), 1_500, 4 * GI, 110))
                .chain([node("big", 16_000, 64 * GI, 110)])
                .collect(),
            TWO_CPU,
            none(),
            8,
        ),
        case(
            "fractions do not add up across nodes",
            vec![node("a", 1_500, GI, 110), node("b", 1_500, GI, 110)],
            &[("cpu", 1_000)],
            none(),
            2,
        ),
        case(
            "extended resource only on one node",
            vec![extended(std_node("gpu"), "nvidia.com/gpu", 2), std_node("plain")],
            &[("cpu", 500), ("nvidia.com/gpu", 1)],
            none(),
            2,
        ),
        case("a resource no node has", vec![std_node("a")], &[("example.com/fpga", 1)], none(), 0),
        case("zero requests are ignored", vec![std_node("a")], &[("cpu", 0), ("memory", GI)], none(), 8),
        // Node state
        case(
            "not Ready counts for nothing",
            vec![not_ready(std_node("a")), std_node("b")],
            ONE_CPU,
            none(),
            4,
        ),
        case("cordoned counts for nothing", vec![cordoned(std_node("a")), std_node("b")], ONE_CPU, none(), 4),
        case(
            "cordoned, tolerated",
            vec![cordoned(std_node("a")), std_node("b")],
            ONE_CPU,
            tolerating(vec![toleration(UNSCHEDULABLE_TAINT, "Exists", "", "NoSchedule")]),
            8,
        ),
        // TaintToleration
        case(
            "NoSchedule taint repels",
            vec![taint(std_node("a"), "dedicated", "gpu", Effect::NoSchedule), std_node("b")],
            ONE_CPU,
            none(),
            4,
        ),
        case(
            "NoExecute taint repels",
            vec![taint(std_node("a"), "dedicated", "gpu", Effect::NoExecute), std_node("b")],
            ONE_CPU,
            none(),
            4,
        ),
        case(
            "Equal toleration with the value",
            vec![taint(std_node("a"), "dedicated", "gpu", Effect::NoSchedule), std_node("b")],
            ONE_CPU,
            tolerating(vec![toleration("dedicated", "Equal", "gpu", "NoSchedule")]),
            8,
        ),
        case(
            "default operator is Equal",
            vec![taint(std_node("a"), "dedicated", "gpu", Effect::NoSchedule)],
            ONE_CPU,
            tolerating(vec![toleration("dedicated", "", "gpu", "")]),
            4,
        ),
        case(
            "Equal toleration with another value",
            vec![taint(std_node("a"), "dedicated", "gpu", Effect::NoSchedule)],
            ONE_CPU,
            tolerating(vec![toleration("dedicated", "Equal", "db", "NoSchedule")]),
            0,
        ),
        case(
            "Exists toleration, any value",
            vec![taint(std_node("a"), "dedicated", "gpu", Effect::NoSchedule)],
            ONE_CPU,
            tolerating(vec![toleration("dedicated", "Exists", "", "")]),
            4,
        ),
        case(
            "toleration of another effect",
            vec![taint(std_node("a"), "dedicated", "gpu", Effect::NoExecute)],
            ONE_CPU,
            tolerating(vec![toleration("dedicated", "Exists", "", "NoSchedule")]),
            0,
        ),
        case(
            "empty key with Exists tolerates everything",
            vec![
                taint(taint(std_node("a"), "x", "1", Effect::NoSchedule), "y", "", Effect::NoExecute),
                cordoned(std_node("b")),
            ],
            ONE_CPU,
            tolerating(vec![toleration("", "Exists", "", "")]),
            8,
        ),
        case(
            "every taint must be tolerated",
            vec![taint(taint(std_node("a"), "x", "1", Effect::NoSchedule), "y", "", Effect::NoSchedule)],
            ONE_CPU,
            tolerating(vec![toleration("x", "Equal", "1", "")]),
            0,
        ),
        case(
            "taint without value, Equal with empty value",
            vec![taint(std_node("a"), "y", "", Effect::NoSchedule)],
            ONE_CPU,
            tolerating(vec![toleration("y", "Equal", "", "")]),
            4,
        ),
        case(
            "unknown operator tolerates nothing",
            vec![taint(std_node("a"), "y", "", Effect::NoSchedule)],
            ONE_CPU,
            tolerating(vec![toleration("y", "Matches", "", "")]),
            0,
        ),
        // nodeSelector
        case(
            "nodeSelector picks the zone",
            vec![zone("a", "z1"), zone("b", "z2")],
            ONE_CPU,
            selector(&[("zone", "z1")]),
            4,
        ),
        case("nodeSelector matching nothing", vec![zone("a", "z1")], ONE_CPU, selector(&[("zone", "z3")]), 0),
        case(
            "nodeSelector needs every pair",
            vec![label(zone("a", "z1"), "disk", "ssd"), zone("b", "z1")],
            ONE_CPU,
            selector(&[("zone", "z1"), ("disk", "ssd")]),
            4,
        ),
        case(
            "nodeSelector on the hostname",
            vec![std_node("a"), std_node("b")],
            ONE_CPU,
            selector(&[(HOSTNAME_LABEL, "b")]),
            4,
        ),
        // Required node affinity
        case(
            "In",
            vec![zone("a", "z1"), zone("b", "z2"), zone("c", "z3")],
            ONE_CPU,
            affinity(vec![term(vec![req("zone", "In", &["z1", "z2"])])]),
            8,
        ),
        case(
            "NotIn also takes nodes without the label",
            vec![zone("a", "z1"), zone("b", "z2"), std_node("c")],
            ONE_CPU,
            affinity(vec![term(vec![req("zone", "NotIn", &["z1"])])]),
            8,
        ),
        case(
            "Exists",
            vec![zone("a", "z1"), std_node("b")],
            ONE_CPU,
            affinity(vec![term(vec![req("zone", "Exists", &[])])]),
            4,
        ),
        case(
            "DoesNotExist",
            vec![zone("a", "z1"), std_node("b")],
            ONE_CPU,
            affinity(vec![term(vec![req("zone", "DoesNotExist", &[])])]),
            4,
        ),
        case(
            "Gt compares integers",
            vec![
                label(std_node("a"), "gen", "9"),
                label(std_node("b"), "gen", "10"),
                label(std_node("c"), "gen", "x"),
            ],
            ONE_CPU,
            affinity(vec![term(vec![req("gen", "Gt", &["9"])])]),
            4,
        ),
        case(
            "Lt compares integers",
            vec![label(std_node("a"), "gen", "9"), label(std_node("b"), "gen", "10"), std_node("c")],
            ONE_CPU,
            affinity(vec![term(vec![req("gen", "Lt", &["10"])])]),
            4,
        ),
        case(
            "Gt with two values matches nothing",
            vec![label(std_node("a"), "gen", "9")],
            ONE_CPU,
            affinity(vec![term(vec![req("gen", "Gt", &["1", "2"])])]),
            0,
        ),
        case(
            "expressions of a term are ANDed",
            vec![label(zone("a", "z1"), "disk", "ssd"), zone("b", "z1")],
            ONE_CPU,
            affinity(vec![term(vec![req("zone", "In", &["z1"]), req("disk", "Exists", &[])])]),
            4,
        ),
        case(
            "terms are ORed",
            vec![zone("a", "z1"), label(std_node("b"), "disk", "ssd"), std_node("c")],
            ONE_CPU,
            affinity(vec![term(vec![req("zone", "In", &["z1"])]), term(vec![req("disk", "In", &["ssd"])])]),
            8,
        ),
        case("an empty term matches nothing", vec![std_node("a")], ONE_CPU, affinity(vec![term(vec![])]), 0),
        case(
            "unknown operator matches nothing",
            vec![zone("a", "z1")],
            ONE_CPU,
            affinity(vec![term(vec![req("zone", "Like", &["z1"])])]),
            0,
        ),
        case(
            "hostname In picks nodes by name",
            vec![std_node("a"), std_node("b"), std_node("c")],
            ONE_CPU,
            affinity(vec![term(vec![req(HOSTNAME_LABEL, "In", &["a", "c"])])]),
            8,
        ),
        case(
            "matchFields metadata.name",
            vec![std_node("a"), std_node("b")],
            ONE_CPU,
            affinity(vec![fields(vec![req("metadata.name", "NotIn", &["a"])])]),
            4,
        ),
        case(
            "matchFields on another field matches nothing",
            vec![std_node("a")],
            ONE_CPU,
            affinity(vec![fields(vec![req("metadata.uid", "In", &["a"])])]),
            0,
        ),
        case(
            "a hostname label other than the name",
            vec![label(std_node("a"), HOSTNAME_LABEL, "host-a"), std_node("b")],
            ONE_CPU,
            selector(&[(HOSTNAME_LABEL, "host-a")]),
            4,
        ),
        case(
            "selector, affinity and toleration together",
            vec![
                taint(label(zone("a", "z1"), "disk", "ssd"), "dedicated", "db", Effect::NoSchedule),
                label(zone("b", "z1"), "disk", "ssd"),
                taint(label(zone("c", "z2"), "disk", "ssd"), "dedicated", "db", Effect::NoSchedule),
                taint(zone("d", "z1"), "dedicated", "db", Effect::NoSchedule),
            ],
            ONE_CPU,
            NodeConstraints {
                node_selector: [("zone".to_string(), "z1".to_string())].into(),
                required_terms: Some(vec![term(vec![req("disk", "In", &["ssd"])])]),
                tolerations: vec![toleration("dedicated", "Equal", "db", "NoSchedule")],
                host_ports: false,
            },
            8,
        ),
        // NodePorts
        case(
            "host ports: one per node",
            vec![std_node("a"), std_node("b"), used(std_node("c"), 4_000, 0, 1)],
            ONE_CPU,
            NodeConstraints { host_ports: true, ..Default::default() },
            2,
        ),
    ]
}

/// The same answer node by node, each node alone, with nothing grouped.
fn one_node_at_a_time(nodes: &[NodeState], requests: &[(&str, u128)], constraints: &NodeConstraints) -> u128 {
    nodes
        .iter()
        .map(|n| NodeRooms::from_states(std::slice::from_ref(n)).replicas(requests, constraints))
        .sum()
}

#[test]
fn estimates_match_the_scheduler_filters() {
    for c in cases() {
        let rooms = NodeRooms::from_states(&c.nodes);
        assert_eq!(rooms.replicas(c.requests, &c.constraints), c.want, "{}", c.name);
        assert_eq!(
            one_node_at_a_time(&c.nodes, c.requests, &c.constraints),
            c.want,
            "{} (node by node)",
            c.name
        );
        // What the hub reads back from the agent's report says the same.
        let read_back = NodeRooms::from_api(&rooms.to_api());
        assert_eq!(read_back, rooms, "{} (round trip)", c.name);
        assert_eq!(read_back.replicas(c.requests, &c.constraints), c.want, "{} (read back)", c.name);
    }
}

#[test]
fn a_thousand_alike_nodes_make_one_group() {
    let nodes: Vec<NodeState> =
        (0..1000).map(|i| label(std_node(&format!("node-{i:04}")), "zone", "z1")).collect();
    let rooms = NodeRooms::from_states(&nodes);
    assert_eq!((rooms.profiles.len(), rooms.groups.len(), rooms.node_count()), (1, 1, 1000));
    assert_eq!(rooms.profiles[0].labels, [("zone".to_string(), "z1".to_string())].into());
    assert_eq!(rooms.replicas(ONE_CPU, &UNCONSTRAINED), 4000);
    let one = affinity(vec![term(vec![req(HOSTNAME_LABEL, "In", &["node-0007"])])]);
    assert_eq!(rooms.replicas(ONE_CPU, &one), 4);

    // Room differs: one group per room, still one profile.
    let nodes: Vec<NodeState> =
        (0..1000).map(|i| used(std_node(&format!("node-{i:04}")), (i % 4) as u128 * 1_000, 0, 1)).collect();
    let rooms = NodeRooms::from_states(&nodes);
    assert_eq!((rooms.profiles.len(), rooms.groups.len()), (1, 4));
    assert_eq!(rooms.replicas(ONE_CPU, &UNCONSTRAINED), 250 * (4 + 3 + 2 + 1));
}

#[test]
fn rooms_do_not_depend_on_node_order() {
    let nodes = vec![zone_node("b", "z2"), zone_node("a", "z1"), zone_node("c", "z1")];
    let mut reversed = nodes.clone();
    reversed.reverse();
    assert_eq!(NodeRooms::from_states(&nodes), NodeRooms::from_states(&reversed));
    let rooms = NodeRooms::from_states(&nodes);
    assert_eq!(rooms.groups[0].nodes, vec!["a".to_string(), "c".to_string()]);
}

fn zone_node(name: &str, zone: &str) -> NodeState {
    label(std_node(name), "zone", zone)
}

#[test]
fn free_room_leaves_out_what_is_used_up() {
    let rooms = NodeRooms::from_states(&[used(std_node("a"), 4_000, GI, 10)]);
    let want: Amounts = [("memory".to_string(), 7 * GI), ("pods".to_string(), 100)].into();
    assert_eq!(rooms.groups[0].free, want);
    let api = rooms.to_api();
    assert_eq!(api.groups[0].free["memory"], Quantity("7Gi".into()));
    assert_eq!(api.groups[0].free["pods"], Quantity("100".into()));
    assert!(api.profiles[0].labels.is_empty(), "the hostname label equal to the name is not repeated");
}

#[test]
fn a_report_with_a_bad_profile_index_or_quantity_counts_that_room_as_absent() {
    let mut api =
        NodeRooms::from_states(&[std_node("a"), taint(std_node("b"), "x", "", Effect::NoSchedule)]).to_api();
    api.groups[1].profile = 7;
    api.groups[0].free.insert("cpu".into(), Quantity("lots".into()));
    let rooms = NodeRooms::from_api(&api);
    assert_eq!(rooms.groups.len(), 1);
    assert_eq!(rooms.replicas(ONE_CPU, &UNCONSTRAINED), 0);
    assert_eq!(rooms.replicas(NOTHING, &UNCONSTRAINED), 110);
}

fn container(cpu: &str, memory: &str) -> Container {
    let mut requests = BTreeMap::new();
    if !cpu.is_empty() {
        requests.insert("cpu".to_string(), Quantity(cpu.into()));
    }
    if !memory.is_empty() {
        requests.insert("memory".to_string(), Quantity(memory.into()));
    }
    Container {
        name: "c".into(),
        resources: Some(ResourceRequirements { requests: Some(requests), ..Default::default() }),
        ..Default::default()
    }
}

fn sidecar(cpu: &str, memory: &str) -> Container {
    Container { restart_policy: Some("Always".into()), ..container(cpu, memory) }
}

#[test]
fn pod_requests_follow_the_scheduler() {
    type PodCase =
        (&'static str, Vec<Container>, Vec<Container>, Option<(&'static str, &'static str)>, (u128, u128));
    let cases: Vec<PodCase> = vec![
        (
            "containers add up",
            vec![container("250m", "64Mi"), container("500m", "")],
            vec![],
            None,
            (750, 64 << 20),
        ),
        (
            "a bigger init container wins",
            vec![container("250m", "64Mi")],
            vec![container("1", "32Mi")],
            None,
            (1_000, 64 << 20),
        ),
        (
            "init containers do not add up",
            vec![container("100m", "")],
            vec![container("300m", ""), container("200m", "")],
            None,
            (300, 0),
        ),
        (
            "a sidecar adds to the containers",
            vec![container("250m", "")],
            vec![sidecar("100m", "")],
            None,
            (350, 0),
        ),
        (
            "an init container after a sidecar runs beside it",
            vec![container("100m", "")],
            vec![sidecar("200m", ""), container("500m", "")],
            None,
            (700, 0),
        ),
        ("overhead adds", vec![container("250m", "64Mi")], vec![], Some(("100m", "16Mi")), (350, 80 << 20)),
        ("no requests", vec![container("", "")], vec![], None, (0, 0)),
    ];
    for (name, containers, init, overhead, (cpu, memory)) in cases {
        let spec = PodSpec {
            containers,
            init_containers: (!init.is_empty()).then_some(init),
            overhead: overhead.map(|(c, m)| {
                [("cpu".to_string(), Quantity(c.into())), ("memory".to_string(), Quantity(m.into()))].into()
            }),
            ..Default::default()
        };
        let got = pod_requests(&spec);
        let get = |r: &str| got.get(r).copied().unwrap_or(0);
        assert_eq!((get("cpu"), get("memory")), (cpu, memory), "{name}");
    }
}

fn k8s_node(name: &str, ready: &str, taints: &[(&str, &str)], unschedulable: bool) -> Node {
    let mut node = Node::default();
    node.metadata.name = Some(name.into());
    node.metadata.labels = Some([(HOSTNAME_LABEL.to_string(), name.to_string())].into());
    node.spec = Some(NodeSpec {
        taints: Some(
            taints
                .iter()
                .map(|(key, effect)| K8sTaint {
                    key: key.to_string(),
                    effect: effect.to_string(),
                    ..Default::default()
                })
                .collect(),
        ),
        unschedulable: Some(unschedulable),
        ..Default::default()
    });
    node.status = Some(NodeStatus {
        allocatable: Some(
            [("cpu", "4"), ("memory", "8Gi"), ("pods", "110")]
                .into_iter()
                .map(|(r, q)| (r.to_string(), Quantity(q.into())))
                .collect(),
        ),
        conditions: Some(vec![NodeCondition {
            type_: "Ready".into(),
            status: ready.into(),
            ..Default::default()
        }]),
        ..Default::default()
    });
    node
}

fn k8s_pod(node: &str, phase: &str, cpu: &str) -> Pod {
    Pod {
        spec: Some(PodSpec {
            node_name: (!node.is_empty()).then(|| node.to_string()),
            containers: vec![container(cpu, "1Gi")],
            ..Default::default()
        }),
        status: Some(PodStatus { phase: Some(phase.into()), ..Default::default() }),
        ..Default::default()
    }
}

#[test]
fn node_states_come_from_nodes_and_their_unfinished_pods() {
    let nodes = [
        k8s_node("a", "True", &[("soft", "PreferNoSchedule"), ("hard", "NoSchedule")], false),
        k8s_node("b", "False", &[], false),
        k8s_node("c", "True", &[], true),
    ];
    let pods = [
        k8s_pod("a", "Running", "1"),
        k8s_pod("a", "Pending", "500m"),
        k8s_pod("a", "Succeeded", "2"),
        k8s_pod("a", "Failed", "2"),
        k8s_pod("", "Pending", "2"),
        k8s_pod("gone", "Running", "2"),
    ];
    let states = node_states(&nodes, &pods);
    let names: Vec<&str> = states.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "c"]);
    let a = &states[0];
    assert_eq!((a.pods, a.requested["cpu"], a.requested["memory"]), (2, 1_500, 2 * GI));
    assert_eq!(
        a.taints,
        vec![Taint { key: "hard".into(), value: String::new(), effect: Effect::NoSchedule }]
    );
    assert!(a.ready && !a.unschedulable);
    assert!(!states[1].ready);
    assert!(states[2].unschedulable);

    let rooms = NodeRooms::from_states(&states);
    assert_eq!(rooms.node_count(), 2, "the NotReady node is not reported");
    // a: 2.5 cpu free, tolerated; c: cordoned.
    let hard = tolerating(vec![toleration("hard", "Exists", "", "")]);
    assert_eq!(rooms.replicas(ONE_CPU, &hard), 2);
    assert_eq!(rooms.replicas(ONE_CPU, &UNCONSTRAINED), 0);
    let both = tolerating(vec![
        toleration("hard", "Exists", "", ""),
        toleration(UNSCHEDULABLE_TAINT, "Exists", "", ""),
    ]);
    assert_eq!(rooms.replicas(ONE_CPU, &both), 6);
}

#[test]
fn tolerations_and_requirements_follow_kubernetes() {
    use super::matching::{requirement_matches, tolerates};
    let taint = |key: &str, value: &str, effect| Taint { key: key.into(), value: value.into(), effect };
    let toleration_cases = [
        ("exact", toleration("k", "Equal", "v", "NoSchedule"), taint("k", "v", Effect::NoSchedule), true),
        ("any effect", toleration("k", "Equal", "v", ""), taint("k", "v", Effect::NoExecute), true),
        (
            "other effect",
            toleration("k", "Equal", "v", "NoExecute"),
            taint("k", "v", Effect::NoSchedule),
            false,
        ),
        ("other key", toleration("j", "Exists", "", ""), taint("k", "v", Effect::NoSchedule), false),
        ("other value", toleration("k", "Equal", "w", ""), taint("k", "v", Effect::NoSchedule), false),
        ("exists", toleration("k", "Exists", "", ""), taint("k", "v", Effect::NoSchedule), true),
        ("wildcard", toleration("", "Exists", "", ""), taint("k", "v", Effect::NoExecute), true),
        (
            "empty key, Equal, same value",
            toleration("", "Equal", "v", ""),
            taint("k", "v", Effect::NoSchedule),
            true,
        ),
    ];
    for (name, t, taint, want) in toleration_cases {
        assert_eq!(tolerates(&t, &taint), want, "{name}");
    }
    let requirement_cases = [
        ("In present", req("k", "In", &["a", "b"]), Some("b"), true),
        ("In absent", req("k", "In", &["a"]), None, false),
        ("NotIn other", req("k", "NotIn", &["a"]), Some("b"), true),
        ("NotIn listed", req("k", "NotIn", &["a"]), Some("a"), false),
        ("NotIn absent", req("k", "NotIn", &["a"]), None, true),
        ("Exists", req("k", "Exists", &[]), Some(""), true),
        ("DoesNotExist present", req("k", "DoesNotExist", &[]), Some(""), false),
        ("Gt", req("k", "Gt", &["3"]), Some("4"), true),
        ("Gt equal", req("k", "Gt", &["3"]), Some("3"), false),
        ("Gt absent", req("k", "Gt", &["3"]), None, false),
        ("Gt bad bound", req("k", "Gt", &["x"]), Some("4"), false),
        ("Lt negative", req("k", "Lt", &["0"]), Some("-1"), true),
        ("Lt no values", req("k", "Lt", &[]), Some("-1"), false),
    ];
    for (name, r, value, want) in requirement_cases {
        assert_eq!(requirement_matches(&r, value), want, "{name}");
    }
}

#[test]
fn room_alone_is_reported_at_most_once_per_interval() {
    use std::time::Duration;
    let base = vec![std_node("a"), zone_node("b", "z1")];
    let report = |nodes: &[NodeState]| NodeRooms::from_states(nodes).to_api();
    let last = report(&base);
    let busier = report(&[used(std_node("a"), 1_000, GI, 1), zone_node("b", "z1")]);
    let relabelled = report(&[std_node("a"), zone_node("b", "z2")]);
    let grown = report(&[std_node("a"), zone_node("b", "z1"), std_node("c")]);
    let tainted = report(&[taint(std_node("a"), "x", "", Effect::NoExecute), zone_node("b", "z1")]);
    let (soon, late, interval) = (Duration::from_secs(1), Duration::from_secs(10), Duration::from_secs(10));
    let cases = [
        ("first report", None, &last, soon, true),
        ("nothing changed", Some(&last), &last, late, false),
        ("room only, too soon", Some(&last), &busier, soon, false),
        ("room only, interval over", Some(&last), &busier, late, true),
        ("labels changed", Some(&last), &relabelled, soon, true),
        ("a node came", Some(&last), &grown, soon, true),
        ("a node went", Some(&grown), &last, soon, true),
        ("a taint came", Some(&last), &tainted, soon, true),
    ];
    for (name, last, next, since, want) in cases {
        assert_eq!(report_due(last, next, since, interval), want, "{name}");
    }
}
