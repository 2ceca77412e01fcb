use super::*;

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap()
}

fn warning(ordinal: i32, object: &str, reason: &str, message: &str, count: i32, secs: i64) -> MemberWarning {
    MemberWarning {
        ordinal,
        object: object.into(),
        reason: reason.into(),
        message: message.into(),
        count,
        last_seen: Time(at(secs)),
    }
}

#[test]
fn owners_of_an_event_object() {
    type Case = (
        &'static str,
        (&'static str, &'static str),
        Option<(&'static str, &'static str)>,
        Option<&'static str>,
        Vec<(&'static str, &'static str)>,
    );
    let cases: Vec<Case> = vec![
        ("a deployment itself", ("Deployment", "web"), None, None, vec![("Deployment", "web")]),
        (
            "a deployment's pod",
            ("Pod", "web-7d9c6-x2x"),
            Some(("ReplicaSet", "web-7d9c6")),
            Some("7d9c6"),
            vec![("Pod", "web-7d9c6-x2x"), ("ReplicaSet", "web-7d9c6"), ("Deployment", "web")],
        ),
        (
            "a dashed deployment name without the hash label",
            ("Pod", "my-web-7d9c6-x2x"),
            Some(("ReplicaSet", "my-web-7d9c6")),
            None,
            vec![("Pod", "my-web-7d9c6-x2x"), ("ReplicaSet", "my-web-7d9c6"), ("Deployment", "my-web")],
        ),
        (
            "a statefulset's pod",
            ("Pod", "db-0"),
            Some(("StatefulSet", "db")),
            None,
            vec![("Pod", "db-0"), ("StatefulSet", "db")],
        ),
        (
            "a replicaset that cannot create pods",
            ("ReplicaSet", "web-7d9c6"),
            None,
            None,
            vec![("ReplicaSet", "web-7d9c6"), ("Deployment", "web")],
        ),
        ("a bare pod", ("Pod", "debug"), None, None, vec![("Pod", "debug")]),
    ];
    for (name, (kind, object), owner, hash, want) in cases {
        let got = owner_candidates(kind, object, owner, hash);
        let want: Vec<(String, String)> = want.into_iter().map(|(k, n)| (k.into(), n.into())).collect();
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn the_list_dedupes_and_stays_bounded() {
    // A crash-looping pod: the same reason again and again is one entry.
    let mut list = Vec::new();
    for i in 0..100 {
        list = record(
            &list,
            warning(0, &format!("Pod/web-{i}"), "BackOff", "back-off restarting", 1, i),
            at(100),
        );
    }
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].count, 100);
    assert_eq!(list[0].object, "Pod/web-99");
    assert_eq!(list[0].last_seen, Time(at(99)));

    // Many reasons: only the most recent few, newest first.
    let mut list = Vec::new();
    for i in 0..20 {
        list = record(&list, warning(0, "Pod/web-1", &format!("Reason{i}"), "m", 1, i), at(30));
    }
    assert_eq!(list.len(), MAX_WARNINGS_PER_WORK);
    assert_eq!(list[0].reason, "Reason19");

    // Old entries leave.
    let old = vec![warning(1, "Pod/a", "FailedMount", "m", 3, 0)];
    let list = record(&old, warning(0, "Pod/b", "FailedScheduling", "m", 1, 4000), at(4000));
    let reasons: Vec<&str> = list.iter().map(|w| w.reason.as_str()).collect();
    assert_eq!(reasons, vec!["FailedScheduling"]);
}

#[test]
fn writes_are_due_for_news_and_rarely_for_counts() {
    let written = vec![warning(0, "Pod/web-1", "FailedScheduling", "0/3 nodes", 1, 0)];
    let more = vec![warning(0, "Pod/web-1", "FailedScheduling", "0/3 nodes", 7, 30)];
    let other = vec![warning(0, "Pod/web-2", "FailedScheduling", "0/3 nodes", 2, 30)];
    type Case = (&'static str, Vec<MemberWarning>, Vec<MemberWarning>, Option<i64>, i64, bool);
    let cases: Vec<Case> = vec![
        ("unchanged", written.clone(), written.clone(), Some(0), 10, false),
        ("a first warning", vec![], written.clone(), None, 0, true),
        ("counts only, soon after a write", written.clone(), more.clone(), Some(0), 30, false),
        ("counts only, a minute after", written.clone(), more.clone(), Some(0), 60, true),
        ("another object", written.clone(), other, Some(0), 1, true),
        ("all gone", written.clone(), vec![], Some(0), 1, true),
    ];
    for (name, before, current, written_at, now, want) in cases {
        assert_eq!(write_due(&before, &current, written_at.map(at), at(now)), want, "{name}");
    }
}

#[test]
fn the_hub_forwards_what_is_new_or_seen_again() {
    let a1 = warning(0, "Pod/web-1", "FailedScheduling", "0/3 nodes", 1, 0);
    let a5 = warning(0, "Pod/web-1", "FailedScheduling", "0/3 nodes", 5, 50);
    let b = warning(1, "Pod/db-0", "BackOff", "restarting", 2, 10);
    type Case = (&'static str, Option<Vec<MemberWarning>>, Vec<MemberWarning>, i64, Vec<&'static str>);
    let cases: Vec<Case> = vec![
        ("nothing new", Some(vec![a1.clone()]), vec![a1.clone()], 10, vec![]),
        ("a new reason", Some(vec![a1.clone()]), vec![a1.clone(), b.clone()], 10, vec!["BackOff"]),
        ("seen again", Some(vec![a1.clone()]), vec![a5.clone()], 60, vec!["FailedScheduling"]),
        ("after a restart: recent only", None, vec![a5.clone(), b.clone()], 150, vec!["FailedScheduling"]),
        ("after a restart: nothing recent", None, vec![a1.clone()], 600, vec![]),
    ];
    for (name, before, current, now, want) in cases {
        let got: Vec<&str> =
            to_forward(before.as_deref(), &current, at(now)).into_iter().map(|w| w.reason.as_str()).collect();
        assert_eq!(got, want, "{name}");
    }
    assert_eq!(hub_message("m1", &a1), "m1: Pod/web-1: 0/3 nodes");
}
