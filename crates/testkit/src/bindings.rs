//! Reading a ResourceBinding: the clusters it chose, its division of
//! replicas, its status conditions.

use flotilla_api::work::ResourceBinding;
use kube::Api;

/// The clusters binding `name` chose (names only; none while it is missing).
pub async fn chosen(bindings: &Api<ResourceBinding>, name: &str) -> Vec<String> {
    match bindings.get_opt(name).await.unwrap() {
        Some(b) => b.spec.spec.clusters.iter().map(|c| c.name.clone()).collect(),
        None => Vec::new(),
    }
}

/// A binding's (cluster, replicas) targets, in its order.
pub fn replicas_by_cluster(b: &ResourceBinding) -> Vec<(String, i32)> {
    b.spec.spec.clusters.iter().map(|c| (c.name.clone(), c.replicas)).collect()
}

/// The (cluster, replicas) division of binding `name` (none while it is missing).
pub async fn division(bindings: &Api<ResourceBinding>, name: &str) -> Vec<(String, i32)> {
    let Some(b) = bindings.get_opt(name).await.unwrap() else { return Vec::new() };
    replicas_by_cluster(&b)
}

/// Owned (cluster, replicas) pairs from a literal list, to compare with a division.
pub fn pairs(list: &[(&str, i32)]) -> Vec<(String, i32)> {
    list.iter().map(|(n, r)| (n.to_string(), *r)).collect()
}

/// Binding `name`'s condition `type_` as (status, reason, message).
pub async fn binding_condition(
    bindings: &Api<ResourceBinding>,
    name: &str,
    type_: &str,
) -> Option<(String, String, String)> {
    let b = bindings.get_opt(name).await.ok()??;
    let c = b.status?.conditions.into_iter().find(|c| c.type_ == type_)?;
    Some((c.status, c.reason, c.message))
}

/// Whether binding `name`'s condition `type_` is True.
pub async fn is_true(bindings: &Api<ResourceBinding>, name: &str, type_: &str) -> bool {
    binding_condition(bindings, name, type_).await.is_some_and(|(s, _, _)| s == "True")
}
