//! Karmada's application failover and purge modes, as pure decisions:
//!
//! - `detect`: which clusters' copies were `Unhealthy` (as their agents
//!   report on the Works) for longer than `decisionConditions.tolerationSeconds`
//!   and fail over now, from when each was first seen unhealthy;
//! - `application_task`: the graceful eviction task such a failover writes on
//!   the binding (reason `ApplicationFailure`), with the purge mode;
//! - `task_remains`: whether an eviction task (any producer) keeps its copy
//!   another pass, by its purge mode;
//! - `preserved_label_state`: `statePreservation` rules evaluated on the
//!   failed copy's status (a Kubernetes JSONPath subset);
//! - `carry_preserved_states` / `inject_labels`: which new copies carry those
//!   labels, and putting them on a manifest.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use flotilla_api::policy_failover::{
    ApplicationFailoverBehavior, FailoverBehavior, PreservedState, PurgeMode, StatePreservation,
    DEFAULT_GRACE_PERIOD_SECONDS,
};
use flotilla_api::work::{GracefulEvictionTask, Health, TargetCluster};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// Eviction task reason and producers (Karmada's names).
pub const REASON_APPLICATION_FAILURE: &str = "ApplicationFailure";
pub const PRODUCER_APPLICATION_FAILOVER: &str = "ApplicationFailover";
pub const PRODUCER_TAINT_MANAGER: &str = "TaintManager";

/// What `detect` found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Detection {
    /// Since when each cluster's copy has been seen unhealthy (the caller
    /// keeps it for the next pass).
    pub unhealthy_since: BTreeMap<String, Timestamp>,
    /// Clusters whose copy was unhealthy past the toleration.
    pub evict: Vec<String>,
    /// When the next of the others runs out, if any.
    pub recheck_after: Option<Duration>,
}

/// Application failover's decision, as Karmada's controller makes it: a
/// chosen cluster whose copy is `Unhealthy` starts its clock when first seen
/// so (or keeps the one it had); `Healthy` clears it; `Unknown` keeps it
/// without starting one (a gap in status reporting neither fails over nor
/// forgives). A copy unhealthy for longer than `toleration_seconds`
/// fails over. Clusters already being evicted are not in `health`.
pub fn detect(
    before: &BTreeMap<String, Timestamp>,
    health: &BTreeMap<String, Health>,
    toleration_seconds: i32,
    now: Timestamp,
) -> Detection {
    let toleration = SignedDuration::from_secs(i64::from(toleration_seconds.max(0)));
    let mut out = Detection::default();
    for (cluster, health) in health {
        let since = match (health, before.get(cluster)) {
            (Health::Healthy, _) | (Health::Unknown, None) => continue,
            (Health::Unknown, Some(since)) => *since,
            (Health::Unhealthy, since) => since.copied().unwrap_or(now),
        };
        out.unhealthy_since.insert(cluster.clone(), since);
        let deadline = since.checked_add(toleration).unwrap_or(Timestamp::MAX);
        if *health == Health::Unhealthy && now > deadline {
            out.evict.push(cluster.clone());
        } else if *health == Health::Unhealthy {
            // Just past the deadline: the check is `now > deadline`.
            let left = Duration::try_from(deadline.duration_since(now)).unwrap_or(Duration::ZERO)
                + Duration::from_millis(200);
            out.recheck_after = Some(out.recheck_after.map_or(left, |r| r.min(left)));
        }
    }
    out
}

/// The eviction task of an application failover from `cluster`.
pub fn application_task(
    cluster: &TargetCluster,
    behavior: &ApplicationFailoverBehavior,
    preserved: BTreeMap<String, String>,
    clusters_before: &[TargetCluster],
    now: Timestamp,
) -> GracefulEvictionTask {
    let mode = behavior.purge_mode();
    GracefulEvictionTask {
        from_cluster: cluster.name.clone(),
        replicas: cluster.replicas,
        reason: REASON_APPLICATION_FAILURE.into(),
        message: format!(
            "the application was unhealthy in {} for more than {} s",
            cluster.name,
            behavior.toleration_seconds()
        ),
        creation_timestamp: Time(now),
        producer: PRODUCER_APPLICATION_FAILOVER.into(),
        purge_mode: Some(mode),
        grace_period_seconds: mode
            .is_graceful()
            .then(|| behavior.grace_period_seconds.unwrap_or(DEFAULT_GRACE_PERIOD_SECONDS)),
        suppress_deletion: (mode == PurgeMode::Never).then_some(true),
        clusters_before_failover: clusters_before.iter().map(|c| c.name.clone()).collect(),
        preserved_label_state: preserved,
    }
}

/// Whether an eviction task keeps its copy another pass (the caller has
/// already dropped tasks whose cluster is chosen again). `Never`
/// (`suppressDeletion: true`) keeps it until a person clears the flag; a
/// direct purge never keeps it; a graceful one until every new copy is
/// healthy or its grace period (default 600 s) passed.
pub fn task_remains(task: &GracefulEvictionTask, all_new_healthy: bool, now: Timestamp) -> bool {
    if task.suppress_deletion == Some(true) {
        return true;
    }
    if task.purge_mode.is_some_and(PurgeMode::is_direct) || all_new_healthy {
        return false;
    }
    let grace = i64::from(task.grace_period_seconds.unwrap_or(DEFAULT_GRACE_PERIOD_SECONDS).max(0));
    now.duration_since(task.creation_timestamp.0).as_secs() < grace
}

/// The labels `rules` read from a copy's `status`. Karmada's rule: a
/// failover waits until the state is there to be read; so an error names
/// what is missing, for the binding's status.
pub fn preserved_label_state(
    rules: &StatePreservation,
    status: Option<&serde_json::Value>,
) -> Result<BTreeMap<String, String>, String> {
    let Some(status) = status else {
        return Err("the application's status has not been reported from the cluster yet".into());
    };
    let mut out = BTreeMap::new();
    for rule in &rules.rules {
        let value = json_path(&rule.json_path, status).map_err(|e| {
            format!("statePreservation {:?} ({}): {e}", rule.alias_label_name, rule.json_path)
        })?;
        let text = match value {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Null => String::new(),
            other => other.to_string(),
        };
        if !is_label_value(&text) {
            return Err(format!(
                "statePreservation {:?}: {text:?} (from {}) cannot be a label value (at most 63 letters, \
                 digits, '-', '_' or '.', starting and ending with a letter or digit)",
                rule.alias_label_name, rule.json_path
            ));
        }
        out.insert(rule.alias_label_name.clone(), text);
    }
    Ok(out)
}

/// A Kubernetes JSONPath template reduced to what state preservation
/// needs: `{.a.b}`, `{.a[0].b}`, `{.a['b.c']}`, with or without the braces
/// and the leading dot. Filters, wildcards and ranges are refused.
pub fn json_path<'v>(path: &str, value: &'v serde_json::Value) -> Result<&'v serde_json::Value, String> {
    let trimmed = path.trim();
    let inner = trimmed.strip_prefix('{').and_then(|p| p.strip_suffix('}')).unwrap_or(trimmed).trim();
    let inner = inner.strip_prefix('$').unwrap_or(inner);
    let normalized = if inner.is_empty() || inner.starts_with(['.', '[']) {
        inner.to_string()
    } else {
        format!(".{inner}")
    };
    let mut rest = normalized.as_str();
    let mut here = value;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('[') {
            let end = after.find(']').ok_or("an unclosed '['")?;
            let inside = after[..end].trim();
            here = if let Some(key) = quoted(inside) {
                here.get(key).ok_or_else(|| format!("no field {key:?}"))?
            } else if let Ok(index) = inside.parse::<usize>() {
                here.get(index).ok_or_else(|| format!("no item {index}"))?
            } else {
                return Err(format!("only field names and list indexes are supported, not [{inside}]"));
            };
            rest = &after[end + 1..];
        } else if let Some(after) = rest.strip_prefix('.') {
            let end = after.find(['.', '[']).unwrap_or(after.len());
            let field = &after[..end];
            if field.is_empty() {
                // `{.}`: the whole status is not a label value; `..` is recursion.
                return Err("an empty field name".into());
            }
            if field.contains(['*', '?', '(', '@']) {
                return Err(format!("only field names and list indexes are supported, not {field:?}"));
            }
            here = here.get(field).ok_or_else(|| format!("no field {field:?}"))?;
            rest = &after[end..];
        } else {
            return Err(format!("unexpected {rest:?}"));
        }
    }
    Ok(here)
}

fn quoted(s: &str) -> Option<&str> {
    s.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')).or_else(|| s.strip_prefix('"')?.strip_suffix('"'))
}

/// A Kubernetes label value.
pub fn is_label_value(v: &str) -> bool {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    v.is_empty()
        || (v.len() <= 63
            && v.chars().all(ok_char)
            && v.starts_with(|c: char| c.is_ascii_alphanumeric())
            && v.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

/// The preserved states after this pass: those of clusters still chosen,
/// plus, for each eviction started now with preserved labels, an entry for
/// every chosen cluster that was not among the clusters before that
/// failover (a later failover's labels win over an earlier one's).
pub fn carry_preserved_states(
    before: &[PreservedState],
    started: &[GracefulEvictionTask],
    chosen: &[TargetCluster],
) -> Vec<PreservedState> {
    let chosen: BTreeSet<&str> = chosen.iter().map(|c| c.name.as_str()).collect();
    let mut out: BTreeMap<String, BTreeMap<String, String>> = before
        .iter()
        .filter(|s| chosen.contains(s.cluster.as_str()))
        .map(|s| (s.cluster.clone(), s.labels.clone()))
        .collect();
    for task in started.iter().filter(|t| !t.preserved_label_state.is_empty()) {
        for cluster in chosen.iter().filter(|c| !task.clusters_before_failover.iter().any(|b| b == *c)) {
            out.entry(cluster.to_string()).or_default().extend(task.preserved_label_state.clone());
        }
    }
    out.into_iter().map(|(cluster, labels)| PreservedState { cluster, labels }).collect()
}

/// Puts `labels` on a manifest's `metadata.labels` (over the template's).
pub fn inject_labels(manifest: &mut serde_json::Value, labels: &BTreeMap<String, String>) {
    if labels.is_empty() {
        return;
    }
    let Some(object) = manifest.as_object_mut() else { return };
    let metadata = object.entry("metadata").or_insert_with(|| serde_json::json!({}));
    let Some(metadata) = metadata.as_object_mut() else { return };
    let existing = metadata.entry("labels").or_insert_with(|| serde_json::json!({}));
    if let Some(existing) = existing.as_object_mut() {
        for (k, v) in labels {
            existing.insert(k.clone(), v.clone().into());
        }
    }
}

/// The CRD's CEL rules on `failover`, for policies stored before them.
pub fn rule_errors(failover: &FailoverBehavior) -> Vec<String> {
    let mut errors = Vec::new();
    if let Some(app) = &failover.application {
        if app.grace_period_seconds.is_some() && app.purge_mode.is_some_and(|m| !m.is_graceful()) {
            errors.push(
                "spec.failover.application.gracePeriodSeconds: only takes effect when purgeMode is \
                 Graciously (or Gracefully): remove it or change purgeMode"
                    .to_string(),
            );
        }
    }
    if let Some(cluster) = &failover.cluster {
        if cluster.purge_mode.is_some_and(|m| !matches!(m, PurgeMode::Directly | PurgeMode::Gracefully)) {
            errors.push(
                "spec.failover.cluster.purgeMode: cluster failover's purgeMode is Directly or Gracefully \
                 (as in Karmada)"
                    .to_string(),
            );
        }
    }
    errors
}

#[cfg(test)]
#[path = "app_failover_tests.rs"]
mod tests;
