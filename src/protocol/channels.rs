//! The client's channel table: SocketCluster's channel state machine.
//!
//! A channel is `Pending` from `subscribe()` until the server acknowledges its `#subscribe`,
//! then `Subscribed`. A failed subscribe, `unsubscribe()` or a kick-out removes it
//! (`Unsubscribed`). When the connection drops, subscribed channels go back to `Pending`; after
//! every (re)connect the pending ones are subscribed again, highest `priority` first (ties in the
//! order they were subscribed), `waitForAuth` channels only once authenticated.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

use serde_json::{Map, Value};

use super::position::{Position, with_recover};

/// A channel's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChannelState {
    /// Subscribe requested, not (yet) acknowledged.
    Pending,
    /// Acknowledged by the server.
    Subscribed,
    /// Not in the table.
    Unsubscribed,
}

impl ChannelState {
    /// `pending`, `subscribed` or `unsubscribed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Subscribed => "subscribed",
            Self::Unsubscribed => "unsubscribed",
        }
    }
}

/// Subscription options (`subscribe(channel, {waitForAuth, priority, data})`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SubscribeOptions {
    /// Subscribe only while authenticated.
    pub wait_for_auth: bool,
    /// Higher priorities are re-subscribed first after a reconnect.
    pub priority: Option<i64>,
    /// Data sent with the `#subscribe` (the server's middleware sees it).
    pub data: Option<Value>,
}

#[derive(Debug)]
struct Record {
    state: ChannelState,
    options: SubscribeOptions,
    in_flight: Option<u64>,
    order: u64,
    /// The last position seen, for channels with history: sent as `recover` when the channel
    /// is subscribed again after a reconnect.
    position: Option<Position>,
}

/// A state change the driver reports (`subscribeStateChange` and the events around it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateChange {
    /// The channel.
    pub channel: String,
    /// The state before.
    pub old: ChannelState,
    /// The state after.
    pub new: ChannelState,
}

/// The client's channels.
///
/// ```
/// use socketcluster::protocol::channels::{Channels, ChannelState, SubscribeOptions};
/// let mut ch = Channels::new();
/// ch.subscribe("low", SubscribeOptions::default());
/// ch.subscribe("high", SubscribeOptions { priority: Some(10), ..Default::default() });
/// assert_eq!(ch.due(false), vec!["high".to_string(), "low".to_string()]);
/// ch.sent("high", 2);
/// assert_eq!(ch.acked(2).map(|c| c.new), Some(ChannelState::Subscribed));
/// assert_eq!(ch.connection_lost().len(), 1); // high goes back to pending
/// assert_eq!(ch.state("high"), ChannelState::Pending);
/// ```
#[derive(Debug, Default)]
pub struct Channels {
    map: BTreeMap<String, Record>,
    in_flight: BTreeMap<u64, String>,
    seq: u64,
}

impl Channels {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `channel` as pending, or replaces the options of a channel already in the table.
    /// True when it was new.
    pub fn subscribe(&mut self, channel: &str, options: SubscribeOptions) -> bool {
        if let Some(r) = self.map.get_mut(channel) {
            r.options = options;
            return false;
        }
        self.seq += 1;
        let r = Record {
            state: ChannelState::Pending,
            options,
            in_flight: None,
            order: self.seq,
            position: None,
        };
        self.map.insert(String::from(channel), r);
        true
    }

    /// Removes `channel`; its state before (Unsubscribed when it was not there).
    pub fn unsubscribe(&mut self, channel: &str) -> ChannelState {
        match self.map.remove(channel) {
            Some(r) => {
                if let Some(cid) = r.in_flight {
                    self.in_flight.remove(&cid);
                }
                r.state
            }
            None => ChannelState::Unsubscribed,
        }
    }

    /// The state of `channel`.
    pub fn state(&self, channel: &str) -> ChannelState {
        self.map.get(channel).map_or(ChannelState::Unsubscribed, |r| r.state)
    }

    /// The options of `channel`.
    pub fn options(&self, channel: &str) -> Option<&SubscribeOptions> {
        self.map.get(channel).map(|r| &r.options)
    }

    /// Whether publishes for `channel` are delivered (it is pending or subscribed).
    pub fn contains(&self, channel: &str) -> bool {
        self.map.contains_key(channel)
    }

    /// The channels to send a `#subscribe` for now, in order: pending, not in flight, and not
    /// waiting for authentication.
    pub fn due(&self, authenticated: bool) -> Vec<String> {
        let mut due: Vec<(&String, &Record)> = self
            .map
            .iter()
            .filter(|(_, r)| r.state == ChannelState::Pending && r.in_flight.is_none())
            .filter(|(_, r)| authenticated || !r.options.wait_for_auth)
            .collect();
        due.sort_by(|a, b| {
            let pa = a.1.options.priority.unwrap_or(0);
            let pb = b.1.options.priority.unwrap_or(0);
            pb.cmp(&pa).then(a.1.order.cmp(&b.1.order))
        });
        due.into_iter().map(|(n, _)| n.clone()).collect()
    }

    /// The `#subscribe` payload: `{"channel":C,"waitForAuth":true?,"data":D?}`. When a
    /// position of the channel is known (it was subscribed before the connection dropped), the
    /// data asks to recover from it: `"recover":{"offset":N,"epoch":E}` is added to the data
    /// object (data that is not an object is sent as it is, without recovery).
    ///
    /// ```
    /// use socketcluster::protocol::channels::{Channels, SubscribeOptions};
    /// use socketcluster::protocol::position::Position;
    /// let mut ch = Channels::new();
    /// ch.subscribe("news", SubscribeOptions::default());
    /// ch.observed("news", Position { offset: 7, epoch: "e".into() });
    /// assert_eq!(
    ///     ch.payload("news"),
    ///     serde_json::json!({"channel": "news", "data": {"recover": {"offset": 7, "epoch": "e"}}})
    /// );
    /// ```
    pub fn payload(&self, channel: &str) -> Value {
        let mut m = Map::new();
        m.insert(String::from("channel"), Value::String(String::from(channel)));
        if let Some(r) = self.map.get(channel) {
            if r.options.wait_for_auth {
                m.insert(String::from("waitForAuth"), Value::Bool(true));
            }
            let recovering = r.position.as_ref().and_then(|p| with_recover(r.options.data.as_ref(), p));
            if let Some(d) = recovering.or_else(|| r.options.data.clone()) {
                m.insert(String::from("data"), d);
            }
        }
        Value::Object(m)
    }

    /// A publish (or a subscribe acknowledgement) of `channel` carried `position`: remembered
    /// for recovery.
    pub fn observed(&mut self, channel: &str, position: Position) {
        if let Some(r) = self.map.get_mut(channel) {
            r.position = Some(position);
        }
    }

    /// The last position seen on `channel` (channels with history).
    pub fn position(&self, channel: &str) -> Option<&Position> {
        self.map.get(channel)?.position.as_ref()
    }

    /// A `#subscribe` for `channel` went out with call id `cid`.
    pub fn sent(&mut self, channel: &str, cid: u64) {
        if let Some(r) = self.map.get_mut(channel) {
            r.in_flight = Some(cid);
            self.in_flight.insert(cid, String::from(channel));
        }
    }

    /// Whether `cid` is an in-flight `#subscribe`.
    pub fn is_subscribe_call(&self, cid: u64) -> bool {
        self.in_flight.contains_key(&cid)
    }

    /// The server acknowledged subscribe call `cid`: the channel is subscribed.
    pub fn acked(&mut self, cid: u64) -> Option<StateChange> {
        let name = self.in_flight.remove(&cid)?;
        let r = self.map.get_mut(&name)?;
        r.in_flight = None;
        let old = r.state;
        r.state = ChannelState::Subscribed;
        Some(StateChange { channel: name, old, new: ChannelState::Subscribed })
    }

    /// The server refused subscribe call `cid`: the channel is removed (no retry).
    pub fn failed(&mut self, cid: u64) -> Option<StateChange> {
        let name = self.in_flight.remove(&cid)?;
        let r = self.map.remove(&name)?;
        Some(StateChange { channel: name, old: r.state, new: ChannelState::Unsubscribed })
    }

    /// The server kicked the client out of `channel`: removed.
    pub fn kick_out(&mut self, channel: &str) -> Option<StateChange> {
        let old = self.unsubscribe(channel);
        (old != ChannelState::Unsubscribed).then(|| StateChange {
            channel: String::from(channel),
            old,
            new: ChannelState::Unsubscribed,
        })
    }

    /// The connection dropped: in-flight subscribes are forgotten (they will be sent again) and
    /// subscribed channels go back to pending. Returns those state changes, in the order the
    /// channels were subscribed (socketcluster-client's channel map keeps insertion order).
    pub fn connection_lost(&mut self) -> Vec<StateChange> {
        self.in_flight.clear();
        let mut out = Vec::new();
        for (name, r) in self.map.iter_mut() {
            r.in_flight = None;
            if r.state == ChannelState::Subscribed {
                r.state = ChannelState::Pending;
                out.push((r.order, name.clone()));
            }
        }
        out.sort_unstable();
        out.into_iter()
            .map(|(_, channel)| StateChange {
                channel,
                old: ChannelState::Subscribed,
                new: ChannelState::Pending,
            })
            .collect()
    }

    /// The channels in the table (subscribed ones, plus pending ones when asked), in the order
    /// they were subscribed.
    pub fn subscriptions(&self, include_pending: bool) -> Vec<String> {
        let mut names: Vec<(u64, &String)> = self
            .map
            .iter()
            .filter(|(_, r)| include_pending || r.state == ChannelState::Subscribed)
            .map(|(n, r)| (r.order, n))
            .collect();
        names.sort_unstable();
        names.into_iter().map(|(_, n)| n.clone()).collect()
    }
}
