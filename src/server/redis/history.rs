//! Channel history in Redis, shared by every process (plain Redis; not on Redis Cluster).
//!
//! Per channel, two keys in one hash slot: `{sc:CHANNEL}:meta`, a hash of the last offset (`o`,
//! `HINCRBY`) and the epoch (`e`), and `{sc:CHANNEL}:history`, a stream of the published
//! payloads with ids `0-OFFSET` (`XADD ... MAXLEN N`); both expire after the channel's
//! `forget_after` without publishes or subscriptions. An epoch is `BASE-MS-N`: the base is one
//! random value for all channels (hash `sc:history-base`, new if Redis loses its data, with the
//! counter N), MS the time (Redis's clock) the channel's history began. A publish runs one
//! script that takes the next offset, completes the frame with it, appends it and `PUBLISH`es
//! it — atomic, so every process sees the same offsets in the same order. Processes deliver history publishes when Redis sends
//! them back (their own too), so local and remote subscribers see one order. A subscription to
//! a channel without history yet writes nothing (its epoch is `BASE-NOW-0`, offset 0).
//!
//! Recovery: the new subscriber is put on the channel with a buffer in front of it, subscribed
//! in Redis as usual, then the stream is read from the requested offset (`XRANGE`); the replay
//! goes to the subscriber, then what the buffer caught that is newer, then the buffer is
//! swapped for the subscriber under the delivery lock — no gap, no duplicate.

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::control::{Conn, Outgoing};
use super::{Shared, names};
use crate::protocol::RemoteError;
use crate::protocol::packet;
use crate::protocol::position::Position;
use crate::server::broker::{Publication, Subscriber};
use crate::server::history::{HistoryOptions, Recovery, new_epoch, refusal};

/// The instance id of history payloads: every process (the publisher too) delivers them.
const ANY_INSTANCE: &str = "0000000000000000";

/// `BASE-MS-N` in Lua (see `history::epoch_at`) in front of a script's body: the base (created
/// if missing), Redis's time and, for a history that begins (`begin`), the next number of the
/// base, else 0. One literal per script, built at compile time.
macro_rules! with_epoch_now {
    ($body:literal) => {
        concat!(
            r#"
local function epoch_now(base_key, new_base, begin)
  redis.call('HSETNX', base_key, 'b', new_base)
  local base = redis.call('HGET', base_key, 'b')
  local n = 0
  if begin then n = redis.call('HINCRBY', base_key, 'n', 1) end
  local t = redis.call('TIME')
  return base .. '-' .. t[1] .. string.format('%03d', math.floor(t[2] / 1000)) .. '-' .. n
end
"#,
            $body
        )
    };
}

/// KEYS: meta, stream, base. ARGV: Redis channel, payload up to the offset, max_len, a new
/// base, the time (ms), forget_after (ms).
const PUBLISH: &str = with_epoch_now!(
    r#"
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  epoch = epoch_now(KEYS[3], ARGV[4], true)
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'e', epoch)
end
local offset = redis.call('HINCRBY', KEYS[1], 'o', 1)
local payload = ARGV[2] .. offset .. ',"epoch":"' .. epoch .. '"}}'
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[3], '0-' .. offset, 'p', payload, 't', ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
redis.call('PEXPIRE', KEYS[2], ARGV[6])
redis.call('PUBLISH', ARGV[1], payload)
return offset
"#
);

/// KEYS: meta, stream, base. ARGV: the first offset to read ('': none), max_len, a new base,
/// forget_after (ms). Returns `{top, epoch, entries}`.
const RECOVER: &str = with_epoch_now!(
    r#"
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then return {'0', epoch_now(KEYS[3], ARGV[3], false), {}} end
local top = redis.call('HGET', KEYS[1], 'o') or '0'
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
if ARGV[1] == '' then return {top, epoch, {}} end
local entries = redis.call('XRANGE', KEYS[2], '0-' .. ARGV[1], '+', 'COUNT', ARGV[2])
return {top, epoch, entries}
"#
);

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn broker_error(what: &str, e: impl core::fmt::Display) -> RemoteError {
    RemoteError::new("BrokerError", alloc::format!("{what}: {e}"))
}

fn single(shared: &Shared) -> Result<redis::aio::MultiplexedConnection, RemoteError> {
    match shared.current() {
        Some((_, Conn::Single(c))) => Ok(c),
        Some((_, Conn::Sharded(_))) => Err(RemoteError::new("BrokerError", "history needs plain Redis")),
        None => {
            Err(RemoteError::new("BrokerError", "Redis is unavailable: the channel's history cannot be kept"))
        }
    }
}

/// The queued publish of `data` to `channel` (which has history): the script appends it and
/// publishes it; this process delivers it when Redis sends it back. `None` when the data
/// cannot be encoded.
pub(super) fn outgoing(
    shared: &Shared,
    channel: &str,
    data: Option<&Value>,
    options: HistoryOptions,
) -> Result<Outgoing, RemoteError> {
    // The frame up to the offset: `{"event":"#publish","data":{"channel":C,"data":D,"offset":`.
    let stub = Position { offset: 0, epoch: String::new() };
    let frame = packet::encode_publish_at(channel, data, Some(&stub))
        .map_err(|e| RemoteError::new("InvalidArgumentsError", alloc::format!("{e}")))?;
    let head = frame.strip_suffix(r#"0,"epoch":""}}"#).unwrap_or(&frame);
    let [meta, history, base] = names::history_keys(&shared.options.prefix, channel);
    let redis_channel = shared.options.redis_channel(channel);
    let args = alloc::vec![
        String::from(PUBLISH),
        String::from("3"),
        meta,
        history,
        base,
        redis_channel.clone(),
        alloc::format!("{ANY_INSTANCE}{head}"),
        alloc::format!("{}", options.max_len),
        new_epoch(),
        alloc::format!("{}", now_ms()),
        alloc::format!("{}", options.forget_after().as_millis()),
    ];
    Ok(Outgoing { channel: redis_channel, payload: Vec::new(), script: Some(args) })
}

fn text(v: &redis::Value) -> Option<String> {
    match v {
        redis::Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        redis::Value::SimpleString(s) => Some(s.clone()),
        redis::Value::Int(n) => Some(alloc::format!("{n}")),
        _ => None,
    }
}

/// A stream entry `[id, [field, value, ...]]`: its offset, payload and time (ms).
fn entry(v: &redis::Value) -> Option<(u64, Vec<u8>, u64)> {
    let redis::Value::Array(parts) = v else { return None };
    let [id, redis::Value::Array(fields)] = parts.as_slice() else { return None };
    let offset = text(id)?.strip_prefix("0-")?.parse().ok()?;
    let mut payload = None;
    let mut at = 0;
    for pair in fields.chunks(2) {
        match (pair.first().and_then(text).as_deref(), pair.get(1)) {
            (Some("p"), Some(redis::Value::BulkString(b))) => payload = Some(b.clone()),
            (Some("t"), Some(v)) => at = text(v).and_then(|t| t.parse().ok()).unwrap_or(0),
            _ => {}
        }
    }
    Some((offset, payload?, at))
}

/// Subscribes `subscriber` to `channel` (which has history), replaying what came after
/// `since`; see the module documentation.
/// `subscribed` is the subscription of the buffer (a filtered subscriber with the subscriber's
/// id) that feeds `caught`.
pub(super) async fn subscribe_from(
    shared: Arc<Shared>,
    subscribed: crate::runtime::BoxFuture<Result<(), RemoteError>>,
    caught: async_channel::Receiver<Publication>,
    channel: String,
    subscriber: Subscriber,
    since: Option<Position>,
    options: HistoryOptions,
) -> Result<Option<Recovery>, RemoteError> {
    subscribed.await?;
    let read = read(&shared, &channel, since.as_ref(), options).await;
    let (recovery, replay) = match read {
        Ok(r) => r,
        // Redis is down: subscribed locally; the client keeps its position and tries again on
        // its next subscription.
        Err(e) => {
            let position = since.clone().unwrap_or(Position { offset: 0, epoch: String::new() });
            let result = since.as_ref().map(|_| Err(String::from(e.message())));
            (Recovery { position, result }, Vec::new())
        }
    };
    let mut last = since.as_ref().map_or(recovery.position.offset, |s| s.offset);
    if recovery.result.as_ref().is_some_and(Result::is_err) {
        last = recovery.position.offset;
    }
    for p in &replay {
        subscriber.deliver(p);
        last = last.max(p.position().map_or(0, |p| p.offset));
    }
    let real = subscriber.clone();
    shared.local.replace_now(&channel, subscriber, || {
        while let Ok(p) = caught.try_recv() {
            if p.position().is_some_and(|p| p.offset > last) {
                last = p.position().map_or(last, |p| p.offset);
                real.deliver(&p);
            }
        }
    });
    let position = Position { offset: last.max(recovery.position.offset), epoch: recovery.position.epoch };
    Ok(Some(Recovery { position, result: recovery.result }))
}

/// The channel's position and, with `since`, the outcome and the publishes to replay.
async fn read(
    shared: &Shared,
    channel: &str,
    since: Option<&Position>,
    options: HistoryOptions,
) -> Result<(Recovery, Vec<Publication>), RemoteError> {
    let [meta, history, base] = names::history_keys(&shared.options.prefix, channel);
    let mut conn = single(shared)?;
    let first = since.map_or(String::new(), |s| alloc::format!("{}", s.offset.saturating_add(1)));
    let reply: redis::Value = redis::Script::new(RECOVER)
        .key(meta)
        .key(history)
        .key(base)
        .arg(first)
        .arg(options.max_len)
        .arg(new_epoch())
        .arg(options.forget_after().as_millis() as u64)
        .invoke_async(&mut conn)
        .await
        .map_err(|e| broker_error("reading the channel's history failed", e))?;
    let bad = || RemoteError::new("BrokerError", "an unexpected reply from Redis to the history script");
    let redis::Value::Array(parts) = reply else { return Err(bad()) };
    let [top, epoch, entries] = parts.as_slice() else { return Err(bad()) };
    let top: u64 = text(top).and_then(|t| t.parse().ok()).ok_or_else(bad)?;
    let epoch = text(epoch).ok_or_else(bad)?;
    let position = Position { offset: top, epoch };
    let Some(since) = since else { return Ok((Recovery { position, result: None }, Vec::new())) };
    let entries: Vec<(u64, Vec<u8>, u64)> = match entries {
        redis::Value::Array(e) => e.iter().filter_map(entry).collect(),
        _ => Vec::new(),
    };
    // Entries past the time bound count as gone.
    let cutoff = options.ttl.map(|ttl| now_ms().saturating_sub(ttl.as_millis() as u64));
    let alive = |at: u64| cutoff.is_none_or(|c| at >= c);
    // The stream holds at most `max_len` entries, so this read reaches its end: the first one
    // alive is the oldest the replay can start from.
    let oldest = entries.iter().find(|(_, _, at)| alive(*at)).map_or(top + 1, |(o, ..)| *o);
    if let Some(reason) = refusal(since, &position.epoch, top, oldest, &options) {
        return Ok((Recovery { position, result: Some(Err(reason)) }, Vec::new()));
    }
    let mut replay = Vec::with_capacity(entries.len());
    for (_, payload, _) in entries.iter().filter(|(o, _, at)| *o > since.offset && alive(*at)) {
        if let Some(inbound) = names::parse_payload(channel, payload) {
            replay.push(Publication::from_frame(
                channel,
                inbound.data,
                String::from(inbound.frame),
                inbound.position,
            ));
        }
    }
    let n = replay.len() as u64;
    Ok((Recovery { position, result: Some(Ok(n)) }, replay))
}
