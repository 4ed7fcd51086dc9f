//! Channel history (our extension; SocketCluster has none): which channels keep it
//! ([`HistoryRules`]), how much ([`HistoryOptions`]), and the in-process store the
//! [`MemoryBroker`](super::MemoryBroker) keeps under the same lock as its subscriptions, so that
//! a recovering subscriber gets the replay before any live publish, with no gap and no
//! duplicate. The wire format is in [`protocol::position`](crate::protocol::position).

use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::time::Duration;
use std::collections::HashMap;
use std::time::Instant;

use serde_json::Value;

use super::broker::Publication;
use crate::protocol::position::Position;
use crate::protocol::{Error, RemoteError};

/// How much history a channel keeps: the last `max_len` publishes, and (with `ttl`) only those
/// younger than it. `max_len` also bounds a replay.
///
/// A channel nobody publishes to or subscribes to for `meta_ttl` (at least `ttl`) is forgotten
/// altogether — its publishes and its position (in process and in Redis alike), so that
/// channel names used once do not pile up. A subscriber that comes back after that is told
/// the history cannot be recovered. Subscribing to a channel that has had no publish yet
/// stores nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HistoryOptions {
    /// Publishes kept (at least 1).
    pub max_len: usize,
    /// Publishes older than this are dropped (`None`: kept until `max_len` pushes them out).
    pub ttl: Option<Duration>,
    /// How long an idle channel's history and position are kept (default
    /// [`DEFAULT_META_TTL`](Self::DEFAULT_META_TTL)).
    pub meta_ttl: Duration,
}

impl HistoryOptions {
    /// How long an idle channel's history is kept by default: one day.
    pub const DEFAULT_META_TTL: Duration = Duration::from_secs(24 * 3600);

    /// The last `max_len` publishes.
    pub fn last(max_len: usize) -> Self {
        Self { max_len: max_len.max(1), ttl: None, meta_ttl: Self::DEFAULT_META_TTL }
    }

    /// Also drop publishes older than `ttl`.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Forget a channel (publishes and position) after `meta_ttl` without publishes or
    /// subscriptions (never sooner than `ttl`).
    pub fn with_meta_ttl(mut self, meta_ttl: Duration) -> Self {
        self.meta_ttl = meta_ttl;
        self
    }

    /// After how long without publishes or subscriptions a channel is forgotten.
    pub(crate) fn forget_after(&self) -> Duration {
        self.ttl.map_or(self.meta_ttl, |ttl| ttl.max(self.meta_ttl))
    }
}

type Callback = Arc<dyn Fn(&str) -> Option<HistoryOptions> + Send + Sync>;

/// Which channels keep history ([`ServerOptions::history`](super::ServerOptions::history)):
/// name patterns (`*` matches any run of characters) tried in order, then a callback.
///
/// ```
/// use std::time::Duration;
/// use socketcluster::server::{HistoryOptions, HistoryRules};
///
/// let rules = HistoryRules::new()
///     .pattern("chat.*", HistoryOptions::last(1000).with_ttl(Duration::from_secs(300)))
///     .callback(|channel| channel.ends_with("!log").then(|| HistoryOptions::last(50)));
/// assert_eq!(rules.for_channel("chat.lobby").map(|o| o.max_len), Some(1000));
/// assert_eq!(rules.for_channel("audit!log").map(|o| o.max_len), Some(50));
/// assert_eq!(rules.for_channel("ticker"), None);
/// ```
#[derive(Clone, Default)]
pub struct HistoryRules {
    patterns: Vec<(String, HistoryOptions)>,
    callback: Option<Callback>,
}

impl fmt::Debug for HistoryRules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HistoryRules")
            .field("patterns", &self.patterns)
            .field("callback", &self.callback.is_some())
            .finish()
    }
}

impl HistoryRules {
    /// No channel keeps history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Channels matching `pattern` keep `options`.
    pub fn pattern(mut self, pattern: impl Into<String>, options: HistoryOptions) -> Self {
        self.patterns.push((pattern.into(), options));
        self
    }

    /// Channels no pattern matched ask `callback`.
    pub fn callback(
        mut self,
        callback: impl Fn(&str) -> Option<HistoryOptions> + Send + Sync + 'static,
    ) -> Self {
        self.callback = Some(Arc::new(callback));
        self
    }

    /// Whether no channel keeps history.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty() && self.callback.is_none()
    }

    /// The history of `channel` (`None`: it keeps none).
    pub fn for_channel(&self, channel: &str) -> Option<HistoryOptions> {
        self.patterns
            .iter()
            .find(|(p, _)| glob(p, channel))
            .map(|(_, o)| *o)
            .or_else(|| self.callback.as_ref().and_then(|c| c(channel)))
    }
}

/// `*` matches any run of characters; everything else itself.
fn glob(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = name.strip_prefix(first) else { return false };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else { return rest.is_empty() };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Why recovering from `since` is not possible in a history at `epoch` whose last offset is
/// `top` and oldest kept offset `oldest` (`top + 1` when empty); `None` when it is.
pub(crate) fn refusal(
    since: &Position,
    epoch: &str,
    top: u64,
    oldest: u64,
    options: &HistoryOptions,
) -> Option<String> {
    let began_since = since.offset == 0 && began_after(&since.epoch, epoch, options.forget_after());
    if since.epoch != epoch && !began_since {
        Some(String::from("the channel's history was lost (another epoch): refetch"))
    } else if since.offset > top {
        Some(alloc::format!("offset {} is ahead of the channel (last offset {top})", since.offset))
    } else if since.offset + 1 < oldest {
        Some(alloc::format!(
            "the history no longer reaches back to offset {} (oldest kept: {oldest}): refetch",
            since.offset + 1
        ))
    } else {
        None
    }
}

/// An epoch is `BASE-MS-N`: a random base (new when the process starts, or for Redis when its
/// data is lost), the time (ms) the channel's history began and a number (≥ 1) unique per history
/// begun under the base. A subscriber of a channel without history yet gets `BASE-NOW-0` and
/// offset 0, and nothing is stored for it.
pub(crate) fn epoch_at(base: &str, ms: u64, n: u64) -> String {
    alloc::format!("{base}-{ms}-{n}")
}

/// Whether a history at `epoch` began after a subscriber saw the channel empty at `seen` (the
/// `BASE-MS-0` it was given then), and soon enough after it that no history of the channel can
/// have begun and been forgotten in between (that takes `forget_after` without activity): then
/// the subscriber missed nothing before the history's first offset.
fn began_after(seen: &str, epoch: &str, forget_after: Duration) -> bool {
    fn parts(e: &str) -> Option<(&str, u64, u64)> {
        let mut it = e.rsplitn(3, '-');
        let n = it.next()?.parse().ok()?;
        let ms = it.next()?.parse().ok()?;
        Some((it.next()?, ms, n))
    }
    let (Some((seen_base, s, 0)), Some((base, t, n))) = (parts(seen), parts(epoch)) else { return false };
    n > 0 && seen_base == base && s <= t && u128::from(t - s) < forget_after.as_millis()
}

/// A recovery request: the last position the subscriber saw.
pub(crate) type Since = Position;

/// What a subscription to a channel with history starts from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovery {
    /// The channel's position when the subscription started (what the replay reached).
    pub position: Position,
    /// `None`: no recovery asked; `Ok(n)`: `n` publishes replayed; `Err(reason)`: none could be.
    pub result: Option<Result<u64, String>>,
}

impl Recovery {
    /// The subscribe acknowledgement's data (see [`protocol::position`](crate::protocol::position)).
    pub fn ack_data(&self, channel: &str) -> Value {
        let mut v = serde_json::json!({
            "channel": channel,
            "offset": self.position.offset,
            "epoch": self.position.epoch,
        });
        match &self.result {
            None => {}
            Some(Ok(n)) => {
                v["recovered"] = Value::Bool(true);
                v["replayed"] = Value::from(*n);
            }
            Some(Err(reason)) => {
                v["recovered"] = Value::Bool(false);
                v["reason"] = Value::String(reason.clone());
            }
        }
        v
    }
}

/// Reads `data.recover` of a `#subscribe`: `Ok(None)` when absent, an error when malformed.
pub(crate) fn recover_request(data: Option<&Value>) -> Result<Option<Since>, RemoteError> {
    let Some(r) = data.and_then(|d| d.get("recover")) else { return Ok(None) };
    Position::from_value(r).map(Some).ok_or_else(|| {
        RemoteError::new(
            "InvalidArgumentsError",
            "recover must be {\"offset\": a non-negative integer, \"epoch\": a string}",
        )
    })
}

struct Entry {
    offset: u64,
    at: Instant,
    publication: Publication,
}

struct ChannelHistory {
    options: HistoryOptions,
    epoch: String,
    /// The offset of the last publish.
    top: u64,
    entries: VecDeque<Entry>,
    /// The last publish or subscription (see [`HistoryOptions::meta_ttl`]).
    touched: Instant,
}

impl ChannelHistory {
    fn trim(&mut self, now: Instant) {
        while self.entries.len() > self.options.max_len {
            self.entries.pop_front();
        }
        if let Some(ttl) = self.options.ttl {
            while self.entries.front().is_some_and(|e| now.duration_since(e.at) > ttl) {
                self.entries.pop_front();
            }
        }
    }

    fn position(&self) -> Position {
        Position { offset: self.top, epoch: self.epoch.clone() }
    }
}

/// A new epoch: random, 16 hex digits.
pub(crate) fn new_epoch() -> String {
    let n = fastrand::u64(..);
    alloc::format!("{n:016x}")
}

/// How often, at most, the histories are swept for channels to forget.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// The histories of one process's channels.
pub(crate) struct Histories {
    rules: HistoryRules,
    /// The base of this process's epochs (see [`epoch_at`]).
    base: String,
    started: Instant,
    /// Histories begun so far (the `N` of the last epoch).
    begun: u64,
    channels: HashMap<String, ChannelHistory>,
    swept: Instant,
}

impl Default for Histories {
    fn default() -> Self {
        let now = Instant::now();
        Self {
            rules: HistoryRules::default(),
            base: new_epoch(),
            started: now,
            begun: 0,
            channels: HashMap::new(),
            swept: now,
        }
    }
}

impl fmt::Debug for Histories {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Histories")
            .field("rules", &self.rules)
            .field("channels", &self.channels.len())
            .finish()
    }
}

impl Histories {
    pub(crate) fn set_rules(&mut self, rules: HistoryRules) {
        self.rules = rules;
    }

    /// The epoch of a history that begins at `now` (`n` ≥ 1), or of a subscriber's view of a
    /// channel without one (`n` = 0).
    fn epoch_now(&self, now: Instant, n: u64) -> String {
        epoch_at(&self.base, now.duration_since(self.started).as_millis() as u64, n)
    }

    /// Forgets the channels idle for longer than their `forget_after` (at most every
    /// [`SWEEP_EVERY`]).
    fn sweep(&mut self, now: Instant) {
        if now.duration_since(self.swept) < SWEEP_EVERY {
            return;
        }
        self.swept = now;
        self.channels.retain(|_, h| now.duration_since(h.touched) < h.options.forget_after());
    }

    /// The history of `channel`, begun (in a new epoch) if it has none yet; `None` when the
    /// channel keeps no history.
    fn begin(&mut self, channel: &str, now: Instant) -> Option<&mut ChannelHistory> {
        if !self.channels.contains_key(channel) {
            let options = self.rules.for_channel(channel)?;
            self.begun += 1;
            let epoch = self.epoch_now(now, self.begun);
            let h = ChannelHistory { options, epoch, top: 0, entries: VecDeque::new(), touched: now };
            self.channels.insert(String::from(channel), h);
        }
        self.channels.get_mut(channel)
    }

    /// A publication of `data` to `channel`: with the next position (and kept) when the
    /// channel has history.
    pub(crate) fn publish(&mut self, channel: &str, data: Option<Value>) -> Result<Publication, Error> {
        let now = Instant::now();
        self.sweep(now);
        let Some(h) = self.begin(channel, now) else { return Publication::new(channel, data) };
        let position = Position { offset: h.top + 1, epoch: h.epoch.clone() };
        let publication = Publication::at(channel, data, position)?;
        h.top += 1;
        h.touched = now;
        h.entries.push_back(Entry { offset: h.top, at: now, publication: publication.clone() });
        h.trim(now);
        Ok(publication)
    }

    /// Where a new subscription to `channel` starts, and what to replay to it first (`None`:
    /// the channel keeps no history).
    pub(crate) fn recover(
        &mut self,
        channel: &str,
        since: Option<&Since>,
    ) -> Option<(Recovery, Vec<Publication>)> {
        let now = Instant::now();
        self.sweep(now);
        let Some(h) = self.channels.get_mut(channel) else {
            // No history yet: nothing is stored for this subscriber.
            let options = self.rules.for_channel(channel)?;
            let position = Position { offset: 0, epoch: self.epoch_now(now, 0) };
            let result =
                since.map(|since| refusal(since, &position.epoch, 0, 1, &options).map_or(Ok(0), Err));
            return Some((Recovery { position, result }, Vec::new()));
        };
        h.touched = now;
        h.trim(now);
        let position = h.position();
        let Some(since) = since else { return Some((Recovery { position, result: None }, Vec::new())) };
        let oldest = h.entries.front().map_or(h.top + 1, |e| e.offset);
        let failed = refusal(since, &h.epoch, h.top, oldest, &h.options);
        if let Some(reason) = failed {
            return Some((Recovery { position, result: Some(Err(reason)) }, Vec::new()));
        }
        let replay: Vec<Publication> =
            h.entries.iter().filter(|e| e.offset > since.offset).map(|e| e.publication.clone()).collect();
        let n = replay.len() as u64;
        Some((Recovery { position, result: Some(Ok(n)) }, replay))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_runs() {
        assert!(glob("chat.*", "chat.lobby"));
        assert!(glob("chat.*", "chat."));
        assert!(!glob("chat.*", "chatter"));
        assert!(glob("*", "anything"));
        assert!(glob("a*b*c", "axxbyyc"));
        assert!(!glob("a*b*c", "axxbyy"));
        assert!(glob("exact", "exact"));
        assert!(!glob("exact", "exactly"));
        assert!(!glob("ab*ba", "aba"));
    }

    fn pos(offset: u64, h: &Histories) -> Position {
        Position { offset, epoch: h.channels["c"].epoch.clone() }
    }

    #[test]
    fn offsets_are_consecutive_and_recovery_replays_what_came_after() {
        let mut h = Histories::default();
        h.set_rules(HistoryRules::new().pattern("c", HistoryOptions::last(3)));
        let p = h.publish("other", None).unwrap();
        assert_eq!(p.position(), None, "channels without history have no position");
        for i in 1..=5u64 {
            let p = h.publish("c", Some(Value::from(i))).unwrap();
            assert_eq!(p.position().map(|p| p.offset), Some(i));
        }
        let (r, replay) = h.recover("c", Some(&pos(3, &h))).unwrap();
        assert_eq!(r.result, Some(Ok(2)));
        assert_eq!(r.position.offset, 5);
        let offsets: Vec<u64> = replay.iter().filter_map(|p| p.position().map(|p| p.offset)).collect();
        assert_eq!(offsets, [4, 5]);
        assert!(h.recover("c", Some(&pos(5, &h))).unwrap().1.is_empty());
        // 3 kept (3, 4, 5): from 2 on works, from 1 on not.
        assert_eq!(h.recover("c", Some(&pos(2, &h))).unwrap().0.result, Some(Ok(3)));
        assert!(matches!(h.recover("c", Some(&pos(1, &h))).unwrap().0.result, Some(Err(_))));
        assert!(matches!(h.recover("c", Some(&pos(9, &h))).unwrap().0.result, Some(Err(_))));
        let wrong = Position { offset: 4, epoch: String::from("nope") };
        assert!(matches!(h.recover("c", Some(&wrong)).unwrap().0.result, Some(Err(_))));
        assert_eq!(h.recover("c", None).unwrap().0.result, None);
        assert!(h.recover("other", None).is_none());
    }

    #[test]
    fn a_channel_without_publishes_stores_nothing_and_its_subscribers_miss_nothing() {
        let mut h = Histories::default();
        h.set_rules(HistoryRules::new().pattern("c*", HistoryOptions::last(10)));
        for i in 0..1000 {
            let (r, replay) = h.recover(&alloc::format!("c{i}"), None).unwrap();
            assert_eq!((r.position.offset, replay.len()), (0, 0));
        }
        assert!(h.channels.is_empty(), "subscribing stored history state");
        // Seen empty, then three publishes: recovering from offset 0 replays all three.
        let (seen, _) = h.recover("c", None).unwrap();
        for i in 1..=3 {
            h.publish("c", Some(Value::from(i))).unwrap();
        }
        let (r, replay) = h.recover("c", Some(&seen.position)).unwrap();
        assert_eq!((r.result, replay.len()), (Some(Ok(3)), 3));
        // An epoch of another base, or from before the channel's forgetting time, is refused.
        let other = Position { offset: 0, epoch: epoch_at("0123456789abcdef", 0, 0) };
        assert!(matches!(h.recover("c", Some(&other)).unwrap().0.result, Some(Err(_))));
        let long_ago = epoch_at(&h.base, 0, 0);
        let after = HistoryOptions::last(1).with_meta_ttl(Duration::from_millis(5)).forget_after();
        assert!(began_after(&long_ago, &epoch_at(&h.base, 4, 1), after));
        assert!(!began_after(&long_ago, &epoch_at(&h.base, 5, 1), after), "could have been forgotten");
        assert!(!began_after(&epoch_at(&h.base, 6, 0), &epoch_at(&h.base, 5, 1), after), "began before");
        // Only an empty view (N = 0) stands for "nothing seen": another history's epoch does not.
        assert!(!began_after(&epoch_at(&h.base, 0, 2), &epoch_at(&h.base, 4, 1), after));
        // A non-zero offset must match the epoch exactly.
        let ahead = Position { offset: 1, epoch: seen.position.epoch.clone() };
        assert!(matches!(h.recover("c", Some(&ahead)).unwrap().0.result, Some(Err(_))));
    }

    #[test]
    fn an_idle_channel_is_forgotten_and_its_subscribers_are_told() {
        let mut h = Histories::default();
        let options = HistoryOptions::last(10).with_meta_ttl(Duration::ZERO);
        h.set_rules(HistoryRules::new().pattern("c", options).pattern("kept", HistoryOptions::last(10)));
        h.publish("c", Some(Value::from(1))).unwrap();
        h.publish("kept", Some(Value::from(1))).unwrap();
        let before = pos(1, &h);
        // The next operation after SWEEP_EVERY forgets it.
        h.swept = h.swept.checked_sub(SWEEP_EVERY).unwrap();
        let (r, _) = h.recover("c", Some(&before)).unwrap();
        assert!(!h.channels.contains_key("c"));
        assert!(h.channels.contains_key("kept"), "a channel inside its meta_ttl was forgotten");
        assert!(matches!(r.result, Some(Err(_))), "{r:?}");
        // Published again, it starts over in a new epoch.
        let p = h.publish("c", Some(Value::from(2))).unwrap();
        let again = p.position().unwrap();
        assert_eq!(again.offset, 1);
        assert_ne!(again.epoch, before.epoch);
    }

    #[test]
    fn a_bad_recover_request_is_an_error() {
        use serde_json::json;
        assert_eq!(recover_request(None), Ok(None));
        assert_eq!(recover_request(Some(&json!({"x": 1}))), Ok(None));
        for bad in [
            json!({"recover": 1}),
            json!({"recover": {"offset": "1", "epoch": "e"}}),
            json!({"recover": {"offset": -1, "epoch": "e"}}),
            json!({"recover": {"offset": 1}}),
        ] {
            assert!(recover_request(Some(&bad)).is_err(), "{bad}");
        }
    }
}
