//! [`Exchange`]: the server's own access to channels (SocketCluster's `agServer.exchange`).

use alloc::collections::BTreeSet;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::pin::Pin;
use core::task::{Context, Poll};

use futures_core::Stream;
use serde::Serialize;
use serde_json::Value;

use super::broker::{Broker, Subscriber};
use crate::protocol::Error;
use crate::stream::{Consumer, StreamDemux};
use crate::sync::Mutex;

struct ExchangeInner {
    broker: Arc<dyn Broker>,
    id: u64,
    channels: StreamDemux<Value>,
    subscriptions: Mutex<BTreeSet<String>>,
    presence: Arc<super::presence::Presence>,
}

/// Publishes to channels from the server (no inbound middleware applies) and subscribes the
/// server itself to channels. Cheap to clone.
#[derive(Clone)]
pub struct Exchange {
    inner: Arc<ExchangeInner>,
}

impl fmt::Debug for Exchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Exchange").field("subscriptions", &self.subscriptions()).finish()
    }
}

fn to_value<D: Serialize>(data: D) -> Result<Value, Error> {
    serde_json::to_value(data).map_err(|e| Error::InvalidArguments(alloc::format!("{e}")))
}

impl Exchange {
    pub(crate) fn new(broker: Arc<dyn Broker>, id: u64, presence: Arc<super::presence::Presence>) -> Self {
        Self {
            inner: Arc::new(ExchangeInner {
                broker,
                id,
                channels: StreamDemux::new(),
                subscriptions: Mutex::new(BTreeSet::new()),
                presence,
            }),
        }
    }

    /// The sockets of this server subscribed to `channel`, by socket id (our extension; see
    /// [`PresenceMember`](super::PresenceMember)).
    ///
    /// ```
    /// # smol::block_on(async {
    /// let (server, _addr) = socketcluster::smol::listen("127.0.0.1:0", Default::default()).await?;
    /// assert!(server.exchange().presence("lobby").is_empty());
    /// # Ok::<(), std::io::Error>(())
    /// # });
    /// ```
    pub fn presence(&self, channel: &str) -> Vec<super::PresenceMember> {
        self.inner.presence.members(channel)
    }

    /// The sockets subscribed to `channel` on every server process sharing this one's broker
    /// (the Redis broker shares presence; with the in-process broker this is
    /// [`presence`](Self::presence)). Fails when the broker cannot answer (Redis down).
    pub async fn presence_all(&self, channel: &str) -> Result<Vec<super::PresenceMember>, Error> {
        match self.inner.broker.presence(channel) {
            Some(all) => all.await.map_err(Error::Remote),
            None => Ok(self.presence(channel)),
        }
    }

    /// How many sockets of this server are subscribed to `channel`.
    pub fn presence_count(&self, channel: &str) -> usize {
        self.inner.presence.count(channel)
    }

    /// Joins and leaves of `channel` from now on, as a stream (buffered from this call).
    pub fn presence_listener(&self, channel: &str) -> crate::stream::Consumer<super::PresenceEvent> {
        self.inner.presence.listener(channel)
    }

    /// Publishes `data` to `channel`; completes once every subscriber has it queued.
    pub async fn invoke_publish<D: Serialize>(&self, channel: &str, data: D) -> Result<(), Error> {
        let value = to_value(data)?;
        self.inner.broker.publish(String::from(channel), Some(value)).await.map_err(Error::Remote)
    }

    /// Publishes `data` to `channel` (the same as [`invoke_publish`](Self::invoke_publish) with
    /// the in-memory broker).
    pub async fn transmit_publish<D: Serialize>(&self, channel: &str, data: D) -> Result<(), Error> {
        self.invoke_publish(channel, data).await
    }

    /// Subscribes the server to `channel`; the returned channel yields its messages (from
    /// the moment of this call).
    pub async fn subscribe(&self, channel: &str) -> Result<ExchangeChannel, Error> {
        let ch = self.channel(channel);
        let sub = Subscriber::exchange(self.inner.id, self.inner.channels.clone());
        self.inner.broker.subscribe(String::from(channel), sub).await.map_err(Error::Remote)?;
        self.inner.subscriptions.lock().insert(String::from(channel));
        Ok(ch)
    }

    /// Unsubscribes the server from `channel`; its consumers are closed.
    pub async fn unsubscribe(&self, channel: &str) {
        if self.inner.subscriptions.lock().remove(channel) {
            self.inner.broker.unsubscribe(String::from(channel), self.inner.id).await;
        }
        self.inner.channels.close(channel);
    }

    /// A consumer of `channel`'s messages, without subscribing (they flow while the server is
    /// subscribed).
    pub fn channel(&self, channel: &str) -> ExchangeChannel {
        ExchangeChannel {
            name: String::from(channel),
            consumer: self.inner.channels.create_consumer(channel),
        }
    }

    /// The channels the server is subscribed to.
    pub fn subscriptions(&self) -> Vec<String> {
        self.inner.subscriptions.lock().iter().cloned().collect()
    }

    /// Whether the server is subscribed to `channel`.
    pub fn is_subscribed(&self, channel: &str) -> bool {
        self.inner.subscriptions.lock().contains(channel)
    }
}

/// A stream of one channel's messages on the server.
#[derive(Debug)]
pub struct ExchangeChannel {
    name: String,
    consumer: Consumer<Value>,
}

impl ExchangeChannel {
    /// The channel name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The underlying consumer.
    pub fn consumer(&mut self) -> &mut Consumer<Value> {
        &mut self.consumer
    }
}

impl Stream for ExchangeChannel {
    type Item = Value;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Value>> {
        Pin::new(&mut self.consumer).poll_next(cx)
    }
}
