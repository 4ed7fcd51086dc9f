//! History and recovery across processes through Redis: two `socketcluster` program processes
//! on one real `redis-server` (`--broker`, `--history`); a subscriber on the first is cut off
//! (TCP killed, no close handshake) while 10 000 messages are published, and reconnects to the
//! *second*, which replays them from Redis — every one exactly once, in order. Also: offsets
//! agree between processes, and recovery past the bound says it cannot. Presence across
//! processes, and a crashed process's members leaving it.
#![cfg(all(feature = "redis", feature = "smol", feature = "cli"))]
#![allow(clippy::unwrap_used)]

#[path = "support/cut.rs"]
mod cut;
#[path = "support/peers.rs"]
mod peers;
#[path = "support/redis.rs"]
mod redis_proc;

use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use serde_json::json;
use socketcluster::client::{Channel, Client, ClientEvent, ClientOptions};
use socketcluster::protocol::channels::SubscribeOptions;
use socketcluster::stream::Consumer;

use cut::CutProxy;
use peers::Peer;
use redis_proc::RedisServer;

const BIN: &str = env!("CARGO_BIN_EXE_socketcluster");
const LIMIT: Duration = Duration::from_secs(30);

async fn within<F: std::future::Future>(what: &str, fut: F) -> F::Output {
    smol::future::or(fut, async {
        smol::Timer::after(LIMIT).await;
        panic!("timed out: {what}")
    })
    .await
}

fn program(redis: &RedisServer, history: &str) -> Peer {
    Peer::start(
        Path::new(BIN),
        &[
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--broker",
            &redis.url(),
            "--history",
            history,
            "--log",
            "warn",
            "--client-presence",
            "--presence-ttl",
            "2",
        ],
    )
}

fn client(url: String) -> Client {
    let mut o = ClientOptions::new(url);
    o.backoff.initial_delay = Duration::from_millis(20);
    o.backoff.randomness = Duration::ZERO;
    socketcluster::smol::connect(o)
}

async fn until(
    events: &mut Consumer<ClientEvent>,
    what: &str,
    f: impl Fn(&ClientEvent) -> bool,
) -> ClientEvent {
    loop {
        let e = within(what, events.next()).await.expect("events go on");
        if f(&e) {
            return e;
        }
    }
}

async fn take(ch: &mut Channel, n: u64) -> Vec<u64> {
    let mut got = Vec::new();
    while (got.len() as u64) < n {
        got.push(within("channel data", ch.next()).await.and_then(|v| v.as_u64()).expect("a number"));
    }
    got
}

async fn subscribed(c: &Client, channel: &str) -> Channel {
    let mut events = c.events();
    let ch = c.subscribe(channel, SubscribeOptions::default());
    until(&mut events, "subscribe", |e| matches!(e, ClientEvent::Subscribe { .. })).await;
    ch
}

#[test]
fn a_subscriber_cut_off_recovers_everything_on_the_other_process() {
    const MISSED: u64 = 10_000;
    let redis = RedisServer::start();
    let a = program(&redis, "feed*=20000");
    let b = program(&redis, "feed*=20000");
    smol::block_on(async {
        let proxy = CutProxy::start(a.addr.parse().unwrap());
        let sub = client(proxy.url());
        let mut events = sub.events();
        let mut feed = subscribed(&sub, "feed").await;
        // The publisher is on the other process.
        let publisher = client(b.url());
        for i in 0..100u64 {
            publisher.invoke_publish("feed", i).await.unwrap();
        }
        assert_eq!(take(&mut feed, 100).await, (0..100).collect::<Vec<_>>());
        assert_eq!(
            sub.channel_position("feed").map(|p| p.offset),
            Some(100),
            "offsets agree across processes"
        );

        proxy.cut();
        until(&mut events, "disconnect", |e| matches!(e, ClientEvent::Disconnect { .. })).await;
        for i in 100..100 + MISSED {
            publisher.invoke_publish("feed", i).await.unwrap();
        }
        proxy.set_upstream(b.addr.parse().unwrap());
        proxy.reopen();
        // Publishing goes on while the subscriber comes back: what arrives during the replay
        // is held and deduplicated, not lost or doubled.
        let p = publisher.clone();
        let live = smol::spawn(async move {
            for i in 100 + MISSED..200 + MISSED {
                p.invoke_publish("feed", i).await.unwrap();
            }
        });
        let e = until(&mut events, "recover", |e| matches!(e, ClientEvent::Recover { .. })).await;
        let ClientEvent::Recover { result: Ok(n), .. } = e else { panic!("{e:?}") };
        assert!(n >= MISSED, "from Redis, on b: {n}");
        within("the live publishes", live).await;
        let got = take(&mut feed, 100 + MISSED).await;
        assert_eq!(got, (100..200 + MISSED).collect::<Vec<_>>(), "every one, once, in order");
        publisher.invoke_publish("feed", json!(-1)).await.unwrap();
        assert_eq!(within("the last", feed.next()).await, Some(json!(-1)), "nothing else was queued");
    });
}

#[test]
fn a_channel_without_publishes_costs_nothing_in_redis_and_its_subscriber_misses_nothing() {
    let redis = RedisServer::start();
    let a = program(&redis, "feed*=100");
    let b = program(&redis, "feed*=100");
    let history_keys = || -> Vec<String> {
        let keys: Vec<String> = redis.query(redis::cmd("KEYS").arg("*"));
        keys.into_iter().filter(|k| k.ends_with(":meta") || k.ends_with(":history")).collect()
    };
    smol::block_on(async {
        let proxy = CutProxy::start(a.addr.parse().unwrap());
        let sub = client(proxy.url());
        let mut events = sub.events();
        let mut feed = subscribed(&sub, "feed-quiet").await;
        let mut others = Vec::new();
        for i in 0..100 {
            others.push(subscribed(&sub, &format!("feed-{i}")).await);
        }
        assert_eq!(history_keys(), Vec::<String>::new(), "subscriptions alone wrote history keys");
        let seen = sub.channel_position("feed-quiet").expect("a position from the ack");
        assert_eq!(seen.offset, 0);

        proxy.cut();
        until(&mut events, "disconnect", |e| matches!(e, ClientEvent::Disconnect { .. })).await;
        let publisher = client(b.url());
        for i in 0..5u64 {
            publisher.invoke_publish("feed-quiet", i).await.unwrap();
        }
        // The channel's keys expire unless it is used (HistoryOptions::meta_ttl, one day).
        let keys = history_keys();
        assert_eq!(keys.len(), 2, "{keys:?}");
        for key in &keys {
            let ttl: i64 = redis.query(redis::cmd("PTTL").arg(key));
            assert!(ttl > 0 && ttl <= 24 * 3600 * 1000, "{key}: {ttl}");
        }
        proxy.set_upstream(b.addr.parse().unwrap());
        proxy.reopen();
        // It had seen the channel empty: the whole history is what it missed.
        let e = until(
            &mut events,
            "recover",
            |e| matches!(e, ClientEvent::Recover { channel, .. } if channel == "feed-quiet"),
        )
        .await;
        let ClientEvent::Recover { result: Ok(5), .. } = e else { panic!("{e:?}") };
        assert_eq!(take(&mut feed, 5).await, [0, 1, 2, 3, 4]);
        assert_eq!(sub.channel_position("feed-quiet").map(|p| p.offset), Some(5));
    });
}

#[test]
fn recovery_past_the_bound_across_processes_says_it_cannot() {
    let redis = RedisServer::start();
    let a = program(&redis, "feed*=10");
    let b = program(&redis, "feed*=10");
    smol::block_on(async {
        let proxy = CutProxy::start(a.addr.parse().unwrap());
        let sub = client(proxy.url());
        let mut events = sub.events();
        let mut feed = subscribed(&sub, "feed").await;
        let publisher = client(b.url());
        publisher.invoke_publish("feed", 0).await.unwrap();
        assert_eq!(take(&mut feed, 1).await, [0]);
        proxy.cut();
        until(&mut events, "disconnect", |e| matches!(e, ClientEvent::Disconnect { .. })).await;
        for i in 1..50u64 {
            publisher.invoke_publish("feed", i).await.unwrap();
        }
        proxy.set_upstream(b.addr.parse().unwrap());
        proxy.reopen();
        let e = until(&mut events, "recover", |e| matches!(e, ClientEvent::Recover { .. })).await;
        let ClientEvent::Recover { result: Err(reason), .. } = e else { panic!("{e:?}") };
        assert!(reason.contains("no longer reaches back"), "{reason}");
        until(&mut events, "subscribe", |e| matches!(e, ClientEvent::Subscribe { .. })).await;
        assert_eq!(sub.channel_position("feed").map(|p| p.offset), Some(50));
        publisher.invoke_publish("feed", 50).await.unwrap();
        assert_eq!(take(&mut feed, 1).await, [50], "live again, nothing of the lost stretch");
    });
}

#[test]
fn presence_spans_processes_and_forgets_a_crashed_one() {
    let redis = RedisServer::start();
    let mut a = program(&redis, "none=1");
    let b = program(&redis, "none=1");
    smol::block_on(async {
        let on_a = client(a.url());
        let _room_a = subscribed(&on_a, "room").await;
        let on_b = client(b.url());
        let _room_b = subscribed(&on_b, "room").await;
        let id_a = on_a.id().unwrap();
        let id_b = on_b.id().unwrap();
        let members = |v: &serde_json::Value| {
            let mut ids: Vec<String> = v["members"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["id"].as_str().unwrap().to_string())
                .collect();
            ids.sort();
            ids
        };
        let mut both = vec![id_a.clone(), id_b.clone()];
        both.sort();
        // Joins are written to Redis by a task: poll (bounded) until both show.
        let start = std::time::Instant::now();
        loop {
            let v = on_b.invoke("#presence", json!({"channel": "room"})).await.unwrap();
            if members(&v) == both {
                assert_eq!(v["count"], 2);
                break;
            }
            assert!(start.elapsed() < LIMIT, "both members never showed: {v}");
            smol::Timer::after(Duration::from_millis(20)).await;
        }
        // A crash: a's member is dropped once its liveness key expires (2 s here).
        a.kill_hard();
        let crashed = std::time::Instant::now();
        loop {
            let v = on_b.invoke("#presence", json!({"channel": "room"})).await.unwrap();
            if members(&v) == vec![id_b.clone()] {
                break;
            }
            assert!(crashed.elapsed() < Duration::from_secs(10), "the crashed member stayed: {v}");
            smol::Timer::after(Duration::from_millis(100)).await;
        }
        assert!(crashed.elapsed() >= Duration::from_millis(500), "not before the process was seen gone");
        // A clean leave is immediate (well, one Redis write).
        on_b.unsubscribe("room");
        let start = std::time::Instant::now();
        let on_b2 = client(b.url());
        let _r = subscribed(&on_b2, "room").await;
        loop {
            let v = on_b2.invoke("#presence", json!({"channel": "room"})).await.unwrap();
            if members(&v) == vec![on_b2.id().unwrap()] {
                break;
            }
            assert!(start.elapsed() < LIMIT, "{v}");
            smol::Timer::after(Duration::from_millis(20)).await;
        }
    });
}

/// The official JS client with `js/socketcluster-recovery.mjs`: cut off on one process while
/// 10 000 are published, back on the other.
#[test]
fn the_js_client_with_the_helper_recovers_on_the_other_process() {
    const MISSED: u64 = 10_000;
    peers::ensure_npm();
    let redis = RedisServer::start();
    let a = program(&redis, "feed*=20000");
    let b = program(&redis, "feed*=20000");
    let proxy = CutProxy::start(a.addr.parse().unwrap());
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
    let next = |kind: &str| -> serde_json::Value {
        loop {
            let line =
                lines.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|_| panic!("no {kind} line"));
            let v: serde_json::Value =
                serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}"));
            assert_ne!(v["type"], "timeout", "the JS client timed out");
            if v["type"] == kind {
                return v;
            }
        }
    };
    next("subscribe");
    smol::block_on(async {
        let publisher = client(b.url());
        for i in 0..100u64 {
            publisher.invoke_publish("feed", i).await.unwrap();
        }
        proxy.cut();
        next("disconnect");
        for i in 100..100 + MISSED {
            publisher.invoke_publish("feed", i).await.unwrap();
        }
        proxy.set_upstream(b.addr.parse().unwrap());
        proxy.reopen();
        let recover = next("recover");
        assert_eq!(recover["recovered"], true, "{recover}");
        for i in 100 + MISSED..total {
            publisher.invoke_publish("feed", i).await.unwrap();
        }
    });
    let done = next("done");
    assert_eq!(done["count"], total, "{done}");
    assert_eq!(done["inOrder"], true, "every publish exactly once, in order: {done}");
    let _ = child.wait();
}
