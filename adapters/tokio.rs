//! The tokio adapter: what differs per runtime, for tokio.
//!
//! For now this is the consumer idle timeout (SocketCluster's `createConsumer(timeout)`), which
//! needs a timer the `no_std` core does not have. The WebSocket server and client come here next.

use core::time::Duration;

use crate::stream::{Consumer, TimedOut};

/// The consumer's next item, or [`TimedOut`] when none arrives within `timeout`.
/// Must run inside a tokio runtime with the time driver enabled.
///
/// ```
/// use std::time::Duration;
/// use socketcluster::stream::WritableConsumableStream;
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let stream = WritableConsumableStream::<u32>::new();
/// let mut c = stream.create_consumer();
/// stream.write(1);
/// let r = socketcluster::tokio::next_timeout(&mut c, Duration::from_millis(10)).await;
/// assert_eq!(r, Ok(Some(1)));
/// # });
/// ```
pub async fn next_timeout<T: Clone>(
    consumer: &mut Consumer<T>,
    timeout: Duration,
) -> Result<Option<T>, TimedOut> {
    consumer.next_before(tokio::time::sleep(timeout)).await
}
