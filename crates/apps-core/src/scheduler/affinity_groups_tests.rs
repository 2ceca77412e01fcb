use std::collections::BTreeMap;

use flotilla_api::cluster::{Taint, TaintEffect};
use flotilla_api::policy::{
    ClusterAffinity, ClusterAffinityTerm, Placement, ReplicaDivisionPreference, ReplicaSchedulingStrategy,
    ReplicaSchedulingType,
};
use flotilla_api::work::TargetCluster;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::jiff::Timestamp;

use super::*;

/// A cluster with room for `room` replicas of one cpu.
fn cluster(name: &str, room: u128) -> ClusterSnapshot {
    ClusterSnapshot {
        name: name.into(),
        schedulable: true,
        allocatable: [("cpu", room * 1000), ("memory", 100 << 30), ("pods", 100)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        ..Default::default()
    }
}

fn tainted(mut c: ClusterSnapshot) -> ClusterSnapshot {
    c.taints.push(Taint {
        key: "maintenance".into(),
        value: None,
        effect: TaintEffect::NoSchedule,
        time_added: None,
    });
    c
}

fn term(name: &str, clusters: &[&str]) -> ClusterAffinityTerm {
    ClusterAffinityTerm {
        affinity_name: name.into(),
        affinity: ClusterAffinity {
            cluster_names: clusters.iter().map(|c| c.to_string()).collect(),
            ..Default::default()
        },
    }
}

/// Karmada's documented disaster-recovery groups, divided Aggregated.
fn primary_backup(replica_scheduling: Option<ReplicaSchedulingStrategy>) -> Placement {
    Placement {
        cluster_affinities: vec![
            term("primary-clusters", &["member1"]),
            term("backup-clusters", &["member1", "member2"]),
        ],
        replica_scheduling,
        ..Default::default()
    }
}

fn aggregated() -> Option<ReplicaSchedulingStrategy> {
    Some(ReplicaSchedulingStrategy {
        replica_scheduling_type: Some(ReplicaSchedulingType::Divided),
        replica_division_preference: Some(ReplicaDivisionPreference::Aggregated),
        weight_preference: None,
    })
}

/// (group, placement) or Err(group kept, a piece of the message)
type Want = Result<(&'static str, Vec<(&'static str, i32)>), (Option<&'static str>, &'static str)>;

struct Case {
    name: &'static str,
    placement: Placement,
    replicas: i32,
    clusters: Vec<ClusterSnapshot>,
    previous: Vec<(&'static str, i32)>,
    observed: Option<&'static str>,
    from_first: bool,
    want: Want,
    want_passed_over: Vec<&'static str>,
}

fn run(case: &Case) -> GroupDecision {
    let requests: BTreeMap<String, Quantity> =
        [("cpu".to_string(), Quantity("1".into()))].into_iter().collect();
    let previous: Vec<TargetCluster> =
        case.previous.iter().map(|(n, r)| TargetCluster { name: n.to_string(), replicas: *r }).collect();
    let caps = BTreeMap::new();
    let req = SchedulingRequest {
        placement: &case.placement,
        replicas: case.replicas,
        requests: &requests,
        node_constraints: &crate::estimator::UNCONSTRAINED,
        resource: None,
        previous: &previous,
        caps: &caps,
        now: Timestamp::from_second(1_000).unwrap(),
    };
    schedule_groups(&req, &case.clusters, case.observed, case.from_first)
}

#[test]
fn groups_are_tried_in_order_from_the_group_in_use() {
    let cases = vec![
        Case {
            name: "the primary holds it",
            placement: primary_backup(aggregated()),
            replicas: 3,
            clusters: vec![cluster("member1", 4), cluster("member2", 10)],
            previous: vec![],
            observed: None,
            from_first: false,
            want: Ok(("primary-clusters", vec![("member1", 3)])),
            want_passed_over: vec![],
        },
        Case {
            name: "a full primary moves on to the backup",
            placement: primary_backup(aggregated()),
            replicas: 6,
            clusters: vec![cluster("member1", 4), cluster("member2", 10)],
            previous: vec![],
            observed: None,
            from_first: false,
            want: Ok(("backup-clusters", vec![("member2", 6)])),
            want_passed_over: vec!["primary-clusters"],
        },
        Case {
            name: "a primary with no feasible cluster (tainted) moves on, Duplicated too",
            placement: primary_backup(None),
            replicas: 2,
            clusters: vec![tainted(cluster("member1", 4)), cluster("member2", 10)],
            previous: vec![],
            observed: None,
            from_first: false,
            want: Ok(("backup-clusters", vec![("member2", 2)])),
            want_passed_over: vec!["primary-clusters"],
        },
        Case {
            name: "Duplicated ignores room, as in Karmada: the primary holds it",
            placement: primary_backup(None),
            replicas: 50,
            clusters: vec![cluster("member1", 4), cluster("member2", 10)],
            previous: vec![],
            observed: None,
            from_first: false,
            want: Ok(("primary-clusters", vec![("member1", 50)])),
            want_passed_over: vec![],
        },
        Case {
            name: "on the backup it stays there when the primary frees up (Karmada)",
            placement: primary_backup(aggregated()),
            replicas: 3,
            clusters: vec![cluster("member1", 10), cluster("member2", 10)],
            previous: vec![("member1", 1), ("member2", 2)],
            observed: Some("backup-clusters"),
            from_first: false,
            want: Ok(("backup-clusters", vec![("member1", 1), ("member2", 2)])),
            want_passed_over: vec![],
        },
        Case {
            name: "a rebalance starts again from the first group",
            placement: primary_backup(aggregated()),
            replicas: 3,
            clusters: vec![cluster("member1", 10), cluster("member2", 10)],
            previous: vec![],
            observed: Some("backup-clusters"),
            from_first: true,
            want: Ok(("primary-clusters", vec![("member1", 3)])),
            want_passed_over: vec![],
        },
        Case {
            name: "a group no longer listed: from the first",
            placement: primary_backup(aggregated()),
            replicas: 3,
            clusters: vec![cluster("member1", 10), cluster("member2", 10)],
            previous: vec![],
            observed: Some("overflow"),
            from_first: false,
            want: Ok(("primary-clusters", vec![("member1", 3)])),
            want_passed_over: vec![],
        },
        Case {
            name: "no group holds it: the group in use is kept, each group says why",
            placement: primary_backup(aggregated()),
            replicas: 30,
            clusters: vec![cluster("member1", 4), cluster("member2", 10)],
            previous: vec![("member1", 3)],
            observed: Some("primary-clusters"),
            from_first: false,
            want: Err((Some("primary-clusters"), "group backup-clusters: not enough capacity")),
            want_passed_over: vec!["primary-clusters", "backup-clusters"],
        },
        Case {
            name: "no group holds a new binding: no group",
            placement: primary_backup(aggregated()),
            replicas: 30,
            clusters: vec![cluster("member1", 4), cluster("member2", 10)],
            previous: vec![],
            observed: None,
            from_first: false,
            want: Err((None, "no clusterAffinities group can hold the workload: group primary-clusters:")),
            want_passed_over: vec!["primary-clusters", "backup-clusters"],
        },
        Case {
            name: "without clusterAffinities: the plain scheduler, no group",
            placement: Placement { replica_scheduling: aggregated(), ..Default::default() },
            replicas: 6,
            clusters: vec![cluster("member1", 4), cluster("member2", 10)],
            previous: vec![],
            observed: Some("primary-clusters"),
            from_first: false,
            want: Ok(("", vec![("member2", 6)])),
            want_passed_over: vec![],
        },
    ];
    for case in &cases {
        let decision = run(case);
        let passed: Vec<&str> = decision.passed_over.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(passed, case.want_passed_over, "{}", case.name);
        match (&case.want, &decision.result) {
            (Ok((group, placed)), Ok(s)) => {
                let got: Vec<(&str, i32)> =
                    s.clusters.iter().map(|t| (t.name.as_str(), t.replicas)).collect();
                assert_eq!(&got, placed, "{}", case.name);
                let want_group = (!group.is_empty()).then_some(*group);
                assert_eq!(decision.affinity_name.as_deref(), want_group, "{}", case.name);
            }
            (Err((kept, piece)), Err(u)) => {
                assert_eq!(decision.affinity_name.as_deref(), *kept, "{}", case.name);
                assert!(u.message.contains(piece), "{}: {}", case.name, u.message);
            }
            (want, got) => panic!("{}: want {want:?}, got {got:?}", case.name),
        }
    }
}

#[test]
fn the_group_change_is_announced_once() {
    let placement = primary_backup(aggregated());
    let case = |observed| Case {
        name: "",
        placement: placement.clone(),
        replicas: 6,
        clusters: vec![cluster("member1", 4), cluster("member2", 10)],
        previous: vec![],
        observed,
        from_first: false,
        want: Err((None, "")),
        want_passed_over: vec![],
    };
    let moved = run(&case(Some("primary-clusters")));
    let notice = group_change_notice(Some("primary-clusters"), &moved).expect("a move is announced");
    assert_eq!(notice.reason, "ClusterAffinityGroupChanged");
    assert!(notice
        .message
        .contains("moved from clusterAffinities group primary-clusters to backup-clusters"));
    assert!(notice.message.contains("not enough capacity"), "{}", notice.message);
    let terms = &placement.cluster_affinities;
    let moved_note = describe_group(&moved, terms);
    assert!(moved_note.contains("group primary-clusters passed over"), "{moved_note}");
    assert!(!moved_note.contains("kept"), "{moved_note}");
    // The next pass starts from the backup: no Event, and the condition
    // says why the binding is not on the primary.
    let stayed = run(&case(Some("backup-clusters")));
    assert_eq!(stayed.affinity_name.as_deref(), Some("backup-clusters"));
    assert_eq!(group_change_notice(Some("backup-clusters"), &stayed), None);
    assert_eq!(
        describe_group(&stayed, terms),
        " (clusterAffinities group backup-clusters; kept, as in Karmada, until a WorkloadRebalancer \
         starts again from group primary-clusters)"
    );
    // On the first group there is nothing to explain.
    let first = run(&Case { replicas: 2, ..case(None) });
    assert_eq!(first.affinity_name.as_deref(), Some("primary-clusters"));
    assert_eq!(describe_group(&first, terms), " (clusterAffinities group primary-clusters)");
}

#[test]
fn start_index_follows_karmada() {
    let terms = vec![term("a", &[]), term("b", &[]), term("c", &[])];
    let cases: &[(Option<&str>, usize)] = &[(None, 0), (Some("a"), 0), (Some("c"), 2), (Some("gone"), 0)];
    for (observed, want) in cases {
        assert_eq!(start_index(&terms, *observed), *want, "{observed:?}");
    }
}
