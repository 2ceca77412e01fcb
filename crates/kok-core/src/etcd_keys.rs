//! Key dumps of one prefix of an etcd keyspace: one tenant (HostedCluster)
//! of a shared EtcdCluster, backed up and restored without touching the
//! others. What `flotilla etcd-keys dump|load` sends to etcd's gRPC JSON
//! gateway and reads back, the dump file's format, and the rule that keeps
//! a load from overwriting a live tenant.
//!
//! The prefix is a plain byte prefix (as `etcdctl get --prefix`):
//! `/clusters/a` also covers `/clusters/ab/…`; end it with `/` to mean one
//! directory only. HostedClusters' prefixes never nest, so a tenant's
//! `--etcd-prefix` is its prefix.
//!
//! The dump file is one JSON document, `{version, prefix, revision, keys:
//! [{key, value}]}` with keys and values in base64, every page read at one
//! revision so it is a consistent picture of the prefix.
//!
//! A load refuses when the target holds any key under the prefix that is
//! not in the dump with the same value: it never overwrites (or mixes with)
//! a live tenant. Keys that already hold exactly the dump's value are what
//! an interrupted load leaves behind, so they are skipped and a rerun
//! finishes the job. Each put is guarded by `create_revision == 0`, so a
//! key written by someone else meanwhile fails its batch instead of being
//! overwritten.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Version of the dump file format.
pub const DUMP_VERSION: u32 = 1;
/// Keys per range request.
pub const PAGE_LIMIT: i64 = 500;
/// Operations per transaction: etcd's default `--max-txn-ops`.
pub const MAX_TXN_OPS: usize = 128;
/// Bytes of keys and values per transaction: below etcd's default
/// `--max-request-bytes` (1.5 MiB), leaving room for the envelope. A single
/// larger key goes alone (etcd refuses it if it is over the server's limit).
pub const MAX_TXN_BYTES: usize = 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeysError {
    /// An answer of etcd's gateway that is not what it should be.
    #[error("etcd answer: {0}")]
    Answer(String),
    /// The dump file cannot be read as one.
    #[error("not a key dump: {0}")]
    Dump(String),
    /// The load would overwrite keys: why, and what to do.
    #[error("{0}")]
    Refused(String),
}

/// One key and its value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Kv {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

impl Kv {
    pub fn new(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Kv {
        Kv { key: key.into(), value: value.into() }
    }
}

/// The keys under a prefix at one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyDump {
    pub prefix: String,
    /// The revision every page was read at.
    pub revision: i64,
    pub keys: Vec<Kv>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DumpFile {
    version: u32,
    prefix: String,
    revision: i64,
    keys: Vec<FileKv>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileKv {
    key: String,
    value: String,
}

/// The dump file's bytes.
pub fn encode(dump: &KeyDump) -> Vec<u8> {
    let file = json!({
        "version": DUMP_VERSION,
        "prefix": dump.prefix,
        "revision": dump.revision,
        "keys": dump.keys.iter().map(|kv| json!({"key": B64.encode(&kv.key), "value": B64.encode(&kv.value)}))
            .collect::<Vec<_>>(),
    });
    let mut bytes = file.to_string().into_bytes();
    bytes.push(b'\n');
    bytes
}

/// Reads a dump file: its version must be known, its keys unique and all
/// under its prefix.
pub fn decode(bytes: &[u8]) -> Result<KeyDump, KeysError> {
    let file: DumpFile = serde_json::from_slice(bytes).map_err(|e| KeysError::Dump(e.to_string()))?;
    if file.version != DUMP_VERSION {
        return Err(KeysError::Dump(format!(
            "format version {} (this flotilla reads version {DUMP_VERSION})",
            file.version
        )));
    }
    let mut keys = Vec::with_capacity(file.keys.len());
    for (i, kv) in file.keys.iter().enumerate() {
        let key = B64.decode(&kv.key).map_err(|e| KeysError::Dump(format!("keys[{i}].key: {e}")))?;
        let value = B64.decode(&kv.value).map_err(|e| KeysError::Dump(format!("keys[{i}].value: {e}")))?;
        if !key.starts_with(file.prefix.as_bytes()) {
            return Err(KeysError::Dump(format!(
                "keys[{i}] ({}) is not under the dump's prefix {}",
                show(&key),
                file.prefix
            )));
        }
        keys.push(Kv { key, value });
    }
    keys.sort();
    if let Some(w) = keys.windows(2).find(|w| w[0].key == w[1].key) {
        return Err(KeysError::Dump(format!("key {} appears twice", show(&w[0].key))));
    }
    Ok(KeyDump { prefix: file.prefix, revision: file.revision, keys })
}

/// A key for people: text when it is, base64 otherwise.
pub fn show(key: &[u8]) -> String {
    match std::str::from_utf8(key) {
        Ok(s) => s.to_string(),
        Err(_) => format!("base64:{}", B64.encode(key)),
    }
}

/// The end of the range that holds exactly the keys starting with
/// `prefix`: the prefix with its last byte incremented (trailing 0xff
/// bytes dropped first). `[0]` (etcd's "every key from `key` on") when
/// there is no such end: an empty prefix or one of only 0xff bytes.
pub fn range_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Body of a `/v3/kv/range` request for the keys under `prefix` from key
/// `from` on (the first page: `None`), at `revision` (the first page: the
/// current one), at most `limit` of them.
pub fn range_request(prefix: &[u8], from: Option<&[u8]>, revision: Option<i64>, limit: i64) -> String {
    let mut body = json!({
        "key": B64.encode(from.unwrap_or(prefix)),
        "range_end": B64.encode(range_end(prefix)),
        "limit": limit.to_string(),
    });
    if let Some(revision) = revision {
        body["revision"] = json!(revision.to_string());
    }
    body.to_string()
}

/// The key after `key` in etcd's order: where the next page starts.
pub fn next_key(key: &[u8]) -> Vec<u8> {
    let mut next = key.to_vec();
    next.push(0);
    next
}

/// One page of a range answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangePage {
    /// The revision the page was read at (the header's).
    pub revision: i64,
    pub kvs: Vec<Kv>,
    /// More keys follow the last of this page.
    pub more: bool,
}

/// The gateway writes int64s as strings and leaves out zeros.
fn int(v: Option<&Value>) -> Result<i64, KeysError> {
    match v {
        None => Ok(0),
        Some(Value::String(s)) => s.parse().map_err(|_| KeysError::Answer(format!("not an integer: {s}"))),
        Some(Value::Number(n)) => n.as_i64().ok_or_else(|| KeysError::Answer(format!("not an integer: {n}"))),
        Some(other) => Err(KeysError::Answer(format!("not an integer: {other}"))),
    }
}

fn bytes(v: Option<&Value>) -> Result<Vec<u8>, KeysError> {
    match v {
        None => Ok(Vec::new()),
        Some(Value::String(s)) => B64.decode(s).map_err(|e| KeysError::Answer(format!("base64: {e}"))),
        Some(other) => Err(KeysError::Answer(format!("not base64 text: {other}"))),
    }
}

fn answer(body: &[u8]) -> Result<Value, KeysError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| KeysError::Answer(e.to_string()))?;
    if let Some(error) = v.get("error").or_else(|| v.get("message")) {
        return Err(KeysError::Answer(error.to_string()));
    }
    Ok(v)
}

/// Reads a `/v3/kv/range` answer.
pub fn parse_range(body: &[u8]) -> Result<RangePage, KeysError> {
    let v = answer(body)?;
    let revision = int(v.pointer("/header/revision"))?;
    let mut kvs = Vec::new();
    for kv in v.get("kvs").and_then(Value::as_array).into_iter().flatten() {
        kvs.push(Kv { key: bytes(kv.get("key"))?, value: bytes(kv.get("value"))? });
    }
    let more = v.get("more").and_then(Value::as_bool).unwrap_or(false);
    Ok(RangePage { revision, kvs, more })
}

/// What a load writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadPlan {
    /// The dump's keys the target does not hold yet, in key order.
    pub write: Vec<Kv>,
    /// The dump's keys the target already holds with the dump's value (an
    /// interrupted load's work).
    pub present: usize,
}

/// What to write, given the keys the target holds under the dump's prefix;
/// refuses when any of them is not the dump's (see the module docs).
pub fn plan_load(dump: &KeyDump, existing: &[Kv]) -> Result<LoadPlan, KeysError> {
    let wanted: std::collections::BTreeMap<&[u8], &[u8]> =
        dump.keys.iter().map(|kv| (kv.key.as_slice(), kv.value.as_slice())).collect();
    let mut conflicts = Vec::new();
    let mut present = std::collections::BTreeSet::new();
    for kv in existing {
        match wanted.get(kv.key.as_slice()) {
            Some(value) if *value == kv.value.as_slice() => {
                present.insert(kv.key.as_slice());
            }
            Some(_) => conflicts.push(format!("{} (differs from the backup)", show(&kv.key))),
            None => conflicts.push(format!("{} (not in the backup)", show(&kv.key))),
        }
    }
    if !conflicts.is_empty() {
        let shown = conflicts.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
        let more = conflicts.len().saturating_sub(5);
        let more = if more > 0 { format!(" and {more} more") } else { String::new() };
        return Err(KeysError::Refused(format!(
            "refusing to restore: prefix {} already holds {} key(s) that differ from the backup: {shown}{more}; \
             a restore never overwrites a live tenant: stop what writes under the prefix and delete its keys \
             (etcdctl del --prefix {}), or restore into another EtcdCluster",
            dump.prefix,
            conflicts.len(),
            dump.prefix
        )));
    }
    let write = dump.keys.iter().filter(|kv| !present.contains(kv.key.as_slice())).cloned().collect();
    Ok(LoadPlan { write, present: present.len() })
}

/// Splits `keys` into transactions of at most `max_ops` puts and about
/// `max_bytes` of keys and values (a larger key goes alone).
pub fn batches(keys: &[Kv], max_ops: usize, max_bytes: usize) -> Vec<&[Kv]> {
    let mut out = Vec::new();
    let (mut start, mut size) = (0, 0);
    for (i, kv) in keys.iter().enumerate() {
        // The key goes twice: in the compare and in the put.
        let cost = 2 * kv.key.len() + kv.value.len();
        if i > start && (i - start >= max_ops.max(1) || size + cost > max_bytes) {
            out.push(&keys[start..i]);
            (start, size) = (i, 0);
        }
        size += cost;
    }
    if start < keys.len() {
        out.push(&keys[start..]);
    }
    out
}

/// Body of a `/v3/kv/txn` that puts every key of `batch` only if none of
/// them exists.
pub fn txn_request(batch: &[Kv]) -> String {
    let compare: Vec<Value> = batch
        .iter()
        .map(|kv| {
            json!({"key": B64.encode(&kv.key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"})
        })
        .collect();
    let success: Vec<Value> = batch
        .iter()
        .map(|kv| json!({"request_put": {"key": B64.encode(&kv.key), "value": B64.encode(&kv.value)}}))
        .collect();
    json!({"compare": compare, "success": success}).to_string()
}

/// Reads a `/v3/kv/txn` answer: whether its compares held (the puts ran)
/// and the revision after it.
pub fn parse_txn(body: &[u8]) -> Result<(bool, i64), KeysError> {
    let v = answer(body)?;
    Ok((v.get("succeeded").and_then(Value::as_bool).unwrap_or(false), int(v.pointer("/header/revision"))?))
}

/// What `etcd-keys dump` prints as its last line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DumpSummary {
    pub dumped: String,
    pub prefix: String,
    pub revision: i64,
    pub keys: usize,
    pub bytes: u64,
}

/// What `etcd-keys load` prints as its last line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadSummary {
    pub loaded: String,
    pub prefix: String,
    /// The dump's revision.
    pub revision: i64,
    /// Keys written by this run.
    pub written: usize,
    /// Keys that already held the dump's value.
    pub present: usize,
}

/// The last line of a log tail that is a `T` (the summaries above).
pub fn last_summary<T: serde::de::DeserializeOwned>(log_tail: &[String]) -> Option<T> {
    log_tail.iter().rev().find_map(|line| serde_json::from_str(line.trim()).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dump(keys: &[(&str, &str)]) -> KeyDump {
        KeyDump {
            prefix: "/clusters/a".into(),
            revision: 9,
            keys: keys.iter().map(|(k, v)| Kv::new(k.as_bytes(), v.as_bytes())).collect(),
        }
    }

    #[test]
    fn a_dump_round_trips_through_its_file_and_bad_files_are_refused() {
        let mut d = dump(&[("/clusters/a/x", "1"), ("/clusters/a/y", "")]);
        d.keys.push(Kv::new(b"/clusters/a/\xff\x00".to_vec(), vec![0u8, 1, 2, 255]));
        d.keys.sort();
        let bytes = encode(&d);
        assert_eq!(decode(&bytes).unwrap(), d);
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.contains("\"version\":1") && text.contains("L2NsdXN0ZXJzL2EveA=="), "{text}");

        let file = |v: u32, prefix: &str, key: &str| {
            format!(
                r#"{{"version":{v},"prefix":"{prefix}","revision":1,"keys":[{{"key":"{key}","value":""}}]}}"#
            )
        };
        let ok = B64.encode("/clusters/a/x");
        assert!(decode(file(1, "/clusters/a", &ok).as_bytes()).is_ok());
        let err = decode(file(2, "/clusters/a", &ok).as_bytes()).unwrap_err().to_string();
        assert!(err.contains("version 2"), "{err}");
        let err = decode(file(1, "/clusters/b", &ok).as_bytes()).unwrap_err().to_string();
        assert!(err.contains("not under the dump's prefix /clusters/b"), "{err}");
        assert!(decode(file(1, "/clusters/a", "not base64!").as_bytes()).is_err());
        assert!(decode(b"{}").is_err());
        let twice = format!(
            r#"{{"version":1,"prefix":"/","revision":1,"keys":[{{"key":"{ok}","value":""}},{{"key":"{ok}","value":"eA=="}}]}}"#
        );
        let err = decode(twice.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("twice"), "{err}");
    }

    #[test]
    fn the_range_of_a_prefix_ends_after_its_last_byte() {
        assert_eq!(range_end(b"/clusters/a"), b"/clusters/b");
        assert_eq!(range_end(b"/a/"), b"/a0");
        assert_eq!(range_end(b"a\xff\xff"), b"b");
        assert_eq!(range_end(b"\xff"), [0]);
        assert_eq!(range_end(b""), [0]);
        assert_eq!(next_key(b"/a/x"), b"/a/x\0");
    }

    #[test]
    fn range_requests_page_at_one_revision_and_answers_are_read() {
        let first: Value = serde_json::from_str(&range_request(b"/a", None, None, 500)).unwrap();
        assert_eq!(first, json!({"key": B64.encode("/a"), "range_end": B64.encode("/b"), "limit": "500"}));
        let next: Value = serde_json::from_str(&range_request(b"/a", Some(b"/a/x\0"), Some(7), 2)).unwrap();
        assert_eq!(next["key"], json!(B64.encode("/a/x\0")));
        assert_eq!((next["revision"].as_str(), next["range_end"].as_str()), (Some("7"), Some("L2I=")));

        let body = json!({
            "header": {"cluster_id": "1", "revision": "12"},
            "kvs": [
                {"key": B64.encode("/a/x"), "create_revision": "2", "mod_revision": "3", "version": "2", "value": B64.encode("v")},
                {"key": B64.encode("/a/empty"), "create_revision": "4", "mod_revision": "4", "version": "1"},
            ],
            "more": true, "count": "5",
        });
        let page = parse_range(body.to_string().as_bytes()).unwrap();
        assert_eq!(
            page,
            RangePage { revision: 12, kvs: vec![Kv::new("/a/x", "v"), Kv::new("/a/empty", "")], more: true }
        );
        let empty = parse_range(br#"{"header":{"revision":"3"}}"#).unwrap();
        assert_eq!(empty, RangePage { revision: 3, kvs: vec![], more: false });
        let compacted =
            parse_range(br#"{"error":"etcdserver: mvcc: required revision has been compacted","code":11}"#)
                .unwrap_err()
                .to_string();
        assert!(compacted.contains("compacted"), "{compacted}");
    }

    #[test]
    fn a_load_refuses_keys_that_differ_and_resumes_an_interrupted_one() {
        let d = dump(&[("/clusters/a/x", "1"), ("/clusters/a/y", "2"), ("/clusters/a/z", "3")]);
        let all = plan_load(&d, &[]).unwrap();
        assert_eq!((all.write.len(), all.present), (3, 0));
        // Interrupted after the first batch: the rest is written.
        let resumed = plan_load(&d, &[Kv::new("/clusters/a/x", "1")]).unwrap();
        assert_eq!(resumed.write, vec![Kv::new("/clusters/a/y", "2"), Kv::new("/clusters/a/z", "3")]);
        assert_eq!(resumed.present, 1);
        // All there already: nothing to do.
        let done = plan_load(&d, &d.keys).unwrap();
        assert_eq!((done.write.len(), done.present), (0, 3));

        let changed = plan_load(&d, &[Kv::new("/clusters/a/x", "1"), Kv::new("/clusters/a/y", "two")]);
        let message = changed.unwrap_err().to_string();
        assert!(message.contains("/clusters/a/y (differs from the backup)"), "{message}");
        assert!(message.contains("1 key(s)") && message.contains("never overwrites"), "{message}");
        let extra = plan_load(&d, &[Kv::new("/clusters/a/new", "x")]).unwrap_err().to_string();
        assert!(extra.contains("/clusters/a/new (not in the backup)"), "{extra}");
        let many: Vec<Kv> = (0..8).map(|i| Kv::new(format!("/clusters/a/n{i}"), "x")).collect();
        let message = plan_load(&d, &many).unwrap_err().to_string();
        assert!(message.contains("8 key(s)") && message.contains("and 3 more"), "{message}");
    }

    #[test]
    fn writes_go_in_batches_of_at_most_128_puts_and_a_megabyte() {
        let keys: Vec<Kv> = (0..300).map(|i| Kv::new(format!("/a/{i:04}"), "v")).collect();
        let split = batches(&keys, MAX_TXN_OPS, MAX_TXN_BYTES);
        assert_eq!(split.iter().map(|b| b.len()).collect::<Vec<_>>(), [128, 128, 44]);
        assert_eq!(split.concat(), keys);
        let big: Vec<Kv> = (0..4).map(|i| Kv::new(format!("/a/{i}"), vec![b'x'; 400_000])).collect();
        assert_eq!(
            batches(&big, MAX_TXN_OPS, MAX_TXN_BYTES).iter().map(|b| b.len()).collect::<Vec<_>>(),
            [2, 2]
        );
        let huge = vec![Kv::new("/a/huge", vec![b'x'; 2_000_000]), Kv::new("/a/small", "v")];
        assert_eq!(
            batches(&huge, MAX_TXN_OPS, MAX_TXN_BYTES).iter().map(|b| b.len()).collect::<Vec<_>>(),
            [1, 1]
        );
        assert!(batches(&[], MAX_TXN_OPS, MAX_TXN_BYTES).is_empty());

        let txn: Value = serde_json::from_str(&txn_request(&keys[..2])).unwrap();
        assert_eq!(
            txn["compare"][1],
            json!({"key": B64.encode("/a/0001"), "target": "CREATE", "result": "EQUAL", "create_revision": "0"})
        );
        assert_eq!(
            txn["success"][0],
            json!({"request_put": {"key": B64.encode("/a/0000"), "value": "dg=="}})
        );
        assert_eq!(parse_txn(br#"{"header":{"revision":"8"},"succeeded":true}"#).unwrap(), (true, 8));
        assert_eq!(parse_txn(br#"{"header":{"revision":"8"}}"#).unwrap(), (false, 8));
    }

    #[test]
    fn summaries_are_found_in_a_log_tail() {
        let s = DumpSummary {
            dumped: "/b/f.keys.json".into(),
            prefix: "/a".into(),
            revision: 4,
            keys: 2,
            bytes: 99,
        };
        let tail = vec![
            "starting".to_string(),
            serde_json::to_string(&s).unwrap(),
            "---- flotilla: exited with 0".into(),
        ];
        assert_eq!(last_summary::<DumpSummary>(&tail), Some(s));
        assert_eq!(last_summary::<LoadSummary>(&tail), None);
    }
}
