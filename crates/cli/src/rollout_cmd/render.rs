//! What `flotilla rollout status` and `history` print, from a Rollout's
//! status and its kept revisions; pure (the caller passes `now`, in Unix
//! seconds, and the width).

use std::collections::BTreeMap;

use comfy_table::{ContentArrangement, Table};
use flotilla_api::rollout::{RolloutStatus, TemplateReference};
use flotilla_apps_core::rollout_status::control_of;

/// `42s`, `2m05s`, `1h02m`.
pub fn clock(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// An age as kubectl shows it: `5s`, `3m`, `2h`, `4d`.
pub fn age(seconds: i64) -> String {
    match seconds.max(0) {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// How long the current wave has left: in its soak, or to its progress
/// deadline; `None` when no wave is under way.
pub fn time_left(status: &RolloutStatus, now: i64) -> Option<String> {
    let since = |t: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| {
        t.as_ref().map(|t| now - t.0.as_second())
    };
    match status.phase.as_str() {
        "Soaking" => {
            let left = status.soak_seconds - since(&status.soak_started_at)?;
            Some(format!("{} left in the soak (of {})", clock(left), clock(status.soak_seconds)))
        }
        "Progressing" => {
            let left = status.progress_deadline_seconds - since(&status.wave_started_at)?;
            Some(if left >= 0 {
                format!("{} to its deadline (of {})", clock(left), clock(status.progress_deadline_seconds))
            } else {
                format!("past its deadline by {}: the hub rolls it back", clock(-left))
            })
        }
        "Paused" => Some(match since(&status.soak_started_at) {
            Some(soaked) if soaked < status.soak_seconds => {
                format!("the soak has {} left", clock(status.soak_seconds - soaked))
            }
            Some(_) => "soaked; waits for resume".to_string(),
            None => "waits for resume".to_string(),
        }),
        _ => None,
    }
}

/// Whether the rollout is done: `Some(true)` Complete, `Some(false)`
/// RolledBack, `None` still under way (or no status yet).
pub fn finished(status: Option<&RolloutStatus>) -> Option<bool> {
    match status.map(|s| s.phase.as_str()) {
        Some("Complete") => Some(true),
        Some("RolledBack") => Some(false),
        _ => None,
    }
}

/// The state of wave `wave` (from 1).
pub fn wave_state(status: &RolloutStatus, wave: i32) -> &'static str {
    let current = status.wave;
    match status.phase.as_str() {
        "Complete" => "done",
        "RolledBack" if wave <= current => "rolled back",
        "RolledBack" => "not reached",
        _ if wave < current => "done",
        _ if wave > current => "waiting",
        "Progressing" => "rolling out",
        "Soaking" => "soaking",
        "Paused" => "paused",
        _ => "unknown",
    }
}

/// A revision as a person reads it: its number when it is the rollout's
/// revision or the stable one, else its hash cut to 8 characters.
pub fn revision_label(status: &RolloutStatus, hash: &str) -> String {
    if hash == status.revision {
        status.revision_number.to_string()
    } else if Some(hash) == status.stable_revision.as_deref() {
        status.stable_revision_number.map_or_else(|| short(hash), |n| n.to_string())
    } else {
        short(hash)
    }
}

fn short(hash: &str) -> String {
    hash.chars().take(8).collect()
}

/// A borderless table `width` columns wide (`None`: as wide as its
/// content, for a pipe).
pub fn table(header: Vec<&str>, width: Option<usize>) -> Table {
    let mut t = Table::new();
    t.load_style(comfy_table::presets::NOTHING).set_header(header);
    if let Some(width) = width {
        t.set_content_arrangement(ContentArrangement::Dynamic)
            .set_width(u16::try_from(width).unwrap_or(u16::MAX));
    } else {
        t.set_content_arrangement(ContentArrangement::Disabled);
    }
    t
}

/// What the status command shows of one Rollout.
pub struct StatusView<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub template: &'a TemplateReference,
    pub strategy: &'a str,
    pub status: Option<&'a RolloutStatus>,
    pub annotations: &'a BTreeMap<String, String>,
    pub now: i64,
    /// Columns to fit (a terminal's); `None`: no limit.
    pub width: Option<usize>,
}

fn revision_text(number: Option<i64>, hash: Option<&str>) -> String {
    match (number, hash) {
        (Some(n), Some(h)) => format!("{n} ({h})"),
        (None, Some(h)) => h.to_string(),
        _ => "none".to_string(),
    }
}

/// The controls in effect: paused (which holds the next change too), and
/// while a revision is under way its promotion or abort (annotations
/// naming an earlier revision or wave are old news and not shown).
fn controls(status: &RolloutStatus, annotations: &BTreeMap<String, String>) -> Vec<String> {
    let wave = usize::try_from(status.wave.max(1) - 1).unwrap_or(0);
    let c = control_of(annotations, &status.revision, wave);
    let mut out = Vec::new();
    if c.paused {
        out.push("paused (`flotilla rollout resume` goes on)".to_string());
    }
    if !matches!(status.phase.as_str(), "Progressing" | "Soaking" | "Paused") {
        return out;
    }
    if c.finish {
        out.push("promoted: every remaining wave".to_string());
    } else if c.skip_soak {
        out.push(format!("promoted: wave {} skips its soak", status.wave))
    }
    if c.abort {
        out.push("abort requested".to_string());
    }
    out
}

/// The whole status: what rolls out, where it is, the time left, the
/// failure, then one row per cluster grouped by wave.
pub fn status_text(v: &StatusView) -> String {
    let mut out = format!(
        "Rollout {}/{}: {} {}, strategy {}\n",
        v.namespace, v.name, v.template.kind, v.template.name, v.strategy
    );
    let Some(s) = v.status.filter(|s| !s.phase.is_empty()) else {
        out.push_str(
            "No status yet: the hub has not rolled this template out (is `flotilla hub run` running?)\n",
        );
        return out;
    };
    let waves = s.waves.len();
    out.push_str(&format!(
        "Revision:  {}   stable: {}\n",
        revision_text(Some(s.revision_number), Some(&s.revision)),
        revision_text(s.stable_revision_number, s.stable_revision.as_deref())
    ));
    let phase = match s.phase.as_str() {
        "Complete" | "RolledBack" => format!("{}: {}", s.phase, s.message),
        _ => {
            let left = time_left(s, v.now).map(|l| format!(", {l}")).unwrap_or_default();
            format!("{}: wave {} of {waves}{left}", s.phase, s.wave)
        }
    };
    out.push_str(&format!("Phase:     {phase}\n"));
    let controls = controls(s, v.annotations);
    if !controls.is_empty() {
        out.push_str(&format!("Controls:  {}\n", controls.join("; ")));
    }
    if let Some(f) = &s.failure {
        let cluster = f.cluster.as_deref().map(|c| format!(" in {c}")).unwrap_or_default();
        out.push_str(&format!(
            "Failure:   revision {}{cluster}: {}\n",
            revision_label(s, &f.revision),
            f.reason
        ));
    }
    if s.clusters.is_empty() {
        out.push_str("No target clusters.\n");
        return out;
    }
    let mut t = table(vec!["WAVE", "STATE", "CLUSTER", "GIVEN", "RUNNING", "GATE", "MESSAGE"], v.width);
    let mut shown_wave = 0;
    let mut clusters: Vec<_> = s.clusters.iter().collect();
    clusters.sort_by(|a, b| a.wave.cmp(&b.wave).then(a.name.cmp(&b.name)));
    for c in clusters {
        let (wave, state) = if c.wave == shown_wave {
            (String::new(), String::new())
        } else {
            shown_wave = c.wave;
            (format!("{}/{waves}", c.wave), wave_state(s, c.wave).to_string())
        };
        let given = match c.given.as_str() {
            "new" => format!("new ({})", s.revision_number),
            "stable" => match s.stable_revision_number {
                Some(n) => format!("stable ({n})"),
                None => "stable".to_string(),
            },
            other => other.to_string(),
        };
        let running = c.running.as_deref().map_or_else(|| "-".to_string(), |h| revision_label(s, h));
        t.add_row(vec![wave, state, c.name.clone(), given, running, c.gate.clone(), c.message.clone()]);
    }
    out.push('\n');
    out.push_str(&t.to_string());
    out.push('\n');
    out
}

/// One line on where the rollout is, for logs (a watch not on a terminal
/// prints it each time it changes).
pub fn summary(status: Option<&RolloutStatus>) -> String {
    let Some(s) = status.filter(|s| !s.phase.is_empty()) else {
        return "waiting for the hub to write the rollout's status".to_string();
    };
    let healthy = s.clusters.iter().filter(|c| c.given == "new" && c.gate == "Healthy").count();
    let given = s.clusters.iter().filter(|c| c.given == "new").count();
    match s.phase.as_str() {
        "Complete" | "RolledBack" => format!("revision {}: {}: {}", s.revision_number, s.phase, s.message),
        phase => format!(
            "revision {}: {phase}: wave {} of {}, {healthy} of {given} clusters healthy on it (of {})",
            s.revision_number,
            s.wave,
            s.waves.len(),
            s.clusters.len()
        ),
    }
}

/// A kept revision as `history` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct KeptRevision {
    pub number: i64,
    pub hash: String,
    /// Unix seconds.
    pub created: Option<i64>,
    pub changes: Vec<String>,
}

/// What a revision is to the rollout: current, stable, failed.
pub fn revision_roles(status: Option<&RolloutStatus>, hash: &str) -> String {
    let Some(s) = status else { return String::new() };
    let mut roles = Vec::new();
    if s.revision == hash {
        roles.push(match s.phase.as_str() {
            "Complete" => "current",
            "RolledBack" => "current, rolled back",
            _ => "current, rolling out",
        });
    }
    if s.stable_revision.as_deref() == Some(hash) && s.revision != hash {
        roles.push("stable");
    }
    if s.failure.as_ref().is_some_and(|f| f.revision == hash)
        && !(s.revision == hash && s.phase == "RolledBack")
    {
        roles.push("failed");
    }
    roles.join(", ")
}

/// The kept revisions, newest first.
pub fn history_text(
    kept: &[KeptRevision],
    status: Option<&RolloutStatus>,
    now: i64,
    width: Option<usize>,
) -> String {
    let mut kept: Vec<&KeptRevision> = kept.iter().collect();
    kept.sort_by(|a, b| b.number.cmp(&a.number).then(b.created.cmp(&a.created)));
    let mut t = table(vec!["REVISION", "HASH", "AGE", "STATUS", "CHANGES"], width);
    for r in kept {
        t.add_row(vec![
            r.number.to_string(),
            r.hash.clone(),
            r.created.map_or_else(|| "-".to_string(), |c| age(now - c)),
            revision_roles(status, &r.hash),
            if r.changes.is_empty() { "-".to_string() } else { r.changes.join("\n") },
        ]);
    }
    format!("{t}\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_api::rollout::{ClusterRolloutStatus, RolloutFailure, WaveStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    const NOW: i64 = 1_000_000;

    fn at(seconds: i64) -> Option<Time> {
        Some(Time(k8s_openapi::jiff::Timestamp::from_second(seconds).unwrap()))
    }

    fn cluster(
        name: &str,
        wave: i32,
        given: &str,
        running: &str,
        gate: &str,
        message: &str,
    ) -> ClusterRolloutStatus {
        ClusterRolloutStatus {
            name: name.into(),
            wave,
            given: given.into(),
            running: (!running.is_empty()).then(|| running.into()),
            gate: gate.into(),
            message: message.into(),
        }
    }

    /// Revision 3 (`r3`) over stable 2 (`r2`), m1 | m2 m3 | m4.
    fn status(phase: &str, wave: i32) -> RolloutStatus {
        let given = |w: i32| if w <= wave { "new" } else { "stable" };
        let running = |w: i32| if w <= wave { "r3" } else { "r2" };
        RolloutStatus {
            phase: phase.into(),
            revision: "r3".into(),
            revision_number: 3,
            stable_revision: Some("r2".into()),
            stable_revision_number: Some(2),
            wave,
            wave_text: format!("{wave}/3"),
            waves: vec![
                WaveStatus { clusters: vec!["m1".into()] },
                WaveStatus { clusters: vec!["m2".into(), "m3".into()] },
                WaveStatus { clusters: vec!["m4".into()] },
            ],
            wave_started_at: at(NOW - 20),
            soak_started_at: (phase == "Soaking" || phase == "Paused").then(|| at(NOW - 10)).flatten(),
            soak_seconds: 30,
            progress_deadline_seconds: 600,
            clusters: vec![
                cluster("m1", 1, given(1), running(1), "Healthy", ""),
                cluster("m2", 2, given(2), running(2), "Healthy", ""),
                cluster("m3", 2, given(2), running(2), "Healthy", ""),
                cluster("m4", 3, given(3), running(3), "Healthy", ""),
            ],
            ..Default::default()
        }
    }

    #[test]
    fn clocks_and_ages_read_like_kubectl() {
        let cases = [
            (0, "0s", "0s"),
            (42, "42s", "42s"),
            (125, "2m05s", "2m"),
            (3725, "1h02m", "62m"),
            (-5, "0s", "0s"),
        ];
        for (s, c, a) in cases {
            assert_eq!((clock(s).as_str(), age(s).as_str()), (c, a), "{s}");
        }
        assert_eq!(age(200_000), "2d");
    }

    #[test]
    fn time_left_counts_down_the_soak_or_the_deadline() {
        let mut late = status("Progressing", 1);
        late.wave_started_at = at(NOW - 605);
        let mut soaked_paused = status("Paused", 1);
        soaked_paused.soak_started_at = at(NOW - 40);
        let mut paused_rolling = status("Paused", 1);
        paused_rolling.soak_started_at = None;
        let cases: Vec<(RolloutStatus, Option<&str>)> = vec![
            (status("Soaking", 1), Some("20s left in the soak (of 30s)")),
            (status("Progressing", 2), Some("9m40s to its deadline (of 10m00s)")),
            (late, Some("past its deadline by 5s: the hub rolls it back")),
            (status("Paused", 1), Some("the soak has 20s left")),
            (soaked_paused, Some("soaked; waits for resume")),
            (paused_rolling, Some("waits for resume")),
            (status("Complete", 3), None),
            (status("RolledBack", 1), None),
        ];
        for (s, want) in cases {
            assert_eq!(time_left(&s, NOW).as_deref(), want, "{}", s.phase);
        }
    }

    #[test]
    fn each_wave_has_a_state_from_the_phase_and_the_current_wave() {
        let cases = [
            ("Soaking", 2, ["done", "soaking", "waiting"]),
            ("Progressing", 1, ["rolling out", "waiting", "waiting"]),
            ("Paused", 3, ["done", "done", "paused"]),
            ("Complete", 3, ["done", "done", "done"]),
            ("RolledBack", 2, ["rolled back", "rolled back", "not reached"]),
        ];
        for (phase, wave, want) in cases {
            let s = status(phase, wave);
            let got: Vec<&str> = (1..=3).map(|w| wave_state(&s, w)).collect();
            assert_eq!(got, want, "{phase} at wave {wave}");
        }
    }

    #[test]
    fn finished_is_complete_or_rolled_back() {
        assert_eq!(finished(Some(&status("Complete", 3))), Some(true));
        assert_eq!(finished(Some(&status("RolledBack", 1))), Some(false));
        assert_eq!(finished(Some(&status("Soaking", 1))), None);
        assert_eq!(finished(None), None);
    }

    fn view<'a>(
        s: Option<&'a RolloutStatus>,
        t: &'a TemplateReference,
        a: &'a BTreeMap<String, String>,
    ) -> StatusView<'a> {
        StatusView {
            namespace: "shop",
            name: "web-deployment",
            template: t,
            strategy: "gray",
            status: s,
            annotations: a,
            now: NOW,
            width: Some(100),
        }
    }

    fn template() -> TemplateReference {
        TemplateReference { api_version: "apps/v1".into(), kind: "Deployment".into(), name: "web".into() }
    }

    #[test]
    fn the_status_shows_waves_clusters_gates_and_time_left() {
        let mut s = status("Soaking", 1);
        s.clusters[0].message = "".into();
        let annotations =
            BTreeMap::from([(flotilla_api::rollout::control::PAUSED.to_string(), "true".to_string())]);
        let t = template();
        let text = status_text(&view(Some(&s), &t, &annotations));
        let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
        assert_eq!(lines[0], "Rollout shop/web-deployment: Deployment web, strategy gray");
        assert_eq!(lines[1], "Revision:  3 (r3)   stable: 2 (r2)");
        assert_eq!(lines[2], "Phase:     Soaking: wave 1 of 3, 20s left in the soak (of 30s)");
        assert_eq!(lines[3], "Controls:  paused (`flotilla rollout resume` goes on)");
        let rows: Vec<Vec<&str>> = lines[5..].iter().map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(rows[0], ["WAVE", "STATE", "CLUSTER", "GIVEN", "RUNNING", "GATE", "MESSAGE"]);
        assert_eq!(rows[1], ["1/3", "soaking", "m1", "new", "(3)", "3", "Healthy"]);
        assert_eq!(rows[2], ["2/3", "waiting", "m2", "stable", "(2)", "2", "Healthy"]);
        assert_eq!(rows[3], ["m3", "stable", "(2)", "2", "Healthy"], "a wave's state shows once");
        assert_eq!(rows[4], ["3/3", "waiting", "m4", "stable", "(2)", "2", "Healthy"]);
        assert!(lines.iter().all(|l| l.chars().count() <= 100), "{text}");
    }

    #[test]
    fn a_rolled_back_status_shows_the_failure_and_the_gate_message() {
        let mut s = status("RolledBack", 1);
        s.message = "revision 3 rolled back to revision 2: m1: CrashLoopBackOff: pod web-1".into();
        s.failure = Some(RolloutFailure {
            revision: "r3".into(),
            cluster: Some("m1".into()),
            reason: "m1: CrashLoopBackOff: pod web-1".into(),
        });
        s.clusters[0] = cluster("m1", 1, "stable", "r3", "Failed", "m1: CrashLoopBackOff: pod web-1");
        let t = template();
        let text = status_text(&view(Some(&s), &t, &BTreeMap::new()));
        assert!(text.contains("Phase:     RolledBack: revision 3 rolled back to revision 2"), "{text}");
        assert!(text.contains("Failure:   revision 3 in m1: m1: CrashLoopBackOff: pod web-1"), "{text}");
        let row = text.lines().find(|l| l.contains("Failed")).unwrap();
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cells[..7], ["1/3", "rolled", "back", "m1", "stable", "(2)", "3"], "{text}");
    }

    #[test]
    fn a_status_not_written_yet_says_so() {
        let t = template();
        let text = status_text(&view(None, &t, &BTreeMap::new()));
        assert!(text.contains("No status yet"), "{text}");
        assert_eq!(summary(None), "waiting for the hub to write the rollout's status");
    }

    #[test]
    fn old_controls_are_not_shown() {
        let s = status("Soaking", 2);
        let a = |k: &str, v: &str| BTreeMap::from([(k.to_string(), v.to_string())]);
        use flotilla_api::rollout::control::{ABORT, PROMOTE};
        assert_eq!(controls(&s, &a(PROMOTE, "r3/2")), ["promoted: wave 2 skips its soak"]);
        assert_eq!(controls(&s, &a(PROMOTE, "r3/all")), ["promoted: every remaining wave"]);
        assert!(controls(&s, &a(PROMOTE, "r2/all")).is_empty());
        assert!(controls(&s, &a(PROMOTE, "r3/1")).is_empty());
        assert_eq!(controls(&s, &a(ABORT, "r3")), ["abort requested"]);
        assert!(controls(&s, &a(ABORT, "r2")).is_empty());
        // Done: a promotion or abort is history; paused holds the next change.
        assert!(controls(&status("Complete", 3), &a(PROMOTE, "r3/all")).is_empty());
        assert!(controls(&status("RolledBack", 1), &a(ABORT, "r3")).is_empty());
        let paused = a(flotilla_api::rollout::control::PAUSED, "true");
        assert_eq!(controls(&status("Complete", 3), &paused), ["paused (`flotilla rollout resume` goes on)"]);
    }

    #[test]
    fn the_summary_counts_clusters_healthy_on_the_revision() {
        assert_eq!(
            summary(Some(&status("Soaking", 2))),
            "revision 3: Soaking: wave 2 of 3, 3 of 3 clusters healthy on it (of 4)"
        );
    }

    #[test]
    fn history_lists_revisions_newest_first_with_their_roles() {
        let kept = vec![
            KeptRevision {
                number: 1,
                hash: "r1".into(),
                created: Some(NOW - 600),
                changes: vec!["first revision".into()],
            },
            KeptRevision {
                number: 3,
                hash: "r3".into(),
                created: Some(NOW - 5),
                changes: vec![
                    "/spec/template/spec/containers/0/image: web:3".into(),
                    "OverridePolicy shop/x added".into(),
                ],
            },
            KeptRevision { number: 2, hash: "r2".into(), created: Some(NOW - 130), changes: vec![] },
        ];
        let s = status("Soaking", 1);
        let text = history_text(&kept, Some(&s), NOW, Some(100));
        let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(rows[0], ["REVISION", "HASH", "AGE", "STATUS", "CHANGES"]);
        assert_eq!(
            rows[1],
            [
                "3",
                "r3",
                "5s",
                "current,",
                "rolling",
                "out",
                "/spec/template/spec/containers/0/image:",
                "web:3"
            ]
        );
        assert_eq!(rows[2], ["OverridePolicy", "shop/x", "added"]);
        assert_eq!(rows[3], ["2", "r2", "2m", "stable", "-"]);
        assert_eq!(rows[4], ["1", "r1", "10m", "first", "revision"]);
    }

    #[test]
    fn roles_name_current_stable_and_failed() {
        let mut back = status("RolledBack", 1);
        back.failure = Some(RolloutFailure {
            revision: "r3".into(),
            cluster: None,
            reason: "aborted by the user".into(),
        });
        let mut later = status("Progressing", 1);
        later.failure = Some(RolloutFailure { revision: "r1".into(), cluster: None, reason: "x".into() });
        let complete = RolloutStatus { stable_revision: Some("r3".into()), ..status("Complete", 3) };
        let cases: Vec<(&RolloutStatus, &str, &str)> = vec![
            (&back, "r3", "current, rolled back"),
            (&back, "r2", "stable"),
            (&later, "r1", "failed"),
            (&complete, "r3", "current"),
            (&complete, "r2", ""),
        ];
        for (s, hash, want) in cases {
            assert_eq!(revision_roles(Some(s), hash), want, "{} {hash}", s.phase);
        }
    }
}
