//! A socket's outbound queue, and the writer task that puts queued frames on the WebSockets.
//!
//! Everything a socket sends — responses, transmits, publishes, pings, the close frame — goes
//! through one FIFO queue ([`Outbox`]), so the wire order is the order of queueing. Queueing a
//! frame does not wake a task per socket: the socket is put on its [`Writer`]'s list once (until
//! the writer visits it), and one writer task serves many sockets. A visit writes everything the
//! socket has queued with one write, so a publish fanned out to a thousand sockets costs one task
//! wake and a thousand writes, and a burst of publishes becomes one TCP write per socket.
//! Publishes are queued as the same reference-counted bytes for every subscriber.
//!
//! Two backends ([`Backend`]): server sockets accepted by the server write their frames straight
//! to the connection (`raw.rs`: a 2–10 byte header per frame, the payload as it is; the WebSocket
//! library only reads, and what it writes joins the queue through a tap); clients and server
//! sockets upgraded elsewhere go through the WebSocket library's sink (feed everything, flush
//! once).
//!
//! A socket whose TCP buffer is full is not visited again until its connection is writable (the
//! WebSocket wakes the socket's own waker, which puts it back on the list), so a peer that stops
//! reading costs nothing and never delays the others.
//!
//! The backlog counts frames from queueing until the write (raw) or flush (sink) that put them on
//! the TCP socket. Over the optional limit, the queue refuses frames and
//! raises a flag for the socket's driver, which disconnects the socket: a reader that cannot
//! keep up is shed instead of holding memory or slowing anyone else.

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::sync::{Arc, Weak};
use alloc::task::Wake;
use alloc::vec::Vec;
use core::pin::Pin;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use core::task::{Context, Poll, Waker};

use async_tungstenite::tungstenite::Utf8Bytes;
use async_tungstenite::tungstenite::protocol::CloseFrame;
use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::{Error as WsError, Message};
use futures::Sink;

use crate::runtime::{Runtime, yield_now};
use crate::sync::Mutex;

/// The sending half of a WebSocket, type-erased so one writer serves every kind of stream.
pub(crate) type FrameSink = Pin<Box<dyn Sink<Message, Error = WsError> + Send>>;

/// The writing half of a server connection's byte stream (see [`Backend::Raw`]).
pub(crate) type RawWrite = Pin<Box<dyn futures::io::AsyncWrite + Send>>;

/// Where a socket's frames go.
pub(crate) enum Backend {
    /// Through the WebSocket library's sink (clients, whose frames are masked one by one, and
    /// server sockets upgraded elsewhere).
    Sink(FrameSink),
    /// Straight to the connection: a server's frames are unmasked, so a publish's frame is the
    /// same bytes for every subscriber — a small header and the shared payload, gathered into one
    /// write per visit. What the WebSocket library itself writes (the
    /// upgrade response, pongs, a close reply) reaches the queue through a [`Tap`].
    Raw(RawWrite),
}

/// Frames a visit feeds before the socket goes to the back of the list (fairness).
const FRAMES_PER_VISIT: usize = 256;
/// Sockets a writer visits before it lets other tasks run (smol has no cooperative budget, and
/// tokio's would start refusing writes).
const VISITS_PER_TURN: usize = 32;

/// One queued frame.
#[derive(Debug)]
enum Outbound {
    Text(Utf8Bytes),
    /// Bytes the WebSocket library wrote (raw backend only): whole frames or the HTTP response.
    Raw(Vec<u8>),
    /// Send a close frame (none for codes that may not appear on the wire), then stop.
    Close(u16, String),
    /// Flush what is queued before this, then signal (by dropping the sender).
    Flush(async_channel::Sender<()>),
}

/// What the writer and the queueing side share under the lock.
struct State {
    queue: VecDeque<Outbound>,
    /// `None` once the socket's writing is over (closed, failed or killed).
    conn: Option<Backend>,
    /// Bytes of the front item already written (raw backend: a write may end mid-frame).
    offset: usize,
    /// Whether frames are accepted.
    open: bool,
    /// Frames fed to the sink since its last completed flush.
    fed: usize,
    /// Something was fed (or a flush was asked for) since the last completed flush.
    unflushed: bool,
    /// The close frame was fed: the sink is being closed.
    closing: bool,
    /// Flush requests passed by the writer: released by the next completed flush.
    waiters: Vec<async_channel::Sender<()>>,
    /// Dropped when writing is over (see [`Outbox::new`]).
    done: Option<async_channel::Sender<()>>,
}

struct Shared {
    state: Mutex<State>,
    /// On the writer's list (or being visited and due for another visit).
    scheduled: AtomicBool,
    /// The last visit stopped on a full connection: queueing more does not schedule a visit
    /// (the connection's wake does).
    blocked: AtomicBool,
    /// Frames queued or fed and not yet flushed.
    backlog: AtomicUsize,
    limit: usize,
    overflowed: AtomicBool,
    /// Told once when the limit is exceeded.
    on_overflow: Option<async_channel::Sender<()>>,
    writer: Arc<Writer>,
    /// Wakes this socket (puts it on the writer's list) when its connection becomes writable.
    waker: Waker,
}

impl core::fmt::Debug for Shared {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Outbox").field("backlog", &self.backlog.load(Ordering::Relaxed)).finish()
    }
}

/// The waker a socket's connection holds. Weak, so a registered waker never keeps a finished
/// socket alive.
struct SocketWaker(Weak<Shared>);

impl Wake for SocketWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if let Some(shared) = self.0.upgrade() {
            shared.schedule();
        }
    }
}

/// A task that writes the queued frames of many sockets.
pub(crate) struct Writer {
    list: Mutex<List>,
    /// What this writer's sockets sent and queued (`Server::stats` sums the writers).
    pub(crate) counters: WriterCounters,
}

/// Counters of one writer: each is written by one task mostly (no cache line shared per
/// delivery between cores); the high-water mark is written only when it rises.
#[derive(Default, Debug)]
pub(crate) struct WriterCounters {
    /// Text frames written in full.
    pub(crate) frames: Padded<AtomicU64>,
    /// Bytes written (frame headers included; payload bytes on the sink backend).
    pub(crate) bytes: AtomicU64,
    /// The largest backlog a socket of this writer had. On a cache line of its own: queueing
    /// (on other cores) reads it per frame, and must not share the line the writer task writes.
    pub(crate) high_water: Padded<AtomicUsize>,
}

/// A value on a cache line of its own.
#[derive(Default, Debug)]
#[repr(align(128))]
pub(crate) struct Padded<T>(pub(crate) T);

impl<T> core::ops::Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

#[derive(Default)]
struct List {
    sockets: Vec<Arc<Shared>>,
    /// The writer task, when it waits for work.
    waker: Option<Waker>,
}

impl core::fmt::Debug for Writer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Writer").finish_non_exhaustive()
    }
}

impl Writer {
    /// A writer whose task runs on `runtime` until the writer and every outbox using it are gone.
    pub(crate) fn spawn(runtime: &dyn Runtime) -> Arc<Self> {
        let writer =
            Arc::new(Self { list: Mutex::new(List::default()), counters: WriterCounters::default() });
        runtime.spawn(Box::pin(run(Arc::downgrade(&writer))));
        writer
    }

    fn push(&self, socket: Arc<Shared>) {
        let waker = {
            let mut list = self.list.lock();
            list.sockets.push(socket);
            list.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Let the task see that it is no longer needed.
        if let Some(w) = self.list.lock().waker.take() {
            w.wake();
        }
    }
}

/// The writer task: visits the sockets on the list, in the order they were put there.
async fn run(writer: Weak<Writer>) {
    let mut batch: Vec<Arc<Shared>> = Vec::new();
    // Where a raw visit gathers the bytes it writes (one buffer for all the task's sockets).
    let mut scratch: Vec<u8> = Vec::new();
    loop {
        let more = core::future::poll_fn(|cx| {
            let Some(w) = writer.upgrade() else { return Poll::Ready(false) };
            let mut list = w.list.lock();
            if list.sockets.is_empty() {
                list.waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
            core::mem::swap(&mut batch, &mut list.sockets);
            Poll::Ready(true)
        })
        .await;
        if !more {
            return;
        }
        for (i, socket) in batch.drain(..).enumerate() {
            if i > 0 && i % VISITS_PER_TURN == 0 {
                yield_now().await;
            }
            socket.visit(&mut scratch);
        }
    }
}

impl Shared {
    /// Puts the socket on its writer's list unless it is already there.
    fn schedule(self: &Arc<Self>) {
        self.blocked.store(false, Ordering::Release);
        if !self.scheduled.swap(true, Ordering::AcqRel) {
            self.writer.push(self.clone());
        }
    }

    /// Feeds the queued frames to the sink and flushes, until the queue is empty, the visit's
    /// share is used, or the connection is full (its waker brings the socket back).
    fn visit(self: &Arc<Self>, scratch: &mut Vec<u8>) {
        self.scheduled.store(false, Ordering::Release);
        self.blocked.store(false, Ordering::Release);
        let mut st = self.state.lock();
        let mut cx = Context::from_waker(&self.waker);
        match self.write(&mut st, &mut cx, scratch) {
            Poll::Ready(Ok(true)) => {
                drop(st);
                self.schedule();
            }
            Poll::Ready(Ok(false)) => {
                if !st.open && st.queue.is_empty() && !st.unflushed {
                    self.finish(&mut st);
                }
            }
            Poll::Ready(Err(())) => self.finish(&mut st),
            Poll::Pending => self.blocked.store(true, Ordering::Release),
        }
    }

    /// One visit's writing: `Ok(true)` when frames are left for another visit; `Err` when the
    /// connection failed or the close frame went out (writing is over either way).
    fn write(&self, st: &mut State, cx: &mut Context<'_>, scratch: &mut Vec<u8>) -> Poll<Result<bool, ()>> {
        match st.conn {
            Some(Backend::Sink(_)) => self.write_sink(st, cx),
            Some(Backend::Raw(_)) => raw::write(&self.backlog, &self.writer.counters, st, cx, scratch),
            None => Poll::Ready(Err(())),
        }
    }

    fn write_sink(&self, st: &mut State, cx: &mut Context<'_>) -> Poll<Result<bool, ()>> {
        let State { queue, conn, fed, unflushed, closing, waiters, .. } = st;
        let Some(Backend::Sink(sink)) = conn.as_mut() else { return Poll::Ready(Err(())) };
        if !*closing {
            let mut budget = FRAMES_PER_VISIT;
            while let Some(item) = queue.front() {
                match item {
                    Outbound::Flush(_) => {
                        if let Some(Outbound::Flush(w)) = queue.pop_front() {
                            waiters.push(w);
                        }
                        *unflushed = true;
                        continue;
                    }
                    Outbound::Text(_) if budget == 0 => break,
                    Outbound::Raw(_) => {
                        queue.pop_front(); // never queued on this backend
                        continue;
                    }
                    Outbound::Close(code, _) if !sendable(*code) => {
                        *closing = true;
                        break;
                    }
                    _ => {}
                }
                if core::task::ready!(sink.as_mut().poll_ready(cx)).is_err() {
                    return Poll::Ready(Err(()));
                }
                let message = match queue.pop_front() {
                    Some(Outbound::Text(t)) => {
                        *fed += 1;
                        self.writer.counters.bytes.fetch_add(t.len() as u64, Ordering::Relaxed);
                        budget -= 1;
                        Message::Text(t)
                    }
                    Some(Outbound::Close(code, reason)) => {
                        *closing = true;
                        Message::Close(Some(CloseFrame {
                            code: CloseCode::from(code),
                            reason: reason.into(),
                        }))
                    }
                    _ => continue,
                };
                *unflushed = true;
                if sink.as_mut().start_send(message).is_err() {
                    return Poll::Ready(Err(()));
                }
                if *closing {
                    break;
                }
            }
        }
        if *closing {
            // Flushes the close frame, then ends the connection's writing half.
            let _ = core::task::ready!(sink.as_mut().poll_close(cx));
            return Poll::Ready(Err(()));
        }
        if *unflushed {
            if core::task::ready!(sink.as_mut().poll_flush(cx)).is_err() {
                return Poll::Ready(Err(()));
            }
            let n = core::mem::take(fed);
            self.backlog.fetch_sub(n, Ordering::Relaxed);
            self.writer.counters.frames.fetch_add(n as u64, Ordering::Relaxed);
            *unflushed = false;
            waiters.clear(); // dropping the senders signals
        }
        Poll::Ready(Ok(!queue.is_empty()))
    }

    /// Writing is over: frames being written and frames still queued will never be written. They
    /// no longer count as backlog (a shed or failed socket reports 0), and are freed now, not when
    /// the last handle to the socket goes; flush waiters and the `done` receiver are released.
    fn finish(&self, st: &mut State) {
        st.open = false;
        st.conn = None;
        st.offset = 0;
        let queued = st.queue.drain(..).filter(|o| matches!(o, Outbound::Text(_))).count();
        self.backlog.fetch_sub(core::mem::take(&mut st.fed) + queued, Ordering::Relaxed);
        st.unflushed = false;
        st.waiters.clear();
        st.done = None;
    }
}

/// The queueing side of a socket's outbound frames. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Outbox {
    shared: Arc<Shared>,
}

impl Outbox {
    /// A queue writing to `conn` through `writer`. The backlog may not exceed `limit` frames;
    /// `on_overflow` is told (once) when a frame was refused for it. The returned receiver's
    /// `recv` fails once writing is over (the close frame is out, the connection failed, or
    /// [`kill`](Self::kill) was called).
    pub(crate) fn new(
        writer: &Arc<Writer>,
        conn: Backend,
        limit: Option<usize>,
        on_overflow: Option<async_channel::Sender<()>>,
    ) -> (Self, async_channel::Receiver<()>) {
        let (done, finished) = async_channel::bounded(1);
        let shared = Arc::new_cyclic(|weak| Shared {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                conn: Some(conn),
                offset: 0,
                open: true,
                fed: 0,
                unflushed: false,
                closing: false,
                waiters: Vec::new(),
                done: Some(done),
            }),
            scheduled: AtomicBool::new(false),
            blocked: AtomicBool::new(false),
            backlog: AtomicUsize::new(0),
            limit: limit.unwrap_or(usize::MAX),
            overflowed: AtomicBool::new(false),
            on_overflow,
            writer: writer.clone(),
            waker: Waker::from(Arc::new(SocketWaker(weak.clone()))),
        });
        (Self { shared }, finished)
    }

    /// Queues `item` unless the queue is closed (and closes it after `item` when `last`);
    /// schedules a visit unless one is due or the connection is full.
    fn queue_then(&self, item: Outbound, last: bool) -> bool {
        let s = &self.shared;
        {
            let mut st = s.state.lock();
            if !st.open {
                return false;
            }
            st.queue.push_back(item);
            st.open = !last;
        }
        if !s.blocked.load(Ordering::Acquire) && !s.scheduled.swap(true, Ordering::AcqRel) {
            s.writer.push(s.clone());
        }
        true
    }

    fn queue(&self, item: Outbound) -> bool {
        self.queue_then(item, false)
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
        let backlog = s.backlog.fetch_add(1, Ordering::Relaxed) + 1;
        let hw = &s.writer.counters.high_water;
        if backlog > hw.load(Ordering::Relaxed) {
            hw.fetch_max(backlog, Ordering::Relaxed);
        }
        if self.queue(Outbound::Text(frame.into())) {
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

    /// Drops every frame still queued (a shed socket's backlog); returns how many. A frame partly
    /// written stays, so the stream stays well-formed.
    pub(crate) fn discard(&self) -> usize {
        let mut st = self.shared.state.lock();
        let keep_front = st.offset > 0;
        let before = st.queue.len();
        let mut i = 0;
        st.queue.retain(|o| {
            i += 1;
            (keep_front && i == 1) || !matches!(o, Outbound::Text(_))
        });
        let n = before - st.queue.len();
        self.shared.backlog.fetch_sub(n, Ordering::Relaxed);
        n
    }

    /// Queues the close frame and closes the queue: nothing after it is accepted.
    pub(crate) fn close(&self, code: u16, reason: &str) {
        self.queue(Outbound::Close(code, String::from(reason)));
        self.shut();
    }

    /// Closes the queue: what is queued is still written, then writing ends without a close
    /// frame (used when the connection is already gone, or after [`close`](Self::close)).
    pub(crate) fn shut(&self) {
        let s = &self.shared;
        s.state.lock().open = false;
        // A visit finishes the writing once the queue is empty.
        s.schedule();
    }

    /// Ends writing now, dropping whatever is queued (a peer that stopped reading must not keep
    /// the socket forever).
    pub(crate) fn kill(&self) {
        let s = &self.shared;
        s.finish(&mut s.state.lock());
    }

    /// Resolves once everything queued so far was written (or writing is over).
    pub(crate) async fn flushed(&self) {
        let (tx, rx) = async_channel::bounded(1);
        if self.queue(Outbound::Flush(tx)) {
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

mod raw;
#[cfg(test)]
mod tests;

pub(crate) use raw::Tapped;
