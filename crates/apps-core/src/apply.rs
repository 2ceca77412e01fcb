//! Decisions of the work applier (the part of the agent that applies Works
//! in a member): which object a manifest is, what is sent to the member,
//! whether an existing object may be touched, what to delete when a
//! manifest goes away, and the Work's status.

use std::collections::BTreeMap;

use flotilla_api::policy::ConflictResolution;
use flotilla_api::work::{
    conditions, keys, Health, Manifest, ManifestStatus, ResourceIdentifier, WorkStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::Value;

use flotilla_core::conditions::Wanted;

/// `reason` of a manifest that was not applied because its object belongs
/// to someone else.
pub const REASON_CONFLICT: &str = "Conflict";
/// `reason` of a manifest the member rejected.
pub const REASON_APPLY_FAILED: &str = "ApplyFailed";
/// `reason` of a manifest whose kind the member does not serve.
pub const REASON_UNKNOWN_KIND: &str = "UnknownKind";
/// `reason` of a manifest that is not a usable object.
pub const REASON_INVALID: &str = "InvalidManifest";
/// `reason` of an object removed from the spec whose deletion failed.
pub const REASON_DELETE_FAILED: &str = "DeleteFailed";

/// How long until the applier looks again at a manifest that was not
/// applied for `reason` (None: only a change of the Work can help, so it
/// waits for one).
pub fn recheck_after(reason: &str) -> Option<std::time::Duration> {
    use std::time::Duration;
    match reason {
        "" | REASON_INVALID => None,
        // The owner may let go of it.
        REASON_CONFLICT => Some(Duration::from_secs(30)),
        // A CRD may be installed in the member.
        REASON_UNKNOWN_KIND => Some(Duration::from_secs(3)),
        _ => Some(Duration::from_secs(10)),
    }
}

/// Ordinal of a manifest status kept for an object that left the spec but
/// could not be deleted yet (so the next attempt still knows about it).
pub const ORDINAL_REMOVED: i32 = -1;

/// The object a manifest describes, as written (namespace may be empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl Target {
    /// `Kind namespace/name` (or `Kind name`), for messages.
    pub fn describe(&self) -> String {
        describe(&self.kind, &self.namespace, &self.name)
    }
}

fn describe(kind: &str, namespace: &str, name: &str) -> String {
    if namespace.is_empty() {
        format!("{kind} {name}")
    } else {
        format!("{kind} {namespace}/{name}")
    }
}

/// Which object a manifest is, or why it is not a usable object.
pub fn target(manifest: &Value) -> Result<Target, String> {
    let text = |pointer: &str| manifest.pointer(pointer).and_then(Value::as_str).unwrap_or_default();
    if !manifest.is_object() {
        return Err(
            "the manifest is not a JSON object; every manifest is a complete Kubernetes object".into()
        );
    }
    let (api_version, kind, name) = (text("/apiVersion"), text("/kind"), text("/metadata/name"));
    let missing: Vec<&str> = [("apiVersion", api_version), ("kind", kind), ("metadata.name", name)]
        .into_iter()
        .filter(|(_, value)| value.is_empty())
        .map(|(field, _)| field)
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "the manifest has no {}; every manifest needs apiVersion, kind and metadata.name (fix the Work \
             or its template; nothing is retried until it changes)",
            missing.join(" and ")
        ));
    }
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    Ok(Target {
        group: group.into(),
        version: version.into(),
        kind: kind.into(),
        namespace: text("/metadata/namespace").into(),
        name: name.into(),
    })
}

/// Value of the `applied-by` annotation for a Work.
pub fn applied_by(hub_namespace: &str, work_name: &str) -> String {
    format!("{hub_namespace}/{work_name}")
}

/// The object to server-side apply in the member: the manifest with the
/// member-side namespace (None: cluster-scoped), Flotilla's label and the
/// `applied-by` annotation, and without what only made sense on the hub
/// (server-set metadata, status).
pub fn prepare(manifest: &Value, namespace: Option<&str>, applied_by: &str) -> Value {
    let mut object = manifest.clone();
    let Some(fields) = object.as_object_mut() else { return object };
    fields.remove("status");
    let metadata = fields.entry("metadata").or_insert_with(|| Value::Object(Default::default()));
    if let Some(metadata) = metadata.as_object_mut() {
        for server_set in [
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "managedFields",
            "selfLink",
            // Owners and finalizers of the hub's copy mean nothing in a member.
            "ownerReferences",
            "finalizers",
        ] {
            metadata.remove(server_set);
        }
        match namespace {
            Some(ns) => metadata.insert("namespace".into(), Value::String(ns.into())),
            None => metadata.remove("namespace"),
        };
        insert_key(metadata, "labels", keys::MANAGED_BY, keys::MANAGED_BY_VALUE);
        insert_key(metadata, "annotations", keys::APPLIED_BY_WORK, applied_by);
    }
    object
}

fn insert_key(metadata: &mut serde_json::Map<String, Value>, map: &str, key: &str, value: &str) {
    let entry = metadata.entry(map).or_insert_with(|| Value::Object(Default::default()));
    if !entry.is_object() {
        *entry = Value::Object(Default::default());
    }
    if let Some(entries) = entry.as_object_mut() {
        entries.insert(key.into(), Value::String(value.into()));
    }
}

/// Who an existing object in the member belongs to, as far as Flotilla is
/// concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ownership {
    /// No such object.
    Absent,
    /// Applied for this Work.
    Ours,
    /// Made by Flotilla for no Work in particular (a namespace created so
    /// that an object could be applied in it): anyone may adopt it.
    Flotilla,
    /// Applied for another Work (its `applied-by` value).
    OtherWork(String),
    /// Not created by Flotilla.
    Unmanaged,
}

/// Ownership of an existing object from its labels and annotations.
pub fn ownership(
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
    applied_by: &str,
) -> Ownership {
    if labels.get(keys::MANAGED_BY).map(String::as_str) != Some(keys::MANAGED_BY_VALUE) {
        return Ownership::Unmanaged;
    }
    managed_ownership(annotations.get(keys::APPLIED_BY_WORK).map_or("", String::as_str), applied_by)
}

/// Ownership of an object known to carry Flotilla's label, from its
/// `applied-by` annotation (empty when absent).
pub fn managed_ownership(owner: &str, applied_by: &str) -> Ownership {
    if owner == applied_by {
        Ownership::Ours
    } else if owner.is_empty() {
        Ownership::Flotilla
    } else {
        Ownership::OtherWork(owner.into())
    }
}

/// Whether the applier may write the object: it is free or ours, or the
/// policy says to take it over.
pub fn may_apply(ownership: &Ownership, resolution: ConflictResolution) -> bool {
    match ownership {
        Ownership::Absent | Ownership::Ours | Ownership::Flotilla => true,
        Ownership::OtherWork(_) | Ownership::Unmanaged => resolution == ConflictResolution::Overwrite,
    }
}

/// Whether the applier may delete (or release) the object: only its own.
pub fn may_remove(ownership: &Ownership) -> bool {
    *ownership == Ownership::Ours
}

/// What a person reads when a manifest was not applied because of a conflict.
pub fn conflict_message(target: &Target, cluster: &str, ownership: &Ownership) -> String {
    let who = match ownership {
        Ownership::OtherWork(owner) => format!("is managed by another Work ({owner})"),
        _ => "was not created by Flotilla".into(),
    };
    format!(
        "{} already exists in cluster {cluster} and {who}; it was left untouched. \
         Set `conflictResolution: Overwrite` on the propagation policy to take it over",
        target.describe()
    )
}

/// Whether two identifiers name the same object (the version may change
/// between applies; the object stays the same).
pub fn same_object(a: &ResourceIdentifier, b: &ResourceIdentifier) -> bool {
    a.group == b.group && a.kind == b.kind && a.namespace == b.namespace && a.name == b.name
}

/// Objects recorded in the previous status that are no longer in the spec:
/// the applier deletes them from the member (if still its own).
pub fn removed_from_spec<'a>(
    previous: &'a [ResourceIdentifier],
    current: &[ResourceIdentifier],
) -> Vec<&'a ResourceIdentifier> {
    let mut removed: Vec<&ResourceIdentifier> = Vec::new();
    for id in previous {
        // Without a resolved resource (never applied) there is nothing to delete.
        if id.resource.is_empty() || id.name.is_empty() {
            continue;
        }
        if current.iter().any(|c| same_object(c, id)) || removed.iter().any(|r| same_object(r, id)) {
            continue;
        }
        removed.push(id);
    }
    removed
}

/// The order to apply manifests in (indexes into the spec): namespaces and
/// CRDs first, so the objects that need them can be created in the same pass.
pub fn apply_order(manifests: &[Manifest]) -> Vec<usize> {
    let rank = |Manifest(m): &Manifest| match (m["apiVersion"].as_str(), m["kind"].as_str()) {
        (Some("v1"), Some("Namespace")) => 0,
        (Some(v), Some("CustomResourceDefinition")) if v.starts_with("apiextensions.k8s.io/") => 1,
        _ => 2,
    };
    let mut order: Vec<usize> = (0..manifests.len()).collect();
    order.sort_by_key(|&i| rank(&manifests[i]));
    order
}

/// The Work's status: the manifest statuses (in spec order, then objects
/// pending removal), the `Applied` and `Available` conditions (keeping
/// their transition times while their status holds) and the spec hash it
/// describes.
pub fn work_status(
    cluster: &str,
    mut manifest_statuses: Vec<ManifestStatus>,
    observed_spec_hash: &str,
    generation: Option<i64>,
    previous: Option<&WorkStatus>,
    now: &Time,
) -> WorkStatus {
    manifest_statuses.sort_by_key(|s| (s.identifier.ordinal < 0, s.identifier.ordinal));
    let in_spec: Vec<&ManifestStatus> =
        manifest_statuses.iter().filter(|s| s.identifier.ordinal != ORDINAL_REMOVED).collect();
    let previous_conditions = previous.map(|p| p.conditions.as_slice()).unwrap_or_default();
    let condition = |type_: &str, ok: bool, reason: String, message: String| {
        let wanted = Wanted::new(type_, ok, &reason, message).generation(generation);
        flotilla_core::conditions::condition(previous_conditions, wanted, now)
    };

    let not_applied: Vec<&&ManifestStatus> = in_spec.iter().filter(|s| !s.applied).collect();
    let applied = match not_applied.first() {
        None => condition(
            conditions::APPLIED,
            true,
            "Applied".into(),
            format!("{} manifest(s) applied in cluster {cluster}", in_spec.len()),
        ),
        Some(first) => condition(
            conditions::APPLIED,
            false,
            first.reason.clone(),
            with_more(&first.message, not_applied.len() - 1),
        ),
    };
    let unhealthy: Vec<&&ManifestStatus> = in_spec.iter().filter(|s| s.health == Health::Unhealthy).collect();
    let unknown: Vec<&&ManifestStatus> = in_spec.iter().filter(|s| s.health == Health::Unknown).collect();
    let available = if !not_applied.is_empty() {
        condition(
            conditions::AVAILABLE,
            false,
            "NotApplied".into(),
            format!("{} manifest(s) not applied in cluster {cluster}", not_applied.len()),
        )
    } else if let Some(first) = unhealthy.first() {
        let message =
            format!("{} is not healthy in cluster {cluster}{}", describe_id(&first.identifier), why(first));
        condition(conditions::AVAILABLE, false, "Unhealthy".into(), with_more(&message, unhealthy.len() - 1))
    } else if let Some(first) = unknown.first() {
        let message = format!(
            "the health of {} in cluster {cluster} is not known yet{}",
            describe_id(&first.identifier),
            why(first)
        );
        condition(
            conditions::AVAILABLE,
            false,
            "HealthUnknown".into(),
            with_more(&message, unknown.len() - 1),
        )
    } else {
        condition(
            conditions::AVAILABLE,
            true,
            "Available".into(),
            format!("{} manifest(s) healthy in cluster {cluster}", in_spec.len()),
        )
    };
    WorkStatus {
        conditions: vec![applied, available],
        manifest_statuses,
        observed_spec_hash: observed_spec_hash.into(),
        usage: Vec::new(),
        member_warnings: Vec::new(),
    }
}

/// `: CrashLoopBackOff: container web restarted ...` when the manifest's
/// health has a detail.
fn why(status: &ManifestStatus) -> String {
    status.health_detail.as_ref().map_or_else(String::new, |d| format!(": {}: {}", d.reason, d.message))
}

/// `reason` of the Applied condition when the hub refused the Work's full
/// status.
pub const REASON_STATUS_REFUSED: &str = "StatusRefused";

/// The status to write when the hub refused `status` (`message` says why):
/// what was applied is still listed (so deletions stay known), without the
/// member objects' fed-back status, the likeliest offender; `Applied` says
/// the status could not be reported. Written once; the Work is not
/// retried until it or its objects change.
pub fn status_refused(
    cluster: &str,
    status: &WorkStatus,
    previous: Option<&WorkStatus>,
    message: &str,
    now: &Time,
) -> WorkStatus {
    let previous_conditions = previous.map(|p| p.conditions.as_slice()).unwrap_or_default();
    let manifest_statuses = status
        .manifest_statuses
        .iter()
        .map(|m| ManifestStatus { status: None, generation: None, ..m.clone() })
        .collect();
    let generation = status.conditions.first().and_then(|c| c.observed_generation);
    let applied = flotilla_core::conditions::condition(
        previous_conditions,
        Wanted::new(
            conditions::APPLIED,
            false,
            REASON_STATUS_REFUSED,
            format!("cluster {cluster}'s applier could not report this work's status: the hub refused it: {message}"),
        )
        .generation(generation),
        now,
    );
    let available = flotilla_core::conditions::condition(
        previous_conditions,
        Wanted::unknown(
            conditions::AVAILABLE,
            REASON_STATUS_REFUSED,
            "the work's status could not be reported",
        )
        .generation(generation),
        now,
    );
    WorkStatus {
        conditions: vec![applied, available],
        manifest_statuses,
        observed_spec_hash: status.observed_spec_hash.clone(),
        usage: Vec::new(),
        member_warnings: Vec::new(),
    }
}

fn describe_id(id: &ResourceIdentifier) -> String {
    describe(&id.kind, &id.namespace, &id.name)
}

fn with_more(message: &str, more: usize) -> String {
    if more == 0 {
        message.into()
    } else {
        format!("{message} (and {more} more)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn id(ordinal: i32, kind: &str, name: &str) -> ResourceIdentifier {
        ResourceIdentifier {
            ordinal,
            group: "apps".into(),
            version: "v1".into(),
            kind: kind.into(),
            resource: format!("{}s", kind.to_lowercase()),
            namespace: "default".into(),
            name: name.into(),
        }
    }

    fn status(identifier: ResourceIdentifier, applied: bool, health: Health) -> ManifestStatus {
        ManifestStatus { identifier, applied, health, ..Default::default() }
    }

    fn time(seconds: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(seconds).unwrap())
    }

    #[test]
    fn target_reads_the_object_identity() {
        let t = target(&json!({"apiVersion": "apps/v1", "kind": "Deployment",
                               "metadata": {"name": "web", "namespace": "shop"}}))
        .unwrap();
        assert_eq!((t.group.as_str(), t.version.as_str(), t.kind.as_str()), ("apps", "v1", "Deployment"));
        assert_eq!(t.describe(), "Deployment shop/web");
        let core =
            target(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}})).unwrap();
        assert_eq!((core.group.as_str(), core.version.as_str()), ("", "v1"));
        assert_eq!(core.describe(), "Namespace shop");
        assert!(target(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}})).is_err());
        assert!(target(&json!({"kind": "ConfigMap", "metadata": {"name": "x"}})).is_err());
        assert!(target(&json!("not an object")).unwrap_err().contains("not a JSON object"));
        let kindless = target(&json!({"apiVersion": "v1", "metadata": {"name": "x"}})).unwrap_err();
        assert!(kindless.starts_with("the manifest has no kind;"), "{kindless}");
        let bare = target(&json!({"metadata": {}})).unwrap_err();
        assert!(bare.starts_with("the manifest has no apiVersion and kind and metadata.name;"), "{bare}");
    }

    #[test]
    fn only_manifests_that_may_change_on_their_own_are_looked_at_again() {
        use std::time::Duration;
        let cases = [
            ("", None),
            (REASON_INVALID, None),
            (REASON_CONFLICT, Some(Duration::from_secs(30))),
            (REASON_UNKNOWN_KIND, Some(Duration::from_secs(3))),
            (REASON_APPLY_FAILED, Some(Duration::from_secs(10))),
        ];
        for (reason, want) in cases {
            assert_eq!(recheck_after(reason), want, "{reason:?}");
        }
    }

    #[test]
    fn prepare_marks_the_object_and_drops_what_belongs_to_the_hub() {
        let manifest = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"},
                         "resourceVersion": "12", "uid": "u", "generation": 3, "managedFields": [],
                         "creationTimestamp": "2020-01-01T00:00:00Z", "finalizers": ["x"],
                         "ownerReferences": [{"name": "o"}]},
            "spec": {"replicas": 2}, "status": {"replicas": 2}});
        let object = prepare(&manifest, Some("shop"), "flotilla-cluster-m1/web");
        assert_eq!(
            object,
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                   "metadata": {"name": "web", "namespace": "shop",
                                "labels": {"app": "web", "app.flotilla.io/managed-by": "flotilla"},
                                "annotations": {"work.flotilla.io/applied-by": "flotilla-cluster-m1/web"}},
                   "spec": {"replicas": 2}})
        );
        // Namespaced without a namespace: the one chosen is filled in;
        // cluster-scoped: any namespace is dropped.
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}});
        assert_eq!(prepare(&cm, Some("default"), "a/b")["metadata"]["namespace"], "default");
        let ns =
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n", "namespace": "x"}});
        assert!(prepare(&ns, None, "a/b")["metadata"].get("namespace").is_none());
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn only_free_or_own_objects_are_applied_unless_the_policy_overwrites() {
        let managed = map(&[(keys::MANAGED_BY, keys::MANAGED_BY_VALUE)]);
        let mine = map(&[(keys::APPLIED_BY_WORK, "ns/w")]);
        let theirs = map(&[(keys::APPLIED_BY_WORK, "ns/other")]);
        assert_eq!(ownership(&managed, &mine, "ns/w"), Ownership::Ours);
        assert_eq!(ownership(&managed, &theirs, "ns/w"), Ownership::OtherWork("ns/other".into()));
        assert_eq!(ownership(&managed, &BTreeMap::new(), "ns/w"), Ownership::Flotilla);
        // The annotation alone does not make it Flotilla's.
        assert_eq!(ownership(&BTreeMap::new(), &mine, "ns/w"), Ownership::Unmanaged);

        use ConflictResolution::{Abort, Overwrite};
        for free in [Ownership::Absent, Ownership::Ours, Ownership::Flotilla] {
            assert!(may_apply(&free, Abort));
        }
        for taken in [Ownership::Unmanaged, Ownership::OtherWork("ns/other".into())] {
            assert!(!may_apply(&taken, Abort));
            assert!(may_apply(&taken, Overwrite));
            assert!(!may_remove(&taken));
        }
        assert!(may_remove(&Ownership::Ours));
        assert!(!may_remove(&Ownership::Flotilla));
    }

    #[test]
    fn conflict_messages_say_what_where_and_how_to_take_it_over() {
        let t = target(&json!({"apiVersion": "apps/v1", "kind": "Deployment",
                               "metadata": {"name": "web", "namespace": "shop"}}))
        .unwrap();
        let message = conflict_message(&t, "m1", &Ownership::Unmanaged);
        assert!(message
            .starts_with("Deployment shop/web already exists in cluster m1 and was not created by Flotilla"));
        assert!(message.contains("conflictResolution: Overwrite"));
        let message = conflict_message(&t, "m1", &Ownership::OtherWork("flotilla-cluster-m1/x".into()));
        assert!(message.contains("another Work (flotilla-cluster-m1/x)"));
    }

    #[test]
    fn objects_that_left_the_spec_are_removed_once() {
        let previous = vec![
            id(0, "Deployment", "web"),
            id(1, "ConfigMap", "old"),
            id(ORDINAL_REMOVED, "ConfigMap", "older"),
            id(3, "ConfigMap", "old"),
            // Never resolved: nothing to delete.
            ResourceIdentifier { resource: String::new(), ..id(2, "Widget", "w") },
        ];
        // The Deployment moved to another position and another version: same object.
        let current = vec![ResourceIdentifier { version: "v2".into(), ..id(1, "Deployment", "web") }];
        let removed: Vec<&str> =
            removed_from_spec(&previous, &current).iter().map(|s| s.name.as_str()).collect();
        assert_eq!(removed, ["old", "older"]);
    }

    #[test]
    fn namespaces_and_crds_are_applied_first() {
        let manifests = [
            json!({"apiVersion": "apps/v1", "kind": "Deployment"}),
            json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition"}),
            json!({"apiVersion": "v1", "kind": "ConfigMap"}),
            json!({"apiVersion": "v1", "kind": "Namespace"}),
        ]
        .map(Manifest);
        assert_eq!(apply_order(&manifests), [3, 1, 0, 2]);
    }

    #[test]
    fn a_refused_status_is_replaced_by_one_that_says_so() {
        let mut applied = status(id(0, "Deployment", "web"), true, Health::Healthy);
        applied.status = Some(json!({"replicas": 2}));
        applied.generation = Some(3);
        let full = work_status("m1", vec![applied], "h1", Some(2), None, &time(10));
        let s = status_refused("m1", &full, Some(&full), "status.x: Invalid value", &time(20));
        assert_eq!(s.observed_spec_hash, "h1");
        assert_eq!(s.manifest_statuses.len(), 1, "what was applied is still listed");
        assert_eq!(s.manifest_statuses[0].status, None);
        assert_eq!(s.conditions[0].status, "False");
        assert_eq!(s.conditions[0].reason, REASON_STATUS_REFUSED);
        assert!(s.conditions[0].message.contains("the hub refused it: status.x: Invalid value"));
        assert_eq!(s.conditions[0].last_transition_time, time(20));
        assert_eq!(s.conditions[0].observed_generation, Some(2));
        assert_eq!(s.conditions[1].status, "Unknown");
        // Refused again: the same status, so nothing is written again.
        assert_eq!(status_refused("m1", &full, Some(&s), "status.x: Invalid value", &time(30)), s);
    }

    #[test]
    fn status_conditions_summarize_the_manifests_and_keep_transition_times() {
        let now = time(2000);
        let healthy = vec![
            status(id(1, "ConfigMap", "c"), true, Health::Healthy),
            status(id(0, "Deployment", "web"), true, Health::Healthy),
        ];
        let s = work_status("m1", healthy.clone(), "h1", Some(4), None, &now);
        assert_eq!(s.manifest_statuses[0].identifier.name, "web", "sorted by ordinal");
        assert_eq!(s.observed_spec_hash, "h1");
        let applied = &s.conditions[0];
        assert_eq!((applied.type_.as_str(), applied.status.as_str()), ("Applied", "True"));
        assert_eq!(applied.observed_generation, Some(4));
        let available = &s.conditions[1];
        assert_eq!((available.type_.as_str(), available.status.as_str()), ("Available", "True"));
        assert_eq!(available.last_transition_time, now);

        // Same statuses later: times are kept, so the status compares equal.
        let again = work_status("m1", healthy, "h1", Some(4), Some(&s), &time(3000));
        assert_eq!(again, s);

        // One unhealthy: Available flips (new time), Applied keeps its time.
        let mixed = vec![
            status(id(0, "Deployment", "web"), true, Health::Unhealthy),
            status(id(1, "ConfigMap", "c"), true, Health::Healthy),
        ];
        let s2 = work_status("m1", mixed, "h1", Some(4), Some(&s), &time(3000));
        assert_eq!(s2.conditions[0].last_transition_time, now);
        assert_eq!(s2.conditions[1].status, "False");
        assert_eq!(s2.conditions[1].reason, "Unhealthy");
        assert_eq!(s2.conditions[1].message, "Deployment default/web is not healthy in cluster m1");
        assert_eq!(s2.conditions[1].last_transition_time, time(3000));

        // A conflict: Applied False with the manifest's reason and message.
        let mut conflicted = status(id(0, "Deployment", "web"), false, Health::Unknown);
        conflicted.reason = REASON_CONFLICT.into();
        conflicted.message = "Deployment default/web already exists".into();
        let mut failed = status(id(1, "ConfigMap", "c"), false, Health::Unknown);
        failed.reason = REASON_APPLY_FAILED.into();
        let s3 = work_status("m1", vec![conflicted, failed], "h2", Some(5), Some(&s2), &time(4000));
        assert_eq!(s3.conditions[0].status, "False");
        assert_eq!(s3.conditions[0].reason, "Conflict");
        assert_eq!(s3.conditions[0].message, "Deployment default/web already exists (and 1 more)");
        assert_eq!(s3.conditions[1].reason, "NotApplied");
        assert_eq!(s3.conditions[1].last_transition_time, time(3000), "was already False");

        // Objects pending removal are listed last and do not count.
        let pending = status(id(ORDINAL_REMOVED, "ConfigMap", "old"), true, Health::Unknown);
        let s4 = work_status(
            "m1",
            vec![pending, status(id(0, "Deployment", "web"), true, Health::Healthy)],
            "h3",
            None,
            None,
            &now,
        );
        assert_eq!(s4.manifest_statuses[1].identifier.name, "old");
        assert_eq!(s4.conditions[1].status, "True");
        assert_eq!(s4.conditions[0].message, "1 manifest(s) applied in cluster m1");

        // Jobs still running: health not known yet.
        let s5 =
            work_status("m1", vec![status(id(0, "Job", "j"), true, Health::Unknown)], "", None, None, &now);
        assert_eq!(s5.conditions[1].reason, "HealthUnknown");

        // With the agent's detail, the condition says why.
        let detail = |reason: &str, message: &str| flotilla_api::work::HealthDetail {
            reason: reason.into(),
            message: message.into(),
            restart_count: None,
        };
        let mut stuck = status(id(0, "Deployment", "web"), true, Health::Unhealthy);
        stuck.health_detail = Some(detail("Unschedulable", "0/1 nodes are available (1 of 1 pods)"));
        let s6 = work_status("m1", vec![stuck], "h1", None, None, &now);
        assert_eq!(
            s6.conditions[1].message,
            "Deployment default/web is not healthy in cluster m1: Unschedulable: 0/1 nodes are available (1 of 1 pods)"
        );
        let mut running = status(id(0, "Job", "j"), true, Health::Unknown);
        running.health_detail = Some(detail("Progressing", "1 active, 0 succeeded, 0 failed"));
        let s7 = work_status("m1", vec![running], "h1", None, None, &now);
        assert_eq!(
            s7.conditions[1].message,
            "the health of Job default/j in cluster m1 is not known yet: Progressing: 1 active, 0 succeeded, 0 failed"
        );
    }
}
