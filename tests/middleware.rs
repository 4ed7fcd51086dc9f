//! The server's middleware, one test per action type — each both letting actions through
//! (replacing the data where the type allows it) and blocking them — plus ordering and
//! replacement at runtime (SocketCluster protocol reference §1.1, §1.5, §1.10, §3.7, §5.1
//! "Middleware").
//!
//! Our server runs in-process on smol and on tokio (`smol_rt::NAME`, `tokio_rt::NAME`), driven by
//! a raw WebSocket client (`support/raw.rs`) that sees the exact frames. "Dropped" is shown by
//! order: a socket's packets are handled in order and its frames leave in order, so when the next
//! frame answers a later packet, nothing was sent for the earlier one. Every wait is bounded;
//! sleeps appear only in the middleware that delays an action.
#![cfg(feature = "smol")]
#![allow(clippy::unwrap_used)]

#[path = "support/util.rs"]
mod util;

#[macro_use]
#[path = "support/raw.rs"]
mod raw;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use socketcluster::auth::{AuthState, JwtAuth};
use socketcluster::protocol::RemoteError;
use socketcluster::server::{
    Blocked, HandshakeAction, InboundAction, Middleware, OutboundAction, ServerEvent, ServerOptions,
};

use raw::{Harness, Raw, Rt, Warning, error_response, http_upgrade, next_ev, next_of, remove_auth_token};

on_both_runtimes!(
    handshake_ws,
    handshake_sc,
    handshake_sc_custom_status_code,
    inbound_raw,
    transmit,
    invoke,
    subscribe,
    publish_in,
    authenticate,
    publish_out,
    delayed_action_holds_back_only_its_socket,
    set_middleware_applies_to_new_sockets_only,
);

const KEY: &str = "middleware-test-key";

fn with_middleware(middleware: Middleware) -> ServerOptions {
    ServerOptions { middleware, auth: Some(JwtAuth::hs256(KEY)), ..ServerOptions::default() }
}

fn token(claims: Value) -> Value {
    json!(JwtAuth::hs256(KEY).sign(&claims, None).unwrap())
}

/// `SilentMiddlewareBlockedError` as the client gets it.
fn silent(action: &str, middleware: &str) -> Value {
    json!({
        "message": format!("The {action} AGAction was blocked by {middleware} middleware"),
        "name": "SilentMiddlewareBlockedError",
        "type": middleware
    })
}

/// A `#publish` delivery.
fn publish(channel: &str, data: Value) -> Value {
    json!({"event": "#publish", "data": {"channel": channel, "data": data}})
}

/// The next warning named `name`.
async fn warning_named(h: &Harness, name: &str) -> Warning {
    h.warning_where(&format!("a {name} warning"), |(e, _)| e.name() == name).await
}

// ---------------------------------------------------------------------------------------------
// HANDSHAKE_WS
// ---------------------------------------------------------------------------------------------

/// HANDSHAKE_WS sees the upgrade request (URI, `Origin`, peer address). Blocked: HTTP 401 with
/// the error's message as the body (the generic message for a silent block), a `warning`, no
/// socket. Allowed: the WebSocket opens and the SocketCluster handshake works.
async fn handshake_ws(rt: Rt) {
    let (tx, seen) = async_channel::unbounded();
    let middleware = Middleware::new().handshake(move |action| {
        let tx = tx.clone();
        async move {
            if let HandshakeAction::Ws { request_uri, origin, remote_address } = action {
                let _ = tx.try_send((request_uri.clone(), origin, remote_address));
                if request_uri.contains("reject=1") {
                    return Err(Blocked::with(RemoteError::new(
                        "HandshakeRejectedError",
                        "Rejected by the reject=1 rule",
                    )));
                }
                if request_uri.contains("reject=silent") {
                    return Err(Blocked::silent());
                }
            }
            Ok(())
        }
    });
    let h = Harness::start(rt, with_middleware(middleware)).await;
    let mut handshakes = h.server.listener("handshake");

    let r = http_upgrade(h.addr, "/socketcluster/?reject=1", Some("http://app.example")).await;
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(r.body, "Rejected by the reject=1 rule");
    let (uri, origin, remote) = next_of(&seen, "the HANDSHAKE_WS action").await;
    assert_eq!(uri, "/socketcluster/?reject=1");
    assert_eq!(origin.as_deref(), Some("http://app.example"));
    assert_eq!(remote.map(|a| a.ip()), Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    let (e, socket) = h.warning().await;
    assert_eq!(
        (e.name(), e.message(), socket),
        ("HandshakeRejectedError", "Rejected by the reject=1 rule", None)
    );

    let r = http_upgrade(h.addr, "/socketcluster/?reject=silent", None).await;
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(r.body, "The handshakeWS AGAction was blocked by handshake middleware");
    let (uri, origin, _) = next_of(&seen, "the HANDSHAKE_WS action").await;
    assert_eq!((uri.as_str(), origin), ("/socketcluster/?reject=silent", None));
    let (e, _) = h.warning().await;
    assert_eq!(e.into_value(), silent("handshakeWS", "handshake"));

    // Allowed.
    let (mut c, _) = Raw::open_at(h.addr, "/socketcluster/?reject=0").await;
    c.echo(2, json!("open")).await;
    let (uri, _, _) = next_of(&seen, "the HANDSHAKE_WS action").await;
    assert_eq!(uri, "/socketcluster/?reject=0");
    // Only the allowed request made a socket.
    let ServerEvent::Handshake { socket } = next_ev(&mut handshakes, "the handshake event").await else {
        panic!()
    };
    assert_eq!(socket.request_uri(), "/socketcluster/?reject=0");
    assert!(raw::ready(&mut handshakes).is_empty());
    assert_eq!(h.server.clients_count(), 1);
    assert!(h.warnings.is_empty());
}

// ---------------------------------------------------------------------------------------------
// HANDSHAKE_SC
// ---------------------------------------------------------------------------------------------

/// The HANDSHAKE_SC middleware of these tests: what the token's `mode` says.
fn handshake_sc_middleware(tx: async_channel::Sender<(Option<Value>, Option<RemoteError>)>) -> Middleware {
    Middleware::new().handshake(move |action| {
        let tx = tx.clone();
        async move {
            let HandshakeAction::Sc { auth_token, auth_error, .. } = action else { return Ok(()) };
            let _ = tx.try_send((auth_token.clone(), auth_error));
            let mode = auth_token.as_ref().and_then(|t| t["mode"].as_str().map(String::from));
            match mode.as_deref() {
                Some("block") => Err(Blocked::with(RemoteError::new("HsError", "sc blocked"))),
                Some("silent") => Err(Blocked::silent()),
                Some("ban") => Err(Blocked::with(
                    RemoteError::new("BannedError", "This auth token is banned").with("extra", 1),
                )
                .status_code(4501)),
                _ => Ok(()),
            }
        }
    })
}

/// HANDSHAKE_SC blocked: the error response with `statusCode` 4008, then close 4008 (no
/// `connection`, a `connectionAbort`, a `warning`); silently: the generic error. Allowed: the
/// action carries the verified token, or the token's error, and the socket connects.
async fn handshake_sc(rt: Rt) {
    let (tx, seen) = async_channel::unbounded();
    let mut h = Harness::start(rt, with_middleware(handshake_sc_middleware(tx))).await;
    let mut aborts = h.server.listener("connectionAbort");

    let mut c = Raw::connect(h.addr).await;
    let r = c.handshake(token(json!({"mode": "block"}))).await;
    assert_eq!(
        r,
        json!({"rid": 1, "error": {"message": "sc blocked", "name": "HsError", "statusCode": 4008}})
    );
    assert_eq!(c.expect_close().await, 4008);
    match next_ev(&mut aborts, "connectionAbort").await {
        ServerEvent::ConnectionAbort { code, .. } => assert_eq!(code, 4008),
        other => panic!("{other:?}"),
    }
    let (auth_token, auth_error) = next_of(&seen, "the HANDSHAKE_SC action").await;
    assert_eq!(auth_token.unwrap()["mode"], "block");
    assert_eq!(auth_error, None);
    let (e, socket) = warning_named(&h, "HsError").await;
    assert_eq!(e.message(), "sc blocked");
    assert!(socket.is_some());

    let mut c = Raw::connect(h.addr).await;
    let r = c.handshake(token(json!({"mode": "silent"}))).await;
    let mut expected = silent("handshakeSC", "handshake");
    expected["statusCode"] = json!(4008);
    assert_eq!(r, json!({"rid": 1, "error": expected}));
    assert_eq!(c.expect_close().await, 4008);
    next_of(&seen, "the HANDSHAKE_SC action").await;
    warning_named(&h, "SilentMiddlewareBlockedError").await;

    // Allowed, with a valid token: authenticated.
    let mut c = Raw::connect(h.addr).await;
    let r = c.handshake(token(json!({"mode": "pass", "username": "bob"}))).await;
    assert_eq!(r["data"]["isAuthenticated"], true, "{r}");
    c.echo(2, json!("open")).await;
    let (auth_token, auth_error) = next_of(&seen, "the HANDSHAKE_SC action").await;
    assert_eq!(auth_token.unwrap()["username"], "bob");
    assert_eq!(auth_error, None);
    let socket = h.conn(r["data"]["id"].as_str().unwrap()).await.socket;
    assert_eq!(socket.auth_state(), AuthState::Authenticated);

    // Allowed, with a bad token: the action has the token's error.
    let mut c = Raw::connect(h.addr).await;
    let r = c.handshake(json!("garbage.token.value")).await;
    assert_eq!(r["data"]["isAuthenticated"], false, "{r}");
    let (auth_token, auth_error) = next_of(&seen, "the HANDSHAKE_SC action").await;
    assert_eq!(auth_token, None);
    assert_eq!(auth_error.unwrap().name(), "AuthTokenInvalidError");

    // Without a token.
    let (mut c, _) = Raw::open(h.addr).await;
    c.echo(2, json!("open")).await;
    assert_eq!(next_of(&seen, "the HANDSHAKE_SC action").await, (None, None));
    assert_eq!(h.server.clients_count(), 3);
}

/// A HANDSHAKE_SC block with a status code: the error response carries it and the socket is
/// closed with it (4501: the JS client does not reconnect).
async fn handshake_sc_custom_status_code(rt: Rt) {
    let (tx, _seen) = async_channel::unbounded();
    let h = Harness::start(rt, with_middleware(handshake_sc_middleware(tx))).await;
    let mut aborts = h.server.listener("connectionAbort");
    let mut c = Raw::connect(h.addr).await;
    let r = c.handshake(token(json!({"mode": "ban"}))).await;
    assert_eq!(
        r,
        json!({"rid": 1, "error": {
            "message": "This auth token is banned",
            "name": "BannedError",
            "extra": 1,
            "statusCode": 4501
        }})
    );
    assert_eq!(c.expect_close().await, 4501);
    match next_ev(&mut aborts, "connectionAbort").await {
        ServerEvent::ConnectionAbort { code, .. } => assert_eq!(code, 4501),
        other => panic!("{other:?}"),
    }
    let (e, _) = warning_named(&h, "BannedError").await;
    assert_eq!(e.get("statusCode"), None, "the warning is the middleware's own error");
    assert_eq!(h.server.clients_count(), 0);
    assert_eq!(h.server.pending_clients_count(), 0);
}

// ---------------------------------------------------------------------------------------------
// INBOUND_RAW
// ---------------------------------------------------------------------------------------------

/// INBOUND_RAW sees every inbound message's text (the handshake too). Blocked: the message is
/// dropped — no answer, no transmit — and a `warning` names the error (the generic one for a
/// silent block). Allowed: handled as usual.
async fn inbound_raw(rt: Rt) {
    let (tx, seen) = async_channel::unbounded();
    let middleware = Middleware::new().inbound_raw(move |action| {
        let tx = tx.clone();
        async move {
            if action.message.is_empty() {
                return Ok(()); // a pong
            }
            let _ = tx.try_send((action.socket.id().to_string(), action.message.clone()));
            if action.message.contains("drop-me") {
                return Err(Blocked::with(RemoteError::new("RawBlockedError", "dropped")));
            }
            if action.message.contains("drop-silently") {
                return Err(Blocked::silent());
            }
            Ok(())
        }
    });
    let mut h = Harness::start(rt, with_middleware(middleware)).await;
    let (mut c, id) = Raw::open(h.addr).await;
    let conn = h.conn(&id).await;
    let frames = [
        json!({"event": "echo", "data": "drop-me", "cid": 2}).to_string(),
        json!({"event": "rec", "data": "drop-silently"}).to_string(),
        json!({"event": "rec", "data": "kept"}).to_string(),
    ];
    for f in &frames {
        c.text(f.as_str()).await;
    }
    c.echo(3, json!("answered")).await;
    assert_eq!(next_of(&conn.rec, "the kept transmit").await, Some(json!("kept")));

    let (sid, handshake) = next_of(&seen, "the handshake message").await;
    assert_eq!(sid, id);
    assert!(handshake.contains("#handshake"), "{handshake}");
    for f in &frames {
        assert_eq!(next_of(&seen, "a raw action").await, (id.clone(), f.clone()));
    }
    let (e, socket) = h.warning().await;
    assert_eq!((e.name(), e.message(), socket.as_deref()), ("RawBlockedError", "dropped", Some(id.as_str())));
    let (e, _) = h.warning().await;
    assert_eq!(e.into_value(), silent("message", "inboundRaw"));
    c.text(json!({"event": "rec", "data": "last"}).to_string()).await;
    assert_eq!(next_of(&conn.rec, "the last transmit").await, Some(json!("last")), "nothing else came");
    assert!(h.warnings.is_empty());
}

// ---------------------------------------------------------------------------------------------
// INBOUND: TRANSMIT, INVOKE, SUBSCRIBE, PUBLISH_IN, AUTHENTICATE
// ---------------------------------------------------------------------------------------------

/// TRANSMIT: blocked → dropped (no answer), `warning`; allowed with replaced data → the receiver
/// gets the replacement; allowed as is → unchanged.
async fn transmit(rt: Rt) {
    let (tx, seen) = async_channel::unbounded();
    let middleware = Middleware::new().inbound(move |mut action| {
        let tx = tx.clone();
        async move {
            if let InboundAction::Transmit { event, data, .. } = &mut action {
                let _ = tx.try_send((event.clone(), data.clone()));
                match data.as_ref().and_then(Value::as_str) {
                    Some("block") => {
                        return Err(Blocked::with(RemoteError::new("TransmitBlockedError", "no")));
                    }
                    Some("replace") => *data = Some(json!({"replaced": true})),
                    _ => {}
                }
            }
            Ok(action)
        }
    });
    let mut h = Harness::start(rt, with_middleware(middleware)).await;
    let (mut c, id) = Raw::open(h.addr).await;
    let conn = h.conn(&id).await;
    for data in ["keep", "block", "replace"] {
        c.json(json!({"event": "rec", "data": data})).await;
    }
    c.json(json!({"event": "rec"})).await;
    c.echo(2, json!("no answer to any transmit before this")).await;
    assert_eq!(next_of(&conn.rec, "transmit").await, Some(json!("keep")));
    assert_eq!(next_of(&conn.rec, "transmit").await, Some(json!({"replaced": true})));
    assert_eq!(next_of(&conn.rec, "transmit").await, None);
    for data in [Some(json!("keep")), Some(json!("block")), Some(json!("replace")), None] {
        assert_eq!(next_of(&seen, "the TRANSMIT action").await, (String::from("rec"), data));
    }
    let (e, socket) = h.warning().await;
    assert_eq!((e.name(), socket.as_deref()), ("TransmitBlockedError", Some(id.as_str())));
    c.json(json!({"event": "rec", "data": "end"})).await;
    assert_eq!(next_of(&conn.rec, "transmit").await, Some(json!("end")), "the blocked one never came");
}

/// INVOKE: blocked with an error → that error in the response; `Blocked::silent()` → the exact
/// SilentMiddlewareBlockedError; silent with an error → the generic error for the client, the
/// original in the `warning`; allowed with replaced data → the procedure gets the replacement.
async fn invoke(rt: Rt) {
    let (tx, seen) = async_channel::unbounded();
    let middleware = Middleware::new().inbound(move |mut action| {
        let tx = tx.clone();
        async move {
            if let InboundAction::Invoke { procedure, data, .. } = &mut action {
                let _ = tx.try_send((procedure.clone(), data.clone()));
                match data.as_ref().and_then(Value::as_str) {
                    Some("custom") => {
                        return Err(Blocked::with(
                            RemoteError::new("BlockedInvokeError", "nope").with("extra", 42),
                        ));
                    }
                    Some("silent") => return Err(Blocked::silent()),
                    Some("silent-with-error") => {
                        return Err(Blocked {
                            error: Some(RemoteError::new("SecretError", "only the server sees this")),
                            silent: true,
                            status_code: None,
                        });
                    }
                    Some("replace") => *data = Some(json!("success 123")),
                    _ => {}
                }
            }
            Ok(action)
        }
    });
    let h = Harness::start(rt, with_middleware(middleware)).await;
    let (mut c, id) = Raw::open(h.addr).await;
    assert_eq!(
        c.call(2, "echo", json!("custom")).await,
        json!({"rid": 2, "error": {"message": "nope", "name": "BlockedInvokeError", "extra": 42}})
    );
    assert_eq!(
        c.call(3, "echo", json!("silent")).await,
        json!({"rid": 3, "error": silent("invoke", "inbound")})
    );
    assert_eq!(
        c.call(30, "echo", json!("silent")).await["error"]["message"],
        "The invoke AGAction was blocked by inbound middleware"
    );
    assert_eq!(
        c.call(4, "echo", json!("silent-with-error")).await,
        json!({"rid": 4, "error": silent("invoke", "inbound")})
    );
    assert_eq!(c.call(5, "echo", json!("replace")).await, json!({"rid": 5, "data": "success 123"}));
    c.echo(6, json!("as is")).await;
    for data in ["custom", "silent", "silent", "silent-with-error", "replace", "as is"] {
        assert_eq!(next_of(&seen, "the INVOKE action").await, (String::from("echo"), Some(json!(data))));
    }
    let (e, socket) = h.warning().await;
    assert_eq!((e.name(), socket.as_deref()), ("BlockedInvokeError", Some(id.as_str())));
    assert_eq!(h.warning().await.0.into_value(), silent("invoke", "inbound"));
    assert_eq!(h.warning().await.0.into_value(), silent("invoke", "inbound"));
    let (e, _) = h.warning().await;
    assert_eq!((e.name(), e.message()), ("SecretError", "only the server sees this"));
    assert!(h.warnings.is_empty());
}

/// SUBSCRIBE: blocked → the error response, not subscribed (nor in the broker); allowed with
/// replaced data → subscribed, the `subscription` event carries the replacement.
async fn subscribe(rt: Rt) {
    let (tx, seen) = async_channel::unbounded();
    let middleware = Middleware::new().inbound(move |mut action| {
        let tx = tx.clone();
        async move {
            if let InboundAction::Subscribe { channel, data, .. } = &mut action {
                let _ = tx.try_send((channel.clone(), data.clone()));
                match channel.as_str() {
                    "private" => {
                        return Err(Blocked::with(RemoteError::new(
                            "AuthRequiredError",
                            "Subscribing to private requires authentication",
                        )));
                    }
                    "silent" => return Err(Blocked::silent()),
                    "replace" => *data = Some(json!({"replaced": true})),
                    _ => {}
                }
            }
            Ok(action)
        }
    });
    let mut h = Harness::start(rt, with_middleware(middleware)).await;
    let mut subscriptions = h.server.listener("subscription");
    let (mut c, id) = Raw::open(h.addr).await;
    let socket = h.conn(&id).await.socket;
    assert_eq!(
        c.call(2, "#subscribe", json!({"channel": "private"})).await,
        error_response(2, "AuthRequiredError", "Subscribing to private requires authentication")
    );
    assert_eq!(
        c.call(3, "#subscribe", json!({"channel": "silent"})).await,
        json!({"rid": 3, "error": silent("subscribe", "inbound")})
    );
    assert_eq!(
        c.call(4, "#subscribe", json!({"channel": "replace", "data": {"orig": 1}})).await,
        json!({"rid": 4})
    );
    c.subscribe(5, "open").await;
    let mut subs = socket.subscriptions();
    subs.sort();
    assert_eq!(subs, ["open", "replace"]);
    let mut channels = h.server.broker().channels();
    channels.retain(|(_, n)| *n > 0);
    channels.sort();
    assert_eq!(channels, [(String::from("open"), 1), (String::from("replace"), 1)]);
    for (channel, data) in
        [("private", None), ("silent", None), ("replace", Some(json!({"orig": 1}))), ("open", None)]
    {
        assert_eq!(next_of(&seen, "the SUBSCRIBE action").await, (String::from(channel), data));
    }
    match next_ev(&mut subscriptions, "subscription").await {
        ServerEvent::Subscription { channel, options, .. } => {
            assert_eq!(channel, "replace");
            assert_eq!(options, json!({"data": {"replaced": true}}));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(warning_named(&h, "AuthRequiredError").await.1.as_deref(), Some(id.as_str()));
    assert_eq!(h.warning().await.0.into_value(), silent("subscribe", "inbound"));
    // A publish to the blocked channel does not reach the socket.
    h.server.exchange().invoke_publish("private", "secret").await.unwrap();
    h.server.exchange().invoke_publish("open", "public").await.unwrap();
    assert_eq!(c.packet().await, publish("open", json!("public")));
}

/// PUBLISH_IN: blocked → `invokePublish` gets the error, `transmitPublish` is dropped silently,
/// subscribers get neither; allowed with replaced data → every subscriber gets the replacement
/// (upstream "Should allow to change message in middleware when client invokePublish/
/// transmitPublish").
async fn publish_in(rt: Rt) {
    let (tx, seen) = async_channel::unbounded();
    let middleware = Middleware::new().inbound(move |mut action| {
        let tx = tx.clone();
        async move {
            if let InboundAction::PublishIn { channel, data, .. } = &mut action {
                let _ = tx.try_send((channel.clone(), data.clone()));
                if channel == "readonly" {
                    return Err(Blocked::with(RemoteError::new("BlockedError", "readonly channel")));
                }
                if channel == "quiet" {
                    return Err(Blocked::silent());
                }
                if data.as_ref().and_then(Value::as_str) == Some("replace-me") {
                    *data = Some(json!("intercepted"));
                }
            }
            Ok(action)
        }
    });
    let h = Harness::start(rt, with_middleware(middleware)).await;
    let (mut a, _) = Raw::open(h.addr).await;
    let (mut b, _) = Raw::open(h.addr).await;
    let (mut p, pid) = Raw::open(h.addr).await;
    for s in [&mut a, &mut b] {
        s.subscribe(2, "news").await;
        s.subscribe(3, "readonly").await;
        s.subscribe(4, "quiet").await;
    }
    let pub_frame = |channel: &str, data: &str, cid: Option<u64>| {
        let mut f = json!({"event": "#publish", "data": {"channel": channel, "data": data}});
        if let Some(cid) = cid {
            f["cid"] = json!(cid);
        }
        f
    };
    assert_eq!(
        p.call(2, "#publish", json!({"channel": "readonly", "data": "x"})).await,
        error_response(2, "BlockedError", "readonly channel")
    );
    assert_eq!(
        p.call(3, "#publish", json!({"channel": "quiet", "data": "x"})).await,
        json!({"rid": 3, "error": silent("publishIn", "inbound")})
    );
    p.json(pub_frame("readonly", "y", None)).await;
    p.json(pub_frame("news", "replace-me", Some(4))).await;
    assert_eq!(p.packet().await, json!({"rid": 4}), "nothing for the transmitted publish");
    p.json(pub_frame("news", "replace-me", None)).await;
    p.json(pub_frame("news", "as is", None)).await;
    p.echo(5, json!("done")).await;
    for s in [&mut a, &mut b] {
        assert_eq!(s.packet().await, publish("news", json!("intercepted")));
        assert_eq!(s.packet().await, publish("news", json!("intercepted")));
        assert_eq!(s.packet().await, publish("news", json!("as is")));
    }
    for (channel, data) in [
        ("readonly", "x"),
        ("quiet", "x"),
        ("readonly", "y"),
        ("news", "replace-me"),
        ("news", "replace-me"),
        ("news", "as is"),
    ] {
        assert_eq!(next_of(&seen, "the PUBLISH_IN action").await, (String::from(channel), Some(json!(data))));
    }
    let (e, socket) = h.warning().await;
    assert_eq!((e.name(), socket.as_deref()), ("BlockedError", Some(pid.as_str())));
    assert_eq!(h.warning().await.0.into_value(), silent("publishIn", "inbound"));
    assert_eq!(h.warning().await.0.name(), "BlockedError", "the transmitted publish was blocked too");
    // Server-side publishes skip PUBLISH_IN.
    h.server.exchange().invoke_publish("readonly", "from the server").await.unwrap();
    assert_eq!(a.packet().await, publish("readonly", json!("from the server")));
    assert!(seen.is_empty());
}

/// AUTHENTICATE runs for a verified token only (handshake or `#authenticate`), with the signed
/// token and its claims. Blocked in the handshake: `authError` is the block's error, not
/// authenticated, no `#removeAuthToken` unless the error says `isBadToken`; in `#authenticate`:
/// `{"isAuthenticated":false,"authError":...}`, or an error response and `#removeAuthToken` for a
/// bad-token error. Allowed: authenticated.
async fn authenticate(rt: Rt) {
    let (tx, seen) = async_channel::unbounded();
    let middleware = Middleware::new().inbound(move |action| {
        let tx = tx.clone();
        async move {
            if let InboundAction::Authenticate { signed_auth_token, auth_token, .. } = &action {
                let _ = tx.try_send((signed_auth_token.clone(), auth_token.clone()));
                match auth_token["username"].as_str() {
                    Some("alice") => {
                        return Err(Blocked::with(RemoteError::new(
                            "AuthenticateMiddlewareError",
                            "alice is not welcome",
                        )));
                    }
                    Some("mallory") => {
                        return Err(Blocked::with(
                            RemoteError::new("RevokedTokenError", "revoked").with("isBadToken", true),
                        ));
                    }
                    Some("quiet") => return Err(Blocked::silent()),
                    _ => {}
                }
            }
            Ok(action)
        }
    });
    let mut h = Harness::start(rt, with_middleware(middleware)).await;
    let alice_error = json!({"message": "alice is not welcome", "name": "AuthenticateMiddlewareError"});
    let mallory_error = json!({"message": "revoked", "name": "RevokedTokenError", "isBadToken": true});

    // No token, a bad token: no AUTHENTICATE action.
    let (mut c, _) = Raw::open(h.addr).await;
    c.echo(2, json!(1)).await;
    let mut c = Raw::connect(h.addr).await;
    assert_eq!(c.handshake(json!("garbage.token.value")).await["data"]["isAuthenticated"], false);
    assert!(seen.is_empty());

    // Allowed.
    let bob = token(json!({"username": "bob"}));
    let mut c = Raw::connect(h.addr).await;
    let r = c.handshake(bob.clone()).await;
    assert_eq!(r["data"]["isAuthenticated"], true, "{r}");
    let (signed, claims) = next_of(&seen, "the AUTHENTICATE action").await;
    assert_eq!(json!(signed), bob);
    assert_eq!(claims["username"], "bob");
    let bob_socket = h.conn(r["data"]["id"].as_str().unwrap()).await.socket;
    assert_eq!(bob_socket.auth_state(), AuthState::Authenticated);

    // Blocked in the handshake.
    let mut c = Raw::connect(h.addr).await;
    let r = c.handshake(token(json!({"username": "alice"}))).await;
    assert_eq!(r["data"]["isAuthenticated"], false, "{r}");
    assert_eq!(r["data"]["authError"], alice_error);
    c.echo(2, json!("no #removeAuthToken")).await;
    let socket = h.conn(r["data"]["id"].as_str().unwrap()).await.socket;
    assert_eq!(socket.auth_state(), AuthState::Unauthenticated);
    assert_eq!(next_of(&seen, "the AUTHENTICATE action").await.1["username"], "alice");
    warning_named(&h, "AuthenticateMiddlewareError").await;

    let mut c = Raw::connect(h.addr).await;
    let r = c.handshake(token(json!({"username": "mallory"}))).await;
    assert_eq!(r["data"]["authError"], mallory_error);
    assert_eq!(c.packet().await, remove_auth_token());
    c.echo(2, json!("after")).await;
    next_of(&seen, "the AUTHENTICATE action").await;

    let mut c = Raw::connect(h.addr).await;
    let r = c.handshake(token(json!({"username": "quiet"}))).await;
    assert_eq!(r["data"]["authError"], silent("authenticate", "inbound"));
    assert_eq!(r["data"]["isAuthenticated"], false);
    next_of(&seen, "the AUTHENTICATE action").await;

    // Blocked in `#authenticate`, from bob's authenticated socket.
    let bob_id = bob_socket.id().to_string();
    let mut c = Raw::connect(h.addr).await;
    let r = c.handshake(bob.clone()).await;
    assert_eq!(r["data"]["isAuthenticated"], true);
    next_of(&seen, "the AUTHENTICATE action").await;
    let socket = h.conn(r["data"]["id"].as_str().unwrap()).await.socket;
    assert_ne!(socket.id(), bob_id);
    let r = c.call(2, "#authenticate", token(json!({"username": "alice"}))).await;
    assert_eq!(r, json!({"rid": 2, "data": {"isAuthenticated": false, "authError": alice_error}}));
    assert_eq!(socket.auth_state(), AuthState::Unauthenticated);
    let r = c.call(3, "#authenticate", token(json!({"username": "carol"}))).await;
    assert_eq!(r, json!({"rid": 3, "data": {"isAuthenticated": true, "authError": null}}));
    assert_eq!(socket.auth_token().unwrap()["username"], "carol");
    let r = c.call(4, "#authenticate", token(json!({"username": "mallory"}))).await;
    assert_eq!(r, json!({"rid": 4, "error": mallory_error}));
    assert_eq!(c.packet().await, remove_auth_token());
    assert_eq!(socket.auth_state(), AuthState::Unauthenticated);
    let names: Vec<Value> =
        (0..3).map(|_| seen.try_recv().unwrap().1["username"].clone()).collect::<Vec<_>>();
    assert_eq!(names, [json!("alice"), json!("carol"), json!("mallory")]);
}

// ---------------------------------------------------------------------------------------------
// OUTBOUND: PUBLISH_OUT
// ---------------------------------------------------------------------------------------------

/// PUBLISH_OUT runs per subscribed socket: blocked for one socket → only that socket misses the
/// message (a `warning` names it); replaced for one socket → only that socket gets the
/// replacement; the others get the original.
async fn publish_out(rt: Rt) {
    let (tx, seen) = async_channel::unbounded();
    let middleware = Middleware::new().outbound(move |mut action: OutboundAction| {
        let tx = tx.clone();
        async move {
            let role = action.socket.request_uri().split("role=").nth(1).unwrap_or("plain").to_string();
            let _ = tx.try_send((role.clone(), action.channel.clone(), action.data.clone()));
            if action.channel == "news" {
                match role.as_str() {
                    "blocked" => {
                        return Err(Blocked::with(RemoteError::new("PublishOutBlockedError", "not for you")));
                    }
                    "replace" => action.data = Some(json!({"for": "replace", "was": action.data})),
                    _ => {}
                }
            }
            Ok(action)
        }
    });
    let h = Harness::start(rt, with_middleware(middleware)).await;
    let (mut blocked, blocked_id) = Raw::open_at(h.addr, "/socketcluster/?role=blocked").await;
    let (mut replace, _) = Raw::open_at(h.addr, "/socketcluster/?role=replace").await;
    let (mut plain, _) = Raw::open(h.addr).await;
    for s in [&mut blocked, &mut replace, &mut plain] {
        s.subscribe(2, "news").await;
        s.subscribe(3, "other").await;
    }
    // From a client and from the server.
    let (mut publisher, _) = Raw::open(h.addr).await;
    assert_eq!(
        publisher.call(2, "#publish", json!({"channel": "news", "data": 123})).await,
        json!({"rid": 2})
    );
    assert_eq!(plain.packet().await, publish("news", json!(123)));
    h.server.exchange().invoke_publish("news", "hello").await.unwrap();
    h.server.exchange().invoke_publish("other", "everyone").await.unwrap();
    assert_eq!(plain.packet().await, publish("news", json!("hello")));
    assert_eq!(plain.packet().await, publish("other", json!("everyone")));
    assert_eq!(replace.packet().await, publish("news", json!({"for": "replace", "was": 123})));
    assert_eq!(replace.packet().await, publish("news", json!({"for": "replace", "was": "hello"})));
    assert_eq!(replace.packet().await, publish("other", json!("everyone")));
    // The blocked socket's next frame is the `other` message: both `news` ones were dropped.
    assert_eq!(blocked.packet().await, publish("other", json!("everyone")));
    for _ in 0..2 {
        let (e, socket) = warning_named(&h, "PublishOutBlockedError").await;
        assert_eq!((e.message(), socket.as_deref()), ("not for you", Some(blocked_id.as_str())));
    }
    let mut actions: Vec<(String, String, Option<Value>)> =
        (0..9).map(|_| seen.try_recv().unwrap()).collect();
    actions.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    let roles: Vec<(&str, &str)> = actions.iter().map(|(r, c, _)| (r.as_str(), c.as_str())).collect();
    assert_eq!(
        roles,
        [
            ("blocked", "news"),
            ("blocked", "news"),
            ("blocked", "other"),
            ("plain", "news"),
            ("plain", "news"),
            ("plain", "other"),
            ("replace", "news"),
            ("replace", "news"),
            ("replace", "other")
        ]
    );
    assert!(actions.iter().all(|(_, _, d)| d.is_some()), "the action has the original data");
    assert!(seen.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Ordering and replacement
// ---------------------------------------------------------------------------------------------

/// INVOKE delayed 500 ms for one socket holds back only that socket: another socket's round trip
/// completes meanwhile, and the delayed socket's later packets are handled after the delayed one,
/// in order (upstream "Delaying ... for one client should not affect other clients").
async fn delayed_action_holds_back_only_its_socket(rt: Rt) {
    const DELAY: Duration = Duration::from_millis(500);
    let middleware = Middleware::new().inbound(move |action| async move {
        if let InboundAction::Invoke { data: Some(d), .. } = &action
            && d == "slow"
        {
            rt.sleep(DELAY).await;
        }
        Ok(action)
    });
    let mut h = Harness::start(rt, with_middleware(middleware)).await;
    let (mut a, a_id) = Raw::open(h.addr).await;
    let (mut b, _) = Raw::open(h.addr).await;
    let a_conn = h.conn(&a_id).await;
    let start = Instant::now();
    a.json(json!({"event": "echo", "data": "slow", "cid": 2})).await;
    a.json(json!({"event": "rec", "data": "after slow"})).await;
    a.json(json!({"event": "echo", "data": "fast", "cid": 3})).await;
    a.json(json!({"event": "echo", "data": "faster", "cid": 4})).await;
    let slow_socket = async {
        let first = a.packet().await;
        let at = start.elapsed();
        assert_eq!(first, json!({"rid": 2, "data": "slow"}));
        assert_eq!(a.packet().await, json!({"rid": 3, "data": "fast"}));
        assert_eq!(a.packet().await, json!({"rid": 4, "data": "faster"}));
        at
    };
    let other_socket = async {
        b.echo(2, json!("b1")).await;
        b.echo(3, json!("b2")).await;
        start.elapsed()
    };
    let (a_first, b_done) = futures::join!(slow_socket, other_socket);
    assert!(
        a_first >= DELAY - Duration::from_millis(50),
        "the delayed invoke was answered after {a_first:?}"
    );
    assert!(
        b_done < a_first,
        "the other socket waited: done after {b_done:?}, the delayed one after {a_first:?}"
    );
    assert_eq!(next_of(&a_conn.rec, "the transmit").await, Some(json!("after slow")));
    eprintln!(
        "[{rt:?}] delayed socket answered after {a_first:?}; the other socket's two round trips took {b_done:?}"
    );
}

/// `Server::set_middleware` replaces the middleware for sockets created afterwards: a socket that
/// was connected before keeps its middleware — its actions neither change nor hang — and the
/// new HANDSHAKE_WS applies to the next upgrade at once.
async fn set_middleware_applies_to_new_sockets_only(rt: Rt) {
    let mut h = Harness::start(rt, with_middleware(Middleware::new())).await;
    let (mut old, old_id) = Raw::open(h.addr).await;
    old.subscribe(2, "news").await;
    let old_conn = h.conn(&old_id).await;

    let rule = Middleware::new()
        .handshake(|action| async move {
            match action {
                HandshakeAction::Ws { request_uri, .. } if request_uri.contains("reject") => {
                    Err(Blocked::with(RemoteError::new("NewRuleError", "rejected by the new rule")))
                }
                _ => Ok(()),
            }
        })
        .inbound(|action| async move {
            match &action {
                InboundAction::Invoke { data: Some(d), .. } if d == "x" => {
                    Err(Blocked::with(RemoteError::new("NewRuleError", "x is not allowed")))
                }
                _ => Ok(action),
            }
        })
        .outbound(|mut action| async move {
            action.data = Some(json!({"wrapped": action.data}));
            Ok(action)
        });
    h.server.set_middleware(rule);

    // The old socket: unchanged, promptly.
    util::within(Duration::from_secs(2), "the old socket's invoke", old.echo(3, json!("x"))).await;
    old.json(json!({"event": "rec", "data": "x"})).await;
    assert_eq!(next_of(&old_conn.rec, "the old socket's transmit").await, Some(json!("x")));
    // A new socket: the new rule.
    let (mut new, _) = Raw::open(h.addr).await;
    assert_eq!(new.call(2, "echo", json!("x")).await, error_response(2, "NewRuleError", "x is not allowed"));
    new.echo(3, json!("y")).await;
    new.subscribe(4, "news").await;
    h.server.exchange().invoke_publish("news", 1).await.unwrap();
    assert_eq!(old.packet().await, publish("news", json!(1)));
    assert_eq!(new.packet().await, publish("news", json!({"wrapped": 1})));
    assert_eq!(http_upgrade(h.addr, "/socketcluster/?reject", None).await.status, 401);
    warning_named(&h, "NewRuleError").await;
    warning_named(&h, "NewRuleError").await;

    // Back to none: the socket made under the rule keeps it; a newer one has none.
    h.server.set_middleware(Middleware::new());
    assert_eq!(new.call(5, "echo", json!("x")).await, error_response(5, "NewRuleError", "x is not allowed"));
    let (mut newest, _) = Raw::open(h.addr).await;
    newest.echo(2, json!("x")).await;
    old.echo(4, json!("x")).await;
    let (_c, _) = Raw::open_at(h.addr, "/socketcluster/?reject").await;
}
