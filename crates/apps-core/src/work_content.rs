//! What the binder writes into one Work: its spec (the manifest, the
//! conflict and deletion settings, a custom kind's health rule) and the
//! hash that says whether the member's copy must be written again.

use flotilla_api::policy::ConflictResolution;
use serde_json::{json, Value};

use crate::applied_overrides::annotation_value;
use crate::binding::spec_hash;
use crate::interpreter::{rules_for, Interpreter};

/// One Work's content.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkContent {
    pub spec: Value,
    pub hash: String,
    /// The overrides applied, as the Work's annotation records them.
    pub applied_overrides: Option<String>,
}

/// The Work for `manifest`. The health rule, the revision and the record
/// of overrides count in the hash only when present, so a Work without
/// them keeps the hash it always had (and is not written again).
pub fn work_content(
    manifest: Value,
    conflict: ConflictResolution,
    preserve: bool,
    interpreter: Option<&Interpreter>,
    revision: Option<&str>,
    applied_overrides: &[String],
) -> WorkContent {
    let mut spec = json!({
        "manifests": [manifest],
        "conflictResolution": conflict,
        "preserveResourcesOnDeletion": preserve,
    });
    // The agent judges a custom kind by its interpreter's health rule,
    // copied here (and part of the hash: a changed rule is re-sent).
    let health_rules = rules_for(&[&spec["manifests"][0]], &Vec::from_iter(interpreter));
    if !health_rules.is_empty() {
        spec["healthRules"] = json!(health_rules);
    }
    // The revision is part of what is written: a Work whose manifest is
    // the same in two revisions still says which one it carries.
    let hash = match revision {
        Some(r) => spec_hash(&json!([spec, r])),
        None => spec_hash(&spec),
    };
    let applied_overrides = annotation_value(applied_overrides);
    let hash = match &applied_overrides {
        Some(applied) => spec_hash(&json!([hash, applied])),
        None => hash,
    };
    WorkContent { spec, hash, applied_overrides }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_api::interpreter::HealthRule;

    fn clone_set() -> Interpreter {
        Interpreter {
            api_version: "apps.kruise.io/v1alpha1".into(),
            kind: "CloneSet".into(),
            replicas: None,
            pod_template: None,
            status_counts: Vec::new(),
            health: Some(HealthRule { expression: "true".into(), message: None }),
        }
    }

    #[test]
    fn spec_and_hash() {
        let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}});
        let clone_set_object =
            json!({"apiVersion": "apps.kruise.io/v1alpha1", "kind": "CloneSet", "metadata": {"name": "web"}});
        let interpreter = clone_set();
        let plain = json!({
            "manifests": [deployment],
            "conflictResolution": "Abort",
            "preserveResourcesOnDeletion": false,
        });
        let overrides = vec!["OverridePolicy/shop/web".to_string()];
        let recorded = annotation_value(&overrides);
        struct Case<'a> {
            name: &'a str,
            manifest: &'a Value,
            interpreter: Option<&'a Interpreter>,
            revision: Option<&'a str>,
            overrides: &'a [String],
            want_hash: String,
            want_health_rules: bool,
        }
        let cases = [
            Case {
                name: "nothing else: the hash of the spec alone",
                manifest: &deployment,
                interpreter: None,
                revision: None,
                overrides: &[],
                want_hash: spec_hash(&plain),
                want_health_rules: false,
            },
            Case {
                name: "a revision is hashed with the spec",
                manifest: &deployment,
                interpreter: None,
                revision: Some("web-5d4f"),
                overrides: &[],
                want_hash: spec_hash(&json!([plain, "web-5d4f"])),
                want_health_rules: false,
            },
            Case {
                name: "the overrides applied are hashed last",
                manifest: &deployment,
                interpreter: None,
                revision: Some("web-5d4f"),
                overrides: &overrides,
                want_hash: spec_hash(&json!([spec_hash(&json!([plain, "web-5d4f"])), recorded])),
                want_health_rules: false,
            },
            Case {
                name: "an interpreter of another kind adds no rule",
                manifest: &deployment,
                interpreter: Some(&interpreter),
                revision: None,
                overrides: &[],
                want_hash: spec_hash(&plain),
                want_health_rules: false,
            },
            Case {
                name: "the kind's interpreter adds its health rule",
                manifest: &clone_set_object,
                interpreter: Some(&interpreter),
                revision: None,
                overrides: &[],
                want_hash: spec_hash(&json!({
                    "manifests": [clone_set_object.clone()],
                    "conflictResolution": "Abort",
                    "preserveResourcesOnDeletion": false,
                    "healthRules": [interpreter.health_rule()],
                })),
                want_health_rules: true,
            },
        ];
        for case in cases {
            let got = work_content(
                case.manifest.clone(),
                ConflictResolution::Abort,
                false,
                case.interpreter,
                case.revision,
                case.overrides,
            );
            assert_eq!(got.spec["manifests"][0], *case.manifest, "{}", case.name);
            assert_eq!(got.spec.get("healthRules").is_some(), case.want_health_rules, "{}", case.name);
            assert_eq!(got.hash, case.want_hash, "{}", case.name);
            assert_eq!(got.applied_overrides, annotation_value(case.overrides), "{}", case.name);
        }
    }

    #[test]
    fn settings_change_the_hash() {
        let manifest = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}});
        let base = work_content(manifest.clone(), ConflictResolution::Abort, false, None, None, &[]);
        let overwrite = work_content(manifest.clone(), ConflictResolution::Overwrite, false, None, None, &[]);
        let preserve = work_content(manifest, ConflictResolution::Abort, true, None, None, &[]);
        assert_eq!(base.spec["conflictResolution"], "Abort");
        assert_eq!(overwrite.spec["conflictResolution"], "Overwrite");
        assert_eq!(preserve.spec["preserveResourcesOnDeletion"], true);
        assert_ne!(base.hash, overwrite.hash);
        assert_ne!(base.hash, preserve.hash);
    }
}
