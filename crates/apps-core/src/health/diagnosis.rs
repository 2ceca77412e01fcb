//! Why an applied object that is not healthy is not: the worst problem of
//! its pods (counted across them) or of the object itself, as a bounded
//! [`HealthDetail`] the agent puts in the Work's status. The agent reads
//! the pods ([`pod_selection`] says which); this decides.

use std::collections::BTreeMap;

use flotilla_api::work::{Health, HealthDetail};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::Value;

use super::pod_problem::{self, PodProblem, Severity, REASON_NOT_READY, REASON_PROGRESSING};
use crate::workload::api_group;

/// The longest `HealthDetail.message`, in characters: it goes into
/// conditions, one per cluster on the hub's binding and template.
pub const MAX_MESSAGE_CHARS: usize = 512;

/// Where an object's pods are: its namespace and its label selector.
#[derive(Debug, Clone, PartialEq)]
pub struct PodSelection {
    pub namespace: String,
    pub selector: LabelSelector,
}

/// The pods of a workload (Deployment, StatefulSet, DaemonSet, ReplicaSet,
/// Job), by the selector in its live object; `None` for other kinds (a bare
/// Pod is its own pod) and for a selector that would select every pod.
pub fn pod_selection(object: &Value) -> Option<PodSelection> {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    let workload = matches!(
        (api_group(api_version), kind),
        ("apps", "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet") | ("batch", "Job")
    );
    if !workload {
        return None;
    }
    let selector: LabelSelector = serde_json::from_value(object["spec"]["selector"].clone()).ok()?;
    let selects_something = selector.match_labels.as_ref().is_some_and(|l| !l.is_empty())
        || selector.match_expressions.as_ref().is_some_and(|e| !e.is_empty());
    let namespace = object["metadata"]["namespace"].as_str().unwrap_or("default").to_string();
    selects_something.then_some(PodSelection { namespace, selector })
}

/// The health to report and why: `health` as judged from the object alone
/// ([`super::interpret`]), with the object's pods (for a bare Pod, itself;
/// any order). Healthy objects get no detail. A bare Pod with a problem
/// (an image it cannot pull, say) is unhealthy rather than unknown; other
/// kinds keep their own verdict (a Job's pods fail and retry until the Job
/// says it failed).
pub fn diagnose(object: &Value, health: Health, pods: &[Value]) -> (Health, Option<HealthDetail>) {
    if health == Health::Healthy {
        return (health, None);
    }
    let bare_pod = object["apiVersion"] == "v1" && object["kind"] == "Pod";
    let mut pods: Vec<&Value> =
        if bare_pod { vec![object] } else { pods.iter().filter(|p| pod_problem::counts(p)).collect() };
    pods.sort_by(|a, b| a["metadata"]["name"].as_str().cmp(&b["metadata"]["name"].as_str()));
    let problems: Vec<(&str, PodProblem)> = pods
        .iter()
        .filter_map(|p| {
            Some((p["metadata"]["name"].as_str().unwrap_or_default(), pod_problem::pod_problem(p)?))
        })
        .collect();
    let restarts = pods.iter().map(|p| pod_problem::restarts(p)).max().unwrap_or(0);
    let groups = group(&problems);
    let own = object_problem(object);

    let worst_group = groups.first();
    let (severity, reason, message) = match (own, worst_group) {
        (Some(own), Some(g)) if g.severity < own.severity => group_verdict(g, pods.len(), bare_pod),
        (Some(own), _) => (own.severity, own.reason, own.detail),
        (None, Some(g)) => group_verdict(g, pods.len(), bare_pod),
        (None, None) => (Severity::Starting, REASON_PROGRESSING.to_string(), progress(object)),
    };
    let others: Vec<String> = groups
        .iter()
        .filter(|g| g.reason != reason)
        .map(|g| {
            let n = g.pods.len();
            format!("{n} pod{} {}", if n == 1 { "" } else { "s" }, g.reason)
        })
        .collect();
    let message = if others.is_empty() { message } else { format!("{message}; also {}", others.join(", ")) };
    let health = if bare_pod && severity <= Severity::NotReady { Health::Unhealthy } else { health };
    let detail = HealthDetail {
        reason,
        message: bounded(&message, MAX_MESSAGE_CHARS),
        restart_count: (restarts > 0).then(|| i32::try_from(restarts).unwrap_or(i32::MAX)),
    };
    (health, Some(detail))
}

/// `text` cut to `max` characters (the last one an ellipsis).
pub fn bounded(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// Pods sharing one problem (by reason).
#[derive(Debug)]
struct Group<'a> {
    severity: Severity,
    reason: &'a str,
    /// (pod, its problem), in pod name order.
    pods: Vec<(&'a str, &'a PodProblem)>,
}

/// Problems by reason, worst first: by severity, then the most pods, then
/// the reason (so the same pods always read the same).
fn group<'a>(problems: &'a [(&'a str, PodProblem)]) -> Vec<Group<'a>> {
    let mut by_reason: BTreeMap<&str, Group> = BTreeMap::new();
    for (pod, problem) in problems {
        let group = by_reason.entry(&problem.reason).or_insert_with(|| Group {
            severity: problem.severity,
            reason: &problem.reason,
            pods: Vec::new(),
        });
        group.severity = group.severity.min(problem.severity);
        group.pods.push((pod, problem));
    }
    let mut groups: Vec<Group> = by_reason.into_values().collect();
    groups.sort_by(|a, b| (a.severity, b.pods.len(), a.reason).cmp(&(b.severity, a.pods.len(), b.reason)));
    groups
}

/// The verdict a group of pods gives: its reason and a message about its
/// telling pod (for a crash loop, the one that restarted most), with how
/// many of the `total` pods have it (left out for a bare Pod).
fn group_verdict(group: &Group, total: usize, bare_pod: bool) -> (Severity, String, String) {
    let telling = group
        .pods
        .iter()
        .enumerate()
        .max_by_key(|(i, (_, p))| (p.restarts, std::cmp::Reverse(*i)))
        .map_or("", |(_, (_, p))| p.detail.as_str());
    let n = group.pods.len();
    let message = match (group.reason, bare_pod) {
        (_, true) => telling.to_string(),
        (REASON_NOT_READY, false) => format!("{n} of {total} pods not ready ({telling})"),
        (REASON_PROGRESSING, false) => format!("{n} of {total} pods starting ({telling})"),
        (_, false) => format!("{telling} ({n} of {total} pods)"),
    };
    (group.severity, group.reason.to_string(), message)
}

/// A problem the object itself states: a Job's `Failed`, a workload's
/// `ReplicaFailure` (it cannot create pods), a Deployment past its
/// progress deadline, another kind's `Ready` (else `Available`) `False`.
fn object_problem(object: &Value) -> Option<PodProblem> {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    let status = &object["status"];
    let said = |severity, type_: &str, value: &str| {
        let c = condition(status, type_).filter(|c| c["status"] == value)?;
        let reason = c["reason"].as_str().filter(|r| !r.is_empty()).unwrap_or(type_);
        let message = c["message"].as_str().filter(|m| !m.is_empty()).unwrap_or(reason);
        Some(PodProblem { severity, reason: reason.into(), detail: message.into(), restarts: 0 })
    };
    match (api_group(api_version), kind) {
        ("batch", "Job") => said(Severity::ObjectFailed, "Failed", "True"),
        ("apps", "Deployment") => said(Severity::ReplicaFailure, "ReplicaFailure", "True")
            .or_else(|| said(Severity::Stalled, "Progressing", "False")),
        ("apps", "StatefulSet" | "DaemonSet" | "ReplicaSet") => {
            said(Severity::ReplicaFailure, "ReplicaFailure", "True")
        }
        ("", "Pod") => None,
        _ => said(Severity::ObjectFailed, "Ready", "False").or_else(|| {
            condition(status, "Ready")
                .is_none()
                .then(|| said(Severity::ObjectFailed, "Available", "False"))?
        }),
    }
}

fn condition<'a>(status: &'a Value, type_: &str) -> Option<&'a Value> {
    status["conditions"].as_array()?.iter().find(|c| c["type"].as_str() == Some(type_))
}

/// What a workload with nothing wrong is still doing (the same steps as
/// `kubectl rollout status`).
fn progress(object: &Value) -> String {
    let kind = object["kind"].as_str().unwrap_or("object");
    let status = &object["status"];
    let int = |field: &str| status[field].as_i64().unwrap_or(0);
    let generation = object["metadata"]["generation"].as_i64().unwrap_or(0);
    let want = object["spec"]["replicas"].as_i64().unwrap_or(1);
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let group = api_group(api_version);
    // Jobs and Pods have no observedGeneration.
    if group == "apps" && int("observedGeneration") < generation {
        return format!("the {kind} controller has not observed generation {generation} yet");
    }
    match (group, kind) {
        ("apps", "Deployment") => {
            let (updated, replicas, available) =
                (int("updatedReplicas"), int("replicas"), int("availableReplicas"));
            if updated < want {
                format!("rollout in progress: {updated} of {want} new replicas updated")
            } else if replicas > updated {
                format!("rollout in progress: {} old replicas pending termination", replicas - updated)
            } else {
                format!("rollout in progress: {available} of {updated} updated replicas available")
            }
        }
        ("apps", "StatefulSet") => {
            format!("{} of {want} replicas ready, {} updated", int("readyReplicas"), int("updatedReplicas"))
        }
        ("apps", "ReplicaSet") => format!("{} of {want} replicas available", int("availableReplicas")),
        ("apps", "DaemonSet") => format!(
            "{} of {} pods available, {} updated",
            int("numberAvailable"),
            int("desiredNumberScheduled"),
            int("updatedNumberScheduled")
        ),
        ("batch", "Job") => {
            format!("{} active, {} succeeded, {} failed", int("active"), int("succeeded"), int("failed"))
        }
        ("", "Pod") => format!("pod {}", status["phase"].as_str().unwrap_or("Pending")),
        _ => format!("waiting for the {kind} to be ready"),
    }
}

#[cfg(test)]
#[path = "diagnosis_tests.rs"]
mod tests;
