//! Which of a template's Works the binder deletes: those of clusters
//! neither chosen nor still being evicted (an eviction task keeps its
//! copy), not already being deleted, and not where the policy suspends
//! dispatching (nothing is written or removed there).

use flotilla_api::policy::Suspension;
use flotilla_api::work::{GracefulEvictionTask, TargetCluster};

use crate::suspension::dispatch_suspended;

/// The clusters whose Work goes, in the order of `works`: each Work as
/// (its cluster, whether it is being deleted already).
pub fn works_to_delete<'a>(
    works: &[(&'a str, bool)],
    chosen: &[TargetCluster],
    evicting: &[GracefulEvictionTask],
    suspension: Option<&Suspension>,
) -> Vec<&'a str> {
    let kept = |cluster: &str| {
        chosen.iter().any(|c| c.name == cluster) || evicting.iter().any(|t| t.from_cluster == cluster)
    };
    works
        .iter()
        .filter(|(cluster, deleting)| !kept(cluster) && !deleting && !dispatch_suspended(suspension, cluster))
        .map(|(cluster, _)| *cluster)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_api::policy::SuspendClusters;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn target(name: &str) -> TargetCluster {
        TargetCluster { name: name.into(), replicas: 1 }
    }

    fn task(from: &str) -> GracefulEvictionTask {
        GracefulEvictionTask {
            from_cluster: from.into(),
            replicas: 1,
            reason: "TaintUntolerated".into(),
            message: String::new(),
            creation_timestamp: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
            producer: String::new(),
            purge_mode: None,
            grace_period_seconds: None,
            suppress_deletion: None,
            preserved_label_state: Default::default(),
            clusters_before_failover: Vec::new(),
        }
    }

    #[test]
    fn which_works_go() {
        let all = Suspension { dispatching: Some(true), ..Default::default() };
        let on_west = Suspension {
            dispatching_on_clusters: Some(SuspendClusters { cluster_names: vec!["west".into()] }),
            ..Default::default()
        };
        type Case<'a> = (
            &'a str,
            Vec<(&'a str, bool)>,
            Vec<TargetCluster>,
            Vec<GracefulEvictionTask>,
            Option<&'a Suspension>,
            Vec<&'a str>,
        );
        let cases: Vec<Case> = vec![
            (
                "chosen clusters keep theirs",
                vec![("east", false), ("west", false)],
                vec![target("east"), target("west")],
                vec![],
                None,
                vec![],
            ),
            (
                "a cluster no longer chosen loses its Work",
                vec![("east", false), ("west", false)],
                vec![target("east")],
                vec![],
                None,
                vec!["west"],
            ),
            (
                "an eviction task keeps the copy",
                vec![("east", false), ("west", false)],
                vec![target("east")],
                vec![task("west")],
                None,
                vec![],
            ),
            (
                "a Work being deleted is not deleted again",
                vec![("east", false), ("west", true)],
                vec![target("east")],
                vec![],
                None,
                vec![],
            ),
            (
                "nothing goes while dispatching is suspended",
                vec![("east", false), ("west", false)],
                vec![],
                vec![],
                Some(&all),
                vec![],
            ),
            (
                "only the suspended cluster keeps its Work",
                vec![("east", false), ("north", false), ("west", false)],
                vec![],
                vec![],
                Some(&on_west),
                vec!["east", "north"],
            ),
        ];
        for (name, works, chosen, evicting, suspension, want) in cases {
            assert_eq!(works_to_delete(&works, &chosen, &evicting, suspension), want, "{name}");
        }
    }
}
