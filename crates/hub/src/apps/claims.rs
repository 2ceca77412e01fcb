//! The binder's policy step: which policy takes a template given the
//! policy its binding records (`apps_core::claim::choose`: Karmada's order
//! and preemption) and what of it applies this pass (lazy activation).
//! Also what the hub tells about it: the `SchedulePriorityResolved` and
//! `BindingsWritten` conditions on propagation policies, and the
//! `BindingRefused` Event. (The queue priority of `schedulePriority` is
//! `Apps::queue_priority`, which waking a template needs too.)

use std::collections::BTreeMap;

use flotilla_api::claim::{ActivationPreference, SchedulePriority};
use flotilla_api::policy::{ConflictResolution, Placement, Suspension};
use flotilla_api::work::{BindingSpec, PolicyReference};
use flotilla_apps_core::claim::{self, Activation, Claimed, How, Record};
use flotilla_apps_core::failover;
use flotilla_apps_core::selection::{PolicyCandidate, PolicyScope, TemplateMeta};
use flotilla_core::conditions::Wanted;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::{Resource, ResourceExt};

use super::index::{lock, TemplateKey};
use super::state::Apps;

/// The policy (or dependents) that decide a template's fate.
pub(super) struct Decision {
    pub(super) policy: Option<PolicyReference>,
    pub(super) placement: Placement,
    pub(super) propagate_deps: bool,
    pub(super) conflict: ConflictResolution,
    pub(super) preserve: bool,
    /// Replicas go back to a cluster they failed over from once it is
    /// healthy again (the policy may opt out).
    pub(super) return_after_failover: bool,
    /// The policy's suspension: no Work written or deleted where it holds.
    pub(super) suspension: Option<Suspension>,
    /// A dependency's: what it follows and where its settings came from.
    pub(super) follows: String,
    /// The policy's `dependentOverrides` missing: why its templates wait.
    pub(super) waiting_for: Option<String>,
    /// The policy's `failover` (application failover, cluster purge mode).
    pub(super) failover: Option<flotilla_api::policy_failover::FailoverBehavior>,
}

/// The chosen policy and what the binder needs beside its settings.
pub(super) struct Picked {
    pub(super) decision: Decision,
    pub(super) how: How,
    pub(super) activation_preference: Option<ActivationPreference>,
    pub(super) created: Option<Time>,
    pub(super) schedule_priority: Option<SchedulePriority>,
}

fn policy_kind(scope: PolicyScope) -> &'static str {
    match scope {
        PolicyScope::Namespaced => "PropagationPolicy",
        PolicyScope::Cluster => "ClusterPropagationPolicy",
    }
}

fn scope_of(kind: &str) -> PolicyScope {
    if kind == "ClusterPropagationPolicy" {
        PolicyScope::Cluster
    } else {
        PolicyScope::Namespaced
    }
}

/// The policy that takes the template, given the policy `claimed` by its
/// binding (rules in `apps_core::claim`).
pub(super) fn pick_policy(
    apps: &Apps,
    meta: &TemplateMeta,
    claimed: Option<&PolicyReference>,
) -> Option<Picked> {
    let pps = apps.pps.state();
    let cpps = apps.cpps.state();
    let mut candidates: Vec<PolicyCandidate> = Vec::new();
    let mut metas: Vec<&ObjectMeta> = Vec::new();
    let pp_ns: Vec<(String, String)> =
        pps.iter().map(|p| (p.namespace().unwrap_or_default(), p.name_any())).collect();
    for (p, (ns, name)) in pps.iter().zip(&pp_ns) {
        if ns == meta.namespace && !apps.policy_is_invalid("PropagationPolicy", ns, name) {
            candidates.push(PolicyCandidate {
                scope: PolicyScope::Namespaced,
                namespace: ns,
                name,
                spec: &p.spec.spec,
            });
            metas.push(&p.metadata);
        }
    }
    let cpp_names: Vec<String> = cpps.iter().map(|p| p.name_any()).collect();
    for (p, name) in cpps.iter().zip(&cpp_names) {
        if !apps.policy_is_invalid("ClusterPropagationPolicy", "", name) {
            candidates.push(PolicyCandidate {
                scope: PolicyScope::Cluster,
                namespace: "",
                name,
                spec: &p.spec.spec,
            });
            metas.push(&p.metadata);
        }
    }
    let claimed =
        claimed.map(|c| Claimed { scope: scope_of(&c.kind), namespace: &c.namespace, name: &c.name });
    let choice = claim::choose(apps.policy_order, meta, &candidates, claimed)?;
    let chosen = choice.policy;
    let index = candidates.iter().position(|c| std::ptr::eq(c, chosen))?;
    let policy_meta = metas[index];
    let spec = chosen.spec;
    let return_after_failover = policy_meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(failover::RETURN_ANNOTATION))
        .is_none_or(|v| !v.eq_ignore_ascii_case("false"));
    // The hub's default toleration of its own health taints, where the
    // policy does not say otherwise: a blip must not move anything.
    let mut placement = spec.placement.clone();
    placement.cluster_tolerations = failover::with_default_tolerations(
        &placement.cluster_tolerations,
        apps.failover.default_toleration_seconds,
    );
    Some(Picked {
        decision: Decision {
            policy: Some(PolicyReference {
                kind: policy_kind(chosen.scope).into(),
                namespace: chosen.namespace.to_string(),
                name: chosen.name.to_string(),
            }),
            placement,
            propagate_deps: spec.propagates_deps(),
            conflict: spec.conflict_resolution.unwrap_or_default(),
            preserve: spec.preserve_resources_on_deletion.unwrap_or(false),
            return_after_failover,
            suspension: spec.suspension.clone(),
            follows: String::new(),
            waiting_for: super::dependent_overrides::waiting(
                apps,
                policy_kind(chosen.scope),
                chosen.namespace,
                &spec.dependent_overrides,
            ),
            failover: spec.failover.clone(),
        },
        how: choice.how,
        activation_preference: spec.activation_preference,
        created: policy_meta.creation_timestamp.clone(),
        schedule_priority: spec.schedule_priority.clone(),
    })
}

/// Lazy activation for a picked policy: what the binder does this pass,
/// and the record its binding keeps (`claim::REVISION_ANNOTATION`). Under
/// `Keep` the decision takes the binding's placement and settings back.
pub(super) fn activate(
    picked: &mut Picked,
    template: &ObjectMeta,
    existing: Option<(&BindingSpec, &ObjectMeta)>,
) -> (Activation, Option<Record>) {
    let empty = BTreeMap::new();
    let revision = claim::template_revision(
        template.generation,
        template.resource_version.as_deref(),
        template.labels.as_ref().unwrap_or(&empty),
        template.annotations.as_ref().unwrap_or(&empty),
    );
    let bound = existing.filter(|(spec, _)| spec.policy.is_some());
    let record = bound
        .and_then(|(_, meta)| meta.annotations.as_ref())
        .and_then(|a| Record::parse(a.get(claim::REVISION_ANNOTATION).map(String::as_str)));
    let created_before_policy = match (&template.creation_timestamp, &picked.created) {
        (Some(t), Some(p)) => t.0 < p.0,
        _ => false,
    };
    let (activation, record) = claim::activation(
        picked.activation_preference,
        record.as_ref(),
        bound.is_some(),
        &revision,
        created_before_policy,
    );
    if activation == Activation::Keep {
        if let Some((spec, _)) = bound {
            let d = &mut picked.decision;
            d.placement = spec.placement.clone();
            d.propagate_deps = spec.propagate_deps;
            d.conflict = spec.conflict_resolution;
            d.preserve = spec.preserve_resources_on_deletion;
            d.suspension = spec.suspension.clone();
        }
    }
    (activation, record)
}

/// `SchedulePriorityResolved` of a propagation policy (as stored, JSON),
/// when it names a PriorityClass.
pub(super) fn priority_condition(apps: &Apps, policy: &serde_json::Value) -> Option<Wanted> {
    let wanted: SchedulePriority =
        serde_json::from_value(policy.pointer("/spec/schedulePriority")?.clone()).ok()?;
    claim::schedule_priority(Some(&wanted), &apps.priority_class_values()).1
}

/// `BindingsWritten` of a propagation policy: the refusals the binder
/// recorded for templates it took.
pub(super) fn bindings_written(apps: &Apps, kind: &str, namespace: &str, name: &str) -> Wanted {
    let refused: Vec<(String, String)> = lock(&apps.binding_refusals)
        .iter()
        .filter(|(_, (p, _))| p.kind == kind && p.namespace == namespace && p.name == name)
        .map(|(key, (_, message))| (key.to_string(), message.clone()))
        .collect();
    claim::bindings_written(refused)
}

/// A Warning Event on the template: the hub's API server refused its
/// binding (`kubectl describe` on the template shows why nothing
/// propagates).
pub(super) async fn announce_refusal(
    apps: &Apps,
    key: &TemplateKey,
    template: &kube::api::DynamicObject,
    message: &str,
) {
    let Some(kind) = apps.kind(&key.api_version, &key.kind) else { return };
    let reference = template.object_ref(&kind.resource);
    tracing::warn!(template = %key, message, "the hub's API server refused the template's binding");
    let notice = flotilla_core::events::Notice::warning(
        "BindingRefused",
        "Bind",
        format!("the hub's API server refused this template's binding: {message}"),
    );
    crate::events::publish(&apps.events.binder, &reference, &notice).await;
}
