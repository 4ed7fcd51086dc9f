//! Close codes, their texts, and the client's reconnect policy per code.

use alloc::format;
use alloc::string::String;

/// Socket closed normally (`disconnect()` default; the JS client does not reconnect).
pub const NORMAL: u16 = 1000;
/// Socket was disconnected (going away).
pub const GOING_AWAY: u16 = 1001;
/// Closed without a status code.
pub const NO_STATUS: u16 = 1005;
/// Socket hung up (abnormal close, no close frame).
pub const ABNORMAL: u16 = 1006;
/// A message was too big to process (`maxPayload`).
pub const MESSAGE_TOO_BIG: u16 = 1009;
/// Unexpected condition.
pub const UNEXPECTED: u16 = 1011;
/// Try again later: used for slow consumers whose outbound backlog is over the limit.
pub const TRY_AGAIN_LATER: u16 = 1013;
/// The client did not receive a ping in time.
pub const PING_TIMEOUT: u16 = 4000;
/// The server did not receive a pong in time.
pub const PONG_TIMEOUT: u16 = 4001;
/// The server failed to sign an auth token.
pub const AUTH_SIGN_FAILED: u16 = 4002;
/// The client failed to complete the handshake.
pub const HANDSHAKE_FAILED: u16 = 4003;
/// The client failed to save its auth token (legacy).
pub const AUTH_SAVE_FAILED: u16 = 4004;
/// No `#handshake` arrived before the server's handshake timeout.
pub const HANDSHAKE_TIMEOUT: u16 = 4005;
/// Failed to bind the socket to the broker (legacy).
pub const BROKER_BIND_FAILED: u16 = 4006;
/// The client's connect timeout expired.
pub const CONNECT_TIMEOUT: u16 = 4007;
/// The server rejected the handshake (malformed `#handshake` or `#authenticate`, or a middleware
/// block without a status code).
pub const HANDSHAKE_REJECTED: u16 = 4008;
/// A message arrived before the handshake.
pub const MESSAGE_BEFORE_HANDSHAKE: u16 = 4009;

/// SocketCluster's text for a close code (its `socketProtocolErrorStatuses` table), if it has one.
///
/// ```
/// use socketcluster::protocol::close;
/// assert_eq!(close::text(4001), Some("Client pong timed out"));
/// assert_eq!(close::text(4321), None);
/// ```
pub fn text(code: u16) -> Option<&'static str> {
    Some(match code {
        1000 => "Socket closed normally",
        1001 => "Socket was disconnected",
        1002 => "A WebSocket protocol error was encountered",
        1003 => "Server terminated socket because it received invalid data",
        1005 => "Socket closed without status code",
        1006 => "Socket hung up",
        1007 => "Message format was incorrect",
        1008 => "Encountered a policy violation",
        1009 => "Message was too big to process",
        1010 => "Client ended the connection because the server did not comply with extension requirements",
        1011 => "Server encountered an unexpected fatal condition",
        1013 => "Try again later: the socket could not keep up with its outbound messages",
        4000 => "Server ping timed out",
        4001 => "Client pong timed out",
        4002 => "Server failed to sign auth token",
        4003 => "Failed to complete handshake",
        4004 => "Client failed to save auth token",
        4005 => "Did not receive #handshake from client before timeout",
        4006 => "Failed to bind socket to message broker",
        4007 => "Client connection establishment timed out",
        4008 => "Server rejected handshake from client",
        4009 => "Server received a message before the client handshake",
        _ => return None,
    })
}

/// The reason an application sees: the one on the wire, or the table text when it was empty.
pub fn reason(code: u16, wire_reason: &str) -> String {
    if wire_reason.is_empty() { String::from(text(code).unwrap_or("")) } else { String::from(wire_reason) }
}

/// Whether `code` may be sent in a close frame (RFC 6455 §7.4; the `ws` package's check):
/// 1000–1014 except 1004–1006, and 3000–4999.
pub(crate) fn is_sendable(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// The longest close reason a close frame can carry, in bytes (125 minus the code).
const MAX_WIRE_REASON: usize = 123;

/// `reason` cut to fit a close frame (at most 123 bytes, on a character boundary).
pub(crate) fn wire_reason(reason: &str) -> String {
    let mut end = reason.len().min(MAX_WIRE_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    String::from(&reason[..end])
}

/// Codes 1000 and 1001 are expected closes: no `error` event is emitted for them.
pub fn is_ignored_status(code: u16) -> bool {
    code == NORMAL || code == GOING_AWAY
}

/// The message of the `SocketProtocolError` emitted for an unexpected close.
pub fn protocol_error_message(code: u16, wire_reason: &str) -> String {
    match text(code) {
        Some(t) if wire_reason.is_empty() => String::from(t),
        _ if wire_reason.is_empty() => format!("Socket connection closed with status code {code}"),
        _ => format!("Socket connection closed with status code {code} and reason: {wire_reason}"),
    }
}

/// What an auto-reconnecting client does after a close.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reconnect {
    /// Retry at once (first attempt only; later attempts back off): 4000, 4001, 1005.
    Immediately,
    /// Retry after the backoff delay.
    Backoff,
    /// Do not retry: 1000 and every code from 4500.
    Never,
}

/// The reconnect policy for a close code, as socketcluster-client 20 applies it.
///
/// ```
/// use socketcluster::protocol::close::{reconnect_policy, Reconnect};
/// assert_eq!(reconnect_policy(1000), Reconnect::Never);
/// assert_eq!(reconnect_policy(4001), Reconnect::Immediately);
/// assert_eq!(reconnect_policy(1006), Reconnect::Backoff);
/// assert_eq!(reconnect_policy(4501), Reconnect::Never);
/// ```
pub fn reconnect_policy(code: u16) -> Reconnect {
    match code {
        NORMAL => Reconnect::Never,
        c if c >= 4500 => Reconnect::Never,
        PING_TIMEOUT | PONG_TIMEOUT | NO_STATUS => Reconnect::Immediately,
        _ => Reconnect::Backoff,
    }
}
