//! The smol adapter: only what differs per runtime — the [`Runtime`] implementation, TCP accept
//! and connect — for smol. The tokio adapter has the same functions.
//!
//! Tasks run on smol's global executor (`smol::spawn`).

use alloc::boxed::Box;
use alloc::sync::Arc;
use core::time::Duration;
use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use async_tungstenite::tungstenite::Error as WsError;
use async_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::client::{Client, ClientOptions, Connector, Tls, WsSink, WsStream, handshake, target};
use crate::runtime::{BoxFuture, Runtime};
use crate::server::{Server, ServerOptions, ServerTls};
use crate::stream::{Consumer, TimedOut};

/// The smol runtime: `smol::spawn` and `smol::Timer`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SmolRuntime;

impl Runtime for SmolRuntime {
    fn spawn(&self, future: BoxFuture<()>) {
        smol::spawn(future).detach();
    }

    fn sleep_until(&self, deadline: Instant) -> BoxFuture<()> {
        Box::pin(async move {
            smol::Timer::at(deadline).await;
        })
    }
}

/// The runtime as the trait object the server and client take.
pub fn runtime() -> Arc<dyn Runtime> {
    Arc::new(SmolRuntime)
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
    let listener = smol::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let server = Server::new(options, runtime());
    let s = server.clone();
    smol::spawn(async move {
        loop {
            let accepted = smol::future::or(async { Some(listener.accept().await) }, async {
                s.closed().await;
                None
            })
            .await;
            let Some(accepted) = accepted else { return }; // `Server::close` was called
            match accepted {
                Ok((tcp, peer)) => {
                    let _ = tcp.set_nodelay(true);
                    let s = s.clone();
                    let tls = tls.clone();
                    smol::spawn(async move { s.accept_with(tls.as_ref(), tcp, Some(peer)).await }).detach();
                }
                // Out of file descriptors and the like: back off briefly instead of spinning.
                Err(_) => {
                    smol::Timer::after(Duration::from_millis(10)).await;
                }
            }
        }
    })
    .detach();
    Ok((server, local))
}

/// Connects a Redis broker on smol (feature `redis`): put it in [`ServerOptions::broker`] to
/// scale the server out across processes. Fails when Redis cannot be reached.
///
/// ```no_run
/// # smol::block_on(async {
/// use socketcluster::server::ServerOptions;
/// use socketcluster::server::redis::RedisOptions;
///
/// let broker = socketcluster::smol::redis_broker(RedisOptions::new("redis://127.0.0.1:6379")).await?;
/// let options = ServerOptions { broker: Some(broker.clone()), ..ServerOptions::default() };
/// let (server, _addr) = socketcluster::smol::listen("127.0.0.1:8000", options).await?;
/// broker.report_to(&server); // outages become `warning` events too
/// # Ok::<(), std::io::Error>(())
/// # });
/// ```
#[cfg(feature = "redis")]
pub async fn redis_broker(
    options: crate::server::redis::RedisOptions,
) -> io::Result<Arc<crate::server::redis::RedisBroker>> {
    crate::server::redis::RedisBroker::connect(options, runtime()).await
}

/// Opens client WebSockets over smol's TCP: `ws://` URLs, and `wss://` with feature `tls`.
#[derive(Debug, Clone, Default)]
pub struct SmolConnector {
    tls: Tls,
}

impl SmolConnector {
    /// A connector verifying `wss://` servers as `options` say.
    pub fn new(options: &ClientOptions) -> Self {
        Self { tls: Tls::of(options) }
    }
}

impl Connector for SmolConnector {
    fn connect(&self, url: &str, config: WebSocketConfig) -> BoxFuture<Result<(WsSink, WsStream), WsError>> {
        let target = target(url);
        let tls = self.tls.clone();
        Box::pin(async move {
            let target = target?;
            let tcp = smol::net::TcpStream::connect((target.host.as_str(), target.port))
                .await
                .map_err(WsError::Io)?;
            let _ = tcp.set_nodelay(true);
            handshake(target, tcp, config, &tls).await
        })
    }
}

/// A client for `options.url` on smol; it connects at once unless `auto_connect` is off.
pub fn connect(options: ClientOptions) -> Client {
    let connector = Arc::new(SmolConnector::new(&options));
    Client::new(options, runtime(), connector)
}

/// The consumer's next item, or [`TimedOut`] when none arrives within `timeout`.
///
/// ```
/// use std::time::Duration;
/// use socketcluster::stream::WritableConsumableStream;
///
/// smol::block_on(async {
///     let stream = WritableConsumableStream::<u32>::new();
///     let mut c = stream.create_consumer();
///     let r = socketcluster::smol::next_timeout(&mut c, Duration::from_millis(10)).await;
///     assert!(r.is_err());
/// });
/// ```
pub async fn next_timeout<T: Clone>(
    consumer: &mut Consumer<T>,
    timeout: Duration,
) -> Result<Option<T>, TimedOut> {
    consumer.next_before(smol::Timer::after(timeout)).await
}
