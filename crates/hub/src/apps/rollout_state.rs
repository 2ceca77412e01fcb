//! What the rollouts keep between binder passes (`rollouts` decides;
//! the application state holds this).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use flotilla_api::rollout::{Rollout, RolloutStrategy};
use flotilla_apps_core::revision::RevisionContent;
use flotilla_apps_core::rollout::Record;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::Store;

use super::index::{lock, TemplateKey};

/// The field manager of Rollouts, and their Events' reporter.
pub(super) const MANAGER: &str = "flotilla-rollout";

/// A kept revision: (namespace, rollout, hash).
pub(super) type RevisionId = (String, String, String);

/// What the rollouts keep between binder passes.
pub(crate) struct Rollouts {
    pub(super) strategies: Store<RolloutStrategy>,
    pub(super) objects: Store<Rollout>,
    /// The record last written, by template: the cache may not have it yet
    /// when the next pass runs (a stale record would step twice).
    pub(super) records: Mutex<HashMap<TemplateKey, Record>>,
    /// Revision contents by (namespace, rollout, hash), and their numbers.
    pub(super) contents: Mutex<HashMap<RevisionId, (i64, Arc<RevisionContent>)>>,
    /// By template: the revision it asks for now and what each cluster was
    /// last given (its dependencies follow it: `rollout_deps`).
    pub(super) given: Mutex<HashMap<TemplateKey, (Arc<RevisionContent>, PerCluster)>>,
    pub(super) recorder: Recorder,
}

/// Per cluster: the revision given (hash, content).
pub(super) type PerCluster = BTreeMap<String, (String, Arc<RevisionContent>)>;

impl Rollouts {
    pub(super) fn new(
        client: kube::Client,
        strategies: Store<RolloutStrategy>,
        objects: Store<Rollout>,
    ) -> Self {
        Rollouts {
            strategies,
            objects,
            records: Mutex::default(),
            contents: Mutex::default(),
            given: Mutex::default(),
            recorder: Recorder::new(client, Reporter { controller: MANAGER.into(), instance: None }),
        }
    }

    pub(super) fn forget(&self, key: &TemplateKey) {
        lock(&self.records).remove(key);
        lock(&self.given).remove(key);
    }

    /// What a template under a strategy asks for now and gave each cluster
    /// on its last pass.
    pub(super) fn given_of(&self, key: &TemplateKey) -> Option<(Arc<RevisionContent>, PerCluster)> {
        lock(&self.given).get(key).cloned()
    }
}
