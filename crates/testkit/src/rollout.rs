//! What the rollout tests share: a policy placing the Deployment `web` on
//! every member, a `RolloutStrategy` named `gray`, and waiting on the
//! template's Rollout (`web-deployment`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use flotilla_api::rollout::Rollout;
use k8s_openapi::api::apps::v1::Deployment;
use kube::{Api, Client};
use serde_json::json;

use super::{apply, create_namespace, Fleet};

pub const ROLLOUT: &str = "web-deployment";

/// A PropagationPolicy placing Deployment `web` on every member
/// (`propagate_deps`: with the objects it refers to).
pub async fn place_web_everywhere(hub: &Client, namespace: &str, propagate_deps: bool) {
    apply(
        hub,
        json!({
            "apiVersion": "policy.flotilla.io/v1alpha1", "kind": "PropagationPolicy",
            "metadata": {"name": "web", "namespace": namespace},
            "spec": {"resourceSelectors": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}],
                     "propagateDeps": propagate_deps, "placement": {}},
        }),
    )
    .await;
}

/// The RolloutStrategy `gray` over every Deployment of the namespace, with
/// `spec` (waves, soak, ...).
pub async fn gray_strategy(hub: &Client, namespace: &str, mut spec: serde_json::Value) {
    spec["resourceSelectors"] = json!([{"apiVersion": "apps/v1", "kind": "Deployment"}]);
    apply(
        hub,
        json!({
            "apiVersion": "rollout.flotilla.io/v1alpha1", "kind": "RolloutStrategy",
            "metadata": {"name": "gray", "namespace": namespace},
            "spec": spec,
        }),
    )
    .await;
}

/// The namespace, the policy placing `web` everywhere (`propagate_deps`:
/// with the objects it refers to) and the strategy `gray` with `spec`:
/// what every rollout test starts from.
pub async fn roll_out_web_in_waves(
    hub: &Client,
    namespace: &str,
    propagate_deps: bool,
    spec: serde_json::Value,
) {
    create_namespace(hub, namespace).await;
    place_web_everywhere(hub, namespace, propagate_deps).await;
    gray_strategy(hub, namespace, spec).await;
}

/// Polls the Rollout until `check` holds; fails after `wait` with its last
/// status.
pub async fn rollout_until(
    rollouts: &Api<Rollout>,
    wait: Duration,
    what: &str,
    check: impl Fn(&Rollout) -> bool,
) -> Rollout {
    let deadline = Instant::now() + wait;
    let mut last = None;
    while Instant::now() < deadline {
        if let Some(r) = rollouts.get_opt(ROLLOUT).await.unwrap() {
            if check(&r) {
                return r;
            }
            last = r.status;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the rollout never {what}; last status: {last:#?}");
}

/// The Deployment `web` in `namespace`: one replica of a container `main`
/// running `image`.
pub fn web_deployment(namespace: &str, image: &str) -> serde_json::Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": namespace},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "main", "image": image}]}}},
    })
}

/// Each member's Deployment `web` image in `namespace` (`-` when it has
/// none yet), by member.
pub async fn images(fleet: &Fleet, namespace: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for m in &fleet.members {
        let d = Api::<Deployment>::namespaced(m.client(), namespace).get_opt("web").await.ok().flatten();
        let image = d
            .and_then(|d| d.spec.template.spec?.containers.into_iter().next()?.image)
            .unwrap_or_else(|| "-".into());
        out.insert(m.name().to_string(), image);
    }
    out
}
