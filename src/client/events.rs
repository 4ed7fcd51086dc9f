//! The events of the client's and its channels' listeners.

use alloc::string::String;

use serde_json::Value;

pub use crate::auth::AuthState;
use crate::protocol::RemoteError;
use crate::protocol::channels::ChannelState;

/// An event of [`Client::listener`](super::Client::listener), by listener name.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum ClientEvent {
    /// `connecting`: a connection attempt started.
    Connecting,
    /// `connect`: the handshake completed.
    Connect {
        /// The socket id.
        id: String,
        /// The server's ping timeout, in milliseconds.
        ping_timeout: u64,
        /// Whether the handshake token was accepted.
        is_authenticated: bool,
        /// Why a handshake token was not accepted.
        auth_error: Option<RemoteError>,
    },
    /// `connectAbort`: the attempt failed before the handshake completed.
    ConnectAbort {
        /// Close code.
        code: u16,
        /// Close reason.
        reason: String,
    },
    /// `disconnect`: an open connection closed.
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
    /// `error`: something went wrong (an unexpected close, a failed delivery).
    Error(RemoteError),
    /// `raw`: a frame that was not a packet.
    Raw(Value),
    /// `message`: every inbound frame's text (pings included), before it is handled.
    Message(String),
    /// `subscribe`: a channel's subscription was acknowledged.
    Subscribe {
        /// The channel.
        channel: String,
    },
    /// `subscribeFail`: the server refused a subscription.
    SubscribeFail {
        /// The channel.
        channel: String,
        /// The server's error.
        error: RemoteError,
    },
    /// `unsubscribe`: a channel left the subscribed state (also when the connection dropped).
    Unsubscribe {
        /// The channel.
        channel: String,
    },
    /// `subscribeStateChange`.
    SubscribeStateChange {
        /// The channel.
        channel: String,
        /// The state before.
        old: ChannelState,
        /// The state after.
        new: ChannelState,
    },
    /// `kickOut`: the server unsubscribed the client from a channel.
    KickOut {
        /// The channel.
        channel: String,
        /// The server's message.
        message: Value,
    },
    /// `authenticate`: a token was stored (handshake, `#setAuthToken`, `authenticate`).
    Authenticate {
        /// The signed token.
        signed_auth_token: String,
    },
    /// `deauthenticate`: the token was removed.
    Deauthenticate,
    /// `authStateChange`.
    AuthStateChange {
        /// Before.
        old: AuthState,
        /// After.
        new: AuthState,
    },
    /// `recover` (our extension): a channel with history was subscribed again after a
    /// reconnect and the server replayed what was published meanwhile (`replayed` publishes,
    /// delivered before this event and before any live one), or could not (`Err(reason)`:
    /// the history was lost or no longer reaches back that far — refetch what you need). Emitted
    /// just before the channel's `subscribe`.
    Recover {
        /// The channel.
        channel: String,
        /// How many publishes were replayed, or why none could be.
        result: Result<u64, String>,
    },
}

/// An event of [`Channel::listener`](super::Channel::listener), by listener name.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum ChannelEvent {
    /// `subscribe`: acknowledged.
    Subscribe,
    /// `subscribeFail`: refused.
    SubscribeFail(RemoteError),
    /// `unsubscribe`.
    Unsubscribe,
    /// `subscribeStateChange`.
    SubscribeStateChange {
        /// Before.
        old: ChannelState,
        /// After.
        new: ChannelState,
    },
    /// `kickOut`, with the server's message.
    KickOut(Value),
    /// `recover`: see [`ClientEvent::Recover`].
    Recover(Result<u64, String>),
}
