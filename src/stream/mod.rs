//! Consumable streams: SocketCluster's async-iterable event sources, `no_std` + `alloc`.
//!
//! A [`WritableConsumableStream`] is written by one or more writers and read by any number of
//! [`Consumer`]s, each a [`futures_core::Stream`] with its own cursor into **one shared linked
//! buffer**: a message is stored once however many consumers there are, and is freed as soon as
//! the slowest live consumer has passed it.
//!
//! - **Buffering starts at creation.** A consumer sees every write made after
//!   [`create_consumer`](WritableConsumableStream::create_consumer), even if it is polled only
//!   much later.
//! - **Close** ([`close`](WritableConsumableStream::close)): each consumer first yields what is
//!   buffered, then `None`.
//! - **Kill** ([`kill`](WritableConsumableStream::kill)): each consumer yields `None` on its very
//!   next poll, also when it is idle or waiting; its buffered items are skipped and its hold on the
//!   buffer is released at once. [`Consumer::end`] tells how the consumer ended and how many items
//!   a kill skipped, so nothing is dropped silently.
//! - **Backpressure**: how many items a consumer has not yet consumed;
//!   [`backpressure`](WritableConsumableStream::backpressure) is the maximum over live consumers.
//! - **Opt-in bound** ([`WritableConsumableStream::with_limit`]): writers can be refused
//!   ([`try_write`](WritableConsumableStream::try_write)) or wait
//!   ([`write_async`](WritableConsumableStream::write_async)) while the slowest consumer is over
//!   the limit, or the stream can shed consumers over the limit ([`Overflow::KillConsumer`]).
//!
//! [`StreamDemux`] multiplexes named sub-streams (listeners, receivers, procedures, channels) with
//! consumer ids unique across all names.
//!
//! Differences from the JavaScript `writable-consumable-stream`, all deliberate: kill is
//! immediate; a killed, closed or dropped consumer releases its buffer hold at once; a consumer
//! has exactly one reader (`&mut self`), so concurrent reads cannot lose items; an ended consumer
//! stays ended (create a new one to resume); dropping the last stream handle closes the stream.

mod buffer;
mod consumer;
mod demux;
mod state;
mod writable;

pub use consumer::{Consumer, TimedOut};
pub use demux::StreamDemux;
pub use writable::{Full, Idle, Overflow, WritableConsumableStream, WriteAsync};

use core::fmt;

/// Identifies a consumer. Ids are never reused within one stream or one demux.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConsumerId(u64);

impl ConsumerId {
    /// The id as a number (SocketCluster's consumer ids start at 1).
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Debug for ConsumerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConsumerId({})", self.0)
    }
}

impl fmt::Display for ConsumerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// A snapshot of one consumer, as returned by
/// [`consumer_stats`](WritableConsumableStream::consumer_stats).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumerStats {
    /// The consumer's id.
    pub id: ConsumerId,
    /// Items written for this consumer that it has not consumed yet.
    pub backpressure: usize,
}

/// How a consumer ended; see [`Consumer::end`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End<T> {
    /// The stream or this consumer was closed; every item before the close was yielded.
    Closed {
        /// The value given to `close_with` / `close_consumer_with`, if any.
        value: Option<T>,
    },
    /// The stream or this consumer was killed.
    Killed {
        /// The value given to `kill_with` / `kill_consumer_with`, if any.
        value: Option<T>,
        /// Buffered items the consumer had not consumed and never will.
        skipped: usize,
    },
    /// The stream's [`Overflow::KillConsumer`] policy killed the consumer because its backlog went
    /// over the stream's limit.
    Overflowed {
        /// Buffered items the consumer had not consumed and never will.
        skipped: usize,
    },
    /// Every handle of the stream was dropped; every buffered item was yielded.
    Dropped,
}

impl<T> End<T> {
    /// The value carried by a close or a kill, if any.
    pub fn value(&self) -> Option<&T> {
        match self {
            End::Closed { value } | End::Killed { value, .. } => value.as_ref(),
            End::Overflowed { .. } | End::Dropped => None,
        }
    }

    /// Items that were buffered for the consumer and dropped by a kill or an overflow.
    pub fn skipped(&self) -> usize {
        match self {
            End::Killed { skipped, .. } | End::Overflowed { skipped } => *skipped,
            End::Closed { .. } | End::Dropped => 0,
        }
    }
}

#[cfg(test)]
mod tests;
