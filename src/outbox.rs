//! A socket's outbound queue and the task that writes it to the WebSocket.
//!
//! Everything a socket sends — responses, transmits, publishes, pings, the close frame — goes
//! through one FIFO queue, so the wire order is the order of queueing. The writer drains
//! whatever is queued into the WebSocket and flushes once, so a burst becomes few TCP writes.
//! Publishes are queued as the same reference-counted bytes for every subscriber.

use alloc::string::String;

use async_tungstenite::tungstenite::Utf8Bytes;
use async_tungstenite::tungstenite::protocol::CloseFrame;
use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::{Error as WsError, Message};
use futures::{Sink, SinkExt};

/// One queued frame.
#[derive(Debug, Clone)]
pub(crate) enum Outbound {
    Text(Utf8Bytes),
    /// Send a close frame (none for codes that may not appear on the wire), then stop.
    Close(u16, String),
    /// Flush what is queued before this, then signal.
    Flush(async_channel::Sender<()>),
}

/// The sending side of a socket's queue.
#[derive(Debug, Clone)]
pub(crate) struct Outbox {
    tx: async_channel::Sender<Outbound>,
}

impl Outbox {
    pub(crate) fn new() -> (Self, async_channel::Receiver<Outbound>) {
        let (tx, rx) = async_channel::unbounded();
        (Self { tx }, rx)
    }

    /// Queues a text frame; false when the socket is closed.
    pub(crate) fn text(&self, frame: impl Into<Utf8Bytes>) -> bool {
        self.tx.try_send(Outbound::Text(frame.into())).is_ok()
    }

    /// Queues the close frame and closes the queue: nothing after it is accepted.
    pub(crate) fn close(&self, code: u16, reason: &str) {
        let _ = self.tx.try_send(Outbound::Close(code, String::from(reason)));
        self.tx.close();
    }

    /// Closes the queue without a close frame (the connection is already gone).
    pub(crate) fn shut(&self) {
        self.tx.close();
    }

    /// Resolves once everything queued so far was written (or the connection is gone).
    pub(crate) async fn flushed(&self) {
        let (tx, rx) = async_channel::bounded(1);
        if self.tx.try_send(Outbound::Flush(tx)).is_ok() {
            let _ = rx.recv().await;
        }
    }

    /// Frames queued and not yet handed to the WebSocket.
    pub(crate) fn len(&self) -> usize {
        self.tx.len()
    }
}

/// Whether a close code may be sent in a close frame (1005, 1006 and 1015 may not).
fn sendable(code: u16) -> bool {
    !matches!(code, 1005 | 1006 | 1015) && (1000..5000).contains(&code)
}

/// Writes queued frames until the queue closes or the connection fails.
pub(crate) async fn write_loop<W>(mut ws: W, rx: async_channel::Receiver<Outbound>)
where
    W: Sink<Message, Error = WsError> + Unpin,
{
    let mut flushed: alloc::vec::Vec<async_channel::Sender<()>> = alloc::vec::Vec::new();
    while let Ok(first) = rx.recv().await {
        let mut next = Some(first);
        let mut burst = 0u32;
        while let Some(item) = next.take() {
            burst += 1;
            if burst.is_multiple_of(256) {
                // A long backlog must not keep other tasks off the thread.
                crate::runtime::yield_now().await;
            }
            match item {
                Outbound::Text(t) => {
                    if ws.feed(Message::Text(t)).await.is_err() {
                        rx.close();
                        return;
                    }
                }
                Outbound::Flush(done) => flushed.push(done),
                Outbound::Close(code, reason) => {
                    if sendable(code) {
                        let frame = CloseFrame { code: CloseCode::from(code), reason: reason.into() };
                        let _ = ws.feed(Message::Close(Some(frame))).await;
                    }
                    let _ = ws.close().await;
                    rx.close();
                    return;
                }
            }
            next = rx.try_recv().ok();
        }
        if ws.flush().await.is_err() {
            rx.close();
            return;
        }
        flushed.clear(); // dropping the senders signals
    }
}
