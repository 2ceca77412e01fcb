//! The Events the hub publishes on a ManagedCluster: decided from what the
//! health reconcile read and what it is about to write, so they fire on a
//! transition (joined, became unreachable or ready, tainted) and never on a
//! reconcile that changes nothing. A hub that restarts reads the same
//! state back and says nothing again.

use flotilla_api::cluster::taints;
use flotilla_core::events::Notice;

/// `Available` reasons of a cluster that has not reported yet.
const BRING_UP_REASONS: [&str; 3] = ["NotJoined", "NoHeartbeat", "NoHealthReport"];

/// One side of a health reconcile: a ManagedCluster's hub-owned facts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterHealth {
    /// The `Joined` condition's status (`None`: no condition yet).
    pub joined: Option<String>,
    /// The `Available` condition's status and reason.
    pub available: Option<(String, String)>,
    /// Keys of the hub's own taints (`cluster.flotilla.io/*`).
    pub hub_taints: Vec<String>,
}

/// The Events for going from `before` to `after`; `message` is the new
/// `Available` condition's message (the why a person reads).
pub fn cluster_events(
    cluster: &str,
    before: &ClusterHealth,
    after: &ClusterHealth,
    message: &str,
) -> Vec<Notice> {
    let mut out = Vec::new();
    if after.joined.as_deref() == Some("True") && before.joined.as_deref() != Some("True") {
        out.push(Notice::normal("Joined", "Register", format!("cluster {cluster} joined the fleet")));
    }
    if let Some((status, reason)) = &after.available {
        let was = before.available.as_ref().map(|(s, _)| s.as_str());
        if was != Some(status.as_str()) {
            match status.as_str() {
                "True" => out.push(Notice::normal(
                    "ClusterReady",
                    "Heartbeat",
                    format!("cluster {cluster} is available: {message}"),
                )),
                // Not joined yet is no news: `Joined` says it.
                "Unknown" if reason == "NotJoined" => {}
                // A cluster that has never been available is still coming up.
                "Unknown" if was.is_none() || reason == "NoHealthReport" && was != Some("True") => {}
                "Unknown" => out.push(Notice::warning(
                    "ClusterUnreachable",
                    "Heartbeat",
                    format!("cluster {cluster} is unreachable ({reason}): {message}"),
                )),
                _ => out.push(Notice::warning(
                    "ClusterNotReady",
                    "Heartbeat",
                    format!("cluster {cluster} is not ready ({reason}): {message}"),
                )),
            }
        }
    }
    // A cluster coming up (no heartbeat or report yet) is tainted until it
    // is: no news either, it runs nothing yet.
    let coming_up = |h: &ClusterHealth| {
        h.available.as_ref().is_some_and(|(_, reason)| BRING_UP_REASONS.contains(&reason.as_str()))
    };
    for key in after.hub_taints.iter().filter(|k| !before.hub_taints.contains(k) && !coming_up(after)) {
        out.push(Notice::warning(
            "ClusterTainted",
            "Taint",
            format!("the hub tainted cluster {cluster} with {key}:NoExecute; {}", taint_consequence(key)),
        ));
    }
    for key in before.hub_taints.iter().filter(|k| !after.hub_taints.contains(k) && !coming_up(before)) {
        out.push(Notice::normal(
            "ClusterUntainted",
            "Taint",
            format!("the hub removed taint {key} from cluster {cluster}: it schedules as before"),
        ));
    }
    out
}

fn taint_consequence(key: &str) -> &'static str {
    match key {
        taints::UNREACHABLE | taints::NOT_READY => {
            "workloads that do not tolerate it fail over to other clusters once their toleration ends \
             (bring the cluster's agent back, or `flotilla cluster` to inspect it)"
        }
        _ => "workloads that do not tolerate it move away",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_core::events::Severity;

    fn health(joined: Option<&str>, available: Option<(&str, &str)>, hub_taints: &[&str]) -> ClusterHealth {
        ClusterHealth {
            joined: joined.map(str::to_string),
            available: available.map(|(s, r)| (s.to_string(), r.to_string())),
            hub_taints: hub_taints.iter().map(|t| t.to_string()).collect(),
        }
    }

    #[test]
    fn events_fire_on_transitions_only() {
        let ready = Some(("True", "MemberHealthy"));
        let lost = Some(("Unknown", "HeartbeatExpired"));
        let sick = Some(("False", "MemberUnhealthy"));
        let unreachable = taints::UNREACHABLE;
        type Case = (&'static str, ClusterHealth, ClusterHealth, Vec<(Severity, &'static str)>);
        let cases: Vec<Case> = vec![
            ("nothing changes", health(Some("True"), ready, &[]), health(Some("True"), ready, &[]), vec![]),
            (
                "a new cluster joins and becomes ready",
                health(None, None, &[]),
                health(Some("True"), ready, &[]),
                vec![(Severity::Normal, "Joined"), (Severity::Normal, "ClusterReady")],
            ),
            (
                "not joined yet is quiet",
                health(None, None, &[]),
                health(Some("False"), Some(("Unknown", "NotJoined")), &[]),
                vec![],
            ),
            (
                "joined but no heartbeat yet is quiet",
                health(Some("True"), Some(("Unknown", "NotJoined")), &[]),
                health(Some("True"), Some(("Unknown", "NoHeartbeat")), &[]),
                vec![],
            ),
            (
                "a ready cluster's heartbeat expires",
                health(Some("True"), ready, &[]),
                health(Some("True"), lost, &[]),
                vec![(Severity::Warning, "ClusterUnreachable")],
            ),
            (
                "the reason changes but not the status",
                health(Some("True"), Some(("Unknown", "NoHeartbeat")), &[]),
                health(Some("True"), lost, &[]),
                vec![],
            ),
            (
                "a new cluster tainted until its first heartbeat: quiet",
                health(Some("True"), Some(("Unknown", "NotJoined")), &[]),
                health(Some("True"), Some(("Unknown", "NoHeartbeat")), &[unreachable]),
                vec![],
            ),
            (
                "its first heartbeat: ready, the bring-up taint goes quietly",
                health(Some("True"), Some(("Unknown", "NoHeartbeat")), &[unreachable]),
                health(Some("True"), ready, &[]),
                vec![(Severity::Normal, "ClusterReady")],
            ),
            (
                "the hub taints it after the grace",
                health(Some("True"), lost, &[]),
                health(Some("True"), lost, &[unreachable]),
                vec![(Severity::Warning, "ClusterTainted")],
            ),
            (
                "the member reports its API unhealthy",
                health(Some("True"), ready, &[]),
                health(Some("True"), sick, &[]),
                vec![(Severity::Warning, "ClusterNotReady")],
            ),
            (
                "it comes back: ready and untainted",
                health(Some("True"), lost, &[unreachable]),
                health(Some("True"), ready, &[]),
                vec![(Severity::Normal, "ClusterReady"), (Severity::Normal, "ClusterUntainted")],
            ),
            (
                "a taint changes kind",
                health(Some("True"), sick, &[taints::NOT_READY]),
                health(Some("True"), lost, &[unreachable]),
                vec![
                    (Severity::Warning, "ClusterUnreachable"),
                    (Severity::Warning, "ClusterTainted"),
                    (Severity::Normal, "ClusterUntainted"),
                ],
            ),
        ];
        for (name, before, after, want) in cases {
            let got: Vec<(Severity, String)> = cluster_events("m1", &before, &after, "why")
                .into_iter()
                .map(|n| (n.severity, n.reason))
                .collect();
            let want: Vec<(Severity, String)> = want.into_iter().map(|(s, r)| (s, r.to_string())).collect();
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn messages_name_the_cluster_and_the_way_out() {
        let before = health(Some("True"), Some(("Unknown", "HeartbeatExpired")), &[]);
        let after = health(Some("True"), Some(("Unknown", "HeartbeatExpired")), &[taints::UNREACHABLE]);
        let got = cluster_events("m1", &before, &after, "no heartbeat");
        assert_eq!(got.len(), 1);
        assert!(got[0].message.contains("m1") && got[0].message.contains("fail over"), "{}", got[0].message);
    }
}
