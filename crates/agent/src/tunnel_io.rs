//! What both ends of the cluster proxy's tunnel do the same way (the
//! agent's [`crate::tunnel`] and the hub's `proxy::tunnels`): one writer
//! per socket that also pings, and a byte stream sent as body chunks.

use std::time::Duration;

use bytes::Bytes;
use flotilla_fleet_core::tunnel;
use futures::{Sink, SinkExt};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// How often each end pings the other: either keeps an idle tunnel and its
/// read timeouts alive.
pub const PING_EVERY: Duration = Duration::from_secs(5);

/// The most a chunk carries.
const CHUNK_BYTES: usize = 32 * 1024;

/// Sends what arrives on `to_send`, and a ping every [`PING_EVERY`], until
/// the channel closes or the socket fails. The socket's only writer.
pub async fn write_messages<S>(mut sink: S, mut to_send: mpsc::Receiver<Message>)
where
    S: Sink<Message> + Unpin,
{
    let mut ping = tokio::time::interval(PING_EVERY);
    loop {
        let message = tokio::select! {
            next = to_send.recv() => match next { Some(m) => m, None => break },
            _ = ping.tick() => Message::Ping(Bytes::new()),
        };
        if sink.send(message).await.is_err() {
            break;
        }
    }
}

/// Sends what `from` yields as body chunks of request `id` on `outgoing`,
/// then the end chunk once `from` ends or fails. Stops early when
/// `outgoing` closes.
pub async fn send_chunks<R>(id: u32, mut from: R, outgoing: &mpsc::Sender<Message>)
where
    R: AsyncRead + Unpin,
{
    let mut buffer = vec![0u8; CHUNK_BYTES];
    loop {
        let (frame, last) = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => (tunnel::encode_end(id), true),
            Ok(n) => (tunnel::encode_chunk(id, &buffer[..n]), false),
        };
        if outgoing.send(Message::binary(frame)).await.is_err() || last {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn a_stream_goes_as_chunks_then_the_end() {
        let (outgoing, mut sent) = mpsc::channel(16);
        let (mut writer, reader) = tokio::io::duplex(8);
        let sending = tokio::spawn(async move { send_chunks(7, reader, &outgoing).await });
        tokio::io::AsyncWriteExt::write_all(&mut writer, b"hello").await.unwrap();
        drop(writer);
        sending.await.unwrap();
        let mut body = Vec::new();
        let mut ended = false;
        while let Some(Message::Binary(frame)) = sent.recv().await {
            let (id, chunk) = tunnel::decode_chunk(&frame).unwrap();
            assert_eq!(id, 7);
            assert!(!ended, "a chunk after the end");
            ended = chunk.is_empty();
            body.extend_from_slice(chunk);
        }
        assert!(ended, "no end chunk");
        assert_eq!(body, b"hello");
    }

    #[tokio::test]
    async fn the_writer_sends_in_order_and_stops_when_the_channel_closes() {
        let (to_send, receiver) = mpsc::channel(4);
        let (sink, mut written) = futures::channel::mpsc::unbounded::<Message>();
        let writing = tokio::spawn(write_messages(sink, receiver));
        for word in ["a", "b"] {
            to_send.send(Message::text(word)).await.unwrap();
        }
        drop(to_send);
        writing.await.unwrap();
        let mut texts = Vec::new();
        while let Ok(message) = written.try_recv() {
            if let Message::Text(t) = message {
                texts.push(t.to_string());
            }
        }
        assert_eq!(texts, ["a", "b"]);
    }
}
