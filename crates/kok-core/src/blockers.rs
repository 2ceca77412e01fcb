//! Which of a HostedCluster's conditions say it cannot be built as asked,
//! so that a command waiting on it (`flotilla cluster create`) stops early
//! and says why instead of waiting out its timeout.
//!
//! A reason is one of three [`Outlook`]s. Most say the operators are on
//! their way ([`Outlook::Progressing`]). Some wait on a person or on a
//! Machine that is not there ([`Outlook::NeedsAction`]: too few Machines
//! for the etcd members, no usable Machine for a part); those can also be a
//! moment of a change that resolves itself (a Machine still registering, a
//! node agent restarting), so a waiting command gives up on one only after
//! it has held, unchanged, for a grace ([`NEEDS_ACTION_GRACE`]). A few
//! nothing but a new spec changes ([`Outlook::Refused`]: an invalid spec,
//! etcd asked to scale down, every etcd member's data gone): those end the
//! wait at once.
//!
//! Pure: the caller passes the time it has waited so far.

use std::time::Duration;

use flotilla_api::kok::conditions;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use crate::etcd::reasons as etcd;
use crate::hosted_status::NO_MACHINE;
use crate::upgrade::reasons as upgrade;

/// How long a condition that waits on a person must hold, unchanged, before
/// a waiting command gives up on it: longer than the operators' resync
/// (10 s), so a Machine that registers within it is seen before.
pub const NEEDS_ACTION_GRACE: Duration = Duration::from_secs(30);

/// What a condition's reason says of the cluster's future.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outlook {
    /// The operators are on their way (or the condition holds).
    Progressing,
    /// Only a person or a Machine that is not there yet changes it.
    NeedsAction,
    /// Only a new spec changes it.
    Refused,
}

/// The outlook of one condition of a HostedCluster.
pub fn outlook(condition: &Condition) -> Outlook {
    if condition.status == "True" {
        return Outlook::Progressing;
    }
    let reason = condition.reason.as_str();
    match condition.type_.as_str() {
        conditions::VALID if condition.status == "False" => Outlook::Refused,
        conditions::ETCD_READY => match reason {
            etcd::SCALE_DOWN_UNSUPPORTED | etcd::MEMBERS_LOST => Outlook::Refused,
            etcd::NOT_ENOUGH_MACHINES | etcd::QUORUM_AT_RISK | etcd::RESTORE_MACHINE_UNAVAILABLE => {
                Outlook::NeedsAction
            }
            _ => Outlook::Progressing,
        },
        conditions::KUBE_APISERVER_READY
        | conditions::KUBE_CONTROLLER_MANAGER_READY
        | conditions::KUBE_SCHEDULER_READY
        | conditions::NODES_READY
            if reason == NO_MACHINE =>
        {
            Outlook::NeedsAction
        }
        conditions::UPGRADED if reason == upgrade::REFUSED || reason == upgrade::UNKNOWN_VERSION => {
            Outlook::Refused
        }
        _ => Outlook::Progressing,
    }
}

/// Why a waiting command gives up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    pub condition_type: String,
    pub reason: String,
    /// The condition's message, whole.
    pub message: String,
    pub outlook: Outlook,
    /// How long the waiting command saw it hold.
    pub held: Duration,
}

impl Blocked {
    /// "EtcdReady (NotEnoughMachines, for 30s): <the whole message>".
    pub fn describe(&self) -> String {
        let held = match self.outlook {
            Outlook::NeedsAction => format!(", for {}s", self.held.as_secs()),
            _ => String::new(),
        };
        format!("{} ({}{held}): {}", self.condition_type, self.reason, self.message)
    }
}

/// What a waiting command remembers between looks: since when each
/// condition that waits on a person has said so, under the same reason.
#[derive(Debug, Clone, Default)]
pub struct Blockers {
    /// (type, reason, first seen at), for the conditions seen last time.
    seen: Vec<(String, String, Duration)>,
}

impl Blockers {
    /// Looks at `conditions` (of a status that describes the current spec)
    /// at `now` (the time waited so far): the condition to give up on, if
    /// any (a refused one at once, one that waits on a person once it has
    /// held for `grace`). A condition that changes its reason or turns True
    /// starts over.
    pub fn look(&mut self, conditions: &[Condition], now: Duration, grace: Duration) -> Option<Blocked> {
        let mut seen = Vec::new();
        let mut blocked: Option<Blocked> = None;
        for c in conditions {
            let outlook = outlook(c);
            if outlook == Outlook::Progressing {
                continue;
            }
            let since = self
                .seen
                .iter()
                .find(|(t, r, _)| *t == c.type_ && *r == c.reason)
                .map_or(now, |(_, _, since)| *since);
            seen.push((c.type_.clone(), c.reason.clone(), since));
            let held = now.saturating_sub(since);
            let gives_up = outlook == Outlook::Refused || held >= grace;
            // A refusal first, then whatever has held longest.
            let better = blocked.as_ref().is_none_or(|b| {
                (outlook == Outlook::Refused && b.outlook != Outlook::Refused)
                    || (outlook == b.outlook && held > b.held)
            });
            if gives_up && better {
                blocked = Some(Blocked {
                    condition_type: c.type_.clone(),
                    reason: c.reason.clone(),
                    message: c.message.clone(),
                    outlook,
                    held,
                });
            }
        }
        self.seen = seen;
        blocked
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn cond(type_: &str, status: &str, reason: &str) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message: format!("{type_} says {reason}"),
            observed_generation: Some(1),
            last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
        }
    }

    #[test]
    fn each_reason_has_its_outlook() {
        use Outlook::*;
        let table = [
            (conditions::VALID, "False", "Invalid", Refused),
            (conditions::VALID, "True", "Valid", Progressing),
            (conditions::VALID, "Unknown", "NotChecked", Progressing),
            (conditions::ETCD_READY, "False", etcd::NOT_ENOUGH_MACHINES, NeedsAction),
            (conditions::ETCD_READY, "False", etcd::QUORUM_AT_RISK, NeedsAction),
            (conditions::ETCD_READY, "False", etcd::RESTORE_MACHINE_UNAVAILABLE, NeedsAction),
            (conditions::ETCD_READY, "False", etcd::SCALE_DOWN_UNSUPPORTED, Refused),
            (conditions::ETCD_READY, "False", etcd::MEMBERS_LOST, Refused),
            // The etcd still starting, adding or replacing members.
            (conditions::ETCD_READY, "False", "Bootstrapping", Progressing),
            (conditions::ETCD_READY, "False", "AddingMember", Progressing),
            (conditions::ETCD_READY, "False", "NoQuorum", Progressing),
            (conditions::ETCD_READY, "False", "NotAvailable", Progressing),
            (conditions::ETCD_READY, "False", "NotFound", Progressing),
            (conditions::ETCD_READY, "True", "Available", Progressing),
            (conditions::KUBE_APISERVER_READY, "False", NO_MACHINE, NeedsAction),
            (conditions::KUBE_SCHEDULER_READY, "False", NO_MACHINE, NeedsAction),
            (conditions::KUBE_CONTROLLER_MANAGER_READY, "False", NO_MACHINE, NeedsAction),
            (conditions::KUBE_APISERVER_READY, "False", "NotHealthy", Progressing),
            (conditions::NODES_READY, "False", NO_MACHINE, NeedsAction),
            (conditions::NODES_READY, "False", "NodesNotReady", Progressing),
            (conditions::UPGRADED, "False", upgrade::REFUSED, Refused),
            (conditions::UPGRADED, "False", upgrade::UNKNOWN_VERSION, Refused),
            (conditions::UPGRADED, "False", upgrade::UPGRADING, Progressing),
            (conditions::UPGRADED, "False", upgrade::ROLLED_BACK, Progressing),
            // Ready repeats the others; a reason elsewhere means nothing here.
            (conditions::READY, "False", etcd::NOT_ENOUGH_MACHINES, Progressing),
            (conditions::ADDONS_APPLIED, "False", NO_MACHINE, Progressing),
        ];
        for (type_, status, reason, want) in table {
            assert_eq!(outlook(&cond(type_, status, reason)), want, "{type_} {status} {reason}");
        }
    }

    /// One look of a waiting command: at this second, these conditions
    /// (type, status, reason); what it gives up on, as (type, reason, held seconds).
    struct Look {
        at: u64,
        conditions: &'static [(&'static str, &'static str, &'static str)],
        want: Option<(&'static str, &'static str, u64)>,
    }

    #[test]
    fn a_waiting_command_gives_up_on_a_refusal_at_once_and_on_a_need_after_the_grace() {
        let grace = Duration::from_secs(30);
        type Said = (&'static str, &'static str, &'static str);
        const SHORT: Said = (conditions::ETCD_READY, "False", etcd::NOT_ENOUGH_MACHINES);
        const STARTING: Said = (conditions::ETCD_READY, "False", "Bootstrapping");
        const NO_NODE_MACHINE: Said = (conditions::NODES_READY, "False", NO_MACHINE);
        const INVALID: Said = (conditions::VALID, "False", "Invalid");
        let cases: Vec<(&str, Vec<Look>)> = vec![
            (
                "too few machines, unchanged past the grace",
                vec![
                    Look { at: 0, conditions: &[STARTING], want: None },
                    Look { at: 5, conditions: &[SHORT], want: None },
                    Look { at: 34, conditions: &[SHORT], want: None },
                    Look {
                        at: 35,
                        conditions: &[SHORT],
                        want: Some((conditions::ETCD_READY, etcd::NOT_ENOUGH_MACHINES, 30)),
                    },
                ],
            ),
            (
                "a machine registers within the grace: the etcd moves on",
                vec![
                    Look { at: 0, conditions: &[SHORT], want: None },
                    Look { at: 20, conditions: &[STARTING], want: None },
                    Look { at: 40, conditions: &[STARTING], want: None },
                ],
            ),
            (
                "a reason that comes back starts its clock again",
                vec![
                    Look { at: 0, conditions: &[SHORT], want: None },
                    Look { at: 20, conditions: &[STARTING], want: None },
                    Look { at: 25, conditions: &[SHORT], want: None },
                    Look { at: 50, conditions: &[SHORT], want: None },
                    Look {
                        at: 55,
                        conditions: &[SHORT],
                        want: Some((conditions::ETCD_READY, etcd::NOT_ENOUGH_MACHINES, 30)),
                    },
                ],
            ),
            (
                "an INVALID spec ends the wait at once, before an older need",
                vec![
                    Look { at: 0, conditions: &[SHORT], want: None },
                    Look {
                        at: 40,
                        conditions: &[SHORT, INVALID],
                        want: Some((conditions::VALID, "Invalid", 0)),
                    },
                ],
            ),
            (
                "of two needs past the grace, the one held longest",
                vec![
                    Look { at: 0, conditions: &[SHORT], want: None },
                    Look { at: 10, conditions: &[SHORT, NO_NODE_MACHINE], want: None },
                    Look {
                        at: 45,
                        conditions: &[NO_NODE_MACHINE, SHORT],
                        want: Some((conditions::ETCD_READY, etcd::NOT_ENOUGH_MACHINES, 45)),
                    },
                ],
            ),
            (
                "progress alone never gives up",
                vec![
                    Look { at: 0, conditions: &[STARTING], want: None },
                    Look { at: 600, conditions: &[STARTING], want: None },
                ],
            ),
        ];
        for (name, looks) in cases {
            let mut blockers = Blockers::default();
            for look in looks {
                let conditions: Vec<Condition> =
                    look.conditions.iter().map(|(t, s, r)| cond(t, s, r)).collect();
                let got = blockers
                    .look(&conditions, Duration::from_secs(look.at), grace)
                    .map(|b| (b.condition_type.clone(), b.reason.clone(), b.held.as_secs()));
                let want = look.want.map(|(t, r, h)| (t.to_string(), r.to_string(), h));
                assert_eq!(got, want, "{name}, at {}s", look.at);
            }
        }
    }

    #[test]
    fn the_description_carries_the_whole_message() {
        let message = "2 of 3 members placed: too few Machines match spec.machineSelector without already \
                       running a member (m3's node agent has not reported for 95s)";
        let blocked = Blocked {
            condition_type: conditions::ETCD_READY.into(),
            reason: etcd::NOT_ENOUGH_MACHINES.into(),
            message: message.into(),
            outlook: Outlook::NeedsAction,
            held: Duration::from_secs(31),
        };
        assert_eq!(blocked.describe(), format!("EtcdReady (NotEnoughMachines, for 31s): {message}"));
        let refused = Blocked { outlook: Outlook::Refused, held: Duration::ZERO, ..blocked };
        assert_eq!(refused.describe(), format!("EtcdReady (NotEnoughMachines): {message}"));
    }
}
