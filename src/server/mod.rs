//! The SocketCluster server (`AGServer`): WebSocket connections speaking the SocketCluster
//! protocol, with receivers, procedures, listeners and channels, on any runtime.
//!
//! Start one with the runtime adapters (`socketcluster::smol::listen`,
//! `socketcluster::tokio::listen`), or hand it WebSocket connections yourself with
//! [`Server::accept`].

mod auth;
mod broker;
mod dispatch;
mod driver;
mod events;
mod exchange;
mod history;
mod middleware;
#[cfg(feature = "http")]
mod mount;
mod presence;
mod proxy;
#[cfg(feature = "redis")]
pub mod redis;
mod socket;
mod stats;
mod trace;
mod upgrade;

use alloc::boxed::Box;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use futures::io::{AsyncRead, AsyncWrite};

pub use broker::{Broker, MemoryBroker, Publication, Subscriber};
pub use events::{ServerEvent, SocketEvent};
pub use exchange::{Exchange, ExchangeChannel};
pub use history::{HistoryOptions, HistoryRules, Recovery};
pub use middleware::{Blocked, HandshakeAction, InboundAction, Middleware, OutboundAction, RawAction};
#[cfg(feature = "http")]
pub use mount::Accepted;
pub use presence::{PresenceEvent, PresenceMember};
pub use proxy::{BadProxy, TrustedProxy};
pub use socket::{ServerSocket, SocketState};
pub use stats::ServerStats;

use crate::auth::JwtAuth;
use crate::outbox::Backend;
use crate::protocol::ProtocolVersion;
use crate::runtime::Runtime;
use crate::stream::{Consumer, StreamDemux};
use crate::sync::Mutex;

/// A server's TLS configuration in the adapters' accept loops (nothing without feature `tls`).
#[cfg(feature = "tls")]
pub(crate) type ServerTls = Arc<rustls::ServerConfig>;
/// A server's TLS configuration in the adapters' accept loops (nothing without feature `tls`).
#[cfg(not(feature = "tls"))]
#[derive(Clone, Debug)]
pub(crate) enum ServerTls {}

/// Server options; the defaults are socketcluster-server 20's.
#[derive(Clone)]
pub struct ServerOptions {
    /// The WebSocket path (`/socketcluster/`); upgrades to any other path get HTTP 400.
    pub path: String,
    /// Timeout of the server's invokes (10 s).
    pub ack_timeout: Duration,
    /// Ping interval (8 s).
    pub ping_interval: Duration,
    /// Close 4001 when no pong arrives for this long (30 s).
    pub ping_timeout: Duration,
    /// No pings, no pong timeout.
    pub ping_timeout_disabled: bool,
    /// Close 4005 when no `#handshake` arrives in this time (10 s).
    pub handshake_timeout: Duration,
    /// Heartbeat format (2).
    pub protocol_version: ProtocolVersion,
    /// Whether clients may publish (true).
    pub allow_client_publish: bool,
    /// Maximum channels per socket (unlimited).
    pub socket_channel_limit: Option<usize>,
    /// Larger inbound messages close the socket with 1009 (unlimited; the WebSocket library's
    /// own cap of 64 MiB still applies).
    pub max_payload: Option<usize>,
    /// The broker (a [`MemoryBroker`] when `None`).
    pub broker: Option<Arc<dyn Broker>>,
    /// Signs and verifies auth tokens (HS256 with a random key when `None`: tokens do not
    /// survive a restart — set `JwtAuth::hs256(key)` to share tokens across processes).
    pub auth: Option<JwtAuth>,
    /// The middleware of new sockets (see [`Server::set_middleware`]).
    pub middleware: Middleware,
    /// Allowed `Origin`s of upgrade requests, `host:port` with `*` wildcards (all when `None`);
    /// others get HTTP 403.
    pub origins: Option<Vec<String>>,
    /// A socket whose outbound queue holds more than this many frames — it does not read fast
    /// enough — is disconnected with close code 1013 and a `warning` (unlimited when `None`).
    pub outbound_limit: Option<usize>,
    /// At most this many of a socket's invokes may wait for an answer from the server; more are
    /// answered at once with `ResourceLimitError` (unlimited when `None`).
    pub max_pending_requests: Option<usize>,
    /// Within one inbound batch frame (a JSON array of packets), how long an invoke's handler
    /// may take to answer before the packets after it are handled anyway (100 ms; zero: do not
    /// wait). Handlers that answer within it get their answers out in packet order, as with
    /// socketcluster-server; a slower one holds only this socket's later packets of that frame,
    /// and only this long — its answer then leaves whenever it comes. Frames with one packet
    /// never wait.
    pub batch_answer_wait: Duration,
    /// Reverse proxies whose `Forwarded` / `X-Forwarded-For` headers are believed (empty by
    /// default: the headers are ignored). When the TCP peer is one of them, a socket's
    /// `remote_address` (and the handshake middleware's) is the nearest forwarded hop that is not
    /// a trusted proxy — entries a client wrote further left are not believed. A forwarded hop
    /// without a port gets port 0.
    pub trusted_proxies: Vec<TrustedProxy>,
    /// Channels that keep history (none by default): each publish gets a position, and a
    /// subscriber that reconnects gets what it missed replayed (see
    /// [`protocol::position`](crate::protocol::position)). Needs a broker with history (the
    /// [`MemoryBroker`]); another one logs a warning and keeps none.
    pub history: HistoryRules,
    /// Presence (who is subscribed where, [`Exchange::presence`]): the field of a socket's auth
    /// token that names its user in presence lists (`None`: socket ids only).
    pub presence_user_field: Option<String>,
    /// Whether clients may ask for the presence of a channel they are subscribed to with the
    /// `#presence` procedure (false; inbound middleware sees the invoke and may block it).
    pub client_presence: bool,
}

impl fmt::Debug for ServerOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerOptions")
            .field("path", &self.path)
            .field("ack_timeout", &self.ack_timeout)
            .field("ping_interval", &self.ping_interval)
            .field("ping_timeout", &self.ping_timeout)
            .field("ping_timeout_disabled", &self.ping_timeout_disabled)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("protocol_version", &self.protocol_version)
            .field("allow_client_publish", &self.allow_client_publish)
            .field("socket_channel_limit", &self.socket_channel_limit)
            .field("max_payload", &self.max_payload)
            .field("broker", &self.broker)
            .field("auth", &self.auth)
            .field("middleware", &self.middleware)
            .field("origins", &self.origins)
            .field("outbound_limit", &self.outbound_limit)
            .field("max_pending_requests", &self.max_pending_requests)
            .field("batch_answer_wait", &self.batch_answer_wait)
            .field("trusted_proxies", &self.trusted_proxies)
            .finish()
    }
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            path: String::from("/socketcluster/"),
            ack_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(8),
            ping_timeout: Duration::from_secs(30),
            ping_timeout_disabled: false,
            handshake_timeout: Duration::from_secs(10),
            protocol_version: ProtocolVersion::V2,
            allow_client_publish: true,
            socket_channel_limit: None,
            max_payload: None,
            broker: None,
            auth: None,
            middleware: Middleware::default(),
            origins: None,
            outbound_limit: None,
            max_pending_requests: None,
            batch_answer_wait: Duration::from_millis(100),
            trusted_proxies: Vec::new(),
            history: HistoryRules::new(),
            presence_user_field: None,
            client_presence: false,
        }
    }
}

pub(crate) struct ServerShared {
    pub(crate) options: ServerOptions,
    pub(crate) auth: JwtAuth,
    /// The middleware new sockets get.
    pub(crate) middleware: Mutex<Arc<Middleware>>,
    pub(crate) runtime: Arc<dyn Runtime>,
    pub(crate) broker: Arc<dyn Broker>,
    pub(crate) listeners: StreamDemux<ServerEvent>,
    /// Server-wide receivers and procedures (every socket's transmits and invokes).
    pub(crate) receivers: StreamDemux<(ServerSocket, Option<serde_json::Value>)>,
    pub(crate) procedures: StreamDemux<(ServerSocket, crate::request::Request)>,
    pub(crate) clients: Mutex<HashMap<String, ServerSocket>>,
    pub(crate) pending_clients: AtomicU64,
    pub(crate) next_subscriber: AtomicU64,
    pub(crate) id_seq: AtomicU64,
    pub(crate) epoch: Instant,
    pub(crate) exchange: Exchange,
    /// Sockets whose driver is still running (for `close`).
    pub(crate) live: AtomicU64,
    pub(crate) all_done: event_signal::Signal,
    /// Set by `Server::close`: the adapters' accept loops stop.
    pub(crate) closing: core::sync::atomic::AtomicBool,
    pub(crate) closing_signal: event_signal::Signal,
    /// The tasks that write the sockets' queued frames (one per available core; a socket uses
    /// one of them for its whole life).
    writers: Vec<Arc<crate::outbox::Writer>>,
    pub(crate) stats: stats::Counters,
    /// Who is subscribed where (follows `subscription`/`unsubscription` in `emit`).
    pub(crate) presence: Arc<presence::Presence>,
    next_writer: core::sync::atomic::AtomicUsize,
}

impl ServerShared {
    pub(crate) fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// The writer tasks.
    pub(crate) fn writers(&self) -> &[Arc<crate::outbox::Writer>] {
        &self.writers
    }

    /// The writer task a new socket uses (round robin).
    pub(crate) fn writer(&self) -> &Arc<crate::outbox::Writer> {
        let i = self.next_writer.fetch_add(1, Ordering::Relaxed);
        &self.writers[i % self.writers.len()]
    }

    /// An upgrade request answered with `status` instead of a WebSocket: logged and counted.
    pub(crate) fn upgrade_refused(&self, status: u16, uri: &str, remote: Option<SocketAddr>) {
        trace::upgrade_refused(status, uri, remote);
        self.stats.upgrades_refused.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn emit(&self, name: &str, event: ServerEvent) {
        trace::server_event(&event);
        self.stats.record(&event);
        if let Some((channel, member, joined)) = self.presence.record(&event) {
            self.broker.presence_changed(&channel, &member, joined);
        }
        self.listeners.write(name, event);
    }

    pub(crate) fn unsubscribed(&self, socket: &ServerSocket, channel: &str) {
        socket
            .inner
            .listeners
            .write("unsubscribe", SocketEvent::Unsubscribe { channel: String::from(channel) });
        self.emit(
            "unsubscription",
            ServerEvent::Unsubscription { socket: socket.clone(), channel: String::from(channel) },
        );
    }
}

mod event_signal {
    //! A flag tasks can wait on.
    use alloc::vec::Vec;
    use core::task::{Poll, Waker};

    use crate::sync::Mutex;

    #[derive(Default)]
    pub(crate) struct Signal(Mutex<Vec<Waker>>);

    impl Signal {
        pub(crate) fn notify(&self) {
            for w in core::mem::take(&mut *self.0.lock()) {
                w.wake();
            }
        }

        /// Waits until `done()` is true, re-checking on every notification.
        pub(crate) async fn wait(&self, done: impl Fn() -> bool) {
            core::future::poll_fn(|cx| {
                if done() {
                    return Poll::Ready(());
                }
                self.0.lock().push(cx.waker().clone());
                if done() { Poll::Ready(()) } else { Poll::Pending }
            })
            .await
        }
    }
}

/// A SocketCluster server. Cheap to clone: clones are handles to the same server.
///
/// ```no_run
/// # #[cfg(feature = "smol")]
/// smol::block_on(async {
///     use futures::StreamExt;
///     use socketcluster::server::{ServerEvent, ServerOptions};
///
///     let (server, addr) = socketcluster::smol::listen("127.0.0.1:8000", ServerOptions::default()).await?;
///     println!("listening on {addr}");
///     let mut connections = server.listener("connection");
///     while let Some(ServerEvent::Connection { socket, .. }) = connections.next().await {
///         // Created before any await: nothing the client sends is lost.
///         let mut foo = socket.receiver("foo");
///         smol::spawn(async move {
///             smol::Timer::after(std::time::Duration::from_secs(1)).await;
///             while let Some(data) = foo.next().await {
///                 println!("foo: {data}");
///             }
///         })
///         .detach();
///     }
///     # Ok::<(), std::io::Error>(())
/// });
/// ```
#[derive(Clone)]
pub struct Server {
    pub(crate) shared: Arc<ServerShared>,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("options", &self.shared.options)
            .field("clients", &self.clients_count())
            .finish()
    }
}

impl Server {
    /// A server on `runtime`. It has no transport yet: feed it connections with
    /// [`accept`](Self::accept), or use an adapter's `listen`.
    pub fn new(options: ServerOptions, runtime: Arc<dyn Runtime>) -> Self {
        let broker: Arc<dyn Broker> = options.broker.clone().unwrap_or_else(|| Arc::new(MemoryBroker::new()));
        if !options.history.is_empty() && !broker.set_history(options.history.clone()) {
            tracing::warn!(
                target: "socketcluster",
                "ServerOptions::history is set but the broker keeps no history: no channel has any"
            );
        }
        let next_subscriber = AtomicU64::new(1);
        let presence = Arc::new(presence::Presence::new(options.presence_user_field.clone()));
        let exchange =
            Exchange::new(broker.clone(), next_subscriber.fetch_add(1, Ordering::Relaxed), presence.clone());
        // One writer per core the process may run on: sockets' writes spread over a
        // multi-threaded runtime, and a single-threaded one gets one task.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()).min(16);
        let writers = (0..cores).map(|_| crate::outbox::Writer::spawn(&*runtime)).collect();
        Self {
            shared: Arc::new(ServerShared {
                auth: options.auth.clone().unwrap_or_else(JwtAuth::random_hs256),
                middleware: Mutex::new(Arc::new(options.middleware.clone())),
                options,
                runtime,
                broker,
                listeners: StreamDemux::new(),
                receivers: StreamDemux::new(),
                procedures: StreamDemux::new(),
                clients: Mutex::new(HashMap::new()),
                pending_clients: AtomicU64::new(0),
                next_subscriber,
                id_seq: AtomicU64::new(fastrand::u64(..)),
                epoch: Instant::now(),
                exchange,
                live: AtomicU64::new(0),
                all_done: event_signal::Signal::default(),
                closing: core::sync::atomic::AtomicBool::new(false),
                closing_signal: event_signal::Signal::default(),
                writers,
                next_writer: core::sync::atomic::AtomicUsize::new(0),
                stats: stats::Counters::default(),
                presence,
            }),
        }
    }

    /// The options.
    pub fn options(&self) -> &ServerOptions {
        &self.shared.options
    }

    /// A consumer of the server's events named `event`: `handshake`, `connection`,
    /// `connectionAbort`, `disconnection`, `closure`, `subscription`, `unsubscription`, `error`,
    /// `warning`.
    pub fn listener(&self, event: &str) -> Consumer<ServerEvent> {
        self.shared.listeners.create_consumer(event)
    }

    /// A consumer of every socket's transmits of `event`, with the socket (`None`: the transmit
    /// had no data). A Rust addition to SocketCluster's API: one consumer for all sockets instead
    /// of one per socket — cheaper with many sockets. A socket's own
    /// [`receiver`](ServerSocket::receiver) consumers get the same transmits.
    ///
    /// ```no_run
    /// # async fn f(server: socketcluster::server::Server) {
    /// use futures::StreamExt;
    /// let mut chat = server.receiver("chat");
    /// while let Some((socket, data)) = chat.next().await {
    ///     println!("{} says {data:?}", socket.id());
    /// }
    /// # }
    /// ```
    pub fn receiver(&self, event: &str) -> Consumer<(ServerSocket, Option<serde_json::Value>)> {
        self.shared.receivers.create_consumer(event)
    }

    /// A consumer of every socket's invokes of `procedure`, with the socket. The
    /// [`Request`](crate::request::Request) is shared with the socket's own
    /// [`procedure`](ServerSocket::procedure) consumers: the first answer wins.
    ///
    /// ```no_run
    /// # async fn f(server: socketcluster::server::Server) {
    /// use futures::StreamExt;
    /// let mut echo = server.procedure("echo");
    /// while let Some((_socket, request)) = echo.next().await {
    ///     let _ = request.end_value(request.raw_data().cloned());
    /// }
    /// # }
    /// ```
    pub fn procedure(&self, procedure: &str) -> Consumer<(ServerSocket, crate::request::Request)> {
        self.shared.procedures.create_consumer(procedure)
    }

    /// The listeners (for close, kill, stats and backpressure of listener streams).
    pub fn listeners(&self) -> &StreamDemux<ServerEvent> {
        &self.shared.listeners
    }

    /// The server-side exchange: publish to channels and subscribe to them from the server.
    pub fn exchange(&self) -> &Exchange {
        &self.shared.exchange
    }

    /// The token signer and verifier.
    pub fn auth(&self) -> &JwtAuth {
        &self.shared.auth
    }

    /// The broker.
    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.shared.broker
    }

    /// The sockets that completed the handshake.
    pub fn clients(&self) -> Vec<ServerSocket> {
        self.shared.clients.lock().values().cloned().collect()
    }

    /// A handshaken socket by id.
    pub fn client(&self, id: &str) -> Option<ServerSocket> {
        self.shared.clients.lock().get(id).cloned()
    }

    /// The number of sockets that completed the handshake.
    pub fn clients_count(&self) -> usize {
        self.shared.clients.lock().len()
    }

    /// The number of sockets still in the handshake.
    pub fn pending_clients_count(&self) -> usize {
        self.shared.pending_clients.load(Ordering::Relaxed) as usize
    }

    /// The WebSocket settings the server uses: small read buffers (many idle sockets stay cheap)
    /// and `max_payload` as the message size limit.
    pub fn websocket_config(&self) -> WebSocketConfig {
        let max = self.shared.options.max_payload.unwrap_or(64 << 20);
        WebSocketConfig::default()
            .read_buffer_size(1024)
            .write_buffer_size(16 * 1024)
            .max_message_size(Some(max))
            .max_frame_size(Some(max))
    }

    /// Upgrades `stream` (an accepted connection) to a WebSocket — HTTP 400 for another path
    /// than the server's — and serves it until it closes. Runs until the connection ends; spawn
    /// it per connection.
    pub async fn accept<S>(&self, stream: S, remote_address: Option<SocketAddr>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Ok((stream, uri, remote_address)) = upgrade::check(&self.shared, stream, remote_address).await
        else {
            return;
        };
        // Our frames go straight to the connection; the WebSocket library reads it, and what it
        // writes (the upgrade response, pongs) joins the same queue through the tap.
        let (read, write) = futures::io::AsyncReadExt::split(stream);
        let wiring = driver::Wiring::new(&self.shared, Backend::Raw(Box::pin(write)));
        let tapped = crate::outbox::Tapped::new(read, &wiring.out);
        let ws =
            match async_tungstenite::accept_async_with_config(tapped, Some(self.websocket_config())).await {
                Ok(ws) => ws,
                Err(_) => {
                    wiring.out.kill();
                    return;
                }
            };
        driver::run(self.shared.clone(), ws, wiring, remote_address, uri).await;
    }

    /// Does the TLS handshake on `stream` (at most `handshake_timeout`), then serves it as
    /// [`accept`](Self::accept) does (feature `tls`). A failed or timed-out handshake closes
    /// the connection and emits a `warning` (`TLSHandshakeError`); other sockets never notice.
    #[cfg(feature = "tls")]
    pub async fn accept_tls<S>(
        &self,
        config: &Arc<rustls::ServerConfig>,
        stream: S,
        remote_address: Option<SocketAddr>,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        use futures::future::{Either, select};
        let handshake = core::pin::pin!(crate::tls::accept(config, stream));
        let timeout = self.shared.runtime.sleep_until(Instant::now() + self.shared.options.handshake_timeout);
        let message = match select(handshake, timeout).await {
            Either::Left((Ok(tls), _)) => return self.accept(tls, remote_address).await,
            Either::Left((Err(e), _)) => alloc::format!("TLS handshake failed: {e}"),
            Either::Right(_) => String::from("TLS handshake timed out"),
        };
        let message = match remote_address {
            Some(a) => alloc::format!("{message} (from {a})"),
            None => message,
        };
        let error = crate::protocol::RemoteError::new("TLSHandshakeError", message.as_str());
        self.shared.emit("warning", ServerEvent::Warning { error, socket: None });
    }

    /// [`accept`](Self::accept) or, with a configuration, [`accept_tls`](Self::accept_tls): what
    /// the adapters' accept loops call.
    pub(crate) async fn accept_with<S>(&self, tls: Option<&ServerTls>, stream: S, remote: Option<SocketAddr>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        match tls {
            None => self.accept(stream, remote).await,
            #[cfg(feature = "tls")]
            Some(config) => self.accept_tls(config, stream, remote).await,
            #[cfg(not(feature = "tls"))]
            Some(never) => match *never {},
        }
    }

    /// Replaces the middleware for sockets created from now on (live sockets keep theirs).
    pub fn set_middleware(&self, middleware: Middleware) {
        *self.shared.middleware.lock() = Arc::new(middleware);
    }

    /// Serves a WebSocket whose upgrade was done elsewhere (by your HTTP server). `request_uri` is
    /// the upgrade request's path and query.
    pub async fn serve_websocket<S>(
        &self,
        ws: async_tungstenite::WebSocketStream<S>,
        remote_address: Option<SocketAddr>,
        request_uri: &str,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sink, frames) = ws.split();
        let wiring = driver::Wiring::new(&self.shared, Backend::Sink(Box::pin(sink)));
        driver::run(self.shared.clone(), frames, wiring, remote_address, String::from(request_uri)).await;
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.shared.closing.load(Ordering::Acquire)
    }

    /// Resolves once [`close`](Self::close) is called (the adapters stop accepting then).
    pub async fn closed(&self) {
        let shared = self.shared.clone();
        shared.closing_signal.wait(|| shared.closing.load(Ordering::Acquire)).await;
    }

    /// Stops accepting connections (with the adapters' `listen`), disconnects every socket with
    /// `code` (1001, going away, lets JS clients reconnect elsewhere) and waits until they are
    /// closed, at most `timeout`.
    pub async fn close(&self, code: u16, reason: &str, timeout: Duration) {
        self.shared.closing.store(true, Ordering::Release);
        self.shared.closing_signal.notify();
        let sockets: Vec<ServerSocket> = self.shared.clients.lock().values().cloned().collect();
        for s in &sockets {
            s.disconnect(code, reason);
        }
        let shared = self.shared.clone();
        let done = shared.all_done.wait(|| shared.live.load(Ordering::Acquire) == 0);
        let sleep = self.shared.runtime.sleep_until(Instant::now() + timeout);
        let done = core::pin::pin!(done);
        futures::future::select(done, sleep).await;
    }
}
