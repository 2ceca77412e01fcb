#![allow(clippy::unwrap_used, clippy::expect_used)]
//! CronFederatedHPA against a real hub and member: a rule ticking every
//! five seconds scales the hub's Deployment template through `/scale` and
//! the member follows; a suspended rule does nothing; an unknown time zone
//! is reported on the status; the API refuses rules that do not fit their
//! target and malformed schedules. (The FederatedHPA target is another
//! module's type: its merge patch is tested in `apps_core::cron_hpa`.)

use flotilla_testkit as support;

use std::time::Duration;

use flotilla_api::cron_hpa::{CronFederatedHPA, ExecutionHistory};
use flotilla_localkube::wait_for;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Event;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::json;
use support::rollout::place_web_everywhere;
use support::{apply, create_namespace, Fleet};

const NS: &str = "shop";

fn web(replicas: i32) -> serde_json::Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": "web", "namespace": NS, "labels": {"app": "web"}},
           "spec": {"replicas": replicas,
                    "selector": {"matchLabels": {"app": "web"}},
                    "template": {"metadata": {"labels": {"app": "web"}},
                                 "spec": {"containers": [{"name": "main", "image": "example/web:1"}]}}}})
}

fn cron(name: &str, target: serde_json::Value, rules: serde_json::Value) -> serde_json::Value {
    json!({"apiVersion": "autoscaling.flotilla.io/v1alpha1", "kind": "CronFederatedHPA",
           "metadata": {"name": name, "namespace": NS},
           "spec": {"scaleTargetRef": target, "rules": rules}})
}

fn deployment_ref() -> serde_json::Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"})
}

fn history<'a>(object: &'a CronFederatedHPA, rule: &str) -> Option<&'a ExecutionHistory> {
    object.status.as_ref()?.execution_histories.iter().find(|h| h.rule_name == rule)
}

async fn replicas(deployments: &Api<Deployment>) -> Option<i32> {
    deployments.get_opt("web").await.unwrap().and_then(|d| d.spec.replicas)
}

#[tokio::test]
async fn a_rule_scales_its_template_at_its_tick_and_the_members_follow() {
    let fleet = Fleet::start(&["eu"], &[]).await;
    let hub = fleet.hub.client();
    create_namespace(&hub, NS).await;
    place_web_everywhere(&hub, NS, false).await;
    apply(&hub, web(1)).await;
    let member: Api<Deployment> = Api::namespaced(fleet.member("m1").client(), NS);
    let template: Api<Deployment> = Api::namespaced(hub.clone(), NS);
    wait_for("web with 1 replica in m1", Duration::from_secs(60), || async {
        replicas(&member).await == Some(1)
    })
    .await;

    // "up" every 5 s to 3; "off" every 5 s to 9, but suspended.
    apply(
        &hub,
        cron(
            "web-hours",
            deployment_ref(),
            json!([
                {"name": "up", "schedule": "*/5 * * * * *", "targetReplicas": 3},
                {"name": "off", "schedule": "*/5 * * * * *", "targetReplicas": 9, "suspend": true},
            ]),
        ),
    )
    .await;
    let crons: Api<CronFederatedHPA> = Api::namespaced(hub.clone(), NS);
    wait_for("rule up executed and recorded", Duration::from_secs(60), || async {
        let object = crons.get("web-hours").await.unwrap();
        history(&object, "up").is_some_and(|h| {
            h.successful_executions.first().is_some_and(|e| e.applied_replicas == Some(3))
                && h.next_execution_time.is_some()
        })
    })
    .await;
    assert_eq!(replicas(&template).await, Some(3), "the hub's template was scaled");
    wait_for("web with 3 replicas in m1", Duration::from_secs(60), || async {
        replicas(&member).await == Some(3)
    })
    .await;

    // Several ticks later: the suspended rule never ran and has no next tick.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let object = crons.get("web-hours").await.unwrap();
    let off = history(&object, "off");
    assert!(
        off.is_none_or(|h| h.successful_executions.is_empty()
            && h.failed_executions.is_empty()
            && h.next_execution_time.is_none()),
        "the suspended rule: {off:?}"
    );
    let up = history(&object, "up").unwrap();
    assert!(up.successful_executions.len() >= 2, "up ran at each tick: {up:?}");
    assert!(up.successful_executions.len() <= 3, "the history is trimmed to its limit: {up:?}");
    let ticks: Vec<_> = up.successful_executions.iter().map(|e| e.schedule_time.0).collect();
    assert!(ticks.windows(2).all(|w| w[0] > w[1]), "newest first, each tick once: {ticks:?}");
    assert_eq!(replicas(&template).await, Some(3));
    assert_eq!(replicas(&member).await, Some(3));
    let valid = object.status.as_ref().unwrap().conditions.iter().find(|c| c.type_ == "Valid").unwrap();
    assert_eq!(valid.status, "True", "{valid:?}");

    let events: Api<Event> = Api::namespaced(hub.clone(), NS);
    let scaled = events
        .list(&ListParams::default().fields("involvedObject.name=web-hours"))
        .await
        .unwrap()
        .items
        .into_iter()
        .any(|e| e.reason.as_deref() == Some("Scaled"));
    assert!(scaled, "a Scaled event is published");

    // Suspending "up" stops it; the template's replicas then stay.
    crons
        .patch(
            "web-hours",
            &PatchParams::apply("test").force(),
            &Patch::Apply(cron(
                "web-hours",
                deployment_ref(),
                json!([
                    {"name": "up", "schedule": "*/5 * * * * *", "targetReplicas": 3, "suspend": true},
                    {"name": "off", "schedule": "*/5 * * * * *", "targetReplicas": 9, "suspend": true},
                ]),
            )),
        )
        .await
        .unwrap();
    wait_for("rule up suspended: no next tick", Duration::from_secs(30), || async {
        let object = crons.get("web-hours").await.unwrap();
        history(&object, "up").is_some_and(|h| h.next_execution_time.is_none())
    })
    .await;
    let before = history(&crons.get("web-hours").await.unwrap(), "up").unwrap().successful_executions.clone();
    template.patch("web", &PatchParams::apply("test").force(), &Patch::Apply(web(2))).await.unwrap();
    tokio::time::sleep(Duration::from_secs(7)).await;
    let after = history(&crons.get("web-hours").await.unwrap(), "up").unwrap().successful_executions.clone();
    assert_eq!(before, after, "a suspended rule does not run");
    assert_eq!(replicas(&template).await, Some(2), "nothing scaled the template back");
}

#[tokio::test]
async fn bad_rules_are_refused_or_reported() {
    let fleet = Fleet::start(&["eu"], &[]).await;
    let hub = fleet.hub.client();
    create_namespace(&hub, NS).await;
    apply(&hub, web(1)).await;
    let crons: Api<CronFederatedHPA> = Api::namespaced(hub.clone(), NS);
    let federated_hpa =
        json!({"apiVersion": "autoscaling.flotilla.io/v1alpha1", "kind": "FederatedHPA", "name": "web"});

    let refused = [
        (
            "targetMinReplicas on a workload",
            cron(
                "a",
                deployment_ref(),
                json!([{"name": "r", "schedule": "0 8 * * *", "targetMinReplicas": 2}]),
            ),
            "the target is a workload",
        ),
        (
            "targetReplicas on a FederatedHPA",
            cron(
                "b",
                federated_hpa.clone(),
                json!([{"name": "r", "schedule": "0 8 * * *", "targetReplicas": 2}]),
            ),
            "the target is a FederatedHPA",
        ),
        (
            "min above max",
            cron(
                "c",
                federated_hpa.clone(),
                json!([{"name": "r", "schedule": "0 8 * * *", "targetMinReplicas": 5, "targetMaxReplicas": 2}]),
            ),
            "targetMinReplicas must not exceed targetMaxReplicas",
        ),
        (
            "a schedule of words",
            cron(
                "d",
                deployment_ref(),
                json!([{"name": "r", "schedule": "every morning", "targetReplicas": 2}]),
            ),
            "spec.rules[0].schedule",
        ),
        (
            "four fields",
            cron("e", deployment_ref(), json!([{"name": "r", "schedule": "0 8 * *", "targetReplicas": 2}])),
            "spec.rules[0].schedule",
        ),
    ];
    for (name, object, want) in refused {
        let object: CronFederatedHPA = serde_json::from_value(object).unwrap();
        match crons.create(&PostParams::default(), &object).await {
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 422, "{name}: {status:?}");
                assert!(status.message.contains(want), "{name}: {}", status.message);
            }
            other => panic!("{name}: expected a refusal, got {other:?}"),
        }
    }

    // An unknown zone and a schedule only croner can judge: on the status.
    apply(
        &hub,
        cron(
            "mars",
            deployment_ref(),
            json!([
                {"name": "r", "schedule": "*/5 * * * * *", "timeZone": "Mars/Olympus", "targetReplicas": 4},
                {"name": "s", "schedule": "61 * * * *", "targetReplicas": 4},
            ]),
        ),
    )
    .await;
    wait_for("the invalid rules reported", Duration::from_secs(30), || async {
        let object = crons.get("mars").await.unwrap();
        object.status.as_ref().is_some_and(|s| {
            s.conditions.iter().any(|c| {
                c.type_ == "Valid"
                    && c.status == "False"
                    && c.reason == "InvalidRule"
                    && c.message.contains("time zone `Mars/Olympus` is not a known IANA time zone")
                    && c.message.contains("schedule `61 * * * *` is not a valid cron expression")
            })
        })
    })
    .await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let template: Api<Deployment> = Api::namespaced(hub.clone(), NS);
    assert_eq!(replicas(&template).await, Some(1), "an invalid rule scales nothing");
    let object = crons.get("mars").await.unwrap();
    assert!(history(&object, "r").is_none_or(|h| h.successful_executions.is_empty()));
}
