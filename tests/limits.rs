//! The server's access limits: `origins`, `max_pending_requests`, `socket_channel_limit`,
//! `allow_client_publish`, `max_payload`, and kicking sockets out of channels (SocketCluster
//! protocol reference §1.1, §1.7, §1.11, §3.2, §3.5, §5.4).
//!
//! Our server runs in-process on smol and on tokio (`smol_rt::NAME`, `tokio_rt::NAME`), driven by
//! a raw WebSocket client (`support/raw.rs`) that sees the exact frames. "Not sent" is shown by
//! order: when the next frame answers a later packet, nothing came before it. Every wait is
//! bounded.
#![cfg(feature = "smol")]
#![allow(clippy::unwrap_used)]

#[path = "support/util.rs"]
mod util;

#[macro_use]
#[path = "support/raw.rs"]
mod raw;

use serde_json::{Value, json};

use socketcluster::protocol::RemoteError;
use socketcluster::server::{ServerEvent, ServerOptions, SocketEvent};

use raw::{Harness, Raw, Rt, error_response, http_upgrade, next_ev, next_of, ready};

on_both_runtimes!(
    origins,
    max_pending_requests,
    socket_channel_limit,
    client_publish_disabled,
    max_payload_closes_1009,
    kick_out_channels_and_all,
);

fn publish(channel: &str, data: Value) -> Value {
    json!({"event": "#publish", "data": {"channel": channel, "data": data}})
}

/// `origins`: an allowed `Origin` (by host, by port, or none at all) connects; another gets HTTP
/// 403 with SocketCluster's body, and a `warning`, and no socket is made.
async fn origins(rt: Rt) {
    let options = ServerOptions {
        origins: Some(vec![String::from("app.example:*"), String::from("*:8443")]),
        ..ServerOptions::default()
    };
    let h = Harness::start(rt, options).await;
    let mut handshakes = h.server.listener("handshake");
    let mut open = Vec::new();
    for origin in
        [Some("http://app.example"), Some("https://app.example:9000"), Some("https://cdn.example:8443"), None]
    {
        let mut c = Raw::connect_with_origin(h.addr, origin).await;
        let r = c.handshake(Value::Null).await;
        assert!(r["data"]["id"].is_string(), "{origin:?}: {r}");
        c.echo(2, json!(origin)).await;
        next_ev(&mut handshakes, "the handshake event").await;
        open.push(c);
    }
    for origin in ["http://evil.example", "http://app.example.evil:80", "https://cdn.example"] {
        let r = http_upgrade(h.addr, "/socketcluster/", Some(origin)).await;
        assert_eq!(r.status, 403, "{origin}: {r:?}");
        let message = format!("Failed to authorize socket handshake - Invalid origin: {origin}");
        assert_eq!(r.body, message);
        let (e, socket) = h.warning().await;
        assert_eq!((e.message(), socket), (message.as_str(), None));
    }
    assert!(ready(&mut handshakes).is_empty(), "no socket for a refused origin");
    assert_eq!(h.server.clients_count(), 4);
}

/// `max_pending_requests` 3: the fourth concurrent unanswered invoke of a socket is answered at
/// once with ResourceLimitError (whatever the procedure); answering one — with data or an error
/// — frees a slot, even while the handler still holds the request; requests answered at once
/// never count against later ones; other sockets have their own count.
async fn max_pending_requests(rt: Rt) {
    let options = ServerOptions { max_pending_requests: Some(3), ..ServerOptions::default() };
    let mut h = Harness::start(rt, options).await;
    let (mut c, id) = Raw::open(h.addr).await;
    let conn = h.conn(&id).await;
    let limit_error = |rid: u64| {
        error_response(
            rid,
            "ResourceLimitError",
            &format!("Socket {id} has 3 requests waiting for an answer"),
        )
    };
    for cid in 2..=4 {
        c.json(json!({"event": "hold", "data": cid, "cid": cid})).await;
    }
    let mut held = Vec::new();
    for cid in 2..=4 {
        let req = next_of(&conn.held, "a held request").await;
        assert_eq!(req.id(), cid);
        held.push(req);
    }
    assert_eq!(c.call(5, "hold", json!(5)).await, limit_error(5));
    assert_eq!(c.call(6, "echo", json!(6)).await, limit_error(6));
    // Another socket is not limited by this one's requests.
    let (mut other, _) = Raw::open(h.addr).await;
    other.echo(2, json!("free")).await;

    // Answer one, and keep it: the slot is free.
    held[0].end("done").unwrap();
    assert_eq!(c.packet().await, json!({"rid": 2, "data": "done"}));
    c.echo(7, json!(7)).await;
    c.json(json!({"event": "hold", "data": 8, "cid": 8})).await;
    held.push(next_of(&conn.held, "a held request").await);
    assert_eq!(c.call(9, "echo", json!(9)).await, limit_error(9));
    // An error answer frees a slot too.
    held[1].error(RemoteError::new("HeldError", "let go")).unwrap();
    assert_eq!(c.packet().await, error_response(3, "HeldError", "let go"));
    c.echo(10, json!(10)).await;
    // Requests answered at once never pile up: many in a row, far more than the limit.
    for cid in 11..30 {
        c.echo(cid, json!(cid)).await;
    }
    assert_eq!(h.server.clients_count(), 2);
    assert_eq!(held.len(), 4);
}

/// `socket_channel_limit` 2: a third channel is refused with SocketCluster's BrokerError (and a
/// `warning`); re-subscribing a channel is fine; leaving one (unsubscribe or kick-out) frees a
/// slot.
async fn socket_channel_limit(rt: Rt) {
    let options = ServerOptions { socket_channel_limit: Some(2), ..ServerOptions::default() };
    let mut h = Harness::start(rt, options).await;
    let (mut c, id) = Raw::open(h.addr).await;
    let socket = h.conn(&id).await.socket;
    let limit_error = |rid: u64, channel: &str| {
        error_response(
            rid,
            "BrokerError",
            &format!(
                "Failed to subscribe socket to the {channel} channel - InvalidActionError: Socket {id} tried to exceed the channel subscription limit of 2"
            ),
        )
    };
    c.subscribe(2, "a").await;
    c.subscribe(3, "b").await;
    assert_eq!(c.call(4, "#subscribe", json!({"channel": "c"})).await, limit_error(4, "c"));
    let (e, sid) = h.warning().await;
    assert_eq!(json!({"rid": 4, "error": e.into_value()}), limit_error(4, "c"));
    assert_eq!(sid.as_deref(), Some(id.as_str()));
    c.subscribe(5, "a").await;
    assert_eq!(socket.subscriptions(), ["a", "b"]);
    h.server.exchange().invoke_publish("c", "not subscribed").await.unwrap();
    h.server.exchange().invoke_publish("a", "subscribed").await.unwrap();
    assert_eq!(c.packet().await, publish("a", json!("subscribed")));

    assert_eq!(c.call(6, "#unsubscribe", json!("a")).await, json!({"rid": 6}));
    c.subscribe(7, "c").await;
    assert_eq!(c.call(8, "#subscribe", json!({"channel": "d"})).await, limit_error(8, "d"));
    assert!(socket.kick_out("b", "bye").await);
    assert_eq!(c.packet().await, json!({"event": "#kickOut", "data": {"channel": "b", "message": "bye"}}));
    c.subscribe(9, "d").await;
    assert_eq!(socket.subscriptions(), ["c", "d"]);
}

/// `allow_client_publish: false`: `invokePublish` gets InvalidActionError "Client publish feature
/// is disabled", `transmitPublish` is dropped without an answer, subscribers get neither; the
/// server can still publish.
async fn client_publish_disabled(rt: Rt) {
    let options = ServerOptions { allow_client_publish: false, ..ServerOptions::default() };
    let h = Harness::start(rt, options).await;
    let (mut sub, sub_id) = Raw::open(h.addr).await;
    sub.subscribe(2, "news").await;
    let (mut p, pid) = Raw::open(h.addr).await;
    assert_eq!(
        p.call(2, "#publish", json!({"channel": "news", "data": "invoked"})).await,
        error_response(2, "InvalidActionError", "Client publish feature is disabled")
    );
    p.json(json!({"event": "#publish", "data": {"channel": "news", "data": "transmitted"}})).await;
    p.echo(3, json!("no answer to the transmitted publish")).await;
    // The subscriber itself may not publish either.
    assert_eq!(
        sub.call(3, "#publish", json!({"channel": "news", "data": "own"})).await,
        error_response(3, "InvalidActionError", "Client publish feature is disabled")
    );
    h.server.exchange().invoke_publish("news", "from the server").await.unwrap();
    assert_eq!(sub.packet().await, publish("news", json!("from the server")), "nothing from the clients");
    for from in [&pid, &pid, &sub_id] {
        let (e, sid) = h.warning().await;
        assert_eq!((e.name(), e.message()), ("InvalidActionError", "Client publish feature is disabled"));
        assert_eq!(sid.as_ref(), Some(from));
    }
}

/// `max_payload` 1024: a larger message (text or binary) closes that socket with 1009 (with the
/// `disconnection` event and a `warning`); up to the limit is fine, and another socket carries on.
async fn max_payload_closes_1009(rt: Rt) {
    let options = ServerOptions { max_payload: Some(1024), ..ServerOptions::default() };
    let mut h = Harness::start(rt, options).await;
    let mut disconnections = h.server.listener("disconnection");
    let (mut big, big_id) = Raw::open(h.addr).await;
    let (mut other, _) = Raw::open(h.addr).await;
    let big_socket = h.conn(&big_id).await.socket;
    let mut socket_disconnect = big_socket.listener("disconnect");
    let frame = json!({"event": "echo", "data": "", "cid": 2}).to_string();
    let fits = "y".repeat(1024 - frame.len());
    big.echo(2, json!(fits)).await;
    big.text(json!({"event": "echo", "data": "x".repeat(1025), "cid": 3}).to_string()).await;
    assert_eq!(big.expect_close().await, 1009);
    match next_ev(&mut disconnections, "disconnection").await {
        ServerEvent::Disconnection { socket, code, .. } => {
            assert_eq!((socket.id(), code), (big_id.as_str(), 1009))
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        next_ev(&mut socket_disconnect, "disconnect").await,
        SocketEvent::Disconnect { code: 1009, .. }
    ));
    let (e, sid) = h.warning_where("the 1009 warning", |(e, _)| e.get("code") == Some(&json!(1009))).await;
    assert_eq!((e.name(), sid.as_deref()), ("SocketProtocolError", Some(big_id.as_str())));
    other.echo(2, json!("still here")).await;

    let (mut bin, bin_id) = Raw::open(h.addr).await;
    bin.send(async_tungstenite::tungstenite::Message::binary(vec![b' '; 2048])).await;
    assert_eq!(bin.expect_close().await, 1009);
    match next_ev(&mut disconnections, "disconnection").await {
        ServerEvent::Disconnection { socket, code, .. } => {
            assert_eq!((socket.id(), code), (bin_id.as_str(), 1009))
        }
        other => panic!("{other:?}"),
    }
    other.echo(3, json!("z".repeat(900))).await;
    assert_eq!(h.server.clients_count(), 1);
}

/// `kick_out_channels` for several channels and `kick_out_all`: one `#kickOut` per channel the
/// socket is in (none for others), `unsubscribe`/`unsubscription` events, the broker forgets the
/// socket, later publishes do not reach it, and its subscriptions end up empty.
async fn kick_out_channels_and_all(rt: Rt) {
    let mut h = Harness::default(rt).await;
    let mut unsubscriptions = h.server.listener("unsubscription");
    let (mut c, id) = Raw::open(h.addr).await;
    let socket = h.conn(&id).await.socket;
    let mut unsubscribes = socket.listener("unsubscribe");
    for (cid, ch) in (2..).zip(["a", "b", "c", "d"]) {
        c.subscribe(cid, ch).await;
    }
    let kick = |channel: &str, message: Value| json!({"event": "#kickOut", "data": {"channel": channel, "message": message}});

    assert_eq!(
        util::bounded("kick_out_channels", socket.kick_out_channels(&["a", "x", "b"], "bye")).await,
        2
    );
    assert_eq!(c.packet().await, kick("a", json!("bye")));
    assert_eq!(c.packet().await, kick("b", json!("bye")));
    assert_eq!(socket.subscriptions(), ["c", "d"]);
    assert!(!socket.is_subscribed("a"));
    for ch in ["a", "b"] {
        assert_eq!(
            next_ev(&mut unsubscribes, "unsubscribe").await,
            SocketEvent::Unsubscribe { channel: ch.into() }
        );
        match next_ev(&mut unsubscriptions, "unsubscription").await {
            ServerEvent::Unsubscription { socket, channel } => {
                assert_eq!((socket.id(), channel.as_str()), (id.as_str(), ch))
            }
            other => panic!("{other:?}"),
        }
    }
    let subscribers =
        |ch: &str| h.server.broker().channels().into_iter().find(|(c, _)| c == ch).map_or(0, |(_, n)| n);
    assert_eq!((subscribers("a"), subscribers("b"), subscribers("c")), (0, 0, 1));
    h.server.exchange().invoke_publish("a", "gone").await.unwrap();
    h.server.exchange().invoke_publish("c", "still in").await.unwrap();
    assert_eq!(c.packet().await, publish("c", json!("still in")));
    // Kicking out of a channel it is not in sends nothing.
    assert!(!util::bounded("kick_out", socket.kick_out("a", "again")).await);

    assert_eq!(util::bounded("kick_out_all", socket.kick_out_all(json!({"reason": "all"}))).await, 2);
    let mut kicked = vec![c.packet().await, c.packet().await];
    kicked.sort_by_key(|p| p["data"]["channel"].as_str().unwrap().to_string());
    assert_eq!(kicked, [kick("c", json!({"reason": "all"})), kick("d", json!({"reason": "all"}))]);
    assert!(socket.subscriptions().is_empty());
    assert_eq!((subscribers("c"), subscribers("d")), (0, 0));
    let mut rest: Vec<SocketEvent> = Vec::new();
    for _ in 0..2 {
        rest.push(next_ev(&mut unsubscribes, "unsubscribe").await);
    }
    rest.sort_by_key(|e| format!("{e:?}"));
    assert_eq!(
        rest,
        [SocketEvent::Unsubscribe { channel: "c".into() }, SocketEvent::Unsubscribe { channel: "d".into() }]
    );
    assert_eq!(util::bounded("kick_out_all", socket.kick_out_all("none left")).await, 0);
    // The client may subscribe again.
    c.subscribe(10, "a").await;
    c.echo(11, json!("nothing else was sent")).await;
}
