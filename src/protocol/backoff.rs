//! The client's reconnect delay (SocketCluster's `autoReconnectOptions`).

use core::time::Duration;

/// Reconnect backoff settings; the defaults are socketcluster-client 20's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    /// Base delay of the first attempt (10 s).
    pub initial_delay: Duration,
    /// Up to this much random delay is added to the base (10 s).
    pub randomness: Duration,
    /// Each further attempt multiplies the delay by this (1.5).
    pub multiplier: f64,
    /// The delay never exceeds this (60 s).
    pub max_delay: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial_delay: Duration::from_secs(10),
            randomness: Duration::from_secs(10),
            multiplier: 1.5,
            max_delay: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    /// The delay before reconnect attempt `attempt` (0 for the first retry after a connection was
    /// lost), given a random number in `[0, 1)`: `(initial + randomness·random) · multiplier^attempt`,
    /// capped at `max_delay`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use socketcluster::protocol::backoff::Backoff;
    /// let b = Backoff::default();
    /// assert_eq!(b.delay(0, 0.0), Duration::from_secs(10));
    /// assert_eq!(b.delay(1, 0.5), Duration::from_millis(22_500));
    /// assert_eq!(b.delay(10, 0.0), Duration::from_secs(60));
    /// ```
    pub fn delay(&self, attempt: u32, random: f64) -> Duration {
        let base =
            self.initial_delay.as_secs_f64() * 1000.0 + self.randomness.as_secs_f64() * 1000.0 * random;
        let mut ms = base;
        for _ in 0..attempt.min(64) {
            ms *= self.multiplier;
            if ms > self.max_delay.as_secs_f64() * 1000.0 {
                break;
            }
        }
        let cap = self.max_delay.as_millis() as f64;
        let ms = if ms > cap { cap } else { ms };
        // Whole milliseconds, as SocketCluster rounds them.
        Duration::from_millis(ms as u64 + u64::from(ms - (ms as u64 as f64) >= 0.5))
    }
}
