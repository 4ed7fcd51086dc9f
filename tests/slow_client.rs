//! Slow-client protection (`ServerOptions::outbound_limit`): a subscriber that stops reading its
//! TCP socket is disconnected with close code 1013 and a `warning` carrying `ResourceLimitError`,
//! its memory is released, and nobody else waits for it.
//!
//! Each scenario runs the server in-process (`socketcluster::smol::listen`, and
//! `socketcluster::tokio::listen` with the `tokio` feature). The normal subscribers are our
//! [`Client`] on the same runtime; the stuck one is a raw WebSocket (smol `TcpStream`) that does
//! the SocketCluster handshake, subscribes, and then is never read again, so that the kernel
//! buffers of its connection fill up (a burst of 5 000 publishes of 2 KiB each, ~10 MB, is much
//! more than the loopback buffers hold).
//!
//! The burst is published through the server's exchange with a window: the publisher stays at
//! most [`WINDOW`] messages ahead of the slowest *normal* subscriber. That keeps the normal
//! subscribers' backlogs well under the limit (they are never shed), and it turns "nobody waits
//! for the stuck socket" into a measurement: if a stuck socket held anything back, the publisher
//! would stall. The same burst is timed without the stuck socket in the same test.
//!
//! Every wait is bounded: a bug fails the test instead of hanging it.
#![cfg(feature = "smol")]
#![allow(clippy::unwrap_used)]

#[path = "support/util.rs"]
mod util;

// The runtimes (the stuck client here is its own raw WebSocket).
#[macro_use]
#[path = "support/raw.rs"]
mod raw;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::Message;
use futures::{FutureExt, StreamExt};
use serde_json::{Value, json};
use socketcluster::client::{Channel, ChannelEvent, Client, ClientOptions};
use socketcluster::protocol::channels::SubscribeOptions;
use socketcluster::server::{Server, ServerEvent, ServerOptions, ServerSocket, SocketEvent};
use socketcluster::stream::Consumer;

use raw::Rt;
use util::{LIMIT, within};

/// Messages per burst.
const BURST: usize = 5_000;
/// Bytes of padding per message.
const PAYLOAD: usize = 2 * 1024;
/// The server's `outbound_limit` (frames).
const OUTBOUND_LIMIT: usize = 1_000;
/// How far the publisher may run ahead of the slowest normal subscriber.
const WINDOW: usize = 200;
/// Normal subscribers.
const NORMAL: usize = 3;

on_both_runtimes!(stuck_reader_is_shed_with_1013, without_a_limit_nobody_is_shed);

// ---------------------------------------------------------------------------------------------
// Normal subscribers and the publisher
// ---------------------------------------------------------------------------------------------

/// What one normal subscriber received on one channel.
#[derive(Default, Debug)]
struct Progress {
    count: AtomicUsize,
    last: Mutex<Option<Instant>>,
    /// Messages out of order, lost or damaged.
    errors: Mutex<Vec<String>>,
}

impl Progress {
    fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }
}

fn pad() -> String {
    "x".repeat(PAYLOAD)
}

/// Reads `ch` on the runtime: checks that message n is `{"i": n, "pad": <PAYLOAD bytes>}` and
/// counts it; `notify` hears of every message.
fn read_channel(rt: Rt, mut ch: Channel, progress: Arc<Progress>, notify: async_channel::Sender<()>) {
    rt.runtime().spawn(Box::pin(async move {
        while let Some(v) = ch.next().await {
            let n = progress.count.load(Ordering::Acquire);
            if v["i"] != json!(n) || v["pad"].as_str().map(str::len) != Some(PAYLOAD) {
                let i = &v["i"];
                progress.errors.lock().unwrap().push(format!("message {n} of {}: got i = {i}", ch.name()));
            }
            *progress.last.lock().unwrap() = Some(Instant::now());
            progress.count.store(n + 1, Ordering::Release);
            let _ = notify.try_send(());
            if n + 1 == BURST {
                break;
            }
        }
    }));
}

/// The normal subscribers: `NORMAL` clients, each subscribed to every one of `channels` (acked),
/// with a reader per channel. Returns the clients and, per channel, the progress of each client.
async fn normal_subscribers(
    rt: Rt,
    addr: SocketAddr,
    channels: &[&str],
    notify: &async_channel::Sender<()>,
) -> (Vec<Client>, Vec<Vec<Arc<Progress>>>) {
    let url = format!("ws://{addr}/socketcluster/");
    let mut clients = Vec::new();
    let mut progress: Vec<Vec<Arc<Progress>>> = channels.iter().map(|_| Vec::new()).collect();
    for _ in 0..NORMAL {
        // The server sends no pings in these tests (see `options`): the client must not expect any.
        let client = rt.client(ClientOptions { ping_timeout_disabled: true, ..ClientOptions::new(&url) });
        for (k, name) in channels.iter().enumerate() {
            let mut ack = client.channel(name).listener("subscribe");
            let ch = client.subscribe(name, SubscribeOptions::default());
            let ev = within(LIMIT, "a normal subscriber's subscribe ack", ack.next()).await;
            assert_eq!(ev, Some(ChannelEvent::Subscribe));
            let p = Arc::new(Progress::default());
            read_channel(rt, ch, p.clone(), notify.clone());
            progress[k].push(p);
        }
        clients.push(client);
    }
    (clients, progress)
}

/// Publishes the burst to `channel` through the exchange, at most [`WINDOW`] messages ahead of
/// the slowest normal subscriber, and waits until every normal subscriber has all of it. Returns
/// the time from the first publish to the last delivery.
async fn burst(
    server: &Server,
    channel: &str,
    progress: &[Arc<Progress>],
    notify: &async_channel::Receiver<()>,
) -> Duration {
    let slowest = || progress.iter().map(|p| p.count()).min().unwrap_or(0);
    let pad = pad();
    let start = Instant::now();
    for i in 0..BURST {
        while i - slowest() >= WINDOW {
            let what = format!("a normal subscriber's progress on {channel} at {i} (slowest: {})", slowest());
            within(LIMIT, &what, notify.recv()).await.unwrap();
        }
        server.exchange().invoke_publish(channel, json!({ "i": i, "pad": pad })).await.unwrap();
    }
    while slowest() < BURST {
        let what = format!("the end of the burst on {channel} (slowest: {})", slowest());
        within(LIMIT, &what, notify.recv()).await.unwrap();
    }
    let last = progress.iter().filter_map(|p| *p.last.lock().unwrap()).max().unwrap();
    for p in progress {
        assert_eq!(p.count(), BURST, "{channel}");
        let errors = p.errors.lock().unwrap();
        assert!(errors.is_empty(), "{channel}: lost, reordered or damaged messages: {errors:?}");
    }
    last - start
}

// ---------------------------------------------------------------------------------------------
// The stuck subscriber
// ---------------------------------------------------------------------------------------------

/// A raw WebSocket subscriber that stops reading after its subscription was acknowledged.
struct Stuck {
    ws: WebSocketStream<smol::net::TcpStream>,
    /// Its local TCP port (the remote port of the server's end).
    port: u16,
    id: String,
}

async fn packet(ws: &mut WebSocketStream<smol::net::TcpStream>) -> Value {
    loop {
        match within(LIMIT, "a frame from the server", ws.next()).await {
            Some(Ok(Message::Text(t))) if t.is_empty() => {} // a ping (none are sent here)
            Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).unwrap(),
            other => panic!("expected a packet, got {other:?}"),
        }
    }
}

async fn stuck_subscriber(addr: SocketAddr, channel: &str) -> Stuck {
    within(LIMIT, "the stuck subscriber's connection", async {
        let tcp = smol::net::TcpStream::connect(addr).await.unwrap();
        let port = tcp.local_addr().unwrap().port();
        let (mut ws, _) =
            async_tungstenite::client_async(format!("ws://{addr}/socketcluster/"), tcp).await.unwrap();
        let handshake = json!({"event": "#handshake", "data": {"authToken": null}, "cid": 1});
        ws.send(Message::text(handshake.to_string())).await.unwrap();
        let r = packet(&mut ws).await;
        assert_eq!(r["rid"], 1, "{r}");
        let id = r["data"]["id"].as_str().unwrap().to_string();
        let subscribe = json!({"event": "#subscribe", "data": {"channel": channel}, "cid": 2});
        ws.send(Message::text(subscribe.to_string())).await.unwrap();
        let r = packet(&mut ws).await;
        assert_eq!(r, json!({"rid": 2}), "the subscribe ack");
        Stuck { ws, port, id }
    })
    .await
}

/// Reads everything the stuck subscriber's connection still holds: the number of `channel`
/// publishes (checked to be 0, 1, 2, ... in order) and the code of a close frame, if one came.
/// Ends at the end of the connection.
async fn drain(ws: &mut WebSocketStream<smol::net::TcpStream>, channel: &str) -> (usize, Option<u16>) {
    let mut n = 0usize;
    let mut close = None;
    loop {
        match within(LIMIT, "the stuck subscriber's backlog", ws.next()).await {
            Some(Ok(Message::Text(t))) if t.is_empty() => {}
            Some(Ok(Message::Text(t))) => {
                let p: Value = serde_json::from_str(&t).unwrap();
                assert_eq!(p["event"], "#publish", "{p}");
                assert_eq!(p["data"]["channel"], channel);
                assert_eq!(p["data"]["data"]["i"], json!(n), "the stuck subscriber's messages are in order");
                n += 1;
            }
            Some(Ok(Message::Close(frame))) => close = Some(frame.map_or(1005, |f| u16::from(f.code))),
            Some(Ok(other)) => panic!("unexpected frame {other:?}"),
            Some(Err(_)) | None => return (n, close),
        }
    }
}

/// The state of the server's end of a loopback TCP connection (`/proc/net/tcp`, Linux): `Some(true)`
/// while it is ESTABLISHED, `Some(false)` once it is closing or gone, `None` where there is no
/// `/proc/net/tcp`.
fn server_end_established(server_port: u16, peer_port: u16) -> Option<bool> {
    let mut any = false;
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(file) else { continue };
        any = true;
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let port = |s: &str| s.rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
            if f.len() > 3 && port(f[1]) == Some(server_port) && port(f[2]) == Some(peer_port) && f[3] == "01"
            {
                return Some(true);
            }
        }
    }
    any.then_some(false)
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn options(outbound_limit: Option<usize>) -> ServerOptions {
    // No pings: the stuck subscriber would not answer them, and a 4001 must not get in the way.
    ServerOptions { outbound_limit, ping_timeout_disabled: true, ..ServerOptions::default() }
}

async fn sleep(rt: Rt, d: Duration) {
    rt.runtime().sleep_until(Instant::now() + d).await;
}

/// Polls `cond` every 10 ms until it holds, at most `limit`.
async fn eventually(rt: Rt, limit: Duration, what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "{rt:?}: not within {limit:?}: {what}");
        sleep(rt, Duration::from_millis(10)).await;
    }
}

async fn next<T: Clone>(c: &mut Consumer<T>, what: &str) -> T {
    within(LIMIT, what, c.next()).await.unwrap_or_else(|| panic!("{what}: the stream ended"))
}

/// Records what `c` yields, with the time it came, from a task on the runtime.
fn record<T: Clone + Send + 'static>(rt: Rt, mut c: Consumer<T>) -> Arc<Mutex<Vec<(Instant, T)>>> {
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    rt.runtime().spawn(Box::pin(async move {
        while let Some(v) = c.next().await {
            l.lock().unwrap().push((Instant::now(), v));
        }
    }));
    log
}

/// Watches the server's end of a connection (every 5 ms, for at most a minute, on a thread): the
/// time it left ESTABLISHED. `None` without `/proc/net/tcp`.
fn watch_server_end(server_port: u16, peer_port: u16) -> Option<Arc<Mutex<Option<Instant>>>> {
    server_end_established(server_port, peer_port)?;
    let closed = Arc::new(Mutex::new(None));
    let c = closed.clone();
    std::thread::spawn(move || {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            if server_end_established(server_port, peer_port) == Some(false) {
                *c.lock().unwrap() = Some(Instant::now());
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    Some(closed)
}

/// Everything `c` holds right now.
fn pending<T: Clone>(c: &mut Consumer<T>) -> Vec<T> {
    let mut out = Vec::new();
    while let Some(Some(v)) = c.next().now_or_never() {
        out.push(v);
    }
    out
}

fn warning_of(ev: &ServerEvent) -> Option<(&str, Option<&str>, &socketcluster::protocol::RemoteError)> {
    match ev {
        ServerEvent::Warning { error, socket } => {
            Some((error.name(), socket.as_ref().map(ServerSocket::id), error))
        }
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------------

/// With `outbound_limit` 1000: the normal subscribers get both bursts whole and in order, as
/// fast with the stuck subscriber as without it; the stuck one is shed with 1013, a
/// `ResourceLimitError` warning, and its socket is released, its TCP connection closed although
/// its peer never reads.
async fn stuck_reader_is_shed_with_1013(rt: Rt) {
    let (server, addr) = rt.listen(options(Some(OUTBOUND_LIMIT))).await;
    let (notify_tx, notify) = async_channel::bounded(1);
    let (clients, progress) = normal_subscribers(rt, addr, &["alone", "together"], &notify_tx).await;
    assert_eq!(server.clients_count(), NORMAL);

    // The burst without a stuck subscriber.
    let alone = burst(&server, "alone", &progress[0], &notify).await;

    // The stuck subscriber joins the second channel. Events are recorded with the time they
    // happened.
    let warnings = record(rt, server.listener("warning"));
    let disconnections = record(rt, server.listener("disconnection"));
    let mut stuck = stuck_subscriber(addr, "together").await;
    let socket = server.client(&stuck.id).expect("the stuck subscriber's server socket");
    let closes = record(rt, socket.listener("close"));
    let tcp_closed = watch_server_end(addr.port(), stuck.port);
    assert_eq!(server.clients_count(), NORMAL + 1);

    let together = burst(&server, "together", &progress[1], &notify).await;
    eprintln!(
        "{rt:?}: {BURST} messages x {PAYLOAD} B to {NORMAL} normal subscribers: alone {alone:?}, \
         with a stuck subscriber {together:?}"
    );
    assert!(
        together <= alone * 3 + Duration::from_secs(3),
        "the normal subscribers were slowed down by the stuck one: {together:?} vs {alone:?} without it"
    );

    // The warning: ResourceLimitError with code 1013, for the stuck socket.
    let is_shed = |ev: &ServerEvent| warning_of(ev).is_some_and(|(name, _, _)| name == "ResourceLimitError");
    eventually(rt, LIMIT, "the ResourceLimitError warning", || {
        warnings.lock().unwrap().iter().any(|(_, ev)| is_shed(ev))
    })
    .await;
    let (shed_at, shed) = warnings.lock().unwrap().iter().find(|(_, ev)| is_shed(ev)).cloned().unwrap();
    let (_, id, shed_warning) = warning_of(&shed).unwrap();
    assert_eq!(id, Some(stuck.id.as_str()), "the warning names the stuck socket: {shed_warning:?}");
    assert_eq!(shed_warning.get("code"), Some(&json!(1013)), "{shed_warning:?}");
    let message = shed_warning.message();
    assert!(message.contains(&stuck.id), "{message}");
    assert!(message.contains(&format!("exceeded {OUTBOUND_LIMIT} messages")), "{message}");
    eprintln!("{rt:?}: {message}");

    // Disconnected with 1013, on the server and on the socket, at once although the peer never
    // reads.
    eventually(rt, LIMIT, "the disconnection", || !disconnections.lock().unwrap().is_empty()).await;
    let (_, ev) = disconnections.lock().unwrap()[0].clone();
    let ServerEvent::Disconnection { socket: gone, code, .. } = ev else { panic!("not a disconnection") };
    assert_eq!((gone.id(), code), (stuck.id.as_str(), 1013));
    eventually(rt, LIMIT, "the stuck socket's close event", || !closes.lock().unwrap().is_empty()).await;
    let (closed_at, ev) = closes.lock().unwrap()[0].clone();
    assert!(matches!(ev, SocketEvent::Close { code: 1013, .. }), "{ev:?}");
    eprintln!(
        "{rt:?}: the close event came {:?} after the warning",
        closed_at.saturating_duration_since(shed_at)
    );

    // Released: not a client any more, closed, nothing queued for it.
    assert_eq!(server.clients_count(), NORMAL);
    assert!(server.client(&stuck.id).is_none());
    assert_eq!(socket.state(), socketcluster::server::SocketState::Closed);
    assert!(socket.subscriptions().is_empty());
    eventually(rt, LIMIT, "the stuck socket's outbound backpressure drops to 0", || {
        socket.outbound_backpressure() == 0
    })
    .await;

    // The server's end of the TCP connection is closed while the peer still does not read: the
    // writer that was blocked on it did not stay.
    if let Some(tcp_closed) = tcp_closed {
        eventually(rt, LIMIT, "the server closes its end of the stuck connection", || {
            tcp_closed.lock().unwrap().is_some()
        })
        .await;
        let after = tcp_closed.lock().unwrap().unwrap().saturating_duration_since(shed_at);
        eprintln!("{rt:?}: the server's end of the TCP connection closed {after:?} after the warning");
        assert!(after < LIMIT, "{after:?}");
    }

    // Now the stuck subscriber reads: what the kernel held, in order, then the end of the
    // connection. The rest of its backlog was dropped.
    let (got, close) = drain(&mut stuck.ws, "together").await;
    eprintln!(
        "{rt:?}: the stuck subscriber had {got} of {BURST} messages in its kernel buffers, close frame {close:?}"
    );
    assert!(got < BURST - OUTBOUND_LIMIT, "{got} messages reached the stuck subscriber");
    if let Some(code) = close {
        assert_eq!(code, 1013);
    }

    // Nobody else was disconnected or shed.
    let others: Vec<_> = disconnections.lock().unwrap().iter().skip(1).map(|(_, ev)| ev.clone()).collect();
    assert!(others.is_empty(), "other disconnections: {others:?}");
    for (_, ev) in warnings.lock().unwrap().iter() {
        if let Some((_, id, error)) = warning_of(ev) {
            // Besides the ResourceLimitError, the 1013 close itself is reported as
            // SocketProtocolError, as every close but 1000/1001.
            assert_eq!(id, Some(stuck.id.as_str()), "a warning for another socket: {error:?}");
        }
    }
    // The normal sockets' queues are empty.
    for c in server.clients() {
        eventually(rt, LIMIT, "a normal socket's outbound queue empties", || c.outbound_backpressure() == 0)
            .await;
    }
    // The normal clients are still connected and working.
    for c in &clients {
        assert_eq!(c.state(), socketcluster::client::ClientState::Open);
        within(LIMIT, "a normal client's publish", c.invoke_publish("check", 1)).await.unwrap();
    }
    drop(clients);
    server.close(1001, "", Duration::from_secs(5)).await;
}

/// Without a limit the same stuck subscriber is kept (and its backlog grows); the normal
/// subscribers still get everything. When it finally goes away, the server notices.
async fn without_a_limit_nobody_is_shed(rt: Rt) {
    let (server, addr) = rt.listen(options(None)).await;
    let (notify_tx, notify) = async_channel::bounded(1);
    let (clients, progress) = normal_subscribers(rt, addr, &["burst"], &notify_tx).await;
    let mut warnings = server.listener("warning");
    let mut disconnections = server.listener("disconnection");
    let stuck = stuck_subscriber(addr, "burst").await;
    let socket = server.client(&stuck.id).expect("the stuck subscriber's server socket");

    let took = burst(&server, "burst", &progress[0], &notify).await;
    eprintln!(
        "{rt:?}: no limit: {BURST} messages to {NORMAL} normal subscribers and a stuck one in {took:?}"
    );

    // Give a shed (which must not happen) time to show.
    sleep(rt, Duration::from_millis(300)).await;
    assert_eq!(socket.state(), socketcluster::server::SocketState::Open);
    assert_eq!(server.clients_count(), NORMAL + 1);
    let backlog = socket.outbound_backpressure();
    eprintln!("{rt:?}: no limit: the stuck socket's outbound backlog is {backlog} frames");
    assert!(backlog > 0, "the stuck subscriber's connection did not fill up");
    assert!(pending(&mut disconnections).is_empty());
    for ev in pending(&mut warnings) {
        if let Some((name, _, error)) = warning_of(&ev) {
            panic!("unexpected warning {name}: {error:?}");
        }
    }
    if let Some(established) = server_end_established(addr.port(), stuck.port) {
        assert!(established, "the server closed the stuck connection");
    }

    // The stuck peer goes away: the server notices (1006) and releases the socket.
    drop(stuck);
    let ServerEvent::Disconnection { socket: gone, code, .. } =
        next(&mut disconnections, "the disconnection of the stuck subscriber").await
    else {
        panic!("not a disconnection")
    };
    assert_eq!(gone.id(), socket.id());
    assert_eq!(code, 1006);
    assert_eq!(server.clients_count(), NORMAL);
    drop(clients);
    server.close(1001, "", Duration::from_secs(5)).await;
}
