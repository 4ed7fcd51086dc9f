//! A socket's outbound queue and the task that writes it to the WebSocket.
//!
//! Everything a socket sends — responses, transmits, publishes, pings, the close frame — goes
//! through one FIFO queue, so the wire order is the order of queueing. The writer drains
//! whatever is queued into the WebSocket and flushes once, so a burst becomes few TCP writes.
//! Publishes are queued as the same reference-counted bytes for every subscriber.
//!
//! The backlog counts frames from queueing until the flush that put them on the TCP socket (the
//! WebSocket library's buffer included). Over the optional limit, the queue refuses frames and
//! raises a flag for the socket's driver, which disconnects the socket: a reader that cannot
//! keep up is shed instead of holding memory or slowing anyone else.

use alloc::string::String;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

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

#[derive(Debug)]
struct Shared {
    /// Frames queued or in the writer and not yet flushed.
    backlog: AtomicUsize,
    limit: usize,
    overflowed: AtomicBool,
    /// Told once when the limit is exceeded.
    on_overflow: Option<async_channel::Sender<()>>,
}

/// The sending side of a socket's queue.
#[derive(Debug, Clone)]
pub(crate) struct Outbox {
    tx: async_channel::Sender<Outbound>,
    rx: async_channel::Receiver<Outbound>,
    shared: Arc<Shared>,
}

/// The writer's end of a queue.
#[derive(Debug)]
pub(crate) struct Inbox {
    rx: async_channel::Receiver<Outbound>,
    shared: Arc<Shared>,
}

impl Outbox {
    /// An unbounded queue.
    pub(crate) fn new() -> (Self, Inbox) {
        Self::with_limit(None, None)
    }

    /// A queue whose backlog may not exceed `limit` frames; `on_overflow` is told (once) when a
    /// frame was refused.
    pub(crate) fn with_limit(
        limit: Option<usize>,
        on_overflow: Option<async_channel::Sender<()>>,
    ) -> (Self, Inbox) {
        let (tx, rx) = async_channel::unbounded();
        let shared = Arc::new(Shared {
            backlog: AtomicUsize::new(0),
            limit: limit.unwrap_or(usize::MAX),
            overflowed: AtomicBool::new(false),
            on_overflow,
        });
        (Self { tx, rx: rx.clone(), shared: shared.clone() }, Inbox { rx, shared })
    }

    /// Queues a text frame; false when the socket is closed or over its limit.
    pub(crate) fn text(&self, frame: impl Into<Utf8Bytes>) -> bool {
        let s = &self.shared;
        if s.backlog.load(Ordering::Relaxed) >= s.limit {
            if !s.overflowed.swap(true, Ordering::AcqRel)
                && let Some(w) = &s.on_overflow
            {
                let _ = w.try_send(());
            }
            return false;
        }
        s.backlog.fetch_add(1, Ordering::Relaxed);
        if self.tx.try_send(Outbound::Text(frame.into())).is_ok() {
            true
        } else {
            s.backlog.fetch_sub(1, Ordering::Relaxed);
            false
        }
    }

    /// Queues what a sans-IO connection asked to send.
    pub(crate) fn transmit(&self, t: crate::protocol::Transmit) {
        match t {
            crate::protocol::Transmit::Text(s) => {
                self.text(s);
            }
            crate::protocol::Transmit::Close { code, reason } => self.close(code, &reason),
        }
    }

    /// Whether a frame was refused for the limit.
    pub(crate) fn overflowed(&self) -> bool {
        self.shared.overflowed.load(Ordering::Acquire)
    }

    /// Drops everything still queued (a shed socket's backlog).
    pub(crate) fn discard(&self) -> usize {
        let mut n = 0;
        while let Ok(item) = self.rx.try_recv() {
            if matches!(item, Outbound::Text(_)) {
                self.shared.backlog.fetch_sub(1, Ordering::Relaxed);
                n += 1;
            }
        }
        n
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

    /// Frames queued and not yet flushed to the connection.
    pub(crate) fn len(&self) -> usize {
        self.shared.backlog.load(Ordering::Relaxed)
    }
}

/// Whether a close code may be sent in a close frame (1005, 1006 and 1015 may not).
fn sendable(code: u16) -> bool {
    !matches!(code, 1005 | 1006 | 1015) && (1000..5000).contains(&code)
}

/// Runs `f` unless `kill` fires first (its sender was dropped): `None` then.
async fn unless_killed<F: core::future::Future>(
    kill: &async_channel::Receiver<()>,
    f: F,
) -> Option<F::Output> {
    let f = core::pin::pin!(f);
    let k = kill.recv();
    let k = core::pin::pin!(k);
    match futures::future::select(f, k).await {
        futures::future::Either::Left((out, _)) => Some(out),
        futures::future::Either::Right(_) => None,
    }
}

/// Writes queued frames until the queue closes, the connection fails, or `kill` is dropped (a
/// peer that stopped reading must not keep the writer — and its socket — forever).
pub(crate) async fn write_loop<W>(mut ws: W, inbox: Inbox, kill: async_channel::Receiver<()>)
where
    W: Sink<Message, Error = WsError> + Unpin,
{
    let Inbox { rx, shared } = inbox;
    let mut flushed: alloc::vec::Vec<async_channel::Sender<()>> = alloc::vec::Vec::new();
    // Frames fed to the WebSocket since the last flush.
    let mut frames = 0usize;
    'run: while let Some(Ok(first)) = unless_killed(&kill, rx.recv()).await {
        let mut next = Some(first);
        while let Some(item) = next.take() {
            match item {
                Outbound::Text(t) => {
                    frames += 1;
                    if frames.is_multiple_of(256) {
                        // A long backlog must not keep other tasks off the thread.
                        crate::runtime::yield_now().await;
                    }
                    if !matches!(unless_killed(&kill, ws.feed(Message::Text(t))).await, Some(Ok(()))) {
                        break 'run;
                    }
                }
                Outbound::Flush(done) => flushed.push(done),
                Outbound::Close(code, reason) => {
                    if sendable(code) {
                        let frame = CloseFrame { code: CloseCode::from(code), reason: reason.into() };
                        let _ = unless_killed(&kill, ws.feed(Message::Close(Some(frame)))).await;
                    }
                    let _ = unless_killed(&kill, ws.close()).await;
                    break 'run;
                }
            }
            next = rx.try_recv().ok();
        }
        if !matches!(unless_killed(&kill, ws.flush()).await, Some(Ok(()))) {
            break 'run;
        }
        shared.backlog.fetch_sub(frames, Ordering::Relaxed);
        frames = 0;
        flushed.clear(); // dropping the senders signals
    }
    rx.close();
    // The writer is done: frames it was writing and frames still queued will never be written.
    // They no longer count as backlog (a shed or failed socket reports 0), and the queued ones are
    // freed now, not when the last handle to the socket goes (`flushed` waiters are released too).
    while let Ok(item) = rx.try_recv() {
        if matches!(item, Outbound::Text(_)) {
            frames += 1;
        }
    }
    shared.backlog.fetch_sub(frames, Ordering::Relaxed);
}
