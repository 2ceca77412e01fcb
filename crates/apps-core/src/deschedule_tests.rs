use super::*;

const MINUTE: i64 = 60;

fn ts(second: i64) -> Timestamp {
    Timestamp::from_second(1_000_000 + second).unwrap()
}

fn snapshot(name: &str, allocated_cpu: u128) -> ClusterSnapshot {
    ClusterSnapshot {
        name: name.into(),
        allocatable: [("cpu".to_string(), 8000), ("pods".to_string(), 110)].into(),
        allocated: [("cpu".to_string(), allocated_cpu)].into(),
        schedulable: true,
        ..Default::default()
    }
}

fn stuck(replicas: i32, since: i64) -> UnschedulableReplicas {
    UnschedulableReplicas { replicas, since: Time(ts(since)) }
}

fn record(cluster: &str, keeps: i32, capacity_of: &ClusterSnapshot) -> DescheduledCluster {
    DescheduledCluster {
        cluster: cluster.into(),
        keeps,
        capacity: capacity_fingerprint(capacity_of),
        time: Time(ts(0)),
    }
}

/// caps, moves (cluster, replicas, keeps), requeue in seconds
type Want = (Vec<(&'static str, i32)>, Vec<(&'static str, i32, i32)>, Option<u64>);

struct Case {
    name: &'static str,
    /// (cluster, replicas, unschedulable)
    clusters: Vec<(&'static str, i32, Option<UnschedulableReplicas>)>,
    records: Vec<DescheduledCluster>,
    fleet: Vec<ClusterSnapshot>,
    now: i64,
    want: Want,
}

#[test]
fn replicas_unschedulable_past_the_threshold_leave_and_their_cluster_stays_capped() {
    let fleet = || vec![snapshot("m1", 1000), snapshot("m2", 0), snapshot("m3", 0)];
    let cases = vec![
        Case {
            name: "nothing stuck: nothing to do",
            clusters: vec![("m1", 3, None), ("m2", 3, None)],
            records: vec![],
            fleet: fleet(),
            now: 10 * MINUTE,
            want: (vec![], vec![], None),
        },
        Case {
            name: "stuck past the threshold: the stuck ones leave, the placed ones stay",
            clusters: vec![("m1", 3, Some(stuck(2, 0))), ("m2", 3, None)],
            records: vec![],
            fleet: fleet(),
            now: 5 * MINUTE,
            want: (vec![("m1", 1)], vec![("m1", 2, 1)], None),
        },
        Case {
            name: "merely slow: younger than the threshold, look again when it is reached",
            clusters: vec![("m1", 3, Some(stuck(2, 4 * MINUTE))), ("m2", 3, None)],
            records: vec![],
            fleet: fleet(),
            now: 5 * MINUTE,
            want: (vec![], vec![], Some(4 * 60)),
        },
        Case {
            name: "every replica stuck: the cluster keeps none",
            clusters: vec![("m1", 2, Some(stuck(2, 0)))],
            records: vec![],
            fleet: fleet(),
            now: 6 * MINUTE,
            want: (vec![("m1", 0)], vec![("m1", 2, 0)], None),
        },
        Case {
            name: "a cluster that gave replicas away is not refilled while its capacity is unchanged",
            clusters: vec![("m1", 1, None), ("m2", 5, None)],
            records: vec![record("m1", 1, &snapshot("m1", 1000))],
            fleet: fleet(),
            now: 60 * MINUTE,
            want: (vec![("m1", 1)], vec![], None),
        },
        Case {
            name: "emptied and gone from the binding: still capped",
            clusters: vec![("m2", 5, None)],
            records: vec![record("m1", 0, &snapshot("m1", 1000))],
            fleet: fleet(),
            now: 60 * MINUTE,
            want: (vec![("m1", 0)], vec![], None),
        },
        Case {
            name: "its capacity changed: the cap is lifted",
            clusters: vec![("m1", 1, None), ("m2", 5, None)],
            records: vec![record("m1", 1, &snapshot("m1", 3000))],
            fleet: fleet(),
            now: 60 * MINUTE,
            want: (vec![], vec![], None),
        },
        Case {
            name: "the cluster left the fleet: its record goes",
            clusters: vec![("m2", 5, None)],
            records: vec![record("m4", 0, &snapshot("m4", 0))],
            fleet: fleet(),
            now: 60 * MINUTE,
            want: (vec![], vec![], None),
        },
        Case {
            name: "capped and stuck again below the cap: a lower cap",
            clusters: vec![("m1", 2, Some(stuck(1, 0)))],
            records: vec![record("m1", 2, &snapshot("m1", 1000))],
            fleet: fleet(),
            now: 5 * MINUTE,
            want: (vec![("m1", 1)], vec![("m1", 1, 1)], None),
        },
        Case {
            name: "a report no lower than the cap moves nothing again",
            clusters: vec![("m1", 3, Some(stuck(2, 0)))],
            records: vec![record("m1", 1, &snapshot("m1", 1000))],
            fleet: fleet(),
            now: 5 * MINUTE,
            want: (vec![("m1", 1)], vec![], None),
        },
        Case {
            name: "several clusters: each on its own clock",
            clusters: vec![
                ("m1", 4, Some(stuck(1, 0))),
                ("m2", 4, Some(stuck(3, 3 * MINUTE))),
                ("m3", 4, Some(stuck(2, 4 * MINUTE))),
            ],
            records: vec![],
            fleet: fleet(),
            now: 5 * MINUTE,
            want: (vec![("m1", 3)], vec![("m1", 1, 3)], Some(3 * 60)),
        },
        Case {
            name: "a cluster the fleet does not know is left alone",
            clusters: vec![("m9", 3, Some(stuck(2, 0)))],
            records: vec![],
            fleet: fleet(),
            now: 10 * MINUTE,
            want: (vec![], vec![], None),
        },
        Case {
            name: "a cluster with no replicas in the binding has nothing to give",
            clusters: vec![("m1", 0, Some(stuck(2, 0)))],
            records: vec![],
            fleet: fleet(),
            now: 10 * MINUTE,
            want: (vec![], vec![], None),
        },
    ];
    for case in cases {
        let clusters: Vec<ClusterReplicas> = case
            .clusters
            .iter()
            .map(|(name, replicas, u)| ClusterReplicas {
                name,
                replicas: *replicas,
                unschedulable: u.as_ref(),
            })
            .collect();
        let got = decide(&DescheduleInput {
            clusters: &clusters,
            records: &case.records,
            fleet: &case.fleet,
            threshold: DEFAULT_UNSCHEDULABLE_THRESHOLD,
            now: ts(case.now),
        });
        let caps: Vec<(&str, i32)> = got.caps.iter().map(|(c, n)| (c.as_str(), *n)).collect();
        let moves: Vec<(&str, i32, i32)> =
            got.moves.iter().map(|m| (m.cluster.as_str(), m.replicas, m.keeps)).collect();
        let requeue = got.requeue_after.map(|d| d.as_secs());
        assert_eq!((caps, moves, requeue), case.want, "{}", case.name);
        // The records say what the caps say, and survive a restart as data.
        let from_records: BTreeMap<String, i32> =
            got.records.iter().map(|r| (r.cluster.clone(), r.keeps)).collect();
        assert_eq!(from_records, got.caps, "{}", case.name);
    }
}

#[test]
fn a_move_is_recorded_with_the_capacity_it_was_made_under() {
    let fleet = vec![snapshot("m1", 1000)];
    let stuck = stuck(2, 0);
    let clusters = [ClusterReplicas { name: "m1", replicas: 3, unschedulable: Some(&stuck) }];
    let input = DescheduleInput {
        clusters: &clusters,
        records: &[],
        fleet: &fleet,
        threshold: Duration::from_secs(5),
        now: ts(7),
    };
    let got = decide(&input);
    assert_eq!(got.records.len(), 1);
    assert_eq!(got.records[0].capacity, capacity_fingerprint(&fleet[0]));
    assert_eq!(got.records[0].time, Time(ts(7)));
    assert_eq!(got.moves[0].message(), "Descheduled 2 replicas from m1: unschedulable for 7s (it keeps 1)");
    // Run again with what it wrote: the same caps, no second move.
    let again = decide(&DescheduleInput { records: &got.records, ..input });
    assert_eq!((again.caps, again.moves.len()), (got.caps, 0));
}

#[test]
fn fingerprints_change_with_any_reported_amount_and_durations_read_well() {
    let base = snapshot("m1", 1000);
    let mut more_allocatable = base.clone();
    more_allocatable.allocatable.insert("cpu".into(), 9000);
    let mut new_resource = base.clone();
    new_resource.allocatable.insert("memory".into(), 1);
    let other_name = ClusterSnapshot { name: "m2".into(), ..base.clone() };
    assert_eq!(capacity_fingerprint(&base), capacity_fingerprint(&other_name));
    for changed in [&snapshot("m1", 1500), &more_allocatable, &new_resource] {
        assert_ne!(capacity_fingerprint(&base), capacity_fingerprint(changed));
    }
    let cases = [(0, "0s"), (45, "45s"), (300, "5m"), (330, "5m30s"), (5400, "1h30m")];
    for (secs, want) in cases {
        assert_eq!(human(Duration::from_secs(secs)), want);
    }
    let one =
        Move { cluster: "m1".into(), replicas: 1, keeps: 0, unschedulable_for: Duration::from_secs(300) };
    assert_eq!(one.message(), "Descheduled 1 replica from m1: unschedulable for 5m (it keeps 0)");
}
