//! Pull members' tunnels: the WebSocket each agent keeps open to the hub
//! (`flotilla_fleet_core::tunnel` says what travels on it), and requests
//! sent through them. A newer tunnel of a cluster replaces the older one.
//!
//! Responses stream: the body the user reads is fed by the agent's chunks
//! as they arrive; when the user goes away (a `logs -f` interrupted), the
//! agent is told to cancel. The chunks of all a tunnel's requests share
//! one reader loop, so that loop never waits for a request's reader: a
//! reader that falls a whole buffer behind has its response cut (an
//! error, never a silently short body) and the agent told to stop, and
//! the tunnel's other requests go on.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
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
use tokio::sync::mpsc::error::TrySendError;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::response::{full, member_response, status, BoxError, Forward, ProxyBody};

/// How long the agent has to answer a request with its status line.
const HEAD_TIMEOUT: Duration = Duration::from_secs(60);
/// Chunks (of at most 32 KiB) buffered per response; a reader that falls
/// this far behind is cut.
const RESPONSE_BUFFER: usize = 256;

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

/// Where one request's events go, and whether its reader was cut.
#[derive(Clone)]
struct Receiving {
    /// One more slot than [`RESPONSE_BUFFER`]: the end or the error of a
    /// response always fits.
    events: mpsc::Sender<Event>,
    cut: Arc<AtomicBool>,
}

pub(super) struct Tunnel {
    cluster: String,
    generation: u64,
    outgoing: mpsc::Sender<Message>,
    pending: Mutex<HashMap<u32, Receiving>>,
    next_id: AtomicU32,
}

impl Tunnel {
    fn forget(&self, id: u32) -> Option<Receiving> {
        self.pending.lock().ok()?.remove(&id)
    }

    fn receiving(&self, id: u32) -> Option<Receiving> {
        self.pending.lock().ok()?.get(&id).cloned()
    }

    /// Tells the agent to stop request `id` (without waiting: the
    /// tunnel's writer may be busy; a lost cancel leaves chunks that are
    /// dropped on arrival).
    fn cancel(&self, id: u32) {
        let cancel = HubFrame::Cancel { id };
        let _ = self.outgoing.try_send(Message::text(serde_json::to_string(&cancel).unwrap_or_default()));
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
        let (events, mut received) = mpsc::channel(RESPONSE_BUFFER + 1);
        let cut = Arc::new(AtomicBool::new(false));
        if let Ok(mut pending) = self.pending.lock() {
            pending.insert(id, Receiving { events, cut: cut.clone() });
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
                let chunks = futures::stream::unfold(Feed { received, guard, cut }, Feed::next);
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

/// A response body as it arrives through the tunnel.
struct Feed {
    received: mpsc::Receiver<Event>,
    guard: CancelOnDrop,
    cut: Arc<AtomicBool>,
}

impl Feed {
    /// The next piece of the body; an error ends it (hyper reads nothing
    /// after one).
    async fn next(mut self) -> Option<(Result<Frame<Bytes>, BoxError>, Self)> {
        match self.received.recv().await {
            Some(Event::Chunk(bytes)) => Some((Ok(Frame::data(bytes)), self)),
            Some(Event::End) => {
                self.guard.finish();
                None
            }
            Some(Event::Error(message)) => {
                self.guard.finish();
                Some((Err(BoxError::from(message)), self))
            }
            Some(Event::Head(..)) => None,
            None => {
                let why = match self.cut.load(Ordering::Relaxed) {
                    true => format!(
                        "the response was cut: its reader fell {RESPONSE_BUFFER} chunks behind, holding up \
                         the tunnel's other requests"
                    ),
                    false => "the tunnel closed mid-response".to_string(),
                };
                Some((Err(BoxError::from(why)), self))
            }
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
            self.tunnel.cancel(self.id);
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
                        deliver(&tunnel, id, Event::Head(status, headers))
                    }
                    Ok(AgentFrame::Error { id, message }) => {
                        if let Some(receiving) = tunnel.forget(id) {
                            let _ = receiving.events.try_send(Event::Error(message));
                        }
                    }
                    Err(e) => tracing::warn!(cluster, error = %e, "an unreadable tunnel frame"),
                },
                Ok(Message::Binary(frame)) => match tunnel::decode_chunk(&frame) {
                    Some((id, [])) => {
                        if let Some(receiving) = tunnel.forget(id) {
                            let _ = receiving.events.try_send(Event::End);
                        }
                    }
                    Some((id, chunk)) => deliver(&tunnel, id, Event::Chunk(Bytes::copy_from_slice(chunk))),
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

/// Hands an event to its request's reader without waiting for it. A
/// reader that went away is forgotten (its cancel was sent when it
/// dropped); one a whole buffer behind is cut, keeping the last slot for
/// nothing: its response ends in an error once it reads that far.
fn deliver(tunnel: &Tunnel, id: u32, event: Event) {
    let Some(receiving) = tunnel.receiving(id) else { return };
    if receiving.events.capacity() <= 1 {
        receiving.cut.store(true, Ordering::Relaxed);
        tunnel.forget(id);
        tunnel.cancel(id);
        tracing::warn!(cluster = %tunnel.cluster, id, "a proxied response's reader fell behind; cut");
        return;
    }
    if let Err(TrySendError::Closed(_)) = receiving.events.try_send(event) {
        tunnel.forget(id);
    }
}

#[cfg(test)]
#[path = "tunnels_tests.rs"]
mod tests;
