//! The broker: who is subscribed to which channel, and delivery of publishes.
//!
//! [`MemoryBroker`] is the in-process default. Another broker (Redis, for scale-out across
//! processes) implements [`Broker`] and delivers to the same [`Subscriber`]s.

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use std::collections::HashMap;

use async_tungstenite::tungstenite::Utf8Bytes;
use serde_json::Value;

use super::SocketEvent;
use super::history::{Histories, HistoryRules, Recovery};
use crate::outbox::Outbox;
use crate::protocol::packet;
use crate::protocol::position::Position;
use crate::protocol::{Error, RemoteError};
use crate::runtime::BoxFuture;
use crate::stream::StreamDemux;
use crate::sync::Mutex;

/// A message published to a channel, encoded once: every subscribing socket is sent the same
/// bytes.
#[derive(Clone, Debug)]
pub struct Publication {
    channel: Arc<str>,
    /// Shared: a clone (history, filtered sockets) copies no data.
    data: Option<Arc<Value>>,
    frame: Utf8Bytes,
    position: Option<Arc<Position>>,
}

impl Publication {
    /// Encodes `{"event":"#publish","data":{"channel":C,"data":D}}`.
    pub fn new(channel: &str, data: Option<Value>) -> Result<Self, Error> {
        let frame = packet::encode_publish(channel, data.as_ref())
            .map_err(|e| Error::InvalidArguments(alloc::format!("{e}")))?;
        Ok(Self {
            channel: Arc::from(channel),
            data: data.map(Arc::new),
            frame: Utf8Bytes::from(frame),
            position: None,
        })
    }

    /// A publication at `position` in its channel's history: the frame carries the position
    /// (see [`protocol::position`](crate::protocol::position)).
    pub fn at(channel: &str, data: Option<Value>, position: Position) -> Result<Self, Error> {
        let frame = packet::encode_publish_at(channel, data.as_ref(), Some(&position))
            .map_err(|e| Error::InvalidArguments(alloc::format!("{e}")))?;
        Ok(Self {
            channel: Arc::from(channel),
            data: data.map(Arc::new),
            frame: Utf8Bytes::from(frame),
            position: Some(Arc::new(position)),
        })
    }

    /// Its position in the channel's history (channels with history only).
    pub fn position(&self) -> Option<&Position> {
        self.position.as_deref()
    }

    /// The channel.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// The data (`None` when the publish had none).
    pub fn data(&self) -> Option<&Value> {
        self.data.as_deref()
    }

    /// The encoded `#publish` frame.
    pub fn frame(&self) -> &str {
        self.frame.as_str()
    }

    /// A publication whose frame was encoded elsewhere (by another process, received through
    /// Redis): `frame` is the `#publish` frame of `channel` and `data`.
    #[cfg(feature = "redis")]
    pub(crate) fn from_frame(
        channel: &str,
        data: Option<Value>,
        frame: String,
        position: Option<Position>,
    ) -> Self {
        Self {
            channel: Arc::from(channel),
            data: data.map(Arc::new),
            frame: Utf8Bytes::from(frame),
            position: position.map(Arc::new),
        }
    }

    pub(crate) fn frame_bytes(&self) -> &Utf8Bytes {
        &self.frame
    }
}

#[derive(Clone)]
enum Target {
    Socket {
        out: Outbox,
        listeners: StreamDemux<SocketEvent>,
    },
    /// A socket with outbound middleware: its publications go through it first.
    Filtered(async_channel::Sender<Publication>),
    Exchange(StreamDemux<Value>),
}

/// Something subscribed to channels: a server socket, or the server's exchange.
#[derive(Clone)]
pub struct Subscriber {
    id: u64,
    target: Target,
}

impl fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.target {
            Target::Socket { .. } | Target::Filtered(_) => "socket",
            Target::Exchange(_) => "exchange",
        };
        f.debug_struct("Subscriber").field("id", &self.id).field("kind", &kind).finish()
    }
}

impl Subscriber {
    pub(crate) fn socket(id: u64, out: Outbox, listeners: StreamDemux<SocketEvent>) -> Self {
        Self { id, target: Target::Socket { out, listeners } }
    }

    pub(crate) fn filtered(id: u64, tx: async_channel::Sender<Publication>) -> Self {
        Self { id, target: Target::Filtered(tx) }
    }

    pub(crate) fn exchange(id: u64, channels: StreamDemux<Value>) -> Self {
        Self { id, target: Target::Exchange(channels) }
    }

    /// A number unique to this subscriber within the process.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Delivers a publication; false when the subscriber is gone (a closed socket).
    pub fn deliver(&self, publication: &Publication) -> bool {
        match &self.target {
            Target::Socket { out, .. } => out.text(publication.frame.clone()),
            Target::Filtered(tx) => tx.try_send(publication.clone()).is_ok(),
            Target::Exchange(channels) => {
                channels.write(&publication.channel, publication.data().cloned().unwrap_or(Value::Null));
                true
            }
        }
    }

    /// Reports a delivery problem to the subscriber's `error` listener (sockets only).
    pub fn report(&self, error: RemoteError) {
        if let Target::Socket { listeners, .. } = &self.target {
            listeners.write("error", SocketEvent::Error(error));
        }
    }
}

/// Channel subscriptions and publish delivery.
///
/// `subscribe` completes only once the subscription is in place, so a publish issued after it
/// reaches the subscriber; the server acknowledges a client's `#subscribe` only then.
pub trait Broker: Send + Sync + fmt::Debug + 'static {
    /// Subscribes `subscriber` to `channel` (again: no effect).
    fn subscribe(&self, channel: String, subscriber: Subscriber) -> BoxFuture<Result<(), RemoteError>>;
    /// Unsubscribes subscriber `id` from `channel`.
    fn unsubscribe(&self, channel: String, id: u64) -> BoxFuture<()>;
    /// Publishes to every subscriber of `channel`; completes once the publication was handed to
    /// each local subscriber's queue.
    fn publish(&self, channel: String, data: Option<Value>) -> BoxFuture<Result<(), RemoteError>>;
    /// The channels with at least one subscriber, and how many each has.
    fn channels(&self) -> Vec<(String, usize)>;

    /// A socket joined (`joined`) or left a channel (the server calls this for every change of
    /// its presence); a broker that shares presence across processes records it. Default:
    /// nothing (presence is this process's).
    fn presence_changed(&self, channel: &str, member: &super::PresenceMember, joined: bool) {
        let _ = (channel, member, joined);
    }

    /// Every process's members of `channel`, when this broker shares presence (`None`: it does
    /// not, and the server's own list is the answer).
    fn presence(&self, channel: &str) -> Option<BoxFuture<Result<Vec<super::PresenceMember>, RemoteError>>> {
        let _ = channel;
        None
    }

    /// Keeps history for the channels `rules` name; false when this broker cannot (the
    /// default), and the server then warns at startup.
    fn set_history(&self, rules: HistoryRules) -> bool {
        let _ = rules;
        false
    }

    /// [`subscribe`](Self::subscribe), and for a channel with history: the position the
    /// subscription starts from, after replaying to `subscriber` — before any live publish —
    /// what was published after `since`. The default (no history) subscribes and says `None`.
    fn subscribe_from(
        &self,
        channel: String,
        subscriber: Subscriber,
        since: Option<Position>,
    ) -> BoxFuture<Result<Option<Recovery>, RemoteError>> {
        let _ = since;
        without_history(self.subscribe(channel, subscriber))
    }
}

/// A plain subscription as the outcome of [`Broker::subscribe_from`]: no position.
pub(crate) fn without_history(
    subscribed: BoxFuture<Result<(), RemoteError>>,
) -> BoxFuture<Result<Option<Recovery>, RemoteError>> {
    alloc::boxed::Box::pin(async move { subscribed.await.map(|()| None) })
}

/// The in-process broker; with [`HistoryRules`] it also keeps channel history (offsets are
/// assigned under the same lock as delivery, so every subscriber sees them in order).
#[derive(Debug, Default)]
pub struct MemoryBroker {
    channels: Mutex<HashMap<String, Vec<Subscriber>>>,
    history: Mutex<Histories>,
    /// Whether any channel may keep history: without, publishes skip the history lock.
    has_history: core::sync::atomic::AtomicBool,
}

impl MemoryBroker {
    /// An empty broker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Subscribes now (the same as [`Broker::subscribe`], without the future).
    pub fn subscribe_now(&self, channel: &str, subscriber: Subscriber) {
        let mut map = self.channels.lock();
        let subs = map.entry(String::from(channel)).or_default();
        if !subs.iter().any(|s| s.id == subscriber.id) {
            subs.push(subscriber);
        }
    }

    /// Replaces the subscriber with `subscriber`'s id on `channel` (adds it when there is none),
    /// calling `before` first under the lock that delivery takes: nothing is delivered between
    /// `before` and the replacement.
    #[cfg(feature = "redis")]
    pub(crate) fn replace_now(&self, channel: &str, subscriber: Subscriber, before: impl FnOnce()) {
        let mut map = self.channels.lock();
        before();
        let subs = map.entry(String::from(channel)).or_default();
        subs.retain(|s| s.id != subscriber.id);
        subs.push(subscriber);
    }

    /// Unsubscribes now.
    pub fn unsubscribe_now(&self, channel: &str, id: u64) {
        let mut map = self.channels.lock();
        if let Some(subs) = map.get_mut(channel) {
            subs.retain(|s| s.id != id);
            if subs.is_empty() {
                map.remove(channel);
            }
        }
    }

    /// Delivers `publication` to the local subscribers of its channel; returns how many.
    pub fn deliver(&self, publication: &Publication) -> usize {
        let map = self.channels.lock();
        map.get(publication.channel())
            .map_or(0, |subs| subs.iter().filter(|s| s.deliver(publication)).count())
    }
}

impl Broker for MemoryBroker {
    fn subscribe(&self, channel: String, subscriber: Subscriber) -> BoxFuture<Result<(), RemoteError>> {
        self.subscribe_now(&channel, subscriber);
        alloc::boxed::Box::pin(async { Ok(()) })
    }

    fn unsubscribe(&self, channel: String, id: u64) -> BoxFuture<()> {
        self.unsubscribe_now(&channel, id);
        alloc::boxed::Box::pin(async {})
    }

    fn publish(&self, channel: String, data: Option<Value>) -> BoxFuture<Result<(), RemoteError>> {
        if !self.has_history.load(core::sync::atomic::Ordering::Acquire) {
            let result = Publication::new(&channel, data).map(|p| {
                self.deliver(&p);
            });
            return alloc::boxed::Box::pin(async move { result.map_err(|e| e.to_remote()) });
        }
        // The history lock is held through delivery: positions reach subscribers in order.
        let mut history = self.history.lock();
        let result = history.publish(&channel, data).map(|p| {
            self.deliver(&p);
        });
        drop(history);
        alloc::boxed::Box::pin(async move { result.map_err(|e| e.to_remote()) })
    }

    fn channels(&self) -> Vec<(String, usize)> {
        self.channels.lock().iter().map(|(k, v)| (k.clone(), v.len())).collect()
    }

    fn set_history(&self, rules: HistoryRules) -> bool {
        self.has_history.store(!rules.is_empty(), core::sync::atomic::Ordering::Release);
        self.history.lock().set_rules(rules);
        true
    }

    fn subscribe_from(
        &self,
        channel: String,
        subscriber: Subscriber,
        since: Option<Position>,
    ) -> BoxFuture<Result<Option<Recovery>, RemoteError>> {
        // Under the history lock no publish can come between the replay and the subscription.
        let mut history = self.history.lock();
        let recovery = history.recover(&channel, since.as_ref()).map(|(recovery, replay)| {
            for p in &replay {
                subscriber.deliver(p);
            }
            recovery
        });
        self.subscribe_now(&channel, subscriber);
        drop(history);
        alloc::boxed::Box::pin(async move { Ok(recovery) })
    }
}
