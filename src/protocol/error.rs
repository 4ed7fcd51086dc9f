//! Errors on the wire and in the API.
//!
//! SocketCluster sends an error as an object: `message` first, then every own property of the
//! error (`name`, and custom fields such as `extra` or `statusCode`). [`RemoteError`] writes
//! `message`, then `name`, then the other fields (in the map's order). A plain `Error('plain')`
//! travels as `{"message":"plain"}` and the receiver calls it `Error`. A non-object error (a bare
//! string) travels as it is. [`RemoteError`] keeps that wire value exactly, so an error received
//! from one peer can be passed on to another unchanged.

use alloc::borrow::ToOwned;
use alloc::format;
use alloc::string::String;
use core::fmt;

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};

/// An error in its wire form (SocketCluster's dehydrated error).
///
/// ```
/// use socketcluster::protocol::RemoteError;
/// let e = RemoteError::new("CustomError", "boom").with("extra", 42);
/// assert_eq!(serde_json::to_string(&e).unwrap(), r#"{"message":"boom","name":"CustomError","extra":42}"#);
/// assert_eq!(e.name(), "CustomError");
/// let plain = RemoteError::plain("plain");
/// assert_eq!(plain.name(), "Error");
/// assert_eq!(serde_json::to_string(&plain).unwrap(), r#"{"message":"plain"}"#);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct RemoteError(Value);

impl RemoteError {
    /// An error with a name and a message.
    pub fn new(name: impl Into<String>, message: impl Into<String>) -> Self {
        let mut map = Map::new();
        map.insert("message".to_owned(), Value::String(message.into()));
        map.insert("name".to_owned(), Value::String(name.into()));
        Self(Value::Object(map))
    }

    /// An error with only a message (a plain JS `Error`): the receiver names it `Error`.
    pub fn plain(message: impl Into<String>) -> Self {
        let mut map = Map::new();
        map.insert("message".to_owned(), Value::String(message.into()));
        Self(Value::Object(map))
    }

    /// Adds a field (`extra`, `statusCode`, `type`, ...). No effect on a non-object error.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        if let Value::Object(map) = &mut self.0 {
            map.insert(key.to_owned(), value.into());
        }
        self
    }

    /// The error exactly as it came off the wire (any JSON value).
    pub fn from_value(value: Value) -> Self {
        Self(value)
    }

    /// The wire value.
    pub fn as_value(&self) -> &Value {
        &self.0
    }

    /// The wire value, owned.
    pub fn into_value(self) -> Value {
        self.0
    }

    /// The error's name: its `name` field, else `Error`.
    pub fn name(&self) -> &str {
        match &self.0 {
            Value::Object(m) => m.get("name").and_then(Value::as_str).unwrap_or("Error"),
            _ => "Error",
        }
    }

    /// The error's message: its `message` field (`Invalid error message format` when that is
    /// not a string); a bare string error is its own message.
    pub fn message(&self) -> &str {
        match &self.0 {
            Value::Object(m) => {
                m.get("message").and_then(Value::as_str).unwrap_or("Invalid error message format")
            }
            Value::String(s) => s,
            _ => "Invalid error message format",
        }
    }

    /// Another field of the error (`extra`, `statusCode`, `type`, ...).
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.as_object().and_then(|m| m.get(key))
    }
}

impl Serialize for RemoteError {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Value::Object(m) => {
                let mut out = s.serialize_map(Some(m.len()))?;
                // `message` first, then `name`, as SocketCluster's dehydrated errors have them.
                for key in ["message", "name"] {
                    if let Some(v) = m.get(key) {
                        out.serialize_entry(key, v)?;
                    }
                }
                for (k, v) in m.iter().filter(|(k, _)| *k != "message" && *k != "name") {
                    out.serialize_entry(k, v)?;
                }
                out.end()
            }
            other => other.serialize(s),
        }
    }
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.name(), self.message())
    }
}

impl core::error::Error for RemoteError {}

/// How a call was cut off by a lost connection (`BadConnectionError.type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AbortKind {
    /// The connection never opened (`connectAbort`).
    ConnectAbort,
    /// The connection was open and then closed (`disconnect`).
    Disconnect,
}

impl AbortKind {
    /// The wire name: `connectAbort` or `disconnect`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ConnectAbort => "connectAbort",
            Self::Disconnect => "disconnect",
        }
    }
}

/// Why an operation (an invoke, a subscribe, a publish) failed.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// No response within the ack timeout (`TimeoutError`).
    Timeout {
        /// The event (procedure) name.
        event: String,
    },
    /// The connection was lost or could not be made before the call completed
    /// (`BadConnectionError`).
    BadConnection {
        /// The event name.
        event: String,
        /// Connection never opened, or closed while open.
        kind: AbortKind,
        /// The close code.
        code: u16,
        /// The close reason.
        reason: String,
    },
    /// The peer answered with an error.
    Remote(RemoteError),
    /// Arguments that cannot be sent (`InvalidArgumentsError`), e.g. data that fails to serialize.
    InvalidArguments(String),
    /// An action not allowed in the current state (`InvalidActionError`).
    InvalidAction(String),
}

impl Error {
    /// The SocketCluster error name (`TimeoutError`, `BadConnectionError`, the remote name, ...).
    pub fn name(&self) -> &str {
        match self {
            Self::Timeout { .. } => "TimeoutError",
            Self::BadConnection { .. } => "BadConnectionError",
            Self::Remote(e) => e.name(),
            Self::InvalidArguments(_) => "InvalidArgumentsError",
            Self::InvalidAction(_) => "InvalidActionError",
        }
    }

    /// Whether this is an ack timeout.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout { .. })
    }

    /// The error in SocketCluster's wire form (what a JS peer would see).
    ///
    /// ```
    /// use socketcluster::protocol::Error;
    /// let e = Error::Timeout { event: "echo".into() };
    /// assert_eq!(e.to_remote().message(), "Event response for echo event timed out");
    /// ```
    pub fn to_remote(&self) -> RemoteError {
        match self {
            Self::Timeout { event } => {
                RemoteError::new("TimeoutError", format!("Event response for {event} event timed out"))
            }
            Self::BadConnection { event, kind, code, reason } => RemoteError::new(
                "BadConnectionError",
                format!("Event {event} was aborted due to a bad connection"),
            )
            .with("type", kind.as_str())
            .with("code", *code)
            .with("reason", reason.as_str()),
            Self::Remote(e) => e.clone(),
            Self::InvalidArguments(m) => RemoteError::new("InvalidArgumentsError", m.as_str()),
            Self::InvalidAction(m) => RemoteError::new("InvalidActionError", m.as_str()),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.to_remote();
        write!(f, "{}: {}", r.name(), r.message())
    }
}

impl core::error::Error for Error {}

impl From<RemoteError> for Error {
    fn from(e: RemoteError) -> Self {
        Self::Remote(e)
    }
}
