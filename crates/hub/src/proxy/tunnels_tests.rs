#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A tunnel driven from its agent's end over an in-memory socket: the
//! hub's half is the real one.

use super::*;
use flotilla_fleet_core::cluster_proxy::Identity;
use futures::SinkExt;

fn get(target: &str) -> Forward {
    Forward {
        cluster: "m1".into(),
        identity: Identity { user: "alice".into(), groups: vec![] },
        method: "GET".into(),
        target: target.into(),
        headers: vec![],
    }
}

/// The next request's id the agent's end reads.
async fn next_request<S>(agent: &mut WebSocketStream<S>) -> u32
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        if let Message::Text(text) = agent.next().await.unwrap().unwrap() {
            if let Ok(HubFrame::Request { id, .. }) = serde_json::from_str(text.as_str()) {
                return id;
            }
        }
    }
}

#[tokio::test]
async fn a_reader_that_falls_behind_is_cut_and_holds_up_no_other_request() {
    let (hub_end, agent_end) = tokio::io::duplex(1 << 20);
    let tunnels = Arc::new(Tunnels::default());
    let hub_socket = WebSocketStream::from_raw_socket(hub_end, Role::Server, None).await;
    let serving = tokio::spawn({
        let tunnels = tunnels.clone();
        async move { run(&tunnels, "m1", hub_socket).await }
    });
    let mut agent = WebSocketStream::from_raw_socket(agent_end, Role::Client, None).await;
    let tunnel = loop {
        match tunnels.get("m1") {
            Some(t) => break t,
            None => tokio::task::yield_now().await,
        }
    };

    // Two requests: `logs -f` whose reader never reads, and a list.
    let stalled = tokio::spawn(tunnel.clone().forward(get("/logs"), Bytes::new(), None));
    let stalled_id = next_request(&mut agent).await;
    let listed = tokio::spawn(tunnel.clone().forward(get("/pods"), Bytes::new(), None));
    let listed_id = next_request(&mut agent).await;
    let head = |id| {
        Message::text(serde_json::to_string(&AgentFrame::Head { id, status: 200, headers: vec![] }).unwrap())
    };
    agent.send(head(stalled_id)).await.unwrap();
    agent.send(head(listed_id)).await.unwrap();
    let stalled = stalled.await.unwrap();
    assert_eq!(stalled.status(), 200);

    // More chunks for the stalled reader than its buffer holds, then the
    // list's whole body: the list arrives.
    for _ in 0..RESPONSE_BUFFER + 10 {
        agent.send(Message::binary(tunnel::encode_chunk(stalled_id, b"a log line\n"))).await.unwrap();
    }
    agent.send(Message::binary(tunnel::encode_chunk(listed_id, b"{\"items\":[]}"))).await.unwrap();
    agent.send(Message::binary(tunnel::encode_end(listed_id))).await.unwrap();
    let listed =
        tokio::time::timeout(Duration::from_secs(10), listed).await.expect("the list answered").unwrap();
    let body = tokio::time::timeout(Duration::from_secs(10), listed.into_body().collect())
        .await
        .expect("the list's body arrived while the other reader stalled")
        .unwrap()
        .to_bytes();
    assert_eq!(&body[..], b"{\"items\":[]}");

    // The agent is told to stop the stalled request.
    let cancelled = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Message::Text(text) = agent.next().await.unwrap().unwrap() {
                if let Ok(HubFrame::Cancel { id }) = serde_json::from_str(text.as_str()) {
                    return id;
                }
            }
        }
    })
    .await
    .expect("a cancel for the stalled request");
    assert_eq!(cancelled, stalled_id);

    // The stalled reader gets what was buffered, then an error, never a
    // body that looks whole.
    let mut body = stalled.into_body();
    let mut lines = 0;
    let error = loop {
        match body.frame().await {
            Some(Ok(frame)) => lines += frame.data_ref().map_or(0, |d| d.len() / b"a log line\n".len()),
            Some(Err(e)) => break e.to_string(),
            None => panic!("the cut response ended as if whole after {lines} lines"),
        }
    };
    assert_eq!(lines, RESPONSE_BUFFER, "the buffered lines before the cut");
    assert!(error.contains("its reader fell 256 chunks behind"), "{error}");
    serving.abort();
}
