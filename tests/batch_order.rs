//! Answers to one batch frame (a JSON array of packets) leave in packet order, as with
//! socketcluster-server 20, when the handlers answer promptly; a handler that does not answer
//! holds the later packets of its frame for at most `ServerOptions::batch_answer_wait`, and never
//! another socket.
//!
//! Driven by a raw WebSocket client that sends the batch as one frame and reads every frame the
//! server sends, against `examples/interop_server` (smol and tokio) and against the in-process
//! server with the test harness's `echo` and `hold` procedures. Every wait is bounded.
#![cfg(feature = "smol")]
#![allow(clippy::unwrap_used)]

#[path = "support/util.rs"]
mod util;

#[macro_use]
#[path = "support/raw.rs"]
mod raw;

#[path = "support/peers.rs"]
mod peers;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use socketcluster::server::ServerOptions;

use raw::{Harness, Raw, Rt, next_of};

on_both_runtimes!(
    interop_server_answers_a_batch_in_packet_order,
    answers_to_a_batch_leave_in_packet_order,
    a_handler_that_does_not_answer_holds_its_batch_only_for_batch_answer_wait,
);

/// The batch of the issue: handshake, invoke, subscribe, publish to that channel, invoke.
fn the_batch() -> String {
    json!([
        {"event": "#handshake", "data": {"authToken": null}, "cid": 1},
        {"event": "echo", "data": "a", "cid": 2},
        {"event": "#subscribe", "data": {"channel": "c1"}, "cid": 3},
        {"event": "#publish", "data": {"channel": "c1", "data": "p"}, "cid": 4},
        {"event": "echo", "data": "b", "cid": 5},
    ])
    .to_string()
}

/// Sends [`the_batch`] on a new connection and checks every frame that comes back, in order:
/// socketcluster-server's transcript (the publication reaches the subscribed sender between the
/// acknowledgements of its subscribe and its publish).
async fn check_the_batch(addr: SocketAddr) {
    let mut c = Raw::connect(addr).await;
    c.text(the_batch()).await;
    let mut got = Vec::new();
    for _ in 0..6 {
        got.push(c.packet().await);
    }
    assert_eq!(got[0]["rid"], 1, "the handshake answer first: {got:?}");
    assert!(got[0]["data"]["id"].is_string(), "{got:?}");
    assert_eq!(
        got[1..],
        [
            json!({"rid": 2, "data": "a"}),
            json!({"rid": 3}),
            json!({"event": "#publish", "data": {"channel": "c1", "data": "p"}}),
            json!({"rid": 4}),
            json!({"rid": 5, "data": "b"}),
        ],
        "frames after the handshake answer"
    );
}

fn runtime_name(rt: Rt) -> &'static str {
    match rt {
        Rt::Smol => "smol",
        #[cfg(feature = "tokio")]
        Rt::Tokio => "tokio",
    }
}

async fn interop_server_answers_a_batch_in_packet_order(rt: Rt) {
    let server = peers::Peer::rust_server(runtime_name(rt), &[]);
    let addr: SocketAddr = server.url()["ws://".len()..].trim_end_matches("/socketcluster/").parse().unwrap();
    // Several sockets, one after another: the order must not depend on luck.
    for _ in 0..20 {
        check_the_batch(addr).await;
    }
}

async fn answers_to_a_batch_leave_in_packet_order(rt: Rt) {
    let h = Harness::default(rt).await;
    for _ in 0..20 {
        check_the_batch(h.addr).await;
    }
    // Many invokes in one frame, after the handshake: the same.
    let (mut c, _) = Raw::open(h.addr).await;
    let batch: Vec<Value> = (10..60).map(|cid| json!({"event": "echo", "data": cid, "cid": cid})).collect();
    c.json(Value::Array(batch)).await;
    for cid in 10..60 {
        assert_eq!(c.packet().await, json!({"rid": cid, "data": cid}));
    }
}

async fn a_handler_that_does_not_answer_holds_its_batch_only_for_batch_answer_wait(rt: Rt) {
    let wait = Duration::from_millis(800);
    let mut h = Harness::start(rt, ServerOptions { batch_answer_wait: wait, ..Default::default() }).await;
    let (mut a, a_id) = Raw::open(h.addr).await;
    let (mut b, _) = Raw::open(h.addr).await;
    let sent = Instant::now();
    a.text(
        json!([
            {"event": "hold", "data": 1, "cid": 2},
            {"event": "echo", "data": "after", "cid": 3},
        ])
        .to_string(),
    )
    .await;
    let held = next_of(&h.conn(&a_id).await.held, "the held request").await;
    // Another socket is not held: its answer comes while A's batch waits.
    b.echo(2, json!("other socket")).await;
    assert!(sent.elapsed() < wait, "the other socket's answer took {:?}", sent.elapsed());
    // A's later packet is handled once the wait is over, not before, and not never.
    assert_eq!(a.packet().await, json!({"rid": 3, "data": "after"}));
    assert!(sent.elapsed() >= wait, "answered after {:?}, before the wait of {wait:?}", sent.elapsed());
    // The slow answer leaves whenever it comes.
    held.end("late").unwrap();
    assert_eq!(a.packet().await, json!({"rid": 2, "data": "late"}));
    // Frames of one packet never wait.
    a.json(json!({"event": "hold", "cid": 4})).await;
    let _held = next_of(&h.conn(&a_id).await.held, "the second held request").await;
    let sent = Instant::now();
    a.echo(5, json!("single")).await;
    assert!(sent.elapsed() < wait, "a single-packet frame waited {:?}", sent.elapsed());
}
