//! Rebalancing on request (`WorkloadRebalancer`): which bindings to mark
//! for a fresh division, what the rebalancer's status says, and when it
//! goes. The hub's rebalancer controller marks a binding with a token
//! (annotation `work.flotilla.io/rebalance`); the binder divides that
//! binding from scratch once and records the token in `spec.rebalanced`.
//!
//! A token is `<rebalancer creation time>/<rebalancer name>`: tokens from
//! later rebalancers sort after earlier ones, so a binding divided afresh
//! for a later request also answers an earlier one.

use std::time::Duration;

use flotilla_api::rebalancer::{
    ObservedWorkload, RebalanceResult, RebalanceWorkload, WorkloadRebalancerStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// Why a workload could not be rebalanced: it has no binding (no policy
/// propagates it, or the name is wrong).
pub const REASON_BINDING_NOT_FOUND: &str = "ReferencedBindingNotFound";

/// How soon to look again while bindings wait for the binder.
pub const PENDING_RECHECK: Duration = Duration::from_secs(2);

/// The token a rebalancer writes on the bindings it rebalances.
pub fn token(created: Timestamp, rebalancer: &str) -> String {
    // Whole seconds (as creationTimestamp is stored), so every token has
    // the same width and sorts by time.
    let created = Timestamp::from_second(created.as_second()).unwrap_or(created);
    format!("{created}/{rebalancer}")
}

/// Whether a binding that last honoured `rebalanced` answered `token`.
pub fn honoured(rebalanced: &str, token: &str) -> bool {
    !rebalanced.is_empty() && rebalanced >= token
}

/// The request the binder must honour now, if any: the binding's
/// annotation when it is newer than what the binder last honoured.
pub fn pending<'a>(requested: Option<&'a str>, rebalanced: &str) -> Option<&'a str> {
    requested.filter(|r| !r.is_empty() && !honoured(rebalanced, r))
}

/// A workload's binding as the rebalancer controller finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindingState<'a> {
    Missing,
    Present {
        /// Its `work.flotilla.io/rebalance` annotation.
        requested: Option<&'a str>,
        /// Its `spec.rebalanced`.
        rebalanced: &'a str,
    },
}

/// What the controller does for one rebalancer.
#[derive(Debug, Clone, PartialEq)]
pub struct RebalancePlan {
    /// Workloads (by their index in the spec) whose binding gets the token.
    pub mark: Vec<usize>,
    pub status: WorkloadRebalancerStatus,
    /// Its ttl after finishing ran out: delete it.
    pub delete: bool,
    pub requeue_after: Option<Duration>,
}

/// Plans one pass: a workload keeps a result once it has one; a missing
/// binding fails; a binding that honoured the token (or a later one)
/// succeeded; any other gets the token, unless it already carries it or
/// a later one. Finished once every workload has a result.
pub fn plan(
    workloads: &[RebalanceWorkload],
    bindings: &[BindingState],
    previous: Option<&WorkloadRebalancerStatus>,
    token: &str,
    generation: Option<i64>,
    ttl_seconds_after_finished: Option<i32>,
    now: Timestamp,
) -> RebalancePlan {
    let mut mark = Vec::new();
    let mut observed = Vec::with_capacity(workloads.len());
    for (i, workload) in workloads.iter().enumerate() {
        let earlier = previous.and_then(|s| {
            s.observed_workloads.iter().find(|o| &o.workload == workload && o.result.is_some())
        });
        if let Some(earlier) = earlier {
            observed.push(earlier.clone());
            continue;
        }
        let (result, reason) = match bindings.get(i).copied().unwrap_or(BindingState::Missing) {
            BindingState::Missing => (Some(RebalanceResult::Failed), REASON_BINDING_NOT_FOUND.to_string()),
            BindingState::Present { rebalanced, .. } if honoured(rebalanced, token) => {
                (Some(RebalanceResult::Successful), String::new())
            }
            BindingState::Present { requested, .. } => {
                if requested.is_none_or(|r| r < token) {
                    mark.push(i);
                }
                (None, String::new())
            }
        };
        observed.push(ObservedWorkload { workload: workload.clone(), result, reason });
    }
    let finished = observed.iter().all(|o| o.result.is_some());
    let finish_time = match (finished, previous.and_then(|s| s.finish_time.clone())) {
        (false, _) => None,
        (true, Some(at)) => Some(at),
        (true, None) => Some(Time(now)),
    };
    let (delete, requeue_after) = match (&finish_time, ttl_seconds_after_finished) {
        (None, _) => (false, Some(PENDING_RECHECK)),
        (Some(_), None) => (false, None),
        (Some(at), Some(ttl)) => {
            let ends = at.0 + Duration::from_secs(u64::try_from(ttl.max(0)).unwrap_or(0));
            match Duration::try_from(ends.duration_since(now)) {
                Ok(left) if !left.is_zero() => (false, Some(left)),
                _ => (true, None),
            }
        }
    };
    let status = WorkloadRebalancerStatus {
        observed_workloads: observed,
        observed_generation: generation,
        finish_time,
    };
    RebalancePlan { mark, status, delete, requeue_after }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(second: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + second).unwrap()
    }

    fn workload(name: &str) -> RebalanceWorkload {
        RebalanceWorkload {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            name: name.into(),
            namespace: "demo".into(),
        }
    }

    #[test]
    fn tokens_sort_by_time_and_a_later_one_answers_an_earlier_one() {
        let early = token(ts(0), "zzz");
        let late = token(ts(1), "aaa");
        assert!(early < late);
        assert_eq!(early, "2027-01-15T08:00:00Z/zzz");
        assert!(honoured(&late, &early));
        assert!(!honoured(&early, &late));
        assert!(!honoured("", &early));
        assert_eq!(pending(Some(&late), &early), Some(late.as_str()));
        assert_eq!(pending(Some(&early), &late), None);
        assert_eq!(pending(Some(&early), &early), None);
        assert_eq!(pending(None, ""), None);
        assert_eq!(pending(Some(""), ""), None);
    }

    #[test]
    fn a_rebalancer_marks_waits_reports_and_goes_after_its_ttl() {
        let t = token(ts(0), "r1");
        let later = token(ts(5), "r2");
        let earlier = token(ts(-5), "r0");
        let workloads = [workload("a"), workload("b")];
        type Want = (Vec<usize>, Vec<Option<RebalanceResult>>, bool, bool, Option<u64>);
        let present = |requested: Option<&'static str>, rebalanced: &'static str| BindingState::Present {
            requested,
            rebalanced,
        };
        let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
        let (t_s, later_s, earlier_s) = (leak(t.clone()), leak(later), leak(earlier));
        let ok = Some(RebalanceResult::Successful);
        let failed = Some(RebalanceResult::Failed);
        type Case<'a> =
            (&'a str, Vec<BindingState<'a>>, Option<WorkloadRebalancerStatus>, Option<i32>, i64, Want);
        let cases: Vec<Case> = vec![
            (
                "fresh: both marked",
                vec![present(None, ""), present(Some(earlier_s), earlier_s)],
                None,
                None,
                0,
                (vec![0, 1], vec![None, None], false, false, Some(2)),
            ),
            (
                "already marked: waits",
                vec![present(Some(t_s), ""), present(Some(later_s), "")],
                None,
                None,
                1,
                (vec![], vec![None, None], false, false, Some(2)),
            ),
            (
                "one done, one without binding",
                vec![present(Some(t_s), t_s), BindingState::Missing],
                None,
                Some(60),
                2,
                (vec![], vec![ok, failed], true, false, Some(60)),
            ),
            (
                "a later rebalance answered it",
                vec![present(Some(later_s), later_s), present(None, later_s)],
                None,
                None,
                2,
                (vec![], vec![ok, ok], true, false, None),
            ),
        ];
        for (name, bindings, previous, ttl, now, want) in cases {
            let got = plan(&workloads, &bindings, previous.as_ref(), &t, Some(3), ttl, ts(now));
            let results: Vec<Option<RebalanceResult>> =
                got.status.observed_workloads.iter().map(|o| o.result).collect();
            let have = (
                got.mark.clone(),
                results,
                got.status.finish_time.is_some(),
                got.delete,
                got.requeue_after.map(|d| d.as_secs()),
            );
            assert_eq!(have, want, "{name}");
            assert_eq!(got.status.observed_generation, Some(3), "{name}");
        }
        let missing = plan(&workloads[1..], &[BindingState::Missing], None, &t, None, None, ts(0));
        assert_eq!(missing.status.observed_workloads[0].reason, REASON_BINDING_NOT_FOUND);

        // Finished at 2 with a ttl of 60: kept until 62, then deleted; the
        // finish time and results stay as they were.
        let bindings = [present(Some(t_s), t_s), present(Some(t_s), t_s)];
        let done = plan(&workloads, &bindings, None, &t, None, Some(60), ts(2));
        let at_30 =
            plan(&workloads, &[BindingState::Missing; 2], Some(&done.status), &t, None, Some(60), ts(30));
        assert_eq!(at_30.status, done.status, "results are kept once known");
        assert_eq!((at_30.delete, at_30.requeue_after), (false, Some(Duration::from_secs(32))));
        let at_62 = plan(&workloads, &bindings, Some(&done.status), &t, None, Some(60), ts(62));
        assert!(at_62.delete);
    }
}
