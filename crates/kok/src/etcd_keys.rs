//! `flotilla etcd-keys dump|load`: one prefix of an etcd keyspace (one
//! tenant of a shared EtcdCluster) to a file and back, through the
//! members' gRPC JSON gateway over TLS. What is sent and the rules (one
//! revision for every page, never overwrite a live tenant, resume an
//! interrupted load) are in [`flotilla_kok_core::etcd_keys`].
//!
//! A prefixed EtcdBackup runs `dump` on its destination Machine; a restore
//! of one runs `load` there. Both print a one-line JSON summary last, which
//! the operators read back from the component's log tail.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use flotilla_kok_core::etcd_keys::{
    self as keys, DumpSummary, KeyDump, KeysError, Kv, LoadSummary, MAX_TXN_BYTES, MAX_TXN_OPS, PAGE_LIMIT,
};
use rustls::ClientConfig;

#[derive(Debug, thiserror::Error)]
pub enum EtcdKeysError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Tls(String),
    #[error("no etcd endpoint answered: {0}")]
    Unreachable(String),
    #[error("{0}")]
    Etcd(String),
    #[error("{0}")]
    Keys(#[from] KeysError),
}

/// How to reach the cluster.
#[derive(Clone)]
pub struct Connection {
    pub tls: Arc<ClientConfig>,
    /// Client URLs (`https://host:port`), tried in order.
    pub endpoints: Vec<String>,
    /// How long one request may take.
    pub timeout: Duration,
}

impl Connection {
    /// A connection with the CA, client certificate and key in PEM files.
    pub fn from_files(
        endpoints: Vec<String>,
        cacert: &Path,
        cert: &Path,
        key: &Path,
        timeout: Duration,
    ) -> Result<Connection, EtcdKeysError> {
        let tls = crate::etcd::client_tls_from_files(cacert, cert, key)
            .map_err(|e| EtcdKeysError::Tls(e.to_string()))?;
        if endpoints.is_empty() {
            return Err(EtcdKeysError::Unreachable("none given".into()));
        }
        Ok(Connection { tls, endpoints, timeout })
    }

    async fn call(&self, endpoint: &str, path: &str, body: &str) -> Result<Vec<u8>, EtcdKeysError> {
        crate::etcd::call(&self.tls, endpoint, path, body, self.timeout).await.map_err(EtcdKeysError::Etcd)
    }

    /// Every key under `prefix` at one revision, read from `endpoint`
    /// page by page.
    async fn read_from(&self, endpoint: &str, prefix: &[u8]) -> Result<(i64, Vec<Kv>), EtcdKeysError> {
        let (mut from, mut revision, mut kvs) = (None::<Vec<u8>>, None, Vec::new());
        loop {
            let body = keys::range_request(prefix, from.as_deref(), revision, PAGE_LIMIT);
            let page = keys::parse_range(&self.call(endpoint, "/v3/kv/range", &body).await?)?;
            let at = *revision.get_or_insert(page.revision);
            let next = page.kvs.last().map(|kv| keys::next_key(&kv.key));
            kvs.extend(page.kvs);
            if !page.more {
                return Ok((at, kvs));
            }
            from = Some(next.ok_or_else(|| {
                EtcdKeysError::Etcd(format!("{endpoint}: a range page with more to come but no keys"))
            })?);
        }
    }

    /// [`read_from`](Self::read_from) the first endpoint that answers; and
    /// which one that was.
    async fn read(&self, prefix: &[u8]) -> Result<(String, i64, Vec<Kv>), EtcdKeysError> {
        let mut errors = Vec::new();
        for endpoint in &self.endpoints {
            match self.read_from(endpoint, prefix).await {
                Ok((revision, kvs)) => return Ok((endpoint.clone(), revision, kvs)),
                Err(e) => {
                    tracing::warn!(endpoint = %endpoint, error = %e, "etcd endpoint failed; trying the next");
                    errors.push(e.to_string());
                }
            }
        }
        Err(EtcdKeysError::Unreachable(errors.join("; ")))
    }
}

/// Writes `bytes` to `path` atomically: a temporary file in the same
/// directory (created when missing), synced, then renamed over `path`.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), EtcdKeysError> {
    use std::io::Write as _;
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| EtcdKeysError::Io { path: p, source }
    };
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut file = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    file.write_all(bytes).map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io(path))?;
    // The rename itself survives a crash once the directory is synced.
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
    Ok(())
}

/// Dumps every key under `prefix` (at one revision) into the file `out`.
pub async fn dump(conn: &Connection, prefix: &str, out: &Path) -> Result<DumpSummary, EtcdKeysError> {
    let (endpoint, revision, kvs) = conn.read(prefix.as_bytes()).await?;
    let dump = KeyDump { prefix: prefix.to_string(), revision, keys: kvs };
    let bytes = keys::encode(&dump);
    write_atomically(out, &bytes)?;
    tracing::info!(endpoint = %endpoint, prefix, revision, keys = dump.keys.len(), path = %out.display(), "keys dumped");
    Ok(DumpSummary {
        dumped: out.display().to_string(),
        prefix: prefix.to_string(),
        revision,
        keys: dump.keys.len(),
        bytes: bytes.len() as u64,
    })
}

/// Loads the dump file `input` into the cluster: refuses when keys under
/// its prefix differ from it, writes the ones missing (in transactions
/// that fail rather than overwrite a key someone created meanwhile).
/// `prefix`, when given, must be the dump's.
pub async fn load(
    conn: &Connection,
    input: &Path,
    prefix: Option<&str>,
) -> Result<LoadSummary, EtcdKeysError> {
    let bytes =
        std::fs::read(input).map_err(|source| EtcdKeysError::Io { path: input.to_path_buf(), source })?;
    let dump = keys::decode(&bytes).map_err(|e| match e {
        KeysError::Dump(why) => KeysError::Dump(format!("{}: {why}", input.display())),
        other => other,
    })?;
    if let Some(prefix) = prefix.filter(|p| *p != dump.prefix) {
        return Err(KeysError::Refused(format!(
            "{} holds the keys under {}, not under {prefix}",
            input.display(),
            dump.prefix
        ))
        .into());
    }
    let (endpoint, _, existing) = conn.read(dump.prefix.as_bytes()).await?;
    let plan = keys::plan_load(&dump, &existing)?;
    let mut written = 0;
    for batch in keys::batches(&plan.write, MAX_TXN_OPS, MAX_TXN_BYTES) {
        let answer = conn.call(&endpoint, "/v3/kv/txn", &keys::txn_request(batch)).await?;
        let (succeeded, revision) = keys::parse_txn(&answer)?;
        if !succeeded {
            return Err(KeysError::Refused(format!(
                "keys under {} were created while restoring (after {written} of {} were written): something \
                 writes under the prefix; stop it and restore again (a restore keeps keys that hold the \
                 backup's values, so it resumes)",
                dump.prefix,
                plan.write.len()
            ))
            .into());
        }
        written += batch.len();
        tracing::debug!(endpoint = %endpoint, written, revision, "keys written");
    }
    tracing::info!(endpoint = %endpoint, prefix = %dump.prefix, written, present = plan.present, "keys loaded");
    Ok(LoadSummary {
        loaded: input.display().to_string(),
        prefix: dump.prefix,
        revision: dump.revision,
        written,
        present: plan.present,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dump_file_appears_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/dir/c-b.keys.json");
        write_atomically(&path, b"one").unwrap();
        write_atomically(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> =
            std::fs::read_dir(path.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, [std::ffi::OsString::from("c-b.keys.json")], "no temporary file left");
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, "x").unwrap();
        let err = write_atomically(&blocker.join("f.json"), b"x").unwrap_err().to_string();
        assert!(err.contains("file"), "{err}");
    }
}
