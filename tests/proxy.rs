//! Behind a reverse proxy: `X-Forwarded-For` and `Forwarded` set a socket's `remote_address`
//! only when the TCP peer is listed in `ServerOptions::trusted_proxies`; from anyone else they
//! are ignored. On smol and tokio, with a raw client that writes the headers itself.
#![cfg(feature = "smol")]
#![allow(clippy::unwrap_used)]

#[path = "support/util.rs"]
mod util;
#[macro_use]
#[path = "support/raw.rs"]
mod raw;

use std::net::SocketAddr;

use serde_json::Value;
use socketcluster::server::ServerOptions;

use raw::{Harness, Raw, Rt};

/// The server socket's `remote_address` for a client whose upgrade carries `headers`.
async fn remote_seen(h: &mut Harness, headers: &[(&str, &str)]) -> (Option<SocketAddr>, SocketAddr) {
    let mut raw = Raw::connect_with_headers(h.addr, "/socketcluster/", headers).await;
    let r = raw.handshake(Value::Null).await;
    let id = r["data"]["id"].as_str().unwrap().to_string();
    (h.conn(&id).await.socket.remote_address(), raw.local_addr())
}

fn options(trusted: &[&str]) -> ServerOptions {
    ServerOptions {
        trusted_proxies: trusted.iter().map(|t| t.parse().unwrap()).collect(),
        ..Default::default()
    }
}

async fn forwarded_by_a_trusted_proxy(rt: Rt) {
    let mut h = Harness::start(rt, options(&["127.0.0.0/8"])).await;
    // The nearest hop that is not a proxy: the client's own "6.6.6.6" further left is not believed.
    let (seen, _) = remote_seen(&mut h, &[("X-Forwarded-For", "6.6.6.6, 203.0.113.7")]).await;
    assert_eq!(seen, Some("203.0.113.7:0".parse().unwrap()));
    // Hops that are trusted proxies themselves are skipped.
    let (seen, _) =
        remote_seen(&mut h, &[("X-Forwarded-For", "198.51.100.9"), ("X-Forwarded-For", "127.0.0.5")]).await;
    assert_eq!(seen, Some("198.51.100.9:0".parse().unwrap()));
    // RFC 7239 `Forwarded`, with a port.
    let (seen, _) = remote_seen(&mut h, &[("Forwarded", "for=\"[2001:db8::1]:4711\";proto=https")]).await;
    assert_eq!(seen, Some("[2001:db8::1]:4711".parse().unwrap()));
    // No header, or one that is not an address: the proxy's own address.
    let (seen, local) = remote_seen(&mut h, &[]).await;
    assert_eq!(seen, Some(local));
    let (seen, local) = remote_seen(&mut h, &[("X-Forwarded-For", "unknown")]).await;
    assert_eq!(seen, Some(local));
}

async fn ignored_from_an_untrusted_peer(rt: Rt) {
    // Trusting another network only.
    let mut h = Harness::start(rt, options(&["10.0.0.0/8"])).await;
    let (seen, local) = remote_seen(&mut h, &[("X-Forwarded-For", "203.0.113.7")]).await;
    assert_eq!(seen, Some(local));
    // The default trusts nobody.
    let mut h = Harness::start(rt, ServerOptions::default()).await;
    let (seen, local) = remote_seen(&mut h, &[("Forwarded", "for=203.0.113.7")]).await;
    assert_eq!(seen, Some(local));
}

on_both_runtimes!(forwarded_by_a_trusted_proxy, ignored_from_an_untrusted_peer);
