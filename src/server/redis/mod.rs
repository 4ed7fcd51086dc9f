//! [`RedisBroker`]: scale-out across server processes through Redis (feature `redis`).
//!
//! Every process delivers to its own sockets with a [`MemoryBroker`] and uses Redis only between
//! processes:
//!
//! - **Interest-based.** A process subscribes to a channel's Redis channel while at least one of
//!   its sockets (or its exchange) is subscribed to the channel, and unsubscribes after the last
//!   one leaves. A `#subscribe` is acknowledged once Redis confirmed the subscription.
//! - **One publish, one Redis message.** A publish is delivered to local subscribers at once and
//!   sent to Redis once, tagged with the process's [`instance_id`](RedisBroker::instance_id);
//!   other processes deliver it to their subscribers with the frame it was encoded in, the
//!   publisher skips its own echo. A publisher's messages reach every process in publish order.
//! - **Names.** `PREFIX:ESCAPED`: every byte of the channel name outside `[A-Za-z0-9-_.~/]` is
//!   written `%XX`, so any channel name is safe, reversible and never collides with another
//!   prefix's channels ([`RedisOptions::redis_channel`]).
//! - **Faults.** When Redis goes away, local delivery goes on; subscriptions are accepted locally;
//!   publishes reach local subscribers only and are counted as
//!   [`undelivered`](RedisHealth::undelivered). The broker reconnects with backoff and
//!   re-subscribes every channel with local subscribers; nothing is replayed. See
//!   [`health`](RedisBroker::health), [`events`](RedisBroker::events) and
//!   [`report_to`](RedisBroker::report_to).
//! - **Sharded pub/sub** on Redis Cluster ≥ 7 (`SSUBSCRIBE`/`SPUBLISH`) with
//!   [`RedisOptions::cluster`]: each channel lives on the shard that owns its hash slot.
//!
//! Start one with `socketcluster::smol::redis_broker` or `socketcluster::tokio::redis_broker`.

mod control;
mod history;
mod names;
mod presence;
mod types;

pub use types::{RedisEvent, RedisHealth, RedisOptions};

use alloc::string::{String, ToString};
use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::broker::{Broker, MemoryBroker, Publication, Subscriber};
use super::history::{HistoryRules, Recovery};
use super::{Server, ServerEvent, ServerShared};
use crate::protocol::RemoteError;
use crate::protocol::position::Position;
use crate::runtime::{BoxFuture, Runtime};
use crate::stream::{Consumer, WritableConsumableStream};
use crate::sync::Mutex;
use control::{Conn, Outgoing};

#[derive(Default)]
struct Counters {
    outages: AtomicU64,
    failed_attempts: AtomicU64,
    published: AtomicU64,
    undelivered: AtomicU64,
    received: AtomicU64,
    ignored: AtomicU64,
}

type Waiter = (Subscriber, async_channel::Sender<Result<(), RemoteError>>);

#[derive(Default)]
struct State {
    /// The live connection and its generation (`None`: down).
    conn: Option<(u64, Conn)>,
    generation: u64,
    /// Subscriber ids per channel, pending ones included: the channels Redis should have.
    want: HashMap<String, HashSet<u64>>,
    /// Channels Redis confirmed on the current connection.
    confirmed: HashSet<String>,
    /// Channels Redis refused on the current connection (not retried until interest ends).
    rejected: HashSet<String>,
    /// Subscribers waiting for Redis to confirm their channel.
    waiting: HashMap<String, Vec<Waiter>>,
    down_since: Option<Instant>,
    undelivered_at_down: u64,
    last_error: Option<String>,
    shut: bool,
}

/// What the broker handle and its tasks share.
struct Shared {
    options: RedisOptions,
    instance: String,
    runtime: Arc<dyn Runtime>,
    local: MemoryBroker,
    state: Mutex<State>,
    /// `state.conn.is_some()`, readable without the lock (every publish asks).
    connected: AtomicBool,
    wake_tx: async_channel::Sender<()>,
    wake_rx: async_channel::Receiver<()>,
    queue: async_channel::Sender<Outgoing>,
    counters: Counters,
    events: WritableConsumableStream<RedisEvent>,
    servers: Mutex<Vec<Weak<ServerShared>>>,
    /// The channels with history (`ServerOptions::history`, via `Broker::set_history`).
    history: Mutex<HistoryRules>,
    /// Joins and leaves for the presence task (plain Redis only).
    presence: async_channel::Sender<presence::Change>,
}

/// A [`Broker`] that scales a server out across processes through Redis; see the
/// [module documentation](self). Dropping the last handle closes its Redis connection.
pub struct RedisBroker {
    shared: Arc<Shared>,
}

impl fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBroker")
            .field("instance_id", &self.shared.instance)
            .field("options", &self.shared.options)
            .field("health", &self.health())
            .finish()
    }
}

impl RedisBroker {
    /// Connects to Redis and starts the broker's tasks on `runtime` (the adapters'
    /// `redis_broker` pass their own). Fails when the first connection cannot be made.
    ///
    /// Call it from a task of `runtime`: the Redis client runs its connection on the runtime it
    /// is called from (tokio when inside a tokio runtime, smol otherwise).
    pub async fn connect(options: RedisOptions, runtime: Arc<dyn Runtime>) -> std::io::Result<Arc<Self>> {
        let (wake_tx, wake_rx) = async_channel::bounded(1);
        let (queue, outgoing) = async_channel::bounded(options.publish_queue.max(1));
        let (presence_tx, presence_rx) = async_channel::unbounded();
        let shared = Arc::new(Shared {
            instance: alloc::format!("{:016x}", fastrand::u64(..)),
            options,
            runtime,
            local: MemoryBroker::new(),
            state: Mutex::new(State { generation: 1, ..State::default() }),
            connected: AtomicBool::new(false),
            wake_tx,
            wake_rx,
            queue,
            counters: Counters::default(),
            events: WritableConsumableStream::new(),
            servers: Mutex::new(Vec::new()),
            history: Mutex::new(HistoryRules::new()),
            presence: presence_tx,
        });
        let conn = control::open(&shared, 1)
            .await
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::ConnectionRefused, e.to_string()))?;
        shared.set_up(1, conn.clone());
        shared.runtime.spawn(alloc::boxed::Box::pin(control::run(shared.clone(), 1, conn)));
        shared.runtime.spawn(alloc::boxed::Box::pin(control::publisher(shared.clone(), outgoing)));
        if !shared.options.sharded {
            shared.runtime.spawn(alloc::boxed::Box::pin(presence::run(shared.clone(), presence_rx)));
        }
        Ok(Arc::new(Self { shared }))
    }

    /// This process's id in Redis messages (16 hex digits, random per broker).
    pub fn instance_id(&self) -> &str {
        &self.shared.instance
    }

    /// The options.
    pub fn options(&self) -> &RedisOptions {
        &self.shared.options
    }

    /// The link to Redis and the counters, now.
    pub fn health(&self) -> RedisHealth {
        let s = &self.shared;
        let c = &s.counters;
        let st = s.state.lock();
        RedisHealth {
            connected: st.conn.is_some(),
            down_for: st.down_since.map(|t| t.elapsed()),
            outages: c.outages.load(Ordering::Relaxed),
            failed_attempts: c.failed_attempts.load(Ordering::Relaxed),
            last_error: st.last_error.clone(),
            redis_channels: st.confirmed.len(),
            local_channels: st.want.len(),
            published: c.published.load(Ordering::Relaxed),
            undelivered: c.undelivered.load(Ordering::Relaxed),
            received: c.received.load(Ordering::Relaxed),
            ignored: c.ignored.load(Ordering::Relaxed),
        }
    }

    /// A consumer of the broker's [`RedisEvent`]s from now on.
    pub fn events(&self) -> Consumer<RedisEvent> {
        self.shared.events.create_consumer()
    }

    /// Reports outages, recoveries and refused subscriptions as `warning` events
    /// (`BrokerError`, no socket) of `server` as well.
    pub fn report_to(&self, server: &Server) {
        self.shared.servers.lock().push(Arc::downgrade(&server.shared));
    }
}

impl Drop for RedisBroker {
    fn drop(&mut self) {
        let waiting = {
            let mut st = self.shared.state.lock();
            st.shut = true;
            st.conn = None;
            self.shared.connected.store(false, Ordering::Release);
            core::mem::take(&mut st.waiting)
        };
        for (_, tx) in waiting.into_values().flatten() {
            let _ = tx.try_send(Err(RemoteError::new("BrokerError", "The Redis broker was closed")));
        }
        self.shared.queue.close();
        let _ = self.shared.wake_tx.try_send(());
    }
}

impl Shared {
    /// Queues a publish for the publisher task (waiting while the queue is full); one that
    /// cannot be queued counts as undelivered.
    fn enqueue(self: &Arc<Self>, out: Outgoing) -> BoxFuture<Result<(), RemoteError>> {
        match self.queue.try_send(out) {
            Ok(()) => alloc::boxed::Box::pin(async { Ok(()) }),
            Err(async_channel::TrySendError::Full(out)) => {
                let s = self.clone();
                alloc::boxed::Box::pin(async move {
                    if s.queue.send(out).await.is_err() {
                        s.counters.undelivered.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(())
                })
            }
            Err(async_channel::TrySendError::Closed(_)) => {
                self.counters.undelivered.fetch_add(1, Ordering::Relaxed);
                alloc::boxed::Box::pin(async { Ok(()) })
            }
        }
    }

    fn history_of(&self, channel: &str) -> Option<super::HistoryOptions> {
        let rules = self.history.lock();
        if rules.is_empty() { None } else { rules.for_channel(channel) }
    }

    fn wake(&self) {
        let _ = self.wake_tx.try_send(());
    }

    fn emit(&self, event: RedisEvent) {
        super::trace::broker_event(&event);
        if let Some(error) = event.warning() {
            let servers: Vec<Arc<ServerShared>> =
                self.servers.lock().iter().filter_map(Weak::upgrade).collect();
            for s in servers {
                s.emit("warning", ServerEvent::Warning { error: error.clone(), socket: None });
            }
        }
        self.events.write(event);
    }

    fn note_error(&self, error: &str) {
        self.state.lock().last_error = Some(String::from(error));
    }

    /// The live connection, if any.
    fn current(&self) -> Option<(u64, Conn)> {
        self.state.lock().conn.clone()
    }

    /// Whether connection `generation` is the live one.
    fn is_current(&self, generation: u64) -> bool {
        matches!(&self.state.lock().conn, Some((g, _)) if *g == generation)
    }

    /// A fresh generation for the next connection attempt (`None` once shut down).
    fn next_generation(&self) -> Option<u64> {
        let mut st = self.state.lock();
        st.generation += 1;
        (!st.shut).then_some(st.generation)
    }

    /// Connection `generation` is live. Returns the outage it ends (`None` on the first connection).
    fn set_up(&self, generation: u64, conn: Conn) -> Option<(Duration, u64)> {
        let mut st = self.state.lock();
        if st.shut {
            return None;
        }
        st.conn = Some((generation, conn));
        self.connected.store(true, Ordering::Release);
        st.confirmed.clear();
        st.rejected.clear();
        let since = st.down_since.take()?;
        let undelivered =
            self.counters.undelivered.load(Ordering::Relaxed).saturating_sub(st.undelivered_at_down);
        Some((since.elapsed(), undelivered))
    }

    /// Connection `generation` is lost (no effect when it is not the live one): local-only until the
    /// next one; waiting subscribers are accepted locally.
    fn set_down(&self, generation: u64, error: &str) {
        let waiting = {
            let mut st = self.state.lock();
            if !matches!(&st.conn, Some((g, _)) if *g == generation) {
                return;
            }
            st.conn = None;
            self.connected.store(false, Ordering::Release);
            st.confirmed.clear();
            st.down_since = Some(Instant::now());
            st.undelivered_at_down = self.counters.undelivered.load(Ordering::Relaxed);
            st.last_error = Some(String::from(error));
            let waiting = core::mem::take(&mut st.waiting);
            for (channel, waiters) in &waiting {
                for (sub, _) in waiters {
                    if st.want.get(channel).is_some_and(|ids| ids.contains(&sub.id())) {
                        self.local.subscribe_now(channel, sub.clone());
                    }
                }
            }
            waiting
        };
        for (_, tx) in waiting.into_values().flatten() {
            let _ = tx.try_send(Ok(()));
        }
        self.counters.outages.fetch_add(1, Ordering::Relaxed);
        self.emit(RedisEvent::Disconnected { error: String::from(error) });
        self.wake();
    }

    /// What to change in Redis next: channels to unsubscribe (forgotten as confirmed at once, so
    /// new subscribers wait for a new confirmation) and channels to subscribe.
    fn plan(&self, max: usize) -> (Vec<String>, Vec<String>) {
        let mut st = self.state.lock();
        let st = &mut *st;
        let unsub: Vec<String> =
            st.confirmed.iter().filter(|c| !st.want.contains_key(*c)).take(max).cloned().collect();
        for c in &unsub {
            st.confirmed.remove(c);
        }
        let sub = st
            .want
            .keys()
            .filter(|c| !st.confirmed.contains(*c) && !st.rejected.contains(*c))
            .take(max)
            .cloned()
            .collect();
        (unsub, sub)
    }

    /// Redis confirmed `channels`: their waiting subscribers become local subscribers.
    fn confirmed(&self, channels: Vec<String>) {
        let mut done = Vec::new();
        {
            let mut st = self.state.lock();
            for channel in channels {
                for (sub, tx) in st.waiting.remove(&channel).unwrap_or_default() {
                    if st.want.get(&channel).is_some_and(|ids| ids.contains(&sub.id())) {
                        self.local.subscribe_now(&channel, sub);
                    }
                    done.push(tx);
                }
                st.confirmed.insert(channel);
            }
        }
        for tx in done {
            let _ = tx.try_send(Ok(()));
        }
    }

    /// Redis refused `channels`: their waiting subscribers fail.
    fn rejected(&self, channels: Vec<String>, error: &str) {
        let mut failed = Vec::new();
        {
            let mut st = self.state.lock();
            for channel in &channels {
                let waiters = st.waiting.remove(channel).unwrap_or_default();
                if let Some(ids) = st.want.get_mut(channel) {
                    for (sub, _) in &waiters {
                        ids.remove(&sub.id());
                    }
                    if ids.is_empty() {
                        st.want.remove(channel);
                    } else {
                        st.rejected.insert(channel.clone());
                    }
                }
                failed.extend(waiters.into_iter().map(|(_, tx)| tx));
            }
            st.last_error = Some(String::from(error));
        }
        for tx in failed {
            let _ = tx.try_send(Err(RemoteError::new("BrokerError", error)));
        }
        for channel in channels {
            self.emit(RedisEvent::SubscribeFailed { channel, error: String::from(error) });
        }
    }

    /// A message Redis pushed on our connection `generation`.
    fn on_push(&self, generation: u64, info: redis::PushInfo) {
        match info.kind {
            redis::PushKind::Message | redis::PushKind::SMessage => self.on_message(&info.data),
            // The cluster client reconnects a lost node itself (failures show in commands).
            redis::PushKind::Disconnection if !self.options.sharded => {
                self.set_down(generation, "the connection was closed")
            }
            _ => {}
        }
    }

    fn on_message(&self, data: &[redis::Value]) {
        let [redis::Value::BulkString(name), redis::Value::BulkString(payload)] = data else {
            self.counters.ignored.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let Some(channel) = names::sc_channel(&self.options.prefix, name) else {
            self.counters.ignored.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if payload.get(..names::ID_LEN) == Some(self.instance.as_bytes()) {
            return; // our own publish, delivered locally when it was made
        }
        match names::parse_payload(&channel, payload) {
            Some(inbound) => {
                let p = Publication::from_frame(
                    &channel,
                    inbound.data,
                    String::from(inbound.frame),
                    inbound.position,
                );
                self.local.deliver(&p);
                self.counters.received.fetch_add(1, Ordering::Relaxed);
            }
            None => {
                self.counters.ignored.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl Broker for RedisBroker {
    fn subscribe(&self, channel: String, subscriber: Subscriber) -> BoxFuture<Result<(), RemoteError>> {
        let s = &self.shared;
        let mut st = s.state.lock();
        if st.shut {
            return alloc::boxed::Box::pin(async {
                Err(RemoteError::new("BrokerError", "The Redis broker was closed"))
            });
        }
        st.want.entry(channel.clone()).or_default().insert(subscriber.id());
        // Local-only while Redis is down (subscribed in Redis when it is back).
        if st.conn.is_none() || st.confirmed.contains(&channel) {
            s.local.subscribe_now(&channel, subscriber);
            return alloc::boxed::Box::pin(async { Ok(()) });
        }
        // A channel Redis refused before is tried again for a new subscriber.
        st.rejected.remove(&channel);
        let (tx, rx) = async_channel::bounded(1);
        st.waiting.entry(channel).or_default().push((subscriber, tx));
        drop(st);
        s.wake();
        alloc::boxed::Box::pin(async move {
            rx.recv()
                .await
                .unwrap_or_else(|_| Err(RemoteError::new("BrokerError", "The Redis broker was closed")))
        })
    }

    fn unsubscribe(&self, channel: String, id: u64) -> BoxFuture<()> {
        let s = &self.shared;
        s.local.unsubscribe_now(&channel, id);
        let released = {
            let mut st = s.state.lock();
            if let Some(ids) = st.want.get_mut(&channel) {
                ids.remove(&id);
                if ids.is_empty() {
                    st.want.remove(&channel);
                    st.rejected.remove(&channel);
                }
            }
            let mut released = Vec::new();
            if let Some(waiters) = st.waiting.get_mut(&channel) {
                let (gone, keep): (Vec<Waiter>, Vec<Waiter>) =
                    core::mem::take(waiters).into_iter().partition(|(sub, _)| sub.id() == id);
                *waiters = keep;
                released.extend(gone.into_iter().map(|(_, tx)| tx));
            }
            released
        };
        for tx in released {
            let _ = tx.try_send(Ok(()));
        }
        s.wake();
        alloc::boxed::Box::pin(async {})
    }

    fn publish(&self, channel: String, data: Option<Value>) -> BoxFuture<Result<(), RemoteError>> {
        let s = &self.shared;
        if let Some(options) = s.history_of(&channel) {
            // Appended and published by Redis, delivered here when it comes back: without Redis
            // it goes nowhere, which the publisher is told.
            if !s.connected.load(Ordering::Acquire) {
                return alloc::boxed::Box::pin(async {
                    Err(RemoteError::new(
                        "BrokerError",
                        "Redis is unavailable: the channel's history cannot be kept",
                    ))
                });
            }
            return match history::outgoing(s, &channel, data.as_ref(), options) {
                Ok(out) => s.enqueue(out),
                Err(e) => alloc::boxed::Box::pin(async move { Err(e) }),
            };
        }
        let p = match Publication::new(&channel, data) {
            Ok(p) => p,
            Err(e) => return alloc::boxed::Box::pin(async move { Err(e.to_remote()) }),
        };
        s.local.deliver(&p);
        if !s.connected.load(Ordering::Acquire) {
            s.counters.undelivered.fetch_add(1, Ordering::Relaxed);
            return alloc::boxed::Box::pin(async { Ok(()) });
        }
        let out = Outgoing {
            channel: s.options.redis_channel(&channel),
            payload: names::payload(&s.instance, p.frame()),
            script: None,
        };
        s.enqueue(out)
    }

    fn channels(&self) -> Vec<(String, usize)> {
        self.shared.local.channels()
    }

    fn presence_changed(&self, channel: &str, member: &super::PresenceMember, joined: bool) {
        if self.shared.options.sharded {
            return;
        }
        let change = if joined {
            presence::Change::Join(String::from(channel), member.clone())
        } else {
            presence::Change::Leave(String::from(channel), member.socket_id.clone())
        };
        let _ = self.shared.presence.try_send(change);
    }

    /// Shared through Redis (plain Redis only; on Redis Cluster, `None`: this process's).
    fn presence(&self, channel: &str) -> Option<BoxFuture<Result<Vec<super::PresenceMember>, RemoteError>>> {
        if self.shared.options.sharded {
            return None;
        }
        Some(alloc::boxed::Box::pin(presence::members(self.shared.clone(), String::from(channel))))
    }

    /// History in Redis Streams, shared by every process (plain Redis only: on Redis Cluster a
    /// script cannot publish to a channel of another slot, so this says false there).
    fn set_history(&self, rules: HistoryRules) -> bool {
        if self.shared.options.sharded {
            return false;
        }
        *self.shared.history.lock() = rules;
        true
    }

    fn subscribe_from(
        &self,
        channel: String,
        subscriber: Subscriber,
        since: Option<Position>,
    ) -> BoxFuture<Result<Option<Recovery>, RemoteError>> {
        let Some(options) = self.shared.history_of(&channel) else {
            return super::broker::without_history(self.subscribe(channel, subscriber));
        };
        let (tx, caught) = async_channel::unbounded();
        let subscribed = self.subscribe(channel.clone(), Subscriber::filtered(subscriber.id(), tx));
        alloc::boxed::Box::pin(history::subscribe_from(
            self.shared.clone(),
            subscribed,
            caught,
            channel,
            subscriber,
            since,
            options,
        ))
    }
}
