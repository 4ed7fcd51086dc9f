//! [`Receiver`]: a consumer of the peer's transmits of one event, on either side.

use core::pin::Pin;
use core::task::{Context, Poll};

use futures_core::Stream;
use futures_core::stream::FusedStream;
use serde_json::Value;

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
