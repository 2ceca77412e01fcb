//! Removing the namespaces the applier created in its member, once no Work
//! places anything there and nothing but Flotilla's objects is left
//! (decisions in `apps_core::member_namespaces`). Swept after each Work's
//! clean-up, so a hub namespace deleted with its templates takes the
//! members' copies of it along.

use flotilla_api::work::{keys, Manifest};
use flotilla_apps_core::apply as decide;
use flotilla_apps_core::member_namespaces::{created_by_agent, only_flotilla_left, referenced, FoundObject};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, DynamicObject, ListParams, Preconditions};
use kube::discovery::{verbs, Discovery, Scope};
use kube::{Api, ResourceExt};

use super::Applier;

impl Applier {
    /// Removes the agent's own namespaces no Work uses any more; a failure
    /// is logged, never a Work's error (the next clean-up sweeps again).
    pub(super) async fn sweep_namespaces(&self) {
        if let Err(e) = self.try_sweep_namespaces().await {
            tracing::warn!(cluster = %self.cluster, error = %e, "could not sweep the member's namespaces");
        }
    }

    async fn try_sweep_namespaces(&self) -> Result<(), kube::Error> {
        let namespaces = Api::<Namespace>::all(self.member.clone());
        let selector = format!("{}={}", keys::MANAGED_BY, keys::MANAGED_BY_VALUE);
        let candidates: Vec<Namespace> = namespaces
            .list(&ListParams::default().labels(&selector))
            .await?
            .items
            .into_iter()
            .filter(|ns| {
                ns.metadata.deletion_timestamp.is_none() && created_by_agent(ns.labels(), ns.annotations())
            })
            .collect();
        if candidates.is_empty() {
            return Ok(());
        }
        // What the Works (not being deleted) still place in the member.
        let works = self.works.list(&ListParams::default()).await?.items;
        let mut manifests = Vec::new();
        for work in works.iter().filter(|w| w.metadata.deletion_timestamp.is_none()) {
            for Manifest(manifest) in &work.spec.manifests {
                let namespaced = match decide::target(manifest) {
                    Ok(target) => match self.kind(&target).await {
                        Ok(Some(kind)) => kind.namespaced,
                        // Unknown scope: count it, so nothing it may need goes.
                        _ => true,
                    },
                    Err(_) => continue,
                };
                manifests.push((manifest, namespaced));
            }
        }
        let used = referenced(manifests);
        let unused: Vec<&Namespace> = candidates.iter().filter(|ns| !used.contains(&ns.name_any())).collect();
        if unused.is_empty() {
            return Ok(());
        }
        let discovery = Discovery::new(self.member.clone()).run().await?;
        for ns in unused {
            let name = ns.name_any();
            let Some(objects) = self.objects_in(&discovery, &name).await else { continue };
            if let Err(why) = only_flotilla_left(&objects) {
                tracing::info!(cluster = %self.cluster, namespace = %name, reason = %why,
                    "keeping a namespace Flotilla created: it holds objects Flotilla does not own");
                continue;
            }
            let params = DeleteParams {
                preconditions: Some(Preconditions { uid: ns.uid(), resource_version: None }),
                ..Default::default()
            };
            match namespaces.delete(&name, &params).await {
                Ok(_) => tracing::info!(cluster = %self.cluster, namespace = %name,
                    "removed a namespace Flotilla created: no Work places anything there any more"),
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Every object in a namespace, metadata only; `None` when some kind
    /// could not be listed (then nothing proves the namespace is ours).
    async fn objects_in(&self, discovery: &Discovery, namespace: &str) -> Option<Vec<FoundObject>> {
        let mut out = Vec::new();
        for group in discovery.groups() {
            // Metrics are views of pods, not objects of their own.
            if group.name() == "metrics.k8s.io" {
                continue;
            }
            for (resource, caps) in group.recommended_resources() {
                if caps.scope != Scope::Namespaced || !caps.supports_operation(verbs::LIST) {
                    continue;
                }
                let api: Api<DynamicObject> = Api::namespaced_with(self.member.clone(), namespace, &resource);
                let list = match api.list_metadata(&ListParams::default()).await {
                    Ok(list) => list,
                    Err(e) => {
                        tracing::info!(cluster = %self.cluster, namespace, kind = %resource.kind, error = %e,
                            "could not list a kind: keeping the namespace for now");
                        return None;
                    }
                };
                for item in list.items {
                    out.push(FoundObject {
                        kind: format!("{}/{}", resource.group, resource.kind),
                        name: item.name_any(),
                        uid: item.uid().unwrap_or_default(),
                        owners: item.owner_references().iter().map(|o| o.uid.clone()).collect(),
                        flotilla_managed: item.labels().get(keys::MANAGED_BY).map(String::as_str)
                            == Some(keys::MANAGED_BY_VALUE),
                    });
                }
            }
        }
        Some(out)
    }
}
