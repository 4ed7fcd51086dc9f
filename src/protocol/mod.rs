//! The SocketCluster wire protocol, sans-IO.
//!
//! Nothing here reads a clock, opens a socket or names a runtime: the state machines take input
//! (a received frame, the current time) and hand back output (frames to send, events, the next
//! deadline), as quinn-proto does. The async server and client drive them; tests drive them by
//! hand, with simulated time.
//!
//! - [`packet`]: packet shapes and their encoding (key order as SocketCluster writes it);
//! - [`codec`]: frame decoding (heartbeats, JSON, batches, binary frames) and base64 objects;
//! - [`error`]: errors as they travel on the wire ([`RemoteError`]) and the crate's [`Error`];
//! - [`close`]: close codes, their texts, and which ones a client reconnects after;
//! - [`calls`]: call-id allocation and pending-call tracking with deadlines;
//! - [`server`]: one server-side connection ([`ServerConnection`]);
//! - [`client`]: one client-side connection attempt ([`ClientConnection`]);
//! - [`channels`]: the client's channel table (pending / subscribed / unsubscribed);
//! - [`position`]: positions in a channel's history and how they travel (our extension);
//! - [`backoff`]: the reconnect delay.
//!
//! Time is a [`Duration`](core::time::Duration) since an epoch the driver picks (the async layer
//! uses the moment it started); only differences matter.

pub mod backoff;
pub mod calls;
pub mod channels;
pub mod client;
pub mod close;
pub mod codec;
pub mod error;
pub mod packet;
pub mod position;
pub mod server;

pub use calls::Calls;
pub use client::{ClientConfig, ClientConnection, ClientEvent};
pub use codec::{Decoded, ProtocolVersion};
pub use error::{AbortKind, Error, RemoteError};
pub use packet::Packet;
pub use server::{ServerConfig, ServerConnection, ServerEvent};

/// What a state machine asks its driver to put on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transmit {
    /// A text frame.
    Text(alloc::string::String),
    /// Close the WebSocket with this code and reason (SocketCluster sends an empty reason for its
    /// own codes), then stop.
    Close {
        /// The close code.
        code: u16,
        /// The reason text on the wire (usually empty).
        reason: alloc::string::String,
    },
}

#[cfg(test)]
mod tests;
