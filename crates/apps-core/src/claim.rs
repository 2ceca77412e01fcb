//! Which policy keeps a template it already has, and when a policy's
//! changes reach the template: Karmada's `preemption` and
//! `activationPreference`, and the scheduling priority of
//! `schedulePriority`.
//!
//! The claim is the policy a template's binding records (`spec.policy`):
//! Karmada keeps it in labels on the template, Flotilla on the binding, so
//! a hub restart reads the same claims back.
//!
//! - Preemption (`Never` by default): a template keeps the policy that
//!   claimed it while that policy exists, is valid and still selects it,
//!   even when a higher-priority policy appears. A policy with
//!   `preemption: Always` takes it over: a PropagationPolicy from any
//!   ClusterPropagationPolicy (priorities aside) and from a
//!   PropagationPolicy of lower explicit priority; a
//!   ClusterPropagationPolicy only from a ClusterPropagationPolicy of lower
//!   priority. Specificity never preempts (Karmada's rule). When the claim
//!   lapses the template is matched afresh (`selection`).
//! - Lazy activation: under a policy with `activationPreference: Lazy`, a
//!   binding keeps the placement and settings it was written with until the
//!   template's revision ([`template_revision`]) changes; the binding
//!   records the revision it took the policy at ([`REVISION_ANNOTATION`]).
//!   Which policy claims the template changes at once (as in Karmada, only
//!   the refresh is lazy). A template older than its lazy policy and never
//!   bound waits for its next change with an empty binding; one created
//!   after the policy is bound at once.

use std::collections::BTreeMap;

use flotilla_api::claim::{ActivationPreference, Preemption, SchedulePriority};
use flotilla_core::conditions::Wanted;

use crate::selection::{
    best_of_in, policy_matches, PolicyCandidate, PolicyOrder, PolicyScope, Specificity, TemplateMeta,
};

/// The policy a template's binding records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claimed<'a> {
    pub scope: PolicyScope,
    /// `""` for a ClusterPropagationPolicy.
    pub namespace: &'a str,
    pub name: &'a str,
}

/// How the chosen policy came to hold the template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    /// Unclaimed (or its claim lapsed): the best match.
    Matched,
    /// The claiming policy keeps it.
    Kept,
    /// Taken from the claiming policy by one with `preemption: Always`.
    Preempted,
}

/// The policy that takes the template, and how.
#[derive(Debug, Clone, Copy)]
pub struct Choice<'a, 'b> {
    pub policy: &'b PolicyCandidate<'a>,
    pub how: How,
}

fn priority(c: &PolicyCandidate) -> i32 {
    c.spec.priority.unwrap_or(0)
}

/// Whether `challenger` may take a template `holder` claimed. Under
/// `PolicyOrder::PriorityFirst` a preempting policy must outrank the holder
/// in that order (priority, then a PropagationPolicy on a tie).
pub fn preempts(order: PolicyOrder, challenger: &PolicyCandidate, holder: &PolicyCandidate) -> bool {
    if challenger.spec.preemption != Some(Preemption::Always) {
        return false;
    }
    if (challenger.scope, challenger.namespace, challenger.name)
        == (holder.scope, holder.namespace, holder.name)
    {
        return false;
    }
    if order == PolicyOrder::PriorityFirst {
        // Specificity never preempts: compare as equally specific.
        let rank = |c| order.rank(c, Specificity::KindOnly);
        return rank(challenger) > rank(holder);
    }
    match (challenger.scope, holder.scope) {
        (PolicyScope::Namespaced, PolicyScope::Cluster) => true,
        (PolicyScope::Cluster, PolicyScope::Namespaced) => false,
        _ => priority(challenger) > priority(holder),
    }
}

/// The policy that takes the template given its claim (rules in the
/// module doc); `candidates` are the valid policies.
pub fn choose<'a, 'b>(
    order: PolicyOrder,
    t: &TemplateMeta,
    candidates: &'b [PolicyCandidate<'a>],
    claimed: Option<Claimed>,
) -> Option<Choice<'a, 'b>> {
    let matching = || {
        candidates
            .iter()
            .filter(|c| policy_matches(c.scope, c.namespace, &c.spec.resource_selectors, t).is_some())
    };
    let holder = claimed.and_then(|cl| {
        matching().find(|c| c.scope == cl.scope && c.namespace == cl.namespace && c.name == cl.name)
    });
    let Some(holder) = holder else {
        return best_of_in(order, t, candidates.iter()).map(|policy| Choice { policy, how: How::Matched });
    };
    match best_of_in(order, t, matching().filter(|c| preempts(order, c, holder))) {
        Some(policy) => Some(Choice { policy, how: How::Preempted }),
        None => Some(Choice { policy: holder, how: How::Kept }),
    }
}

/// The binding annotation recording the template revision at which the
/// binding last took its lazy policy's settings (`waiting/<revision>`: not
/// propagated yet, waiting for the template to change).
pub const REVISION_ANNOTATION: &str = "policy.flotilla.io/activated-revision";

/// The binding's `Scheduled` reason while a lazy policy waits for its
/// template to change.
pub const REASON_WAITING: &str = "WaitingForTemplateChange";

/// What a binding records of a lazy policy's activation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// Propagated with the policy as it was at this template revision.
    Active(String),
    /// Claimed at this revision, not propagated until the template changes.
    Waiting(String),
}

impl Record {
    pub fn parse(value: Option<&str>) -> Option<Record> {
        let value = value.filter(|v| !v.is_empty())?;
        Some(match value.strip_prefix("waiting/") {
            Some(revision) => Record::Waiting(revision.to_string()),
            None => Record::Active(value.to_string()),
        })
    }

    pub fn value(&self) -> String {
        match self {
            Record::Active(r) => r.clone(),
            Record::Waiting(r) => format!("waiting/{r}"),
        }
    }
}

/// What the binder does with a template's policy this pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Activation {
    /// Take the policy as it is now.
    Refresh,
    /// Keep the binding's placement and settings.
    Keep,
    /// Propagate nothing yet: the template is older than its lazy policy
    /// and has not changed since it was claimed.
    Wait,
}

/// What a lazy policy's template gets, and the record to keep on its
/// binding (`None`: no record, the policy is not lazy).
///
/// `bound`: the template has a binding from a policy (not only as a
/// dependency); `created_before_policy`: the template existed before the
/// chosen policy did.
pub fn activation(
    preference: Option<ActivationPreference>,
    record: Option<&Record>,
    bound: bool,
    revision: &str,
    created_before_policy: bool,
) -> (Activation, Option<Record>) {
    if preference != Some(ActivationPreference::Lazy) {
        return (Activation::Refresh, None);
    }
    match record {
        Some(Record::Active(r)) if r == revision && bound => {
            (Activation::Keep, Some(Record::Active(r.clone())))
        }
        Some(Record::Waiting(r)) if r == revision => (Activation::Wait, Some(Record::Waiting(r.clone()))),
        // The template changed since: the policy as it is now.
        Some(_) => (Activation::Refresh, Some(Record::Active(revision.to_string()))),
        // A binding from before the policy turned lazy: keep it, from now.
        None if bound => (Activation::Keep, Some(Record::Active(revision.to_string()))),
        None if created_before_policy => (Activation::Wait, Some(Record::Waiting(revision.to_string()))),
        None => (Activation::Refresh, Some(Record::Active(revision.to_string()))),
    }
}

/// Whether a label or annotation key is Flotilla's own (its changes are
/// not the template's, as Karmada ignores its `*.karmada.io/` keys).
fn flotilla_key(key: &str) -> bool {
    key.split_once('/').is_some_and(|(prefix, _)| prefix == "flotilla.io" || prefix.ends_with(".flotilla.io"))
}

/// A template's revision for lazy activation: what changes when anything
/// but its status, bookkeeping metadata or Flotilla's own keys changes.
/// Objects with a `generation` bump it on spec changes; for the others
/// (ConfigMaps, RBAC objects) every write counts.
pub fn template_revision(
    generation: Option<i64>,
    resource_version: Option<&str>,
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
) -> String {
    let change = match generation {
        Some(g) if g > 0 => format!("g{g}"),
        _ => format!("r{}", resource_version.unwrap_or_default()),
    };
    let own = |m: &BTreeMap<String, String>| -> Vec<(String, String)> {
        m.iter().filter(|(k, _)| !flotilla_key(k)).map(|(k, v)| (k.clone(), v.clone())).collect()
    };
    let text = serde_json::json!([change, own(labels), own(annotations)]).to_string();
    crate::binding::spec_hash(&serde_json::Value::String(text))
}

/// The condition reporting a policy's `schedulePriority`.
pub const PRIORITY_CONDITION: &str = "SchedulePriorityResolved";

/// A policy's place in the hub's scheduling queue (higher first; 0 when it
/// has no `schedulePriority` or its PriorityClass is missing), and its
/// `SchedulePriorityResolved` condition when it names a class. `classes`:
/// the hub's PriorityClasses by name.
pub fn schedule_priority(
    wanted: Option<&SchedulePriority>,
    classes: &BTreeMap<String, i32>,
) -> (i32, Option<Wanted>) {
    let Some(wanted) = wanted else { return (0, None) };
    let name = &wanted.priority_class_name;
    match classes.get(name) {
        Some(&value) => (
            value,
            Some(Wanted::new(
                PRIORITY_CONDITION,
                true,
                "Resolved",
                format!("PriorityClass {name} has value {value}: its templates are scheduled in that order"),
            )),
        ),
        None => (
            0,
            Some(Wanted::new(
                PRIORITY_CONDITION,
                false,
                "PriorityClassNotFound",
                format!(
                    "PriorityClass {name} does not exist on the hub; its templates are scheduled at \
                     priority 0 until it is created (kubectl create priorityclass {name} --value=N)"
                ),
            )),
        ),
    }
}

/// The condition saying whether the hub could write the binding of every
/// template a propagation policy takes.
pub const BINDINGS_WRITTEN: &str = "BindingsWritten";

/// `BindingsWritten` from the refusals recorded for a policy's templates:
/// (template, the API server's message). Names at most three.
pub fn bindings_written(mut refused: Vec<(String, String)>) -> Wanted {
    if refused.is_empty() {
        return Wanted::new(
            BINDINGS_WRITTEN,
            true,
            "Written",
            "every template this policy takes has its binding",
        );
    }
    refused.sort();
    let count = refused.len();
    let named: Vec<String> = refused.iter().take(3).map(|(t, m)| format!("{t}: {m}")).collect();
    let more = if count > 3 { format!("; and {} more", count - 3) } else { String::new() };
    Wanted::new(
        BINDINGS_WRITTEN,
        false,
        "BindingRefused",
        format!(
            "the hub's API server refused the binding of {count} template(s): {}{more}",
            named.join("; ")
        ),
    )
}

#[cfg(test)]
#[path = "claim_tests.rs"]
mod tests;
