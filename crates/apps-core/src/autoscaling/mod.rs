//! FederatedHPA decisions: HPA v2's algorithm on the usage the members'
//! agents report for the target's pods, fleet-wide. `replicas` is the
//! metric calculation, `behavior` the stabilisation windows and scaling
//! policies, `usage` what an agent reports; [`decide`] is one sync.

pub mod behavior;
pub mod replicas;
pub mod usage;

use flotilla_api::autoscaling::{
    conditions, ClusterUsage, FederatedHPASpec, MetricStatus, TimedReplicas, WorkloadUsage,
};
use flotilla_core::conditions::Wanted;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use behavior::Timed;

/// Most recommendations and scale events kept in status.
pub const HISTORY_LIMIT: usize = 100;
/// A cluster's report older than this (by its metrics' timestamp) is not
/// used: its agent is away or its metrics-server stopped.
pub const STALE_AFTER_SECONDS: i64 = 180;

/// What one sync knows.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    pub spec: &'a FederatedHPASpec,
    /// The target's `spec.replicas` (its `/scale`).
    pub current: i32,
    /// Every cluster the target is bound to, with its Work's report (None:
    /// no report yet).
    pub clusters: Vec<(String, Option<WorkloadUsage>)>,
    pub recommendations: &'a [TimedReplicas],
    pub scale_events: &'a [TimedReplicas],
    pub now: Time,
}

/// An Event to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub warning: bool,
    pub reason: &'static str,
    pub message: String,
}

/// One sync's decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The replicas the target should have; scale when it differs from
    /// the current count.
    pub desired: i32,
    /// Why (for the `SuccessfulRescale` Event), when it differs.
    pub rescale_reason: String,
    pub able_to_scale: Wanted,
    pub scaling_active: Wanted,
    /// Absent when the metrics were not read (HPA leaves it as it was).
    pub scaling_limited: Option<Wanted>,
    pub current_metrics: Vec<MetricStatus>,
    pub clusters: Vec<ClusterUsage>,
    pub recommendations: Vec<TimedReplicas>,
    /// The scale events to keep if the scale to `desired` succeeds.
    pub scale_events_after_scale: Vec<TimedReplicas>,
    pub events: Vec<Event>,
}

impl Decision {
    pub fn scales(&self, current: i32) -> bool {
        self.desired != current
    }
}

fn wanted(type_: &str, ok: bool, reason: &str, message: impl Into<String>) -> Wanted {
    Wanted::new(type_, ok, reason, message)
}

fn timed(list: &[TimedReplicas]) -> Vec<Timed> {
    list.iter().map(|t| Timed { replicas: t.replicas, at: t.time.0.as_second() }).collect()
}

fn untimed(list: Vec<Timed>) -> Vec<TimedReplicas> {
    list.into_iter()
        .filter_map(|t| {
            let time = k8s_openapi::jiff::Timestamp::from_second(t.at).ok()?;
            Some(TimedReplicas { replicas: t.replicas, time: Time(time) })
        })
        .collect()
}

/// One sync of a FederatedHPA, as HPA v2's `reconcileAutoscaler`.
pub fn decide(input: &Input) -> Decision {
    let spec = input.spec;
    let now = input.now.0.as_second();
    let (min, max, current) = (spec.min(), spec.max_replicas, input.current);
    let up = behavior::scale_up(spec.behavior.as_ref());
    let down = behavior::scale_down(spec.behavior.as_ref());
    let events_now = timed(input.scale_events);
    let mut events = Vec::new();

    // Fresh reports, and the clusters without one.
    let mut clusters = Vec::new();
    let mut fresh_usages = Vec::new();
    let mut unreported = Vec::new();
    for (cluster, report) in &input.clusters {
        let fresh = report.as_ref().filter(|u| {
            u.metrics_time.as_ref().is_some_and(|t| t.0.as_second() > now - STALE_AFTER_SECONDS)
                || u.pods == 0
        });
        match fresh {
            Some(u) => {
                fresh_usages.push(u.clone());
                clusters.push(ClusterUsage { cluster: cluster.clone(), usage: u.clone() });
            }
            None => {
                let why = report.as_ref().map(|u| u.message.as_str()).filter(|m| !m.is_empty());
                unreported.push(match why {
                    Some(why) => format!("{cluster} ({why})"),
                    None => cluster.clone(),
                });
                if let Some(u) = report {
                    clusters.push(ClusterUsage { cluster: cluster.clone(), usage: u.clone() });
                }
            }
        }
    }
    let usage = replicas::sum(&fresh_usages);

    let mut base = Decision {
        desired: current,
        rescale_reason: String::new(),
        able_to_scale: wanted(
            conditions::ABLE_TO_SCALE,
            true,
            "SucceededGetScale",
            "the HPA controller was able to get the target's current scale",
        ),
        scaling_active: wanted(conditions::SCALING_ACTIVE, true, "ValidMetricFound", ""),
        scaling_limited: None,
        current_metrics: Vec::new(),
        clusters,
        recommendations: input.recommendations.to_vec(),
        scale_events_after_scale: input.scale_events.to_vec(),
        events: Vec::new(),
    };

    if current == 0 && min != 0 {
        base.scaling_active = wanted(
            conditions::SCALING_ACTIVE,
            false,
            "ScalingDisabled",
            "scaling is disabled since the replica count of the target is zero",
        );
        return base;
    }
    let out_of_range = wanted(
        conditions::SCALING_ACTIVE,
        true,
        "ReplicasOutOfRange",
        format!("the target's {current} replicas are outside minReplicas {min} and maxReplicas {max}: brought within them before any metric is read"),
    );
    let (desired, reason) = if current > max {
        base.scaling_active = out_of_range;
        base.scaling_limited = Some(wanted(
            conditions::SCALING_LIMITED,
            true,
            "TooManyReplicas",
            "the desired replica count is more than the maximum replica count",
        ));
        (max, "Current number of replicas above Spec.MaxReplicas".to_string())
    } else if current < min {
        base.scaling_active = out_of_range;
        base.scaling_limited = Some(wanted(
            conditions::SCALING_LIMITED,
            true,
            "TooFewReplicas",
            "the desired replica count is less than the minimum replica count",
        ));
        (min, "Current number of replicas below Spec.MinReplicas".to_string())
    } else {
        let metrics = match replicas::metrics(&spec.metrics) {
            Ok(m) => m,
            Err(e) => {
                base.scaling_active =
                    wanted(conditions::SCALING_ACTIVE, false, "InvalidMetricSourceType", e.clone());
                base.events.push(Event { warning: true, reason: "InvalidMetricSourceType", message: e });
                return base;
            }
        };
        let computed = if usage.pods == 0 && unreported.is_empty() {
            Err(vec!["no pods of the target were reported by any member".to_string()])
        } else {
            replicas::replicas_for_metrics(&metrics, &usage, current)
        };
        // A cluster not reporting might want more: never scale down then.
        let computed = match computed {
            Ok((replicas, _, _)) if replicas < current && !unreported.is_empty() => {
                Err(vec![format!("no current usage from {}: not scaling down", unreported.join(", "))])
            }
            other => other,
        };
        match computed {
            Ok((recommended, metric_name, statuses)) => {
                base.current_metrics = statuses;
                base.scaling_active = wanted(
                    conditions::SCALING_ACTIVE,
                    true,
                    "ValidMetricFound",
                    format!("the HPA was able to successfully calculate a replica count from {metric_name}"),
                );
                let reason = if recommended > current {
                    format!("{metric_name} above target")
                } else {
                    "All metrics below target".to_string()
                };
                // Stabilise, remember, limit the rate.
                let recent = timed(input.recommendations);
                let (stabilized, why) = behavior::stabilize(&recent, recommended, current, &up, &down, now);
                base.recommendations =
                    untimed(behavior::remember(&recent, recommended, &up, &down, now, HISTORY_LIMIT));
                base.able_to_scale = match why {
                    Some((reason, message)) => wanted(conditions::ABLE_TO_SCALE, true, reason, message),
                    None => wanted(
                        conditions::ABLE_TO_SCALE,
                        true,
                        "ReadyForNewScale",
                        "recommended size matches current size",
                    ),
                };
                let (limited, limit_reason, limit_message) =
                    behavior::limit_rate(stabilized, current, min, max, &events_now, &up, &down, now);
                base.scaling_limited = Some(wanted(
                    conditions::SCALING_LIMITED,
                    limited != stabilized,
                    limit_reason,
                    limit_message,
                ));
                (limited, reason)
            }
            Err(errors) => {
                let message = errors.join("; ");
                base.scaling_active =
                    wanted(conditions::SCALING_ACTIVE, false, "FailedGetResourceMetric", message.clone());
                events.push(Event {
                    warning: true,
                    reason: "FailedGetResourceMetric",
                    message: message.clone(),
                });
                events.push(Event {
                    warning: true,
                    reason: "FailedComputeMetricsReplicas",
                    message: format!(
                        "invalid metrics ({} invalid out of {}), first error is: {}",
                        errors.len().min(metrics.len()),
                        metrics.len(),
                        errors[0]
                    ),
                });
                base.events = events;
                return base;
            }
        }
    };
    base.desired = desired;
    if desired != current {
        base.rescale_reason = reason;
        base.scale_events_after_scale =
            untimed(behavior::record_scale(&events_now, current, desired, &up, &down, now, HISTORY_LIMIT));
    }
    base.events = events;
    base
}

#[cfg(test)]
mod tests;
