//! `GET /metrics` (the Prometheus text format, version 0.0.4) and `GET /health` (JSON) from
//! [`Server::stats`] and, with a Redis broker, its health.

use std::fmt::Write;

use serde_json::{Value, json};
use socketcluster::server::{Server, ServerStats};

/// The broker's figures, for both endpoints.
#[derive(Debug, Default)]
pub(crate) struct BrokerFigures {
    /// `"memory"` or `"redis"`.
    pub(crate) kind: &'static str,
    pub(crate) connected: bool,
    pub(crate) outages: u64,
    pub(crate) published: u64,
    pub(crate) undelivered: u64,
    pub(crate) received: u64,
    pub(crate) last_error: Option<String>,
}

/// Reads the broker's figures (a closure over the Redis broker, or memory).
pub(crate) type BrokerProbe = Box<dyn Fn() -> BrokerFigures + Send + Sync>;

/// The in-process broker: always connected, nothing to count.
pub(crate) fn memory_broker() -> BrokerProbe {
    Box::new(|| BrokerFigures { kind: "memory", connected: true, ..BrokerFigures::default() })
}

/// The Redis broker's figures.
#[cfg(feature = "redis")]
pub(crate) fn redis_broker(broker: std::sync::Arc<socketcluster::server::redis::RedisBroker>) -> BrokerProbe {
    Box::new(move || {
        let h = broker.health();
        BrokerFigures {
            kind: "redis",
            connected: h.connected,
            outages: h.outages,
            published: h.published,
            undelivered: h.undelivered,
            received: h.received,
            last_error: h.last_error,
        }
    })
}

/// The `/health` body and whether the server is serving (200) or stopping (503).
pub(crate) fn health(server: &Server, broker: &BrokerFigures, stopping: bool) -> (u16, String) {
    let stats = server.stats();
    let status = match (stopping, broker.connected) {
        (true, _) => "stopping",
        (false, true) => "ok",
        // Still serving: publishes reach this process's subscribers, not the others'.
        (false, false) => "degraded",
    };
    let mut b = json!({ "kind": broker.kind, "connected": broker.connected });
    if broker.kind != "memory" {
        b["outages"] = json!(broker.outages);
        b["undelivered"] = json!(broker.undelivered);
        b["lastError"] = broker.last_error.as_ref().map_or(Value::Null, |e| json!(e));
    }
    let body = json!({
        "status": status,
        "connections": stats.connections,
        "pendingHandshakes": stats.pending_handshakes,
        "broker": b,
    });
    (if stopping { 503 } else { 200 }, body.to_string())
}

/// The `/metrics` body.
pub(crate) fn prometheus(stats: &ServerStats, broker: &BrokerFigures) -> String {
    let mut out = String::with_capacity(2048);
    let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
        let _ = writeln!(out, "# HELP socketcluster_{name} {help}");
        let _ = writeln!(out, "# TYPE socketcluster_{name} {kind}");
        let _ = writeln!(out, "socketcluster_{name} {value}");
    };
    let n = |v: usize| u64::try_from(v).unwrap_or(u64::MAX);
    metric("connections", "gauge", "Sockets that completed the handshake.", n(stats.connections));
    metric("pending_handshakes", "gauge", "Sockets still in the handshake.", n(stats.pending_handshakes));
    metric("connections_total", "counter", "Sockets that completed the handshake.", stats.connections_total);
    metric("disconnections_total", "counter", "Handshaken sockets that closed.", stats.disconnections_total);
    metric("subscriptions", "gauge", "Subscriptions (a socket on a channel).", stats.subscriptions);
    metric("channels", "gauge", "Channels with at least one subscriber here.", n(stats.channels));
    metric("messages_in_total", "counter", "WebSocket messages received from clients.", stats.messages_in);
    metric("messages_out_total", "counter", "Text frames written to clients.", stats.messages_out);
    metric("bytes_out_total", "counter", "Bytes written to clients.", stats.bytes_out);
    metric(
        "shed_total",
        "counter",
        "Sockets disconnected with 1013: outbound backlog over the limit.",
        stats.shed,
    );
    metric("auth_failures_total", "counter", "Invalid or expired auth tokens.", stats.auth_failures);
    metric(
        "upgrades_refused_total",
        "counter",
        "Upgrade requests refused (path, middleware, origin).",
        stats.upgrades_refused,
    );
    metric(
        "outbound_high_water",
        "gauge",
        "The largest outbound backlog (frames) any socket had.",
        n(stats.outbound_high_water),
    );
    metric("broker_connected", "gauge", "1 while the broker is connected.", u64::from(broker.connected));
    metric("broker_outages_total", "counter", "Broker connections lost.", broker.outages);
    metric("broker_published_total", "counter", "Publishes sent to the broker.", broker.published);
    metric(
        "broker_undelivered_total",
        "counter",
        "Publishes that reached local subscribers but not the broker.",
        broker.undelivered,
    );
    metric("broker_received_total", "counter", "Publishes of other processes received.", broker.received);
    out
}
