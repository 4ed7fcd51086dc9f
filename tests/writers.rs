//! The server's writer tasks (`src/outbox.rs`): one task writes the queues of many sockets.
//!
//! Sockets the server accepts itself write straight to their connections; a socket handed over
//! already upgraded (`Server::serve_websocket`) writes through the WebSocket library's sink. Both
//! are exercised here.
//!
//! Several publishers publish at once (on tokio, their drivers run on two worker threads while
//! the writer tasks write); every subscriber must get every publication exactly once, and each
//! publisher's publications in the order it sent them. A subscriber that never reads shares the
//! writers with the others and must not hold them up. Raw WebSocket clients (`support/raw.rs`) see
//! the exact frames; every wait is bounded.
#![cfg(feature = "smol")]
#![allow(clippy::unwrap_used)]

#[path = "support/util.rs"]
mod util;

#[macro_use]
#[path = "support/raw.rs"]
mod raw;

use async_tungstenite::tungstenite::Message;
use serde_json::json;

use raw::{Harness, Raw, Rt};

on_both_runtimes!(
    concurrent_publishers_keep_order,
    a_stuck_subscriber_holds_up_nobody,
    serve_websocket_writes_through_the_sink,
    websocket_pings_are_answered_in_order,
);

const SUBSCRIBERS: usize = 40;
const PUBLISHERS: u64 = 4;
const EACH: u64 = 300;

async fn subscribers(h: &Harness, n: usize) -> Vec<Raw> {
    let mut subs = Vec::new();
    for _ in 0..n {
        let (mut s, _) = Raw::open(h.addr).await;
        s.subscribe(2, "news").await;
        subs.push(s);
    }
    subs
}

/// Publishes `EACH` transmits as publisher `p`, numbered from 0.
async fn publish_all(mut publisher: Raw, p: u64) -> Raw {
    for n in 0..EACH {
        publisher
            .json(json!({"event": "#publish", "data": {"channel": "news", "data": {"p": p, "n": n}}}))
            .await;
    }
    publisher
}

/// Reads `count` publications and checks them: per publisher, 0, 1, 2, … with none missing.
async fn expect_in_order(mut sub: Raw, count: u64) {
    let mut next = vec![0u64; PUBLISHERS as usize];
    for _ in 0..count {
        let packet = sub.packet().await;
        assert_eq!(packet["event"], "#publish", "{packet}");
        let data = &packet["data"]["data"];
        let (p, n) = (data["p"].as_u64().unwrap() as usize, data["n"].as_u64().unwrap());
        assert_eq!(n, next[p], "publisher {p}: expected #{} next, got #{n}", next[p]);
        next[p] += 1;
    }
    assert!(next.iter().all(|&n| n == EACH), "{next:?}");
}

async fn concurrent_publishers_keep_order(rt: Rt) {
    let h = Harness::default(rt).await;
    let subs = subscribers(&h, SUBSCRIBERS).await;
    let mut publishers = Vec::new();
    for p in 0..PUBLISHERS {
        publishers.push(publish_all(Raw::open(h.addr).await.0, p));
    }
    let readers = futures::future::join_all(subs.into_iter().map(|s| expect_in_order(s, PUBLISHERS * EACH)));
    let (_, published) = futures::join!(readers, futures::future::join_all(publishers));
    // Nothing more than the publications came.
    for mut p in published {
        p.silence(std::time::Duration::from_millis(50)).await;
    }
}

async fn a_stuck_subscriber_holds_up_nobody(rt: Rt) {
    let mut h = Harness::default(rt).await;
    // Never read again: its TCP buffers fill up, and its writer visits stop at a full connection.
    let (mut stuck, id) = Raw::open(h.addr).await;
    stuck.subscribe(2, "news").await;
    let stuck_socket = h.conn(&id).await.socket;
    let mut subs = subscribers(&h, 8).await;
    // Far more than the loopback connection holds (~19 MB), so it is full long before the end.
    let pad = "x".repeat(64 * 1024);
    let publisher = Raw::open(h.addr).await.0;
    let publish = async move {
        let mut publisher = publisher;
        for n in 0..EACH {
            publisher
                .json(json!({"event": "#publish", "data": {"channel": "news", "data": {"p": 0, "n": n, "pad": pad}}}))
                .await;
        }
        publisher
    };
    let readers = futures::future::join_all(subs.iter_mut().map(|s| async move {
        for n in 0..EACH {
            let packet = s.packet().await;
            assert_eq!(packet["data"]["data"]["n"], n, "in order");
        }
    }));
    let (_, _publisher) = futures::join!(readers, publish);
    // The stuck socket is still connected (no limit is set): it was skipped, not shed, and most
    // of the burst still waits in its queue.
    assert_eq!(h.server.clients_count(), 10);
    let backlog = stuck_socket.outbound_backpressure();
    assert!(backlog > EACH as usize / 2, "the stuck socket's backlog is only {backlog}");
    drop(stuck);
}

/// A socket upgraded outside the server (`serve_websocket`): handshake, subscribe, a publication
/// to itself and to a socket the server accepted, a ping answered, a close with the code.
async fn serve_websocket_writes_through_the_sink(rt: Rt) {
    let h = Harness::default(rt).await;
    let listener = smol::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = h.server.clone();
    rt.runtime().spawn(Box::pin(async move {
        while let Ok((tcp, peer)) = listener.accept().await {
            let server = server.clone();
            smol::spawn(async move {
                if let Ok(ws) = async_tungstenite::accept_async(tcp).await {
                    server.serve_websocket(ws, Some(peer), "/socketcluster/").await;
                }
            })
            .detach();
        }
    }));
    let (mut outside, _) = Raw::open(addr).await;
    let (mut inside, _) = Raw::open(h.addr).await;
    outside.subscribe(2, "both").await;
    inside.subscribe(2, "both").await;
    let publication = json!({"event": "#publish", "data": {"channel": "both", "data": {"n": 1}}});
    assert_eq!(outside.call(3, "#publish", json!({"channel": "both", "data": {"n": 1}})).await, publication);
    assert_eq!(outside.packet().await, json!({"rid": 3}));
    assert_eq!(inside.packet().await, publication);
    outside.echo(4, json!("through the sink")).await;
    let socket =
        h.server.clients().into_iter().find(|s| s.remote_address() == Some(outside.local_addr())).unwrap();
    socket.disconnect(4321, "");
    assert_eq!(outside.expect_close().await, 4321);
}

/// The WebSocket library answers pings itself; on an accepted socket its pong joins the socket's
/// queue (the tap), whole, between whole frames (the order against the echo's answer is the
/// order in which they were queued: the pong when the ping is read, the answer when the
/// procedure answers).
async fn websocket_pings_are_answered_in_order(rt: Rt) {
    let h = Harness::default(rt).await;
    let (mut c, _) = Raw::open(h.addr).await;
    let big = "z".repeat(200_000);
    c.json(json!({"event": "echo", "data": big, "cid": 5})).await;
    c.send(Message::Ping(b"hi".to_vec().into())).await;
    let (mut pong, mut answer) = (false, false);
    while !(pong && answer) {
        match c.message().await {
            Some(Message::Pong(p)) if !pong => {
                assert_eq!(&p[..], b"hi");
                pong = true;
            }
            Some(Message::Text(t)) if !answer && !t.is_empty() => {
                let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                assert_eq!(v, json!({"rid": 5, "data": big}));
                answer = true;
            }
            Some(Message::Text(t)) if t.is_empty() => {} // a SocketCluster ping
            other => panic!("expected the pong and the answer, got {other:?}"),
        }
    }
    c.echo(6, json!("still fine")).await;
}
