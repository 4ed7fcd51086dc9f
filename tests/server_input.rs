//! Our server against bad input and misbehaving clients.
//!
//! Each scenario starts the server in-process (`socketcluster::smol::listen`, and
//! `socketcluster::tokio::listen` with the `tokio` feature) with a few handlers of its own — an
//! `echo` procedure, a `hold` procedure that never answers, and recorders for the `echo` receiver
//! and the socket listeners — and drives it with a raw WebSocket client that sends exactly the
//! bytes the scenario wants (SocketCluster protocol reference §1.3, §1.5, §1.11, §5.4; interop
//! contract §1: malformed frames are ignored and the connection stays open, a string `cid` makes
//! a transmit, anything before the handshake closes with 4009).
//!
//! "No response" is shown by order wherever possible: the server handles one socket's packets in
//! order and sends its frames in order, so when the answer to a later `echo` invoke is the next
//! frame, nothing was sent for the packets before it. A short sleep is used only to show that a
//! late answer does not come either. Every wait is bounded: a bug fails the test, it does not
//! hang it.
#![cfg(feature = "smol")]
#![allow(clippy::unwrap_used)]

#[path = "support/util.rs"]
mod util;

// The runtimes, the raw client and its helpers; this file keeps its own harness (a log of what
// each socket's listeners saw).
#[macro_use]
#[path = "support/raw.rs"]
mod raw;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::Message;
use futures::stream::select_all;
use futures::{AsyncWriteExt, SinkExt, StreamExt};
use serde_json::{Value, json};

use socketcluster::protocol::RemoteError;
use socketcluster::request::Request;
use socketcluster::runtime::Runtime;
use socketcluster::server::{Server, ServerEvent, ServerOptions, ServerSocket, SocketEvent};

use raw::{Raw, Rt, forward, next_of};

use util::{LIMIT, within};

on_both_runtimes!(
    malformed_json_is_ignored,
    non_object_packets_are_raw,
    wrong_field_types,
    unknown_rid_is_ignored,
    string_cid_is_a_transmit,
    oversized_frame_closes_only_that_socket,
    invoke_flood,
    unconsumed_procedure_gets_no_response,
    message_before_handshake_closes_4009,
    handshake_without_cid_closes_4008,
    handshake_timeout_closes_4005,
    second_handshake_is_rejected,
    binary_frames,
    abrupt_disconnect_mid_invoke,
    abrupt_disconnect_mid_frame,
    pong_timeout_closes_4001,
);

// ---------------------------------------------------------------------------------------------
// The server under test
// ---------------------------------------------------------------------------------------------

/// What one connected socket did, recorded from its listeners and the `echo` receiver, each
/// kind in order.
#[derive(Clone)]
struct SocketLog {
    socket: ServerSocket,
    raw: async_channel::Receiver<Value>,
    errors: async_channel::Receiver<RemoteError>,
    echo_transmits: async_channel::Receiver<Option<Value>>,
    disconnects: async_channel::Receiver<(u16, String)>,
    unsubscribes: async_channel::Receiver<String>,
}

impl SocketLog {
    /// Sets up the socket's handlers. Runs in the `connection` loop body before any await, so the
    /// consumers see everything the client sends after the handshake.
    fn attach(rt: &Arc<dyn Runtime>, socket: &ServerSocket, held: async_channel::Sender<Request>) -> Self {
        let raw = socket.listener("raw").filter_map(|e| async move {
            match e {
                SocketEvent::Raw(v) => Some(v),
                _ => None,
            }
        });
        let errors = socket.listener("error").filter_map(|e| async move {
            match e {
                SocketEvent::Error(e) => Some(e),
                _ => None,
            }
        });
        let disconnects = socket.listener("disconnect").filter_map(|e| async move {
            match e {
                SocketEvent::Disconnect { code, reason } => Some((code, reason)),
                _ => None,
            }
        });
        let unsubscribes = socket.listener("unsubscribe").filter_map(|e| async move {
            match e {
                SocketEvent::Unsubscribe { channel } => Some(channel),
                _ => None,
            }
        });
        let log = SocketLog {
            socket: socket.clone(),
            raw: forward(rt, Box::pin(raw)),
            errors: forward(rt, Box::pin(errors)),
            echo_transmits: forward(rt, socket.receiver("echo").into_raw()),
            disconnects: forward(rt, Box::pin(disconnects)),
            unsubscribes: forward(rt, Box::pin(unsubscribes)),
        };
        // `echo` answers with the request's data (none stays none); `hold` never answers: the
        // request goes to the test.
        let mut requests = select_all([socket.procedure("echo"), socket.procedure("hold")]);
        rt.spawn(Box::pin(async move {
            while let Some(req) = requests.next().await {
                match req.procedure() {
                    "echo" => {
                        let _ = req.end_value(req.raw_data().cloned());
                    }
                    _ => {
                        let _ = held.try_send(req);
                    }
                }
            }
        }));
        log
    }
}

/// A server with the test handlers, and what its listeners saw.
struct Harness {
    server: Server,
    addr: SocketAddr,
    /// Server events (`connection`, `connectionAbort`, `disconnection`, `unsubscription`,
    /// `warning`) in the order the harness read them.
    history: Arc<Mutex<Vec<ServerEvent>>>,
    notify: async_channel::Receiver<()>,
    connections: Arc<AtomicUsize>,
    new_sockets: async_channel::Receiver<SocketLog>,
    sockets: HashMap<String, SocketLog>,
    /// Requests of the `hold` procedure, unanswered.
    held: async_channel::Receiver<Request>,
}

impl Harness {
    async fn start(rt: Rt, options: ServerOptions) -> Self {
        let (server, addr) = rt.listen(options).await;
        let runtime = rt.runtime();
        let history = Arc::new(Mutex::new(Vec::new()));
        let (notify_tx, notify) = async_channel::unbounded();
        let (sockets_tx, new_sockets) = async_channel::unbounded();
        let (held_tx, held) = async_channel::unbounded();
        let connections = Arc::new(AtomicUsize::new(0));
        // One consumer per event, read in one loop that never awaits anything else: the server
        // holds a new socket's packets until the `connection` consumers have handled the event.
        let mut events = select_all(
            ["connection", "connectionAbort", "disconnection", "unsubscription", "warning"]
                .map(|name| server.listener(name)),
        );
        let (h, n, rt2) = (history.clone(), connections.clone(), runtime.clone());
        runtime.spawn(Box::pin(async move {
            while let Some(ev) = events.next().await {
                if let ServerEvent::Connection { socket, .. } = &ev {
                    n.fetch_add(1, Ordering::SeqCst);
                    let _ = sockets_tx.try_send(SocketLog::attach(&rt2, socket, held_tx.clone()));
                }
                h.lock().unwrap().push(ev);
                let _ = notify_tx.try_send(());
            }
        }));
        Harness { server, addr, history, notify, connections, new_sockets, sockets: HashMap::new(), held }
    }

    async fn default(rt: Rt) -> Self {
        Self::start(rt, ServerOptions::default()).await
    }

    /// The log of the socket with id `id` (its `connection` event may come a moment after the
    /// client read its handshake response).
    async fn socket(&mut self, id: &str) -> SocketLog {
        while !self.sockets.contains_key(id) {
            let log = next_of(&self.new_sockets, "the socket's connection event").await;
            self.sockets.insert(String::from(log.socket.id()), log);
        }
        self.sockets[id].clone()
    }

    /// Waits until `f` finds what it looks for in the server events seen so far.
    async fn wait_until<T>(&self, what: &str, mut f: impl FnMut(&[ServerEvent]) -> Option<T>) -> T {
        within(LIMIT, what, async {
            loop {
                if let Some(t) = f(&self.history.lock().unwrap()) {
                    return t;
                }
                self.notify.recv().await.unwrap();
            }
        })
        .await
    }

    /// The first server event `f` accepts, waiting for it if needed.
    async fn wait_for<T>(&self, what: &str, mut f: impl FnMut(&ServerEvent) -> Option<T>) -> T {
        self.wait_until(what, |events| events.iter().find_map(&mut f)).await
    }

    async fn disconnection(&self, id: &str) -> (u16, String) {
        self.wait_for("the disconnection event", |e| match e {
            ServerEvent::Disconnection { socket, code, reason, .. } if socket.id() == id => {
                Some((*code, reason.clone()))
            }
            _ => None,
        })
        .await
    }

    /// The code of the `nth` `connectionAbort` (a socket that closed before its handshake).
    async fn connection_abort(&self, nth: usize) -> u16 {
        self.wait_until("the connectionAbort event", |events| {
            events
                .iter()
                .filter_map(|e| match e {
                    ServerEvent::ConnectionAbort { code, .. } => Some(*code),
                    _ => None,
                })
                .nth(nth)
        })
        .await
    }

    fn connection_count(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        // Ends the harness's listener loop; the sockets end when their clients are dropped.
        self.server.listeners().kill_all();
    }
}

fn invalid_action(rid: u64, message: &str) -> Value {
    json!({"rid": rid, "error": {"message": message, "name": "InvalidActionError"}})
}

// ---------------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------------

/// Malformed JSON: no response, the socket's `raw` listener gets the text, the connection stays
/// open.
async fn malformed_json_is_ignored(rt: Rt) {
    let mut h = Harness::default(rt).await;
    let (mut c, id) = Raw::open(h.addr).await;
    let deep = "[".repeat(1 << 20);
    let garbage: Vec<String> = vec![
        String::from("{not json"),
        String::from("[1,2"),
        String::from(r#"{"event":"echo","data":"\u12"#),
        String::from(r#"{"event":"echo","data":"\u12","cid":2}"#),
        String::from(r#"{"event":"echo","data":"\uZZZZ","cid":3}"#),
        // A lone surrogate: valid for JSON.parse, not representable in a Rust string.
        String::from(r#"{"event":"echo","data":"\ud83d","cid":4}"#),
        String::from(r#"{"event":"echo","data":1,"cid":5}}"#),
        String::from("{}{}"),
        String::from("  \n{\"event\":"),
        deep.clone(),
    ];
    for g in &garbage {
        c.text(g.as_str()).await;
    }
    // The next frame answers this: nothing was sent for the garbage.
    c.echo(10, json!("after")).await;
    let log = h.socket(&id).await;
    for g in &garbage {
        let got = next_of(&log.raw, "the raw event").await;
        if g.len() > 100 {
            assert_eq!(got.as_str().map(str::len), Some(g.len()), "the 1 MiB frame is raw");
        } else {
            assert_eq!(got, Value::String(g.clone()));
        }
    }
    assert!(log.echo_transmits.is_empty(), "no packet became a transmit");
    c.echo(11, json!({"still": "open"})).await;
    assert_eq!(h.server.clients_count(), 1);
}

/// JSON that is not a packet object: `raw` events, no response, connection open.
async fn non_object_packets_are_raw(rt: Rt) {
    let mut h = Harness::default(rt).await;
    let (mut c, id) = Raw::open(h.addr).await;
    for frame in ["42", r#""str""#, "null", "true", "[]", r#"[1,"a",null]"#, "{}", r#"[[],{"x":1}]"#] {
        c.text(frame).await;
    }
    // A batch mixing a packet and junk: the packet is handled, the junk is raw.
    c.text(r#"[false,{"event":"echo","data":"in batch","cid":2},"tail"]"#).await;
    assert_eq!(c.packet().await, json!({"rid": 2, "data": "in batch"}));
    c.echo(3, json!(3)).await;
    let log = h.socket(&id).await;
    // Text that does not start with `{` or `[` is raw as it is; a batch's elements are raw one
    // by one (an empty batch is nothing).
    let expected = [
        json!("42"),
        json!(r#""str""#),
        json!("null"),
        json!("true"),
        json!(1),
        json!("a"),
        json!(null),
        json!({}),
        json!([]),
        json!({"x": 1}),
        json!(false),
        json!("tail"),
    ];
    for e in expected {
        assert_eq!(next_of(&log.raw, "the raw event").await, e);
    }
    c.text("marker").await;
    c.echo(4, json!(4)).await;
    assert_eq!(next_of(&log.raw, "the marker").await, json!("marker"), "no other raw event");
    assert!(log.echo_transmits.is_empty());
}

/// Fields of the wrong type: the reference's answers where it defines one, nothing otherwise.
async fn wrong_field_types(rt: Rt) {
    let mut h = Harness::default(rt).await;
    let (mut c, id) = Raw::open(h.addr).await;
    let frames = [
        r#"{"event":5}"#,
        r#"{"event":"echo","cid":-1}"#,
        r#"{"event":"echo","data":"f","cid":1.5}"#,
        r#"{"rid":"x"}"#,
        r#"{"rid":-3,"data":1}"#,
        r##"{"event":"#subscribe","data":5,"cid":3}"##,
        r##"{"event":"#publish","data":{"channel":7},"cid":4}"##,
        r##"{"event":"#unsubscribe","data":{},"cid":5}"##,
        r##"{"event":"#subscribe","data":{"channel":["x"]},"cid":6}"##,
        r##"{"event":"#subscribe","cid":7}"##,
        r##"{"event":"#publish","data":"news","cid":8}"##,
        r##"{"event":"#subscribe","data":5}"##,
        r##"{"event":"#publish","data":{"channel":null}}"##,
    ];
    for f in frames {
        c.text(f).await;
    }
    assert_eq!(c.packet().await, invalid_action(3, "Subscribe channel name was malformatted"));
    assert_eq!(c.packet().await, invalid_action(4, "Publish channel name was malformatted"));
    assert_eq!(c.packet().await, invalid_action(5, "Unsubscribe channel name was malformatted"));
    assert_eq!(c.packet().await, invalid_action(6, "Subscribe channel name was malformatted"));
    assert_eq!(c.packet().await, invalid_action(7, "Subscribe channel name was malformatted"));
    assert_eq!(c.packet().await, invalid_action(8, "Publish channel name was malformatted"));
    // Nothing for the cid-less ones, nothing for the rest.
    c.echo(9, json!("open")).await;

    let log = h.socket(&id).await;
    assert_eq!(next_of(&log.raw, "raw").await, json!({"event": 5}));
    assert_eq!(next_of(&log.raw, "raw").await, json!({"rid": "x"}));
    assert_eq!(next_of(&log.raw, "raw").await, json!({"rid": -3, "data": 1}));
    // A cid that is not a non-negative integer does not make an invoke: these are transmits
    // (SocketCluster would answer them with `rid` -1 and 1.5).
    assert_eq!(next_of(&log.echo_transmits, "transmit").await, None);
    assert_eq!(next_of(&log.echo_transmits, "transmit").await, Some(json!("f")));
    // Every malformed reserved event is reported on the socket's `error` listener.
    let messages = [
        "Subscribe channel name was malformatted",
        "Publish channel name was malformatted",
        "Unsubscribe channel name was malformatted",
        "Subscribe channel name was malformatted",
        "Subscribe channel name was malformatted",
        "Publish channel name was malformatted",
        "Subscribe channel name was malformatted",
        "Publish channel name was malformatted",
    ];
    for m in messages {
        let e = next_of(&log.errors, "the error event").await;
        assert_eq!((e.name(), e.message()), ("InvalidActionError", m));
    }
    assert!(log.socket.subscriptions().is_empty());
    assert!(h.server.broker().channels().is_empty(), "nothing was subscribed");
    c.text("marker").await;
    c.echo(10, json!(10)).await;
    assert_eq!(next_of(&log.raw, "the marker").await, json!("marker"));
    assert!(log.errors.is_empty() && log.echo_transmits.is_empty());
}

/// A response with a rid the server never used is dropped silently (not even `raw`).
async fn unknown_rid_is_ignored(rt: Rt) {
    let mut h = Harness::default(rt).await;
    let (mut c, id) = Raw::open(h.addr).await;
    c.text(r#"{"rid":99999,"data":1}"#).await;
    c.text(r#"{"rid":0}"#).await;
    c.text(r#"{"rid":1,"error":{"message":"x","name":"Late"}}"#).await;
    c.text(r#"[{"rid":18446744073709551615},{"rid":2,"data":null}]"#).await;
    c.text("marker").await;
    c.echo(2, json!("fine")).await;
    let log = h.socket(&id).await;
    assert_eq!(next_of(&log.raw, "the marker").await, json!("marker"), "responses are not raw");
    assert!(log.errors.is_empty());
    c.echo(3, json!(3)).await;
}

/// A string cid makes a transmit: the `echo` receiver gets it, nobody answers.
async fn string_cid_is_a_transmit(rt: Rt) {
    let mut h = Harness::default(rt).await;
    let (mut c, id) = Raw::open(h.addr).await;
    c.text(r#"{"event":"echo","data":1,"cid":"7"}"#).await;
    c.text(r#"{"event":"echo","data":{"a":[2]},"cid":"x"}"#).await;
    // The next frame answers this invoke: there was no response to the string-cid packets.
    c.echo(8, json!(8)).await;
    let log = h.socket(&id).await;
    assert_eq!(next_of(&log.echo_transmits, "the transmit").await, Some(json!(1)));
    assert_eq!(next_of(&log.echo_transmits, "the transmit").await, Some(json!({"a": [2]})));
    c.silence(Duration::from_millis(200)).await;
    assert!(log.echo_transmits.is_empty());
}

/// `max_payload` 1024: a 2 KiB frame closes that socket with 1009; another socket carries on.
async fn oversized_frame_closes_only_that_socket(rt: Rt) {
    let options = ServerOptions { max_payload: Some(1024), ..ServerOptions::default() };
    let h = Harness::start(rt, options).await;
    let (mut big, big_id) = Raw::open(h.addr).await;
    let (mut other, _) = Raw::open(h.addr).await;
    // Just under the limit is fine.
    big.echo(2, json!("y".repeat(900))).await;
    let frame = json!({"event": "echo", "data": "x".repeat(2048), "cid": 3}).to_string();
    big.text(frame).await;
    assert_eq!(big.expect_close().await, 1009);
    assert_eq!(h.disconnection(&big_id).await.0, 1009);
    other.echo(2, json!("still here")).await;
    other.echo(3, json!("z".repeat(900))).await;
    assert_eq!(h.server.clients_count(), 1);
    // A binary frame over the limit closes just the same.
    let (mut bin, bin_id) = Raw::open(h.addr).await;
    bin.binary(vec![b' '; 4096]).await;
    assert_eq!(bin.expect_close().await, 1009);
    assert_eq!(h.disconnection(&bin_id).await.0, 1009);
    other.echo(4, json!(4)).await;
}

/// 40 000 invokes from one socket that does not read its responses for a while: the server
/// keeps serving another socket promptly, holds no more than what the flooder sent, and then
/// delivers every response exactly once. (Before the driver yielded after a burst of frames, this
/// flood kept smol's executor thread busy and the other socket waited more than 2 s.)
async fn invoke_flood(rt: Rt) {
    const BATCHES: u64 = 5;
    const PER_BATCH: u64 = 2_000;
    const SINGLES: u64 = 30_000;
    const TOTAL: u64 = BATCHES * PER_BATCH + SINGLES;
    const FIRST: u64 = 2;
    let probe_bound = Duration::from_secs(2);

    let mut h = Harness::default(rt).await;
    let (mut flood, flood_id) = Raw::open(h.addr).await;
    let (mut probe, _) = Raw::open(h.addr).await;
    let flood_socket = h.socket(&flood_id).await.socket.clone();
    // 40 000 answers of 170 bytes: about what the TCP buffers hold, so the server has to queue.
    let pad = "p".repeat(128);
    let data = |cid: u64| json!({"n": cid, "pad": pad});
    let invoke = |cid: u64| json!({"event": "echo", "data": data(cid), "cid": cid}).to_string();

    let sent = AtomicUsize::new(0);
    let flooding = async {
        let mut cid = FIRST;
        for _ in 0..BATCHES {
            let batch: Vec<String> = (cid..cid + PER_BATCH).map(invoke).collect();
            cid += PER_BATCH;
            within(LIMIT, "sending a batch", flood.ws.send(Message::text(format!("[{}]", batch.join(",")))))
                .await
                .unwrap();
            sent.store((cid - FIRST) as usize, Ordering::SeqCst);
            smol::future::yield_now().await;
        }
        for chunk in 0..SINGLES / 500 {
            for _ in 0..500 {
                within(LIMIT, "feeding a frame", flood.ws.feed(Message::text(invoke(cid)))).await.unwrap();
                cid += 1;
            }
            within(LIMIT, "flushing", flood.ws.flush()).await.unwrap();
            sent.store((cid - FIRST) as usize, Ordering::SeqCst);
            if chunk % 4 == 0 {
                smol::future::yield_now().await;
            }
        }
        assert_eq!(cid, FIRST + TOTAL);
    };
    let (mut probes, mut slowest) = (0u64, Duration::ZERO);
    let mut max_backlog = 0usize;
    let probing = async {
        let mut cid = 100;
        // Probe while the flood is sent and while the server still works through it.
        while sent.load(Ordering::SeqCst) < TOTAL as usize || probes < 20 {
            let t = Instant::now();
            within(probe_bound, "a probe round trip during the flood", probe.echo(cid, json!(cid))).await;
            slowest = slowest.max(t.elapsed());
            probes += 1;
            cid += 1;
            // What the server holds for the flooder is bounded by what it sent.
            let backlog = flood_socket.backpressure();
            max_backlog = max_backlog.max(backlog);
            assert!(
                backlog <= sent.load(Ordering::SeqCst) + 2,
                "backlog {backlog} exceeds the {} invokes sent",
                sent.load(Ordering::SeqCst)
            );
        }
    };
    futures::join!(flooding, probing);
    eprintln!("flood on {rt:?}: {probes} probes, slowest {slowest:?}, largest backlog {max_backlog}");
    assert!(flood_socket.backpressure() <= TOTAL as usize + 2);

    // Now the flooder reads: every rid exactly once.
    let mut seen = vec![false; TOTAL as usize];
    within(Duration::from_secs(60), "reading the flood's responses", async {
        for _ in 0..TOTAL {
            let p = flood.packet().await;
            let rid = p["rid"].as_u64().unwrap_or_else(|| panic!("not a response: {p}"));
            assert_eq!(p["data"], data(rid), "{p}");
            let slot = &mut seen[(rid - FIRST) as usize];
            assert!(!*slot, "rid {rid} answered twice");
            *slot = true;
        }
    })
    .await;
    assert!(seen.iter().all(|s| *s));
    // Nothing after them but the answer to this.
    flood.echo(1_000_000, json!("done")).await;
    assert!(flood_socket.outbound_backpressure() <= 1, "only a ping may be queued");
    assert_eq!(flood_socket.inbound_backpressure(), 0);
    assert_eq!(flood_socket.procedure_backpressure(), 0);
    probe.echo(99, json!(99)).await;
    assert_eq!(h.server.clients_count(), 2);
}

/// An invoke of a procedure without a consumer gets no response (the caller times out); the
/// connection is fine.
async fn unconsumed_procedure_gets_no_response(rt: Rt) {
    let mut h = Harness::default(rt).await;
    let (mut c, id) = Raw::open(h.addr).await;
    c.text(r#"{"event":"nobody","data":1,"cid":2}"#).await;
    c.text(r#"{"event":"nobody","data":2}"#).await;
    c.text(r##"{"event":"#nobody","cid":3}"##).await;
    c.echo(4, json!("answered")).await;
    c.silence(Duration::from_millis(300)).await;
    c.echo(5, json!("still answered")).await;
    let log = h.socket(&id).await;
    assert!(log.errors.is_empty() && log.raw.is_empty());
}

/// Anything before the handshake — a pong, junk, a packet, an empty binary frame — closes 4009.
async fn message_before_handshake_closes_4009(rt: Rt) {
    let h = Harness::default(rt).await;
    let frames = [
        Message::text(""),
        Message::text("{not json"),
        Message::text(r#"{"event":"echo","data":1,"cid":1}"#),
        Message::text(r#"{"rid":1}"#),
        Message::binary(Vec::new()),
    ];
    for (n, frame) in frames.into_iter().enumerate() {
        let mut c = Raw::connect(h.addr).await;
        c.send(frame.clone()).await;
        assert_eq!(c.expect_close().await, 4009, "after {frame:?}");
        assert_eq!(h.connection_abort(n).await, 4009, "after {frame:?}");
    }
    assert_eq!(h.connection_count(), 0);
    assert_eq!(h.server.pending_clients_count(), 0);
    // The server still accepts well-behaved clients.
    let (mut ok, _) = Raw::open(h.addr).await;
    ok.echo(2, json!(2)).await;
}

/// `#handshake` without a numeric cid: InvalidActionError, close 4008.
async fn handshake_without_cid_closes_4008(rt: Rt) {
    let h = Harness::default(rt).await;
    for (n, frame) in
        [r##"{"event":"#handshake"}"##, r##"{"event":"#handshake","data":{"authToken":null},"cid":"1"}"##]
            .into_iter()
            .enumerate()
    {
        let mut c = Raw::connect(h.addr).await;
        c.text(frame).await;
        assert_eq!(c.expect_close().await, 4008, "after {frame}");
        assert_eq!(h.connection_abort(n).await, 4008, "after {frame}");
    }
    let name = h
        .wait_for("the warning", |e| match e {
            ServerEvent::Warning { error, .. } if error.message() == "Handshake request was malformatted" => {
                Some(String::from(error.name()))
            }
            _ => None,
        })
        .await;
    assert_eq!(name, "InvalidActionError");
    assert_eq!(h.connection_count(), 0);
    assert_eq!(h.server.pending_clients_count(), 0);
}

/// No handshake within `handshake_timeout`: close 4005.
async fn handshake_timeout_closes_4005(rt: Rt) {
    let options = ServerOptions { handshake_timeout: Duration::from_millis(200), ..ServerOptions::default() };
    let h = Harness::start(rt, options).await;
    let t = Instant::now();
    let mut c = Raw::connect(h.addr).await;
    assert_eq!(c.expect_close().await, 4005);
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(150), "closed after {took:?}");
    assert_eq!(h.connection_abort(0).await, 4005);
    assert_eq!(h.server.pending_clients_count(), 0);
    // A client that does handshake in time stays.
    let (mut ok, _) = Raw::open(h.addr).await;
    ok.silence(Duration::from_millis(400)).await;
    ok.echo(2, json!(2)).await;
}

/// A second `#handshake` on an open socket: an error response, no second `connection`.
async fn second_handshake_is_rejected(rt: Rt) {
    let h = Harness::default(rt).await;
    let (mut c, _) = Raw::open(h.addr).await;
    c.text(r##"{"event":"#handshake","data":{"authToken":null},"cid":2}"##).await;
    let r = c.packet().await;
    assert_eq!(r["rid"], 2, "{r}");
    assert_eq!(r["error"]["name"], "InvalidActionError", "{r}");
    assert!(r.get("data").is_none(), "{r}");
    // Handled in order after the second handshake.
    c.echo(3, json!(3)).await;
    assert_eq!(h.connection_count(), 1);
    assert_eq!(h.server.clients_count(), 1);
    assert_eq!(h.server.pending_clients_count(), 0);
}

/// Binary frames holding JSON are packets like text; invalid UTF-8 does not hurt.
async fn binary_frames(rt: Rt) {
    let mut h = Harness::default(rt).await;
    let (mut c, id) = Raw::open(h.addr).await;
    c.binary(br#"{"event":"echo","data":"bin","cid":2}"#.to_vec()).await;
    assert_eq!(c.packet().await, json!({"rid": 2, "data": "bin"}));
    c.binary(br#"[{"event":"echo","data":1,"cid":3},{"event":"echo","data":2,"cid":4}]"#.to_vec()).await;
    assert_eq!(c.packet().await, json!({"rid": 3, "data": 1}));
    assert_eq!(c.packet().await, json!({"rid": 4, "data": 2}));
    c.binary(br#"{"event":"echo","data":"bt"}"#.to_vec()).await;
    // Invalid UTF-8 is read with replacement characters, as Node's Buffer#toString does.
    c.binary(vec![0xff, 0xfe, 0xfd]).await;
    c.binary(b"{\"event\":\"echo\",\"data\":\"\xff\",\"cid\":5}".to_vec()).await;
    assert_eq!(c.packet().await, json!({"rid": 5, "data": "\u{fffd}"}));
    c.binary(b"{\"event\":\"echo\",\"data\":\"\xc3".to_vec()).await;
    c.binary(vec![0x80; 1000]).await;
    c.binary(Vec::new()).await;
    c.echo(6, json!("text again")).await;
    let log = h.socket(&id).await;
    assert_eq!(next_of(&log.echo_transmits, "the binary transmit").await, Some(json!("bt")));
    assert_eq!(next_of(&log.raw, "raw").await, json!("\u{fffd}\u{fffd}\u{fffd}"));
    assert_eq!(next_of(&log.raw, "raw").await, json!("{\"event\":\"echo\",\"data\":\"\u{fffd}"));
    assert_eq!(next_of(&log.raw, "raw").await, json!("\u{fffd}".repeat(1000)));
    c.text("marker").await;
    c.echo(7, json!(7)).await;
    assert_eq!(next_of(&log.raw, "the marker").await, json!("marker"));
}

/// A client that vanishes (no close frame) while an invoke of it is being handled.
async fn abrupt_disconnect_mid_invoke(rt: Rt) {
    abrupt_disconnect(rt, false).await;
}

/// A client that vanishes in the middle of sending a frame.
async fn abrupt_disconnect_mid_frame(rt: Rt) {
    abrupt_disconnect(rt, true).await;
}

async fn abrupt_disconnect(rt: Rt, mid_frame: bool) {
    let mut h = Harness::default(rt).await;
    let (mut c, id) = Raw::open(h.addr).await;
    c.text(r##"{"event":"#subscribe","data":{"channel":"a"},"cid":2}"##).await;
    assert_eq!(c.packet().await, json!({"rid": 2}));
    c.text(r##"{"event":"#subscribe","data":{"channel":"b"},"cid":3}"##).await;
    assert_eq!(c.packet().await, json!({"rid": 3}));
    c.text(r#"{"event":"hold","data":"pending","cid":4}"#).await;
    let held = next_of(&h.held, "the held request").await;
    assert_eq!(held.data(), &json!("pending"));
    assert_eq!(h.server.clients_count(), 1);
    let mut channels = h.server.broker().channels();
    channels.sort();
    assert_eq!(channels, [(String::from("a"), 1), (String::from("b"), 1)]);

    if mid_frame {
        // A masked text frame announcing 4096 bytes, of which two arrive.
        let partial = [0x81, 0xFE, 0x10, 0x00, 1, 2, 3, 4, b'x', b'y'];
        let tcp = c.ws.get_mut();
        within(LIMIT, "writing half a frame", tcp.write_all(&partial)).await.unwrap();
        within(LIMIT, "flushing half a frame", tcp.flush()).await.unwrap();
    }
    drop(c);

    assert_eq!(h.disconnection(&id).await.0, 1006);
    assert_eq!(h.server.clients_count(), 0);
    for ch in ["a", "b"] {
        h.wait_for("the unsubscription event", |e| match e {
            ServerEvent::Unsubscription { socket, channel, .. } if socket.id() == id && channel == ch => {
                Some(())
            }
            _ => None,
        })
        .await;
    }
    assert!(h.server.broker().channels().iter().all(|(_, n)| *n == 0), "{:?}", h.server.broker().channels());
    let log = h.socket(&id).await;
    assert_eq!(next_of(&log.disconnects, "the disconnect event").await.0, 1006);
    let mut gone = vec![
        next_of(&log.unsubscribes, "unsubscribe").await,
        next_of(&log.unsubscribes, "unsubscribe").await,
    ];
    gone.sort();
    assert_eq!(gone, ["a", "b"]);
    // Answering the request of a client that is gone fails; it does not panic.
    assert!(held.end("late").is_err());
    // The server serves the next client.
    let (mut next, _) = Raw::open(h.addr).await;
    next.echo(2, json!(2)).await;
    assert_eq!(h.server.clients_count(), 1);
}

/// A client that never answers pings is closed with 4001; one that answers stays.
async fn pong_timeout_closes_4001(rt: Rt) {
    let options = ServerOptions {
        ping_interval: Duration::from_millis(50),
        ping_timeout: Duration::from_millis(200),
        ..ServerOptions::default()
    };
    let h = Harness::start(rt, options).await;
    // The control answers pings; its server's timeout is longer so that a busy test machine
    // cannot make it miss one, and it stays for more than twice that.
    let control_options = ServerOptions {
        ping_interval: Duration::from_millis(50),
        ping_timeout: Duration::from_millis(1000),
        ..ServerOptions::default()
    };
    let control = Harness::start(rt, control_options).await;
    let t = Instant::now();
    let mut mute = Raw::connect(h.addr).await;
    mute.answer_pings = false;
    let mute_id = mute.handshake(Value::Null).await["data"]["id"].as_str().unwrap().to_string();
    let (mut good, _) = Raw::open(control.addr).await;
    let mute_closed = async {
        let code = mute.expect_close().await;
        (code, t.elapsed(), mute.pings)
    };
    let good_stays = async {
        good.silence(Duration::from_millis(2500)).await;
        good.echo(2, json!("alive")).await;
        good.pings
    };
    let ((code, took, pings), good_pings) = futures::join!(mute_closed, good_stays);
    assert_eq!(code, 4001);
    assert!(pings >= 1, "the server pinged before giving up");
    assert!(took >= Duration::from_millis(150) && took < Duration::from_secs(5), "closed after {took:?}");
    assert!(good_pings >= 10, "the answering client was pinged {good_pings} times");
    assert_eq!(h.disconnection(&mute_id).await.0, 4001);
    assert_eq!(h.server.clients_count(), 0);
    assert_eq!(control.server.clients_count(), 1);
}
