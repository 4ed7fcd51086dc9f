//! [`WritableConsumableStream`]: the writer side and the state every consumer shares.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::fmt;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll, Waker};

use slab::Slab;

use super::buffer::{Buffer, Cursor, Entry, Special};
use super::consumer::{Consumer, PREFETCH};
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

/// Aligns a value to its own cache line (128 bytes covers adjacent-line prefetching).
#[repr(align(128))]
pub(crate) struct CachePadded<T>(pub(crate) T);

impl<T> core::ops::Deref for CachePadded<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

/// Per-consumer state the consumer reads without taking the stream's lock.
pub(crate) struct Flags<T> {
    /// Set (after `end` is filled) when someone else ended the consumer: kill or overflow.
    pub(crate) ended: AtomicBool,
    /// Items the consumer has prefetched and not yet yielded (part of its backpressure).
    pub(crate) cached: AtomicUsize,
    /// How the consumer was ended by someone else.
    pub(crate) end: Mutex<Option<End<T>>>,
}

/// A live consumer's registration.
pub(crate) struct Slot<T> {
    pub(crate) id: ConsumerId,
    pub(crate) cursor: Cursor,
    /// Targeted entries (for any consumer) before `cursor`.
    pub(crate) targeted_before: u64,
    /// Targeted entries for this consumer at or after `cursor`.
    pub(crate) mine: usize,
    pub(crate) waker: Option<Waker>,
    pub(crate) flags: Arc<Flags<T>>,
}

/// Everything under the stream's lock.
pub(crate) struct Inner<T> {
    pub(crate) buffer: Buffer<T>,
    /// Targeted entries (`write_to_consumer`, `close_consumer`) ever appended.
    targeted: u64,
    pub(crate) consumers: Slab<Slot<T>>,
    by_id: BTreeMap<ConsumerId, usize>,
    /// Slots that registered a waker since the last write (may hold stale or repeated slots).
    waiting: Vec<usize>,
    /// Writers waiting for room (`write_async`), by registration number.
    writers: Vec<(u64, Waker)>,
    next_writer: u64,
    limit: Option<usize>,
    overflow: Overflow,
    /// Every stream handle was dropped: consumers end once they have read everything.
    pub(crate) dropped: bool,
}

/// The state shared by the stream's handles and its consumers.
pub(crate) struct Shared<T> {
    pub(crate) inner: Mutex<Inner<T>>,
    /// Set while a writer waits in `write_async`; consumers then report progress. Read on every
    /// item a consumer yields, so it gets a cache line of its own, away from the lock the writer
    /// keeps writing.
    pub(crate) writers_waiting: CachePadded<AtomicBool>,
    handles: AtomicUsize,
    ids: Arc<IdCounter>,
}

/// Hands out consumer ids, never reusing one (shared by a demux's streams). A lock rather than an
/// atomic: some `no_std` targets have no 64-bit atomics, and a 32-bit counter could wrap.
#[derive(Debug)]
pub(crate) struct IdCounter(Mutex<u64>);

impl IdCounter {
    pub(crate) fn new() -> Self {
        Self(Mutex::new(1))
    }

    fn next(&self) -> ConsumerId {
        let mut n = self.0.lock();
        let id = ConsumerId(*n);
        *n += 1;
        id
    }
}

/// Wakers collected under the lock and woken after it is released.
pub(crate) type Wakes = Vec<Waker>;

pub(crate) fn wake_all(wakes: Wakes) {
    for w in wakes {
        w.wake();
    }
}

/// Where the buffer ends, to measure backlogs against.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mark {
    end: u64,
    targeted: u64,
}

impl<T> Slot<T> {
    /// Entries this consumer will yield (its targeted ones included, others' skipped) and has not:
    /// the ones after its cursor plus the ones it prefetched.
    pub(crate) fn backpressure(&self, mark: Mark) -> usize {
        let after = mark.end - self.cursor.pos - (mark.targeted - self.targeted_before);
        after as usize + self.mine + self.flags.cached.load(Ordering::Relaxed)
    }
}

impl<T> Inner<T> {
    pub(crate) fn mark(&self) -> Mark {
        Mark { end: self.buffer.end(), targeted: self.targeted }
    }

    fn backpressure_of(&self, slot: usize) -> usize {
        self.consumers[slot].backpressure(self.mark())
    }

    fn max_backpressure(&self) -> usize {
        let mark = self.mark();
        self.consumers.iter().map(|(_, s)| s.backpressure(mark)).max().unwrap_or(0)
    }

    /// An upper bound of every consumer's backpressure, in O(1).
    fn backpressure_bound(&self) -> usize {
        (self.buffer.end() - self.buffer.start()) as usize + PREFETCH
    }

    fn has_room(&self) -> bool {
        match self.limit {
            Some(limit) if self.overflow == Overflow::Wait => {
                self.consumers.is_empty()
                    || self.backpressure_bound() < limit
                    || self.max_backpressure() < limit
            }
            _ => true,
        }
    }

    /// Removes a consumer's registration and releases its hold on the buffer.
    pub(crate) fn remove_slot(&mut self, slot: usize, wakes: &mut Wakes) -> Slot<T> {
        let s = self.consumers.remove(slot);
        self.by_id.remove(&s.id);
        self.buffer.release(s.cursor);
        self.compact();
        self.wake_writers_if_room(wakes);
        s
    }

    /// Rebuilds the buffer's node store once a backlog is gone (see `Buffer::compact`).
    pub(crate) fn compact(&mut self) {
        if let Some(remap) = self.buffer.compact() {
            for (_, s) in self.consumers.iter_mut() {
                remap.apply(&mut s.cursor);
            }
        }
    }

    /// Remembers that `slot` registered a waker, so the next write wakes it.
    pub(crate) fn register_waiting(&mut self, slot: usize) {
        self.waiting.push(slot);
        // Targeted writes and consumer churn can leave stale or repeated slots behind; keep the
        // list proportional to the live consumers.
        if self.waiting.len() > 2 * self.consumers.len() + 16 {
            let consumers = &self.consumers;
            self.waiting.retain(|&s| consumers.get(s).is_some_and(|c| c.waker.is_some()));
            self.waiting.sort_unstable();
            self.waiting.dedup();
        }
    }

    pub(crate) fn wake_writers_if_room(&mut self, wakes: &mut Wakes) {
        if !self.writers.is_empty() && self.has_room() {
            wakes.extend(self.writers.drain(..).map(|(_, w)| w));
        }
    }

    /// Ends a consumer from outside (kill, overflow); returns its waker in `wakes`.
    fn end_slot(&mut self, slot: usize, end: impl FnOnce(usize) -> End<T>, wakes: &mut Wakes) {
        let skipped = self.backpressure_of(slot);
        let s = self.remove_slot(slot, wakes);
        *s.flags.end.lock() = Some(end(skipped));
        s.flags.ended.store(true, Ordering::Release);
        wakes.extend(s.waker);
    }

    /// Appends an entry for every consumer. Returns the number of consumers it reached.
    fn push(&mut self, entry: Entry<T>, wakes: &mut Wakes) -> usize {
        let reached = self.consumers.len();
        if reached == 0 {
            return 0;
        }
        self.buffer.push(entry);
        for slot in self.waiting.drain(..) {
            if let Some(s) = self.consumers.get_mut(slot) {
                wakes.extend(s.waker.take());
            }
        }
        let shed = match self.shedding_limit() {
            Some(limit) if self.backpressure_bound() > limit => {
                let mark = self.mark();
                let over: Vec<usize> = self
                    .consumers
                    .iter()
                    .filter(|(_, s)| s.backpressure(mark) > limit)
                    .map(|(k, _)| k)
                    .collect();
                for &slot in &over {
                    self.shed(slot, wakes);
                }
                over.len()
            }
            _ => 0,
        };
        reached - shed
    }

    /// The limit over which consumers are shed ([`Overflow::KillConsumer`]).
    fn shedding_limit(&self) -> Option<usize> {
        self.limit.filter(|_| self.overflow == Overflow::KillConsumer)
    }

    fn shed(&mut self, slot: usize, wakes: &mut Wakes) {
        self.end_slot(slot, |skipped| End::Overflowed { skipped }, wakes);
    }

    /// Appends an entry only `id` will read. Returns whether `id` is a live consumer (and, when
    /// shedding, still is after this append).
    fn push_to(&mut self, id: ConsumerId, entry: Entry<T>, wakes: &mut Wakes) -> bool {
        let Some(&slot) = self.by_id.get(&id) else {
            return false;
        };
        self.buffer.push(entry);
        self.targeted += 1;
        let s = &mut self.consumers[slot];
        s.mine += 1;
        wakes.extend(s.waker.take());
        if self.shedding_limit().is_some_and(|limit| self.backpressure_of(slot) > limit) {
            self.shed(slot, wakes);
            return false;
        }
        true
    }
}

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
        let inner = self.shared.inner.lock();
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
            let mut inner = self.shared.inner.lock();
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
        let inner = Inner {
            buffer: Buffer::new(),
            targeted: 0,
            consumers: Slab::new(),
            by_id: BTreeMap::new(),
            waiting: Vec::new(),
            writers: Vec::new(),
            next_writer: 0,
            limit,
            overflow,
            dropped: false,
        };
        Self {
            shared: Arc::new(Shared {
                inner: Mutex::new(inner),
                writers_waiting: CachePadded(AtomicBool::new(false)),
                handles: AtomicUsize::new(1),
                ids,
            }),
        }
    }

    fn with_inner<R>(&self, f: impl FnOnce(&mut Inner<T>, &mut Wakes) -> R) -> R {
        let mut wakes = Wakes::new();
        let r = f(&mut self.shared.inner.lock(), &mut wakes);
        wake_all(wakes);
        r
    }

    /// Chunks stored and the node store's capacity (tests of memory release).
    #[cfg(test)]
    pub(crate) fn chunk_stats(&self) -> (usize, usize) {
        self.shared.inner.lock().buffer.chunk_stats()
    }

    /// Writers registered as waiting for room (tests of `WriteAsync`'s drop).
    #[cfg(test)]
    pub(crate) fn waiting_writers(&self) -> usize {
        self.shared.inner.lock().writers.len()
    }

    /// The limit set by [`with_limit`](Self::with_limit), if any.
    pub fn limit(&self) -> Option<usize> {
        self.shared.inner.lock().limit
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
            let mut inner = self.shared.inner.lock();
            let cursor = inner.buffer.cursor_at_end();
            let targeted_before = inner.targeted;
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
        self.shared.inner.lock().max_backpressure()
    }

    /// Consumer `id`'s backlog; 0 for an unknown, ended or killed id.
    pub fn consumer_backpressure(&self, id: ConsumerId) -> usize {
        let inner = self.shared.inner.lock();
        inner.by_id.get(&id).map_or(0, |&slot| inner.backpressure_of(slot))
    }

    /// Live consumers.
    pub fn consumer_count(&self) -> usize {
        self.shared.inner.lock().consumers.len()
    }

    /// Whether `id` is a live consumer of this stream.
    pub fn has_consumer(&self, id: ConsumerId) -> bool {
        self.shared.inner.lock().by_id.contains_key(&id)
    }

    /// Every live consumer's id and backlog, by ascending id.
    pub fn consumer_stats(&self) -> Vec<ConsumerStats> {
        let inner = self.shared.inner.lock();
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

impl<T> Shared<T> {
    /// A consumer made progress while writers wait: wake them if there is room now.
    pub(crate) fn notify_writers(&self) {
        let mut wakes = Wakes::new();
        {
            let mut inner = self.inner.lock();
            inner.wake_writers_if_room(&mut wakes);
            if inner.writers.is_empty() {
                self.writers_waiting.store(false, Ordering::Relaxed);
            }
        }
        wake_all(wakes);
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
            let mut inner = shared.inner.lock();
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
            let mut inner = self.stream.shared.inner.lock();
            inner.writers.retain(|(k, _)| *k != n);
            if inner.writers.is_empty() {
                self.stream.shared.writers_waiting.store(false, Ordering::Relaxed);
            }
        }
    }
}
