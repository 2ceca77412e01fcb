//! `undo`: which kept revision to go back to, and the template with that
//! revision's content written back into it.

use flotilla_api::rollout::RolloutStatus;
use serde_json::{Map, Value};

/// A kept revision as undo sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub number: i64,
    pub hash: String,
    /// The member copy of the template (`RevisionContent::manifest`);
    /// `None` when the kept data cannot be read.
    pub manifest: Option<Value>,
}

/// The revision to go back to: `--to-revision N`, else the stable
/// revision while another one rolls out or was rolled back, else (the
/// current revision is the stable one) the newest other kept revision
/// that did not fail.
pub fn choose<'a>(
    kept: &'a [Candidate],
    status: &RolloutStatus,
    to: Option<i64>,
) -> Result<&'a Candidate, String> {
    let numbers = || {
        let mut n: Vec<i64> = kept.iter().map(|c| c.number).collect();
        n.sort_unstable();
        n.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")
    };
    let current = status.revision.as_str();
    if let Some(n) = to {
        let Some(c) = kept.iter().find(|c| c.number == n) else {
            return Err(format!("revision {n} is not kept; kept revisions: {}", numbers()));
        };
        if c.hash == current {
            return Err(format!("revision {n} is what the template says already: nothing to undo"));
        }
        return Ok(c);
    }
    if let Some(stable) = status.stable_revision.as_deref().filter(|s| *s != current) {
        return kept.iter().find(|c| c.hash == stable).ok_or_else(|| {
            format!(
                "the stable revision{} is not kept any more; choose one with --to-revision (kept: {})",
                status.stable_revision_number.map(|n| format!(" {n}")).unwrap_or_default(),
                numbers()
            )
        });
    }
    let failed = status.failure.as_ref().map(|f| f.revision.as_str());
    kept.iter()
        .filter(|c| c.hash != current && Some(c.hash.as_str()) != failed)
        .max_by_key(|c| c.number)
        .ok_or_else(|| format!("no earlier revision is kept to go back to (kept: {})", numbers()))
}

/// Fields the member copy of a template leaves out that the template keeps
/// when its spec is replaced: replicas (not part of a revision), a
/// Service's cluster IPs and a Job's generated selector and labels (set by
/// the hub's API server, immutable).
const KEPT_FROM_TEMPLATE: &[&str] = &[
    "/spec/replicas",
    "/spec/clusterIP",
    "/spec/clusterIPs",
    "/spec/selector",
    "/spec/template/metadata/labels/controller-uid",
    "/spec/template/metadata/labels/batch.kubernetes.io~1controller-uid",
    "/spec/template/metadata/labels/job-name",
    "/spec/template/metadata/labels/batch.kubernetes.io~1job-name",
];

/// Top-level fields that are the object's identity and state, not its
/// content.
const NOT_CONTENT: &[&str] = &["apiVersion", "kind", "metadata", "status"];

/// The template with the revision's content: every top-level field but
/// apiVersion, kind, metadata and status is the revision's (a field the
/// revision lacks is removed), except [`KEPT_FROM_TEMPLATE`] fields the
/// revision lacks. The template's metadata (name, labels,
/// resourceVersion, ...) stays as it is. `None` when nothing would change.
pub fn undone(template: &Value, manifest: &Value) -> Result<Option<Value>, String> {
    let (Some(old), Some(content)) = (template.as_object(), manifest.as_object()) else {
        return Err("the template or the kept revision is not a JSON object".into());
    };
    let mut new: Map<String, Value> = old
        .iter()
        .filter(|(k, _)| NOT_CONTENT.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (k, v) in content.iter().filter(|(k, _)| !NOT_CONTENT.contains(&k.as_str())) {
        new.insert(k.clone(), v.clone());
    }
    let mut new = Value::Object(new);
    for pointer in KEPT_FROM_TEMPLATE {
        if let (Some(kept), None) = (template.pointer(pointer), manifest.pointer(pointer)) {
            set_pointer(&mut new, pointer, kept.clone());
        }
    }
    Ok((new != *template).then_some(new))
}

/// Sets the value at a JSON pointer, making the objects on the way.
fn set_pointer(target: &mut Value, pointer: &str, value: Value) {
    let keys: Vec<String> =
        pointer.split('/').skip(1).map(|k| k.replace("~1", "/").replace("~0", "~")).collect();
    let Some((last, path)) = keys.split_last() else { return };
    let mut at = target;
    for key in path {
        let Some(object) = at.as_object_mut() else { return };
        at = object.entry(key.clone()).or_insert_with(|| Value::Object(Map::new()));
    }
    if let Some(object) = at.as_object_mut() {
        object.insert(last.clone(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_api::rollout::RolloutFailure;
    use serde_json::json;

    fn kept() -> Vec<Candidate> {
        (1..=4).map(|n| Candidate { number: n, hash: format!("r{n}"), manifest: None }).collect()
    }

    fn status(phase: &str, revision: i64, stable: Option<i64>, failed: Option<i64>) -> RolloutStatus {
        RolloutStatus {
            phase: phase.into(),
            revision: format!("r{revision}"),
            revision_number: revision,
            stable_revision: stable.map(|n| format!("r{n}")),
            stable_revision_number: stable,
            failure: failed.map(|n| RolloutFailure {
                revision: format!("r{n}"),
                cluster: None,
                reason: "x".into(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn undo_goes_back_to_the_stable_revision_or_the_one_before() {
        let kept = kept();
        let cases: Vec<(RolloutStatus, Option<i64>, Result<i64, &str>)> = vec![
            // Rolling out 4 over stable 3: back to 3.
            (status("Soaking", 4, Some(3), None), None, Ok(3)),
            // 4 rolled back to 3: the template goes back to 3 too.
            (status("RolledBack", 4, Some(3), Some(4)), None, Ok(3)),
            // 4 complete: the one before it.
            (status("Complete", 4, Some(4), None), None, Ok(3)),
            // 3 complete after 4 failed: 2, not the failed 4.
            (status("Complete", 3, Some(3), Some(4)), None, Ok(2)),
            // An undone revision keeps its number: 1 complete, 4 the newest other.
            (status("Complete", 1, Some(1), None), None, Ok(4)),
            (status("Complete", 4, Some(4), None), Some(1), Ok(1)),
            (status("Complete", 4, Some(4), None), Some(4), Err("what the template says already")),
            (
                status("Complete", 4, Some(4), None),
                Some(7),
                Err("revision 7 is not kept; kept revisions: 1, 2, 3, 4"),
            ),
            (status("Soaking", 4, Some(9), None), None, Err("the stable revision 9 is not kept any more")),
        ];
        for (s, to, want) in cases {
            let got = choose(&kept, &s, to).map(|c| c.number);
            match (got, want) {
                (Ok(n), Ok(w)) => assert_eq!(n, w, "{} {} {to:?}", s.phase, s.revision),
                (Err(e), Err(part)) => assert!(e.contains(part), "{e}"),
                (got, want) => panic!("{} {} {to:?}: got {got:?}, want {want:?}", s.phase, s.revision),
            }
        }
        let only = [Candidate { number: 1, hash: "r1".into(), manifest: None }];
        let e = choose(&only, &status("Complete", 1, Some(1), None), None).unwrap_err();
        assert_eq!(e, "no earlier revision is kept to go back to (kept: 1)");
    }

    fn deployment(image: &str, extra: Value) -> Value {
        let mut d = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop", "labels": {"team": "a"}, "resourceVersion": "42"},
            "spec": {"replicas": 5, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "main", "image": image}]}}},
            "status": {"replicas": 5},
        });
        if let (Some(spec), Some(extra)) = (d["spec"].as_object_mut(), extra.as_object()) {
            spec.extend(extra.clone());
        }
        d
    }

    /// The member copy, as a revision keeps it: no replicas, no status.
    fn revision(image: &str) -> Value {
        let mut m = deployment(image, json!({}));
        m["metadata"] =
            json!({"name": "web", "namespace": "shop", "labels": {"flotilla.io/managed-by": "x"}});
        if let Some(o) = m.as_object_mut() {
            o.remove("status");
        }
        if let Some(s) = m["spec"].as_object_mut() {
            s.remove("replicas");
        }
        m
    }

    #[test]
    fn the_template_takes_the_revisions_spec_and_keeps_its_metadata_and_replicas() {
        let template = deployment("web:2", json!({"minReadySeconds": 10}));
        let got = undone(&template, &revision("web:1")).unwrap().unwrap();
        let want = deployment("web:1", json!({}));
        assert_eq!(got, want, "minReadySeconds (not in the revision) is removed; replicas and metadata kept");
        assert_eq!(undone(&want, &revision("web:1")).unwrap(), None, "nothing to change");
    }

    #[test]
    fn fields_the_api_server_set_are_kept_and_kinds_without_spec_are_replaced_whole() {
        let service = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
            "spec": {"clusterIP": "10.0.0.7", "clusterIPs": ["10.0.0.7"], "ports": [{"port": 80}]}});
        let kept = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
            "spec": {"ports": [{"port": 8080}]}});
        let got = undone(&service, &kept).unwrap().unwrap();
        assert_eq!(
            got["spec"],
            json!({"clusterIP": "10.0.0.7", "clusterIPs": ["10.0.0.7"], "ports": [{"port": 8080}]})
        );

        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "labels": {"x": "1"}},
            "data": {"a": "2"}, "binaryData": {"b": "AA=="}});
        let kept =
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}});
        let got = undone(&cm, &kept).unwrap().unwrap();
        assert_eq!(
            got,
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "labels": {"x": "1"}},
            "data": {"a": "1"}})
        );
        assert!(undone(&json!("x"), &kept).is_err());
    }
}
