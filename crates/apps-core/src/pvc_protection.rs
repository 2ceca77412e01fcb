//! The `kubernetes.io/pvc-protection` finalizer on PersistentVolumeClaim
//! templates.
//!
//! An API server running the `StorageObjectInUseProtection` admission
//! plugin puts the finalizer on every claim; the controller-manager's
//! pvc-protection controller removes it once no pod uses the claim. A hub
//! runs no such controller (Karmada turns the plugin off; Flotilla's own
//! hubs do too), so on a hub whose API server flags Flotilla does not
//! control, a deleted claim template would stay forever, and a later claim
//! of the same name could not be created. The hub therefore lifts the
//! finalizer from a claim template being deleted, unless a pod on the hub
//! uses the claim (then the protection is real).

use k8s_openapi::api::core::v1::Pod;

/// The finalizer the admission plugin adds.
pub const PVC_PROTECTION: &str = "kubernetes.io/pvc-protection";

/// The finalizers to leave on a template being deleted, when the hub
/// should lift the claim protection; `None` to leave it alone.
pub fn lift(
    api_version: &str,
    kind: &str,
    deleting: bool,
    finalizers: &[String],
    in_use: bool,
) -> Option<Vec<String>> {
    let is_claim = api_version == "v1" && kind == "PersistentVolumeClaim";
    if !is_claim || !deleting || in_use || !finalizers.iter().any(|f| f == PVC_PROTECTION) {
        return None;
    }
    Some(finalizers.iter().filter(|f| *f != PVC_PROTECTION).cloned().collect())
}

/// Whether `pod` uses the claim `claim` (of its namespace) and may still
/// run: a pod that finished no longer holds it, as the pvc-protection
/// controller reads it.
pub fn pod_uses_claim(pod: &Pod, claim: &str) -> bool {
    let finished = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| p == "Succeeded" || p == "Failed");
    if finished {
        return false;
    }
    let volumes = pod.spec.as_ref().and_then(|s| s.volumes.as_ref());
    volumes.into_iter().flatten().any(|v| {
        v.persistent_volume_claim.as_ref().is_some_and(|c| c.claim_name == claim)
            // A generic ephemeral volume's claim is `<pod>-<volume>`.
            || (v.ephemeral.is_some()
                && pod.metadata.name.as_deref().is_some_and(|p| format!("{p}-{}", v.name) == claim))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_protection_is_lifted_only_from_a_claim_template_being_deleted_that_no_pod_uses() {
        let with = vec![PVC_PROTECTION.to_string(), "example.com/keep".to_string()];
        let keep = Some(vec!["example.com/keep".to_string()]);
        /// (api_version, kind, deleting, finalizers, in use by a hub pod)
        type Template<'a> = (&'a str, &'a str, bool, &'a [String], bool);
        let cases: [(&str, Template, Option<Vec<String>>); 6] = [
            ("deleted claim", ("v1", "PersistentVolumeClaim", true, &with, false), keep),
            ("not being deleted", ("v1", "PersistentVolumeClaim", false, &with, false), None),
            ("a pod uses it", ("v1", "PersistentVolumeClaim", true, &with, true), None),
            ("no protection", ("v1", "PersistentVolumeClaim", true, &with[1..], false), None),
            ("another kind", ("v1", "ConfigMap", true, &with, false), None),
            ("another group", ("example.com/v1", "PersistentVolumeClaim", true, &with, false), None),
        ];
        for (name, (api_version, kind, deleting, finalizers, in_use), want) in cases {
            assert_eq!(lift(api_version, kind, deleting, finalizers, in_use), want, "{name}");
        }
    }

    #[test]
    fn a_running_pod_mounting_the_claim_uses_it() {
        let pod = |phase: &str, volume: serde_json::Value| -> Pod {
            serde_json::from_value(json!({"metadata": {"name": "web"}, "spec": {"containers": [],
                "volumes": [volume]}, "status": {"phase": phase}}))
            .unwrap()
        };
        let claim = json!({"name": "data", "persistentVolumeClaim": {"claimName": "db"}});
        let ephemeral = json!({"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}});
        let cases = [
            ("running, mounts it", pod("Running", claim.clone()), "db", true),
            ("pending, mounts it", pod("Pending", claim.clone()), "db", true),
            ("finished", pod("Succeeded", claim.clone()), "db", false),
            ("failed", pod("Failed", claim.clone()), "db", false),
            ("another claim", pod("Running", claim), "other", false),
            ("its ephemeral claim", pod("Running", ephemeral.clone()), "web-scratch", true),
            ("another pod's ephemeral claim", pod("Running", ephemeral), "api-scratch", false),
        ];
        for (name, pod, claim, want) in cases {
            assert_eq!(pod_uses_claim(&pod, claim), want, "{name}");
        }
    }
}
