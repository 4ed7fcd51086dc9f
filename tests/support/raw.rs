//! Our server in-process, driven by a raw WebSocket client that sends exactly the frames a test
//! wants and reads exactly the frames the server sends (the approach of `tests/server_input.rs`,
//! with what the auth, middleware and limits tests need on top: tokens in the handshake, an
//! `Origin` header, plain HTTP upgrade requests, the sockets before their handshake).
//!
//! Include it together with `util.rs`:
//!
//! ```ignore
//! #[path = "support/util.rs"]
//! mod util;
//! #[macro_use]
//! #[path = "support/raw.rs"]
//! mod raw;
//! ```
//!
//! Every wait is bounded (a bug fails the test instead of hanging it).
#![allow(dead_code)]

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::Message;
use async_tungstenite::tungstenite::client::IntoClientRequest;
use futures::stream::select_all;
use futures::{AsyncReadExt, AsyncWriteExt, Stream, StreamExt};
use serde_json::{Value, json};

use socketcluster::client::{Client, ClientOptions};
use socketcluster::protocol::RemoteError;
use socketcluster::request::Request;
use socketcluster::runtime::Runtime;
use socketcluster::server::{Server, ServerEvent, ServerOptions, ServerSocket};
use socketcluster::stream::Consumer;

use crate::util::{LIMIT, within};

/// The bound of a whole test body.
pub(crate) const TEST_LIMIT: Duration = Duration::from_secs(90);

// ---------------------------------------------------------------------------------------------
// Runtimes
// ---------------------------------------------------------------------------------------------

/// The runtime the server (and our client, where a test uses it) runs on. The raw client uses
/// smol's reactor on both: it is a plain TCP stream, so it works inside a tokio runtime too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rt {
    Smol,
    #[cfg(feature = "tokio")]
    Tokio,
}

impl Rt {
    pub(crate) async fn listen(self, options: ServerOptions) -> (Server, SocketAddr) {
        match self {
            Rt::Smol => socketcluster::smol::listen("127.0.0.1:0", options).await.unwrap(),
            #[cfg(feature = "tokio")]
            Rt::Tokio => socketcluster::tokio::listen("127.0.0.1:0", options).await.unwrap(),
        }
    }

    pub(crate) fn runtime(self) -> Arc<dyn Runtime> {
        match self {
            Rt::Smol => socketcluster::smol::runtime(),
            #[cfg(feature = "tokio")]
            Rt::Tokio => socketcluster::tokio::runtime(),
        }
    }

    /// Our client on this runtime.
    pub(crate) fn client(self, options: ClientOptions) -> Client {
        match self {
            Rt::Smol => socketcluster::smol::connect(options),
            #[cfg(feature = "tokio")]
            Rt::Tokio => socketcluster::tokio::connect(options),
        }
    }

    /// A timer of this runtime (for middleware that delays an action).
    pub(crate) async fn sleep(self, d: Duration) {
        self.runtime().sleep_until(Instant::now() + d).await;
    }
}

/// Runs on smol's global executor.
pub(crate) fn on_smol<F: Future<Output = ()>>(scenario: impl FnOnce(Rt) -> F) {
    smol::block_on(within(TEST_LIMIT, "the test body", scenario(Rt::Smol)));
}

/// Runs on a two-thread tokio runtime, shut down afterwards: nothing outlives the test.
#[cfg(feature = "tokio")]
pub(crate) fn on_tokio<F: Future<Output = ()>>(scenario: impl FnOnce(Rt) -> F) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(within(TEST_LIMIT, "the test body", scenario(Rt::Tokio)));
    rt.shutdown_timeout(Duration::from_secs(5));
}

/// One `#[test]` per scenario and runtime: `smol_rt::NAME` and (feature `tokio`) `tokio_rt::NAME`.
macro_rules! on_both_runtimes {
    ($($name:ident),* $(,)?) => {
        mod smol_rt {
            $( #[test] fn $name() { crate::raw::on_smol(super::$name) } )*
        }
        #[cfg(feature = "tokio")]
        mod tokio_rt {
            $( #[test] fn $name() { crate::raw::on_tokio(super::$name) } )*
        }
    };
}

// ---------------------------------------------------------------------------------------------
// The server under test
// ---------------------------------------------------------------------------------------------

/// A connected socket (from the server's `connection` event) with the harness's handlers: the
/// `echo` procedure answers with the request's data (none stays none), requests of `hold` go to
/// the test unanswered, transmits of `rec` are recorded.
#[derive(Clone)]
pub(crate) struct Conn {
    pub(crate) socket: ServerSocket,
    pub(crate) is_authenticated: bool,
    pub(crate) auth_error: Option<RemoteError>,
    pub(crate) rec: async_channel::Receiver<Option<Value>>,
    pub(crate) held: async_channel::Receiver<Request>,
}

/// Forwards a stream's items to a channel, on `rt`.
pub(crate) fn forward<S>(rt: &Arc<dyn Runtime>, mut stream: S) -> async_channel::Receiver<S::Item>
where
    S: Stream + Unpin + Send + 'static,
    S::Item: Send + 'static,
{
    let (tx, rx) = async_channel::unbounded();
    rt.spawn(Box::pin(async move {
        while let Some(item) = stream.next().await {
            let _ = tx.try_send(item);
        }
    }));
    rx
}

impl Conn {
    /// Runs in the `connection` loop before any await: the consumers see everything the client
    /// sends after its handshake.
    fn attach(
        rt: &Arc<dyn Runtime>,
        socket: &ServerSocket,
        is_authenticated: bool,
        auth_error: Option<RemoteError>,
    ) -> Self {
        let (held_tx, held) = async_channel::unbounded();
        let mut requests = select_all([socket.procedure("echo"), socket.procedure("hold")]);
        rt.spawn(Box::pin(async move {
            while let Some(req) = requests.next().await {
                if req.procedure() == "echo" {
                    let _ = req.end_value(req.raw_data().cloned());
                } else {
                    let _ = held_tx.try_send(req);
                }
            }
        }));
        Conn {
            socket: socket.clone(),
            is_authenticated,
            auth_error,
            rec: forward(rt, socket.receiver("rec").into_raw()),
            held,
        }
    }
}

/// A `warning` of the server: the error and the socket id it happened on.
pub(crate) type Warning = (RemoteError, Option<String>);

/// A server on `rt` with the test handlers.
pub(crate) struct Harness {
    pub(crate) server: Server,
    pub(crate) addr: SocketAddr,
    pub(crate) rt: Rt,
    conns: async_channel::Receiver<Conn>,
    conn_cache: HashMap<String, Conn>,
    handshakes: async_channel::Receiver<ServerSocket>,
    handshake_cache: Vec<ServerSocket>,
    /// Every `warning`, in order.
    pub(crate) warnings: async_channel::Receiver<Warning>,
}

impl Harness {
    pub(crate) async fn start(rt: Rt, options: ServerOptions) -> Self {
        let (server, addr) = rt.listen(options).await;
        Self::attach(rt, server, addr)
    }

    /// The harness around `server`, which serves on `addr` however it does (mounted in another
    /// HTTP server, say).
    pub(crate) fn attach(rt: Rt, server: Server, addr: SocketAddr) -> Self {
        let runtime = rt.runtime();
        let (conn_tx, conns) = async_channel::unbounded();
        let mut connections = server.listener("connection");
        let rt2 = runtime.clone();
        // Never awaits anything but the next event: the server holds a new socket's packets until
        // the `connection` consumers have handled the event.
        runtime.spawn(Box::pin(async move {
            while let Some(ev) = connections.next().await {
                if let ServerEvent::Connection { socket, is_authenticated, auth_error, .. } = ev {
                    let _ = conn_tx.try_send(Conn::attach(&rt2, &socket, is_authenticated, auth_error));
                }
            }
        }));
        let handshakes = forward(
            &runtime,
            Box::pin(server.listener("handshake").filter_map(|e| async move {
                match e {
                    ServerEvent::Handshake { socket } => Some(socket),
                    _ => None,
                }
            })),
        );
        let warnings = forward(
            &runtime,
            Box::pin(server.listener("warning").filter_map(|e| async move {
                match e {
                    ServerEvent::Warning { error, socket } => {
                        Some((error, socket.map(|s| s.id().to_string())))
                    }
                    _ => None,
                }
            })),
        );
        Harness {
            server,
            addr,
            rt,
            conns,
            conn_cache: HashMap::new(),
            handshakes,
            handshake_cache: Vec::new(),
            warnings,
        }
    }

    pub(crate) async fn default(rt: Rt) -> Self {
        Self::start(rt, ServerOptions::default()).await
    }

    /// The connected socket with id `id` (its `connection` event may come a moment after the
    /// client read its handshake response).
    pub(crate) async fn conn(&mut self, id: &str) -> Conn {
        while !self.conn_cache.contains_key(id) {
            let c = next_of(&self.conns, "the socket's connection event").await;
            self.conn_cache.insert(c.socket.id().to_string(), c);
        }
        self.conn_cache[id].clone()
    }

    /// The server socket of `raw` from the server's `handshake` event: the socket before its
    /// SocketCluster handshake (matched by the client's address).
    pub(crate) async fn pending_socket(&mut self, raw: &Raw) -> ServerSocket {
        let local = raw.local_addr();
        loop {
            if let Some(i) = self.handshake_cache.iter().position(|s| s.remote_address() == Some(local)) {
                return self.handshake_cache.swap_remove(i);
            }
            let s = next_of(&self.handshakes, "the server's handshake event").await;
            self.handshake_cache.push(s);
        }
    }

    /// The next `warning`.
    pub(crate) async fn warning(&self) -> Warning {
        next_of(&self.warnings, "the warning event").await
    }

    /// Waits for a `warning` that `f` accepts, skipping others.
    pub(crate) async fn warning_where(&self, what: &str, f: impl Fn(&Warning) -> bool) -> Warning {
        within(LIMIT, what, async {
            loop {
                let w = self.warnings.recv().await.expect("the warning recorder ended");
                if f(&w) {
                    return w;
                }
            }
        })
        .await
    }

    /// The `ws://` URL of the server.
    pub(crate) fn url(&self) -> String {
        format!("ws://{}/socketcluster/", self.addr)
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        // Ends the harness's listener loops; the sockets end when their clients are dropped.
        self.server.listeners().kill_all();
    }
}

/// The next item of a channel, within [`LIMIT`].
pub(crate) async fn next_of<T>(rx: &async_channel::Receiver<T>, what: &str) -> T {
    within(LIMIT, what, rx.recv()).await.unwrap_or_else(|_| panic!("{what}: the recorder ended"))
}

/// The next item of a consumer, within [`LIMIT`] (the consumer must not end).
pub(crate) async fn next_ev<T: Clone>(c: &mut Consumer<T>, what: &str) -> T {
    within(LIMIT, what, c.next()).await.unwrap_or_else(|| panic!("{what}: the consumer ended"))
}

/// What a consumer holds right now, without waiting.
pub(crate) fn ready<T: Clone>(c: &mut Consumer<T>) -> Vec<T> {
    let mut out = Vec::new();
    while let Some(Some(v)) = futures::FutureExt::now_or_never(c.next()) {
        out.push(v);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The raw client
// ---------------------------------------------------------------------------------------------

/// A WebSocket client that sends exactly what it is told.
pub(crate) struct Raw {
    pub(crate) ws: WebSocketStream<smol::net::TcpStream>,
    local: SocketAddr,
    /// Answer the server's pings (`""`) while reading.
    pub(crate) answer_pings: bool,
    pub(crate) pings: usize,
}

/// The handshake frame of a client without a token.
pub(crate) const HANDSHAKE: &str = r##"{"event":"#handshake","data":{"authToken":null},"cid":1}"##;

impl Raw {
    /// A WebSocket connection, no SocketCluster handshake yet.
    pub(crate) async fn connect(addr: SocketAddr) -> Self {
        Self::connect_with_origin(addr, None).await
    }

    /// A WebSocket connection whose upgrade request carries `Origin: origin`.
    pub(crate) async fn connect_with_origin(addr: SocketAddr, origin: Option<&str>) -> Self {
        Self::connect_to(addr, "/socketcluster/", origin).await
    }

    /// A WebSocket connection to `uri` (path and query), with `Origin: origin` if given.
    pub(crate) async fn connect_to(addr: SocketAddr, uri: &str, origin: Option<&str>) -> Self {
        let headers: Vec<(&str, &str)> = origin.map(|o| ("Origin", o)).into_iter().collect();
        Self::connect_with_headers(addr, uri, &headers).await
    }

    /// A WebSocket connection to `uri` whose upgrade request carries `headers` too.
    pub(crate) async fn connect_with_headers(addr: SocketAddr, uri: &str, headers: &[(&str, &str)]) -> Self {
        within(LIMIT, "the WebSocket connection", async {
            let tcp = smol::net::TcpStream::connect(addr).await.unwrap();
            tcp.set_nodelay(true).unwrap();
            let local = tcp.local_addr().unwrap();
            let mut request = format!("ws://{addr}{uri}").into_client_request().unwrap();
            for (name, value) in headers {
                let name =
                    async_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes()).unwrap();
                request.headers_mut().append(name, value.parse().unwrap());
            }
            let (ws, _) = async_tungstenite::client_async(request, tcp).await.unwrap();
            Raw { ws, local, answer_pings: true, pings: 0 }
        })
        .await
    }

    /// A handshaken connection (no token) and its socket id.
    pub(crate) async fn open(addr: SocketAddr) -> (Self, String) {
        Self::open_at(addr, "/socketcluster/").await
    }

    /// A handshaken connection (no token) to `uri` (path and query) and its socket id.
    pub(crate) async fn open_at(addr: SocketAddr, uri: &str) -> (Self, String) {
        let mut raw = Self::connect_to(addr, uri, None).await;
        let r = raw.handshake(Value::Null).await;
        assert_eq!(r["data"]["isAuthenticated"], false, "handshake response: {r}");
        let id = r["data"]["id"].as_str().unwrap().to_string();
        (raw, id)
    }

    /// The client's address (the server socket's `remote_address`).
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Sends `#handshake` (cid 1) with `token` as `authToken`; returns the response packet.
    pub(crate) async fn handshake(&mut self, token: Value) -> Value {
        self.json(json!({"event": "#handshake", "data": {"authToken": token}, "cid": 1})).await;
        let r = self.packet().await;
        assert_eq!(r["rid"], 1, "handshake response: {r}");
        r
    }

    pub(crate) async fn send(&mut self, msg: Message) {
        within(LIMIT, "sending a frame", self.ws.send(msg)).await.unwrap();
    }

    pub(crate) async fn text(&mut self, text: impl Into<String>) {
        self.send(Message::text(text.into())).await;
    }

    pub(crate) async fn json(&mut self, v: Value) {
        self.text(v.to_string()).await;
    }

    pub(crate) async fn binary(&mut self, bytes: impl Into<Vec<u8>>) {
        self.send(Message::binary(bytes.into())).await;
    }

    async fn on_ping(&mut self) {
        self.pings += 1;
        if self.answer_pings {
            self.text("").await;
        }
    }

    /// The next WebSocket message; `None` when the connection ended without one.
    pub(crate) async fn message(&mut self) -> Option<Message> {
        match within(LIMIT, "the next frame from the server", self.ws.next()).await {
            Some(Ok(m)) => Some(m),
            Some(Err(_)) | None => None,
        }
    }

    /// The next packet (pings are counted and, unless disabled, answered).
    pub(crate) async fn packet(&mut self) -> Value {
        loop {
            match self.message().await {
                Some(Message::Text(t)) if t.is_empty() => self.on_ping().await,
                Some(Message::Text(t)) => return serde_json::from_str(&t).unwrap(),
                other => panic!("expected a packet, got {other:?}"),
            }
        }
    }

    /// Reads until the server's close frame and returns its code; any packet before it fails.
    pub(crate) async fn expect_close(&mut self) -> u16 {
        loop {
            match self.message().await {
                Some(Message::Text(t)) if t.is_empty() => self.on_ping().await,
                Some(Message::Close(Some(frame))) => {
                    assert_eq!(frame.reason.as_str(), "", "server close frames carry no reason");
                    return u16::from(frame.code);
                }
                Some(Message::Close(None)) => return 1005,
                Some(other) => panic!("expected the close frame, got {other:?}"),
                None => panic!("the connection ended without a close frame"),
            }
        }
    }

    /// Asserts that no packet (and no close) arrives for `d`; pings are handled.
    pub(crate) async fn silence(&mut self, d: Duration) {
        let deadline = Instant::now() + d;
        loop {
            let next = smol::future::or(async { Some(self.ws.next().await) }, async {
                smol::Timer::at(deadline).await;
                None
            })
            .await;
            match next {
                None => return,
                Some(Some(Ok(Message::Text(t)))) if t.is_empty() => self.on_ping().await,
                Some(other) => panic!("expected nothing for {d:?}, got {other:?}"),
            }
        }
    }

    /// Invokes `echo` with `data` and checks that the very next packet is its answer: nothing
    /// else was sent before it.
    pub(crate) async fn echo(&mut self, cid: u64, data: Value) {
        self.json(json!({"event": "echo", "data": data, "cid": cid})).await;
        assert_eq!(self.packet().await, json!({"rid": cid, "data": data}));
    }

    /// Invokes `event` with `data` (cid `cid`) and returns the next packet.
    pub(crate) async fn call(&mut self, cid: u64, event: &str, data: Value) -> Value {
        self.json(json!({"event": event, "data": data, "cid": cid})).await;
        self.packet().await
    }

    /// `#subscribe` to `channel`, expecting the acknowledgement `{"rid":cid}`.
    pub(crate) async fn subscribe(&mut self, cid: u64, channel: &str) {
        let r = self.call(cid, "#subscribe", json!({"channel": channel})).await;
        assert_eq!(r, json!({"rid": cid}), "subscribe {channel}");
    }
}

/// An HTTP response read to its end: status code and body.
#[derive(Debug)]
pub(crate) struct HttpResponse {
    pub(crate) status: u16,
    pub(crate) head: String,
    pub(crate) body: String,
}

/// Sends a WebSocket upgrade request for `path` (with `Origin: origin` if given) over plain
/// TCP and reads the answer: for requests the server refuses before the upgrade.
pub(crate) async fn http_upgrade(addr: SocketAddr, path: &str, origin: Option<&str>) -> HttpResponse {
    let origin = origin.map(|o| format!("Origin: {o}\r\n")).unwrap_or_default();
    http(
        addr,
        &format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{origin}\r\n"
        ),
    )
    .await
}

/// Sends `request` (a whole HTTP/1.1 request) over plain TCP and reads the response: its body
/// by `Content-Length`, or to the end of the connection without one.
pub(crate) async fn http(addr: SocketAddr, request: &str) -> HttpResponse {
    within(LIMIT, "the HTTP request", async {
        let mut tcp = smol::net::TcpStream::connect(addr).await.unwrap();
        tcp.write_all(request.as_bytes()).await.unwrap();
        tcp.flush().await.unwrap();
        let mut bytes = Vec::new();
        let mut chunk = [0u8; 4096];
        let end = loop {
            if let Some(i) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            let n = tcp.read(&mut chunk).await.unwrap();
            assert!(
                n > 0,
                "the connection ended in the response head: {:?}",
                String::from_utf8_lossy(&bytes)
            );
            bytes.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8(bytes[..end].to_vec()).unwrap();
        let length = head.lines().find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.trim().eq_ignore_ascii_case("content-length").then(|| value.trim().parse::<usize>().ok())?
        });
        let mut body = bytes[end + 4..].to_vec();
        match length {
            Some(n) => {
                while body.len() < n {
                    let k = tcp.read(&mut chunk).await.unwrap();
                    assert!(k > 0, "the connection ended in the body");
                    body.extend_from_slice(&chunk[..k]);
                }
            }
            None => {
                tcp.read_to_end(&mut body).await.unwrap();
            }
        }
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{head}"));
        HttpResponse { status, head, body: String::from_utf8(body).unwrap() }
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// Wire shapes
// ---------------------------------------------------------------------------------------------

/// `{"event":"#removeAuthToken"}`.
pub(crate) fn remove_auth_token() -> Value {
    json!({"event": "#removeAuthToken"})
}

/// An error response.
pub(crate) fn error_response(rid: u64, name: &str, message: &str) -> Value {
    json!({"rid": rid, "error": {"name": name, "message": message}})
}

/// Seconds since the Unix epoch.
pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}
