//! The client's connection task: connection attempts, the sans-IO connection of each, the close
//! sequence and reconnect scheduling.

use alloc::string::String;
use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;
use core::task::Poll;
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::Message;
use futures::{Stream, StreamExt};
use serde_json::Value;

use super::{AuthState, Buffered, ChannelEvent, ClientEvent, ClientInner, ClientState, Command, WsStream};
use crate::outbox::{Backend, Outbox, Writer};
use crate::protocol::channels::ChannelState;
use crate::protocol::client::{ClientConfig, ClientConnection, ClientEvent as ConnEvent};
use crate::protocol::close::{self, Reconnect};
use crate::protocol::{AbortKind, Error, RemoteError, packet};
use crate::request::{Request, Respond};
use crate::runtime::BoxFuture;

impl Respond for Outbox {
    fn respond(&self, frame: String) -> bool {
        self.text(frame)
    }
}

fn emit(inner: &ClientInner, name: &str, ev: ClientEvent) {
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
    let mut st = inner.state.lock();
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
fn set_auth_state(inner: &ClientInner, new: AuthState) -> AuthState {
    let old = core::mem::replace(&mut inner.state.lock().auth_state, new);
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
    set_auth_state(inner, AuthState::Authenticated);
    emit(inner, "authenticate", ClientEvent::Authenticate { signed_auth_token: token });
    send_due_subscriptions(inner);
}

pub(super) fn clear_token(inner: &ClientInner) {
    inner.state.lock().signed_token = None;
    inner.tokens.remove();
    // As in SocketCluster: `deauthenticate` only when leaving the authenticated state, not for a
    // stored token the server never accepted (a rejected handshake token).
    if set_auth_state(inner, AuthState::Unauthenticated) == AuthState::Authenticated {
        emit(inner, "deauthenticate", ClientEvent::Deauthenticate);
    }
}

enum Step {
    Frame(Option<Result<Message, async_tungstenite::tungstenite::Error>>),
    Command(Option<Command>),
    Timer,
}

/// The client's task: waits for a reason to connect, runs a connection, schedules reconnects.
pub(super) async fn run(weak: Weak<ClientInner>, commands: async_channel::Receiver<Command>) {
    let mut reconnect_at: Option<Instant> = None;
    loop {
        // Closed: wait for `connect()` (or a call), or the reconnect timer.
        let runtime = match weak.upgrade() {
            Some(i) => i.runtime.clone(),
            None => return,
        };
        let timer: Option<BoxFuture<()>> = reconnect_at.map(|at| runtime.sleep_until(at));
        let go = match timer {
            Some(t) => match futures::future::select(core::pin::pin!(commands.recv()), t).await {
                futures::future::Either::Left((c, _)) => c.ok(),
                futures::future::Either::Right(_) => Some(Command::Connect),
            },
            None => commands.recv().await.ok(),
        };
        let Some(cmd) = go else { return };
        let Some(inner) = weak.upgrade() else { return };
        match cmd {
            Command::Disconnect(..) => {
                // While closed: cancels a scheduled reconnect.
                reconnect_at = None;
                inner.state.lock().status = ClientState::Closed;
                continue;
            }
            Command::Connect => {}
        }
        reconnect_at = None;
        let code = connection(&inner, &commands).await;
        // Reconnect?
        if !inner.options.auto_reconnect {
            continue;
        }
        let mut st = inner.state.lock();
        let attempts = st.connect_attempts;
        let delay = match close::reconnect_policy(code) {
            Reconnect::Never => None,
            Reconnect::Immediately if attempts == 0 => Some(Duration::ZERO),
            _ => Some(inner.options.backoff.delay(attempts, fastrand::f64())),
        };
        if let Some(d) = delay {
            st.connect_attempts = attempts.saturating_add(1);
            reconnect_at = Some(Instant::now() + d);
        }
    }
}

/// One connection attempt, from open to close. Returns the close code.
async fn connection(inner: &Arc<ClientInner>, commands: &async_channel::Receiver<Command>) -> u16 {
    let o = &inner.options;
    inner.state.lock().status = ClientState::Connecting;
    emit(inner, "connecting", ClientEvent::Connecting);
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
    let config =
        async_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(16 * 1024);
    let open = inner.connector.connect(&o.url, config);
    let deadline = inner.runtime.sleep_until(epoch + o.connect_timeout);
    let opened = futures::future::select(open, deadline).await;
    let (sink, mut frames): (_, WsStream) = match opened {
        futures::future::Either::Left((Ok(halves), _)) => halves,
        futures::future::Either::Left((Err(_), _)) => {
            conn.handle_close(close::ABNORMAL, "");
            return finish(inner, &mut conn);
        }
        futures::future::Either::Right(_) => {
            conn.handle_close(close::CONNECT_TIMEOUT, "");
            return finish(inner, &mut conn);
        }
    };
    // `writer_done` fails once the connection's writing is over (the close frame is out).
    let (out, writer_done) = Outbox::new(&Writer::spawn(&*inner.runtime), Backend::Sink(sink), None, None);
    // The store is the source of truth (another process may have written the file).
    let token = inner.tokens.load();
    let cid = inner.state.lock().calls.next_cid();
    conn.handle_open(now(), cid, token.as_deref());
    let mut timer: Option<(Duration, BoxFuture<()>)> = None;
    let mut cmds = core::pin::pin!(commands.clone());
    loop {
        while let Some(t) = conn.poll_transmit() {
            out.transmit(t);
        }
        while let Some(ev) = conn.poll_event() {
            if let ConnEvent::Closed { .. } = ev {
                while let Some(t) = conn.poll_transmit() {
                    out.transmit(t);
                }
                out.shut();
                let result = closed(inner, ev);
                // Let the close frame reach the wire (bounded), then stop the writer.
                let done = writer_done.recv();
                let done = core::pin::pin!(done);
                futures::future::select(
                    done,
                    inner.runtime.sleep_until(Instant::now() + Duration::from_secs(1)),
                )
                .await;
                // A server that does not read must not keep the writing alive.
                out.kill();
                return result;
            }
            handle(inner, &out, ev, token.as_deref());
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
            if let Poll::Ready(c) = cmds.as_mut().poll_next(cx) {
                return Poll::Ready(Step::Command(c));
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
                if inner.listeners.consumer_count("message") > 0 {
                    emit(inner, "message", ClientEvent::Message(String::from(t.as_str())));
                }
                conn.handle_text(now(), t.as_str());
            }
            Step::Frame(Some(Ok(Message::Binary(b)))) => {
                if inner.listeners.consumer_count("message") > 0 {
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
            Step::Command(Some(Command::Disconnect(code, reason))) => conn.close(code, &reason),
            Step::Command(Some(Command::Connect)) => {}
            Step::Command(None) => conn.close(close::NORMAL, ""),
            Step::Timer => {
                timer = None;
                conn.handle_timeout(now());
            }
        }
    }
}

/// The attempt failed before a WebSocket existed.
fn finish(inner: &Arc<ClientInner>, conn: &mut ClientConnection) -> u16 {
    match conn.poll_event() {
        Some(ev @ ConnEvent::Closed { .. }) => closed(inner, ev),
        _ => close::ABNORMAL,
    }
}

fn handle(inner: &Arc<ClientInner>, out: &Outbox, ev: ConnEvent, token: Option<&str>) {
    match ev {
        ConnEvent::Connected { id, ping_timeout, is_authenticated, auth_error } => {
            {
                let mut st = inner.state.lock();
                st.status = ClientState::Open;
                st.id = Some(id.clone());
                st.out = Some(out.clone());
                st.connect_attempts = 0;
            }
            match (is_authenticated, token) {
                (true, Some(t)) => {
                    inner.state.lock().signed_token = Some(String::from(t));
                    set_auth_state(inner, AuthState::Authenticated);
                    emit(
                        inner,
                        "authenticate",
                        ClientEvent::Authenticate { signed_auth_token: String::from(t) },
                    );
                }
                // Also without a token: leaving the authenticated state emits `deauthenticate`.
                _ => clear_token(inner),
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
            if inner.options.auto_subscribe_on_connect {
                send_due_subscriptions(inner);
            }
            flush_buffer(inner, out);
        }
        ConnEvent::Ping => {}
        ConnEvent::Publish { channel, data } => {
            if inner.state.lock().channels.contains(&channel) {
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
                    Ok(_) => {
                        let change = st.channels.acked(rid);
                        drop(st);
                        if let Some(c) = change {
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
fn flush_buffer(inner: &ClientInner, out: &Outbox) {
    let mut st = inner.state.lock();
    let st = &mut *st;
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

/// SocketCluster's close sequence on the client; returns the close code.
fn closed(inner: &Arc<ClientInner>, ev: ConnEvent) -> u16 {
    let ConnEvent::Closed { code, reason, was_open } = ev else {
        return close::ABNORMAL;
    };
    let kind = if was_open { AbortKind::Disconnect } else { AbortKind::ConnectAbort };
    let (pending, lost, buffered) = {
        let mut st = inner.state.lock();
        st.status = ClientState::Closed;
        st.id = None;
        st.out = None;
        let pending: Vec<_> = st.pending.drain().collect();
        let lost = st.channels.connection_lost();
        let buffered: Vec<_> = st.buffer.drain(..).collect();
        (pending, lost, buffered)
    };
    for (_, (event, tx)) in pending {
        let _ = tx.try_send(Err(bad(&event, kind, code, &reason)));
    }
    for c in lost {
        state_changed(inner, &c.channel, c.old, c.new);
    }
    if was_open {
        emit(inner, "disconnect", ClientEvent::Disconnect { code, reason: reason.clone() });
    } else {
        emit(inner, "connectAbort", ClientEvent::ConnectAbort { code, reason: reason.clone() });
    }
    emit(inner, "close", ClientEvent::Close { code, reason: reason.clone() });
    if !close::is_ignored_status(code) {
        let e = RemoteError::new("SocketProtocolError", close::protocol_error_message(code, &reason))
            .with("code", code);
        emit(inner, "error", ClientEvent::Error(e));
    }
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
    code
}
