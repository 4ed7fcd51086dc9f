//! [`WritableConsumableStream`]: the writer side — writes, close, kill, limits and the backlog getters.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::fmt;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};

use super::buffer::{Entry, Special};
use super::consumer::Consumer;
use super::state::{Flags, IdCounter, Inner, Shared, Slot, Wakes, wake_all};
use super::{ConsumerId, ConsumerStats, End};
use crate::sync::{Arc, AtomicBool, AtomicUsize, Mutex, Ordering};

/// What a bounded stream does when a consumer's backlog reaches its limit; see
/// [`WritableConsumableStream::with_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    /// Flow control: [`try_write`](WritableConsumableStream::try_write) is refused and
    /// [`write_async`](WritableConsumableStream::write_async) waits while the slowest consumer has
    /// `limit` or more items pending. [`write`](WritableConsumableStream::write) still appends.
    #[default]
    Wait,
    /// Shedding: a write never waits; every consumer whose backlog goes over `limit` is killed and
    /// ends with [`End::Overflowed`]. The other consumers are not slowed at all.
    KillConsumer,
}

/// The error of [`WritableConsumableStream::try_write`]: the slowest consumer is at the limit.
/// Holds the value that was not written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full<T>(pub T);

impl<T> fmt::Display for Full<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("stream is full: the slowest consumer is at the limit")
    }
}

impl<T: fmt::Debug> core::error::Error for Full<T> {}

/// A stream that is written to and read by any number of [`Consumer`]s, each at its own pace.
///
/// Cloning gives another handle to the same stream. When the last handle is dropped the stream is
/// closed: consumers yield what is buffered, then `None` ([`End::Dropped`]).
///
/// ```
/// use futures::StreamExt;
/// use socketcluster::stream::WritableConsumableStream;
///
/// # futures::executor::block_on(async {
/// let stream = WritableConsumableStream::new();
/// let mut fast = stream.create_consumer();
/// let mut slow = stream.create_consumer();
/// for i in 0..3 {
///     stream.write(i);
/// }
/// assert_eq!(fast.next().await, Some(0));
/// assert_eq!(stream.backpressure(), 3); // `slow` has consumed nothing yet
/// stream.kill_consumer(slow.id());
/// assert_eq!(slow.next().await, None); // immediately, its buffered items skipped
/// assert_eq!(slow.end().map(|e| e.skipped()), Some(3));
/// # });
/// ```
pub struct WritableConsumableStream<T> {
    shared: Arc<Shared<T>>,
}

impl<T> fmt::Debug for WritableConsumableStream<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.shared.lock();
        f.debug_struct("WritableConsumableStream")
            .field("consumers", &inner.consumers.len())
            .field("limit", &inner.limit)
            .field("overflow", &inner.overflow)
            .finish_non_exhaustive()
    }
}

impl<T> Default for WritableConsumableStream<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Clone for WritableConsumableStream<T> {
    fn clone(&self) -> Self {
        self.shared.handles.fetch_add(1, Ordering::Relaxed);
        Self { shared: self.shared.clone() }
    }
}

impl<T> Drop for WritableConsumableStream<T> {
    fn drop(&mut self) {
        if self.shared.handles.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        let mut wakes = Wakes::new();
        {
            let mut inner = self.shared.lock();
            inner.dropped = true;
            let inner = &mut *inner;
            for (_, s) in inner.consumers.iter_mut() {
                wakes.extend(s.waker.take());
            }
        }
        wake_all(wakes);
    }
}

impl<T> WritableConsumableStream<T> {
    /// An unbounded stream, as in SocketCluster.
    pub fn new() -> Self {
        Self::build(None, Overflow::Wait, Arc::new(IdCounter::new()))
    }

    /// A stream whose consumers may have at most `limit` items pending; `overflow` says what
    /// happens at the limit.
    ///
    /// ```
    /// use socketcluster::stream::{End, Overflow, WritableConsumableStream};
    /// use futures::StreamExt;
    ///
    /// # futures::executor::block_on(async {
    /// let stream = WritableConsumableStream::with_limit(2, Overflow::KillConsumer);
    /// let mut slow = stream.create_consumer();
    /// stream.write(1);
    /// stream.write(2);
    /// stream.write(3); // `slow` now has 3 > 2 pending: it is shed
    /// assert_eq!(slow.next().await, None);
    /// assert_eq!(slow.end(), Some(&End::Overflowed { skipped: 3 }));
    /// # });
    /// ```
    pub fn with_limit(limit: usize, overflow: Overflow) -> Self {
        Self::build(Some(limit), overflow, Arc::new(IdCounter::new()))
    }

    pub(crate) fn build(limit: Option<usize>, overflow: Overflow, ids: Arc<IdCounter>) -> Self {
        Self { shared: Arc::new(Shared::new(limit, overflow, ids)) }
    }

    fn with_inner<R>(&self, f: impl FnOnce(&mut Inner<T>, &mut Wakes) -> R) -> R {
        let mut wakes = Wakes::new();
        let r = f(&mut self.shared.lock(), &mut wakes);
        wake_all(wakes);
        r
    }

    /// Chunks stored and the node store's capacity (tests of memory release).
    #[cfg(test)]
    pub(crate) fn chunk_stats(&self) -> (usize, usize) {
        self.shared.lock().buffer.chunk_stats()
    }

    /// Writers registered as waiting for room (tests of `WriteAsync`'s drop).
    #[cfg(test)]
    pub(crate) fn waiting_writers(&self) -> usize {
        self.shared.lock().writers.len()
    }

    /// The limit set by [`with_limit`](Self::with_limit), if any.
    pub fn limit(&self) -> Option<usize> {
        self.shared.lock().limit
    }

    /// A new consumer. It buffers every item written from now on, whenever it is polled.
    pub fn create_consumer(&self) -> Consumer<T> {
        let id = self.shared.ids.next();
        let flags = Arc::new(Flags {
            ended: AtomicBool::new(false),
            cached: AtomicUsize::new(0),
            end: Mutex::new(None),
        });
        let slot = {
            let mut inner = self.shared.lock();
            let cursor = inner.buffer.cursor_at_end();
            let targeted_before = inner.targeted;
            if inner.consumers.capacity() == 0 {
                inner.consumers.reserve_exact(1); // most streams have one consumer
            }
            let slot = inner.consumers.insert(Slot {
                id,
                cursor,
                targeted_before,
                mine: 0,
                waker: None,
                flags: flags.clone(),
            });
            inner.by_id.insert(id, slot);
            slot
        };
        Consumer::new(self.shared.clone(), id, slot, flags)
    }

    /// Writes `value` for every live consumer; returns how many consumers it reached (0: the value
    /// was dropped because nobody consumes the stream, as in SocketCluster). With
    /// [`Overflow::KillConsumer`], consumers this write pushed over the limit are shed and not
    /// counted.
    ///
    /// On a stream with [`Overflow::Wait`] this appends even at the limit; use
    /// [`try_write`](Self::try_write) or [`write_async`](Self::write_async) for flow control.
    pub fn write(&self, value: T) -> usize {
        self.with_inner(|inner, wakes| inner.push(Entry::Value(value), wakes))
    }

    /// Writes `value` unless the slowest consumer is at the limit ([`Overflow::Wait`] only; other
    /// streams never refuse). Returns how many consumers it reached.
    pub fn try_write(&self, value: T) -> Result<usize, Full<T>> {
        self.with_inner(|inner, wakes| {
            if inner.has_room() { Ok(inner.push(Entry::Value(value), wakes)) } else { Err(Full(value)) }
        })
    }

    /// Writes `value` once the slowest consumer is under the limit ([`Overflow::Wait`]); resolves
    /// to how many consumers it reached. Consumers that are dropped or killed stop counting at
    /// once; a closed consumer counts until it has yielded what was buffered before its close.
    pub fn write_async(&self, value: T) -> WriteAsync<'_, T> {
        WriteAsync { stream: self, value: Some(value), waiting: None }
    }

    /// Writes `value` for consumer `id` only. Returns whether `id` is a live consumer (with
    /// [`Overflow::KillConsumer`]: and was not shed by this write).
    pub fn write_to_consumer(&self, id: ConsumerId, value: T) -> bool {
        self.with_inner(|inner, wakes| {
            inner.push_to(id, Entry::Special(Box::new(Special::To(id, value))), wakes)
        })
    }

    /// Closes the stream: each consumer yields what is buffered, then `None`. Consumers created
    /// afterwards work normally and see later writes.
    pub fn close(&self) {
        self.close_inner(None);
    }

    /// [`close`](Self::close) with a final value, readable from [`Consumer::end`].
    pub fn close_with(&self, value: T) {
        self.close_inner(Some(value));
    }

    fn close_inner(&self, value: Option<T>) {
        self.with_inner(|inner, wakes| inner.push(Entry::Special(Box::new(Special::Close(value))), wakes));
    }

    /// Closes consumer `id`: it yields what is buffered, then `None`. Returns whether `id` is a
    /// live consumer.
    pub fn close_consumer(&self, id: ConsumerId) -> bool {
        self.close_consumer_inner(id, None)
    }

    /// [`close_consumer`](Self::close_consumer) with a final value.
    pub fn close_consumer_with(&self, id: ConsumerId, value: T) -> bool {
        self.close_consumer_inner(id, Some(value))
    }

    fn close_consumer_inner(&self, id: ConsumerId, value: Option<T>) -> bool {
        self.with_inner(|inner, wakes| {
            inner.push_to(id, Entry::Special(Box::new(Special::CloseConsumer(id, value))), wakes)
        })
    }

    /// Kills every consumer: each yields `None` on its next poll, its buffered items skipped, and
    /// releases its hold on the buffer at once. Returns how many consumers were killed.
    pub fn kill(&self) -> usize
    where
        T: Clone,
    {
        self.kill_inner(None)
    }

    /// [`kill`](Self::kill) with a final value, readable from [`Consumer::end`].
    pub fn kill_with(&self, value: T) -> usize
    where
        T: Clone,
    {
        self.kill_inner(Some(value))
    }

    fn kill_inner(&self, value: Option<T>) -> usize
    where
        T: Clone,
    {
        self.with_inner(|inner, wakes| {
            let slots: Vec<usize> = inner.consumers.iter().map(|(k, _)| k).collect();
            for &slot in &slots {
                let value = value.clone();
                inner.end_slot(slot, |skipped| End::Killed { value, skipped }, wakes);
            }
            slots.len()
        })
    }

    /// Kills consumer `id` (see [`kill`](Self::kill)). Returns whether `id` was a live consumer.
    pub fn kill_consumer(&self, id: ConsumerId) -> bool {
        self.kill_consumer_inner(id, None)
    }

    /// [`kill_consumer`](Self::kill_consumer) with a final value.
    pub fn kill_consumer_with(&self, id: ConsumerId, value: T) -> bool {
        self.kill_consumer_inner(id, Some(value))
    }

    fn kill_consumer_inner(&self, id: ConsumerId, value: Option<T>) -> bool {
        self.with_inner(|inner, wakes| {
            let Some(&slot) = inner.by_id.get(&id) else {
                return false;
            };
            inner.end_slot(slot, |skipped| End::Killed { value, skipped }, wakes);
            true
        })
    }

    /// The largest backlog over live consumers: items written that a consumer has not consumed.
    pub fn backpressure(&self) -> usize {
        self.shared.lock().max_backpressure()
    }

    /// Consumer `id`'s backlog; 0 for an unknown, ended or killed id.
    pub fn consumer_backpressure(&self, id: ConsumerId) -> usize {
        let inner = self.shared.lock();
        inner.by_id.get(&id).map_or(0, |&slot| inner.backpressure_of(slot))
    }

    /// Resolves once every consumer has yielded everything written so far and is waiting for
    /// more (at once when there are no consumers).
    ///
    /// A consumer waits for more only after the body of its loop has run up to the next
    /// `next().await`, so this tells a writer "every reader has handled my last item as far as it
    /// does without awaiting" — the ordering JavaScript's microtasks give SocketCluster. The server
    /// uses it to hold a new socket's packets until the `connection` handlers have run, so they can
    /// create their consumers first. A consumer that is never polled keeps this pending: bound the
    /// wait with a timer.
    ///
    /// ```
    /// use futures::{FutureExt, StreamExt};
    /// use socketcluster::stream::WritableConsumableStream;
    ///
    /// # futures::executor::block_on(async {
    /// let stream = WritableConsumableStream::new();
    /// let mut c = stream.create_consumer();
    /// stream.write(1);
    /// assert!(stream.idle().now_or_never().is_none()); // 1 not read yet
    /// assert_eq!(c.next().await, Some(1));
    /// assert!(c.next().now_or_never().is_none()); // parks: waiting for more
    /// assert!(stream.idle().now_or_never().is_some());
    /// # });
    /// ```
    pub fn idle(&self) -> Idle<'_, T> {
        Idle { stream: self }
    }

    /// Live consumers.
    pub fn consumer_count(&self) -> usize {
        self.shared.lock().consumers.len()
    }

    /// Whether `id` is a live consumer of this stream.
    pub fn has_consumer(&self, id: ConsumerId) -> bool {
        self.shared.lock().by_id.contains_key(&id)
    }

    /// Every live consumer's id and backlog, by ascending id.
    pub fn consumer_stats(&self) -> Vec<ConsumerStats> {
        let inner = self.shared.lock();
        let mark = inner.mark();
        inner
            .by_id
            .iter()
            .map(|(&id, &slot)| ConsumerStats { id, backpressure: inner.consumers[slot].backpressure(mark) })
            .collect()
    }

    /// Awaits the next item written after this call (a temporary consumer; `None` if the stream
    /// is closed or killed first).
    pub async fn once(&self) -> Option<T>
    where
        T: Clone,
    {
        futures::StreamExt::next(&mut self.create_consumer()).await
    }
}

/// The future of [`WritableConsumableStream::write_async`].
#[must_use = "futures do nothing unless polled"]
pub struct WriteAsync<'a, T> {
    stream: &'a WritableConsumableStream<T>,
    value: Option<T>,
    /// Registration number while waiting for room.
    waiting: Option<u64>,
}

impl<T> fmt::Debug for WriteAsync<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteAsync").field("written", &self.value.is_none()).finish()
    }
}

impl<T> Unpin for WriteAsync<'_, T> {}

impl<T> Future for WriteAsync<'_, T> {
    type Output = usize;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<usize> {
        let this = &mut *self;
        let shared = &this.stream.shared;
        let mut wakes = Wakes::new();
        let out = {
            let mut inner = shared.lock();
            let registered = this.waiting.and_then(|n| inner.writers.iter().position(|(k, _)| *k == n));
            if inner.has_room() {
                if let Some(i) = registered {
                    inner.writers.swap_remove(i);
                }
                this.waiting = None;
                match this.value.take() {
                    Some(value) => Poll::Ready(inner.push(Entry::Value(value), &mut wakes)),
                    None => Poll::Ready(0),
                }
            } else {
                match registered {
                    Some(i) => inner.writers[i].1.clone_from(cx.waker()),
                    None => {
                        let n = inner.next_writer;
                        inner.next_writer += 1;
                        inner.writers.push((n, cx.waker().clone()));
                        this.waiting = Some(n);
                    }
                }
                shared.writers_waiting.store(true, Ordering::Relaxed);
                Poll::Pending
            }
        };
        wake_all(wakes);
        out
    }
}

impl<T> Drop for WriteAsync<'_, T> {
    /// A writer that gives up (a timeout, a `select`) leaves no waker behind.
    fn drop(&mut self) {
        if let Some(n) = self.waiting {
            let mut inner = self.stream.shared.lock();
            inner.writers.retain(|(k, _)| *k != n);
            if inner.writers.is_empty() {
                self.stream.shared.writers_waiting.store(false, Ordering::Relaxed);
            }
        }
    }
}

/// The future of [`WritableConsumableStream::idle`].
#[must_use = "futures do nothing unless polled"]
pub struct Idle<'a, T> {
    stream: &'a WritableConsumableStream<T>,
}

impl<T> fmt::Debug for Idle<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Idle").finish_non_exhaustive()
    }
}

impl<T> Future for Idle<'_, T> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut inner = self.stream.shared.lock();
        if inner.all_idle() {
            return Poll::Ready(());
        }
        inner.idle_waiters.retain(|w| !w.will_wake(cx.waker()));
        inner.idle_waiters.push(cx.waker().clone());
        Poll::Pending
    }
}
