//! Counters for monitoring: [`Server::stats`] gives a [`ServerStats`] snapshot. Most figures
//! come from the server's own events (one place: [`Counters::record`]); bytes and frames out and
//! the backlog high-water mark are counted by the writer tasks, each on its own counters.

use alloc::string::String;
use core::sync::atomic::{AtomicU64, Ordering};
use std::collections::HashMap;

use super::{Server, ServerEvent};
use crate::sync::Mutex;

/// A snapshot of a server's counters ([`Server::stats`]). Totals count since the server was
/// created; gauges are the current value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerStats {
    /// Gauge: sockets that completed the handshake.
    pub connections: usize,
    /// Gauge: sockets still in the handshake.
    pub pending_handshakes: usize,
    /// Total: sockets that completed the handshake.
    pub connections_total: u64,
    /// Total: handshaken sockets that closed.
    pub disconnections_total: u64,
    /// Gauge: subscriptions (a socket on a channel).
    pub subscriptions: u64,
    /// Gauge: distinct channels with at least one subscribed socket here.
    pub channels: usize,
    /// Total: WebSocket messages received from clients.
    pub messages_in: u64,
    /// Total: text frames written to clients (publications, responses, events).
    pub messages_out: u64,
    /// Total: bytes written to clients (frame headers included on the raw write path).
    pub bytes_out: u64,
    /// Total: sockets disconnected with 1013 because their outbound backlog exceeded the limit.
    pub shed: u64,
    /// Total: handshake or `#authenticate` tokens that were invalid or expired.
    pub auth_failures: u64,
    /// Total: upgrade requests refused with an HTTP status (path, middleware, origin).
    pub upgrades_refused: u64,
    /// The largest outbound backlog (frames queued, not yet written) any socket had.
    pub outbound_high_water: usize,
}

/// The counters a server keeps.
#[derive(Default)]
pub(crate) struct Counters {
    connections_total: AtomicU64,
    disconnections_total: AtomicU64,
    subscriptions: AtomicU64,
    pub(crate) messages_in: AtomicU64,
    shed: AtomicU64,
    auth_failures: AtomicU64,
    pub(crate) upgrades_refused: AtomicU64,
    /// Subscribed sockets per channel.
    channels: Mutex<HashMap<String, u32>>,
}

impl Counters {
    /// Counts what `event` says happened.
    pub(crate) fn record(&self, event: &ServerEvent) {
        let add = |c: &AtomicU64| {
            c.fetch_add(1, Ordering::Relaxed);
        };
        match event {
            ServerEvent::Connection { .. } => add(&self.connections_total),
            ServerEvent::Disconnection { code, .. } => {
                add(&self.disconnections_total);
                if *code == crate::protocol::close::TRY_AGAIN_LATER {
                    add(&self.shed);
                }
            }
            ServerEvent::Subscription { channel, .. } => {
                add(&self.subscriptions);
                *self.channels.lock().entry(channel.clone()).or_default() += 1;
            }
            ServerEvent::Unsubscription { channel, .. } => {
                self.subscriptions.fetch_sub(1, Ordering::Relaxed);
                let mut channels = self.channels.lock();
                if let Some(n) = channels.get_mut(channel.as_str()) {
                    *n -= 1;
                    if *n == 0 {
                        channels.remove(channel.as_str());
                    }
                }
            }
            ServerEvent::BadSocketAuthToken { .. } => add(&self.auth_failures),
            _ => {}
        }
    }
}

impl Server {
    /// The server's counters now: connections, subscriptions, messages and bytes, shed sockets,
    /// auth failures, the backlog high-water mark (see [`ServerStats`]). Cheap: a few loads per
    /// writer task and one lock.
    ///
    /// ```
    /// # smol::block_on(async {
    /// let (server, _addr) = socketcluster::smol::listen("127.0.0.1:0", Default::default()).await?;
    /// let stats = server.stats();
    /// assert_eq!((stats.connections, stats.messages_in), (0, 0));
    /// # std::io::Result::Ok(()) }).unwrap();
    /// ```
    pub fn stats(&self) -> ServerStats {
        let s = &self.shared;
        let c = &s.stats;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut stats = ServerStats {
            connections: self.clients_count(),
            pending_handshakes: self.pending_clients_count(),
            connections_total: load(&c.connections_total),
            disconnections_total: load(&c.disconnections_total),
            subscriptions: load(&c.subscriptions),
            channels: c.channels.lock().len(),
            messages_in: load(&c.messages_in),
            shed: load(&c.shed),
            auth_failures: load(&c.auth_failures),
            upgrades_refused: load(&c.upgrades_refused),
            ..ServerStats::default()
        };
        for w in s.writers() {
            stats.messages_out += w.counters.frames.load(Ordering::Relaxed);
            stats.bytes_out += w.counters.bytes.load(Ordering::Relaxed);
            stats.outbound_high_water =
                stats.outbound_high_water.max(w.counters.high_water.load(Ordering::Relaxed));
        }
        stats
    }
}
