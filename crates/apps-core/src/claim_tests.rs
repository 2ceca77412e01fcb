//! Tables for `claim`: preemption, lazy activation, revisions, priorities.

use super::*;
use crate::selection::PolicyOrder;
use flotilla_api::claim::PriorityClassSource;
use flotilla_api::policy::{PropagationSpec, ResourceSelector};

fn by_kind() -> ResourceSelector {
    ResourceSelector { api_version: "apps/v1".into(), kind: "Deployment".into(), ..Default::default() }
}

fn by_name(name: &str) -> ResourceSelector {
    ResourceSelector { name: name.into(), ..by_kind() }
}

fn spec(selector: ResourceSelector, priority: i32, preemption: Option<Preemption>) -> PropagationSpec {
    PropagationSpec {
        resource_selectors: vec![selector],
        priority: Some(priority),
        preemption,
        ..Default::default()
    }
}

#[test]
fn a_claim_holds_unless_a_preempting_policy_outranks_it() {
    let labels = BTreeMap::new();
    let t = TemplateMeta {
        api_version: "apps/v1",
        kind: "Deployment",
        namespace: "shop",
        name: "web",
        labels: &labels,
    };
    let always = Some(Preemption::Always);
    let never = Some(Preemption::Never);
    let specs = [
        ("pp-low", PolicyScope::Namespaced, spec(by_kind(), 1, None)),
        ("pp-high", PolicyScope::Namespaced, spec(by_kind(), 5, None)),
        ("pp-high-always", PolicyScope::Namespaced, spec(by_kind(), 5, always)),
        ("pp-low-always", PolicyScope::Namespaced, spec(by_name("web"), 0, always)),
        ("pp-same-always", PolicyScope::Namespaced, spec(by_name("web"), 1, always)),
        ("cpp-low", PolicyScope::Cluster, spec(by_kind(), 1, never)),
        ("cpp-high-always", PolicyScope::Cluster, spec(by_kind(), 9, always)),
        ("cpp-top-always", PolicyScope::Cluster, spec(by_kind(), 10, always)),
        ("pp-other", PolicyScope::Namespaced, spec(by_name("api"), 100, always)),
    ];
    let all: Vec<PolicyCandidate> = specs
        .iter()
        .map(|(name, scope, spec)| PolicyCandidate {
            scope: *scope,
            namespace: if *scope == PolicyScope::Namespaced { "shop" } else { "" },
            name,
            spec,
        })
        .collect();
    let only = |names: &[&str]| -> Vec<PolicyCandidate> {
        all.iter().filter(|c| names.contains(&c.name)).copied().collect()
    };
    let claim = |name: &'static str| {
        let c = all.iter().find(|c| c.name == name).unwrap();
        Claimed { scope: c.scope, namespace: c.namespace, name: c.name }
    };
    struct Case {
        name: &'static str,
        policies: &'static [&'static str],
        claimed: Option<&'static str>,
        want: Option<(&'static str, How)>,
    }
    let cases = [
        Case {
            name: "unclaimed: a PropagationPolicy before any cluster policy",
            policies: &["cpp-top-always", "pp-low"],
            claimed: None,
            want: Some(("pp-low", How::Matched)),
        },
        Case {
            name: "unclaimed: priority within a kind",
            policies: &["pp-low", "pp-high"],
            claimed: None,
            want: Some(("pp-high", How::Matched)),
        },
        Case {
            name: "Never: a higher priority arriving later does not take it",
            policies: &["pp-low", "pp-high"],
            claimed: Some("pp-low"),
            want: Some(("pp-low", How::Kept)),
        },
        Case {
            name: "Never: nor does a PropagationPolicy from a cluster policy",
            policies: &["cpp-low", "pp-high"],
            claimed: Some("cpp-low"),
            want: Some(("cpp-low", How::Kept)),
        },
        Case {
            name: "Always: higher priority takes it",
            policies: &["pp-low", "pp-high-always"],
            claimed: Some("pp-low"),
            want: Some(("pp-high-always", How::Preempted)),
        },
        Case {
            name: "Always: equal priority does not (specificity never preempts)",
            policies: &["pp-low", "pp-same-always"],
            claimed: Some("pp-low"),
            want: Some(("pp-low", How::Kept)),
        },
        Case {
            name: "Always: lower priority does not",
            policies: &["pp-high", "pp-low-always"],
            claimed: Some("pp-high"),
            want: Some(("pp-high", How::Kept)),
        },
        Case {
            name: "Always: a PropagationPolicy takes from a cluster policy whatever the priority",
            policies: &["cpp-top-always", "pp-low-always"],
            claimed: Some("cpp-top-always"),
            want: Some(("pp-low-always", How::Preempted)),
        },
        Case {
            name: "Always: a cluster policy never takes from a PropagationPolicy",
            policies: &["pp-low", "cpp-top-always"],
            claimed: Some("pp-low"),
            want: Some(("pp-low", How::Kept)),
        },
        Case {
            name: "Always: cluster policies by priority",
            policies: &["cpp-low", "cpp-high-always"],
            claimed: Some("cpp-low"),
            want: Some(("cpp-high-always", How::Preempted)),
        },
        Case {
            name: "several preempt: the best of them",
            policies: &["cpp-low", "cpp-high-always", "cpp-top-always", "pp-low-always"],
            claimed: Some("cpp-low"),
            want: Some(("pp-low-always", How::Preempted)),
        },
        Case {
            name: "the claim lapses (policy gone): matched afresh",
            policies: &["pp-low", "pp-high"],
            claimed: Some("cpp-low"),
            want: Some(("pp-high", How::Matched)),
        },
        Case {
            name: "the claim lapses (no longer selects): matched afresh",
            policies: &["pp-other", "pp-low"],
            claimed: Some("pp-other"),
            want: Some(("pp-low", How::Matched)),
        },
        Case { name: "nothing matches", policies: &["pp-other"], claimed: None, want: None },
    ];
    for case in cases {
        let candidates = only(case.policies);
        let got = choose(PolicyOrder::Karmada, &t, &candidates, case.claimed.map(claim))
            .map(|c| (c.policy.name, c.how));
        assert_eq!(got, case.want, "{}", case.name);
    }
    // Flotilla's order before Karmada parity (opt-in): priority across
    // kinds, for matching and for preemption alike.
    let priority_first = |policies: &[&str], claimed: Option<&'static str>| {
        let candidates = only(policies);
        choose(PolicyOrder::PriorityFirst, &t, &candidates, claimed.map(claim))
            .map(|c| (c.policy.name, c.how))
    };
    assert_eq!(priority_first(&["cpp-top-always", "pp-low"], None), Some(("cpp-top-always", How::Matched)));
    assert_eq!(
        priority_first(&["cpp-top-always", "pp-low-always"], Some("cpp-top-always")),
        Some(("cpp-top-always", How::Kept))
    );
    assert_eq!(
        priority_first(&["pp-low", "cpp-top-always"], Some("pp-low")),
        Some(("cpp-top-always", How::Preempted))
    );
    assert_eq!(priority_first(&["pp-low", "cpp-low"], Some("cpp-low")), Some(("cpp-low", How::Kept)));
}

#[test]
fn lazy_policies_reach_a_template_only_when_it_changes() {
    let lazy = Some(ActivationPreference::Lazy);
    let active = |r: &str| Some(Record::Active(r.into()));
    let waiting = |r: &str| Some(Record::Waiting(r.into()));
    struct Case {
        name: &'static str,
        preference: Option<ActivationPreference>,
        record: Option<Record>,
        bound: bool,
        older: bool,
        want: (Activation, Option<Record>),
    }
    let cases = [
        Case {
            name: "immediate: always refreshed, no record",
            preference: None,
            record: active("r1"),
            bound: true,
            older: true,
            want: (Activation::Refresh, None),
        },
        Case {
            name: "lazy, template unchanged: kept",
            preference: lazy,
            record: active("r1"),
            bound: true,
            older: true,
            want: (Activation::Keep, active("r1")),
        },
        Case {
            name: "lazy, template changed: refreshed",
            preference: lazy,
            record: active("r0"),
            bound: true,
            older: true,
            want: (Activation::Refresh, active("r1")),
        },
        Case {
            name: "lazy, binding from before the record: kept, recorded now",
            preference: lazy,
            record: None,
            bound: true,
            older: true,
            want: (Activation::Keep, active("r1")),
        },
        Case {
            name: "lazy, new template: bound at once",
            preference: lazy,
            record: None,
            bound: false,
            older: false,
            want: (Activation::Refresh, active("r1")),
        },
        Case {
            name: "lazy, template older than the policy: waits",
            preference: lazy,
            record: None,
            bound: false,
            older: true,
            want: (Activation::Wait, waiting("r1")),
        },
        Case {
            name: "lazy, still waiting",
            preference: lazy,
            record: waiting("r1"),
            bound: true,
            older: true,
            want: (Activation::Wait, waiting("r1")),
        },
        Case {
            name: "lazy, waited and changed: bound",
            preference: lazy,
            record: waiting("r0"),
            bound: true,
            older: true,
            want: (Activation::Refresh, active("r1")),
        },
        Case {
            name: "lazy, record but binding gone: refreshed",
            preference: lazy,
            record: active("r1"),
            bound: false,
            older: true,
            want: (Activation::Refresh, active("r1")),
        },
    ];
    for case in cases {
        let got = activation(case.preference, case.record.as_ref(), case.bound, "r1", case.older);
        assert_eq!(got, case.want, "{}", case.name);
    }
    for record in [Record::Active("abc".into()), Record::Waiting("abc".into())] {
        assert_eq!(Record::parse(Some(&record.value())), Some(record));
    }
    assert_eq!(Record::parse(None), None);
    assert_eq!(Record::parse(Some("")), None);
}

#[test]
fn a_template_revision_moves_with_the_user_s_changes_only() {
    let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    };
    let base = template_revision(Some(2), Some("100"), &map(&[("app", "web")]), &map(&[]));
    struct Case {
        name: &'static str,
        generation: Option<i64>,
        resource_version: &'static str,
        labels: BTreeMap<String, String>,
        annotations: BTreeMap<String, String>,
        same: bool,
    }
    let cases = [
        Case {
            name: "status write (resourceVersion only)",
            generation: Some(2),
            resource_version: "101",
            labels: map(&[("app", "web")]),
            annotations: map(&[]),
            same: true,
        },
        Case {
            name: "Flotilla's own annotation",
            generation: Some(2),
            resource_version: "102",
            labels: map(&[("app", "web")]),
            annotations: map(&[("rollout.flotilla.io/promote", "x")]),
            same: true,
        },
        Case {
            name: "Flotilla's own label",
            generation: Some(2),
            resource_version: "102",
            labels: map(&[("app", "web"), ("flotilla.io/x", "1")]),
            annotations: map(&[]),
            same: true,
        },
        Case {
            name: "spec change",
            generation: Some(3),
            resource_version: "103",
            labels: map(&[("app", "web")]),
            annotations: map(&[]),
            same: false,
        },
        Case {
            name: "a label (Karmada's refresh-time)",
            generation: Some(2),
            resource_version: "104",
            labels: map(&[("app", "web"), ("refresh-time", "1")]),
            annotations: map(&[]),
            same: false,
        },
        Case {
            name: "an annotation",
            generation: Some(2),
            resource_version: "105",
            labels: map(&[("app", "web")]),
            annotations: map(&[("note", "x")]),
            same: false,
        },
    ];
    for case in cases {
        let got =
            template_revision(case.generation, Some(case.resource_version), &case.labels, &case.annotations);
        assert_eq!(got == base, case.same, "{}", case.name);
    }
    // No generation (a ConfigMap, a ClusterRole): every write counts.
    let none = BTreeMap::new();
    assert_ne!(
        template_revision(None, Some("1"), &none, &none),
        template_revision(None, Some("2"), &none, &none)
    );
}

#[test]
fn schedule_priority_comes_from_the_priority_class_or_is_reported_missing() {
    let classes: BTreeMap<String, i32> = [("critical".to_string(), 1000)].into();
    let wanted = |name: &str| SchedulePriority {
        priority_class_source: PriorityClassSource::KubePriorityClass,
        priority_class_name: name.into(),
    };
    assert_eq!(schedule_priority(None, &classes), (0, None));
    let (value, condition) = schedule_priority(Some(&wanted("critical")), &classes);
    assert_eq!(value, 1000);
    assert_eq!(condition.map(|c| (c.status, c.reason)), Some(("True", "Resolved".to_string())));
    let (value, condition) = schedule_priority(Some(&wanted("gone")), &classes);
    assert_eq!(value, 0);
    let condition = condition.unwrap();
    assert_eq!((condition.status, condition.reason.as_str()), ("False", "PriorityClassNotFound"));
    assert!(condition.message.contains("PriorityClass gone does not exist"), "{}", condition.message);
}

#[test]
fn refused_bindings_are_named_on_the_policy() {
    let all_written = bindings_written(Vec::new());
    assert_eq!((all_written.status, all_written.reason.as_str()), ("True", "Written"));
    let refusal = |t: &str| (format!("ClusterRole {t}"), "metadata.name: Invalid value".to_string());
    let one = bindings_written(vec![refusal("system:a")]);
    assert_eq!((one.status, one.reason.as_str()), ("False", "BindingRefused"));
    assert!(
        one.message.contains("1 template(s): ClusterRole system:a: metadata.name: Invalid value"),
        "{}",
        one.message
    );
    let many = bindings_written(["e", "d", "c", "b", "a"].iter().map(|t| refusal(t)).collect());
    assert!(many.message.contains("5 template(s): ClusterRole a:"), "{}", many.message);
    assert!(many.message.ends_with("; and 2 more"), "{}", many.message);
    assert!(!many.message.contains("ClusterRole d"), "{}", many.message);
}
