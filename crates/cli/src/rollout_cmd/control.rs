//! `pause`, `resume`, `promote` and `abort`: which annotations to write on
//! the Rollout (`flotilla_api::rollout::control`) and what to tell the
//! user, or why the request makes no sense now.

use std::collections::BTreeMap;

use flotilla_api::rollout::{control, RolloutStatus};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Pause,
    Resume,
    /// `all`: every remaining wave now; otherwise skip the current wave's soak.
    Promote {
        all: bool,
    },
    Abort,
}

/// What to write (annotation → value, `None` removes it; empty: nothing to
/// write) and what to say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub annotations: BTreeMap<String, Option<String>>,
    pub said: String,
}

fn write(key: &str, value: Option<String>, said: String) -> Decision {
    Decision { annotations: BTreeMap::from([(key.to_string(), value)]), said }
}

fn nothing(said: String) -> Decision {
    Decision { annotations: BTreeMap::new(), said }
}

/// The decision for `action` on Rollout `name` (`cmd`: how to run a
/// command on it, e.g. `flotilla rollout resume web-deployment -n shop`
/// without the verb: `flotilla rollout {} web-deployment -n shop`).
pub fn decide(
    action: Action,
    name: &str,
    cmd: &dyn Fn(&str) -> String,
    status: Option<&RolloutStatus>,
    annotations: &BTreeMap<String, String>,
) -> Result<Decision, String> {
    let paused = annotations.get(control::PAUSED).is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let status = status.filter(|s| !s.phase.is_empty() && !s.revision.is_empty());
    match action {
        Action::Pause if paused => Ok(nothing(format!("rollout {name} is paused already"))),
        Action::Pause => {
            let said = match status.map(|s| (s.phase.as_str(), s)) {
                Some(("Progressing" | "Soaking", s)) => format!(
                    "rollout {name} paused: revision {} stays on wave {} of {} (the wave's own rollout and a \
                     rollback on failure go on); `{}` to go on",
                    s.revision_number,
                    s.wave,
                    s.waves.len(),
                    cmd("resume")
                ),
                _ => format!(
                    "rollout {name} paused: the next change stops after its first wave until `{}`",
                    cmd("resume")
                ),
            };
            Ok(write(control::PAUSED, Some("true".into()), said))
        }
        Action::Resume if !paused => Err(format!("rollout {name} is not paused")),
        Action::Resume => {
            let said = match status {
                Some(s) if s.phase == "Paused" => {
                    format!(
                        "rollout {name} resumed: revision {} goes on from wave {}",
                        s.revision_number, s.wave
                    )
                }
                _ => format!("rollout {name} resumed"),
            };
            Ok(write(control::PAUSED, None, said))
        }
        Action::Promote { all } => {
            let s = under_way(name, status, "promote", cmd)?;
            let waves = s.waves.len();
            let last = usize::try_from(s.wave).unwrap_or(0) >= waves;
            let (value, mut said) = if all {
                let said = if last {
                    format!(
                        "rollout {name} promoted: wave {} of {waves} (the last) skips its soak; revision {} is \
                         complete once it is healthy",
                        s.wave, s.revision_number
                    )
                } else {
                    format!(
                        "rollout {name} promoted: revision {} goes to every remaining wave ({} to {waves}) now",
                        s.revision_number,
                        s.wave + 1
                    )
                };
                (format!("{}/all", s.revision), said)
            } else {
                let next = if last {
                    format!("revision {} is complete once it is healthy", s.revision_number)
                } else {
                    format!("wave {} starts once wave {} is healthy", s.wave + 1, s.wave)
                };
                (
                    format!("{}/{}", s.revision, s.wave),
                    format!("rollout {name} promoted: wave {} of {waves} skips its soak; {next}", s.wave),
                )
            };
            if annotations.get(control::PROMOTE) == Some(&value) {
                return Ok(nothing(format!("rollout {name} is promoted already ({value})")));
            }
            if paused {
                said.push_str(&format!("; it is still paused: `{}` to go on", cmd("resume")));
            }
            Ok(write(control::PROMOTE, Some(value), said))
        }
        Action::Abort => {
            let s = under_way(name, status, "abort", cmd)?;
            if annotations.get(control::ABORT) == Some(&s.revision) {
                return Ok(nothing(format!(
                    "rollout {name}: the abort of revision {} is requested already",
                    s.revision_number
                )));
            }
            let back = s
                .stable_revision_number
                .map_or("the stable revision".to_string(), |n| format!("revision {n}"));
            Ok(write(
                control::ABORT,
                Some(s.revision.clone()),
                format!(
                    "rollout {name} aborted: every cluster given revision {} goes back to {back}; it is not tried \
                     again until the template changes",
                    s.revision_number
                ),
            ))
        }
    }
}

/// The status of a rollout under way, or why `verb` makes no sense.
fn under_way<'a>(
    name: &str,
    status: Option<&'a RolloutStatus>,
    verb: &str,
    cmd: &dyn Fn(&str) -> String,
) -> Result<&'a RolloutStatus, String> {
    let Some(s) = status else {
        return Err(format!("rollout {name} has no status yet: nothing to {verb}"));
    };
    match s.phase.as_str() {
        "Progressing" | "Soaking" | "Paused" => Ok(s),
        "Complete" => Err(format!(
            "rollout {name}: revision {} is complete on every cluster: nothing to {verb}{}",
            s.revision_number,
            if verb == "abort" { format!(" (`{}` changes the template back)", cmd("undo")) } else { String::new() }
        )),
        "RolledBack" => Err(format!(
            "rollout {name}: revision {} was rolled back already ({}): nothing to {verb}; change the template or `{}`",
            s.revision_number,
            s.failure.as_ref().map_or("no reason recorded", |f| f.reason.as_str()),
            cmd("undo")
        )),
        other => Err(format!("rollout {name} is {other}: nothing to {verb}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_api::rollout::{RolloutFailure, WaveStatus};

    fn status(phase: &str, wave: i32) -> RolloutStatus {
        RolloutStatus {
            phase: phase.into(),
            revision: "r3".into(),
            revision_number: 3,
            stable_revision: Some("r2".into()),
            stable_revision_number: Some(2),
            wave,
            waves: vec![WaveStatus::default(); 3],
            failure: (phase == "RolledBack").then(|| RolloutFailure {
                revision: "r3".into(),
                cluster: None,
                reason: "aborted by the user".into(),
            }),
            ..Default::default()
        }
    }

    fn cmd(verb: &str) -> String {
        format!("flotilla rollout {verb} web-deployment")
    }

    fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// (action, phase, wave, annotations) → Ok(written annotation, value) / Err(part of the refusal).
    #[test]
    fn each_control_writes_its_annotation_or_says_why_not() {
        use Action::*;
        let paused = [(control::PAUSED, "true")];
        type Want = Result<Option<(&'static str, Option<&'static str>)>, &'static str>;
        type Case<'a> = (Action, &'a str, i32, &'a [(&'a str, &'a str)], Want);
        let cases: Vec<Case> = vec![
            (Pause, "Soaking", 1, &[], Ok(Some((control::PAUSED, Some("true"))))),
            (Pause, "Complete", 3, &[], Ok(Some((control::PAUSED, Some("true"))))),
            (Pause, "Paused", 1, &paused, Ok(None)),
            (Resume, "Paused", 1, &paused, Ok(Some((control::PAUSED, None)))),
            (Resume, "Soaking", 1, &[], Err("is not paused")),
            (Promote { all: false }, "Soaking", 1, &[], Ok(Some((control::PROMOTE, Some("r3/1"))))),
            (Promote { all: false }, "Progressing", 2, &[], Ok(Some((control::PROMOTE, Some("r3/2"))))),
            (Promote { all: true }, "Paused", 1, &paused, Ok(Some((control::PROMOTE, Some("r3/all"))))),
            (Promote { all: true }, "Soaking", 1, &[(control::PROMOTE, "r3/all")], Ok(None)),
            (
                Promote { all: true },
                "Soaking",
                1,
                &[(control::PROMOTE, "r2/all")],
                Ok(Some((control::PROMOTE, Some("r3/all")))),
            ),
            (
                Promote { all: false },
                "Complete",
                3,
                &[],
                Err("complete on every cluster: nothing to promote"),
            ),
            (Promote { all: true }, "RolledBack", 1, &[], Err("rolled back already (aborted by the user)")),
            (Abort, "Soaking", 2, &[], Ok(Some((control::ABORT, Some("r3"))))),
            (Abort, "Paused", 1, &paused, Ok(Some((control::ABORT, Some("r3"))))),
            (Abort, "Soaking", 2, &[(control::ABORT, "r3")], Ok(None)),
            (Abort, "Complete", 3, &[], Err("nothing to abort (`flotilla rollout undo web-deployment`")),
            (Abort, "RolledBack", 1, &[], Err("nothing to abort")),
            (Abort, "", 0, &[], Err("no status yet")),
        ];
        for (action, phase, wave, annotations, want) in cases {
            let s = status(phase, wave);
            let got = decide(action, "web-deployment", &cmd, Some(&s), &ann(annotations));
            match (got, want) {
                (Ok(d), Ok(w)) => {
                    let written: Vec<(&str, Option<&str>)> =
                        d.annotations.iter().map(|(k, v)| (k.as_str(), v.as_deref())).collect();
                    assert_eq!(written, w.into_iter().collect::<Vec<_>>(), "{action:?} {phase}: {}", d.said);
                    assert!(!d.said.is_empty());
                }
                (Err(e), Err(part)) => assert!(e.contains(part), "{action:?} {phase}: {e}"),
                (got, want) => panic!("{action:?} {phase}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn what_is_said_names_the_waves() {
        let d = |a, phase, wave, ann: &[(&str, &str)]| {
            decide(a, "web-deployment", &cmd, Some(&status(phase, wave)), &super::tests::ann(ann))
                .unwrap()
                .said
        };
        assert_eq!(
            d(Action::Promote { all: false }, "Soaking", 1, &[]),
            "rollout web-deployment promoted: wave 1 of 3 skips its soak; wave 2 starts once wave 1 is healthy"
        );
        assert_eq!(
            d(Action::Promote { all: false }, "Soaking", 3, &[]),
            "rollout web-deployment promoted: wave 3 of 3 skips its soak; revision 3 is complete once it is healthy"
        );
        assert_eq!(
            d(Action::Promote { all: true }, "Paused", 1, &[(control::PAUSED, "true")]),
            "rollout web-deployment promoted: revision 3 goes to every remaining wave (2 to 3) now; it is still \
             paused: `flotilla rollout resume web-deployment` to go on"
        );
        assert_eq!(
            d(Action::Abort, "Soaking", 1, &[]),
            "rollout web-deployment aborted: every cluster given revision 3 goes back to revision 2; it is not \
             tried again until the template changes"
        );
        assert!(d(Action::Pause, "Soaking", 1, &[])
            .starts_with("rollout web-deployment paused: revision 3 stays on wave 1 of 3"));
        assert_eq!(
            d(Action::Resume, "Paused", 2, &[(control::PAUSED, "true")]),
            "rollout web-deployment resumed: revision 3 goes on from wave 2"
        );
    }
}
