//! CronFederatedHPA decisions: which rule's tick is due now, what it sets,
//! the history it leaves and the status conditions.
//!
//! The status is the record. A rule's `nextExecutionTime` is the first tick
//! it announced: only a tick at or after it runs, and only one newer than
//! every tick already recorded, so deciding twice, or after a hub restart,
//! runs nothing twice. A rule seen for the first time (or resumed from
//! suspension) announces its next tick and runs nothing at once. After an
//! outage only the most recent missed tick counts: it runs when it is at
//! most [`MAX_LATENESS`] old, and is otherwise recorded as a failed
//! execution saying it was skipped; older missed ticks are never replayed.

use std::time::Duration;

use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;
use flotilla_api::cron_hpa::{
    conditions, CronFederatedHPASpec, CronRule, ExecutionHistory, FailedExecution, SuccessfulExecution,
    FEDERATED_HPA_KIND,
};
use flotilla_core::conditions::Wanted;
use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// How late a tick may run. A tick found later than this (the hub was down)
/// is recorded as skipped instead: scaling to an hour-old plan is more
/// likely wrong than right, and the next tick comes anyway.
pub const MAX_LATENESS: Duration = Duration::from_secs(300);

/// Zone of a rule without `timeZone`.
pub const DEFAULT_ZONE: &str = "UTC";

/// What a rule sets at its tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// A workload's replicas (through `/scale`).
    Replicas(i32),
    /// A FederatedHPA's bounds (each only when given).
    Bounds { min: Option<i32>, max: Option<i32> },
}

impl Scale {
    /// `replicas to 5`, `minReplicas to 2 and maxReplicas to 10`.
    pub fn describe(&self) -> String {
        match self {
            Scale::Replicas(n) => format!("replicas to {n}"),
            Scale::Bounds { min, max } => {
                let parts: Vec<String> = [("minReplicas", min), ("maxReplicas", max)]
                    .into_iter()
                    .filter_map(|(field, v)| v.map(|v| format!("{field} to {v}")))
                    .collect();
                parts.join(" and ")
            }
        }
    }

    /// The JSON merge patch it makes on the target: on `/scale` for a
    /// workload, on the object for a FederatedHPA.
    pub fn merge_patch(&self) -> serde_json::Value {
        match *self {
            Scale::Replicas(n) => serde_json::json!({"spec": {"replicas": n}}),
            Scale::Bounds { min, max } => {
                let mut spec = serde_json::Map::new();
                if let Some(min) = min {
                    spec.insert("minReplicas".into(), min.into());
                }
                if let Some(max) = max {
                    spec.insert("maxReplicas".into(), max.into());
                }
                serde_json::json!({ "spec": spec })
            }
        }
    }
}

/// Whether the target is a FederatedHPA (else a workload with `/scale`).
pub fn targets_federated_hpa(spec: &CronFederatedHPASpec) -> bool {
    spec.scale_target_ref.kind == FEDERATED_HPA_KIND
}

/// Parses a schedule: 5 fields (minute resolution), 6 with seconds first,
/// or a nickname (`@hourly`, ...).
pub fn parse_schedule(expression: &str) -> Result<Cron, String> {
    let fields = expression.split_whitespace().count();
    if !expression.trim_start().starts_with('@') && !(5..=6).contains(&fields) {
        return Err(format!(
            "{fields} fields; use 5 (minute hour day-of-month month day-of-week) or 6 (seconds first)"
        ));
    }
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
        .parse(expression)
        .map_err(|e| e.to_string())
}

/// The zone name a rule is read in.
pub fn zone_name(rule: &CronRule) -> &str {
    rule.time_zone.as_deref().filter(|z| !z.is_empty()).unwrap_or(DEFAULT_ZONE)
}

fn whole(z: &Zoned) -> Option<Timestamp> {
    Timestamp::from_second(z.timestamp().as_second()).ok()
}

/// The first tick strictly after `after`, read in `zone`.
pub fn next_tick(cron: &Cron, zone: &TimeZone, after: Timestamp) -> Option<Timestamp> {
    cron.find_next_occurrence(&after.to_zoned(zone.clone()), false).ok().as_ref().and_then(whole)
}

/// The most recent tick at or before `now`, read in `zone`.
pub fn latest_tick(cron: &Cron, zone: &TimeZone, now: Timestamp) -> Option<Timestamp> {
    cron.find_previous_occurrence(&now.to_zoned(zone.clone()), true).ok().as_ref().and_then(whole)
}

/// What one rule asks for now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleStep {
    /// Nothing due; the next tick (None: suspended).
    Wait { next: Option<Timestamp> },
    /// `tick` is due: apply `scale`, record it, wait for `next`.
    Run { tick: Timestamp, scale: Scale, next: Option<Timestamp> },
    /// `tick` was missed by more than [`MAX_LATENESS`]: record it as failed.
    Skip { tick: Timestamp, message: String, next: Option<Timestamp> },
    /// The rule cannot run (schedule, zone, or target fields).
    Invalid { message: String },
}

impl RuleStep {
    /// The next tick to announce in the history.
    pub fn next(&self) -> Option<Timestamp> {
        match self {
            RuleStep::Wait { next } | RuleStep::Run { next, .. } | RuleStep::Skip { next, .. } => *next,
            RuleStep::Invalid { .. } => None,
        }
    }
}

/// What a rule sets, or why it sets nothing (fields the CRD's rules
/// refuse, on an object stored before them).
pub fn scale_of(rule: &CronRule, federated_hpa: bool) -> Result<Scale, String> {
    match (federated_hpa, rule.target_replicas, rule.target_min_replicas, rule.target_max_replicas) {
        (false, Some(n), None, None) => Ok(Scale::Replicas(n)),
        (false, ..) => {
            Err(format!("rule {}: the target is a workload, so the rule sets targetReplicas only", rule.name))
        }
        (true, None, min, max) if min.is_some() || max.is_some() => Ok(Scale::Bounds { min, max }),
        (true, ..) => Err(format!(
            "rule {}: the target is a FederatedHPA, so the rule sets targetMinReplicas and/or \
             targetMaxReplicas, not targetReplicas",
            rule.name
        )),
    }
}

/// The newest tick recorded in a history (succeeded or failed).
pub fn last_recorded(history: &ExecutionHistory) -> Option<Timestamp> {
    let succeeded = history.successful_executions.iter().map(|e| e.schedule_time.0);
    let failed = history.failed_executions.iter().map(|e| e.schedule_time.0);
    succeeded.chain(failed).max()
}

/// What `rule` asks for at `now`. `zone` is the rule's zone as the tz
/// database resolved it (None: unknown); `history` its entry in the
/// status.
pub fn step(
    rule: &CronRule,
    federated_hpa: bool,
    zone: Option<&TimeZone>,
    history: Option<&ExecutionHistory>,
    now: Timestamp,
) -> RuleStep {
    let cron = match parse_schedule(&rule.schedule) {
        Ok(cron) => cron,
        Err(reason) => {
            return RuleStep::Invalid {
                message: format!(
                    "rule {}: schedule `{}` is not a valid cron expression: {reason}",
                    rule.name, rule.schedule
                ),
            }
        }
    };
    let Some(zone) = zone else {
        return RuleStep::Invalid {
            message: format!(
                "rule {}: time zone `{}` is not a known IANA time zone (e.g. UTC, Europe/Paris, \
                 America/New_York)",
                rule.name,
                zone_name(rule)
            ),
        };
    };
    let scale = match scale_of(rule, federated_hpa) {
        Ok(scale) => scale,
        Err(message) => return RuleStep::Invalid { message },
    };
    if rule.suspend {
        return RuleStep::Wait { next: None };
    }
    let next = next_tick(&cron, zone, now);
    // Nothing announced (new or resumed rule): only ticks from now on run.
    let Some(announced) = history.and_then(|h| h.next_execution_time.as_ref()).map(|t| t.0) else {
        return RuleStep::Wait { next };
    };
    let Some(tick) = latest_tick(&cron, zone, now) else { return RuleStep::Wait { next } };
    let done = history.and_then(last_recorded);
    if tick < announced || done.is_some_and(|d| tick <= d) {
        return RuleStep::Wait { next };
    }
    let late = now.duration_since(tick).unsigned_abs();
    if late > MAX_LATENESS {
        let message = format!(
            "skipped: the tick was found {}s late (the hub was not running?), more than the {}s a tick \
             may be late; only the most recent missed tick is considered, and the next one runs as usual",
            late.as_secs(),
            MAX_LATENESS.as_secs()
        );
        return RuleStep::Skip { tick, message, next };
    }
    RuleStep::Run { tick, scale, next }
}

/// What happened at a tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Succeeded { tick: Timestamp, scale: Scale },
    Failed { tick: Timestamp, message: String },
}

fn limit(n: i32) -> usize {
    usize::try_from(n).unwrap_or(0)
}

/// The rule's history after this reconcile: `next` announced, `outcome`
/// (if a tick was handled) added newest first, both lists trimmed to the
/// rule's limits.
pub fn record(
    rule: &CronRule,
    previous: Option<&ExecutionHistory>,
    next: Option<Timestamp>,
    outcome: Option<Outcome>,
    now: Timestamp,
) -> ExecutionHistory {
    let mut history = previous.cloned().unwrap_or_default();
    history.rule_name = rule.name.clone();
    history.next_execution_time = next.map(Time);
    let executed = Time(Timestamp::from_second(now.as_second()).unwrap_or(now));
    match outcome {
        Some(Outcome::Succeeded { tick, scale }) => {
            let (replicas, min, max) = match scale {
                Scale::Replicas(n) => (Some(n), None, None),
                Scale::Bounds { min, max } => (None, min, max),
            };
            history.successful_executions.insert(
                0,
                SuccessfulExecution {
                    schedule_time: Time(tick),
                    execution_time: executed,
                    applied_replicas: replicas,
                    applied_min_replicas: min,
                    applied_max_replicas: max,
                },
            );
        }
        Some(Outcome::Failed { tick, message }) => {
            history
                .failed_executions
                .insert(0, FailedExecution { schedule_time: Time(tick), execution_time: executed, message });
        }
        None => {}
    }
    history.successful_executions.sort_by_key(|e| std::cmp::Reverse(e.schedule_time.0));
    history.failed_executions.sort_by_key(|e| std::cmp::Reverse(e.schedule_time.0));
    history.successful_executions.truncate(limit(rule.successful_history_limit));
    history.failed_executions.truncate(limit(rule.failed_history_limit));
    history
}

/// The order to run due ticks in (indexes into `steps`): oldest tick
/// first, then spec order, so the most recent tick's target wins.
pub fn run_order(steps: &[RuleStep]) -> Vec<usize> {
    let mut due: Vec<(Timestamp, usize)> = steps
        .iter()
        .enumerate()
        .filter_map(|(i, s)| match s {
            RuleStep::Run { tick, .. } => Some((*tick, i)),
            _ => None,
        })
        .collect();
    due.sort();
    due.into_iter().map(|(_, i)| i).collect()
}

/// How long until the soonest announced tick (None: no rule will run
/// unless the object changes).
pub fn requeue_after(steps: &[RuleStep], now: Timestamp) -> Option<Duration> {
    let next = steps.iter().filter_map(RuleStep::next).min()?;
    let ms = next.as_millisecond().saturating_sub(now.as_millisecond()).max(0);
    Some(Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
}

/// The `Valid` and `Applied` conditions: `Valid` lists every invalid rule;
/// `Applied` is False while some rule's latest execution failed.
pub fn conditions(
    invalid: &[String],
    histories: &[ExecutionHistory],
    previous: &[Condition],
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    let now = Time(Timestamp::from_second(now.as_second()).unwrap_or(now));
    let valid = match invalid {
        [] => Wanted::new(
            conditions::VALID,
            true,
            "RulesValid",
            "every rule's schedule and time zone are valid",
        ),
        _ => Wanted::new(conditions::VALID, false, "InvalidRule", invalid.join("; ")),
    };
    let failing: Vec<String> = histories
        .iter()
        .filter_map(|h| {
            let failed = h.failed_executions.first()?;
            let newer_success =
                h.successful_executions.first().is_some_and(|s| s.schedule_time.0 > failed.schedule_time.0);
            (!newer_success).then(|| format!("rule {}: {}", h.rule_name, failed.message))
        })
        .collect();
    let applied = match failing.as_slice() {
        [] => Wanted::new(conditions::APPLIED, true, "Succeeded", "no rule's latest execution failed"),
        _ => Wanted::new(conditions::APPLIED, false, "ExecutionFailed", failing.join("; ")),
    };
    [valid, applied]
        .into_iter()
        .map(|w| flotilla_core::conditions::condition(previous, w.generation(generation), &now))
        .collect()
}

#[cfg(test)]
#[path = "cron_hpa_tests.rs"]
mod tests;
