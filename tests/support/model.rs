//! A reference model of `WritableConsumableStream`, shared by the property test (`tests/model.rs`)
//! and the fuzz target (`fuzz/fuzz_targets/stream_ops.rs`).
//!
//! The model is deliberately naive: every consumer owns a `VecDeque` of the entries addressed to
//! it (plain items and close packets) and a state. [`run`] applies a sequence of [`Op`]s to a real
//! stream and to the model, and after every op asserts that they agree on everything observable:
//! the result of the op, what a poll yields (`Some`, `None` or `Pending`), `Consumer::end`,
//! `Consumer::backpressure`, the stream's `backpressure`, `consumer_backpressure`,
//! `consumer_count`, `has_consumer`, `consumer_stats` and consumer ids.
//!
//! The semantics modelled are the documented ones (`src/stream/mod.rs`, `api-notes.md`):
//! - a consumer receives every item written after its creation, in order, then ends at the first
//!   close packet addressed to it (`close`, `close_consumer`), and stays ended;
//! - backpressure of a consumer = entries addressed to it (items, targeted items, its close
//!   packets) that it has not yielded yet; items prefetched by the consumer still count, entries
//!   addressed only to *other* consumers never count; the stream's backpressure is the maximum;
//! - kill is immediate: the consumer leaves the stream at once and its next poll yields `None`,
//!   with `End::Killed { value, skipped }`, `skipped` being its backpressure at the kill;
//! - `Overflow::Wait`: `try_write` (and a `write_async` poll) is refused while some live consumer
//!   has `limit` or more entries pending; `write` always appends;
//! - `Overflow::KillConsumer`: after any append, each live consumer with more than `limit`
//!   entries pending is killed with `End::Overflowed { skipped }`;
//! - once every stream handle is dropped, a consumer yields what is pending, then `None`
//!   (`End::Dropped`).
#![allow(dead_code)]

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use futures_core::Stream;
use socketcluster::stream::{
    Consumer, ConsumerId, ConsumerStats, End, Full, Overflow, WritableConsumableStream,
};

/// Consumers created per run at most (later `Create` ops do nothing).
pub(crate) const MAX_CONSUMERS: usize = 8;
/// Items written or polled by one `WriteMany` / `PollMany` op at most (crosses the consumer's
/// 32-item prefetch and the buffer's 64-entry chunks).
pub(crate) const MAX_BATCH: usize = 80;
/// Limits of bounded streams are taken modulo this.
pub(crate) const MAX_LIMIT: usize = 48;

/// The stream under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(fuzzing, derive(arbitrary::Arbitrary))]
pub(crate) enum Kind {
    /// `WritableConsumableStream::new()`.
    Unbounded,
    /// `with_limit(limit % MAX_LIMIT, Overflow::Wait)`.
    Wait(u8),
    /// `with_limit(limit % MAX_LIMIT, Overflow::KillConsumer)`.
    KillConsumer(u8),
}

/// One step. Consumer indexes are taken modulo the number of consumers created so far (ops that
/// name a consumer do nothing before the first one exists); a consumer's id stays valid (and is
/// checked as unknown) after it ended or was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(fuzzing, derive(arbitrary::Arbitrary))]
pub(crate) enum Op {
    /// `create_consumer`.
    Create,
    /// `write(next value)`.
    Write,
    /// `n % MAX_BATCH` writes.
    WriteMany(u8),
    /// `try_write(next value)`.
    TryWrite,
    /// Polls `write_async(next value)` once, then drops the future.
    WriteAsyncOnce,
    /// `write_to_consumer(id of consumer, next value)`.
    WriteTo(u8),
    /// `n % MAX_BATCH` targeted writes to one consumer (the others must skip them all).
    WriteToMany(u8, u8),
    /// `close` / `close_with(next value)`.
    Close { with_value: bool },
    /// `close_consumer` / `close_consumer_with`.
    CloseConsumer { consumer: u8, with_value: bool },
    /// `kill` / `kill_with`.
    Kill { with_value: bool },
    /// `kill_consumer` / `kill_consumer_with`.
    KillConsumer { consumer: u8, with_value: bool },
    /// Drops a consumer handle.
    DropConsumer(u8),
    /// Polls a consumer once with a no-op waker.
    Poll(u8),
    /// Polls a consumer `n % MAX_BATCH` times.
    PollMany(u8, u8),
    /// Checks every consumer's stats (also done after every op).
    Check,
    /// Drops the stream handle (every later stream op does nothing).
    DropStream,
}

/// What a poll returned, comparable between the model and the real consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Polled {
    Item(u32),
    Ended,
    Pending,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Item(u32),
    Close(Option<u32>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Registered with the stream: counted, receives writes.
    Live,
    /// Ended from outside (kill, overflow); its next poll yields `None`.
    Killed(End<u32>),
    /// Has yielded `None`; `end()` returns this.
    Ended(End<u32>),
}

#[derive(Debug)]
struct ModelConsumer {
    id: u64,
    queue: VecDeque<Entry>,
    state: State,
    /// The handle was dropped.
    dropped: bool,
}

impl ModelConsumer {
    fn is_live(&self) -> bool {
        !self.dropped && self.state == State::Live
    }

    fn backpressure(&self) -> usize {
        if self.is_live() { self.queue.len() } else { 0 }
    }

    fn end(&self) -> Option<&End<u32>> {
        match &self.state {
            State::Ended(e) => Some(e),
            _ => None,
        }
    }
}

/// The model of one stream and its consumers.
#[derive(Debug)]
pub(crate) struct Model {
    limit: Option<(usize, Overflow)>,
    consumers: Vec<ModelConsumer>,
    next_id: u64,
    stream_dropped: bool,
}

impl Model {
    pub(crate) fn new(kind: Kind) -> Self {
        let limit = match kind {
            Kind::Unbounded => None,
            Kind::Wait(l) => Some((l as usize % MAX_LIMIT, Overflow::Wait)),
            Kind::KillConsumer(l) => Some((l as usize % MAX_LIMIT, Overflow::KillConsumer)),
        };
        Self { limit, consumers: Vec::new(), next_id: 1, stream_dropped: false }
    }

    fn live(&self) -> impl Iterator<Item = &ModelConsumer> {
        self.consumers.iter().filter(|c| c.is_live())
    }

    fn live_count(&self) -> usize {
        self.live().count()
    }

    fn backpressure(&self) -> usize {
        self.live().map(|c| c.queue.len()).max().unwrap_or(0)
    }

    fn create(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.consumers.push(ModelConsumer { id, queue: VecDeque::new(), state: State::Live, dropped: false });
        id
    }

    /// Applies `Overflow::KillConsumer` after an append; returns how many consumers were shed.
    fn shed(&mut self) -> usize {
        let mut shed = 0;
        if let Some((limit, Overflow::KillConsumer)) = self.limit {
            for c in self.consumers.iter_mut().filter(|c| c.is_live()) {
                if c.queue.len() > limit {
                    let skipped = c.queue.len();
                    c.queue.clear();
                    c.state = State::Killed(End::Overflowed { skipped });
                    shed += 1;
                }
            }
        }
        shed
    }

    /// Appends for every live consumer; returns how many it reached and were not shed by it.
    fn append_all(&mut self, entry: Entry) -> usize {
        let mut reached = 0;
        for c in self.consumers.iter_mut().filter(|c| c.is_live()) {
            c.queue.push_back(entry.clone());
            reached += 1;
        }
        reached - self.shed()
    }

    /// Appends for one consumer; returns whether it was live and was not shed by it.
    fn append_to(&mut self, index: usize, entry: Entry) -> bool {
        let c = &mut self.consumers[index];
        if !c.is_live() {
            return false;
        }
        c.queue.push_back(entry);
        self.shed();
        self.consumers[index].is_live()
    }

    fn has_room(&self) -> bool {
        match self.limit {
            Some((limit, Overflow::Wait)) => self.live().all(|c| c.queue.len() < limit),
            _ => true,
        }
    }

    fn write(&mut self, v: u32) -> usize {
        self.append_all(Entry::Item(v))
    }

    fn close(&mut self, value: Option<u32>) {
        self.append_all(Entry::Close(value));
    }

    fn kill_one(&mut self, index: usize, value: Option<u32>) -> bool {
        let c = &mut self.consumers[index];
        if !c.is_live() {
            return false;
        }
        let skipped = c.queue.len();
        c.queue.clear();
        c.state = State::Killed(End::Killed { value, skipped });
        true
    }

    fn kill(&mut self, value: Option<u32>) -> usize {
        let live: Vec<usize> = (0..self.consumers.len()).filter(|&i| self.consumers[i].is_live()).collect();
        for &i in &live {
            self.kill_one(i, value);
        }
        live.len()
    }

    fn poll(&mut self, index: usize) -> Polled {
        let dropped_stream = self.stream_dropped;
        let c = &mut self.consumers[index];
        match &c.state {
            State::Ended(_) => Polled::Ended,
            State::Killed(end) => {
                c.state = State::Ended(end.clone());
                Polled::Ended
            }
            State::Live => match c.queue.pop_front() {
                Some(Entry::Item(v)) => Polled::Item(v),
                Some(Entry::Close(value)) => {
                    c.queue.clear();
                    c.state = State::Ended(End::Closed { value });
                    Polled::Ended
                }
                None if dropped_stream => {
                    c.state = State::Ended(End::Dropped);
                    Polled::Ended
                }
                None => Polled::Pending,
            },
        }
    }
}

/// The real stream and its consumer handles, indexed like the model's consumers.
struct Real {
    stream: Option<WritableConsumableStream<u32>>,
    consumers: Vec<Option<Consumer<u32>>>,
    /// Every consumer's id, kept after its handle is dropped.
    ids: Vec<ConsumerId>,
}

fn poll_consumer(c: &mut Consumer<u32>) -> Polled {
    let mut cx = Context::from_waker(Waker::noop());
    match Pin::new(c).poll_next(&mut cx) {
        Poll::Ready(Some(v)) => Polled::Item(v),
        Poll::Ready(None) => Polled::Ended,
        Poll::Pending => Polled::Pending,
    }
}

/// Applies `ops` to a real stream of kind `kind` and to the model; panics at the first
/// disagreement, naming the op.
pub(crate) fn run(kind: Kind, ops: &[Op]) {
    let mut model = Model::new(kind);
    let stream = match model.limit {
        None => WritableConsumableStream::new(),
        Some((limit, overflow)) => WritableConsumableStream::with_limit(limit, overflow),
    };
    assert_eq!(stream.limit(), model.limit.map(|(l, _)| l));
    let mut real = Real { stream: Some(stream), consumers: Vec::new(), ids: Vec::new() };
    let mut next_value: u32 = 0;
    let mut value = move || {
        next_value += 1;
        next_value
    };

    for (step, &op) in ops.iter().enumerate() {
        let ctx = || format!("step {step}: {op:?} (ops so far: {:?})", &ops[..=step]);
        let n = model.consumers.len();
        // The consumer an op names, if any consumer exists.
        let pick = |i: u8| (n > 0).then(|| i as usize % n);
        match op {
            Op::Create => {
                if let Some(s) = &real.stream
                    && n < MAX_CONSUMERS
                {
                    let c = s.create_consumer();
                    let id = model.create();
                    assert_eq!(c.id().get(), id, "{}: ids are 1, 2, 3, ... never reused", ctx());
                    real.ids.push(c.id());
                    real.consumers.push(Some(c));
                }
            }
            Op::Write | Op::WriteMany(_) => {
                let times = if let Op::WriteMany(k) = op { k as usize % MAX_BATCH } else { 1 };
                if let Some(s) = &real.stream {
                    for _ in 0..times {
                        let v = value();
                        assert_eq!(s.write(v), model.write(v), "{}: write({v}) reached", ctx());
                    }
                }
            }
            Op::TryWrite => {
                if let Some(s) = &real.stream {
                    let v = value();
                    let expected = if model.has_room() { Ok(model.write(v)) } else { Err(Full(v)) };
                    assert_eq!(s.try_write(v), expected, "{}: try_write({v})", ctx());
                }
            }
            Op::WriteAsyncOnce => {
                if let Some(s) = &real.stream {
                    let v = value();
                    let mut fut = s.write_async(v);
                    let mut cx = Context::from_waker(Waker::noop());
                    let got = Pin::new(&mut fut).poll(&mut cx);
                    drop(fut);
                    let expected = if model.has_room() { Poll::Ready(model.write(v)) } else { Poll::Pending };
                    assert_eq!(got, expected, "{}: write_async({v}) polled once", ctx());
                }
            }
            Op::WriteTo(i) | Op::WriteToMany(i, _) => {
                let times = if let Op::WriteToMany(_, k) = op { k as usize % MAX_BATCH } else { 1 };
                if let (Some(s), Some(i)) = (&real.stream, pick(i)) {
                    let id = real.ids[i];
                    for _ in 0..times {
                        let v = value();
                        let expected = model.append_to(i, Entry::Item(v));
                        assert_eq!(s.write_to_consumer(id, v), expected, "{}: write_to_consumer({v})", ctx());
                    }
                }
            }
            Op::Close { with_value } => {
                if let Some(s) = &real.stream {
                    let v = with_value.then(&mut value);
                    match v {
                        Some(v) => s.close_with(v),
                        None => s.close(),
                    }
                    model.close(v);
                }
            }
            Op::CloseConsumer { consumer, with_value } => {
                if let (Some(s), Some(i)) = (&real.stream, pick(consumer)) {
                    let v = with_value.then(&mut value);
                    let id = real.ids[i];
                    let got = match v {
                        Some(v) => s.close_consumer_with(id, v),
                        None => s.close_consumer(id),
                    };
                    assert_eq!(got, model.append_to(i, Entry::Close(v)), "{}: close_consumer", ctx());
                }
            }
            Op::Kill { with_value } => {
                if let Some(s) = &real.stream {
                    let v = with_value.then(&mut value);
                    let got = match v {
                        Some(v) => s.kill_with(v),
                        None => s.kill(),
                    };
                    assert_eq!(got, model.kill(v), "{}: kill returns the consumers killed", ctx());
                }
            }
            Op::KillConsumer { consumer, with_value } => {
                if let (Some(s), Some(i)) = (&real.stream, pick(consumer)) {
                    let v = with_value.then(&mut value);
                    let id = real.ids[i];
                    let got = match v {
                        Some(v) => s.kill_consumer_with(id, v),
                        None => s.kill_consumer(id),
                    };
                    assert_eq!(got, model.kill_one(i, v), "{}: kill_consumer", ctx());
                }
            }
            Op::DropConsumer(i) => {
                if let Some(i) = pick(i) {
                    drop(real.consumers[i].take());
                    model.consumers[i].dropped = true;
                }
            }
            Op::Poll(i) | Op::PollMany(i, _) => {
                let times = if let Op::PollMany(_, k) = op { k as usize % MAX_BATCH } else { 1 };
                if let Some(i) = pick(i)
                    && let Some(c) = real.consumers[i].as_mut()
                {
                    for _ in 0..times {
                        let got = poll_consumer(c);
                        let expected = model.poll(i);
                        assert_eq!(got, expected, "{}: poll of consumer {}", ctx(), model.consumers[i].id);
                    }
                }
            }
            Op::Check => {}
            Op::DropStream => {
                real.stream = None;
                model.stream_dropped = true;
            }
        }
        check(&model, &real, &ctx);
    }
}

/// Asserts that the real stream and the model agree on every observable value.
fn check(model: &Model, real: &Real, ctx: &dyn Fn() -> String) {
    for (i, (m, c)) in model.consumers.iter().zip(&real.consumers).enumerate() {
        let Some(c) = c else { continue };
        assert_eq!(c.id().get(), m.id, "{}: id of consumer {i}", ctx());
        assert_eq!(c.backpressure(), m.backpressure(), "{}: Consumer::backpressure of {}", ctx(), m.id);
        assert_eq!(c.end(), m.end(), "{}: Consumer::end of {}", ctx(), m.id);
        assert_eq!(c.is_ended(), m.end().is_some(), "{}: is_ended of {}", ctx(), m.id);
    }
    let Some(s) = &real.stream else { return };
    assert_eq!(s.consumer_count(), model.live_count(), "{}: consumer_count", ctx());
    assert_eq!(s.backpressure(), model.backpressure(), "{}: stream backpressure", ctx());
    for (m, &id) in model.consumers.iter().zip(&real.ids) {
        assert_eq!(s.has_consumer(id), m.is_live(), "{}: has_consumer({})", ctx(), m.id);
        assert_eq!(
            s.consumer_backpressure(id),
            m.backpressure(),
            "{}: consumer_backpressure({})",
            ctx(),
            m.id
        );
    }
    let stats: Vec<(u64, usize)> =
        s.consumer_stats().iter().map(|st: &ConsumerStats| (st.id.get(), st.backpressure)).collect();
    let expected: Vec<(u64, usize)> = model.live().map(|c| (c.id, c.queue.len())).collect();
    assert_eq!(stats, expected, "{}: consumer_stats", ctx());
}
