//! Whether the hub's cached view of the clusters can be trusted for a new
//! placement. The view comes from a watch, which can lag behind the API
//! (a busy watch, a relist): a `NoSchedule` taint written a second before
//! a policy could be missing from it, and the template would land on the
//! tainted cluster and stay (a `NoSchedule` taint keeps what a cluster
//! already runs). So before a binding is placed on a cluster it does not
//! use yet, the binder reads those clusters from the API and compares what
//! keeps a new template away: taints, labels (affinities) and whether the
//! cluster is schedulable at all.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::ClusterSnapshot;

/// How long one API reading that confirmed the view of a cluster stands for
/// the bindings placed after it on the same view: a burst of new templates
/// costs one read per cluster, not one per template. A taint older than
/// this is always seen.
pub const CONFIRMED_FOR: Duration = Duration::from_millis(250);

/// Which of `newly_chosen` to read from the API: those the same view has
/// not had confirmed within [`CONFIRMED_FOR`] before `now`.
pub fn to_confirm<'a>(
    newly_chosen: &[&'a str],
    confirmed: &BTreeMap<String, Instant>,
    now: Instant,
) -> Vec<&'a str> {
    newly_chosen
        .iter()
        .copied()
        .filter(|name| {
            confirmed.get(*name).is_none_or(|at| now.saturating_duration_since(*at) >= CONFIRMED_FOR)
        })
        .collect()
}

/// The clusters among `newly_chosen` whose `fresh` reading (from the API)
/// differs from the `view` in what decides a new placement, or that the
/// API no longer has. Empty: the placement stands.
pub fn stale_for_placement(
    view: &[ClusterSnapshot],
    fresh: &[ClusterSnapshot],
    newly_chosen: &[&str],
) -> Vec<String> {
    let decides = |c: &ClusterSnapshot| (c.taints.clone(), c.labels.clone(), c.schedulable);
    newly_chosen
        .iter()
        .filter(|name| {
            let seen = view.iter().find(|c| c.name == **name).map(decides);
            let now = fresh.iter().find(|c| c.name == **name).map(decides);
            now.is_none() || seen != now
        })
        .map(|name| name.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recent_confirmation_spares_the_read() {
        let now = Instant::now();
        let confirmed: BTreeMap<String, Instant> = [
            ("just".to_string(), now - Duration::from_millis(10)),
            ("edge".to_string(), now - CONFIRMED_FOR),
            ("old".to_string(), now - Duration::from_secs(5)),
        ]
        .into();
        let cases: Vec<(&str, Vec<&str>, Vec<&str>)> = vec![
            ("confirmed just now: no read", vec!["just"], vec![]),
            ("confirmed exactly CONFIRMED_FOR ago: read again", vec!["edge"], vec!["edge"]),
            ("confirmed long ago: read again", vec!["old"], vec!["old"]),
            ("never confirmed: read", vec!["new"], vec!["new"]),
            ("a mix keeps the order", vec!["old", "just", "new"], vec!["old", "new"]),
            ("nothing new chosen", vec![], vec![]),
        ];
        for (name, chosen, want) in cases {
            assert_eq!(to_confirm(&chosen, &confirmed, now), want, "{name}");
        }
    }
    use flotilla_api::cluster::{Taint, TaintEffect};

    fn cluster(name: &str) -> ClusterSnapshot {
        ClusterSnapshot { name: name.into(), schedulable: true, ..Default::default() }
    }

    fn tainted(mut c: ClusterSnapshot, effect: TaintEffect) -> ClusterSnapshot {
        c.taints.push(Taint { key: "maintenance".into(), value: None, effect, time_added: None });
        c
    }

    fn labelled(mut c: ClusterSnapshot) -> ClusterSnapshot {
        c.labels.insert("env".into(), "prod".into());
        c
    }

    fn with_room(mut c: ClusterSnapshot) -> ClusterSnapshot {
        c.allocatable.insert("cpu".into(), 4000);
        c
    }

    #[test]
    fn only_what_keeps_a_new_template_away_makes_the_view_stale() {
        let view = vec![cluster("m1"), cluster("m2"), cluster("m3")];
        let unschedulable = ClusterSnapshot { schedulable: false, ..cluster("m1") };
        /// (case, the API's clusters, newly chosen, stale)
        type Case<'a> = (&'a str, Vec<ClusterSnapshot>, &'a [&'a str], Vec<&'a str>);
        let cases: Vec<Case> = vec![
            ("the same", view.clone(), &["m1", "m2"], vec![]),
            (
                "a NoSchedule taint the view missed",
                vec![tainted(cluster("m1"), TaintEffect::NoSchedule)],
                &["m1"],
                vec!["m1"],
            ),
            (
                "a NoExecute taint too",
                vec![tainted(cluster("m2"), TaintEffect::NoExecute)],
                &["m2"],
                vec!["m2"],
            ),
            ("a label (affinity)", vec![labelled(cluster("m1"))], &["m1"], vec!["m1"]),
            ("no longer schedulable", vec![unschedulable], &["m1"], vec!["m1"]),
            ("gone from the API", vec![], &["m3"], vec!["m3"]),
            ("capacity is not the point", vec![with_room(cluster("m1"))], &["m1"], vec![]),
            (
                "only newly chosen clusters are checked",
                vec![tainted(cluster("m1"), TaintEffect::NoSchedule), cluster("m2")],
                &["m2"],
                vec![],
            ),
        ];
        for (name, fresh, chosen, want) in cases {
            assert_eq!(stale_for_placement(&view, &fresh, chosen), want, "{name}");
        }
    }
}
