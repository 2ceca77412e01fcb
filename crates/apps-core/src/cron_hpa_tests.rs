use super::*;

fn at(text: &str) -> Timestamp {
    text.parse().unwrap()
}

fn rule(name: &str, schedule: &str) -> CronRule {
    CronRule {
        name: name.into(),
        schedule: schedule.into(),
        target_replicas: Some(5),
        successful_history_limit: 3,
        failed_history_limit: 3,
        ..Default::default()
    }
}

fn history(next: Option<&str>, succeeded: &[&str], failed: &[&str]) -> ExecutionHistory {
    ExecutionHistory {
        rule_name: "r".into(),
        next_execution_time: next.map(|t| Time(at(t))),
        successful_executions: succeeded
            .iter()
            .map(|t| SuccessfulExecution {
                schedule_time: Time(at(t)),
                execution_time: Time(at(t)),
                applied_replicas: Some(1),
                applied_min_replicas: None,
                applied_max_replicas: None,
            })
            .collect(),
        failed_executions: failed
            .iter()
            .map(|t| FailedExecution {
                schedule_time: Time(at(t)),
                execution_time: Time(at(t)),
                message: "boom".into(),
            })
            .collect(),
    }
}

fn zone(name: &str) -> Option<TimeZone> {
    TimeZone::get(name).ok()
}

#[test]
fn ticks_in_zones() {
    // (schedule, zone, after, next, latest at `after`)
    let cases = [
        ("*/1 * * * *", "UTC", "2026-03-01T10:00:30Z", "2026-03-01T10:01:00Z", "2026-03-01T10:00:00Z"),
        ("*/5 * * * * *", "UTC", "2026-03-01T10:00:07Z", "2026-03-01T10:00:10Z", "2026-03-01T10:00:05Z"),
        // 08:00 in Paris is 07:00 UTC in winter, 06:00 UTC in summer.
        ("0 8 * * *", "Europe/Paris", "2026-01-10T12:00:00Z", "2026-01-11T07:00:00Z", "2026-01-10T07:00:00Z"),
        ("0 8 * * *", "Europe/Paris", "2026-07-10T12:00:00Z", "2026-07-11T06:00:00Z", "2026-07-10T06:00:00Z"),
        // Across the spring change (29 March 2026 in Europe).
        ("0 8 * * *", "Europe/Paris", "2026-03-28T12:00:00Z", "2026-03-29T06:00:00Z", "2026-03-28T07:00:00Z"),
        (
            "0 9 * * 1-5",
            "America/New_York",
            "2026-03-06T15:00:00Z",
            "2026-03-09T13:00:00Z",
            "2026-03-06T14:00:00Z",
        ),
        ("@hourly", "Asia/Kolkata", "2026-03-01T10:00:00Z", "2026-03-01T10:30:00Z", "2026-03-01T09:30:00Z"),
    ];
    for (schedule, zone_name, after, next, latest) in cases {
        let cron = parse_schedule(schedule).unwrap();
        let tz = zone(zone_name).unwrap();
        assert_eq!(next_tick(&cron, &tz, at(after)), Some(at(next)), "next of {schedule} in {zone_name}");
        assert_eq!(
            latest_tick(&cron, &tz, at(after)),
            Some(at(latest)),
            "latest of {schedule} in {zone_name}"
        );
    }
}

#[test]
fn schedules_parse_or_say_why() {
    let cases = [
        ("*/1 * * * *", true),
        ("*/5 * * * * *", true),
        ("@daily", true),
        ("0 8 * * MON-FRI", true),
        ("61 * * * *", false),
        ("* * * *", false),
        ("* * * * * * *", false),
        ("not a schedule", false),
    ];
    for (schedule, ok) in cases {
        assert_eq!(parse_schedule(schedule).is_ok(), ok, "{schedule}");
    }
    assert!(parse_schedule("* * * *").unwrap_err().contains("4 fields"));
}

#[test]
fn steps() {
    struct Case {
        name: &'static str,
        rule: CronRule,
        federated_hpa: bool,
        zone: &'static str,
        history: Option<ExecutionHistory>,
        now: &'static str,
        want: RuleStep,
    }
    let every_minute = rule("r", "*/1 * * * *");
    let next_minute = |t: &str| Some(at(t));
    let cases = vec![
        Case {
            name: "a new rule announces its next tick and runs nothing",
            rule: every_minute.clone(),
            federated_hpa: false,
            zone: "UTC",
            history: None,
            now: "2026-03-01T10:00:30Z",
            want: RuleStep::Wait { next: next_minute("2026-03-01T10:01:00Z") },
        },
        Case {
            name: "the announced tick has come: run it",
            rule: every_minute.clone(),
            federated_hpa: false,
            zone: "UTC",
            history: Some(history(Some("2026-03-01T10:01:00Z"), &[], &[])),
            now: "2026-03-01T10:01:00.2Z",
            want: RuleStep::Run {
                tick: at("2026-03-01T10:01:00Z"),
                scale: Scale::Replicas(5),
                next: next_minute("2026-03-01T10:02:00Z"),
            },
        },
        Case {
            name: "woken early: wait for the announced tick",
            rule: every_minute.clone(),
            federated_hpa: false,
            zone: "UTC",
            history: Some(history(Some("2026-03-01T10:01:00Z"), &[], &[])),
            now: "2026-03-01T10:00:59Z",
            want: RuleStep::Wait { next: next_minute("2026-03-01T10:01:00Z") },
        },
        Case {
            name: "already recorded (the status was written, the next not yet seen): not again",
            rule: every_minute.clone(),
            federated_hpa: false,
            zone: "UTC",
            history: Some(history(Some("2026-03-01T10:01:00Z"), &["2026-03-01T10:01:00Z"], &[])),
            now: "2026-03-01T10:01:20Z",
            want: RuleStep::Wait { next: next_minute("2026-03-01T10:02:00Z") },
        },
        Case {
            name: "a failed tick is not retried either",
            rule: every_minute.clone(),
            federated_hpa: false,
            zone: "UTC",
            history: Some(history(Some("2026-03-01T10:01:00Z"), &[], &["2026-03-01T10:01:00Z"])),
            now: "2026-03-01T10:01:20Z",
            want: RuleStep::Wait { next: next_minute("2026-03-01T10:02:00Z") },
        },
        Case {
            name: "after a 3-minute outage only the latest missed tick runs, once",
            rule: every_minute.clone(),
            federated_hpa: false,
            zone: "UTC",
            history: Some(history(Some("2026-03-01T10:01:00Z"), &["2026-03-01T10:00:00Z"], &[])),
            now: "2026-03-01T10:04:10Z",
            want: RuleStep::Run {
                tick: at("2026-03-01T10:04:00Z"),
                scale: Scale::Replicas(5),
                next: next_minute("2026-03-01T10:05:00Z"),
            },
        },
        Case {
            name: "a daily tick missed by hours is skipped, with a message",
            rule: rule("r", "0 8 * * *"),
            federated_hpa: false,
            zone: "UTC",
            history: Some(history(Some("2026-03-01T08:00:00Z"), &[], &[])),
            now: "2026-03-01T11:00:00Z",
            want: RuleStep::Skip {
                tick: at("2026-03-01T08:00:00Z"),
                message: "skipped: the tick was found 10800s late (the hub was not running?), more than the \
                          300s a tick may be late; only the most recent missed tick is considered, and the \
                          next one runs as usual"
                    .into(),
                next: next_minute("2026-03-02T08:00:00Z"),
            },
        },
        Case {
            name: "a daily tick late by less than the bound still runs",
            rule: rule("r", "0 8 * * *"),
            federated_hpa: false,
            zone: "UTC",
            history: Some(history(Some("2026-03-01T08:00:00Z"), &[], &[])),
            now: "2026-03-01T08:04:00Z",
            want: RuleStep::Run {
                tick: at("2026-03-01T08:00:00Z"),
                scale: Scale::Replicas(5),
                next: next_minute("2026-03-02T08:00:00Z"),
            },
        },
        Case {
            name: "suspended: nothing, and no next tick",
            rule: CronRule { suspend: true, ..every_minute.clone() },
            federated_hpa: false,
            zone: "UTC",
            history: Some(history(Some("2026-03-01T10:01:00Z"), &[], &[])),
            now: "2026-03-01T10:01:00Z",
            want: RuleStep::Wait { next: None },
        },
        Case {
            name: "resumed: its missed ticks do not run, the next does",
            rule: every_minute.clone(),
            federated_hpa: false,
            zone: "UTC",
            history: Some(history(None, &["2026-03-01T09:00:00Z"], &[])),
            now: "2026-03-01T10:01:30Z",
            want: RuleStep::Wait { next: next_minute("2026-03-01T10:02:00Z") },
        },
        Case {
            name: "an unknown zone is invalid",
            rule: CronRule { time_zone: Some("Mars/Olympus".into()), ..every_minute.clone() },
            federated_hpa: false,
            zone: "Mars/Olympus",
            history: None,
            now: "2026-03-01T10:00:00Z",
            want: RuleStep::Invalid {
                message: "rule r: time zone `Mars/Olympus` is not a known IANA time zone (e.g. UTC, \
                          Europe/Paris, America/New_York)"
                    .into(),
            },
        },
        Case {
            name: "a schedule croner refuses is invalid",
            rule: rule("r", "61 * * * *"),
            federated_hpa: false,
            zone: "UTC",
            history: None,
            now: "2026-03-01T10:00:00Z",
            want: RuleStep::Invalid {
                message: format!(
                    "rule r: schedule `61 * * * *` is not a valid cron expression: {}",
                    parse_schedule("61 * * * *").unwrap_err()
                ),
            },
        },
        Case {
            name: "a FederatedHPA rule sets bounds",
            rule: CronRule {
                target_replicas: None,
                target_min_replicas: Some(2),
                target_max_replicas: Some(10),
                ..every_minute.clone()
            },
            federated_hpa: true,
            zone: "UTC",
            history: Some(history(Some("2026-03-01T10:01:00Z"), &[], &[])),
            now: "2026-03-01T10:01:01Z",
            want: RuleStep::Run {
                tick: at("2026-03-01T10:01:00Z"),
                scale: Scale::Bounds { min: Some(2), max: Some(10) },
                next: next_minute("2026-03-01T10:02:00Z"),
            },
        },
        Case {
            name: "targetReplicas on a FederatedHPA target is invalid",
            rule: every_minute.clone(),
            federated_hpa: true,
            zone: "UTC",
            history: None,
            now: "2026-03-01T10:00:00Z",
            want: RuleStep::Invalid {
                message: "rule r: the target is a FederatedHPA, so the rule sets targetMinReplicas and/or \
                          targetMaxReplicas, not targetReplicas"
                    .into(),
            },
        },
        Case {
            name: "a zone moves the tick: 08:00 Paris in winter is 07:00 UTC",
            rule: CronRule { time_zone: Some("Europe/Paris".into()), ..rule("r", "0 8 * * *") },
            federated_hpa: false,
            zone: "Europe/Paris",
            history: Some(history(Some("2026-01-10T07:00:00Z"), &[], &[])),
            now: "2026-01-10T07:00:02Z",
            want: RuleStep::Run {
                tick: at("2026-01-10T07:00:00Z"),
                scale: Scale::Replicas(5),
                next: next_minute("2026-01-11T07:00:00Z"),
            },
        },
    ];
    for case in cases {
        let tz = zone(case.zone);
        let got = step(&case.rule, case.federated_hpa, tz.as_ref(), case.history.as_ref(), at(case.now));
        assert_eq!(got, case.want, "{}", case.name);
    }
}

#[test]
fn records_newest_first_within_limits() {
    let mut r = rule("r", "*/1 * * * *");
    r.successful_history_limit = 2;
    r.failed_history_limit = 1;
    let previous = history(
        Some("2026-03-01T10:02:00Z"),
        &["2026-03-01T10:01:00Z", "2026-03-01T10:00:00Z"],
        &["2026-03-01T09:59:00Z"],
    );
    let now = at("2026-03-01T10:02:00.4Z");
    let succeeded = record(
        &r,
        Some(&previous),
        Some(at("2026-03-01T10:03:00Z")),
        Some(Outcome::Succeeded { tick: at("2026-03-01T10:02:00Z"), scale: Scale::Replicas(4) }),
        now,
    );
    let ticks: Vec<String> =
        succeeded.successful_executions.iter().map(|e| e.schedule_time.0.to_string()).collect();
    assert_eq!(ticks, ["2026-03-01T10:02:00Z", "2026-03-01T10:01:00Z"]);
    assert_eq!(succeeded.successful_executions[0].applied_replicas, Some(4));
    assert_eq!(succeeded.successful_executions[0].execution_time.0, at("2026-03-01T10:02:00Z"));
    assert_eq!(succeeded.next_execution_time, Some(Time(at("2026-03-01T10:03:00Z"))));
    assert_eq!(succeeded.failed_executions.len(), 1);

    let failed = record(
        &r,
        Some(&succeeded),
        None,
        Some(Outcome::Failed { tick: at("2026-03-01T10:03:00Z"), message: "gone".into() }),
        now,
    );
    assert_eq!(failed.failed_executions.len(), 1);
    assert_eq!(failed.failed_executions[0].message, "gone");
    assert_eq!(failed.next_execution_time, None);

    r.successful_history_limit = 0;
    let none_kept = record(&r, Some(&succeeded), None, None, now);
    assert!(none_kept.successful_executions.is_empty());
}

#[test]
fn scale_patches_and_descriptions() {
    let cases = [
        (Scale::Replicas(3), serde_json::json!({"spec": {"replicas": 3}}), "replicas to 3"),
        (
            Scale::Bounds { min: Some(2), max: Some(9) },
            serde_json::json!({"spec": {"minReplicas": 2, "maxReplicas": 9}}),
            "minReplicas to 2 and maxReplicas to 9",
        ),
        (
            Scale::Bounds { min: None, max: Some(9) },
            serde_json::json!({"spec": {"maxReplicas": 9}}),
            "maxReplicas to 9",
        ),
    ];
    for (scale, patch, text) in cases {
        assert_eq!(scale.merge_patch(), patch);
        assert_eq!(scale.describe(), text);
    }
}

#[test]
fn run_order_and_requeue() {
    let run = |tick: &str| RuleStep::Run { tick: at(tick), scale: Scale::Replicas(1), next: Some(at(tick)) };
    let steps = vec![
        run("2026-03-01T10:02:00Z"),
        RuleStep::Wait { next: Some(at("2026-03-01T10:00:30Z")) },
        run("2026-03-01T10:01:00Z"),
        RuleStep::Invalid { message: "x".into() },
        run("2026-03-01T10:01:00Z"),
    ];
    assert_eq!(run_order(&steps), [2, 4, 0]);
    assert_eq!(requeue_after(&steps, at("2026-03-01T10:00:00Z")), Some(Duration::from_secs(30)));
    assert_eq!(requeue_after(&[RuleStep::Wait { next: None }], at("2026-03-01T10:00:00Z")), None);
    // A tick already past wakes at once.
    assert_eq!(requeue_after(&steps[1..2], at("2026-03-01T10:01:00Z")), Some(Duration::ZERO));
}

/// (name, invalid rules, histories, want (status, reason) of Valid and Applied)
type ConditionCase = (&'static str, Vec<String>, Vec<ExecutionHistory>, [(&'static str, &'static str); 2]);

#[test]
fn conditions_say_what_is_wrong() {
    let now = at("2026-03-01T10:00:00Z");
    let ok = history(None, &["2026-03-01T10:00:00Z"], &["2026-03-01T09:00:00Z"]);
    let failing =
        ExecutionHistory { rule_name: "night".into(), ..history(None, &[], &["2026-03-01T10:00:00Z"]) };
    let cases: Vec<ConditionCase> = vec![
        ("all good", vec![], vec![ok.clone()], [("True", "RulesValid"), ("True", "Succeeded")]),
        (
            "invalid and failing",
            vec!["rule x: bad zone".into()],
            vec![ok.clone(), failing.clone()],
            [("False", "InvalidRule"), ("False", "ExecutionFailed")],
        ),
    ];
    for (name, invalid, histories, want) in cases {
        let got = conditions(&invalid, &histories, &[], Some(2), now);
        let got: Vec<(&str, &str)> = got.iter().map(|c| (c.status.as_str(), c.reason.as_str())).collect();
        assert_eq!(got, want, "{name}");
    }
    let got = conditions(&["rule x: bad zone".into()], &[failing], &[], None, now);
    assert_eq!(got[0].message, "rule x: bad zone");
    assert_eq!(got[1].message, "rule night: boom");
}
