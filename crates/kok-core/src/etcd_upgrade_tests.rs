use super::*;

const DEADLINE: Duration = Duration::from_secs(60);

fn releases() -> Vec<EtcdRelease> {
    vec![
        EtcdRelease { version: "3.6.17".into(), binary: "etcd-3.6.17".into() },
        EtcdRelease { version: "3.7.4".into(), binary: "etcd".into() },
    ]
}

fn t(s: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + s).unwrap()
}

/// Three healthy members on `version`, `e-1` the leader.
fn members(version: &str) -> Vec<MemberFacts> {
    (0..3)
        .map(|i| MemberFacts {
            name: format!("e-{i}"),
            runs: Some(version.into()),
            healthy: true,
            reports: Some(version.into()),
            is_leader: i == 1,
        })
        .collect()
}

struct World {
    members: Vec<MemberFacts>,
    record: Option<EtcdUpgradeStatus>,
    conditions: Vec<Condition>,
    snapshot: Snapshot,
    now: Timestamp,
}

impl World {
    fn new(version: &str) -> Self {
        World {
            members: members(version),
            record: None,
            conditions: vec![],
            snapshot: Snapshot::Missing,
            now: t(0),
        }
    }

    fn step(&mut self, want: &str) -> UpgradeStep {
        let rs = releases();
        let out = step(&UpgradeFacts {
            cluster: "e",
            want,
            releases: &rs,
            members: &self.members,
            record: self.record.as_ref(),
            snapshot: self.snapshot.clone(),
            conditions: &self.conditions,
            generation: Some(2),
            deadline: DEADLINE,
            now: self.now,
        });
        self.record = out.record.clone();
        self.conditions = out.condition.iter().cloned().collect();
        out
    }

    fn member(&mut self, name: &str) -> &mut MemberFacts {
        self.members.iter_mut().find(|m| m.name == name).unwrap()
    }

    /// The node agent restarts the member on the new binary; it comes up
    /// healthy when `works`.
    fn moved(&mut self, action: &Option<Action>, works: bool) -> String {
        let Some(Action::Move { member, release }) = action else { panic!("no move: {action:?}") };
        let m = self.member(member);
        m.runs = Some(release.version.clone());
        m.healthy = works;
        m.reports = works.then(|| release.version.clone());
        member.clone()
    }
}

fn reason(step: &UpgradeStep) -> (&str, &str) {
    let c = step.condition.as_ref().unwrap();
    (c.status.as_str(), c.reason.as_str())
}

#[test]
fn a_cluster_at_its_version_does_nothing() {
    let mut w = World::new("3.7.4");
    let s = w.step("3.7.4");
    assert_eq!((s.action.clone(), reason(&s)), (None, ("True", reasons::AT_VERSION)));
    assert!(!s.busy);
    // No member yet: no condition (founding is not an upgrade).
    w.members.clear();
    assert_eq!(w.step("3.7.4").condition, None);
}

#[test]
fn unknown_skipping_and_downgrading_versions_are_refused_and_nothing_moves() {
    for (from, want, why, text) in [
        ("3.6.17", "3.9.0", reasons::UNKNOWN_VERSION, "it has 3.6.17, 3.7.4"),
        ("3.7.4", "3.6.17", reasons::REFUSED, "downgrade across a minor"),
        ("3.5.1", "3.7.4", reasons::UNKNOWN_VERSION, "member e-0 runs an etcd binary"),
    ] {
        let mut w = World::new(from);
        if from == "3.5.1" {
            for m in &mut w.members {
                m.runs = None;
            }
        }
        let s = w.step(want);
        assert_eq!((s.action.clone(), reason(&s)), (None, ("False", why)), "{from} -> {want}");
        assert!(s.condition.unwrap().message.contains(text), "{from} -> {want}");
        assert_eq!(s.record, None, "nothing recorded: {from} -> {want}");
    }
}

#[test]
fn an_upgrade_snapshots_then_moves_followers_first_and_the_leader_last() {
    let mut w = World::new("3.6.17");
    let s = w.step("3.7.4");
    let backup = "e-pre-3-7-4-20270115-080000";
    assert_eq!(s.action, Some(Action::CreateBackup(backup.into())));
    assert_eq!(reason(&s), ("False", reasons::UPGRADING));
    assert_eq!(w.record.as_ref().unwrap().state, Some(State::Snapshotting));
    // The backup runs: nothing moves; gone: created again.
    w.snapshot = Snapshot::InProgress;
    assert_eq!(w.step("3.7.4").action, None);
    w.snapshot = Snapshot::Missing;
    assert_eq!(w.step("3.7.4").action, Some(Action::CreateBackup(backup.into())));
    w.snapshot = Snapshot::Taken("m1:/backups/e.db".into());

    let mut order = Vec::new();
    for turn in 0..3 {
        w.now = t(10 * (turn + 1));
        let s = w.step("3.7.4");
        order.push(w.moved(&s.action, true));
        // Moved, not yet restarted (still reports the old version): wait.
        w.member(order.last().unwrap()).reports = Some("3.6.17".into());
        let wait = w.step("3.7.4");
        assert_eq!((wait.action.clone(), reason(&wait)), (None, ("False", reasons::UPGRADING)));
        w.member(order.last().unwrap()).reports = Some("3.7.4".into());
    }
    assert_eq!(order, ["e-0", "e-2", "e-1"], "followers by index, then the leader");
    let done = w.step("3.7.4");
    assert_eq!((done.action.clone(), reason(&done)), (None, ("True", reasons::SUCCEEDED)));
    let record = done.record.unwrap();
    assert_eq!(
        (record.state, record.snapshot.as_deref(), record.from.as_str()),
        (Some(State::Succeeded), Some("m1:/backups/e.db"), "3.6.17")
    );
    // It stays that way; and 3.7.4 -> 3.6.17 is now refused.
    assert_eq!(reason(&w.step("3.7.4")), ("True", reasons::SUCCEEDED));
    let back = w.step("3.6.17");
    assert_eq!((back.action.clone(), reason(&back)), (None, ("False", reasons::REFUSED)));
}

#[test]
fn no_member_moves_while_another_is_unhealthy() {
    let mut w = World::new("3.6.17");
    w.member("e-2").healthy = false;
    let s = w.step("3.7.4");
    assert_eq!(
        (s.action.clone(), reason(&s)),
        (None, ("False", reasons::UPGRADING)),
        "not even the snapshot"
    );
    w.member("e-2").healthy = true;
    w.step("3.7.4");
    w.snapshot = Snapshot::Taken("m1:/b.db".into());
    let first = w.step("3.7.4");
    w.moved(&first.action, true);
    w.member("e-2").healthy = false;
    let s = w.step("3.7.4");
    assert_eq!((s.action.clone(), reason(&s)), (None, ("False", reasons::UPGRADING)));
    assert!(s.condition.unwrap().message.contains("waiting for e-0"), "the gate is the whole cluster");
}

#[test]
fn a_failed_snapshot_moves_nothing_until_the_spec_changes() {
    let mut w = World::new("3.6.17");
    w.step("3.7.4");
    w.snapshot = Snapshot::Failed("etcdctl exited 1".into());
    let s = w.step("3.7.4");
    assert_eq!((s.action.clone(), reason(&s)), (None, ("False", SNAPSHOT_FAILED)));
    assert!(s.condition.unwrap().message.contains("etcdctl exited 1"));
    w.snapshot = Snapshot::Missing;
    assert_eq!(reason(&w.step("3.7.4")), ("False", SNAPSHOT_FAILED), "not retried by itself");
    assert_eq!(reason(&w.step("3.6.17")), ("True", reasons::AT_VERSION));
    w.now = t(100);
    assert!(matches!(w.step("3.7.4").action, Some(Action::CreateBackup(_))), "a new attempt");
}

#[test]
fn a_member_not_healthy_in_time_rolls_back_newest_first() {
    let mut w = World::new("3.6.17");
    w.step("3.7.4");
    w.snapshot = Snapshot::Taken("m1:/b.db".into());
    let first = w.step("3.7.4");
    assert_eq!(w.moved(&first.action, true), "e-0");
    w.now = t(5);
    let second = w.step("3.7.4");
    assert_eq!(w.moved(&second.action, false), "e-2");
    // Within the deadline: wait.
    w.now = t(5 + 60);
    let s = w.step("3.7.4");
    assert_eq!((s.action.clone(), reason(&s)), (None, ("False", reasons::UPGRADING)));
    // Past it: the failed member goes back at once.
    w.now = t(5 + 61);
    let s = w.step("3.7.4");
    assert_eq!(reason(&s), ("False", reasons::ROLLING_BACK));
    let Some(Action::Move { member, release }) = &s.action else { panic!("{s:?}") };
    assert_eq!((member.as_str(), release.version.as_str()), ("e-2", "3.6.17"));
    w.moved(&s.action, true);
    w.member("e-2").reports = None;
    w.member("e-2").healthy = false;
    // e-0 goes back only once e-2 is healthy on 3.6.17 again.
    let wait = w.step("3.7.4");
    assert_eq!((wait.action.clone(), reason(&wait)), (None, ("False", reasons::ROLLING_BACK)));
    w.member("e-2").healthy = true;
    w.member("e-2").reports = Some("3.6.17".into());
    let s = w.step("3.7.4");
    let Some(Action::Move { member, release }) = &s.action else { panic!("{s:?}") };
    assert_eq!((member.as_str(), release.version.as_str()), ("e-0", "3.6.17"));
    w.moved(&s.action, true);
    let done = w.step("3.7.4");
    assert_eq!((done.action.clone(), reason(&done)), (None, ("False", reasons::ROLLED_BACK)));
    let message = done.condition.unwrap().message;
    assert!(
        message.contains("e-2 was not healthy on etcd 3.7.4") && message.contains("m1:/b.db"),
        "{message}"
    );
    // Not retried while the spec still says 3.7.4; another version is a new attempt.
    w.now = t(500);
    let again = w.step("3.7.4");
    assert_eq!((again.action.clone(), reason(&again)), (None, ("False", reasons::ROLLED_BACK)));
    assert_eq!(reason(&w.step("3.6.17")), ("True", reasons::AT_VERSION));
}

#[test]
fn a_half_moved_cluster_may_go_back_to_the_old_minor() {
    let mut w = World::new("3.6.17");
    w.member("e-0").runs = Some("3.7.4".into());
    w.member("e-0").reports = Some("3.7.4".into());
    let s = w.step("3.6.17");
    assert!(matches!(s.action, Some(Action::CreateBackup(_))), "{s:?}");
    w.snapshot = Snapshot::Taken("m1:/b.db".into());
    let s = w.step("3.6.17");
    let Some(Action::Move { member, release }) = &s.action else { panic!("{s:?}") };
    assert_eq!((member.as_str(), release.version.as_str()), ("e-0", "3.6.17"));
}
