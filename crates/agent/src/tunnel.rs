//! The pull member's end of the cluster proxy: the agent keeps a WebSocket
//! open to the hub (`clusters/{name}/tunnel` of `proxy.flotilla.io`,
//! through the hub's API server, as its own hub user), and runs the user
//! requests the hub sends through it against its member, as the user
//! (impersonated: the member's RBAC decides, not the agent's own rights;
//! its member credential needs only `impersonate`). Answers stream back
//! chunk by chunk; a request the hub cancels is stopped.
//! (`flotilla_fleet_core::tunnel` says what travels on it.)

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use flotilla_fleet_core::cluster_proxy::{self, Identity};
use flotilla_fleet_core::tunnel::{self, AgentFrame, HubFrame};
use futures::StreamExt;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use kube::Client;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::task::AbortHandle;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::error::Error;
use crate::tunnel_io;

const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// How long opening the tunnel may take. While the hub's leader changes,
/// the hub's API server can hold an upgrade to the old leader's proxy
/// until the client gives up (kube's read timeout is minutes); the next
/// leader's proxy is up within seconds, so ask again soon instead.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Keeps the tunnel open (reconnecting with backoff) until the future is
/// dropped. A hub that serves no cluster proxy (404) is asked again now
/// and then.
pub async fn run_tunnel(hub: Client, cluster: String, member: Client) -> Result<(), Error> {
    let mut retry = RETRY_FIRST;
    loop {
        let connected = tokio::time::timeout(CONNECT_TIMEOUT, connect(&hub, &cluster)).await;
        match connected.unwrap_or_else(|_| Err(format!("no answer in {}s", CONNECT_TIMEOUT.as_secs()))) {
            Ok(socket) => {
                tracing::info!(cluster, "tunnel to the hub open");
                retry = RETRY_FIRST;
                serve(socket, &member).await;
                tracing::info!(cluster, "tunnel to the hub closed; reopening");
            }
            Err(message) => {
                tracing::debug!(cluster, error = %message, "opening the tunnel to the hub failed")
            }
        }
        tokio::time::sleep(retry).await;
        retry = (retry * 2).min(RETRY_MAX);
    }
}

type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

async fn connect(hub: &Client, cluster: &str) -> Result<Socket, String> {
    use http::header;
    let key = tokio_tungstenite::tungstenite::handshake::client::generate_key();
    let request = http::Request::get(cluster_proxy::tunnel_path(cluster))
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_VERSION, "13")
        .header(header::SEC_WEBSOCKET_KEY, key)
        .body(kube::client::Body::empty())
        .map_err(|e| e.to_string())?;
    let response = hub.send(request).await.map_err(|e| e.to_string())?;
    if response.status() != http::StatusCode::SWITCHING_PROTOCOLS {
        let code = response.status();
        let body = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        return Err(format!("{code}: {}", String::from_utf8_lossy(&body)));
    }
    let upgraded = hyper::upgrade::on(response).await.map_err(|e| e.to_string())?;
    Ok(WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, None).await)
}

/// A request being received (its body) or run.
enum Pending {
    Receiving {
        request: MemberRequest,
        body: Vec<u8>,
    },
    /// `input` carries an upgraded stream's bytes from the user (none once
    /// the user's side ended, or for a plain request).
    Running {
        task: AbortHandle,
        input: Option<mpsc::Sender<Bytes>>,
    },
}

struct MemberRequest {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    identity: Identity,
}

/// Adds a body chunk from the hub to request `id`: to the body of one
/// still arriving, or to the input of a running upgraded stream without
/// waiting for it (the reader loop serves every stream). False when the
/// member fell a whole buffer behind on that input: the stream is stopped
/// and forgotten, and the others go on.
fn take_chunk(pending: &mut HashMap<u32, Pending>, id: u32, chunk: &[u8]) -> bool {
    match pending.get_mut(&id) {
        Some(Pending::Receiving { body, .. }) => body.extend_from_slice(chunk),
        Some(Pending::Running { input: Some(input), task }) => {
            // Closed: the stream ended; its chunks go nowhere.
            let full = matches!(input.try_send(Bytes::copy_from_slice(chunk)), Err(TrySendError::Full(_)));
            if full {
                task.abort();
                pending.remove(&id);
                return false;
            }
        }
        _ => {}
    }
    true
}

/// Runs the hub's requests until the tunnel closes; requests still
/// running are stopped then.
async fn serve(socket: Socket, member: &Client) {
    let (sink, mut stream) = socket.split();
    let (outgoing, to_send) = mpsc::channel::<Message>(256);
    let mut pending: HashMap<u32, Pending> = HashMap::new();
    let writer = tunnel_io::write_messages(sink, to_send);
    let reader = async {
        while let Some(Ok(message)) = stream.next().await {
            match message {
                Message::Text(text) => match serde_json::from_str::<HubFrame>(text.as_str()) {
                    Ok(HubFrame::Request { id, method, target, headers, user, groups }) => {
                        let identity = Identity { user, groups };
                        let request = MemberRequest { method, target, headers, identity };
                        pending.insert(id, Pending::Receiving { request, body: Vec::new() });
                    }
                    Ok(HubFrame::Cancel { id }) => {
                        if let Some(Pending::Running { task, .. }) = pending.remove(&id) {
                            task.abort();
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "an unreadable frame from the hub"),
                },
                Message::Binary(frame) => match tunnel::decode_chunk(&frame) {
                    Some((id, [])) => match pending.remove(&id) {
                        Some(Pending::Receiving { request, body }) => {
                            let (input, upgraded) = match cluster_proxy::is_upgrade(&request.headers) {
                                true => {
                                    let (input, upgraded) = mpsc::channel(64);
                                    (Some(input), Some(upgraded))
                                }
                                false => (None, None),
                            };
                            let run =
                                run_request(member.clone(), id, request, body, outgoing.clone(), upgraded);
                            let task = tokio::spawn(run).abort_handle();
                            pending.insert(id, Pending::Running { task, input });
                        }
                        // The user's side of an upgraded stream ended.
                        Some(Pending::Running { task, .. }) => {
                            pending.insert(id, Pending::Running { task, input: None });
                        }
                        None => {}
                    },
                    Some((id, chunk)) => {
                        if !take_chunk(&mut pending, id, chunk) {
                            let message = "the member fell behind reading the stream's input".to_string();
                            let _ = outgoing.try_send(text(&AgentFrame::Error { id, message }));
                        }
                    }
                    None => tracing::warn!("a body frame from the hub without an id"),
                },
                Message::Close(_) => break,
                _ => {}
            }
            // Forget requests that finished (their tasks are done).
            pending.retain(|_, p| !matches!(p, Pending::Running { task, .. } if task.is_finished()));
        }
    };
    tokio::select! {
        () = writer => {}
        () = reader => {}
    }
    for (_, request) in pending {
        if let Pending::Running { task, .. } = request {
            task.abort();
        }
    }
}

fn text(frame: &AgentFrame) -> Message {
    Message::text(serde_json::to_string(frame).unwrap_or_default())
}

fn header_pairs(headers: &http::HeaderMap) -> Vec<(String, String)> {
    headers.iter().filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string()))).collect()
}

/// Runs one request against the member as its user and streams the
/// answer to the hub (for an upgrade the member accepted, both ways).
async fn run_request(
    member: Client,
    id: u32,
    request: MemberRequest,
    body: Vec<u8>,
    outgoing: mpsc::Sender<Message>,
    upgraded: Option<mpsc::Receiver<Bytes>>,
) {
    let mut builder = http::Request::builder().method(request.method.as_str()).uri(request.target.as_str());
    // The identity is the hub's word on who asks; the headers that claim
    // one are built here, whatever the hub's request headers say.
    for (name, value) in cluster_proxy::member_request_headers(&request.headers, &request.identity) {
        builder = builder.header(name, value);
    }
    let response = match builder.body(kube::client::Body::from(body)) {
        Ok(member_request) => member.send(member_request).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    let mut response = match response {
        Ok(response) => response,
        Err(message) => {
            let message = format!("the member: {message}");
            let _ = outgoing.send(text(&AgentFrame::Error { id, message })).await;
            return;
        }
    };
    if let (http::StatusCode::SWITCHING_PROTOCOLS, Some(input)) = (response.status(), upgraded) {
        let headers = header_pairs(response.headers());
        let member_side = hyper::upgrade::on(&mut response);
        if outgoing.send(text(&AgentFrame::Head { id, status: 101, headers })).await.is_ok() {
            splice(id, member_side, input, &outgoing).await;
        }
        return;
    }
    let (parts, mut body) = response.into_parts();
    let head = AgentFrame::Head { id, status: parts.status.as_u16(), headers: header_pairs(&parts.headers) };
    if outgoing.send(text(&head)).await.is_err() {
        return;
    }
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                let Ok(chunk) = frame.into_data() else { continue };
                let sent = match chunk.is_empty() {
                    true => Ok(()),
                    false => outgoing.send(Message::binary(tunnel::encode_chunk(id, &chunk))).await,
                };
                if sent.is_err() {
                    return;
                }
            }
            Err(e) => {
                let message = format!("the member's answer broke off: {e}");
                let _ = outgoing.send(text(&AgentFrame::Error { id, message })).await;
                return;
            }
        }
    }
    let _ = outgoing.send(Message::binary(tunnel::encode_end(id))).await;
}

/// Carries an upgraded stream (exec, attach) between the member and the
/// hub: the member's bytes as chunks, the user's chunks to the member.
/// Ends with the member's side.
async fn splice(
    id: u32,
    member_side: hyper::upgrade::OnUpgrade,
    mut input: mpsc::Receiver<Bytes>,
    outgoing: &mpsc::Sender<Message>,
) {
    use tokio::io::AsyncWriteExt;
    let member_io = match member_side.await {
        Ok(io) => io,
        Err(e) => {
            let message = format!("the member's upgrade failed: {e}");
            let _ = outgoing.send(text(&AgentFrame::Error { id, message })).await;
            return;
        }
    };
    let (from_member, mut to_member) = tokio::io::split(TokioIo::new(member_io));
    let to_member_loop = async {
        while let Some(chunk) = input.recv().await {
            if to_member.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = to_member.shutdown().await;
        std::future::pending::<()>().await;
    };
    let from_member_loop = tunnel_io::send_chunks(id, from_member, outgoing);
    tokio::select! {
        () = to_member_loop => {}
        () = from_member_loop => {}
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn running(input: Option<mpsc::Sender<Bytes>>) -> Pending {
        let task = tokio::spawn(std::future::pending::<()>()).abort_handle();
        Pending::Running { task, input }
    }

    #[tokio::test]
    async fn a_chunk_never_waits_for_a_stream_behind_on_its_input() {
        let request = || MemberRequest {
            method: "POST".into(),
            target: "/".into(),
            headers: vec![],
            identity: Identity { user: "alice".into(), groups: vec![] },
        };
        let (input, mut member_reads) = mpsc::channel(1);
        let (gone, _) = mpsc::channel(1);
        let mut pending = HashMap::from([
            (1, Pending::Receiving { request: request(), body: b"a".to_vec() }),
            (2, running(Some(input))),
            (3, running(Some(gone))),
            (4, running(None)),
        ]);
        // (request, chunk, taken)
        let cases: &[(u32, &[u8], bool)] = &[
            (1, b"b", true),
            (2, b"ls\n", true),
            // The member has not read "ls": the stream is stopped.
            (2, b"pwd\n", false),
            (3, b"x", true),
            (4, b"x", true),
            (9, b"x", true),
        ];
        for (id, chunk, taken) in cases {
            assert_eq!(take_chunk(&mut pending, *id, chunk), *taken, "request {id}");
        }
        assert!(matches!(&pending[&1], Pending::Receiving { body, .. } if body == b"ab"));
        assert!(!pending.contains_key(&2), "the stream behind is forgotten");
        assert_eq!(member_reads.recv().await.unwrap(), Bytes::from_static(b"ls\n"));
        assert!(pending.contains_key(&3) && pending.contains_key(&4));
    }
}
