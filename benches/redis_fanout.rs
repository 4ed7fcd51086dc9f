//! Cross-process publish throughput and latency through Redis, next to the in-memory broker on
//! one process, in the same run (feature `redis`).
//!
//! ```text
//! cargo bench --features redis --bench redis_fanout [-- --quick]
//! ```
//!
//! The bench starts its own `redis-server` on a free loopback port (it fails if there is none:
//! `apt-get install redis-server`) and its servers as child processes (this binary again, with
//! `REDIS_FANOUT_SERVE=memory|redis://...`), each a smol SocketCluster server. The clients are our
//! client on smol, in the bench process, so one clock times both ends. Scenarios:
//!
//! - `memory, 1 process`: publisher and subscribers on one server with the in-memory broker;
//! - `redis, 1 process`: the same server with the Redis broker (local delivery, plus the Redis
//!   publish);
//! - `redis, 2 processes`: the publisher on one server, the subscribers on another;
//! - `redis, 3 processes`: the publisher on one server, the subscribers split over two others;
//! - `… + history`: the same with channel history on for the bench channel
//!   (`ServerOptions::history`, the last 100 000 publishes), to show what it costs.
//!
//! Throughput: the publisher sends `M` messages (`transmitPublish`) as fast as it can; `S`
//! subscribers check they get all of them in order; deliveries/s = `M·S` / time until the last
//! subscriber has the last message. Latency: one subscriber; the publisher sends one message,
//! waits until it arrives, and so on, `K` times: median and 99th percentile of send → receive.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;
use socketcluster::client::{Channel, ChannelEvent, Client, ClientEvent, ClientOptions};
use socketcluster::protocol::channels::SubscribeOptions;
use socketcluster::server::redis::RedisOptions;
use socketcluster::server::{HistoryOptions, HistoryRules, ServerOptions};

const LIMIT: Duration = Duration::from_secs(60);

async fn within<F: std::future::Future>(what: &str, fut: F) -> F::Output {
    smol::future::or(fut, async {
        smol::Timer::after(LIMIT).await;
        panic!("timed out after {LIMIT:?}: {what}")
    })
    .await
}

/// The child role: a server with `broker`, its address on stdout, until stdin closes.
fn serve(broker: &str) {
    smol::block_on(async {
        let mut options = ServerOptions::default();
        if std::env::var_os("REDIS_FANOUT_HISTORY").is_some() {
            options.history = HistoryRules::new().pattern("bench", HistoryOptions::last(100_000));
        }
        if broker != "memory" {
            let b = socketcluster::smol::redis_broker(RedisOptions::new(broker)).await.expect("Redis");
            options.broker = Some(b);
        }
        let (_server, addr) = socketcluster::smol::listen("127.0.0.1:0", options).await.expect("listen");
        println!("{addr}");
        let _ = std::io::stdout().flush();
        let _ = smol::unblock(|| std::io::stdin().read_line(&mut String::new())).await;
    });
}

/// A child process: a redis-server or one of our servers.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn redis_server() -> (Proc, String) {
    let port =
        std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            eprintln!(
                "redis_fanout: cannot start redis-server ({e}); install it: apt-get install -y redis-server"
            );
            std::process::exit(1)
        });
    let url = format!("redis://127.0.0.1:{port}");
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < LIMIT, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    (Proc(child), url)
}

fn server(broker: &str) -> (Proc, String) {
    server_with(broker, false)
}

fn server_with(broker: &str, history: bool) -> (Proc, String) {
    let mut cmd = Command::new(std::env::current_exe().expect("own path"));
    if history {
        cmd.env("REDIS_FANOUT_HISTORY", "1");
    }
    let mut child = cmd
        .env("REDIS_FANOUT_SERVE", broker)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the server process starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("its address");
    (Proc(child), format!("ws://{}/socketcluster/", line.trim()))
}

async fn client(url: &str) -> Client {
    let c = socketcluster::smol::connect(ClientOptions { auto_connect: false, ..ClientOptions::new(url) });
    let mut connect = c.listener("connect");
    c.connect();
    assert!(matches!(within("connect", connect.next()).await, Some(ClientEvent::Connect { .. })));
    c
}

async fn subscribed(c: &Client, channel: &str) -> Channel {
    let mut ack = c.channel(channel).listener("subscribe");
    let ch = c.subscribe(channel, SubscribeOptions::default());
    assert_eq!(within("subscribe", ack.next()).await, Some(ChannelEvent::Subscribe));
    ch
}

struct Row {
    name: &'static str,
    processes: usize,
    subscribers: usize,
    messages: u64,
    publishes_per_s: f64,
    deliveries_per_s: f64,
    p50: Duration,
    p99: Duration,
}

/// Publisher on `urls[0]`, subscribers spread over `urls[1..]` (or on `urls[0]` if alone).
async fn scenario(name: &'static str, urls: &[String], subscribers: usize, m: u64, k: usize) -> Row {
    let publisher = client(&urls[0]).await;
    let sub_urls = if urls.len() > 1 { &urls[1..] } else { urls };
    let mut subs = Vec::new();
    for i in 0..subscribers {
        let c = client(&sub_urls[i % sub_urls.len()]).await;
        let ch = subscribed(&c, "bench").await;
        subs.push((c, ch));
    }
    // Latency: one message at a time to the first subscriber (the others read it too).
    let mut lat = Vec::with_capacity(k);
    let warmup = k / 10;
    for i in 0..k + warmup {
        let t0 = Instant::now();
        publisher.transmit_publish("bench", json!({ "lat": i })).await.expect("publish");
        let got = within("latency message", subs[0].1.next()).await;
        assert_eq!(got, Some(json!({ "lat": i })));
        if i >= warmup {
            lat.push(t0.elapsed());
        }
        for (_, ch) in subs.iter_mut().skip(1) {
            assert_eq!(within("latency message", ch.next()).await, Some(json!({ "lat": i })));
        }
    }
    lat.sort();
    // Throughput.
    let start = Instant::now();
    let readers: Vec<_> = subs
        .into_iter()
        .map(|(c, mut ch)| {
            smol::spawn(async move {
                for i in 0..m {
                    assert_eq!(within("throughput message", ch.next()).await, Some(json!(i)), "in order");
                }
                drop(c);
                Instant::now()
            })
        })
        .collect();
    for i in 0..m {
        publisher.transmit_publish("bench", i).await.expect("publish");
    }
    let mut last = start;
    for r in readers {
        last = last.max(r.await);
    }
    let secs = (last - start).as_secs_f64();
    Row {
        name,
        processes: urls.len(),
        subscribers,
        messages: m,
        publishes_per_s: m as f64 / secs,
        deliveries_per_s: (m * subscribers as u64) as f64 / secs,
        p50: lat[lat.len() / 2],
        p99: lat[lat.len() * 99 / 100],
    }
}

fn main() {
    if let Ok(broker) = std::env::var("REDIS_FANOUT_SERVE") {
        serve(&broker);
        return;
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let (m, k, s) = if quick { (2_000, 200, 4) } else { (50_000, 2_000, 10) };
    let (_redis, url) = redis_server();
    let rows = smol::block_on(async {
        let mut rows = Vec::new();
        let (_p, mem) = server("memory");
        rows.push(scenario("memory, 1 process", &[mem], s, m, k).await);
        let (_ph, memh) = server_with("memory", true);
        rows.push(scenario("memory + history, 1 process", &[memh], s, m, k).await);
        let (_p, one) = server(&url);
        rows.push(scenario("redis, 1 process", std::slice::from_ref(&one), s, m, k).await);
        let (_p2, two) = server(&url);
        rows.push(scenario("redis, 2 processes", &[one.clone(), two.clone()], s, m, k).await);
        let (_p3, three) = server(&url);
        rows.push(scenario("redis, 3 processes", &[one, two, three], s, m, k).await);
        let (_ph1, h1) = server_with(&url, true);
        rows.push(scenario("redis + history, 1 process", std::slice::from_ref(&h1), s, m, k).await);
        let (_ph2, h2) = server_with(&url, true);
        rows.push(scenario("redis + history, 2 processes", &[h1, h2], s, m, k).await);
        rows
    });
    println!(
        "\n| scenario | server processes | subscribers | messages | publishes/s | deliveries/s | latency p50 | latency p99 |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {:.0} | {:.0} | {:.0} µs | {:.0} µs |",
            r.name,
            r.processes,
            r.subscribers,
            r.messages,
            r.publishes_per_s,
            r.deliveries_per_s,
            r.p50.as_secs_f64() * 1e6,
            r.p99.as_secs_f64() * 1e6
        );
    }
}
