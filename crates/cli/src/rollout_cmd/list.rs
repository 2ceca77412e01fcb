//! What `flotilla rollout list` prints: one row per Rollout, pure (the
//! caller passes `now`, in Unix seconds).

use flotilla_api::rollout::Rollout;
use kube::ResourceExt;

use super::render::{age, summary, time_left};

pub fn header(all_namespaces: bool, wide: bool) -> Vec<&'static str> {
    let mut header = Vec::new();
    if all_namespaces {
        header.push("NAMESPACE");
    }
    header.extend(["NAME", "TEMPLATE", "PHASE", "WAVE", "REVISION", "STABLE", "HEALTHY", "AGE"]);
    if wide {
        header.extend(["STRATEGY", "TIME LEFT", "MESSAGE"]);
    }
    header
}

/// Clusters healthy on the revision of those given it, of all targets:
/// `2/3 of 5`.
fn healthy(r: &Rollout) -> String {
    let Some(s) = r.status.as_ref().filter(|s| !s.clusters.is_empty()) else { return "-".into() };
    let given = s.clusters.iter().filter(|c| c.given == "new").count();
    let ok = s.clusters.iter().filter(|c| c.given == "new" && c.gate == "Healthy").count();
    format!("{ok}/{given} of {}", s.clusters.len())
}

pub fn row(r: &Rollout, all_namespaces: bool, wide: bool, now: i64) -> Vec<String> {
    let status = r.status.as_ref();
    let dash = |s: Option<String>| s.filter(|s| !s.is_empty()).unwrap_or_else(|| "-".into());
    let mut row = Vec::new();
    if all_namespaces {
        row.push(r.namespace().unwrap_or_default());
    }
    row.extend([
        r.name_any(),
        format!("{}/{}", r.spec.template.kind.to_lowercase(), r.spec.template.name),
        dash(status.map(|s| s.phase.clone())),
        dash(status.map(|s| s.wave_text.clone())),
        dash(status.filter(|s| s.revision_number > 0).map(|s| s.revision_number.to_string())),
        dash(status.and_then(|s| s.stable_revision_number).map(|n| n.to_string())),
        healthy(r),
        r.metadata.creation_timestamp.as_ref().map_or_else(|| "-".into(), |t| age(now - t.0.as_second())),
    ]);
    if wide {
        row.push(r.spec.strategy.clone());
        row.push(dash(status.and_then(|s| time_left(s, now))));
        row.push(match status.map(|s| s.message.clone()).filter(|m| !m.is_empty()) {
            Some(message) => message,
            None => summary(status),
        });
    }
    row
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_api::rollout::{ClusterRolloutStatus, RolloutSpec, RolloutStatus, TemplateReference};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    const NOW: i64 = 1_800_000_000;

    fn at(seconds: i64) -> Option<Time> {
        Some(Time(k8s_openapi::jiff::Timestamp::from_second(seconds).unwrap()))
    }

    fn rollout(status: Option<RolloutStatus>) -> Rollout {
        let mut r = Rollout::new(
            "web-deployment",
            RolloutSpec {
                template: TemplateReference {
                    api_version: "apps/v1".into(),
                    kind: "Deployment".into(),
                    name: "web".into(),
                },
                strategy: "waves".into(),
            },
        );
        r.metadata.namespace = Some("shop".into());
        r.metadata.creation_timestamp = at(NOW - 3 * 3600);
        r.status = status;
        r
    }

    fn cluster(name: &str, given: &str, gate: &str) -> ClusterRolloutStatus {
        ClusterRolloutStatus {
            name: name.into(),
            wave: 1,
            given: given.into(),
            gate: gate.into(),
            ..Default::default()
        }
    }

    #[test]
    fn rows_with_and_without_namespaces_and_wide() {
        let soaking = rollout(Some(RolloutStatus {
            phase: "Soaking".into(),
            revision: "abc".into(),
            revision_number: 3,
            stable_revision_number: Some(2),
            wave: 1,
            wave_text: "1/2".into(),
            soak_started_at: at(NOW - 30),
            soak_seconds: 90,
            clusters: vec![
                cluster("m1", "new", "Healthy"),
                cluster("m2", "new", "Progressing"),
                cluster("m3", "stable", "Healthy"),
            ],
            ..Default::default()
        }));
        let complete = rollout(Some(RolloutStatus {
            phase: "Complete".into(),
            revision_number: 1,
            wave_text: "2/2".into(),
            message: "every cluster runs revision 1".into(),
            ..Default::default()
        }));
        let unwritten = rollout(None);
        type Case<'a> = (&'a str, &'a Rollout, bool, bool, Vec<&'a str>);
        let cases: Vec<Case> = vec![
            (
                "soaking",
                &soaking,
                false,
                false,
                vec!["web-deployment", "deployment/web", "Soaking", "1/2", "3", "2", "1/2 of 3", "3h"],
            ),
            (
                "soaking, -A, wide: time left and the summary",
                &soaking,
                true,
                true,
                vec![
                    "shop",
                    "web-deployment",
                    "deployment/web",
                    "Soaking",
                    "1/2",
                    "3",
                    "2",
                    "1/2 of 3",
                    "3h",
                    "waves",
                    "1m00s left in the soak (of 1m30s)",
                    "revision 3: Soaking: wave 1 of 0, 1 of 2 clusters healthy on it (of 3)",
                ],
            ),
            (
                "complete, wide: its message",
                &complete,
                false,
                true,
                vec![
                    "web-deployment",
                    "deployment/web",
                    "Complete",
                    "2/2",
                    "1",
                    "-",
                    "-",
                    "3h",
                    "waves",
                    "-",
                    "every cluster runs revision 1",
                ],
            ),
            (
                "no status yet",
                &unwritten,
                false,
                true,
                vec![
                    "web-deployment",
                    "deployment/web",
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    "3h",
                    "waves",
                    "-",
                    "waiting for the hub to write the rollout's status",
                ],
            ),
        ];
        for (name, r, all, wide, want) in cases {
            let got = row(r, all, wide, NOW);
            assert_eq!(got, want, "{name}");
            assert_eq!(got.len(), header(all, wide).len(), "{name}: one cell per column");
        }
    }
}
