//! The binder's outcome for a binding the scheduler placed: `Scheduled`,
//! or why the clusters are only kept (the policy suspends scheduling,
//! failover is halted on a cluster involved).

use crate::suspension::{scheduling_suspended_outcome, REASON_SCHEDULING_SUSPENDED};

/// What the binding's `Scheduled` condition says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacedOutcome {
    pub scheduled: bool,
    pub reason: &'static str,
    pub message: String,
}

/// `placed`: the clusters as the message names them; `group`: the
/// `clusterAffinities` note (`scheduler::describe_group`, "" without);
/// `suspended`: the policy suspends scheduling; `halted`: why failover is
/// halted on a cluster the binding uses or used.
pub fn placed_outcome(
    placed: &[String],
    group: &str,
    suspended: bool,
    halted: Option<String>,
) -> PlacedOutcome {
    let (scheduled, reason, message) = match (suspended, halted) {
        (true, _) => {
            let (scheduled, message) = scheduling_suspended_outcome(placed);
            (scheduled, REASON_SCHEDULING_SUSPENDED, message)
        }
        (false, Some(why)) => {
            (true, "FailoverHalted", format!("kept on {}{group}: {why}", placed.join(", ")))
        }
        (false, None) => (true, "Scheduled", format!("placed on {}{group}", placed.join(", "))),
    };
    PlacedOutcome { scheduled, reason, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes() {
        let two = vec!["east (2)".to_string(), "west (1)".to_string()];
        let halted = Some("cluster east: 3 of 4 clusters unhealthy".to_string());
        struct Case<'a> {
            name: &'a str,
            placed: &'a [String],
            group: &'a str,
            suspended: bool,
            halted: Option<String>,
            want: (bool, &'static str, String),
        }
        let cases = [
            Case {
                name: "placed",
                placed: &two,
                group: "",
                suspended: false,
                halted: None,
                want: (true, "Scheduled", "placed on east (2), west (1)".into()),
            },
            Case {
                name: "placed within a group",
                placed: &two,
                group: " (group primary)",
                suspended: false,
                halted: None,
                want: (true, "Scheduled", "placed on east (2), west (1) (group primary)".into()),
            },
            Case {
                name: "failover halted: kept",
                placed: &two,
                group: "",
                suspended: false,
                halted: halted.clone(),
                want: (
                    true,
                    "FailoverHalted",
                    "kept on east (2), west (1): cluster east: 3 of 4 clusters unhealthy".into(),
                ),
            },
            Case {
                name: "suspended scheduling wins over a halt",
                placed: &two,
                group: "",
                suspended: true,
                halted,
                want: {
                    let (scheduled, message) = scheduling_suspended_outcome(&two);
                    (scheduled, REASON_SCHEDULING_SUSPENDED, message)
                },
            },
            Case {
                name: "suspended with nothing placed: not scheduled",
                placed: &[],
                group: "",
                suspended: true,
                halted: None,
                want: (false, REASON_SCHEDULING_SUSPENDED, scheduling_suspended_outcome(&[]).1),
            },
        ];
        for case in cases {
            let got = placed_outcome(case.placed, case.group, case.suspended, case.halted);
            let (scheduled, reason, message) = case.want;
            assert_eq!(got, PlacedOutcome { scheduled, reason, message }, "{}", case.name);
        }
    }
}
