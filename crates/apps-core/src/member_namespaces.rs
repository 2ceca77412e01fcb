//! Which namespaces the agent created in its member may go: Karmada removes
//! a member's namespace with the hub's; Flotilla's agent creates one when an
//! object it applies needs it, and removes it once nothing of Flotilla's is
//! placed there any more, never a namespace Flotilla did not create, and
//! never one still holding an object Flotilla does not own.
//!
//! A namespace is the agent's own when it carries Flotilla's
//! `app.flotilla.io/managed-by` label and no Work's
//! `work.flotilla.io/applied-by` annotation (a namespace a Work applies is
//! that Work's to remove, and a namespace that existed before is never
//! labelled: the agent only creates missing ones).

use std::collections::{BTreeMap, BTreeSet};

use flotilla_api::work::keys;

/// An object found in a namespace (metadata only).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FoundObject {
    /// `group/Kind` (`/Kind` for the core group), e.g. `apps/Deployment`.
    pub kind: String,
    pub name: String,
    pub uid: String,
    /// Its owners' uids (`metadata.ownerReferences`).
    pub owners: Vec<String>,
    /// It carries Flotilla's `managed-by` label.
    pub flotilla_managed: bool,
}

/// Whether the agent created this namespace (and no Work adopted it).
pub fn created_by_agent(labels: &BTreeMap<String, String>, annotations: &BTreeMap<String, String>) -> bool {
    labels.get(keys::MANAGED_BY).map(String::as_str) == Some(keys::MANAGED_BY_VALUE)
        && !annotations.contains_key(keys::APPLIED_BY_WORK)
}

/// The namespaces the Works' manifests place objects in (and name, for a
/// `Namespace` manifest). A namespaced manifest without a namespace goes to
/// `default`; a cluster-scoped one names none (`namespaced` says which).
pub fn referenced<'a>(
    manifests: impl IntoIterator<Item = (&'a serde_json::Value, bool)>,
) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (m, namespaced) in manifests {
        let name = m.pointer("/metadata/name").and_then(|v| v.as_str()).unwrap_or_default();
        if m.get("kind").and_then(|v| v.as_str()) == Some("Namespace")
            && m.get("apiVersion") == Some(&"v1".into())
        {
            out.insert(name.to_string());
        } else if namespaced {
            let ns = m.pointer("/metadata/namespace").and_then(|v| v.as_str()).filter(|s| !s.is_empty());
            out.insert(ns.unwrap_or("default").to_string());
        }
    }
    out
}

/// `Ok` when every object left in the namespace is Flotilla's, the
/// namespace's own (the `default` ServiceAccount, the `kube-root-ca.crt`
/// ConfigMap, Events), or a dependent (by owner references, transitively)
/// of such an object or of one already gone; else the first object that is
/// not, described for the log.
pub fn only_flotilla_left(objects: &[FoundObject]) -> Result<(), String> {
    let by_uid: BTreeMap<&str, &FoundObject> = objects.iter().map(|o| (o.uid.as_str(), o)).collect();
    let services: BTreeMap<&str, &FoundObject> =
        objects.iter().filter(|o| o.kind == "/Service").map(|o| (o.name.as_str(), o)).collect();
    for object in objects {
        if !is_ours(object, &by_uid, &services, 0) {
            return Err(format!("{} {} is not Flotilla's", object.kind, object.name));
        }
    }
    Ok(())
}

fn is_ours(
    object: &FoundObject,
    by_uid: &BTreeMap<&str, &FoundObject>,
    services: &BTreeMap<&str, &FoundObject>,
    depth: usize,
) -> bool {
    if object.flotilla_managed {
        return true;
    }
    match (object.kind.as_str(), object.name.as_str()) {
        ("/ServiceAccount", "default") | ("/ConfigMap", "kube-root-ca.crt") => return true,
        ("/Event" | "events.k8s.io/Event", _) => return true,
        // The endpoints controller's mirror of a Service, named after it.
        ("/Endpoints", name) => {
            return services.get(name).is_none_or(|s| is_ours(s, by_uid, services, depth + 1));
        }
        _ => {}
    }
    // Owner chains are short; a cycle (which the API forbids) stops here.
    if object.owners.is_empty() || depth > 8 {
        return false;
    }
    object.owners.iter().all(|owner| match by_uid.get(owner.as_str()) {
        // Gone already: the garbage collector removes its dependents.
        None => true,
        Some(owner) => is_ours(owner, by_uid, services, depth + 1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(kind: &str, name: &str, uid: &str, owners: &[&str], ours: bool) -> FoundObject {
        FoundObject {
            kind: kind.into(),
            name: name.into(),
            uid: uid.into(),
            owners: owners.iter().map(|o| o.to_string()).collect(),
            flotilla_managed: ours,
        }
    }

    #[test]
    fn only_namespaces_the_agent_created_and_no_work_adopted_are_its_own() {
        let flotilla: BTreeMap<String, String> =
            [(keys::MANAGED_BY.into(), keys::MANAGED_BY_VALUE.into())].into();
        let adopted: BTreeMap<String, String> = [(keys::APPLIED_BY_WORK.into(), "ns/w".into())].into();
        let none = BTreeMap::new();
        // (name, labels, annotations, want)
        let cases = [
            ("created by the agent", &flotilla, &none, true),
            ("adopted by a Work", &flotilla, &adopted, false),
            ("pre-existing", &none, &none, false),
        ];
        for (name, labels, annotations, want) in cases {
            assert_eq!(created_by_agent(labels, annotations), want, "{name}");
        }
    }

    #[test]
    fn works_reference_the_namespaces_of_their_manifests() {
        let manifests = [
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "shop"}}),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "r"}}),
        ];
        let got = referenced(manifests.iter().map(|m| (m, m["kind"] != "ClusterRole")));
        assert_eq!(got, ["default", "shop", "team"].into_iter().map(String::from).collect());
    }

    #[test]
    fn a_namespace_goes_only_when_nothing_but_flotilla_s_is_left() {
        // (name, objects, want Ok or the object named)
        let cases: Vec<(&str, Vec<FoundObject>, Result<(), &str>)> = vec![
            ("empty", vec![], Ok(())),
            (
                "the namespace's own",
                vec![
                    object("/ServiceAccount", "default", "1", &[], false),
                    object("/ConfigMap", "kube-root-ca.crt", "2", &[], false),
                    object("events.k8s.io/Event", "web.1", "3", &[], false),
                ],
                Ok(()),
            ),
            (
                "a deployment of ours still going, with its replica set and pods",
                vec![
                    object("apps/Deployment", "web", "d", &[], true),
                    object("apps/ReplicaSet", "web-1", "rs", &["d"], false),
                    object("/Pod", "web-1-a", "p", &["rs"], false),
                ],
                Ok(()),
            ),
            (
                "pods whose owners are gone already",
                vec![object("/Pod", "web-1-a", "p", &["rs-gone"], false)],
                Ok(()),
            ),
            (
                "a service of ours and its endpoints",
                vec![
                    object("/Service", "web", "s", &[], true),
                    object("/Endpoints", "web", "e", &[], false),
                    object("discovery.k8s.io/EndpointSlice", "web-x", "es", &["s"], false),
                ],
                Ok(()),
            ),
            (
                "a person's configmap",
                vec![object("/ConfigMap", "mine", "c", &[], false)],
                Err("/ConfigMap mine"),
            ),
            (
                "pods of a person's deployment",
                vec![
                    object("apps/Deployment", "theirs", "d", &[], false),
                    object("apps/ReplicaSet", "theirs-1", "rs", &["d"], false),
                ],
                Err("apps/Deployment theirs"),
            ),
            (
                "endpoints of a person's service",
                vec![object("/Service", "db", "s", &[], false), object("/Endpoints", "db", "e", &[], false)],
                Err("/Service db"),
            ),
            (
                "a different service account",
                vec![object("/ServiceAccount", "ci", "sa", &[], false)],
                Err("ci"),
            ),
        ];
        for (name, objects, want) in cases {
            match (only_flotilla_left(&objects), want) {
                (Ok(()), Ok(())) => {}
                (Err(got), Err(want)) => assert!(got.contains(want), "{name}: {got}"),
                (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
            }
        }
    }
}
