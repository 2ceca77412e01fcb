//! Karmada's `dependentOverrides` of a propagation policy: the override
//! policies (OverridePolicies in the policy's namespace for a
//! PropagationPolicy, ClusterOverridePolicies for a
//! ClusterPropagationPolicy) that must exist before the policy propagates
//! anything, so no member ever runs a template without its overrides.
//!
//! While any is missing, the templates the policy selects wait (the binder
//! neither writes nor removes their Works) and the policy's
//! `DependentOverridesPresent` condition names the missing ones. As in
//! Karmada, existing is enough: a policy that selects other templates, or
//! none, still counts.

use std::collections::BTreeSet;

use flotilla_core::conditions::Wanted;

/// The policy's condition about its dependent overrides (present only when
/// it names some).
pub const CONDITION: &str = "DependentOverridesPresent";
/// The reason, on the condition and on a waiting template's binding, while
/// some are missing.
pub const REASON_WAITING: &str = "WaitingForDependentOverrides";

/// The names in `wanted` that are not in `present`, in `wanted`'s order,
/// without repeats.
pub fn missing(wanted: &[String], present: &BTreeSet<&str>) -> Vec<String> {
    let mut seen = BTreeSet::new();
    wanted
        .iter()
        .filter(|name| !present.contains(name.as_str()) && seen.insert(name.as_str()))
        .cloned()
        .collect()
}

/// What waits and for what: `kind` is the override policies' kind, `scope`
/// where they are looked for (e.g. `namespace demo`, or `the hub`).
pub fn waiting_message(missing: &[String], kind: &str, scope: &str) -> String {
    let plural = match (missing.len(), kind.strip_suffix('y')) {
        (1, _) => kind.to_string(),
        (_, Some(stem)) => format!("{stem}ies"),
        (_, None) => format!("{kind}s"),
    };
    format!(
        "waiting for {plural} {} in {scope}: the policy propagates nothing until every one in \
         dependentOverrides exists",
        missing.join(", ")
    )
}

/// The policy's `DependentOverridesPresent` condition; `None` when it names
/// no dependent overrides.
pub fn condition(wanted: &[String], missing: &[String], kind: &str, scope: &str) -> Option<Wanted> {
    if wanted.is_empty() {
        return None;
    }
    Some(if missing.is_empty() {
        Wanted::new(CONDITION, true, "Present", format!("every one in dependentOverrides exists ({kind})"))
    } else {
        Wanted::new(CONDITION, false, REASON_WAITING, waiting_message(missing, kind, scope))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_waits_until_every_named_override_exists() {
        struct Case {
            name: &'static str,
            wanted: Vec<&'static str>,
            present: Vec<&'static str>,
            missing: Vec<&'static str>,
            condition: Option<(&'static str, &'static str)>,
        }
        let cases = [
            Case { name: "none named", wanted: vec![], present: vec!["a"], missing: vec![], condition: None },
            Case {
                name: "all present",
                wanted: vec!["a", "b"],
                present: vec!["b", "a", "c"],
                missing: vec![],
                condition: Some(("True", "Present")),
            },
            Case {
                name: "one missing",
                wanted: vec!["a", "b"],
                present: vec!["a"],
                missing: vec!["b"],
                condition: Some(("False", REASON_WAITING)),
            },
            Case {
                name: "repeats named once",
                wanted: vec!["b", "a", "b"],
                present: vec![],
                missing: vec!["b", "a"],
                condition: Some(("False", REASON_WAITING)),
            },
        ];
        for case in cases {
            let wanted: Vec<String> = case.wanted.iter().map(|s| s.to_string()).collect();
            let present: BTreeSet<&str> = case.present.iter().copied().collect();
            let got = missing(&wanted, &present);
            assert_eq!(got, case.missing, "{}", case.name);
            let condition = condition(&wanted, &got, "OverridePolicy", "namespace demo");
            assert_eq!(
                condition.as_ref().map(|c| (c.status, c.reason.as_str())),
                case.condition,
                "{}",
                case.name
            );
        }
    }

    #[test]
    fn the_message_names_what_is_missing_and_where() {
        assert_eq!(
            waiting_message(&["eu-images".into()], "OverridePolicy", "namespace demo"),
            "waiting for OverridePolicy eu-images in namespace demo: the policy propagates nothing until \
             every one in dependentOverrides exists"
        );
        assert!(waiting_message(&["a".into(), "b".into()], "ClusterOverridePolicy", "the hub")
            .starts_with("waiting for ClusterOverridePolicies a, b in the hub"));
    }
}
