//! [`ServerSocket`]: one client connection on the server (SocketCluster's `AGServerSocket`).

use alloc::collections::BTreeSet;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{ServerShared, SocketEvent};
use crate::outbox::Outbox;
use crate::protocol::server::ServerState;
use crate::protocol::{AbortKind, Error, RemoteError, ServerConnection, close, packet};
use crate::receiver::Receiver;
use crate::request::{Request, Respond};
use crate::stream::{Consumer, StreamDemux};
use crate::sync::Mutex;

/// A socket's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SocketState {
    /// Waiting for the handshake.
    Connecting,
    /// Handshake complete.
    Open,
    /// Closed.
    Closed,
}

impl SocketState {
    /// `connecting`, `open` or `closed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connecting => "connecting",
            Self::Open => "open",
            Self::Closed => "closed",
        }
    }
}

type Reply = Result<Option<Value>, RemoteError>;

pub(crate) struct SocketInner {
    pub(crate) id: String,
    pub(crate) server: Arc<ServerShared>,
    pub(crate) remote_address: Option<SocketAddr>,
    pub(crate) request_uri: String,
    pub(crate) conn: Mutex<ServerConnection>,
    pub(crate) out: Outbox,
    /// Wakes the socket's driver after an API call changed the connection (a disconnect).
    pub(crate) wake: async_channel::Sender<()>,
    pub(crate) pending: Mutex<HashMap<u64, async_channel::Sender<Reply>>>,
    pub(crate) subscriptions: Mutex<BTreeSet<String>>,
    pub(crate) receivers: StreamDemux<Option<Value>>,
    pub(crate) procedures: StreamDemux<Request>,
    pub(crate) listeners: StreamDemux<SocketEvent>,
    pub(crate) subscriber_id: u64,
    pub(crate) inbound_received: AtomicU64,
    pub(crate) inbound_processed: AtomicU64,
    /// The close code and reason, once closed.
    pub(crate) closed: Mutex<Option<(u16, String)>>,
    pub(crate) auth: Mutex<super::auth::AuthSlot>,
    /// Requests of this socket alive in procedure consumers (`max_pending_requests`).
    pub(crate) pending_requests: Arc<core::sync::atomic::AtomicUsize>,
    /// Where publications go first when the socket has outbound middleware.
    pub(crate) publish_filter: Option<async_channel::Sender<super::Publication>>,
    /// Bound when the socket was created.
    pub(crate) middleware: Arc<super::Middleware>,
}

impl Respond for SocketInner {
    fn respond(&self, frame: String) -> bool {
        self.out.text(frame)
    }
}

/// One client connection. Cheap to clone: clones are handles to the same socket.
#[derive(Clone)]
pub struct ServerSocket {
    pub(crate) inner: Arc<SocketInner>,
}

impl fmt::Debug for ServerSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerSocket").field("id", &self.inner.id).field("state", &self.state()).finish()
    }
}

impl PartialEq for ServerSocket {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl ServerSocket {
    /// The socket id (20 characters, sent to the client in the handshake response).
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The state.
    pub fn state(&self) -> SocketState {
        match self.inner.conn.lock().state() {
            ServerState::Connecting | ServerState::Handshaking => SocketState::Connecting,
            ServerState::Open => SocketState::Open,
            ServerState::Closed => SocketState::Closed,
        }
    }

    /// The peer's address, when the transport has one.
    pub fn remote_address(&self) -> Option<SocketAddr> {
        self.inner.remote_address
    }

    /// The path and query of the WebSocket upgrade request (`/socketcluster/?a=1`).
    pub fn request_uri(&self) -> &str {
        &self.inner.request_uri
    }

    /// A consumer of the client's transmits of `event`. Transmits to an event without consumers
    /// are dropped, as in SocketCluster: create the consumer first.
    pub fn receiver(&self, event: &str) -> Receiver {
        Receiver::new(self.inner.receivers.create_consumer(event))
    }

    /// A consumer of the client's invokes of `procedure`; answer each [`Request`] once.
    pub fn procedure(&self, procedure: &str) -> Consumer<Request> {
        self.inner.procedures.create_consumer(procedure)
    }

    /// A consumer of this socket's events named `event` (`connect`, `disconnect`, `close`,
    /// `error`, `message`, `raw`, `subscribe`, `unsubscribe`, `end`, ...).
    pub fn listener(&self, event: &str) -> Consumer<SocketEvent> {
        self.inner.listeners.create_consumer(event)
    }

    /// The receivers (for close, kill, stats and backpressure of receiver streams).
    pub fn receivers(&self) -> &StreamDemux<Option<Value>> {
        &self.inner.receivers
    }

    /// The procedures.
    pub fn procedures(&self) -> &StreamDemux<Request> {
        &self.inner.procedures
    }

    /// The listeners.
    pub fn listeners(&self) -> &StreamDemux<SocketEvent> {
        &self.inner.listeners
    }

    /// Closes receiver `event`: its consumers end after what they have buffered.
    pub fn close_receiver(&self, event: &str) {
        self.inner.receivers.close(event);
    }

    /// Kills receiver `event`: its consumers end at once.
    pub fn kill_receiver(&self, event: &str) -> usize {
        self.inner.receivers.kill(event)
    }

    /// Closes procedure `procedure`.
    pub fn close_procedure(&self, procedure: &str) {
        self.inner.procedures.close(procedure);
    }

    /// Kills procedure `procedure`.
    pub fn kill_procedure(&self, procedure: &str) -> usize {
        self.inner.procedures.kill(procedure)
    }

    /// Sends a transmit (`{"event":E,"data":D}`). Fails with `BadConnectionError` when the socket
    /// is not open; nothing is dropped silently.
    pub fn transmit<D: Serialize>(&self, event: &str, data: D) -> Result<(), Error> {
        let frame = packet::encode_transmit(event, Some(&data))
            .map_err(|e| Error::InvalidArguments(alloc::format!("{e}")))?;
        self.send_frame(event, frame)
    }

    /// Sends a transmit without data (`{"event":E}`).
    pub fn transmit_empty(&self, event: &str) -> Result<(), Error> {
        let frame = packet::encode_transmit::<Value>(event, None)
            .map_err(|e| Error::InvalidArguments(alloc::format!("{e}")))?;
        self.send_frame(event, frame)
    }

    fn send_frame(&self, event: &str, frame: String) -> Result<(), Error> {
        if self.state() != SocketState::Open || !self.inner.out.text(frame) {
            return Err(self.bad_connection(event));
        }
        Ok(())
    }

    fn bad_connection(&self, event: &str) -> Error {
        Error::BadConnection {
            event: String::from(event),
            kind: AbortKind::ConnectAbort,
            code: close::ABNORMAL,
            reason: String::new(),
        }
    }

    /// Invokes procedure `event` on the client and waits for its answer, at most the server's
    /// ack timeout. An answer without data is `Null`.
    pub async fn invoke<D: Serialize>(&self, event: &str, data: D) -> Result<Value, Error> {
        self.invoke_with_timeout(event, data, self.inner.server.options.ack_timeout).await
    }

    /// [`invoke`](Self::invoke) with "no data" (`None`) kept apart from `null`, both ways.
    pub async fn invoke_raw(
        &self,
        event: &str,
        data: Option<Value>,
        timeout: Duration,
    ) -> Result<Option<Value>, Error> {
        let (tx, rx) = async_channel::bounded(1);
        let cid = {
            let mut conn = self.inner.conn.lock();
            let (cid, frame) = conn.invoke(event, data.as_ref(), None)?;
            self.inner.pending.lock().insert(cid, tx);
            if !self.inner.out.text(frame) {
                conn.calls().cancel(cid);
                self.inner.pending.lock().remove(&cid);
                return Err(self.bad_connection(event));
            }
            cid
        };
        let sleep = self.inner.server.runtime.sleep_until(Instant::now() + timeout);
        let recv = rx.recv();
        let recv = core::pin::pin!(recv);
        match futures::future::select(recv, sleep).await {
            futures::future::Either::Left((Ok(Ok(data)), _)) => Ok(data),
            futures::future::Either::Left((Ok(Err(e)), _)) => Err(Error::Remote(e)),
            futures::future::Either::Left((Err(_), _)) => {
                let (code, reason) = self.close_info();
                Err(Error::BadConnection {
                    event: String::from(event),
                    kind: AbortKind::Disconnect,
                    code,
                    reason,
                })
            }
            futures::future::Either::Right(_) => {
                self.inner.conn.lock().calls().cancel(cid);
                self.inner.pending.lock().remove(&cid);
                Err(Error::Timeout { event: String::from(event) })
            }
        }
    }

    /// The server's ack timeout.
    pub fn ack_timeout(&self) -> Duration {
        self.inner.server.options.ack_timeout
    }

    /// [`invoke`](Self::invoke), with the answer deserialized.
    pub async fn invoke_as<R: DeserializeOwned, D: Serialize>(
        &self,
        event: &str,
        data: D,
    ) -> Result<R, Error> {
        let v = self.invoke(event, data).await?;
        serde_json::from_value(v).map_err(|e| Error::InvalidArguments(alloc::format!("{e}")))
    }

    /// [`invoke`](Self::invoke) with its own ack timeout.
    pub async fn invoke_with_timeout<D: Serialize>(
        &self,
        event: &str,
        data: D,
        timeout: Duration,
    ) -> Result<Value, Error> {
        let value =
            serde_json::to_value(&data).map_err(|e| Error::InvalidArguments(alloc::format!("{e}")))?;
        Ok(self.invoke_raw(event, Some(value), timeout).await?.unwrap_or(Value::Null))
    }

    fn close_info(&self) -> (u16, String) {
        self.inner.closed.lock().clone().unwrap_or((close::ABNORMAL, String::new()))
    }

    /// Closes the connection with `code` (1000 in SocketCluster by default: the JS client then
    /// does not reconnect) and `reason`.
    pub fn disconnect(&self, code: u16, reason: &str) {
        let mut conn = self.inner.conn.lock();
        conn.close(code, reason);
        while let Some(t) = conn.poll_transmit() {
            self.inner.out.transmit(t);
        }
        drop(conn);
        let _ = self.inner.wake.try_send(());
    }

    /// The channels this socket is subscribed to.
    pub fn subscriptions(&self) -> Vec<String> {
        self.inner.subscriptions.lock().iter().cloned().collect()
    }

    /// Whether the socket is subscribed to `channel`.
    pub fn is_subscribed(&self, channel: &str) -> bool {
        self.inner.subscriptions.lock().contains(channel)
    }

    /// Unsubscribes the socket from `channel` and tells it with `#kickOut` (with `message`).
    /// Nothing happens when it is not subscribed; returns whether it was.
    pub async fn kick_out<M: Serialize>(&self, channel: &str, message: M) -> bool {
        if !self.inner.subscriptions.lock().remove(channel) {
            return false;
        }
        let data = serde_json::json!({ "channel": channel, "message": serde_json::to_value(message).unwrap_or(Value::Null) });
        if let Ok(frame) = packet::encode_transmit("#kickOut", Some(&data)) {
            self.inner.out.text(frame);
        }
        self.inner.server.broker.unsubscribe(String::from(channel), self.inner.subscriber_id).await;
        super::trace::kicked_out(self, channel);
        self.inner.server.unsubscribed(self, channel);
        true
    }

    /// Kicks the socket out of each of `channels` it is subscribed to; returns how many.
    pub async fn kick_out_channels<M: Serialize + Clone>(&self, channels: &[&str], message: M) -> usize {
        let mut n = 0;
        for ch in channels {
            n += usize::from(self.kick_out(ch, message.clone()).await);
        }
        n
    }

    /// Kicks the socket out of every channel it is subscribed to; returns how many.
    pub async fn kick_out_all<M: Serialize + Clone>(&self, message: M) -> usize {
        let channels = self.subscriptions();
        let refs: Vec<&str> = channels.iter().map(String::as_str).collect();
        self.kick_out_channels(&refs, message).await
    }

    /// Inbound messages received and not yet processed.
    pub fn inbound_backpressure(&self) -> usize {
        let r = self.inner.inbound_received.load(Ordering::Relaxed);
        let p = self.inner.inbound_processed.load(Ordering::Relaxed);
        r.saturating_sub(p) as usize
    }

    /// Frames queued for this socket and not yet handed to the WebSocket.
    pub fn outbound_backpressure(&self) -> usize {
        self.inner.out.len()
    }

    /// The largest backlog of a receiver consumer.
    pub fn receiver_backpressure(&self) -> usize {
        self.inner.receivers.backpressure_all()
    }

    /// The largest backlog of a procedure consumer.
    pub fn procedure_backpressure(&self) -> usize {
        self.inner.procedures.backpressure_all()
    }

    /// The largest backlog of a listener consumer.
    pub fn listener_backpressure(&self) -> usize {
        self.inner.listeners.backpressure_all()
    }

    /// The largest of all the backlogs above.
    pub fn backpressure(&self) -> usize {
        self.inbound_backpressure()
            .max(self.outbound_backpressure())
            .max(self.receiver_backpressure())
            .max(self.procedure_backpressure())
            .max(self.listener_backpressure())
    }
}
