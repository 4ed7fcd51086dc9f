//! [`Channel`]: a client's view of one channel (SocketCluster's `AGChannel`).

use alloc::string::String;
use core::pin::Pin;
use core::task::{Context, Poll};

use futures_core::Stream;
use futures_core::stream::FusedStream;
use serde::Serialize;
use serde_json::Value;

use super::{ChannelEvent, Client};
use crate::protocol::Error;
use crate::protocol::channels::ChannelState;
use crate::stream::Consumer;

/// One channel: a stream of its messages (buffered from the moment the `Channel` was made), its
/// state and its own listeners. Messages flow while the channel is pending or subscribed.
///
/// Dropping a `Channel` does not unsubscribe (as in SocketCluster); call
/// [`unsubscribe`](Self::unsubscribe).
#[derive(Debug)]
pub struct Channel {
    name: String,
    client: Client,
    data: Consumer<Option<Value>>,
}

impl Channel {
    pub(crate) fn new(name: &str, client: Client) -> Self {
        let data = client.inner.channel_data.create_consumer(name);
        Self { name: String::from(name), client, data }
    }

    /// The channel name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Pending, subscribed or unsubscribed.
    pub fn state(&self) -> ChannelState {
        self.client.channel_state(&self.name)
    }

    /// Whether the subscription is acknowledged (or at least requested, with `include_pending`).
    pub fn is_subscribed(&self, include_pending: bool) -> bool {
        match self.state() {
            ChannelState::Subscribed => true,
            ChannelState::Pending => include_pending,
            ChannelState::Unsubscribed => false,
        }
    }

    /// A consumer of this channel's events named `event` (`subscribe`, `subscribeFail`,
    /// `unsubscribe`, `subscribeStateChange`, `kickOut`).
    pub fn listener(&self, event: &str) -> Consumer<ChannelEvent> {
        self.client.inner.channel_events.create_consumer(&alloc::format!("{}/{event}", self.name))
    }

    /// Another consumer of this channel's messages.
    pub fn create_consumer(&self) -> Consumer<Option<Value>> {
        self.client.inner.channel_data.create_consumer(&self.name)
    }

    /// The underlying consumer of messages (`None` for a publish without data).
    pub fn consumer(&mut self) -> &mut Consumer<Option<Value>> {
        &mut self.data
    }

    /// Unsubscribes (locally at once; the server is told if connected).
    pub fn unsubscribe(&self) {
        self.client.unsubscribe(&self.name);
    }

    /// Publishes to this channel and waits for the server's acknowledgement.
    pub async fn invoke_publish<D: Serialize>(&self, data: D) -> Result<(), Error> {
        self.client.invoke_publish(&self.name, data).await
    }

    /// Publishes to this channel without acknowledgement.
    pub async fn transmit_publish<D: Serialize>(&self, data: D) -> Result<(), Error> {
        self.client.transmit_publish(&self.name, data).await
    }

    /// Closes this channel's message consumers and listeners (does not unsubscribe).
    pub fn close(&self) {
        self.client.inner.channel_data.close(&self.name);
    }

    /// Kills this channel's message consumers (does not unsubscribe).
    pub fn kill(&self) {
        self.client.inner.channel_data.kill(&self.name);
    }
}

impl Stream for Channel {
    type Item = Value;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Value>> {
        Pin::new(&mut self.data).poll_next(cx).map(|o| o.map(Option::unwrap_or_default))
    }
}

impl FusedStream for Channel {
    fn is_terminated(&self) -> bool {
        self.data.is_terminated()
    }
}
