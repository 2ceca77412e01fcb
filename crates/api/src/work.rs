//! `work.flotilla.io/v1alpha1`: the hub's record of where each template
//! goes (bindings) and what each member must apply (works).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::policy::{ConflictResolution, Placement};

pub const GROUP: &str = "work.flotilla.io";

/// Labels and annotations Flotilla puts on works, bindings and the objects
/// it applies in members.
pub mod keys {
    /// On a Work: hash of the template's identity (group, kind, namespace,
    /// name), so a binding's works can be listed by label.
    pub const TEMPLATE_KEY: &str = "work.flotilla.io/template-key";
    /// On a Work: hash of its spec, so unchanged works are not rewritten.
    pub const SPEC_HASH: &str = "work.flotilla.io/spec-hash";
    /// On a Work: `namespace/name` (or `name`) of its binding.
    pub const BINDING: &str = "work.flotilla.io/binding";
    /// On a Work: the binding kind (ResourceBinding or ClusterResourceBinding).
    pub const BINDING_KIND: &str = "work.flotilla.io/binding-kind";
    /// On a Work: the replicas it carries while a move is in progress (a
    /// step towards the binding's division; equal to it once settled).
    pub const REPLICAS: &str = "work.flotilla.io/replicas";
    /// On a Work: `metadata.generation` of the template it was built from.
    pub const TEMPLATE_GENERATION: &str = "work.flotilla.io/template-generation";
    /// On an object in a member: Flotilla manages it.
    pub const MANAGED_BY: &str = "app.flotilla.io/managed-by";
    pub const MANAGED_BY_VALUE: &str = "flotilla";
    /// On an object in a member: `namespace/name` of the Work that applied it.
    pub const APPLIED_BY_WORK: &str = "work.flotilla.io/applied-by";
    /// Finalizer on a Work: the applier removes the member objects first.
    pub const WORK_FINALIZER: &str = "work.flotilla.io/applied-resources";
    /// On a binding: a request to divide its replicas again from scratch
    /// (a `WorkloadRebalancer`'s token, written by `flotilla-rebalancer`);
    /// the binder records the token it honoured in `spec.rebalanced`.
    pub const REBALANCE: &str = "work.flotilla.io/rebalance";
}

/// Condition types on bindings and works.
pub mod conditions {
    /// Binding: clusters were chosen (False with the reason when none fit).
    pub const SCHEDULED: &str = "Scheduled";
    /// Binding: every chosen cluster applied its work.
    pub const FULLY_APPLIED: &str = "FullyApplied";
    /// Work: every manifest was applied.
    pub const APPLIED: &str = "Applied";
    /// Work: every applied manifest is healthy.
    pub const AVAILABLE: &str = "Available";
    /// Binding, and the hub's template (for the kinds whose status the hub
    /// aggregates): the template is healthy in every chosen cluster; the
    /// message names each cluster where it is not, and why.
    pub const HEALTHY: &str = "Healthy";
}

/// The template a binding is for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectReference {
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
}

/// The policy that selected a template.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyReference {
    /// PropagationPolicy or ClusterPropagationPolicy.
    pub kind: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    pub name: String,
}

/// A cluster chosen for a template, with its share of the replicas.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetCluster {
    pub name: String,
    #[serde(default)]
    pub replicas: i32,
}

/// Per-replica resource requests of a workload's pod template.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaRequirements {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub resource_request: BTreeMap<String, Quantity>,
}

/// A cluster the template is being moved away from. Its work stays until
/// the replicas are available elsewhere (or the grace period ends), so a
/// failover never drops below the wanted count when it can avoid it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GracefulEvictionTask {
    pub from_cluster: String,
    #[serde(default)]
    pub replicas: i32,
    pub reason: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    pub creation_timestamp: Time,
    /// What made the task (Karmada's `producer`): `TaintManager` or
    /// `ApplicationFailover`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub producer: String,
    /// How the copy goes (`failover.*.purgeMode`); absent: gracefully.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purge_mode: Option<crate::policy_failover::PurgeMode>,
    /// A graceful purge's longest wait (default 600 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_period_seconds: Option<i32>,
    /// `true` (purge mode `Never`): the copy stays until a person sets
    /// this to false (or the cluster is chosen again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suppress_deletion: Option<bool>,
    /// The failed copy's state (`statePreservation`), label by label.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub preserved_label_state: BTreeMap<String, String>,
    /// The clusters before this failover: copies there do not take the
    /// preserved state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clusters_before_failover: Vec<String>,
}

/// A template that needs this one (propagateDeps), and where it runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BindingSnapshot {
    /// Name of the binding that depends on this template.
    pub name: String,
    pub clusters: Vec<String>,
}

/// Spec shared by ResourceBinding and ClusterResourceBinding.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BindingSpec {
    pub resource: ObjectReference,
    /// The policy that selected the template; absent for a dependency that
    /// only follows other templates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyReference>,
    /// The template's replica count (0 when it has none).
    #[serde(default)]
    pub replicas: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_requirements: Option<ReplicaRequirements>,
    #[serde(default)]
    pub placement: Placement,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub propagate_deps: bool,
    #[serde(default)]
    pub conflict_resolution: ConflictResolution,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub preserve_resources_on_deletion: bool,
    /// The policy's suspension (as in Karmada's ResourceBinding): the
    /// binder dispatches nothing to the suspended clusters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspension: Option<crate::policy::Suspension>,
    /// Chosen clusters and their replicas (written by the scheduler).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<TargetCluster>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub graceful_eviction_tasks: Vec<GracefulEvictionTask>,
    /// Clusters the replicas left because of the hub's health taints
    /// (failover). Once such a cluster is healthy again for the hub's
    /// stabilisation period, the binding returns to the division its
    /// policy asks for (unless the policy is annotated
    /// `policy.flotilla.io/return-after-failover: "false"`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_over_from: Vec<String>,
    /// Bindings whose templates need this one (propagateDeps).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_by: Vec<BindingSnapshot>,
    /// With propagateDeps: the objects in the template's namespace its pod
    /// template refers to (they follow it to its clusters).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependencies: Vec<ObjectReference>,
    /// Clusters replicas were descheduled from (they stayed unschedulable
    /// there): each keeps at most what it ran until its capacity changes,
    /// so replicas never ping-pong back to it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub descheduled: Vec<DescheduledCluster>,
    /// The last rebalance request (the `work.flotilla.io/rebalance`
    /// annotation) the binder honoured by dividing from scratch.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub rebalanced: String,
    /// The policy's `failover` (as in Karmada's binding).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<crate::policy_failover::FailoverBehavior>,
    /// Labels carried to copies a failover moved the application to
    /// (`statePreservation`), one entry per such cluster while it stays
    /// chosen.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preserved_states: Vec<crate::policy_failover::PreservedState>,
    /// The template's groups under `placement.workloadAffinity` (Karmada's
    /// field): the binder keeps workloads of one affinity group together
    /// and of one anti-affinity group apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity_groups: Option<BindingAffinityGroups>,
}

/// A binding's workload groups, each `labelKey=labelValue` (empty: none).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BindingAffinityGroups {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub affinity_group: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub anti_affinity_group: String,
}

/// A cluster that gave away replicas its scheduler could not place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DescheduledCluster {
    pub cluster: String,
    /// The most replicas it keeps while its capacity is unchanged.
    #[serde(default)]
    pub keeps: i32,
    /// Its capacity as the hub saw it then (a fingerprint of what it
    /// reported); any change lifts the limit.
    pub capacity: String,
    pub time: Time,
}

/// How one cluster is doing with a template.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AggregatedStatusItem {
    pub cluster_name: String,
    pub applied: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub applied_message: String,
    #[serde(default)]
    pub health: Health,
    /// Why the object is not healthy in this cluster (as its Work says).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_detail: Option<HealthDetail>,
    /// The object's status in the member (fed-back fields).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::any_json")]
    pub status: Option<serde_json::Value>,
    /// Who owns the replicas in this cluster when not the template (a
    /// member HPA, e.g. `HorizontalPodAutoscaler/web`): the cluster runs
    /// the replicas its HPA chose, not the ones the template gives it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas_owner: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Health {
    Healthy,
    Unhealthy,
    #[default]
    Unknown,
}

/// Why an applied object is not healthy, as the member's agent judged it
/// from the object's status and its pods' (absent when healthy).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthDetail {
    /// The worst problem found, in one word: `CrashLoopBackOff`,
    /// `ImagePullBackOff`, `ErrImageNeverPull`, `CreateContainerConfigError`
    /// (or another reason the kubelet gives a waiting container),
    /// `ContainerFailed`, `PodFailed`, a Job's or Deployment's failure
    /// reason (`BackoffLimitExceeded`, `ProgressDeadlineExceeded`,
    /// `FailedCreate`), `Unschedulable`, `ReadinessProbeFailing`, or
    /// `Progressing` when nothing is wrong but the object is not there yet.
    #[schemars(length(min = 1, max = 128))]
    pub reason: String,
    /// What a person reads: which container or pods, how many, the
    /// kubelet's or scheduler's own words; other problems after the worst.
    #[schemars(length(max = 1024))]
    pub message: String,
    /// Restarts of the most restarted container of the object's pods
    /// (absent when none restarted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_count: Option<i32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BindingStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler_observed_generation: Option<i64>,
    /// With `placement.clusterAffinities`: the group the placement is
    /// based on (Karmada's field, JSON name included). The scheduler
    /// starts from it on the next pass.
    #[serde(default, rename = "schedulerObservingAffinityName", skip_serializing_if = "Option::is_none")]
    pub scheduler_observed_affinity_name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aggregated_status: Vec<AggregatedStatusItem>,
}

/// Where a namespaced template goes (one per template, in its namespace).
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "work.flotilla.io",
    version = "v1alpha1",
    kind = "ResourceBinding",
    plural = "resourcebindings",
    shortname = "rb",
    namespaced,
    status = "BindingStatus",
    printcolumn = r#"{"name":"Kind","type":"string","jsonPath":".spec.resource.kind"}"#,
    printcolumn = r#"{"name":"Scheduled","type":"string","jsonPath":".status.conditions[?(@.type==\"Scheduled\")].status"}"#,
    printcolumn = r#"{"name":"Applied","type":"string","jsonPath":".status.conditions[?(@.type==\"FullyApplied\")].status"}"#,
    printcolumn = r#"{"name":"Healthy","type":"string","jsonPath":".status.conditions[?(@.type==\"Healthy\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Health","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Healthy\")].message"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ResourceBindingSpec {
    #[serde(flatten)]
    pub spec: BindingSpec,
}

/// Where a cluster-scoped template goes.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "work.flotilla.io",
    version = "v1alpha1",
    kind = "ClusterResourceBinding",
    plural = "clusterresourcebindings",
    shortname = "crb",
    status = "BindingStatus",
    printcolumn = r#"{"name":"Kind","type":"string","jsonPath":".spec.resource.kind"}"#,
    printcolumn = r#"{"name":"Scheduled","type":"string","jsonPath":".status.conditions[?(@.type==\"Scheduled\")].status"}"#,
    printcolumn = r#"{"name":"Applied","type":"string","jsonPath":".status.conditions[?(@.type==\"FullyApplied\")].status"}"#,
    printcolumn = r#"{"name":"Healthy","type":"string","jsonPath":".status.conditions[?(@.type==\"Healthy\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Health","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Healthy\")].message"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterResourceBindingSpec {
    #[serde(flatten)]
    pub spec: BindingSpec,
}

/// What one member must apply, in that member's namespace on the hub.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "work.flotilla.io",
    version = "v1alpha1",
    kind = "Work",
    plural = "works",
    namespaced,
    status = "WorkStatus",
    printcolumn = r#"{"name":"Applied","type":"string","jsonPath":".status.conditions[?(@.type==\"Applied\")].status"}"#,
    printcolumn = r#"{"name":"Available","type":"string","jsonPath":".status.conditions[?(@.type==\"Available\")].status"}"#,
    printcolumn = r#"{"name":"Health","type":"string","jsonPath":".status.manifestStatuses[0].healthDetail.reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Message","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Available\")].message"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct WorkSpec {
    /// Complete Kubernetes objects, overrides already applied.
    #[serde(default)]
    pub manifests: Vec<Manifest>,
    #[serde(default)]
    pub conflict_resolution: ConflictResolution,
    /// When the work is deleted, leave its objects in the member.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub preserve_resources_on_deletion: bool,
    /// The health rules of the `WorkloadInterpreter`s of the manifests'
    /// kinds, copied by the hub so the agent judges custom kinds without
    /// reading (or being allowed to read) interpreters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub health_rules: Vec<crate::interpreter::KindHealthRule>,
}

/// One object of a Work.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct Manifest(#[schemars(schema_with = "crate::any_object")] pub serde_json::Value);

/// Which object a manifest status is about.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceIdentifier {
    /// Position of the manifest in `spec.manifests`.
    #[serde(default)]
    pub ordinal: i32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    // Empty (and then left out, like every empty field here) only for a
    // manifest that lacks it, which the status then reports.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// Plural resource name in the member.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub resource: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManifestStatus {
    pub identifier: ResourceIdentifier,
    pub applied: bool,
    /// Why not applied (e.g. a conflict with an object Flotilla did not create).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default)]
    pub health: Health,
    /// Why the object is not healthy (absent when healthy, or when the
    /// agent cannot tell yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_detail: Option<HealthDetail>,
    /// The object's `.status` in the member (fed back to the hub).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::any_json")]
    pub status: Option<serde_json::Value>,
    /// The object's `metadata.generation` in the member when `status` was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// Who owns the object's `spec.replicas` in the member when it is not
    /// the Work, e.g. `HorizontalPodAutoscaler/web`: the applier keeps the
    /// member's replicas instead of the manifest's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas_owner: Option<String>,
    /// Replicas of a workload the member's scheduler cannot place (pods
    /// Pending with `PodScheduled=False`, reason `Unschedulable`), absent
    /// when there are none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unschedulable: Option<UnschedulableReplicas>,
}

/// Replicas Pending as unschedulable in a member, and since when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UnschedulableReplicas {
    pub replicas: i32,
    /// When the oldest of them was found unschedulable.
    pub since: Time,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Every object the applier has applied for this work and not yet
    /// removed (also how it knows what to delete when a manifest goes away).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub manifest_statuses: Vec<ManifestStatus>,
    /// The spec hash (`work.flotilla.io/spec-hash`) the status describes.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub observed_spec_hash: String,
    /// The pods' usage of each workload manifest, reported by the member's
    /// agent only while the Work is labelled
    /// `autoscaling.flotilla.io/report-usage` (a FederatedHPA targets its
    /// template). Its own field (manager `flotilla-usage`), not a field of
    /// `manifestStatuses`: that list is atomic and the applier's, which
    /// would drop another writer's entries on each of its applies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["ordinal"]))]
    pub usage: Vec<crate::autoscaling::ManifestUsage>,
    /// Warning Events of the member about the objects this Work applied
    /// (or their ReplicaSets and pods), one per manifest and reason, the
    /// most recent first and at most a few (`apps_core::member_events`).
    /// Written by the agent's event reporter alone (field manager
    /// `flotilla-member-events`); the hub re-emits them as Events on the
    /// template.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub member_warnings: Vec<MemberWarning>,
}

/// A Warning Event the member recorded about an object a Work applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberWarning {
    /// The manifest whose object (or whose pods) the Event is about.
    pub ordinal: i32,
    /// The object the latest Event was about, `Kind/name` (e.g.
    /// `Pod/web-7d9c-x2x`).
    pub object: String,
    /// The Event's reason (`FailedScheduling`, `BackOff`, ...).
    pub reason: String,
    /// The latest Event's message.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// How many times the agent saw such an Event (its series too).
    pub count: i32,
    /// When the agent last saw one.
    pub last_seen: Time,
}
