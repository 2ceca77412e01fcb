//! HPA v2's replica calculation for Resource metrics
//! (`pkg/controller/podautoscaler/replica_calculator.go`), on the usage the
//! members' agents report, summed over the fleet: the average over all the
//! target's ready pods with metrics is the same sum whichever member they
//! run in.

use flotilla_api::autoscaling::{
    MetricSpec, MetricStatus, MetricValueStatus, ResourceMetricStatus, WorkloadUsage,
};
use flotilla_core::quantity;

/// HPA's default tolerance: no change while the usage ratio is within 10%
/// of 1.
pub const TOLERANCE: f64 = 0.1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Cpu,
    Memory,
}

impl Resource {
    pub fn name(self) -> &'static str {
        match self {
            Resource::Cpu => "cpu",
            Resource::Memory => "memory",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Percent of the pods' requests.
    Utilization(i64),
    /// Per pod: millicores for cpu, bytes for memory.
    AverageValue(i64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metric {
    pub resource: Resource,
    pub target: Target,
}

impl Metric {
    /// `cpu resource utilization (percentage of request)`, as HPA names it.
    pub fn describe(&self) -> String {
        match self.target {
            Target::Utilization(_) => {
                format!("{} resource utilization (percentage of request)", self.resource.name())
            }
            Target::AverageValue(_) => format!("{} resource", self.resource.name()),
        }
    }
}

/// HPA v2's default: 80% cpu utilisation.
pub const DEFAULT_METRIC: Metric = Metric { resource: Resource::Cpu, target: Target::Utilization(80) };

/// The metrics of a spec (the default when it lists none), or why one is
/// unusable (the API refuses these; a stored object may predate a rule).
pub fn metrics(specs: &[MetricSpec]) -> Result<Vec<Metric>, String> {
    if specs.is_empty() {
        return Ok(vec![DEFAULT_METRIC]);
    }
    specs.iter().map(metric).collect()
}

fn metric(spec: &MetricSpec) -> Result<Metric, String> {
    let Some(source) = spec.resource.as_ref().filter(|_| spec.type_ == "Resource") else {
        return Err(format!("metric type {:?} is not supported: only Resource (cpu, memory)", spec.type_));
    };
    let resource = match source.name.as_str() {
        "cpu" => Resource::Cpu,
        "memory" => Resource::Memory,
        other => return Err(format!("resource {other:?} is not supported: only cpu and memory")),
    };
    let target =
        match (source.target.type_.as_str(), source.target.average_utilization, &source.target.average_value)
        {
            ("Utilization", Some(percent), _) if percent > 0 => Target::Utilization(i64::from(percent)),
            ("AverageValue", _, Some(value)) => {
                let parsed = match resource {
                    Resource::Cpu => quantity::millicores(value),
                    Resource::Memory => quantity::units(value),
                }
                .map_err(|e| format!("{} averageValue: {e}", resource.name()))?;
                Target::AverageValue(i64::try_from(parsed).unwrap_or(i64::MAX).max(1))
            }
            (kind, _, _) => {
                return Err(format!(
                "{} target {kind:?} needs averageUtilization (Utilization) or averageValue (AverageValue)",
                resource.name()
            ))
            }
        };
    Ok(Metric { resource, target })
}

/// The fleet's usage: every cluster's summed.
pub fn sum<'a>(usages: impl IntoIterator<Item = &'a WorkloadUsage>) -> WorkloadUsage {
    let mut total = WorkloadUsage::default();
    for u in usages {
        total.pods += u.pods;
        total.ready_pods += u.ready_pods;
        total.pods_with_metrics += u.pods_with_metrics;
        total.cpu_usage_millicores += u.cpu_usage_millicores;
        total.cpu_requests_millicores += u.cpu_requests_millicores;
        total.memory_usage_bytes += u.memory_usage_bytes;
        total.memory_requests_bytes += u.memory_requests_bytes;
    }
    total
}

/// One metric's recommendation and what it read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recommendation {
    pub replicas: i32,
    pub status: MetricStatus,
}

/// HPA's `GetResourceReplicas` / `GetRawResourceReplicas` on the fleet's
/// usage. Ready pods without metrics count as at their request (or the
/// target, when it is higher) on a scale down and as idle on a scale up;
/// not-ready pods count as idle on a scale up and are ignored otherwise;
/// a recommendation that the missing pods would turn around keeps
/// `current`. Pods of a workload share a template, so a pod without
/// metrics is taken to request the average of those with.
pub fn replicas_for(metric: &Metric, usage: &WorkloadUsage, current: i32) -> Result<Recommendation, String> {
    let with_metrics = i64::from(usage.pods_with_metrics.max(0));
    if with_metrics == 0 {
        return Err(format!(
            "did not receive {} metrics for any ready pod of the target (pods might be unready)",
            metric.resource.name()
        ));
    }
    let (used, requested) = match metric.resource {
        Resource::Cpu => (usage.cpu_usage_millicores, usage.cpu_requests_millicores),
        Resource::Memory => (usage.memory_usage_bytes, usage.memory_requests_bytes),
    };
    let missing = i64::from((usage.ready_pods - usage.pods_with_metrics).max(0));
    let unready = i64::from((usage.pods - usage.ready_pods).max(0));
    let ready = with_metrics + missing;
    // ratio(used, requested, pods) and the status value it reads.
    let ratio_of = |used: i64, requested: i64, pods: i64| -> Result<(f64, MetricValueStatus), String> {
        match metric.target {
            Target::Utilization(target) => {
                if requested <= 0 {
                    return Err(format!(
                        "missing request for {} in the target's pods",
                        metric.resource.name()
                    ));
                }
                let utilization = used * 100 / requested;
                let status = MetricValueStatus {
                    average_utilization: Some(i32::try_from(utilization).unwrap_or(i32::MAX)),
                    average_value: Some(format_value(metric.resource, used / pods.max(1))),
                };
                Ok((utilization as f64 / target as f64, status))
            }
            Target::AverageValue(target) => {
                let average = used as f64 / pods.max(1) as f64;
                let status = MetricValueStatus {
                    average_utilization: None,
                    average_value: Some(format_value(metric.resource, used / pods.max(1))),
                };
                Ok((average / target as f64, status))
            }
        }
    };
    let (ratio, status) = ratio_of(used, requested, with_metrics)?;
    let status = MetricStatus {
        type_: "Resource".into(),
        resource: Some(ResourceMetricStatus { name: metric.resource.name().into(), current: status }),
    };
    let recommend = |replicas: i32| Recommendation { replicas, status: status.clone() };
    let scale_up_with_unready = unready > 0 && ratio > 1.0;
    if !scale_up_with_unready && missing == 0 {
        if (1.0 - ratio).abs() <= TOLERANCE {
            return Ok(recommend(current));
        }
        return Ok(recommend(ceil_replicas(ratio * ready as f64)));
    }
    // Fill in the pods without metrics conservatively and compute again.
    let per_pod_request = requested / with_metrics;
    let (mut used2, mut requested2, mut counted) = (used, requested, with_metrics);
    if missing > 0 {
        let per_pod_usage = if ratio < 1.0 {
            match metric.target {
                Target::Utilization(target) => per_pod_request * target.max(100) / 100,
                Target::AverageValue(target) => target,
            }
        } else {
            0
        };
        used2 += missing * per_pod_usage;
        requested2 += missing * per_pod_request;
        counted += missing;
    }
    if scale_up_with_unready {
        requested2 += unready * per_pod_request;
        counted += unready;
    }
    let (new_ratio, _) = ratio_of(used2, requested2, counted)?;
    if (1.0 - new_ratio).abs() <= TOLERANCE
        || (ratio < 1.0 && new_ratio > 1.0)
        || (ratio > 1.0 && new_ratio < 1.0)
    {
        return Ok(recommend(current));
    }
    let replicas = ceil_replicas(new_ratio * counted as f64);
    if (new_ratio < 1.0 && replicas > current) || (new_ratio > 1.0 && replicas < current) {
        return Ok(recommend(current));
    }
    Ok(recommend(replicas))
}

fn ceil_replicas(value: f64) -> i32 {
    // Float to int casts saturate; a ratio is never negative.
    value.ceil() as i32
}

fn format_value(resource: Resource, value: i64) -> String {
    let value = u128::try_from(value.max(0)).unwrap_or(0);
    match resource {
        Resource::Cpu => quantity::format_millicores(value),
        Resource::Memory => quantity::format_bytes(value),
    }
}

/// HPA's `computeReplicasForMetrics`: the largest recommendation, the
/// description of the metric that gave it, and every metric's status. An
/// error when no metric could be read, or when some could not and the
/// others would scale down (a metric unread might want more).
pub fn replicas_for_metrics(
    metrics: &[Metric],
    usage: &WorkloadUsage,
    current: i32,
) -> Result<(i32, String, Vec<MetricStatus>), Vec<String>> {
    let mut best: Option<(i32, String)> = None;
    let mut statuses = Vec::new();
    let mut errors = Vec::new();
    for metric in metrics {
        match replicas_for(metric, usage, current) {
            Ok(r) => {
                statuses.push(r.status);
                if best.as_ref().is_none_or(|(replicas, _)| r.replicas > *replicas) {
                    best = Some((r.replicas, metric.describe()));
                }
            }
            Err(e) => errors.push(e),
        }
    }
    match best {
        Some((replicas, name)) if errors.is_empty() || replicas >= current => Ok((replicas, name, statuses)),
        Some(_) => {
            errors.push(
                "some metrics could not be read and the others would scale down: not scaling down".into(),
            );
            Err(errors)
        }
        None => Err(errors),
    }
}
