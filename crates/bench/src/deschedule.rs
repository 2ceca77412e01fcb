//! `flotilla-bench deschedule`: the descheduling decision's time for a
//! binding spread over a synthetic fleet (goal: under 2 ms at 1,000
//! clusters), and of the capped division by available replicas after it.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use clap::Args;
use flotilla_api::policy::{
    ClusterPreferences, DynamicWeightFactor, Placement, ReplicaDivisionPreference, ReplicaSchedulingStrategy,
    ReplicaSchedulingType,
};
use flotilla_api::work::{DescheduledCluster, TargetCluster, UnschedulableReplicas};
use flotilla_apps_core::deschedule::{
    capacity_fingerprint, decide, ClusterReplicas, DescheduleInput, DEFAULT_UNSCHEDULABLE_THRESHOLD,
};
use flotilla_apps_core::scheduler::{schedule, SchedulingRequest};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::scheduling::synthetic_clusters;

#[derive(Args, Debug)]
pub struct DescheduleArgs {
    /// Fleet sizes to measure, comma-separated (the binding uses every
    /// cluster of the fleet).
    #[arg(long, value_delimiter = ',', default_values_t = [1000usize])]
    pub clusters: Vec<usize>,
    /// Decisions measured per fleet size.
    #[arg(long, default_value_t = 200)]
    pub rounds: usize,
}

fn placement() -> Placement {
    Placement {
        replica_scheduling: Some(ReplicaSchedulingStrategy {
            replica_scheduling_type: Some(ReplicaSchedulingType::Divided),
            replica_division_preference: Some(ReplicaDivisionPreference::Weighted),
            weight_preference: Some(ClusterPreferences {
                dynamic_weight: Some(DynamicWeightFactor::AvailableReplicas),
                ..Default::default()
            }),
        }),
        ..Default::default()
    }
}

fn line(label: &str, mut samples: Vec<Duration>) -> String {
    samples.sort_unstable();
    let ms = |d: Duration| format!("{:.3} ms", d.as_secs_f64() * 1000.0);
    format!(
        "  {label:<28} p50 {}  p99 {}  max {}  ({} runs)",
        ms(crate::measure::percentile(&samples, 0.50)),
        ms(crate::measure::percentile(&samples, 0.99)),
        ms(samples.last().copied().unwrap_or_default()),
        samples.len()
    )
}

pub fn run(args: DescheduleArgs) -> anyhow::Result<bool> {
    if args.rounds == 0 || args.clusters.is_empty() {
        anyhow::bail!("--rounds and --clusters must not be empty");
    }
    let now = Timestamp::now();
    let since = |seconds: i64| Time(now - SignedDuration::from_secs(seconds));
    println!(
        "descheduler: one `decide` per binding over every cluster of the fleet (10% stuck past the \
         threshold, 10% stuck but younger, 20% with an earlier record, half of those with a changed \
         capacity), then the capped `schedule` call it feeds"
    );
    let placement = placement();
    let requests: BTreeMap<String, Quantity> = [("cpu".to_string(), Quantity("100m".into()))].into();
    for &n in &args.clusters {
        let fleet = synthetic_clusters(n, now);
        let previous: Vec<TargetCluster> =
            fleet.iter().map(|c| TargetCluster { name: c.name.clone(), replicas: 4 }).collect();
        let stuck: Vec<Option<UnschedulableReplicas>> = (0..n)
            .map(|i| match i % 10 {
                0 => Some(UnschedulableReplicas { replicas: 2, since: since(600) }),
                1 => Some(UnschedulableReplicas { replicas: 1, since: since(30) }),
                _ => None,
            })
            .collect();
        let records: Vec<DescheduledCluster> = fleet
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 5 == 2)
            .map(|(i, c)| DescheduledCluster {
                cluster: c.name.clone(),
                keeps: 3,
                capacity: if i % 10 == 2 { capacity_fingerprint(c) } else { "changed".into() },
                time: since(900),
            })
            .collect();
        let clusters: Vec<ClusterReplicas> = previous
            .iter()
            .zip(&stuck)
            .map(|(t, u)| ClusterReplicas { name: &t.name, replicas: t.replicas, unschedulable: u.as_ref() })
            .collect();
        let mut decisions = Vec::with_capacity(args.rounds);
        let mut divisions = Vec::with_capacity(args.rounds);
        let mut moves = 0;
        let mut unschedulable = 0;
        for _ in 0..args.rounds {
            let input = DescheduleInput {
                clusters: &clusters,
                records: &records,
                fleet: &fleet,
                threshold: DEFAULT_UNSCHEDULABLE_THRESHOLD,
                now,
            };
            let started = Instant::now();
            let decided = black_box(decide(black_box(&input)));
            decisions.push(started.elapsed());
            moves = decided.moves.len();
            let request = SchedulingRequest {
                placement: &placement,
                replicas: i32::try_from(4 * n).unwrap_or(i32::MAX),
                requests: &requests,
                resource: Some(("apps/v1", "deployments")),
                previous: &previous,
                caps: &decided.caps,
                node_constraints: &flotilla_apps_core::estimator::UNCONSTRAINED,
                now,
            };
            let started = Instant::now();
            let result = black_box(schedule(black_box(&request), black_box(&fleet)));
            divisions.push(started.elapsed());
            if result.is_err() {
                unschedulable += 1;
            }
        }
        println!("{n} clusters ({moves} clusters give replicas away per decision):");
        println!("{}", line("decide", decisions));
        println!("{}", line("capped schedule after it", divisions));
        if unschedulable > 0 {
            println!("  ({unschedulable} of the capped divisions found no room for the moved replicas)");
        }
    }
    Ok(true)
}
