//! Table tests of the view models.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use flotilla_api::cluster::{
    ManagedCluster, ManagedClusterSpec, ManagedClusterStatus, NodeSummary, ResourceSummary, SyncMode, Taint,
    TaintEffect,
};
use flotilla_api::work::{
    AggregatedStatusItem, BindingSpec, BindingStatus, Health, HealthDetail, ObjectReference, TargetCluster,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use super::age::{age, short_duration, time_left};
use super::cluster::placement;
use super::fleet::{bar, fleet_row, human_bytes};
use super::selector::Selector;

fn at(second: i64) -> Timestamp {
    Timestamp::from_second(second).unwrap()
}

#[test]
fn durations_are_written_with_their_largest_unit() {
    let cases = [
        (-5, "0s"),
        (0, "0s"),
        (59, "59s"),
        (60, "1m"),
        (3599, "59m"),
        (3600, "1h"),
        (86_399, "23h"),
        (86_400, "1d"),
        (10 * 86_400 + 5, "10d"),
    ];
    for (seconds, want) in cases {
        assert_eq!(short_duration(seconds), want, "{seconds}s");
    }
    assert_eq!(age(at(1_000), at(1_000 + 7200)), "2h");
    assert_eq!(age(at(2_000), at(1_000)), "0s", "a creation time in the future (skew) is 0s");
    assert_eq!(time_left(at(1_000), at(1_000)), "expired");
    assert_eq!(time_left(at(1_000 + 40 * 86_400), at(1_000)), "40d");
}

#[test]
fn bars_show_usage_of_capacity() {
    struct Case {
        name: &'static str,
        resource: &'static str,
        allocated: Option<&'static str>,
        allocatable: Option<&'static str>,
        want: Option<(u8, &'static str)>,
    }
    let cases = [
        Case {
            name: "half the cpu",
            resource: "cpu",
            allocated: Some("2"),
            allocatable: Some("4"),
            want: Some((50, "2 / 4")),
        },
        Case {
            name: "millicores",
            resource: "cpu",
            allocated: Some("250m"),
            allocatable: Some("1"),
            want: Some((25, "250m / 1")),
        },
        Case {
            name: "memory in binary units",
            resource: "memory",
            allocated: Some("1536Mi"),
            allocatable: Some("8Gi"),
            want: Some((18, "1.5Gi / 8Gi")),
        },
        Case {
            name: "nothing allocated",
            resource: "pods",
            allocated: None,
            allocatable: Some("110"),
            want: Some((0, "0 / 110")),
        },
        Case {
            name: "overcommit draws a full bar",
            resource: "cpu",
            allocated: Some("6"),
            allocatable: Some("4"),
            want: Some((100, "6 / 4")),
        },
        Case {
            name: "zero capacity",
            resource: "pods",
            allocated: Some("0"),
            allocatable: Some("0"),
            want: Some((0, "0 / 0")),
        },
        Case {
            name: "no capacity reported: no bar",
            resource: "cpu",
            allocated: Some("1"),
            allocatable: None,
            want: None,
        },
        Case {
            name: "unparsable capacity: no bar",
            resource: "cpu",
            allocated: None,
            allocatable: Some("lots"),
            want: None,
        },
    ];
    for c in cases {
        let got = bar(
            c.resource,
            c.allocated.map(|q| Quantity(q.into())).as_ref(),
            c.allocatable.map(|q| Quantity(q.into())).as_ref(),
        );
        assert_eq!(got.map(|b| (b.percent, b.text)), c.want.map(|(p, t)| (p, t.to_string())), "{}", c.name);
    }
}

#[test]
fn bytes_are_written_for_people() {
    let cases = [
        (0u128, "0"),
        (1023, "1023"),
        (1024, "1Ki"),
        (1536 << 20, "1.5Gi"),
        (8 << 30, "8Gi"),
        ((7 << 30) + (900 << 20), "7.8Gi"),
        (3 << 40, "3Ti"),
    ];
    for (bytes, want) in cases {
        assert_eq!(human_bytes(bytes), want, "{bytes}");
    }
}

fn condition(type_: &str, status: &str, reason: &str, message: &str) -> Condition {
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: Time(at(1_000)),
        observed_generation: None,
    }
}

fn cluster(name: &str, accepted: bool, available: Option<Condition>) -> ManagedCluster {
    let mut mc =
        ManagedCluster::new(name, ManagedClusterSpec { hub_accepts_client: accepted, ..Default::default() });
    mc.metadata.creation_timestamp = Some(Time(at(0)));
    mc.status =
        Some(ManagedClusterStatus { conditions: available.into_iter().collect(), ..Default::default() });
    mc
}

#[test]
fn a_cluster_becomes_a_fleet_row() {
    struct Case {
        name: &'static str,
        cluster: ManagedCluster,
        want_health: &'static str,
        want_reason: &'static str,
    }
    let cases = [
        Case {
            name: "available",
            cluster: cluster("a", true, Some(condition("Available", "True", "MemberHealthy", ""))),
            want_health: "Healthy",
            want_reason: "MemberHealthy",
        },
        Case {
            name: "unhealthy with the message",
            cluster: cluster("b", true, Some(condition("Available", "False", "ReadyzFailed", "etcd down"))),
            want_health: "Unhealthy",
            want_reason: "ReadyzFailed: etcd down",
        },
        Case {
            name: "silent",
            cluster: cluster(
                "c",
                true,
                Some(condition("Available", "Unknown", "LeaseExpired", "no heartbeat for 40s")),
            ),
            want_health: "Unknown",
            want_reason: "LeaseExpired: no heartbeat for 40s",
        },
        Case {
            name: "never heard from",
            cluster: cluster("d", true, None),
            want_health: "Unknown",
            want_reason: "",
        },
        Case {
            name: "not accepted yet",
            cluster: cluster("e", false, None),
            want_health: "Pending",
            want_reason: "",
        },
    ];
    for c in cases {
        let row = fleet_row(&c.cluster, at(90_000));
        assert_eq!(
            (row.health.as_str(), row.health_reason.as_str()),
            (c.want_health, c.want_reason),
            "{}",
            c.name
        );
        assert_eq!(row.age, "1d", "{}", c.name);
    }

    let mut full = cluster("m1", true, Some(condition("Available", "True", "MemberHealthy", "")));
    full.spec.sync_mode = SyncMode::Push;
    full.spec.taints = vec![
        Taint {
            key: "cluster.flotilla.io/unreachable".into(),
            value: None,
            effect: TaintEffect::NoExecute,
            time_added: None,
        },
        Taint {
            key: "flotilla.io/cordoned".into(),
            value: Some("ops".into()),
            effect: TaintEffect::NoSchedule,
            time_added: None,
        },
    ];
    full.metadata.labels = Some(BTreeMap::from([("region".to_string(), "eu".to_string())]));
    let status = full.status.as_mut().unwrap();
    status.kubernetes_version = Some("v1.37.2".into());
    status.node_summary = Some(NodeSummary { total: 3, ready: 2, display: "2/3".into() });
    status.resource_summary = Some(ResourceSummary {
        allocatable: BTreeMap::from([
            ("cpu".into(), Quantity("8".into())),
            ("memory".into(), Quantity("16Gi".into())),
            ("pods".into(), Quantity("330".into())),
        ]),
        allocated: BTreeMap::from([
            ("cpu".into(), Quantity("2".into())),
            ("memory".into(), Quantity("4Gi".into())),
        ]),
    });
    let row = fleet_row(&full, at(30));
    assert_eq!(
        (row.mode.as_str(), row.version.as_str(), row.nodes.as_str(), row.age.as_str()),
        ("Push", "v1.37.2", "2/3", "30s")
    );
    assert_eq!(
        row.taints,
        ["cluster.flotilla.io/unreachable:NoExecute", "flotilla.io/cordoned=ops:NoSchedule"]
    );
    let bars: Vec<(&str, u8)> = row.bars.iter().map(|b| (b.resource.as_str(), b.percent)).collect();
    assert_eq!(bars, [("cpu", 25), ("memory", 25), ("pods", 0)], "bars in cpu, memory, pods order");
    assert_eq!(row.labels.get("region").map(String::as_str), Some("eu"));
}

#[test]
fn selectors_parse_and_match_as_kubectl_does() {
    let labels =
        BTreeMap::from([("region".to_string(), "eu".to_string()), ("tier".to_string(), "gold".to_string())]);
    let cases = [
        ("", true),
        ("region=eu", true),
        ("region==eu", true),
        ("region=us", false),
        ("region!=us", true),
        ("region!=eu", false),
        ("tier", true),
        ("!tier", false),
        ("!zone", true),
        ("region in (us, eu)", true),
        ("region in (us)", false),
        ("region notin (us)", true),
        ("zone notin (us)", true),
        ("region=eu,tier=gold", true),
        ("region=eu, tier=silver", false),
        ("region in (us,eu),tier", true),
    ];
    for (text, want) in cases {
        assert_eq!(Selector::parse(text).unwrap().matches(&labels), want, "{text:?}");
    }
    for bad in ["region in us", "=eu", "a b=c"] {
        assert!(Selector::parse(bad).is_err(), "{bad:?} is refused");
    }
}

#[test]
fn a_binding_seen_from_one_cluster() {
    let spec = BindingSpec {
        resource: ObjectReference {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            namespace: "shop".into(),
            name: "web".into(),
            ..Default::default()
        },
        replicas: 5,
        clusters: vec![
            TargetCluster { name: "m1".into(), replicas: 3 },
            TargetCluster { name: "m2".into(), replicas: 2 },
        ],
        ..Default::default()
    };
    let status = BindingStatus {
        aggregated_status: vec![AggregatedStatusItem {
            cluster_name: "m2".into(),
            applied: true,
            health: Health::Unhealthy,
            health_detail: Some(HealthDetail {
                reason: "ImagePullBackOff".into(),
                message: "no such image".into(),
                restart_count: None,
            }),
            ..Default::default()
        }],
        ..Default::default()
    };
    let cases = [
        ("m1", Some((3, "Unknown", ""))),
        ("m2", Some((2, "Unhealthy", "ImagePullBackOff: no such image"))),
        ("m3", None),
    ];
    for (cluster, want) in cases {
        let got = placement("shop/web-deployment", &spec, Some(&status), cluster);
        assert_eq!(
            got.as_ref().map(|p| (p.replicas, p.health.as_str(), p.reason.as_str())),
            want,
            "{cluster}"
        );
        if let Some(p) = got {
            assert_eq!(p.template, "Deployment/shop/web");
        }
    }
}

#[test]
fn etcd_members_show_the_leader_and_database_size_and_backups_newest_first() {
    use flotilla_api::kok::{EtcdBackup, EtcdCluster};
    use std::sync::Arc;
    let etcd: EtcdCluster = serde_json::from_value(serde_json::json!({
        "apiVersion": "kok.flotilla.io/v1alpha1", "kind": "EtcdCluster",
        "metadata": {"name": "e1", "namespace": "ns"},
        "spec": {"members": 3, "version": "3.7.4", "runtime": "Process",
            "backup": {"schedule": "0 * * * *", "destination": {"machine": "mach-1", "path": "/backups"}, "retention": 3}},
        "status": {"leader": "e1-1", "version": "3.7.4", "phase": "Running", "members": [
            {"name": "e1-0", "machine": "mach-0", "healthy": true, "dbSizeBytes": 25165824},
            {"name": "e1-1", "machine": "mach-1", "healthy": true, "dbSizeBytes": 1073741824},
            {"name": "e1-2", "machine": "mach-2", "healthy": false, "isLearner": true}]}
    }))
    .unwrap();
    let backup = |name: &str, cluster: &str, created: i64, phase: &str| -> Arc<EtcdBackup> {
        let mut b: EtcdBackup = serde_json::from_value(serde_json::json!({
            "apiVersion": "kok.flotilla.io/v1alpha1", "kind": "EtcdBackup",
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"cluster": cluster, "destination": {"machine": "mach-1", "path": "/backups"}},
            "status": {"phase": phase, "sizeBytes": 2097152}
        }))
        .unwrap();
        b.metadata.creation_timestamp = Some(Time(at(created)));
        Arc::new(b)
    };
    let backups = [
        backup("old", "e1", 100, "Succeeded"),
        backup("other", "e2", 300, "Succeeded"),
        backup("new", "e1", 200, "Failed"),
    ];
    let view = super::hosted::etcd_view(&etcd, &backups, at(400));
    let members: Vec<(&str, bool, bool, bool, &str)> = view
        .members
        .iter()
        .map(|m| (m.name.as_str(), m.leader, m.healthy, m.learner, m.db_size.as_str()))
        .collect();
    assert_eq!(
        members,
        [
            ("e1-0", false, true, false, "24Mi"),
            ("e1-1", true, true, false, "1Gi"),
            ("e1-2", false, false, true, "")
        ]
    );
    let listed: Vec<(&str, &str, &str)> =
        view.backups.iter().map(|b| (b.name.as_str(), b.phase.as_str(), b.age.as_str())).collect();
    assert_eq!(
        listed,
        [("new", "Failed", "3m"), ("old", "Succeeded", "5m")],
        "its own backups only, newest first"
    );
    assert_eq!(
        (view.backup_machine.as_str(), view.backup_path.as_str()),
        ("mach-1", "/backups"),
        "the schedule's destination prefills the dialog"
    );
}

#[test]
fn an_application_row_says_where_replicas_went_and_why() {
    let spec: BindingSpec = serde_json::from_value(serde_json::json!({
        "resource": {"apiVersion": "apps/v1", "kind": "Deployment", "namespace": "shop", "name": "web"},
        "policy": {"kind": "PropagationPolicy", "namespace": "shop", "name": "web"},
        "replicas": 4,
        "clusters": [{"name": "m1", "replicas": 4}],
        "failedOverFrom": ["m2"],
        "placement": {}
    }))
    .unwrap();
    let row = super::apps::app_row("shop", "web-deployment", &spec, None, &[], &Default::default());
    assert_eq!(row.template, "Deployment shop/web");
    assert_eq!(row.policy, "PropagationPolicy web");
    assert_eq!(row.binding, "shop/web-deployment");
    assert_eq!(row.moves, ["failed over from m2"]);
    let clusters: Vec<(&str, i32, bool, &str)> =
        row.clusters.iter().map(|c| (c.name.as_str(), c.replicas, c.applied, c.health.as_str())).collect();
    assert_eq!(clusters, [("m1", 4, false, "Unknown")], "no member report yet");
    assert!(row.rollout.is_none());
}

#[test]
fn an_application_row_shows_the_overrides_each_work_records() {
    let spec: BindingSpec = serde_json::from_value(serde_json::json!({
        "resource": {"apiVersion": "apps/v1", "kind": "Deployment", "namespace": "shop", "name": "web"},
        "replicas": 4,
        "clusters": [{"name": "m1", "replicas": 2}, {"name": "m2", "replicas": 2}],
        "placement": {}
    }))
    .unwrap();
    let work = |namespace: &str, binding: &str, applied: Option<&str>| -> flotilla_api::work::Work {
        let mut annotations = serde_json::json!({"work.flotilla.io/binding": binding});
        if let Some(applied) = applied {
            annotations["apps.flotilla.io/applied-overrides"] = serde_json::json!(applied);
        }
        serde_json::from_value(serde_json::json!({
            "apiVersion": "work.flotilla.io/v1alpha1", "kind": "Work",
            "metadata": {"name": "shop-web-deployment", "namespace": namespace, "annotations": annotations},
            "spec": {"manifests": []}
        }))
        .unwrap()
    };
    let works = [
        work("flotilla-cluster-m1", "shop/web-deployment", Some("eu-images,shop/web-eu")),
        work("flotilla-cluster-m2", "shop/web-deployment", None),
        // Another binding's Work on m2 does not count.
        work("flotilla-cluster-m2", "shop/other", Some("shop/other-eu")),
    ];
    let overrides = super::apps::applied_overrides(&works);
    let row = super::apps::app_row("shop", "web-deployment", &spec, None, &[], &overrides);
    let got: Vec<(&str, Vec<&str>)> = row
        .clusters
        .iter()
        .map(|c| (c.name.as_str(), c.overrides.iter().map(String::as_str).collect()))
        .collect();
    assert_eq!(got, [("m1", vec!["eu-images", "shop/web-eu"]), ("m2", vec![])]);
}

#[test]
fn the_condition_history_is_shown_newest_first_with_its_age() {
    use super::cluster::transition_views;
    use flotilla_api::cluster::ConditionTransition;
    let transition = |type_: &str, status: &str, second: i64| ConditionTransition {
        type_: type_.into(),
        status: status.into(),
        reason: format!("{type_}{status}"),
        message: "m".into(),
        transition_time: Time(at(second)),
    };
    let history = [
        transition("Joined", "True", 0),
        transition("Available", "True", 60),
        transition("Available", "Unknown", 3600),
    ];
    let got: Vec<(String, String, String)> =
        transition_views(&history, at(7200)).into_iter().map(|t| (t.type_, t.status, t.ago)).collect();
    let want = [("Available", "Unknown", "1h"), ("Available", "True", "1h"), ("Joined", "True", "2h")];
    let want: Vec<(String, String, String)> =
        want.iter().map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string())).collect();
    assert_eq!(got, want);
    assert!(transition_views(&[], at(0)).is_empty(), "no history, no rows");
}
