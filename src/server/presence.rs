//! Presence (our extension; SocketCluster has none): who is subscribed to each channel of this
//! server, with join and leave events. It follows the server's own `subscription` and
//! `unsubscription` events — the same ones every way of leaving emits (unsubscribe, kick-out,
//! disconnect, shedding with 1013) — so it cannot drift from the subscriptions.
//!
//! [`Exchange::presence`](super::Exchange::presence) reads it;
//! [`ServerOptions::client_presence`](super::ServerOptions::client_presence) lets clients ask
//! with the `#presence` procedure.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use std::collections::HashMap;

use serde_json::Value;

use super::{ServerEvent, ServerSocket};
use crate::stream::{Consumer, StreamDemux};
use crate::sync::Mutex;

/// A socket subscribed to a channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PresenceMember {
    /// The socket's id.
    pub socket_id: String,
    /// [`ServerOptions::presence_user_field`](super::ServerOptions::presence_user_field) of its
    /// auth token when it subscribed (`None`: unauthenticated, or no such field).
    pub user: Option<Value>,
}

impl PresenceMember {
    /// `{"id":..,"user":..}`, as `#presence` answers.
    pub fn to_value(&self) -> Value {
        serde_json::json!({ "id": self.socket_id, "user": self.user })
    }
}

/// A change of a channel's members ([`Exchange::presence_listener`](super::Exchange::presence_listener)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PresenceEvent {
    /// A socket subscribed.
    Join(PresenceMember),
    /// A socket left (unsubscribed, kicked out, disconnected).
    Leave(PresenceMember),
}

/// Every channel's members, and their join/leave streams (by channel name).
#[derive(Debug, Default)]
pub(crate) struct Presence {
    members: Mutex<HashMap<String, BTreeMap<String, PresenceMember>>>,
    events: StreamDemux<PresenceEvent>,
    user_field: Option<String>,
}

impl Presence {
    pub(crate) fn new(user_field: Option<String>) -> Self {
        Self { user_field, ..Self::default() }
    }

    fn member(&self, socket: &ServerSocket) -> PresenceMember {
        let user = self.user_field.as_ref().and_then(|f| socket.auth_token()?.get(f.as_str()).cloned());
        PresenceMember { socket_id: String::from(socket.id()), user }
    }

    /// Follows a server event; the change it made (channel, member, joined), if any.
    pub(crate) fn record(&self, event: &ServerEvent) -> Option<(String, PresenceMember, bool)> {
        match event {
            ServerEvent::Subscription { socket, channel, .. } => {
                let member = self.member(socket);
                let joined = self
                    .members
                    .lock()
                    .entry(channel.clone())
                    .or_default()
                    .insert(member.socket_id.clone(), member.clone())
                    .is_none();
                if !joined {
                    return None;
                }
                if self.events.consumer_count(channel) > 0 {
                    self.events.write(channel, PresenceEvent::Join(member.clone()));
                }
                Some((channel.clone(), member, true))
            }
            ServerEvent::Unsubscription { socket, channel } => {
                let left = {
                    let mut members = self.members.lock();
                    let left = members.get_mut(channel.as_str()).and_then(|m| m.remove(socket.id()));
                    if members.get(channel.as_str()).is_some_and(BTreeMap::is_empty) {
                        members.remove(channel.as_str());
                    }
                    left
                };
                let member = left?;
                if self.events.consumer_count(channel) > 0 {
                    self.events.write(channel, PresenceEvent::Leave(member.clone()));
                }
                Some((channel.clone(), member, false))
            }
            _ => None,
        }
    }

    pub(crate) fn members(&self, channel: &str) -> Vec<PresenceMember> {
        self.members.lock().get(channel).map_or_else(Vec::new, |m| m.values().cloned().collect())
    }

    pub(crate) fn count(&self, channel: &str) -> usize {
        self.members.lock().get(channel).map_or(0, BTreeMap::len)
    }

    pub(crate) fn listener(&self, channel: &str) -> Consumer<PresenceEvent> {
        self.events.create_consumer(channel)
    }
}
