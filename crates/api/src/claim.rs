//! How a propagation policy claims templates and when its changes reach
//! them (Karmada's `preemption`, `activationPreference` and
//! `schedulePriority`, field for field). The decisions are
//! `flotilla_apps_core::claim`'s.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Whether a policy takes templates another policy already claimed
/// (Karmada's `PreemptionBehavior`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Preemption {
    /// A PropagationPolicy takes a template from any ClusterPropagationPolicy
    /// and from a PropagationPolicy of lower `priority`; a
    /// ClusterPropagationPolicy only from a ClusterPropagationPolicy of
    /// lower `priority`.
    Always,
    /// A template keeps the policy that claimed it (the default).
    #[default]
    Never,
}

/// When a policy's changes reach the templates it claims (Karmada's
/// `ActivationPreference`; absent: at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ActivationPreference {
    /// Only when the template itself next changes (any field but status
    /// and Flotilla's own `*.flotilla.io/` labels and annotations). A
    /// template created after the policy is propagated at once.
    Lazy,
}

/// Where a policy's scheduling priority comes from (Karmada's
/// `PriorityClassSource`; only Kubernetes PriorityClasses there too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PriorityClassSource {
    /// A `scheduling.k8s.io/v1` PriorityClass on the hub, by name.
    KubePriorityClass,
}

/// The order in which the hub schedules the templates of this policy:
/// higher PriorityClass values first (Karmada's `SchedulePriority`). Only
/// the order of the hub's queue changes, not which clusters are chosen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SchedulePriority {
    pub priority_class_source: PriorityClassSource,
    /// The PriorityClass whose `value` is the priority.
    #[schemars(length(min = 1))]
    pub priority_class_name: String,
}
