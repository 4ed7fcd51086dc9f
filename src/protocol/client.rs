//! One client-side connection attempt, sans-IO.
//!
//! [`ClientConnection`] covers one WebSocket from open to close: it sends `#handshake`, answers
//! pings, watches for missing pings (4000), enforces the connect timeout (4007) and the handshake
//! ack timeout (4003), and classifies inbound packets. What lives longer than one connection —
//! call ids, the channel table, the auth token, reconnecting — belongs to the driver.

use alloc::collections::VecDeque;
use alloc::format;
use alloc::string::String;
use core::time::Duration;

use serde::Serialize;
use serde_json::Value;

use super::Transmit;
use super::close;
use super::codec::{self, Decoded, ProtocolVersion};
use super::error::RemoteError;
use super::packet::{self, Packet};

/// Settings of a client connection; the defaults are socketcluster-client 20's.
#[derive(Clone, Debug, PartialEq)]
pub struct ClientConfig {
    /// The whole connect (open + handshake) must finish in this time, else close 4007 (20 s).
    /// Also the ping timeout until the handshake response gives the server's.
    pub connect_timeout: Duration,
    /// Timeout of the `#handshake` call, else close 4003 (the client's ack timeout, 10 s).
    pub ack_timeout: Duration,
    /// Do not watch for pings.
    pub ping_timeout_disabled: bool,
    /// Heartbeat format.
    pub protocol_version: ProtocolVersion,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(20),
            ack_timeout: Duration::from_secs(10),
            ping_timeout_disabled: false,
            protocol_version: ProtocolVersion::V2,
        }
    }
}

/// Where a client connection is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientState {
    /// The WebSocket is opening.
    Connecting,
    /// `#handshake` sent, waiting for its response.
    Handshaking,
    /// Handshake complete.
    Open,
    /// Closed.
    Closed,
}

/// What happened on a client connection.
#[derive(Clone, Debug, PartialEq)]
pub enum ClientEvent {
    /// The handshake succeeded.
    Connected {
        /// The socket id the server gave.
        id: String,
        /// The server's ping timeout.
        ping_timeout: Duration,
        /// Whether the handshake token was accepted.
        is_authenticated: bool,
        /// Why a supplied token was not accepted.
        auth_error: Option<RemoteError>,
    },
    /// A server ping (already answered).
    Ping,
    /// A channel message.
    Publish {
        /// The channel.
        channel: String,
        /// The data (`None` when absent).
        data: Option<Value>,
        /// Its position in the channel's history (channels with history only).
        position: Option<super::position::Position>,
    },
    /// The server unsubscribed this client from a channel.
    KickOut {
        /// The channel.
        channel: String,
        /// The server's message (`None` when absent).
        message: Option<Value>,
    },
    /// `#setAuthToken`: store the token and become authenticated.
    SetAuthToken {
        /// The signed token.
        token: String,
        /// Set when the server asked for an answer.
        cid: Option<u64>,
    },
    /// `#removeAuthToken`: forget the token.
    RemoveAuthToken,
    /// A server transmit.
    Transmit {
        /// The event name.
        event: String,
        /// The data (`None` when absent).
        data: Option<Value>,
    },
    /// A server invoke: answer it with a response frame.
    Invoke {
        /// The procedure name.
        event: String,
        /// The data (`None` when absent).
        data: Option<Value>,
        /// The call id to answer.
        cid: u64,
    },
    /// A response to one of the client's calls (the driver matches `rid` with its calls).
    Response {
        /// The call id.
        rid: u64,
        /// The data (`None` when absent) or the error.
        result: Result<Option<Value>, RemoteError>,
    },
    /// A message that is not a packet.
    Raw(Value),
    /// The connection closed.
    Closed {
        /// Close code.
        code: u16,
        /// Reason (the code's text when none was given).
        reason: String,
        /// Whether the handshake had completed (`disconnect`) or not (`connectAbort`).
        was_open: bool,
    },
}

#[derive(Serialize)]
struct HandshakeRequest<'a> {
    #[serde(rename = "authToken")]
    auth_token: Option<&'a str>,
}

/// One client connection attempt.
///
/// ```
/// use std::time::Duration;
/// use socketcluster::protocol::{ClientConfig, ClientConnection, ClientEvent, Transmit};
///
/// let t0 = Duration::ZERO;
/// let mut conn = ClientConnection::new(t0, ClientConfig::default());
/// conn.handle_open(t0, 1, None);
/// assert_eq!(
///     conn.poll_transmit(),
///     Some(Transmit::Text(r##"{"event":"#handshake","data":{"authToken":null},"cid":1}"##.into()))
/// );
/// conn.handle_text(t0, r#"{"rid":1,"data":{"id":"abc","pingTimeout":3000,"isAuthenticated":false}}"#);
/// assert!(matches!(conn.poll_event(), Some(ClientEvent::Connected { .. })));
/// conn.handle_text(t0, ""); // ping
/// assert_eq!(conn.poll_transmit(), Some(Transmit::Text(String::new()))); // pong
/// ```
#[derive(Debug)]
pub struct ClientConnection {
    config: ClientConfig,
    state: ClientState,
    handshake_cid: Option<u64>,
    ping_timeout: Duration,
    connect_deadline: Option<Duration>,
    handshake_deadline: Option<Duration>,
    ping_deadline: Option<Duration>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<ClientEvent>,
}

impl ClientConnection {
    /// A connection attempt started at `now` (the WebSocket is being opened).
    pub fn new(now: Duration, config: ClientConfig) -> Self {
        Self {
            ping_timeout: config.connect_timeout,
            connect_deadline: Some(now + config.connect_timeout),
            config,
            state: ClientState::Connecting,
            handshake_cid: None,
            handshake_deadline: None,
            ping_deadline: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// The state.
    pub fn state(&self) -> ClientState {
        self.state
    }

    /// The ping timeout in force (the connect timeout until the handshake response).
    pub fn ping_timeout(&self) -> Duration {
        self.ping_timeout
    }

    /// The WebSocket opened: sends `#handshake` with call id `cid` and the stored token.
    pub fn handle_open(&mut self, now: Duration, cid: u64, auth_token: Option<&str>) {
        if self.state != ClientState::Connecting {
            return;
        }
        self.state = ClientState::Handshaking;
        self.handshake_cid = Some(cid);
        self.handshake_deadline = Some(now + self.config.ack_timeout);
        if !self.config.ping_timeout_disabled {
            self.ping_deadline = Some(now + self.ping_timeout);
        }
        if let Ok(frame) =
            packet::encode_client_invoke("#handshake", Some(&HandshakeRequest { auth_token }), cid)
        {
            self.transmits.push_back(Transmit::Text(frame));
        }
    }

    /// Handles a text frame.
    pub fn handle_text(&mut self, now: Duration, text: &str) {
        if self.state == ClientState::Closed {
            return;
        }
        let decoded = codec::decode(text, self.config.protocol_version.ping());
        self.handle_decoded(now, decoded);
    }

    /// Handles a binary frame (read as JSON text).
    pub fn handle_binary(&mut self, now: Duration, bytes: &[u8]) {
        if self.state == ClientState::Closed {
            return;
        }
        let decoded = codec::decode_binary(bytes, self.config.protocol_version.ping());
        self.handle_decoded(now, decoded);
    }

    fn handle_decoded(&mut self, now: Duration, decoded: Decoded) {
        match decoded {
            Decoded::Heartbeat => {
                self.transmits.push_back(Transmit::Text(String::from(self.config.protocol_version.pong())));
                if let Some(d) = self.ping_deadline.as_mut() {
                    *d = now + self.ping_timeout;
                }
                self.events.push_back(ClientEvent::Ping);
            }
            Decoded::Raw(text) => self.events.push_back(ClientEvent::Raw(Value::String(text))),
            Decoded::Packets(packets) => {
                for p in packets {
                    if self.state == ClientState::Closed {
                        break;
                    }
                    self.handle_packet(now, p);
                }
            }
        }
    }

    fn handle_packet(&mut self, now: Duration, packet: Packet) {
        match packet {
            Packet::Response { rid, result } if Some(rid) == self.handshake_cid => {
                self.handshake_cid = None;
                self.handshake_deadline = None;
                match result {
                    Ok(data) => self.handshake_done(now, data.unwrap_or(Value::Null)),
                    Err(e) => {
                        let code = e
                            .get("statusCode")
                            .and_then(Value::as_u64)
                            .and_then(|c| u16::try_from(c).ok())
                            .filter(|&c| close::is_sendable(c))
                            .unwrap_or(close::HANDSHAKE_FAILED);
                        let reason = format!("{}: {}", e.name(), e.message());
                        self.close(code, &reason);
                    }
                }
            }
            Packet::Response { rid, result } => self.events.push_back(ClientEvent::Response { rid, result }),
            Packet::Event { event, data, cid } => self.handle_event(event, data, cid),
            Packet::Raw(v) => self.events.push_back(ClientEvent::Raw(v)),
        }
    }

    fn handshake_done(&mut self, now: Duration, data: Value) {
        let id = data.get("id").and_then(Value::as_str).unwrap_or_default();
        let ping_timeout = data.get("pingTimeout").and_then(Value::as_u64).map(Duration::from_millis);
        let is_authenticated = data.get("isAuthenticated").and_then(Value::as_bool).unwrap_or(false);
        let auth_error = data.get("authError").filter(|e| !e.is_null()).cloned().map(RemoteError::from_value);
        if let Some(t) = ping_timeout {
            self.ping_timeout = t;
        }
        if !self.config.ping_timeout_disabled {
            self.ping_deadline = Some(now + self.ping_timeout);
        }
        self.state = ClientState::Open;
        self.connect_deadline = None;
        self.events.push_back(ClientEvent::Connected {
            id: String::from(id),
            ping_timeout: self.ping_timeout,
            is_authenticated,
            auth_error,
        });
    }

    fn handle_event(&mut self, event: String, data: Option<Value>, cid: Option<u64>) {
        let ev = match event.as_str() {
            "#publish" => match data {
                Some(Value::Object(mut m)) if m.get("channel").is_some_and(Value::is_string) => {
                    let Some(Value::String(channel)) = m.remove("channel") else { return };
                    let position = match (m.get("offset").and_then(Value::as_u64), m.get("epoch")) {
                        (Some(offset), Some(Value::String(epoch))) => {
                            Some(super::position::Position { offset, epoch: epoch.clone() })
                        }
                        _ => None,
                    };
                    ClientEvent::Publish { channel, data: m.remove("data"), position }
                }
                _ => return,
            },
            "#kickOut" => match data {
                Some(Value::Object(mut m)) if m.get("channel").is_some_and(Value::is_string) => {
                    let Some(Value::String(channel)) = m.remove("channel") else { return };
                    ClientEvent::KickOut { channel, message: m.remove("message") }
                }
                _ => return,
            },
            "#setAuthToken" => match data.as_ref().and_then(|d| d.get("token")).and_then(Value::as_str) {
                Some(token) => ClientEvent::SetAuthToken { token: String::from(token), cid },
                None => {
                    if let Some(cid) = cid {
                        let err = RemoteError::new(
                            "InvalidMessageError",
                            "No token data provided by #setAuthToken event",
                        );
                        self.transmits.push_back(Transmit::Text(packet::encode_error(cid, &err)));
                    }
                    return;
                }
            },
            "#removeAuthToken" => {
                if let Some(cid) = cid
                    && let Ok(f) = packet::encode_response::<Value>(cid, None)
                {
                    self.transmits.push_back(Transmit::Text(f));
                }
                ClientEvent::RemoveAuthToken
            }
            _ => match cid {
                Some(cid) => ClientEvent::Invoke { event, data, cid },
                None => ClientEvent::Transmit { event, data },
            },
        };
        self.events.push_back(ev);
    }

    /// Closes the connection from this side.
    pub fn close(&mut self, code: u16, reason: &str) {
        if self.state == ClientState::Closed {
            return;
        }
        self.transmits.push_back(Transmit::Close { code, reason: close::wire_reason(reason) });
        self.closed(code, reason);
    }

    /// The transport closed (a close frame from the server, or 1006 when the connection broke).
    pub fn handle_close(&mut self, code: u16, reason: &str) {
        if self.state != ClientState::Closed {
            self.closed(code, reason);
        }
    }

    fn closed(&mut self, code: u16, reason: &str) {
        let was_open = self.state == ClientState::Open;
        self.state = ClientState::Closed;
        self.connect_deadline = None;
        self.handshake_deadline = None;
        self.ping_deadline = None;
        self.events.push_back(ClientEvent::Closed { code, reason: close::reason(code, reason), was_open });
    }

    /// The next frame to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called.
    pub fn poll_timeout(&self) -> Option<Duration> {
        [self.connect_deadline, self.handshake_deadline, self.ping_deadline].into_iter().flatten().min()
    }

    /// Advances timers: connect timeout (4007), handshake timeout (4003), ping timeout (4000).
    pub fn handle_timeout(&mut self, now: Duration) {
        if self.state == ClientState::Closed {
            return;
        }
        if self.connect_deadline.is_some_and(|d| d <= now) {
            return self.close(close::CONNECT_TIMEOUT, "");
        }
        if self.handshake_deadline.is_some_and(|d| d <= now) {
            return self.close(
                close::HANDSHAKE_FAILED,
                "TimeoutError: Event response for #handshake event timed out",
            );
        }
        if self.ping_deadline.is_some_and(|d| d <= now) {
            self.close(close::PING_TIMEOUT, "");
        }
    }
}
