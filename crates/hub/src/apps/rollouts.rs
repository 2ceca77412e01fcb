//! Progressive delivery on the hub: for a template a `RolloutStrategy`
//! takes, which revision each of its clusters is given. The binder calls
//! [`plan`] before it writes Works; the decisions are
//! `flotilla_apps_core::rollout` (waves, steps, gates) and
//! `rollout_status` (status, controls). Here: the `Rollout` object (spec,
//! status, Events), the revisions kept as `ControllerRevision`s (read back
//! for the clusters that keep the stable one), and when to look again.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use flotilla_api::rollout::{Rollout, RolloutStrategy, CHANGES_ANNOTATION, HASH_ANNOTATION, ROLLOUT_LABEL};
use flotilla_api::work::{TargetCluster, Work};
use flotilla_apps_core::metric_gate::Verdict;
use flotilla_apps_core::revision::{changes, RevisionContent};
use flotilla_apps_core::rollout::{self, Assigned, Phase};
use flotilla_apps_core::rollout_status::{self, StatusInput};
use flotilla_apps_core::selection::TemplateMeta;
use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use super::index::{lock, TemplateKey};
use super::rollout_state::{PerCluster, MANAGER};
use super::state::Apps;
use crate::error::Error;

/// How often the metric gates of a rollout under way are asked again.
const METRIC_RECHECK: Duration = Duration::from_secs(2);

/// Which revision each cluster is given, and when to look again.
pub(super) struct Given {
    per_cluster: PerCluster,
    pub(super) requeue: Option<Duration>,
    /// What to say once the Works are written ([`report`]).
    report: Option<Report>,
    /// Clusters not in `per_cluster` are left as they are this pass.
    hold_others: bool,
}

/// The Rollout's status and Events of a pass, written after its Works so
/// they never delay a wave.
struct Report {
    object: Arc<Rollout>,
    status: Option<flotilla_api::rollout::RolloutStatus>,
    /// (reason, action, message)
    events: Vec<(String, String, String)>,
    /// A revision was kept now: prune the history (limit, never these).
    prune: Option<(i32, Vec<Option<String>>)>,
}

/// Writes what a pass decided about the Rollout: its status, its Events,
/// the history pruned.
pub(super) async fn report(apps: &Apps, key: &TemplateKey, given: &mut Given) -> Result<(), Error> {
    let Some(report) = given.report.take() else { return Ok(()) };
    let name = report.object.name_any();
    if let Some(status) = &report.status {
        let body =
            json!({"apiVersion": Rollout::api_version(&()), "kind": Rollout::kind(&()), "status": status});
        Api::<Rollout>::namespaced(apps.client.clone(), &key.namespace)
            .patch_status(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&body))
            .await?;
    }
    for (reason, action, message) in &report.events {
        publish(apps, &report.object, reason, action, message).await;
        tracing::info!(template = %key, %reason, %message, "rollout");
    }
    if let Some((limit, keep)) = &report.prune {
        let keep: Vec<Option<&String>> = keep.iter().map(Option::as_ref).collect();
        prune_history(apps, &key.namespace, &name, *limit, &keep).await;
    }
    Ok(())
}

impl Given {
    /// The revision (hash, content) a cluster is given.
    pub(super) fn for_cluster(&self, cluster: &str) -> Option<&(String, Arc<RevisionContent>)> {
        self.per_cluster.get(cluster)
    }

    /// A dependency following its templates' revisions; `wait`: a template
    /// has not given its clusters a revision yet, so the others are held.
    pub(super) fn following(per_cluster: PerCluster, wait: Option<Duration>) -> Given {
        Given { per_cluster, requeue: wait, report: None, hold_others: wait.is_some() }
    }

    /// Whether the cluster's Work is left as it is this pass.
    pub(super) fn holds(&self, cluster: &str) -> bool {
        self.hold_others && !self.per_cluster.contains_key(cluster)
    }
}

/// The Rollout of a template: named like its binding.
pub(super) fn rollout_name(key: &TemplateKey) -> String {
    flotilla_apps_core::binding::binding_name(&key.api_version, &key.kind, &key.name)
}

/// The name of a revision's ControllerRevision (cut with a hash when the
/// Rollout's name is near the limit).
fn revision_name(rollout: &str, hash: &str) -> String {
    flotilla_apps_core::binding::fit(format!("{rollout}-{hash}"), &[rollout, hash])
}

/// A Rollout's name as the label value its revisions carry (at most 63
/// characters; unchanged when it fits).
fn label_value(rollout: &str) -> String {
    flotilla_apps_core::binding::label_value(rollout)
}

/// The strategy that takes the template, if one does.
fn strategy_for(apps: &Apps, meta: &TemplateMeta<'_>) -> Option<Arc<RolloutStrategy>> {
    let strategies = apps.rollouts.strategies.state();
    let named: Vec<(String, String)> =
        strategies.iter().map(|s| (s.namespace().unwrap_or_default(), s.name_any())).collect();
    let listed: Vec<(&str, &str, &flotilla_api::rollout::RolloutStrategySpec)> =
        strategies.iter().zip(&named).map(|(s, (ns, name))| (ns.as_str(), name.as_str(), &s.spec)).collect();
    let chosen = rollout_status::pick_strategy(&listed, meta)?;
    strategies.iter().zip(&named).find(|(_, (_, name))| name == chosen).map(|(s, _)| s.clone())
}

/// Whether a strategy takes the template.
pub(super) fn takes(apps: &Apps, meta: &TemplateMeta<'_>) -> bool {
    strategy_for(apps, meta).is_some()
}

/// What [`plan`] reads of a template.
pub(super) struct Template<'a> {
    pub(super) meta: &'a TemplateMeta<'a>,
    pub(super) uid: &'a str,
    /// What the template asks for now.
    pub(super) content: RevisionContent,
    pub(super) targets: &'a [TargetCluster],
    pub(super) works: &'a BTreeMap<String, Arc<Work>>,
    pub(super) suspended: &'a std::collections::BTreeSet<&'a str>,
}

/// The revision each target cluster is given, for a template a strategy
/// takes; `None` when none does (its changes go everywhere at once).
/// Clusters whose dispatch is `suspended` are not gated, like those that
/// cannot be reached.
pub(super) async fn plan(
    apps: &Apps,
    key: &TemplateKey,
    template: Template<'_>,
) -> Result<Option<Given>, Error> {
    let Template { meta, uid: template_uid, content, targets, works, suspended } = template;
    let Some(chosen) = strategy_for(apps, meta) else {
        lock(&apps.rolling).remove(key);
        return Ok(None);
    };
    let (strategy_name, spec) = (chosen.name_any(), &chosen.spec);
    let strategy_name = strategy_name.as_str();
    let name = rollout_name(key);
    let strategy = match rollout::from_spec(spec) {
        Ok(s) => s,
        Err(why) => {
            // Nothing is dispatched under a strategy that cannot be read:
            // every cluster keeps what it has until it is fixed.
            tracing::warn!(template = %key, strategy = strategy_name, %why, "rollout strategy refused");
            return Err(Error::Other(format!("RolloutStrategy {strategy_name}: {why}")));
        }
    };
    let object = ensure_rollout(apps, key, &name, strategy_name, template_uid).await?;
    let hash = content.hash();
    let content = Arc::new(content);

    let record = lock(&apps.rollouts.records)
        .get(key)
        .cloned()
        .or_else(|| object.status.as_ref().and_then(rollout_status::record_of));
    let view = apps.cluster_view();
    let labelled: Vec<rollout::TargetCluster> = targets
        .iter()
        .map(|t| rollout::TargetCluster {
            name: t.name.clone(),
            labels: view
                .clusters
                .iter()
                .find(|c| c.name == t.name)
                .map(|c| c.labels.clone())
                .unwrap_or_default(),
        })
        .collect();
    let waves = rollout::waves_for(&strategy, &labelled, record.as_ref(), &hash);
    let mut reports: Vec<rollout::ClusterReport> = targets
        .iter()
        .map(|t| {
            let reachable = !suspended.contains(t.name.as_str())
                && view
                    .clusters
                    .iter()
                    .find(|c| c.name == t.name)
                    .is_some_and(|c| c.available_since.is_some());
            rollout::report_from_work(
                &t.name,
                works.get(&t.name).map(|w| w.as_ref()),
                reachable,
                spec.max_restarts,
            )
        })
        .collect();
    let wave_now = record.as_ref().filter(|r| r.revision == hash).map_or(0, |r| r.wave);
    let rolling_now = record.as_ref().is_some_and(|r| {
        r.revision == hash && matches!(r.phase, Phase::Progressing | Phase::Soaking | Phase::Paused)
    });
    if rolling_now && !spec.metric_gates.is_empty() {
        let reached: Vec<&String> = waves.iter().take(wave_now + 1).flatten().collect();
        let verdicts = futures::future::join_all(
            reached.iter().map(|c| super::metric_gates::check(&spec.metric_gates, c)),
        )
        .await;
        for (cluster, verdict) in reached.iter().zip(verdicts) {
            // Only a cluster that runs the new revision is judged by it.
            let Some(report) = reports
                .iter_mut()
                .find(|r| &r.name == *cluster && r.revision.as_deref() == Some(hash.as_str()))
            else {
                continue;
            };
            match verdict {
                Verdict::Fail(why) => report.health = rollout::Health::Failed(why),
                Verdict::NoData(why) if report.health == rollout::Health::Healthy => {
                    tracing::debug!(template = %key, cluster = %cluster, %why, "metric gate waits");
                    report.health = rollout::Health::Progressing;
                }
                _ => {}
            }
        }
    }
    let control = rollout_status::control_of(object.annotations(), &hash, wave_now);
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    let stepped = rollout::step(&rollout::StepInput {
        waves: &waves,
        revision: &hash,
        record: record.as_ref(),
        reports: &reports,
        control,
        soak_seconds: strategy.soak_seconds,
        progress_deadline_seconds: strategy.progress_deadline_seconds,
        now,
    });

    // The revisions: the one asked for is kept (numbered) on first sight;
    // the stable one is read back for the clusters that keep it.
    let stable_hash = stepped.record.stable.clone();
    let stable = match &stable_hash {
        Some(h) if *h != hash => load_revision(apps, &key.namespace, &name, h).await?,
        _ => None,
    };
    let (number, created) =
        keep_revision(apps, key, &object, &name, &hash, &content, stable.as_ref().map(|s| &*s.1)).await?;
    let stable_number = match (&stable_hash, &stable) {
        (Some(h), _) if *h == hash => Some(number),
        (_, Some((n, _))) => Some(*n),
        _ => None,
    };
    let mut per_cluster = BTreeMap::new();
    for (cluster, assigned) in &stepped.assigned {
        let given = match (assigned, &stable, &stable_hash) {
            (Assigned::Stable, Some((_, content)), Some(h)) => (h.clone(), content.clone()),
            // No stable revision to give (none yet, or its record is gone):
            // the cluster gets what the template says.
            _ => (hash.clone(), content.clone()),
        };
        per_cluster.insert(cluster.clone(), given);
    }

    let status = rollout_status::status(&StatusInput {
        record: &stepped.record,
        assigned: &stepped.assigned,
        reports: &reports,
        revision_number: number,
        stable_number,
        strategy: &strategy,
        previous: object.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default(),
        now,
    });
    lock(&apps.rollouts.records).insert(key.clone(), stepped.record.clone());
    let mut numbers = vec![(hash.as_str(), number)];
    if let (Some(h), Some(n)) = (&stable_hash, stable_number) {
        numbers.push((h.as_str(), n));
    }
    // The action names the revision and wave: the event recorder merges
    // Events of one action into a series that keeps the first message.
    let action = format!("Revision{number}Wave{}", stepped.record.wave + 1);
    let events = stepped
        .events
        .iter()
        .map(|(reason, message)| {
            (reason.clone(), action.clone(), rollout_status::with_numbers(message, &numbers))
        })
        .collect();
    let report = Report {
        status: (object.status.as_ref() != Some(&status)).then_some(status),
        events,
        prune: created.then(|| (spec.history_limit, vec![Some(hash.clone()), stable_hash.clone()])),
        object,
    };

    let r = &stepped.record;
    let active = matches!(r.phase, Phase::Progressing | Phase::Soaking | Phase::Paused);
    // Its Works' status changes bind it again, under way (a gate may pass
    // or fail) and after (the clusters' rows stay true on the Rollout).
    lock(&apps.rolling).insert(key.clone());
    let left = |from: i64, seconds: i64| Duration::from_secs((from + seconds - now).clamp(1, 3600) as u64);
    let requeue = match r.phase {
        Phase::Soaking => r.soak_started_at.map(|s| left(s, strategy.soak_seconds)),
        Phase::Progressing => Some(left(r.wave_started_at, strategy.progress_deadline_seconds)),
        Phase::Paused | Phase::Complete | Phase::RolledBack => None,
    };
    // Metrics change without any event: ask again while the revision rolls.
    let requeue = if active && !spec.metric_gates.is_empty() {
        Some(requeue.map_or(METRIC_RECHECK, |r| r.min(METRIC_RECHECK)))
    } else {
        requeue
    };
    lock(&apps.rollouts.given).insert(key.clone(), (content.clone(), per_cluster.clone()));
    Ok(Some(Given { per_cluster, requeue, report: Some(report), hold_others: false }))
}

/// The template's Rollout, written when missing or when it names another
/// strategy; owned by the template.
async fn ensure_rollout(
    apps: &Apps,
    key: &TemplateKey,
    name: &str,
    strategy: &str,
    template_uid: &str,
) -> Result<Arc<Rollout>, Error> {
    let cached = apps.rollouts.objects.get(&ObjectRef::new(name).within(&key.namespace));
    if let Some(r) =
        cached.as_ref().filter(|r| r.spec.strategy == strategy && r.spec.template.name == key.name)
    {
        return Ok(r.clone());
    }
    let body = json!({
        "apiVersion": Rollout::api_version(&()), "kind": Rollout::kind(&()),
        "metadata": {"name": name, "namespace": key.namespace, "ownerReferences": [{
            "apiVersion": key.api_version, "kind": key.kind, "name": key.name, "uid": template_uid,
            "blockOwnerDeletion": false,
        }]},
        "spec": {"template": {"apiVersion": key.api_version, "kind": key.kind, "name": key.name}, "strategy": strategy},
    });
    let written = Api::<Rollout>::namespaced(apps.client.clone(), &key.namespace)
        .patch(name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&body))
        .await?;
    Ok(Arc::new(written))
}

/// The revisions kept for a Rollout, by hash: (number, content).
async fn list_revisions(
    apps: &Apps,
    namespace: &str,
    rollout: &str,
) -> Result<Vec<(String, i64, Option<RevisionContent>)>, Error> {
    let listed = Api::<ControllerRevision>::namespaced(apps.client.clone(), namespace)
        .list(&ListParams::default().labels(&format!("{ROLLOUT_LABEL}={}", label_value(rollout))))
        .await?;
    Ok(listed
        .items
        .into_iter()
        .filter_map(|r| {
            let hash = r.annotations().get(HASH_ANNOTATION)?.clone();
            let content = serde_json::from_value(r.data.0.clone()).ok();
            Some((hash, r.revision.unwrap_or(0), content))
        })
        .collect())
}

/// A kept revision's number and content (`None`: not kept, e.g. deleted).
async fn load_revision(
    apps: &Apps,
    namespace: &str,
    rollout: &str,
    hash: &str,
) -> Result<Option<(i64, Arc<RevisionContent>)>, Error> {
    let id = (namespace.to_string(), rollout.to_string(), hash.to_string());
    if let Some(found) = lock(&apps.rollouts.contents).get(&id) {
        return Ok(Some(found.clone()));
    }
    let api = Api::<ControllerRevision>::namespaced(apps.client.clone(), namespace);
    let Some(kept) = api.get_opt(&revision_name(rollout, hash)).await? else {
        tracing::warn!(%rollout, revision = hash, "the stable revision is not kept any more");
        return Ok(None);
    };
    let Ok(content) = serde_json::from_value(kept.data.0.clone()) else {
        return Ok(None);
    };
    let found = (kept.revision.unwrap_or(0), Arc::new(content));
    lock(&apps.rollouts.contents).insert(id, found.clone());
    Ok(Some(found))
}

/// Keeps a revision (numbered after the newest kept, with what changed
/// from the stable one) unless it is kept already; its number, and whether
/// it was kept now.
async fn keep_revision(
    apps: &Apps,
    key: &TemplateKey,
    rollout: &Rollout,
    name: &str,
    hash: &str,
    content: &Arc<RevisionContent>,
    stable: Option<&RevisionContent>,
) -> Result<(i64, bool), Error> {
    let id = (key.namespace.clone(), name.to_string(), hash.to_string());
    if let Some((number, _)) = lock(&apps.rollouts.contents).get(&id) {
        return Ok((*number, false));
    }
    let kept = list_revisions(apps, &key.namespace, name).await?;
    if let Some((_, number, _)) = kept.iter().find(|(h, _, _)| h == hash) {
        lock(&apps.rollouts.contents).insert(id, (*number, content.clone()));
        return Ok((*number, false));
    }
    let number = kept.iter().map(|(_, n, _)| *n).max().unwrap_or(0) + 1;
    let revision = ControllerRevision {
        metadata: kube::api::ObjectMeta {
            name: Some(revision_name(name, hash)),
            namespace: Some(key.namespace.clone()),
            labels: Some(BTreeMap::from([(ROLLOUT_LABEL.to_string(), label_value(name))])),
            annotations: Some(BTreeMap::from([
                (HASH_ANNOTATION.to_string(), hash.to_string()),
                (CHANGES_ANNOTATION.to_string(), changes(stable, content).join("\n")),
            ])),
            owner_references: Some(vec![rollout.controller_owner_ref(&()).unwrap_or_default()]),
            ..Default::default()
        },
        data: RawExtension(serde_json::to_value(&**content)?),
        revision: Some(number),
    };
    let api = Api::<ControllerRevision>::namespaced(apps.client.clone(), &key.namespace);
    match api.create(&PostParams::default(), &revision).await {
        Ok(_) => {}
        // Kept meanwhile (a pass of an earlier leader): read its number.
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let existing = api.get(&revision_name(name, hash)).await?;
            let number = existing.revision.unwrap_or(0);
            lock(&apps.rollouts.contents).insert(id, (number, content.clone()));
            return Ok((number, false));
        }
        Err(e) => return Err(e.into()),
    }
    lock(&apps.rollouts.contents).insert(id, (number, content.clone()));
    Ok((number, true))
}

/// Deletes the oldest revisions beyond `limit`, never those in `keep`.
async fn prune_history(apps: &Apps, namespace: &str, rollout: &str, limit: i32, keep: &[Option<&String>]) {
    let Ok(mut kept) = list_revisions(apps, namespace, rollout).await else { return };
    let limit = usize::try_from(limit.max(1)).unwrap_or(1);
    if kept.len() <= limit {
        return;
    }
    kept.sort_by_key(|(_, n, _)| *n);
    let excess = kept.len() - limit;
    let api = Api::<ControllerRevision>::namespaced(apps.client.clone(), namespace);
    for (hash, _, _) in kept.iter().filter(|(h, _, _)| !keep.contains(&Some(h))).take(excess) {
        if let Err(e) = api.delete(&revision_name(rollout, hash), &DeleteParams::default()).await {
            tracing::debug!(%rollout, revision = %hash, error = %e, "pruning a revision");
        }
        lock(&apps.rollouts.contents).remove(&(namespace.to_string(), rollout.to_string(), hash.clone()));
    }
}

async fn publish(apps: &Apps, rollout: &Rollout, reason: &str, action: &str, message: &str) {
    let warning = reason.ends_with("Failed") || reason.ends_with("RolledBack");
    let event = Event {
        type_: if warning { EventType::Warning } else { EventType::Normal },
        reason: reason.into(),
        note: Some(message.chars().take(1000).collect()),
        action: action.into(),
        secondary: None,
    };
    if let Err(e) = apps.rollouts.recorder.publish(&event, &rollout.object_ref(&())).await {
        tracing::debug!(error = %e, "publishing a rollout event");
    }
}

/// The template is gone: its Rollout and revisions go too (the hub may run
/// without a garbage collector).
pub(super) async fn remove(apps: &Apps, key: &TemplateKey) -> Result<(), Error> {
    apps.rollouts.forget(key);
    lock(&apps.rolling).remove(key);
    if key.namespace.is_empty() {
        return Ok(());
    }
    let name = rollout_name(key);
    let revisions = Api::<ControllerRevision>::namespaced(apps.client.clone(), &key.namespace);
    let by_label = ListParams::default().labels(&format!("{ROLLOUT_LABEL}={}", label_value(&name)));
    let gone = |r: Result<_, kube::Error>| match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    };
    gone(revisions.delete_collection(&DeleteParams::default(), &by_label).await.map(|_| ()))?;
    gone(
        Api::<Rollout>::namespaced(apps.client.clone(), &key.namespace)
            .delete(&name, &DeleteParams::default())
            .await
            .map(|_| ()),
    )?;
    lock(&apps.rollouts.contents).retain(|(ns, r, _), _| ns != &key.namespace || r != &name);
    Ok(())
}

/// The templates to bind again when a strategy or a Rollout changes: those
/// of its namespace the binder knows (a strategy), or its template (a
/// Rollout's controls).
pub(super) fn woken_by_strategy(apps: &Apps, namespace: &str) -> Vec<TemplateKey> {
    lock(&apps.seen).keys().filter(|k| k.namespace == namespace).cloned().collect()
}

pub(super) fn woken_by_rollout(rollout: &Rollout) -> TemplateKey {
    TemplateKey {
        api_version: rollout.spec.template.api_version.clone(),
        kind: rollout.spec.template.kind.clone(),
        namespace: rollout.namespace().unwrap_or_default(),
        name: rollout.spec.template.name.clone(),
    }
}
