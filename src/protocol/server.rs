//! One server-side connection, sans-IO.
//!
//! [`ServerConnection`] enforces the handshake rules (`#handshake` with a numeric `cid` first,
//! else 4008; anything before it 4009; none in time 4005), pings and watches pongs (4001),
//! classifies inbound packets, validates the reserved events and tracks the server's own invokes.
//! What to *do* with a packet — deliver a transmit, answer an invoke, subscribe — is the driver's
//! business: it receives a [`ServerEvent`] per packet, in order.

use alloc::collections::VecDeque;
use alloc::string::String;
use core::time::Duration;

use serde::Serialize;
use serde_json::Value;

use super::Transmit;
use super::calls::Calls;
use super::close;
use super::codec::{self, Decoded, ProtocolVersion};
use super::error::{Error, RemoteError};
use super::packet::{self, Packet};

/// Timing and format settings of a server connection; the defaults are socketcluster-server 20's.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerConfig {
    /// How often the server pings (8 s).
    pub ping_interval: Duration,
    /// Close 4001 when no pong arrives for this long (30 s); also sent to the client.
    pub ping_timeout: Duration,
    /// No pings and no pong timeout.
    pub ping_timeout_disabled: bool,
    /// Close 4005 when no `#handshake` arrives in this time (10 s).
    pub handshake_timeout: Duration,
    /// Heartbeat format.
    pub protocol_version: ProtocolVersion,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            ping_interval: Duration::from_secs(8),
            ping_timeout: Duration::from_secs(30),
            ping_timeout_disabled: false,
            handshake_timeout: Duration::from_secs(10),
            protocol_version: ProtocolVersion::V2,
        }
    }
}

/// Where a server connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerState {
    /// Waiting for `#handshake`.
    Connecting,
    /// `#handshake` received, waiting for the driver to accept or reject it.
    Handshaking,
    /// Handshake complete.
    Open,
    /// Closed; no more input is processed.
    Closed,
}

/// What happened on a server connection, for the driver to act on.
#[derive(Clone, Debug, PartialEq)]
pub enum ServerEvent {
    /// A valid `#handshake`: answer it with [`ServerConnection::accept_handshake`] or
    /// [`ServerConnection::reject_handshake`]. Packets received after it are held until it is
    /// answered (processed in order on accept, dropped on reject), so nothing the connection
    /// sends by itself can overtake the handshake response.
    Handshake {
        /// Its call id.
        cid: u64,
        /// `data.authToken` (`None` when absent or `null`).
        auth_token: Option<Value>,
    },
    /// A transmit for a receiver.
    Transmit {
        /// The event name (a `#`-prefixed name other than the reserved ones is ordinary).
        event: String,
        /// The data (`None` when absent).
        data: Option<Value>,
    },
    /// An invoke for a procedure; answer it with [`ServerConnection::respond`].
    Invoke {
        /// The procedure name.
        event: String,
        /// The data (`None` when absent).
        data: Option<Value>,
        /// The call id to answer.
        cid: u64,
    },
    /// `#subscribe` with a valid channel name. Answer (when `cid` is set) only once the
    /// subscription is in place.
    Subscribe {
        /// The channel.
        channel: String,
        /// The `#subscribe` payload without `channel` (`data`, `waitForAuth`).
        options: Value,
        /// The call id (a cid-less subscribe is still performed, without an answer).
        cid: Option<u64>,
    },
    /// `#unsubscribe` with a channel name.
    Unsubscribe {
        /// The channel.
        channel: String,
        /// The call id, if the client wants an answer.
        cid: Option<u64>,
    },
    /// `#publish` from the client.
    Publish {
        /// The channel.
        channel: String,
        /// The data (`None` when absent).
        data: Option<Value>,
        /// The call id (`invokePublish`), or none (`transmitPublish`).
        cid: Option<u64>,
    },
    /// `#authenticate` with a token.
    Authenticate {
        /// The token value as sent (normally a string).
        token: Value,
        /// The call id.
        cid: u64,
    },
    /// `#removeAuthToken` from the client.
    RemoveAuthToken,
    /// A response to one of the server's invokes that is still pending.
    Response {
        /// The call id.
        rid: u64,
        /// The data (`None` when absent) or the error.
        result: Result<Option<Value>, RemoteError>,
    },
    /// One of the server's invokes timed out (only for calls started with a deadline).
    CallTimedOut {
        /// The call id.
        cid: u64,
        /// The event name.
        event: String,
    },
    /// A heartbeat answer.
    Pong,
    /// A message that is not a packet (non-JSON text, or JSON of another shape).
    Raw(Value),
    /// Something the client did wrong that did not close the connection is reported here (and
    /// answered on the wire where it had a cid).
    Error(RemoteError),
    /// The connection is closed (by [`ServerConnection::close`], a protocol violation, a timeout
    /// or the peer). Pending calls are reported aborted by the driver.
    Closed {
        /// The close code.
        code: u16,
        /// The reason (the code's text when none was given).
        reason: String,
    },
}

/// One server-side SocketCluster connection.
///
/// ```
/// use std::time::Duration;
/// use socketcluster::protocol::{ServerConfig, ServerConnection, ServerEvent, Transmit};
///
/// let t0 = Duration::ZERO;
/// let mut conn = ServerConnection::new(t0, ServerConfig::default());
/// conn.handle_text(t0, r##"{"event":"#handshake","data":{"authToken":null},"cid":1}"##);
/// let Some(ServerEvent::Handshake { cid, .. }) = conn.poll_event() else { panic!() };
/// conn.accept_handshake(cid, "socket-id", false, None);
/// assert_eq!(
///     conn.poll_transmit(),
///     Some(Transmit::Text(r#"{"rid":1,"data":{"id":"socket-id","pingTimeout":30000,"isAuthenticated":false}}"#.into()))
/// );
/// // Eight seconds later the server pings.
/// conn.handle_timeout(Duration::from_secs(8));
/// assert_eq!(conn.poll_transmit(), Some(Transmit::Text(String::new())));
/// ```
#[derive(Debug)]
pub struct ServerConnection {
    config: ServerConfig,
    state: ServerState,
    calls: Calls,
    next_ping: Option<Duration>,
    pong_deadline: Option<Duration>,
    last_pong_reset: Duration,
    handshake_deadline: Option<Duration>,
    /// Packets received while the handshake awaits the driver's answer.
    held: VecDeque<Packet>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<ServerEvent>,
}

#[derive(Serialize)]
struct HandshakeData<'a> {
    id: &'a str,
    #[serde(rename = "pingTimeout")]
    ping_timeout: u64,
    #[serde(rename = "authError", skip_serializing_if = "Option::is_none")]
    auth_error: Option<&'a RemoteError>,
    #[serde(rename = "isAuthenticated")]
    is_authenticated: bool,
}

impl ServerConnection {
    /// A new connection whose WebSocket opened at `now`.
    pub fn new(now: Duration, config: ServerConfig) -> Self {
        let (next_ping, pong_deadline) = if config.ping_timeout_disabled {
            (None, None)
        } else {
            (Some(now + config.ping_interval), Some(now + config.ping_timeout))
        };
        let handshake_deadline = Some(now + config.handshake_timeout);
        Self {
            config,
            state: ServerState::Connecting,
            calls: Calls::new(),
            next_ping,
            pong_deadline,
            last_pong_reset: now,
            handshake_deadline,
            held: VecDeque::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// The state.
    pub fn state(&self) -> ServerState {
        self.state
    }

    /// Whether the handshake completed and the connection is not closed.
    pub fn is_open(&self) -> bool {
        self.state == ServerState::Open
    }

    /// The server's pending invokes.
    pub fn calls(&mut self) -> &mut Calls {
        &mut self.calls
    }

    /// Handles a text frame received at `now`.
    pub fn handle_text(&mut self, now: Duration, text: &str) {
        if self.state == ServerState::Closed {
            return;
        }
        let decoded = codec::decode(text, self.config.protocol_version.pong());
        self.handle_decoded(now, decoded);
    }

    /// Handles a binary frame received at `now` (its bytes are read as JSON text).
    pub fn handle_binary(&mut self, now: Duration, bytes: &[u8]) {
        if self.state == ServerState::Closed {
            return;
        }
        let decoded = codec::decode_binary(bytes, self.config.protocol_version.pong());
        self.handle_decoded(now, decoded);
    }

    fn reset_pong(&mut self, now: Duration) {
        if let Some(d) = self.pong_deadline.as_mut() {
            *d = now + self.config.ping_timeout;
            self.last_pong_reset = now;
        }
    }

    fn handle_decoded(&mut self, now: Duration, decoded: Decoded) {
        if decoded == Decoded::Heartbeat {
            if self.state == ServerState::Connecting {
                return self.close(close::MESSAGE_BEFORE_HANDSHAKE, "");
            }
            self.reset_pong(now);
            return self.events.push_back(ServerEvent::Pong);
        }
        // SocketCluster 20: any message also counts as a sign of life, at most every
        // pingTimeout/4.
        if now.saturating_sub(self.last_pong_reset) >= self.config.ping_timeout / 4 {
            self.reset_pong(now);
        }
        match decoded {
            Decoded::Heartbeat => {}
            Decoded::Raw(text) => match self.state {
                ServerState::Connecting => self.close(close::MESSAGE_BEFORE_HANDSHAKE, ""),
                ServerState::Handshaking => self.held.push_back(Packet::Raw(Value::String(text))),
                _ => self.events.push_back(ServerEvent::Raw(Value::String(text))),
            },
            Decoded::Packets(packets) => {
                if packets.is_empty() && self.state == ServerState::Connecting {
                    // An empty batch is a frame too: nothing but `#handshake` may come first.
                    return self.close(close::MESSAGE_BEFORE_HANDSHAKE, "");
                }
                for p in packets {
                    match self.state {
                        ServerState::Closed => break,
                        ServerState::Handshaking => self.held.push_back(p),
                        _ => self.handle_packet(p),
                    }
                }
            }
        }
    }

    fn handle_packet(&mut self, packet: Packet) {
        if self.state == ServerState::Connecting {
            return match packet {
                Packet::Event { event, data, cid } if event == "#handshake" => match cid {
                    Some(cid) => {
                        self.state = ServerState::Handshaking;
                        self.handshake_deadline = None;
                        let auth_token = match data {
                            Some(Value::Object(mut m)) => m.remove("authToken").filter(|t| !t.is_null()),
                            _ => None,
                        };
                        self.events.push_back(ServerEvent::Handshake { cid, auth_token });
                    }
                    None => {
                        self.events.push_back(ServerEvent::Error(RemoteError::new(
                            "InvalidActionError",
                            "Handshake request was malformatted",
                        )));
                        self.close(close::HANDSHAKE_REJECTED, "");
                    }
                },
                _ => self.close(close::MESSAGE_BEFORE_HANDSHAKE, ""),
            };
        }
        match packet {
            Packet::Event { event, data, cid } => self.handle_event(event, data, cid),
            Packet::Response { rid, result } => {
                if self.calls.finish(rid).is_some() {
                    self.events.push_back(ServerEvent::Response { rid, result });
                }
            }
            Packet::Raw(v) => self.events.push_back(ServerEvent::Raw(v)),
        }
    }

    fn invalid(&mut self, cid: Option<u64>, message: &str) {
        let err = RemoteError::new("InvalidActionError", message);
        if let Some(cid) = cid {
            self.respond_error(cid, &err);
        }
        self.events.push_back(ServerEvent::Error(err));
    }

    fn handle_event(&mut self, event: String, data: Option<Value>, cid: Option<u64>) {
        let ev = match event.as_str() {
            "#handshake" => {
                // SocketCluster processes a second handshake again (and counts the client twice);
                // we refuse it.
                return self.invalid(cid, "The socket has already sent a #handshake");
            }
            "#subscribe" => match data {
                Some(Value::Object(mut m)) if m.get("channel").is_some_and(Value::is_string) => {
                    let Some(Value::String(channel)) = m.remove("channel") else { return };
                    ServerEvent::Subscribe { channel, options: Value::Object(m), cid }
                }
                _ => return self.invalid(cid, "Subscribe channel name was malformatted"),
            },
            "#unsubscribe" => match data {
                Some(Value::String(channel)) => ServerEvent::Unsubscribe { channel, cid },
                _ => return self.invalid(cid, "Unsubscribe channel name was malformatted"),
            },
            "#publish" => match data {
                Some(Value::Object(mut m)) if m.get("channel").is_some_and(Value::is_string) => {
                    let Some(Value::String(channel)) = m.remove("channel") else { return };
                    ServerEvent::Publish { channel, data: m.remove("data"), cid }
                }
                _ => return self.invalid(cid, "Publish channel name was malformatted"),
            },
            "#authenticate" => match cid {
                Some(cid) => ServerEvent::Authenticate { token: data.unwrap_or(Value::Null), cid },
                None => {
                    self.events.push_back(ServerEvent::Error(RemoteError::new(
                        "InvalidActionError",
                        "Authenticate request was malformatted",
                    )));
                    return self.close(close::HANDSHAKE_REJECTED, "");
                }
            },
            "#removeAuthToken" => ServerEvent::RemoveAuthToken,
            _ => match cid {
                Some(cid) => ServerEvent::Invoke { event, data, cid },
                None => ServerEvent::Transmit { event, data },
            },
        };
        self.events.push_back(ev);
    }

    /// Accepts the handshake: sends `{"rid":cid,"data":{"id","pingTimeout","isAuthenticated"}}`
    /// (with `authError` when a supplied token failed) and opens the connection.
    pub fn accept_handshake(
        &mut self,
        cid: u64,
        id: &str,
        is_authenticated: bool,
        auth_error: Option<&RemoteError>,
    ) {
        if self.state != ServerState::Handshaking {
            return;
        }
        self.state = ServerState::Open;
        let data = HandshakeData {
            id,
            ping_timeout: self.config.ping_timeout.as_millis() as u64,
            auth_error,
            is_authenticated,
        };
        if let Ok(frame) = packet::encode_response(cid, Some(&data)) {
            self.transmits.push_back(Transmit::Text(frame));
        }
        while let Some(p) = self.held.pop_front() {
            if self.state == ServerState::Closed {
                break;
            }
            self.handle_packet(p);
        }
    }

    /// Rejects the handshake: an error response, then close with `code` (4008 by default in
    /// SocketCluster).
    pub fn reject_handshake(&mut self, cid: u64, error: &RemoteError, code: u16) {
        if self.state != ServerState::Handshaking {
            return;
        }
        self.respond_error(cid, error);
        self.close(code, "");
    }

    /// Queues a success response (`data` `None`: `{"rid":N}`); dropped once the connection is
    /// closed.
    pub fn respond(&mut self, rid: u64, data: Option<&Value>) {
        if self.state == ServerState::Closed {
            return;
        }
        if let Ok(frame) = packet::encode_response(rid, data) {
            self.transmits.push_back(Transmit::Text(frame));
        }
    }

    /// Queues an error response; dropped once the connection is closed.
    pub fn respond_error(&mut self, rid: u64, error: &RemoteError) {
        if self.state == ServerState::Closed {
            return;
        }
        self.transmits.push_back(Transmit::Text(packet::encode_error(rid, error)));
    }

    /// Starts an invoke to the client: returns its cid and frame. `deadline` (`None` = the driver
    /// times it out itself) makes [`handle_timeout`](Self::handle_timeout) report
    /// [`ServerEvent::CallTimedOut`].
    pub fn invoke(
        &mut self,
        event: &str,
        data: Option<&Value>,
        deadline: Option<Duration>,
    ) -> Result<(u64, String), Error> {
        if self.state != ServerState::Open {
            return Err(Error::BadConnection {
                event: String::from(event),
                kind: super::AbortKind::ConnectAbort,
                code: close::ABNORMAL,
                reason: String::new(),
            });
        }
        let cid = self.calls.start(event, deadline);
        match packet::encode_server_invoke(event, data, cid) {
            Ok(frame) => Ok((cid, frame)),
            Err(e) => {
                self.calls.cancel(cid);
                Err(Error::InvalidArguments(alloc::format!("{e}")))
            }
        }
    }

    /// Closes the connection with `code` and `reason` (sent on the wire as given).
    pub fn close(&mut self, code: u16, reason: &str) {
        if self.state == ServerState::Closed {
            return;
        }
        self.transmits.push_back(Transmit::Close { code, reason: close::wire_reason(reason) });
        self.closed(code, reason);
    }

    /// The transport closed (the peer's close frame, or the TCP connection ended: use 1006).
    pub fn handle_close(&mut self, code: u16, reason: &str) {
        if self.state != ServerState::Closed {
            self.closed(code, reason);
        }
    }

    fn closed(&mut self, code: u16, reason: &str) {
        self.state = ServerState::Closed;
        self.next_ping = None;
        self.pong_deadline = None;
        self.handshake_deadline = None;
        self.held.clear();
        self.events.push_back(ServerEvent::Closed { code, reason: close::reason(code, reason) });
    }

    /// The next frame to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    /// Whether events are waiting: right after an event of a batch frame, the frame's later
    /// packets (the server waits for an invoke's answer before going on with them).
    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called (`None` once closed).
    pub fn poll_timeout(&self) -> Option<Duration> {
        if self.state == ServerState::Closed {
            return None;
        }
        [self.next_ping, self.pong_deadline, self.handshake_deadline, self.calls.next_deadline()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Advances timers to `now`: pings, the pong timeout (4001), the handshake timeout (4005),
    /// call deadlines.
    pub fn handle_timeout(&mut self, now: Duration) {
        if self.state == ServerState::Closed {
            return;
        }
        if self.handshake_deadline.is_some_and(|d| d <= now) {
            return self.close(close::HANDSHAKE_TIMEOUT, "");
        }
        if self.pong_deadline.is_some_and(|d| d <= now) {
            return self.close(close::PONG_TIMEOUT, "");
        }
        if let Some(p) = self.next_ping
            && p <= now
        {
            self.transmits.push_back(Transmit::Text(String::from(self.config.protocol_version.ping())));
            // Skip missed beats instead of bursting them: the next beat on the p + k·interval grid
            // after `now` (computed, not looped: a zero interval or a long sleep must not hang).
            let interval = self.config.ping_interval.max(Duration::from_millis(1));
            let into_beat = (now - p).as_nanos() % interval.as_nanos();
            let into_beat = Duration::from_nanos(u64::try_from(into_beat).unwrap_or(0));
            self.next_ping = Some(now + (interval - into_beat));
        }
        for (cid, event) in self.calls.expire(now) {
            self.events.push_back(ServerEvent::CallTimedOut { cid, event });
        }
    }
}
