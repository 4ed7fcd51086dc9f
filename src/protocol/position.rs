//! Positions in a channel's history, and how they travel without breaking SocketCluster's
//! clients (an extension of ours; SocketCluster has no history).
//!
//! - Each publish to a channel with history gets the next **offset** (1, 2, 3, ...) within the
//!   channel's **epoch** (a random string; a new epoch means the history was lost, e.g. a
//!   restart, and offsets start again). The `#publish` frame carries both next to the channel:
//!   `{"event":"#publish","data":{"channel":C,"data":D,"offset":7,"epoch":"k3x9"}}` —
//!   socketcluster-client reads `channel` and `data` only, so it is unaffected.
//! - A subscriber asks to recover in its `#subscribe`'s data:
//!   `{"channel":C,"data":{"recover":{"offset":7,"epoch":"k3x9"}}}` (the last position it saw).
//! - The acknowledgement of a `#subscribe` to a channel with history carries the channel's
//!   position (the last offset, or 0) and, when recovery was asked for, whether it worked:
//!   `{"rid":N,"data":{"channel":C,"offset":12,"epoch":"k3x9","recovered":true,"replayed":5}}`,
//!   or `"recovered":false,"reason":"..."` — the subscription stands either way; the replayed
//!   publishes (offsets 8 to 12 here) come before the acknowledgement, live ones after it.

use alloc::string::String;

use serde_json::{Map, Value};

/// A position in a channel's history.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Position {
    /// The offset of the last publish seen (0: none yet).
    pub offset: u64,
    /// The history's epoch.
    pub epoch: String,
}

impl Position {
    /// `{"offset":N,"epoch":E}`.
    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        m.insert(String::from("offset"), Value::from(self.offset));
        m.insert(String::from("epoch"), Value::String(self.epoch.clone()));
        Value::Object(m)
    }

    /// The position in an object with numeric `offset` and string `epoch` (a `#publish`'s data,
    /// a subscribe acknowledgement, a recovery request).
    ///
    /// ```
    /// use socketcluster::protocol::position::Position;
    /// let v = serde_json::json!({"channel": "c", "data": 1, "offset": 7, "epoch": "e"});
    /// assert_eq!(Position::from_value(&v), Some(Position { offset: 7, epoch: "e".into() }));
    /// assert_eq!(Position::from_value(&serde_json::json!({"offset": "7", "epoch": "e"})), None);
    /// ```
    pub fn from_value(v: &Value) -> Option<Position> {
        let offset = v.get("offset")?.as_u64()?;
        let epoch = v.get("epoch")?.as_str()?;
        Some(Position { offset, epoch: String::from(epoch) })
    }
}

/// What a subscribe acknowledgement said about recovery ([`parse_ack`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ack {
    /// The channel's position when the subscription started.
    pub position: Position,
    /// `None`: recovery was not asked for; `Some(Ok(n))`: `n` publishes replayed;
    /// `Some(Err(reason))`: could not recover.
    pub recovery: Option<Result<u64, String>>,
}

/// Reads a subscribe acknowledgement's data (`None`: the channel has no history).
pub fn parse_ack(data: Option<&Value>) -> Option<Ack> {
    let data = data?;
    let position = Position::from_value(data)?;
    let recovery = match data.get("recovered").and_then(Value::as_bool) {
        None => None,
        Some(true) => Some(Ok(data.get("replayed").and_then(Value::as_u64).unwrap_or(0))),
        Some(false) => Some(Err(String::from(
            data.get("reason").and_then(Value::as_str).unwrap_or("the server could not recover"),
        ))),
    };
    Some(Ack { position, recovery })
}

/// `data` with `"recover": position` added, for a `#subscribe`; `None` when `data` is not an
/// object (or absent), since there is nowhere to put it then.
pub fn with_recover(data: Option<&Value>, position: &Position) -> Option<Value> {
    let mut m = match data {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => return None,
    };
    m.insert(String::from("recover"), position.to_value());
    Some(Value::Object(m))
}
