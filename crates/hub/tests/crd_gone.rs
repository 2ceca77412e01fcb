#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A template kind whose CRD is deleted on the hub: the hub stops watching
//! it (no `404 page not found` retried forever) and watches it again once
//! the CRD is back. The hub's own log is read through a subscriber in this
//! process (the test binary holds this one test, so the log is its own).

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_apps_core::kind_discovery;
use flotilla_localkube::wait_for;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::DeleteParams;
use kube::Api;
use serde_json::json;

use flotilla_testkit as support;
use support::{apply, create_namespace, install_widget_crd, widget_api, Fleet};

/// Every line the process logs, kept.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn count(&self, needle: &str) -> usize {
        String::from_utf8_lossy(&self.0.lock().unwrap()).matches(needle).count()
    }

    /// The lines logged after the first `from` bytes that hold `needle`.
    fn lines_since(&self, from: usize, needle: &str) -> Vec<String> {
        let text = String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned();
        text.get(from..)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(needle))
            .map(String::from)
            .collect()
    }

    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

fn widget(name: &str) -> serde_json::Value {
    json!({"apiVersion": "example.com/v1", "kind": "Widget",
        "metadata": {"name": name, "namespace": "demo"}, "spec": {"size": 1}})
}

#[tokio::test]
async fn the_hub_stops_watching_a_kind_whose_crd_is_gone_and_resumes_when_it_is_back() {
    let log = Captured::default();
    let writer = log.clone();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("flotilla_hub=trace,kube_runtime=debug"))
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let fleet = Fleet::start(&["eu"], &[0]).await;
    let hub = fleet.hub.client();
    create_namespace(&hub, "demo").await;
    apply(
        &hub,
        json!({"apiVersion": "policy.flotilla.io/v1alpha1", "kind": "PropagationPolicy",
            "metadata": {"name": "widgets", "namespace": "demo"},
            "spec": {"resourceSelectors": [{"apiVersion": "example.com/v1", "kind": "Widget"}],
                "placement": {"clusterAffinity": {"clusterNames": ["m1"]}}}}),
    )
    .await;
    let member_widgets = widget_api(fleet.member("m1").client(), "demo");
    apply(&hub, widget("w1")).await;
    wait_for("w1 in m1", Duration::from_secs(60), || async {
        member_widgets.get_opt("w1").await.unwrap().is_some()
    })
    .await;

    // The custom resource, then its CRD, deleted on the hub.
    widget_api(hub.clone(), "demo").delete("w1", &DeleteParams::default()).await.unwrap();
    wait_for("w1 gone from m1", Duration::from_secs(60), || async {
        member_widgets.get_opt("w1").await.unwrap().is_none()
    })
    .await;
    let crds = Api::<CustomResourceDefinition>::all(hub.clone());
    crds.delete("widgets.example.com", &DeleteParams::default()).await.unwrap();
    wait_for("the CRD gone", Duration::from_secs(60), || async {
        crds.get_opt("widgets.example.com").await.unwrap().is_none()
    })
    .await;
    wait_for("the hub to stop watching Widgets", Duration::from_secs(60), || async {
        log.count("the hub no longer serves this kind") > 0
    })
    .await;
    // Nothing asks for the kind any more: no failed request is logged
    // (before the fix, a 404 every 2 s, for hours).
    // Discovery is asked for a short while after a CRD changes (it lags a
    // new CRD): let that pass, then watch the log.
    tokio::time::sleep(kind_discovery::AFTER_CRD_CHANGE + Duration::from_secs(2)).await;
    let since = log.len();
    tokio::time::sleep(Duration::from_secs(12)).await;
    let asked: Vec<String> = ["page not found", "template watch error", "kind=Widget"]
        .iter()
        .flat_map(|n| log.lines_since(since, n))
        .collect();
    assert!(asked.is_empty(), "the hub still asks for a kind it does not serve: {asked:#?}");

    // The CRD back: watched again, a new Widget propagates.
    install_widget_crd(hub.clone()).await;
    apply(&hub, widget("w2")).await;
    wait_for("w2 in m1 once the CRD is back", Duration::from_secs(60), || async {
        member_widgets.get_opt("w2").await.unwrap().is_some()
    })
    .await;
}
