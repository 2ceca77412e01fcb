//! The frames of a pull member's tunnel: one WebSocket the agent opens to
//! the hub (through the hub's API server, as its own hub user), over which
//! the hub sends user requests and the agent streams the member's answers.
//! Many requests share it, each under an id the hub picks.
//!
//! Text messages carry JSON control frames ([`HubFrame`] from the hub,
//! [`AgentFrame`] from the agent). Binary messages carry body bytes: a
//! 4-byte big-endian id, then the chunk; an empty chunk ends that body.
//! The hub sends a request's body (possibly empty) after its `request`
//! frame; the agent sends the response body after its `head` frame.

use serde::{Deserialize, Serialize};

/// What the hub sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum HubFrame {
    /// A user request for the member, as the user `user` in `groups` (the
    /// agent impersonates them; `headers` carry no identity).
    #[serde(rename_all = "camelCase")]
    Request {
        id: u32,
        method: String,
        /// Path and query in the member, e.g. `/api/v1/pods?limit=5`.
        target: String,
        headers: Vec<(String, String)>,
        user: String,
        groups: Vec<String>,
    },
    /// The user went away: stop the request and send nothing more for it.
    Cancel { id: u32 },
}

/// What the agent sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum AgentFrame {
    /// The member's response status and headers; the body follows.
    Head { id: u32, status: u16, headers: Vec<(String, String)> },
    /// The request failed in the agent (the member unreachable, a body cut
    /// short): before `head` the hub answers 502 with `message`; after it,
    /// the body ends early.
    Error { id: u32, message: String },
}

/// A binary body frame for request or response `id`.
pub fn encode_chunk(id: u32, chunk: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(4 + chunk.len());
    frame.extend_from_slice(&id.to_be_bytes());
    frame.extend_from_slice(chunk);
    frame
}

/// The end of body `id`.
pub fn encode_end(id: u32) -> Vec<u8> {
    encode_chunk(id, &[])
}

/// A binary frame's id and chunk (empty: the body ended); `None` for a
/// frame too short to carry an id.
pub fn decode_chunk(frame: &[u8]) -> Option<(u32, &[u8])> {
    let id: [u8; 4] = frame.get(..4)?.try_into().ok()?;
    Some((u32::from_be_bytes(id), &frame[4..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_frames_round_trip() {
        struct Case {
            name: &'static str,
            frame: Vec<u8>,
            want: Option<(u32, Vec<u8>)>,
        }
        let cases = [
            Case { name: "a chunk", frame: encode_chunk(7, b"hello"), want: Some((7, b"hello".to_vec())) },
            Case { name: "the end", frame: encode_end(7), want: Some((7, Vec::new())) },
            Case {
                name: "a large id",
                frame: encode_chunk(u32::MAX, b"x"),
                want: Some((u32::MAX, b"x".to_vec())),
            },
            Case { name: "too short", frame: vec![0, 1, 2], want: None },
            Case { name: "empty", frame: vec![], want: None },
        ];
        for case in cases {
            let got = decode_chunk(&case.frame).map(|(id, chunk)| (id, chunk.to_vec()));
            assert_eq!(got, case.want, "{}", case.name);
        }
    }

    #[test]
    fn control_frames_are_tagged_json() {
        let cases: Vec<(&str, String, serde_json::Value)> = vec![
            (
                "request",
                serde_json::to_string(&HubFrame::Request {
                    id: 1,
                    method: "GET".into(),
                    target: "/api/v1/pods".into(),
                    headers: vec![("accept".into(), "application/json".into())],
                    user: "alice".into(),
                    groups: vec!["dev".into()],
                })
                .unwrap(),
                serde_json::json!({"type": "request", "id": 1, "method": "GET", "target": "/api/v1/pods",
                    "headers": [["accept", "application/json"]], "user": "alice", "groups": ["dev"]}),
            ),
            (
                "cancel",
                serde_json::to_string(&HubFrame::Cancel { id: 9 }).unwrap(),
                serde_json::json!({"type": "cancel", "id": 9}),
            ),
            (
                "head",
                serde_json::to_string(&AgentFrame::Head { id: 2, status: 403, headers: vec![] }).unwrap(),
                serde_json::json!({"type": "head", "id": 2, "status": 403, "headers": []}),
            ),
            (
                "error",
                serde_json::to_string(&AgentFrame::Error { id: 3, message: "refused".into() }).unwrap(),
                serde_json::json!({"type": "error", "id": 3, "message": "refused"}),
            ),
        ];
        for (name, text, want) in cases {
            let got: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(got, want, "{name}");
        }
        let back: HubFrame = serde_json::from_str(r#"{"type":"cancel","id":4}"#).unwrap();
        assert_eq!(back, HubFrame::Cancel { id: 4 });
        assert!(serde_json::from_str::<HubFrame>(r#"{"type":"shutdown"}"#).is_err(), "unknown frames fail");
    }
}
