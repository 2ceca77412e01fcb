//! `WorkloadInterpreter`s on the hub: each is judged as stored
//! (`flotilla_apps_core::interpreter::Interpreter::from_spec`: paths, the
//! one-per-kind name, built-in kinds, CEL compiled within bounds) and its
//! `Valid` condition written; the binder and the status writer look up the
//! valid interpreter of a kind; a change of an interpreter binds the
//! templates of its kind again (division, Works' health rules, status).
//!
//! The admission webhook refuses a non-compiling expression already, but it
//! fails open: an interpreter written while no hub answered is caught here
//! and ignored (`Valid=False`, the compiler's message).

use std::collections::HashMap;
use std::sync::Arc;

use flotilla_api::interpreter::WorkloadInterpreter;
use flotilla_apps_core::interpreter::{valid_condition, Interpreter};
use flotilla_core::conditions;
use futures::{Stream, StreamExt};
use kube::api::{Patch, PatchParams};
use kube::runtime::watcher::Event;
use kube::{Api, ResourceExt};
use serde_json::json;

use super::index::{lock, touched, TemplateKey, Wake};
use super::state::{now, Apps};

const MANAGER: &str = "flotilla-hub-interpreter";

impl Apps {
    /// The valid interpreter of a kind, if any (built-in kinds have none:
    /// their interpreters are refused).
    pub(super) fn interpreter(&self, api_version: &str, kind: &str) -> Option<Interpreter> {
        self.interpreters
            .state()
            .iter()
            .filter(|i| i.spec.target.api_version == api_version && i.spec.target.kind == kind)
            .find_map(|i| Interpreter::from_spec(&i.name_any(), &i.spec).ok())
    }

    /// Every template of a kind the hub has seen, to bind and aggregate again.
    fn templates_of(&self, api_version: &str, kind: &str) -> Wake {
        let keys: Vec<TemplateKey> = lock(&self.seen)
            .keys()
            .filter(|k| k.api_version == api_version && k.kind == kind)
            .cloned()
            .collect();
        Wake { binder: keys.clone(), status: keys }
    }
}

/// Judges interpreters as they change and wakes the templates of their kinds.
pub(super) async fn run(apps: Arc<Apps>, events: impl Stream<Item = Event<WorkloadInterpreter>> + Send) {
    let mut events = std::pin::pin!(events);
    // The target each interpreter had, so a retargeted one wakes both kinds.
    let mut targets: HashMap<String, (String, String)> = HashMap::new();
    while let Some(event) = events.next().await {
        let Some(interpreter) = touched(&event) else { continue };
        let name = interpreter.name_any();
        let target = (interpreter.spec.target.api_version.clone(), interpreter.spec.target.kind.clone());
        let before = if matches!(event, Event::Delete(_)) {
            targets.remove(&name)
        } else {
            write_valid(&apps, interpreter).await;
            targets.insert(name, target.clone())
        };
        for (api_version, kind) in before.into_iter().chain([target]) {
            apps.wake(apps.templates_of(&api_version, &kind));
        }
    }
}

/// Writes the `Valid` condition when it changed.
async fn write_valid(apps: &Apps, interpreter: &WorkloadInterpreter) {
    let name = interpreter.name_any();
    let judged = Interpreter::from_spec(&name, &interpreter.spec);
    if let Err(problems) = &judged {
        tracing::info!(interpreter = %name, problems = %problems.join("; "), "interpreter is invalid; ignoring it");
    }
    let generation = interpreter.metadata.generation;
    let current = interpreter.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    let wanted = conditions::condition(current, valid_condition(&judged, generation), &now());
    let observed = interpreter.status.as_ref().and_then(|s| s.observed_generation);
    if conditions::same(current, std::slice::from_ref(&wanted)) && observed == generation {
        return;
    }
    let body = json!({
        "apiVersion": "config.flotilla.io/v1alpha1",
        "kind": "WorkloadInterpreter",
        "metadata": {"name": name},
        "status": {"conditions": [wanted], "observedGeneration": generation},
    });
    let api: Api<WorkloadInterpreter> = Api::all(apps.client.clone());
    if let Err(e) = api.patch_status(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&body)).await
    {
        // The next event (or the resync of the watch) writes it again.
        tracing::warn!(interpreter = %name, error = %e, "writing the interpreter's status failed");
    }
}
