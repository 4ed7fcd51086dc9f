//! What the server tells `tracing` (targets under `socketcluster::server`): a span per connection
//! (socket id, remote address) and an event for each step of its life — connection, handshake
//! abort, auth, subscribe and unsubscribe, kick-outs, closes with their codes (1013: shed),
//! broker outages, warnings. Nothing per message. With no subscriber installed, each call site
//! costs one relaxed load.

use std::net::SocketAddr;

use tracing::{debug, info, info_span, warn};

use super::{ServerEvent, ServerSocket};

/// The span a socket's driver runs in.
pub(super) fn connection_span(id: &str, remote: Option<SocketAddr>) -> tracing::Span {
    match remote {
        Some(remote) => info_span!("socket", id, %remote),
        None => info_span!("socket", id),
    }
}

/// A kick-out, by the server, of `socket` from `channel`.
pub(super) fn kicked_out(socket: &ServerSocket, channel: &str) {
    info!(socket = socket.id(), channel, "kicked out");
}

/// The server's lifecycle events as `tracing` events (target `socketcluster::server`): connections,
/// closes with their codes (1013: shed), auth, subscriptions, warnings. Nothing per message; the
/// macros cost a relaxed load when no subscriber is installed.
pub(super) fn server_event(event: &ServerEvent) {
    let addr = |s: &ServerSocket| s.remote_address().map(|a| alloc::format!("{a}")).unwrap_or_default();
    match event {
        ServerEvent::Connection { socket, is_authenticated, .. } => {
            info!(socket = socket.id(), remote = %addr(socket), authenticated = is_authenticated, "connected")
        }
        ServerEvent::ConnectionAbort { socket, code, reason } => {
            info!(socket = socket.id(), remote = %addr(socket), code, reason = reason.as_str(), "handshake aborted")
        }
        ServerEvent::Disconnection { socket, code, reason }
            if *code == crate::protocol::close::TRY_AGAIN_LATER =>
        {
            warn!(socket = socket.id(), remote = %addr(socket), code, reason = reason.as_str(), "shed (1013)")
        }
        ServerEvent::Disconnection { socket, code, reason } => {
            info!(socket = socket.id(), code, reason = reason.as_str(), "disconnected")
        }
        ServerEvent::Subscription { socket, channel, .. } => {
            debug!(socket = socket.id(), channel = channel.as_str(), "subscribed")
        }
        ServerEvent::Unsubscription { socket, channel } => {
            debug!(socket = socket.id(), channel = channel.as_str(), "unsubscribed")
        }
        ServerEvent::Authentication { socket, .. } => debug!(socket = socket.id(), "authenticated"),
        ServerEvent::Deauthentication { socket, .. } => debug!(socket = socket.id(), "deauthenticated"),
        ServerEvent::BadSocketAuthToken { socket, error, .. } => {
            warn!(socket = socket.id(), error = error.message(), kind = error.name(), "bad auth token")
        }
        // The broker's own events say it once per process (`broker_event`).
        ServerEvent::Warning { error, socket: None } if error.name() == "BrokerError" => {}
        ServerEvent::Warning { error, socket } => warn!(
            socket = socket.as_ref().map(|s| s.id()).unwrap_or_default(),
            error = error.message(),
            kind = error.name(),
            "warning"
        ),
        ServerEvent::Error { error } => warn!(error = error.message(), kind = error.name(), "error"),
        _ => {}
    }
}

/// A change in the Redis broker's link: outages and recoveries are warnings and info, failed
/// attempts debug (one per retry).
#[cfg(feature = "redis")]
pub(super) fn broker_event(event: &super::redis::RedisEvent) {
    use super::redis::RedisEvent;
    match event {
        RedisEvent::Disconnected { error } => {
            warn!(target: "socketcluster::broker", error = error.as_str(), "Redis connection lost")
        }
        RedisEvent::ConnectFailed { error, attempt, retry_in } => {
            debug!(target: "socketcluster::broker", error = error.as_str(), attempt, ?retry_in, "Redis connection attempt failed")
        }
        RedisEvent::Reconnected { resubscribed, outage, undelivered } => info!(
            target: "socketcluster::broker",
            resubscribed,
            ?outage,
            undelivered,
            "Redis connection restored"
        ),
        RedisEvent::SubscribeFailed { channel, error } => {
            warn!(target: "socketcluster::broker", channel = channel.as_str(), error = error.as_str(), "Redis refused a subscription")
        }
    }
}

/// An HTTP upgrade request answered with `status` instead of a WebSocket.
pub(super) fn upgrade_refused(status: u16, uri: &str, remote: Option<SocketAddr>) {
    match remote {
        Some(remote) => info!(status, uri, %remote, "upgrade refused"),
        None => info!(status, uri, "upgrade refused"),
    }
}
