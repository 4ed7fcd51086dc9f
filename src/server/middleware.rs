//! Middleware: async functions that allow or block what sockets do, per SocketCluster's four
//! middleware types.
//!
//! | type | actions | blocked → |
//! |---|---|---|
//! | handshake | [`HandshakeAction::Ws`] (the HTTP upgrade), [`HandshakeAction::Sc`] (`#handshake`) | HTTP 401; error response and close with the block's status code (4008 by default) |
//! | inbound raw | [`RawAction`] (every inbound message) | the message is dropped |
//! | inbound | [`InboundAction`]: transmit, invoke, subscribe, publish in, authenticate | error response for calls (`SilentMiddlewareBlockedError` when silent); transmits dropped |
//! | outbound | [`OutboundAction`] (publish out, per socket) | that socket does not get the message |
//!
//! An inbound or outbound middleware returns the action it lets through, so it may replace the
//! data. A socket's actions pass in order — a slow action holds back only its own socket — and
//! the middleware is bound to a socket when it is created: changing the server's middleware
//! affects later sockets only, never hangs live ones.
//!
//! ```
//! use socketcluster::server::{Blocked, InboundAction, Middleware, ServerOptions};
//! use socketcluster::protocol::RemoteError;
//!
//! let middleware = Middleware::new().inbound(|action| async move {
//!     match &action {
//!         InboundAction::PublishIn { channel, .. } if channel.starts_with("readonly/") => Err(Blocked::silent()),
//!         InboundAction::Subscribe { socket, channel, .. }
//!             if channel.starts_with("private/") && socket.auth_token().is_none() =>
//!         {
//!             Err(Blocked::with(RemoteError::new("AuthRequiredError", "Log in first")))
//!         }
//!         _ => Ok(action),
//!     }
//! });
//! let options = ServerOptions { middleware, ..ServerOptions::default() };
//! # let _ = options;
//! ```

use alloc::boxed::Box;
use alloc::string::String;
use alloc::sync::Arc;
use core::fmt;
use core::future::Future;
use std::net::SocketAddr;

use serde_json::Value;

use super::ServerSocket;
use crate::protocol::RemoteError;
use crate::runtime::BoxFuture;

/// Why an action was blocked.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Blocked {
    /// The error sent to the client (`None`: SocketCluster's `SilentMiddlewareBlockedError`).
    pub error: Option<RemoteError>,
    /// Send the generic `SilentMiddlewareBlockedError` to the client even though there is an
    /// error (which is then only reported on the server).
    pub silent: bool,
    /// For handshake blocks: the close code (4008 when `None`; 4500 and above stop the JS client
    /// from reconnecting).
    pub status_code: Option<u16>,
}

impl Blocked {
    /// Blocked with SocketCluster's generic `SilentMiddlewareBlockedError`.
    pub fn silent() -> Self {
        Self { error: None, silent: true, status_code: None }
    }

    /// Blocked with `error`, which the client receives.
    pub fn with(error: RemoteError) -> Self {
        Self { error: Some(error), silent: false, status_code: None }
    }

    /// Sets the close code of a handshake block.
    pub fn status_code(mut self, code: u16) -> Self {
        self.status_code = Some(code);
        self
    }

    /// What the client is sent: the error, or `SilentMiddlewareBlockedError` with the middleware
    /// type (`inbound`, `handshake`, ...) for `action` (`invoke`, `subscribe`, `publishIn`, ...).
    pub fn client_error(&self, middleware: &str, action: &str) -> RemoteError {
        match &self.error {
            Some(e) if !self.silent => e.clone(),
            _ => RemoteError::new(
                "SilentMiddlewareBlockedError",
                alloc::format!("The {action} AGAction was blocked by {middleware} middleware"),
            )
            .with("type", middleware),
        }
    }
}

/// A handshake action.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum HandshakeAction {
    /// The WebSocket upgrade request (`HANDSHAKE_WS`); blocking answers HTTP 401.
    Ws {
        /// The request's path and query (`/socketcluster/?token=abc`).
        request_uri: String,
        /// The `Origin` header.
        origin: Option<String>,
        /// The peer's address.
        remote_address: Option<SocketAddr>,
    },
    /// The `#handshake` (`HANDSHAKE_SC`), after the token was verified.
    Sc {
        /// The socket.
        socket: ServerSocket,
        /// The verified token's payload.
        auth_token: Option<Value>,
        /// Why the token (if any) failed.
        auth_error: Option<RemoteError>,
    },
}

/// Every inbound message, before it is decoded (`MESSAGE` of `INBOUND_RAW`).
#[derive(Clone, Debug)]
pub struct RawAction {
    /// The socket.
    pub socket: ServerSocket,
    /// The message text.
    pub message: String,
}

/// An inbound action (`INBOUND`).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum InboundAction {
    /// A transmit to a receiver.
    Transmit {
        /// The socket.
        socket: ServerSocket,
        /// The event.
        event: String,
        /// The data (replace it to change what the receiver gets).
        data: Option<Value>,
    },
    /// An invoke of a procedure.
    Invoke {
        /// The socket.
        socket: ServerSocket,
        /// The procedure.
        procedure: String,
        /// The data.
        data: Option<Value>,
    },
    /// A `#subscribe`.
    Subscribe {
        /// The socket.
        socket: ServerSocket,
        /// The channel.
        channel: String,
        /// The subscription's data.
        data: Option<Value>,
    },
    /// A `#publish` from the client (`PUBLISH_IN`).
    PublishIn {
        /// The socket.
        socket: ServerSocket,
        /// The channel.
        channel: String,
        /// The data (replace it to change what every subscriber gets).
        data: Option<Value>,
    },
    /// A verified token from `#authenticate` (or the handshake) about to be accepted.
    Authenticate {
        /// The socket.
        socket: ServerSocket,
        /// The signed token.
        signed_auth_token: String,
        /// Its payload.
        auth_token: Value,
    },
}

impl InboundAction {
    /// SocketCluster's action type name: `transmit`, `invoke`, `subscribe`, `publishIn`,
    /// `authenticate`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Transmit { .. } => "transmit",
            Self::Invoke { .. } => "invoke",
            Self::Subscribe { .. } => "subscribe",
            Self::PublishIn { .. } => "publishIn",
            Self::Authenticate { .. } => "authenticate",
        }
    }
}

/// A publish about to be sent to one socket (`PUBLISH_OUT`).
#[derive(Clone, Debug)]
pub struct OutboundAction {
    /// The socket.
    pub socket: ServerSocket,
    /// The channel.
    pub channel: String,
    /// The data (replace it to change what this socket gets).
    pub data: Option<Value>,
}

type Mw<A, R> = Arc<dyn Fn(A) -> BoxFuture<Result<R, Blocked>> + Send + Sync>;
pub(crate) type OutboundMw = Mw<OutboundAction, OutboundAction>;

/// The server's middleware, one async function per type (each optional).
#[derive(Clone, Default)]
pub struct Middleware {
    pub(crate) handshake: Option<Mw<HandshakeAction, ()>>,
    pub(crate) inbound_raw: Option<Mw<RawAction, ()>>,
    pub(crate) inbound: Option<Mw<InboundAction, InboundAction>>,
    pub(crate) outbound: Option<Mw<OutboundAction, OutboundAction>>,
}

impl fmt::Debug for Middleware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Middleware")
            .field("handshake", &self.handshake.is_some())
            .field("inbound_raw", &self.inbound_raw.is_some())
            .field("inbound", &self.inbound.is_some())
            .field("outbound", &self.outbound.is_some())
            .finish()
    }
}

impl Middleware {
    /// No middleware.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the handshake middleware (`HANDSHAKE_WS` and `HANDSHAKE_SC`).
    ///
    /// ```
    /// use socketcluster::server::{Blocked, HandshakeAction, Middleware};
    /// use socketcluster::protocol::RemoteError;
    /// let m = Middleware::new().handshake(|action| async move {
    ///     match action {
    ///         HandshakeAction::Ws { request_uri, .. } if request_uri.contains("reject=1") => {
    ///             Err(Blocked::with(RemoteError::new("Rejected", "go away")))
    ///         }
    ///         HandshakeAction::Sc { auth_token: Some(t), .. } if t["banned"] == true => {
    ///             Err(Blocked::with(RemoteError::new("BannedError", "banned")).status_code(4501))
    ///         }
    ///         _ => Ok(()),
    ///     }
    /// });
    /// # let _ = m;
    /// ```
    pub fn handshake<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(HandshakeAction) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Blocked>> + Send + 'static,
    {
        self.handshake = Some(Arc::new(move |a| Box::pin(f(a))));
        self
    }

    /// Sets the inbound raw middleware (every inbound message).
    ///
    /// ```
    /// use socketcluster::server::{Blocked, Middleware};
    /// let m = Middleware::new().inbound_raw(|action| async move {
    ///     if action.message.len() > 10_000 { Err(Blocked::silent()) } else { Ok(()) }
    /// });
    /// # let _ = m;
    /// ```
    pub fn inbound_raw<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(RawAction) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Blocked>> + Send + 'static,
    {
        self.inbound_raw = Some(Arc::new(move |a| Box::pin(f(a))));
        self
    }

    /// Sets the inbound middleware (transmit, invoke, subscribe, publish in, authenticate);
    /// return the action to let it through, with its data replaced if you like.
    pub fn inbound<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(InboundAction) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<InboundAction, Blocked>> + Send + 'static,
    {
        self.inbound = Some(Arc::new(move |a| Box::pin(f(a))));
        self
    }

    /// Sets the outbound middleware (each publish, per subscribed socket).
    ///
    /// ```
    /// use socketcluster::server::{Blocked, Middleware};
    /// let m = Middleware::new().outbound(|mut action| async move {
    ///     if action.channel == "secret" && action.socket.auth_token().is_none() {
    ///         return Err(Blocked::silent());
    ///     }
    ///     action.data = action.data.map(|d| serde_json::json!({ "wrapped": d }));
    ///     Ok(action)
    /// });
    /// # let _ = m;
    /// ```
    pub fn outbound<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(OutboundAction) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<OutboundAction, Blocked>> + Send + 'static,
    {
        self.outbound = Some(Arc::new(move |a| Box::pin(f(a))));
        self
    }
}
