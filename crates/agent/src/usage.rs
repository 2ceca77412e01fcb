//! Usage reports for fleet autoscaling: for the Works the hub labels
//! `autoscaling.flotilla.io/report-usage` (a FederatedHPA targets their
//! template), reads the member's `metrics.k8s.io/v1beta1` PodMetrics of each
//! workload's pods every few seconds and writes a summary per manifest in
//! the Work's `status.usage` (field manager `flotilla-usage`), only when it
//! changed. The hub never reads a pull member's metrics itself: the agent
//! writes. Runs in the pull agent and, for push clusters, in the hub.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use flotilla_api::autoscaling::{ManifestUsage, WorkloadUsage, REPORT_USAGE_LABEL};
use flotilla_api::work::Work;
use flotilla_apps_core::autoscaling::usage::{summarize, usage_selection};
use futures::StreamExt;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, ResourceExt};
use serde_json::{json, Value};

use crate::error::Error;
use crate::pods::MemberPods;

/// Field manager of Works' `status.usage`.
pub const USAGE_FIELD_MANAGER: &str = "flotilla-usage";
/// How often usage is read (metrics-server itself refreshes every
/// `--metric-resolution`, 15 s by default).
pub const USAGE_INTERVAL: Duration = Duration::from_secs(3);

/// Reports usage for the labelled Works of `hub_namespace` until dropped.
pub async fn run_usage_reporter(
    hub: Client,
    hub_namespace: String,
    member: Client,
    pods: MemberPods,
    interval: Duration,
) -> Result<(), Error> {
    let works: Api<Work> = Api::namespaced(hub, &hub_namespace);
    let (store, writer) = reflector::store();
    let config = watcher::Config::default().labels(&format!("{REPORT_USAGE_LABEL}=true"));
    let watch = watcher(works.clone(), config)
        .default_backoff()
        .modify(|work: &mut Work| work.managed_fields_mut().clear())
        .reflect(writer)
        .for_each(|_| futures::future::ready(()));
    let report = async {
        let mut reporter = Reporter { works, member, pods, written: HashMap::new() };
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if store.wait_until_ready().await.is_err() {
                continue;
            }
            reporter.report(&store).await;
        }
    };
    tokio::select! {
        () = watch => Ok(()),
        () = report => Ok(()),
    }
}

struct Reporter {
    works: Api<Work>,
    member: Client,
    pods: MemberPods,
    /// What was last written per Work (the Work in the cache may lag).
    written: HashMap<String, Vec<ManifestUsage>>,
}

impl Reporter {
    async fn report(&mut self, store: &Store<Work>) {
        if !self.pods.listed() {
            return;
        }
        let works = store.state();
        // PodMetrics per namespace, read once per round.
        let mut metrics: BTreeMap<String, Result<Vec<Value>, String>> = BTreeMap::new();
        let mut current = HashMap::new();
        for work in &works {
            let name = work.name_any();
            let mut usage = Vec::new();
            for (ordinal, manifest) in work.spec.manifests.iter().enumerate() {
                let Some(selection) = usage_selection(&manifest.0) else { continue };
                let Some(selected) = self.pods.selected(&selection) else { return };
                if !metrics.contains_key(&selection.namespace) {
                    let read = pod_metrics(&self.member, &selection.namespace).await;
                    metrics.insert(selection.namespace.clone(), read);
                }
                let summary = match &metrics[&selection.namespace] {
                    Ok(metrics) => summarize(&selected, metrics),
                    Err(why) => WorkloadUsage { message: why.clone(), ..summarize(&selected, &[]) },
                };
                usage.push(ManifestUsage {
                    ordinal: i32::try_from(ordinal).unwrap_or(i32::MAX),
                    usage: summary,
                });
            }
            let on_work = work.status.as_ref().map(|s| &s.usage);
            let unchanged = self.written.get(&name).is_some_and(|w| *w == usage) || on_work == Some(&usage);
            if !unchanged {
                match self.write(&name, &usage).await {
                    Ok(()) => tracing::debug!(work = %name, manifests = usage.len(), "usage reported"),
                    Err(e) => {
                        tracing::warn!(work = %name, error = %e, "writing the usage report failed");
                        continue;
                    }
                }
            }
            current.insert(name, usage);
        }
        // Works no longer labelled: their report goes.
        let gone: Vec<String> = self.written.keys().filter(|n| !current.contains_key(*n)).cloned().collect();
        for name in gone {
            let clear = json!({"status": {"usage": null}});
            match self.works.patch_status(&name, &PatchParams::default(), &Patch::Merge(&clear)).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => {
                    tracing::warn!(work = %name, error = %e, "clearing the usage report failed");
                    current.insert(name, Vec::new());
                }
            }
        }
        self.written = current;
    }

    async fn write(&self, name: &str, usage: &[ManifestUsage]) -> Result<(), Error> {
        let patch = json!({
            "apiVersion": "work.flotilla.io/v1alpha1", "kind": "Work",
            "metadata": {"name": name},
            "status": {"usage": usage},
        });
        match self
            .works
            .patch_status(name, &PatchParams::apply(USAGE_FIELD_MANAGER).force(), &Patch::Apply(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// The PodMetrics of a namespace, or why they cannot be read.
async fn pod_metrics(member: &Client, namespace: &str) -> Result<Vec<Value>, String> {
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("metrics.k8s.io", "v1beta1", "PodMetrics"),
        "pods",
    );
    let api: Api<DynamicObject> = Api::namespaced_with(member.clone(), namespace, &resource);
    match api.list(&ListParams::default()).await {
        Ok(list) => Ok(list.items.into_iter().filter_map(|m| serde_json::to_value(m).ok()).collect()),
        Err(kube::Error::Api(e)) if e.code == 404 => {
            Err("metrics.k8s.io/v1beta1 is not served by the member (no metrics-server?)".into())
        }
        Err(e) => Err(format!("reading metrics.k8s.io/v1beta1 PodMetrics in {namespace}: {e}")),
    }
}
