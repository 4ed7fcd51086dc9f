//! `Server::stats`: the counters follow what happens — connections, subscriptions and channels
//! (gauges that go back down), messages in and out, bytes, auth failures, refused upgrades,
//! shed sockets and the backlog high-water mark.
#![cfg(feature = "smol")]
#![allow(clippy::unwrap_used)]

#[allow(unused_macros)]
#[path = "support/raw.rs"]
mod raw;
#[path = "support/util.rs"]
mod util;

use serde_json::json;
use socketcluster::server::ServerOptions;

use raw::{Harness, Raw, Rt, http_upgrade};

#[test]
fn counters_follow_the_sockets() {
    raw::on_smol(|rt: Rt| async move {
        let mut h = Harness::start(rt, ServerOptions::default()).await;
        assert_eq!(h.server.stats().connections, 0);
        let (mut a, a_id) = Raw::open(h.addr).await;
        let (mut b, _) = Raw::open(h.addr).await;
        h.conn(&a_id).await;
        a.subscribe(2, "one").await;
        a.subscribe(3, "two").await;
        b.subscribe(2, "one").await;
        let s = h.server.stats();
        assert_eq!((s.connections, s.connections_total), (2, 2));
        assert_eq!((s.subscriptions, s.channels), (3, 2));
        // 2 handshakes + 3 subscribes so far.
        assert_eq!(s.messages_in, 5);
        let out_before = (s.messages_out, s.bytes_out);
        a.echo(4, json!("x".repeat(1000))).await;
        assert_eq!(h.server.stats().messages_in, 6);
        // The writer counts a frame after writing it: the client may read it first. Wait
        // (bounded) for the count.
        let s = util::within(util::LIMIT, "the writer's counters", async {
            loop {
                let s = h.server.stats();
                if s.messages_out > out_before.0 && s.bytes_out >= out_before.1 + 1000 {
                    return s;
                }
                smol::Timer::after(std::time::Duration::from_millis(1)).await;
            }
        })
        .await;
        assert!(s.outbound_high_water >= 1, "{s:?}");

        // A bad token, and a refused upgrade.
        let mut c = Raw::connect(h.addr).await;
        let r = c.handshake(json!("not.a.jwt")).await;
        assert_eq!(r["data"]["isAuthenticated"], false, "{r}");
        assert_eq!(http_upgrade(h.addr, "/elsewhere/", None).await.status, 400);
        let s = h.server.stats();
        assert_eq!((s.auth_failures, s.upgrades_refused), (1, 1), "{s:?}");

        // Gauges go back down when sockets leave.
        let mut gone = h.server.listener("disconnection");
        drop(a);
        drop(c);
        for _ in 0..2 {
            raw::next_ev(&mut gone, "a disconnection").await;
        }
        let s = h.server.stats();
        assert_eq!((s.subscriptions, s.channels, s.disconnections_total), (1, 1, 2), "{s:?}");
        drop(b);
    });
}
