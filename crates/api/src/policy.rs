//! `policy.flotilla.io/v1alpha1`: where templates go and how they are
//! adapted per cluster.
//!
//! The specs are field-for-field compatible with Karmada's
//! `policy.karmada.io/v1alpha1` for every feature Flotilla implements, so a
//! Karmada policy works after changing only its `apiVersion`. Flotilla
//! implements every Karmada policy field; the one value it lacks
//! (`UNSUPPORTED_KARMADA_FIELDS`) is refused by its enum, and the admission
//! webhook says why. An unknown field is refused for a strict client
//! (`fieldValidation=Strict`, kubectl's default) and pruned otherwise; one
//! that belongs elsewhere is refused with where (`misplaced`). Rules across fields are CEL
//! `x-kubernetes-validations` on the types below, so the API server itself
//! refuses a contradictory policy, hub or no hub.
//!
//! The types ignore unknown fields rather than fail on them: a watcher must
//! not stall on an object stored under an older schema.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Toleration;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const GROUP: &str = "policy.flotilla.io";

/// The one scheduler's name (Karmada's default `schedulerName`).
pub const DEFAULT_SCHEDULER: &str = "default-scheduler";

/// How a refused Karmada field's message (and its schema's description)
/// begins.
pub const UNSUPPORTED_KARMADA_FIELD: &str = "Karmada field not supported by Flotilla";

/// Karmada fields (JSON paths under the object) that Flotilla does not
/// implement, with the reason shown when a policy uses one.
pub const UNSUPPORTED_KARMADA_FIELDS: &[(&str, &str)] = &[(
    "spec.placement.replicaScheduling.weightPreference.dynamicWeight",
    "only `AvailableReplicas` is supported",
)];

/// Which templates a policy selects. All given fields must match.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceSelector {
    /// `group/version` of the template, e.g. `apps/v1`.
    #[schemars(length(min = 1))]
    pub api_version: String,
    /// Kind of the template, e.g. `Deployment`.
    #[schemars(length(min = 1))]
    pub kind: String,
    /// Namespace of the template; empty means any (a namespaced policy only
    /// ever selects in its own namespace).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// Name of the template; empty means any. Takes precedence over
    /// `labelSelector`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<LabelSelector>,
}

/// Spec shared by PropagationPolicy and ClusterPropagationPolicy
/// (Karmada's `PropagationSpec`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PropagationSpec {
    /// The templates this policy selects (at least one).
    #[schemars(length(min = 1))]
    pub resource_selectors: Vec<ResourceSelector>,
    /// Propagate the ConfigMaps, Secrets, ServiceAccounts and
    /// PersistentVolumeClaims a pod template refers to, to the same clusters.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub propagate_deps: bool,
    /// Karmada's deprecated name of `propagateDeps`: either set means
    /// the dependencies propagate (see [`PropagationSpec::propagates_deps`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub association: bool,
    #[serde(default)]
    pub placement: Placement,
    /// The scheduler that places the templates. Flotilla has one,
    /// `default-scheduler` (Karmada's default name); any other name has no
    /// scheduler behind it and is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self == 'default-scheduler'",
        "message": "no scheduler of that name: Flotilla has one scheduler, `default-scheduler` (Karmada's default); set it or remove the field",
        "reason": "FieldValueInvalid"
    }]))]
    pub scheduler_name: Option<String>,
    /// OverridePolicies (ClusterOverridePolicies for a
    /// ClusterPropagationPolicy) that must exist before this policy
    /// propagates anything (as in Karmada): until they all do, the policy's
    /// templates wait, and its `Valid` condition says which are missing.
    /// At most 100.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub dependent_overrides: Vec<String>,
    /// When several policies of one kind select a template the highest
    /// priority wins (default 0); a PropagationPolicy always beats a
    /// ClusterPropagationPolicy (Karmada's order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// `Always`: take templates claimed by lower-priority policies (see
    /// `claim::Preemption`); default `Never`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preemption: Option<crate::claim::Preemption>,
    /// `Lazy`: changes of this policy reach a template only when the
    /// template next changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation_preference: Option<crate::claim::ActivationPreference>,
    /// Orders the hub's scheduling queue by a PriorityClass's value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_priority: Option<crate::claim::SchedulePriority>,
    /// What to do with an object that already exists in a member and was
    /// not created by Flotilla: `Abort` (default) leaves it alone and reports
    /// the conflict; `Overwrite` takes it over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflict_resolution: Option<ConflictResolution>,
    /// Keep the objects in the members when the template is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preserve_resources_on_deletion: Option<bool>,
    /// Halt dispatch (Karmada's `Suspension`): no Work is written or
    /// deleted for the suspended clusters, so their members keep running
    /// what they have, untouched by template changes, failover or scaling;
    /// status is still reported. Remove it (or set `dispatching: false`) to
    /// resume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspension: Option<Suspension>,
    /// Karmada's `failover`: application failover, and how cluster
    /// failover purges (`crate::policy_failover`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<crate::policy_failover::FailoverBehavior>,
}

impl PropagationSpec {
    /// Whether dependencies propagate: `propagateDeps` or its deprecated
    /// name `association` (either true means true, as in Karmada).
    pub fn propagates_deps(&self) -> bool {
        self.propagate_deps || self.association
    }
}

/// Karmada's `Suspension`: what of a policy's propagation is halted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Suspension {
    /// `true`: dispatch to every cluster is halted (`dispatchingOnClusters`
    /// is then moot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispatching: Option<bool>,
    /// Dispatch is halted to these clusters only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispatching_on_clusters: Option<SuspendClusters>,
    /// `true`: scheduling is halted (Karmada's `suspension.scheduling`):
    /// the templates keep the clusters and replicas they have (a new one
    /// is not placed at all), with no failover, descheduling or rebalance,
    /// while template changes are still dispatched to those clusters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduling: Option<bool>,
}

/// Clusters whose dispatch is halted, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SuspendClusters {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cluster_names: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ConflictResolution {
    #[default]
    Abort,
    Overwrite,
}

/// Which clusters a template goes to and how its replicas are divided.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!has(self.clusterAffinity) || !has(self.clusterAffinities) || size(self.clusterAffinities) == 0",
        "message": "set clusterAffinity or clusterAffinities, not both (a single group is a clusterAffinity; ordered groups are clusterAffinities)",
        "fieldPath": ".clusterAffinities"
    },
    {
        "rule": "!has(self.clusterAffinities) || self.clusterAffinities.all(a, self.clusterAffinities.exists_one(b, b.affinityName == a.affinityName))",
        "message": "each clusterAffinities term needs its own affinityName (the binding's status names the group in use by it)",
        "fieldPath": ".clusterAffinities"
    }
]))]
pub struct Placement {
    /// Clusters eligible for the template; absent means every cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_affinity: Option<ClusterAffinity>,
    /// Ordered cluster groups (Karmada's multiple scheduling groups, e.g.
    /// primary then backup): the scheduler uses one group at a time,
    /// starting from the group in use (the binding's
    /// `status.schedulerObservingAffinityName`, the first group at first),
    /// and moves to the next when no cluster of a group fits or the group
    /// cannot hold the replicas. As in Karmada it does not move back to an
    /// earlier group by itself when that group frees up; a
    /// `WorkloadRebalancer` for the workload starts again from the first
    /// group. Exclusive with `clusterAffinity`. At most 10.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub cluster_affinities: Vec<ClusterAffinityTerm>,
    /// Taints of clusters this template tolerates. A NoExecute taint that
    /// is not tolerated (or whose `tolerationSeconds` ran out) moves the
    /// template's replicas away. `cluster.karmada.io/not-ready` and
    /// `cluster.karmada.io/unreachable` are read as Flotilla's
    /// `cluster.flotilla.io/not-ready` and `cluster.flotilla.io/unreachable`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cluster_tolerations: Vec<Toleration>,
    /// At most 10. (The lists whose items carry CEL rules are bounded: the
    /// API server refuses rules whose worst-case cost it cannot bound.)
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub spread_constraints: Vec<SpreadConstraint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_scheduling: Option<ReplicaSchedulingStrategy>,
    /// Affinity and anti-affinity between groups of workloads (Karmada's
    /// `workloadAffinity`): a workload's group is the value of its
    /// template's `groupByLabelKey` label, within its namespace. Required
    /// when scheduling, ignored after: `affinity` places it only where a
    /// peer of its group is (anywhere for the first of a group),
    /// `antiAffinity` never where a peer of its group is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_affinity: Option<WorkloadAffinity>,
}

/// Karmada's `WorkloadAffinity`: inter-workload scheduling rules.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadAffinity {
    /// Co-locate with the workloads of the same group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<WorkloadAffinityTerm>,
    /// Keep away from the clusters of the workloads of the same group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anti_affinity: Option<WorkloadAffinityTerm>,
}

/// A workload group by label (Karmada's `WorkloadAffinityTerm` and
/// `WorkloadAntiAffinityTerm`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadAffinityTerm {
    /// A label key on the templates: templates with the same value are one
    /// group (e.g. `app.group`, where `app.group=frontend` is a group).
    #[schemars(length(min = 1, max = 317), regex(pattern = LABEL_KEY))]
    pub group_by_label_key: String,
}

/// A Kubernetes label key: an optional DNS-subdomain prefix and `/`, then
/// a name of up to 63 alphanumerics, `-`, `_` and `.`, alphanumeric at
/// both ends.
const LABEL_KEY: &str = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$";

/// One group of `clusterAffinities`: a name and the clusters it holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterAffinityTerm {
    /// The group's name, unique in the list (1 to 32 characters, as in
    /// Karmada).
    #[schemars(length(min = 1, max = 32))]
    pub affinity_name: String,
    #[serde(flatten)]
    pub affinity: ClusterAffinity,
}

/// A set of clusters: by label, by field (provider/region/zone, read from
/// the cluster labels in `cluster_field_label`), by name, minus excluded names.
/// All given criteria must hold. An empty `labelSelector: {}` (like an
/// absent one, and like an empty affinity) matches every cluster, as in
/// Karmada and Kubernetes label selectors.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterAffinity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_selector: Option<FieldSelector>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cluster_names: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FieldSelector {
    /// 1 to 10 requirements.
    #[schemars(length(min = 1, max = 10))]
    pub match_expressions: Vec<FieldSelectorRequirement>,
}

/// Karmada's field selector requirement (a `NodeSelectorRequirement`):
/// `key` is `provider`, `region` or `zone`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!(self.operator in ['In', 'NotIn']) || (has(self.values) && size(self.values) > 0)",
        "message": "values are required (at least one) for operators In and NotIn",
        "fieldPath": ".values"
    },
    {
        "rule": "self.operator in ['In', 'NotIn'] || !has(self.values) || size(self.values) == 0",
        "message": "values must be empty for operators Exists and DoesNotExist",
        "fieldPath": ".values"
    }
]))]
pub struct FieldSelectorRequirement {
    #[schemars(regex(pattern = r"^(provider|region|zone)$"))]
    pub key: String,
    pub operator: FieldSelectorOperator,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum FieldSelectorOperator {
    #[default]
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

/// The cluster label that holds a `fieldSelector` / `spreadByField` value.
pub fn cluster_field_label(field: &str) -> Option<&'static str> {
    match field {
        "region" => Some("topology.kubernetes.io/region"),
        "zone" => Some("topology.kubernetes.io/zone"),
        "provider" => Some("cluster.flotilla.io/provider"),
        _ => None,
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "has(self.spreadByField) != (has(self.spreadByLabel) && size(self.spreadByLabel) > 0)",
        "message": "set exactly one of spreadByField and spreadByLabel"
    },
    {
        "rule": "!has(self.maxGroups) || self.maxGroups == 0 || !has(self.minGroups) || self.minGroups <= self.maxGroups",
        "message": "minGroups must not be more than maxGroups (raise maxGroups, or set it to 0 for no limit)",
        "fieldPath": ".minGroups"
    }
]))]
pub struct SpreadConstraint {
    /// `cluster`, `region`, `zone` or `provider`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spread_by_field: Option<SpreadByField>,
    /// Spread by the value of this cluster label instead of a field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spread_by_label: Option<String>,
    /// At most this many groups (0 = no limit).
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub max_groups: i32,
    /// At least this many groups, or scheduling fails.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub min_groups: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SpreadByField {
    Cluster,
    Region,
    Zone,
    Provider,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!has(self.replicaSchedulingType) || self.replicaSchedulingType != 'Duplicated' || !has(self.replicaDivisionPreference)",
        "message": "replicaDivisionPreference only applies to replicaSchedulingType Divided, not Duplicated (remove one of them)",
        "fieldPath": ".replicaDivisionPreference"
    },
    {
        "rule": "!has(self.replicaSchedulingType) || self.replicaSchedulingType != 'Duplicated' || !has(self.weightPreference)",
        "message": "weightPreference only applies to replicaSchedulingType Divided, not Duplicated (remove one of them)",
        "fieldPath": ".weightPreference"
    },
    {
        "rule": "!has(self.replicaDivisionPreference) || self.replicaDivisionPreference != 'Aggregated' || !has(self.weightPreference) || !has(self.weightPreference.staticWeightList) || size(self.weightPreference.staticWeightList) == 0",
        "message": "staticWeightList only applies to replicaDivisionPreference Weighted, not Aggregated",
        "fieldPath": ".weightPreference.staticWeightList"
    }
]))]
pub struct ReplicaSchedulingStrategy {
    /// `Duplicated`: every cluster runs the full replica count. `Divided`
    /// (default): the replicas are shared out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_scheduling_type: Option<ReplicaSchedulingType>,
    /// For `Divided`: `Aggregated` (as few clusters as fit) or `Weighted`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_division_preference: Option<ReplicaDivisionPreference>,
    /// For `Weighted`: static weights or a dynamic weight; absent means
    /// equal weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_preference: Option<ClusterPreferences>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ReplicaSchedulingType {
    Duplicated,
    #[default]
    Divided,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ReplicaDivisionPreference {
    Aggregated,
    #[default]
    Weighted,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.staticWeightList) || size(self.staticWeightList) == 0 || !has(self.dynamicWeight)",
    "message": "set staticWeightList or dynamicWeight, not both"
}]))]
pub struct ClusterPreferences {
    /// At most 1000.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000))]
    pub static_weight_list: Vec<StaticClusterWeight>,
    /// `AvailableReplicas`: weights are how many more replicas each cluster
    /// can hold (allocatable minus allocated, over the pod's requests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dynamic_weight: Option<DynamicWeightFactor>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DynamicWeightFactor {
    AvailableReplicas,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StaticClusterWeight {
    pub target_cluster: ClusterAffinity,
    /// At least 1.
    #[schemars(range(min = 1))]
    pub weight: i64,
}

/// Status of a propagation or override policy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyStatus {
    /// `Valid`: whether the hub could use the policy, with the reason if
    /// not; on propagation policies also `ResourcesResolved`: whether the
    /// hub (and some member) serve the kinds it selects.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// Propagates templates in its own namespace (Karmada's PropagationPolicy).
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "policy.flotilla.io",
    version = "v1alpha1",
    kind = "PropagationPolicy",
    plural = "propagationpolicies",
    shortname = "pp",
    namespaced,
    status = "PolicyStatus",
    printcolumn = r#"{"name":"Priority","type":"integer","jsonPath":".spec.priority"}"#,
    printcolumn = r#"{"name":"Valid","type":"string","jsonPath":".status.conditions[?(@.type==\"Valid\")].status"}"#,
    printcolumn = r#"{"name":"Resolved","type":"string","jsonPath":".status.conditions[?(@.type==\"ResourcesResolved\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct PropagationPolicySpec {
    #[serde(flatten)]
    pub spec: PropagationSpec,
}

/// Propagates templates in any namespace, and cluster-scoped templates
/// (Karmada's ClusterPropagationPolicy).
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "policy.flotilla.io",
    version = "v1alpha1",
    kind = "ClusterPropagationPolicy",
    plural = "clusterpropagationpolicies",
    shortname = "cpp",
    status = "PolicyStatus",
    printcolumn = r#"{"name":"Priority","type":"integer","jsonPath":".spec.priority"}"#,
    printcolumn = r#"{"name":"Valid","type":"string","jsonPath":".status.conditions[?(@.type==\"Valid\")].status"}"#,
    printcolumn = r#"{"name":"Resolved","type":"string","jsonPath":".status.conditions[?(@.type==\"ResourcesResolved\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterPropagationPolicySpec {
    #[serde(flatten)]
    pub spec: PropagationSpec,
}

/// Spec shared by OverridePolicy and ClusterOverridePolicy (Karmada's
/// `OverrideSpec`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OverrideSpec {
    /// The templates to override; empty means every template the policy
    /// can see.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_selectors: Vec<ResourceSelector>,
    /// Applied in order; each rule applies to the clusters its
    /// `targetCluster` selects (all clusters if absent). At most 100.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub override_rules: Vec<RuleWithCluster>,
    /// Karmada's deprecated shape: one rule's `targetCluster` at spec level
    /// (with `overriders`). Read as one override rule; not with
    /// `overrideRules`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_cluster: Option<ClusterAffinity>,
    /// Karmada's deprecated shape: one rule's `overriders` at spec level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overriders: Option<Overriders>,
}

impl OverrideSpec {
    /// The rules applied, in order: `overrideRules`, or the deprecated
    /// spec-level `targetCluster` + `overriders` as one rule (as Karmada
    /// reads them) when `overrideRules` is empty.
    pub fn rules(&self) -> std::borrow::Cow<'_, [RuleWithCluster]> {
        match (&self.overriders, self.override_rules.is_empty()) {
            (Some(overriders), true) => std::borrow::Cow::Owned(vec![RuleWithCluster {
                target_cluster: self.target_cluster.clone(),
                overriders: overriders.clone(),
            }]),
            _ => std::borrow::Cow::Borrowed(&self.override_rules),
        }
    }

    /// Whether the deprecated spec-level shape is used (with
    /// `targetCluster` alone too).
    pub fn uses_deprecated_shape(&self) -> bool {
        self.overriders.is_some() || self.target_cluster.is_some()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuleWithCluster {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_cluster: Option<ClusterAffinity>,
    pub overriders: Overriders,
}

/// Applied in this order: plaintext, image, command, args, labels,
/// annotations, field.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Overriders {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plaintext: Vec<PlaintextOverrider>,
    /// At most 100 (as are the command and args overriders).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub image_overrider: Vec<ImageOverrider>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub command_overrider: Vec<CommandArgsOverrider>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub args_overrider: Vec<CommandArgsOverrider>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels_overrider: Vec<LabelAnnotationOverrider>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub annotations_overrider: Vec<LabelAnnotationOverrider>,
    /// Edits inside a JSON or YAML document held in a string field (e.g. a
    /// ConfigMap's `data` entry). At most 100.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub field_overrider: Vec<FieldOverrider>,
}

/// Karmada's `FieldOverrider`: the string at `fieldPath` is parsed as JSON
/// (`json`) or YAML (`yaml`), the operations are applied to the document,
/// and the result is written back as a string.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "(has(self.json) && size(self.json) > 0) != (has(self.yaml) && size(self.yaml) > 0)",
        "message": "set exactly one of json and yaml (the format of the document at fieldPath)"
    }
]))]
pub struct FieldOverrider {
    /// A JSON pointer to the string field, e.g. `/data/db-config.yaml`.
    #[schemars(regex(pattern = JSON_POINTER))]
    pub field_path: String,
    /// Operations on the JSON document at `fieldPath`. At most 100.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub json: Vec<DocumentPatchOperation>,
    /// Operations on the YAML document at `fieldPath`. At most 100.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub yaml: Vec<DocumentPatchOperation>,
}

/// One operation inside the document (Karmada's `JSONPatchOperation` and
/// `YAMLPatchOperation`, which have the same shape).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DocumentPatchOperation {
    /// A JSON pointer inside the document, e.g. `/db/port`.
    #[schemars(regex(pattern = JSON_POINTER))]
    pub sub_path: String,
    pub operator: OverriderOperator,
    /// The value for add and replace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::any_json")]
    pub value: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OverriderOperator {
    Add,
    Remove,
    Replace,
}

/// A JSON pointer (RFC 6901) to something inside the manifest: `/` and
/// then keys, with `~` only as `~0` or `~1`.
const JSON_POINTER: &str = r"^(/([^/~]|~[01])*)+$";

/// A JSON patch operation (RFC 6902) on the manifest. (That add and
/// replace need a `value` is the webhook's to say: CEL cannot see a field
/// of any JSON type.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlaintextOverrider {
    /// A JSON pointer, e.g. `/spec/replicas`.
    #[schemars(regex(pattern = JSON_POINTER))]
    pub path: String,
    pub operator: OverriderOperator,
    /// The value for add and replace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::any_json")]
    pub value: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "self.operator == 'remove' || (has(self.value) && size(self.value) > 0)",
    "message": "value must not be empty for operators add and replace",
    "fieldPath": ".value"
}]))]
pub struct ImageOverrider {
    /// Which image to change; absent means every container and init
    /// container image of a workload's pod template (or a Pod's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicate: Option<ImagePredicate>,
    pub component: ImageComponent,
    pub operator: OverriderOperator,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImagePredicate {
    /// JSON pointer to an image string, e.g.
    /// `/spec/template/spec/containers/0/image`.
    #[schemars(regex(pattern = JSON_POINTER))]
    pub path: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ImageComponent {
    Registry,
    Repository,
    Tag,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "self.operator != 'replace'",
    "message": "operator must be add or remove (as in Karmada), not replace",
    "fieldPath": ".operator"
}]))]
pub struct CommandArgsOverrider {
    #[schemars(length(min = 1))]
    pub container_name: String,
    /// `add` appends the values, `remove` drops them.
    pub operator: OverriderOperator,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub value: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LabelAnnotationOverrider {
    /// `add` sets the keys, `replace` changes only keys that exist (as in
    /// Karmada), `remove` deletes them.
    pub operator: OverriderOperator,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub value: BTreeMap<String, String>,
}

/// Overrides templates in its own namespace (Karmada's OverridePolicy).
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "policy.flotilla.io",
    version = "v1alpha1",
    kind = "OverridePolicy",
    plural = "overridepolicies",
    shortname = "op",
    namespaced,
    status = "PolicyStatus"
)]
#[serde(rename_all = "camelCase")]
pub struct OverridePolicySpec {
    #[serde(flatten)]
    pub spec: OverrideSpec,
}

/// Overrides templates in any namespace and cluster-scoped ones (Karmada's
/// ClusterOverridePolicy). Applied before namespaced OverridePolicies.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "policy.flotilla.io",
    version = "v1alpha1",
    kind = "ClusterOverridePolicy",
    plural = "clusteroverridepolicies",
    shortname = "cop",
    status = "PolicyStatus"
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterOverridePolicySpec {
    #[serde(flatten)]
    pub spec: OverrideSpec,
}

/// Condition types on policies.
pub mod conditions {
    pub const VALID: &str = "Valid";
}
