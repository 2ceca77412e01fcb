//! A propagation policy's `failover` (Karmada's `FailoverBehavior`): what
//! happens to a template's copy when the application is unhealthy in its
//! cluster (`application`), and when a cluster failover (an untolerated
//! `NoExecute` taint) evicts it (`cluster`).
//!
//! Field names, values and defaults are Karmada's. Purge modes: Karmada's
//! older `Immediately` / `Graciously` and its newer `Directly` /
//! `Gracefully` are both accepted and mean the same; `Never` only for
//! application failover, as in Karmada.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Karmada's default `decisionConditions.tolerationSeconds`.
pub const DEFAULT_APPLICATION_TOLERATION_SECONDS: i32 = 300;
/// Karmada's default `gracePeriodSeconds` for a graceful purge.
pub const DEFAULT_GRACE_PERIOD_SECONDS: i32 = 600;

/// Failover behaviours of a policy; each part absent means that kind of
/// failover keeps Flotilla's defaults (no application failover; cluster
/// failover by `clusterTolerations`, graceful).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailoverBehavior {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application: Option<ApplicationFailoverBehavior>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterFailoverBehavior>,
}

/// Application failover: a copy the agent reports `Unhealthy` for longer
/// than `decisionConditions.tolerationSeconds` is evicted from its cluster
/// (for this template only) and the template is scheduled elsewhere.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!has(self.gracePeriodSeconds) || !has(self.purgeMode) || self.purgeMode in ['Graciously', 'Gracefully']",
        "message": "gracePeriodSeconds only takes effect when purgeMode is Graciously (or Gracefully): remove it or change purgeMode",
        "fieldPath": ".gracePeriodSeconds"
    }
]))]
pub struct ApplicationFailoverBehavior {
    pub decision_conditions: DecisionConditions,
    /// What happens to the copy left behind: `Immediately` (or `Directly`)
    /// removes it at once; `Graciously` (or `Gracefully`, the default) once
    /// the new copies are healthy or `gracePeriodSeconds` passed; `Never`
    /// keeps it (the eviction task says `suppressDeletion: true`; set it to
    /// false on the binding to let it go).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purge_mode: Option<PurgeMode>,
    /// With a graceful purge: the longest the old copy waits for the new
    /// ones to be healthy (default 600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub grace_period_seconds: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_preservation: Option<StatePreservation>,
}

impl ApplicationFailoverBehavior {
    pub fn toleration_seconds(&self) -> i32 {
        self.decision_conditions.toleration_seconds.unwrap_or(DEFAULT_APPLICATION_TOLERATION_SECONDS).max(0)
    }
    pub fn purge_mode(&self) -> PurgeMode {
        self.purge_mode.unwrap_or(PurgeMode::Graciously)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DecisionConditions {
    /// How long the application may be unhealthy in a cluster before it
    /// fails over (default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub toleration_seconds: Option<i32>,
}

/// Cluster failover (a `NoExecute` taint the placement does not tolerate,
/// or whose `tolerationSeconds` ran out): how the copy left behind goes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!has(self.purgeMode) || self.purgeMode in ['Directly', 'Gracefully']",
        "message": "cluster failover's purgeMode is Directly or Gracefully (as in Karmada)",
        "fieldPath": ".purgeMode"
    }
]))]
pub struct ClusterFailoverBehavior {
    /// `Directly`: the copy on the failed cluster is removed at once;
    /// `Gracefully` (default): once the new copies are healthy (at most
    /// 600 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purge_mode: Option<PurgeMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_preservation: Option<StatePreservation>,
}

impl ClusterFailoverBehavior {
    pub fn purge_mode(&self) -> PurgeMode {
        self.purge_mode.unwrap_or(PurgeMode::Gracefully)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PurgeMode {
    /// Karmada's older name of `Directly`.
    Immediately,
    /// Karmada's older name of `Gracefully`.
    Graciously,
    Never,
    Directly,
    Gracefully,
}

impl PurgeMode {
    /// The old copy goes at once.
    pub fn is_direct(self) -> bool {
        matches!(self, PurgeMode::Immediately | PurgeMode::Directly)
    }
    /// The old copy waits for the new ones (or the grace period).
    pub fn is_graceful(self) -> bool {
        matches!(self, PurgeMode::Graciously | PurgeMode::Gracefully)
    }
}

/// Fields of the failed copy's status carried to the copies that replace
/// it, as labels on them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatePreservation {
    /// 1 to 16 rules.
    #[schemars(length(min = 1, max = 16))]
    pub rules: Vec<StatePreservationRule>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatePreservationRule {
    /// The label key the value is written under on the new copy.
    #[schemars(length(min = 1, max = 316), regex(pattern = LABEL_KEY))]
    pub alias_label_name: String,
    /// A Kubernetes JSONPath template into the failed copy's `status`
    /// (`{.availableReplicas}`, not `{.status.availableReplicas}`), as in
    /// Karmada: fields (`.a.b`, `['a.b']`) and list indexes (`[0]`).
    #[schemars(length(min = 1, max = 256))]
    pub json_path: String,
}

/// A label key: an optional DNS-subdomain prefix and `/`, then a name.
const LABEL_KEY: &str = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$";

/// The labels a cluster's copy carries since a failover moved the
/// application there (`statePreservation`), kept while the cluster stays
/// chosen.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PreservedState {
    pub cluster: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}
