//! [`StreamDemux`]: named sub-streams with ids unique across all names.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use super::state::IdCounter;
use super::{Consumer, ConsumerId, ConsumerStats, Overflow, WritableConsumableStream};
use crate::sync::{Arc, Mutex};

/// Many named sub-streams behind one handle: SocketCluster's listeners, receivers, procedures and
/// channels are each one `StreamDemux`.
///
/// A name's stream exists only while it has consumers: writing to, closing or killing a name
/// nobody consumes does nothing, and the value is dropped (SocketCluster's semantics). Consumer
/// ids are unique across all names, so the `*_consumer` methods need only the id.
///
/// ```
/// use futures::StreamExt;
/// use socketcluster::stream::StreamDemux;
///
/// # futures::executor::block_on(async {
/// let demux = StreamDemux::new();
/// let mut foo = demux.create_consumer("foo");
/// let mut bar = demux.create_consumer("bar");
/// assert_ne!(foo.id(), bar.id());
/// demux.write("foo", 1);
/// demux.write("bar", 2);
/// assert_eq!(demux.write("nobody", 3), 0); // dropped: no consumer
/// demux.close_all();
/// assert_eq!(foo.next().await, Some(1));
/// assert_eq!(foo.next().await, None);
/// assert_eq!(bar.next().await, Some(2));
/// # });
/// ```
pub struct StreamDemux<T> {
    inner: Arc<Mutex<DemuxInner<T>>>,
}

struct DemuxInner<T> {
    streams: BTreeMap<String, WritableConsumableStream<T>>,
    ids: Arc<IdCounter>,
    limit: Option<(usize, Overflow)>,
    /// Size of `streams` at which names without consumers are swept.
    sweep_at: usize,
}

const MIN_SWEEP: usize = 16;

impl<T> fmt::Debug for StreamDemux<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.inner.lock();
        f.debug_struct("StreamDemux").field("names", &inner.streams.len()).finish_non_exhaustive()
    }
}

impl<T> Default for StreamDemux<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Clone for StreamDemux<T> {
    /// Another handle to the same demux.
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone() }
    }
}

impl<T> StreamDemux<T> {
    /// An empty demux whose sub-streams are unbounded.
    pub fn new() -> Self {
        Self::build(None)
    }

    /// An empty demux whose sub-streams each get
    /// [`WritableConsumableStream::with_limit`]`(limit, overflow)`.
    pub fn with_limit(limit: usize, overflow: Overflow) -> Self {
        Self::build(Some((limit, overflow)))
    }

    fn build(limit: Option<(usize, Overflow)>) -> Self {
        Self {
            inner: Arc::new(Mutex::new(DemuxInner {
                streams: BTreeMap::new(),
                ids: Arc::new(IdCounter::new()),
                limit,
                sweep_at: MIN_SWEEP,
            })),
        }
    }

    /// A new consumer of sub-stream `name`; it buffers from now on.
    pub fn create_consumer(&self, name: &str) -> Consumer<T> {
        let mut inner = self.inner.lock();
        if inner.streams.len() >= inner.sweep_at {
            inner.streams.retain(|_, s| s.consumer_count() > 0);
            inner.sweep_at = (inner.streams.len() * 2).max(MIN_SWEEP);
        }
        if let Some(stream) = inner.streams.get(name) {
            return stream.create_consumer();
        }
        let (limit, overflow) = inner.limit.map_or((None, Overflow::Wait), |(l, o)| (Some(l), o));
        let stream = WritableConsumableStream::build(limit, overflow, inner.ids.clone());
        let consumer = stream.create_consumer();
        inner.streams.insert(String::from(name), stream);
        consumer
    }

    /// The stream of `name` if it has consumers; forgets it otherwise.
    fn stream(&self, name: &str) -> Option<WritableConsumableStream<T>> {
        let mut inner = self.inner.lock();
        let stream = inner.streams.get(name)?;
        if stream.consumer_count() == 0 {
            inner.streams.remove(name);
            return None;
        }
        Some(stream.clone())
    }

    /// Every stream that has consumers (a snapshot, so no demux lock is held while they run).
    fn streams(&self) -> Vec<(String, WritableConsumableStream<T>)> {
        let mut inner = self.inner.lock();
        inner.streams.retain(|_, s| s.consumer_count() > 0);
        inner.streams.iter().map(|(n, s)| (n.clone(), s.clone())).collect()
    }

    fn stream_of(&self, id: ConsumerId) -> Option<WritableConsumableStream<T>> {
        let inner = self.inner.lock();
        inner.streams.values().find(|s| s.has_consumer(id)).cloned()
    }

    /// Writes `value` to every consumer of `name`; returns how many it reached (0 and dropped
    /// when `name` has none).
    pub fn write(&self, name: &str, value: T) -> usize {
        self.stream(name).map_or(0, |s| s.write(value))
    }

    /// Resolves once every consumer of `name` has yielded everything written to it and waits for
    /// more (see [`WritableConsumableStream::idle`]); at once when `name` has no consumers.
    pub async fn idle(&self, name: &str) {
        if let Some(s) = self.stream(name) {
            s.idle().await;
        }
    }

    /// Writes `value` to consumer `id` only; returns whether it is a live consumer.
    pub fn write_to_consumer(&self, id: ConsumerId, value: T) -> bool {
        self.stream_of(id).is_some_and(|s| s.write_to_consumer(id, value))
    }

    /// Closes sub-stream `name` (see [`WritableConsumableStream::close`]).
    pub fn close(&self, name: &str) {
        if let Some(s) = self.stream(name) {
            s.close();
        }
    }

    /// Closes sub-stream `name` with a final value.
    pub fn close_with(&self, name: &str, value: T) {
        if let Some(s) = self.stream(name) {
            s.close_with(value);
        }
    }

    /// Closes every sub-stream.
    pub fn close_all(&self) {
        for (_, s) in self.streams() {
            s.close();
        }
    }

    /// Closes every sub-stream with a final value.
    pub fn close_all_with(&self, value: T)
    where
        T: Clone,
    {
        for (_, s) in self.streams() {
            s.close_with(value.clone());
        }
    }

    /// Closes consumer `id`; returns whether it was live.
    pub fn close_consumer(&self, id: ConsumerId) -> bool {
        self.stream_of(id).is_some_and(|s| s.close_consumer(id))
    }

    /// Closes consumer `id` with a final value; returns whether it was live.
    pub fn close_consumer_with(&self, id: ConsumerId, value: T) -> bool {
        self.stream_of(id).is_some_and(|s| s.close_consumer_with(id, value))
    }

    /// Kills sub-stream `name` (see [`WritableConsumableStream::kill`]); returns how many
    /// consumers were killed.
    pub fn kill(&self, name: &str) -> usize
    where
        T: Clone,
    {
        self.stream(name).map_or(0, |s| s.kill())
    }

    /// Kills sub-stream `name` with a final value.
    pub fn kill_with(&self, name: &str, value: T) -> usize
    where
        T: Clone,
    {
        self.stream(name).map_or(0, |s| s.kill_with(value))
    }

    /// Kills every sub-stream; returns how many consumers were killed.
    pub fn kill_all(&self) -> usize
    where
        T: Clone,
    {
        self.streams().into_iter().map(|(_, s)| s.kill()).sum()
    }

    /// Kills every sub-stream with a final value.
    pub fn kill_all_with(&self, value: T) -> usize
    where
        T: Clone,
    {
        self.streams().into_iter().map(|(_, s)| s.kill_with(value.clone())).sum()
    }

    /// Kills consumer `id`; returns whether it was live.
    pub fn kill_consumer(&self, id: ConsumerId) -> bool {
        self.stream_of(id).is_some_and(|s| s.kill_consumer(id))
    }

    /// Kills consumer `id` with a final value; returns whether it was live.
    pub fn kill_consumer_with(&self, id: ConsumerId, value: T) -> bool {
        self.stream_of(id).is_some_and(|s| s.kill_consumer_with(id, value))
    }

    /// The largest backlog among `name`'s consumers (0 when it has none).
    pub fn backpressure(&self, name: &str) -> usize {
        self.stream(name).map_or(0, |s| s.backpressure())
    }

    /// The largest backlog among all consumers.
    pub fn backpressure_all(&self) -> usize {
        self.streams().into_iter().map(|(_, s)| s.backpressure()).max().unwrap_or(0)
    }

    /// Consumer `id`'s backlog (0 for an unknown id).
    pub fn consumer_backpressure(&self, id: ConsumerId) -> usize {
        self.stream_of(id).map_or(0, |s| s.consumer_backpressure(id))
    }

    /// Live consumers of `name`.
    pub fn consumer_count(&self, name: &str) -> usize {
        self.stream(name).map_or(0, |s| s.consumer_count())
    }

    /// Live consumers over all names.
    pub fn consumer_count_all(&self) -> usize {
        self.streams().into_iter().map(|(_, s)| s.consumer_count()).sum()
    }

    /// Whether `id` is a live consumer of `name`.
    pub fn has_consumer(&self, name: &str, id: ConsumerId) -> bool {
        self.stream(name).is_some_and(|s| s.has_consumer(id))
    }

    /// Whether `id` is a live consumer of any name.
    pub fn has_consumer_all(&self, id: ConsumerId) -> bool {
        self.stream_of(id).is_some()
    }

    /// Stats of `name`'s consumers, by ascending id.
    pub fn consumer_stats(&self, name: &str) -> Vec<ConsumerStats> {
        self.stream(name).map_or_else(Vec::new, |s| s.consumer_stats())
    }

    /// Stats of every consumer with its sub-stream's name, by name then id.
    pub fn consumer_stats_all(&self) -> Vec<(String, ConsumerStats)> {
        let mut out = Vec::new();
        for (name, s) in self.streams() {
            out.extend(s.consumer_stats().into_iter().map(|st| (name.clone(), st)));
        }
        out
    }

    /// The names that have consumers.
    pub fn names(&self) -> Vec<String> {
        self.streams().into_iter().map(|(n, _)| n).collect()
    }
}
