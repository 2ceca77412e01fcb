//! `placement.clusterAffinities`, Karmada's multiple scheduling groups: the
//! groups are tried one at a time, in order, starting from the group the
//! binding uses (its `status.schedulerObservingAffinityName`); a group is
//! passed over when no cluster of it fits or it cannot hold the replicas.
//!
//! As in Karmada (`getAffinityIndex` in its scheduler), a binding never
//! goes back to an earlier group by itself: once on the backup it stays
//! there while the backup holds it, even when the primary frees up. The
//! one way back is an explicit request to divide from scratch (Flotilla's
//! `WorkloadRebalancer`, `from_first`), which starts again from the first
//! group (what Karmada's maintainers agreed a rescheduling should do,
//! karmada-io/karmada#5070). When no group fits, the group in use is kept
//! (Karmada keeps the observed name too) and the error of the first group
//! tried leads the message.

use flotilla_api::policy::{ClusterAffinityTerm, Placement};
use flotilla_core::events::Notice;

use super::MESSAGE_LIMIT;
use super::{schedule, truncate, ClusterSnapshot, Scheduled, SchedulingRequest, Unschedulable};

/// What scheduling over the groups decided.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupDecision {
    pub result: Result<Scheduled, Unschedulable>,
    /// The group the binding uses now: the one that fit, or when none did
    /// the one it used before. None without `clusterAffinities`.
    pub affinity_name: Option<String>,
    /// The groups tried before the one that fit (or all, when none did),
    /// each with why it could not hold the workload.
    pub passed_over: Vec<(String, String)>,
}

/// Where the search starts: the group named `observed` if the list still
/// has it, else the first.
pub fn start_index(terms: &[ClusterAffinityTerm], observed: Option<&str>) -> usize {
    observed.and_then(|name| terms.iter().position(|t| t.affinity_name == name)).unwrap_or(0)
}

/// The placement one group stands for: its affinity in place of the list.
pub fn term_placement(placement: &Placement, term: &ClusterAffinityTerm) -> Placement {
    Placement {
        cluster_affinity: Some(term.affinity.clone()),
        cluster_affinities: Vec::new(),
        ..placement.clone()
    }
}

/// Schedules `req`, over its placement's `clusterAffinities` when it has
/// them (else exactly as `schedule`). `observed` is the group the binding
/// uses now; `from_first` starts from the first group whatever it is.
pub fn schedule_groups(
    req: &SchedulingRequest,
    clusters: &[ClusterSnapshot],
    observed: Option<&str>,
    from_first: bool,
) -> GroupDecision {
    let terms = &req.placement.cluster_affinities;
    if terms.is_empty() {
        return GroupDecision {
            result: schedule(req, clusters),
            affinity_name: None,
            passed_over: Vec::new(),
        };
    }
    let start = if from_first { 0 } else { start_index(terms, observed) };
    let mut passed_over = Vec::new();
    let mut requeue_after = None;
    for term in &terms[start..] {
        let placement = term_placement(req.placement, term);
        let attempt = SchedulingRequest { placement: &placement, ..*req };
        match schedule(&attempt, clusters) {
            Ok(scheduled) => {
                return GroupDecision {
                    result: Ok(scheduled),
                    affinity_name: Some(term.affinity_name.clone()),
                    passed_over,
                }
            }
            Err(failed) => {
                requeue_after = [requeue_after, failed.requeue_after].into_iter().flatten().min();
                passed_over.push((term.affinity_name.clone(), failed.message));
            }
        }
    }
    // The group in use stays the group in use (none yet: none).
    let kept = observed.filter(|o| terms.iter().any(|t| t.affinity_name == *o)).map(String::from);
    let message = no_group_fits(&passed_over);
    GroupDecision { result: Err(Unschedulable { message, requeue_after }), affinity_name: kept, passed_over }
}

/// "no clusterAffinities group fits: a: why; b: why", bounded.
fn no_group_fits(passed_over: &[(String, String)]) -> String {
    let share = (MESSAGE_LIMIT / passed_over.len().max(1)).max(80);
    let parts: Vec<String> =
        passed_over.iter().map(|(name, why)| truncate(format!("group {name}: {why}"), share)).collect();
    truncate(
        format!("no clusterAffinities group can hold the workload: {}", parts.join("; ")),
        MESSAGE_LIMIT + 20,
    )
}

/// How the `Scheduled` condition names the group in use, with the groups
/// passed over (empty without `clusterAffinities`). A binding that stays
/// on a later group was not tried on the earlier ones this time, so the
/// condition says why it is not on the first group rather than nothing:
/// every pass rewrites the condition, and the passed-over reasons of the
/// move itself live on in its Event.
pub fn describe_group(decision: &GroupDecision, terms: &[ClusterAffinityTerm]) -> String {
    let Some(name) = &decision.affinity_name else { return String::new() };
    if decision.result.is_err() {
        return String::new();
    }
    let mut out = format!(" (clusterAffinities group {name}");
    for (skipped, why) in &decision.passed_over {
        out.push_str(&format!("; group {skipped} passed over: {}", truncate(why.clone(), 160)));
    }
    let first = terms.first().map(|t| t.affinity_name.as_str());
    if decision.passed_over.is_empty() && first.is_some_and(|f| f != name) {
        out.push_str(&format!(
            "; kept, as in Karmada, until a WorkloadRebalancer starts again from group {}",
            first.unwrap_or_default()
        ));
    }
    out.push(')');
    out
}

/// The Event announcing that the binding moved to another group (None
/// when the group in use did not change or none fits).
pub fn group_change_notice(before: Option<&str>, decision: &GroupDecision) -> Option<Notice> {
    let now = decision.affinity_name.as_deref()?;
    if decision.result.is_err() || before == Some(now) {
        return None;
    }
    let why: Vec<String> = decision
        .passed_over
        .iter()
        .map(|(name, why)| format!("group {name}: {}", truncate(why.clone(), 200)))
        .collect();
    let message = match (before, why.is_empty()) {
        (None, true) => format!("scheduled on clusterAffinities group {now}"),
        (Some(b), true) => format!("moved from clusterAffinities group {b} to {now}"),
        (None, false) => {
            format!("scheduled on clusterAffinities group {now}; passed over {}", why.join("; "))
        }
        (Some(b), false) => {
            format!("moved from clusterAffinities group {b} to {now}; passed over {}", why.join("; "))
        }
    };
    let notice = if why.is_empty() {
        Notice::normal("ClusterAffinityGroup", &format!("Use group {now}"), message)
    } else {
        Notice::warning("ClusterAffinityGroupChanged", &format!("Use group {now}"), message)
    };
    Some(notice)
}

#[cfg(test)]
#[path = "affinity_groups_tests.rs"]
mod tests;
