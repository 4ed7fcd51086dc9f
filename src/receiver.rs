//! [`Receiver`]: a consumer of the peer's transmits of one event, on either side.

use core::pin::Pin;
use core::task::{Context, Poll};

use core::marker::PhantomData;

use futures_core::Stream;
use futures_core::stream::FusedStream;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::protocol::Error;
use crate::stream::Consumer;

/// A consumer of the transmits of one event. It yields each transmit's data, `Null` when the
/// transmit had none; [`into_raw`](Self::into_raw) keeps "no data" (`None`) apart from `null`.
/// Created before the transmits arrive, it buffers them until read.
#[derive(Debug)]
pub struct Receiver {
    consumer: Consumer<Option<Value>>,
}

impl Receiver {
    pub(crate) fn new(consumer: Consumer<Option<Value>>) -> Self {
        Self { consumer }
    }

    /// The underlying consumer (its id, backpressure and end).
    pub fn consumer(&self) -> &Consumer<Option<Value>> {
        &self.consumer
    }

    /// The underlying consumer, which yields `None` for a transmit without data.
    pub fn into_raw(self) -> Consumer<Option<Value>> {
        self.consumer
    }

    /// A stream of the transmits' data as `T`; data that does not fit `T` is yielded as
    /// `Err(InvalidArguments)` (the stream goes on).
    ///
    /// ```no_run
    /// # async fn f(socket: socketcluster::server::ServerSocket) {
    /// use futures::StreamExt;
    /// #[derive(serde::Deserialize)]
    /// struct Chat { text: String }
    /// let mut chats = socket.receiver("chat").typed::<Chat>();
    /// while let Some(Ok(chat)) = chats.next().await {
    ///     println!("{}", chat.text);
    /// }
    /// # }
    /// ```
    pub fn typed<T: DeserializeOwned>(self) -> Typed<T> {
        Typed { consumer: self.consumer, _type: PhantomData }
    }
}

/// A [`Receiver`] whose data is deserialized into `T` ([`Receiver::typed`]).
#[derive(Debug)]
pub struct Typed<T> {
    consumer: Consumer<Option<Value>>,
    _type: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> Stream for Typed<T> {
    type Item = Result<T, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.consumer).poll_next(cx).map(|o| {
            o.map(|v| {
                serde_json::from_value(v.unwrap_or_default())
                    .map_err(|e| Error::InvalidArguments(alloc::format!("{e}")))
            })
        })
    }
}

impl Stream for Receiver {
    type Item = Value;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Value>> {
        Pin::new(&mut self.consumer).poll_next(cx).map(|o| o.map(Option::unwrap_or_default))
    }
}

impl FusedStream for Receiver {
    fn is_terminated(&self) -> bool {
        self.consumer.is_terminated()
    }
}
