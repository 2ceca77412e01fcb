//! HPA v2's `behavior` (`pkg/controller/podautoscaler/horizontal.go`):
//! stabilisation windows over recent recommendations, then the scaling
//! policies' rate limits and the min/max clamp. Times are Unix seconds.

use flotilla_api::autoscaling::{HPABehavior, HPAScalingRules};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Select {
    Max,
    Min,
    Disabled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    Pods,
    Percent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub kind: PolicyKind,
    pub value: i32,
    pub period_seconds: i64,
}

/// One direction's rules, HPA v2's defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    pub window_seconds: i64,
    pub select: Select,
    pub policies: Vec<Policy>,
}

/// Scale up: no window; the larger of +100% and +4 pods per 15 s.
pub fn scale_up(behavior: Option<&HPABehavior>) -> Rules {
    let defaults = vec![
        Policy { kind: PolicyKind::Pods, value: 4, period_seconds: 15 },
        Policy { kind: PolicyKind::Percent, value: 100, period_seconds: 15 },
    ];
    rules(behavior.and_then(|b| b.scale_up.as_ref()), 0, defaults)
}

/// Scale down: a 300 s window; up to 100% per 15 s.
pub fn scale_down(behavior: Option<&HPABehavior>) -> Rules {
    let defaults = vec![Policy { kind: PolicyKind::Percent, value: 100, period_seconds: 15 }];
    rules(behavior.and_then(|b| b.scale_down.as_ref()), 300, defaults)
}

fn rules(given: Option<&HPAScalingRules>, window: i64, defaults: Vec<Policy>) -> Rules {
    let select = match given.and_then(|g| g.select_policy.as_deref()) {
        Some("Min") => Select::Min,
        Some("Disabled") => Select::Disabled,
        _ => Select::Max,
    };
    let policies = match given.map(|g| &g.policies) {
        Some(policies) if !policies.is_empty() => policies
            .iter()
            .map(|p| Policy {
                kind: if p.type_ == "Pods" { PolicyKind::Pods } else { PolicyKind::Percent },
                value: p.value,
                period_seconds: i64::from(p.period_seconds),
            })
            .collect(),
        _ => defaults,
    };
    let window_seconds = given.and_then(|g| g.stabilization_window_seconds).map_or(window, i64::from);
    Rules { window_seconds, select, policies }
}

/// A replica count (or a signed change) at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timed {
    pub replicas: i32,
    pub at: i64,
}

/// HPA's `stabilizeRecommendationWithBehaviors`: scale up only to the
/// lowest recommendation of the up window, down only to the highest of the
/// down window (`desired` is this sync's recommendation, not yet in
/// `recent`). The stabilised count, and the reason and message when it
/// differs from `desired`.
pub fn stabilize(
    recent: &[Timed],
    desired: i32,
    current: i32,
    up: &Rules,
    down: &Rules,
    now: i64,
) -> (i32, Option<(&'static str, &'static str)>) {
    let (mut up_recommendation, mut down_recommendation) = (desired, desired);
    for r in recent {
        if r.at > now - up.window_seconds {
            up_recommendation = up_recommendation.min(r.replicas);
        }
        if r.at > now - down.window_seconds {
            down_recommendation = down_recommendation.max(r.replicas);
        }
    }
    let stabilized = current.max(up_recommendation).min(down_recommendation);
    let why = if stabilized == desired {
        None
    } else if stabilized < desired {
        Some((
            "ScaleUpStabilized",
            "recent recommendations were lower than current one, applying the lowest recent recommendation",
        ))
    } else {
        Some((
            "ScaleDownStabilized",
            "recent recommendations were higher than current one, applying the highest recent recommendation",
        ))
    };
    (stabilized, why)
}

/// The recommendations to keep: `recent` plus this one, less those no
/// future stabilisation can read: out of both windows, or dominated in
/// each window they are still in (a newer one at least as high counts
/// for longer in the down window, one at most as low in the up window).
/// Exact, so a steady load keeps a short list whatever the windows; at
/// most `limit` (the newest) as a last resort.
pub fn remember(
    recent: &[Timed],
    desired: i32,
    up: &Rules,
    down: &Rules,
    now: i64,
    limit: usize,
) -> Vec<Timed> {
    let mut all: Vec<Timed> = recent.to_vec();
    all.push(Timed { replicas: desired, at: now });
    let needed = |i: usize, e: &Timed| {
        let newer = &all[i + 1..];
        let in_up = up.window_seconds > 0 && e.at > now - up.window_seconds;
        let in_down = down.window_seconds > 0 && e.at > now - down.window_seconds;
        newer.is_empty()
            || (in_up && !newer.iter().any(|n| n.replicas <= e.replicas))
            || (in_down && !newer.iter().any(|n| n.replicas >= e.replicas))
    };
    let mut kept: Vec<Timed> =
        all.iter().enumerate().filter(|(i, e)| needed(*i, e)).map(|(_, e)| *e).collect();
    let excess = kept.len().saturating_sub(limit);
    kept.drain(..excess);
    kept
}

/// The scale events to keep after changing `from` to `to`: within the
/// longest policy period, at most `limit`.
pub fn record_scale(
    events: &[Timed],
    from: i32,
    to: i32,
    up: &Rules,
    down: &Rules,
    now: i64,
    limit: usize,
) -> Vec<Timed> {
    let period = up.policies.iter().chain(&down.policies).map(|p| p.period_seconds).max().unwrap_or(0);
    keep(events, Timed { replicas: to - from, at: now }, period, now, limit)
}

fn keep(old: &[Timed], new: Timed, window: i64, now: i64, limit: usize) -> Vec<Timed> {
    let mut kept: Vec<Timed> = old.iter().copied().filter(|t| t.at > now - window).collect();
    kept.push(new);
    let excess = kept.len().saturating_sub(limit);
    kept.drain(..excess);
    kept
}

/// Replicas added (`up`) or removed in the last `period` seconds.
fn changed_in_period(events: &[Timed], period: i64, now: i64, up: bool) -> i32 {
    events
        .iter()
        .filter(|e| e.at > now - period)
        .map(|e| if up { e.replicas.max(0) } else { (-e.replicas).max(0) })
        .sum()
}

/// HPA's `calculateScaleUpLimitWithScalingRules`.
pub fn scale_up_limit(current: i32, events: &[Timed], rules: &Rules, now: i64) -> i32 {
    let (mut result, pick): (i64, fn(i64, i64) -> i64) = match rules.select {
        Select::Disabled => return current,
        Select::Min => (i64::from(i32::MAX), i64::min),
        Select::Max => (i64::from(i32::MIN), i64::max),
    };
    for policy in &rules.policies {
        let start =
            i64::from(current) - i64::from(changed_in_period(events, policy.period_seconds, now, true));
        let proposed = match policy.kind {
            PolicyKind::Pods => start + i64::from(policy.value),
            PolicyKind::Percent => (start as f64 * (1.0 + f64::from(policy.value) / 100.0)).ceil() as i64,
        };
        result = pick(result, proposed);
    }
    clamp_i32(result)
}

/// HPA's `calculateScaleDownLimitWithBehaviors`.
pub fn scale_down_limit(current: i32, events: &[Timed], rules: &Rules, now: i64) -> i32 {
    let (mut result, pick): (i64, fn(i64, i64) -> i64) = match rules.select {
        Select::Disabled => return current,
        // The policy allowing the smallest change: the highest floor.
        Select::Min => (i64::from(i32::MIN), i64::max),
        Select::Max => (i64::from(i32::MAX), i64::min),
    };
    for policy in &rules.policies {
        let start =
            i64::from(current) + i64::from(changed_in_period(events, policy.period_seconds, now, false));
        let proposed = match policy.kind {
            PolicyKind::Pods => start - i64::from(policy.value),
            PolicyKind::Percent => (start as f64 * (1.0 - f64::from(policy.value) / 100.0)) as i64,
        };
        result = pick(result, proposed);
    }
    clamp_i32(result)
}

fn clamp_i32(v: i64) -> i32 {
    i32::try_from(v.clamp(i64::from(i32::MIN), i64::from(i32::MAX))).unwrap_or(0)
}

/// HPA's `convertDesiredReplicasWithBehaviorRate`: `desired` limited by the
/// policies' rates and by min/max, with the reason and message for
/// `ScalingLimited`.
#[allow(clippy::too_many_arguments)]
pub fn limit_rate(
    desired: i32,
    current: i32,
    min: i32,
    max: i32,
    events: &[Timed],
    up: &Rules,
    down: &Rules,
    now: i64,
) -> (i32, &'static str, &'static str) {
    if desired > current {
        let limit = scale_up_limit(current, events, up, now).max(current);
        let (allowed, reason, message) = if max > limit {
            (
                limit,
                "ScaleUpLimit",
                "the desired replica count is increasing faster than the maximum scale rate",
            )
        } else {
            (max, "TooManyReplicas", "the desired replica count is more than the maximum replica count")
        };
        if desired > allowed {
            return (allowed, reason, message);
        }
    } else if desired < current {
        let limit = scale_down_limit(current, events, down, now).min(current);
        let (allowed, reason, message) = if min < limit {
            (
                limit,
                "ScaleDownLimit",
                "the desired replica count is decreasing faster than the maximum scale rate",
            )
        } else {
            (min, "TooFewReplicas", "the desired replica count is less than the minimum replica count")
        };
        if desired < allowed {
            return (allowed, reason, message);
        }
    }
    (desired, "DesiredWithinRange", "the desired count is within the acceptable range")
}
