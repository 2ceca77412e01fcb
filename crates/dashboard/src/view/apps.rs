//! The applications page: one entry per binding: the template, its policy,
//! where each replica went (and why it moved), per-cluster health with the
//! member's reason, the override policies applied to each cluster's copy
//! (the Work's record), and the rollout's progress when a Rollout drives it.

use std::collections::BTreeMap;

use flotilla_api::cluster::ManagedCluster;
use flotilla_api::rollout::{control, Rollout};
use flotilla_api::work::{keys, BindingSpec, BindingStatus, Work};
use flotilla_apps_core::applied_overrides::{parse_annotation, APPLIED_OVERRIDES_ANNOTATION};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;
use serde::Serialize;

use super::cluster::{health_text, member_reason};

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AppRow {
    /// `namespace/name` of the binding (`name` for a cluster-scoped one).
    pub binding: String,
    pub namespace: String,
    pub template: String,
    pub policy: String,
    pub replicas: i32,
    /// `Scheduled`, `FullyApplied`, `Healthy` condition statuses.
    pub conditions: Vec<(String, String, String)>,
    pub clusters: Vec<AppCluster>,
    /// Clusters the replicas left on failover, descheduled ones, evictions
    /// in progress: why replicas are where they are.
    pub moves: Vec<String>,
    pub rollout: Option<RolloutView>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AppCluster {
    pub name: String,
    pub replicas: i32,
    pub applied: bool,
    pub health: String,
    pub reason: String,
    /// The override policies the binder applied to this cluster's copy,
    /// in order (`namespace/name`, or `name` for a ClusterOverridePolicy).
    pub overrides: Vec<String>,
}

/// Per (binding `namespace/name`, Work namespace): the override policies
/// its Work records.
pub type AppliedOverrides = BTreeMap<(String, String), Vec<String>>;

/// The records of every Work that has one.
pub fn applied_overrides<'a>(works: impl IntoIterator<Item = &'a Work>) -> AppliedOverrides {
    works
        .into_iter()
        .filter_map(|w| {
            let applied = w.annotations().get(APPLIED_OVERRIDES_ANNOTATION)?;
            let binding = w.annotations().get(keys::BINDING)?;
            Some(((binding.clone(), w.namespace().unwrap_or_default()), parse_annotation(applied)))
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutView {
    pub namespace: String,
    pub name: String,
    pub phase: String,
    pub wave: String,
    pub paused: bool,
    pub message: String,
}

pub fn app_row(
    namespace: &str,
    name: &str,
    spec: &BindingSpec,
    status: Option<&BindingStatus>,
    rollouts: &[std::sync::Arc<Rollout>],
    overrides: &AppliedOverrides,
) -> AppRow {
    let binding = if namespace.is_empty() { name.to_string() } else { format!("{namespace}/{name}") };
    let r = &spec.resource;
    let template = match r.namespace.as_str() {
        "" => format!("{} {}", r.kind, r.name),
        ns => format!("{} {}/{}", r.kind, ns, r.name),
    };
    let items = status.map(|s| s.aggregated_status.as_slice()).unwrap_or_default();
    let clusters = spec
        .clusters
        .iter()
        .map(|t| {
            let item = items.iter().find(|i| i.cluster_name == t.name);
            AppCluster {
                name: t.name.clone(),
                replicas: t.replicas,
                applied: item.is_some_and(|i| i.applied),
                health: health_text(item.map(|i| i.health).unwrap_or_default()),
                reason: item.map(member_reason).unwrap_or_default(),
                overrides: overrides
                    .get(&(binding.clone(), ManagedCluster::hub_namespace(&t.name)))
                    .cloned()
                    .unwrap_or_default(),
            }
        })
        .collect();
    let mut moves: Vec<String> =
        spec.failed_over_from.iter().map(|c| format!("failed over from {c}")).collect();
    moves.extend(
        spec.descheduled
            .iter()
            .map(|d| format!("descheduled from {} (keeps {}: {})", d.cluster, d.keeps, d.capacity)),
    );
    moves.extend(spec.graceful_eviction_tasks.iter().map(|t| format!("evicting from {}", t.from_cluster)));
    let rollout = rollouts
        .iter()
        .find(|ro| {
            ro.namespace().as_deref() == Some(namespace)
                && ro.spec.template.kind == r.kind
                && ro.spec.template.name == r.name
        })
        .map(|ro| rollout_view(ro));
    AppRow {
        binding,
        namespace: namespace.to_string(),
        template,
        policy: spec.policy.as_ref().map(|p| format!("{} {}", p.kind, p.name)).unwrap_or_default(),
        replicas: spec.replicas,
        conditions: status.map(|s| condition_triples(&s.conditions)).unwrap_or_default(),
        clusters,
        moves,
        rollout,
    }
}

pub fn rollout_view(rollout: &Rollout) -> RolloutView {
    let status = rollout.status.clone().unwrap_or_default();
    RolloutView {
        namespace: rollout.namespace().unwrap_or_default(),
        name: rollout.name_any(),
        phase: status.phase,
        wave: status.wave_text,
        paused: rollout.annotations().get(control::PAUSED).is_some_and(|v| v == "true"),
        message: status.message,
    }
}

fn condition_triples(conditions: &[Condition]) -> Vec<(String, String, String)> {
    conditions.iter().map(|c| (c.type_.clone(), c.status.clone(), c.message.clone())).collect()
}
