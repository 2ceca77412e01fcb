//! Which of a ManagedCluster's taints the hub added: those its taint
//! manager owns in server-side apply's `managedFields`. A taint a person
//! added is theirs even when it has one of the hub's keys: the hub neither
//! counts it as its own nor tries to take it away.

use std::collections::BTreeSet;

use flotilla_api::cluster::Taint;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;

/// The (key, effect) of every `spec.taints` entry `manager` applied.
pub fn owned_taint_keys(entries: &[ManagedFieldsEntry], manager: &str) -> BTreeSet<(String, String)> {
    entries
        .iter()
        .filter(|e| e.manager.as_deref() == Some(manager) && e.operation.as_deref() == Some("Apply"))
        .filter_map(|e| e.fields_v1.as_ref()?.0.pointer("/f:spec/f:taints")?.as_object().cloned())
        .flat_map(|taints| taints.into_iter().map(|(k, _)| k))
        .filter_map(|k| {
            // `k:{"effect":"NoExecute","key":"cluster.flotilla.io/unreachable"}`
            let key: serde_json::Value = serde_json::from_str(k.strip_prefix("k:")?).ok()?;
            Some((key.get("key")?.as_str()?.to_string(), key.get("effect")?.as_str()?.to_string()))
        })
        .collect()
}

/// The taints of `taints` that `manager` applied.
pub fn owned_taints(taints: &[Taint], entries: &[ManagedFieldsEntry], manager: &str) -> Vec<Taint> {
    let owned = owned_taint_keys(entries, manager);
    taints
        .iter()
        .filter(|t| {
            let effect = serde_json::to_value(t.effect).ok();
            let effect = effect.as_ref().and_then(|e| e.as_str()).unwrap_or_default();
            owned.contains(&(t.key.clone(), effect.to_string()))
        })
        .cloned()
        .collect()
}

/// The hub's `desired` taints less those a person already put there with
/// the same key and effect: that taint has the same effect, and applying
/// over it would make the hub co-own, and rewrite, what it did not add.
pub fn leave_others(desired: Vec<Taint>, all: &[Taint], own: &[Taint]) -> Vec<Taint> {
    let same = |a: &Taint, b: &Taint| a.key == b.key && a.effect == b.effect;
    desired
        .into_iter()
        .filter(|d| own.iter().any(|o| same(o, d)) || !all.iter().any(|t| same(t, d)))
        .collect()
}

/// For a cache that drops managed fields to save memory: keeps only the
/// entries of `manager` (the hub's taint manager), which say which taints
/// are the hub's; all others go.
pub fn keep_only_manager(entries: &mut Vec<ManagedFieldsEntry>, manager: &str) {
    entries.retain(|e| e.manager.as_deref() == Some(manager));
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_api::cluster::TaintEffect;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::FieldsV1;
    use serde_json::json;

    fn entry(manager: &str, operation: &str, taints: &[(&str, &str)]) -> ManagedFieldsEntry {
        let keys: serde_json::Map<String, serde_json::Value> = taints
            .iter()
            .map(|(key, effect)| (format!("k:{}", json!({"effect": effect, "key": key})), json!({".": {}})))
            .collect();
        ManagedFieldsEntry {
            manager: Some(manager.into()),
            operation: Some(operation.into()),
            fields_v1: Some(FieldsV1(json!({"f:spec": {"f:taints": keys}}))),
            ..Default::default()
        }
    }

    fn taint(key: &str, effect: TaintEffect) -> Taint {
        Taint { key: key.into(), value: None, effect, time_added: None }
    }

    const HUB: &str = "flotilla-hub-taints";
    const UNREACHABLE: &str = "cluster.flotilla.io/unreachable";

    #[test]
    fn only_the_taints_the_hub_applied_are_the_hubs() {
        let unreachable = taint(UNREACHABLE, TaintEffect::NoExecute);
        let by_hand_same_key = taint(UNREACHABLE, TaintEffect::NoSchedule);
        let maintenance = taint("ops/maintenance", TaintEffect::NoExecute);
        let all = vec![unreachable.clone(), by_hand_same_key.clone(), maintenance.clone()];
        let cases: Vec<(&str, Vec<ManagedFieldsEntry>, Vec<Taint>)> = vec![
            (
                "the hub's own",
                vec![entry(HUB, "Apply", &[(UNREACHABLE, "NoExecute")])],
                vec![unreachable.clone()],
            ),
            (
                "a hub key added by hand is the person's",
                vec![entry(
                    "kubectl-edit",
                    "Update",
                    &[(UNREACHABLE, "NoExecute"), (UNREACHABLE, "NoSchedule")],
                )],
                vec![],
            ),
            (
                "both applied it: the hub's too (removing its claim leaves the person's)",
                vec![
                    entry("kubectl", "Apply", &[(UNREACHABLE, "NoExecute")]),
                    entry(HUB, "Apply", &[(UNREACHABLE, "NoExecute")]),
                ],
                vec![unreachable.clone()],
            ),
            (
                "another manager's apply",
                vec![entry("ops", "Apply", &[("ops/maintenance", "NoExecute")])],
                vec![],
            ),
            (
                "the hub's manager name on an update is not its apply",
                vec![entry(HUB, "Update", &[(UNREACHABLE, "NoExecute")])],
                vec![],
            ),
            ("no managed fields", vec![], vec![]),
        ];
        for (name, entries, want) in cases {
            assert_eq!(owned_taints(&all, &entries, HUB), want, "{name}");
        }
    }

    #[test]
    fn the_hub_does_not_apply_over_a_persons_taint_of_the_same_key() {
        let unreachable = taint(UNREACHABLE, TaintEffect::NoExecute);
        let unreachable_no_schedule = taint(UNREACHABLE, TaintEffect::NoSchedule);
        type Case = (&'static str, Vec<Taint>, Vec<Taint>, Vec<Taint>);
        let cases: Vec<Case> = vec![
            ("nothing there: the hub adds it", vec![], vec![], vec![unreachable.clone()]),
            (
                "the hub's own already: it keeps applying it",
                vec![unreachable.clone()],
                vec![unreachable.clone()],
                vec![unreachable.clone()],
            ),
            (
                "a person's with the same key and effect: left alone",
                vec![unreachable.clone()],
                vec![],
                vec![],
            ),
            (
                "a person's with another effect: the hub's goes beside it",
                vec![unreachable_no_schedule.clone()],
                vec![],
                vec![unreachable.clone()],
            ),
        ];
        for (name, all, own, want) in cases {
            assert_eq!(leave_others(vec![unreachable.clone()], &all, &own), want, "{name}");
        }
    }

    #[test]
    fn a_cache_keeps_only_the_taint_managers_entries() {
        let mut entries = vec![
            entry("kubectl", "Apply", &[(UNREACHABLE, "NoExecute")]),
            entry(HUB, "Apply", &[(UNREACHABLE, "NoExecute")]),
            entry("flotilla-hub", "Apply", &[]),
        ];
        keep_only_manager(&mut entries, HUB);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].manager.as_deref(), Some(HUB));
    }

    #[test]
    fn entries_without_taints_or_with_odd_keys_own_nothing() {
        let odd = ManagedFieldsEntry {
            manager: Some(HUB.into()),
            operation: Some("Apply".into()),
            fields_v1: Some(FieldsV1(json!({"f:spec": {"f:taints": {"k:not json": {}, ".": {}}}}))),
            ..Default::default()
        };
        let none = ManagedFieldsEntry {
            manager: Some(HUB.into()),
            operation: Some("Apply".into()),
            ..Default::default()
        };
        assert!(owned_taint_keys(&[odd, none], HUB).is_empty());
    }
}
