//! The node agent's Events on its Machine: what happened to the components
//! it supervises, decided from its process records before and after one
//! reconcile (`node::RunningComponent`), so they fire on transitions (a
//! component started, exited, restarted after a crash, restarted for a new
//! spec, removed) and never on a reconcile that changed nothing.
//!
//! Bounded: at most [`MAX_NOTICES`] per reconcile, and each action names the
//! component only (not the count or exit code), so a crash loop merges into
//! one recorder series per component and reason instead of a new Event per
//! crash.

use flotilla_core::events::Notice;

use crate::node::{Exit, RunningComponent};

/// Most Events one reconcile publishes on its Machine.
pub const MAX_NOTICES: usize = 10;

/// The Events on machine `machine` of its components' records changing from
/// `before` to `after`.
pub fn component_events(
    machine: &str,
    before: &[RunningComponent],
    after: &[RunningComponent],
) -> Vec<Notice> {
    let mut out = Vec::new();
    for a in after {
        let name = &a.name;
        let old = before.iter().find(|b| b.name == a.name);
        let new_process = old.is_none_or(|b| b.started_at != a.started_at || b.pid != a.pid);
        if new_process {
            match old {
                None => {}
                Some(b) if a.restarts > b.restarts => out.push(Notice::warning(
                    "ComponentRestarted",
                    &format!("Restart {name}"),
                    format!(
                        "machine {machine}: restarted {name} after it {} ({} {} so far){}",
                        exit_text(a.last_exit.as_ref()),
                        a.restarts,
                        plural(a.restarts, "restart"),
                        last_line(&a.log_tail),
                    ),
                )),
                Some(_) => out.push(Notice::normal(
                    "ComponentUpdated",
                    &format!("Update {name}"),
                    format!("machine {machine}: restarted {name} for its changed spec"),
                )),
            }
            if a.alive() {
                if old.is_none() {
                    out.push(Notice::normal(
                        "ComponentStarted",
                        &format!("Start {name}"),
                        format!("machine {machine}: started {name} (pid {})", a.pid),
                    ));
                }
                continue;
            }
        }
        // A process that was running (or was just started) has exited.
        let exited_now = !a.alive() && (new_process || old.is_some_and(RunningComponent::alive));
        if exited_now {
            let what = a.message.clone().unwrap_or_else(|| exit_text(a.exit.as_ref()));
            out.push(Notice::warning(
                "ComponentFailed",
                &format!("Fail {name}"),
                format!(
                    "machine {machine}: {name} {what} ({} {} so far){}",
                    a.restarts,
                    plural(a.restarts, "restart"),
                    last_line(&a.log_tail),
                ),
            ));
        }
    }
    for b in before.iter().filter(|b| !after.iter().any(|a| a.name == b.name)) {
        out.push(Notice::normal(
            "ComponentStopped",
            &format!("Stop {}", b.name),
            format!("machine {machine}: stopped {}: it is no longer in the Machine's spec", b.name),
        ));
    }
    out.truncate(MAX_NOTICES);
    out
}

fn exit_text(exit: Option<&Exit>) -> String {
    match exit.and_then(|e| e.code) {
        Some(c) if c > 128 => format!("was killed by signal {}", c - 128),
        Some(c) => format!("exited with code {c}"),
        None => "exited (exit code unknown)".to_string(),
    }
}

fn plural(n: u32, word: &str) -> String {
    if n == 1 {
        word.to_string()
    } else {
        format!("{word}s")
    }
}

/// The log's last line, which often says why a process died.
fn last_line(tail: &[String]) -> String {
    match tail.iter().rev().find(|l| !l.trim().is_empty()) {
        Some(line) => format!("; last log line: {}", line.trim()),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_core::events::Severity;
    use k8s_openapi::jiff::Timestamp;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn running(name: &str, pid: u32, started: i64, restarts: u32) -> RunningComponent {
        RunningComponent {
            name: name.into(),
            pid,
            start_ticks: 1,
            spec_hash: "h".into(),
            started_at: at(started),
            exit: None,
            restarts,
            restarts_in_a_row: restarts,
            last_exit: None,
            log_tail: Vec::new(),
            message: None,
        }
    }

    fn exited(mut r: RunningComponent, code: Option<i32>, message: &str) -> RunningComponent {
        r.exit = Some(Exit { code, at: at(100) });
        r.message = Some(message.into());
        r.log_tail = vec!["panic: disk full".into(), String::new()];
        r
    }

    fn restarted(r: RunningComponent, pid: u32, started: i64, code: Option<i32>) -> RunningComponent {
        RunningComponent {
            pid,
            started_at: at(started),
            exit: None,
            restarts: r.restarts + 1,
            last_exit: Some(Exit { code, at: at(started) }),
            log_tail: vec!["etcd: member lost".into()],
            ..r
        }
    }

    #[test]
    fn events_fire_on_transitions_only() {
        let etcd = running("etcd", 10, 1, 0);
        let crashed = exited(etcd.clone(), Some(137), "killed by signal 9");
        let back = restarted(crashed.clone(), 11, 5, Some(137));
        let new_spec =
            RunningComponent { pid: 12, started_at: at(9), spec_hash: "h2".into(), ..back.clone() };
        let cannot_start = exited(running("apiserver", 0, 1, 0), None, "cannot start /bin/nope: not found");
        type Case =
            (&'static str, Vec<RunningComponent>, Vec<RunningComponent>, Vec<(Severity, &'static str)>);
        let cases: Vec<Case> = vec![
            ("nothing changed", vec![etcd.clone()], vec![etcd.clone()], vec![]),
            ("first start", vec![], vec![etcd.clone()], vec![(Severity::Normal, "ComponentStarted")]),
            (
                "a crash",
                vec![etcd.clone()],
                vec![crashed.clone()],
                vec![(Severity::Warning, "ComponentFailed")],
            ),
            ("still down, waiting for backoff", vec![crashed.clone()], vec![crashed.clone()], vec![]),
            (
                "restarted after the backoff",
                vec![crashed.clone()],
                vec![back.clone()],
                vec![(Severity::Warning, "ComponentRestarted")],
            ),
            // Crash seen and restarted within one reconcile: the restart
            // says why.
            (
                "crash and restart at once",
                vec![etcd.clone()],
                vec![back.clone()],
                vec![(Severity::Warning, "ComponentRestarted")],
            ),
            (
                "spec change",
                vec![back.clone()],
                vec![new_spec.clone()],
                vec![(Severity::Normal, "ComponentUpdated")],
            ),
            (
                "cannot start",
                vec![],
                vec![cannot_start.clone()],
                vec![(Severity::Warning, "ComponentFailed")],
            ),
            ("cannot start again", vec![cannot_start.clone()], vec![cannot_start.clone()], vec![]),
            ("removed", vec![etcd.clone()], vec![], vec![(Severity::Normal, "ComponentStopped")]),
        ];
        for (name, before, after, want) in cases {
            let got: Vec<(Severity, String)> =
                component_events("m1", &before, &after).into_iter().map(|n| (n.severity, n.reason)).collect();
            let want: Vec<(Severity, String)> = want.into_iter().map(|(s, r)| (s, r.to_string())).collect();
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn messages_carry_exit_status_restarts_and_the_last_log_line() {
        let etcd = running("etcd", 10, 1, 0);
        let crashed = exited(etcd.clone(), Some(137), "killed by signal 9");
        let failed = &component_events("m1", &[etcd], std::slice::from_ref(&crashed))[0];
        assert_eq!(
            failed.message,
            "machine m1: etcd killed by signal 9 (0 restarts so far); last log line: panic: disk full"
        );
        let back = restarted(crashed.clone(), 11, 5, Some(137));
        let restart = &component_events("m1", &[crashed], &[back])[0];
        assert_eq!(
            restart.message,
            "machine m1: restarted etcd after it was killed by signal 9 (1 restart so far); last log line: etcd: member lost"
        );
        // The action names the component only, so a crash loop is one
        // recorder series.
        assert_eq!(restart.action, "Restart etcd");
    }

    #[test]
    fn a_reconcile_publishes_a_bounded_number() {
        let many: Vec<RunningComponent> = (0..30).map(|i| running(&format!("c{i}"), i + 1, 1, 0)).collect();
        assert_eq!(component_events("m1", &[], &many).len(), MAX_NOTICES);
    }
}
