//! `flotilla-bench scheduling`: the scheduler's decision time on synthetic fleets.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use clap::Args;
use flotilla_api::cluster::{ApiEnablement, Taint, TaintEffect};
use flotilla_api::policy::{
    cluster_field_label, ClusterAffinity, ClusterPreferences, DynamicWeightFactor, FieldSelector,
    FieldSelectorOperator, FieldSelectorRequirement, Placement, ReplicaDivisionPreference,
    ReplicaSchedulingStrategy, ReplicaSchedulingType, SpreadByField, SpreadConstraint, StaticClusterWeight,
};
use flotilla_api::work::TargetCluster;
use flotilla_apps_core::scheduler::{schedule, ClusterSnapshot, SchedulingRequest};
use k8s_openapi::api::core::v1::Toleration;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

#[derive(Args, Debug)]
pub struct SchedulingArgs {
    /// Fleet sizes to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1000usize, 10000])]
    pub clusters: Vec<usize>,
    /// Bindings per fleet size; each is scheduled twice (first placement,
    /// then a scale-up from that placement).
    #[arg(long, default_value_t = 1000)]
    pub bindings: usize,
}

const REGIONS: [&str; 12] = [
    "us-east-1",
    "us-west-2",
    "eu-west-1",
    "eu-central-1",
    "ap-south-1",
    "ap-northeast-1",
    "sa-east-1",
    "ca-central-1",
    "me-south-1",
    "af-south-1",
    "eu-north-1",
    "ap-southeast-2",
];
const PROVIDERS: [&str; 4] = ["aws", "gcp", "azure", "onprem"];
const KINDS: [&str; 5] =
    ["duplicated", "static weights", "available replicas", "aggregated", "spread by region"];

/// A small deterministic generator, so every run measures the same fleet.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn api_enablements(with_apps: bool) -> Vec<ApiEnablement> {
    let mut list = vec![
        ("v1", &["configmaps", "namespaces", "pods", "secrets", "serviceaccounts", "services"][..]),
        ("batch/v1", &["cronjobs", "jobs"][..]),
        ("networking.k8s.io/v1", &["ingresses", "networkpolicies"][..]),
        (
            "rbac.authorization.k8s.io/v1",
            &["clusterrolebindings", "clusterroles", "rolebindings", "roles"][..],
        ),
        ("policy/v1beta1", &["poddisruptionbudgets", "podsecuritypolicies"][..]),
        ("autoscaling/v2beta2", &["horizontalpodautoscalers"][..]),
        ("storage.k8s.io/v1", &["storageclasses", "volumeattachments"][..]),
        ("coordination.k8s.io/v1", &["leases"][..]),
        ("discovery.k8s.io/v1beta1", &["endpointslices"][..]),
        ("apiextensions.k8s.io/v1", &["customresourcedefinitions"][..]),
        ("scheduling.k8s.io/v1", &["priorityclasses"][..]),
        ("node.k8s.io/v1", &["runtimeclasses"][..]),
    ];
    if with_apps {
        list.push(("apps/v1", &["daemonsets", "deployments", "replicasets", "statefulsets"][..]));
    }
    list.sort_by_key(|(gv, _)| *gv);
    list.into_iter()
        .map(|(gv, resources)| ApiEnablement {
            group_version: gv.to_string(),
            resources: resources.iter().map(|r| r.to_string()).collect(),
        })
        .collect()
}

/// A fleet of `n` clusters: 12 regions over 4 providers, 3 zones each,
/// prod/staging/dev, a few tainted (unreachable, maintenance), a few
/// without apps/v1 or not reporting yet, 3-50 nodes of varied size at
/// 10-90% allocated.
pub fn synthetic_clusters(n: usize, now: Timestamp) -> Vec<ClusterSnapshot> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let with_apps = api_enablements(true);
    let without_apps = api_enablements(false);
    let label = |field: &str| cluster_field_label(field).unwrap_or(field).to_string();
    (0..n)
        .map(|i| {
            let region_index = rng.below(REGIONS.len() as u64) as usize;
            let region = REGIONS[region_index];
            let zone = format!("{region}{}", ["a", "b", "c"][rng.below(3) as usize]);
            let env = match rng.below(10) {
                0..=5 => "prod",
                6..=8 => "staging",
                _ => "dev",
            };
            let mut labels: BTreeMap<String, String> = [
                (label("region"), region.to_string()),
                (label("zone"), zone),
                (label("provider"), PROVIDERS[region_index % PROVIDERS.len()].to_string()),
                ("env".to_string(), env.to_string()),
            ]
            .into();
            if rng.below(20) == 0 {
                labels.insert("accelerator".into(), "gpu".into());
            }
            let mut taints = Vec::new();
            let roll = rng.below(100);
            let taint = |key: &str, effect| Taint {
                key: key.into(),
                value: None,
                effect,
                time_added: now.checked_sub(SignedDuration::from_secs(100)).ok().map(Time),
            };
            match roll {
                0..=1 => {
                    taints.push(taint(flotilla_api::cluster::taints::UNREACHABLE, TaintEffect::NoExecute))
                }
                2..=4 => taints.push(taint("maintenance", TaintEffect::NoSchedule)),
                5 => taints.push(taint("spot", TaintEffect::PreferNoSchedule)),
                _ => {}
            }
            let api_enablements = match rng.below(200) {
                0 => Vec::new(),
                1..=4 => without_apps.clone(),
                _ => with_apps.clone(),
            };
            let nodes = 3 + rng.below(48) as u128;
            let cpu_per_node = [8_000u128, 16_000, 32_000][rng.below(3) as usize];
            let mem_per_node = [32u128 << 30, 64 << 30, 128 << 30][rng.below(3) as usize];
            let used_percent = 10 + rng.below(81) as u128;
            let allocatable: BTreeMap<String, u128> = [
                ("cpu".to_string(), nodes * cpu_per_node),
                ("memory".to_string(), nodes * mem_per_node),
                ("pods".to_string(), nodes * 110),
            ]
            .into();
            let allocated = allocatable.iter().map(|(k, v)| (k.clone(), v * used_percent / 100)).collect();
            ClusterSnapshot {
                name: format!("member-{i:05}"),
                labels,
                taints,
                api_enablements,
                allocatable,
                allocated,
                schedulable: rng.below(200) != 0,
                available_since: None,
                nodes: None,
            }
        })
        .collect()
}

fn divided(preference: ReplicaDivisionPreference, weights: Option<ClusterPreferences>) -> Placement {
    Placement {
        replica_scheduling: Some(ReplicaSchedulingStrategy {
            replica_scheduling_type: Some(ReplicaSchedulingType::Divided),
            replica_division_preference: Some(preference),
            weight_preference: weights,
        }),
        ..Default::default()
    }
}

fn field(key: &str, values: &[&str]) -> FieldSelector {
    FieldSelector {
        match_expressions: vec![FieldSelectorRequirement {
            key: key.into(),
            operator: FieldSelectorOperator::In,
            values: values.iter().map(|v| v.to_string()).collect(),
        }],
    }
}

fn env_in(values: &[&str]) -> ClusterAffinity {
    ClusterAffinity {
        label_selector: Some(LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "env".into(),
                operator: "In".into(),
                values: Some(values.iter().map(|v| v.to_string()).collect()),
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The placement of binding kind `kind` (an index into `KINDS`), varied by `seed`.
fn placement(kind: usize, seed: usize) -> Placement {
    let tolerate_unreachable = vec![Toleration {
        key: Some("cluster.karmada.io/unreachable".into()),
        operator: Some("Exists".into()),
        effect: Some("NoExecute".into()),
        toleration_seconds: Some(300),
        value: None,
    }];
    let region = |k: usize| REGIONS[(seed + k) % REGIONS.len()];
    match kind {
        0 => Placement {
            cluster_affinity: Some(env_in(&["prod"])),
            cluster_tolerations: tolerate_unreachable,
            ..Default::default()
        },
        1 => Placement {
            cluster_affinity: Some(ClusterAffinity {
                field_selector: Some(field("provider", &["aws", "gcp"])),
                ..Default::default()
            }),
            ..divided(
                ReplicaDivisionPreference::Weighted,
                Some(ClusterPreferences {
                    static_weight_list: vec![
                        StaticClusterWeight {
                            target_cluster: ClusterAffinity {
                                field_selector: Some(field("region", &[region(0), region(1)])),
                                ..Default::default()
                            },
                            weight: 1,
                        },
                        StaticClusterWeight {
                            target_cluster: ClusterAffinity {
                                field_selector: Some(field("region", &[region(2)])),
                                ..Default::default()
                            },
                            weight: 2,
                        },
                        StaticClusterWeight { target_cluster: env_in(&["prod"]), weight: 3 },
                    ],
                    ..Default::default()
                }),
            )
        },
        2 => Placement {
            cluster_affinity: Some(env_in(&["prod", "staging"])),
            cluster_tolerations: tolerate_unreachable,
            ..divided(
                ReplicaDivisionPreference::Weighted,
                Some(ClusterPreferences {
                    dynamic_weight: Some(DynamicWeightFactor::AvailableReplicas),
                    ..Default::default()
                }),
            )
        },
        3 => Placement {
            cluster_affinity: Some(ClusterAffinity {
                field_selector: Some(field("region", &[region(0), region(3), region(6)])),
                ..Default::default()
            }),
            ..divided(ReplicaDivisionPreference::Aggregated, None)
        },
        _ => Placement {
            spread_constraints: vec![
                SpreadConstraint {
                    spread_by_field: Some(SpreadByField::Region),
                    min_groups: 2,
                    max_groups: 3,
                    ..Default::default()
                },
                SpreadConstraint {
                    spread_by_field: Some(SpreadByField::Cluster),
                    min_groups: 3,
                    max_groups: 10,
                    ..Default::default()
                },
            ],
            ..divided(
                ReplicaDivisionPreference::Weighted,
                Some(ClusterPreferences {
                    dynamic_weight: Some(DynamicWeightFactor::AvailableReplicas),
                    ..Default::default()
                }),
            )
        },
    }
}

fn requests(kind: usize) -> BTreeMap<String, Quantity> {
    let (cpu, memory) = match kind {
        3 => ("2", "4Gi"),
        0 | 1 => ("100m", "128Mi"),
        _ => ("500m", "512Mi"),
    };
    [("cpu".to_string(), Quantity(cpu.into())), ("memory".to_string(), Quantity(memory.into()))].into()
}

/// CPU time of the calling thread: unlike wall time it leaves out the
/// time other processes held the CPU, which on a busy machine is most
/// of the tail.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime only writes the timespec we pass.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

#[derive(Default, Clone)]
struct Samples {
    wall: Vec<Duration>,
    cpu: Vec<Duration>,
    unschedulable: usize,
}

fn line(label: &str, samples: &Samples) -> String {
    let (mut wall, mut cpu) = (samples.wall.clone(), samples.cpu.clone());
    wall.sort();
    cpu.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    format!(
        "  {label:<20} wall p50 {:>7.3}  p99 {:>7.3}  max {:>7.3} ms | cpu p50 {:>7.3}  p99 {:>7.3}  max {:>7.3} ms \
         (n={}, unschedulable {})",
        ms(crate::measure::percentile(&wall, 0.50)),
        ms(crate::measure::percentile(&wall, 0.99)),
        ms(wall.last().copied().unwrap_or_default()),
        ms(crate::measure::percentile(&cpu, 0.50)),
        ms(crate::measure::percentile(&cpu, 0.99)),
        ms(cpu.last().copied().unwrap_or_default()),
        wall.len(),
        samples.unschedulable,
    )
}

pub fn run(args: SchedulingArgs) -> anyhow::Result<bool> {
    if args.bindings == 0 || args.clusters.is_empty() {
        anyhow::bail!("--bindings and --clusters must not be empty");
    }
    let now = Timestamp::now();
    println!(
        "scheduler: one `schedule` call per binding, first placement then a scale-up (+5) from it; \
         bindings rotate over {}",
        KINDS.join(", ")
    );
    for &n in &args.clusters {
        let clusters = synthetic_clusters(n, now);
        let mut per_kind: Vec<Samples> = vec![Samples::default(); KINDS.len()];
        for b in 0..args.bindings {
            let kind = b % KINDS.len();
            let placement = placement(kind, b);
            let requests = requests(kind);
            let replicas = 3 + (b % 97) as i32;
            let mut previous: Vec<TargetCluster> = Vec::new();
            for (round, replicas) in [replicas, replicas + 5].into_iter().enumerate() {
                let req = SchedulingRequest {
                    placement: &placement,
                    replicas,
                    requests: &requests,
                    node_constraints: &flotilla_apps_core::estimator::UNCONSTRAINED,
                    resource: Some(("apps/v1", "deployments")),
                    previous: &previous,
                    caps: &BTreeMap::new(),
                    now,
                };
                let cpu_start = thread_cpu_time();
                let started = Instant::now();
                let result = black_box(schedule(black_box(&req), black_box(&clusters)));
                let took = started.elapsed();
                let cpu = thread_cpu_time().saturating_sub(cpu_start);
                let samples = &mut per_kind[kind];
                samples.wall.push(took);
                samples.cpu.push(cpu);
                match result {
                    Ok(scheduled) if round == 0 => previous = scheduled.clusters,
                    Ok(_) => {}
                    Err(_) => samples.unschedulable += 1,
                }
            }
        }
        println!("{n} clusters, {} bindings x 2 calls:", args.bindings);
        let all = Samples {
            wall: per_kind.iter().flat_map(|s| s.wall.iter().copied()).collect(),
            cpu: per_kind.iter().flat_map(|s| s.cpu.iter().copied()).collect(),
            unschedulable: per_kind.iter().map(|s| s.unschedulable).sum(),
        };
        println!("{}", line("all", &all));
        for (kind, samples) in per_kind.iter().enumerate() {
            println!("{}", line(KINDS[kind], samples));
        }
    }
    Ok(true)
}
