//! Channel history and recovery (our extension): positions on publishes, replay on reconnect
//! with no gap and no duplicate, "cannot recover" past the history's bound, and bad recovery
//! requests. On smol and on tokio.
#![cfg(feature = "smol")]
#![allow(clippy::unwrap_used)]

#[path = "support/util.rs"]
mod util;
#[macro_use]
#[path = "support/raw.rs"]
mod raw;
#[path = "support/cut.rs"]
mod cut;
#[path = "support/peers.rs"]
mod peers;

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use socketcluster::client::{Client, ClientEvent, ClientOptions};
use socketcluster::protocol::channels::SubscribeOptions;
use socketcluster::server::{HistoryOptions, HistoryRules, ServerOptions};
use socketcluster::stream::Consumer;

use cut::CutProxy;
use raw::{Harness, Raw, Rt, next_ev};

fn options(max_len: usize) -> ServerOptions {
    ServerOptions {
        history: HistoryRules::new().pattern("feed*", HistoryOptions::last(max_len)),
        ..ServerOptions::default()
    }
}

fn client_via(rt: Rt, proxy: &CutProxy) -> Client {
    let mut o = ClientOptions::new(proxy.url());
    o.backoff.initial_delay = Duration::from_millis(20);
    o.backoff.randomness = Duration::ZERO;
    rt.client(o)
}

async fn until<T: Clone>(events: &mut Consumer<T>, what: &str, f: impl Fn(&T) -> bool) -> T {
    loop {
        let e = next_ev(events, what).await;
        if f(&e) {
            return e;
        }
    }
}

/// Publishes `range` from the server, in order.
async fn publish(h: &Harness, channel: &str, range: std::ops::Range<u64>) {
    for i in range {
        h.server.exchange().invoke_publish(channel, i).await.unwrap();
    }
}

/// The next `n` values of `feed`, as numbers.
async fn take(feed: &mut socketcluster::client::Channel, n: usize) -> Vec<u64> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        let v = util::within(Duration::from_secs(30), "channel data", feed.next()).await;
        got.push(v.and_then(|v| v.as_u64()).expect("a number"));
    }
    got
}

async fn a_cut_subscriber_gets_every_publish_exactly_once_in_order(rt: Rt) {
    const MISSED: u64 = 10_000;
    let h = Harness::start(rt, options(20_000)).await;
    let proxy = CutProxy::start(h.addr);
    let client = client_via(rt, &proxy);
    let mut events = client.events();
    let mut feed = client.subscribe("feed", SubscribeOptions::default());
    until(&mut events, "subscribe", |e| matches!(e, ClientEvent::Subscribe { .. })).await;
    assert_eq!(client.channel_position("feed").map(|p| p.offset), Some(0), "the ack carries the position");

    publish(&h, "feed", 0..100).await;
    assert_eq!(take(&mut feed, 100).await, (0..100).collect::<Vec<_>>());
    assert_eq!(client.channel_position("feed").map(|p| p.offset), Some(100));

    proxy.cut();
    until(&mut events, "disconnect", |e| matches!(e, ClientEvent::Disconnect { .. })).await;
    publish(&h, "feed", 100..100 + MISSED).await;
    proxy.reopen();
    let recovered = until(
        &mut events,
        "recover",
        |e| matches!(e, ClientEvent::Recover { channel, .. } if channel == "feed"),
    )
    .await;
    let ClientEvent::Recover { result, .. } = recovered else { unreachable!() };
    let replayed = result.expect("recovered");
    assert!(replayed >= MISSED, "at least the publishes of the outage were replayed: {replayed}");
    publish(&h, "feed", 100 + MISSED..200 + MISSED).await;
    let got = take(&mut feed, (100 + MISSED) as usize).await;
    assert_eq!(got, (100..200 + MISSED).collect::<Vec<_>>(), "all of them, once, in order");
    // No duplicate is still queued behind them: the next value is the next publish.
    publish(&h, "feed", 200 + MISSED..201 + MISSED).await;
    assert_eq!(take(&mut feed, 1).await, [200 + MISSED]);
    assert_eq!(client.channel_position("feed").map(|p| p.offset), Some(201 + MISSED));
    client.disconnect(1000, "");
}

async fn recovery_past_the_history_bound_says_it_cannot(rt: Rt) {
    let h = Harness::start(rt, options(10)).await;
    let proxy = CutProxy::start(h.addr);
    let client = client_via(rt, &proxy);
    let mut events = client.events();
    let mut feed = client.subscribe("feed", SubscribeOptions::default());
    until(&mut events, "subscribe", |e| matches!(e, ClientEvent::Subscribe { .. })).await;
    publish(&h, "feed", 0..3).await;
    assert_eq!(take(&mut feed, 3).await, [0, 1, 2]);
    proxy.cut();
    until(&mut events, "disconnect", |e| matches!(e, ClientEvent::Disconnect { .. })).await;
    publish(&h, "feed", 3..53).await;
    proxy.reopen();
    let recovered = until(&mut events, "recover", |e| matches!(e, ClientEvent::Recover { .. })).await;
    let ClientEvent::Recover { result: Err(reason), .. } = recovered else { panic!("{recovered:?}") };
    assert!(reason.contains("no longer reaches back"), "{reason}");
    until(&mut events, "subscribe", |e| matches!(e, ClientEvent::Subscribe { .. })).await;
    // Nothing of the lost stretch is replayed; live publishes go on from the server's position.
    assert_eq!(client.channel_position("feed").map(|p| p.offset), Some(53));
    publish(&h, "feed", 53..55).await;
    assert_eq!(take(&mut feed, 2).await, [53, 54]);
    client.disconnect(1000, "");
}

async fn publishes_carry_positions_and_acks_carry_the_channel_position(rt: Rt) {
    let h = Harness::start(rt, options(100)).await;
    let (mut c, _) = Raw::open(h.addr).await;
    let ack = c.call(2, "#subscribe", json!({"channel": "feed"})).await;
    // No publish yet: offset 0 in an "empty view" epoch (`BASE-MS-0`); nothing is stored.
    let empty = ack["data"]["epoch"].as_str().expect("an epoch").to_string();
    assert!(empty.ends_with("-0"), "{empty}");
    assert_eq!(ack, json!({"rid": 2, "data": {"channel": "feed", "offset": 0, "epoch": empty}}));
    publish(&h, "feed", 0..2).await;
    // The first publish begins the channel's history, in its own epoch.
    let first = c.packet().await;
    let epoch = first["data"]["epoch"].as_str().expect("an epoch").to_string();
    assert_ne!(epoch, empty);
    assert_eq!(
        first,
        json!({"event": "#publish", "data": {"channel": "feed", "data": 0, "offset": 1, "epoch": epoch}})
    );
    assert_eq!(
        c.packet().await,
        json!({"event": "#publish", "data": {"channel": "feed", "data": 1, "offset": 2, "epoch": epoch}})
    );
    // Recovering from the empty view replays the whole history, then says so.
    c.call(3, "#unsubscribe", json!("feed")).await;
    let recover = json!({"channel": "feed", "data": {"recover": {"offset": 0, "epoch": empty}}});
    c.json(json!({"event": "#subscribe", "data": recover, "cid": 4})).await;
    for offset in 1..=2u64 {
        assert_eq!(c.packet().await["data"]["offset"], offset);
    }
    let ack = c.packet().await;
    assert_eq!(
        (ack["rid"].clone(), ack["data"]["recovered"].clone(), ack["data"]["replayed"].clone()),
        (json!(4), json!(true), json!(2)),
        "{ack}"
    );
    // A channel without history: SocketCluster's frames, untouched.
    c.subscribe(5, "plain").await;
    h.server.exchange().invoke_publish("plain", 1).await.unwrap();
    assert_eq!(c.packet().await, json!({"event": "#publish", "data": {"channel": "plain", "data": 1}}));
}

async fn bad_recovery_requests_get_a_clear_answer_and_nothing_else(rt: Rt) {
    let h = Harness::start(rt, options(5)).await;
    publish(&h, "feed-a", 0..20).await; // nobody subscribed: kept anyway (5 of them)
    publish(&h, "feed-b", 0..3).await;
    let (mut c, _) = Raw::open(h.addr).await;
    let ack = c.call(2, "#subscribe", json!({"channel": "feed-a"})).await;
    let epoch_a = ack["data"]["epoch"].as_str().unwrap().to_string();
    assert_eq!(ack["data"]["offset"], 20);
    c.call(3, "#unsubscribe", json!("feed-a")).await;

    let sub = |cid: u64, channel: &str, recover: Value| json!({"event": "#subscribe", "data": {"channel": channel, "data": {"recover": recover}}, "cid": cid});
    // A future offset.
    c.json(sub(4, "feed-a", json!({"offset": 99, "epoch": epoch_a}))).await;
    let r = c.packet().await;
    assert_eq!((r["rid"].clone(), r["data"]["recovered"].clone()), (json!(4), json!(false)), "{r}");
    assert!(r["data"]["reason"].as_str().unwrap().contains("ahead"), "{r}");
    c.call(5, "#unsubscribe", json!("feed-a")).await;
    // Another channel's epoch: no replay of feed-a's data into feed-b.
    c.json(sub(6, "feed-b", json!({"offset": 0, "epoch": epoch_a}))).await;
    let r = c.packet().await;
    assert_eq!((r["rid"].clone(), r["data"]["recovered"].clone()), (json!(6), json!(false)), "{r}");
    // A huge range: more than the history keeps is "cannot recover", never a large replay.
    c.json(sub(7, "feed-a", json!({"offset": 0, "epoch": epoch_a}))).await;
    let r = c.packet().await;
    assert_eq!((r["rid"].clone(), r["data"]["recovered"].clone()), (json!(7), json!(false)), "{r}");
    c.call(8, "#unsubscribe", json!("feed-a")).await;
    // Within the bound: exactly what came after, then the acknowledgement.
    c.json(sub(9, "feed-a", json!({"offset": 17, "epoch": epoch_a}))).await;
    for (offset, data) in [(18u64, 17u64), (19, 18), (20, 19)] {
        assert_eq!(
            c.packet().await["data"],
            json!({"channel": "feed-a", "data": data, "offset": offset, "epoch": epoch_a})
        );
    }
    assert_eq!(
        c.packet().await,
        json!({"rid": 9, "data": {"channel": "feed-a", "offset": 20, "epoch": epoch_a, "recovered": true, "replayed": 3}})
    );
    // Not numbers: an error, and not subscribed.
    for (cid, bad) in [
        (10u64, json!({"offset": "1", "epoch": epoch_a})),
        (11, json!(5)),
        (12, json!({"offset": -1, "epoch": "e"})),
    ] {
        c.json(sub(cid, "feed-c", bad)).await;
        let r = c.packet().await;
        assert_eq!(r["rid"], cid, "{r}");
        assert_eq!(r["error"]["name"], "InvalidArgumentsError", "{r}");
    }
    let r = c.call(13, "#unsubscribe", json!("feed-c")).await;
    assert!(r.get("error").is_some(), "feed-c was never subscribed: {r}");
}

/// The official client with `js/socketcluster-recovery.mjs`, cut off while 10 000 are published.
async fn the_js_client_with_the_helper_recovers_too(rt: Rt) {
    const MISSED: u64 = 10_000;
    peers::ensure_npm();
    let h = Harness::start(rt, options(20_000)).await;
    let proxy = CutProxy::start(h.addr);
    let total = 200 + MISSED;
    let mut child = std::process::Command::new("node")
        .arg(peers::interop_dir().join("recovery-client.mjs"))
        .args([proxy.url(), String::from("feed"), total.to_string()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("node runs");
    let lines = peers::read_lines(child.stdout.take().expect("stdout"));
    let next = |kind: &str| -> Value {
        loop {
            let line =
                lines.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|_| panic!("no {kind} line"));
            println!("js: {line}");
            let v: Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}"));
            assert_ne!(v["type"], "timeout", "the JS client timed out");
            if v["type"] == kind {
                return v;
            }
        }
    };
    let first = next("subscribe");
    assert_eq!(first["position"]["offset"], 0, "{first}");
    publish(&h, "feed", 0..100).await;
    proxy.cut();
    next("disconnect");
    publish(&h, "feed", 100..100 + MISSED).await;
    proxy.reopen();
    let recover = next("recover");
    assert_eq!(recover["recovered"], true, "{recover}");
    assert!(recover["replayed"].as_u64().unwrap() >= MISSED, "{recover}");
    publish(&h, "feed", 100 + MISSED..total).await;
    let done = next("done");
    assert_eq!(done["count"], total, "{done}");
    assert_eq!(done["inOrder"], true, "every publish exactly once, in order: {done}");
    assert_eq!(done["position"]["offset"], total, "{done}");
    let _ = child.wait();
}

on_both_runtimes!(
    the_js_client_with_the_helper_recovers_too,
    a_cut_subscriber_gets_every_publish_exactly_once_in_order,
    recovery_past_the_history_bound_says_it_cannot,
    publishes_carry_positions_and_acks_carry_the_channel_position,
    bad_recovery_requests_get_a_clear_answer_and_nothing_else,
);
