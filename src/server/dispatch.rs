//! Acting on a socket's events, in order: the handshake, transmits and invokes, subscriptions
//! and publishes, auth packets, and SocketCluster's close sequence.

use alloc::string::String;
use core::sync::atomic::Ordering;
use std::time::Instant;

use serde_json::Value;

use super::broker::Subscriber;

/// The most members one `#presence` answer lists (`count` has them all).
pub(crate) const PRESENCE_LIST_MAX: usize = 1000;
use super::driver::Driver;
use super::{HandshakeAction, InboundAction, ServerEvent, SocketEvent};
use crate::protocol::server::ServerEvent as ConnEvent;
use crate::protocol::{RemoteError, close, packet};

/// How long a new socket's packets wait for the `connection` consumers (see `ServerEvent::Connection`).
const CONNECTION_HOLD: core::time::Duration = core::time::Duration::from_secs(2);

impl Driver {
    pub(super) async fn handle(&mut self, ev: ConnEvent) -> bool {
        let inner = self.socket.inner.clone();
        match ev {
            ConnEvent::Handshake { cid, auth_token } => {
                // socketcluster-server reads `data.authToken || null`: "", false and 0 are no token.
                let auth_token = auth_token.filter(|t| {
                    !matches!(t, Value::Bool(false)) && t.as_str() != Some("") && t.as_f64() != Some(0.0)
                });
                let (token, verified) = self.verify(auth_token).await;
                let auth_error = verified.as_ref().err().cloned().flatten();
                let is_authenticated = matches!(verified, Ok(Some(_)));
                if let Some(mw) = inner.middleware.handshake.clone() {
                    let action = HandshakeAction::Sc {
                        socket: self.socket.clone(),
                        auth_token: verified.clone().ok().flatten(),
                        auth_error: auth_error.clone(),
                    };
                    if let Err(blocked) = mw(action).await {
                        self.blocked(&blocked, "handshake", "handshakeSC");
                        let code = blocked.status_code.unwrap_or(close::HANDSHAKE_REJECTED);
                        let e = blocked.client_error("handshake", "handshakeSC").with("statusCode", code);
                        inner.conn.lock().reject_handshake(cid, &e, code);
                        return false; // the connection's Closed event follows
                    }
                }
                inner.conn.lock().accept_handshake(cid, &inner.id, is_authenticated, auth_error.as_ref());
                self.flush();
                if let Some(e) = &auth_error {
                    self.socket.bad_token(e, token.clone());
                }
                self.open = true;
                self.server.pending_clients.fetch_sub(1, Ordering::Relaxed);
                self.server.clients.lock().insert(inner.id.clone(), self.socket.clone());
                inner
                    .listeners
                    .write("connect", SocketEvent::Connect { id: inner.id.clone(), is_authenticated });
                if let (Some(signed), Ok(Some(claims))) = (token, verified) {
                    self.socket.authenticated(signed, claims);
                }
                self.server.emit(
                    "connection",
                    ServerEvent::Connection {
                        socket: self.socket.clone(),
                        id: inner.id.clone(),
                        is_authenticated,
                        auth_error,
                    },
                );
                // Hold this socket's later packets until the `connection` handlers have run.
                let idle = self.server.listeners.idle("connection");
                let sleep = self.server.runtime.sleep_until(Instant::now() + CONNECTION_HOLD);
                futures::future::select(core::pin::pin!(idle), sleep).await;
            }
            ConnEvent::Transmit { event, data } => {
                let action = InboundAction::Transmit { socket: self.socket.clone(), event, data };
                if let Ok(InboundAction::Transmit { event, data, .. }) = self.inbound(action).await {
                    if self.server.receivers.consumer_count(&event) > 0 {
                        self.server.receivers.write(&event, (self.socket.clone(), data.clone()));
                    }
                    inner.receivers.write(&event, data);
                }
            }
            ConnEvent::Invoke { event, data, cid } => {
                let action = InboundAction::Invoke { socket: self.socket.clone(), procedure: event, data };
                match self.inbound(action).await {
                    Ok(InboundAction::Invoke { procedure, data, .. })
                        if procedure == "#presence" && self.server.options.client_presence =>
                    {
                        let answer = self.presence(data.as_ref()).await;
                        self.respond_data(Some(cid), answer);
                    }
                    Ok(InboundAction::Invoke { procedure, data, .. }) => {
                        self.invoke(&procedure, data, cid).await;
                    }
                    Ok(_) => {}
                    Err(b) => self.respond(Some(cid), Err(b.client_error("inbound", "invoke"))),
                }
            }
            ConnEvent::Subscribe { channel, mut options, cid } => {
                let data = options.get("data").cloned();
                let action = InboundAction::Subscribe { socket: self.socket.clone(), channel, data };
                let channel = match self.inbound(action).await {
                    Ok(InboundAction::Subscribe { channel, data, .. }) => {
                        if let (Some(d), Value::Object(m)) = (data, &mut options) {
                            m.insert(String::from("data"), d);
                        }
                        channel
                    }
                    Ok(_) => return false,
                    Err(b) => {
                        self.respond(cid, Err(b.client_error("inbound", "subscribe")));
                        return false;
                    }
                };
                let result = self.subscribe(&channel, options).await;
                if let Err(e) = &result {
                    self.warn(e.clone());
                }
                self.respond_data(cid, result);
            }
            ConnEvent::Unsubscribe { channel, cid } => {
                let was = inner.subscriptions.lock().remove(&channel);
                if was {
                    self.server.broker.unsubscribe(channel.clone(), inner.subscriber_id).await;
                    self.server.unsubscribed(&self.socket, &channel);
                    self.respond(cid, Ok(()));
                } else {
                    let e = RemoteError::new(
                        "BrokerError",
                        alloc::format!(
                            "Failed to unsubscribe socket from the {channel} channel - InvalidActionError: Socket {} tried to unsubscribe from a channel which it is not subscribed to",
                            inner.id
                        ),
                    );
                    self.respond(cid, Err(e));
                }
            }
            ConnEvent::Publish { channel, data, cid } => {
                let result = if self.server.options.allow_client_publish {
                    let action = InboundAction::PublishIn { socket: self.socket.clone(), channel, data };
                    match self.inbound(action).await {
                        Ok(InboundAction::PublishIn { channel, data, .. }) => {
                            self.server.broker.publish(channel, data).await
                        }
                        Ok(_) => Ok(()),
                        Err(b) => {
                            self.respond(cid, Err(b.client_error("inbound", "publishIn")));
                            return false;
                        }
                    }
                } else {
                    Err(RemoteError::new("InvalidActionError", "Client publish feature is disabled"))
                };
                if let Err(e) = &result {
                    self.warn(e.clone());
                }
                self.respond(cid, result);
            }
            ConnEvent::Authenticate { token, cid } => {
                let (signed, verified) = self.verify(Some(token)).await;
                let verified = match verified {
                    Ok(None) => Err(Some(
                        RemoteError::new("AuthTokenInvalidError", "jwt must be provided")
                            .with("isBadToken", true),
                    )),
                    v => v,
                };
                match verified {
                    Ok(Some(claims)) => {
                        self.socket.authenticated(signed.unwrap_or_default(), claims);
                        let data = serde_json::json!({ "isAuthenticated": true, "authError": null });
                        inner.out.text(packet::encode_response(cid, Some(&data)).unwrap_or_default());
                    }
                    Ok(None) | Err(None) => {} // not reached: mapped above
                    Err(Some(e)) if super::auth::is_bad_token(&e) => {
                        self.respond(Some(cid), Err(e.clone()));
                        self.socket.deauthenticated(false);
                        self.socket.bad_token(&e, signed);
                    }
                    Err(Some(e)) => {
                        // Not a bad token (not yet valid, or blocked by middleware): the socket is
                        // no longer authenticated either, as the client is told.
                        self.socket.deauthenticated(false);
                        let data = serde_json::json!({ "isAuthenticated": false, "authError": e });
                        inner.out.text(packet::encode_response(cid, Some(&data)).unwrap_or_default());
                        self.socket.bad_token(&e, signed);
                    }
                }
            }
            ConnEvent::RemoveAuthToken => self.socket.deauthenticated(false),
            ConnEvent::Response { rid, result } => {
                if let Some(tx) = inner.pending.lock().remove(&rid) {
                    let _ = tx.try_send(result);
                }
            }
            ConnEvent::CallTimedOut { .. } | ConnEvent::Pong => {}
            ConnEvent::Raw(v) => {
                inner.listeners.write("raw", SocketEvent::Raw(v));
            }
            ConnEvent::Error(e) => self.warn(e),
            ConnEvent::Closed { code, reason } => {
                self.closed(code, reason).await;
                return true;
            }
        }
        false
    }

    /// `#presence` (`{"channel":C}` or `C`): the members of a channel this socket is subscribed
    /// to, at most [`PRESENCE_LIST_MAX`] of them listed.
    async fn presence(&self, data: Option<&Value>) -> Result<Option<Value>, RemoteError> {
        let channel = match data {
            Some(Value::String(c)) => c.as_str(),
            Some(Value::Object(m)) => m.get("channel").and_then(Value::as_str).unwrap_or_default(),
            _ => "",
        };
        if channel.is_empty() {
            return Err(RemoteError::new("InvalidArgumentsError", "#presence expects {\"channel\": C}"));
        }
        if !self.socket.inner.subscriptions.lock().contains(channel) {
            return Err(RemoteError::new(
                "InvalidActionError",
                alloc::format!("Socket {} is not subscribed to the {channel} channel", self.socket.inner.id),
            ));
        }
        // Every process's members when the broker shares presence.
        let members = match self.server.broker.presence(channel) {
            Some(all) => all.await?,
            None => self.server.presence.members(channel),
        };
        let listed: alloc::vec::Vec<Value> =
            members.iter().take(PRESENCE_LIST_MAX).map(|m| m.to_value()).collect();
        Ok(Some(serde_json::json!({
            "channel": channel,
            "count": members.len(),
            "members": listed,
        })))
    }

    /// Subscribes; the acknowledgement's data (a channel with history: its position and the
    /// recovery's outcome).
    async fn subscribe(&self, channel: &str, options: Value) -> Result<Option<Value>, RemoteError> {
        let inner = &self.socket.inner;
        if inner.subscriptions.lock().contains(channel) {
            return Ok(None); // acknowledged again, as in SocketCluster
        }
        let since = super::history::recover_request(options.get("data"))?;
        if let Some(limit) = self.server.options.socket_channel_limit
            && inner.subscriptions.lock().len() >= limit
        {
            return Err(RemoteError::new(
                "BrokerError",
                alloc::format!(
                    "Failed to subscribe socket to the {channel} channel - InvalidActionError: Socket {} tried to exceed the channel subscription limit of {limit}",
                    inner.id
                ),
            ));
        }
        let sub = match &inner.publish_filter {
            Some(tx) => Subscriber::filtered(inner.subscriber_id, tx.clone()),
            None => Subscriber::socket(inner.subscriber_id, inner.out.clone(), inner.listeners.clone()),
        };
        let recovery =
            self.server.broker.subscribe_from(String::from(channel), sub, since).await.map_err(|e| {
                RemoteError::new(
                    "BrokerError",
                    alloc::format!(
                        "Failed to subscribe socket to the {channel} channel - {}: {}",
                        e.name(),
                        e.message()
                    ),
                )
            })?;
        inner.subscriptions.lock().insert(String::from(channel));
        inner.listeners.write(
            "subscribe",
            SocketEvent::Subscribe { channel: String::from(channel), options: options.clone() },
        );
        self.server.emit(
            "subscription",
            ServerEvent::Subscription {
                socket: self.socket.clone(),
                channel: String::from(channel),
                options,
            },
        );
        Ok(recovery.map(|r| r.ack_data(channel)))
    }

    /// SocketCluster's close sequence: abort pending calls, disconnect/abort events, close
    /// events, error unless 1000/1001, unsubscribe from everything, end, kill the receivers and
    /// procedures, close the listeners.
    async fn closed(&mut self, code: u16, reason: String) {
        let inner = self.socket.inner.clone();
        self.flush();
        inner.out.shut();
        if let Some(tx) = &inner.publish_filter {
            tx.close();
        }
        *inner.closed.lock() = Some((code, reason.clone()));
        // Dropping the senders fails every pending invoke with BadConnectionError.
        inner.pending.lock().clear();
        let socket = self.socket.clone();
        if self.open {
            self.server.clients.lock().remove(&inner.id);
            inner.listeners.write("disconnect", SocketEvent::Disconnect { code, reason: reason.clone() });
            self.server.emit(
                "disconnection",
                ServerEvent::Disconnection { socket: socket.clone(), code, reason: reason.clone() },
            );
        } else {
            self.server.pending_clients.fetch_sub(1, Ordering::Relaxed);
            inner.listeners.write("connectAbort", SocketEvent::ConnectAbort { code, reason: reason.clone() });
            self.server.emit(
                "connectionAbort",
                ServerEvent::ConnectionAbort { socket: socket.clone(), code, reason: reason.clone() },
            );
        }
        inner.listeners.write("close", SocketEvent::Close { code, reason: reason.clone() });
        self.server
            .emit("closure", ServerEvent::Closure { socket: socket.clone(), code, reason: reason.clone() });
        if !close::is_ignored_status(code) {
            let e = RemoteError::new("SocketProtocolError", close::protocol_error_message(code, &reason))
                .with("code", code);
            self.warn(e);
        }
        let channels: alloc::vec::Vec<String> =
            core::mem::take(&mut *inner.subscriptions.lock()).into_iter().collect();
        for ch in channels {
            self.server.broker.unsubscribe(ch.clone(), inner.subscriber_id).await;
            self.server.unsubscribed(&socket, &ch);
        }
        inner.listeners.write("end", SocketEvent::End);
        inner.receivers.kill_all();
        inner.procedures.kill_all();
        // Closed, not killed: a kill drops what a consumer has not yet taken, and the events just
        // written (`disconnect`, `close`, `unsubscribe`, `end`) are still unread at this point even
        // by a consumer that was waiting for them. Consumers end after reading them.
        inner.listeners.close_all();
    }
}
