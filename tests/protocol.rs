//! Integration tests of the sans-IO protocol core (`socketcluster::protocol`), with simulated
//! time: no sockets, no sleeps, no runtime. A scripted peer ([`Peer`]) feeds frames to a
//! connection at a chosen instant and checks, one by one, the frames it sends back and the events
//! it reports. Literal frames come from the captured transcripts of the protocol reference
//! (server 20.0.1, client 20.0.2).
#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::fmt::Debug;
use std::ops::{Deref, DerefMut};
use std::time::Duration;

use proptest::prelude::*;
use serde_json::{Value, json};

use socketcluster::protocol::backoff::Backoff;
use socketcluster::protocol::channels::{ChannelState, Channels, StateChange, SubscribeOptions};
use socketcluster::protocol::client::ClientState;
use socketcluster::protocol::close::{self, Reconnect};
use socketcluster::protocol::codec::{self, Decoded, ProtocolVersion};
use socketcluster::protocol::packet::{self, Packet};
use socketcluster::protocol::server::ServerState;
use socketcluster::protocol::{
    AbortKind, Calls, ClientConfig, ClientConnection, ClientEvent, Error, RemoteError, ServerConfig,
    ServerConnection, ServerEvent, Transmit,
};

// ---------------------------------------------------------------------------------------------
// The scripted peer
// ---------------------------------------------------------------------------------------------

const T0: Duration = Duration::ZERO;
const NS: Duration = Duration::from_nanos(1);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// What the scripted peer needs from a connection state machine.
trait Machine {
    type Event: Debug + PartialEq;
    fn text(&mut self, now: Duration, frame: &str);
    fn binary(&mut self, now: Duration, frame: &[u8]);
    fn timeout(&mut self, now: Duration);
    fn next_timeout(&self) -> Option<Duration>;
    fn transmit(&mut self) -> Option<Transmit>;
    fn event(&mut self) -> Option<Self::Event>;
}

impl Machine for ServerConnection {
    type Event = ServerEvent;
    fn text(&mut self, now: Duration, frame: &str) {
        self.handle_text(now, frame)
    }
    fn binary(&mut self, now: Duration, frame: &[u8]) {
        self.handle_binary(now, frame)
    }
    fn timeout(&mut self, now: Duration) {
        self.handle_timeout(now)
    }
    fn next_timeout(&self) -> Option<Duration> {
        self.poll_timeout()
    }
    fn transmit(&mut self) -> Option<Transmit> {
        self.poll_transmit()
    }
    fn event(&mut self) -> Option<ServerEvent> {
        self.poll_event()
    }
}

impl Machine for ClientConnection {
    type Event = ClientEvent;
    fn text(&mut self, now: Duration, frame: &str) {
        self.handle_text(now, frame)
    }
    fn binary(&mut self, now: Duration, frame: &[u8]) {
        self.handle_binary(now, frame)
    }
    fn timeout(&mut self, now: Duration) {
        self.handle_timeout(now)
    }
    fn next_timeout(&self) -> Option<Duration> {
        self.poll_timeout()
    }
    fn transmit(&mut self) -> Option<Transmit> {
        self.poll_transmit()
    }
    fn event(&mut self) -> Option<ClientEvent> {
        self.poll_event()
    }
}

/// A scripted peer talking to a connection at simulated time `now`. Derefs to the connection, so
/// driver calls (`accept_handshake`, `respond`, `invoke`, ...) are made on it directly.
struct Peer<M> {
    conn: M,
    now: Duration,
}

impl<M> Deref for Peer<M> {
    type Target = M;
    fn deref(&self) -> &M {
        &self.conn
    }
}

impl<M> DerefMut for Peer<M> {
    fn deref_mut(&mut self) -> &mut M {
        &mut self.conn
    }
}

impl<M: Machine> Peer<M> {
    /// Moves the clock to `t` (without firing timers).
    fn at(&mut self, t: Duration) -> &mut Self {
        self.now = t;
        self
    }

    /// Moves the clock to `t` and fires the timers due by then.
    fn tick(&mut self, t: Duration) -> &mut Self {
        self.now = t;
        self.conn.timeout(t);
        self
    }

    /// The peer sends a text frame.
    fn send(&mut self, frame: &str) -> &mut Self {
        let now = self.now;
        self.conn.text(now, frame);
        self
    }

    /// The peer sends a binary frame.
    fn send_binary(&mut self, frame: &[u8]) -> &mut Self {
        let now = self.now;
        self.conn.binary(now, frame);
        self
    }

    /// The next transmitted text frame.
    #[track_caller]
    fn text_frame(&mut self) -> String {
        match self.conn.transmit() {
            Some(Transmit::Text(t)) => t,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    /// The next frame is exactly `frame`.
    #[track_caller]
    fn expect_frame(&mut self, frame: &str) -> &mut Self {
        assert_eq!(self.text_frame(), frame);
        self
    }

    /// The next frame, parsed, equals `value`.
    #[track_caller]
    fn expect_json(&mut self, value: Value) -> &mut Self {
        let text = self.text_frame();
        let parsed: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        assert_eq!(parsed, value, "frame {text}");
        self
    }

    /// The next transmit is a close with this code and wire reason.
    #[track_caller]
    fn expect_close(&mut self, code: u16, reason: &str) -> &mut Self {
        assert_eq!(self.conn.transmit(), Some(Transmit::Close { code, reason: reason.into() }));
        self
    }

    #[track_caller]
    fn expect_no_transmit(&mut self) -> &mut Self {
        assert_eq!(self.conn.transmit(), None);
        self
    }

    #[track_caller]
    fn next_event(&mut self) -> M::Event {
        self.conn.event().expect("an event")
    }

    #[track_caller]
    fn expect_event(&mut self, event: M::Event) -> &mut Self {
        assert_eq!(self.conn.event(), Some(event));
        self
    }

    #[track_caller]
    fn expect_no_event(&mut self) -> &mut Self {
        assert_eq!(self.conn.event(), None);
        self
    }

    /// Nothing transmitted, nothing reported.
    #[track_caller]
    fn expect_quiet(&mut self) -> &mut Self {
        self.expect_no_transmit().expect_no_event()
    }

    #[track_caller]
    fn expect_deadline(&mut self, t: Option<Duration>) -> &mut Self {
        assert_eq!(self.conn.next_timeout(), t);
        self
    }
}

const HANDSHAKE: &str = r##"{"event":"#handshake","data":{"authToken":null},"cid":1}"##;
const SOCKET_ID: &str = "5fNBO4438F2SbqkRAAAA";

fn server_config() -> ServerConfig {
    ServerConfig { ping_timeout: ms(3000), ..ServerConfig::default() }
}

fn server(config: ServerConfig) -> Peer<ServerConnection> {
    Peer { conn: ServerConnection::new(T0, config), now: T0 }
}

/// A server connection whose handshake (at `T0`) was accepted; nothing left to read.
fn open_server(config: ServerConfig) -> Peer<ServerConnection> {
    let mut s = server(config);
    s.send(HANDSHAKE).expect_event(ServerEvent::Handshake { cid: 1, auth_token: None });
    s.accept_handshake(1, SOCKET_ID, false, None);
    s.text_frame();
    assert_eq!(s.state(), ServerState::Open);
    s.expect_quiet();
    s
}

fn client(config: ClientConfig) -> Peer<ClientConnection> {
    Peer { conn: ClientConnection::new(T0, config), now: T0 }
}

/// A client connection opened at `T0` whose handshake (cid 1) was answered with `pingTimeout`
/// 3000; nothing left to read.
fn open_client(config: ClientConfig) -> Peer<ClientConnection> {
    let mut c = client(config);
    c.handle_open(T0, 1, None);
    c.expect_frame(HANDSHAKE);
    c.send(r#"{"rid":1,"data":{"id":"abc","pingTimeout":3000,"isAuthenticated":false}}"#);
    assert!(matches!(c.next_event(), ClientEvent::Connected { .. }));
    assert_eq!(c.state(), ClientState::Open);
    c.expect_quiet();
    c
}

fn invalid_action(rid: u64, message: &str) -> String {
    format!(r#"{{"rid":{rid},"error":{{"message":"{message}","name":"InvalidActionError"}}}}"#)
}

// ---------------------------------------------------------------------------------------------
// §1.15 normal connection transcript
// ---------------------------------------------------------------------------------------------

#[test]
fn transcript_server_side() {
    let mut s = server(ServerConfig { ping_interval: secs(1), ..server_config() });
    s.send(HANDSHAKE).expect_event(ServerEvent::Handshake { cid: 1, auth_token: None }).expect_quiet();
    assert_eq!(s.state(), ServerState::Handshaking);
    s.accept_handshake(1, SOCKET_ID, false, None);
    s.expect_frame(
        r#"{"rid":1,"data":{"id":"5fNBO4438F2SbqkRAAAA","pingTimeout":3000,"isAuthenticated":false}}"#,
    );
    assert!(s.is_open());

    // Subscribe: answered without data.
    s.send(r##"{"event":"#subscribe","data":{"channel":"news"},"cid":2}"##)
        .expect_event(ServerEvent::Subscribe { channel: "news".into(), options: json!({}), cid: Some(2) });
    s.respond(2, None);
    s.expect_frame(r#"{"rid":2}"#);

    // invokePublish then transmitPublish; the driver fans out with encode_publish.
    s.send(r##"{"event":"#publish","data":{"channel":"news","data":{"a":1}},"cid":3}"##).expect_event(
        ServerEvent::Publish { channel: "news".into(), data: Some(json!({"a":1})), cid: Some(3) },
    );
    s.send(r##"{"event":"#publish","data":{"channel":"news","data":"tp"}}"##)
        .expect_event(ServerEvent::Publish { channel: "news".into(), data: Some(json!("tp")), cid: None });
    assert_eq!(
        packet::encode_publish("news", Some(&json!({"a":1}))).unwrap(),
        r##"{"event":"#publish","data":{"channel":"news","data":{"a":1}}}"##
    );
    s.respond(3, None);
    s.expect_frame(r#"{"rid":3}"#);

    // RPC errors: custom fields after message and name; a plain error has no name.
    s.send(r#"{"event":"fail","data":1,"cid":4}"#).expect_event(ServerEvent::Invoke {
        event: "fail".into(),
        data: Some(json!(1)),
        cid: 4,
    });
    s.respond_error(4, &RemoteError::new("CustomError", "boom").with("extra", 42));
    s.expect_frame(r#"{"rid":4,"error":{"message":"boom","name":"CustomError","extra":42}}"#);
    s.send(r#"{"event":"failPlain","data":1,"cid":5}"#);
    assert!(matches!(s.next_event(), ServerEvent::Invoke { cid: 5, .. }));
    s.respond_error(5, &RemoteError::plain("plain"));
    s.expect_frame(r#"{"rid":5,"error":{"message":"plain"}}"#);

    // An invoke without data; binary answered as base64 objects.
    s.send(r#"{"event":"bin","cid":6}"#).expect_event(ServerEvent::Invoke {
        event: "bin".into(),
        data: None,
        cid: 6,
    });
    let data = json!({"buf": codec::binary(b"hello"), "ab": codec::binary(&[1, 2, 3])});
    s.respond(6, Some(&data));
    s.expect_json(
        json!({"rid":6,"data":{"buf":{"base64":true,"data":"aGVsbG8="},"ab":{"base64":true,"data":"AQID"}}}),
    );

    // A transmit carrying a base64 object: the object is delivered as it is, not decoded.
    s.send(r#"{"event":"evt","data":{"base64":true,"data":"YWJj"}}"#).expect_event(ServerEvent::Transmit {
        event: "evt".into(),
        data: Some(json!({"base64":true,"data":"YWJj"})),
    });
    assert_eq!(codec::binary_bytes(&json!({"base64":true,"data":"YWJj"})), Some(b"abc".to_vec()));

    // Login: response with data, then #setAuthToken.
    s.send(r#"{"event":"login","data":{"username":"bob"},"cid":7}"#);
    assert!(matches!(s.next_event(), ServerEvent::Invoke { cid: 7, .. }));
    s.respond(7, Some(&json!("ok")));
    s.expect_frame(r#"{"rid":7,"data":"ok"}"#);
    assert_eq!(
        packet::encode_transmit("#setAuthToken", Some(&json!({"token":"t.o.k"}))).unwrap(),
        r##"{"event":"#setAuthToken","data":{"token":"t.o.k"}}"##
    );

    // A server invoke: key order event, cid, data; cids from 1; the client's answer.
    s.send(r#"{"event":"serverInvoke","cid":8}"#);
    assert!(matches!(s.next_event(), ServerEvent::Invoke { cid: 8, .. }));
    s.respond(8, None);
    s.expect_frame(r#"{"rid":8}"#);
    let (cid, frame) = s.invoke("clientProc", Some(&json!({"x":1})), None).unwrap();
    assert_eq!(cid, 1);
    assert_eq!(frame, r#"{"event":"clientProc","cid":1,"data":{"x":1}}"#);
    s.send(r#"{"rid":1,"data":{"y":2}}"#)
        .expect_event(ServerEvent::Response { rid: 1, result: Ok(Some(json!({"y":2}))) });
    assert!(s.calls().is_empty());
    assert_eq!(
        packet::encode_transmit("hello", Some(&"world")).unwrap(),
        r#"{"event":"hello","data":"world"}"#
    );

    // kickOut, second subscribe, cid-less unsubscribe, deauth.
    s.send(r#"{"event":"kick","cid":9}"#);
    assert!(matches!(s.next_event(), ServerEvent::Invoke { cid: 9, .. }));
    assert_eq!(
        packet::encode_transmit("#kickOut", Some(&json!({"channel":"news","message":"bye"}))).unwrap(),
        r##"{"event":"#kickOut","data":{"channel":"news","message":"bye"}}"##
    );
    s.send(r##"{"event":"#subscribe","data":{"channel":"other"},"cid":10}"##)
        .expect_event(ServerEvent::Subscribe { channel: "other".into(), options: json!({}), cid: Some(10) });
    s.send(r##"{"event":"#unsubscribe","data":"other"}"##)
        .expect_event(ServerEvent::Unsubscribe { channel: "other".into(), cid: None });
    s.send(r#"{"event":"deauth","cid":11}"#);
    assert!(matches!(s.next_event(), ServerEvent::Invoke { cid: 11, .. }));
    assert_eq!(
        packet::encode_transmit::<()>("#removeAuthToken", None).unwrap(),
        r##"{"event":"#removeAuthToken"}"##
    );

    // Ping, pong.
    s.tick(secs(1)).expect_frame("").expect_quiet();
    s.send("").expect_event(ServerEvent::Pong).expect_quiet();
}

#[test]
fn transcript_client_side() {
    let mut c = client(ClientConfig::default());
    assert_eq!(c.state(), ClientState::Connecting);
    c.expect_quiet();
    c.handle_open(T0, 1, None);
    assert_eq!(c.state(), ClientState::Handshaking);
    c.expect_frame(HANDSHAKE);
    c.send(r#"{"rid":1,"data":{"id":"5fNBO4438F2SbqkRAAAA","pingTimeout":3000,"isAuthenticated":false}}"#)
        .expect_event(ClientEvent::Connected {
            id: SOCKET_ID.into(),
            ping_timeout: ms(3000),
            is_authenticated: false,
            auth_error: None,
        })
        .expect_quiet();

    // The client's invoke key order: event, data, cid.
    assert_eq!(
        packet::encode_client_invoke("#subscribe", Some(&json!({"channel":"news"})), 2).unwrap(),
        r##"{"event":"#subscribe","data":{"channel":"news"},"cid":2}"##
    );
    assert_eq!(packet::encode_client_invoke::<()>("bin", None, 6).unwrap(), r#"{"event":"bin","cid":6}"#);
    c.send(r#"{"rid":2}"#).expect_event(ClientEvent::Response { rid: 2, result: Ok(None) });
    c.send(r##"{"event":"#publish","data":{"channel":"news","data":{"a":1}}}"##).expect_event(
        ClientEvent::Publish { channel: "news".into(), data: Some(json!({"a":1})), position: None },
    );
    // A channel with history: the position beside the data (a wrong type is no position).
    c.send(r##"{"event":"#publish","data":{"channel":"news","data":2,"offset":7,"epoch":"e1"}}"##)
        .expect_event(ClientEvent::Publish {
            channel: "news".into(),
            data: Some(json!(2)),
            position: Some(socketcluster::protocol::position::Position { offset: 7, epoch: "e1".into() }),
        });
    c.send(r##"{"event":"#publish","data":{"channel":"news","data":3,"offset":"7","epoch":"e1"}}"##)
        .expect_event(ClientEvent::Publish { channel: "news".into(), data: Some(json!(3)), position: None });
    c.send(r#"{"rid":4,"error":{"message":"boom","name":"CustomError","extra":42}}"#);
    let ClientEvent::Response { rid: 4, result: Err(e) } = c.next_event() else { panic!() };
    assert_eq!((e.name(), e.message(), e.get("extra")), ("CustomError", "boom", Some(&json!(42))));
    c.send(r#"{"rid":5,"error":{"message":"plain"}}"#);
    let ClientEvent::Response { rid: 5, result: Err(e) } = c.next_event() else { panic!() };
    assert_eq!((e.name(), e.message()), ("Error", "plain"));
    c.send(r#"{"rid":7,"data":"ok"}"#)
        .expect_event(ClientEvent::Response { rid: 7, result: Ok(Some(json!("ok"))) });
    c.send(r##"{"event":"#setAuthToken","data":{"token":"a.b.c"}}"##)
        .expect_event(ClientEvent::SetAuthToken { token: "a.b.c".into(), cid: None })
        .expect_quiet();
    c.send(r#"{"event":"clientProc","cid":1,"data":{"x":1}}"#).expect_event(ClientEvent::Invoke {
        event: "clientProc".into(),
        data: Some(json!({"x":1})),
        cid: 1,
    });
    assert_eq!(packet::encode_response(1, Some(&json!({"y":2}))).unwrap(), r#"{"rid":1,"data":{"y":2}}"#);
    c.send(r#"{"event":"hello","data":"world"}"#)
        .expect_event(ClientEvent::Transmit { event: "hello".into(), data: Some(json!("world")) });
    c.send(r##"{"event":"#kickOut","data":{"channel":"news","message":"bye"}}"##)
        .expect_event(ClientEvent::KickOut { channel: "news".into(), message: Some(json!("bye")) });
    c.send(r##"{"event":"#removeAuthToken"}"##).expect_event(ClientEvent::RemoveAuthToken).expect_quiet();
    c.at(secs(1)).send("").expect_frame("").expect_event(ClientEvent::Ping).expect_quiet();
}

#[test]
fn transcript_reconnect_with_bad_token() {
    // The client's cid continues across connections: the driver passes 12.
    let mut c = client(ClientConfig::default());
    c.handle_open(T0, 12, Some("garbage.token.value"));
    c.expect_frame(r##"{"event":"#handshake","data":{"authToken":"garbage.token.value"},"cid":12}"##);
    c.send(r#"{"rid":12,"data":{"id":"NPVOCTBZHREXUdPMAAAB","pingTimeout":3000,"authError":{"message":"invalid token","name":"AuthTokenInvalidError","isBadToken":true},"isAuthenticated":false}}"#);
    let ClientEvent::Connected { id, auth_error: Some(e), is_authenticated: false, .. } = c.next_event()
    else {
        panic!()
    };
    assert_eq!(
        (id.as_str(), e.name(), e.get("isBadToken")),
        ("NPVOCTBZHREXUdPMAAAB", "AuthTokenInvalidError", Some(&json!(true)))
    );
    c.send(r##"{"event":"#removeAuthToken"}"##).expect_event(ClientEvent::RemoveAuthToken);

    // The server side of the same exchange, byte for byte (key order id, pingTimeout,
    // authError, isAuthenticated; the error's message, name, then its fields).
    let mut s = server(server_config());
    s.send(r##"{"event":"#handshake","data":{"authToken":"garbage.token.value"},"cid":12}"##)
        .expect_event(ServerEvent::Handshake { cid: 12, auth_token: Some(json!("garbage.token.value")) });
    let err = RemoteError::new("AuthTokenInvalidError", "invalid token").with("isBadToken", true);
    s.accept_handshake(12, "NPVOCTBZHREXUdPMAAAB", false, Some(&err));
    s.expect_frame(r#"{"rid":12,"data":{"id":"NPVOCTBZHREXUdPMAAAB","pingTimeout":3000,"authError":{"message":"invalid token","name":"AuthTokenInvalidError","isBadToken":true},"isAuthenticated":false}}"#);

    // Expired token: expiry before isBadToken, as on the wire.
    let err = RemoteError::new("AuthTokenExpiredError", "jwt expired")
        .with("expiry", "2026-11-26T13:49:28.000Z")
        .with("isBadToken", true);
    assert_eq!(
        serde_json::to_string(&err).unwrap(),
        r#"{"message":"jwt expired","name":"AuthTokenExpiredError","expiry":"2026-11-26T13:49:28.000Z","isBadToken":true}"#
    );
}

#[test]
fn transcript_middleware_block_wire_forms() {
    let mut s = open_server(server_config());
    let blocked = RemoteError::new(
        "SilentMiddlewareBlockedError",
        "The invoke AGAction was blocked by inbound middleware",
    )
    .with("type", "inbound");
    s.respond_error(2, &blocked);
    s.expect_frame(r#"{"rid":2,"error":{"message":"The invoke AGAction was blocked by inbound middleware","name":"SilentMiddlewareBlockedError","type":"inbound"}}"#);
    s.respond_error(4, &RemoteError::new("NopeError", "nope"));
    s.expect_frame(r#"{"rid":4,"error":{"message":"nope","name":"NopeError"}}"#);
    // A bare-string error travels as it is.
    s.respond_error(9, &RemoteError::from_value(json!("just a string")));
    s.expect_frame(r#"{"rid":9,"error":"just a string"}"#);
    // null data is kept; no data is omitted.
    s.respond(4, Some(&Value::Null));
    s.expect_frame(r#"{"rid":4,"data":null}"#);
    s.respond(4, None);
    s.expect_frame(r#"{"rid":4}"#).expect_quiet();
}

#[test]
fn transcript_handshake_sc_block() {
    for (status, code) in [(4008, 4008), (4501, 4501)] {
        let mut s = server(server_config());
        s.send(HANDSHAKE).expect_event(ServerEvent::Handshake { cid: 1, auth_token: None });
        let err = RemoteError::new("HsError", "sc blocked").with("statusCode", status);
        s.reject_handshake(1, &err, code);
        s.expect_frame(&format!(
            r#"{{"rid":1,"error":{{"message":"sc blocked","name":"HsError","statusCode":{status}}}}}"#
        ))
        .expect_close(code, "")
        .expect_no_transmit();
        let ServerEvent::Closed { code: c, .. } = s.next_event() else { panic!() };
        assert_eq!(c, code);
        assert_eq!(s.state(), ServerState::Closed);
        // Answering again does nothing.
        s.accept_handshake(1, SOCKET_ID, false, None);
        s.expect_quiet();
    }
}

#[test]
fn transcript_batch_in_individual_responses_out() {
    let mut s = server(server_config());
    s.send(r##"[{"event":"#handshake","cid":1},{"event":"echo","data":"a","cid":2},{"event":"#subscribe","data":{"channel":"c1"},"cid":3},{"event":"#publish","data":{"channel":"c1","data":"p"},"cid":4}]"##);
    // Only the handshake is reported until it is answered.
    s.expect_event(ServerEvent::Handshake { cid: 1, auth_token: None }).expect_quiet();
    s.accept_handshake(1, SOCKET_ID, false, None);
    s.expect_json(json!({"rid":1,"data":{"id":SOCKET_ID,"pingTimeout":3000,"isAuthenticated":false}}));
    s.expect_event(ServerEvent::Invoke { event: "echo".into(), data: Some(json!("a")), cid: 2 })
        .expect_event(ServerEvent::Subscribe { channel: "c1".into(), options: json!({}), cid: Some(3) })
        .expect_event(ServerEvent::Publish { channel: "c1".into(), data: Some(json!("p")), cid: Some(4) })
        .expect_quiet();
}

// ---------------------------------------------------------------------------------------------
// Server: handshake rules
// ---------------------------------------------------------------------------------------------

#[test]
fn handshake_without_cid_closes_4008() {
    for frame in [
        r##"{"event":"#handshake","data":{"authToken":null}}"##,
        r##"{"event":"#handshake","data":{},"cid":"1"}"##,
        r##"{"event":"#handshake","cid":-1}"##,
    ] {
        let mut s = server(server_config());
        s.send(frame)
            .expect_event(ServerEvent::Error(RemoteError::new(
                "InvalidActionError",
                "Handshake request was malformatted",
            )))
            .expect_event(ServerEvent::Closed {
                code: 4008,
                reason: "Server rejected handshake from client".into(),
            })
            .expect_close(4008, "")
            .expect_quiet();
        assert_eq!(s.state(), ServerState::Closed);
        assert_eq!(s.poll_timeout(), None);
    }
}

#[test]
fn handshake_data_and_token() {
    let mut s = server(server_config());
    s.send(r##"{"event":"#handshake","cid":1}"##)
        .expect_event(ServerEvent::Handshake { cid: 1, auth_token: None });
    let mut s = server(server_config());
    s.send(r##"{"event":"#handshake","data":"x","cid":3}"##)
        .expect_event(ServerEvent::Handshake { cid: 3, auth_token: None });
    let mut s = server(server_config());
    s.send(r##"{"event":"#handshake","data":{"authToken":"a.b.c"},"cid":1}"##)
        .expect_event(ServerEvent::Handshake { cid: 1, auth_token: Some(json!("a.b.c")) });
    s.accept_handshake(1, "id", true, None);
    s.expect_frame(r#"{"rid":1,"data":{"id":"id","pingTimeout":3000,"isAuthenticated":true}}"#);
    // A second accept does nothing.
    s.accept_handshake(1, "id", true, None);
    s.expect_quiet();
}

#[test]
fn anything_before_handshake_closes_4009() {
    let frames: &[&[u8]] = &[
        br#"{"event":"echo","data":1,"cid":1}"#,
        br#"{"event":"echo"}"#,
        br##"{"event":"#subscribe","data":{"channel":"x"},"cid":1}"##,
        br#"{"rid":1}"#,
        br#"{"foo":1}"#,
        b"hello",
        b"", // the pong
        b"[[1]]",
        br##"[{"event":"echo"},{"event":"#handshake","cid":1}]"##,
    ];
    for (i, frame) in frames.iter().enumerate() {
        for binary in [false, true] {
            let mut s = server(server_config());
            s.at(ms(5));
            if binary {
                s.send_binary(frame);
            } else {
                s.send(std::str::from_utf8(frame).unwrap());
            }
            s.expect_event(ServerEvent::Closed {
                code: 4009,
                reason: "Server received a message before the client handshake".into(),
            })
            .expect_close(4009, "")
            .expect_quiet();
            assert_eq!(s.state(), ServerState::Closed, "frame {i}");
        }
    }
    // An empty binary frame is the pong text too.
    let mut s = server(server_config());
    s.send_binary(&[]).expect_event(ServerEvent::Closed {
        code: 4009,
        reason: "Server received a message before the client handshake".into(),
    });
}

#[test]
fn handshake_timeout_is_4005_exactly_at_the_deadline() {
    let mut s = server(ServerConfig::default());
    // Pings start before the handshake.
    s.expect_deadline(Some(secs(8)));
    s.tick(secs(8)).expect_frame("").expect_quiet();
    s.expect_deadline(Some(secs(10)));
    s.tick(secs(10) - NS).expect_quiet();
    assert_eq!(s.state(), ServerState::Connecting);
    s.tick(secs(10))
        .expect_close(4005, "")
        .expect_event(ServerEvent::Closed {
            code: 4005,
            reason: "Did not receive #handshake from client before timeout".into(),
        })
        .expect_quiet()
        .expect_deadline(None);
    // A handshake after the close is ignored.
    s.send(HANDSHAKE).expect_quiet();
}

#[test]
fn handshake_timeout_stops_once_handshake_arrives() {
    let mut s = server(ServerConfig::default());
    s.at(secs(9)).send(HANDSHAKE).expect_event(ServerEvent::Handshake { cid: 1, auth_token: None });
    // The driver takes its time (token verification, middleware): no 4005.
    s.tick(secs(10)).tick(secs(15)).expect_frame("").expect_quiet();
    assert_eq!(s.state(), ServerState::Handshaking);
    s.accept_handshake(1, "id", false, None);
    s.text_frame();
    assert!(s.is_open());
}

#[test]
fn later_packets_wait_for_the_handshake_answer() {
    // A malformed #subscribe in the same batch as the handshake: its error response must come
    // after the handshake response.
    let mut s = server(server_config());
    s.send(r##"[{"event":"#handshake","cid":1},{"event":"#subscribe","data":"c","cid":2},{"event":"e","data":1}]"##);
    // A raw frame and a second batch arrive before the driver answers.
    s.send("not json").send(r#"[{"event":"f"}]"#);
    s.expect_event(ServerEvent::Handshake { cid: 1, auth_token: None }).expect_quiet();
    s.accept_handshake(1, SOCKET_ID, false, None);
    s.expect_json(json!({"rid":1,"data":{"id":SOCKET_ID,"pingTimeout":3000,"isAuthenticated":false}}))
        .expect_frame(&invalid_action(2, "Subscribe channel name was malformatted"))
        .expect_no_transmit();
    assert!(matches!(s.next_event(), ServerEvent::Error(_)));
    s.expect_event(ServerEvent::Transmit { event: "e".into(), data: Some(json!(1)) })
        .expect_event(ServerEvent::Raw(json!("not json")))
        .expect_event(ServerEvent::Transmit { event: "f".into(), data: None })
        .expect_quiet();

    // Rejected: the held packets are dropped.
    let mut s = server(server_config());
    s.send(r##"[{"event":"#handshake","cid":1},{"event":"e","cid":2}]"##);
    s.expect_event(ServerEvent::Handshake { cid: 1, auth_token: None });
    s.reject_handshake(1, &RemoteError::plain("no"), 4008);
    s.expect_frame(r#"{"rid":1,"error":{"message":"no"}}"#).expect_close(4008, "").expect_no_transmit();
    assert!(matches!(s.next_event(), ServerEvent::Closed { code: 4008, .. }));
    s.expect_quiet();

    // A held #authenticate without cid closes only once the handshake is answered.
    let mut s = server(server_config());
    s.send(r##"[{"event":"#handshake","cid":1},{"event":"#authenticate","data":"t"},{"event":"e"}]"##);
    s.expect_event(ServerEvent::Handshake { cid: 1, auth_token: None }).expect_quiet();
    s.accept_handshake(1, SOCKET_ID, false, None);
    s.text_frame();
    s.expect_close(4008, "");
    assert!(matches!(s.next_event(), ServerEvent::Error(_)));
    assert!(matches!(s.next_event(), ServerEvent::Closed { code: 4008, .. }));
    s.expect_quiet();
}

#[test]
fn second_handshake_is_refused() {
    let mut s = open_server(server_config());
    s.send(r##"{"event":"#handshake","data":{"authToken":null},"cid":2}"##)
        .expect_frame(&invalid_action(2, "The socket has already sent a #handshake"))
        .expect_event(ServerEvent::Error(RemoteError::new(
            "InvalidActionError",
            "The socket has already sent a #handshake",
        )))
        .expect_quiet();
    assert!(s.is_open());
    // Without a cid: reported, not answered, not closed.
    s.send(r##"{"event":"#handshake"}"##);
    assert!(matches!(s.next_event(), ServerEvent::Error(_)));
    s.expect_quiet();
    assert!(s.is_open());
}

// ---------------------------------------------------------------------------------------------
// Server: ping / pong
// ---------------------------------------------------------------------------------------------

#[test]
fn pings_every_interval() {
    let mut s = open_server(ServerConfig::default());
    s.expect_deadline(Some(secs(8)));
    s.tick(secs(8) - NS).expect_quiet();
    s.tick(secs(8)).expect_frame("").expect_quiet();
    s.expect_deadline(Some(secs(16)));
    s.send("").expect_event(ServerEvent::Pong);
    s.tick(secs(16)).expect_frame("").expect_quiet();
    s.send("").expect_event(ServerEvent::Pong);
    // A late wake-up sends one ping, not a burst, and keeps the 8 s grid.
    s.tick(secs(41)).expect_frame("").expect_quiet();
    s.send("").expect_event(ServerEvent::Pong);
    s.expect_deadline(Some(secs(48)));
}

#[test]
fn ping_interval_zero_does_not_hang() {
    let mut s = open_server(ServerConfig { ping_interval: Duration::ZERO, ..ServerConfig::default() });
    s.tick(ms(1)).expect_frame("").expect_quiet();
    assert!(s.poll_timeout().unwrap() > ms(1));
    // A long sleep with a tiny interval: one ping, next beat soon after.
    let mut s = open_server(ServerConfig { ping_interval: NS, ..ServerConfig::default() });
    s.send("").expect_event(ServerEvent::Pong);
    s.tick(secs(29)).expect_frame("").expect_quiet();
    let next = s.poll_timeout().unwrap();
    assert!(next > secs(29) && next <= secs(29) + ms(1), "{next:?}");
}

#[test]
fn no_pong_closes_4001_at_the_timeout() {
    let mut s = open_server(ServerConfig::default());
    for t in [8, 16, 24] {
        s.tick(secs(t)).expect_frame("").expect_quiet();
    }
    s.expect_deadline(Some(secs(30)));
    s.tick(secs(30) - NS).expect_quiet();
    s.tick(secs(30))
        .expect_close(4001, "")
        .expect_event(ServerEvent::Closed { code: 4001, reason: "Client pong timed out".into() })
        .expect_quiet()
        .expect_deadline(None);
    s.send("").expect_quiet();
}

#[test]
fn pong_resets_the_pong_timeout() {
    let mut s = open_server(ServerConfig::default());
    s.tick(secs(8)).expect_frame("");
    s.at(secs(20)).send("").expect_event(ServerEvent::Pong);
    s.tick(secs(30)).expect_frame("").expect_quiet(); // one ping for the missed beats, no close
    assert!(s.is_open());
    s.tick(secs(32)).expect_frame("").tick(secs(40)).expect_frame("").tick(secs(48)).expect_frame("");
    s.tick(secs(50) - NS).expect_quiet();
    s.tick(secs(50)).expect_close(4001, "");
}

#[test]
fn any_message_resets_the_pong_timer_at_most_every_quarter_timeout() {
    // pingTimeout 30 s: a message resets the timer when 7.5 s have passed since the last reset.
    let cfg = ServerConfig { ping_interval: secs(100), ..ServerConfig::default() };
    let mut s = open_server(cfg);
    s.at(secs(5)).send(r#"{"event":"e"}"#); // 5 s since the reset at 0: no reset
    s.expect_deadline(Some(secs(30)));
    s.at(secs(8)).send(r#"{"event":"e"}"#); // 8 s: reset → deadline 38 s
    s.expect_deadline(Some(secs(38)));
    s.at(secs(10)).send("raw text"); // 2 s: no reset
    s.expect_deadline(Some(secs(38)));
    s.tick(secs(30)); // the old deadline has moved
    assert!(s.is_open());
    s.at(secs(15)).send(r#"{"rid":77}"#); // 7 s since 8 s: no reset
    s.expect_deadline(Some(secs(38)));
    while s.poll_event().is_some() {}
    s.tick(secs(38) - NS).expect_quiet();
    s.tick(secs(38)).expect_close(4001, "");
}

#[test]
fn protocol_v1_heartbeats() {
    let cfg = ServerConfig { protocol_version: ProtocolVersion::V1, ..ServerConfig::default() };
    let mut s = server(cfg.clone());
    s.send("#2").expect_close(4009, ""); // a pong before the handshake
    let mut s = open_server(cfg);
    s.tick(secs(8)).expect_frame("#1").expect_quiet();
    s.send("#2").expect_event(ServerEvent::Pong).expect_quiet();
    // In v1 the empty string and #1 are raw messages.
    s.send("").expect_event(ServerEvent::Raw(json!(""))).expect_quiet();
    s.send("#1").expect_event(ServerEvent::Raw(json!("#1"))).expect_quiet();

    let mut c =
        open_client(ClientConfig { protocol_version: ProtocolVersion::V1, ..ClientConfig::default() });
    c.send("#1").expect_frame("#2").expect_event(ClientEvent::Ping).expect_quiet();
    c.send("").expect_event(ClientEvent::Raw(json!(""))).expect_quiet();
    c.send("#2").expect_event(ClientEvent::Raw(json!("#2"))).expect_quiet();
    assert_eq!(
        (ProtocolVersion::from_number(1), ProtocolVersion::from_number(3)),
        (Some(ProtocolVersion::V1), None)
    );
    assert_eq!((ProtocolVersion::V2.ping(), ProtocolVersion::V2.pong()), ("", ""));
}

#[test]
fn ping_timeout_disabled() {
    let cfg = ServerConfig { ping_timeout_disabled: true, ..ServerConfig::default() };
    let mut s = server(cfg.clone());
    s.expect_deadline(Some(secs(10))); // only the handshake timeout
    let mut s = open_server(cfg);
    s.expect_deadline(None);
    s.tick(secs(3600)).expect_quiet();
    assert!(s.is_open());
    s.at(secs(3601)).send("").expect_event(ServerEvent::Pong).expect_quiet();
    s.send(r#"{"event":"e"}"#).expect_event(ServerEvent::Transmit { event: "e".into(), data: None });
    s.expect_deadline(None);
}

// ---------------------------------------------------------------------------------------------
// Server: classification and reserved events
// ---------------------------------------------------------------------------------------------

#[test]
fn string_cid_makes_a_transmit() {
    let mut s = open_server(server_config());
    s.send(r#"{"event":"echo","data":1,"cid":"7"}"#)
        .expect_event(ServerEvent::Transmit { event: "echo".into(), data: Some(json!(1)) })
        .expect_quiet();
    // `event` wins over `rid`.
    s.send(r#"{"event":"echo","rid":1}"#)
        .expect_event(ServerEvent::Transmit { event: "echo".into(), data: None });
    // data: null is kept (distinct from absent).
    s.send(r#"{"event":"echo","data":null,"cid":3}"#).expect_event(ServerEvent::Invoke {
        event: "echo".into(),
        data: Some(Value::Null),
        cid: 3,
    });
    // A #-prefixed name that is not reserved is an ordinary event.
    s.send(r##"{"event":"#custom","cid":4}"##).expect_event(ServerEvent::Invoke {
        event: "#custom".into(),
        data: None,
        cid: 4,
    });
}

#[test]
fn cidless_subscribe_still_subscribes() {
    let mut s = open_server(server_config());
    s.send(r##"{"event":"#subscribe","data":{"channel":"c","waitForAuth":true,"data":{"k":1}}}"##)
        .expect_event(ServerEvent::Subscribe {
            channel: "c".into(),
            options: json!({"waitForAuth":true,"data":{"k":1}}),
            cid: None,
        })
        .expect_quiet();
}

#[test]
fn malformed_reserved_events_get_invalid_action_errors() {
    let cases = [
        (r##"{"event":"#subscribe","data":"c","cid":2}"##, "Subscribe channel name was malformatted"),
        (
            r##"{"event":"#subscribe","data":{"channel":5},"cid":2}"##,
            "Subscribe channel name was malformatted",
        ),
        (r##"{"event":"#subscribe","cid":2}"##, "Subscribe channel name was malformatted"),
        (r##"{"event":"#publish","data":{"data":1},"cid":2}"##, "Publish channel name was malformatted"),
        (r##"{"event":"#publish","data":"c","cid":2}"##, "Publish channel name was malformatted"),
        (
            r##"{"event":"#unsubscribe","data":{"channel":"c"},"cid":2}"##,
            "Unsubscribe channel name was malformatted",
        ),
        (r##"{"event":"#unsubscribe","cid":2}"##, "Unsubscribe channel name was malformatted"),
    ];
    for (frame, message) in cases {
        let mut s = open_server(server_config());
        s.send(frame)
            .expect_frame(&invalid_action(2, message))
            .expect_event(ServerEvent::Error(RemoteError::new("InvalidActionError", message)))
            .expect_quiet();
        assert!(s.is_open());
        // Without a cid: reported, not answered.
        let without_cid = frame.replace(",\"cid\":2", "");
        s.send(&without_cid)
            .expect_event(ServerEvent::Error(RemoteError::new("InvalidActionError", message)))
            .expect_quiet();
    }
}

#[test]
fn authenticate_and_remove_auth_token() {
    let mut s = open_server(server_config());
    s.send(r##"{"event":"#authenticate","data":"a.b.c","cid":2}"##)
        .expect_event(ServerEvent::Authenticate { token: json!("a.b.c"), cid: 2 });
    s.send(r##"{"event":"#authenticate","cid":3}"##)
        .expect_event(ServerEvent::Authenticate { token: Value::Null, cid: 3 });
    s.send(r##"{"event":"#removeAuthToken"}"##).expect_event(ServerEvent::RemoveAuthToken).expect_quiet();

    // Without a cid: 4008; the rest of the batch is dropped.
    s.send(r##"[{"event":"#authenticate","data":"a.b.c"},{"event":"after"}]"##)
        .expect_event(ServerEvent::Error(RemoteError::new(
            "InvalidActionError",
            "Authenticate request was malformatted",
        )))
        .expect_event(ServerEvent::Closed {
            code: 4008,
            reason: "Server rejected handshake from client".into(),
        })
        .expect_close(4008, "")
        .expect_quiet();
}

#[test]
fn responses_unknown_late_and_errors() {
    let mut s = open_server(server_config());
    // Unknown rid: ignored.
    s.send(r#"{"rid":99,"data":1}"#).expect_quiet();
    // A call with a deadline times out; its late response is ignored.
    let (a, _) = s.invoke("slow", None, Some(secs(5))).unwrap();
    let (b, frame) = s.invoke("fast", Some(&json!(2)), Some(secs(5))).unwrap();
    assert_eq!((a, b), (1, 2));
    assert_eq!(frame, r#"{"event":"fast","cid":2,"data":2}"#);
    s.expect_deadline(Some(secs(3))); // the pong timeout (3 s) comes before the calls' and the ping's
    s.at(secs(1)).send(r#"{"rid":2,"error":"just a string"}"#).expect_event(ServerEvent::Response {
        rid: 2,
        result: Err(RemoteError::from_value(json!("just a string"))),
    });
    s.send("").expect_event(ServerEvent::Pong); // pong timeout now 4 s
    s.at(secs(2)).send("").expect_event(ServerEvent::Pong); // pong timeout now 5 s
    s.expect_deadline(Some(secs(5)));
    s.at(secs(4)).send("").expect_event(ServerEvent::Pong);
    s.tick(secs(5)).expect_event(ServerEvent::CallTimedOut { cid: 1, event: "slow".into() }).expect_quiet();
    assert!(s.is_open());
    s.send(r#"{"rid":1,"data":"late"}"#).expect_quiet();
    // "error": null is a success.
    let (c, _) = s.invoke("x", None, None).unwrap();
    s.send(&format!(r#"{{"rid":{c},"error":null,"data":7}}"#))
        .expect_event(ServerEvent::Response { rid: c, result: Ok(Some(json!(7))) });
}

#[test]
fn invoke_needs_an_open_connection() {
    let mut s = server(server_config());
    let err = s.invoke("e", None, None).unwrap_err();
    assert!(matches!(err, Error::BadConnection { kind: AbortKind::ConnectAbort, .. }));
    assert_eq!(err.name(), "BadConnectionError");
    let mut s = open_server(server_config());
    s.close(1000, "");
    assert!(s.invoke("e", None, None).is_err());
}

#[test]
fn raw_messages_after_handshake() {
    let mut s = open_server(server_config());
    s.send("hello").expect_event(ServerEvent::Raw(json!("hello")));
    s.send(r#"{"foo":1}"#).expect_event(ServerEvent::Raw(json!({"foo":1})));
    s.send(r#"[1,"a",{"rid":"1"}]"#)
        .expect_event(ServerEvent::Raw(json!(1)))
        .expect_event(ServerEvent::Raw(json!("a")))
        .expect_event(ServerEvent::Raw(json!({"rid":"1"})))
        .expect_quiet();
    s.send("[]").expect_quiet();
    assert!(s.is_open());
}

#[test]
fn binary_frames_are_decoded_like_text() {
    let mut s = server(server_config());
    s.send_binary(HANDSHAKE.as_bytes()).expect_event(ServerEvent::Handshake { cid: 1, auth_token: None });
    s.accept_handshake(1, SOCKET_ID, false, None);
    s.text_frame();
    s.send_binary(br#"{"event":"echo","data":"a","cid":2}"#).expect_event(ServerEvent::Invoke {
        event: "echo".into(),
        data: Some(json!("a")),
        cid: 2,
    });
    s.send_binary(b"").expect_event(ServerEvent::Pong);
    // Invalid UTF-8: replaced, not a panic; a broken JSON frame is raw text.
    s.send_binary(&[0xff, 0xfe, b'{']).expect_event(ServerEvent::Raw(json!("\u{fffd}\u{fffd}{")));
    s.send_binary(b"{\"event\":\"e\",\"data\":\"\xc3\"}")
        .expect_event(ServerEvent::Transmit { event: "e".into(), data: Some(json!("\u{fffd}")) })
        .expect_quiet();

    let mut c = open_client(ClientConfig::default());
    c.send_binary(br#"{"event":"hi"}"#)
        .expect_event(ClientEvent::Transmit { event: "hi".into(), data: None });
    c.send_binary(b"").expect_frame("").expect_event(ClientEvent::Ping);
    c.send_binary(&[0x80]).expect_event(ClientEvent::Raw(json!("\u{fffd}"))).expect_quiet();
}

#[test]
fn closed_connection_ignores_input_and_answers() {
    let mut s = open_server(server_config());
    let (cid, _) = s.invoke("pending", None, Some(secs(100))).unwrap();
    s.handle_close(1006, "");
    s.expect_event(ServerEvent::Closed { code: 1006, reason: "Socket hung up".into() }).expect_quiet();
    // No deadline is left for a closed connection (even with a pending call).
    s.expect_deadline(None);
    assert!(s.calls().is_pending(cid));
    s.send(r#"{"event":"e"}"#).send_binary(b"x").tick(secs(200)).expect_quiet();
    // Answers after the close are dropped: no text after the connection closed.
    s.respond(2, None);
    s.respond_error(3, &RemoteError::plain("x"));
    s.close(1000, "");
    s.handle_close(1000, "");
    s.expect_quiet();

    // close() sends the reason as given, reports the table text when it is empty.
    let mut s = open_server(server_config());
    s.close(4321, "custom");
    s.expect_close(4321, "custom").expect_event(ServerEvent::Closed { code: 4321, reason: "custom".into() });
    s.respond(1, None);
    s.expect_quiet();
}

#[test]
fn close_reason_on_the_wire_fits_a_close_frame() {
    let long = "é".repeat(100); // 200 bytes
    let mut s = open_server(server_config());
    s.close(4000, &long);
    let Some(Transmit::Close { code: 4000, reason }) = s.poll_transmit() else { panic!() };
    assert!(reason.len() <= 123 && long.starts_with(&reason) && reason.len() >= 122, "{}", reason.len());
    // The application still sees the whole reason.
    s.expect_event(ServerEvent::Closed { code: 4000, reason: long.clone() });
}

#[test]
fn deeply_nested_frames_do_not_panic() {
    let deep_arrays = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let deep_objects = format!("{}1{}", r#"{"a":"#.repeat(5000), "}".repeat(5000));
    let unclosed = "[".repeat(100_000);
    for frame in [&deep_arrays, &deep_objects, &unclosed] {
        let mut s = open_server(server_config());
        s.send(frame);
        assert!(s.is_open());
        while s.poll_event().is_some() {}
        let mut s = server(server_config());
        s.send(frame).expect_close(4009, "");
        let mut c = open_client(ClientConfig::default());
        c.send(frame);
        assert_eq!(c.state(), ClientState::Open);
    }
}

// ---------------------------------------------------------------------------------------------
// Codec and packet classification
// ---------------------------------------------------------------------------------------------

#[test]
fn decode_odd_inputs() {
    let raw = |s: &str| Decoded::Raw(s.into());
    assert_eq!(codec::decode("", ""), Decoded::Heartbeat);
    assert_eq!(codec::decode("", "#2"), raw(""));
    assert_eq!(codec::decode("#2", "#2"), Decoded::Heartbeat);
    assert_eq!(codec::decode("#1", ""), raw("#1"));
    assert_eq!(codec::decode(" ", ""), raw(" "));
    assert_eq!(codec::decode("\n\t", ""), raw("\n\t"));
    assert_eq!(codec::decode("[", ""), raw("["));
    assert_eq!(codec::decode("{", ""), raw("{"));
    assert_eq!(codec::decode("{oops", ""), raw("{oops"));
    assert_eq!(codec::decode("[1,]", ""), raw("[1,]"));
    assert_eq!(codec::decode("[]", ""), Decoded::Packets(vec![]));
    assert_eq!(
        codec::decode("[[1],[]]", ""),
        Decoded::Packets(vec![Packet::Raw(json!([1])), Packet::Raw(json!([]))])
    );
    assert_eq!(codec::decode("5", ""), raw("5"));
    assert_eq!(codec::decode("-1.5e300", ""), raw("-1.5e300"));
    assert_eq!(codec::decode("null", ""), raw("null"));
    assert_eq!(codec::decode("\"str\"", ""), raw("\"str\""));
    assert_eq!(codec::decode("{}", ""), Decoded::Packets(vec![Packet::Raw(json!({}))]));
    assert_eq!(codec::decode("{} {}", ""), raw("{} {}"));
    assert_eq!(
        codec::decode(" \n{\"rid\":1} ", ""),
        Decoded::Packets(vec![Packet::Response { rid: 1, result: Ok(None) }])
    );
    // Non-JSON whitespace before a brace: raw, no panic.
    assert_eq!(codec::decode("\u{a0}{}", ""), raw("\u{a0}{}"));
    // Nesting: 100 levels parse; beyond serde_json's 128-level limit the frame is raw text.
    let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    assert!(matches!(codec::decode(&nested(100), ""), Decoded::Packets(p) if p.len() == 1));
    for n in [129, 200, 10_000, 200_000] {
        assert_eq!(codec::decode(&nested(n), ""), raw(&nested(n)), "depth {n}");
    }
    let objects = format!("{}{}", r#"{"a":"#.repeat(300), "}".repeat(300));
    assert!(matches!(codec::decode(&objects, ""), Decoded::Raw(_)));
    // Binary: lossy UTF-8, then the same rules.
    assert_eq!(codec::decode_binary(b"[]", ""), Decoded::Packets(vec![]));
    assert_eq!(codec::decode_binary(b"", ""), Decoded::Heartbeat);
    assert_eq!(codec::decode_binary(&[0xc3], ""), raw("\u{fffd}"));
    assert_eq!(codec::decode_binary(&[0xff; 3], "#2"), raw("\u{fffd}\u{fffd}\u{fffd}"));
}

#[test]
fn packet_classification() {
    let p = |v: Value| Packet::from_value(v);
    assert_eq!(
        p(json!({"event":"e","data":1,"cid":3})),
        Packet::Event { event: "e".into(), data: Some(json!(1)), cid: Some(3) }
    );
    assert_eq!(p(json!({"event":"e","cid":"3"})), Packet::Event { event: "e".into(), data: None, cid: None });
    assert_eq!(p(json!({"event":"e","cid":-3})), Packet::Event { event: "e".into(), data: None, cid: None });
    // A non-string event falls through to rid.
    assert_eq!(p(json!({"event":5,"rid":2})), Packet::Response { rid: 2, result: Ok(None) });
    assert_eq!(p(json!({"event":5})), Packet::Raw(json!({"event":5})));
    assert_eq!(p(json!({"rid":1,"data":null})), Packet::Response { rid: 1, result: Ok(Some(Value::Null)) });
    assert_eq!(p(json!({"rid":"1"})), Packet::Raw(json!({"rid":"1"})));
    assert_eq!(p(json!({"rid":-1})), Packet::Raw(json!({"rid":-1})));
    assert_eq!(
        p(json!({"rid":1,"error":{"message":"m"},"data":2})),
        Packet::Response { rid: 1, result: Err(RemoteError::plain("m")) }
    );
    assert_eq!(p(json!("x")), Packet::Raw(json!("x")));
    assert_eq!(p(json!(null)), Packet::Raw(Value::Null));
}

#[test]
fn base64_objects() {
    assert_eq!(codec::binary(&[]), json!({"base64":true,"data":""}));
    assert_eq!(codec::binary_bytes(&codec::binary(&[0, 255, 7])), Some(vec![0, 255, 7]));
    assert_eq!(codec::binary_bytes(&json!({"base64":"true","data":"AQID"})), None);
    assert_eq!(codec::binary_bytes(&json!({"base64":true,"data":"!!"})), None);
    assert_eq!(codec::binary_bytes(&json!({"base64":true})), None);
    assert_eq!(codec::binary_bytes(&json!("AQID")), None);
}

// ---------------------------------------------------------------------------------------------
// Client connection
// ---------------------------------------------------------------------------------------------

#[test]
fn client_handshake_sets_ping_timeout_from_response() {
    let mut c = client(ClientConfig::default());
    c.expect_deadline(Some(secs(20)));
    c.at(secs(1));
    c.handle_open(secs(1), 1, Some("a.b.c"));
    c.expect_frame(r##"{"event":"#handshake","data":{"authToken":"a.b.c"},"cid":1}"##);
    assert_eq!(c.ping_timeout(), secs(20)); // the connect timeout until the response
    c.expect_deadline(Some(secs(11))); // the handshake's ack timeout
    c.at(secs(2)).send(r#"{"rid":1,"data":{"id":"x","pingTimeout":3000,"isAuthenticated":true}}"#);
    c.expect_event(ClientEvent::Connected {
        id: "x".into(),
        ping_timeout: ms(3000),
        is_authenticated: true,
        auth_error: None,
    });
    assert_eq!(c.ping_timeout(), ms(3000));
    c.expect_deadline(Some(secs(5)));
    // A second open does nothing.
    c.handle_open(secs(2), 2, None);
    c.expect_quiet();
}

#[test]
fn client_handshake_error_closes_with_status_code() {
    let mut c = client(ClientConfig::default());
    c.handle_open(T0, 1, None);
    c.text_frame();
    c.send(r#"{"rid":1,"error":{"message":"sc blocked","name":"HsError","statusCode":4501}}"#)
        .expect_close(4501, "HsError: sc blocked")
        .expect_event(ClientEvent::Closed {
            code: 4501,
            reason: "HsError: sc blocked".into(),
            was_open: false,
        })
        .expect_quiet();
    assert_eq!(c.state(), ClientState::Closed);
    assert_eq!(close::reconnect_policy(4501), Reconnect::Never);

    // No statusCode (or an unusable one): 4003.
    for error in [
        r#"{"message":"no","name":"NoError"}"#,
        r#"{"message":"no","name":"NoError","statusCode":"4501"}"#,
        r#"{"message":"no","name":"NoError","statusCode":70000}"#,
        r#"{"message":"no","name":"NoError","statusCode":1006}"#,
        r#"{"message":"no","name":"NoError","statusCode":0}"#,
    ] {
        let mut c = client(ClientConfig::default());
        c.handle_open(T0, 1, None);
        c.text_frame();
        c.send(&format!(r#"{{"rid":1,"error":{error}}}"#)).expect_close(4003, "NoError: no");
        assert!(matches!(c.next_event(), ClientEvent::Closed { code: 4003, was_open: false, .. }));
    }
    // A plain error and a bare string.
    let mut c = client(ClientConfig::default());
    c.handle_open(T0, 1, None);
    c.text_frame();
    c.send(r#"{"rid":1,"error":"nope"}"#).expect_close(4003, "Error: nope");

    // A long message: the wire reason fits a close frame, the event has it all.
    let mut c = client(ClientConfig::default());
    c.handle_open(T0, 1, None);
    c.text_frame();
    let message = "x".repeat(300);
    c.send(&format!(r#"{{"rid":1,"error":{{"message":"{message}","name":"E","statusCode":4008}}}}"#));
    let Some(Transmit::Close { code: 4008, reason }) = c.poll_transmit() else { panic!() };
    assert_eq!(reason.len(), 123);
    assert_eq!(
        c.next_event(),
        ClientEvent::Closed { code: 4008, reason: format!("E: {message}"), was_open: false }
    );
}

#[test]
fn client_handshake_timeout_is_4003() {
    let mut c = client(ClientConfig::default());
    c.at(secs(1));
    c.handle_open(secs(1), 1, None);
    c.text_frame();
    c.tick(secs(11) - NS).expect_quiet();
    c.tick(secs(11))
        .expect_close(4003, "TimeoutError: Event response for #handshake event timed out")
        .expect_event(ClientEvent::Closed {
            code: 4003,
            reason: "TimeoutError: Event response for #handshake event timed out".into(),
            was_open: false,
        })
        .expect_quiet()
        .expect_deadline(None);
    // The late response is ignored.
    c.send(r#"{"rid":1,"data":{"id":"x","pingTimeout":3000,"isAuthenticated":false}}"#).expect_quiet();
}

#[test]
fn client_connect_timeout_is_4007() {
    // The WebSocket never opens.
    let mut c = client(ClientConfig::default());
    c.tick(secs(20) - NS).expect_quiet();
    c.tick(secs(20))
        .expect_close(4007, "")
        .expect_event(ClientEvent::Closed {
            code: 4007,
            reason: "Client connection establishment timed out".into(),
            was_open: false,
        })
        .expect_quiet();
    // Opened, but the handshake's own timeout is longer than what is left of the connect timeout.
    let mut c = client(ClientConfig { ack_timeout: secs(30), ..ClientConfig::default() });
    c.handle_open(secs(5), 1, None);
    c.text_frame();
    c.tick(secs(20)).expect_close(4007, "");
    assert_eq!(c.state(), ClientState::Closed);
}

#[test]
fn client_ping_timeout_is_4000() {
    let mut c = client(ClientConfig::default());
    c.handle_open(T0, 1, None);
    c.text_frame();
    c.at(secs(1)).send(r#"{"rid":1,"data":{"id":"x","pingTimeout":3000,"isAuthenticated":false}}"#);
    c.next_event();
    c.expect_deadline(Some(secs(4)));
    c.at(secs(3)).send("").expect_frame("").expect_event(ClientEvent::Ping);
    c.expect_deadline(Some(secs(6)));
    c.tick(secs(6) - NS).expect_quiet();
    c.tick(secs(6))
        .expect_close(4000, "")
        .expect_event(ClientEvent::Closed {
            code: 4000,
            reason: "Server ping timed out".into(),
            was_open: true,
        })
        .expect_quiet();
    assert_eq!(close::reconnect_policy(4000), Reconnect::Immediately);
}

#[test]
fn client_ping_timeout_defaults_to_connect_timeout() {
    // A handshake response without pingTimeout keeps the connect timeout.
    let mut c = client(ClientConfig { connect_timeout: secs(7), ..ClientConfig::default() });
    c.handle_open(T0, 1, None);
    c.text_frame();
    c.at(secs(1)).send(r#"{"rid":1,"data":{"id":"x"}}"#);
    assert_eq!(
        c.next_event(),
        ClientEvent::Connected {
            id: "x".into(),
            ping_timeout: secs(7),
            is_authenticated: false,
            auth_error: None
        }
    );
    c.tick(secs(8) - NS).expect_quiet();
    c.tick(secs(8)).expect_close(4000, "");
    // A response without data at all still connects.
    let mut c = client(ClientConfig::default());
    c.handle_open(T0, 1, None);
    c.text_frame();
    c.send(r#"{"rid":1}"#);
    assert!(matches!(c.next_event(), ClientEvent::Connected { .. }));
}

#[test]
fn client_ping_timeout_disabled() {
    let mut c = open_client(ClientConfig { ping_timeout_disabled: true, ..ClientConfig::default() });
    c.expect_deadline(None);
    c.tick(secs(3600)).expect_quiet();
    c.send("").expect_frame("").expect_event(ClientEvent::Ping);
    assert_eq!(c.state(), ClientState::Open);
}

#[test]
fn client_reserved_events() {
    let mut c = open_client(ClientConfig::default());
    // #publish: valid, without data, malformed (dropped).
    c.send(r##"{"event":"#publish","data":{"channel":"c"}}"##).expect_event(ClientEvent::Publish {
        channel: "c".into(),
        data: None,
        position: None,
    });
    c.send(r##"{"event":"#publish","data":{"channel":1,"data":2}}"##).expect_quiet();
    c.send(r##"{"event":"#publish","data":"c"}"##).expect_quiet();
    // #kickOut: with and without a message, malformed.
    c.send(r##"{"event":"#kickOut","data":{"channel":"c"}}"##)
        .expect_event(ClientEvent::KickOut { channel: "c".into(), message: None });
    c.send(r##"{"event":"#kickOut","data":{}}"##).expect_quiet();
    // #setAuthToken with a cid: reported with the cid for the driver to answer.
    c.send(r##"{"event":"#setAuthToken","data":{"token":"t"},"cid":4}"##)
        .expect_event(ClientEvent::SetAuthToken { token: "t".into(), cid: Some(4) })
        .expect_quiet();
    // Without a token: an InvalidMessageError answer when there is a cid, nothing otherwise.
    c.send(r##"{"event":"#setAuthToken","data":{},"cid":5}"##)
        .expect_frame(r#"{"rid":5,"error":{"message":"No token data provided by #setAuthToken event","name":"InvalidMessageError"}}"#)
        .expect_quiet();
    c.send(r##"{"event":"#setAuthToken","cid":6}"##)
        .expect_frame(r#"{"rid":6,"error":{"message":"No token data provided by #setAuthToken event","name":"InvalidMessageError"}}"#)
        .expect_quiet();
    c.send(r##"{"event":"#setAuthToken","data":{"token":5}}"##).expect_quiet();
    // #removeAuthToken with a cid is answered.
    c.send(r##"{"event":"#removeAuthToken","cid":7}"##)
        .expect_frame(r#"{"rid":7}"#)
        .expect_event(ClientEvent::RemoveAuthToken)
        .expect_quiet();
    // Invokes, transmits, responses (any rid: the driver matches them), raw.
    c.send(r#"{"event":"p","data":[1],"cid":8}"#).expect_event(ClientEvent::Invoke {
        event: "p".into(),
        data: Some(json!([1])),
        cid: 8,
    });
    c.send(r#"{"event":"p","cid":"8"}"#)
        .expect_event(ClientEvent::Transmit { event: "p".into(), data: None });
    c.send(r#"{"rid":999,"data":1}"#)
        .expect_event(ClientEvent::Response { rid: 999, result: Ok(Some(json!(1))) });
    c.send("text").expect_event(ClientEvent::Raw(json!("text")));
    c.send(r#"[{"x":1},2]"#)
        .expect_event(ClientEvent::Raw(json!({"x":1})))
        .expect_event(ClientEvent::Raw(json!(2)));
    c.expect_quiet();
}

#[test]
fn client_close_and_peer_close() {
    let mut c = open_client(ClientConfig::default());
    c.close(1000, "");
    c.expect_close(1000, "")
        .expect_event(ClientEvent::Closed {
            code: 1000,
            reason: "Socket closed normally".into(),
            was_open: true,
        })
        .expect_quiet()
        .expect_deadline(None);
    c.send("").send(r#"{"event":"e"}"#).tick(secs(100)).expect_quiet();
    c.close(1000, "");
    c.handle_close(1006, "");
    c.expect_quiet();
    // The peer's close: no close frame from us.
    let mut c = client(ClientConfig::default());
    c.handle_open(T0, 1, None);
    c.text_frame();
    c.handle_close(4009, "");
    c.expect_event(ClientEvent::Closed {
        code: 4009,
        reason: "Server received a message before the client handshake".into(),
        was_open: false,
    })
    .expect_quiet();
    // A batch is cut at the handshake failure.
    let mut c = client(ClientConfig::default());
    c.handle_open(T0, 1, None);
    c.text_frame();
    c.send(r#"[{"rid":1,"error":{"message":"m"}},{"event":"after"}]"#).expect_close(4003, "Error: m");
    assert!(matches!(c.next_event(), ClientEvent::Closed { .. }));
    c.expect_quiet();
}

// ---------------------------------------------------------------------------------------------
// Channels
// ---------------------------------------------------------------------------------------------

fn prio(p: i64) -> SubscribeOptions {
    SubscribeOptions { priority: Some(p), ..SubscribeOptions::default() }
}

#[test]
fn channels_priority_ordering_with_ties_in_insertion_order() {
    let mut ch = Channels::new();
    assert!(ch.subscribe("z-low", SubscribeOptions::default()));
    assert!(ch.subscribe("high", prio(10)));
    assert!(ch.subscribe("a-low", prio(0)));
    assert!(ch.subscribe("neg", prio(-1)));
    assert!(ch.subscribe("high2", prio(10)));
    assert!(ch.subscribe("mid", prio(5)));
    assert_eq!(ch.due(false), ["high", "high2", "mid", "z-low", "a-low", "neg"]);
    // Subscribing again replaces the options but keeps the original position among equals.
    assert!(!ch.subscribe("z-low", prio(10)));
    assert_eq!(ch.due(false), ["z-low", "high", "high2", "mid", "a-low", "neg"]);
    assert_eq!(ch.state("mid"), ChannelState::Pending);
    assert_eq!(ch.state("nope"), ChannelState::Unsubscribed);
    assert_eq!(ch.options("mid"), Some(&prio(5)));
    assert_eq!(
        [ChannelState::Pending, ChannelState::Subscribed, ChannelState::Unsubscribed]
            .map(ChannelState::as_str),
        ["pending", "subscribed", "unsubscribed"]
    );
}

#[test]
fn channels_wait_for_auth() {
    let mut ch = Channels::new();
    ch.subscribe("low", SubscribeOptions::default());
    ch.subscribe(
        "high",
        SubscribeOptions { priority: Some(10), data: Some(json!({"hello":1})), ..Default::default() },
    );
    ch.subscribe("priv", SubscribeOptions { wait_for_auth: true, ..Default::default() });
    assert_eq!(ch.due(false), ["high", "low"]);
    assert_eq!(ch.due(true), ["high", "low", "priv"]);
    assert_eq!(ch.payload("high"), json!({"channel":"high","data":{"hello":1}}));
    assert_eq!(ch.payload("low"), json!({"channel":"low"}));
    assert_eq!(ch.payload("priv"), json!({"channel":"priv","waitForAuth":true}));
    // The frames the JS client sends for them.
    assert_eq!(
        packet::encode_client_invoke("#subscribe", Some(&ch.payload("high")), 2).unwrap(),
        r##"{"event":"#subscribe","data":{"channel":"high","data":{"hello":1}},"cid":2}"##
    );
    assert_eq!(
        packet::encode_client_invoke("#subscribe", Some(&ch.payload("priv")), 5).unwrap(),
        r##"{"event":"#subscribe","data":{"channel":"priv","waitForAuth":true},"cid":5}"##
    );
    assert!(ch.contains("priv"));
}

#[test]
fn channels_acked_failed_kick_out() {
    let mut ch = Channels::new();
    ch.subscribe("a", SubscribeOptions::default());
    ch.subscribe("b", SubscribeOptions::default());
    ch.sent("a", 2);
    ch.sent("b", 3);
    assert!(ch.is_subscribe_call(2) && ch.is_subscribe_call(3) && !ch.is_subscribe_call(4));
    assert!(ch.due(true).is_empty(), "in-flight channels are not due");
    assert_eq!(
        ch.acked(2),
        Some(StateChange { channel: "a".into(), old: ChannelState::Pending, new: ChannelState::Subscribed })
    );
    assert_eq!(ch.acked(2), None);
    assert_eq!(ch.state("a"), ChannelState::Subscribed);
    assert_eq!(
        ch.failed(3),
        Some(StateChange {
            channel: "b".into(),
            old: ChannelState::Pending,
            new: ChannelState::Unsubscribed
        })
    );
    assert_eq!((ch.state("b"), ch.contains("b"), ch.failed(3)), (ChannelState::Unsubscribed, false, None));
    assert_eq!(ch.subscriptions(true), ["a"]);
    assert_eq!(
        ch.kick_out("a"),
        Some(StateChange {
            channel: "a".into(),
            old: ChannelState::Subscribed,
            new: ChannelState::Unsubscribed
        })
    );
    assert_eq!(ch.kick_out("a"), None);
    assert!(ch.subscriptions(true).is_empty());
    // Unsubscribing a channel whose subscribe is in flight: its ack is ignored.
    ch.subscribe("c", SubscribeOptions::default());
    ch.sent("c", 4);
    assert_eq!(ch.unsubscribe("c"), ChannelState::Pending);
    assert_eq!(ch.unsubscribe("c"), ChannelState::Unsubscribed);
    assert!(!ch.is_subscribe_call(4));
    ch.subscribe("c", SubscribeOptions::default());
    assert_eq!(ch.acked(4), None);
    assert_eq!(ch.state("c"), ChannelState::Pending);
}

#[test]
fn channels_connection_lost() {
    let mut ch = Channels::new();
    ch.subscribe("sub", prio(1));
    ch.subscribe("flying", prio(2));
    ch.subscribe("waiting", SubscribeOptions::default());
    ch.sent("sub", 2);
    ch.acked(2);
    ch.sent("flying", 3);
    assert_eq!(ch.subscriptions(false), ["sub"]);
    // Subscription order, as socketcluster-client's channel map.
    assert_eq!(ch.subscriptions(true), ["sub", "flying", "waiting"]);
    assert_eq!(
        ch.connection_lost(),
        [StateChange { channel: "sub".into(), old: ChannelState::Subscribed, new: ChannelState::Pending }]
    );
    // The in-flight subscribe is forgotten: due again, and its late ack does nothing.
    assert!(!ch.is_subscribe_call(3));
    assert_eq!(ch.acked(3), None);
    assert_eq!(ch.state("flying"), ChannelState::Pending);
    assert_eq!(ch.due(false), ["flying", "sub", "waiting"]);
    assert!(ch.subscriptions(false).is_empty());
    assert!(ch.connection_lost().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Calls, backoff, close codes, errors
// ---------------------------------------------------------------------------------------------

#[test]
fn calls_ids_expiry_abort() {
    let mut calls = Calls::new();
    assert!(calls.is_empty());
    assert_eq!(calls.start("a", Some(secs(5))), 1);
    assert_eq!(calls.next_cid(), 2); // a cid without a tracked call
    assert_eq!(calls.start("b", Some(secs(3))), 3);
    assert_eq!(calls.start("c", None), 4);
    assert_eq!(calls.start("d", Some(secs(3))), 5);
    assert_eq!(calls.start("e", Some(secs(9))), 6);
    assert_eq!(calls.len(), 5);
    assert!(calls.is_pending(1) && !calls.is_pending(2));
    assert_eq!(calls.next_deadline(), Some(secs(3)));
    assert!(calls.expire(secs(3) - NS).is_empty());
    // Earliest first; equal deadlines in call order; at exactly the deadline.
    assert_eq!(calls.expire(secs(5)), [(3, "b".to_string()), (5, "d".to_string()), (1, "a".to_string())]);
    assert_eq!(calls.finish(1), None); // late response
    assert_eq!(calls.next_deadline(), Some(secs(9)));
    assert!(calls.cancel(6) && !calls.cancel(6));
    assert_eq!(calls.next_deadline(), None);
    assert_eq!(calls.start("f", Some(secs(1))), 7);
    assert_eq!(calls.start("g", None), 8);
    assert_eq!(calls.finish(8).as_deref(), Some("g"));
    assert_eq!(calls.abort_all(), [(4, "c".to_string()), (7, "f".to_string())]);
    assert!(calls.is_empty());
    assert_eq!(calls.next_deadline(), None);
    assert!(calls.expire(secs(1000)).is_empty());
    // Ids keep counting after an abort (the client keeps its counter across reconnects).
    assert_eq!(calls.start("h", None), 9);
}

#[test]
fn backoff_defaults_and_cap() {
    let b = Backoff::default();
    assert_eq!(
        b,
        Backoff { initial_delay: secs(10), randomness: secs(10), multiplier: 1.5, max_delay: secs(60) }
    );
    assert_eq!(b.delay(0, 0.0), secs(10));
    assert_eq!(b.delay(0, 0.5), secs(15));
    assert_eq!(b.delay(0, 0.99999), ms(20_000));
    assert_eq!(b.delay(1, 0.0), secs(15));
    assert_eq!(b.delay(2, 0.0), ms(22_500));
    assert_eq!(b.delay(3, 0.0), ms(33_750));
    assert_eq!(b.delay(4, 0.0), ms(50_625));
    assert_eq!(b.delay(5, 0.0), secs(60));
    assert_eq!(b.delay(2, 0.9), ms(42_750)); // (10 s + 0.9 · 10 s) · 1.5²
    assert_eq!(b.delay(u32::MAX, 1.0), secs(60));
    // Whole milliseconds.
    let odd =
        Backoff { initial_delay: ms(1), randomness: Duration::ZERO, multiplier: 1.5, max_delay: secs(1) };
    assert_eq!(odd.delay(1, 0.0), ms(2)); // 1.5 ms rounds up
    assert_eq!(odd.delay(3, 0.0), ms(3)); // 3.375 ms rounds down
    // The cap applies to the first attempt too.
    let big = Backoff { initial_delay: secs(100), ..Backoff::default() };
    assert_eq!(big.delay(0, 0.0), secs(60));
}

#[test]
fn close_code_texts() {
    let table = [
        (1000, "Socket closed normally"),
        (1001, "Socket was disconnected"),
        (1005, "Socket closed without status code"),
        (1006, "Socket hung up"),
        (1009, "Message was too big to process"),
        (1011, "Server encountered an unexpected fatal condition"),
        (4000, "Server ping timed out"),
        (4001, "Client pong timed out"),
        (4002, "Server failed to sign auth token"),
        (4003, "Failed to complete handshake"),
        (4004, "Client failed to save auth token"),
        (4005, "Did not receive #handshake from client before timeout"),
        (4006, "Failed to bind socket to message broker"),
        (4007, "Client connection establishment timed out"),
        (4008, "Server rejected handshake from client"),
        (4009, "Server received a message before the client handshake"),
    ];
    for (code, text) in table {
        assert_eq!(close::text(code), Some(text), "{code}");
        assert_eq!(close::reason(code, ""), text);
        assert_eq!(close::reason(code, "given"), "given");
    }
    for code in [0, 999, 1004, 1012, 3000, 4010, 4500, 4999, u16::MAX] {
        assert_eq!(close::text(code), None, "{code}");
        assert_eq!(close::reason(code, ""), "");
    }
    assert!(close::is_ignored_status(1000) && close::is_ignored_status(1001));
    assert!(!close::is_ignored_status(1005) && !close::is_ignored_status(4000));
}

#[test]
fn close_reconnect_policy() {
    for code in [1000, 4500, 4501, 4999, 5000, u16::MAX] {
        assert_eq!(close::reconnect_policy(code), Reconnect::Never, "{code}");
    }
    for code in [4000, 4001, 1005] {
        assert_eq!(close::reconnect_policy(code), Reconnect::Immediately, "{code}");
    }
    for code in [1001, 1006, 1009, 1011, 1013, 4002, 4003, 4005, 4007, 4008, 4009, 4499] {
        assert_eq!(close::reconnect_policy(code), Reconnect::Backoff, "{code}");
    }
}

#[test]
fn close_protocol_error_message() {
    assert_eq!(close::protocol_error_message(4001, ""), "Client pong timed out");
    assert_eq!(close::protocol_error_message(4321, ""), "Socket connection closed with status code 4321");
    assert_eq!(
        close::protocol_error_message(4321, "bye"),
        "Socket connection closed with status code 4321 and reason: bye"
    );
    assert_eq!(
        close::protocol_error_message(4001, "custom"),
        "Socket connection closed with status code 4001 and reason: custom"
    );
}

#[test]
fn remote_error_wire_forms() {
    let e = RemoteError::new("CustomError", "boom").with("extra", 42).with("aaa", 1);
    let s = serde_json::to_string(&e).unwrap();
    assert!(s.starts_with(r#"{"message":"boom","name":"CustomError","#), "{s}");
    assert_eq!(
        serde_json::from_str::<Value>(&s).unwrap(),
        json!({"message":"boom","name":"CustomError","extra":42,"aaa":1})
    );
    assert_eq!((e.name(), e.message(), e.get("extra")), ("CustomError", "boom", Some(&json!(42))));
    assert_eq!(e.to_string(), "CustomError: boom");

    // A plain error: no name on the wire; the receiver calls it Error.
    let plain = RemoteError::plain("plain");
    assert_eq!(serde_json::to_string(&plain).unwrap(), r#"{"message":"plain"}"#);
    assert_eq!((plain.name(), plain.get("name")), ("Error", None));
    // Message first even when it was not first in the received object.
    let received = RemoteError::from_value(json!({"zzz":1,"name":"N","message":"m"}));
    assert_eq!(serde_json::to_string(&received).unwrap(), r#"{"message":"m","name":"N","zzz":1}"#);
    // Odd shapes: no message, non-string message or name, bare string, other values.
    let odd = RemoteError::from_value(json!({"message":5,"name":7}));
    assert_eq!((odd.name(), odd.message()), ("Error", "Invalid error message format"));
    let bare = RemoteError::from_value(json!("just a string"));
    assert_eq!((bare.name(), bare.message()), ("Error", "just a string"));
    assert_eq!(serde_json::to_string(&bare).unwrap(), r#""just a string""#);
    assert_eq!(bare.clone().with("x", 1), bare); // no effect on a non-object
    assert_eq!(bare.get("x"), None);
    let num = RemoteError::from_value(json!(3));
    assert_eq!(
        (num.message(), num.as_value(), num.clone().into_value()),
        ("Invalid error message format", &json!(3), json!(3))
    );
    // A received error is passed on unchanged.
    assert_eq!(
        packet::encode_error(
            1,
            &RemoteError::from_value(json!({"message":"m","name":"N","statusCode":4008}))
        ),
        r#"{"rid":1,"error":{"message":"m","name":"N","statusCode":4008}}"#
    );
}

#[test]
fn error_to_remote_wire_forms() {
    let timeout = Error::Timeout { event: "echo".into() };
    assert!(timeout.is_timeout());
    assert_eq!(timeout.name(), "TimeoutError");
    assert_eq!(
        serde_json::to_string(&timeout.to_remote()).unwrap(),
        r#"{"message":"Event response for echo event timed out","name":"TimeoutError"}"#
    );
    assert_eq!(timeout.to_string(), "TimeoutError: Event response for echo event timed out");

    let bad = Error::BadConnection {
        event: "echo".into(),
        kind: AbortKind::Disconnect,
        code: 1006,
        reason: "Socket hung up".into(),
    };
    assert!(!bad.is_timeout());
    let r = bad.to_remote();
    let s = serde_json::to_string(&r).unwrap();
    assert!(
        s.starts_with(
            r#"{"message":"Event echo was aborted due to a bad connection","name":"BadConnectionError","#
        ),
        "{s}"
    );
    assert_eq!(
        serde_json::from_str::<Value>(&s).unwrap(),
        json!({"message":"Event echo was aborted due to a bad connection","name":"BadConnectionError","type":"disconnect","code":1006,"reason":"Socket hung up"})
    );
    assert_eq!(bad.to_string(), "BadConnectionError: Event echo was aborted due to a bad connection");
    let abort = Error::BadConnection {
        event: "e".into(),
        kind: AbortKind::ConnectAbort,
        code: 4007,
        reason: String::new(),
    };
    assert_eq!(abort.to_remote().get("type"), Some(&json!("connectAbort")));
    assert_eq!(abort.to_remote().get("reason"), Some(&json!("")));

    let remote: Error = RemoteError::new("CustomError", "boom").into();
    assert_eq!((remote.name(), remote.to_remote()), ("CustomError", RemoteError::new("CustomError", "boom")));
    let args = Error::InvalidArguments("bad".into());
    assert_eq!(
        (args.name(), args.to_remote()),
        ("InvalidArgumentsError", RemoteError::new("InvalidArgumentsError", "bad"))
    );
    let action = Error::InvalidAction("no".into());
    assert_eq!(action.to_string(), "InvalidActionError: no");
}

// ---------------------------------------------------------------------------------------------
// Property tests: no panics, monotonic states, at most one Closed
// ---------------------------------------------------------------------------------------------

/// One step of a random session.
#[derive(Clone, Debug)]
enum Step {
    Text(String),
    Binary(Vec<u8>),
    /// Advance the clock by this many milliseconds and fire the timers.
    Wait(u32),
    /// Fire the timers at the next deadline.
    Deadline,
    /// The transport closes.
    PeerClose(u16),
    /// The driver closes.
    Close(u16),
    /// The server starts an invoke with a deadline (ignored by the client).
    Invoke(u16),
}

/// A small JSON value made of the names and shapes the protocol uses.
fn json_value() -> impl Strategy<Value = Value> + Clone {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (0u64..16).prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        "[a-z#]{0,6}".prop_map(Value::from),
        prop::sample::select(vec![
            "#handshake",
            "#subscribe",
            "#unsubscribe",
            "#publish",
            "#authenticate",
            "#removeAuthToken",
            "#setAuthToken",
            "#kickOut",
            "echo",
        ])
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        let key = prop::sample::select(vec![
            "event",
            "cid",
            "rid",
            "data",
            "error",
            "channel",
            "token",
            "authToken",
            "message",
            "name",
            "statusCode",
            "pingTimeout",
            "id",
            "isAuthenticated",
            "authError",
        ]);
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::from),
            prop::collection::btree_map(key, inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())),
        ]
    })
}

/// Frame texts: JSON values, cut JSON, known frames, arbitrary text.
fn json_ish() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => json_value().prop_map(|v| v.to_string()),
        // Cut JSON.
        1 => (json_value(), any::<prop::sample::Index>()).prop_map(|(v, i)| {
            let s = v.to_string();
            let mut cut = i.index(s.len() + 1);
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            s[..cut].to_string()
        }),
        1 => prop::sample::select(vec![
            "", " ", "#1", "#2", "[", "[]", "{}", "[[]]", "null", "5",
            r##"{"event":"#handshake","data":{"authToken":null},"cid":1}"##,
            r##"{"event":"#handshake"}"##,
            r#"{"rid":1,"data":{"id":"abc","pingTimeout":3000,"isAuthenticated":false}}"#,
            r#"{"rid":1,"error":{"message":"m","name":"E","statusCode":4501}}"#,
        ])
        .prop_map(String::from),
        1 => ".{0,20}",
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => json_ish().prop_map(Step::Text),
        2 => prop::collection::vec(any::<u8>(), 0..48).prop_map(Step::Binary),
        2 => json_ish().prop_map(|s| Step::Binary(s.into_bytes())),
        3 => (0u32..40_000).prop_map(Step::Wait),
        2 => Just(Step::Deadline),
        1 => any::<u16>().prop_map(Step::PeerClose),
        1 => prop::sample::select(vec![1000u16, 4000, 4321]).prop_map(Step::Close),
        1 => any::<u16>().prop_map(Step::Invoke),
    ]
}

/// Checks the invariants on everything a connection produced since the last call.
#[derive(Default)]
struct Watch {
    rank: u8,
    closed_events: usize,
    close_sent: bool,
}

impl Watch {
    fn transmit(&mut self, t: Transmit, heartbeat: &str) {
        match t {
            Transmit::Text(text) => {
                assert!(!self.close_sent, "text {text:?} after a close");
                assert!(
                    text == heartbeat || serde_json::from_str::<Value>(&text).is_ok(),
                    "not JSON and not the heartbeat: {text:?}"
                );
            }
            Transmit::Close { code, reason } => {
                assert!(!self.close_sent, "a second close");
                assert!(reason.len() <= 123);
                assert!(matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999), "close code {code}");
                self.close_sent = true;
            }
        }
    }

    fn state(&mut self, rank: u8, closed_events: usize) {
        assert!(rank >= self.rank, "state went back from {} to {rank}", self.rank);
        self.rank = rank;
        self.closed_events += closed_events;
        assert!(self.closed_events <= 1, "more than one Closed event");
        assert_eq!(self.closed_events == 1, rank == 3, "Closed event and Closed state disagree");
    }
}

fn server_rank(s: ServerState) -> u8 {
    match s {
        ServerState::Connecting => 0,
        ServerState::Handshaking => 1,
        ServerState::Open => 2,
        ServerState::Closed => 3,
    }
}

fn client_rank(s: ClientState) -> u8 {
    match s {
        ClientState::Connecting => 0,
        ClientState::Handshaking => 1,
        ClientState::Open => 2,
        ClientState::Closed => 3,
    }
}

/// Runs `steps` against a server connection that acts as a simple driver would: it accepts
/// handshakes (odd cids) or rejects them (even cids) and answers invokes and subscribes.
fn run_server(config: ServerConfig, pre_open: bool, steps: &[Step]) {
    let ping = config.protocol_version.ping();
    let mut s = ServerConnection::new(T0, config);
    let mut now = T0;
    let mut watch = Watch::default();
    if pre_open {
        s.handle_text(T0, HANDSHAKE);
        s.accept_handshake(1, SOCKET_ID, false, None);
    }
    let mut pending: VecDeque<ServerEvent> = VecDeque::new();
    for step in steps {
        match step {
            Step::Text(t) => s.handle_text(now, t),
            Step::Binary(b) => s.handle_binary(now, b),
            Step::Wait(n) => {
                now += ms(u64::from(*n));
                s.handle_timeout(now);
                if let Some(next) = s.poll_timeout() {
                    assert!(next > now, "deadline {next:?} not after {now:?} right after handle_timeout");
                }
            }
            Step::Deadline => {
                if let Some(next) = s.poll_timeout() {
                    now = now.max(next);
                    s.handle_timeout(now);
                }
            }
            Step::PeerClose(code) => s.handle_close(*code, ""),
            Step::Close(code) => s.close(*code, "bye"),
            Step::Invoke(n) => {
                let open = s.is_open();
                assert_eq!(s.invoke("x", None, Some(now + ms(u64::from(*n)))).is_ok(), open);
            }
        }
        let mut closed = 0;
        while let Some(ev) = s.poll_event() {
            pending.push_back(ev);
        }
        while let Some(ev) = pending.pop_front() {
            match ev {
                ServerEvent::Handshake { cid, .. } if cid % 2 == 1 => {
                    s.accept_handshake(cid, "id", false, None)
                }
                ServerEvent::Handshake { cid, .. } => {
                    s.reject_handshake(cid, &RemoteError::plain("no"), 4008)
                }
                ServerEvent::Invoke { cid, data, .. } => s.respond(cid, data.as_ref()),
                ServerEvent::Subscribe { cid: Some(cid), .. } => s.respond(cid, None),
                ServerEvent::Authenticate { cid, .. } => s.respond_error(cid, &RemoteError::plain("no")),
                ServerEvent::Closed { .. } => closed += 1,
                _ => {}
            }
            while let Some(ev) = s.poll_event() {
                pending.push_back(ev);
            }
        }
        while let Some(t) = s.poll_transmit() {
            watch.transmit(t, ping);
        }
        watch.state(server_rank(s.state()), closed);
        if s.state() == ServerState::Closed {
            assert_eq!(s.poll_timeout(), None);
        }
    }
}

/// Runs `steps` against a client connection (opened at once when `open` is set).
fn run_client(config: ClientConfig, open: bool, steps: &[Step]) {
    let pong = config.protocol_version.pong();
    let mut c = ClientConnection::new(T0, config);
    let mut now = T0;
    let mut watch = Watch::default();
    if open {
        c.handle_open(T0, 1, None);
    }
    for step in steps {
        match step {
            Step::Text(t) => c.handle_text(now, t),
            Step::Binary(b) => c.handle_binary(now, b),
            Step::Wait(n) => {
                now += ms(u64::from(*n));
                c.handle_timeout(now);
                if let Some(next) = c.poll_timeout() {
                    assert!(next > now);
                }
            }
            Step::Deadline => {
                if let Some(next) = c.poll_timeout() {
                    now = now.max(next);
                    c.handle_timeout(now);
                }
            }
            Step::PeerClose(code) => c.handle_close(*code, ""),
            Step::Close(code) => c.close(*code, "bye"),
            Step::Invoke(_) => c.handle_open(now, 2, Some("tok")),
        }
        let mut closed = 0;
        while let Some(ev) = c.poll_event() {
            if let ClientEvent::Closed { .. } = ev {
                closed += 1;
            }
        }
        while let Some(t) = c.poll_transmit() {
            watch.transmit(t, pong);
        }
        watch.state(client_rank(c.state()), closed);
        if c.state() == ClientState::Closed {
            assert_eq!(c.poll_timeout(), None);
        }
    }
}

fn server_configs() -> impl Strategy<Value = ServerConfig> {
    (any::<bool>(), any::<bool>(), 0u64..20_000, 0u64..40_000).prop_map(
        |(v1, disabled, interval, timeout)| ServerConfig {
            ping_interval: ms(interval),
            ping_timeout: ms(timeout),
            ping_timeout_disabled: disabled,
            handshake_timeout: ms(timeout / 2),
            protocol_version: if v1 { ProtocolVersion::V1 } else { ProtocolVersion::V2 },
        },
    )
}

fn client_configs() -> impl Strategy<Value = ClientConfig> {
    (any::<bool>(), any::<bool>(), 0u64..40_000, 0u64..40_000).prop_map(|(v1, disabled, connect, ack)| {
        ClientConfig {
            connect_timeout: ms(connect),
            ack_timeout: ms(ack),
            ping_timeout_disabled: disabled,
            protocol_version: if v1 { ProtocolVersion::V1 } else { ProtocolVersion::V2 },
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn decode_never_panics(text in json_ish(), bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        for hb in ["", "#1", "#2"] {
            let from_text = codec::decode(&text, hb);
            prop_assert_eq!(codec::decode_binary(text.as_bytes(), hb), from_text);
            let _ = codec::decode_binary(&bytes, hb);
        }
    }

    #[test]
    fn server_never_panics_and_closes_once(
        config in server_configs(),
        pre_open in any::<bool>(),
        steps in prop::collection::vec(step(), 0..40),
    ) {
        run_server(config, pre_open, &steps);
    }

    #[test]
    fn client_never_panics_and_closes_once(
        config in client_configs(),
        open in any::<bool>(),
        steps in prop::collection::vec(step(), 0..40),
    ) {
        run_client(config, open, &steps);
    }
}

/// Regression: a batch that answers an invoke and then gets the connection closed in the same
/// frame must not put the answer on the wire after the close.
#[test]
fn answer_after_close_in_the_same_batch_is_dropped() {
    run_server(
        ServerConfig::default(),
        true,
        &[Step::Text(r##"[{"event":"echo","cid":5},{"event":"#authenticate"}]"##.into())],
    );
}
