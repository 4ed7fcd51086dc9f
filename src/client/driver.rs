//! The client's connection task: connection attempts, the sans-IO connection of each, the close
//! sequence and reconnect scheduling.
//!
//! The state the application sees lives in `ClientInner::state`, and every change of it is made
//! under that lock together with its events, whichever side makes it: [`Client::connect`] and
//! [`Client::disconnect`](super::Client::disconnect) on the caller's thread, the handshake's
//! completion and the closes the connection sees (the server's close frame, a lost connection,
//! timeouts) in this task. So the order of events does not depend on the runtime or on which
//! thread runs what. Each attempt has a number; when the application ended an attempt, this task
//! only closes its WebSocket (with the application's code) and reports nothing more for it.
//!
//! [`Client::connect`]: super::Client::connect

use alloc::boxed::Box;
use alloc::string::String;
use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;
use core::pin::pin;
use core::task::Poll;
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::Message;
use futures::{Stream, StreamExt};
use serde_json::Value;

use super::{AuthState, Buffered, ChannelEvent, ClientEvent, ClientInner, ClientState, State, WsStream};
use crate::outbox::{Backend, Outbox, Writer};
use crate::protocol::channels::ChannelState;
use crate::protocol::client::{ClientConfig, ClientConnection, ClientEvent as ConnEvent};
use crate::protocol::close::{self, Reconnect};
use crate::protocol::{AbortKind, Error, RemoteError, packet};
use crate::request::{Request, Respond};

impl Respond for Outbox {
    fn respond(&self, frame: String) -> bool {
        self.text(frame)
    }
}

impl ClientInner {
    /// `connect()`: from closed, starts an attempt now (state and `connecting` event) and wakes
    /// the task to run it.
    pub(super) fn connect(&self) {
        let started = start(self, &mut self.state.lock());
        if started {
            self.wake_driver();
        }
    }

    /// Tells the connection task to look at the state again.
    pub(super) fn wake_driver(&self) {
        let _ = self.wake.try_send(());
    }
}

/// Starts a new attempt when closed (cancelling a scheduled reconnect): `Connecting`, a new
/// attempt number, the `connecting` event. Returns whether it did.
fn start(inner: &ClientInner, st: &mut State) -> bool {
    if st.status != ClientState::Closed {
        return false;
    }
    st.status = ClientState::Connecting;
    st.attempt += 1;
    st.reconnect_at = None;
    emit(inner, "connecting", ClientEvent::Connecting);
    true
}

fn emit(inner: &ClientInner, name: &str, ev: ClientEvent) {
    if inner.all_events.consumer_count() > 0 {
        inner.all_events.write(ev.clone());
    }
    inner.listeners.write(name, ev);
}

fn emit_channel(inner: &ClientInner, channel: &str, name: &str, ev: ChannelEvent) {
    inner.channel_events.write(&alloc::format!("{channel}/{name}"), ev);
}

/// Reports a channel state change with SocketCluster's events.
pub(super) fn state_changed(inner: &ClientInner, channel: &str, old: ChannelState, new: ChannelState) {
    let ch = String::from(channel);
    emit_channel(inner, channel, "subscribeStateChange", ChannelEvent::SubscribeStateChange { old, new });
    emit(inner, "subscribeStateChange", ClientEvent::SubscribeStateChange { channel: ch.clone(), old, new });
    if old == ChannelState::Subscribed {
        emit_channel(inner, channel, "unsubscribe", ChannelEvent::Unsubscribe);
        emit(inner, "unsubscribe", ClientEvent::Unsubscribe { channel: ch });
    }
}

/// Sends `#subscribe` for the channels that are due, if the connection is open.
pub(super) fn send_due_subscriptions(inner: &ClientInner) {
    send_due(&mut inner.state.lock());
}

fn send_due(st: &mut State) {
    if st.status != ClientState::Open {
        return;
    }
    let Some(out) = st.out.clone() else { return };
    let due = st.channels.due(st.auth_state == AuthState::Authenticated);
    for name in due {
        let cid = st.calls.next_cid();
        let payload = st.channels.payload(&name);
        if let Ok(frame) = packet::encode_client_invoke("#subscribe", Some(&payload), cid) {
            st.channels.sent(&name, cid);
            out.text(frame);
        }
    }
}

/// Sets the auth state (`authStateChange` when it changed); returns the old one.
fn set_auth_state(inner: &ClientInner, st: &mut State, new: AuthState) -> AuthState {
    let old = core::mem::replace(&mut st.auth_state, new);
    if old != new {
        emit(inner, "authStateChange", ClientEvent::AuthStateChange { old, new });
    }
    old
}

pub(super) fn set_token(inner: &ClientInner, token: String) {
    inner.state.lock().signed_token = Some(token.clone());
    if let Err(e) = inner.tokens.save(&token) {
        emit(inner, "error", ClientEvent::Error(RemoteError::new("AuthError", e)));
    }
    let mut st = inner.state.lock();
    set_auth_state(inner, &mut st, AuthState::Authenticated);
    emit(inner, "authenticate", ClientEvent::Authenticate { signed_auth_token: token });
    send_due(&mut st);
}

pub(super) fn clear_token(inner: &ClientInner) {
    inner.state.lock().signed_token = None;
    inner.tokens.remove();
    forget_token(inner, &mut inner.state.lock());
}

/// The state side of dropping the token (the store is done by the caller).
fn forget_token(inner: &ClientInner, st: &mut State) {
    st.signed_token = None;
    // As in SocketCluster: `deauthenticate` only when leaving the authenticated state, not for a
    // stored token the server never accepted (a rejected handshake token).
    if set_auth_state(inner, st, AuthState::Unauthenticated) == AuthState::Authenticated {
        emit(inner, "deauthenticate", ClientEvent::Deauthenticate);
    }
}

/// Whether `attempt` is the one the application sees (not ended by it or by this task).
fn is_current(st: &State, attempt: u64) -> bool {
    st.attempt == attempt && st.status != ClientState::Closed
}

/// How a connection ended.
#[derive(PartialEq, Eq)]
enum End {
    /// The attempt is over; the task goes on.
    Done,
    /// The last handle was dropped: the task ends.
    HandlesGone,
}

/// The client's task: runs the attempts the state asks for, and starts scheduled reconnects.
pub(super) async fn run(weak: Weak<ClientInner>, wake: async_channel::Receiver<()>) {
    // The last attempt this task ran.
    let mut ran = 0;
    loop {
        let (runtime, next, reconnect_at) = {
            let Some(inner) = weak.upgrade() else { return };
            let mut st = inner.state.lock();
            if st.status == ClientState::Closed && st.reconnect_at.is_some_and(|t| t <= Instant::now()) {
                start(&inner, &mut st);
            }
            let next = (st.status == ClientState::Connecting && st.attempt != ran).then_some(st.attempt);
            (inner.runtime.clone(), next, st.reconnect_at)
        };
        if let Some(attempt) = next {
            ran = attempt;
            let Some(inner) = weak.upgrade() else { return };
            if connection(&inner, attempt, &wake).await == End::HandlesGone {
                return;
            }
            continue;
        }
        // Closed: wait for `connect()` (or a call), or the reconnect time. The task holds no
        // strong reference meanwhile.
        let woken = match reconnect_at {
            Some(at) => match futures::future::select(pin!(wake.recv()), runtime.sleep_until(at)).await {
                futures::future::Either::Left((r, _)) => r.is_ok(),
                futures::future::Either::Right(_) => true,
            },
            None => wake.recv().await.is_ok(),
        };
        if !woken {
            return; // the last handle is gone
        }
    }
}

enum Opening {
    Opened(Result<(super::WsSink, WsStream), async_tungstenite::tungstenite::Error>),
    TimedOut,
    Woken(bool),
}

enum Step {
    Frame(Option<Result<Message, async_tungstenite::tungstenite::Error>>),
    Woken(bool),
    Timer,
}

/// One connection attempt, from open to close.
async fn connection(inner: &Arc<ClientInner>, attempt: u64, wake: &async_channel::Receiver<()>) -> End {
    inner.state.lock().ended.retain(|e| e.0 >= attempt);
    let o = &inner.options;
    let epoch = Instant::now();
    let now = || epoch.elapsed();
    let mut conn = ClientConnection::new(
        now(),
        ClientConfig {
            connect_timeout: o.connect_timeout,
            ack_timeout: o.ack_timeout,
            ping_timeout_disabled: o.ping_timeout_disabled,
            protocol_version: o.protocol_version,
        },
    );
    let mut wakes = pin!(wake.clone());
    let config =
        async_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(16 * 1024);
    let mut open = inner.connector.connect(&o.url, config);
    let mut deadline = inner.runtime.sleep_until(epoch + o.connect_timeout);
    // Open the WebSocket, unless the attempt times out or the application ends it first.
    let opened = loop {
        let step = core::future::poll_fn(|cx| {
            if let Poll::Ready(r) = open.as_mut().poll(cx) {
                return Poll::Ready(Opening::Opened(r));
            }
            if deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Opening::TimedOut);
            }
            if let Poll::Ready(w) = wakes.as_mut().poll_next(cx) {
                return Poll::Ready(Opening::Woken(w.is_some()));
            }
            Poll::Pending
        })
        .await;
        match step {
            Opening::Opened(r) => break r,
            Opening::TimedOut => {
                conn.handle_close(close::CONNECT_TIMEOUT, "");
                return finish(inner, attempt, &mut conn, End::Done);
            }
            // Ended by `disconnect()`: dropping `open` drops the connection being made.
            Opening::Woken(true) if !is_current(&inner.state.lock(), attempt) => return End::Done,
            Opening::Woken(true) => {}
            Opening::Woken(false) => {
                conn.handle_close(close::NORMAL, "");
                return finish(inner, attempt, &mut conn, End::HandlesGone);
            }
        }
    };
    drop(open);
    let (sink, mut frames) = match opened {
        Ok(halves) => halves,
        Err(e) => {
            // A failed TLS handshake says why (certificate, host name) before the 1006 close, as
            // Node's WebSocket reports its TLS error first.
            if let Some(why) = tls_failure(&e) {
                let st = inner.state.lock();
                if is_current(&st, attempt) {
                    emit(inner, "error", ClientEvent::Error(RemoteError::new("TLSError", why)));
                }
            }
            conn.handle_close(close::ABNORMAL, "");
            return finish(inner, attempt, &mut conn, End::Done);
        }
    };
    // `writer_done` fails once the connection's writing is over (the close frame is out).
    let (out, writer_done) = Outbox::new(&Writer::spawn(&*inner.runtime), Backend::Sink(sink), None, None);
    // The store is the source of truth (another process may have written the file).
    let token = inner.tokens.load();
    let cid = inner.state.lock().calls.next_cid();
    conn.handle_open(now(), cid, token.as_deref());
    let mut end = End::Done;
    let mut timer: Option<(Duration, crate::runtime::BoxFuture<()>)> = None;
    loop {
        // Ended by `disconnect()`: close the WebSocket with its code; nothing more is reported.
        if let Some((code, reason)) = ended_by_application(inner, attempt) {
            conn.close(code, &reason);
        }
        while let Some(t) = conn.poll_transmit() {
            out.transmit(t);
        }
        while let Some(ev) = conn.poll_event() {
            if let ConnEvent::Closed { code, reason, was_open } = ev {
                while let Some(t) = conn.poll_transmit() {
                    out.transmit(t);
                }
                out.shut();
                {
                    let mut st = inner.state.lock();
                    if is_current(&st, attempt) {
                        close_sequence(inner, &mut st, code, reason, was_open);
                    }
                }
                // Let the close frame reach the wire (bounded), then stop the writer; the task
                // goes on meanwhile (a new attempt need not wait for the old one's writing).
                let runtime = inner.runtime.clone();
                inner.runtime.spawn(Box::pin(async move {
                    let done = writer_done.recv();
                    let done = pin!(done);
                    futures::future::select(
                        done,
                        runtime.sleep_until(Instant::now() + Duration::from_secs(1)),
                    )
                    .await;
                    // A server that does not read must not keep the writing alive.
                    out.kill();
                }));
                return end;
            }
            handle(inner, attempt, &out, ev, token.as_deref());
            while let Some(t) = conn.poll_transmit() {
                out.transmit(t);
            }
        }
        match conn.poll_timeout() {
            None => timer = None,
            Some(d) if timer.as_ref().is_some_and(|(t, _)| *t == d) => {}
            Some(d) => timer = Some((d, inner.runtime.sleep_until(epoch + d))),
        }
        let step = core::future::poll_fn(|cx| {
            if let Poll::Ready(f) = frames.poll_next_unpin(cx) {
                return Poll::Ready(Step::Frame(f));
            }
            if let Poll::Ready(w) = wakes.as_mut().poll_next(cx) {
                return Poll::Ready(Step::Woken(w.is_some()));
            }
            if let Some((_, t)) = timer.as_mut()
                && t.as_mut().poll(cx).is_ready()
            {
                return Poll::Ready(Step::Timer);
            }
            Poll::Pending
        })
        .await;
        match step {
            Step::Frame(Some(Ok(Message::Text(t)))) => {
                if has_message_consumers(inner) {
                    emit(inner, "message", ClientEvent::Message(String::from(t.as_str())));
                }
                conn.handle_text(now(), t.as_str());
            }
            Step::Frame(Some(Ok(Message::Binary(b)))) => {
                if has_message_consumers(inner) {
                    emit(inner, "message", ClientEvent::Message(String::from_utf8_lossy(&b).into_owned()));
                }
                conn.handle_binary(now(), &b);
            }
            Step::Frame(Some(Ok(Message::Close(frame)))) => {
                let (code, reason) = frame.as_ref().map_or((close::NO_STATUS, String::new()), |f| {
                    (u16::from(f.code), String::from(f.reason.as_str()))
                });
                conn.handle_close(code, &reason);
            }
            Step::Frame(Some(Ok(_))) => {}
            Step::Frame(Some(Err(_)) | None) => conn.handle_close(close::ABNORMAL, ""),
            // Looked at at the top of the loop.
            Step::Woken(true) => {}
            Step::Woken(false) => {
                end = End::HandlesGone;
                conn.close(close::NORMAL, "");
            }
            Step::Timer => {
                timer = None;
                conn.handle_timeout(now());
            }
        }
    }
}

fn has_message_consumers(inner: &ClientInner) -> bool {
    inner.listeners.consumer_count("message") > 0 || inner.all_events.consumer_count() > 0
}

/// When the application ended `attempt`: the close code and reason it asked for.
fn ended_by_application(inner: &ClientInner, attempt: u64) -> Option<(u16, String)> {
    let mut st = inner.state.lock();
    if is_current(&st, attempt) {
        return None;
    }
    let i = st.ended.iter().position(|e| e.0 == attempt);
    Some(i.map_or((close::NORMAL, String::new()), |i| {
        let (_, code, reason) = st.ended.swap_remove(i);
        (code, reason)
    }))
}

/// The attempt failed before a WebSocket existed.
/// The reason of a failed TLS handshake, if that is what `e` is.
fn tls_failure(e: &async_tungstenite::tungstenite::Error) -> Option<String> {
    #[cfg(feature = "tls")]
    if let async_tungstenite::tungstenite::Error::Io(io) = e
        && let Some(why) = io.get_ref().and_then(|r| r.downcast_ref::<crate::tls::HandshakeFailed>())
    {
        return Some(why.0.clone());
    }
    let _ = e;
    None
}

fn finish(inner: &ClientInner, attempt: u64, conn: &mut ClientConnection, end: End) -> End {
    if let Some(ConnEvent::Closed { code, reason, was_open }) = conn.poll_event() {
        let mut st = inner.state.lock();
        if is_current(&st, attempt) {
            close_sequence(inner, &mut st, code, reason, was_open);
        }
    }
    end
}

fn handle(inner: &Arc<ClientInner>, attempt: u64, out: &Outbox, ev: ConnEvent, token: Option<&str>) {
    if !is_current(&inner.state.lock(), attempt) {
        return;
    }
    match ev {
        ConnEvent::Connected { id, ping_timeout, is_authenticated, auth_error } => {
            let token = token.filter(|_| is_authenticated);
            if token.is_none() {
                inner.tokens.remove();
            }
            // One step, as socketcluster-client's handshake handler: open, auth state, the due
            // subscriptions, `connect`, then the buffered calls. Nobody can send in between.
            let mut st = inner.state.lock();
            if !is_current(&st, attempt) {
                return;
            }
            st.status = ClientState::Open;
            st.id = Some(id.clone());
            st.out = Some(out.clone());
            st.connect_attempts = 0;
            match token {
                Some(t) => {
                    st.signed_token = Some(String::from(t));
                    set_auth_state(inner, &mut st, AuthState::Authenticated);
                    emit(
                        inner,
                        "authenticate",
                        ClientEvent::Authenticate { signed_auth_token: String::from(t) },
                    );
                }
                // Also without a token: leaving the authenticated state emits `deauthenticate`.
                None => forget_token(inner, &mut st),
            }
            if inner.options.auto_subscribe_on_connect {
                send_due(&mut st);
            }
            emit(
                inner,
                "connect",
                ClientEvent::Connect {
                    id,
                    ping_timeout: ping_timeout.as_millis() as u64,
                    is_authenticated,
                    auth_error,
                },
            );
            flush_buffer(&mut st, out);
        }
        ConnEvent::Ping => {}
        ConnEvent::Publish { channel, data, position } => {
            let mut st = inner.state.lock();
            if is_current(&st, attempt) && st.channels.contains(&channel) {
                if let Some(p) = position {
                    st.channels.observed(&channel, p);
                }
                inner.channel_data.write(&channel, data);
            }
        }
        ConnEvent::KickOut { channel, message } => {
            let change = inner.state.lock().channels.kick_out(&channel);
            let message = message.unwrap_or(Value::Null);
            if let Some(c) = change {
                emit_channel(inner, &channel, "kickOut", ChannelEvent::KickOut(message.clone()));
                emit(inner, "kickOut", ClientEvent::KickOut { channel: channel.clone(), message });
                state_changed(inner, &channel, c.old, c.new);
            }
        }
        ConnEvent::SetAuthToken { token, cid } => {
            set_token(inner, token);
            if let Some(cid) = cid
                && let Ok(frame) = packet::encode_response::<Value>(cid, None)
            {
                out.text(frame);
            }
        }
        ConnEvent::RemoveAuthToken => clear_token(inner),
        ConnEvent::Transmit { event, data } => {
            inner.receivers.write(&event, data);
        }
        ConnEvent::Invoke { event, data, cid } => {
            let req = Request::new(&event, data, cid, Arc::new(out.clone()));
            inner.procedures.write(&event, req);
        }
        ConnEvent::Response { rid, result } => {
            let mut st = inner.state.lock();
            if st.channels.is_subscribe_call(rid) {
                match result {
                    Ok(data) => {
                        let change = st.channels.acked(rid);
                        let ack = crate::protocol::position::parse_ack(data.as_ref());
                        if let (Some(c), Some(ack)) = (&change, &ack) {
                            st.channels.observed(&c.channel, ack.position.clone());
                        }
                        drop(st);
                        if let Some(c) = change {
                            if let Some(result) = ack.and_then(|a| a.recovery) {
                                emit_channel(
                                    inner,
                                    &c.channel,
                                    "recover",
                                    ChannelEvent::Recover(result.clone()),
                                );
                                emit(
                                    inner,
                                    "recover",
                                    ClientEvent::Recover { channel: c.channel.clone(), result },
                                );
                            }
                            state_changed(inner, &c.channel, c.old, c.new);
                            emit_channel(inner, &c.channel, "subscribe", ChannelEvent::Subscribe);
                            emit(inner, "subscribe", ClientEvent::Subscribe { channel: c.channel });
                        }
                    }
                    Err(e) => {
                        let change = st.channels.failed(rid);
                        drop(st);
                        if let Some(c) = change {
                            state_changed(inner, &c.channel, c.old, c.new);
                            emit_channel(
                                inner,
                                &c.channel,
                                "subscribeFail",
                                ChannelEvent::SubscribeFail(e.clone()),
                            );
                            emit(
                                inner,
                                "subscribeFail",
                                ClientEvent::SubscribeFail { channel: c.channel, error: e },
                            );
                        }
                    }
                }
            } else if let Some((_, tx)) = st.pending.remove(&rid) {
                let _ = tx.try_send(result.map_err(Error::Remote));
            }
        }
        ConnEvent::Raw(v) => emit(inner, "raw", ClientEvent::Raw(v)),
        ConnEvent::Closed { .. } => {}
    }
}

/// Sends what was buffered while connecting, in order.
fn flush_buffer(st: &mut State, out: &Outbox) {
    while let Some(b) = st.buffer.pop_front() {
        match b {
            Buffered::Transmit { event, data, done } => {
                if done.is_closed() {
                    continue; // timed out while buffered
                }
                let ok = packet::encode_transmit(&event, data.as_ref()).is_ok_and(|f| out.text(f));
                let _ = done.try_send(if ok {
                    Ok(())
                } else {
                    Err(bad(&event, AbortKind::Disconnect, close::ABNORMAL, ""))
                });
            }
            Buffered::Invoke { event, data, reply } => {
                if reply.is_closed() {
                    continue;
                }
                let cid = st.calls.next_cid();
                match packet::encode_client_invoke(&event, data.as_ref(), cid) {
                    Ok(frame) => {
                        if out.text(frame) {
                            st.pending.insert(cid, (event, reply));
                        } else {
                            let _ =
                                reply.try_send(Err(bad(&event, AbortKind::Disconnect, close::ABNORMAL, "")));
                        }
                    }
                    Err(e) => {
                        let _ = reply.try_send(Err(Error::InvalidArguments(alloc::format!("{e}"))));
                    }
                }
            }
        }
    }
}

fn bad(event: &str, kind: AbortKind, code: u16, reason: &str) -> Error {
    Error::BadConnection { event: String::from(event), kind, code, reason: String::from(reason) }
}

/// SocketCluster's close sequence on the client, with the state locked (by `disconnect()` or
/// by this task): closed; calls in flight fail; subscribed channels go back to pending
/// (`unsubscribe`); `connectAbort` or `disconnect`, `close`, `error` (unless 1000/1001);
/// buffered calls fail; then the reconnect is scheduled as the code asks.
pub(super) fn close_sequence(inner: &ClientInner, st: &mut State, code: u16, reason: String, was_open: bool) {
    let kind = if was_open { AbortKind::Disconnect } else { AbortKind::ConnectAbort };
    st.status = ClientState::Closed;
    st.id = None;
    st.out = None;
    for (_, (event, tx)) in st.pending.drain() {
        let _ = tx.try_send(Err(bad(&event, kind, code, &reason)));
    }
    for c in st.channels.connection_lost() {
        state_changed(inner, &c.channel, c.old, c.new);
    }
    if was_open {
        emit(inner, "disconnect", ClientEvent::Disconnect { code, reason: reason.clone() });
    } else {
        emit(inner, "connectAbort", ClientEvent::ConnectAbort { code, reason: reason.clone() });
    }
    emit(inner, "close", ClientEvent::Close { code, reason: reason.clone() });
    if !close::is_ignored_status(code) {
        // `reason` is the code's text when the wire had none: the message is built from the
        // wire's reason (the table text alone for "Socket hung up", not "... and reason: ...").
        let wire = if close::text(code) == Some(reason.as_str()) { "" } else { reason.as_str() };
        let e = RemoteError::new("SocketProtocolError", close::protocol_error_message(code, wire))
            .with("code", code);
        emit(inner, "error", ClientEvent::Error(e));
    }
    let buffered: Vec<_> = st.buffer.drain(..).collect();
    for b in buffered {
        match b {
            Buffered::Transmit { event, done, .. } => {
                let _ = done.try_send(Err(bad(&event, kind, code, &reason)));
            }
            Buffered::Invoke { event, reply, .. } => {
                let _ = reply.try_send(Err(bad(&event, kind, code, &reason)));
            }
        }
    }
    st.reconnect_at = None;
    if !inner.options.auto_reconnect {
        return;
    }
    let attempts = st.connect_attempts;
    let delay = match close::reconnect_policy(code) {
        Reconnect::Never => None,
        Reconnect::Immediately if attempts == 0 => Some(Duration::ZERO),
        _ => Some(inner.options.backoff.delay(attempts, fastrand::f64())),
    };
    if let Some(d) = delay {
        st.connect_attempts = attempts.saturating_add(1);
        st.reconnect_at = Some(Instant::now() + d);
    }
}
