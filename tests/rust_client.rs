//! Our client library against the official socketcluster-server 20.0.1 (`tests/interop/server.mjs`,
//! the handlers of the interop contract §1), every scenario on smol and on tokio.
//!
//! Each scenario is written once as an `async fn(Rt)`; [`scenarios!`] makes one `#[test]` per
//! runtime of it (`smol_rt::NAME`, `tokio_rt::NAME`). Every wait is bounded: a bug fails the test
//! instead of hanging it. Sleeps appear only where a test shows that something does *not* happen.
#![cfg(feature = "smol")]

#[path = "support/peers.rs"]
mod peers;
#[macro_use]
#[path = "support/client_rt.rs"]
mod client_rt;

use std::pin::pin;
use std::time::{Duration, Instant};

use futures::future::Either;
use futures::{FutureExt, StreamExt};
use serde_json::{Value, json};
use socketcluster::client::{ChannelEvent, Client, ClientEvent, ClientOptions, ClientState};
use socketcluster::protocol::backoff::Backoff;
use socketcluster::protocol::channels::{ChannelState, SubscribeOptions};
use socketcluster::protocol::codec::{binary, binary_bytes};
use socketcluster::protocol::{AbortKind, Error, ProtocolVersion, RemoteError};

use client_rt::Rt;
use peers::Peer;

/// This file's helpers on the runtime.
impl Rt {
    /// A client that is not connected yet.
    fn client(&self, url: &str) -> Client {
        self.connect(ClientOptions { auto_connect: false, ..ClientOptions::new(url) })
    }

    /// Connects `client` and waits for its `connect` event; returns the socket id.
    async fn open(&self, client: &Client) -> String {
        let mut connect = client.listener("connect");
        client.connect();
        match self.next(&mut connect, "the connect event").await {
            ClientEvent::Connect { id, .. } => id,
            other => panic!("not a connect event: {other:?}"),
        }
    }

    /// A connected client with default options.
    async fn connected(&self, url: &str) -> Client {
        let client = self.client(url);
        self.open(&client).await;
        client
    }

    /// Subscribes to `channel` and waits for the acknowledgement.
    async fn subscribed(&self, client: &Client, channel: &str) -> socketcluster::client::Channel {
        let ch = client.channel(channel);
        let mut ack = ch.listener("subscribe");
        let ch = client.subscribe(channel, SubscribeOptions::default());
        assert_eq!(self.next(&mut ack, "the subscribe ack").await, ChannelEvent::Subscribe);
        assert_eq!(ch.state(), ChannelState::Subscribed);
        ch
    }
}

scenarios!(
    handshake,
    transmit_echo,
    invoke_echo,
    invoke_errors,
    invoke_timeout_keeps_connection,
    subscribe_publish_unsubscribe,
    kick_out,
    server_publish,
    server_invokes_client,
    disconnect_with_code_and_reason_reconnects,
    disconnect_1000_does_not_reconnect,
    reconnect_and_resubscribe_after_server_restart,
    buffered_while_connecting,
    call_while_server_down_fails_fast,
    protocol_v1,
    ping_timeout_closes_4000,
    binary_echo,
    foo_delayed_consumer,
    dropping_the_client_closes_the_connection,
    in_flight_call_aborted_by_disconnect,
    client_disconnect,
    subscribe_fail_and_wait_for_auth,
    auth_token_in_handshake,
    banned_token_handshake_is_final,
    disconnect_is_synchronous,
    successive_connect_and_disconnect,
    disconnect_during_the_upgrade,
    disconnect_during_the_handshake_closes_1000,
    calls_after_open_follow_the_buffer,
    authenticate_aborted_by_disconnect,
    abnormal_close_reconnects_with_backoff,
    channels_keep_subscription_order,
);

fn fast_backoff() -> Backoff {
    Backoff {
        initial_delay: Duration::from_millis(100),
        randomness: Duration::ZERO,
        multiplier: 1.5,
        max_delay: Duration::from_millis(500),
    }
}

fn remote(r: Result<impl std::fmt::Debug, Error>) -> RemoteError {
    match r {
        Err(Error::Remote(e)) => e,
        other => panic!("expected a remote error, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Scenarios

async fn handshake(rt: Rt) {
    let server = Peer::js_server(&[]);
    let client = rt.client(&server.url());
    assert_eq!(client.state(), ClientState::Closed);
    assert_eq!(client.id(), None);
    let mut connecting = client.listener("connecting");
    let mut connect = client.listener("connect");
    client.connect();
    assert_eq!(rt.next(&mut connecting, "connecting").await, ClientEvent::Connecting);
    let ClientEvent::Connect { id, ping_timeout, is_authenticated, auth_error } =
        rt.next(&mut connect, "connect").await
    else {
        panic!("not a connect event")
    };
    // socketcluster-server ids: base64 of 15 bytes.
    assert_eq!(id.len(), 20, "{id}");
    assert_eq!(ping_timeout, 30_000, "server.mjs's default --ping-timeout");
    assert!(!is_authenticated);
    assert_eq!(auth_error, None);
    assert_eq!(client.state(), ClientState::Open);
    assert_eq!(client.id(), Some(id));
    let stats = rt.bounded("stats", client.invoke("stats", Value::Null)).await.expect("stats");
    assert_eq!(stats["clients"], 1, "{stats}");
}

async fn transmit_echo(rt: Rt) {
    let server = Peer::js_server(&[]);
    let client = rt.connected(&server.url()).await;
    let mut echo = client.receiver("echo");
    rt.bounded("transmit", client.transmit("echo", json!({"a": [1, "two"]}))).await.expect("transmit");
    assert_eq!(rt.next(&mut echo, "echo back").await, json!({"a": [1, "two"]}));
    rt.bounded("transmit null", client.transmit("echo", Value::Null)).await.expect("transmit");
    assert_eq!(rt.next(&mut echo, "echo null").await, Value::Null);
    // No data: the server transmits back without data, which the raw consumer keeps apart.
    let mut raw = client.receiver("echo").into_raw();
    rt.bounded("transmit no data", client.transmit_raw("echo", None)).await.expect("transmit");
    assert_eq!(rt.next(&mut raw, "echo without data").await, None);
    assert_eq!(rt.next(&mut echo, "echo without data (Value view)").await, Value::Null);
}

async fn invoke_echo(rt: Rt) {
    let server = Peer::js_server(&[]);
    let client = rt.connected(&server.url()).await;
    let data = json!({"x": [1, 2, {"y": "z"}], "s": "ü\u{1F600}"});
    assert_eq!(rt.bounded("echo", client.invoke("echo", &data)).await, Ok(data));
    let t = Duration::from_secs(10);
    assert_eq!(
        rt.bounded("echo null", client.invoke_raw("echo", Some(Value::Null), t)).await,
        Ok(Some(Value::Null))
    );
    assert_eq!(rt.bounded("echo no data", client.invoke_raw("echo", None, t)).await, Ok(None));
    // `invoke` shows "no data" as null.
    assert_eq!(rt.bounded("echo ()", client.invoke("echo", ())).await, Ok(Value::Null));
    let n: u32 = rt.bounded("typed", client.invoke_as("echo", 7)).await.expect("typed echo");
    assert_eq!(n, 7);
}

async fn invoke_errors(rt: Rt) {
    let server = Peer::js_server(&[]);
    let client = rt.connected(&server.url()).await;
    let e = remote(rt.bounded("fail", client.invoke("fail", 1)).await);
    assert_eq!(e.name(), "CustomError");
    assert_eq!(e.message(), "boom");
    assert_eq!(e.get("extra"), Some(&json!(42)));
    assert_eq!(e.as_value(), &json!({"message": "boom", "name": "CustomError", "extra": 42}));
    let e = remote(rt.bounded("fail-plain", client.invoke("fail-plain", 1)).await);
    assert_eq!(e.name(), "Error");
    assert_eq!(e.message(), "plain");
    assert_eq!(e.as_value(), &json!({"message": "plain"}));
    // Errors do not hurt the connection.
    assert_eq!(rt.bounded("echo", client.invoke("echo", 1)).await, Ok(json!(1)));
    assert_eq!(client.state(), ClientState::Open);
}

async fn invoke_timeout_keeps_connection(rt: Rt) {
    let server = Peer::js_server(&[]);
    let client = rt.connected(&server.url()).await;
    let id = client.id();
    let mut disconnect = client.listener("disconnect");
    let start = Instant::now();
    let r = rt
        .bounded("unhandled", client.invoke_raw("nobody-home", Some(json!(1)), Duration::from_millis(300)))
        .await;
    assert_eq!(r, Err(Error::Timeout { event: "nobody-home".into() }));
    assert!(start.elapsed() >= Duration::from_millis(290), "{:?}", start.elapsed());
    assert_eq!(
        r.expect_err("timeout").to_remote().message(),
        "Event response for nobody-home event timed out"
    );
    // Still the same, usable connection.
    assert_eq!(rt.bounded("echo", client.invoke("echo", "still")).await, Ok(json!("still")));
    assert_eq!(client.state(), ClientState::Open);
    assert_eq!(client.id(), id);
    assert_eq!(disconnect.next().now_or_never(), None, "no disconnect");
}

async fn subscribe_publish_unsubscribe(rt: Rt) {
    let server = Peer::js_server(&[]);
    let client = rt.connected(&server.url()).await;
    let mut subscribe_events = client.listener("subscribe");
    let mut unsubscribe_events = client.listener("unsubscribe");
    let mut frames = client.listener("message");
    let probe = client.channel("news");
    let mut changes = probe.listener("subscribeStateChange");
    let mut ch = client.subscribe("news", SubscribeOptions::default());
    assert!(ch.is_subscribed(true));
    assert_eq!(
        rt.next(&mut changes, "pending -> subscribed").await,
        ChannelEvent::SubscribeStateChange { old: ChannelState::Pending, new: ChannelState::Subscribed }
    );
    assert_eq!(
        rt.next(&mut subscribe_events, "subscribe event").await,
        ClientEvent::Subscribe { channel: "news".into() }
    );
    assert_eq!(ch.state(), ChannelState::Subscribed);
    assert_eq!(client.subscriptions(false), vec!["news".to_string()]);

    rt.bounded("invokePublish 1", client.invoke_publish("news", 1)).await.expect("publish 1");
    rt.bounded("transmitPublish 2", client.transmit_publish("news", 2)).await.expect("publish 2");
    rt.bounded("invokePublish 3", ch.invoke_publish(json!({"three": 3}))).await.expect("publish 3");
    assert_eq!(rt.next(&mut ch, "message 1").await, json!(1));
    assert_eq!(rt.next(&mut ch, "message 2").await, json!(2));
    assert_eq!(rt.next(&mut ch, "message 3").await, json!({"three": 3}));
    let stats = rt.bounded("stats", client.invoke("stats", ())).await.expect("stats");
    assert_eq!(stats["channels"]["news"], 1, "{stats}");

    ch.unsubscribe();
    // Local at once.
    assert_eq!(ch.state(), ChannelState::Unsubscribed);
    assert_eq!(
        rt.next(&mut changes, "subscribed -> unsubscribed").await,
        ChannelEvent::SubscribeStateChange { old: ChannelState::Subscribed, new: ChannelState::Unsubscribed }
    );
    assert_eq!(
        rt.next(&mut unsubscribe_events, "unsubscribe event").await,
        ClientEvent::Unsubscribe { channel: "news".into() }
    );
    // A later message on a control channel shows that nothing more came for `news`: the server
    // handles one socket's packets in order, so #unsubscribe was done before this publish.
    let mut control = rt.subscribed(&client, "control").await;
    rt.bounded("publish after unsubscribe", client.invoke_publish("news", "late")).await.expect("publish");
    rt.bounded("publish control", client.invoke_publish("control", "mark")).await.expect("publish");
    assert_eq!(rt.next(&mut control, "control message").await, json!("mark"));
    assert_eq!(ch.next().now_or_never(), None, "a message after unsubscribe");
    while let Some(Some(ClientEvent::Message(text))) = frames.next().now_or_never() {
        assert!(!text.contains("\"late\""), "the server sent a publish after #unsubscribe: {text}");
    }
    let stats = rt.bounded("stats", client.invoke("stats", ())).await.expect("stats");
    assert_eq!(stats["channels"], json!({"control": 1}), "{stats}");
}

async fn kick_out(rt: Rt) {
    let server = Peer::js_server(&[]);
    let client = rt.connected(&server.url()).await;
    let mut kicks = client.listener("kickOut");
    let ch = rt.subscribed(&client, "k").await;
    let mut ch_kicks = ch.listener("kickOut");
    let mut ch_unsub = ch.listener("unsubscribe");
    let r = rt.bounded("kick", client.invoke("kick", json!({"channel": "k", "message": "out!"}))).await;
    assert_eq!(r, Ok(Value::Null));
    // The response may overtake #kickOut (responses bypass the server's outbound queue): wait
    // on the events.
    assert_eq!(
        rt.next(&mut kicks, "kickOut").await,
        ClientEvent::KickOut { channel: "k".into(), message: json!("out!") }
    );
    assert_eq!(rt.next(&mut ch_kicks, "channel kickOut").await, ChannelEvent::KickOut(json!("out!")));
    assert_eq!(rt.next(&mut ch_unsub, "channel unsubscribe").await, ChannelEvent::Unsubscribe);
    assert_eq!(ch.state(), ChannelState::Unsubscribed);
    assert!(client.subscriptions(true).is_empty());
    // Kicking out of a channel the socket is not in: nothing happens.
    let r = rt.bounded("kick again", client.invoke("kick", json!({"channel": "k", "message": "x"}))).await;
    assert_eq!(r, Ok(Value::Null));
    assert_eq!(rt.quiet(&mut kicks, Duration::from_millis(200)).await, None);
}

async fn server_publish(rt: Rt) {
    let server = Peer::js_server(&[]);
    let client = rt.connected(&server.url()).await;
    let mut ch = rt.subscribed(&client, "sp").await;
    let r = rt.bounded(
        "server-publish",
        client.invoke("server-publish", json!({"channel": "sp", "data": {"n": 1}})),
    );
    assert_eq!(r.await, Ok(Value::Null));
    assert_eq!(rt.next(&mut ch, "server's publish").await, json!({"n": 1}));
    // A publish without data arrives as "no data".
    let mut raw = ch.create_consumer();
    let r = rt.bounded("server-publish", client.invoke("server-publish", json!({"channel": "sp"}))).await;
    assert_eq!(r, Ok(Value::Null));
    assert_eq!(rt.next(&mut raw, "publish without data").await, None);
}

async fn server_invokes_client(rt: Rt) {
    let server = Peer::js_server(&[]);
    let client = rt.connected(&server.url()).await;
    let mut requests = client.procedure("cb");
    // Success: the server answers with our response data.
    let call = client.invoke("call-me-back", json!({"procedure": "cb", "data": {"q": 1}}));
    let answer = async {
        let req = rt.next(&mut requests, "the server's invoke").await;
        assert_eq!(req.procedure(), "cb");
        assert_eq!(req.data(), &json!({"q": 1}));
        req.end(json!({"got": req.data().clone()})).expect("respond");
    };
    let (r, ()) = rt.bounded("call-me-back", futures::future::join(call, answer)).await;
    assert_eq!(r, Ok(json!({"got": {"q": 1}})));
    // Error: the server passes our error on.
    let call = client.invoke("call-me-back", json!({"procedure": "cb", "data": "err"}));
    let answer = async {
        let req = rt.next(&mut requests, "the server's invoke").await;
        req.error(RemoteError::new("CbError", "nope").with("extra", 7)).expect("respond");
        assert!(req.end(1).is_err(), "a second answer is refused");
    };
    let (r, ()) = rt.bounded("call-me-back error", futures::future::join(call, answer)).await;
    let e = remote(r);
    assert_eq!(e.name(), "CbError");
    assert_eq!(e.message(), "nope");
    assert_eq!(e.get("extra"), Some(&json!(7)));
    // Without data.
    let call = client.invoke("call-me-back", json!({"procedure": "cb"}));
    let answer = async {
        let req = rt.next(&mut requests, "the server's invoke").await;
        assert_eq!(req.raw_data(), None);
        req.end_empty().expect("respond");
    };
    let (r, ()) = rt.bounded("call-me-back no data", futures::future::join(call, answer)).await;
    assert_eq!(r, Ok(Value::Null));
}

async fn disconnect_with_code_and_reason_reconnects(rt: Rt) {
    let server = Peer::js_server(&[]);
    let client = rt.connect(ClientOptions {
        auto_connect: false,
        backoff: fast_backoff(),
        ..ClientOptions::new(server.url())
    });
    let first = rt.open(&client).await;
    let mut disconnect = client.listener("disconnect");
    let mut close = client.listener("close");
    let mut errors = client.listener("error");
    let mut connect = client.listener("connect");
    let r = rt
        .bounded("disconnect-me", client.invoke("disconnect-me", json!({"code": 4321, "reason": "bye"})))
        .await;
    assert_eq!(r, Ok(Value::Null));
    assert_eq!(
        rt.next(&mut disconnect, "disconnect").await,
        ClientEvent::Disconnect { code: 4321, reason: "bye".into() }
    );
    assert_eq!(rt.next(&mut close, "close").await, ClientEvent::Close { code: 4321, reason: "bye".into() });
    let ClientEvent::Error(e) = rt.next(&mut errors, "error event").await else {
        panic!("not an error event")
    };
    assert_eq!(e.name(), "SocketProtocolError");
    assert_eq!(e.message(), "Socket connection closed with status code 4321 and reason: bye");
    assert_eq!(e.get("code"), Some(&json!(4321)));
    // 4321 < 4500: reconnects after the (fast) backoff.
    let ClientEvent::Connect { id, .. } = rt.next(&mut connect, "reconnect").await else { panic!() };
    assert_ne!(id, first);
    assert_eq!(client.state(), ClientState::Open);
    assert_eq!(rt.bounded("echo", client.invoke("echo", 1)).await, Ok(json!(1)));
}

async fn disconnect_1000_does_not_reconnect(rt: Rt) {
    let server = Peer::js_server(&[]);
    let client = rt.connect(ClientOptions {
        auto_connect: false,
        backoff: fast_backoff(),
        ..ClientOptions::new(server.url())
    });
    rt.open(&client).await;
    let mut disconnect = client.listener("disconnect");
    let mut connecting = client.listener("connecting");
    let mut errors = client.listener("error");
    let r = rt.bounded("disconnect-me", client.invoke("disconnect-me", json!({}))).await;
    assert_eq!(r, Ok(Value::Null));
    assert_eq!(
        rt.next(&mut disconnect, "disconnect").await,
        ClientEvent::Disconnect { code: 1000, reason: "Socket closed normally".into() }
    );
    assert_eq!(client.state(), ClientState::Closed);
    // The fast backoff would reconnect after 100 ms.
    assert_eq!(rt.quiet(&mut connecting, Duration::from_millis(1000)).await, None, "reconnected after 1000");
    assert_eq!(client.state(), ClientState::Closed);
    assert_eq!(errors.next().now_or_never(), None, "no error event for 1000");
    // A call connects again.
    assert_eq!(rt.bounded("echo", client.invoke("echo", 2)).await, Ok(json!(2)));
}

async fn reconnect_and_resubscribe_after_server_restart(rt: Rt) {
    let mut server = Peer::js_server(&[]);
    let port = server.port().to_string();
    let url = server.url();
    let client = rt.connect(ClientOptions {
        auto_connect: false,
        backoff: fast_backoff(),
        ..ClientOptions::new(&url)
    });
    rt.open(&client).await;
    let mut disconnect = client.listener("disconnect");
    let mut connect = client.listener("connect");
    let mut subscribe = client.listener("subscribe");
    let mut aborts = client.listener("connectAbort");
    let mut ch = rt.subscribed(&client, "r").await;
    assert_eq!(
        rt.next(&mut subscribe, "first subscribe").await,
        ClientEvent::Subscribe { channel: "r".into() }
    );

    assert!(server.stop(), "the JS server exits 0 on SIGTERM");
    // server.mjs disconnects its sockets with 1001 when it stops.
    assert_eq!(
        rt.next(&mut disconnect, "disconnect").await,
        ClientEvent::Disconnect { code: 1001, reason: "Socket was disconnected".into() }
    );
    // Subscribed channels went back to pending before the disconnect event.
    assert_eq!(ch.state(), ChannelState::Pending);
    // The client keeps trying; each attempt fails while the server is down.
    let ClientEvent::ConnectAbort { code, .. } = rt.next(&mut aborts, "a failed attempt").await else {
        panic!()
    };
    assert_eq!(code, 1006);
    // A call while the server is down fails with BadConnectionError, not at the ack timeout.
    let start = Instant::now();
    match rt.bounded("invoke while down", client.invoke("echo", 1)).await {
        Err(Error::BadConnection { kind: AbortKind::ConnectAbort, code: 1006, .. }) => {}
        other => panic!("expected BadConnectionError (connectAbort), got {other:?}"),
    }
    assert!(start.elapsed() < Duration::from_secs(5), "{:?}", start.elapsed());

    let server2 = Peer::js_server(&["--port", &port]);
    assert_eq!(server2.port().to_string(), port, "the last --port wins in server.mjs");
    rt.next(&mut connect, "reconnect to the new server").await;
    assert_eq!(rt.next(&mut subscribe, "re-subscribe").await, ClientEvent::Subscribe { channel: "r".into() });
    assert_eq!(ch.state(), ChannelState::Subscribed);
    let other = rt.connected(&url).await;
    rt.bounded("publish from another client", other.invoke_publish("r", "after restart"))
        .await
        .expect("publish");
    assert_eq!(rt.next(&mut ch, "publish after restart").await, json!("after restart"));
    let stats = rt.bounded("stats", other.invoke("stats", ())).await.expect("stats");
    assert_eq!(stats["channels"], json!({"r": 1}), "{stats}");
    assert_eq!(stats["clients"], 2, "{stats}");
}

async fn buffered_while_connecting(rt: Rt) {
    let server = Peer::js_server(&[]);
    let client = rt.client(&server.url());
    let mut subscribe_events = client.listener("subscribe");
    let mut echo = client.receiver("echo");
    // While closed nothing is sent: both channels wait, the higher priority first.
    let mut low = client.subscribe("low", SubscribeOptions::default());
    let mut high = client.subscribe("high", SubscribeOptions { priority: Some(10), ..Default::default() });
    assert_eq!(low.state(), ChannelState::Pending);
    assert_eq!(client.state(), ClientState::Closed);
    client.connect();
    assert_eq!(client.state(), ClientState::Connecting);
    // All of these are made while connecting: buffered in this order, sent after the handshake
    // and after the #subscribe frames. The server handles them in order, so `stats` sees both
    // channels subscribed and the publishes reach us.
    let calls = futures::future::join4(
        client.transmit_publish("low", "t1"),
        client.invoke_publish("high", "i1"),
        client.transmit("echo", "e1"),
        client.invoke("stats", ()),
    );
    let (t1, i1, e1, stats) = rt.bounded("the buffered calls", calls).await;
    assert_eq!((t1, i1, e1), (Ok(()), Ok(()), Ok(())));
    let stats = stats.expect("stats");
    assert_eq!(stats["channels"], json!({"high": 1, "low": 1}), "{stats}");
    // The #subscribe acks come back in the order they were sent: priority order.
    assert_eq!(
        rt.next(&mut subscribe_events, "first ack").await,
        ClientEvent::Subscribe { channel: "high".into() }
    );
    assert_eq!(
        rt.next(&mut subscribe_events, "second ack").await,
        ClientEvent::Subscribe { channel: "low".into() }
    );
    assert_eq!(rt.next(&mut low, "low's message").await, json!("t1"));
    assert_eq!(rt.next(&mut high, "high's message").await, json!("i1"));
    assert_eq!(rt.next(&mut echo, "echo").await, json!("e1"));
}

async fn call_while_server_down_fails_fast(rt: Rt) {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let url = format!("ws://127.0.0.1:{port}/socketcluster/");
    let client = rt.connect(ClientOptions {
        auto_connect: false,
        ack_timeout: Duration::from_secs(30),
        ..ClientOptions::new(&url)
    });
    let mut aborts = client.listener("connectAbort");
    let start = Instant::now();
    match rt.bounded("invoke", client.invoke("echo", 1)).await {
        Err(e @ Error::BadConnection { kind: AbortKind::ConnectAbort, code: 1006, .. }) => {
            let w = e.to_remote();
            assert_eq!(w.name(), "BadConnectionError");
            assert_eq!(w.get("type"), Some(&json!("connectAbort")));
        }
        other => panic!("expected BadConnectionError (connectAbort), got {other:?}"),
    }
    assert!(start.elapsed() < Duration::from_secs(5), "took {:?} (ack timeout 30 s)", start.elapsed());
    let ClientEvent::ConnectAbort { code, reason } = rt.next(&mut aborts, "connectAbort").await else {
        panic!()
    };
    assert_eq!((code, reason.as_str()), (1006, "Socket hung up"));
    assert_eq!(client.state(), ClientState::Closed);
    // A transmit fails the same way (SocketCluster drops it silently; we report it).
    let start = Instant::now();
    let r = rt.bounded("transmit", client.transmit("echo", 1)).await;
    assert!(matches!(r, Err(Error::BadConnection { kind: AbortKind::ConnectAbort, .. })), "{r:?}");
    assert!(start.elapsed() < Duration::from_secs(5));
}

async fn protocol_v1(rt: Rt) {
    let server =
        Peer::js_server(&["--protocol-version", "1", "--ping-interval", "100", "--ping-timeout", "1000"]);
    let client = rt.connect(ClientOptions {
        auto_connect: false,
        protocol_version: ProtocolVersion::V1,
        ..ClientOptions::new(server.url())
    });
    let mut frames = client.listener("message");
    let mut disconnect = client.listener("disconnect");
    let mut raw = client.listener("raw");
    let id = rt.open(&client).await;
    // 15 pings: 1.5 s, more than the server's 1 s pong timeout; each was answered with #2.
    let mut pings = 0;
    while pings < 15 {
        if let ClientEvent::Message(text) = rt.next(&mut frames, "a ping").await
            && text == "#1"
        {
            pings += 1;
        }
    }
    assert_eq!(disconnect.next().now_or_never(), None, "disconnected");
    assert_eq!(raw.next().now_or_never(), None, "a v1 ping was taken for a raw message");
    assert_eq!(client.state(), ClientState::Open);
    assert_eq!(client.id(), Some(id));
    assert_eq!(rt.bounded("echo", client.invoke("echo", "v1")).await, Ok(json!("v1")));
    let e = remote(rt.bounded("fail", client.invoke("fail", ())).await);
    assert_eq!(e.name(), "CustomError");
}

async fn ping_timeout_closes_4000(rt: Rt) {
    // The server never pings; its pingTimeout (1.5 s) is the client's too.
    let server = Peer::js_server(&["--ping-interval", "2147483647", "--ping-timeout", "1500"]);
    let client = rt.client(&server.url());
    let mut disconnect = client.listener("disconnect");
    let mut connect = client.listener("connect");
    client.connect();
    let ClientEvent::Connect { ping_timeout, .. } = rt.next(&mut connect, "connect").await else { panic!() };
    assert_eq!(ping_timeout, 1500);
    let connected = Instant::now();
    // The server would close with 4001 after 1.5 s without a pong, but socketcluster-server 20
    // also counts any message as a sign of life when more than pingTimeout/4 has passed: keep
    // sending, so that it is the client's ping timeout that fires.
    let keep_alive = async {
        loop {
            let _ = client.invoke_raw("echo", None, Duration::from_secs(1)).await;
            rt.sleep(Duration::from_millis(450)).await;
        }
    };
    let ev =
        match futures::future::select(pin!(rt.next(&mut disconnect, "disconnect")), pin!(keep_alive)).await {
            Either::Left((ev, _)) => ev,
            Either::Right(_) => unreachable!(),
        };
    assert_eq!(ev, ClientEvent::Disconnect { code: 4000, reason: "Server ping timed out".into() });
    let after = connected.elapsed();
    assert!(after >= Duration::from_millis(1400), "closed after {after:?}, before the ping timeout");
    // 4000: SocketCluster reconnects at once (first attempt), whatever the backoff.
    rt.next(&mut connect, "immediate reconnect").await;
}

async fn binary_echo(rt: Rt) {
    let server = Peer::js_server(&[]);
    let client = rt.connected(&server.url()).await;
    let hello = binary(b"hello");
    assert_eq!(hello, json!({"base64": true, "data": "aGVsbG8="}));
    let mut echo = client.receiver("echo");
    rt.bounded("transmit binary", client.transmit("echo", &hello)).await.expect("transmit");
    let back = rt.next(&mut echo, "binary echo").await;
    assert_eq!(back, hello);
    assert_eq!(binary_bytes(&back).as_deref(), Some(&b"hello"[..]));
    let back =
        rt.bounded("invoke binary", client.invoke("echo", json!({"bin": &hello}))).await.expect("echo");
    assert_eq!(back, json!({"bin": hello}));
}

async fn foo_delayed_consumer(rt: Rt) {
    let server = Peer::js_server(&["--foo-delay", "1000"]);
    let client = rt.client(&server.url());
    let mut connect = client.listener("connect");
    client.connect();
    // 1..=10 made while connecting (buffered), 11..=20 right after the handshake.
    let buffered = futures::future::join_all((1..=10).map(|i| client.transmit("foo", i)));
    for r in rt.bounded("buffered foo transmits", buffered).await {
        r.expect("transmit foo");
    }
    rt.next(&mut connect, "connect").await;
    let connected = Instant::now();
    for i in 11..=20 {
        rt.bounded("foo transmit", client.transmit("foo", i)).await.expect("transmit foo");
    }
    let log = rt.bounded("foo-log", client.invoke("foo-log", ())).await.expect("foo-log");
    if connected.elapsed() < Duration::from_millis(800) {
        assert_eq!(log, json!([]), "the consumer is still waiting");
    }
    let want: Vec<i32> = (1..=20).collect();
    let got = rt
        .bounded("all 20 in foo-log", async {
            loop {
                let log = client.invoke("foo-log", ()).await.expect("foo-log");
                if log.as_array().is_some_and(|a| a.len() >= 20) {
                    return log;
                }
                rt.sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
    assert_eq!(got, json!(want));
}

async fn dropping_the_client_closes_the_connection(rt: Rt) {
    let server = Peer::js_server(&[]);
    let observer = rt.connected(&server.url()).await;
    let client = rt.connected(&server.url()).await;
    let ch = rt.subscribed(&client, "d").await;
    let stats = rt.bounded("stats", observer.invoke("stats", ())).await.expect("stats");
    assert_eq!(stats["clients"], 2, "{stats}");
    drop(ch);
    drop(client);
    let stats = rt
        .bounded("the server sees the dropped client go", async {
            loop {
                let stats = observer.invoke("stats", ()).await.expect("stats");
                if stats["clients"] == 1 {
                    return stats;
                }
                rt.sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
    assert_eq!(stats["channels"], json!({}), "{stats}");
}

async fn in_flight_call_aborted_by_disconnect(rt: Rt) {
    let server = Peer::js_server(&[]);
    let client = rt.connect(ClientOptions {
        auto_connect: false,
        backoff: fast_backoff(),
        ..ClientOptions::new(server.url())
    });
    rt.open(&client).await;
    let start = Instant::now();
    // `nobody-home` is written first and never answered; the server then disconnects us.
    let calls = futures::future::join(
        client.invoke_raw("nobody-home", Some(json!(1)), Duration::from_secs(30)),
        client.invoke("disconnect-me", json!({"code": 4321, "reason": "bye"})),
    );
    let (lost, done) = rt.bounded("the calls", calls).await;
    assert_eq!(done, Ok(Value::Null));
    let e = lost.expect_err("aborted");
    assert_eq!(
        e,
        Error::BadConnection {
            event: "nobody-home".into(),
            kind: AbortKind::Disconnect,
            code: 4321,
            reason: "bye".into()
        }
    );
    assert_eq!(e.to_remote().message(), "Event nobody-home was aborted due to a bad connection");
    assert!(start.elapsed() < Duration::from_secs(10), "{:?}", start.elapsed());
}

async fn client_disconnect(rt: Rt) {
    let server = Peer::js_server(&[]);
    let observer = rt.connected(&server.url()).await;
    let client = rt.connect(ClientOptions {
        auto_connect: false,
        backoff: fast_backoff(),
        ..ClientOptions::new(server.url())
    });
    let first = rt.open(&client).await;
    let mut disconnect = client.listener("disconnect");
    let mut connect = client.listener("connect");
    // A code below 4500 other than 1000: SocketCluster's client reconnects after its own
    // disconnect too.
    client.disconnect(4100, "later");
    assert_eq!(
        rt.next(&mut disconnect, "disconnect").await,
        ClientEvent::Disconnect { code: 4100, reason: "later".into() }
    );
    let ClientEvent::Connect { id, .. } = rt.next(&mut connect, "reconnect").await else { panic!() };
    assert_ne!(id, first);
    // 1000: closed for good.
    client.disconnect(1000, "");
    assert_eq!(
        rt.next(&mut disconnect, "disconnect").await,
        ClientEvent::Disconnect { code: 1000, reason: "Socket closed normally".into() }
    );
    assert_eq!(client.state(), ClientState::Closed);
    let stats = rt
        .bounded("the server sees the client go", async {
            loop {
                let stats = observer.invoke("stats", ()).await.expect("stats");
                if stats["clients"] == 1 {
                    return stats;
                }
                rt.sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
    assert_eq!(stats["clients"], 1);
    assert_eq!(rt.quiet(&mut connect, Duration::from_millis(500)).await, None, "reconnected after 1000");
}

async fn subscribe_fail_and_wait_for_auth(rt: Rt) {
    let server = Peer::js_server(&[]);
    let client = rt.connected(&server.url()).await;
    let mut fails = client.listener("subscribeFail");
    let mut subscribes = client.listener("subscribe");
    let mut authenticate = client.listener("authenticate");
    // Refused: private/ needs authentication (server.mjs's middleware).
    let ch = client.subscribe("private/a", SubscribeOptions::default());
    let ClientEvent::SubscribeFail { channel, error } = rt.next(&mut fails, "subscribeFail").await else {
        panic!()
    };
    assert_eq!(channel, "private/a");
    assert_eq!(error.name(), "AuthRequiredError");
    assert_eq!(ch.state(), ChannelState::Unsubscribed);
    // waitForAuth: not sent until the socket is authenticated.
    let mut waiting =
        client.subscribe("private/b", SubscribeOptions { wait_for_auth: true, ..Default::default() });
    let mut probe = client.channel("private/b").listener("subscribe");
    assert_eq!(rt.quiet(&mut probe, Duration::from_millis(300)).await, None, "subscribed before auth");
    assert_eq!(waiting.state(), ChannelState::Pending);
    let r = rt.bounded("login", client.invoke("login", json!({"user": "bob"}))).await;
    assert_eq!(r, Ok(json!("ok")));
    let ClientEvent::Authenticate { signed_auth_token } = rt.next(&mut authenticate, "authenticate").await
    else {
        panic!()
    };
    assert_eq!(client.signed_auth_token(), Some(signed_auth_token));
    assert_eq!(client.auth_token().map(|t| t["user"].clone()), Some(json!("bob")));
    assert_eq!(
        rt.next(&mut subscribes, "subscribe after auth").await,
        ClientEvent::Subscribe { channel: "private/b".into() }
    );
    assert_eq!(waiting.state(), ChannelState::Subscribed);
    let whoami = rt.bounded("whoami", client.invoke("whoami", ())).await.expect("whoami");
    assert_eq!(whoami["user"], "bob");
    rt.bounded("publish", client.invoke_publish("private/b", 1)).await.expect("publish");
    assert_eq!(rt.next(&mut waiting, "private message").await, json!(1));
}

/// Logs in on a fresh connection and returns the signed token the server set.
async fn login(rt: &Rt, url: &str, payload: Value) -> String {
    let client = rt.connected(url).await;
    let mut authenticate = client.listener("authenticate");
    assert_eq!(rt.bounded("login", client.invoke("login", payload)).await, Ok(json!("ok")));
    let ClientEvent::Authenticate { signed_auth_token } = rt.next(&mut authenticate, "authenticate").await
    else {
        panic!()
    };
    client.disconnect(1000, "");
    signed_auth_token
}

async fn auth_token_in_handshake(rt: Rt) {
    let server = Peer::js_server(&[]);
    let token = login(&rt, &server.url(), json!({"user": "ann"})).await;
    // A valid token: authenticated by the handshake.
    let client = rt.connect(ClientOptions {
        auto_connect: false,
        auth_token: Some(token.clone()),
        ..ClientOptions::new(server.url())
    });
    let mut connect = client.listener("connect");
    let mut authenticate = client.listener("authenticate");
    client.connect();
    let ClientEvent::Connect { is_authenticated, auth_error, .. } = rt.next(&mut connect, "connect").await
    else {
        panic!()
    };
    assert!(is_authenticated);
    assert_eq!(auth_error, None);
    assert_eq!(
        rt.next(&mut authenticate, "authenticate").await,
        ClientEvent::Authenticate { signed_auth_token: token.clone() }
    );
    assert_eq!(client.auth_state(), socketcluster::client::AuthState::Authenticated);
    let whoami = rt.bounded("whoami", client.invoke("whoami", ())).await.expect("whoami");
    assert_eq!(whoami["user"], "ann", "{whoami}");
    // A bad token: connected, not authenticated, the token is dropped.
    let client = rt.connect(ClientOptions {
        auto_connect: false,
        auth_token: Some("garbage.token.value".into()),
        ..ClientOptions::new(server.url())
    });
    let mut connect = client.listener("connect");
    client.connect();
    let ClientEvent::Connect { is_authenticated, auth_error, .. } = rt.next(&mut connect, "connect").await
    else {
        panic!()
    };
    assert!(!is_authenticated);
    assert_eq!(auth_error.as_ref().map(RemoteError::name), Some("AuthTokenInvalidError"), "{auth_error:?}");
    assert_eq!(client.signed_auth_token(), None);
    assert_eq!(client.auth_state(), socketcluster::client::AuthState::Unauthenticated);
    let whoami = rt.bounded("whoami", client.invoke("whoami", ())).await.expect("whoami");
    assert_eq!(whoami, Value::Null);
}

async fn banned_token_handshake_is_final(rt: Rt) {
    let server = Peer::js_server(&[]);
    let token = login(&rt, &server.url(), json!({"user": "eve", "banned": true})).await;
    let client = rt.connect(ClientOptions {
        auto_connect: false,
        auth_token: Some(token),
        backoff: fast_backoff(),
        ..ClientOptions::new(server.url())
    });
    let mut aborts = client.listener("connectAbort");
    let mut connecting = client.listener("connecting");
    let mut connect = client.listener("connect");
    // A call made while connecting fails with the handshake.
    let r = rt.bounded("invoke", client.invoke("echo", 1)).await;
    match r {
        Err(Error::BadConnection { kind: AbortKind::ConnectAbort, code: 4501, .. }) => {}
        other => panic!("expected BadConnectionError 4501, got {other:?}"),
    }
    assert_eq!(
        rt.next(&mut aborts, "connectAbort").await,
        ClientEvent::ConnectAbort { code: 4501, reason: "BannedError: This auth token is banned".into() }
    );
    assert_eq!(rt.next(&mut connecting, "the attempt").await, ClientEvent::Connecting);
    // 4501 >= 4500: no reconnect, although the backoff is 100 ms.
    assert_eq!(rt.quiet(&mut connecting, Duration::from_millis(1000)).await, None, "reconnected after 4501");
    assert_eq!(connect.next().now_or_never(), None);
    assert_eq!(client.state(), ClientState::Closed);
}

/// `disconnect()` changes the state at once, as in SocketCluster: a `connect()` or a call right
/// after it starts a new connection instead of being lost in the old one.
async fn disconnect_is_synchronous(rt: Rt) {
    let server = Peer::js_server(&[]);
    let client = rt.client(&server.url());
    let first = rt.open(&client).await;
    let mut disconnect = client.listener("disconnect");
    let mut connect = client.listener("connect");
    client.disconnect(1000, "");
    assert_eq!(client.state(), ClientState::Closed, "right after disconnect()");
    assert_eq!(client.id(), None);
    client.connect();
    assert_eq!(client.state(), ClientState::Connecting, "right after connect()");
    assert_eq!(
        rt.next(&mut disconnect, "disconnect").await,
        ClientEvent::Disconnect { code: 1000, reason: "Socket closed normally".into() }
    );
    let ClientEvent::Connect { id, .. } = rt.next(&mut connect, "the new connection").await else { panic!() };
    assert_ne!(id, first);
    // A call right after disconnect() reconnects and is sent on the new connection.
    let mut echo = client.receiver("echo");
    client.disconnect(1000, "");
    assert_eq!(client.state(), ClientState::Closed);
    rt.bounded("transmit after disconnect", client.transmit("echo", "again")).await.expect("transmit");
    let ClientEvent::Connect { id: third, .. } = rt.next(&mut connect, "reconnected by the call").await
    else {
        panic!()
    };
    assert_ne!(third, id);
    assert_eq!(rt.next(&mut echo, "the echo").await, json!("again"));
    assert_eq!(client.id(), Some(third));
}

/// socketcluster-client's "Should correctly handle multiple successive connect and disconnect
/// calls": each `disconnect()` while connecting aborts that attempt at once with its own code.
async fn successive_connect_and_disconnect(rt: Rt) {
    let server = Peer::js_server(&[]);
    let client = rt.client(&server.url());
    let mut connecting = client.listener("connecting");
    let mut aborts = client.listener("connectAbort");
    let mut disconnects = client.listener("disconnect");
    let mut closes = client.listener("close");
    let mut connect = client.listener("connect");
    let mut all = client.events();
    client.connect();
    client.disconnect(1000, "One");
    assert_eq!(client.state(), ClientState::Closed);
    client.connect();
    client.disconnect(4444, "Two");
    assert_eq!(client.state(), ClientState::Closed);
    client.connect();
    assert_eq!(client.state(), ClientState::Connecting);
    rt.next(&mut connect, "connect").await;
    client.disconnect(4455, "Three");
    assert_eq!(client.state(), ClientState::Closed);
    for _ in 0..3 {
        assert_eq!(rt.next(&mut connecting, "connecting").await, ClientEvent::Connecting);
    }
    let abort = |code, reason: &str| ClientEvent::ConnectAbort { code, reason: reason.into() };
    assert_eq!(rt.next(&mut aborts, "first abort").await, abort(1000, "One"));
    assert_eq!(rt.next(&mut aborts, "second abort").await, abort(4444, "Two"));
    assert_eq!(
        rt.next(&mut disconnects, "disconnect").await,
        ClientEvent::Disconnect { code: 4455, reason: "Three".into() }
    );
    let close = |code, reason: &str| ClientEvent::Close { code, reason: reason.into() };
    assert_eq!(rt.next(&mut closes, "close 1").await, close(1000, "One"));
    assert_eq!(rt.next(&mut closes, "close 2").await, close(4444, "Two"));
    assert_eq!(rt.next(&mut closes, "close 3").await, close(4455, "Three"));
    // The exact sequence (socketcluster-client's test); `error` events aside.
    let mut seen = Vec::new();
    while let Some(Some(ev)) = all.next().now_or_never() {
        match ev {
            ClientEvent::Connect { .. } => seen.push(String::from("connect")),
            ClientEvent::Connecting => seen.push(String::from("connecting")),
            ClientEvent::ConnectAbort { code, reason } => seen.push(format!("connectAbort {code} {reason}")),
            ClientEvent::Disconnect { code, reason } => seen.push(format!("disconnect {code} {reason}")),
            ClientEvent::Close { code, reason } => seen.push(format!("close {code} {reason}")),
            _ => {}
        }
    }
    assert_eq!(
        seen,
        [
            "connecting",
            "connectAbort 1000 One",
            "close 1000 One",
            "connecting",
            "connectAbort 4444 Two",
            "close 4444 Two",
            "connecting",
            "connect",
            "disconnect 4455 Three",
            "close 4455 Three",
        ]
    );
    // Nothing else: one connection, and the default backoff (10 s or more) before a reconnect.
    assert_eq!(rt.quiet(&mut connecting, Duration::from_millis(300)).await, None);
    assert_eq!(aborts.next().now_or_never(), None);
    assert_eq!(connect.next().now_or_never(), None);
}

/// `disconnect()` while the WebSocket upgrade is still in flight (a server that accepts the TCP
/// connection and never answers) aborts the attempt at once with its code, not after the connect
/// timeout with 4007.
async fn disconnect_during_the_upgrade(rt: Rt) {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("ws://{}/socketcluster/", silent.local_addr().expect("addr"));
    let client =
        rt.connect(ClientOptions { auto_connect: false, backoff: fast_backoff(), ..ClientOptions::new(url) });
    let mut aborts = client.listener("connectAbort");
    let mut connecting = client.listener("connecting");
    client.connect();
    assert_eq!(rt.next(&mut connecting, "connecting").await, ClientEvent::Connecting);
    // Let the client's TCP connection and upgrade request reach the silent server.
    let (_tcp, _) =
        rt.bounded("the client's TCP connection", async { silent.accept() }).await.expect("accept");
    client.disconnect(1000, "");
    assert_eq!(client.state(), ClientState::Closed);
    let start = Instant::now();
    assert_eq!(
        rt.next(&mut aborts, "connectAbort").await,
        ClientEvent::ConnectAbort { code: 1000, reason: "Socket closed normally".into() }
    );
    assert!(start.elapsed() < Duration::from_secs(5), "{:?}", start.elapsed());
    // 1000: no reconnect, although the backoff is 100 ms.
    assert_eq!(rt.quiet(&mut connecting, Duration::from_millis(500)).await, None, "reconnected");
    assert_eq!(client.state(), ClientState::Closed);
}

/// A WebSocket server on a thread that completes the upgrade, never answers `#handshake`, and
/// reports the client's frames.
fn mute_websocket_server() -> (String, std::sync::mpsc::Receiver<async_tungstenite::tungstenite::Message>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("ws://{}/socketcluster/", listener.local_addr().expect("addr"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let Ok((tcp, _)) = listener.accept() else { return };
        let Ok(mut ws) = async_tungstenite::tungstenite::accept(tcp) else { return };
        while let Ok(m) = ws.read() {
            let close = m.is_close();
            if tx.send(m).is_err() || close {
                return;
            }
        }
    });
    (url, rx)
}

/// `disconnect()` while `#handshake` waits for its answer: `connectAbort` with the code, and the
/// close frame on the wire carries that code (1000), as socketcluster-client's does.
async fn disconnect_during_the_handshake_closes_1000(rt: Rt) {
    use async_tungstenite::tungstenite::Message;
    let (url, frames) = mute_websocket_server();
    let client = rt.connect(ClientOptions { auto_connect: false, ..ClientOptions::new(url) });
    let mut aborts = client.listener("connectAbort");
    let mut closes = client.listener("close");
    let mut disconnects = client.listener("disconnect");
    client.connect();
    let next_frame = || {
        let frames = &frames;
        async move { frames.recv_timeout(client_rt::LIMIT).expect("a frame from the client") }
    };
    let Message::Text(handshake) = rt.bounded("#handshake", next_frame()).await else { panic!("not text") };
    assert!(handshake.contains("#handshake"), "{handshake}");
    client.disconnect(1000, "");
    assert_eq!(client.state(), ClientState::Closed);
    assert_eq!(
        rt.next(&mut aborts, "connectAbort").await,
        ClientEvent::ConnectAbort { code: 1000, reason: "Socket closed normally".into() }
    );
    match rt.bounded("the close frame", next_frame()).await {
        Message::Close(Some(f)) => assert_eq!(u16::from(f.code), 1000, "{f:?}"),
        other => panic!("expected a close frame with code 1000, got {other:?}"),
    }
    // socketcluster-client's "close event if the socket disconnects in the middle of the
    // handshake phase": connectAbort and close, no disconnect.
    assert_eq!(
        rt.next(&mut closes, "close").await,
        ClientEvent::Close { code: 1000, reason: "Socket closed normally".into() }
    );
    assert_eq!(disconnects.next().now_or_never(), None);
}

/// Calls buffered while connecting leave first: a call made by another thread the moment the
/// client is open comes after them (socketcluster-client opens and flushes in one step).
async fn calls_after_open_follow_the_buffer(rt: Rt) {
    let server = Peer::js_server(&["--foo-delay", "0"]);
    for round in 0..5 {
        let client = rt.client(&server.url());
        let mut connect = client.listener("connect");
        client.connect();
        let spinner = {
            let client = client.clone();
            std::thread::spawn(move || {
                let start = Instant::now();
                while client.state() != ClientState::Open {
                    assert!(start.elapsed() < client_rt::LIMIT, "never open");
                    std::hint::spin_loop();
                }
                futures::executor::block_on(client.transmit("foo", 11))
            })
        };
        let buffered = futures::future::join_all((1..=10).map(|i| client.transmit("foo", i)));
        for r in rt.bounded("buffered foo transmits", buffered).await {
            r.expect("transmit foo");
        }
        rt.next(&mut connect, "connect").await;
        rt.bounded("the spinner", async {
            while !spinner.is_finished() {
                rt.sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        spinner.join().expect("spinner").expect("transmit 11");
        let got = rt
            .bounded("all 11 in foo-log", async {
                loop {
                    let log = client.invoke("foo-log", ()).await.expect("foo-log");
                    if log.as_array().is_some_and(|a| a.len() >= 11) {
                        return log;
                    }
                    rt.sleep(Duration::from_millis(20)).await;
                }
            })
            .await;
        let want: Vec<i32> = (1..=11).collect();
        assert_eq!(got, json!(want), "round {round}");
    }
}

/// socketcluster-client's "Should gracefully handle authenticate abortion due to
/// disconnection": `authenticate()` then `disconnect()` at once: the call fails with
/// `BadConnectionError`, the client stays unauthenticated, closed.
async fn authenticate_aborted_by_disconnect(rt: Rt) {
    let server = Peer::js_server(&[]);
    let token = login(&rt, &server.url(), json!({"user": "bob"})).await;
    let client = rt.connected(&server.url()).await;
    let mut connecting = client.listener("connecting");
    let auth = client.authenticate(&token);
    client.disconnect(1000, "");
    match rt.bounded("authenticate", auth).await {
        Err(Error::BadConnection { event, kind: AbortKind::Disconnect, code: 1000, .. }) => {
            assert_eq!(event, "#authenticate");
        }
        other => panic!("expected BadConnectionError, got {other:?}"),
    }
    assert_eq!(client.auth_state(), socketcluster::client::AuthState::Unauthenticated);
    assert_eq!(client.signed_auth_token(), None);
    assert_eq!(rt.quiet(&mut connecting, Duration::from_millis(300)).await, None, "reconnected");
    assert_eq!(client.state(), ClientState::Closed);
}

/// The server process dies (no close frame): `disconnect` 1006 "Socket hung up", an `error`,
/// attempts that fail with 1006 on the backoff, and a reconnect once a server is back.
async fn abnormal_close_reconnects_with_backoff(rt: Rt) {
    let server = Peer::js_server(&[]);
    let port = server.port().to_string();
    let client = rt.connect(ClientOptions {
        auto_connect: false,
        backoff: fast_backoff(),
        ..ClientOptions::new(server.url())
    });
    let first = rt.open(&client).await;
    let mut disconnect = client.listener("disconnect");
    let mut errors = client.listener("error");
    let mut aborts = client.listener("connectAbort");
    let mut connect = client.listener("connect");
    drop(server); // SIGKILL
    assert_eq!(
        rt.next(&mut disconnect, "disconnect").await,
        ClientEvent::Disconnect { code: 1006, reason: "Socket hung up".into() }
    );
    let ClientEvent::Error(e) = rt.next(&mut errors, "error").await else { panic!() };
    assert_eq!((e.name(), e.message()), ("SocketProtocolError", "Socket hung up"));
    let start = Instant::now();
    assert_eq!(
        rt.next(&mut aborts, "a failed attempt").await,
        ClientEvent::ConnectAbort { code: 1006, reason: "Socket hung up".into() }
    );
    // 1006: the backoff (100 ms), not an immediate retry.
    assert!(start.elapsed() >= Duration::from_millis(80), "{:?}", start.elapsed());
    let _server = Peer::js_server(&["--port", &port]);
    let ClientEvent::Connect { id, .. } = rt.next(&mut connect, "reconnect").await else { panic!() };
    assert_ne!(id, first);
}

/// Channels are listed, and go back to pending when the connection drops, in the order they
/// were subscribed (socketcluster-client's channel map), every `unsubscribe` before the
/// `disconnect` of the same close.
async fn channels_keep_subscription_order(rt: Rt) {
    let server = Peer::js_server(&[]);
    let client = rt.connected(&server.url()).await;
    let names = ["zeta", "mid", "alpha"];
    for name in names {
        rt.subscribed(&client, name).await;
    }
    assert_eq!(client.subscriptions(false), names);
    let mut all = client.events();
    client.disconnect(1000, "");
    let mut seen = Vec::new();
    while let Some(Some(ev)) = all.next().now_or_never() {
        match ev {
            ClientEvent::Unsubscribe { channel } => seen.push(channel),
            ClientEvent::Disconnect { .. } => seen.push(String::from("(disconnect)")),
            _ => {}
        }
    }
    assert_eq!(seen, ["zeta", "mid", "alpha", "(disconnect)"]);
    assert_eq!(client.subscriptions(true), names);
}
