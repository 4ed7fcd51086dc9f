//! [`Request`]: an invoke waiting for its answer (SocketCluster's `AGRequest`), on either side.

use alloc::string::String;
use alloc::sync::Arc;
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::protocol::packet;
use crate::protocol::{Error, RemoteError};

/// Where a response frame goes: the socket that received the invoke.
pub(crate) trait Respond: Send + Sync {
    /// Queues `frame`; false when the connection is gone.
    fn respond(&self, frame: String) -> bool;
}

/// An invoke from the peer, yielded by a `procedure(name)` consumer. Answer it once, with
/// [`end`](Self::end) or [`error`](Self::error); clones share the answer, so a second answer from
/// any clone is refused with `InvalidActionError`. A request nobody answers leaves the caller to
/// its ack timeout, as in SocketCluster.
#[derive(Clone)]
pub struct Request {
    procedure: Arc<str>,
    data: Option<Value>,
    cid: u64,
    sent: Arc<AtomicBool>,
    responder: Arc<dyn Respond>,
    pending: Option<Arc<Pending>>,
    /// Closed once the answer is queued (or when the last clone is dropped unanswered).
    answered: Option<async_channel::Sender<()>>,
}

/// Counts a socket's requests until one is answered or its last clone is dropped.
struct Pending {
    count: Arc<AtomicUsize>,
    released: AtomicBool,
}

impl Pending {
    fn release(&self) {
        if !self.released.swap(true, Ordering::AcqRel) {
            self.count.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.release();
    }
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("procedure", &self.procedure)
            .field("id", &self.cid)
            .field("data", &self.data)
            .field("sent", &self.is_sent())
            .finish()
    }
}

impl Request {
    pub(crate) fn new(procedure: &str, data: Option<Value>, cid: u64, responder: Arc<dyn Respond>) -> Self {
        Self {
            procedure: Arc::from(procedure),
            data,
            cid,
            sent: Arc::new(AtomicBool::new(false)),
            responder,
            pending: None,
            answered: None,
        }
    }

    /// A request whose answer (or the drop of its last clone) ends the returned receiver's
    /// `recv`: the server waits on it before the later packets of a batch.
    pub(crate) fn watched(mut self) -> (Self, async_channel::Receiver<()>) {
        let (tx, rx) = async_channel::bounded(1);
        self.answered = Some(tx);
        (self, rx)
    }

    /// A request counted in `pending` until it is answered or its last clone is dropped.
    pub(crate) fn counted(mut self, pending: &Arc<AtomicUsize>) -> Self {
        pending.fetch_add(1, Ordering::AcqRel);
        self.pending = Some(Arc::new(Pending { count: pending.clone(), released: AtomicBool::new(false) }));
        self
    }

    /// The procedure name.
    pub fn procedure(&self) -> &str {
        &self.procedure
    }

    /// The call id (the `cid` this request answers with `rid`).
    pub fn id(&self) -> u64 {
        self.cid
    }

    /// The request data (`Null` when the invoke had none).
    pub fn data(&self) -> &Value {
        self.data.as_ref().unwrap_or(&Value::Null)
    }

    /// The request data, `None` when the invoke had none (distinct from `null`).
    pub fn raw_data(&self) -> Option<&Value> {
        self.data.as_ref()
    }

    /// The data as a typed value.
    pub fn data_as<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_value(self.data().clone())
            .map_err(|e| Error::InvalidArguments(alloc::format!("{e}")))
    }

    /// Whether an answer was sent.
    pub fn is_sent(&self) -> bool {
        self.sent.load(Ordering::Acquire)
    }

    fn send(&self, frame: impl FnOnce() -> Result<String, Error>) -> Result<(), Error> {
        if self.sent.swap(true, Ordering::AcqRel) {
            return Err(Error::InvalidAction(alloc::format!(
                "Response to request {} has already been sent",
                self.cid
            )));
        }
        // Answered: no longer waiting (before the answer is queued, so a client that invokes
        // again as soon as it reads the answer finds the slot free).
        if let Some(p) = &self.pending {
            p.release();
        }
        let queued = frame().map(|f| self.responder.respond(f));
        if let Some(tx) = &self.answered {
            tx.close();
        }
        if queued? {
            Ok(())
        } else {
            Err(Error::BadConnection {
                event: String::from(&*self.procedure),
                kind: crate::protocol::AbortKind::Disconnect,
                code: crate::protocol::close::ABNORMAL,
                reason: String::new(),
            })
        }
    }

    /// Answers with `data`: `{"rid":N,"data":...}`.
    pub fn end<D: Serialize>(&self, data: D) -> Result<(), Error> {
        self.send(|| {
            packet::encode_response(self.cid, Some(&data))
                .map_err(|e| Error::InvalidArguments(alloc::format!("{e}")))
        })
    }

    /// Answers without data: `{"rid":N}` (the caller sees `undefined` in JS, `Null` here).
    pub fn end_empty(&self) -> Result<(), Error> {
        self.end_value(None)
    }

    /// Answers with `data`, or without data when `None` (echoes a request's
    /// [`raw_data`](Self::raw_data) faithfully).
    pub fn end_value(&self, data: Option<Value>) -> Result<(), Error> {
        self.send(|| {
            packet::encode_response(self.cid, data.as_ref())
                .map_err(|e| Error::InvalidArguments(alloc::format!("{e}")))
        })
    }

    /// Answers with an error: `{"rid":N,"error":...}`.
    pub fn error(&self, error: RemoteError) -> Result<(), Error> {
        self.send(|| Ok(packet::encode_error(self.cid, &error)))
    }
}
