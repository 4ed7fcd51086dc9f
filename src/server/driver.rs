//! The task that drives one server socket: reads frames into the sans-IO connection, acts on its
//! events in order, and fires its timers.

use alloc::boxed::Box;
use alloc::collections::BTreeSet;
use alloc::string::String;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicU64, Ordering};
use core::task::Poll;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::{Error as WsError, Message};
use base64::Engine as _;
use futures::{Stream, StreamExt};
use serde_json::Value;

use super::{Blocked, InboundAction, ServerEvent, ServerShared, ServerSocket, SocketEvent};
use crate::outbox::{Backend, Outbox};
use crate::protocol::server::ServerState;
use crate::protocol::{RemoteError, ServerConfig, ServerConnection, close, packet};
use crate::request::Request;
use crate::runtime::{BoxFuture, yield_now};
use crate::stream::StreamDemux;
use crate::sync::Mutex;

/// Frames and events a driver handles in a row before it lets other tasks run: a client that
/// keeps its socket full must not monopolize an executor thread (smol has no cooperative budget).
const BURST: u32 = 64;

/// A socket id: 15 bytes (12 random, 3 from a per-process counter) in URL-safe base64, 20
/// characters, as SocketCluster makes them.
fn socket_id(seq: &AtomicU64) -> String {
    let mut bytes = [0u8; 15];
    fastrand::fill(&mut bytes[..12]);
    let n = seq.fetch_add(1, Ordering::Relaxed).to_be_bytes();
    bytes[12..].copy_from_slice(&n[5..]);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

enum Step {
    Frame(Option<Result<Message, WsError>>),
    Timer,
    Wake,
}

/// A new socket's outbound side: its queue, the receiver that fails once its writing is over (so
/// the driver can wait for the close frame to be on the wire before it reports the socket gone,
/// and `Server::close` returns), and the channel the queue's overflow is told on.
pub(crate) struct Wiring {
    pub(crate) out: Outbox,
    writer_done: async_channel::Receiver<()>,
    wake: async_channel::Sender<()>,
    woken: async_channel::Receiver<()>,
}

impl Wiring {
    pub(crate) fn new(server: &ServerShared, conn: Backend) -> Self {
        let (wake, woken) = async_channel::bounded(1);
        let (out, writer_done) =
            Outbox::new(server.writer(), conn, server.options.outbound_limit, Some(wake.clone()));
        Self { out, writer_done, wake, woken }
    }
}

/// Drives a socket whose WebSocket frames arrive on `frames` and leave through `wiring`, in a
/// `tracing` span with its id and remote address.
pub(crate) async fn run<F>(
    server: Arc<ServerShared>,
    frames: F,
    wiring: Wiring,
    remote: Option<SocketAddr>,
    uri: String,
) where
    F: Stream<Item = Result<Message, WsError>> + Unpin + Send,
{
    use tracing::Instrument as _;
    let id = socket_id(&server.id_seq);
    let span = super::trace::connection_span(&id, remote);
    drive(server, frames, wiring, remote, uri, id).instrument(span).await;
}

async fn drive<F>(
    server: Arc<ServerShared>,
    mut frames: F,
    wiring: Wiring,
    remote: Option<SocketAddr>,
    uri: String,
    id: String,
) where
    F: Stream<Item = Result<Message, WsError>> + Unpin + Send,
{
    let Wiring { out, writer_done, wake, woken } = wiring;
    let mut woken = core::pin::pin!(woken);
    let o = &server.options;
    let config = ServerConfig {
        ping_interval: o.ping_interval,
        ping_timeout: o.ping_timeout,
        ping_timeout_disabled: o.ping_timeout_disabled,
        handshake_timeout: o.handshake_timeout,
        protocol_version: o.protocol_version,
    };
    let middleware = server.middleware.lock().clone();
    let (publish_filter, filtered) = match middleware.outbound {
        Some(_) => {
            let (tx, rx) = async_channel::unbounded();
            (Some(tx), Some(rx))
        }
        None => (None, None),
    };
    let socket = ServerSocket {
        inner: Arc::new(super::socket::SocketInner {
            id,
            server: server.clone(),
            remote_address: remote,
            request_uri: uri,
            conn: Mutex::new(ServerConnection::new(server.now(), config)),
            out,
            wake,
            pending: Mutex::new(HashMap::new()),
            subscriptions: Mutex::new(BTreeSet::new()),
            receivers: StreamDemux::new(),
            procedures: StreamDemux::new(),
            listeners: StreamDemux::new(),
            subscriber_id: server.next_subscriber.fetch_add(1, Ordering::Relaxed),
            inbound_received: AtomicU64::new(0),
            inbound_processed: AtomicU64::new(0),
            closed: Mutex::new(None),
            auth: Mutex::new(super::auth::AuthSlot::default()),
            middleware,
            publish_filter,
            pending_requests: Arc::new(core::sync::atomic::AtomicUsize::new(0)),
        }),
    };
    if let (Some(rx), Some(mw)) = (filtered, socket.inner.middleware.outbound.clone()) {
        server.runtime.spawn(Box::pin(publish_out(Arc::downgrade(&socket.inner), rx, mw)));
    }
    server.live.fetch_add(1, Ordering::AcqRel);
    server.pending_clients.fetch_add(1, Ordering::Relaxed);
    server.emit("handshake", ServerEvent::Handshake { socket: socket.clone() });
    let mut driver = Driver { server: server.clone(), socket, open: false, burst: 0 };
    // Not in `Driver`: the driver is borrowed across awaits, so it must be `Sync`; timers are not.
    let mut timer: Option<(Duration, BoxFuture<()>)> = None;
    loop {
        driver.flush();
        if driver.process_events().await {
            break;
        }
        let deadline = driver.socket.inner.conn.lock().poll_timeout();
        arm(&server, &mut timer, deadline);
        let mut polls = 0u32;
        let step = core::future::poll_fn(|cx| {
            polls += 1;
            if let Poll::Ready(f) = frames.poll_next_unpin(cx) {
                return Poll::Ready(Step::Frame(f));
            }
            if woken.as_mut().poll_next(cx).is_ready() {
                return Poll::Ready(Step::Wake);
            }
            if let Some((_, t)) = timer.as_mut()
                && t.as_mut().poll(cx).is_ready()
            {
                return Poll::Ready(Step::Timer);
            }
            Poll::Pending
        })
        .await;
        // The burst ends when the driver had to wait; otherwise this frame continues it.
        driver.burst = if polls > 1 { 0 } else { driver.burst + 1 };
        let now = server.now();
        let inner = &driver.socket.inner;
        match step {
            Step::Frame(Some(Ok(msg))) => {
                inner.inbound_received.fetch_add(1, Ordering::Relaxed);
                server.stats.messages_in.fetch_add(1, Ordering::Relaxed);
                let data = matches!(msg, Message::Text(_) | Message::Binary(_));
                if !data || driver.inbound_raw(&msg).await {
                    if data {
                        driver.socket.check_expiry();
                    }
                    let mut conn = inner.conn.lock();
                    match &msg {
                        Message::Text(t) => conn.handle_text(now, t.as_str()),
                        Message::Binary(b) => conn.handle_binary(now, b),
                        Message::Close(frame) => {
                            let (code, reason) =
                                frame.as_ref().map_or((close::NO_STATUS, String::new()), |f| {
                                    (u16::from(f.code), String::from(f.reason.as_str()))
                                });
                            conn.handle_close(code, &reason);
                        }
                        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
                    }
                }
                inner.inbound_processed.fetch_add(1, Ordering::Relaxed);
            }
            Step::Frame(Some(Err(WsError::Capacity(_)))) => {
                inner.conn.lock().close(close::MESSAGE_TOO_BIG, "");
            }
            Step::Frame(Some(Err(_)) | None) => inner.conn.lock().handle_close(close::ABNORMAL, ""),
            Step::Timer => {
                timer = None;
                inner.conn.lock().handle_timeout(now);
            }
            Step::Wake => {
                if inner.out.overflowed() && inner.conn.lock().state() != ServerState::Closed {
                    // Shed a socket that does not read fast enough; nobody else waits for it.
                    let dropped = inner.out.discard();
                    let limit = server.options.outbound_limit.unwrap_or_default();
                    let e = RemoteError::new(
                        "ResourceLimitError",
                        alloc::format!(
                            "Socket {} was disconnected: its outbound backlog exceeded {limit} messages ({dropped} not sent)",
                            inner.id
                        ),
                    )
                    .with("code", close::TRY_AGAIN_LATER);
                    driver.warn(e);
                    inner.conn.lock().close(close::TRY_AGAIN_LATER, "");
                }
            }
        }
    }
    // A shed socket's writer is stuck on a peer that does not read: stop it at once. Otherwise
    // give the close frame up to 2 s to reach the wire.
    if !driver.socket.inner.out.overflowed() {
        let done = writer_done.recv();
        let done = core::pin::pin!(done);
        futures::future::select(done, server.runtime.sleep_until(Instant::now() + Duration::from_secs(2)))
            .await;
    }
    // A peer that does not read must not keep the socket's writing (and its memory) alive.
    driver.socket.inner.out.kill();
    if server.live.fetch_sub(1, Ordering::AcqRel) == 1 {
        server.all_done.notify();
    }
}

/// A socket's outbound middleware: each publication passes it in order (a slow one holds back
/// only this socket), then is queued — the shared bytes when the data is unchanged.
async fn publish_out(
    socket: alloc::sync::Weak<super::socket::SocketInner>,
    rx: async_channel::Receiver<super::Publication>,
    mw: super::middleware::OutboundMw,
) {
    while let Ok(p) = rx.recv().await {
        let Some(inner) = socket.upgrade() else { return };
        let socket = ServerSocket { inner };
        let action = super::OutboundAction {
            socket: socket.clone(),
            channel: String::from(p.channel()),
            data: p.data().cloned(),
        };
        match mw(action).await {
            Ok(a) if a.channel == p.channel() && a.data.as_ref() == p.data() => {
                socket.inner.out.text(p.frame_bytes().clone());
            }
            Ok(a) => {
                if let Ok(frame) = packet::encode_publish_at(&a.channel, a.data.as_ref(), p.position()) {
                    socket.inner.out.text(frame);
                }
            }
            Err(b) => {
                let e = b.error.clone().unwrap_or_else(|| b.client_error("outbound", "publishOut"));
                socket.inner.listeners.write("error", SocketEvent::Error(e.clone()));
                socket
                    .inner
                    .server
                    .emit("warning", ServerEvent::Warning { error: e, socket: Some(socket.clone()) });
            }
        }
    }
}

/// Points `timer` at `deadline`, keeping it when it already is.
fn arm(server: &ServerShared, timer: &mut Option<(Duration, BoxFuture<()>)>, deadline: Option<Duration>) {
    match deadline {
        None => *timer = None,
        Some(d) if timer.as_ref().is_some_and(|(t, _)| *t == d) => {}
        Some(d) => *timer = Some((d, server.runtime.sleep_until(server.epoch + d))),
    }
}

pub(super) struct Driver {
    pub(super) server: Arc<ServerShared>,
    pub(super) socket: ServerSocket,
    pub(super) open: bool,
    /// Frames and events handled since the driver last waited or yielded (see [`BURST`]).
    pub(super) burst: u32,
}

impl Driver {
    /// Moves the connection's frames to the outbound queue.
    pub(super) fn flush(&self) {
        let mut conn = self.socket.inner.conn.lock();
        while let Some(t) = conn.poll_transmit() {
            self.socket.inner.out.transmit(t);
        }
    }

    pub(super) fn respond(&self, cid: Option<u64>, result: Result<(), RemoteError>) {
        self.respond_data(cid, result.map(|()| None));
    }

    /// [`respond`](Self::respond) with the response's data.
    pub(super) fn respond_data(&self, cid: Option<u64>, result: Result<Option<Value>, RemoteError>) {
        let Some(cid) = cid else { return };
        let frame = match result {
            Ok(data) => packet::encode_response(cid, data.as_ref()).unwrap_or_default(),
            Err(e) => packet::encode_error(cid, &e),
        };
        self.socket.inner.out.text(frame);
    }

    /// The `message` listener event and the inbound raw middleware; false when it blocked the
    /// message.
    pub(super) async fn inbound_raw(&self, msg: &Message) -> bool {
        let inner = &self.socket.inner;
        let mw = inner.middleware.inbound_raw.clone();
        if mw.is_none() && inner.listeners.consumer_count("message") == 0 {
            return true;
        }
        let text = match msg {
            Message::Text(t) => String::from(t.as_str()),
            Message::Binary(b) => String::from_utf8_lossy(b).into_owned(),
            _ => return true,
        };
        if let Some(mw) = mw
            && let Err(blocked) =
                mw(super::RawAction { socket: self.socket.clone(), message: text.clone() }).await
        {
            self.blocked(&blocked, "inboundRaw", "message");
            return false;
        }
        inner.listeners.write("message", SocketEvent::Message(text));
        true
    }

    /// Runs the inbound middleware on `action`.
    pub(super) async fn inbound(&self, action: InboundAction) -> Result<InboundAction, Blocked> {
        match self.socket.inner.middleware.inbound.clone() {
            Some(mw) => {
                let kind = action.type_name();
                mw(action).await.inspect_err(|b| self.blocked(b, "inbound", kind))
            }
            None => Ok(action),
        }
    }

    /// Reports a block on the server (`middlewareEmitFailures`): the original error, or the
    /// generic one.
    pub(super) fn blocked(&self, blocked: &Blocked, middleware: &str, action: &str) {
        let e = blocked.error.clone().unwrap_or_else(|| blocked.client_error(middleware, action));
        self.warn(e);
    }

    /// Verifies a token from the client and runs the `authenticate` middleware on it:
    /// `(the token string, Ok(Some(claims)) | Ok(None) when there was none | Err(Some(error)))`.
    #[allow(clippy::type_complexity)]
    pub(super) async fn verify(
        &self,
        token: Option<Value>,
    ) -> (Option<String>, Result<Option<Value>, Option<RemoteError>>) {
        let (signed, claims) = match token {
            None | Some(Value::Null) => return (None, Ok(None)),
            Some(Value::String(t)) => match self.server.auth.verify(&t) {
                Ok(claims) => (t, claims),
                Err(e) => return (Some(t), Err(Some(e))),
            },
            Some(_) => {
                // ag-auth's refusal, mapped by socketcluster-server to AuthTokenError.
                let e = RemoteError::new("AuthTokenError", "Invalid token format - Token must be a string")
                    .with("isBadToken", true);
                return (None, Err(Some(e)));
            }
        };
        let action = InboundAction::Authenticate {
            socket: self.socket.clone(),
            signed_auth_token: signed.clone(),
            auth_token: claims.clone(),
        };
        match self.inbound(action).await {
            Ok(_) => (Some(signed), Ok(Some(claims))),
            Err(b) => (Some(signed), Err(Some(b.client_error("inbound", "authenticate")))),
        }
    }

    /// Hands an invoke to its procedure's consumers, unless the socket has too many waiting.
    /// When later packets of its batch frame wait behind it, waits (at most
    /// [`batch_answer_wait`](super::ServerOptions::batch_answer_wait)) for its answer, so that
    /// prompt answers leave in packet order.
    pub(super) async fn invoke(&self, procedure: &str, data: Option<Value>, cid: u64) {
        let wait = self.server.options.batch_answer_wait;
        let batched = !wait.is_zero() && self.socket.inner.conn.lock().has_events();
        let Some(answered) = self.request(procedure, data, cid, batched) else { return };
        let sleep = self.server.runtime.sleep_until(Instant::now() + wait);
        futures::future::select(core::pin::pin!(answered.recv()), sleep).await;
    }

    /// Hands an invoke to its procedure's consumers; with `watch`, returns what ends when it is
    /// answered or dropped.
    fn request(
        &self,
        procedure: &str,
        data: Option<Value>,
        cid: u64,
        watch: bool,
    ) -> Option<async_channel::Receiver<()>> {
        let inner = &self.socket.inner;
        if let Some(max) = self.server.options.max_pending_requests
            && inner.pending_requests.load(Ordering::Acquire) >= max
        {
            let e = RemoteError::new(
                "ResourceLimitError",
                alloc::format!("Socket {} has {max} requests waiting for an answer", inner.id),
            );
            self.respond(Some(cid), Err(e));
            return None;
        }
        let mut req = Request::new(procedure, data, cid, inner.clone()).counted(&inner.pending_requests);
        let mut answered = None;
        if watch {
            let (r, rx) = req.watched();
            (req, answered) = (r, Some(rx));
        }
        if self.server.procedures.consumer_count(procedure) > 0 {
            self.server.procedures.write(procedure, (self.socket.clone(), req.clone()));
        }
        inner.procedures.write(procedure, req);
        answered
    }

    pub(super) fn warn(&self, error: RemoteError) {
        self.socket.inner.listeners.write("error", SocketEvent::Error(error.clone()));
        self.server.emit("warning", ServerEvent::Warning { error, socket: Some(self.socket.clone()) });
    }

    /// Handles the connection's events in order; true once the socket is closed and cleaned up.
    async fn process_events(&mut self) -> bool {
        loop {
            if self.burst >= BURST {
                self.burst = 0;
                yield_now().await;
            }
            let ev = self.socket.inner.conn.lock().poll_event();
            let Some(ev) = ev else { return false };
            self.burst += 1;
            if self.handle(ev).await {
                return true;
            }
            self.flush();
        }
    }
}
