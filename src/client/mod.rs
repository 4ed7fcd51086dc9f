//! The SocketCluster client (`AGClientSocket`): connects, reconnects with SocketCluster's backoff,
//! re-subscribes its channels after every reconnect, and buffers calls made while connecting.
//!
//! Start one with a runtime adapter (`socketcluster::smol::connect`,
//! `socketcluster::tokio::connect`), or bring your own [`Connector`] to [`Client::new`].
//!
//! Buffering follows socketcluster-client 20: calls made while the client is connecting are sent
//! after the handshake (after the re-subscriptions); a call made while it is closed starts a
//! connection; when an attempt fails or the connection drops, everything still buffered fails
//! with `BadConnectionError` — transmits too (SocketCluster drops those silently; we report it).
//!
//! As in socketcluster-client, the client's state changes in the call that causes it, whatever
//! the runtime and whichever thread runs the connection task: [`Client::connect`] and
//! [`Client::disconnect`] change the state and emit their events (`connecting`; `connectAbort` or
//! `disconnect`, `close`) before they return; a call (`transmit`, `invoke`, ...) is queued or
//! sent when it is made, not when its future is first polled; and the handshake's completion
//! opens the client, sends the due subscriptions and the buffered calls in one step, so a call
//! made by another thread the moment the client is open comes after them.

mod channel;
mod driver;
mod events;
mod open;
mod token_store;

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::future::Future;
use core::pin::Pin;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use async_tungstenite::tungstenite::{Error as WsError, Message};
use futures::{Sink, Stream};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

pub use channel::Channel;
pub use events::{AuthState, ChannelEvent, ClientEvent};
pub(crate) use open::{Tls, handshake, target};
pub use token_store::{FileTokenStore, MemoryTokenStore, TokenStore};

use crate::outbox::Outbox;
use crate::protocol::backoff::Backoff;
use crate::protocol::channels::{ChannelState, Channels, SubscribeOptions};
use crate::protocol::{AbortKind, Calls, Error, ProtocolVersion, RemoteError, close, packet};
use crate::receiver::Receiver;
use crate::request::Request;
use crate::runtime::{BoxFuture, Runtime};
use crate::stream::{Consumer, StreamDemux, WritableConsumableStream};
use crate::sync::Mutex;

/// The sending half of a WebSocket, boxed.
pub type WsSink = Pin<Box<dyn Sink<Message, Error = WsError> + Send>>;
/// The receiving half of a WebSocket, boxed.
pub type WsStream = Pin<Box<dyn Stream<Item = Result<Message, WsError>> + Send>>;

/// Opens WebSocket connections for the client (the adapters provide one per runtime).
pub trait Connector: Send + Sync + fmt::Debug + 'static {
    /// Connects to `url` (TCP, then the WebSocket upgrade).
    fn connect(&self, url: &str, config: WebSocketConfig) -> BoxFuture<Result<(WsSink, WsStream), WsError>>;
}

/// Boxes the halves of an async-tungstenite WebSocket for a [`Connector`].
pub fn split_websocket<S>(ws: async_tungstenite::WebSocketStream<S>) -> (WsSink, WsStream)
where
    S: futures::io::AsyncRead + futures::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sink, stream) = ws.split();
    (Box::pin(sink), Box::pin(stream))
}

/// Client options; the defaults are socketcluster-client 20's.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// The server URL (`ws://127.0.0.1:8000/socketcluster/`).
    pub url: String,
    /// Timeout of invokes, the handshake included (10 s).
    pub ack_timeout: Duration,
    /// Open and handshake must finish in this time, else close 4007 (20 s).
    pub connect_timeout: Duration,
    /// Connect at once (true).
    pub auto_connect: bool,
    /// Reconnect after a lost connection (true), except after 1000 and codes from 4500.
    pub auto_reconnect: bool,
    /// The reconnect backoff.
    pub backoff: Backoff,
    /// Subscribe pending channels after every handshake (true).
    pub auto_subscribe_on_connect: bool,
    /// Heartbeat format (2).
    pub protocol_version: ProtocolVersion,
    /// Do not watch for the server's pings.
    pub ping_timeout_disabled: bool,
    /// A signed auth token to send in the handshake (saved into the token store at start).
    pub auth_token: Option<String>,
    /// Where the token is kept between connections ([`MemoryTokenStore`] when `None`).
    pub token_store: Option<Arc<dyn TokenStore>>,
    /// How `wss://` servers are verified (feature `tls`; webpki roots by default).
    #[cfg(feature = "tls")]
    pub tls: crate::tls::ClientTls,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            url: String::from("ws://localhost:80/socketcluster/"),
            ack_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(20),
            auto_connect: true,
            auto_reconnect: true,
            backoff: Backoff::default(),
            auto_subscribe_on_connect: true,
            protocol_version: ProtocolVersion::V2,
            ping_timeout_disabled: false,
            auth_token: None,
            token_store: None,
            #[cfg(feature = "tls")]
            tls: crate::tls::ClientTls::default(),
        }
    }
}

impl ClientOptions {
    /// Default options for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self { url: url.into(), ..Self::default() }
    }
}

/// The client's connection state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientState {
    /// Connecting (opening the WebSocket, or in the handshake).
    Connecting,
    /// Handshake complete.
    Open,
    /// Not connected.
    Closed,
}

impl ClientState {
    /// `connecting`, `open` or `closed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connecting => "connecting",
            Self::Open => "open",
            Self::Closed => "closed",
        }
    }
}

type Reply = Result<Option<Value>, Error>;

enum Buffered {
    Transmit { event: String, data: Option<Value>, done: async_channel::Sender<Result<(), Error>> },
    Invoke { event: String, data: Option<Value>, reply: async_channel::Sender<Reply> },
}

pub(crate) struct State {
    status: ClientState,
    id: Option<String>,
    signed_token: Option<String>,
    auth_state: AuthState,
    calls: Calls,
    /// Calls written to the connection, by call id: the event name (for `BadConnectionError`)
    /// and where the answer goes.
    pending: HashMap<u64, (String, async_channel::Sender<Reply>)>,
    channels: Channels,
    buffer: VecDeque<Buffered>,
    out: Option<Outbox>,
    connect_attempts: u32,
    /// The number of the current (or last) connection attempt; each start of one adds 1.
    attempt: u64,
    /// Attempts ended by [`Client::disconnect`] that the connection task may still be running:
    /// the attempt, and the close code and reason to send.
    ended: Vec<(u64, u16, String)>,
    /// When the scheduled reconnect is due.
    reconnect_at: Option<Instant>,
}

pub(crate) struct ClientInner {
    options: ClientOptions,
    tokens: Arc<dyn TokenStore>,
    runtime: Arc<dyn Runtime>,
    connector: Arc<dyn Connector>,
    state: Mutex<State>,
    /// Wakes the connection task to look at the state again (capacity 1: one pending wake-up is
    /// enough). Closed when the last handle is dropped.
    wake: async_channel::Sender<()>,
    listeners: StreamDemux<ClientEvent>,
    /// Every listener event, in the order they were emitted ([`Client::events`]).
    all_events: WritableConsumableStream<ClientEvent>,
    receivers: StreamDemux<Option<Value>>,
    procedures: StreamDemux<Request>,
    channel_data: StreamDemux<Option<Value>>,
    channel_events: StreamDemux<ChannelEvent>,
}

/// A SocketCluster client. Cheap to clone: clones are handles to the same client; the
/// connection task ends when the last handle is dropped.
#[derive(Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
    /// Shared by the handles only (the connection task holds `inner` while connected): the
    /// last handle's drop closes the wake-up channel, which ends the connection and the task.
    _handles: Arc<HandleGuard>,
}

/// Closes the wake-up channel when the last [`Client`] handle is dropped.
struct HandleGuard(async_channel::Sender<()>);

impl Drop for HandleGuard {
    fn drop(&mut self) {
        self.0.close();
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").field("url", &self.inner.options.url).field("state", &self.state()).finish()
    }
}

/// Waits for a call's outcome until `deadline` (the ack timeout, counted from the call).
async fn wait<T>(
    inner: &ClientInner,
    rx: async_channel::Receiver<Result<T, Error>>,
    event: &str,
    deadline: Instant,
) -> Result<T, Error> {
    let sleep = inner.runtime.sleep_until(deadline);
    let recv = rx.recv();
    let recv = core::pin::pin!(recv);
    match futures::future::select(recv, sleep).await {
        futures::future::Either::Left((Ok(r), _)) => r,
        futures::future::Either::Left((Err(_), _)) => Err(Error::BadConnection {
            event: String::from(event),
            kind: AbortKind::Disconnect,
            code: close::ABNORMAL,
            reason: String::new(),
        }),
        futures::future::Either::Right(_) => Err(Error::Timeout { event: String::from(event) }),
    }
}

fn encode_err(e: serde_json::Error) -> Error {
    Error::InvalidArguments(alloc::format!("{e}"))
}

fn to_value<D: Serialize>(data: D) -> Result<Value, Error> {
    serde_json::to_value(data).map_err(encode_err)
}

impl Client {
    /// A client on `runtime` that connects with `connector`; connects at once unless
    /// `auto_connect` is off.
    pub fn new(options: ClientOptions, runtime: Arc<dyn Runtime>, connector: Arc<dyn Connector>) -> Self {
        let (wake, rx) = async_channel::bounded(1);
        let guard = Arc::new(HandleGuard(wake.clone()));
        let auto = options.auto_connect;
        let tokens: Arc<dyn TokenStore> =
            options.token_store.clone().unwrap_or_else(|| Arc::new(MemoryTokenStore::default()));
        if let Some(t) = &options.auth_token {
            let _ = tokens.save(t);
        }
        let inner = Arc::new(ClientInner {
            tokens,
            options,
            runtime: runtime.clone(),
            connector,
            state: Mutex::new(State {
                status: ClientState::Closed,
                id: None,
                // As in socketcluster-client: a stored token shows once a handshake accepted it.
                signed_token: None,
                auth_state: AuthState::Unauthenticated,
                calls: Calls::new(),
                pending: HashMap::new(),
                channels: Channels::new(),
                buffer: VecDeque::new(),
                out: None,
                connect_attempts: 0,
                attempt: 0,
                ended: Vec::new(),
                reconnect_at: None,
            }),
            wake,
            listeners: StreamDemux::new(),
            all_events: WritableConsumableStream::new(),
            receivers: StreamDemux::new(),
            procedures: StreamDemux::new(),
            channel_data: StreamDemux::new(),
            channel_events: StreamDemux::new(),
        });
        runtime.spawn(Box::pin(driver::run(Arc::downgrade(&inner), rx)));
        let client = Self { inner, _handles: guard };
        if auto {
            client.connect();
        }
        client
    }

    /// The options.
    pub fn options(&self) -> &ClientOptions {
        &self.inner.options
    }

    /// Connects (no effect unless closed); cancels a scheduled reconnect. The state is
    /// `Connecting` and `connecting` was emitted when this returns.
    pub fn connect(&self) {
        self.inner.connect();
    }

    /// Disconnects with `code` (1000: SocketCluster's default; no reconnect after it) and
    /// `reason`. While closed, cancels a scheduled reconnect.
    ///
    /// As in SocketCluster, this takes effect at once: when it returns the state is `Closed`,
    /// `connectAbort` (while connecting) or `disconnect`, then `close` were emitted, calls in
    /// flight and buffered calls failed with `BadConnectionError`, and a reconnect is scheduled
    /// when the code asks for one. The connection task then closes the WebSocket with `code` and
    /// `reason` (or drops the attempt when the WebSocket was not open yet).
    pub fn disconnect(&self, code: u16, reason: &str) {
        let inner = &*self.inner;
        let mut st = inner.state.lock();
        if st.status == ClientState::Closed {
            st.reconnect_at = None;
        } else {
            let was_open = st.status == ClientState::Open;
            let attempt = st.attempt;
            st.ended.push((attempt, code, close::wire_reason(reason)));
            driver::close_sequence(inner, &mut st, code, close::reason(code, reason), was_open);
        }
        drop(st);
        inner.wake_driver();
    }

    /// The connection state.
    pub fn state(&self) -> ClientState {
        self.inner.state.lock().status
    }

    /// The socket id of the current connection.
    pub fn id(&self) -> Option<String> {
        self.inner.state.lock().id.clone()
    }

    /// Authenticated or not (kept across disconnects, as in SocketCluster).
    pub fn auth_state(&self) -> AuthState {
        self.inner.state.lock().auth_state
    }

    /// The signed auth token the server accepted (by the handshake, `authenticate` or its
    /// `#setAuthToken`); kept across disconnects, as in SocketCluster. `None` before a handshake
    /// accepted a stored token.
    pub fn signed_auth_token(&self) -> Option<String> {
        self.inner.state.lock().signed_token.clone()
    }

    /// The payload of the stored auth token (decoded, not verified).
    pub fn auth_token(&self) -> Option<Value> {
        let token = self.signed_auth_token()?;
        let payload = token.split('.').nth(1)?;
        use base64::Engine as _;
        let bytes =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// A consumer of the client's events named `event` (`connecting`, `connect`, `connectAbort`,
    /// `disconnect`, `close`, `error`, `message`, `raw`, `subscribe`, `subscribeFail`, `unsubscribe`,
    /// `subscribeStateChange`, `kickOut`, `authenticate`, `deauthenticate`, `authStateChange`).
    pub fn listener(&self, event: &str) -> Consumer<ClientEvent> {
        self.inner.listeners.create_consumer(event)
    }

    /// A consumer of every event the listeners get (all names, `message` included), in the
    /// order the client emitted them: one consumer keeps the order across names, which separate
    /// [`listener`](Self::listener)s cannot (e.g. each channel's `unsubscribe` before the
    /// `disconnect` of the same close).
    pub fn events(&self) -> Consumer<ClientEvent> {
        self.inner.all_events.create_consumer()
    }

    /// A consumer of the server's transmits of `event`.
    pub fn receiver(&self, event: &str) -> Receiver {
        Receiver::new(self.inner.receivers.create_consumer(event))
    }

    /// A consumer of the server's invokes of `procedure`.
    pub fn procedure(&self, procedure: &str) -> Consumer<Request> {
        self.inner.procedures.create_consumer(procedure)
    }

    /// Transmits `event` with `data`; resolves once the frame is queued on an open connection
    /// (after connecting, if needed), or fails with `BadConnectionError` when the connection
    /// attempt fails, or `TimeoutError` after the ack timeout.
    ///
    /// The transmit is made by this call, not when the future is first polled (as in
    /// SocketCluster): calls leave in the order they were made, whichever task awaits them.
    pub fn transmit<D: Serialize>(
        &self,
        event: &str,
        data: D,
    ) -> impl Future<Output = Result<(), Error>> + Send + 'static + use<D> {
        let started = to_value(data).map(|data| self.start_transmit(event, Some(data)));
        async move { started?.await }
    }

    /// [`transmit`](Self::transmit) with optional data (`None`: no `data` field).
    pub fn transmit_raw(
        &self,
        event: &str,
        data: Option<Value>,
    ) -> impl Future<Output = Result<(), Error>> + Send + 'static + use<> {
        self.start_transmit(event, data)
    }

    fn start_transmit(
        &self,
        event: &str,
        data: Option<Value>,
    ) -> impl Future<Output = Result<(), Error>> + Send + 'static + use<> {
        let deadline = Instant::now() + self.inner.options.ack_timeout;
        let queued: Result<_, Error> = (|| {
            let mut st = self.inner.state.lock();
            if st.status == ClientState::Open {
                let frame = packet::encode_transmit(event, data.as_ref()).map_err(encode_err)?;
                if st.out.as_ref().is_some_and(|o| o.text(frame)) {
                    return Ok(None);
                }
            }
            let (done, rx) = async_channel::bounded(1);
            st.buffer.push_back(Buffered::Transmit { event: String::from(event), data, done });
            Ok(Some(rx))
        })();
        if let Ok(Some(_)) = queued {
            self.connect();
        }
        let (inner, event) = (self.inner.clone(), String::from(event));
        async move {
            match queued? {
                None => Ok(()),
                Some(rx) => wait(&inner, rx, &event, deadline).await,
            }
        }
    }

    /// Invokes `procedure` and waits for the answer (at most the ack timeout). An answer
    /// without data is `Null`. Like [`transmit`](Self::transmit), the call is made by this
    /// method, not when the future is first polled.
    pub fn invoke<D: Serialize>(
        &self,
        procedure: &str,
        data: D,
    ) -> impl Future<Output = Result<Value, Error>> + Send + 'static + use<D> {
        let started =
            to_value(data).map(|d| self.invoke_raw(procedure, Some(d), self.inner.options.ack_timeout));
        async move { Ok(started?.await?.unwrap_or(Value::Null)) }
    }

    /// [`invoke`](Self::invoke), with the answer deserialized.
    pub fn invoke_as<R: DeserializeOwned, D: Serialize>(
        &self,
        procedure: &str,
        data: D,
    ) -> impl Future<Output = Result<R, Error>> + Send + 'static + use<R, D> {
        let call = self.invoke(procedure, data);
        async move {
            serde_json::from_value(call.await?).map_err(|e| Error::InvalidArguments(alloc::format!("{e}")))
        }
    }

    /// Invokes with optional data and its own timeout; "no data" (`None`) is kept apart from
    /// `null` both ways. The call is made by this method (see [`invoke`](Self::invoke)).
    pub fn invoke_raw(
        &self,
        procedure: &str,
        data: Option<Value>,
        timeout: Duration,
    ) -> impl Future<Output = Result<Option<Value>, Error>> + Send + 'static + use<> {
        let deadline = Instant::now() + timeout;
        let (reply, rx) = async_channel::bounded(1);
        let sent: Result<_, Error> = (|| {
            let mut st = self.inner.state.lock();
            let st = &mut *st;
            match (&st.status, &st.out) {
                (ClientState::Open, Some(out)) => {
                    let cid = st.calls.next_cid();
                    let frame =
                        packet::encode_client_invoke(procedure, data.as_ref(), cid).map_err(encode_err)?;
                    st.pending.insert(cid, (String::from(procedure), reply));
                    if !out.text(frame) {
                        st.pending.remove(&cid);
                        return Err(Error::BadConnection {
                            event: String::from(procedure),
                            kind: AbortKind::Disconnect,
                            code: close::ABNORMAL,
                            reason: String::new(),
                        });
                    }
                    Ok(Some(cid))
                }
                _ => {
                    st.buffer.push_back(Buffered::Invoke { event: String::from(procedure), data, reply });
                    Ok(None)
                }
            }
        })();
        if let Ok(None) = sent {
            self.connect();
        }
        let (inner, procedure) = (self.inner.clone(), String::from(procedure));
        async move {
            let sent = sent?;
            let result = wait(&inner, rx, &procedure, deadline).await;
            if let (Err(Error::Timeout { .. }), Some(cid)) = (&result, sent) {
                inner.state.lock().pending.remove(&cid);
            }
            result
        }
    }

    fn publish_data<D: Serialize>(channel: &str, data: D) -> Result<Value, Error> {
        let mut m = serde_json::Map::new();
        m.insert(String::from("channel"), Value::String(String::from(channel)));
        m.insert(String::from("data"), to_value(data)?);
        Ok(Value::Object(m))
    }

    /// Publishes `data` to `channel` and waits until the server has published it (the call is
    /// made by this method, see [`invoke`](Self::invoke)).
    pub fn invoke_publish<D: Serialize>(
        &self,
        channel: &str,
        data: D,
    ) -> impl Future<Output = Result<(), Error>> + Send + 'static + use<D> {
        let started = Self::publish_data(channel, data)
            .map(|payload| self.invoke_raw("#publish", Some(payload), self.inner.options.ack_timeout));
        async move { started?.await.map(|_| ()) }
    }

    /// Publishes `data` to `channel` without waiting for the server (the call is made by this
    /// method, see [`transmit`](Self::transmit)).
    pub fn transmit_publish<D: Serialize>(
        &self,
        channel: &str,
        data: D,
    ) -> impl Future<Output = Result<(), Error>> + Send + 'static + use<D> {
        let started =
            Self::publish_data(channel, data).map(|payload| self.start_transmit("#publish", Some(payload)));
        async move { started?.await }
    }

    /// Subscribes to `channel` (again: replaces its options) and returns it. Its messages are
    /// buffered in the returned [`Channel`] from now on.
    pub fn subscribe(&self, channel: &str, options: SubscribeOptions) -> Channel {
        let ch = Channel::new(channel, self.clone());
        let new = self.inner.state.lock().channels.subscribe(channel, options);
        if new {
            driver::send_due_subscriptions(&self.inner);
        }
        ch
    }

    /// A [`Channel`] for `channel` without subscribing.
    pub fn channel(&self, channel: &str) -> Channel {
        Channel::new(channel, self.clone())
    }

    /// Unsubscribes from `channel`: locally at once (events `subscribeStateChange`,
    /// `unsubscribe`), then `#unsubscribe` to the server when connected.
    pub fn unsubscribe(&self, channel: &str) {
        let (old, out) = {
            let mut st = self.inner.state.lock();
            let old = st.channels.unsubscribe(channel);
            (old, if st.status == ClientState::Open { st.out.clone() } else { None })
        };
        if old == ChannelState::Unsubscribed {
            return;
        }
        driver::state_changed(&self.inner, channel, old, ChannelState::Unsubscribed);
        if let Some(out) = out
            && let Ok(frame) = packet::encode_transmit("#unsubscribe", Some(&channel))
        {
            out.text(frame);
        }
    }

    /// The state of `channel`.
    pub fn channel_state(&self, channel: &str) -> ChannelState {
        self.inner.state.lock().channels.state(channel)
    }

    /// The subscribed channels (and pending ones, with `include_pending`).
    pub fn subscriptions(&self, include_pending: bool) -> Vec<String> {
        self.inner.state.lock().channels.subscriptions(include_pending)
    }

    /// The last position seen on `channel`, when the server keeps its history (see
    /// [`protocol::position`](crate::protocol::position)): after a reconnect the client asks the
    /// server to replay what came after it, and emits `recover`.
    pub fn channel_position(&self, channel: &str) -> Option<crate::protocol::position::Position> {
        self.inner.state.lock().channels.position(channel).cloned()
    }

    /// Sends `#authenticate` with `signed_token`; on success the token is stored and the client
    /// is authenticated. Fails with the server's error. The call is made by this method (see
    /// [`invoke`](Self::invoke)).
    pub fn authenticate(
        &self,
        signed_token: &str,
    ) -> impl Future<Output = Result<(), Error>> + Send + 'static + use<> {
        let call = self.invoke_raw(
            "#authenticate",
            Some(Value::String(String::from(signed_token))),
            self.inner.options.ack_timeout,
        );
        let (inner, signed_token) = (self.inner.clone(), String::from(signed_token));
        async move {
            match call.await {
                Ok(v) => {
                    let ok = v
                        .as_ref()
                        .and_then(|v| v.get("isAuthenticated"))
                        .and_then(Value::as_bool)
                        .unwrap_or(false);
                    if ok {
                        driver::set_token(&inner, signed_token);
                        Ok(())
                    } else {
                        let err = v.and_then(|v| v.get("authError").cloned()).map(RemoteError::from_value);
                        driver::clear_token(&inner);
                        Err(Error::Remote(
                            err.unwrap_or_else(|| RemoteError::new("AuthError", "Authentication failed")),
                        ))
                    }
                }
                Err(e @ (Error::Timeout { .. } | Error::BadConnection { .. })) => Err(e),
                Err(e) => {
                    driver::clear_token(&inner);
                    Err(e)
                }
            }
        }
    }

    /// Forgets the auth token and tells the server (`#removeAuthToken`) when connected.
    pub fn deauthenticate(&self) {
        let out = {
            let st = self.inner.state.lock();
            if st.status == ClientState::Open { st.out.clone() } else { None }
        };
        driver::clear_token(&self.inner);
        if let Some(out) = out
            && let Ok(frame) = packet::encode_transmit::<Value>("#removeAuthToken", None)
        {
            out.text(frame);
        }
    }

    /// Resolves once everything queued on the current connection has been written to it.
    pub async fn flush(&self) {
        let out = self.inner.state.lock().out.clone();
        if let Some(out) = out {
            out.flushed().await;
        }
    }
}
