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

mod channel;
mod driver;
mod events;
mod token_store;

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
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
pub use token_store::{FileTokenStore, MemoryTokenStore, TokenStore};

use crate::outbox::Outbox;
use crate::protocol::backoff::Backoff;
use crate::protocol::channels::{ChannelState, Channels, SubscribeOptions};
use crate::protocol::{AbortKind, Calls, Error, ProtocolVersion, RemoteError, close, packet};
use crate::receiver::Receiver;
use crate::request::Request;
use crate::runtime::{BoxFuture, Runtime};
use crate::stream::{Consumer, StreamDemux};
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
}

pub(crate) enum Command {
    Connect,
    Disconnect(u16, String),
}

pub(crate) struct ClientInner {
    options: ClientOptions,
    tokens: Arc<dyn TokenStore>,
    runtime: Arc<dyn Runtime>,
    connector: Arc<dyn Connector>,
    state: Mutex<State>,
    commands: async_channel::Sender<Command>,
    listeners: StreamDemux<ClientEvent>,
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
    /// last handle's drop closes the command channel, which ends the connection and the task.
    _handles: Arc<HandleGuard>,
}

/// Closes the command channel when the last [`Client`] handle is dropped.
struct HandleGuard(async_channel::Sender<Command>);

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
        let (commands, rx) = async_channel::unbounded();
        let guard = Arc::new(HandleGuard(commands.clone()));
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
            }),
            commands,
            listeners: StreamDemux::new(),
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

    /// Connects (no effect unless closed); cancels a scheduled reconnect.
    pub fn connect(&self) {
        let mut st = self.inner.state.lock();
        if st.status == ClientState::Closed {
            st.status = ClientState::Connecting;
            drop(st);
            let _ = self.inner.commands.try_send(Command::Connect);
        }
    }

    /// Disconnects with `code` (1000: SocketCluster's default; no reconnect after it) and
    /// `reason`. While closed, cancels a scheduled reconnect.
    pub fn disconnect(&self, code: u16, reason: &str) {
        let _ = self.inner.commands.try_send(Command::Disconnect(code, String::from(reason)));
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
    pub async fn transmit<D: Serialize>(&self, event: &str, data: D) -> Result<(), Error> {
        self.transmit_raw(event, Some(to_value(data)?)).await
    }

    /// [`transmit`](Self::transmit) with optional data (`None`: no `data` field).
    pub async fn transmit_raw(&self, event: &str, data: Option<Value>) -> Result<(), Error> {
        let rx = {
            let mut st = self.inner.state.lock();
            if st.status == ClientState::Open {
                let frame = packet::encode_transmit(event, data.as_ref()).map_err(encode_err)?;
                if st.out.as_ref().is_some_and(|o| o.text(frame)) {
                    return Ok(());
                }
            }
            let (done, rx) = async_channel::bounded(1);
            st.buffer.push_back(Buffered::Transmit { event: String::from(event), data, done });
            rx
        };
        self.connect();
        self.wait(rx, event, self.inner.options.ack_timeout).await
    }

    /// Invokes `procedure` and waits for the answer (at most the ack timeout). An answer
    /// without data is `Null`.
    pub async fn invoke<D: Serialize>(&self, procedure: &str, data: D) -> Result<Value, Error> {
        let v = self.invoke_raw(procedure, Some(to_value(data)?), self.inner.options.ack_timeout).await?;
        Ok(v.unwrap_or(Value::Null))
    }

    /// [`invoke`](Self::invoke), with the answer deserialized.
    pub async fn invoke_as<R: DeserializeOwned, D: Serialize>(
        &self,
        procedure: &str,
        data: D,
    ) -> Result<R, Error> {
        serde_json::from_value(self.invoke(procedure, data).await?)
            .map_err(|e| Error::InvalidArguments(alloc::format!("{e}")))
    }

    /// Invokes with optional data and its own timeout; "no data" (`None`) is kept apart from
    /// `null` both ways.
    pub async fn invoke_raw(
        &self,
        procedure: &str,
        data: Option<Value>,
        timeout: Duration,
    ) -> Result<Option<Value>, Error> {
        let (reply, rx) = async_channel::bounded(1);
        let sent = {
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
                    Some(cid)
                }
                _ => {
                    st.buffer.push_back(Buffered::Invoke { event: String::from(procedure), data, reply });
                    None
                }
            }
        };
        if sent.is_none() {
            self.connect();
        }
        let result = self.wait(rx, procedure, timeout).await;
        if let (Err(Error::Timeout { .. }), Some(cid)) = (&result, sent) {
            self.inner.state.lock().pending.remove(&cid);
        }
        result
    }

    async fn wait<T>(
        &self,
        rx: async_channel::Receiver<Result<T, Error>>,
        event: &str,
        timeout: Duration,
    ) -> Result<T, Error> {
        let sleep = self.inner.runtime.sleep_until(Instant::now() + timeout);
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

    fn publish_data<D: Serialize>(channel: &str, data: D) -> Result<Value, Error> {
        let mut m = serde_json::Map::new();
        m.insert(String::from("channel"), Value::String(String::from(channel)));
        m.insert(String::from("data"), to_value(data)?);
        Ok(Value::Object(m))
    }

    /// Publishes `data` to `channel` and waits until the server has published it.
    pub async fn invoke_publish<D: Serialize>(&self, channel: &str, data: D) -> Result<(), Error> {
        let payload = Self::publish_data(channel, data)?;
        self.invoke_raw("#publish", Some(payload), self.inner.options.ack_timeout).await.map(|_| ())
    }

    /// Publishes `data` to `channel` without waiting for the server.
    pub async fn transmit_publish<D: Serialize>(&self, channel: &str, data: D) -> Result<(), Error> {
        let payload = Self::publish_data(channel, data)?;
        self.transmit_raw("#publish", Some(payload)).await
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

    /// Sends `#authenticate` with `signed_token`; on success the token is stored and the client
    /// is authenticated. Fails with the server's error.
    pub async fn authenticate(&self, signed_token: &str) -> Result<(), Error> {
        let r = self
            .invoke_raw(
                "#authenticate",
                Some(Value::String(String::from(signed_token))),
                self.inner.options.ack_timeout,
            )
            .await;
        match r {
            Ok(v) => {
                let ok = v
                    .as_ref()
                    .and_then(|v| v.get("isAuthenticated"))
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                if ok {
                    driver::set_token(&self.inner, String::from(signed_token));
                    Ok(())
                } else {
                    let err = v.and_then(|v| v.get("authError").cloned()).map(RemoteError::from_value);
                    driver::clear_token(&self.inner);
                    Err(Error::Remote(
                        err.unwrap_or_else(|| RemoteError::new("AuthError", "Authentication failed")),
                    ))
                }
            }
            Err(e @ (Error::Timeout { .. } | Error::BadConnection { .. })) => Err(e),
            Err(e) => {
                driver::clear_token(&self.inner);
                Err(e)
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
