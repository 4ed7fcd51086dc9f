//! Fan-out benchmark: one writer, N consumers, every consumer receives every message.
//!
//! Compares [`WritableConsumableStream`] ("ours": one shared chunked buffer, one cursor per
//! consumer) with three peers on the same workload, in the same run, on the same executor:
//!
//! - `tokio::sync::broadcast`, capacity `messages.next_power_of_two()` so it never lags (a
//!   `Lagged` error fails the benchmark);
//! - `async-broadcast`, capacity `messages` so it never overflows (`Full` fails the benchmark);
//! - `async-channel×N`: one `async_channel::unbounded` per consumer, the writer sends a clone to
//!   each;
//! - "JS writable-consumable-stream": the npm package that SocketCluster 20 uses, version 4.2.0
//!   (pinned in `benches/js/package.json` and its lock file), on the same workload in node, by
//!   `benches/js/fanout.mjs` (see below).
//!
//! # Timed cases (median of 3 repetitions, ns per delivery = elapsed / (N × messages))
//!
//! - **live**: the consumers are tasks that keep up with the writer; the writer yields to the
//!   executor every 64 writes (a hand-written yield-once future).
//! - **step**: live, but the writer yields with `tokio::task::yield_now` after every write, so
//!   consumers are woken for each message (no batching of wake-ups; no JS counterpart).
//! - **drain**: the writer writes everything first; then the consumers are spawned and drain it.
//!
//! Every consumer reads until the channel ends and checks that it saw every message, in order (the
//! `u64` payload carries its sequence number; each `Arc<[u8; 64]>` carries its sequence number
//! modulo 1024 in its first bytes), so a case cannot silently measure nothing. The timer runs from
//! the first spawn to the last consumer's end, excluding channel creation and teardown. N ∈ {1,
//! 100, 1000, 10000} with about 10 million deliveries per case; payloads `u64` and
//! `Arc<[u8; 64]>` (cloned from a pool of 1024 pre-built `Arc`s, so that payload allocation is
//! not measured, but the reference counting is).
//!
//! Executors: tokio `current_thread` (single-threaded), a tokio multi-thread runtime with 2
//! workers, and a `smol::Executor` run by 1 thread (the bench's own) or by 2 (one more thread
//! running it until the bench ends). The writer and the consumers are all spawned tasks. On smol
//! the step writer yields with the same yield-once future as the live one (smol has no deferred
//! yield like tokio's).
//!
//! Ratios: "ours/best Rust peer" is ours ÷ the fastest of the three Rust peers; "ours/JS" is ours ÷
//! the JavaScript peer (below 1: ours is faster).
//!
//! # JavaScript peer
//!
//! `node --expose-gc benches/js/fanout.mjs`, one process per case, runs the same cases on node's
//! single thread, so only on the `current_thread` rows ("–" elsewhere): consumers are `for await`
//! loops over `createConsumer()`; live: started before the writer, which yields to the event loop
//! every 64 writes with `setImmediate` (it resumes once every woken consumer has run, like the
//! yield-once future behind the consumers it woke); drain: consumers created before the writes,
//! iterated after them. `stream.close()` ends the consumers, which check count and order like
//! ours. Payload `u64` ↔ a JS number (the sequence number); `Arc<[u8;64]>` ↔ one of 1024
//! pre-built 64-byte `Buffer`s. About 2 million deliveries per case (1 million with `--quick`), so
//! its "messages" is 2 000 000 / N, not the table's; one untimed warm-up run (a tenth of the
//! messages) precedes the 3 timed ones, and `global.gc()` runs before each, outside the timer.
//! Its memory rows (one consumer, not reading) are V8's `heapUsed` after `global.gc()`, not the
//! counting allocator.
//!
//! It runs when `node` is on the PATH and `benches/js/node_modules` exists, except with
//! `--quick`; otherwise one line says why it was skipped. `FANOUT_JS=1` requires it (also with
//! `--quick`): it runs `npm ci` in `benches/js` if `node_modules` is missing, and the bench fails
//! if node or npm cannot run. `FANOUT_JS=0` skips it.
//!
//! # Memory (counting global allocator: live requested bytes, not RSS)
//!
//! Consumers that read nothing; `messages` writes. "B/message" is (live bytes after the writes −
//! live bytes before the channel was created) / messages, so preallocated buffers count. Then the
//! consumers drain everything (memory must be returned) and everything is dropped.
//!
//! # Reproduce
//!
//! ```text
//! cargo bench --bench fanout              # full run (about 25 minutes on 2 cores; `-- live/ drain/ memory`: 10)
//! cargo bench --bench fanout -- --quick   # CI smoke run; same as FANOUT_QUICK=1
//! cargo bench --bench fanout -- drain/current_thread/u64/1000/ memory   # only matching cases
//! FANOUT_JS=1 cargo bench --bench fanout  # with the JavaScript peer, npm ci if needed
//! FANOUT_JS=1 cargo bench --bench fanout -- current_thread memory   # where JS has a column
//! (cd benches/js && npm ci && node --expose-gc fanout.mjs live 100 20000 buffer)   # JS alone
//! ```
//!
//! Filters are substrings of a timed case's key `scenario/executor/payload/N/` (executor
//! `current_thread`, `multi_thread2`, `smol1` or `smol2`, payload `u64` or `Arc<[u8;64]>`) or `memory` for the
//! memory table. The machine should be otherwise idle: the load average is printed at the start
//! and the end.

use std::alloc::{GlobalAlloc, Layout, System};
use std::future::Future;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering::Relaxed};
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::StreamExt;
use socketcluster::stream::{Consumer, WritableConsumableStream};
use tokio::runtime::Runtime;
use tokio::sync::broadcast;

// ---------------------------------------------------------------------------------------------
// Counting allocator
// ---------------------------------------------------------------------------------------------

/// `System`, plus a count of live bytes while a [`Probe`] is active (off otherwise, so that the
/// timed cases do not pay for a shared atomic counter).
struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static LIVE: AtomicIsize = AtomicIsize::new(0);

fn track(delta: isize) {
    if COUNTING.load(Relaxed) {
        LIVE.fetch_add(delta, Relaxed);
    }
}

/// Counts a new block of `size` bytes, unless the allocation failed.
fn counted(p: *mut u8, size: usize) -> *mut u8 {
    if !p.is_null() {
        track(size as isize);
    }
    p
}

// SAFETY: every call is forwarded unchanged to `System`; the sizes are only counted.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which is `System`'s.
        counted(unsafe { System.alloc(layout) }, layout.size())
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        counted(unsafe { System.alloc_zeroed(layout) }, layout.size())
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` (every allocation goes through us).
        unsafe { System.dealloc(ptr, layout) };
        track(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `dealloc`.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            track(new_size as isize - layout.size() as isize);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Counts live bytes from its creation to its drop. Single-threaded use only (no runtime is
/// alive while the memory cases run).
struct Probe;

impl Probe {
    fn start() -> Self {
        LIVE.store(0, Relaxed);
        COUNTING.store(true, Relaxed);
        Probe
    }

    /// Live bytes allocated since `start`.
    fn live(&self) -> isize {
        LIVE.load(Relaxed)
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        COUNTING.store(false, Relaxed);
    }
}

// ---------------------------------------------------------------------------------------------
// Payloads
// ---------------------------------------------------------------------------------------------

/// A message type: built from its sequence number, and checkable against it.
trait Payload: Clone + Send + Sync + 'static {
    const NAME: &'static str;
    /// The JavaScript peer's counterpart (`fanout.mjs`'s payload argument).
    const JS: &'static str;
    /// Message `i`.
    fn make(i: u64) -> Self;
    /// Whether this is message `i` (so a consumer can check order).
    fn is(&self, i: u64) -> bool;
}

impl Payload for u64 {
    const NAME: &'static str = "u64";
    const JS: &'static str = "number";

    fn make(i: u64) -> Self {
        i
    }

    fn is(&self, i: u64) -> bool {
        *self == i
    }
}

const POOL_LEN: u64 = 1024;

/// Pre-built payloads: message `i` is a clone of `POOL[i % POOL_LEN]`, which holds `i % POOL_LEN`
/// in its first 8 bytes.
static POOL: LazyLock<Vec<Arc<[u8; 64]>>> = LazyLock::new(|| {
    (0..POOL_LEN)
        .map(|k| {
            let mut bytes = [0u8; 64];
            bytes[..8].copy_from_slice(&k.to_le_bytes());
            Arc::new(bytes)
        })
        .collect()
});

impl Payload for Arc<[u8; 64]> {
    const NAME: &'static str = "Arc<[u8;64]>";
    const JS: &'static str = "buffer";

    fn make(i: u64) -> Self {
        POOL[(i % POOL_LEN) as usize].clone()
    }

    fn is(&self, i: u64) -> bool {
        let mut tag = [0u8; 8];
        tag.copy_from_slice(&self[..8]);
        u64::from_le_bytes(tag) == i % POOL_LEN
    }
}

// ---------------------------------------------------------------------------------------------
// Peers: one writer handle type and one receiver type each
// ---------------------------------------------------------------------------------------------

/// A receiving end: the next message, or `None` once the channel has ended.
trait Receive<T>: Send + 'static {
    fn receive(&mut self) -> impl Future<Output = Option<T>> + Send;
}

/// A fan-out channel's writing end.
trait Peer<T: Payload>: Send + Sized + 'static {
    const NAME: &'static str;
    type Rx: Receive<T>;
    /// A channel with `n` receivers, able to hold `capacity` messages per receiver without loss.
    fn open(n: usize, capacity: usize) -> (Self, Vec<Self::Rx>);
    /// Sends `value` to every receiver; panics if it cannot.
    fn publish(&self, value: T);
    /// Ends the channel: receivers get what is buffered, then `None`.
    fn finish(self) {}
}

/// `first` followed by `n - 1` more receivers.
fn receivers<R>(first: R, n: usize, more: impl FnMut() -> R) -> Vec<R> {
    let mut all = Vec::with_capacity(n);
    all.push(first);
    all.extend(std::iter::repeat_with(more).take(n - 1));
    all
}

impl<T: Payload> Receive<T> for Consumer<T> {
    fn receive(&mut self) -> impl Future<Output = Option<T>> + Send {
        self.next()
    }
}

impl<T: Payload> Peer<T> for WritableConsumableStream<T> {
    const NAME: &'static str = "ours";
    type Rx = Consumer<T>;

    fn open(n: usize, _capacity: usize) -> (Self, Vec<Consumer<T>>) {
        let stream = Self::new();
        let consumers = (0..n).map(|_| stream.create_consumer()).collect();
        (stream, consumers)
    }

    fn publish(&self, value: T) {
        assert!(self.write(value) > 0, "ours: no consumer reached");
    }

    fn finish(self) {
        self.close();
    }
}

impl<T: Payload> Receive<T> for broadcast::Receiver<T> {
    async fn receive(&mut self) -> Option<T> {
        match self.recv().await {
            Ok(v) => Some(v),
            Err(broadcast::error::RecvError::Closed) => None,
            Err(broadcast::error::RecvError::Lagged(n)) => panic!("tokio::broadcast lagged by {n}"),
        }
    }
}

impl<T: Payload> Peer<T> for broadcast::Sender<T> {
    const NAME: &'static str = "tokio::broadcast";
    type Rx = broadcast::Receiver<T>;

    fn open(n: usize, capacity: usize) -> (Self, Vec<Self::Rx>) {
        let (tx, rx) = broadcast::channel(capacity.next_power_of_two());
        let rxs = receivers(rx, n, || tx.subscribe());
        (tx, rxs)
    }

    fn publish(&self, value: T) {
        self.send(value).map_err(|_| "no receiver").expect("tokio::broadcast send");
    }
}

impl<T: Payload> Receive<T> for async_broadcast::Receiver<T> {
    async fn receive(&mut self) -> Option<T> {
        match self.recv_direct().await {
            Ok(v) => Some(v),
            Err(async_broadcast::RecvError::Closed) => None,
            Err(async_broadcast::RecvError::Overflowed(n)) => panic!("async-broadcast overflowed by {n}"),
        }
    }
}

impl<T: Payload> Peer<T> for async_broadcast::Sender<T> {
    const NAME: &'static str = "async-broadcast";
    type Rx = async_broadcast::Receiver<T>;

    fn open(n: usize, capacity: usize) -> (Self, Vec<Self::Rx>) {
        let (tx, rx) = async_broadcast::broadcast(capacity);
        let rxs = receivers(rx, n, || tx.new_receiver());
        (tx, rxs)
    }

    fn publish(&self, value: T) {
        let overflowed = self.try_broadcast(value).map_err(|_| "full, closed or inactive");
        assert!(overflowed.expect("async-broadcast try_broadcast").is_none());
    }
}

impl<T: Payload> Receive<T> for async_channel::Receiver<T> {
    async fn receive(&mut self) -> Option<T> {
        self.recv().await.ok()
    }
}

/// One unbounded channel per consumer.
impl<T: Payload> Peer<T> for Vec<async_channel::Sender<T>> {
    const NAME: &'static str = "async-channel×N";
    type Rx = async_channel::Receiver<T>;

    fn open(n: usize, _capacity: usize) -> (Self, Vec<Self::Rx>) {
        (0..n).map(|_| async_channel::unbounded()).unzip()
    }

    fn publish(&self, value: T) {
        let (last, rest) = self.split_last().expect("at least one consumer");
        for tx in rest {
            tx.try_send(value.clone()).map_err(|_| "closed").expect("async-channel send");
        }
        last.try_send(value).map_err(|_| "closed").expect("async-channel send");
    }
}

/// The type-erased entry points of one peer for one payload.
struct PeerFns {
    name: &'static str,
    run: fn(&Driver, Scenario, usize, u64) -> Duration,
    memory: fn(usize, u64, bool) -> MemRow,
}

fn peer<P: Peer<T>, T: Payload>() -> PeerFns {
    PeerFns { name: P::NAME, run: run::<P, T>, memory: memory::<P, T> }
}

/// Ours first; the table's column order.
fn peers<T: Payload>() -> [PeerFns; 4] {
    [
        peer::<WritableConsumableStream<T>, T>(),
        peer::<broadcast::Sender<T>, T>(),
        peer::<async_broadcast::Sender<T>, T>(),
        peer::<Vec<async_channel::Sender<T>>, T>(),
    ]
}

// ---------------------------------------------------------------------------------------------
// Timed driver
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Live,
    /// Live, but the writer yields with `tokio::task::yield_now` after every write.
    Step,
    Drain,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Live => "live",
            Scenario::Step => "step",
            Scenario::Drain => "drain",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exec {
    CurrentThread,
    MultiThread2,
    Smol1,
    Smol2,
}

impl Exec {
    const ALL: [Exec; 4] = [Exec::CurrentThread, Exec::MultiThread2, Exec::Smol1, Exec::Smol2];

    fn name(self) -> &'static str {
        match self {
            Exec::CurrentThread => "tokio current_thread",
            Exec::MultiThread2 => "tokio multi_thread(2)",
            Exec::Smol1 => "smol Executor(1)",
            Exec::Smol2 => "smol Executor(2)",
        }
    }

    /// The executor's part of a case's filter key.
    fn key(self) -> &'static str {
        match self {
            Exec::CurrentThread => "current_thread",
            Exec::MultiThread2 => "multi_thread2",
            Exec::Smol1 => "smol1",
            Exec::Smol2 => "smol2",
        }
    }

    fn driver(self) -> Driver {
        let tokio = match self {
            Exec::CurrentThread => tokio::runtime::Builder::new_current_thread().build(),
            Exec::MultiThread2 => tokio::runtime::Builder::new_multi_thread().worker_threads(2).build(),
            Exec::Smol1 => return Driver::smol(1),
            Exec::Smol2 => return Driver::smol(2),
        };
        Driver::Tokio(tokio.expect("build tokio runtime"))
    }
}

/// A running executor: a tokio runtime, or a `smol::Executor` run by the calling thread plus
/// `threads - 1` more.
enum Driver {
    Tokio(Runtime),
    Smol {
        ex: Arc<smol::Executor<'static>>,
        /// Closing it stops the extra threads.
        stop: async_channel::Sender<()>,
        threads: Vec<std::thread::JoinHandle<()>>,
    },
}

impl Driver {
    fn smol(threads: usize) -> Self {
        let ex = Arc::new(smol::Executor::new());
        let (stop, stopped) = async_channel::bounded::<()>(1);
        let threads = (1..threads)
            .map(|_| {
                let (ex, stopped) = (ex.clone(), stopped.clone());
                std::thread::spawn(move || smol::block_on(ex.run(stopped.recv())).unwrap_or_default())
            })
            .collect();
        Driver::Smol { ex, stop, threads }
    }

    /// Runs `future` to completion on this thread, as one of the executor's workers.
    fn block_on<F: Future>(&self, future: F) -> F::Output {
        match self {
            Driver::Tokio(rt) => rt.block_on(future),
            Driver::Smol { ex, .. } => smol::block_on(ex.run(future)),
        }
    }

    fn spawn<F: Future<Output: Send> + Send + 'static>(&self, future: F) -> Join<F::Output> {
        match self {
            Driver::Tokio(rt) => Join::Tokio(rt.spawn(future)),
            Driver::Smol { ex, .. } => Join::Smol(ex.spawn(future)),
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Driver::Smol { stop, threads, .. } = self {
            stop.close();
            for t in threads.drain(..) {
                t.join().expect("smol worker panicked");
            }
        }
    }
}

/// A spawned task's handle on either executor.
enum Join<T> {
    Tokio(tokio::task::JoinHandle<T>),
    Smol(smol::Task<T>),
}

impl<T> Join<T> {
    /// Its output; panics if the task panicked.
    async fn join(self) -> T {
        match self {
            Join::Tokio(handle) => handle.await.expect("task panicked"),
            Join::Smol(task) => task.await,
        }
    }
}

/// The live writer yields to the executor after this many writes.
const YIELD_EVERY: u64 = 64;

/// Returns `Pending` once (waking itself at once), then `Ready`.
#[derive(Default)]
struct YieldNow(bool);

impl Future for YieldNow {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// How the writer gives way to the consumers.
#[derive(Clone, Copy)]
enum Yield {
    /// Never (drain).
    Never,
    /// A [`YieldNow`] every [`YIELD_EVERY`] writes (live).
    Every64,
    /// `tokio::task::yield_now` after each write (step on tokio).
    EachWriteTokio,
    /// A [`YieldNow`] after each write (step on smol).
    EachWrite,
}

/// Writes messages `0..messages`, yielding as told, then ends the channel.
async fn write<P: Peer<T>, T: Payload>(tx: P, messages: u64, how: Yield) {
    for i in 0..messages {
        tx.publish(T::make(i));
        match how {
            Yield::Never => {}
            Yield::Every64 if (i + 1) % YIELD_EVERY == 0 => YieldNow::default().await,
            Yield::Every64 => {}
            Yield::EachWriteTokio => tokio::task::yield_now().await,
            Yield::EachWrite => YieldNow::default().await,
        }
    }
    tx.finish();
}

/// Reads up to `limit` messages, or until the channel ends, checking that each is the next one in
/// order. Returns how many it read.
async fn consume<T: Payload, R: Receive<T>>(rx: &mut R, limit: u64) -> u64 {
    let mut got = 0;
    while got < limit {
        let Some(v) = rx.receive().await else {
            break;
        };
        assert!(v.is(got), "message {got} out of order");
        got += 1;
    }
    got
}

/// Spawns one task per receiver that reads until the channel ends and checks it got everything.
/// Each task returns its receiver, so that teardown happens after the timer stops.
fn spawn_consumers<T: Payload, R: Receive<T>>(driver: &Driver, rxs: Vec<R>, messages: u64) -> Vec<Join<R>> {
    rxs.into_iter()
        .map(|mut rx| {
            driver.spawn(async move {
                let got = consume(&mut rx, u64::MAX).await;
                assert_eq!(got, messages, "a consumer missed messages");
                rx
            })
        })
        .collect()
}

/// One timed repetition of a case.
fn run<P: Peer<T>, T: Payload>(driver: &Driver, scenario: Scenario, n: usize, messages: u64) -> Duration {
    let capacity = usize::try_from(messages).expect("messages fit in usize");
    let (tx, rxs) = P::open(n, capacity);
    driver.block_on(async move {
        let start = Instant::now();
        let consumers = match scenario {
            Scenario::Live | Scenario::Step => {
                let consumers = spawn_consumers(driver, rxs, messages);
                let how = match (scenario, driver) {
                    (Scenario::Live, _) => Yield::Every64,
                    (_, Driver::Tokio(_)) => Yield::EachWriteTokio,
                    (_, Driver::Smol { .. }) => Yield::EachWrite,
                };
                driver.spawn(write(tx, messages, how)).join().await;
                consumers
            }
            Scenario::Drain => {
                driver.spawn(write(tx, messages, Yield::Never)).join().await;
                spawn_consumers(driver, rxs, messages)
            }
        };
        let mut done = Vec::with_capacity(n);
        for c in consumers {
            done.push(c.join().await);
        }
        let elapsed = start.elapsed();
        drop(done);
        elapsed
    })
}

/// A table cell with two decimals, or "–" for a value that was not measured.
fn cell(value: Option<f64>) -> String {
    value.map_or_else(|| "–".to_owned(), |v| format!("{v:.2}"))
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

fn timed_table(cfg: &Config) {
    let js_note = match &cfg.js {
        Ok(_) => format!("; {JS_NAME}: ~{} deliveries per case, current_thread rows only", cfg.js_deliveries),
        Err(_) => String::new(),
    };
    println!(
        "## Fan-out time: ns per delivery (median of {}; ~{} deliveries per case{js_note})\n",
        cfg.reps, cfg.deliveries
    );
    let names = peers::<u64>().map(|p| p.name);
    println!(
        "| scenario | executor | payload | N | messages | {} ns/delivery | {} | {JS_NAME} \
         | ratio ours/best Rust peer | ratio ours/JS |",
        names[0],
        names[1..].join(" | ")
    );
    // Scenario, executor and payload; then N, messages, the peers, JS and the two ratios.
    println!("|---|---|---|{}", "---:|".repeat(names.len() + 5));
    let drivers = Exec::ALL.map(|e| (e, e.driver()));
    for scenario in [Scenario::Live, Scenario::Step, Scenario::Drain] {
        for (exec, rt) in &drivers {
            timed_rows::<u64>(cfg, rt, *exec, scenario);
            timed_rows::<Arc<[u8; 64]>>(cfg, rt, *exec, scenario);
        }
    }
    println!();
}

fn timed_rows<T: Payload>(cfg: &Config, rt: &Driver, exec: Exec, scenario: Scenario) {
    let peers = peers::<T>();
    for &n in cfg.consumers {
        if !cfg.wants(&format!("{}/{}/{}/{n}/", scenario.name(), exec.key(), T::NAME)) {
            continue;
        }
        let messages = cfg.deliveries / n as u64;
        let mut samples: Vec<Vec<Duration>> = peers.iter().map(|_| Vec::new()).collect();
        // Repetitions outermost, so that drift affects every peer alike.
        for _ in 0..cfg.reps {
            for (p, s) in peers.iter().zip(&mut samples) {
                s.push((p.run)(rt, scenario, n, messages));
            }
        }
        let deliveries = (n as u64 * messages) as f64;
        let ns: Vec<f64> = samples.into_iter().map(|s| median(s).as_nanos() as f64 / deliveries).collect();
        let best_peer = ns[1..].iter().copied().fold(f64::INFINITY, f64::min);
        // JavaScript is single-threaded: it only has a counterpart on the current_thread rows.
        let js = match &cfg.js {
            Ok(js) if exec == Exec::CurrentThread && scenario != Scenario::Step => {
                Some(js.timed::<T>(scenario, n, cfg.js_deliveries / n as u64, cfg.reps))
            }
            _ => None,
        };
        let cells: Vec<String> = ns.iter().map(|&v| cell(Some(v))).collect();
        println!(
            "| {} | {} | {} | {n} | {messages} | {} | {} | {:.2} | {} |",
            scenario.name(),
            exec.name(),
            T::NAME,
            cells.join(" | "),
            cell(js),
            ns[0] / best_peer,
            cell(js.map(|js| ns[0] / js))
        );
        std::io::stdout().flush().expect("flush stdout");
    }
}

// ---------------------------------------------------------------------------------------------
// Memory driver
// ---------------------------------------------------------------------------------------------

/// Live bytes (relative to before the channel was created) at each step of a memory case.
struct MemRow {
    peer: &'static str,
    payload: &'static str,
    n: usize,
    messages: u64,
    /// After creating the channel and its `n` receivers.
    setup: isize,
    /// After writing `messages` that nobody read.
    written: isize,
    /// After every receiver read everything (`None`: skipped, too many deliveries).
    drained: Option<isize>,
    /// After dropping the channel and its receivers.
    dropped: isize,
}

fn memory<P: Peer<T>, T: Payload>(n: usize, messages: u64, drain: bool) -> MemRow {
    let _ = T::make(0); // build the payload pool outside the measurement
    futures::executor::block_on(async {}); // and the executor's thread-local state
    let capacity = usize::try_from(messages).expect("messages fit in usize");
    let probe = Probe::start();
    let (tx, mut rxs) = P::open(n, capacity);
    let setup = probe.live();
    for i in 0..messages {
        tx.publish(T::make(i));
    }
    let written = probe.live();
    let drained = drain.then(|| {
        futures::executor::block_on(async {
            for rx in &mut rxs {
                assert_eq!(consume(rx, messages).await, messages, "{}: drain", P::NAME);
            }
        });
        probe.live()
    });
    drop((tx, rxs));
    let dropped = probe.live();
    MemRow { peer: P::NAME, payload: T::NAME, n, messages, setup, written, drained, dropped }
}

fn memory_table(cfg: &Config) {
    if !cfg.wants("memory") {
        return;
    }
    let m = cfg.mem_messages;
    let mut rows = Vec::new();
    for (p, q) in peers::<u64>().iter().zip(peers::<Arc<[u8; 64]>>()) {
        rows.push((p.memory)(1, m, true));
        rows.push((q.memory)(1, m, true));
    }
    if let Ok(js) = &cfg.js {
        rows.push(js.memory::<u64>(m));
        rows.push(js.memory::<Arc<[u8; 64]>>(m));
    }
    let [ours, ..] = peers::<u64>();
    for n in [100, 1000] {
        // Draining would be n × m deliveries: too slow to be worth it here.
        rows.push((ours.memory)(n, m, false));
    }
    for p in peers::<u64>() {
        rows.push((p.memory)(1000, 1000, true));
    }

    println!("## Memory: live bytes (counting allocator), consumers not reading\n");
    println!(
        "B/message = (live after writes − live before creating the channel) / messages; \
         growth = excluding the channel's setup; ÷N = per pending delivery.\n"
    );
    if cfg.js.is_ok() {
        println!(
            "{JS_NAME} rows: V8 `heapUsed` after `global.gc()` instead of the counting allocator \
             (payload `number` ↔ u64, `buffer` ↔ a pooled 64-byte Buffer); it varies by a few \
             hundred kB from one collection to the next, so its setup, drain and drop figures are noise.\n"
        );
    }
    println!(
        "| peer | payload | N | messages | setup B | B/message | growth B/message | B/pending delivery (÷N) \
         | live B after drain | live B after drop |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        let per = |bytes: isize, count: u64| bytes as f64 / count as f64;
        let drained = r.drained.map_or_else(|| "(skipped)".to_owned(), |b| b.to_string());
        println!(
            "| {} | {} | {} | {} | {} | {:.2} | {:.2} | {:.3} | {drained} | {} |",
            r.peer,
            r.payload,
            r.n,
            r.messages,
            r.setup,
            per(r.written, r.messages),
            per(r.written - r.setup, r.messages),
            per(r.written, r.messages * r.n as u64),
            r.dropped
        );
    }
    println!();
}

// ---------------------------------------------------------------------------------------------
// JavaScript peer: benches/js/fanout.mjs, run by node
// ---------------------------------------------------------------------------------------------

/// The JavaScript peer's column and row label.
const JS_NAME: &str = "JS writable-consumable-stream";

/// `benches/js`: the npm package that pins writable-consumable-stream, and `fanout.mjs`.
fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("benches").join("js")
}

/// Prints `message` and exits: the JavaScript peer was required but cannot run.
fn fail(message: &str) -> ! {
    eprintln!("fanout: {message}");
    std::process::exit(2)
}

/// `node --version`, or `None` if node cannot be run.
fn node_version() -> Option<String> {
    let out = Command::new("node").arg("--version").stderr(Stdio::null()).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The JavaScript peer, known to be runnable.
struct Js {
    /// node's version.
    node: String,
}

impl Js {
    /// Whether to run the JavaScript peer (`Err`: why not). `FANOUT_JS=1` requires it: it runs
    /// `npm ci` in `benches/js` if `node_modules` is missing, and exits with an error if node or
    /// npm cannot. `FANOUT_JS=0` skips it. Otherwise it runs if `node` is on the PATH and
    /// `benches/js/node_modules` exists, except in quick runs.
    fn detect(quick: bool) -> Result<Js, String> {
        let forced = match std::env::var("FANOUT_JS") {
            Ok(v) if v == "0" => return Err("FANOUT_JS=0".to_owned()),
            Ok(v) => !v.is_empty(),
            Err(_) => false,
        };
        if quick && !forced {
            return Err("quick run; set FANOUT_JS=1 to include it".to_owned());
        }
        let dir = js_dir();
        let Some(node) = node_version() else {
            if forced {
                fail("FANOUT_JS=1, but `node` is not on the PATH: install Node.js (18 or later)");
            }
            return Err("`node` is not on the PATH; FANOUT_JS=1 requires it".to_owned());
        };
        if !dir.join("node_modules").is_dir() {
            if !forced {
                return Err(format!(
                    "{} is missing; run `npm ci` there, or set FANOUT_JS=1 to do it",
                    dir.join("node_modules").display()
                ));
            }
            eprintln!("fanout: FANOUT_JS=1 and no node_modules: running `npm ci` in {}", dir.display());
            // npm's output goes to stderr: stdout is the report.
            let status = Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(&dir)
                .stdout(std::io::stderr())
                .status()
                .unwrap_or_else(|e| fail(&format!("FANOUT_JS=1, but `npm` cannot be run ({e})")));
            if !status.success() {
                fail(&format!("FANOUT_JS=1, but `npm ci` in {} failed ({status})", dir.display()));
            }
        }
        Ok(Js { node })
    }

    /// Runs `fanout.mjs` on one case and returns the JSON line it prints.
    fn run(&self, scenario: &str, payload: &str, n: usize, messages: u64, reps: usize) -> String {
        let case = format!(
            r#"{{"scenario":"{scenario}","payload":"{payload}","n":{n},"messages":{messages},"reps":{reps}}}"#
        );
        let out = Command::new("node")
            .args(["--expose-gc", "fanout.mjs", &case])
            .current_dir(js_dir())
            .stderr(Stdio::inherit())
            .output()
            .unwrap_or_else(|e| fail(&format!("cannot run node ({e})")));
        assert!(out.status.success(), "{JS_NAME}: fanout.mjs {case} failed ({})", out.status);
        String::from_utf8(out.stdout).expect("fanout.mjs prints UTF-8")
    }

    /// A timed case: the median ns per delivery of `reps` repetitions.
    fn timed<T: Payload>(&self, scenario: Scenario, n: usize, messages: u64, reps: usize) -> f64 {
        json_number(&self.run(scenario.name(), T::JS, n, messages, reps), "ns_per_delivery")
    }

    /// The memory case: one consumer that reads nothing, `messages` writes, then a drain.
    fn memory<T: Payload>(&self, messages: u64) -> MemRow {
        let out = self.run("memory", T::JS, 1, messages, 1);
        let bytes = |key| json_number(&out, key) as isize;
        MemRow {
            peer: JS_NAME,
            payload: T::JS,
            n: 1,
            messages,
            setup: bytes("setup"),
            written: bytes("written"),
            drained: Some(bytes("drained")),
            dropped: bytes("dropped"),
        }
    }
}

/// The number after `"key":` in a flat JSON object such as `fanout.mjs` prints.
fn json_number(json: &str, key: &str) -> f64 {
    let tag = format!("\"{key}\":");
    let start = json.find(&tag).unwrap_or_else(|| panic!("no {key} in {json}")) + tag.len();
    let value = json[start..].split([',', '}']).next().unwrap_or_default();
    value.trim().parse().unwrap_or_else(|e| panic!("{key} in {json}: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Configuration and main
// ---------------------------------------------------------------------------------------------

struct Config {
    quick: bool,
    /// N × messages per timed case.
    deliveries: u64,
    /// N × messages per timed case of the JavaScript peer (slower: fewer, so a case takes seconds).
    js_deliveries: u64,
    consumers: &'static [usize],
    reps: usize,
    /// Messages written in the single-consumer memory cases.
    mem_messages: u64,
    /// The JavaScript peer, or why it is skipped.
    js: Result<Js, String>,
    /// Substrings of the cases to run (none: all). A timed case's key is
    /// `scenario/executor/payload/N/`, e.g. `drain/current_thread/u64/1000/`; the memory table's
    /// key is `memory`.
    filters: Vec<String>,
}

impl Config {
    /// Full run, or the quick subset with `--quick` or `FANOUT_QUICK=1`. Arguments that do not
    /// start with `-` are filters; other flags (cargo passes `--bench`) are ignored.
    fn from_env() -> Self {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let quick = args.iter().any(|a| a == "--quick")
            || std::env::var("FANOUT_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        let filters = args.into_iter().filter(|a| !a.starts_with('-')).collect();
        let js = Js::detect(quick);
        if quick {
            Config {
                quick,
                deliveries: 1_000_000,
                js_deliveries: 1_000_000,
                consumers: &[1, 100],
                reps: 3,
                mem_messages: 100_000,
                js,
                filters,
            }
        } else {
            Config {
                quick,
                deliveries: 10_000_000,
                js_deliveries: 2_000_000,
                consumers: &[1, 100, 1000, 10_000],
                reps: 3,
                mem_messages: 1_000_000,
                js,
                filters,
            }
        }
    }

    fn wants(&self, key: &str) -> bool {
        self.filters.is_empty() || self.filters.iter().any(|f| key.contains(f.as_str()))
    }
}

/// The system's load average, to tell a noisy machine from a noisy benchmark.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg").map_or_else(|_| "n/a".to_owned(), |s| s.trim().to_owned())
}

fn main() {
    let cfg = Config::from_env();
    let start = Instant::now();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "# socketcluster fan-out benchmark ({} run, {cores} cores available)\n",
        if cfg.quick { "quick" } else { "full" }
    );
    println!("Load average at start: {}\n", loadavg());
    match &cfg.js {
        Ok(js) => println!("{JS_NAME}: node {}, benches/js/fanout.mjs\n", js.node),
        Err(why) => println!("{JS_NAME}: skipped ({why})\n"),
    }
    // Memory first: no runtime (and no worker thread) is alive while the allocator counts.
    memory_table(&cfg);
    timed_table(&cfg);
    println!("Total time: {:.1} s; load average at end: {}", start.elapsed().as_secs_f64(), loadavg());
}
