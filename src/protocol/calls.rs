//! Call ids and pending calls.
//!
//! Each side numbers its invokes from 1, independently of the other side. A client keeps
//! counting across reconnects. A pending call is answered (its `rid` comes back), times out
//! (its deadline passes), or is aborted (the connection closes); a response to a call that is no
//! longer pending is ignored, which is how late responses after a timeout are dropped.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::string::String;
use alloc::vec::Vec;
use core::time::Duration;

/// Call-id allocation and pending-call tracking.
///
/// ```
/// use std::time::Duration;
/// use socketcluster::protocol::Calls;
/// let mut calls = Calls::new();
/// let a = calls.start("echo", Some(Duration::from_secs(10)));
/// let b = calls.start("slow", Some(Duration::from_secs(5)));
/// assert_eq!((a, b), (1, 2));
/// assert_eq!(calls.next_deadline(), Some(Duration::from_secs(5)));
/// assert_eq!(calls.expire(Duration::from_secs(6)), vec![(2, "slow".to_string())]);
/// assert_eq!(calls.finish(1).as_deref(), Some("echo"));
/// assert_eq!(calls.finish(2), None); // late response: ignored
/// ```
#[derive(Debug, Default)]
pub struct Calls {
    next: u64,
    pending: BTreeMap<u64, Pending>,
    deadlines: BTreeSet<(Duration, u64)>,
}

#[derive(Debug)]
struct Pending {
    event: String,
    deadline: Option<Duration>,
}

impl Calls {
    /// No calls yet; the first id is 1.
    pub fn new() -> Self {
        Self { next: 1, pending: BTreeMap::new(), deadlines: BTreeSet::new() }
    }

    /// Takes the next call id without tracking a call.
    pub fn next_cid(&mut self) -> u64 {
        let cid = self.next.max(1);
        self.next = cid + 1;
        cid
    }

    /// Starts tracking a call to `event`; `deadline` is when it times out (`None`: never).
    pub fn start(&mut self, event: &str, deadline: Option<Duration>) -> u64 {
        let cid = self.next_cid();
        self.pending.insert(cid, Pending { event: String::from(event), deadline });
        if let Some(d) = deadline {
            self.deadlines.insert((d, cid));
        }
        cid
    }

    /// A response arrived for `rid`: the call's event name if it was pending.
    pub fn finish(&mut self, rid: u64) -> Option<String> {
        let p = self.pending.remove(&rid)?;
        if let Some(d) = p.deadline {
            self.deadlines.remove(&(d, rid));
        }
        Some(p.event)
    }

    /// Stops tracking a call (the caller gave up); true if it was pending.
    pub fn cancel(&mut self, cid: u64) -> bool {
        self.finish(cid).is_some()
    }

    /// Whether `cid` is pending.
    pub fn is_pending(&self, cid: u64) -> bool {
        self.pending.contains_key(&cid)
    }

    /// The number of pending calls.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether no call is pending.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// The earliest deadline of a pending call.
    pub fn next_deadline(&self) -> Option<Duration> {
        self.deadlines.first().map(|(d, _)| *d)
    }

    /// Removes and returns the calls whose deadline is at or before `now`, earliest first.
    pub fn expire(&mut self, now: Duration) -> Vec<(u64, String)> {
        let mut out = Vec::new();
        while let Some(&(d, cid)) = self.deadlines.first() {
            if d > now {
                break;
            }
            self.deadlines.pop_first();
            if let Some(p) = self.pending.remove(&cid) {
                out.push((cid, p.event));
            }
        }
        out
    }

    /// Removes and returns every pending call (the connection closed), in call order.
    pub fn abort_all(&mut self) -> Vec<(u64, String)> {
        self.deadlines.clear();
        core::mem::take(&mut self.pending).into_iter().map(|(cid, p)| (cid, p.event)).collect()
    }
}
