//! The smol adapter: what differs per runtime, for smol.
//!
//! For now this is the consumer idle timeout (SocketCluster's `createConsumer(timeout)`), which
//! needs a timer the `no_std` core does not have. The WebSocket server and client come here next.

use core::time::Duration;

use crate::stream::{Consumer, TimedOut};

/// The consumer's next item, or [`TimedOut`] when none arrives within `timeout`.
///
/// ```
/// use std::time::Duration;
/// use socketcluster::stream::WritableConsumableStream;
///
/// smol::block_on(async {
///     let stream = WritableConsumableStream::<u32>::new();
///     let mut c = stream.create_consumer();
///     let r = socketcluster::smol::next_timeout(&mut c, Duration::from_millis(10)).await;
///     assert!(r.is_err());
/// });
/// ```
pub async fn next_timeout<T: Clone>(
    consumer: &mut Consumer<T>,
    timeout: Duration,
) -> Result<Option<T>, TimedOut> {
    consumer.next_before(smol::Timer::after(timeout)).await
}
