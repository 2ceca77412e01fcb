//! `flotilla-bench estimate`: the per-node capacity estimate
//! (`flotilla_apps_core::estimator`) on a synthetic member of mixed nodes,
//! for many pod shapes; and what the agent's report of those nodes costs
//! to build, to send and to read back.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use clap::Args;
use flotilla_apps_core::estimator::{Effect, NodeConstraints, NodeRooms, NodeState, Taint, HOSTNAME_LABEL};
use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm, Toleration};

use crate::measure::percentile;

#[derive(Args, Debug)]
pub struct EstimateArgs {
    /// Nodes of the synthetic member.
    #[arg(long, default_value_t = 1000)]
    pub nodes: usize,
    /// Pod shapes to estimate.
    #[arg(long, default_value_t = 50)]
    pub shapes: usize,
    /// Timed estimates per shape.
    #[arg(long, default_value_t = 200)]
    pub rounds: usize,
}

/// The goal per shape, from issue 14.
const GOAL: Duration = Duration::from_millis(5);
const GI: u128 = 1 << 30;
const ZONES: [&str; 3] = ["z1", "z2", "z3"];
/// (instance type, cpu cores, memory GiB)
const SIZES: [(&str, u128, u128); 5] =
    [("small", 2, 4), ("medium", 4, 16), ("large", 8, 32), ("xlarge", 16, 64), ("metal", 64, 256)];

/// A small deterministic generator, so every run measures the same member.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Mixed sizes, zones, disks and generations; some GPU nodes tainted for
/// them, some dedicated, a few cordoned or not Ready; every node partly
/// used by a different amount, so hardly two nodes share a room (the
/// report's worst case).
fn synthetic_nodes(count: usize) -> Vec<NodeState> {
    let mut rng = Rng(0x5eed_cafe_f00d_beef);
    (0..count)
        .map(|i| {
            let name = format!("node-{i:05}");
            let (size, cpu, memory) = SIZES[rng.below(SIZES.len() as u64) as usize];
            let labels: BTreeMap<String, String> = [
                (HOSTNAME_LABEL, name.clone()),
                ("topology.kubernetes.io/zone", ZONES[i % ZONES.len()].to_string()),
                ("node.kubernetes.io/instance-type", size.to_string()),
                ("disk", if rng.below(3) == 0 { "ssd" } else { "hdd" }.to_string()),
                ("generation", (1 + rng.below(5)).to_string()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
            let mut allocatable: BTreeMap<String, u128> = [
                ("cpu".to_string(), cpu * 1000),
                ("memory".to_string(), memory * GI),
                ("pods".to_string(), 110),
            ]
            .into();
            let mut taints = Vec::new();
            if rng.below(10) == 0 {
                allocatable.insert("nvidia.com/gpu".into(), 1 + rng.below(8) as u128);
                taints.push(Taint {
                    key: "nvidia.com/gpu".into(),
                    value: String::new(),
                    effect: Effect::NoSchedule,
                });
            } else if rng.below(10) == 0 {
                taints.push(Taint {
                    key: "dedicated".into(),
                    value: "db".into(),
                    effect: Effect::NoSchedule,
                });
            }
            let pods = rng.below(40) as u128;
            let requested: BTreeMap<String, u128> = [
                ("cpu".to_string(), cpu * 1000 * rng.below(90) as u128 / 100),
                ("memory".to_string(), memory * GI * rng.below(90) as u128 / 100),
            ]
            .into();
            NodeState {
                name,
                labels,
                taints,
                allocatable,
                requested,
                pods,
                unschedulable: rng.below(50) == 0,
                ready: rng.below(100) != 0,
            }
        })
        .collect()
}

fn requirement(key: &str, operator: &str, values: &[&str]) -> NodeSelectorRequirement {
    NodeSelectorRequirement {
        key: key.into(),
        operator: operator.into(),
        values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
    }
}

fn terms(requirements: Vec<NodeSelectorRequirement>) -> Option<Vec<NodeSelectorTerm>> {
    Some(vec![NodeSelectorTerm { match_expressions: Some(requirements), match_fields: None }])
}

fn tolerate(key: &str) -> Toleration {
    Toleration { key: Some(key.into()), operator: Some("Exists".into()), ..Default::default() }
}

/// One pod shape: a description, its requests and its constraints.
type Shape = (String, Vec<(&'static str, u128)>, NodeConstraints);

/// `count` shapes cycling through ten kinds of constraint, requests
/// growing with the index.
fn shapes(count: usize) -> Vec<Shape> {
    (0..count)
        .map(|i| {
            let cpu = 100 * (1 + (i as u128 * 7) % 40);
            let memory = (128 << 20) * (1 + (i as u128 * 5) % 32);
            let mut requests = vec![("cpu", cpu), ("memory", memory)];
            let mut constraints = NodeConstraints::default();
            let kind = match i % 10 {
                0 => "plain",
                1 => {
                    constraints.node_selector = [("disk".to_string(), "ssd".to_string())].into();
                    "nodeSelector disk=ssd"
                }
                2 => {
                    constraints.required_terms =
                        terms(vec![requirement("topology.kubernetes.io/zone", "In", &["z1", "z2"])]);
                    "zone In"
                }
                3 => {
                    constraints.required_terms = terms(vec![
                        requirement("node.kubernetes.io/instance-type", "NotIn", &["small"]),
                        requirement("generation", "Gt", &["2"]),
                    ]);
                    "NotIn + Gt"
                }
                4 => {
                    requests.push(("nvidia.com/gpu", 1));
                    constraints.tolerations = vec![tolerate("nvidia.com/gpu")];
                    "gpu, tolerated"
                }
                5 => {
                    constraints.tolerations = vec![tolerate("dedicated")];
                    "tolerates dedicated"
                }
                6 => {
                    constraints.required_terms = terms(vec![requirement(
                        HOSTNAME_LABEL,
                        "NotIn",
                        &["node-00001", "node-00002", "node-00003"],
                    )]);
                    "hostname NotIn (node by node)"
                }
                7 => {
                    constraints.host_ports = true;
                    "host port"
                }
                8 => {
                    requests = vec![("cpu", 30_000), ("memory", 100 * GI)];
                    "30 cpu, 100Gi"
                }
                _ => {
                    constraints.tolerations =
                        vec![Toleration { operator: Some("Exists".into()), ..Default::default() }];
                    "tolerates everything"
                }
            };
            (format!("{i:2} {kind}"), requests, constraints)
        })
        .collect()
}

fn millis(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

pub fn run(args: EstimateArgs) -> anyhow::Result<bool> {
    if args.nodes == 0 || args.shapes == 0 || args.rounds == 0 {
        anyhow::bail!("--nodes, --shapes and --rounds must be positive");
    }
    let nodes = synthetic_nodes(args.nodes);

    // The agent's side: group the nodes and write the report.
    let started = Instant::now();
    let rooms = NodeRooms::from_states(&nodes);
    let report = serde_json::to_vec(&rooms.to_api())?;
    let build = started.elapsed();
    // The hub's side: read the report back, as each ManagedCluster event does.
    let started = Instant::now();
    let read: flotilla_api::cluster::NodeCapacity = serde_json::from_slice(&report)?;
    let read = NodeRooms::from_api(&read);
    let read_back = started.elapsed();
    anyhow::ensure!(read == rooms, "the report does not read back as written");
    println!(
        "estimate: {} nodes ({} reported: Ready), {} profiles, {} groups; report {} KiB, built in {}, read back in {}",
        nodes.len(),
        rooms.node_count(),
        rooms.profiles.len(),
        rooms.groups.len(),
        report.len() / 1024,
        millis(build),
        millis(read_back),
    );

    let shapes = shapes(args.shapes);
    let mut worst_p50 = Duration::ZERO;
    let mut worst_max = Duration::ZERO;
    println!("{:<34} {:>9} {:>12} {:>12}", "shape", "replicas", "p50", "max");
    for (name, requests, constraints) in &shapes {
        let mut samples = Vec::with_capacity(args.rounds);
        let mut estimate = 0;
        for _ in 0..args.rounds {
            let started = Instant::now();
            estimate = black_box(read.replicas(black_box(requests), black_box(constraints)));
            samples.push(started.elapsed());
        }
        samples.sort();
        let (p50, max) = (percentile(&samples, 0.5), samples[samples.len() - 1]);
        worst_p50 = worst_p50.max(p50);
        worst_max = worst_max.max(max);
        println!("{name:<34} {estimate:>9} {:>12} {:>12}", millis(p50), millis(max));
    }
    println!(
        "worst p50 {} / worst max {} per shape over {} shapes x {} rounds (goal under {})",
        millis(worst_p50),
        millis(worst_max),
        shapes.len(),
        args.rounds,
        millis(GOAL)
    );
    Ok(true)
}
