//! Packet shapes and their encoding.
//!
//! | kind | shape |
//! |---|---|
//! | transmit | `{"event":E,"data":D}` (`data` absent when there is none) |
//! | invoke | `{"event":E,"data":D,"cid":N}` (the server writes `cid` before `data`) |
//! | response | `{"rid":N,"data":D}` / `{"rid":N}` / `{"rid":N,"error":ERR}` |
//!
//! Encoders take borrowed parts and return the frame text, so a publish is encoded once and the
//! same bytes go to every subscriber.

use alloc::string::String;

use serde::Serialize;
use serde_json::Value;

use super::error::RemoteError;

/// A decoded packet, classified as SocketCluster does: a string `event` makes an event (an invoke
/// when `cid` is a non-negative integer, else a transmit — so a string `cid` makes a transmit);
/// otherwise an integer `rid` makes a response; anything else is raw.
#[derive(Clone, Debug, PartialEq)]
pub enum Packet {
    /// A transmit (`cid` is `None`) or an invoke.
    Event {
        /// The event name.
        event: String,
        /// The data; `None` when the field is absent (distinct from `null`).
        data: Option<Value>,
        /// The call id of an invoke.
        cid: Option<u64>,
    },
    /// A response to an earlier invoke.
    Response {
        /// The call id it answers.
        rid: u64,
        /// `Ok(data)` (`None` when absent) or the error.
        result: Result<Option<Value>, RemoteError>,
    },
    /// Any other JSON value.
    Raw(Value),
}

impl Packet {
    /// Classifies one JSON value (one element of a batch).
    pub fn from_value(value: Value) -> Self {
        let Value::Object(mut map) = value else { return Self::Raw(value) };
        match map.remove("event") {
            Some(Value::String(event)) => {
                let cid = map.get("cid").and_then(as_id);
                return Self::Event { event, data: map.remove("data"), cid };
            }
            Some(other) => {
                map.insert(String::from("event"), other);
            }
            None => {}
        }
        if let Some(rid) = map.get("rid").and_then(as_id) {
            let result = match map.remove("error") {
                Some(Value::Null) | None => Ok(map.remove("data")),
                Some(e) => Err(RemoteError::from_value(e)),
            };
            return Self::Response { rid, result };
        }
        Self::Raw(Value::Object(map))
    }
}

/// A call id: a non-negative integer, also when written as a float (`1.0`, as a JS peer may).
fn as_id(v: &Value) -> Option<u64> {
    // `f64::fract` is not in `core`: a whole number survives the round trip through `u64`.
    v.as_u64().or_else(|| {
        v.as_f64()
            .filter(|f| *f >= 0.0 && *f < 9_007_199_254_740_992.0 && (*f as u64) as f64 == *f)
            .map(|f| f as u64)
    })
}

#[derive(Serialize)]
struct TransmitOut<'a, D: Serialize> {
    event: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a D>,
}

#[derive(Serialize)]
struct ClientInvokeOut<'a, D: Serialize> {
    event: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a D>,
    cid: u64,
}

#[derive(Serialize)]
struct ServerInvokeOut<'a, D: Serialize> {
    event: &'a str,
    cid: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a D>,
}

#[derive(Serialize)]
struct ResponseOut<'a, D: Serialize> {
    rid: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a D>,
}

#[derive(Serialize)]
struct ErrorOut<'a> {
    rid: u64,
    error: &'a RemoteError,
}

#[derive(Serialize)]
struct PublishData<'a, D: Serialize> {
    channel: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a D>,
    #[serde(skip_serializing_if = "Option::is_none")]
    offset: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    epoch: Option<&'a str>,
}

fn to_string<T: Serialize>(value: &T) -> Result<String, serde_json::Error> {
    serde_json::to_string(value)
}

/// `{"event":E,"data":D}`.
///
/// ```
/// use socketcluster::protocol::packet::encode_transmit;
/// assert_eq!(encode_transmit("echo", Some(&1)).unwrap(), r##"{"event":"echo","data":1}"##);
/// assert_eq!(encode_transmit::<()>("#removeAuthToken", None).unwrap(), r##"{"event":"#removeAuthToken"}"##);
/// ```
pub fn encode_transmit<D: Serialize>(event: &str, data: Option<&D>) -> Result<String, serde_json::Error> {
    to_string(&TransmitOut { event, data })
}

/// A client's invoke: `{"event":E,"data":D,"cid":N}`.
pub fn encode_client_invoke<D: Serialize>(
    event: &str,
    data: Option<&D>,
    cid: u64,
) -> Result<String, serde_json::Error> {
    to_string(&ClientInvokeOut { event, data, cid })
}

/// A server's invoke: `{"event":E,"cid":N,"data":D}`.
pub fn encode_server_invoke<D: Serialize>(
    event: &str,
    data: Option<&D>,
    cid: u64,
) -> Result<String, serde_json::Error> {
    to_string(&ServerInvokeOut { event, cid, data })
}

/// A success response: `{"rid":N,"data":D}`, or `{"rid":N}` without data.
pub fn encode_response<D: Serialize>(rid: u64, data: Option<&D>) -> Result<String, serde_json::Error> {
    to_string(&ResponseOut { rid, data })
}

/// An error response: `{"rid":N,"error":ERR}`.
pub fn encode_error(rid: u64, error: &RemoteError) -> String {
    // A RemoteError is a JSON value; serializing it cannot fail.
    to_string(&ErrorOut { rid, error }).unwrap_or_default()
}

/// A channel message: `{"event":"#publish","data":{"channel":C,"data":D}}`.
///
/// ```
/// use socketcluster::protocol::packet::encode_publish;
/// assert_eq!(
///     encode_publish("news", Some(&"hi")).unwrap(),
///     r##"{"event":"#publish","data":{"channel":"news","data":"hi"}}"##
/// );
/// ```
pub fn encode_publish<D: Serialize>(channel: &str, data: Option<&D>) -> Result<String, serde_json::Error> {
    encode_publish_at(channel, data, None)
}

/// [`encode_publish`] for a channel with history: the position follows the data
/// (see [`position`](super::position)).
///
/// ```
/// use socketcluster::protocol::packet::encode_publish_at;
/// use socketcluster::protocol::position::Position;
/// let at = Position { offset: 7, epoch: "e".into() };
/// assert_eq!(
///     encode_publish_at("news", Some(&"hi"), Some(&at)).unwrap(),
///     r##"{"event":"#publish","data":{"channel":"news","data":"hi","offset":7,"epoch":"e"}}"##
/// );
/// ```
pub fn encode_publish_at<D: Serialize>(
    channel: &str,
    data: Option<&D>,
    position: Option<&super::position::Position>,
) -> Result<String, serde_json::Error> {
    let publish = PublishData {
        channel,
        data,
        offset: position.map(|p| p.offset),
        epoch: position.map(|p| p.epoch.as_str()),
    };
    to_string(&TransmitOut { event: "#publish", data: Some(&publish) })
}
