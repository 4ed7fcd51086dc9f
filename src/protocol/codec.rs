//! Frame decoding (SocketCluster's sc-formatter, receive side) and base64 objects.
//!
//! A frame is a heartbeat, or text that is JSON when it starts (after whitespace) with `{` or `[`;
//! anything else — and JSON that fails to parse — is a raw message. Decoding never fails. Binary
//! frames are read as UTF-8 text (invalid sequences replaced), as SocketCluster does. Base64
//! objects (`{"base64":true,"data":...}`) are *not* turned back into bytes: the application sees
//! the object, as a JS peer would.

use alloc::string::String;
use alloc::vec::Vec;

use base64::Engine as _;
use serde_json::Value;

use super::packet::Packet;

/// The heartbeat format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ProtocolVersion {
    /// Protocol 1: the server pings `#1`, the client answers `#2`.
    V1,
    /// Protocol 2 (default): both ping and pong are the empty string.
    #[default]
    V2,
}

impl ProtocolVersion {
    /// From the number used in options (`1` or `2`).
    pub fn from_number(n: u64) -> Option<Self> {
        match n {
            1 => Some(Self::V1),
            2 => Some(Self::V2),
            _ => None,
        }
    }

    /// The ping frame text.
    pub fn ping(self) -> &'static str {
        match self {
            Self::V1 => "#1",
            Self::V2 => "",
        }
    }

    /// The pong frame text.
    pub fn pong(self) -> &'static str {
        match self {
            Self::V1 => "#2",
            Self::V2 => "",
        }
    }
}

/// A decoded frame.
#[derive(Clone, Debug, PartialEq)]
pub enum Decoded {
    /// The heartbeat the receiver expects (a pong on the server, a ping on the client).
    Heartbeat,
    /// One packet, or the packets of a batch in order.
    Packets(Vec<Packet>),
    /// Text that is not JSON (or not valid JSON): SocketCluster's `raw` event.
    Raw(String),
}

/// Decodes a frame's text. `heartbeat` is the heartbeat string the receiver expects.
///
/// ```
/// use socketcluster::protocol::codec::{decode, Decoded};
/// use socketcluster::protocol::Packet;
/// assert_eq!(decode("", ""), Decoded::Heartbeat);
/// assert_eq!(decode("{oops", ""), Decoded::Raw("{oops".into()));
/// let Decoded::Packets(p) = decode(r#"[{"rid":1},{"rid":2}]"#, "") else { panic!() };
/// assert_eq!(p.len(), 2);
/// assert!(matches!(p[0], Packet::Response { rid: 1, .. }));
/// ```
pub fn decode(text: &str, heartbeat: &str) -> Decoded {
    if text == heartbeat {
        return Decoded::Heartbeat;
    }
    let trimmed = text.trim_start();
    if !(trimmed.starts_with('{') || trimmed.starts_with('[')) {
        return Decoded::Raw(String::from(text));
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Array(items)) => Decoded::Packets(items.into_iter().map(Packet::from_value).collect()),
        Ok(v) => Decoded::Packets(alloc::vec![Packet::from_value(v)]),
        Err(_) => Decoded::Raw(String::from(text)),
    }
}

/// Decodes a binary frame: its bytes as UTF-8 text (invalid sequences replaced), then [`decode`].
pub fn decode_binary(bytes: &[u8], heartbeat: &str) -> Decoded {
    decode(&String::from_utf8_lossy(bytes), heartbeat)
}

/// Binary data in SocketCluster's JSON form: `{"base64":true,"data":"<standard base64>"}`.
///
/// ```
/// let v = socketcluster::protocol::codec::binary(b"hello");
/// assert_eq!(v, serde_json::json!({"base64": true, "data": "aGVsbG8="}));
/// ```
pub fn binary(bytes: &[u8]) -> Value {
    let mut map = serde_json::Map::new();
    map.insert(String::from("base64"), Value::Bool(true));
    map.insert(String::from("data"), Value::String(base64::engine::general_purpose::STANDARD.encode(bytes)));
    Value::Object(map)
}

/// The bytes of a base64 object made by [`binary`] (or by a JS peer sending a `Buffer`), if
/// `value` is one.
pub fn binary_bytes(value: &Value) -> Option<Vec<u8>> {
    let map = value.as_object()?;
    if map.get("base64") != Some(&Value::Bool(true)) {
        return None;
    }
    base64::engine::general_purpose::STANDARD.decode(map.get("data")?.as_str()?).ok()
}
