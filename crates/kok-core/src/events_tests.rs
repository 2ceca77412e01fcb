use super::*;
use flotilla_api::kok::EtcdMemberStatus;
use flotilla_core::events::Severity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

fn cond(type_: &str, status: &str, reason: &str, message: &str) -> Condition {
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
        observed_generation: None,
    }
}

fn hosted(conditions: Vec<Condition>) -> HostedClusterStatus {
    HostedClusterStatus { conditions, ..Default::default() }
}

fn reasons(notices: Vec<Notice>) -> Vec<(Severity, String)> {
    notices.into_iter().map(|n| (n.severity, n.reason)).collect()
}

fn want(list: &[(Severity, &str)]) -> Vec<(Severity, String)> {
    list.iter().map(|(s, r)| (*s, r.to_string())).collect()
}

#[test]
fn hosted_cluster_events_fire_on_transitions() {
    let ready = cond(conditions::READY, "True", "AllComponentsReady", "ok");
    let not_ready = cond(conditions::READY, "False", "ComponentsNotReady", "kube-apiserver is not healthy");
    let at_version = cond(conditions::UPGRADED, "True", reasons::AT_VERSION, "runs 1.36.3");
    let step1 =
        cond(conditions::UPGRADED, "False", reasons::UPGRADING, "kube-apiserver on m1 moved to 1.37.2");
    let step2 =
        cond(conditions::UPGRADED, "False", reasons::UPGRADING, "kube-apiserver on m2 moved to 1.37.2");
    let rolling_back =
        cond(conditions::UPGRADED, "False", reasons::ROLLING_BACK, "m2 did not become healthy");
    let rolled_back = cond(conditions::UPGRADED, "False", reasons::ROLLED_BACK, "back on 1.36.3");
    let done = cond(conditions::UPGRADED, "True", reasons::SUCCEEDED, "runs 1.37.2");
    let certs_ok = cond(conditions::CERTIFICATES_READY, "True", "Issued", "ok");
    let certs_expiring =
        cond(conditions::CERTIFICATES_READY, "False", "Expiring", "apiserver expires in 5 days");
    let invalid = cond(conditions::VALID, "False", "Invalid", "etcdRef names no EtcdCluster");
    type Case = (&'static str, Option<Vec<Condition>>, Vec<Condition>, Vec<(Severity, &'static str)>);
    let cases: Vec<Case> = vec![
        ("created, not ready yet: quiet", None, vec![not_ready.clone(), at_version.clone()], vec![]),
        (
            "becomes ready",
            Some(vec![not_ready.clone(), at_version.clone()]),
            vec![ready.clone(), at_version.clone()],
            vec![(Severity::Normal, "ClusterReady")],
        ),
        (
            "unchanged",
            Some(vec![ready.clone(), at_version.clone()]),
            vec![ready.clone(), at_version.clone()],
            vec![],
        ),
        (
            "ready turns not ready",
            Some(vec![ready.clone()]),
            vec![not_ready.clone()],
            vec![(Severity::Warning, "ClusterNotReady")],
        ),
        (
            "an upgrade starts",
            Some(vec![ready.clone(), at_version.clone()]),
            vec![ready.clone(), step1.clone()],
            vec![(Severity::Normal, "UpgradeStep")],
        ),
        (
            "the next step",
            Some(vec![step1.clone()]),
            vec![step2.clone()],
            vec![(Severity::Normal, "UpgradeStep")],
        ),
        ("the same step again: quiet", Some(vec![step2.clone()]), vec![step2.clone()], vec![]),
        (
            "a rollback starts",
            Some(vec![step2.clone()]),
            vec![rolling_back.clone()],
            vec![(Severity::Warning, "RollingBack")],
        ),
        ("rolled back", Some(vec![rolling_back]), vec![rolled_back], vec![(Severity::Warning, "RolledBack")]),
        ("upgraded", Some(vec![step2]), vec![done], vec![(Severity::Normal, "Upgraded")]),
        (
            "certificates about to expire",
            Some(vec![certs_ok]),
            vec![certs_expiring],
            vec![(Severity::Warning, "CertificatesNotReady")],
        ),
        ("an invalid spec", None, vec![invalid], vec![(Severity::Warning, "InvalidSpec")]),
    ];
    for (name, before, after, expected) in cases {
        let before = before.map(hosted);
        let got = reasons(hosted_events("c1", before.as_ref(), &hosted(after)));
        assert_eq!(got, want(&expected), "{name}");
    }
}

#[test]
fn each_upgrade_step_has_its_own_action() {
    let step = |m: &str| hosted(vec![cond(conditions::UPGRADED, "False", reasons::UPGRADING, m)]);
    let first = hosted_events("c1", None, &step("kube-apiserver moved"));
    let second = hosted_events("c1", Some(&step("kube-apiserver moved")), &step("kube-scheduler moved"));
    assert_ne!(first[0].action, second[0].action);
    assert!(second[0].message.contains("kube-scheduler moved"));
}

fn member(name: &str, machine: &str) -> EtcdMemberStatus {
    EtcdMemberStatus { name: name.into(), machine: Some(machine.into()), healthy: true, ..Default::default() }
}

fn etcd(
    members: &[(&str, &str)],
    leader: Option<&str>,
    available: Option<&str>,
    backup: Option<&str>,
) -> EtcdClusterStatus {
    EtcdClusterStatus {
        members: members.iter().map(|(n, m)| member(n, m)).collect(),
        leader: leader.map(str::to_string),
        conditions: available
            .map(|s| vec![cond(conditions::ETCD_AVAILABLE, s, "Probed", "2 of 3 members healthy")])
            .unwrap_or_default(),
        last_scheduled_backup: backup.map(str::to_string),
        ..Default::default()
    }
}

#[test]
fn etcd_cluster_events_fire_on_transitions() {
    let three = [("e-0", "m1"), ("e-1", "m2"), ("e-2", "m3")];
    let two = [("e-0", "m1"), ("e-1", "m2")];
    type Case = (&'static str, Option<EtcdClusterStatus>, EtcdClusterStatus, Vec<(Severity, &'static str)>);
    let cases: Vec<Case> = vec![
        ("created: the first members are no news", None, etcd(&two, None, None, None), vec![]),
        (
            "comes up available",
            Some(etcd(&two, None, Some("False"), None)),
            etcd(&two, Some("e-0"), Some("True"), None),
            vec![(Severity::Normal, "Available")],
        ),
        (
            "a member added",
            Some(etcd(&two, Some("e-0"), Some("True"), None)),
            etcd(&three, Some("e-0"), Some("True"), None),
            vec![(Severity::Normal, "MemberAdded")],
        ),
        (
            "a member removed, a new leader, quorum lost",
            Some(etcd(&three, Some("e-2"), Some("True"), None)),
            etcd(&two, Some("e-0"), Some("False"), None),
            vec![
                (Severity::Normal, "MemberRemoved"),
                (Severity::Normal, "LeaderChanged"),
                (Severity::Warning, "Unavailable"),
            ],
        ),
        (
            "a scheduled backup",
            Some(etcd(&two, Some("e-0"), Some("True"), Some("b-1"))),
            etcd(&two, Some("e-0"), Some("True"), Some("b-2")),
            vec![(Severity::Normal, "BackupScheduled")],
        ),
        (
            "unchanged",
            Some(etcd(&two, Some("e-0"), Some("True"), Some("b-1"))),
            etcd(&two, Some("e-0"), Some("True"), Some("b-1")),
            vec![],
        ),
    ];
    for (name, before, after, expected) in cases {
        let got = reasons(etcd_events("e", before.as_ref(), &after));
        assert_eq!(got, want(&expected), "{name}");
    }
}

#[test]
fn backup_outcomes_are_news_once() {
    type Case = (&'static str, Option<JobPhase>, Option<JobPhase>, Option<(Severity, &'static str)>);
    let cases: Vec<Case> = vec![
        (
            "taken",
            Some(JobPhase::Running),
            Some(JobPhase::Succeeded),
            Some((Severity::Normal, "BackupTaken")),
        ),
        (
            "failed",
            Some(JobPhase::Running),
            Some(JobPhase::Failed),
            Some((Severity::Warning, "BackupFailed")),
        ),
        ("still running", Some(JobPhase::Pending), Some(JobPhase::Running), None),
        ("already said", Some(JobPhase::Succeeded), Some(JobPhase::Succeeded), None),
    ];
    for (name, before, after, expected) in cases {
        let got = backup_event("e", "b-1", before, after, "disk full").map(|n| (n.severity, n.reason));
        assert_eq!(got, expected.map(|(s, r)| (s, r.to_string())), "{name}");
    }
}

#[test]
fn machines_hear_of_the_members_placed_on_them() {
    let two = [("e-0", "m1"), ("e-1", "m2")];
    let moved = [("e-0", "m1"), ("e-1", "m3")];
    type Case =
        (&'static str, Option<EtcdClusterStatus>, EtcdClusterStatus, Vec<(&'static str, &'static str)>);
    let cases: Vec<Case> = vec![
        (
            "created",
            None,
            etcd(&two, None, None, None),
            vec![("m1", "EtcdMemberPlaced"), ("m2", "EtcdMemberPlaced")],
        ),
        ("unchanged", Some(etcd(&two, None, None, None)), etcd(&two, None, None, None), vec![]),
        (
            "a member replaced on a spare machine",
            Some(etcd(&two, None, None, None)),
            etcd(&moved, None, None, None),
            vec![("m3", "EtcdMemberPlaced"), ("m2", "EtcdMemberRemoved")],
        ),
    ];
    for (name, before, after, expected) in cases {
        let got: Vec<(String, String)> =
            machine_events("e", before.as_ref(), &after).into_iter().map(|(m, n)| (m, n.reason)).collect();
        let expected: Vec<(String, String)> =
            expected.into_iter().map(|(m, r)| (m.to_string(), r.to_string())).collect();
        assert_eq!(got, expected, "{name}");
    }
}
