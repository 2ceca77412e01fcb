//! What one pass of the binder over a template shares between its steps
//! (`binder::reconcile`): the template as read and its binding in the
//! cache (the read step), the policy's decision, what scheduling and the
//! Works read (the inputs step), and when to look again.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use flotilla_api::work::{
    BindingSnapshot, BindingSpec, BindingStatus, GracefulEvictionTask, Health, TargetCluster, Work,
};
use flotilla_apps_core::claim::Record;
use flotilla_apps_core::estimator::NodeConstraints;
use flotilla_apps_core::interpreter::{self as interpreted, Interpreter};
use flotilla_apps_core::selection::TemplateMeta;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::api::DynamicObject;
use kube::Api;

use super::binder_outcome::record;
use super::binder_writes::cleanup;
use super::claims::Decision;
use super::index::{lock, ClusterView, Kind, TemplateKey};
use super::state::Apps;
use super::work_state::work_health;
use crate::error::Error;

/// A step's result: go on with `T`, or end the pass, to be run again after
/// the duration (or not at all).
pub(super) type Step<T> = Result<ControlFlow<Option<Duration>, T>, Error>;

/// The template's binding in the cache: spec, status, metadata.
pub(super) type Existing = Option<(BindingSpec, Option<BindingStatus>, ObjectMeta)>;

/// The template as this pass read it.
pub(super) struct Template {
    pub(super) kind: Kind,
    pub(super) object: DynamicObject,
    /// The object with its `apiVersion` and `kind`.
    pub(super) json: serde_json::Value,
    pub(super) labels: BTreeMap<String, String>,
    /// A custom kind's WorkloadInterpreter (none for built-in kinds).
    pub(super) interpreter: Option<Interpreter>,
    pub(super) existing: Existing,
}

impl Template {
    pub(super) fn meta<'a>(&'a self, key: &'a TemplateKey) -> TemplateMeta<'a> {
        TemplateMeta {
            api_version: &key.api_version,
            kind: &key.kind,
            namespace: &key.namespace,
            name: &key.name,
            labels: &self.labels,
        }
    }

    pub(super) fn interpreter(&self) -> Option<&Interpreter> {
        self.interpreter.as_ref()
    }

    pub(super) fn generation(&self) -> Option<i64> {
        self.object.metadata.generation
    }

    /// The binding's spec as the cache has it.
    pub(super) fn before(&self) -> Option<&BindingSpec> {
        self.existing.as_ref().map(|(s, _, _)| s)
    }
}

/// What the policy step decided.
pub(super) struct Claim {
    pub(super) decision: Decision,
    /// The lazy policy's record of the template revision it saw.
    pub(super) lazy_record: Option<Record>,
    /// Bindings that need this template (propagateDeps).
    pub(super) required_by: Vec<BindingSnapshot>,
}

/// What scheduling and the Works read, once per pass.
pub(super) struct Inputs {
    pub(super) replicas: Option<i32>,
    pub(super) requests: BTreeMap<String, Quantity>,
    pub(super) node_constraints: NodeConstraints,
    /// The binding's clusters before this pass.
    pub(super) previous: Vec<TargetCluster>,
    pub(super) view: Arc<ClusterView>,
    pub(super) now: Timestamp,
    pub(super) failed_over_before: Vec<String>,
    pub(super) works: BTreeMap<String, Arc<Work>>,
    pub(super) health: BTreeMap<String, Health>,
    pub(super) tasks_before: Vec<GracefulEvictionTask>,
}

/// Everything the steps after the policy step share.
pub(super) struct Pass<'a> {
    pub(super) apps: &'a Apps,
    pub(super) key: &'a TemplateKey,
    pub(super) template: Template,
    pub(super) claim: Claim,
    pub(super) inputs: Inputs,
}

/// When to look again: the soonest any step asked for.
#[derive(Default)]
pub(super) struct Requeue(Option<Duration>);

impl Requeue {
    pub(super) fn sooner(&mut self, after: Option<Duration>) {
        self.0 = [self.0, after].into_iter().flatten().min();
    }

    pub(super) fn after(&self) -> Option<Duration> {
        self.0
    }
}

/// The read step: the template, or its cleanup when it (or its kind) is gone.
pub(super) async fn read(apps: &Apps, key: &TemplateKey) -> Step<Template> {
    let Some(kind) = apps.kind(&key.api_version, &key.kind) else {
        let gone = lock(&apps.kinds_gone).contains(&(key.api_version.clone(), key.kind.clone()));
        // Asked again: a copy removed for a kind served after all is lost work.
        if gone && !super::served::still_served(apps, &key.api_version, &key.kind).await {
            // Its CRD was deleted, and the template with it.
            let existing = apps.binding_status(key);
            cleanup(apps, key, existing.as_ref().map(|(s, _, _)| s)).await?;
            return Ok(ControlFlow::Break(None));
        }
        // Its kind is not watched (yet): a policy for it appears first.
        return Ok(ControlFlow::Break(Some(Duration::from_secs(2))));
    };
    let api: Api<DynamicObject> = if kind.namespaced {
        Api::namespaced_with(apps.client.clone(), &key.namespace, &kind.resource)
    } else {
        Api::all_with(apps.client.clone(), &kind.resource)
    };
    let existing = apps.binding_status(key);
    let object = match api.get_opt(&key.name).await? {
        Some(t) if t.metadata.deletion_timestamp.is_none() => t,
        deleting => {
            // The binding may be gone already (garbage-collected with the
            // template); the works are found by label either way.
            cleanup(apps, key, existing.as_ref().map(|(s, _, _)| s)).await?;
            if let Some(t) = deleting {
                super::pvc_protection::lift_if_unused(apps, &api, key, &t).await?;
            }
            return Ok(ControlFlow::Break(None));
        }
    };
    let mut json = serde_json::to_value(&object)?;
    if let Some(o) = json.as_object_mut() {
        o.insert("apiVersion".into(), key.api_version.clone().into());
        o.insert("kind".into(), key.kind.clone().into());
    }
    let interpreter = apps.interpreter(&key.api_version, &key.kind);
    let labels = object.metadata.labels.clone().unwrap_or_default();
    Ok(ControlFlow::Continue(Template { kind, object, json, labels, interpreter, existing }))
}

/// The inputs step: what the template asks for and what its clusters and
/// Works are now; the pass ends when replicas cannot be read.
pub(super) fn inputs(
    apps: &Apps,
    key: &TemplateKey,
    template: &Template,
) -> ControlFlow<Option<Duration>, Inputs> {
    let interpreter = template.interpreter();
    let divided_before = template.before().is_some_and(|s| s.replicas > 0);
    if let Some(why) = interpreted::missing(&template.json, interpreter, divided_before) {
        // Copying it whole now would give every member all the replicas:
        // keep the works as they are until the interpreter is back.
        record(apps, key, false, interpreted::REASON_INTERPRETER_MISSING, &why, template.generation());
        return ControlFlow::Break(None);
    }
    let replicas = interpreted::replicas(&template.json, interpreter);
    let requests = interpreted::replica_requirements(&template.json, interpreter);
    // Custom kinds' pods are unconstrained here: the interpreter gives requests only.
    let node_constraints = flotilla_apps_core::workload::node_constraints(&template.json);
    let previous: Vec<TargetCluster> = template.before().map(|s| s.clusters.clone()).unwrap_or_default();
    let view = apps.cluster_view();
    let now = Timestamp::now();
    let failed_over_before: Vec<String> =
        template.before().map(|s| s.failed_over_from.clone()).unwrap_or_default();
    let works = apps.works_of(key);
    let health: BTreeMap<String, Health> = works.iter().map(|(c, w)| (c.clone(), work_health(w))).collect();
    let tasks_before = template.before().map(|s| s.graceful_eviction_tasks.clone()).unwrap_or_default();
    ControlFlow::Continue(Inputs {
        replicas,
        requests,
        node_constraints,
        previous,
        view,
        now,
        failed_over_before,
        works,
        health,
        tasks_before,
    })
}
