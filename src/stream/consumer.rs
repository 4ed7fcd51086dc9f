//! [`Consumer`]: one reader's cursor into a stream's shared buffer.

use alloc::vec::Vec;
use core::fmt;
use core::pin::Pin;
use core::task::{Context, Poll};

use futures_core::{FusedStream, Stream};

use super::buffer::{Entry, Special};
use super::state::{Flags, Inner, Shared, Wakes, wake_all};
use super::{ConsumerId, End};
use crate::sync::{Arc, Ordering};

/// Most items a consumer copies out of the shared buffer per lock. Items are cloned into the
/// consumer's private queue in batches so that a delivery costs one lock per batch, not one per
/// item. They still count in the consumer's backpressure until they are yielded, and a kill drops
/// them unyielded.
pub(crate) const PREFETCH: usize = 64;

/// A reader of a [`WritableConsumableStream`](super::WritableConsumableStream) or a
/// [`StreamDemux`](super::StreamDemux) sub-stream: a [`Stream`] of the items written after it was
/// created.
///
/// Buffering starts when the consumer is created, not when it is first polled. A consumer has one
/// reader (`poll_next` takes `&mut self`). Once it yields `None` it stays ended
/// ([`FusedStream`]); [`end`](Self::end) then says why. Dropping it unregisters it and releases its
/// hold on the buffer.
///
/// A consumer copies up to 64 items per lock into a private queue, whose capacity (at most
/// 64 × `size_of::<T>()`) it keeps while it lives; prefetched items count as backpressure until
/// they are yielded, and a kill drops them.
///
/// ```
/// use futures::StreamExt;
/// use socketcluster::stream::{End, WritableConsumableStream};
///
/// # futures::executor::block_on(async {
/// let stream = WritableConsumableStream::new();
/// let mut c = stream.create_consumer();
/// stream.write("a");
/// stream.close_with("bye");
/// // A consumer is an ordinary `Stream`: every adapter of `StreamExt` works.
/// let items: Vec<_> = (&mut c).collect().await;
/// assert_eq!(items, ["a"]);
/// assert_eq!(c.end(), Some(&End::Closed { value: Some("bye") }));
/// # });
/// ```
pub struct Consumer<T> {
    shared: Arc<Shared<T>>,
    flags: Arc<Flags<T>>,
    id: ConsumerId,
    slot: usize,
    /// Prefetched items, in reverse order (the next item is last, so yielding is a `pop`).
    cache: Vec<T>,
    /// Set once the consumer has yielded its final `None`.
    done: bool,
    end: Option<End<T>>,
}

impl<T> fmt::Debug for Consumer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer").field("id", &self.id).field("ended", &self.done).finish_non_exhaustive()
    }
}

impl<T> Consumer<T> {
    pub(crate) fn new(shared: Arc<Shared<T>>, id: ConsumerId, slot: usize, flags: Arc<Flags<T>>) -> Self {
        Self { shared, flags, id, slot, cache: Vec::new(), done: false, end: None }
    }

    /// This consumer's id.
    pub fn id(&self) -> ConsumerId {
        self.id
    }

    /// Items written for this consumer that it has not yielded yet (0 once it has ended or was
    /// killed).
    pub fn backpressure(&self) -> usize {
        if self.done || self.flags.ended.load(Ordering::Acquire) {
            return 0;
        }
        let inner = self.shared.lock();
        match inner.consumers.get(self.slot) {
            Some(s) if s.id == self.id => s.backpressure(inner.mark()),
            _ => 0,
        }
    }

    /// How the consumer ended, once it has yielded `None`: closed (with the close value), killed
    /// (with the kill value and the number of buffered items it skipped), shed by the overflow
    /// policy, or left behind by a dropped stream.
    pub fn end(&self) -> Option<&End<T>> {
        self.end.as_ref()
    }

    /// Takes the end value out (see [`end`](Self::end)); the consumer stays ended.
    pub fn take_end(&mut self) -> Option<End<T>> {
        self.end.take()
    }

    /// Whether the consumer has yielded its final `None`.
    pub fn is_ended(&self) -> bool {
        self.done
    }

    fn finish(&mut self, end: End<T>) -> Poll<Option<T>> {
        self.done = true;
        self.end = Some(end);
        Poll::Ready(None)
    }

    /// Ended from outside (kill or overflow): drop the prefetched items and report the end.
    fn finish_killed(&mut self) -> Poll<Option<T>> {
        self.cache.clear();
        self.flags.cached.store(0, Ordering::Relaxed);
        let end = self.flags.end.lock().take();
        self.finish(end.unwrap_or(End::Killed { value: None, skipped: 0 }))
    }

    #[inline]
    fn pop_cached(&mut self) -> Option<T> {
        let v = self.cache.pop()?;
        self.flags.cached.store(self.cache.len(), Ordering::Relaxed);
        Some(v)
    }
}

impl<T: Clone> Consumer<T> {
    /// Copies up to [`PREFETCH`] items for this consumer out of the shared buffer, a chunk's run
    /// of entries at a time. Entries for other consumers are skipped without counting towards the
    /// batch, so a refill never comes back empty while an item for this consumer is buffered.
    /// Stops before a close packet unless nothing was copied, so the close is consumed exactly
    /// when it is yielded. Returns how the consumer ended, if it did.
    fn refill(&mut self, inner: &mut Inner<T>) -> Option<End<T>> {
        let Inner { buffer, consumers, .. } = inner;
        let slot = &mut consumers[self.slot];
        let me = self.id;
        loop {
            let (entries, mine) = buffer.readable(&mut slot.cursor);
            if entries.is_empty() {
                return None;
            }
            let available = entries.len() as u64;
            let mut passed = 0;
            let mut closed = None;
            for (k, entry) in entries.iter_mut().enumerate() {
                if self.cache.len() == PREFETCH {
                    break;
                }
                let special = match entry {
                    // Nobody else will read it: move it out instead of cloning it.
                    Entry::Value(_) if k < mine => {
                        if let Entry::Value(v) = core::mem::replace(entry, Entry::Gone) {
                            self.cache.push(v);
                        }
                        passed += 1;
                        continue;
                    }
                    Entry::Value(v) => {
                        self.cache.push(v.clone());
                        passed += 1;
                        continue;
                    }
                    Entry::Special(special) => &**special,
                    Entry::Gone => {
                        // Released entries lie only before the slowest cursor, never after one.
                        debug_assert!(false, "a cursor reached a released entry");
                        passed += 1;
                        continue;
                    }
                };
                let (target, end) = match special {
                    Special::To(id, v) => {
                        if *id == me {
                            self.cache.push(v.clone());
                        }
                        (Some(*id), None)
                    }
                    Special::Close(value) => (None, Some(value)),
                    Special::CloseConsumer(id, value) => (Some(*id), (*id == me).then_some(value)),
                };
                if end.is_some() && !self.cache.is_empty() {
                    break; // yield what came before the close first
                }
                passed += 1;
                if let Some(target) = target {
                    slot.targeted_before += 1;
                    if target == me {
                        slot.mine -= 1;
                    }
                }
                if let Some(value) = end {
                    closed = Some(End::Closed { value: value.clone() });
                    break;
                }
            }
            buffer.advance(&mut slot.cursor, passed);
            if closed.is_some() || passed < available {
                return closed; // closed, the batch is full, or a close waits behind the batch
            }
        }
    }

    /// The slow path of `poll_next`: the private queue is empty.
    #[inline(never)]
    fn poll_shared(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut wakes = Wakes::new();
        let shared = self.shared.clone();
        let mut guard = shared.lock();
        let inner = &mut *guard;
        if !matches!(inner.consumers.get(self.slot), Some(s) if s.id == self.id) {
            // Killed between the flag check and the lock.
            drop(guard);
            return self.finish_killed();
        }
        // The queue is empty here: refill it in order, then reverse it for `pop`.
        let ended = self.refill(inner);
        self.cache.reverse();
        let out = if let Some(end) = ended {
            inner.remove_slot(self.slot, &mut wakes);
            self.finish(end)
        } else if let Some(v) = self.pop_cached() {
            inner.compact();
            inner.wake_writers_if_room(&mut wakes);
            Poll::Ready(Some(v))
        } else if inner.dropped {
            inner.remove_slot(self.slot, &mut wakes);
            self.finish(End::Dropped)
        } else {
            inner.wake_writers_if_room(&mut wakes);
            let Inner { consumers, .. } = inner;
            let slot = &mut consumers[self.slot];
            match &slot.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                Some(_) => slot.waker = Some(cx.waker().clone()),
                None => {
                    slot.waker = Some(cx.waker().clone());
                    inner.register_waiting(self.slot);
                    inner.wake_idle_waiters(&mut wakes);
                }
            }
            Poll::Pending
        };
        drop(guard);
        wake_all(wakes);
        out
    }
}

/// The error of [`Consumer::next_before`]: the deadline came first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimedOut;

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("stream consumer iteration timed out")
    }
}

impl core::error::Error for TimedOut {}

impl<T: Clone> Consumer<T> {
    /// The next item, unless `deadline` completes first: SocketCluster's consumer idle timeout,
    /// with the timer supplied by the caller (the core has no clock). The runtime adapters wrap
    /// this as `next_timeout(consumer, duration)`.
    ///
    /// Unlike SocketCluster, a timeout does not end the consumer: it keeps buffering and may be
    /// polled again.
    ///
    /// ```
    /// use socketcluster::stream::{TimedOut, WritableConsumableStream};
    ///
    /// # futures::executor::block_on(async {
    /// let stream = WritableConsumableStream::<u8>::new();
    /// let mut c = stream.create_consumer();
    /// assert_eq!(c.next_before(async {}).await, Err(TimedOut));
    /// stream.write(7);
    /// assert_eq!(c.next_before(futures::future::pending::<()>()).await, Ok(Some(7)));
    /// # });
    /// ```
    pub async fn next_before<F: core::future::Future>(&mut self, deadline: F) -> Result<Option<T>, TimedOut> {
        let mut deadline = core::pin::pin!(deadline);
        core::future::poll_fn(|cx| {
            if let Poll::Ready(item) = Pin::new(&mut *self).poll_next(cx) {
                return Poll::Ready(Ok(item));
            }
            deadline.as_mut().poll(cx).map(|_| Err(TimedOut))
        })
        .await
    }
}

impl<T: Clone> Stream for Consumer<T> {
    type Item = T;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if this.flags.ended.load(Ordering::Acquire) {
            return this.finish_killed();
        }
        if let Some(v) = this.pop_cached() {
            if this.shared.writers_waiting.load(Ordering::Relaxed) {
                this.shared.notify_writers();
            }
            return Poll::Ready(Some(v));
        }
        this.poll_shared(cx)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        if self.done { (0, Some(0)) } else { (self.cache.len(), None) }
    }
}

// The consumer is never pin-projected: items live in a heap queue.
impl<T> Unpin for Consumer<T> {}

impl<T: Clone> FusedStream for Consumer<T> {
    fn is_terminated(&self) -> bool {
        self.done
    }
}

impl<T> Drop for Consumer<T> {
    fn drop(&mut self) {
        if self.done || self.flags.ended.load(Ordering::Acquire) {
            return;
        }
        let mut wakes = Wakes::new();
        {
            let mut inner = self.shared.lock();
            if matches!(inner.consumers.get(self.slot), Some(s) if s.id == self.id) {
                inner.remove_slot(self.slot, &mut wakes);
            }
        }
        wake_all(wakes);
    }
}
