//! The state a stream's handles and consumers share: the registrations, the buffer and the wakers,
//! all under one lock, and the few flags a consumer reads without it.

use alloc::vec::Vec;
use core::task::Waker;

use slab::Slab;

use super::buffer::{Buffer, Cursor, Entry};
use super::consumer::PREFETCH;
use super::{ConsumerId, End, Overflow};
use crate::sync::{Arc, AtomicBool, AtomicUsize, Mutex, Ordering};

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
    pub(crate) targeted: u64,
    pub(crate) consumers: Slab<Slot<T>>,
    pub(crate) by_id: IdIndex,
    /// Slots that registered a waker since the last write (may hold stale or repeated slots).
    pub(crate) waiting: Vec<usize>,
    /// Writers waiting for room (`write_async`), by registration number.
    pub(crate) writers: Vec<(u64, Waker)>,
    pub(crate) next_writer: u64,
    /// Tasks waiting in `idle()` for every consumer to be caught up and parked.
    pub(crate) idle_waiters: Vec<Waker>,
    pub(crate) limit: Option<usize>,
    pub(crate) overflow: Overflow,
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
    pub(crate) handles: AtomicUsize,
    pub(crate) ids: Arc<IdCounter>,
}

/// Hands out consumer ids, never reusing one (shared by a demux's streams). A lock rather than an
/// atomic: some `no_std` targets have no 64-bit atomics, and a 32-bit counter could wrap.
#[derive(Debug)]
pub(crate) struct IdCounter(Mutex<u64>);

impl IdCounter {
    pub(crate) fn new() -> Self {
        Self(Mutex::new(1))
    }

    pub(crate) fn next(&self) -> ConsumerId {
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

    pub(crate) fn backpressure_of(&self, slot: usize) -> usize {
        self.consumers[slot].backpressure(self.mark())
    }

    pub(crate) fn max_backpressure(&self) -> usize {
        let mark = self.mark();
        self.consumers.iter().map(|(_, s)| s.backpressure(mark)).max().unwrap_or(0)
    }

    /// An upper bound of every consumer's backpressure, in O(1).
    pub(crate) fn backpressure_bound(&self) -> usize {
        (self.buffer.end() - self.buffer.start()) as usize + PREFETCH
    }

    pub(crate) fn has_room(&self) -> bool {
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
        self.wake_idle_waiters(wakes);
        s
    }

    /// Every consumer has read everything and is parked waiting for more (vacuously true
    /// without consumers). A write takes the parked wakers, so a parked consumer is caught up.
    pub(crate) fn all_idle(&self) -> bool {
        self.consumers.iter().all(|(_, s)| s.waker.is_some())
    }

    /// Wakes the `idle()` waiters if every consumer is idle now.
    pub(crate) fn wake_idle_waiters(&mut self, wakes: &mut Wakes) {
        if !self.idle_waiters.is_empty() && self.all_idle() {
            wakes.append(&mut self.idle_waiters);
        }
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
    pub(crate) fn end_slot(&mut self, slot: usize, end: impl FnOnce(usize) -> End<T>, wakes: &mut Wakes) {
        let skipped = self.backpressure_of(slot);
        let s = self.remove_slot(slot, wakes);
        *s.flags.end.lock() = Some(end(skipped));
        s.flags.ended.store(true, Ordering::Release);
        wakes.extend(s.waker);
    }

    /// Appends an entry for every consumer. Returns the number of consumers it reached.
    pub(crate) fn push(&mut self, entry: Entry<T>, wakes: &mut Wakes) -> usize {
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
    pub(crate) fn shedding_limit(&self) -> Option<usize> {
        self.limit.filter(|_| self.overflow == Overflow::KillConsumer)
    }

    pub(crate) fn shed(&mut self, slot: usize, wakes: &mut Wakes) {
        self.end_slot(slot, |skipped| End::Overflowed { skipped }, wakes);
    }

    /// Appends an entry only `id` will read. Returns whether `id` is a live consumer (and, when
    /// shedding, still is after this append).
    pub(crate) fn push_to(&mut self, id: ConsumerId, entry: Entry<T>, wakes: &mut Wakes) -> bool {
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

impl<T> Shared<T> {
    /// The state of a new stream with one handle.
    pub(crate) fn new(limit: Option<usize>, overflow: Overflow, ids: Arc<IdCounter>) -> Self {
        let inner = Inner {
            buffer: Buffer::new(),
            targeted: 0,
            consumers: Slab::new(),
            by_id: IdIndex::default(),
            waiting: Vec::new(),
            writers: Vec::new(),
            idle_waiters: Vec::new(),
            next_writer: 0,
            limit,
            overflow,
            dropped: false,
        };
        Self {
            inner: Mutex::new(inner),
            writers_waiting: CachePadded(AtomicBool::new(false)),
            handles: AtomicUsize::new(1),
            ids,
        }
    }

    /// A consumer made progress while writers wait: wake them if there is room now.
    pub(crate) fn notify_writers(&self) {
        let mut wakes = Wakes::new();
        {
            let mut inner = self.lock();
            inner.wake_writers_if_room(&mut wakes);
            if inner.writers.is_empty() {
                self.writers_waiting.store(false, Ordering::Relaxed);
            }
        }
        wake_all(wakes);
    }
}

/// The stream's lock, held: dereferences to [`Inner`]. On release it drops the chunks freed
/// meanwhile *after* unlocking, so a value's `Drop` never runs under the lock (it may drop the
/// stream's last handle, which locks again).
pub(crate) struct InnerGuard<'a, T> {
    guard: Option<crate::sync::MutexGuard<'a, Inner<T>>>,
}

impl<T> core::ops::Deref for InnerGuard<'_, T> {
    type Target = Inner<T>;

    fn deref(&self) -> &Inner<T> {
        self.guard.as_deref().unwrap_or_else(|| unreachable!("the guard is only taken in drop"))
    }
}

impl<T> core::ops::DerefMut for InnerGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut Inner<T> {
        self.guard.as_deref_mut().unwrap_or_else(|| unreachable!("the guard is only taken in drop"))
    }
}

impl<T> Drop for InnerGuard<'_, T> {
    fn drop(&mut self) {
        if let Some(mut guard) = self.guard.take()
            && guard.buffer.has_graveyard()
        {
            let grave = guard.buffer.take_graveyard();
            drop(guard);
            drop(grave);
        }
    }
}

impl<T> Shared<T> {
    /// Takes the stream's lock.
    pub(crate) fn lock(&self) -> InnerGuard<'_, T> {
        InnerGuard { guard: Some(self.inner.lock()) }
    }
}

/// Consumer ids to slab slots, sorted by id. Ids only grow, so an insert is a push; a stream has
/// few consumers in the common case, and a `Vec` costs far less than a tree node per stream.
#[derive(Default)]
pub(crate) struct IdIndex(Vec<(ConsumerId, usize)>);

impl IdIndex {
    fn find(&self, id: &ConsumerId) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.cmp(id))
    }

    pub(crate) fn insert(&mut self, id: ConsumerId, slot: usize) {
        match self.0.last() {
            Some((last, _)) if *last >= id => match self.find(&id) {
                Ok(i) => self.0[i].1 = slot,
                Err(i) => self.0.insert(i, (id, slot)),
            },
            _ => {
                if self.0.capacity() == 0 {
                    self.0.reserve_exact(1);
                }
                self.0.push((id, slot));
            }
        }
    }

    pub(crate) fn get(&self, id: &ConsumerId) -> Option<&usize> {
        self.find(id).ok().map(|i| &self.0[i].1)
    }

    pub(crate) fn remove(&mut self, id: &ConsumerId) -> Option<usize> {
        let i = self.find(id).ok()?;
        let slot = self.0.remove(i).1;
        if self.0.is_empty() {
            self.0 = Vec::new(); // give the memory back
        }
        Some(slot)
    }

    pub(crate) fn contains_key(&self, id: &ConsumerId) -> bool {
        self.find(id).is_ok()
    }

    /// `(id, slot)` pairs by ascending id.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&ConsumerId, &usize)> {
        self.0.iter().map(|(k, v)| (k, v))
    }
}
