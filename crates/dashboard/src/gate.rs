//! Per-object read gates for hub mode: a user sees the objects of the
//! shared stores only where their own access reviews allow it. A
//! namespaced object is shown if the user may `list` its kind in its
//! namespace; a cluster-scoped one if the user may `get` it by name. One
//! review answers for every namespace or name when the user may `list`
//! the kind everywhere. Answers are cached per user and question for a
//! short while (`Auth::allowed`).

use std::collections::{BTreeSet, HashSet};

use futures::stream::{self, StreamExt, TryStreamExt};

use crate::auth::{Access, Auth, Caller, Mode};
use crate::error::Error;

/// How many access reviews one page view asks at once.
const CONCURRENT_REVIEWS: usize = 16;

/// Which namespaces (or names, for cluster-scoped kinds) a user may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readable {
    All,
    Only(HashSet<String>),
}

impl Readable {
    pub fn contains(&self, key: &str) -> bool {
        match self {
            Readable::All => true,
            Readable::Only(keys) => keys.contains(key),
        }
    }

    /// Whether the user may read nothing at all of the keys asked about.
    pub fn is_nothing(&self) -> bool {
        matches!(self, Readable::Only(keys) if keys.is_empty())
    }
}

/// A kind of the API: group and plural resource name.
#[derive(Debug, Clone, Copy)]
pub struct Kind {
    pub group: &'static str,
    pub resource: &'static str,
}

pub const MANAGED_CLUSTERS: Kind = Kind { group: "cluster.flotilla.io", resource: "managedclusters" };
pub const BINDINGS: Kind = Kind { group: "work.flotilla.io", resource: "resourcebindings" };
pub const CLUSTER_BINDINGS: Kind = Kind { group: "work.flotilla.io", resource: "clusterresourcebindings" };
pub const WORKS: Kind = Kind { group: "work.flotilla.io", resource: "works" };
pub const ROLLOUTS: Kind = Kind { group: "rollout.flotilla.io", resource: "rollouts" };
pub const HOSTED_CLUSTERS: Kind = Kind { group: "kok.flotilla.io", resource: "hostedclusters" };
pub const ETCD_CLUSTERS: Kind = Kind { group: "kok.flotilla.io", resource: "etcdclusters" };
pub const ETCD_BACKUPS: Kind = Kind { group: "kok.flotilla.io", resource: "etcdbackups" };
pub const MACHINES: Kind = Kind { group: "kok.flotilla.io", resource: "machines" };

/// The namespaces among `namespaces` where `caller` may list `kind`.
pub async fn namespaces(
    auth: &Auth,
    caller: &Caller,
    kind: Kind,
    namespaces: impl IntoIterator<Item = String>,
) -> Result<Readable, Error> {
    readable(auth, caller, kind, "list", namespaces, |access, ns| access.namespace(ns)).await
}

/// The names among `names` of a cluster-scoped `kind` that `caller` may get.
pub async fn names(
    auth: &Auth,
    caller: &Caller,
    kind: Kind,
    names: impl IntoIterator<Item = String>,
) -> Result<Readable, Error> {
    readable(auth, caller, kind, "get", names, |access, name| access.name(name)).await
}

async fn readable(
    auth: &Auth,
    caller: &Caller,
    kind: Kind,
    verb: &str,
    keys: impl IntoIterator<Item = String>,
    scope: impl Fn(Access, &str) -> Access,
) -> Result<Readable, Error> {
    if auth.mode == Mode::Local {
        return Ok(Readable::All);
    }
    let everywhere = Access::new("list", kind.group, kind.resource);
    if auth.allowed(caller, &everywhere).await?.0 {
        return Ok(Readable::All);
    }
    let keys: BTreeSet<String> = keys.into_iter().collect();
    let answers: Vec<(String, bool)> = stream::iter(keys)
        .map(|key| {
            let access = scope(Access::new(verb, kind.group, kind.resource), &key);
            async move { auth.allowed(caller, &access).await.map(|(allowed, _)| (key, allowed)) }
        })
        .buffer_unordered(CONCURRENT_REVIEWS)
        .try_collect()
        .await?;
    Ok(Readable::Only(answers.into_iter().filter(|(_, allowed)| *allowed).map(|(key, _)| key).collect()))
}

#[cfg(test)]
mod tests {
    use super::Readable;

    #[test]
    fn readable_keys() {
        let only = Readable::Only(["shop".to_string()].into_iter().collect());
        let cases = [
            ("all contains anything", Readable::All, "bank", true, false),
            ("only: a listed key", only.clone(), "shop", true, false),
            ("only: another key", only, "bank", false, false),
            ("nothing", Readable::Only(Default::default()), "shop", false, true),
        ];
        for (name, readable, key, contains, nothing) in cases {
            assert_eq!(readable.contains(key), contains, "{name}");
            assert_eq!(readable.is_nothing(), nothing, "{name}");
        }
    }
}
