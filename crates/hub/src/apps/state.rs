//! What the application controllers share: the index, the two queues,
//! the client, and how reconcile results are recorded (what the binder
//! wrote or failed to write, for the status writer).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_apps_core::binding_status::{self, Outcome};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Client;

use super::index::{lock, ClusterView, Index, TemplateKey, Wake};
use super::queue::Queue;
use crate::error::Error;

pub(crate) struct Apps {
    pub(super) client: Client,
    /// The caches and what is kept beside them (reads go through `Deref`).
    pub(super) index: Index,
    /// Consecutive binder failures by template, with the last error.
    pub(super) bind_failures: Mutex<HashMap<TemplateKey, (u32, String)>>,
    /// The last status write the API server refused, by template (logged once).
    pub(super) status_refusals: Mutex<HashMap<TemplateKey, String>>,
    /// Last template status written, by template (hash of the JSON).
    pub(super) written_status: Mutex<HashMap<TemplateKey, u64>>,
    pub(super) cluster_view: Mutex<Option<Arc<ClusterView>>>,
    /// Application failover's and hand-added taints' clocks.
    pub(super) failover_clocks: super::app_failover::FailoverClocks,
    /// Placements decided for bindings with workloadAffinity groups.
    pub(super) workload_groups: Mutex<super::workload_groups::Decided>,
    pub(super) failover: flotilla_apps_core::failover::FailoverSettings,
    /// When unschedulable replicas move (`hub run --unschedulable-threshold`).
    pub(super) deschedule: flotilla_apps_core::deschedule::DescheduleSettings,
    /// Which templates the binder may manage (`hub run --require-opt-in`).
    pub(super) opt_in: flotilla_apps_core::migration::OptIn,
    /// True once every policy of the first list has been judged: until
    /// then the binder waits, so it never uses a policy written while no
    /// hub ran (the webhook fails open) before knowing whether it is valid.
    pub(super) policies_judged: tokio::sync::watch::Sender<bool>,
    pub(super) binder: Arc<Queue<TemplateKey>>,
    pub(super) status: Arc<Queue<TemplateKey>>,
    pub(super) rollouts: super::rollout_state::Rollouts,
    /// `WorkloadInterpreter`s: how custom kinds are divided, aggregated
    /// and judged (`apps::interpreters`).
    pub(super) interpreters: kube::runtime::reflector::Store<flotilla_api::interpreter::WorkloadInterpreter>,
    /// The binder's Events and the members' warnings re-emitted on templates.
    pub(super) events: super::event_state::AppEvents,
    /// How propagation policies of both kinds rank (`hub run --policy-order`).
    pub(super) policy_order: flotilla_apps_core::selection::PolicyOrder,
    /// The hub's PriorityClasses (`schedulePriority`).
    pub(super) priority_classes:
        kube::runtime::reflector::Store<k8s_openapi::api::scheduling::v1::PriorityClass>,
}

impl std::ops::Deref for Apps {
    type Target = Index;

    fn deref(&self) -> &Index {
        &self.index
    }
}

impl Apps {
    /// Queues what an index update woke.
    pub(super) fn wake(&self, wake: Wake) {
        for key in wake.binder {
            // Its place in the queue (`schedulePriority`) from the policy its
            // binding records; the binder sets it for new templates.
            if let Some(priority) = self.claimed_priority(&key) {
                self.binder.set_priority(&key, Some(priority));
            }
            self.binder.add(key);
        }
        for key in wake.status {
            self.status.add(key);
        }
    }

    /// Waits until every cache the reconcilers read has its first full
    /// list, so a restart never acts on half a picture (e.g. deletes works
    /// it has not yet seen a binding for).
    pub(super) async fn wait_ready(&self) {
        wait_logged("propagation policies", self.pps.wait_until_ready()).await;
        // A template a strategy takes must never be bound as if none did.
        wait_logged("rollout strategies", self.rollouts.strategies.wait_until_ready()).await;
        wait_logged("rollouts", self.rollouts.objects.wait_until_ready()).await;
        wait_logged("cluster propagation policies", self.cpps.wait_until_ready()).await;
        wait_logged("override policies", self.ops.wait_until_ready()).await;
        wait_logged("cluster override policies", self.cops.wait_until_ready()).await;
        wait_logged("clusters", self.clusters.wait_until_ready()).await;
        wait_logged("bindings", self.bindings.wait_until_ready()).await;
        wait_logged("cluster bindings", self.cluster_bindings.wait_until_ready()).await;
        wait_logged("works", self.works.wait_until_ready()).await;
        // A custom kind bound before its interpreter is known would send
        // every member all its replicas.
        wait_logged("workload interpreters", self.interpreters.wait_until_ready()).await;
    }
}

/// The API server's message when it refuses a write for what it holds
/// (invalid, too large): the same write would be refused again.
pub(crate) fn refusal(e: &kube::Error) -> Option<String> {
    match e {
        kube::Error::Api(s) if flotilla_apps_core::binding_status::is_refusal(s.code, &s.message) => {
            Some(s.message.clone())
        }
        _ => None,
    }
}

/// Now, to the second (what the API server stores).
pub(super) fn now() -> Time {
    let now = k8s_openapi::jiff::Timestamp::now();
    Time(k8s_openapi::jiff::Timestamp::from_second(now.as_second()).unwrap_or(now))
}

async fn wait_logged<F: std::future::Future>(what: &str, wait: F) {
    let mut wait = std::pin::pin!(wait);
    while tokio::time::timeout(Duration::from_secs(10), &mut wait).await.is_err() {
        tracing::info!(cache = what, "still waiting for the first list");
    }
}

impl Apps {
    /// The binder wrote a template's works (`results`; `too_large`: works
    /// it did not send, over etcd's limit). What the API server refused is
    /// kept for the binding's `FullyApplied` (and not retried until the
    /// template or its placement changes); other failures are returned.
    pub(super) fn works_written(
        &self,
        key: &TemplateKey,
        too_large: Vec<String>,
        results: Vec<Result<(), Error>>,
    ) -> Result<(), Error> {
        let mut refused: Vec<(&str, String)> =
            too_large.into_iter().map(|m| (binding_status::REASON_TOO_LARGE, m)).collect();
        let mut failure = None;
        for result in results {
            let message = match result {
                Ok(()) => continue,
                Err(Error::Kube(e)) => match refusal(&e) {
                    Some(message) => message,
                    None => {
                        failure = Some(Error::Kube(e));
                        continue;
                    }
                },
                Err(e) => {
                    failure = Some(e);
                    continue;
                }
            };
            refused.push(if binding_status::is_too_large(&message) {
                (
                    binding_status::REASON_TOO_LARGE,
                    format!(
                        "the hub's etcd refused a work as too large ({message}); make the template smaller"
                    ),
                )
            } else {
                (
                    binding_status::REASON_WORK_REFUSED,
                    format!("the hub's API server refused a work: {message}"),
                )
            });
        }
        let now = refused.first().map(|(reason, _)| {
            let messages: Vec<&str> = refused.iter().map(|(_, m)| m.as_str()).collect();
            (reason.to_string(), messages.join("; "))
        });
        let changed = match &now {
            Some(v) => lock(&self.refused).insert(key.clone(), v.clone()).as_ref() != Some(v),
            None => lock(&self.refused).remove(key).is_some(),
        };
        if changed {
            if let Some((reason, message)) = &now {
                tracing::warn!(template = %key, reason, message, "works not written");
            }
            self.status.add(key.clone());
        }
        failure.map_or(Ok(()), Err)
    }
}

impl Apps {
    /// After a binder reconcile: when to run it again. A failure is logged
    /// when it first happens or changes, not on every retry; one the API
    /// server refuses for its content is also shown on the binding's
    /// `Scheduled` condition (`Refused`).
    pub(super) fn bound(
        &self,
        key: &TemplateKey,
        result: Result<Option<Duration>, Error>,
    ) -> Option<Duration> {
        let e = match result {
            Ok(after) => {
                lock(&self.bind_failures).remove(key);
                return after;
            }
            Err(e) => e,
        };
        let message = e.to_string();
        let refused = match &e {
            Error::Kube(k) => refusal(k),
            _ => None,
        };
        let (count, changed) = {
            let mut failures = lock(&self.bind_failures);
            let entry = failures.entry(key.clone()).or_insert((0, String::new()));
            let changed = entry.1 != message;
            entry.0 = entry.0.saturating_add(1);
            entry.1 = message.clone();
            (entry.0, changed)
        };
        if changed {
            tracing::warn!(template = %key, error = %message, "binding failed; retrying with backoff");
        } else {
            tracing::debug!(template = %key, error = %message, failures = count, "binding failed again");
        }
        if let Some(refused) = refused {
            let message = format!("the hub could not process this template: {refused}");
            let stored = self.binding_status(key).and_then(|(_, status, _)| status);
            let affinity_name = super::affinity_groups::observed(self, key, stored.as_ref());
            let outcome = Outcome {
                scheduled: false,
                reason: "Refused".into(),
                message,
                generation: None,
                affinity_name,
            };
            if lock(&self.outcomes).insert(key.clone(), outcome.clone()).as_ref() != Some(&outcome) {
                self.status.add(key.clone());
            }
            return Some(binding_status::retry_after(count, true));
        }
        Some(binding_status::retry_after(count, false))
    }
}

impl Apps {
    /// The hub's PriorityClasses by name, with their values.
    pub(super) fn priority_class_values(&self) -> std::collections::BTreeMap<String, i32> {
        use kube::ResourceExt;
        self.priority_classes.state().iter().map(|c| (c.name_any(), c.value.unwrap_or(0))).collect()
    }

    /// A template's place in the binder queue: its policy's
    /// `schedulePriority` (0 without one, or while its class is missing).
    pub(super) fn queue_priority(&self, wanted: Option<&flotilla_api::claim::SchedulePriority>) -> i32 {
        if wanted.is_none() {
            return 0;
        }
        flotilla_apps_core::claim::schedule_priority(wanted, &self.priority_class_values()).0
    }

    /// The queue priority of a template from the policy its binding
    /// records (`None` when it has no binding from a policy: the binder
    /// sets it once it picked one).
    fn claimed_priority(&self, key: &TemplateKey) -> Option<i32> {
        use kube::runtime::reflector::ObjectRef;
        let policy = self.with_binding(key, |spec, _, _| spec.policy.clone())??;
        let wanted = if policy.kind == "ClusterPropagationPolicy" {
            self.cpps.get(&ObjectRef::new(&policy.name)).and_then(|p| p.spec.spec.schedule_priority.clone())
        } else {
            let r = ObjectRef::new(&policy.name).within(&policy.namespace);
            self.pps.get(&r).and_then(|p| p.spec.spec.schedule_priority.clone())
        };
        Some(self.queue_priority(wanted.as_ref()))
    }
}
