//! Pull members' tunnels: the WebSocket each agent keeps open to the hub
//! (`flotilla_fleet_core::tunnel` says what travels on it), and requests
//! sent through them. A newer tunnel of a cluster replaces the older one.
//!
//! Responses stream: the body the user reads is fed by the agent's chunks
//! as they arrive; when the user goes away (a `logs -f` interrupted), the
//! agent is told to cancel. One slow reader holds up the tunnel's other
//! streams (their chunks share one reader loop) for as long as its
//! channel is full.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use flotilla_agent::tunnel_io::{send_chunks, write_messages};
use flotilla_fleet_core::tunnel::{self, AgentFrame, HubFrame};
use futures::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::upgrade::OnUpgrade;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::response::{full, member_response, status, BoxError, Forward, ProxyBody};

/// How long the agent has to answer a request with its status line.
const HEAD_TIMEOUT: Duration = Duration::from_secs(60);
/// Chunks buffered per response before the tunnel waits for its reader.
const RESPONSE_BUFFER: usize = 64;

/// The open tunnels by cluster name.
#[derive(Default)]
pub(super) struct Tunnels {
    open: Mutex<HashMap<String, Arc<Tunnel>>>,
    generation: AtomicU64,
    /// The tunnels' tasks (spawned: an upgraded connection outlives the
    /// request that opened it), stopped with [`Tunnels::close_all`].
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
}

impl Tunnels {
    /// Closes every tunnel (the proxy stopped serving; agents reconnect to
    /// whichever replica serves next).
    pub(super) fn close_all(&self) {
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.drain(..).for_each(|task| task.abort());
        }
    }

    pub(super) fn get(&self, cluster: &str) -> Option<Arc<Tunnel>> {
        // A poisoned lock means a panic while holding it: nothing to trust.
        self.open.lock().ok()?.get(cluster).cloned()
    }

    fn insert(&self, cluster: &str, tunnel: Arc<Tunnel>) {
        if let Ok(mut open) = self.open.lock() {
            open.insert(cluster.to_string(), tunnel);
        }
    }

    /// Forgets `cluster`'s tunnel if it still is the one of `generation`.
    fn remove(&self, cluster: &str, generation: u64) {
        if let Ok(mut open) = self.open.lock() {
            if open.get(cluster).is_some_and(|t| t.generation == generation) {
                open.remove(cluster);
            }
        }
    }
}

/// What arrives for one request.
enum Event {
    Head(u16, Vec<(String, String)>),
    Chunk(Bytes),
    End,
    Error(String),
}

pub(super) struct Tunnel {
    cluster: String,
    generation: u64,
    outgoing: mpsc::Sender<Message>,
    pending: Mutex<HashMap<u32, mpsc::Sender<Event>>>,
    next_id: AtomicU32,
}

impl Tunnel {
    fn forget(&self, id: u32) -> Option<mpsc::Sender<Event>> {
        self.pending.lock().ok()?.remove(&id)
    }

    fn sender(&self, id: u32) -> Option<mpsc::Sender<Event>> {
        self.pending.lock().ok()?.get(&id).cloned()
    }

    /// Sends the request through the tunnel and answers with the member's
    /// response as it streams in.
    pub(super) async fn forward(
        self: Arc<Self>,
        forward: Forward,
        body: Bytes,
        upgrade: Option<OnUpgrade>,
    ) -> Response<ProxyBody> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (events, mut received) = mpsc::channel(RESPONSE_BUFFER);
        if let Ok(mut pending) = self.pending.lock() {
            pending.insert(id, events);
        }
        let guard = CancelOnDrop { tunnel: self.clone(), id, finished: false };
        let request = HubFrame::Request {
            id,
            method: forward.method,
            target: forward.target,
            headers: forward.headers,
            user: forward.identity.user,
            groups: forward.identity.groups,
        };
        let mut frames = vec![Message::text(serde_json::to_string(&request).unwrap_or_default())];
        if !body.is_empty() {
            frames.push(Message::binary(tunnel::encode_chunk(id, &body)));
        }
        frames.push(Message::binary(tunnel::encode_end(id)));
        for frame in frames {
            if self.outgoing.send(frame).await.is_err() {
                return closed(&self.cluster);
            }
        }
        match tokio::time::timeout(HEAD_TIMEOUT, received.recv()).await {
            Ok(Some(Event::Head(101, headers))) => {
                if let Some(user) = upgrade {
                    tokio::spawn(self.clone().splice(id, user, received, guard));
                }
                member_response(101, &headers, full(Bytes::new()))
            }
            Ok(Some(Event::Head(code, headers))) => {
                let chunks =
                    futures::stream::unfold((received, guard), |(mut received, mut guard)| async move {
                        match received.recv().await {
                            Some(Event::Chunk(bytes)) => Some((Ok(Frame::data(bytes)), (received, guard))),
                            Some(Event::End) => {
                                guard.finish();
                                None
                            }
                            Some(Event::Error(message)) => {
                                guard.finish();
                                Some((Err(BoxError::from(message)), (received, guard)))
                            }
                            Some(Event::Head(..)) => None,
                            None => Some((
                                Err(BoxError::from("the tunnel closed mid-response")),
                                (received, guard),
                            )),
                        }
                    });
                // An Err item ends the body for hyper; nothing follows it.
                member_response(code, &headers, BodyExt::boxed_unsync(StreamBody::new(chunks)))
            }
            Ok(Some(Event::Error(message))) => status(
                StatusCode::BAD_GATEWAY,
                &format!("cluster {}'s agent could not complete the request: {message}", self.cluster),
            ),
            Ok(Some(_)) | Ok(None) => closed(&self.cluster),
            Err(_) => status(
                StatusCode::GATEWAY_TIMEOUT,
                &format!(
                    "cluster {}'s agent did not answer within {}s",
                    self.cluster,
                    HEAD_TIMEOUT.as_secs()
                ),
            ),
        }
    }
}

impl Tunnel {
    /// Carries an upgraded stream (exec, attach) both ways: the user's
    /// bytes as chunks to the agent, the member's chunks to the user. The
    /// session ends with the member's side.
    async fn splice(
        self: Arc<Self>,
        id: u32,
        user: OnUpgrade,
        mut received: mpsc::Receiver<Event>,
        mut guard: CancelOnDrop,
    ) {
        use tokio::io::AsyncWriteExt;
        let user = match user.await {
            Ok(user) => user,
            Err(e) => return tracing::warn!(cluster = %self.cluster, error = %e, "a user's upgrade failed"),
        };
        let (from_user, mut to_user) = tokio::io::split(TokioIo::new(user));
        let upstream = async {
            send_chunks(id, from_user, &self.outgoing).await;
            std::future::pending::<()>().await;
        };
        let downstream = async {
            while let Some(event) = received.recv().await {
                match event {
                    Event::Chunk(bytes) if to_user.write_all(&bytes).await.is_ok() => {}
                    Event::End => {
                        guard.finish();
                        break;
                    }
                    _ => break,
                }
            }
            let _ = to_user.shutdown().await;
        };
        tokio::select! {
            () = upstream => {}
            () = downstream => {}
        }
    }
}

fn closed(cluster: &str) -> Response<ProxyBody> {
    status(StatusCode::BAD_GATEWAY, &format!("cluster {cluster}'s tunnel closed before the member answered"))
}

/// Tells the agent to stop a request whose reader went away.
struct CancelOnDrop {
    tunnel: Arc<Tunnel>,
    id: u32,
    finished: bool,
}

impl CancelOnDrop {
    /// The response ended: nothing to cancel.
    fn finish(&mut self) {
        self.finished = true;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.tunnel.forget(self.id);
        if !self.finished {
            let cancel = HubFrame::Cancel { id: self.id };
            let _ = self
                .tunnel
                .outgoing
                .try_send(Message::text(serde_json::to_string(&cancel).unwrap_or_default()));
        }
    }
}

/// Answers an agent's upgrade request and runs its tunnel in the
/// background until it closes.
pub(super) fn accept(
    tunnels: &Arc<Tunnels>,
    cluster: &str,
    request: Request<Incoming>,
) -> Response<ProxyBody> {
    let headers = request.headers();
    let is_websocket = headers
        .get(hyper::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let Some(key) = headers.get(hyper::header::SEC_WEBSOCKET_KEY).filter(|_| is_websocket) else {
        return status(StatusCode::BAD_REQUEST, "a tunnel is a WebSocket: send Upgrade: websocket");
    };
    let accept_key = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let (tunnels, cluster) = (tunnels.clone(), cluster.to_string());
    let registry = tunnels.clone();
    let task = tokio::spawn(async move {
        match hyper::upgrade::on(request).await {
            Ok(upgraded) => {
                let socket =
                    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
                run(&tunnels, &cluster, socket).await;
            }
            Err(e) => tracing::warn!(cluster, error = %e, "a tunnel's upgrade failed"),
        }
    });
    if let Ok(mut tasks) = registry.tasks.lock() {
        tasks.retain(|task| !task.is_finished());
        tasks.push(task.abort_handle());
    }
    let mut response = Response::new(full(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(hyper::header::UPGRADE, hyper::header::HeaderValue::from_static("websocket"));
    headers.insert(hyper::header::CONNECTION, hyper::header::HeaderValue::from_static("Upgrade"));
    if let Ok(value) = hyper::header::HeaderValue::from_str(&accept_key) {
        headers.insert(hyper::header::SEC_WEBSOCKET_ACCEPT, value);
    }
    response
}

async fn run<S>(tunnels: &Tunnels, cluster: &str, socket: WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sink, mut stream) = socket.split();
    let (outgoing, to_send) = mpsc::channel::<Message>(256);
    let generation = tunnels.generation.fetch_add(1, Ordering::Relaxed);
    let tunnel = Arc::new(Tunnel {
        cluster: cluster.to_string(),
        generation,
        outgoing: outgoing.clone(),
        pending: Mutex::new(HashMap::new()),
        next_id: AtomicU32::new(1),
    });
    tunnels.insert(cluster, tunnel.clone());
    tracing::info!(cluster, generation, "a pull member's tunnel opened");
    let writer = write_messages(sink, to_send);
    let reader = async {
        while let Some(message) = stream.next().await {
            match message {
                Ok(Message::Text(text)) => match serde_json::from_str::<AgentFrame>(text.as_str()) {
                    Ok(AgentFrame::Head { id, status, headers }) => {
                        deliver(&tunnel, id, Event::Head(status, headers)).await
                    }
                    Ok(AgentFrame::Error { id, message }) => {
                        if let Some(events) = tunnel.forget(id) {
                            let _ = events.send(Event::Error(message)).await;
                        }
                    }
                    Err(e) => tracing::warn!(cluster, error = %e, "an unreadable tunnel frame"),
                },
                Ok(Message::Binary(frame)) => match tunnel::decode_chunk(&frame) {
                    Some((id, [])) => {
                        if let Some(events) = tunnel.forget(id) {
                            let _ = events.send(Event::End).await;
                        }
                    }
                    Some((id, chunk)) => {
                        deliver(&tunnel, id, Event::Chunk(Bytes::copy_from_slice(chunk))).await
                    }
                    None => tracing::warn!(cluster, "a tunnel body frame without an id"),
                },
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => {}
            }
        }
    };
    tokio::select! {
        () = writer => {}
        () = reader => {}
    }
    tunnels.remove(cluster, generation);
    // Dropping the pending senders ends their responses.
    if let Ok(mut pending) = tunnel.pending.lock() {
        pending.clear();
    }
    tracing::info!(cluster, generation, "a pull member's tunnel closed");
}

/// Hands an event to its request's reader; a reader that went away is
/// forgotten (its cancel was sent when it dropped).
async fn deliver(tunnel: &Tunnel, id: u32, event: Event) {
    if let Some(events) = tunnel.sender(id) {
        if events.send(event).await.is_err() {
            tunnel.forget(id);
        }
    }
}
