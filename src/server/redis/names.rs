//! How SocketCluster channels and publications look in Redis: channel names (escaped, under a
//! prefix) and message payloads (the publishing process's id, then the encoded `#publish` frame).

use alloc::string::String;
use alloc::vec::Vec;

use serde::Deserialize;
use serde_json::{Map, Value};

/// Length of an instance id in a payload (16 lowercase hex digits).
pub(super) const ID_LEN: usize = 16;

/// Bytes of a channel name that stay as they are; every other byte is written `%XX`.
fn plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/')
}

/// `PREFIX:ESCAPED`: the channel name's bytes outside `[A-Za-z0-9-_.~/]` become `%XX`
/// (uppercase hex). The escaped part never contains `:`, so names under different prefixes never
/// collide; it has no glob characters (`*?[]`) and no hash-tag braces (`{}`).
pub(super) fn redis_channel(prefix: &str, channel: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(prefix.len() + 1 + channel.len());
    out.push_str(prefix);
    out.push(':');
    for &b in channel.as_bytes() {
        if plain(b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
    }
    out
}

/// The channel name of `PREFIX:ESCAPED`, or `None` when `name` is not under `prefix` or is not
/// an escaping this crate produces.
pub(super) fn sc_channel(prefix: &str, name: &[u8]) -> Option<String> {
    let rest = name.strip_prefix(prefix.as_bytes())?.strip_prefix(b":")?;
    let hex = |b: u8| char::from(b).to_digit(16).filter(|_| !b.is_ascii_lowercase());
    let mut bytes = Vec::with_capacity(rest.len());
    let mut i = 0;
    while i < rest.len() {
        let b = rest[i];
        if plain(b) {
            bytes.push(b);
            i += 1;
        } else if b == b'%' {
            let hi = hex(*rest.get(i + 1)?)?;
            let lo = hex(*rest.get(i + 2)?)?;
            let v = u8::try_from(hi * 16 + lo).ok()?;
            if plain(v) {
                return None; // not how we write it: one spelling per name
            }
            bytes.push(v);
            i += 3;
        } else {
            return None;
        }
    }
    String::from_utf8(bytes).ok()
}

/// The keys of a channel's history: its hash (last offset `o`, epoch `e`) and its stream (one
/// hash slot); then the base of every channel's epoch.
pub(super) fn history_keys(prefix: &str, channel: &str) -> [String; 3] {
    let tag = redis_channel(prefix, channel);
    [
        alloc::format!("{{{tag}}}:meta"),
        alloc::format!("{{{tag}}}:history"),
        alloc::format!("{prefix}history-base"),
    ]
}

/// `INSTANCE_ID` (16 hex digits) followed by the `#publish` frame.
pub(super) fn payload(instance: &str, frame: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(instance.len() + frame.len());
    p.extend_from_slice(instance.as_bytes());
    p.extend_from_slice(frame.as_bytes());
    p
}

/// A `#publish` frame as `packet::encode_publish` writes it, nothing more: other processes'
/// frames are forwarded to sockets as they are.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Frame {
    event: String,
    data: Map<String, Value>,
}

/// A publication received from Redis.
#[derive(Debug, PartialEq)]
pub(super) struct Inbound<'a> {
    /// The publishing process's id.
    pub(super) instance: &'a [u8],
    /// The `#publish` frame, as its publisher encoded it.
    pub(super) frame: &'a str,
    /// The publish's data (`None` when it had none).
    pub(super) data: Option<Value>,
    /// Its position, for a channel with history.
    pub(super) position: Option<crate::protocol::position::Position>,
}

/// Reads a payload published on `channel`; `None` when it is not one of ours or its frame is not
/// a `#publish` to that channel.
pub(super) fn parse_payload<'a>(channel: &str, payload: &'a [u8]) -> Option<Inbound<'a>> {
    let instance = payload.get(..ID_LEN)?;
    if !instance.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let frame = core::str::from_utf8(payload.get(ID_LEN..)?).ok()?;
    let mut parsed: Frame = serde_json::from_str(frame).ok()?;
    if parsed.event != "#publish"
        || parsed.data.get("channel").and_then(Value::as_str) != Some(channel)
        || parsed.data.keys().any(|k| !matches!(k.as_str(), "channel" | "data" | "offset" | "epoch"))
    {
        return None;
    }
    let data = parsed.data.remove("data");
    // What is left is the channel and, for a channel with history, the position.
    let position = if parsed.data.contains_key("offset") || parsed.data.contains_key("epoch") {
        Some(crate::protocol::position::Position::from_value(&Value::Object(parsed.data))?)
    } else {
        None
    };
    Some(Inbound { instance, frame, data, position })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::packet;

    #[test]
    fn names_round_trip_and_stay_inert() {
        for ch in ["news", "a.b/c-d_e~f", "", "ünï cödé", "*", "x?y[z]", "{tag}", "100%", "a:b", "\n\0\u{7f}"]
        {
            let name = redis_channel("app", ch);
            let escaped = name.strip_prefix("app:").unwrap_or_default();
            assert!(!escaped.contains([':', '*', '?', '[', ']', '{', '}', ' ']), "{name}");
            assert_eq!(sc_channel("app", name.as_bytes()).as_deref(), Some(ch), "{name}");
        }
        assert_eq!(redis_channel("sc", "room 1*"), "sc:room%201%2A");
        assert_eq!(redis_channel("sc", "é"), "sc:%C3%A9");
    }

    #[test]
    fn foreign_names_are_refused() {
        assert_eq!(sc_channel("app", b"other:news"), None);
        assert_eq!(sc_channel("app", b"appnews"), None);
        assert_eq!(sc_channel("app", b"app:x y"), None);
        assert_eq!(sc_channel("app", b"app:%41"), None, "A is written plainly");
        assert_eq!(sc_channel("app", b"app:%c3%a9"), None, "lowercase hex");
        assert_eq!(sc_channel("app", b"app:%C3"), None, "not UTF-8");
        assert_eq!(sc_channel("app", b"app:%2"), None);
        assert_eq!(sc_channel("app", b"app:%"), None);
        // Prefixes that are prefixes of each other do not share names.
        assert_eq!(sc_channel("app", redis_channel("app:v2", "x").as_bytes()), None);
        assert_eq!(sc_channel("app:v2", redis_channel("app", "v2:x").as_bytes()), None);
    }

    #[test]
    fn payloads_round_trip() {
        let data = serde_json::json!({ "n": 1 });
        let frame = packet::encode_publish("ch", Some(&data)).unwrap_or_default();
        let p = payload("0123456789abcdef", &frame);
        let got = parse_payload("ch", &p);
        assert_eq!(
            got,
            Some(Inbound {
                instance: b"0123456789abcdef",
                frame: &frame,
                data: Some(data.clone()),
                position: None
            })
        );
        // With a position (a channel with history); a malformed one is not ours.
        let at = crate::protocol::position::Position { offset: 3, epoch: "e".into() };
        let framed = packet::encode_publish_at("ch", Some(&data), Some(&at)).unwrap_or_default();
        let framed = payload("0123456789abcdef", &framed);
        let got = parse_payload("ch", &framed);
        assert_eq!(got.map(|i| (i.data, i.position)), Some((Some(data.clone()), Some(at))));
        let bad = r##"{"event":"#publish","data":{"channel":"ch","data":1,"offset":"3","epoch":"e"}}"##;
        assert_eq!(parse_payload("ch", &payload("0123456789abcdef", bad)), None);
        let none = packet::encode_publish::<Value>("ch", None).unwrap_or_default();
        assert_eq!(parse_payload("ch", &payload("0123456789abcdef", &none)).map(|i| i.data), Some(None));
        let null = packet::encode_publish("ch", Some(&Value::Null)).unwrap_or_default();
        assert_eq!(
            parse_payload("ch", &payload("0123456789abcdef", &null)).map(|i| i.data),
            Some(Some(Value::Null))
        );
        assert_eq!(parse_payload("other", &p), None, "channel mismatch");
        assert_eq!(parse_payload("ch", b"short"), None);
        assert_eq!(parse_payload("ch", &payload("0123456789abcdeg", &frame)), None);
        assert_eq!(parse_payload("ch", &payload("0123456789abcdef", "{\"event\":\"x\",\"data\":{}}")), None);
        let with_cid = r##"{"event":"#publish","data":{"channel":"ch","data":1},"cid":5}"##;
        assert_eq!(parse_payload("ch", &payload("0123456789abcdef", with_cid)), None, "only a publish");
        let extra = r##"{"event":"#publish","data":{"channel":"ch","data":1,"x":2}}"##;
        assert_eq!(parse_payload("ch", &payload("0123456789abcdef", extra)), None);
        assert_eq!(parse_payload("ch", &payload("0123456789abcdef", "[1]")), None);
    }
}
