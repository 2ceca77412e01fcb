//! Member HPAs are respected: when a HorizontalPodAutoscaler in the member
//! scales a workload a Work applied, the applier keeps the member's
//! `spec.replicas` instead of the manifest's (Karmada's "retain replicas").
//!
//! Field ownership: the applier server-side applies with `force`, so a
//! manifest's `spec.replicas` would take the field back from the HPA
//! controller at every apply. Sending the live value instead makes the
//! applier a co-owner of the value the HPA chose (an apply of an equal
//! value changes nothing); the HPA's next `/scale` update takes the field
//! over alone, and the apply after it sends that value again. Leaving the
//! field out would not do: the applier may still own it (the HPA has not
//! written yet), and dropping an owned field removes it, which resets the
//! replicas to the default. Once the HPA is gone the manifest's value is
//! applied again.

use std::collections::HashMap;

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use serde_json::Value;

use crate::workload::api_group;

/// The workload an HPA scales, as a key shared with applied manifests.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ScaleTarget {
    pub namespace: String,
    pub group: String,
    pub kind: String,
    pub name: String,
}

/// `(namespace, name)` of an HPA.
pub type HpaKey = (String, String);

/// The kind named in [`replicas_owner`]'s answer.
pub const HPA_KIND: &str = "HorizontalPodAutoscaler";

/// What `hpa` scales (None: it names nothing usable, or is being deleted).
pub fn scale_target(hpa: &HorizontalPodAutoscaler) -> Option<ScaleTarget> {
    if hpa.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let target = &hpa.spec.scale_target_ref;
    if target.kind.is_empty() || target.name.is_empty() {
        return None;
    }
    Some(ScaleTarget {
        namespace: hpa.metadata.namespace.clone().unwrap_or_default(),
        group: api_group(target.api_version.as_deref().unwrap_or_default()).to_string(),
        kind: target.kind.clone(),
        name: target.name.clone(),
    })
}

/// Who owns `target`'s replicas: `HorizontalPodAutoscaler/<name>` of the
/// HPA scaling it (the first by name when several do), or None.
pub fn replicas_owner<'a>(
    hpas: impl IntoIterator<Item = &'a HorizontalPodAutoscaler>,
    target: &ScaleTarget,
) -> Option<String> {
    hpas.into_iter()
        .filter(|hpa| scale_target(hpa).as_ref() == Some(target))
        .filter_map(|hpa| hpa.metadata.name.clone())
        .min()
        .map(|name| format!("{HPA_KIND}/{name}"))
}

/// Whether a manifest sets replicas (only those are followed).
pub fn sets_replicas(body: &Value) -> bool {
    body.pointer("/spec/replicas").is_some()
}

/// The object to apply keeps the member's replicas: `body`'s
/// `spec.replicas` becomes `live`'s (the object as the member has it).
/// Nothing changes when the manifest sets no replicas or the member's
/// object has none (it is created with the manifest's). Returns whether
/// the member's value was taken.
///
/// The live object's `resourceVersion` goes with it: server-side apply
/// then refuses the write (409) if the HPA scaled in between, instead of
/// writing back a value read just before, and the applier reads again.
pub fn retain_replicas(body: &mut Value, live: Option<&Value>) -> bool {
    let Some(live) = live else { return false };
    let Some(replicas) = live.pointer("/spec/replicas").filter(|r| r.is_i64()) else { return false };
    let Some(wanted) = body.pointer_mut("/spec/replicas") else { return false };
    *wanted = replicas.clone();
    let version = live.pointer("/metadata/resourceVersion").and_then(Value::as_str);
    if let (Some(version), Some(metadata)) =
        (version, body.get_mut("metadata").and_then(Value::as_object_mut))
    {
        metadata.insert("resourceVersion".into(), version.into());
    }
    true
}

/// The targets whose owner may have changed between two views of the
/// member's HPAs (added, removed, retargeted): their Works apply again.
pub fn changed_targets(
    before: &HashMap<HpaKey, ScaleTarget>,
    after: &HashMap<HpaKey, ScaleTarget>,
) -> Vec<ScaleTarget> {
    let mut changed: Vec<ScaleTarget> = Vec::new();
    for (key, target) in before {
        if after.get(key) != Some(target) {
            changed.push(target.clone());
        }
    }
    for (key, target) in after {
        if before.get(key) != Some(target) {
            changed.push(target.clone());
        }
    }
    changed.sort();
    changed.dedup();
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hpa(name: &str, api_version: &str, kind: &str, target: &str) -> HorizontalPodAutoscaler {
        serde_json::from_value(json!({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"scaleTargetRef": {"apiVersion": api_version, "kind": kind, "name": target},
                     "minReplicas": 1, "maxReplicas": 10}
        }))
        .unwrap()
    }

    fn target(kind: &str, name: &str) -> ScaleTarget {
        ScaleTarget {
            namespace: "default".into(),
            group: "apps".into(),
            kind: kind.into(),
            name: name.into(),
        }
    }

    #[test]
    fn owner_of_a_workload() {
        let deleting = {
            let mut h = hpa("gone", "apps/v1", "Deployment", "web");
            h.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                "2026-03-01T10:00:00Z".parse().unwrap(),
            ));
            h
        };
        let other_ns = {
            let mut h = hpa("elsewhere", "apps/v1", "Deployment", "web");
            h.metadata.namespace = Some("prod".into());
            h
        };
        let cases: Vec<(&str, Vec<HorizontalPodAutoscaler>, ScaleTarget, Option<&str>)> = vec![
            ("no HPA", vec![], target("Deployment", "web"), None),
            (
                "an HPA on the Deployment",
                vec![hpa("web", "apps/v1", "Deployment", "web")],
                target("Deployment", "web"),
                Some("HorizontalPodAutoscaler/web"),
            ),
            (
                "the version does not matter, the group does",
                vec![hpa("web", "apps/v1beta2", "Deployment", "web")],
                target("Deployment", "web"),
                Some("HorizontalPodAutoscaler/web"),
            ),
            (
                "another group's kind of the same name",
                vec![hpa("web", "example.com/v1", "Deployment", "web")],
                target("Deployment", "web"),
                None,
            ),
            (
                "another kind",
                vec![hpa("web", "apps/v1", "StatefulSet", "web")],
                target("Deployment", "web"),
                None,
            ),
            (
                "another name",
                vec![hpa("api", "apps/v1", "Deployment", "api")],
                target("Deployment", "web"),
                None,
            ),
            ("another namespace", vec![other_ns], target("Deployment", "web"), None),
            ("an HPA being deleted", vec![deleting], target("Deployment", "web"), None),
            (
                "two HPAs: the first by name",
                vec![
                    hpa("web-z", "apps/v1", "Deployment", "web"),
                    hpa("web-a", "apps/v1", "Deployment", "web"),
                ],
                target("Deployment", "web"),
                Some("HorizontalPodAutoscaler/web-a"),
            ),
        ];
        for (name, hpas, target, want) in cases {
            assert_eq!(replicas_owner(&hpas, &target).as_deref(), want, "{name}");
        }
    }

    #[test]
    fn retained_replicas() {
        let manifest = json!({"kind": "Deployment", "spec": {"replicas": 2, "template": {}}});
        let cases: Vec<(&str, Value, Option<Value>, bool, Value)> = vec![
            (
                "the member's replicas replace the manifest's",
                manifest.clone(),
                Some(json!({"spec": {"replicas": 7}})),
                true,
                json!({"kind": "Deployment", "spec": {"replicas": 7, "template": {}}}),
            ),
            (
                "with the version they were read at",
                json!({"kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": 2}}),
                Some(json!({"metadata": {"resourceVersion": "42"}, "spec": {"replicas": 7}})),
                true,
                json!({"kind": "Deployment", "metadata": {"name": "web", "resourceVersion": "42"},
                       "spec": {"replicas": 7}}),
            ),
            ("no live object: created as written", manifest.clone(), None, false, manifest.clone()),
            (
                "the live object has no replicas",
                manifest.clone(),
                Some(json!({"spec": {}})),
                false,
                manifest.clone(),
            ),
            (
                "the manifest sets no replicas: nothing to keep",
                json!({"kind": "Deployment", "spec": {"template": {}}}),
                Some(json!({"spec": {"replicas": 7}})),
                false,
                json!({"kind": "Deployment", "spec": {"template": {}}}),
            ),
        ];
        for (name, mut body, live, taken, want) in cases {
            assert_eq!(retain_replicas(&mut body, live.as_ref()), taken, "{name}");
            assert_eq!(body, want, "{name}");
        }
        assert!(sets_replicas(&manifest));
        assert!(!sets_replicas(&json!({"spec": {}})));
    }

    #[test]
    fn changed_targets_between_views() {
        let key = |n: &str| ("default".to_string(), n.to_string());
        let before = HashMap::from([
            (key("a"), target("Deployment", "a")),
            (key("b"), target("Deployment", "b")),
            (key("c"), target("Deployment", "c")),
        ]);
        let after = HashMap::from([
            (key("a"), target("Deployment", "a")),
            (key("c"), target("Deployment", "c2")),
            (key("d"), target("StatefulSet", "d")),
        ]);
        let want = vec![
            target("Deployment", "b"),
            target("Deployment", "c"),
            target("Deployment", "c2"),
            target("StatefulSet", "d"),
        ];
        assert_eq!(changed_targets(&before, &after), want);
        assert!(changed_targets(&after, &after).is_empty());
    }
}
