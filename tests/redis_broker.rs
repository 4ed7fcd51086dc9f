//! Scale-out through Redis (feature `redis`) in process: two servers, each with its own
//! `RedisBroker`, on a real `redis-server` that the test starts on a free loopback port, on smol
//! and on tokio: interest tracking checked with `PUBSUB`, and the broker's events, health and the
//! server's warnings through an outage. Server processes: `tests/redis.rs`.
//!
//! Every wait is bounded. Sleeps only show that something does not happen.
#![cfg(all(feature = "redis", feature = "smol"))]

#[path = "support/redis.rs"]
mod redis_proc;
#[path = "support/scale.rs"]
mod scale;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use socketcluster::server::redis::{RedisBroker, RedisEvent};
use socketcluster::server::{Server, ServerEvent};

use redis_proc::RedisServer;
use scale::{LIMIT, ODD, Rt, eventually, next, quiet, subscribed, within};

// ------------------------------------------------------------------------------------------------
// Interest tracking (in process: two servers, each with its own broker, on one Redis)

async fn interest_tracking(rt: Rt) {
    let redis = RedisServer::start();
    let (b1, b2) = (rt.broker(Rt::options(&redis.url())).await, rt.broker(Rt::options(&redis.url())).await);
    let ((s1, u1), (s2, u2)) = (rt.listen(&b1).await, rt.listen(&b2).await);
    let key = |c: &str| b1.options().redis_channel(c);
    let keys = |cs: &[&str]| {
        let mut v: Vec<String> = cs.iter().map(|c| key(c)).collect();
        v.sort();
        v
    };
    // Acknowledged only after Redis confirmed: Redis has it the moment the ack arrives.
    let c1 = rt.client(&u1).await;
    let _a1 = subscribed(&c1, "alpha").await;
    assert_eq!(redis.channels("sc:*"), keys(&["alpha"]));
    assert_eq!(redis.numsub(&key("alpha")), 1);
    // A second local subscriber: still one Redis subscription for the process.
    let c2 = rt.client(&u1).await;
    let _a2 = subscribed(&c2, "alpha").await;
    assert_eq!(redis.numsub(&key("alpha")), 1);
    // The other process.
    let c3 = rt.client(&u2).await;
    let _a3 = subscribed(&c3, "alpha").await;
    let mut odd3 = subscribed(&c3, ODD).await;
    assert_eq!(redis.numsub(&key("alpha")), 2);
    assert_eq!(redis.channels("sc:*"), keys(&["alpha", ODD]));
    // The exchange counts as interest too.
    let mut gamma =
        within(LIMIT, "exchange subscribe", s2.exchange().subscribe("gamma")).await.expect("subscribe");
    assert_eq!(redis.channels("sc:*"), keys(&["alpha", ODD, "gamma"]));
    assert_eq!(b2.health().redis_channels, 3);
    // Delivery follows the interest.
    c1.invoke_publish(ODD, "odd").await.expect("publish");
    assert_eq!(next(&mut odd3, "cross-process publish").await, json!("odd"));
    s1.exchange().invoke_publish("gamma", 7).await.expect("publish");
    assert_eq!(next(&mut gamma, "exchange to exchange").await, json!(7));
    // One of two local subscribers leaves: the process stays subscribed. (A confirmed subscribe
    // on the same broker comes after every earlier unsubscribe on its connection.)
    let mut unsubscriptions = s1.listener("unsubscription");
    c1.unsubscribe("alpha");
    assert!(matches!(next(&mut unsubscriptions, "unsubscription").await, ServerEvent::Unsubscription { .. }));
    let _sync = within(LIMIT, "sync", s1.exchange().subscribe("sync")).await.expect("subscribe");
    assert_eq!(redis.numsub(&key("alpha")), 2);
    // The last one disconnects: the process unsubscribes.
    c2.disconnect(1000, "");
    assert!(matches!(next(&mut unsubscriptions, "unsubscription").await, ServerEvent::Unsubscription { .. }));
    let _sync = within(LIMIT, "sync", s1.exchange().subscribe("sync2")).await.expect("subscribe");
    assert_eq!(redis.numsub(&key("alpha")), 1);
    assert_eq!(redis.channels("sc:*"), keys(&["alpha", ODD, "gamma", "sync", "sync2"]));
    // Process 2's client leaves, then its exchange.
    let mut unsubscriptions2 = s2.listener("unsubscription");
    c3.disconnect(1000, "");
    for _ in 0..2 {
        next(&mut unsubscriptions2, "unsubscription").await;
    }
    s2.exchange().unsubscribe("gamma").await;
    let _sync = within(LIMIT, "sync", s2.exchange().subscribe("sync3")).await.expect("subscribe");
    assert_eq!(redis.channels("sc:*"), keys(&["sync", "sync2", "sync3"]));
    assert_eq!(b1.health().local_channels, 2);
    assert!(s1.broker().channels().iter().all(|(c, _)| c.starts_with("sync")));
    // Closed servers and dropped handles: the brokers close their Redis connections. (Listener
    // consumers go first: the events they hold keep their servers alive.)
    drop((c1, unsubscriptions, unsubscriptions2));
    close_all(vec![s1, s2], vec![b1, b2], &redis).await;
}

/// Closes the servers, drops them and the brokers, and waits until the brokers' Redis
/// connections are gone (only the test's own query connection is left).
async fn close_all(servers: Vec<Server>, brokers: Vec<Arc<RedisBroker>>, redis: &RedisServer) {
    for s in &servers {
        s.close(1000, "", LIMIT).await;
    }
    drop((servers, brokers));
    eventually("the brokers closed their Redis connections", || {
        let info: String = redis.query(redis::cmd("INFO").arg("clients"));
        info.lines().any(|l| l.trim() == "connected_clients:1")
    })
    .await;
}

/// Redis has a channel exactly while a process has local subscribers (sockets or its exchange),
/// one subscription per process, dropped after the last unsubscribe or disconnect; the ack of a
/// `#subscribe` comes after Redis confirmed it. On smol.
#[test]
fn interest_tracking_on_smol() {
    Rt::Smol.run(interest_tracking);
}

/// The same on tokio.
#[cfg(feature = "tokio")]
#[test]
fn interest_tracking_on_tokio() {
    Rt::Tokio.run(interest_tracking);
}

/// In process, on smol: the broker's events and the server's `warning`s report the outage and the
/// recovery; a subscription made during the outage is accepted locally, works locally, and is
/// in Redis after the recovery.
#[test]
fn outage_events_health_and_subscribe_during_outage() {
    let mut redis = RedisServer::start();
    Rt::Smol.run(|rt| async move {
        let (b1, b2) =
            (rt.broker(Rt::options(&redis.url())).await, rt.broker(Rt::options(&redis.url())).await);
        let ((s1, u1), (s2, u2)) = (rt.listen(&b1).await, rt.listen(&b2).await);
        b1.report_to(&s1);
        let (mut events1, mut events2, mut warnings) = (b1.events(), b2.events(), s1.listener("warning"));
        let (c1, c2) = (rt.client(&u1).await, rt.client(&u2).await);
        let mut n1 = subscribed(&c1, "news").await;
        let mut n2 = subscribed(&c2, "news").await;

        redis.kill();
        for ev in [&mut events1, &mut events2] {
            assert!(matches!(next(ev, "Disconnected").await, RedisEvent::Disconnected { .. }));
        }
        match next(&mut warnings, "the server's warning").await {
            ServerEvent::Warning { error, socket: None } => assert_eq!(error.name(), "BrokerError"),
            other => panic!("{other:?}"),
        }
        let h = b1.health();
        assert!(!h.connected && h.outages == 1 && h.redis_channels == 0 && h.local_channels == 1, "{h:?}");
        // A subscribe during the outage is accepted (locally) and works locally.
        let c1b = rt.client(&u1).await;
        let mut late = subscribed(&c1b, "late").await;
        c1.invoke_publish("late", 1).await.expect("publish");
        assert_eq!(next(&mut late, "local publish during the outage").await, json!(1));
        c1.invoke_publish("news", "lost").await.expect("publish");
        assert_eq!(next(&mut n1, "own publish during the outage").await, json!("lost"));
        assert_eq!(b1.health().undelivered, 2);

        redis.restart();
        let recovered = |ev: RedisEvent| matches!(ev, RedisEvent::Reconnected { .. });
        let mut seen = Vec::new();
        loop {
            let ev = next(&mut events1, "Reconnected").await;
            if recovered(ev.clone()) {
                assert!(
                    matches!(ev, RedisEvent::Reconnected { resubscribed: 2, undelivered: 2, .. }),
                    "{ev:?} after {seen:?}"
                );
                break;
            }
            assert!(matches!(ev, RedisEvent::ConnectFailed { .. }), "{ev:?}");
            seen.push(ev);
        }
        while !recovered(next(&mut events2, "Reconnected").await) {}
        assert!(matches!(next(&mut warnings, "recovery warning").await, ServerEvent::Warning { .. }));
        let h = b1.health();
        assert!(h.connected && h.redis_channels == 2 && h.down_for.is_none(), "{h:?}");
        assert_eq!(redis.channels("sc:*"), ["sc:late", "sc:news"]);
        // Cross-process again, and "lost" never reached the other process.
        c2.invoke_publish("news", "back").await.expect("publish");
        assert_eq!(next(&mut n1, "cross-process after the recovery").await, json!("back"));
        assert_eq!(next(&mut n2, "own").await, json!("back"));
        let mut late2 = subscribed(&c2, "late").await;
        c1b.invoke_publish("late", 2).await.expect("publish");
        assert_eq!(next(&mut late2, "the channel subscribed during the outage").await, json!(2));
        assert_eq!(next(&mut late, "own").await, json!(2));
        for (ch, who) in [(&mut n1, "n1"), (&mut n2, "n2"), (&mut late, "late"), (&mut late2, "late2")] {
            assert_eq!(
                quiet(ch, Duration::from_millis(200)).await,
                None,
                "{who}: a duplicate or a late message"
            );
        }
        drop(warnings);
        close_all(vec![s1, s2], vec![b1, b2], &redis).await;
    });
}

/// Redis refuses some channels (an ACL allows this user `sc:ok*` only): those subscriptions fail
/// with `BrokerError` — the client is told, the broker emits `SubscribeFailed` — while the allowed
/// ones (also when asked for in the same batch) work and the connection stays up. On smol.
#[test]
fn refused_channels_fail_their_subscribers_only() {
    let redis = RedisServer::start();
    let _: () = redis.query(
        redis::cmd("ACL")
            .arg("SETUSER")
            .arg("limited")
            .arg("on")
            .arg(">pw")
            .arg("resetchannels")
            .arg("&sc:ok*")
            .arg("+@all")
            .arg("~*"),
    );
    Rt::Smol.run(|rt| async move {
        let url = format!("redis://limited:pw@127.0.0.1:{}", redis.port);
        let b = rt.broker(Rt::options(&url)).await;
        let (s, u) = rt.listen(&b).await;
        let mut events = b.events();
        let c = rt.client(&u).await;
        let mut ok = subscribed(&c, "ok1").await;
        let no = c.channel("no1");
        let mut fail = no.listener("subscribeFail");
        let _no = c.subscribe("no1", socketcluster::protocol::channels::SubscribeOptions::default());
        match next(&mut fail, "subscribeFail").await {
            socketcluster::client::ChannelEvent::SubscribeFail(error) => {
                assert_eq!(error.name(), "BrokerError", "{error:?}");
                assert!(error.message().contains("no permissions"), "{error:?}");
            }
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(next(&mut events, "SubscribeFailed").await, RedisEvent::SubscribeFailed { channel, .. } if channel == "no1")
        );
        // Several at once (one SUBSCRIBE batch): only the refused one fails.
        let ex = s.exchange();
        let (a, n, z) = futures::join!(ex.subscribe("ok2"), ex.subscribe("no2"), ex.subscribe("ok3"));
        assert!(a.is_ok() && z.is_ok(), "{a:?} {z:?}");
        assert!(n.is_err(), "{n:?}");
        assert_eq!(redis.channels("sc:*"), ["sc:ok1", "sc:ok2", "sc:ok3"]);
        let h = b.health();
        assert!(h.connected && h.outages == 0 && h.redis_channels == 3, "{h:?}");
        c.invoke_publish("ok1", 1).await.expect("publish");
        assert_eq!(next(&mut ok, "ok1").await, json!(1));
        drop(events);
        close_all(vec![s], vec![b], &redis).await;
    });
}
