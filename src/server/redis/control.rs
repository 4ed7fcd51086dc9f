//! The broker's two tasks. The connection task keeps Redis's subscriptions equal to the local
//! interest (one `SUBSCRIBE`/`UNSUBSCRIBE` batch at a time, on one connection, in order), pings
//! when idle, and on a lost connection reconnects with backoff and subscribes again. The publisher
//! task sends queued publishes in order, many per round trip (a pipeline).

use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::convert::Infallible;
use core::pin::pin;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::future::{Either, select, try_join_all};
use redis::aio::MultiplexedConnection;
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{
    AsyncConnectionConfig, ErrorKind, IntoConnectionInfo, ProtocolVersion, PushInfo, RedisError, RedisResult,
    ServerErrorKind,
};

use super::{RedisEvent, Shared};

/// Publishes sent to Redis per round trip, at most.
const MAX_BATCH: usize = 512;
/// Channels per `SUBSCRIBE`/`UNSUBSCRIBE`, at most.
const MAX_CHANNELS: usize = 512;

/// A publish on its way to Redis.
pub(super) struct Outgoing {
    /// The Redis channel.
    pub(super) channel: String,
    /// Instance id and frame.
    pub(super) payload: Vec<u8>,
    /// For a channel with history: the `EVAL` arguments that append and publish it instead.
    pub(super) script: Option<Vec<String>>,
}

/// A connection to Redis (RESP3: pushes and commands share it).
#[derive(Clone)]
pub(super) enum Conn {
    Single(MultiplexedConnection),
    Sharded(ClusterConnection),
}

/// Whether Redis refused the command itself (the connection is fine).
fn is_refusal(e: &RedisError) -> bool {
    matches!(e.kind(), ErrorKind::Server(ServerErrorKind::ResponseError | ServerErrorKind::NoPerm))
}

impl Conn {
    async fn subscribe(&mut self, channels: &[String], on: bool) -> RedisResult<()> {
        match self {
            Self::Single(c) if on => c.subscribe(channels).await,
            Self::Single(c) => c.unsubscribe(channels).await,
            // Channels of different slots live on different shards: one command each.
            Self::Sharded(c) => try_join_all(channels.iter().map(|ch| {
                let mut c = c.clone();
                async move { if on { c.ssubscribe(ch).await } else { c.sunsubscribe(ch).await } }
            }))
            .await
            .map(drop),
        }
    }

    async fn publish(&mut self, batch: &[Outgoing]) -> RedisResult<()> {
        match self {
            Self::Single(c) => {
                let mut pipe = redis::pipe();
                for m in batch {
                    match &m.script {
                        Some(args) => pipe.cmd("EVAL").arg(args).ignore(),
                        None => pipe.cmd("PUBLISH").arg(&m.channel).arg(&m.payload).ignore(),
                    };
                }
                pipe.query_async::<()>(c).await
            }
            Self::Sharded(c) => {
                // A pipeline per channel (one slot each), in publish order; channels in parallel.
                let mut pipes: Vec<redis::Pipeline> = Vec::new();
                let mut index: HashMap<&str, usize> = HashMap::new();
                for m in batch {
                    let i = *index.entry(m.channel.as_str()).or_insert_with(|| {
                        pipes.push(redis::pipe());
                        pipes.len() - 1
                    });
                    pipes[i].cmd("SPUBLISH").arg(&m.channel).arg(&m.payload).ignore();
                }
                try_join_all(pipes.into_iter().map(|pipe| {
                    let mut c = c.clone();
                    async move { pipe.query_async::<()>(&mut c).await }
                }))
                .await
                .map(drop)
            }
        }
    }

    async fn ping(&mut self) -> RedisResult<()> {
        let ping = redis::cmd("PING");
        match self {
            Self::Single(c) => ping.query_async::<()>(c).await,
            Self::Sharded(c) => ping.query_async::<()>(c).await,
        }
    }
}

/// `fut`, or an error after `limit`.
async fn timeout<T>(
    shared: &Shared,
    limit: Duration,
    fut: impl core::future::Future<Output = RedisResult<T>>,
) -> RedisResult<T> {
    match select(pin!(fut), shared.runtime.sleep_until(Instant::now() + limit)).await {
        Either::Left((r, _)) => r,
        Either::Right(_) => Err(RedisError::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            alloc::format!("no connection to Redis within {limit:?}"),
        ))),
    }
}

/// Opens connection `generation`; its pushes go to `shared.on_push`.
pub(super) async fn open(shared: &Arc<Shared>, generation: u64) -> RedisResult<Conn> {
    let weak = Arc::downgrade(shared);
    let push = move |info: PushInfo| -> Result<(), Infallible> {
        if let Some(s) = weak.upgrade() {
            s.on_push(generation, info);
        }
        Ok(())
    };
    let o = &shared.options;
    let connect = async {
        if o.sharded {
            let client = ClusterClientBuilder::new(o.nodes.iter().map(String::as_str))
                .use_protocol(ProtocolVersion::RESP3)
                .push_sender(push)
                .connection_timeout(o.connect_timeout)
                .response_timeout(o.response_timeout)
                .build()?;
            Ok(Conn::Sharded(client.get_async_connection().await?))
        } else {
            let info = o.nodes.first().map(String::as_str).unwrap_or_default().into_connection_info()?;
            let settings = info.redis_settings().clone().set_protocol(ProtocolVersion::RESP3);
            let client = redis::Client::open(info.set_redis_settings(settings))?;
            let config = AsyncConnectionConfig::new()
                .set_push_sender(push)
                .set_connection_timeout(Some(o.connect_timeout))
                .set_response_timeout(Some(o.response_timeout));
            Ok(Conn::Single(client.get_multiplexed_async_connection_with_config(&config).await?))
        }
    };
    timeout(shared, o.connect_timeout * 2, connect).await
}

/// The connection task; connection `generation` (`conn`) is already live.
pub(super) async fn run(shared: Arc<Shared>, generation: u64, conn: Conn) {
    let o = &shared.options;
    let mut live = Some((generation, conn));
    let mut outage = None;
    let mut delay = o.reconnect_delay;
    let mut attempts = 0;
    loop {
        let (generation, conn) = match live.take() {
            Some(l) => l,
            None => {
                let Some(generation) = shared.next_generation() else { return };
                match open(&shared, generation).await {
                    Ok(conn) => {
                        outage = shared.set_up(generation, conn.clone());
                        attempts = 0;
                        delay = o.reconnect_delay;
                        (generation, conn)
                    }
                    Err(e) => {
                        attempts += 1;
                        shared.counters.failed_attempts.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
                        // ±25 %, so processes that lost Redis together do not return in step.
                        let retry_in = delay.mul_f64(0.75 + fastrand::f64() / 2.0);
                        let error = e.to_string();
                        shared.note_error(&error);
                        shared.emit(RedisEvent::ConnectFailed { error, attempt: attempts, retry_in });
                        if !pause(&shared, retry_in).await {
                            return;
                        }
                        delay = (delay * 2).min(o.max_reconnect_delay);
                        continue;
                    }
                }
            }
        };
        match serve(&shared, generation, conn, &mut outage).await {
            Some(error) => shared.set_down(generation, &error),
            None => return, // shut down
        }
    }
}

/// Waits `d`; false when the broker was shut down meanwhile.
async fn pause(shared: &Shared, d: Duration) -> bool {
    let deadline = Instant::now() + d;
    loop {
        if shared.state.lock().shut {
            return false;
        }
        if Instant::now() >= deadline {
            return true;
        }
        let _ = select(pin!(shared.wake_rx.recv()), shared.runtime.sleep_until(deadline)).await;
    }
}

/// Keeps Redis's subscriptions in line with the local interest while connection `generation` lives;
/// returns why it ended (`None`: shut down).
async fn serve(
    shared: &Shared,
    generation: u64,
    mut conn: Conn,
    outage: &mut Option<(Duration, u64)>,
) -> Option<String> {
    let interval = shared.options.ping_interval;
    let mut next_ping = Instant::now() + interval;
    loop {
        if !shared.is_current(generation) {
            return (!shared.state.lock().shut).then(|| String::from("the connection was closed"));
        }
        if let Err(e) = reconcile(shared, &mut conn).await {
            return Some(e.to_string());
        }
        if let Some((outage, undelivered)) = outage.take() {
            let resubscribed = shared.state.lock().confirmed.len();
            shared.emit(RedisEvent::Reconnected { resubscribed, outage, undelivered });
        }
        let wake = pin!(shared.wake_rx.recv());
        if let Either::Right(_) = select(wake, shared.runtime.sleep_until(next_ping)).await {
            if let Err(e) = conn.ping().await {
                return Some(e.to_string());
            }
            next_ping = Instant::now() + interval;
        }
    }
}

/// Subscribes and unsubscribes until Redis has exactly the channels with local interest.
async fn reconcile(shared: &Shared, conn: &mut Conn) -> RedisResult<()> {
    loop {
        let (unsub, sub) = shared.plan(MAX_CHANNELS);
        if unsub.is_empty() && sub.is_empty() {
            return Ok(());
        }
        let names =
            |chs: &[String]| -> Vec<String> { chs.iter().map(|c| shared.options.redis_channel(c)).collect() };
        if !unsub.is_empty() {
            match conn.subscribe(&names(&unsub), false).await {
                Ok(()) => {}
                Err(e) if is_refusal(&e) => shared.note_error(&e.to_string()),
                Err(e) => return Err(e),
            }
        }
        if !sub.is_empty() {
            match conn.subscribe(&names(&sub), true).await {
                Ok(()) => shared.confirmed(sub),
                // Refused (an ACL, say): one by one, so only the refused channels fail.
                Err(e) if is_refusal(&e) && sub.len() > 1 => {
                    for ch in sub {
                        match conn.subscribe(&names(core::slice::from_ref(&ch)), true).await {
                            Ok(()) => shared.confirmed(alloc::vec![ch]),
                            Err(e) if is_refusal(&e) => shared.rejected(alloc::vec![ch], &e.to_string()),
                            Err(e) => return Err(e),
                        }
                    }
                }
                Err(e) if is_refusal(&e) => shared.rejected(sub, &e.to_string()),
                Err(e) => return Err(e),
            }
        }
    }
}

/// The publisher task: sends queued publishes in order until the broker is dropped.
pub(super) async fn publisher(shared: Arc<Shared>, queue: async_channel::Receiver<Outgoing>) {
    use core::sync::atomic::Ordering::Relaxed;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Ok(first) = queue.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        let n = batch.len() as u64;
        match shared.current() {
            Some((generation, mut conn)) => match conn.publish(&batch).await {
                Ok(()) => {
                    shared.counters.published.fetch_add(n, Relaxed);
                }
                Err(e) => {
                    shared.counters.undelivered.fetch_add(n, Relaxed);
                    if is_refusal(&e) {
                        shared.note_error(&e.to_string());
                    } else {
                        shared.set_down(generation, &e.to_string());
                    }
                }
            },
            None => {
                shared.counters.undelivered.fetch_add(n, Relaxed);
            }
        }
        batch.clear();
    }
}
