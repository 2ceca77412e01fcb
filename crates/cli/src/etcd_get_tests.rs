use flotilla_api::kok::{
    EtcdBackupSchedule, EtcdClusterPhase, EtcdClusterSpec, EtcdUpgradeState, EtcdUpgradeStatus, MachinePath,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::*;

fn now() -> Timestamp {
    "2026-12-07T12:00:00Z".parse().unwrap()
}

fn member(name: &str, machine: &str, healthy: bool, db: Option<i64>) -> EtcdMemberStatus {
    EtcdMemberStatus {
        name: name.into(),
        machine: Some(machine.into()),
        client_url: Some(format!("https://{machine}:2379")),
        peer_url: Some(format!("https://{machine}:2380")),
        id: Some(format!("{name}-id")),
        healthy,
        db_size_bytes: db,
        version: Some("3.6.0".into()),
        ..Default::default()
    }
}

fn etcd(name: &str, status: Option<EtcdClusterStatus>) -> EtcdCluster {
    let mut e =
        EtcdCluster::new(name, EtcdClusterSpec { members: 3, version: "3.7.4".into(), ..Default::default() });
    e.metadata.namespace = Some("team".into());
    e.metadata.creation_timestamp = Some(Time("2026-12-07T11:00:00Z".parse().unwrap()));
    e.status = status;
    e
}

fn running() -> EtcdClusterStatus {
    let mut learner = member("e-2", "m3", false, None);
    learner.is_learner = true;
    EtcdClusterStatus {
        phase: Some(EtcdClusterPhase::Running),
        members: vec![
            member("e-0", "m1", true, Some(20 * 1024 * 1024)),
            member("e-1", "m2", true, Some(512)),
            learner,
        ],
        ready_members: 2,
        leader: Some("e-0".into()),
        version: Some("3.6.0".into()),
        upgrade: Some(EtcdUpgradeStatus {
            from: "3.6.0".into(),
            to: "3.7.4".into(),
            state: Some(EtcdUpgradeState::Rolling),
            moved: vec!["e-1".into()],
            ..Default::default()
        }),
        last_scheduled_backup: Some("e-20261207-1100".into()),
        ..Default::default()
    }
}

#[test]
fn list_rows_with_and_without_namespaces_and_wide() {
    let full = etcd("e", Some(running()));
    let fresh = etcd("new", None);
    type Case<'a> = (&'a str, &'a EtcdCluster, bool, bool, Vec<&'a str>);
    let cases: Vec<Case> = vec![
        ("running", &full, false, false, vec!["e", "2/3", "e-0", "3.6.0", "Running", "60m"]),
        ("running, -A", &full, true, false, vec!["team", "e", "2/3", "e-0", "3.6.0", "Running", "60m"]),
        (
            "running, wide",
            &full,
            false,
            true,
            vec![
                "e",
                "2/3",
                "e-0",
                "3.6.0",
                "Running",
                "60m",
                "Process",
                "20.0 MiB",
                "3.6.0->3.7.4 Rolling (1 moved)",
                "e-20261207-1100",
            ],
        ),
        (
            "no status yet, wide: the spec's version, <none> and -",
            &fresh,
            false,
            true,
            vec!["new", "0/3", "<none>", "3.7.4", "Pending", "60m", "Process", "-", "<none>", "<none>"],
        ),
    ];
    for (name, e, all, wide, want) in cases {
        let row = list_row(e, all, wide, now());
        assert_eq!(row, want, "{name}");
        assert_eq!(row.len(), list_header(all, wide).len(), "{name}: one cell per column");
    }
}

#[test]
fn sizes_read_as_a_person_reads_them() {
    for (bytes, want) in [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (20 * 1024 * 1024, "20.0 MiB"),
        (3 * 1024 * 1024 * 1024, "3.0 GiB"),
        (5 * 1024_i64.pow(5), "5120.0 TiB"),
    ] {
        assert_eq!(size_text(bytes), want, "{bytes}");
    }
}

#[test]
fn member_rows_name_the_leader_followers_and_learners() {
    let status = running();
    let leader = status.leader.as_deref();
    let rows: Vec<Vec<String>> = status.members.iter().map(|m| member_row(m, leader, false)).collect();
    assert_eq!(
        rows,
        [
            ["e-0", "leader", "m1", "yes", "3.6.0", "20.0 MiB"],
            ["e-1", "follower", "m2", "yes", "3.6.0", "512 B"],
            ["e-2", "learner", "m3", "no", "3.6.0", "-"],
        ]
    );
    let wide = member_row(&status.members[0], leader, true);
    assert_eq!(wide[6..], ["e-0-id", "https://m1:2379", "https://m1:2380"]);
    assert_eq!(wide.len(), member_header(true).len());
    assert_eq!(member_row(&status.members[0], None, false)[1], "follower", "no leader known");
}

#[test]
fn status_shows_upgrade_backups_conditions_and_members() {
    let mut status = running();
    status.upgrade.as_mut().unwrap().failed_member = Some("e-1".into());
    status.conditions = vec![Condition {
        type_: "Upgraded".into(),
        status: "False".into(),
        reason: "RollingBack".into(),
        message: "member e-1 not healthy on 3.7.4 after 120s".into(),
        last_transition_time: Time("2026-12-07T11:58:00Z".parse().unwrap()),
        observed_generation: None,
    }];
    let mut e = etcd("e", Some(status));
    e.spec.backup = Some(EtcdBackupSchedule {
        schedule: "0 * * * *".into(),
        destination: MachinePath { machine: "m1".into(), path: "/backups".into() },
        retention: 7,
    });
    let text = render_status(&e, false, now());
    for want in [
        "EtcdCluster team/e: 2 of 3 members ready, leader e-0, version 3.6.0, phase Running (age 60m)",
        "Upgrade: 3.6.0->3.7.4 Rolling (1 moved), member e-1 did not become healthy",
        "Backups: \"0 * * * *\" to m1:/backups, keep 7; last e-20261207-1100, next <none>",
        "Upgraded",
        "RollingBack",
        "2m",
        "member e-1 not healthy on 3.7.4 after 120s",
        "leader",
        "learner",
    ] {
        assert!(text.contains(want), "wants {want:?}:\n{text}");
    }
    assert!(!text.contains("CLIENT URL"), "{text}");
    assert!(render_status(&e, true, now()).contains("CLIENT URL"));
    let fresh = render_status(&etcd("new", None), false, now());
    assert!(fresh.contains("phase Pending") && fresh.contains("No members yet."), "{fresh}");
    assert!(!fresh.contains("Upgrade:") && !fresh.contains("Backups:"), "{fresh}");
}

#[test]
fn the_list_table_has_the_header_and_one_line_per_cluster() {
    let text = render_list(&[etcd("a", Some(running())), etcd("b", None)], true, false, now());
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].contains("NAMESPACE") && lines[0].contains("LEADER"), "{text}");
    assert!(lines[1].contains("team") && lines[1].contains(" a "), "{text}");
}
