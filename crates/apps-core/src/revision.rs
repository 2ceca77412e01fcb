//! A template's *revision* under a rollout: what every cluster receives
//! apart from its share of replicas: the member copy of the template and
//! the override policies that apply to it. Scaling is not a release, so the
//! replica count is left out (the binder sets each cluster's replicas from
//! the division, whatever the revision). Revisions are kept on the hub
//! (`ControllerRevision`s) so a cluster can be given the stable one while
//! the template already says something newer.

use std::collections::BTreeMap;

use flotilla_api::policy::OverrideSpec;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::overrides::{apply_overrides, OverrideError};
use crate::selection::{OverrideCandidate, PolicyScope};

/// An override policy as a revision keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeptOverride {
    /// `""` for a ClusterOverridePolicy.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    pub name: String,
    pub spec: OverrideSpec,
}

/// What a revision is made of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RevisionContent {
    /// The member copy of the template, without `spec.replicas`.
    pub manifest: Value,
    /// The override policies that apply, in the order they apply.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<KeptOverride>,
    /// The objects it propagates with it (`propagateDeps`), each as its own
    /// revision: a change of one is a new revision of the template, and
    /// each cluster gets the dependencies of the revision it is given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependencies: Vec<KeptDependency>,
}

/// A dependency as a revision keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeptDependency {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub content: RevisionContent,
}

impl RevisionContent {
    /// The revision of a template (as the hub stores it) with the override
    /// policies that apply to it, in order.
    pub fn of(template: &Value, overrides: &[&OverrideCandidate]) -> RevisionContent {
        let mut manifest = crate::workload::prepare_for_member(template);
        if crate::workload::replicas(&manifest).is_some() {
            if let Some(spec) = manifest.get_mut("spec").and_then(Value::as_object_mut) {
                spec.remove("replicas");
            }
        }
        let overrides = overrides
            .iter()
            .map(|o| KeptOverride {
                namespace: o.namespace.to_string(),
                name: o.name.to_string(),
                spec: o.spec.clone(),
            })
            .collect();
        RevisionContent { manifest, overrides, dependencies: Vec::new() }
    }

    /// With these dependencies, sorted (the hash does not depend on the
    /// order the template names them in).
    pub fn with_dependencies(mut self, mut dependencies: Vec<KeptDependency>) -> RevisionContent {
        dependencies.sort_by(|a, b| (&a.kind, &a.name).cmp(&(&b.kind, &b.name)));
        self.dependencies = dependencies;
        self
    }

    /// The revision of one of its dependencies.
    pub fn dependency(&self, api_version: &str, kind: &str, name: &str) -> Option<&RevisionContent> {
        self.dependencies
            .iter()
            .find(|d| d.api_version == api_version && d.kind == kind && d.name == name)
            .map(|d| &d.content)
    }

    /// The revision's short name: a hash of its content.
    pub fn hash(&self) -> String {
        crate::binding::spec_hash(&serde_json::to_value(self).unwrap_or_default())
    }

    /// What a cluster receives of this revision: the manifest with
    /// `replicas` (for kinds that have them) and the overrides for the
    /// cluster applied.
    pub fn render(
        &self,
        cluster: &str,
        labels: &BTreeMap<String, String>,
        replicas: Option<i32>,
    ) -> Result<Value, OverrideError> {
        let mut manifest = self.manifest.clone();
        if let Some(replicas) = replicas {
            crate::workload::set_replicas(&mut manifest, replicas);
        }
        let candidates = self.override_candidates();
        let ordered: Vec<&OverrideCandidate> = candidates.iter().collect();
        apply_overrides(&mut manifest, cluster, labels, &ordered)?;
        Ok(manifest)
    }

    /// The override policies `render` applies for this cluster, in order
    /// (what the cluster's Work records).
    pub fn applied_overrides(&self, cluster: &str, labels: &BTreeMap<String, String>) -> Vec<String> {
        let candidates = self.override_candidates();
        let ordered: Vec<&OverrideCandidate> = candidates.iter().collect();
        crate::applied_overrides::applied_overrides(cluster, labels, &ordered)
    }

    fn override_candidates(&self) -> Vec<OverrideCandidate<'_>> {
        self.overrides
            .iter()
            .map(|o| OverrideCandidate {
                scope: if o.namespace.is_empty() { PolicyScope::Cluster } else { PolicyScope::Namespaced },
                namespace: &o.namespace,
                name: &o.name,
                spec: &o.spec,
            })
            .collect()
    }
}

/// How many changes [`changes`] lists before it says how many more.
const MAX_CHANGES: usize = 5;
/// How long a changed value may be in a summary.
const MAX_VALUE: usize = 60;

fn short(value: &Value) -> String {
    let text = match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if text.chars().count() > MAX_VALUE {
        format!("{}…", text.chars().take(MAX_VALUE).collect::<String>())
    } else {
        text
    }
}

/// What changed from `before` to `after`, for a person: the manifest's
/// changed paths with their new values, then the override policies added,
/// removed or changed; at most a few, then how many more.
pub fn changes(before: Option<&RevisionContent>, after: &RevisionContent) -> Vec<String> {
    let Some(before) = before else { return vec!["first revision".to_string()] };
    let mut out = Vec::new();
    let patch = json_patch::diff(&before.manifest, &after.manifest);
    for op in patch.0.iter() {
        out.push(match op {
            json_patch::PatchOperation::Add(a) => format!("{} added: {}", a.path, short(&a.value)),
            json_patch::PatchOperation::Remove(r) => format!("{} removed", r.path),
            json_patch::PatchOperation::Replace(r) => format!("{}: {}", r.path, short(&r.value)),
            other => format!("{other:?}"),
        });
    }
    let name = |o: &KeptOverride| {
        if o.namespace.is_empty() {
            format!("ClusterOverridePolicy {}", o.name)
        } else {
            format!("OverridePolicy {}/{}", o.namespace, o.name)
        }
    };
    for o in &after.overrides {
        match before.overrides.iter().find(|b| b.namespace == o.namespace && b.name == o.name) {
            None => out.push(format!("{} added", name(o))),
            Some(b) if b.spec != o.spec => out.push(format!("{} changed", name(o))),
            Some(_) => {}
        }
    }
    for b in &before.overrides {
        if !after.overrides.iter().any(|o| o.namespace == b.namespace && o.name == b.name) {
            out.push(format!("{} removed", name(b)));
        }
    }
    for d in &after.dependencies {
        match before.dependency(&d.api_version, &d.kind, &d.name) {
            None => out.push(format!("{} {} added", d.kind, d.name)),
            Some(b) if *b != d.content => out.push(format!("{} {} changed", d.kind, d.name)),
            Some(_) => {}
        }
    }
    for b in &before.dependencies {
        if after.dependency(&b.api_version, &b.kind, &b.name).is_none() {
            out.push(format!("{} {} removed", b.kind, b.name));
        }
    }
    if out.is_empty() {
        out.push("no change".to_string());
    }
    if out.len() > MAX_CHANGES {
        let more = out.len() - MAX_CHANGES;
        out.truncate(MAX_CHANGES);
        out.push(format!("and {more} more"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(image: &str, replicas: i64) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop", "uid": "u1", "resourceVersion": "7"},
            "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": "main", "image": image}]}}},
            "status": {"readyReplicas": 3},
        })
    }

    fn override_policy(image_tag: &str) -> OverrideSpec {
        serde_json::from_value(json!({
            "overrideRules": [{
                "targetCluster": {"clusterNames": ["eu"]},
                "overriders": {"imageOverrider": [{"component": "Tag", "operator": "replace", "value": image_tag}]},
            }],
        }))
        .unwrap()
    }

    #[test]
    fn scaling_is_not_a_new_revision_but_an_image_or_an_override_is() {
        let spec = override_policy("v9");
        let o =
            OverrideCandidate { scope: PolicyScope::Namespaced, namespace: "shop", name: "eu", spec: &spec };
        let base = RevisionContent::of(&deployment("web:v1", 3), &[]).hash();
        let cases: &[(&str, RevisionContent, bool)] = &[
            ("same template", RevisionContent::of(&deployment("web:v1", 3), &[]), true),
            ("scaled", RevisionContent::of(&deployment("web:v1", 10), &[]), true),
            ("new image", RevisionContent::of(&deployment("web:v2", 3), &[]), false),
            ("an override applies", RevisionContent::of(&deployment("web:v1", 3), &[&o]), false),
        ];
        for (name, content, same) in cases {
            assert_eq!(content.hash() == base, *same, "{name}");
        }
    }

    #[test]
    fn render_gives_each_cluster_its_replicas_and_overrides() {
        let spec = override_policy("v9");
        let o =
            OverrideCandidate { scope: PolicyScope::Namespaced, namespace: "shop", name: "eu", spec: &spec };
        let content = RevisionContent::of(&deployment("web:v1", 3), &[&o]);
        assert!(content.manifest.pointer("/spec/replicas").is_none());
        assert!(content.manifest.pointer("/status").is_none(), "the member copy has no status");
        let none = BTreeMap::new();
        let cases: &[(&str, Option<i32>, &str, Option<i64>)] = &[
            ("eu", Some(2), "web:v9", Some(2)),
            ("us", Some(5), "web:v1", Some(5)),
            ("us", None, "web:v1", None),
        ];
        for (cluster, replicas, image, want_replicas) in cases {
            let m = content.render(cluster, &none, *replicas).unwrap();
            let got = m.pointer("/spec/template/spec/containers/0/image").and_then(Value::as_str);
            assert_eq!(got, Some(*image), "{cluster}");
            assert_eq!(m.pointer("/spec/replicas").and_then(Value::as_i64), *want_replicas, "{cluster}");
        }
        // Kept and read back (as a ControllerRevision holds it), it renders
        // the same.
        let kept: RevisionContent = serde_json::from_value(serde_json::to_value(&content).unwrap()).unwrap();
        assert_eq!(kept.hash(), content.hash());
        assert_eq!(kept.render("eu", &none, Some(2)).unwrap(), content.render("eu", &none, Some(2)).unwrap());
        assert_eq!(content.applied_overrides("eu", &none), vec!["shop/eu".to_string()]);
        assert!(content.applied_overrides("us", &none).is_empty(), "its rule targets eu only");
        assert_eq!(kept.applied_overrides("eu", &none), content.applied_overrides("eu", &none));
    }

    #[test]
    fn a_dependency_change_is_a_new_revision_and_is_kept_whole() {
        let config = |value: &str| {
            RevisionContent::of(
                &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg", "namespace": "shop"},
                        "data": {"mode": value}}),
                &[],
            )
        };
        let dep = |value: &str| KeptDependency {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            name: "cfg".into(),
            content: config(value),
        };
        let plain = RevisionContent::of(&deployment("web:v1", 3), &[]);
        let fast = plain.clone().with_dependencies(vec![dep("fast")]);
        let safe = plain.clone().with_dependencies(vec![dep("safe")]);
        assert_ne!(fast.hash(), plain.hash());
        assert_ne!(fast.hash(), safe.hash(), "a dependency's change is a new revision");
        assert_eq!(changes(Some(&fast), &safe), ["ConfigMap cfg changed"]);
        assert_eq!(changes(Some(&plain), &fast), ["ConfigMap cfg added"]);
        assert_eq!(changes(Some(&fast), &plain), ["ConfigMap cfg removed"]);
        let none = BTreeMap::new();
        let kept = fast.dependency("v1", "ConfigMap", "cfg").unwrap().render("eu", &none, None).unwrap();
        assert_eq!(kept.pointer("/data/mode").and_then(Value::as_str), Some("fast"));
        assert!(fast.dependency("v1", "Secret", "cfg").is_none());
        // The order the template names them in does not matter.
        let other = KeptDependency { name: "other".into(), ..dep("x") };
        let ab = plain.clone().with_dependencies(vec![dep("fast"), other.clone()]);
        let ba = plain.clone().with_dependencies(vec![other, dep("fast")]);
        assert_eq!(ab.hash(), ba.hash());
    }

    #[test]
    fn changes_table() {
        let spec = override_policy("v9");
        let o =
            OverrideCandidate { scope: PolicyScope::Namespaced, namespace: "shop", name: "eu", spec: &spec };
        let v1 = RevisionContent::of(&deployment("web:v1", 3), &[]);
        let v2 = RevisionContent::of(&deployment("web:v2", 3), &[]);
        let v1_eu = RevisionContent::of(&deployment("web:v1", 3), &[&o]);
        let cases: &[(&str, Option<&RevisionContent>, &RevisionContent, &[&str])] = &[
            ("first", None, &v1, &["first revision"]),
            ("image", Some(&v1), &v2, &["/spec/template/spec/containers/0/image: web:v2"]),
            ("override added", Some(&v1), &v1_eu, &["OverridePolicy shop/eu added"]),
            ("override removed", Some(&v1_eu), &v1, &["OverridePolicy shop/eu removed"]),
            ("nothing", Some(&v1), &v1, &["no change"]),
        ];
        for (name, before, after, want) in cases {
            assert_eq!(changes(*before, after), *want, "{name}");
        }
        let mut big = deployment("web:v1", 3);
        for i in 0..8 {
            big["metadata"]["labels"][format!("l{i}")] = json!("x".repeat(100));
        }
        let listed = changes(Some(&v1), &RevisionContent::of(&big, &[]));
        assert_eq!(listed.len(), MAX_CHANGES + 1, "{listed:?}");
        assert!(listed[0].ends_with('…'), "long values are cut: {listed:?}");
        assert_eq!(listed.last().map(String::as_str), Some("and 3 more"));
    }
}
