//! Presence in Redis, shared by every process: a hash per channel (`{sc:CHANNEL}:presence`,
//! socket id → `{"user":..,"instance":..}`) and a liveness key per process
//! (`sc:instance:ID`, expiring after [`RedisOptions::presence_ttl`](super::RedisOptions::presence_ttl),
//! refreshed at a third of it). A crashed process stops refreshing: its members are left out of
//! every read once its key expired, and removed by the reader. One task applies this process's
//! joins and leaves in order; after a failed write it writes all of its members again.

use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use futures::future::{Either, select};
use serde_json::{Value, json};

use super::control::Conn;
use super::{Shared, names};
use crate::protocol::RemoteError;
use crate::server::PresenceMember;

/// A change for the presence task.
pub(super) enum Change {
    Join(String, PresenceMember),
    Leave(String, String),
}

fn hash_key(prefix: &str, channel: &str) -> String {
    alloc::format!("{{{}}}:presence", names::redis_channel(prefix, channel))
}

fn instance_key(prefix: &str, instance: &str) -> String {
    alloc::format!("{prefix}:instance:{instance}")
}

fn conn_of(shared: &Shared) -> Option<redis::aio::MultiplexedConnection> {
    match shared.current() {
        Some((_, Conn::Single(c))) => Some(c),
        _ => None,
    }
}

/// The presence task: applies `changes` in order and keeps this process's liveness key.
pub(super) async fn run(shared: Arc<Shared>, changes: async_channel::Receiver<Change>) {
    let prefix = shared.options.prefix.clone();
    let ttl = shared.options.presence_ttl;
    let alive = instance_key(&prefix, &shared.instance);
    // This process's members, to write again after a failure.
    let mut mine: HashMap<String, BTreeMap<String, String>> = HashMap::new();
    let mut dirty = true;
    let mut next_refresh = Instant::now();
    loop {
        let wait = shared.runtime.sleep_until(next_refresh);
        let change = match select(core::pin::pin!(changes.recv()), wait).await {
            Either::Left((Ok(c), _)) => Some(c),
            Either::Left((Err(_), _)) => return, // the broker is gone
            Either::Right(_) => None,
        };
        let refresh = change.is_none();
        let mut cmds = redis::pipe();
        match change {
            Some(Change::Join(channel, member)) => {
                let value = json!({ "user": member.user, "instance": shared.instance }).to_string();
                cmds.cmd("HSET").arg(hash_key(&prefix, &channel)).arg(&member.socket_id).arg(&value).ignore();
                mine.entry(channel).or_default().insert(member.socket_id, value);
            }
            Some(Change::Leave(channel, id)) => {
                cmds.cmd("HDEL").arg(hash_key(&prefix, &channel)).arg(&id).ignore();
                if let Some(m) = mine.get_mut(&channel) {
                    m.remove(&id);
                    if m.is_empty() {
                        mine.remove(&channel);
                    }
                }
            }
            None => {
                next_refresh = Instant::now() + ttl / 3;
                cmds.cmd("SET").arg(&alive).arg(1).arg("PX").arg(ttl.as_millis() as u64).ignore();
                if dirty {
                    for (channel, members) in &mine {
                        for (id, value) in members {
                            cmds.cmd("HSET").arg(hash_key(&prefix, channel)).arg(id).arg(value).ignore();
                        }
                    }
                }
            }
        }
        let ok = match conn_of(&shared) {
            Some(mut c) => cmds.query_async::<()>(&mut c).await.is_ok(),
            None => false,
        };
        if !ok {
            dirty = true;
            next_refresh = next_refresh.min(Instant::now() + shared.options.reconnect_delay);
        } else if refresh {
            dirty = false;
        }
    }
}

/// Every process's members of `channel` whose process is alive.
pub(super) async fn members(
    shared: Arc<Shared>,
    channel: String,
) -> Result<Vec<PresenceMember>, RemoteError> {
    let unavailable = |e: &dyn core::fmt::Display| {
        RemoteError::new("BrokerError", alloc::format!("presence is unavailable (Redis: {e})"))
    };
    let mut c = conn_of(&shared).ok_or_else(|| unavailable(&"not connected"))?;
    let key = hash_key(&shared.options.prefix, &channel);
    let all: HashMap<String, String> =
        redis::cmd("HGETALL").arg(&key).query_async(&mut c).await.map_err(|e| unavailable(&e))?;
    let mut parsed: Vec<(String, Option<Value>, String)> = Vec::with_capacity(all.len());
    for (id, value) in all {
        let v: Value = serde_json::from_str(&value).unwrap_or(Value::Null);
        let instance = v.get("instance").and_then(Value::as_str).unwrap_or_default().to_string();
        let user = v.get("user").cloned().filter(|u| !u.is_null());
        parsed.push((id, user, instance));
    }
    let instances: Vec<String> =
        parsed.iter().map(|(_, _, i)| i.clone()).collect::<HashSet<_>>().into_iter().collect();
    let mut live = HashSet::new();
    for i in &instances {
        let exists: bool = redis::cmd("EXISTS")
            .arg(instance_key(&shared.options.prefix, i))
            .query_async(&mut c)
            .await
            .map_err(|e| unavailable(&e))?;
        if exists || *i == shared.instance {
            live.insert(i.clone());
        }
    }
    let (members, stale): (Vec<_>, Vec<_>) = parsed.into_iter().partition(|(_, _, i)| live.contains(i));
    if !stale.is_empty() {
        let mut del = redis::cmd("HDEL");
        del.arg(&key);
        for (id, ..) in &stale {
            del.arg(id);
        }
        let _ = del.query_async::<()>(&mut c).await;
    }
    let mut out: Vec<PresenceMember> =
        members.into_iter().map(|(socket_id, user, _)| PresenceMember { socket_id, user }).collect();
    out.sort_by(|a, b| a.socket_id.cmp(&b.socket_id));
    Ok(out)
}
