use std::collections::{BTreeMap, BTreeSet};

use flotilla_api::policy::{
    ClusterAffinity, ClusterAffinityTerm, Placement, WorkloadAffinity, WorkloadAffinityTerm,
};
use flotilla_api::work::BindingAffinityGroups;

use super::*;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn term(key: &str) -> Option<WorkloadAffinityTerm> {
    Some(WorkloadAffinityTerm { group_by_label_key: key.into() })
}

fn groups(affinity: &str, anti: &str) -> BindingAffinityGroups {
    BindingAffinityGroups { affinity_group: affinity.into(), anti_affinity_group: anti.into() }
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn set(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn a_template_is_in_the_groups_its_labels_name() {
    let both = WorkloadAffinity { affinity: term("app.group"), anti_affinity: term("ha.group") };
    /// (case, rules, template labels, groups)
    type Case<'a> =
        (&'a str, Option<&'a WorkloadAffinity>, BTreeMap<String, String>, Option<BindingAffinityGroups>);
    let cases: Vec<Case> = vec![
        ("no rules", None, labels(&[("app.group", "a")]), None),
        (
            "both labels",
            Some(&both),
            labels(&[("app.group", "train"), ("ha.group", "flink")]),
            Some(groups("app.group=train", "ha.group=flink")),
        ),
        ("one label", Some(&both), labels(&[("ha.group", "flink")]), Some(groups("", "ha.group=flink"))),
        ("no label: no group", Some(&both), labels(&[("other", "x")]), None),
    ];
    for (name, rules, template_labels, want) in cases {
        assert_eq!(groups_of(rules, &template_labels), want, "{name}");
    }
}

#[test]
fn affinity_keeps_a_group_together_and_anti_affinity_apart() {
    let all = ["m1", "m2", "m3"];
    let flink = groups("", "ha=flink");
    let train = groups("app=train", "");
    let a_clusters = names(&["m1"]);
    let b_clusters = names(&["m2", "m3"]);
    let other_clusters = names(&["m2"]);
    let other = groups("app=serve", "ha=kafka");
    let cases: Vec<(&str, &BindingAffinityGroups, Vec<Peer>, BTreeSet<String>)> = vec![
        ("first of an anti-affinity group: anywhere", &flink, vec![], set(&[])),
        (
            "anti-affinity: not where a peer is",
            &flink,
            vec![
                Peer { groups: &flink, clusters: &a_clusters },
                Peer { groups: &other, clusters: &other_clusters },
            ],
            set(&["m1"]),
        ),
        (
            "first of an affinity group: anywhere",
            &train,
            vec![Peer { groups: &other, clusters: &a_clusters }],
            set(&[]),
        ),
        (
            "affinity: only where the peers are",
            &train,
            vec![Peer { groups: &train, clusters: &b_clusters }],
            set(&["m1"]),
        ),
        (
            "affinity: peers not placed yet count for nothing",
            &train,
            vec![Peer { groups: &train, clusters: &[] }],
            set(&[]),
        ),
    ];
    for (name, mine, peers, want) in cases {
        assert_eq!(excluded_clusters(mine, &peers, &all), want, "{name}");
    }
}

#[test]
fn the_exclusions_go_into_the_affinity_or_each_affinity_group() {
    let excluded = set(&["m1"]);
    let plain = constrained(&Placement::default(), &excluded);
    assert_eq!(plain.cluster_affinity.unwrap().exclude, names(&["m1"]));
    let named = Placement {
        cluster_affinity: Some(ClusterAffinity {
            cluster_names: names(&["m1", "m2"]),
            exclude: names(&["m1"]),
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_eq!(constrained(&named, &excluded).cluster_affinity.unwrap().exclude, names(&["m1"]), "not twice");
    let grouped = Placement {
        cluster_affinities: vec![
            ClusterAffinityTerm { affinity_name: "a".into(), affinity: ClusterAffinity::default() },
            ClusterAffinityTerm { affinity_name: "b".into(), affinity: ClusterAffinity::default() },
        ],
        ..Default::default()
    };
    let out = constrained(&grouped, &excluded);
    assert!(out.cluster_affinity.is_none(), "clusterAffinity stays unset beside clusterAffinities");
    assert!(out.cluster_affinities.iter().all(|t| t.affinity.exclude == names(&["m1"])));
    assert_eq!(constrained(&grouped, &BTreeSet::new()), grouped);
    assert_eq!(
        describe(&groups("app=train", "ha=flink"), &excluded),
        "workloadAffinity (affinity group app=train, anti-affinity group ha=flink) rules out m1"
    );
}
