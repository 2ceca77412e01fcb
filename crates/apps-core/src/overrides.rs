//! Per-cluster overrides: applying OverridePolicy rules to the manifest a
//! member gets.
//!
//! Semantics follow Karmada's. Each rule whose `targetCluster` selects the
//! cluster (absent: every cluster) applies its overriders in this order:
//!
//! - `plaintext`: one RFC 6902 operation (`add`, `remove`, `replace`) at
//!   `path`. `remove` and `replace` need the path to exist, `add` its
//!   parent.
//! - `imageOverrider`: an image is `[registry/]repository[:tag][@digest]`,
//!   read as Docker does (the first path component is the registry when it
//!   contains `.` or `:` or is `localhost`). `add` appends the value to the
//!   component (adding a registry to an image without one sets it),
//!   `replace` sets it, `remove` clears it. For `Tag`, the component is the
//!   tag, or the digest when there is no tag, and a value that looks like a
//!   digest (`algo:hex`) sets the digest instead of the tag. With
//!   `predicate.path` only that image changes; without, every container and
//!   init container image of a Pod's or workload's pod spec.
//! - `commandOverrider` / `argsOverrider`: on the container (or init
//!   container) named `containerName`, `add` appends the values and
//!   `remove` drops every occurrence of them; no such container, no change.
//! - `labelsOverrider` / `annotationsOverrider` on `metadata`: `add` sets
//!   the keys, `replace` changes only keys already present, `remove` deletes
//!   the keys (values ignored).
//! - `fieldOverrider`: operations inside a JSON or YAML document held in a
//!   string field (`field_overrides`).
//!
//! The deprecated spec-level `targetCluster` + `overriders` are one rule
//! (`OverrideSpec::rules`).
//!
//! An error names the policy, the rule and the overrider. The manifest may
//! then hold the overrides applied before the failing one, so callers must
//! not use it.

use std::collections::BTreeMap;

use flotilla_api::policy::{
    CommandArgsOverrider, ImageComponent, ImageOverrider, LabelAnnotationOverrider, OverriderOperator,
    Overriders,
};
use serde_json::{json, Map, Value};

use crate::affinity::cluster_matches;
use crate::field_overrides::apply_field_overrider;
use crate::json_patch_op::apply_operation;
use crate::selection::OverrideCandidate;
use crate::workload::{pod_spec_pointer, type_of};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OverrideError {
    /// A rule could not be applied, e.g. `OverridePolicy default/eu-images
    /// rule 0 plaintext: path /spec/foo/bar does not exist`.
    #[error("{policy} rule {rule} {overrider}: {problem}")]
    Rule { policy: String, rule: usize, overrider: &'static str, problem: String },
}

/// Applies every rule of `policies` whose `targetCluster` matches the
/// cluster (absent = all clusters) to `manifest`, in order. Returns the
/// names of the policies that changed something (`namespace/name` for an
/// OverridePolicy, `name` for a ClusterOverridePolicy).
pub fn apply_overrides(
    manifest: &mut Value,
    cluster_name: &str,
    cluster_labels: &BTreeMap<String, String>,
    policies: &[&OverrideCandidate],
) -> Result<Vec<String>, OverrideError> {
    let mut changed_by = Vec::new();
    for policy in policies {
        let before = manifest.clone();
        for (index, rule) in policy.spec.rules().iter().enumerate() {
            let targets_cluster = rule
                .target_cluster
                .as_ref()
                .is_none_or(|affinity| cluster_matches(affinity, cluster_name, cluster_labels));
            if !targets_cluster {
                continue;
            }
            apply_rule(manifest, &rule.overriders).map_err(|(overrider, problem)| OverrideError::Rule {
                policy: policy.display_name(),
                rule: index,
                overrider,
                problem,
            })?;
        }
        if *manifest != before {
            changed_by.push(policy.qualified_name());
        }
    }
    Ok(changed_by)
}

/// The overrider that failed and what went wrong.
type RuleError = (&'static str, String);

fn apply_rule(manifest: &mut Value, overriders: &Overriders) -> Result<(), RuleError> {
    let tagged = |name: &'static str| move |problem: String| (name, problem);
    for o in &overriders.plaintext {
        apply_operation(manifest, &o.path, o.operator, o.value.as_ref()).map_err(tagged("plaintext"))?;
    }
    for o in &overriders.image_overrider {
        apply_image(manifest, o).map_err(tagged("imageOverrider"))?;
    }
    for o in &overriders.command_overrider {
        apply_command_args(manifest, "command", o).map_err(tagged("commandOverrider"))?;
    }
    for o in &overriders.args_overrider {
        apply_command_args(manifest, "args", o).map_err(tagged("argsOverrider"))?;
    }
    for o in &overriders.labels_overrider {
        apply_label_annotation(manifest, "labels", o);
    }
    for o in &overriders.annotations_overrider {
        apply_label_annotation(manifest, "annotations", o);
    }
    for o in &overriders.field_overrider {
        apply_field_overrider(manifest, o).map_err(tagged("fieldOverrider"))?;
    }
    Ok(())
}

/// An image reference split as Docker does.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ImageRef {
    registry: String,
    repository: String,
    tag: String,
    digest: String,
}

impl ImageRef {
    fn parse(image: &str) -> Option<ImageRef> {
        let (name, digest) = match image.split_once('@') {
            Some((name, digest)) if is_digest(digest) => (name, digest),
            Some(_) => return None,
            None => (image, ""),
        };
        // A tag is after the last colon that follows the last slash (a colon
        // before it is a registry port).
        let last_slash = name.rfind('/').map_or(0, |i| i + 1);
        let (path, tag) = match name[last_slash..].rfind(':') {
            Some(i) => (&name[..last_slash + i], &name[last_slash + i + 1..]),
            None => (name, ""),
        };
        if !tag.is_empty() && !is_tag(tag) || name.ends_with(':') {
            return None;
        }
        let (registry, repository) = match path.split_once('/') {
            Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => (first, rest),
            _ => ("", path),
        };
        let valid_repository = !repository.is_empty()
            && repository.split('/').all(|part| !part.is_empty())
            && repository.chars().all(|c| c.is_ascii_alphanumeric() || "._-/".contains(c));
        valid_repository.then(|| ImageRef {
            registry: registry.into(),
            repository: repository.into(),
            tag: tag.into(),
            digest: digest.into(),
        })
    }

    fn render(&self) -> String {
        let mut image = String::new();
        if !self.registry.is_empty() {
            image.push_str(&self.registry);
            image.push('/');
        }
        image.push_str(&self.repository);
        if !self.tag.is_empty() {
            image.push(':');
            image.push_str(&self.tag);
        }
        if !self.digest.is_empty() {
            image.push('@');
            image.push_str(&self.digest);
        }
        image
    }

    /// Sets the tag, or the digest if `value` is one; the other is cleared
    /// (they would disagree).
    fn set_tag_or_digest(&mut self, value: &str) -> Result<(), String> {
        if is_digest(value) {
            self.digest = value.into();
            self.tag.clear();
        } else if is_tag(value) {
            self.tag = value.into();
            self.digest.clear();
        } else {
            return Err(format!("{value:?} is neither a valid tag nor a digest"));
        }
        Ok(())
    }
}

fn is_tag(tag: &str) -> bool {
    let mut chars = tag.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        && tag.len() <= 128
}

fn is_digest(digest: &str) -> bool {
    digest.split_once(':').is_some_and(|(algorithm, hex)| {
        !algorithm.is_empty()
            && algorithm.chars().all(|c| c.is_ascii_alphanumeric() || "+.-_".contains(c))
            && hex.len() >= 32
            && hex.chars().all(|c| c.is_ascii_hexdigit())
    })
}

fn override_image(image: &str, o: &ImageOverrider) -> Result<String, String> {
    let mut parsed =
        ImageRef::parse(image).ok_or_else(|| format!("{image:?} is not a valid image reference"))?;
    let value = o.value.as_str();
    match (o.component, o.operator) {
        (ImageComponent::Registry, OverriderOperator::Add) => parsed.registry.push_str(value),
        (ImageComponent::Registry, OverriderOperator::Replace) => parsed.registry = value.into(),
        (ImageComponent::Registry, OverriderOperator::Remove) => parsed.registry.clear(),
        (ImageComponent::Repository, OverriderOperator::Add) => parsed.repository.push_str(value),
        (ImageComponent::Repository, OverriderOperator::Replace) => parsed.repository = value.into(),
        (ImageComponent::Repository, OverriderOperator::Remove) => {
            return Err(format!("removing the repository of {image:?} would leave no image"))
        }
        (ImageComponent::Tag, OverriderOperator::Add) => {
            let current = if parsed.tag.is_empty() { parsed.digest.clone() } else { parsed.tag.clone() };
            parsed.set_tag_or_digest(&format!("{current}{value}"))?;
        }
        (ImageComponent::Tag, OverriderOperator::Replace) => parsed.set_tag_or_digest(value)?,
        (ImageComponent::Tag, OverriderOperator::Remove) => {
            if parsed.tag.is_empty() {
                parsed.digest.clear();
            } else {
                parsed.tag.clear();
            }
        }
    }
    if parsed.repository.is_empty() {
        return Err(format!(
            "replacing the repository of {image:?} with an empty value would leave no image"
        ));
    }
    Ok(parsed.render())
}

fn apply_image(manifest: &mut Value, o: &ImageOverrider) -> Result<(), String> {
    let paths: Vec<String> = match &o.predicate {
        Some(predicate) => vec![predicate.path.clone()],
        None => {
            let (api_version, kind) = type_of(manifest);
            let Some(spec_path) = pod_spec_pointer(api_version, kind) else {
                // Not a workload: nothing to change, as in Karmada.
                return Ok(());
            };
            let mut paths = Vec::new();
            for field in ["initContainers", "containers"] {
                let count = manifest
                    .pointer(&format!("{spec_path}/{field}"))
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len);
                paths.extend((0..count).map(|i| format!("{spec_path}/{field}/{i}/image")));
            }
            paths
        }
    };
    for path in paths {
        let Some(slot) = manifest.pointer_mut(&path) else {
            if o.predicate.is_some() {
                return Err(format!("path {path} does not exist"));
            }
            // A container without an image (rejected by the API server for
            // Pods) has nothing to override.
            continue;
        };
        let Some(image) = slot.as_str() else {
            return Err(format!("the value at {path} is not an image string"));
        };
        *slot = Value::String(override_image(image, o)?);
    }
    Ok(())
}

fn apply_command_args(manifest: &mut Value, field: &str, o: &CommandArgsOverrider) -> Result<(), String> {
    if o.operator == OverriderOperator::Replace {
        return Err(format!("operator replace is not supported for {field} (use add or remove)"));
    }
    let (api_version, kind) = type_of(manifest);
    let Some(spec_path) = pod_spec_pointer(api_version, kind) else {
        return Ok(());
    };
    let Some(spec) = manifest.pointer_mut(spec_path) else {
        return Ok(());
    };
    for list in ["containers", "initContainers"] {
        let containers = spec.get_mut(list).and_then(Value::as_array_mut).into_iter().flatten();
        for container in containers {
            if container.get("name").and_then(Value::as_str) != Some(o.container_name.as_str()) {
                continue;
            }
            let Some(container) = container.as_object_mut() else {
                continue;
            };
            let current: Vec<String> = match container.get(field) {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|item| item.as_str().map(str::to_string))
                    .collect::<Option<_>>()
                    .ok_or_else(|| {
                        format!("{field} of container {} is not a list of strings", o.container_name)
                    })?,
                Some(_) => return Err(format!("{field} of container {} is not a list", o.container_name)),
            };
            let updated: Vec<String> = match o.operator {
                OverriderOperator::Remove => {
                    current.iter().filter(|v| !o.value.contains(v)).cloned().collect()
                }
                _ => current.iter().chain(&o.value).cloned().collect(),
            };
            if updated != current {
                container.insert(field.into(), json!(updated));
            }
        }
    }
    Ok(())
}

fn apply_label_annotation(manifest: &mut Value, field: &str, o: &LabelAnnotationOverrider) {
    let Some(object) = manifest.as_object_mut() else {
        return;
    };
    let metadata = object.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
    let Some(metadata) = metadata.as_object_mut() else {
        return;
    };
    if o.operator == OverriderOperator::Add && !metadata.get(field).is_some_and(Value::is_object) {
        metadata.insert(field.into(), Value::Object(Map::new()));
    }
    let Some(map) = metadata.get_mut(field).and_then(Value::as_object_mut) else {
        return;
    };
    for (key, value) in &o.value {
        match o.operator {
            OverriderOperator::Add => {
                map.insert(key.clone(), value.clone().into());
            }
            OverriderOperator::Replace => {
                if let Some(current) = map.get_mut(key) {
                    *current = value.clone().into();
                }
            }
            OverriderOperator::Remove => {
                map.remove(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selection::PolicyScope;
    use flotilla_api::policy::{
        ClusterAffinity, ImagePredicate, OverrideSpec, PlaintextOverrider, RuleWithCluster,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web", "tier": "front"}},
            "spec": {
                "replicas": 2,
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "initContainers": [{"name": "init", "image": "busybox:1.36"}],
                        "containers": [
                            {"name": "app", "image": "registry.example.com/shop/web:1.0",
                             "command": ["/web"], "args": ["--port=80", "--verbose"]},
                            {"name": "proxy", "image": "envoyproxy/envoy:v1.28"}
                        ]
                    }
                }
            }
        })
    }

    fn spec_with(rules: Vec<RuleWithCluster>) -> OverrideSpec {
        OverrideSpec { override_rules: rules, ..Default::default() }
    }

    fn everywhere(overriders: Overriders) -> RuleWithCluster {
        RuleWithCluster { target_cluster: None, overriders }
    }

    fn op<'a>(name: &'a str, spec: &'a OverrideSpec) -> OverrideCandidate<'a> {
        OverrideCandidate { scope: PolicyScope::Namespaced, namespace: "default", name, spec }
    }

    fn apply(manifest: &mut Value, overriders: Overriders) -> Result<Vec<String>, OverrideError> {
        let spec = spec_with(vec![everywhere(overriders)]);
        apply_overrides(manifest, "m1", &BTreeMap::new(), &[&op("p", &spec)])
    }

    fn plaintext(path: &str, operator: OverriderOperator, value: Option<Value>) -> Overriders {
        Overriders {
            plaintext: vec![PlaintextOverrider { path: path.into(), operator, value }],
            ..Default::default()
        }
    }

    fn image(
        path: Option<&str>,
        component: ImageComponent,
        operator: OverriderOperator,
        value: &str,
    ) -> Overriders {
        Overriders {
            image_overrider: vec![ImageOverrider {
                predicate: path.map(|p| ImagePredicate { path: p.into() }),
                component,
                operator,
                value: value.into(),
            }],
            ..Default::default()
        }
    }

    fn images(manifest: &Value) -> Vec<String> {
        let spec = &manifest["spec"]["template"]["spec"];
        ["initContainers", "containers"]
            .iter()
            .flat_map(|f| spec[f].as_array().cloned().unwrap_or_default())
            .map(|c| c["image"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn plaintext_adds_replaces_and_removes() {
        let mut d = deployment();
        apply(&mut d, plaintext("/spec/replicas", OverriderOperator::Replace, Some(json!(5)))).unwrap();
        assert_eq!(d["spec"]["replicas"], 5);
        apply(&mut d, plaintext("/spec/paused", OverriderOperator::Add, Some(json!(true)))).unwrap();
        assert_eq!(d["spec"]["paused"], true);
        apply(&mut d, plaintext("/metadata/labels/tier", OverriderOperator::Remove, None)).unwrap();
        assert_eq!(d["metadata"]["labels"], json!({"app": "web"}));
        let env = json!({"name": "REGION", "value": "eu"});
        apply(
            &mut d,
            plaintext("/spec/template/spec/containers/0/env", OverriderOperator::Add, Some(json!([]))),
        )
        .unwrap();
        apply(
            &mut d,
            plaintext("/spec/template/spec/containers/0/env/-", OverriderOperator::Add, Some(env.clone())),
        )
        .unwrap();
        assert_eq!(d["spec"]["template"]["spec"]["containers"][0]["env"], json!([env]));
    }

    #[test]
    fn plaintext_errors_name_policy_rule_and_path() {
        let mut d = deployment();
        let spec = spec_with(vec![
            everywhere(Overriders::default()),
            everywhere(plaintext("/spec/foo/bar", OverriderOperator::Replace, Some(json!(1)))),
        ]);
        let policy = OverrideCandidate {
            scope: PolicyScope::Namespaced,
            namespace: "default",
            name: "eu-images",
            spec: &spec,
        };
        let err = apply_overrides(&mut d, "m1", &BTreeMap::new(), &[&policy]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "OverridePolicy default/eu-images rule 1 plaintext: path /spec/foo/bar does not exist"
        );

        use OverriderOperator::*;
        let cases = [
            (plaintext("/spec/foo/bar", Add, Some(json!(1))), "path /spec/foo does not exist"),
            (plaintext("/spec/nope", Remove, None), "path /spec/nope does not exist"),
            (plaintext("/spec/replicas", Replace, None), "replace at /spec/replicas needs a value"),
            (
                plaintext("/spec/replicas/x", Add, Some(json!(1))),
                "cannot add at /spec/replicas/x: /spec/replicas is not an object or a list",
            ),
            (
                plaintext("/spec/template/spec/containers/9", Add, Some(json!({}))),
                "cannot add at /spec/template/spec/containers/9: /spec/template/spec/containers has 2 items \
                 (use an index up to 2, or -)",
            ),
            (plaintext("spec", Remove, None), "path \"spec\" is not a JSON pointer (it must start with /)"),
        ];
        for (overriders, problem) in cases {
            let mut d = deployment();
            let err = apply(&mut d, overriders).unwrap_err();
            assert_eq!(err.to_string(), format!("OverridePolicy default/p rule 0 plaintext: {problem}"));
            assert_eq!(d, deployment(), "a failed operation leaves the manifest alone");
        }
    }

    #[test]
    fn image_references_parse_like_docker() {
        let parse = |s: &str| ImageRef::parse(s).map(|r| (r.registry, r.repository, r.tag, r.digest));
        let owned = |a: &str, b: &str, c: &str, d: &str| Some((a.into(), b.into(), c.into(), d.into()));
        assert_eq!(parse("nginx"), owned("", "nginx", "", ""));
        assert_eq!(parse("library/nginx:1.25"), owned("", "library/nginx", "1.25", ""));
        assert_eq!(parse("docker.io/library/nginx"), owned("docker.io", "library/nginx", "", ""));
        assert_eq!(parse("localhost/app:dev"), owned("localhost", "app", "dev", ""));
        assert_eq!(parse("reg.example:5000/team/app:v2"), owned("reg.example:5000", "team/app", "v2", ""));
        assert_eq!(parse("reg:5000/app"), owned("reg:5000", "app", "", ""));
        let digest = format!("sha256:{}", "a".repeat(64));
        assert_eq!(parse(&format!("k8s.gcr.io/pause@{digest}")), owned("k8s.gcr.io", "pause", "", &digest));
        assert_eq!(parse(&format!("pause:3.2@{digest}")), owned("", "pause", "3.2", &digest));
        for bad in ["", "nginx:", "nginx:bad tag", "nginx@sha256:xyz", "a//b", "UPPER case", ":tag"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
        for image in ["reg.example:5000/team/app:v2", "nginx", &format!("pause:3.2@{digest}")] {
            assert_eq!(ImageRef::parse(image).unwrap().render(), image);
        }
    }

    #[test]
    fn image_overrider_without_predicate_changes_every_container() {
        use ImageComponent::*;
        use OverriderOperator::*;
        let run = |component, operator, value: &str| {
            let mut d = deployment();
            apply(&mut d, image(None, component, operator, value)).unwrap();
            images(&d)
        };
        assert_eq!(
            run(Registry, Replace, "mirror.eu"),
            ["mirror.eu/busybox:1.36", "mirror.eu/shop/web:1.0", "mirror.eu/envoyproxy/envoy:v1.28"]
        );
        assert_eq!(run(Registry, Remove, ""), ["busybox:1.36", "shop/web:1.0", "envoyproxy/envoy:v1.28"]);
        assert_eq!(
            run(Registry, Add, ".cn"),
            [".cn/busybox:1.36", "registry.example.com.cn/shop/web:1.0", ".cn/envoyproxy/envoy:v1.28"]
        );
        assert_eq!(
            run(Repository, Replace, "mirror/app"),
            ["mirror/app:1.36", "registry.example.com/mirror/app:1.0", "mirror/app:v1.28"]
        );
        assert_eq!(
            run(Repository, Add, "-debug"),
            ["busybox-debug:1.36", "registry.example.com/shop/web-debug:1.0", "envoyproxy/envoy-debug:v1.28"]
        );
        assert_eq!(
            run(Tag, Replace, "2.0"),
            ["busybox:2.0", "registry.example.com/shop/web:2.0", "envoyproxy/envoy:2.0"]
        );
        assert_eq!(
            run(Tag, Add, "-eu"),
            ["busybox:1.36-eu", "registry.example.com/shop/web:1.0-eu", "envoyproxy/envoy:v1.28-eu"]
        );
        assert_eq!(run(Tag, Remove, ""), ["busybox", "registry.example.com/shop/web", "envoyproxy/envoy"]);
        let digest = format!("sha256:{}", "b".repeat(64));
        assert_eq!(run(Tag, Replace, &digest)[0], format!("busybox@{digest}"));
    }

    #[test]
    fn image_overrider_with_predicate_changes_one_image() {
        let mut d = deployment();
        let path = "/spec/template/spec/containers/1/image";
        apply(&mut d, image(Some(path), ImageComponent::Registry, OverriderOperator::Add, "ghcr.io"))
            .unwrap();
        assert_eq!(
            images(&d),
            ["busybox:1.36", "registry.example.com/shop/web:1.0", "ghcr.io/envoyproxy/envoy:v1.28"]
        );

        let err =
            apply(&mut d, image(Some("/spec/nope"), ImageComponent::Tag, OverriderOperator::Replace, "x"))
                .unwrap_err();
        assert_eq!(
            err.to_string(),
            "OverridePolicy default/p rule 0 imageOverrider: path /spec/nope does not exist"
        );
        let err = apply(
            &mut d,
            image(Some("/spec/replicas"), ImageComponent::Tag, OverriderOperator::Replace, "x"),
        )
        .unwrap_err();
        assert!(err.to_string().ends_with("the value at /spec/replicas is not an image string"), "{err}");
        let err = apply(&mut d, image(None, ImageComponent::Tag, OverriderOperator::Replace, "not a tag"))
            .unwrap_err();
        assert!(err.to_string().ends_with("\"not a tag\" is neither a valid tag nor a digest"), "{err}");
        let err = apply(&mut d, image(None, ImageComponent::Repository, OverriderOperator::Remove, ""))
            .unwrap_err();
        assert!(err.to_string().contains("would leave no image"), "{err}");
    }

    #[test]
    fn image_overrider_knows_pods_and_cronjobs_and_skips_other_kinds() {
        let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "a", "image": "nginx:1"}]}});
        apply(&mut pod, image(None, ImageComponent::Tag, OverriderOperator::Replace, "2")).unwrap();
        assert_eq!(pod["spec"]["containers"][0]["image"], "nginx:2");
        let mut cron = json!({"apiVersion": "batch/v1beta1", "kind": "CronJob", "metadata": {"name": "c"},
            "spec": {"jobTemplate": {"spec": {"template": {"spec": {
                "containers": [{"name": "a", "image": "job"}]}}}}}});
        apply(&mut cron, image(None, ImageComponent::Registry, OverriderOperator::Replace, "mirror.io"))
            .unwrap();
        assert_eq!(
            cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["image"],
            "mirror.io/job"
        );
        let mut cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
                            "data": {"image": "x"}});
        let changed =
            apply(&mut cm, image(None, ImageComponent::Tag, OverriderOperator::Replace, "2")).unwrap();
        assert!(changed.is_empty());
    }

    fn command_args(
        field: &str,
        container: &str,
        operator: OverriderOperator,
        values: &[&str],
    ) -> Overriders {
        let o = CommandArgsOverrider {
            container_name: container.into(),
            operator,
            value: values.iter().map(|v| v.to_string()).collect(),
        };
        match field {
            "command" => Overriders { command_overrider: vec![o], ..Default::default() },
            _ => Overriders { args_overrider: vec![o], ..Default::default() },
        }
    }

    #[test]
    fn command_and_args_add_and_remove_values_of_the_named_container() {
        let mut d = deployment();
        let containers = |d: &Value| d["spec"]["template"]["spec"]["containers"].clone();
        apply(&mut d, command_args("args", "app", OverriderOperator::Add, &["--region=eu"])).unwrap();
        assert_eq!(containers(&d)[0]["args"], json!(["--port=80", "--verbose", "--region=eu"]));
        apply(&mut d, command_args("args", "app", OverriderOperator::Remove, &["--verbose", "--absent"]))
            .unwrap();
        assert_eq!(containers(&d)[0]["args"], json!(["--port=80", "--region=eu"]));
        // A container without a command gets one.
        apply(&mut d, command_args("command", "proxy", OverriderOperator::Add, &["envoy", "-c"])).unwrap();
        assert_eq!(containers(&d)[1]["command"], json!(["envoy", "-c"]));
        assert_eq!(containers(&d)[0]["command"], json!(["/web"]));
        // Init containers count too.
        apply(&mut d, command_args("command", "init", OverriderOperator::Add, &["sh"])).unwrap();
        assert_eq!(d["spec"]["template"]["spec"]["initContainers"][0]["command"], json!(["sh"]));
        // No such container: nothing changes.
        let before = d.clone();
        let changed = apply(&mut d, command_args("args", "ghost", OverriderOperator::Add, &["x"])).unwrap();
        assert!(changed.is_empty());
        assert_eq!(d, before);
        let err =
            apply(&mut d, command_args("command", "app", OverriderOperator::Replace, &["x"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "OverridePolicy default/p rule 0 commandOverrider: operator replace is not supported for command \
             (use add or remove)"
        );
    }

    fn labels_annotations(field: &str, operator: OverriderOperator, pairs: &[(&str, &str)]) -> Overriders {
        let o = LabelAnnotationOverrider {
            operator,
            value: pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        };
        match field {
            "labels" => Overriders { labels_overrider: vec![o], ..Default::default() },
            _ => Overriders { annotations_overrider: vec![o], ..Default::default() },
        }
    }

    #[test]
    fn labels_and_annotations_add_replace_and_remove_keys() {
        use OverriderOperator::*;
        let mut d = deployment();
        apply(&mut d, labels_annotations("labels", Add, &[("region", "eu"), ("app", "web2")])).unwrap();
        assert_eq!(d["metadata"]["labels"], json!({"app": "web2", "tier": "front", "region": "eu"}));
        // Replace touches only keys that exist.
        apply(&mut d, labels_annotations("labels", Replace, &[("tier", "back"), ("absent", "x")])).unwrap();
        assert_eq!(d["metadata"]["labels"], json!({"app": "web2", "tier": "back", "region": "eu"}));
        apply(&mut d, labels_annotations("labels", Remove, &[("tier", ""), ("absent", "")])).unwrap();
        assert_eq!(d["metadata"]["labels"], json!({"app": "web2", "region": "eu"}));
        // Annotations are created when absent.
        apply(&mut d, labels_annotations("annotations", Add, &[("owner", "team-eu")])).unwrap();
        assert_eq!(d["metadata"]["annotations"], json!({"owner": "team-eu"}));
        let changed = apply(&mut d, labels_annotations("annotations", Remove, &[("nope", "")])).unwrap();
        assert!(changed.is_empty());
    }

    #[test]
    fn overriders_apply_in_fixed_order_within_a_rule() {
        // plaintext sets the image, then the image overrider rewrites it:
        // the result shows plaintext ran first.
        let mut d = deployment();
        let overriders = Overriders {
            image_overrider: image(None, ImageComponent::Tag, OverriderOperator::Replace, "2.0")
                .image_overrider,
            ..plaintext(
                "/spec/template/spec/containers/1/image",
                OverriderOperator::Replace,
                Some(json!("custom:1")),
            )
        };
        apply(&mut d, overriders).unwrap();
        assert_eq!(d["spec"]["template"]["spec"]["containers"][1]["image"], "custom:2.0");
        // labels (add) then annotations; a plaintext removing a label runs
        // before the labels overrider adds it back.
        let mut d = deployment();
        let overriders = Overriders {
            labels_overrider: labels_annotations("labels", OverriderOperator::Add, &[("tier", "again")])
                .labels_overrider,
            ..plaintext("/metadata/labels/tier", OverriderOperator::Remove, None)
        };
        apply(&mut d, overriders).unwrap();
        assert_eq!(d["metadata"]["labels"]["tier"], "again");
    }

    #[test]
    fn rules_follow_target_clusters_and_policies_apply_in_order() {
        let eu = ClusterAffinity {
            label_selector: Some(LabelSelector {
                match_labels: Some([("region".to_string(), "eu".to_string())].into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let first = spec_with(vec![
            RuleWithCluster {
                target_cluster: Some(eu),
                overriders: plaintext("/spec/replicas", OverriderOperator::Replace, Some(json!(10))),
            },
            RuleWithCluster {
                target_cluster: Some(ClusterAffinity {
                    cluster_names: vec!["us-1".into()],
                    ..Default::default()
                }),
                overriders: plaintext("/spec/replicas", OverriderOperator::Replace, Some(json!(20))),
            },
        ]);
        let second = spec_with(vec![RuleWithCluster {
            target_cluster: Some(ClusterAffinity {
                cluster_names: vec!["eu-2".into()],
                ..Default::default()
            }),
            overriders: plaintext("/spec/replicas", OverriderOperator::Replace, Some(json!(30))),
        }]);
        let cop =
            OverrideCandidate { scope: PolicyScope::Cluster, namespace: "", name: "base", spec: &first };
        let op = op("eu-2-only", &second);
        let policies = [&cop, &op];
        let eu_labels: BTreeMap<String, String> = [("region".to_string(), "eu".to_string())].into();

        let run = |cluster: &str, labels: &BTreeMap<String, String>| {
            let mut d = deployment();
            let changed = apply_overrides(&mut d, cluster, labels, &policies).unwrap();
            (d["spec"]["replicas"].as_i64().unwrap(), changed)
        };
        assert_eq!(run("eu-1", &eu_labels), (10, vec!["base".to_string()]));
        // The later policy wins.
        assert_eq!(run("eu-2", &eu_labels), (30, vec!["base".to_string(), "default/eu-2-only".to_string()]));
        assert_eq!(run("us-1", &BTreeMap::new()), (20, vec!["base".to_string()]));
        assert_eq!(run("ap-1", &BTreeMap::new()), (2, vec![]));
    }

    #[test]
    fn a_policy_that_sets_what_is_already_there_changed_nothing() {
        let mut d = deployment();
        let changed =
            apply(&mut d, plaintext("/spec/replicas", OverriderOperator::Replace, Some(json!(2)))).unwrap();
        assert!(changed.is_empty());
    }

    #[test]
    fn cluster_policy_errors_name_the_cluster_policy() {
        let spec = spec_with(vec![everywhere(command_args("args", "app", OverriderOperator::Replace, &[]))]);
        let cop =
            OverrideCandidate { scope: PolicyScope::Cluster, namespace: "", name: "global", spec: &spec };
        let err = apply_overrides(&mut deployment(), "m1", &BTreeMap::new(), &[&cop]).unwrap_err();
        assert!(err.to_string().starts_with("ClusterOverridePolicy global rule 0 argsOverrider: "), "{err}");
    }
}
