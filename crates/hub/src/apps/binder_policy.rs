//! The binder's policy step: whether the fleet may manage the template
//! (`--require-opt-in`), which policy takes it (`claims`) or, for a
//! dependency, the settings of the templates that need it; and the passes
//! that end here (no policy, dependent overrides missing, a lazy policy
//! waiting for the template to change).

use std::ops::ControlFlow;

use flotilla_api::policy::Placement;
use flotilla_api::work::{BindingSnapshot, BindingSpec, ResourceBinding};
use flotilla_apps_core::claim::{Activation, How, Record as LazyRecord};
use kube::ResourceExt;

use super::binder_outcome::record;
use super::binder_pass::{Claim, Step, Template};
use super::binder_writes::{binding_record, cleanup, template_reference, write_claimed_binding};
use super::claims::{self, Decision};
use super::index::{lock, TemplateKey};
use super::state::Apps;
use crate::error::Error;

pub(super) async fn claim(apps: &Apps, key: &TemplateKey, template: &Template) -> Step<Claim> {
    let (object, existing, generation) = (&template.object, &template.existing, template.generation());
    let required_by = requirers(apps, key);
    if let Some(why) = super::opt_in::refusal(apps, key, object, &required_by).await? {
        let reason = flotilla_apps_core::migration::REASON_NOT_OPTED_IN;
        record(apps, key, false, reason, &why, generation);
        return Ok(ControlFlow::Break(Some(super::opt_in::RECHECK)));
    }
    let claimed = template.before().and_then(|s| s.policy.clone());
    let mut lazy_record = None;
    let mut waiting = false;
    let mut decision = match claims::pick_policy(apps, &template.meta(key), claimed.as_ref()) {
        Some(mut picked) => {
            let priority = apps.queue_priority(picked.schedule_priority.as_ref());
            apps.binder.set_priority(key, Some(priority));
            if picked.how == How::Preempted {
                tracing::info!(template = %key, from = ?claimed, to = ?picked.decision.policy,
                    "a policy with preemption: Always took the template over");
            }
            let (activation, record) =
                claims::activate(&mut picked, &object.metadata, existing.as_ref().map(|(s, _, m)| (s, m)));
            lazy_record = record;
            waiting = activation == Activation::Wait;
            picked.decision
        }
        None if !required_by.is_empty() => as_dependency(apps, key, &required_by),
        None => {
            unclaimed(apps, key, template).await?;
            return Ok(ControlFlow::Break(None));
        }
    };

    if let Some(why) = decision.waiting_for.take() {
        // As in Karmada: nothing is applied (or removed) until they exist.
        let reason = flotilla_apps_core::dependent_overrides::REASON_WAITING;
        record(apps, key, false, reason, &why, generation);
        return Ok(ControlFlow::Break(Some(super::dependent_overrides::RECHECK)));
    }
    if waiting {
        hold_lazily(apps, key, template, &decision, lazy_record.as_ref()).await?;
        return Ok(ControlFlow::Break(None));
    }
    // `flotilla release`: the works keep their objects when they go.
    decision.preserve |= flotilla_apps_core::migration::is_released(object.annotations());
    Ok(ControlFlow::Continue(Claim { decision, lazy_record, required_by }))
}

/// No policy selects the template, but templates that need it do: it
/// takes their settings.
fn as_dependency(apps: &Apps, key: &TemplateKey, required_by: &[BindingSnapshot]) -> Decision {
    let inherited = super::dependency_policy::for_dependency(apps, &key.namespace, required_by);
    Decision {
        policy: None,
        placement: Placement::default(),
        propagate_deps: false,
        conflict: inherited.conflict_resolution,
        preserve: inherited.preserve_resources_on_deletion,
        return_after_failover: true,
        suspension: super::suspended::for_dependency(apps, &key.namespace, required_by),
        follows: inherited.message,
        waiting_for: None,
        failover: None,
    }
}

/// Nothing selects or needs the template.
async fn unclaimed(apps: &Apps, key: &TemplateKey, template: &Template) -> Result<(), Error> {
    match template.before() {
        // A dependency nothing needs any more: remove it.
        Some(spec) if spec.policy.is_none() => cleanup(apps, key, Some(spec)).await?,
        // No policy selects it any more: leave what runs alone.
        Some(_) => record(
            apps,
            key,
            false,
            "NoPolicy",
            "no policy selects this template any more; its members keep what was applied \
             (delete the template to remove it, or select it again)",
            template.generation(),
        ),
        None => {}
    }
    Ok(())
}

/// A lazy policy claimed a template older than itself: the binding
/// records the claim and nothing is propagated until the template changes
/// (Karmada's Lazy).
async fn hold_lazily(
    apps: &Apps,
    key: &TemplateKey,
    template: &Template,
    decision: &Decision,
    lazy_record: Option<&LazyRecord>,
) -> Result<(), Error> {
    let object = &template.object;
    let spec = BindingSpec {
        resource: template_reference(key, object),
        policy: decision.policy.clone(),
        placement: decision.placement.clone(),
        ..Default::default()
    };
    let lazy_value = lazy_record.map(|r| r.value());
    if template.existing.as_ref().map(|(s, _, m)| (s, binding_record(m))) != Some((&spec, lazy_value.clone()))
    {
        write_claimed_binding(apps, key, object, &spec, lazy_value, decision.policy.as_ref()).await?;
    }
    record(
        apps,
        key,
        false,
        flotilla_apps_core::claim::REASON_WAITING,
        "the policy's activationPreference is Lazy and this template existed before it: it is \
         propagated when the template next changes",
        template.generation(),
    );
    Ok(())
}

/// Bindings that need this template (propagateDeps), with their clusters
/// (including those still being evicted, whose copies still need it).
fn requirers(apps: &Apps, key: &TemplateKey) -> Vec<BindingSnapshot> {
    let names: Vec<String> =
        lock(&apps.dependents).get(key).map(|s| s.iter().cloned().collect()).unwrap_or_default();
    let mut out = Vec::new();
    for name in names {
        let r = kube::runtime::reflector::ObjectRef::<ResourceBinding>::new(&name).within(&key.namespace);
        let Some(b) = apps.bindings.get(&r) else { continue };
        let spec = &b.spec.spec;
        let depends = spec.dependencies.iter().any(|d| d.kind == key.kind && d.name == key.name);
        if !depends {
            continue;
        }
        let mut clusters: Vec<String> = spec
            .clusters
            .iter()
            .map(|c| c.name.clone())
            .chain(spec.graceful_eviction_tasks.iter().map(|t| t.from_cluster.clone()))
            .collect();
        clusters.sort();
        clusters.dedup();
        out.push(BindingSnapshot { name, clusters });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}
