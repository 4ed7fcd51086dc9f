//! The raw backend: a server socket's frames written straight to its connection.
//!
//! A server's WebSocket frames are not masked, so a text frame is a 2–10 byte header and the
//! payload as it is: the queue holds the payload a publish encoded once for all subscribers (a
//! reference-counted handle), and no per-connection copy of it waits in a WebSocket library's
//! buffer. A visit gathers the headers and payloads of up to [`GATHER`] queued frames (at most
//! [`GATHER_BYTES`]) into the writer task's scratch buffer and writes them with one `poll_write`
//! — streams behind `futures::io` seldom forward vectored writes, and one without would cost a
//! system call per header — and a write that ends mid-frame is resumed at the same byte by the
//! next round. A frame counts as written (and leaves the backlog) once the kernel took all of it.
//!
//! The WebSocket library still reads the connection and still writes now and then (the HTTP
//! upgrade response, pongs to WebSocket pings, the reply to a peer's close frame): it writes to a
//! [`Tap`], which queues those bytes in the same FIFO, so every byte leaves in order and frames
//! never interleave.

use alloc::vec::Vec;
use core::pin::Pin;
use core::sync::atomic::{AtomicUsize, Ordering};
use core::task::{Context, Poll};
use std::io;

use super::{Outbound, Outbox, State, sendable};

/// Queued frames a visit writes with one system call at most.
const GATHER: usize = 64;
/// Bytes gathered for one write at most (more frames wait for the next round of the visit).
const GATHER_BYTES: usize = 64 * 1024;

/// Appends `bytes` to `scratch`, less the first `skip` of them (already written).
fn scratch_push(scratch: &mut Vec<u8>, skip: &mut usize, bytes: &[u8]) {
    if *skip >= bytes.len() {
        *skip -= bytes.len();
    } else {
        scratch.extend_from_slice(&bytes[*skip..]);
        *skip = 0;
    }
}
/// The longest close reason that fits a control frame (125 bytes with the code).
const MAX_REASON: usize = 123;

/// The header of an unmasked, final text frame of `len` bytes.
fn text_header(len: usize) -> ([u8; 10], usize) {
    let mut h = [0u8; 10];
    h[0] = 0x81;
    if len < 126 {
        h[1] = len as u8;
        (h, 2)
    } else if let Ok(n) = u16::try_from(len) {
        h[1] = 126;
        h[2..4].copy_from_slice(&n.to_be_bytes());
        (h, 4)
    } else {
        h[1] = 127;
        h[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        (h, 10)
    }
}

/// An unmasked close frame with `code` and (up to [`MAX_REASON`] bytes of) `reason`.
fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let mut end = reason.len().min(MAX_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut f = Vec::with_capacity(4 + end);
    f.push(0x88);
    f.push((2 + end) as u8);
    f.extend_from_slice(&code.to_be_bytes());
    f.extend_from_slice(&reason.as_bytes()[..end]);
    f
}

/// Whether `bytes` (whole unmasked frames, or an HTTP response) hold a close frame.
fn has_close_frame(bytes: &[u8]) -> bool {
    if bytes.starts_with(b"HTTP/") {
        return false;
    }
    let mut i = 0;
    while i + 2 <= bytes.len() {
        if bytes[i] & 0x0f == 0x8 {
            return true;
        }
        let (hdr, len) = match bytes[i + 1] & 0x7f {
            126 if i + 4 <= bytes.len() => (4, u16::from_be_bytes([bytes[i + 2], bytes[i + 3]]) as usize),
            127 if i + 10 <= bytes.len() => {
                let mut n = [0u8; 8];
                n.copy_from_slice(&bytes[i + 2..i + 10]);
                (10, usize::try_from(u64::from_be_bytes(n)).unwrap_or(usize::MAX))
            }
            126 | 127 => return false,
            n => (2, n as usize),
        };
        i = i.saturating_add(hdr).saturating_add(len);
    }
    false
}

/// One visit on the raw backend (see [`super::Shared::write`] for the result).
pub(super) fn write(
    backlog: &AtomicUsize,
    counters: &super::WriterCounters,
    st: &mut State,
    cx: &mut Context<'_>,
    scratch: &mut Vec<u8>,
) -> Poll<Result<bool, ()>> {
    let State { queue, conn, offset, closing, waiters, unflushed, .. } = st;
    let Some(super::Backend::Raw(w)) = conn.as_mut() else { return Poll::Ready(Err(())) };
    let mut budget = super::FRAMES_PER_VISIT;
    loop {
        // Markers at the front: a flush request (everything before it is written), our close
        // frame (it becomes bytes; an unsendable code ends the writing at once).
        loop {
            match queue.front() {
                Some(Outbound::Flush(_)) => {
                    if let Some(Outbound::Flush(tx)) = queue.pop_front() {
                        waiters.push(tx);
                    }
                }
                Some(Outbound::Close(code, reason)) => {
                    if !sendable(*code) {
                        return Poll::Ready(Err(()));
                    }
                    queue[0] = Outbound::Raw(close_frame(*code, reason));
                    *closing = true;
                }
                _ => break,
            }
        }
        waiters.clear(); // dropping the senders signals
        if queue.is_empty() {
            // A stream that buffers (TLS: a write takes the plaintext even when the socket cannot
            // take the records yet) must be flushed, or the last bytes wait for the next write.
            if *unflushed {
                match w.as_mut().poll_flush(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(_)) => return Poll::Ready(Err(())),
                    Poll::Ready(Ok(())) => *unflushed = false,
                }
            }
            // After our close frame, writing is over.
            return Poll::Ready(if *closing { Err(()) } else { Ok(false) });
        }
        if budget == 0 {
            return Poll::Ready(Ok(true));
        }
        // Gather the bytes of the front frames (from where the last write stopped) into the
        // writer's scratch buffer: one write per visit, whatever the stream supports.
        scratch.clear();
        let mut skip = *offset;
        for item in queue.iter().take(GATHER.min(budget)) {
            let body: &[u8] = match item {
                Outbound::Text(t) => {
                    let (h, n) = text_header(t.len());
                    scratch_push(scratch, &mut skip, &h[..n]);
                    t.as_bytes()
                }
                Outbound::Raw(b) => b,
                _ => break, // a marker: handled once it is at the front
            };
            scratch_push(scratch, &mut skip, body);
            if scratch.len() >= GATHER_BYTES {
                break;
            }
        }
        let written = match w.as_mut().poll_write(cx, scratch) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(Err(())),
            Poll::Ready(Ok(k)) => k,
        };
        *unflushed = true;
        counters.bytes.fetch_add(written as u64, Ordering::Relaxed);
        // Pop what was written in full; remember how far into the next item the write got.
        let mut left = *offset + written;
        let mut popped = 0usize;
        *offset = 0;
        while let Some(item) = queue.front() {
            let size = match item {
                Outbound::Text(t) => text_header(t.len()).1 + t.len(),
                Outbound::Raw(b) => b.len(),
                _ => break,
            };
            if left < size {
                *offset = left;
                break;
            }
            left -= size;
            if let Some(Outbound::Text(_)) = queue.pop_front() {
                popped += 1;
                budget = budget.saturating_sub(1);
            }
        }
        // Once per write, not per frame.
        backlog.fetch_sub(popped, Ordering::Relaxed);
        counters.frames.fetch_add(popped as u64, Ordering::Relaxed);
        // A partial write means the connection is (nearly) full: the next round's write answers
        // Pending and registers the socket's waker, or takes more.
    }
}

/// What the WebSocket library writes on a server connection with the raw backend: queued in the
/// socket's FIFO (nothing is ever refused or delayed: a close frame from the library ends the
/// queue after it).
struct Tap(Outbox);

/// A connection as the WebSocket library sees it: it reads the real connection, and writes to
/// the socket's queue (see [`Tap`]).
pub(crate) struct Tapped<R> {
    read: R,
    tap: Tap,
}

impl<R> Tapped<R> {
    pub(crate) fn new(read: R, out: &Outbox) -> Self {
        Self { read, tap: Tap(out.clone()) }
    }
}

impl<R: futures::io::AsyncRead + Unpin> futures::io::AsyncRead for Tapped<R> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.read).poll_read(cx, buf)
    }
}

impl<R: Unpin> futures::io::AsyncWrite for Tapped<R> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tap).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tap).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tap).poll_close(cx)
    }
}

impl futures::io::AsyncWrite for Tap {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.0.raw_bytes(buf.to_vec());
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl Outbox {
    /// Queues bytes the WebSocket library wrote. After a close frame nothing more is accepted.
    fn raw_bytes(&self, bytes: Vec<u8>) {
        let last = has_close_frame(&bytes);
        self.queue_then(Outbound::Raw(bytes), last);
    }
}
