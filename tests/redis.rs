//! Scale-out through Redis (feature `redis`) with server processes: several
//! `examples/interop_server` processes with `--broker redis://...` (or `redis-cluster://...`) on
//! real `redis-server` processes that the tests start on free loopback ports (a single node, and a
//! 3-node cluster for sharded pub/sub), clients on different processes (the official JS client and
//! ours), and Redis killed and restarted mid-test. In-process scenarios: `tests/redis_broker.rs`.
//!
//! Every wait is bounded. Sleeps only show that something does not happen; waits on another
//! process's state poll it (bounded).
#![cfg(all(feature = "redis", feature = "smol"))]

#[path = "support/peers.rs"]
mod peers;
#[path = "support/redis.rs"]
mod redis_proc;
#[path = "support/scale.rs"]
mod scale;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use socketcluster::client::Client;
use socketcluster::server::redis::RedisOptions;

use peers::Peer;
use redis_proc::{RedisCluster, RedisServer};
use scale::{LIMIT, ODD, Rt, TEST_LIMIT, drain, eventually, next, quiet, subscribed, within};

/// A smol client of an interop_server process.
async fn client_of(peer: &Peer) -> Client {
    Rt::Smol.client(&peer.url()).await
}

/// The `stats` of an interop_server process.
async fn stats(client: &Client) -> Value {
    within(LIMIT, "stats", client.invoke("stats", Value::Null)).await.expect("stats")
}

/// An interop_server on `runtime` with `--broker broker`.
fn server(runtime: &str, broker: &str) -> Peer {
    Peer::rust_server(runtime, &["--broker", broker])
}

fn tokio_or_smol() -> &'static str {
    if cfg!(feature = "tokio") { "tokio" } else { "smol" }
}

// ------------------------------------------------------------------------------------------------
// The official JS client on several processes

fn js_scale_out(processes: usize, count: usize) {
    peers::ensure_npm();
    let redis = RedisServer::start();
    let servers: Vec<Peer> = (0..processes)
        .map(|i| server(if i % 2 == 1 { tokio_or_smol() } else { "smol" }, &redis.url()))
        .collect();
    let mut cmd = Command::new("timeout");
    cmd.args(["120", "node"]).arg(peers::interop_dir().join("scale-out.mjs"));
    for s in &servers {
        cmd.args(["--url", &s.url()]);
    }
    cmd.args(["--channel", ODD, "--clients-per-url", "2", "--count", &count.to_string()]);
    let out = cmd.output().expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let result: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|_| panic!("scale-out.mjs printed no result: {stdout}"));
    assert!(out.status.success() && result["ok"] == true, "JS clients on {processes} processes: {result}");
    assert_eq!(result["received"], json!(processes * 2 * processes * 2 * count));
    // Nothing left subscribed once the clients are gone.
    smol::block_on(eventually("Redis channels dropped after the JS clients left", || {
        redis.channels("sc:*").is_empty()
    }));
}

/// Two processes (smol and tokio), two official JS clients on each: every client publishes 200
/// messages; every client receives all 1600, each publisher's in order, none twice.
#[test]
fn js_clients_on_two_processes() {
    js_scale_out(2, 200);
}

/// The same with three processes (6 clients, 5400 deliveries).
#[test]
fn js_clients_on_three_processes() {
    js_scale_out(3, 150);
}

// ------------------------------------------------------------------------------------------------
// Our client on three processes

/// Three processes, two of our clients on each, subscribed to two channels (one with an odd
/// name). Every client publishes 150 messages to each; every client gets all of them, each
/// publisher's in order, none twice. A server-side (exchange) publish reaches every process;
/// `stats` counts local subscribers only.
#[test]
fn rust_clients_on_three_processes() {
    let redis = RedisServer::start();
    let servers =
        [server("smol", &redis.url()), server(tokio_or_smol(), &redis.url()), server("smol", &redis.url())];
    smol::block_on(within(TEST_LIMIT, "the whole test", async {
        const N: u64 = 150;
        let channels = ["news", ODD];
        let mut clients = Vec::new();
        for s in &servers {
            for _ in 0..2 {
                let c = client_of(s).await;
                let mut subs = Vec::new();
                for ch in channels {
                    subs.push(subscribed(&c, ch).await);
                }
                clients.push((c, subs));
            }
        }
        let mut keys: Vec<String> = channels.iter().map(|c| RedisOptions::new("").redis_channel(c)).collect();
        keys.sort();
        assert_eq!(redis.channels("sc:*"), keys);
        for k in &keys {
            assert_eq!(redis.numsub(k), 3, "one Redis subscription per process for {k}");
        }
        for (c, _) in clients.iter().step_by(2) {
            let st = stats(c).await;
            assert_eq!(st["channels"], json!({ "news": 2, ODD: 2 }), "local subscribers only: {st}");
            assert_eq!(st["broker"]["redisChannels"], json!(2), "{st}");
        }
        let publishers: Vec<_> = clients
            .iter()
            .enumerate()
            .map(|(i, (c, _))| {
                let c = c.clone();
                smol::spawn(async move {
                    for seq in 0..N {
                        for ch in channels {
                            c.invoke_publish(ch, json!({ "from": i, "seq": seq })).await.expect("publish");
                        }
                    }
                })
            })
            .collect();
        for p in publishers {
            within(LIMIT * 6, "publishing", p).await;
        }
        let total = clients.len() as u64 * N;
        for (who, (_, subs)) in clients.iter_mut().enumerate() {
            for sub in subs.iter_mut() {
                let mut last = [None; 6];
                let what = format!("client {who}: message on {}", sub.name());
                for _ in 0..total {
                    let m = next(sub, &what).await;
                    let (from, seq) = (m["from"].as_u64().unwrap_or(99) as usize, m["seq"].as_u64());
                    let expected = last[from].map_or(0, |s: u64| s + 1);
                    assert_eq!(
                        seq,
                        Some(expected),
                        "client {who} on {}: from {from} after {:?}",
                        sub.name(),
                        last[from]
                    );
                    last[from] = seq;
                }
            }
        }
        for (who, (_, subs)) in clients.iter_mut().enumerate() {
            for sub in subs.iter_mut() {
                assert_eq!(quiet(sub, Duration::from_millis(200)).await, None, "client {who}: a duplicate");
            }
        }
        // The exchange of process 0 publishes; clients on every process get it.
        let (c0, _) = &clients[0];
        within(
            LIMIT,
            "server-publish",
            c0.invoke("server-publish", json!({ "channel": "news", "data": "x" })),
        )
        .await
        .expect("server-publish");
        for (who, (_, subs)) in clients.iter_mut().enumerate() {
            assert_eq!(
                next(&mut subs[0], &format!("client {who}: the exchange's publish")).await,
                json!("x")
            );
        }
    }));
}

// ------------------------------------------------------------------------------------------------
// Faults

/// Redis killed (SIGKILL) and restarted on the same port, with two interop_server processes
/// (smol, tokio): local pub/sub keeps working during the outage, the outage shows in `stats`
/// (`connected`, `undelivered`), and afterwards cross-process delivery resumes without any
/// client subscribing again. Nothing published during the outage reaches the other process.
#[test]
fn redis_restart_mid_test() {
    let mut redis = RedisServer::start();
    let p1 = server("smol", &redis.url());
    let p2 = server(tokio_or_smol(), &redis.url());
    smol::block_on(within(TEST_LIMIT, "the whole test", async {
        let (a, b, c) = (client_of(&p1).await, client_of(&p1).await, client_of(&p2).await);
        let mut events: Vec<_> = [&a, &b, &c]
            .iter()
            .map(|cl| (cl.listener("subscribe"), cl.listener("disconnect"), cl.listener("connect")))
            .collect();
        let (mut ra, mut rb, mut rc) =
            (subscribed(&a, "room").await, subscribed(&b, "room").await, subscribed(&c, "room").await);
        a.invoke_publish("room", "before").await.expect("publish");
        for (r, who) in [(&mut ra, "a"), (&mut rb, "b"), (&mut rc, "c")] {
            assert_eq!(next(r, &format!("{who}: before")).await, json!("before"));
        }

        redis.kill();
        for cl in [&a, &c] {
            let s = cl.clone();
            let mut down = false;
            let start = Instant::now();
            while !down {
                down = stats(&s).await["broker"]["connected"] == false;
                assert!(start.elapsed() < LIMIT, "the servers did not notice the outage");
                smol::Timer::after(Duration::from_millis(25)).await;
            }
        }
        for i in 0..20 {
            a.invoke_publish("room", json!({ "during": i })).await.expect("publish during the outage");
        }
        c.invoke_publish("room", "c-during").await.expect("publish during the outage");
        for i in 0..20 {
            assert_eq!(next(&mut ra, "a: local during").await, json!({ "during": i }));
            assert_eq!(next(&mut rb, "b: local during").await, json!({ "during": i }));
        }
        assert_eq!(next(&mut rc, "c: local during").await, json!("c-during"));
        let st = stats(&a).await;
        assert!(st["broker"]["undelivered"].as_u64() >= Some(20), "{st}");
        assert_eq!(st["broker"]["outages"], json!(1), "{st}");

        redis.restart();
        for cl in [&a, &c] {
            let start = Instant::now();
            loop {
                let st = stats(cl).await;
                if st["broker"]["connected"] == true && st["broker"]["redisChannels"] == 1 {
                    break;
                }
                assert!(start.elapsed() < LIMIT * 3, "no recovery: {st}");
                smol::Timer::after(Duration::from_millis(25)).await;
            }
        }
        assert_eq!(redis.channels("sc:*"), ["sc:room"]);
        assert_eq!(redis.numsub("sc:room"), 2);
        // (One publisher at a time: there is no order between different publishers' messages.)
        for (from, msg) in [(&a, "after"), (&c, "after-c")] {
            from.invoke_publish("room", msg).await.expect("publish");
            for (r, who) in [(&mut ra, "a"), (&mut rb, "b"), (&mut rc, "c")] {
                assert_eq!(next(r, &format!("{who}: {msg}")).await, json!(msg), "{who}");
            }
        }
        for (r, who) in [(&mut ra, "a"), (&mut rb, "b"), (&mut rc, "c")] {
            assert_eq!(quiet(r, Duration::from_millis(200)).await, None, "{who}: late outage messages");
        }
        // No client noticed anything: no reconnect, no second subscribe.
        for (i, (subs, disconnects, connects)) in events.iter_mut().enumerate() {
            assert_eq!(drain(subs).len(), 1, "client {i} subscribed again");
            assert!(drain(disconnects).is_empty(), "client {i} was disconnected");
            assert!(drain(connects).len() <= 1, "client {i} reconnected");
        }
    }));
}

// ------------------------------------------------------------------------------------------------
// Redis Cluster: sharded pub/sub

/// A 3-node Redis Cluster and two interop_server processes (smol, tokio) with
/// `--broker redis-cluster://...`: each channel is a shard channel on the node that owns its slot
/// (`PUBSUB SHARDCHANNELS`), nothing uses plain pub/sub, clients on both processes exchange
/// publishes in order, and the shard channels go when the subscribers do.
#[test]
fn sharded_pubsub_on_a_cluster() {
    let cluster = RedisCluster::start();
    let p1 = server("smol", &cluster.broker_url());
    let p2 = server(tokio_or_smol(), &cluster.broker_url());
    smol::block_on(within(TEST_LIMIT, "the whole test", async {
        let channels = ["s-alpha", "s-beta ✓", "s-gamma*", "s-delta.x", "s-eps", "s-zeta", ODD];
        let (a, b) = (client_of(&p1).await, client_of(&p2).await);
        let mut subs_a = Vec::new();
        let mut subs_b = Vec::new();
        for ch in channels {
            subs_a.push(subscribed(&a, ch).await);
            subs_b.push(subscribed(&b, ch).await);
        }
        let names = RedisOptions::new("");
        let mut keys: Vec<String> = channels.iter().map(|c| names.redis_channel(c)).collect();
        keys.sort();
        assert_eq!(cluster.shard_channels("sc:*"), keys, "each channel once, on one node");
        let mut owners = std::collections::HashSet::new();
        for (i, node) in cluster.nodes.iter().enumerate() {
            for k in node.shard_channels("sc:*") {
                assert_eq!(cluster.owner(&k), i, "{k} is subscribed on a node that does not own its slot");
                let n: Vec<(String, usize)> = node.query(redis::cmd("PUBSUB").arg("SHARDNUMSUB").arg(&k));
                assert_eq!(n[0].1, 2, "one shard subscription per process for {k}");
                owners.insert(i);
            }
            assert!(node.channels("*").is_empty(), "plain pub/sub used on node {i}");
        }
        assert!(owners.len() >= 2, "the channels should spread over shards: {owners:?}");
        // One publisher per channel (order holds per publisher), half of them on each process.
        for seq in 0..50 {
            for (i, ch) in channels.iter().enumerate() {
                let from = if i % 2 == 0 { &a } else { &b };
                from.invoke_publish(ch, json!(seq)).await.expect("publish");
            }
        }
        for subs in [&mut subs_a, &mut subs_b] {
            for sub in subs.iter_mut() {
                let name = sub.name().to_string();
                for seq in 0..50 {
                    assert_eq!(next(sub, &format!("{name}: {seq}")).await, json!(seq));
                }
                assert_eq!(quiet(sub, Duration::from_millis(100)).await, None, "a duplicate");
            }
        }
        for ch in channels {
            a.unsubscribe(ch);
        }
        eventually("shard subscriptions of process 1 dropped", || {
            cluster.nodes.iter().all(|n| {
                n.shard_channels("sc:*").iter().all(|k| {
                    let v: Vec<(String, usize)> = n.query(redis::cmd("PUBSUB").arg("SHARDNUMSUB").arg(k));
                    v[0].1 == 1
                })
            })
        })
        .await;
        assert_eq!(cluster.shard_channels("sc:*"), keys);
        b.disconnect(1000, "");
        eventually("all shard channels dropped", || cluster.shard_channels("sc:*").is_empty()).await;
    }));
}
