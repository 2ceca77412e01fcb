//! Gradual migration of workloads that already run in members: which
//! templates the fleet may manage (the opt-in), what `flotilla promote`
//! makes of a member object (a clean hub template and a policy that adopts
//! it where it runs), and what `flotilla release` decides (the template's
//! Works preserve their objects; the promoted policy goes when nothing else
//! uses it). Tables in `migration_tests.rs`.

use std::collections::{BTreeMap, BTreeSet};

use flotilla_api::work::keys;
use serde_json::{json, Map, Value};

use crate::workload::{api_group, type_of};

/// The label (on a template or its namespace) that opts an application in
/// (`true`) or a template out (`false`) under `hub run --require-opt-in`.
pub const MANAGED_LABEL: &str = "apps.flotilla.io/managed";
pub use crate::workload::RELEASE_ANNOTATION;
/// The annotation on a promoted template and its policy: the cluster it
/// was promoted from.
pub const PROMOTED_FROM: &str = "apps.flotilla.io/promoted-from";
/// The label on a policy `flotilla promote` made (so `release` may delete it).
pub const PROMOTED_LABEL: &str = "apps.flotilla.io/promoted";
/// The outcome reason of a template the fleet may not manage.
pub const REASON_NOT_OPTED_IN: &str = "NotOptedIn";

/// Which applications the fleet may manage.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OptIn {
    /// Off (the default): every template a policy selects is managed.
    pub required: bool,
    /// Namespaces opted in as a whole (besides those labelled).
    pub namespaces: BTreeSet<String>,
}

/// Whether the fleet may manage a template: `Ok` or the reason it may not.
/// A template's own label decides first (`false` opts it out even in an
/// opted-in namespace); then a dependency of a managed template follows it;
/// then the namespace (listed, or labelled).
pub fn opted_in(
    opt_in: &OptIn,
    namespace: &str,
    namespace_labels: Option<&BTreeMap<String, String>>,
    template_labels: &BTreeMap<String, String>,
    needed_by_managed: bool,
) -> Result<(), String> {
    if !opt_in.required {
        return Ok(());
    }
    match template_labels.get(MANAGED_LABEL).map(String::as_str) {
        Some("true") => return Ok(()),
        Some("false") => {
            return Err(format!(
                "the template opts out ({MANAGED_LABEL}=false): the fleet leaves it and its members alone"
            ))
        }
        _ => {}
    }
    if needed_by_managed {
        return Ok(());
    }
    let namespace_in = !namespace.is_empty()
        && (opt_in.namespaces.contains(namespace)
            || namespace_labels.and_then(|l| l.get(MANAGED_LABEL)).map(String::as_str) == Some("true"));
    if namespace_in {
        return Ok(());
    }
    let scope = if namespace.is_empty() {
        "the template".to_string()
    } else {
        format!("the template or its namespace {namespace}")
    };
    Err(format!(
        "the hub manages only opted-in applications (--require-opt-in) and {scope} does not carry \
         {MANAGED_LABEL}=true; nothing was dispatched and its members are left untouched"
    ))
}

/// Whether `flotilla release` marked the template.
pub fn is_released(annotations: &BTreeMap<String, String>) -> bool {
    annotations.get(RELEASE_ANNOTATION).is_some_and(|v| v == "true")
}

/// What a person wrote to name an object: `deployment/web`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectArg {
    /// The resource type as written (`deployment`, `deployments.apps`, `deploy`).
    pub resource: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MigrationError {
    #[error("`{0}` is not TYPE/NAME (e.g. deployment/web or deployments.apps/web)")]
    NotTypeName(String),
    #[error("{0}")]
    NotPromotable(String),
}

/// Parses `TYPE/NAME` as kubectl does.
pub fn parse_object_arg(arg: &str) -> Result<ObjectArg, MigrationError> {
    match arg.split_once('/') {
        Some((resource, name)) if !resource.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok(ObjectArg { resource: resource.to_ascii_lowercase(), name: name.into() })
        }
        _ => Err(MigrationError::NotTypeName(arg.into())),
    }
}

/// How the API names one resource type (from discovery).
#[derive(Debug, Clone, Copy)]
pub struct ResourceNames<'a> {
    pub group: &'a str,
    pub kind: &'a str,
    pub plural: &'a str,
    pub short_names: &'a [String],
}

/// Whether `written` (lower case, as parsed) names the resource: its
/// plural, singular (the kind in lower case), kind or a short name, each
/// optionally followed by `.group`.
pub fn names_resource(written: &str, names: &ResourceNames) -> bool {
    let (bare, group) = match written.split_once('.') {
        Some((bare, group)) => (bare, Some(group)),
        None => (written, None),
    };
    if group.is_some_and(|g| g != names.group) {
        return false;
    }
    let kind = names.kind.to_ascii_lowercase();
    bare == names.plural || bare == kind || names.short_names.iter().any(|s| s == bare)
}

const DROPPED_METADATA: &[&str] = &[
    "uid",
    "resourceVersion",
    "managedFields",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
    "generateName",
    "ownerReferences",
    "finalizers",
    "selfLink",
];

/// Annotations only the member's own controllers or clients mean.
const DROPPED_ANNOTATIONS: &[&str] = &[
    "deployment.kubernetes.io/revision",
    "kubectl.kubernetes.io/last-applied-configuration",
    keys::APPLIED_BY_WORK,
];

/// The hub template made from a member object: the object as it runs
/// (its spec, pod template included, untouched, so the member sees no
/// change and restarts nothing), without its status and what only the
/// member set (server metadata, owners, controller annotations, a
/// Service's allocated cluster IPs, a Job's generated selector), labelled
/// as opted in and annotated with the cluster it came from.
pub fn template_from_member(object: &Value, cluster: &str) -> Result<Value, MigrationError> {
    let Some(fields) = object.as_object() else {
        return Err(MigrationError::NotPromotable("the member object is not a JSON object".into()));
    };
    let owned = object.pointer("/metadata/ownerReferences").and_then(Value::as_array);
    if let Some(owner) = owned.and_then(|o| o.iter().find(|r| r.get("controller") == Some(&json!(true)))) {
        let text = |k: &str| owner.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
        return Err(MigrationError::NotPromotable(format!(
            "it is controlled by {} {}: promote that instead",
            text("kind"),
            text("name")
        )));
    }
    let mut out: Map<String, Value> =
        fields.iter().filter(|(k, _)| k.as_str() != "status").map(|(k, v)| (k.clone(), v.clone())).collect();
    let mut metadata = fields.get("metadata").and_then(Value::as_object).cloned().unwrap_or_default();
    for field in DROPPED_METADATA {
        metadata.remove(*field);
    }
    let mut annotations = metadata.get("annotations").and_then(Value::as_object).cloned().unwrap_or_default();
    for annotation in DROPPED_ANNOTATIONS {
        annotations.remove(*annotation);
    }
    annotations.insert(PROMOTED_FROM.into(), cluster.into());
    metadata.insert("annotations".into(), Value::Object(annotations));
    let mut labels = metadata.get("labels").and_then(Value::as_object).cloned().unwrap_or_default();
    labels.remove(keys::MANAGED_BY);
    labels.insert(MANAGED_LABEL.into(), "true".into());
    metadata.insert("labels".into(), Value::Object(labels));
    out.insert("metadata".into(), Value::Object(metadata));
    let mut out = Value::Object(out);
    let (api_version, kind) = type_of(object);
    match (api_group(api_version), kind) {
        ("", "Service") => crate::workload::strip_cluster_ip(&mut out),
        ("batch", "Job") => crate::workload::strip_job_selector(&mut out),
        _ => {}
    }
    Ok(out)
}

/// The policy's name for a promoted template: `promoted-<kind>-<name>`
/// (lower case), within the 253 characters a name may have.
pub fn promoted_policy_name(kind: &str, name: &str) -> String {
    let full = format!("promoted-{}-{name}", kind.to_ascii_lowercase());
    if full.len() <= 253 {
        return full;
    }
    let digest = crate::binding::spec_hash(&json!(full));
    let keep: String = full.chars().take(253 - 1 - digest.len().min(16)).collect();
    format!("{}-{}", keep.trim_end_matches(['-', '.']), &digest[..digest.len().min(16)])
}

/// The policy `flotilla promote` writes: it selects exactly the promoted
/// template, places it on the cluster it runs in (every replica there), and
/// takes the existing object over (`conflictResolution: Overwrite`, the
/// only way the applier touches an object it did not create). A
/// cluster-scoped template gets a ClusterPropagationPolicy.
pub fn promoted_policy(template: &Value, cluster: &str) -> Value {
    let (api_version, kind) = type_of(template);
    let name = template.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    let namespace = template.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default();
    let mut selector = json!({"apiVersion": api_version, "kind": kind, "name": name});
    let mut metadata = json!({
        "name": promoted_policy_name(kind, name),
        "labels": {PROMOTED_LABEL: "true"},
        "annotations": {PROMOTED_FROM: cluster},
    });
    let policy_kind = if namespace.is_empty() {
        "ClusterPropagationPolicy"
    } else {
        metadata["namespace"] = json!(namespace);
        selector["namespace"] = json!(namespace);
        "PropagationPolicy"
    };
    json!({
        "apiVersion": format!("{}/v1alpha1", flotilla_api::policy::GROUP),
        "kind": policy_kind,
        "metadata": metadata,
        "spec": {
            "resourceSelectors": [selector],
            "placement": {
                "clusterAffinity": {"clusterNames": [cluster]},
                "replicaScheduling": {"replicaSchedulingType": "Duplicated"},
            },
            "conflictResolution": "Overwrite",
        },
    })
}

/// What `release` does with the policy the template used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyFate {
    /// It was made by `promote` and nothing else uses it.
    Delete,
    /// Kept, and why.
    Keep(String),
}

/// Whether `release` deletes the template's policy: only one `promote` made
/// (its label), and only when no other binding uses it.
pub fn policy_fate(policy_labels: &BTreeMap<String, String>, other_users: &[String]) -> PolicyFate {
    if policy_labels.get(PROMOTED_LABEL).map(String::as_str) != Some("true") {
        return PolicyFate::Keep("it was not made by `flotilla promote`".into());
    }
    if !other_users.is_empty() {
        return PolicyFate::Keep(format!("it is also used by {}", other_users.join(", ")));
    }
    PolicyFate::Delete
}

/// A Work's spec with `preserveResourcesOnDeletion` set, and whether it
/// changed.
pub fn preserving(work_spec: &Value) -> (Value, bool) {
    let mut spec = work_spec.clone();
    let already = spec.get("preserveResourcesOnDeletion").and_then(Value::as_bool) == Some(true);
    if let Some(fields) = spec.as_object_mut() {
        fields.insert("preserveResourcesOnDeletion".into(), Value::Bool(true));
    }
    (spec, !already)
}

#[cfg(test)]
#[path = "migration_tests.rs"]
mod tests;
