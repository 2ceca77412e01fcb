//! What a rollout of an etcd cluster's members costs its clients: a writer
//! that puts sequential keys the way an application would (to the member
//! that answered last, the next one when it fails, the same key again until
//! one acknowledges it), and the check that every acknowledged key reads
//! back. The upgrade tests and `flotilla-bench kok etcd-upgrade` use them.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rustls::ClientConfig;
use tokio::sync::watch;

use crate::etcd_client::call;

/// What the writer did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteTally {
    /// Sequence numbers of the acknowledged puts, in order.
    pub acked: Vec<u64>,
    /// Puts that failed and were retried (on the next member).
    pub retries: u64,
    /// The longest time between two acknowledgements.
    pub longest_gap: Duration,
}

/// The key of write `seq` under `prefix`.
pub fn key(prefix: &str, seq: u64) -> String {
    format!("{prefix}{seq:010}")
}

/// Puts `<prefix><seq>` = `seq` for seq = 0, 1, … until `stop` turns true,
/// each retried on the next endpoint until acknowledged.
pub async fn write_until(
    tls: Arc<ClientConfig>,
    endpoints: Vec<String>,
    prefix: String,
    timeout: Duration,
    mut stop: watch::Receiver<bool>,
) -> WriteTally {
    let mut tally = WriteTally::default();
    if endpoints.is_empty() {
        return tally;
    }
    let mut at = 0;
    let mut seq = 0u64;
    let mut last_ack = Instant::now();
    while !*stop.borrow_and_update() {
        let body = serde_json::json!({
            "key": B64.encode(key(&prefix, seq)),
            "value": B64.encode(seq.to_string()),
        })
        .to_string();
        match call(&tls, &endpoints[at], "/v3/kv/put", &body, timeout).await {
            Ok(_) => {
                tally.longest_gap = tally.longest_gap.max(last_ack.elapsed());
                last_ack = Instant::now();
                tally.acked.push(seq);
                seq += 1;
            }
            Err(e) => {
                tracing::debug!(endpoint = %endpoints[at], seq, error = %e, "etcd put failed; next member");
                tally.retries += 1;
                at = (at + 1) % endpoints.len();
                // A member restarting refuses at once: do not spin.
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                    _ = stop.changed() => {}
                }
            }
        }
    }
    tally
}

/// The acknowledged writes that do not read back (a linearizable read of
/// the prefix, from the first endpoint that answers).
pub async fn lost_writes(
    tls: &Arc<ClientConfig>,
    endpoints: &[String],
    prefix: &str,
    acked: &[u64],
    timeout: Duration,
) -> Result<Vec<u64>, String> {
    let mut end = prefix.as_bytes().to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    let body =
        serde_json::json!({"key": B64.encode(prefix), "range_end": B64.encode(&end), "keys_only": true})
            .to_string();
    let mut errors = Vec::new();
    for endpoint in endpoints {
        match call(tls, endpoint, "/v3/kv/range", &body, timeout).await {
            Ok(answer) => {
                let present = keys_in(&answer)?;
                return Ok(acked.iter().copied().filter(|s| !present.contains(&key(prefix, *s))).collect());
            }
            Err(e) => errors.push(e),
        }
    }
    Err(format!("no member answered the read: {}", errors.join("; ")))
}

fn keys_in(answer: &[u8]) -> Result<BTreeSet<String>, String> {
    let value: serde_json::Value = serde_json::from_slice(answer).map_err(|e| e.to_string())?;
    let kvs = value.get("kvs").and_then(|k| k.as_array()).cloned().unwrap_or_default();
    kvs.iter()
        .map(|kv| {
            let encoded = kv.get("key").and_then(|k| k.as_str()).unwrap_or_default();
            let raw = B64.decode(encoded).map_err(|e| e.to_string())?;
            String::from_utf8(raw).map_err(|e| e.to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_in_write_order_and_parse_from_a_range_answer() {
        assert!(key("/w/", 9) < key("/w/", 10));
        let answer = format!(
            r#"{{"header":{{}},"kvs":[{{"key":"{}"}},{{"key":"{}"}}],"count":"2"}}"#,
            B64.encode(key("/w/", 0)),
            B64.encode(key("/w/", 1))
        );
        let keys = keys_in(answer.as_bytes()).unwrap();
        assert_eq!(keys, BTreeSet::from([key("/w/", 0), key("/w/", 1)]));
        assert!(keys_in(br#"{"header":{}}"#).unwrap().is_empty(), "no kvs: an empty range");
    }
}
