//! The broker's public types: options, health, events.

use alloc::string::String;
use alloc::vec::Vec;
use std::time::Duration;

use super::names;
use crate::protocol::RemoteError;

/// How to reach Redis, and how the broker behaves towards it.
#[derive(Clone, Debug)]
pub struct RedisOptions {
    /// `redis://[[USER]:PASSWORD@]HOST:PORT[/DB]`; with [`sharded`](Self::sharded), one or more
    /// nodes of the cluster (the others are discovered).
    pub nodes: Vec<String>,
    /// Redis Cluster with sharded pub/sub (`SSUBSCRIBE`/`SPUBLISH`, Redis ≥ 7) instead of
    /// `SUBSCRIBE`/`PUBLISH` on one server.
    pub sharded: bool,
    /// Redis channel names are `PREFIX:ESCAPED` (`sc`): applications with different prefixes
    /// share a Redis without seeing each other's channels.
    pub prefix: String,
    /// A connection attempt gives up after this long (5 s).
    pub connect_timeout: Duration,
    /// A command (subscribe, publish, ping) not answered in this time counts as a lost
    /// connection (5 s).
    pub response_timeout: Duration,
    /// Redis is pinged this often when otherwise idle, so a silent outage is noticed (1 s).
    pub ping_interval: Duration,
    /// The first reconnect attempt waits this long (100 ms); each failure doubles it.
    pub reconnect_delay: Duration,
    /// The longest wait between reconnect attempts (5 s).
    pub max_reconnect_delay: Duration,
    /// Publishes waiting to be sent to Redis; a publish waits while this many are queued (65536).
    pub publish_queue: usize,
    /// Presence shared through Redis: a process that stops refreshing its liveness key (it
    /// crashed, or lost Redis) has its members dropped after this long (30 s).
    pub presence_ttl: Duration,
}

impl RedisOptions {
    /// One Redis server at `url` (`redis://HOST:PORT`).
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            nodes: alloc::vec![url.into()],
            sharded: false,
            prefix: String::from("sc"),
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(5),
            ping_interval: Duration::from_secs(1),
            reconnect_delay: Duration::from_millis(100),
            max_reconnect_delay: Duration::from_secs(5),
            publish_queue: 65536,
            presence_ttl: Duration::from_secs(30),
        }
    }

    /// A Redis Cluster reached through `nodes`, with sharded pub/sub.
    pub fn cluster<S: Into<String>>(nodes: impl IntoIterator<Item = S>) -> Self {
        let mut o = Self::new(String::new());
        o.nodes = nodes.into_iter().map(Into::into).collect();
        o.sharded = true;
        o
    }

    /// The same options with another [`prefix`](Self::prefix).
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The Redis channel of SocketCluster channel `channel`.
    pub fn redis_channel(&self, channel: &str) -> String {
        names::redis_channel(&self.prefix, channel)
    }

    /// The SocketCluster channel of a Redis channel, if it is one of this prefix's.
    pub fn sc_channel(&self, redis_channel: &[u8]) -> Option<String> {
        names::sc_channel(&self.prefix, redis_channel)
    }
}

/// A snapshot of the broker's link to Redis and its counters.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisHealth {
    /// Whether the broker is connected to Redis now.
    pub connected: bool,
    /// How long the current outage has lasted (`None` while connected).
    pub down_for: Option<Duration>,
    /// Connections lost since the start.
    pub outages: u64,
    /// Failed connection attempts since the start.
    pub failed_attempts: u64,
    /// The last error from Redis.
    pub last_error: Option<String>,
    /// Channels subscribed in Redis now.
    pub redis_channels: usize,
    /// Channels with local subscribers (all of them are subscribed in Redis while connected).
    pub local_channels: usize,
    /// Publishes sent to Redis.
    pub published: u64,
    /// Publishes that reached local subscribers but not Redis (during an outage, or lost with
    /// the connection): other processes' subscribers did not get them.
    pub undelivered: u64,
    /// Publishes of other processes received from Redis.
    pub received: u64,
    /// Messages on our Redis channels that were not a valid publication (ignored).
    pub ignored: u64,
}

/// A change in the broker's link to Redis ([`RedisBroker::events`](super::RedisBroker::events)).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RedisEvent {
    /// The connection was lost. Local delivery goes on; publishes do not reach other processes
    /// until [`Reconnected`](Self::Reconnected).
    Disconnected {
        /// Why.
        error: String,
    },
    /// A connection attempt failed; the next one follows after `retry_in`.
    ConnectFailed {
        /// Why.
        error: String,
        /// Failed attempts in a row.
        attempt: u64,
        /// The wait before the next attempt.
        retry_in: Duration,
    },
    /// Connected again, with every channel that has local subscribers subscribed again.
    Reconnected {
        /// Channels subscribed again.
        resubscribed: usize,
        /// How long the outage lasted.
        outage: Duration,
        /// Publishes of this process during the outage that did not reach Redis.
        undelivered: u64,
    },
    /// Redis refused to subscribe to a channel (an ACL, say); its waiting subscribers got an error.
    SubscribeFailed {
        /// The SocketCluster channel.
        channel: String,
        /// Redis's error.
        error: String,
    },
}

impl RedisEvent {
    pub(super) fn warning(&self) -> Option<RemoteError> {
        let message = match self {
            Self::Disconnected { error } => alloc::format!(
                "Redis connection lost ({error}): publishes reach this process's subscribers only until it is back"
            ),
            Self::Reconnected { resubscribed, outage, undelivered } => alloc::format!(
                "Redis connection restored after {outage:?}: {resubscribed} channels subscribed again, {undelivered} publishes of the outage reached local subscribers only"
            ),
            Self::SubscribeFailed { channel, error } => {
                alloc::format!("Redis refused to subscribe to {channel}: {error}")
            }
            Self::ConnectFailed { .. } => return None,
        };
        Some(RemoteError::new("BrokerError", message))
    }
}
