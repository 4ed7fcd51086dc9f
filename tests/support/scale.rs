//! Helpers of the scale-out tests (`tests/redis.rs`, `tests/redis_broker.rs`): bounded waits, the
//! runtime of in-process scenarios, subscribing with our client.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{FutureExt, Stream, StreamExt};
use socketcluster::client::{Channel, ChannelEvent, Client, ClientEvent, ClientOptions};
use socketcluster::protocol::channels::SubscribeOptions;
use socketcluster::server::redis::{RedisBroker, RedisOptions};
use socketcluster::server::{Server, ServerOptions};

/// How long something that takes milliseconds may take (the machine is shared and slow).
pub(crate) const LIMIT: Duration = Duration::from_secs(10);
/// The bound of a whole test.
pub(crate) const TEST_LIMIT: Duration = Duration::from_secs(180);
/// A channel name with everything that needs escaping in Redis.
pub(crate) const ODD: &str = "room ✓ *.x {tag} 100% a:b";

/// Awaits `fut`, or panics naming `what` after `limit`. (smol's timer works under tokio too.)
pub(crate) async fn within<F: Future>(limit: Duration, what: &str, fut: F) -> F::Output {
    let timeout = async {
        smol::Timer::after(limit).await;
        panic!("timed out after {limit:?}: {what}")
    };
    smol::future::or(fut, timeout).await
}

/// The next item of `s` within [`LIMIT`] (the stream must not end).
pub(crate) async fn next<S: Stream + Unpin>(s: &mut S, what: &str) -> S::Item {
    within(LIMIT, what, s.next()).await.unwrap_or_else(|| panic!("{what}: the stream ended"))
}

/// Whatever `s` yields within `d` (to show that nothing arrives).
pub(crate) async fn quiet<S: Stream + Unpin>(s: &mut S, d: Duration) -> Option<S::Item> {
    smol::future::or(s.next(), async {
        smol::Timer::after(d).await;
        None
    })
    .await
}

/// Polls `cond` (another process's state) until it holds, at most `LIMIT * 3`.
pub(crate) async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < LIMIT * 3, "timed out after {:?}: {what}", LIMIT * 3);
        smol::Timer::after(Duration::from_millis(25)).await;
    }
}

/// The runtime an in-process scenario runs on.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Rt {
    Smol,
    #[cfg(feature = "tokio")]
    Tokio,
}

impl Rt {
    pub(crate) fn options(url: &str) -> RedisOptions {
        let mut o = RedisOptions::new(url);
        o.reconnect_delay = Duration::from_millis(50);
        o.max_reconnect_delay = Duration::from_millis(500);
        o
    }

    pub(crate) async fn broker(self, options: RedisOptions) -> Arc<RedisBroker> {
        let b = match self {
            Rt::Smol => socketcluster::smol::redis_broker(options).await,
            #[cfg(feature = "tokio")]
            Rt::Tokio => socketcluster::tokio::redis_broker(options).await,
        };
        b.expect("the Redis broker connects")
    }

    pub(crate) async fn listen(self, broker: &Arc<RedisBroker>) -> (Server, String) {
        let options = ServerOptions { broker: Some(broker.clone()), ..ServerOptions::default() };
        let r: std::io::Result<(Server, SocketAddr)> = match self {
            Rt::Smol => socketcluster::smol::listen("127.0.0.1:0", options).await,
            #[cfg(feature = "tokio")]
            Rt::Tokio => socketcluster::tokio::listen("127.0.0.1:0", options).await,
        };
        let (server, addr) = r.expect("listen");
        (server, format!("ws://{addr}/socketcluster/"))
    }

    pub(crate) async fn client(self, url: &str) -> Client {
        let options = ClientOptions { auto_connect: false, ..ClientOptions::new(url) };
        let client = match self {
            Rt::Smol => socketcluster::smol::connect(options),
            #[cfg(feature = "tokio")]
            Rt::Tokio => socketcluster::tokio::connect(options),
        };
        let mut connect = client.listener("connect");
        client.connect();
        match next(&mut connect, "the connect event").await {
            ClientEvent::Connect { .. } => client,
            other => panic!("not a connect event: {other:?}"),
        }
    }

    pub(crate) fn run<F: Future<Output = ()>>(self, f: impl FnOnce(Rt) -> F) {
        match self {
            Rt::Smol => smol::block_on(within(TEST_LIMIT, "the whole test", f(self))),
            #[cfg(feature = "tokio")]
            Rt::Tokio => {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("a tokio runtime");
                runtime.block_on(within(TEST_LIMIT, "the whole test", f(self)));
                runtime.shutdown_timeout(Duration::from_secs(1));
            }
        }
    }
}

/// Subscribes `client` to `channel` and waits for the acknowledgement.
pub(crate) async fn subscribed(client: &Client, channel: &str) -> Channel {
    let mut ack = client.channel(channel).listener("subscribe");
    let ch = client.subscribe(channel, SubscribeOptions::default());
    assert_eq!(next(&mut ack, &format!("the {channel} subscribe ack")).await, ChannelEvent::Subscribe);
    ch
}

/// Every event of `c` queued now.
pub(crate) fn drain<T: Clone>(c: &mut socketcluster::stream::Consumer<T>) -> Vec<T> {
    let mut v = Vec::new();
    while let Some(Some(x)) = c.next().now_or_never() {
        v.push(x);
    }
    v
}
