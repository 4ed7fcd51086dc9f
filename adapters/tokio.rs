//! The tokio adapter: only what differs per runtime — the [`Runtime`] implementation, TCP accept
//! and connect — for tokio. The smol adapter has the same functions.
//!
//! Call these from within a tokio runtime with the time driver enabled; tasks are spawned on it.

use alloc::boxed::Box;
use alloc::sync::Arc;
use core::time::Duration;
use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use async_tungstenite::tokio::TokioAdapter;

use async_tungstenite::tungstenite::Error as WsError;
use async_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::client::{Client, ClientOptions, Connector, Tls, WsSink, WsStream, handshake, target};
use crate::runtime::{BoxFuture, Runtime};
use crate::server::{Server, ServerOptions, ServerTls};
use crate::stream::{Consumer, TimedOut};

/// The tokio runtime behind a handle: `Handle::spawn` and `tokio::time`.
#[derive(Debug, Clone)]
pub struct TokioRuntime(tokio::runtime::Handle);

impl TokioRuntime {
    /// The runtime this is called from. Panics outside a tokio runtime.
    pub fn current() -> Self {
        Self(tokio::runtime::Handle::current())
    }
}

impl Runtime for TokioRuntime {
    fn spawn(&self, future: BoxFuture<()>) {
        self.0.spawn(future);
    }

    fn sleep_until(&self, deadline: Instant) -> BoxFuture<()> {
        // Created inside the runtime's context, so it can be polled from anywhere.
        let sleep = {
            let _guard = self.0.enter();
            tokio::time::sleep_until(deadline.into())
        };
        Box::pin(sleep)
    }
}

/// The current tokio runtime as the trait object the server and client take.
pub fn runtime() -> Arc<dyn Runtime> {
    Arc::new(TokioRuntime::current())
}

/// Binds `addr` and serves SocketCluster connections on it until [`Server::close`]; returns the
/// server and the bound address (useful with port 0).
pub async fn listen(addr: &str, options: ServerOptions) -> io::Result<(Server, SocketAddr)> {
    serve(addr, options, None).await
}

/// [`listen`] for `wss://` (feature `tls`): each connection does the TLS handshake first (see
/// [`Server::accept_tls`]). Build `tls` with [`crate::tls::server_config_from_pem`].
#[cfg(feature = "tls")]
pub async fn listen_tls(
    addr: &str,
    tls: Arc<rustls::ServerConfig>,
    options: ServerOptions,
) -> io::Result<(Server, SocketAddr)> {
    serve(addr, options, Some(tls)).await
}

async fn serve(
    addr: &str,
    options: ServerOptions,
    tls: Option<ServerTls>,
) -> io::Result<(Server, SocketAddr)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let server = Server::new(options, runtime());
    let s = server.clone();
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                () = s.closed() => return, // `Server::close` was called
            };
            match accepted {
                Ok((tcp, peer)) => {
                    let _ = tcp.set_nodelay(true);
                    let s = s.clone();
                    let tls = tls.clone();
                    tokio::spawn(async move {
                        s.accept_with(tls.as_ref(), TokioAdapter::new(tcp), Some(peer)).await
                    });
                }
                // Out of file descriptors and the like: back off briefly instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    });
    Ok((server, local))
}

/// Connects a Redis broker on tokio (feature `redis`): put it in [`ServerOptions::broker`] to
/// scale the server out across processes. Fails when Redis cannot be reached.
///
/// ```no_run
/// # async fn f() -> std::io::Result<()> {
/// use socketcluster::server::ServerOptions;
/// use socketcluster::server::redis::RedisOptions;
///
/// let broker = socketcluster::tokio::redis_broker(RedisOptions::new("redis://127.0.0.1:6379")).await?;
/// let options = ServerOptions { broker: Some(broker.clone()), ..ServerOptions::default() };
/// let (server, _addr) = socketcluster::tokio::listen("127.0.0.1:8000", options).await?;
/// broker.report_to(&server); // outages become `warning` events too
/// # Ok(())
/// # }
/// ```
#[cfg(feature = "redis")]
pub async fn redis_broker(
    options: crate::server::redis::RedisOptions,
) -> io::Result<Arc<crate::server::redis::RedisBroker>> {
    crate::server::redis::RedisBroker::connect(options, runtime()).await
}

/// Opens client WebSockets over tokio's TCP: `ws://` URLs, and `wss://` with feature `tls`.
#[derive(Debug, Clone, Default)]
pub struct TokioConnector {
    tls: Tls,
}

impl TokioConnector {
    /// A connector verifying `wss://` servers as `options` say.
    pub fn new(options: &ClientOptions) -> Self {
        Self { tls: Tls::of(options) }
    }
}

impl Connector for TokioConnector {
    fn connect(&self, url: &str, config: WebSocketConfig) -> BoxFuture<Result<(WsSink, WsStream), WsError>> {
        let target = target(url);
        let tls = self.tls.clone();
        Box::pin(async move {
            let target = target?;
            let tcp = tokio::net::TcpStream::connect((target.host.as_str(), target.port))
                .await
                .map_err(WsError::Io)?;
            let _ = tcp.set_nodelay(true);
            handshake(target, TokioAdapter::new(tcp), config, &tls).await
        })
    }
}

/// A client for `options.url` on tokio; it connects at once unless `auto_connect` is off.
pub fn connect(options: ClientOptions) -> Client {
    let connector = Arc::new(TokioConnector::new(&options));
    Client::new(options, runtime(), connector)
}

/// The consumer's next item, or [`TimedOut`] when none arrives within `timeout`.
/// Must run inside a tokio runtime with the time driver enabled.
///
/// ```
/// use std::time::Duration;
/// use socketcluster::stream::WritableConsumableStream;
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let stream = WritableConsumableStream::<u32>::new();
/// let mut c = stream.create_consumer();
/// stream.write(1);
/// let r = socketcluster::tokio::next_timeout(&mut c, Duration::from_millis(10)).await;
/// assert_eq!(r, Ok(Some(1)));
/// # });
/// ```
pub async fn next_timeout<T: Clone>(
    consumer: &mut Consumer<T>,
    timeout: Duration,
) -> Result<Option<T>, TimedOut> {
    consumer.next_before(tokio::time::sleep(timeout)).await
}
