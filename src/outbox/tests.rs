//! The outbox and its writer task against scripted connections: no I/O, the writer task polled
//! by hand, so every step is deterministic.

use alloc::boxed::Box;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll, Waker};
use std::sync::Mutex as StdMutex;
use std::time::Instant;

use async_tungstenite::tungstenite::{Error as WsError, Message};
use futures::Sink;

use super::*;
use crate::runtime::BoxFuture;

/// A scripted connection's "full" switch: while it is on (or the connection says so), polls are
/// pending and register the waker, which switching it off wakes.
#[derive(Default)]
struct Gate {
    full: bool,
    waker: Option<Waker>,
    polls_while_full: usize,
}

impl Gate {
    fn blocks(&mut self, cx: &Context<'_>, also: bool) -> bool {
        let blocked = self.full || also;
        if blocked {
            self.polls_while_full += 1;
            self.waker = Some(cx.waker().clone());
        }
        blocked
    }

    /// Sets the switch; returns the waker to wake (after the lock is released) when it opens.
    fn set(&mut self, full: bool) -> Option<Waker> {
        self.full = full;
        if full { None } else { self.waker.take() }
    }
}

/// What a scripted connection saw.
#[derive(Default)]
struct WireState {
    /// Text frames (and `close:CODE` for close frames) as flushed.
    flushed: Vec<String>,
    /// Fed, not yet flushed.
    fed: Vec<String>,
    /// While full, `poll_ready` and `poll_flush` are pending (a full TCP buffer).
    gate: Gate,
    flushes: usize,
    closed: bool,
}

#[derive(Clone, Default)]
struct Wire(Arc<StdMutex<WireState>>);

impl Wire {
    fn state(&self) -> std::sync::MutexGuard<'_, WireState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn sink(&self) -> Backend {
        Backend::Sink(Box::pin(self.clone()))
    }

    fn flushed(&self) -> Vec<String> {
        self.state().flushed.clone()
    }

    fn set_full(&self, full: bool) {
        let waker = self.state().gate.set(full);
        if let Some(w) = waker {
            w.wake();
        }
    }

    fn pending(&self, cx: &Context<'_>) -> bool {
        self.state().gate.blocks(cx, false)
    }
}

impl Sink<Message> for Wire {
    type Error = WsError;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        if self.pending(cx) { Poll::Pending } else { Poll::Ready(Ok(())) }
    }

    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), WsError> {
        let text = match item {
            Message::Text(t) => t.to_string(),
            Message::Close(Some(f)) => alloc::format!("close:{}", u16::from(f.code)),
            other => alloc::format!("{other:?}"),
        };
        self.state().fed.push(text);
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        if self.pending(cx) {
            return Poll::Pending;
        }
        let mut st = self.state();
        let fed = core::mem::take(&mut st.fed);
        st.flushed.extend(fed);
        st.flushes += 1;
        Poll::Ready(Ok(()))
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        core::task::ready!(self.as_mut().poll_flush(cx))?;
        self.state().closed = true;
        Poll::Ready(Ok(()))
    }
}

/// A runtime whose spawned tasks the test polls itself.
#[derive(Default)]
struct Manual(StdMutex<Vec<BoxFuture<()>>>);

impl core::fmt::Debug for Manual {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Manual")
    }
}

impl Runtime for Manual {
    fn spawn(&self, future: BoxFuture<()>) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(future);
    }

    fn sleep_until(&self, _: Instant) -> BoxFuture<()> {
        Box::pin(core::future::pending())
    }
}

/// A writer and its task, which the test runs by hand.
fn writer() -> (Arc<Writer>, BoxFuture<()>) {
    let rt = Manual::default();
    let w = Writer::spawn(&rt);
    let task = rt.0.lock().unwrap_or_else(|e| e.into_inner()).pop().expect("the writer task");
    (w, task)
}

/// Polls the task until it waits for work (it yields now and then); true when it ended.
fn run(task: &mut BoxFuture<()>) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    (0..1000).any(|_| task.as_mut().poll(&mut cx).is_ready())
}

fn frames(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn queued_frames_are_written_in_order_with_one_flush_per_visit() {
    let (w, mut task) = writer();
    let (a_wire, b_wire) = (Wire::default(), Wire::default());
    let (a, _a_done) = Outbox::new(&w, a_wire.sink(), None, None);
    let (b, _b_done) = Outbox::new(&w, b_wire.sink(), None, None);
    for f in ["a1", "a2", "a3"] {
        assert!(a.text(f));
    }
    assert!(b.text("b1"));
    assert!(b.text("b2"));
    assert_eq!((a.len(), b.len()), (3, 2), "queued frames count as backlog");
    assert!(!run(&mut task));
    assert_eq!(a_wire.flushed(), frames(&["a1", "a2", "a3"]));
    assert_eq!(b_wire.flushed(), frames(&["b1", "b2"]));
    assert_eq!((a_wire.state().flushes, b_wire.state().flushes), (1, 1));
    assert_eq!((a.len(), b.len()), (0, 0));
}

#[test]
fn a_full_connection_is_skipped_and_resumed_by_its_own_wake() {
    let (w, mut task) = writer();
    let (slow_wire, fast_wire) = (Wire::default(), Wire::default());
    slow_wire.set_full(true);
    let (slow, _d1) = Outbox::new(&w, slow_wire.sink(), None, None);
    let (fast, _d2) = Outbox::new(&w, fast_wire.sink(), None, None);
    slow.text("s1");
    fast.text("f1");
    run(&mut task);
    assert_eq!(fast_wire.flushed(), frames(&["f1"]), "the other socket is written");
    assert!(slow_wire.flushed().is_empty());
    assert_eq!(slow.len(), 1);
    let polls = slow_wire.state().gate.polls_while_full;
    // More frames for the full socket do not bring it back before its connection wakes it.
    slow.text("s2");
    fast.text("f2");
    run(&mut task);
    assert_eq!(slow_wire.state().gate.polls_while_full, polls, "a blocked socket is not revisited");
    assert_eq!(fast_wire.flushed(), frames(&["f1", "f2"]));
    slow_wire.set_full(false); // wakes the registered waker
    run(&mut task);
    assert_eq!(slow_wire.flushed(), frames(&["s1", "s2"]));
    assert_eq!(slow.len(), 0);
}

#[test]
fn a_long_queue_is_written_over_several_visits() {
    let (w, mut task) = writer();
    let wire = Wire::default();
    let (out, _done) = Outbox::new(&w, wire.sink(), None, None);
    let n = FRAMES_PER_VISIT * 2 + 5;
    for i in 0..n {
        out.text(i.to_string());
    }
    run(&mut task);
    let expected: Vec<String> = (0..n).map(|i| i.to_string()).collect();
    assert_eq!(wire.flushed(), expected);
    assert_eq!(wire.state().flushes, 3, "one flush per visit of at most FRAMES_PER_VISIT frames");
}

#[test]
fn close_sends_the_close_frame_then_ends() {
    let (w, mut task) = writer();
    let wire = Wire::default();
    let (out, done) = Outbox::new(&w, wire.sink(), None, None);
    out.text("last");
    out.close(4000, "bye");
    assert!(!out.text("after"), "nothing is accepted after close");
    run(&mut task);
    assert_eq!(wire.flushed(), frames(&["last", "close:4000"]));
    assert!(wire.state().closed);
    assert!(done.try_recv().is_err() && done.is_closed(), "writing is over");
    assert_eq!(out.len(), 0);
}

#[test]
fn a_close_code_that_may_not_be_sent_closes_without_a_frame() {
    let (w, mut task) = writer();
    let wire = Wire::default();
    let (out, done) = Outbox::new(&w, wire.sink(), None, None);
    out.close(1006, "");
    run(&mut task);
    assert!(wire.flushed().is_empty());
    assert!(wire.state().closed);
    assert!(done.is_closed());
}

#[test]
fn shut_writes_what_is_queued_then_ends_without_a_close_frame() {
    let (w, mut task) = writer();
    let wire = Wire::default();
    let (out, done) = Outbox::new(&w, wire.sink(), None, None);
    out.text("x");
    out.text("y");
    out.shut();
    run(&mut task);
    assert_eq!(wire.flushed(), frames(&["x", "y"]));
    assert!(!wire.state().closed);
    assert!(done.is_closed());
}

#[test]
fn kill_drops_the_backlog_and_ends_writing() {
    let (w, mut task) = writer();
    let wire = Wire::default();
    wire.set_full(true);
    let (out, done) = Outbox::new(&w, wire.sink(), None, None);
    for f in ["1", "2", "3"] {
        out.text(f);
    }
    run(&mut task);
    assert_eq!(out.len(), 3);
    out.kill();
    assert_eq!(out.len(), 0, "killed frames are no longer backlog");
    assert!(done.is_closed());
    assert!(!out.text("4"));
    wire.set_full(false);
    run(&mut task);
    assert!(wire.flushed().is_empty(), "nothing is written after a kill");
}

#[test]
fn the_limit_refuses_frames_and_tells_once() {
    let (w, mut task) = writer();
    let wire = Wire::default();
    wire.set_full(true);
    let (tell, told) = async_channel::unbounded();
    let (out, _done) = Outbox::new(&w, wire.sink(), Some(2), Some(tell));
    assert!(out.text("1"));
    assert!(out.text("2"));
    assert!(!out.text("3"));
    assert!(!out.text("4"));
    assert!(out.overflowed());
    assert_eq!(told.len(), 1, "told once");
    run(&mut task);
    assert_eq!(out.discard(), 2);
    assert_eq!(out.len(), 0);
}

#[test]
fn flushed_resolves_once_earlier_frames_are_written() {
    let (w, mut task) = writer();
    let wire = Wire::default();
    wire.set_full(true);
    let (out, _done) = Outbox::new(&w, wire.sink(), None, None);
    out.text("a");
    let mut flushed = Box::pin(out.flushed());
    let mut cx = Context::from_waker(Waker::noop());
    assert!(flushed.as_mut().poll(&mut cx).is_pending());
    run(&mut task);
    assert!(flushed.as_mut().poll(&mut cx).is_pending(), "the connection is full");
    wire.set_full(false);
    run(&mut task);
    assert!(flushed.as_mut().poll(&mut cx).is_ready());
    assert_eq!(wire.flushed(), vec![String::from("a")]);
}

#[test]
fn the_writer_task_ends_when_nothing_uses_it() {
    let (w, mut task) = writer();
    let wire = Wire::default();
    let (out, _done) = Outbox::new(&w, wire.sink(), None, None);
    out.text("a");
    assert!(!run(&mut task));
    drop(w);
    assert!(!run(&mut task), "an outbox still uses it");
    drop(out);
    assert!(run(&mut task));
}

// ---------------------------------------------------------------------------------------------
// The raw backend

/// A scripted byte connection: takes at most `cap` bytes per write, or nothing while full.
#[derive(Default)]
struct PipeState {
    bytes: Vec<u8>,
    cap: usize,
    /// Bytes it takes before it is full (`None`: no end).
    room: Option<usize>,
    gate: Gate,
    writes: usize,
    /// Like TLS: a write takes everything into `buffered`; only a flush (pending while full)
    /// moves it to `bytes`.
    buffering: bool,
    buffered: Vec<u8>,
}

#[derive(Clone, Default)]
struct Pipe(Arc<StdMutex<PipeState>>);

impl Pipe {
    fn with_cap(cap: usize) -> Self {
        let p = Pipe::default();
        p.state().cap = cap;
        p
    }

    fn state(&self) -> std::sync::MutexGuard<'_, PipeState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn conn(&self) -> Backend {
        Backend::Raw(Box::pin(self.clone()))
    }

    fn set_full(&self, full: bool) {
        let waker = self.state().gate.set(full);
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// The bytes written, split into frames: (first byte, payload).
    fn frames(&self) -> Vec<(u8, Vec<u8>)> {
        let b = self.state().bytes.clone();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            let (hdr, len) = match b[i + 1] & 0x7f {
                126 => (4, u16::from_be_bytes([b[i + 2], b[i + 3]]) as usize),
                127 => {
                    let mut n = [0u8; 8];
                    n.copy_from_slice(&b[i + 2..i + 10]);
                    (10, u64::from_be_bytes(n) as usize)
                }
                n => (2, n as usize),
            };
            assert_eq!(b[i + 1] & 0x80, 0, "server frames are not masked");
            out.push((b[i], b[i + hdr..i + hdr + len].to_vec()));
            i += hdr + len;
        }
        out
    }

    fn texts(&self) -> Vec<String> {
        self.frames()
            .into_iter()
            .map(|(op, p)| match op {
                0x81 => String::from_utf8(p).unwrap_or_default(),
                0x88 => alloc::format!("close:{}", u16::from_be_bytes([p[0], p[1]])),
                other => alloc::format!("op:{other:#x}"),
            })
            .collect()
    }
}

impl futures::io::AsyncWrite for Pipe {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let mut st = self.state();
        if st.buffering {
            st.buffered.extend_from_slice(buf);
            st.writes += 1;
            return Poll::Ready(Ok(buf.len()));
        }
        let no_room = st.room == Some(0);
        if st.gate.blocks(cx, no_room) {
            return Poll::Pending;
        }
        let mut n = if st.cap == 0 { buf.len() } else { buf.len().min(st.cap) };
        if let Some(room) = st.room.as_mut() {
            n = n.min(*room);
            *room -= n;
        }
        st.bytes.extend_from_slice(&buf[..n]);
        st.writes += 1;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let mut st = self.state();
        if st.buffering {
            if st.gate.blocks(cx, false) {
                return Poll::Pending;
            }
            let b = core::mem::take(&mut st.buffered);
            st.bytes.extend_from_slice(&b);
        }
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[test]
fn raw_a_buffering_stream_is_flushed_when_the_queue_is_empty_and_again_on_its_wake() {
    let (w, mut task) = writer();
    let pipe = Pipe::default();
    pipe.state().buffering = true;
    let (out, _done) = Outbox::new(&w, pipe.conn(), None, None);
    out.text(String::from("a"));
    run(&mut task);
    assert_eq!(pipe.texts(), vec![String::from("a")], "flushed once the queue was empty");
    // The socket is full: the writes are taken, the flush waits, and its wake finishes it.
    pipe.set_full(true);
    out.text(String::from("b"));
    out.text(String::from("c"));
    run(&mut task);
    assert_eq!(pipe.texts(), vec![String::from("a")]);
    assert!(!pipe.state().buffered.is_empty(), "the stream holds the frames");
    pipe.set_full(false);
    run(&mut task);
    assert_eq!(pipe.texts(), vec![String::from("a"), String::from("b"), String::from("c")]);
}

/// What the WebSocket library would write through the tap.
fn tap_write(out: &Outbox, bytes: &[u8]) {
    let mut tapped = Tapped::new(futures::io::empty(), out);
    let mut cx = Context::from_waker(Waker::noop());
    let r = futures::io::AsyncWrite::poll_write(Pin::new(&mut tapped), &mut cx, bytes);
    assert!(matches!(r, Poll::Ready(Ok(n)) if n == bytes.len()), "the tap takes everything");
}

#[test]
fn raw_frames_are_unmasked_text_frames_in_one_write() {
    let (w, mut task) = writer();
    let pipe = Pipe::default();
    let (out, _done) = Outbox::new(&w, pipe.conn(), None, None);
    let big = "x".repeat(300);
    let huge = "y".repeat(70_000);
    for f in ["a", big.as_str(), huge.as_str(), ""] {
        out.text(String::from(f));
    }
    run(&mut task);
    assert_eq!(pipe.texts(), vec![String::from("a"), big, huge, String::new()]);
    assert_eq!(out.len(), 0);
    assert!(pipe.state().writes <= 3, "gathered, not one write per frame");
}

#[test]
fn raw_partial_writes_resume_at_the_same_byte() {
    let (w, mut task) = writer();
    let pipe = Pipe::with_cap(7);
    let (out, _done) = Outbox::new(&w, pipe.conn(), None, None);
    let expected: Vec<String> = (0..50).map(|i| alloc::format!("frame number {i}")).collect();
    for f in &expected {
        out.text(f.clone());
    }
    run(&mut task);
    assert_eq!(pipe.texts(), expected);
    assert_eq!(out.len(), 0, "each frame left the backlog once");
}

#[test]
fn raw_full_connection_resumes_mid_frame_on_its_wake() {
    let (w, mut task) = writer();
    let pipe = Pipe::default();
    pipe.state().room = Some(5); // full after 5 bytes: mid-frame
    let other = Pipe::default();
    let (out, _d1) = Outbox::new(&w, pipe.conn(), None, None);
    let (out2, _d2) = Outbox::new(&w, other.conn(), None, None);
    out.text("0123456789");
    run(&mut task);
    assert_eq!(pipe.state().bytes.len(), 5);
    out.text("after");
    out2.text("other");
    run(&mut task);
    assert_eq!(other.texts(), frames(&["other"]), "the other socket is not held up");
    assert_eq!(pipe.state().bytes.len(), 5, "not revisited before its wake");
    pipe.state().room = None;
    let waker = pipe.state().gate.waker.take();
    waker.expect("the full connection registered the socket's waker").wake();
    run(&mut task);
    assert_eq!(pipe.texts(), frames(&["0123456789", "after"]));
    assert_eq!(out.len(), 0);
}

#[test]
fn raw_close_frame_carries_the_code_and_ends_writing() {
    let (w, mut task) = writer();
    let pipe = Pipe::default();
    let (out, done) = Outbox::new(&w, pipe.conn(), None, None);
    out.text("bye");
    out.close(4001, "");
    run(&mut task);
    assert_eq!(pipe.texts(), frames(&["bye", "close:4001"]));
    assert!(done.is_closed());
    let (w2, mut task2) = writer();
    let pipe2 = Pipe::default();
    let (out2, done2) = Outbox::new(&w2, pipe2.conn(), None, None);
    out2.close(1006, "");
    run(&mut task2);
    assert!(pipe2.texts().is_empty(), "1006 is never sent");
    assert!(done2.is_closed());
}

#[test]
fn tap_bytes_keep_their_place_and_a_tap_close_ends_the_queue() {
    let (w, mut task) = writer();
    let pipe = Pipe::default();
    let (out, done) = Outbox::new(&w, pipe.conn(), None, None);
    out.text("one");
    tap_write(&out, &[0x8a, 0x00]); // a pong
    out.text("two");
    tap_write(&out, &[0x88, 0x02, 0x03, 0xe8]); // the reply to a peer's close (1000)
    assert!(!out.text("three"), "nothing after the library's close frame");
    run(&mut task);
    assert_eq!(
        pipe.texts(),
        vec![String::from("one"), String::from("op:0x8a"), String::from("two"), String::from("close:1000")]
    );
    assert!(done.is_closed());
}

#[test]
fn raw_flushed_and_discard_respect_written_bytes() {
    let (w, mut task) = writer();
    let pipe = Pipe::default();
    pipe.state().room = Some(6); // the header and 4 bytes of the first frame, then full
    let (out, _done) = Outbox::new(&w, pipe.conn(), None, None);
    out.text("partly written");
    out.text("dropped");
    let mut flushed = Box::pin(out.flushed());
    let mut cx = Context::from_waker(Waker::noop());
    assert!(flushed.as_mut().poll(&mut cx).is_pending());
    run(&mut task);
    assert_eq!(pipe.state().bytes.len(), 6);
    assert_eq!(out.discard(), 1, "the partly written frame stays");
    pipe.state().room = None;
    pipe.set_full(false);
    if let Some(w) = pipe.state().gate.waker.take() {
        w.wake();
    }
    run(&mut task);
    assert_eq!(pipe.texts(), frames(&["partly written"]));
    assert!(flushed.as_mut().poll(&mut cx).is_ready());
    assert_eq!(out.len(), 0);
}
