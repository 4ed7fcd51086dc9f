//! The events of the server's and the sockets' listeners.

use alloc::string::String;

use serde_json::Value;

use super::ServerSocket;
use crate::auth::AuthState;
use crate::protocol::RemoteError;

/// An event of [`Server::listener`](super::Server::listener), by listener name.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum ServerEvent {
    /// `handshake`: a WebSocket opened; the SocketCluster handshake has not happened yet.
    Handshake {
        /// The new socket.
        socket: ServerSocket,
    },
    /// `connection`: a socket completed the handshake. The socket's packets after the
    /// handshake are held until every `connection` consumer has handled this event and waits for
    /// the next one (at most 2 s), so consumers created in the loop body see every message.
    Connection {
        /// The socket.
        socket: ServerSocket,
        /// Its id.
        id: String,
        /// Whether its handshake token was accepted.
        is_authenticated: bool,
        /// Why its handshake token was not accepted.
        auth_error: Option<RemoteError>,
    },
    /// `connectionAbort`: a socket closed before completing the handshake.
    ConnectionAbort {
        /// The socket.
        socket: ServerSocket,
        /// Close code.
        code: u16,
        /// Close reason.
        reason: String,
    },
    /// `disconnection`: a socket closed after the handshake.
    Disconnection {
        /// The socket.
        socket: ServerSocket,
        /// Close code.
        code: u16,
        /// Close reason.
        reason: String,
    },
    /// `closure`: either of the two above.
    Closure {
        /// The socket.
        socket: ServerSocket,
        /// Close code.
        code: u16,
        /// Close reason.
        reason: String,
    },
    /// `subscription`: a socket subscribed to a channel.
    Subscription {
        /// The socket.
        socket: ServerSocket,
        /// The channel.
        channel: String,
        /// The `#subscribe` payload without the channel (`data`, `waitForAuth`).
        options: Value,
    },
    /// `unsubscription`: a socket left a channel (also when it disconnected).
    Unsubscription {
        /// The socket.
        socket: ServerSocket,
        /// The channel.
        channel: String,
    },
    /// `error`: a server-level error (a failed WebSocket upgrade, a broker error).
    Error {
        /// The error.
        error: RemoteError,
    },
    /// `authentication`: a socket got an auth token (handshake, `#authenticate`,
    /// `set_auth_token`).
    Authentication {
        /// The socket.
        socket: ServerSocket,
        /// The token's payload.
        auth_token: Value,
    },
    /// `deauthentication`: a socket lost its token.
    Deauthentication {
        /// The socket.
        socket: ServerSocket,
        /// The payload it had.
        old_auth_token: Value,
    },
    /// `authenticationStateChange`.
    AuthenticationStateChange {
        /// The socket.
        socket: ServerSocket,
        /// Before.
        old: AuthState,
        /// After.
        new: AuthState,
    },
    /// `badSocketAuthToken`: a socket presented a token that failed verification.
    BadSocketAuthToken {
        /// The socket.
        socket: ServerSocket,
        /// Why (`AuthTokenExpiredError`, `AuthTokenInvalidError`, ...).
        error: RemoteError,
        /// The token as presented.
        signed_auth_token: String,
    },
    /// `warning`: a socket-level problem (a malformed packet, an unexpected close).
    Warning {
        /// The error.
        error: RemoteError,
        /// The socket it happened on.
        socket: Option<ServerSocket>,
    },
}

/// An event of [`ServerSocket::listener`](super::ServerSocket::listener), by listener name.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum SocketEvent {
    /// `connect`: the handshake completed.
    Connect {
        /// The socket id.
        id: String,
        /// Whether the handshake token was accepted.
        is_authenticated: bool,
    },
    /// `connectAbort`: closed before the handshake completed.
    ConnectAbort {
        /// Close code.
        code: u16,
        /// Close reason.
        reason: String,
    },
    /// `disconnect`: closed after the handshake.
    Disconnect {
        /// Close code.
        code: u16,
        /// Close reason.
        reason: String,
    },
    /// `close`: either of the two above.
    Close {
        /// Close code.
        code: u16,
        /// Close reason.
        reason: String,
    },
    /// `error`: something went wrong on this socket (never for closes 1000 and 1001).
    Error(RemoteError),
    /// `message`: every inbound frame's text (heartbeats included).
    Message(String),
    /// `raw`: a frame that was not a packet.
    Raw(Value),
    /// `subscribe`: subscribed to a channel.
    Subscribe {
        /// The channel.
        channel: String,
        /// The `#subscribe` payload without the channel.
        options: Value,
    },
    /// `unsubscribe`: left a channel.
    Unsubscribe {
        /// The channel.
        channel: String,
    },
    /// `authenticate`: the socket got an auth token.
    Authenticate {
        /// The token's payload.
        auth_token: Value,
    },
    /// `deauthenticate`: the socket lost its token.
    Deauthenticate {
        /// The payload it had.
        old_auth_token: Value,
    },
    /// `authStateChange`.
    AuthStateChange {
        /// Before.
        old: AuthState,
        /// After.
        new: AuthState,
    },
    /// `authTokenSigned`: `set_auth_token` signed a token.
    AuthTokenSigned {
        /// The signed token.
        signed_auth_token: String,
    },
    /// `badAuthToken`: the client presented a token that failed verification.
    BadAuthToken {
        /// Why.
        error: RemoteError,
        /// The token as presented.
        signed_auth_token: String,
    },
    /// `end`: the socket is done; its receivers and procedures are killed next, its listeners
    /// closed (their consumers end after this event).
    End,
}
