//! WebSocket pub/sub fan-out: a load generator and a side-by-side benchmark (issue 5).
//!
//! The same workload runs against four servers, each a fresh child process per run, alternating
//! A B C D A B C D (two rounds; one with `--quick`):
//!
//! - `smol`: our `examples/interop_server --runtime smol`;
//! - `tokio`: our `examples/interop_server --runtime tokio`;
//! - `node`: `tests/interop/server.mjs`, the official socketcluster-server 20.0.1 from the
//!   committed lock file (`npm ci` runs first if `tests/interop/node_modules` is missing; without
//!   `node` on the PATH the Node runs are skipped with a message);
//! - `floor`: a reference, not a contender — the least work any server must do (one `send` per
//!   subscriber straight from the publisher's read loop, no WebSocket library, no JSON parser);
//!   see `ws_fanout/floor.rs`. This binary runs it as a child: `ws_fanout --floor-server`.
//!
//! The bench first builds our server (`$CARGO build --release --example interop_server
//! --features tokio`) and runs `target/release/examples/interop_server`.
//!
//! # Load generator
//!
//! One tokio `current_thread` runtime on the bench's main thread, with a hand-rolled minimal
//! WebSocket client: HTTP upgrade by hand (fixed `Sec-WebSocket-Key`, `101` checked), client frames
//! masked with a fixed key, server frames parsed in place from a per-connection read buffer (2 KiB,
//! grown only when a frame needs more), `""` pings answered with `""` (and WebSocket pings with
//! pongs). The setup frames (handshake and subscribe responses) are parsed with serde_json; each
//! delivery `#publish` frame is checked by byte search only: its channel, and the payload's `"s"`
//! (sequence number within the channel) and `"t"` (send time, ns) fields, found near the start of
//! the frame (Node keeps insertion order) or near its end (our server sorts keys) before falling
//! back to a scan of the whole frame. Payload: `{"s":SEQ,"t":NS,"p":"xxx…"}` padded to exactly
//! 100 or 4096 bytes.
//!
//! Per run: C subscriber connections (at most 128 connecting at once) do connect + upgrade +
//! `#handshake` + `#subscribe` ("setup"); one publisher connection (connected and handshaken
//! during setup too) then publishes P messages round-robin over the channels, either
//!
//! - `max`: `invokePublish` (with cid) keeping a window of 64 publishes in flight, i.e. as fast as
//!   acknowledged (the server acknowledges after fan-out to the subscribers' queues), or
//! - `rateNk`: `transmitPublish` (no cid) paced at N 000 deliveries/s in total (publishes/s =
//!   N 000 / subscribers per channel), sent as each one falls due (1 ms timer), for 3 s after a
//!   1 s warm-up at the same rate (at least 20 publishes per channel; see [`WARMUP`]) whose
//!   deliveries are checked but left out of the latency columns.
//!
//! Each subscriber checks every delivery with a bitset: `lost` = expected − distinct received
//! (a run that times out counts the missing ones), `ooo` = deliveries whose sequence number is
//! below the highest already seen on that connection (reordered), `dup` = a sequence number seen
//! twice. All three must be 0; the bench exits non-zero otherwise, also with `--quick`.
//!
//! # Columns
//!
//! - `setup s`: connect + handshake + subscribe of all C (from the first connect to the last ack).
//! - `time s`: from the first publish written to the last delivery read.
//! - `deliv/s`: total deliveries / `time s`.
//! - `p50`/`p99`/`max ms`: end-to-end latency, from the publisher's send time (taken as the
//!   publish frame is built) to the kernel's receive time on the subscriber's socket
//!   (`SO_TIMESTAMPNS`: when the segment entered the host's network stack), from a log-linear
//!   histogram (64 buckets per power of two, < 1.6 % error; max exact). One generator thread reads
//!   all C subscribers, so the time it takes to get to a socket is its own queueing, not the
//!   server's; it grows with the rate the server delivers at, so it would penalize the faster
//!   server. `read p99 ms` is the p99 up to the generator's read, for comparison.
//! - `peak RSS MiB`: the server's VmRSS, polled every 5 ms from `/proc/PID/status` for the whole
//!   run. `RSS/conn KiB`: (peak − RSS before the first connection) / C; for the idle case
//!   (RSS 1 s after the last handshake − RSS before) / C.
//! - `srv CPU s`, `gen CPU s`: utime + stime of the server (`/proc/PID/stat`) and of this process
//!   (`/proc/self/stat`, all its threads) over `time s` (over `setup s` in the idle case);
//!   `other CPU s`: busy CPU of the whole machine (`/proc/stat`) minus those two, which shows
//!   interference from other processes.
//! - Ratio columns, ours ÷ Node from the same run: deliveries/s (above 1: ours is faster), p99
//!   (below 1: ours is better), RSS per connection (below 1: ours is smaller).
//!
//! The summary table shows the mean of the rounds (lost/ooo/dup: the sum); the per-run table
//! follows. Unless `--no-pin` is given (or fewer than 2 CPUs exist), the generator is pinned to
//! CPU 0 and every server to CPU 1 with `taskset`, so each server gets one core, the generator the
//! other.
//!
//! # Reproduce
//!
//! ```text
//! cargo bench --bench ws_fanout                       # full run
//! cargo bench --bench ws_fanout -- --quick            # CI smoke: tiny version of every case
//! cargo bench --bench ws_fanout -- --filter c1000     # only cases whose name contains "c1000"
//! cargo bench --bench ws_fanout -- --servers smol,node --rounds 3 --no-pin --no-build
//! cargo bench --bench ws_fanout -- --soak 600        # the soak run (see ws_fanout/soak.rs)
//! ```
//!
//! Every wait is bounded: a server that prints no `listening` line within 30 s, a setup or a
//! delivery phase that does not finish before its deadline, fail the run with a message (the
//! remaining runs still happen). Child servers are killed after each run, on Ctrl-C/SIGTERM and on
//! panic.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio::sync::Semaphore;

#[path = "ws_fanout/client.rs"]
mod client;
#[path = "ws_fanout/floor.rs"]
mod floor;
#[path = "ws_fanout/load.rs"]
mod load;
#[path = "ws_fanout/measure.rs"]
mod measure;
#[path = "../tests/support/pki.rs"]
mod pki;
#[path = "ws_fanout/procs.rs"]
mod procs;
#[path = "ws_fanout/soak.rs"]
mod soak;

use client::*;
use load::*;
use measure::*;
use procs::*;

// ---------------------------------------------------------------------------------------------
// Cases and runs

#[derive(Clone)]
struct Case {
    name: String,
    /// Subscribers in total (0: idle case).
    subs: usize,
    channels: usize,
    payload: usize,
    /// Publishes in total (idle case: connections), warm-up included.
    publishes: usize,
    /// The first publishes on each channel that are delivered and checked but left out of the
    /// latency columns (rate cases).
    warmup: usize,
    mode: Mode,
    idle: bool,
    /// Sample the server's RSS every second of the delivery phase (`--soak`).
    trace: bool,
    /// Over `wss://` (the servers with a certificate made for the run; not `floor`).
    tls: bool,
}

/// Rate cases' warm-up: 1 s, and at least 20 messages per connection. Every new TCP connection
/// starts by acknowledging each of its first 16 segments at once (Linux's quick ACKs); on loopback
/// the sender pays for those ACKs, so the first publishes cost any server up to twice as much, and
/// Node's JIT warms up meanwhile. The latency columns are for the steady state after that.
const WARMUP: (f64, usize) = (1.0, 20);

/// A rate case: `deliveries` per second in total, for `secs` seconds after a warm-up of
/// `warm_secs` (at least `warm_min` publishes per channel).
fn rate(
    name: &str,
    subs: usize,
    channels: usize,
    payload: usize,
    deliveries: f64,
    secs: f64,
    (warm_secs, warm_min): (f64, usize),
) -> Case {
    let per_sec = deliveries / (subs / channels) as f64;
    let warmup = ((per_sec * warm_secs / channels as f64).ceil() as usize).max(warm_min);
    let publishes = ((per_sec * secs) as usize).div_ceil(channels) * channels + warmup * channels;
    Case {
        name: name.into(),
        subs,
        channels,
        payload,
        publishes,
        warmup,
        mode: Mode::Rate { per_sec },
        idle: false,
        trace: false,
        tls: false,
    }
}

fn cases(quick: bool) -> Vec<Case> {
    let window = 64;
    let max = |name: &str, subs: usize, channels: usize, payload: usize, publishes: usize| Case {
        name: name.into(),
        subs,
        channels,
        payload,
        publishes,
        warmup: 0,
        mode: Mode::Max { window },
        idle: false,
        trace: false,
        tls: false,
    };
    let idle = |n: usize| Case {
        name: format!("idle{n}"),
        subs: n,
        channels: 0,
        payload: 0,
        publishes: 0,
        warmup: 0,
        mode: Mode::Max { window },
        idle: true,
        trace: false,
        tls: false,
    };
    let tls = |c: Case| Case { name: format!("{}-tls", c.name), tls: true, ..c };
    if quick {
        vec![
            max("c100-100B-max", 10, 1, 100, 50),
            max("c1000-100B-max", 50, 1, 100, 20),
            max("c1000-4KiB-max", 50, 1, 4096, 20),
            max("c5000-100B-max", 50, 1, 100, 10),
            max("ch1000x5-100B-max", 50, 10, 100, 100),
            rate("c100-100B-rate20k", 10, 1, 100, 2_000.0, 0.3, (0.05, 2)),
            rate("c1000-100B-rate20k", 50, 1, 100, 2_000.0, 0.3, (0.05, 2)),
            rate("c1000-4KiB-rate20k", 50, 1, 4096, 2_000.0, 0.3, (0.05, 2)),
            tls(max("c1000-100B-max", 50, 1, 100, 20)),
            tls(max("c1000-4KiB-max", 50, 1, 4096, 20)),
            tls(rate("c1000-100B-rate20k", 50, 1, 100, 2_000.0, 0.3, (0.05, 2))),
            idle(200),
        ]
    } else {
        vec![
            max("c100-100B-max", 100, 1, 100, 3000),
            max("c1000-100B-max", 1000, 1, 100, 200),
            max("c1000-4KiB-max", 1000, 1, 4096, 100),
            max("c5000-100B-max", 5000, 1, 100, 20),
            max("c5000-4KiB-max", 5000, 1, 4096, 20),
            max("ch1000x5-100B-max", 5000, 1000, 100, 20_000),
            rate("c100-100B-rate20k", 100, 1, 100, 20_000.0, 3.0, WARMUP),
            rate("c1000-100B-rate20k", 1000, 1, 100, 20_000.0, 3.0, WARMUP),
            rate("c1000-4KiB-rate20k", 1000, 1, 4096, 20_000.0, 3.0, WARMUP),
            tls(max("c1000-100B-max", 1000, 1, 100, 200)),
            tls(max("c1000-4KiB-max", 1000, 1, 4096, 100)),
            tls(rate("c1000-100B-rate20k", 1000, 1, 100, 20_000.0, 3.0, WARMUP)),
            idle(10_000),
        ]
    }
}

#[derive(Clone, Default)]
struct RunResult {
    setup_s: f64,
    time_s: f64,
    deliveries: u64,
    expected: u64,
    lost: u64,
    ooo: u64,
    dup: u64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    read_p99_ms: f64,
    /// p99 of the warm-up deliveries (rate cases; NaN otherwise).
    cold_p99_ms: f64,
    peak_rss_kib: u64,
    rss_per_conn_kib: f64,
    srv_cpu: f64,
    gen_cpu: f64,
    other_cpu: f64,
    /// Busy CPU of other processes from the first connect to the end, and that wall time.
    run_other_cpu: f64,
    run_wall_s: f64,
    /// (seconds since the first publish, server RSS KiB), every second (`Case::trace`).
    rss_trace: Vec<(f64, u64)>,
    error: Option<String>,
}

impl RunResult {
    fn deliv_per_s(&self) -> f64 {
        if self.time_s > 0.0 { self.deliveries as f64 / self.time_s } else { f64::NAN }
    }
}

struct Config {
    quick: bool,
    filters: Vec<String>,
    servers: Vec<String>,
    rounds: usize,
    pin: bool,
    build: bool,
    /// `--soak SECS`: the soak run instead of the cases.
    soak: Option<f64>,
}

impl Config {
    fn from_args() -> Config {
        let mut c = Config {
            quick: false,
            filters: Vec::new(),
            servers: vec!["smol".into(), "tokio".into(), "node".into(), "floor".into()],
            rounds: 0,
            pin: true,
            build: true,
            soak: None,
        };
        let mut servers_given = false;
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            match a.as_str() {
                "--quick" => c.quick = true,
                "--filter" => c.filters.push(args.next().unwrap_or_else(|| usage("--filter needs a value"))),
                "--servers" => {
                    servers_given = true;
                    c.servers = args
                        .next()
                        .unwrap_or_else(|| usage("--servers needs a value"))
                        .split(',')
                        .map(str::to_owned)
                        .collect();
                    if c.servers.iter().any(|s| !["smol", "tokio", "node", "floor"].contains(&s.as_str())) {
                        usage("--servers: a comma-separated subset of smol,tokio,node,floor");
                    }
                }
                "--rounds" => {
                    c.rounds = args
                        .next()
                        .and_then(|v| v.parse().ok())
                        .filter(|&n| n > 0)
                        .unwrap_or_else(|| usage("--rounds needs a positive number"))
                }
                "--soak" => {
                    c.soak = Some(
                        args.next()
                            .and_then(|v| v.parse().ok())
                            .filter(|&s: &f64| s >= 120.0)
                            .unwrap_or_else(|| usage("--soak needs a duration in seconds, at least 120")),
                    )
                }
                "--no-pin" => c.pin = false,
                "--no-build" => c.build = false,
                "--bench" => {}
                other if !other.starts_with('-') => c.filters.push(other.to_owned()),
                other => usage(&format!("unknown flag {other}")),
            }
        }
        if c.rounds == 0 {
            c.rounds = if c.quick { 1 } else { 2 };
        }
        if c.soak.is_some() && !servers_given {
            c.servers = vec!["smol".into()];
        }
        c
    }
}

fn usage(msg: &str) -> ! {
    eprintln!(
        "ws_fanout: {msg}\nusage: cargo bench --bench ws_fanout -- [--quick] [--filter NAME]... \
         [--servers smol,tokio,node,floor] [--rounds N] [--no-pin] [--no-build] [--soak SECS]"
    );
    std::process::exit(2);
}

struct Env {
    ours: PathBuf,
    /// The run's certificate (for `-tls` cases).
    pki: pki::Pki,
    node_script: Option<PathBuf>,
    pin: bool,
    quick: bool,
}

fn start_server(env: &Env, server: &str, tls: bool) -> Result<Server, String> {
    let pin = env.pin.then_some(1);
    let (cert, key) =
        (env.pki.cert.to_str().ok_or("non-UTF-8 path")?, env.pki.key.to_str().ok_or("non-UTF-8 path")?);
    let tls_args: &[&str] = if tls { &["--tls-cert", cert, "--tls-key", key] } else { &[] };
    match server {
        "node" => {
            let script = env.node_script.as_ref().ok_or("node is not available")?;
            let s = script.to_str().ok_or("non-UTF-8 path")?;
            Server::start(Path::new("node"), &[&[s, "--port", "0"], tls_args].concat(), pin)
        }
        "floor" => {
            let me = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
            Server::start(&me, &["--floor-server"], pin)
        }
        rt => Server::start(&env.ours, &[&["--port", "0", "--runtime", rt], tls_args].concat(), pin),
    }
}

fn run_case(rt: &tokio::runtime::Runtime, env: &Env, case: &Case, server_name: &str) -> RunResult {
    CLIENT_TLS.with(|t| *t.borrow_mut() = case.tls.then(|| env.pki.client_config()));
    let server = match start_server(env, server_name, case.tls) {
        Ok(s) => s,
        Err(e) => return RunResult { error: Some(e), ..Default::default() },
    };
    let local = tokio::task::LocalSet::new();
    let result = local.block_on(rt, drive(env, case, &server));
    drop(server);
    drop(local);
    result
}

async fn drive(env: &Env, case: &Case, server: &Server) -> RunResult {
    let mut r = RunResult::default();
    let (setup_limit, mut run_limit) = if env.quick {
        (Duration::from_secs(10), Duration::from_secs(10))
    } else {
        (Duration::from_secs(90), Duration::from_secs(90))
    };
    if let Mode::Rate { per_sec } = case.mode {
        // Long rate runs (the soak): their length, and a minute more.
        run_limit = run_limit.max(Duration::from_secs_f64(case.publishes as f64 / per_sec + 60.0));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let base_rss = rss_kib(server.pid).unwrap_or(0);
    let poller = RssPoller::start(server.pid);
    let per_channel = if case.idle { 0 } else { case.publishes / case.channels };
    let channels: Vec<String> = (0..case.channels).map(|i| format!("bench{i}")).collect();
    let subs: Vec<SubState> = if case.idle {
        Vec::new()
    } else {
        (0..case.subs)
            .map(|i| SubState {
                channel: (i % case.channels) as u32,
                expect: per_channel as u64,
                distinct: 0,
                next: 0,
                seen: vec![0; per_channel.div_ceil(64)],
            })
            .collect()
    };
    r.expected = (per_channel * case.subs) as u64;
    let sh = Rc::new(RefCell::new(Shared {
        channels,
        subs,
        hist: Hist::new(),
        read_hist: Hist::new(),
        warmup: case.warmup as u64,
        cold_hist: Hist::new(),
        c: Counters::default(),
        remaining: if case.idle { 0 } else { case.subs },
        ready: 0,
        ready_target: case.subs + usize::from(!case.idle),
        setup_done_ns: 0,
        first_pub_ns: 0,
        last_ns: 0,
        errors: Vec::new(),
        go: false,
    }));
    let sem = Rc::new(Semaphore::new(128));
    let cpu0 = cpu_snap(server.pid);
    let wall0 = Instant::now();
    let t0 = now_ns();
    let fail = |r: &mut RunResult, sh: &Rc<RefCell<Shared>>, msg: String| {
        let s = sh.borrow();
        r.lost =
            s.subs.iter().map(|x| x.expect - x.distinct).sum::<u64>().max(if s.go { 0 } else { r.expected });
        let errs = if s.errors.is_empty() { String::new() } else { format!(": {}", s.errors.join("; ")) };
        r.error = Some(format!("{msg}{errs}"));
    };
    if !case.idle {
        tokio::task::spawn_local(publisher(
            server.addr,
            sh.clone(),
            case.publishes as u64,
            case.payload,
            case.mode,
        ));
    }
    for i in 0..case.subs {
        tokio::task::spawn_local(subscriber(server.addr, i, sh.clone(), sem.clone()));
    }
    // Setup.
    let deadline = Instant::now() + setup_limit;
    loop {
        {
            let s = sh.borrow();
            if s.ready == s.ready_target || !s.errors.is_empty() {
                break;
            }
        }
        if Instant::now() > deadline {
            let s = sh.borrow().ready;
            fail(
                &mut r,
                &sh,
                format!(
                    "setup timed out after {setup_limit:?} ({s} of {} connections ready)",
                    sh.borrow().ready_target
                ),
            );
            return r;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    if !sh.borrow().errors.is_empty() {
        fail(&mut r, &sh, "setup failed".into());
        return r;
    }
    r.setup_s = (sh.borrow().setup_done_ns - t0) as f64 / 1e9;
    if case.idle {
        let cpu1 = cpu_snap(server.pid);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss = rss_kib(server.pid).unwrap_or(0);
        r.peak_rss_kib = poller.peak().max(rss);
        r.rss_per_conn_kib = rss.saturating_sub(base_rss) as f64 / case.subs as f64;
        set_cpu(&mut r, cpu0, cpu1);
        r.run_other_cpu = r.other_cpu;
        r.run_wall_s = wall0.elapsed().as_secs_f64() - 1.0;
        if !sh.borrow().errors.is_empty() {
            fail(&mut r, &sh, "connection failed".into());
        }
        return r;
    }
    // Deliveries.
    let cpu1 = cpu_snap(server.pid);
    sh.borrow_mut().go = true;
    let go = Instant::now();
    let deadline = go + run_limit;
    loop {
        {
            let s = sh.borrow();
            if s.remaining == 0 || !s.errors.is_empty() {
                break;
            }
        }
        if case.trace && go.elapsed().as_secs_f64() >= r.rss_trace.len() as f64 {
            r.rss_trace.push((go.elapsed().as_secs_f64(), rss_kib(server.pid).unwrap_or(0)));
        }
        if Instant::now() > deadline {
            let (got, expected) = (sh.borrow().c.deliveries, r.expected);
            fail(&mut r, &sh, format!("deliveries timed out after {run_limit:?} ({got} of {expected})"));
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let cpu2 = cpu_snap(server.pid);
    r.run_wall_s = wall0.elapsed().as_secs_f64();
    set_cpu(&mut r, cpu0, cpu2);
    r.run_other_cpu = r.other_cpu;
    set_cpu(&mut r, cpu1, cpu2);
    let s = sh.borrow();
    if r.error.is_none() && !s.errors.is_empty() {
        drop(s);
        fail(&mut r, &sh, "run failed".into());
    } else {
        drop(s);
    }
    let s = sh.borrow();
    r.lost = s.subs.iter().map(|x| x.expect - x.distinct).sum();
    r.deliveries = s.c.deliveries;
    r.ooo = s.c.ooo;
    r.dup = s.c.dup;
    r.time_s = s.last_ns.saturating_sub(s.first_pub_ns) as f64 / 1e9;
    r.p50_ms = s.hist.quantile(0.50) as f64 / 1e6;
    r.p99_ms = s.hist.quantile(0.99) as f64 / 1e6;
    r.max_ms = s.hist.max as f64 / 1e6;
    r.read_p99_ms = s.read_hist.quantile(0.99) as f64 / 1e6;
    r.cold_p99_ms = if case.warmup > 0 { s.cold_hist.quantile(0.99) as f64 / 1e6 } else { f64::NAN };
    r.peak_rss_kib = poller.peak();
    r.rss_per_conn_kib = r.peak_rss_kib.saturating_sub(base_rss) as f64 / case.subs as f64;
    r
}

fn set_cpu(r: &mut RunResult, a: CpuSnap, b: CpuSnap) {
    r.srv_cpu = b.server - a.server;
    r.gen_cpu = b.gen_ - a.gen_;
    r.other_cpu = ((b.machine - a.machine) - r.srv_cpu - r.gen_cpu).max(0.0);
}

// ---------------------------------------------------------------------------------------------
// Output

fn f(v: f64, digits: usize) -> String {
    if v.is_nan() { "–".into() } else { format!("{v:.digits$}") }
}

fn sig(v: f64) -> String {
    if v.is_nan() {
        "–".into()
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn kilo(v: f64) -> String {
    if v.is_nan() { "–".into() } else { format!("{:.0}", v) }
}

fn mean(rs: &[RunResult], g: impl Fn(&RunResult) -> f64) -> f64 {
    let v: Vec<f64> = rs.iter().filter(|r| r.error.is_none()).map(&g).collect();
    if v.is_empty() { f64::NAN } else { v.iter().sum::<f64>() / v.len() as f64 }
}

fn ratio(a: f64, b: f64) -> String {
    if a.is_nan() || b.is_nan() || b == 0.0 { "–".into() } else { format!("{:.2}", a / b) }
}

const HEADER: &str = "| case | server | setup s | time s | deliv/s | p50 ms | p99 ms | max ms | read p99 ms | cold p99 ms | lost | ooo | dup | peak RSS MiB | RSS/conn KiB | srv CPU s | gen CPU s | other CPU s |";

fn row(case: &Case, server: &str, rs: &[RunResult]) -> String {
    let m = |g: fn(&RunResult) -> f64| mean(rs, g);
    let sum = |g: fn(&RunResult) -> u64| rs.iter().map(g).sum::<u64>();
    let lat = |v: f64| if case.idle { "–".to_owned() } else { sig(v) };
    format!(
        "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
        case.name,
        server,
        f(m(|r| r.setup_s), 2),
        if case.idle { "–".into() } else { f(m(|r| r.time_s), 2) },
        if case.idle { "–".into() } else { kilo(m(RunResult::deliv_per_s)) },
        lat(m(|r| r.p50_ms)),
        lat(m(|r| r.p99_ms)),
        lat(m(|r| r.max_ms)),
        lat(m(|r| r.read_p99_ms)),
        lat(m(|r| r.cold_p99_ms)),
        sum(|r| r.lost),
        sum(|r| r.ooo),
        sum(|r| r.dup),
        f(m(|r| r.peak_rss_kib as f64 / 1024.0), 1),
        f(m(|r| r.rss_per_conn_kib), 1),
        f(m(|r| r.srv_cpu), 2),
        f(m(|r| r.gen_cpu), 2),
        f(m(|r| r.other_cpu), 2),
    )
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg").map_or_else(|_| "n/a".to_owned(), |s| s.trim().to_owned())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

// ---------------------------------------------------------------------------------------------
// Setup: build our server, find node

fn build_ours(build: bool) -> PathBuf {
    let exe = std::env::current_exe().expect("bench executable path");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>").to_path_buf();
    let bin = profile_dir.join("examples/interop_server");
    if build {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
        eprintln!(
            "ws_fanout: building our server (cargo build --release --example interop_server --features tokio,tls)"
        );
        let t = Instant::now();
        let status = Command::new(&cargo)
            .args([
                "build",
                "--release",
                "--example",
                "interop_server",
                "--features",
                "tokio,tls",
                "--manifest-path",
            ])
            .arg(&manifest)
            .stdin(Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("cannot run {cargo}: {e}"));
        assert!(status.success(), "building examples/interop_server failed");
        eprintln!("ws_fanout: built in {:.1} s", t.elapsed().as_secs_f64());
    }
    assert!(bin.exists(), "{} is missing", bin.display());
    bin
}

fn find_node() -> Result<(PathBuf, String), String> {
    let out = Command::new("node").arg("--version").output().map_err(|e| format!("node not found: {e}"))?;
    let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop");
    if !dir.join("node_modules/.package-lock.json").exists() {
        eprintln!("ws_fanout: npm ci in tests/interop");
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status()
            .map_err(|e| format!("npm not found: {e}"))?;
        if !status.success() {
            return Err("npm ci in tests/interop failed".into());
        }
    }
    Ok((dir.join("server.mjs"), version))
}

fn main() {
    if std::env::args().any(|a| a == "--floor-server") {
        floor::serve();
    }
    let cfg = Config::from_args();
    install_cleanup();
    let _ = now_ns();
    let ours = build_ours(cfg.build);
    let total = Instant::now();
    let node = if cfg.servers.iter().any(|s| s == "node") { Some(find_node()) } else { None };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pin = cfg.pin && cores >= 2 && Command::new("taskset").arg("-V").output().is_ok();
    if pin {
        let ok = Command::new("taskset")
            .args(["-a", "-p", "-c", "0", &std::process::id().to_string()])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "taskset could not pin the load generator");
    }
    let mut servers = cfg.servers.clone();
    let mut notes = Vec::new();
    let node_script = match node {
        Some(Ok((script, version))) => {
            notes.push(format!("node {version}, socketcluster-server 20.0.1 (tests/interop/server.mjs)"));
            Some(script)
        }
        Some(Err(why)) => {
            notes.push(format!("node skipped: {why}"));
            servers.retain(|s| s != "node");
            None
        }
        None => None,
    };
    let env = Env { ours, pki: pki::Pki::new("ws-fanout-tls"), node_script, pin, quick: cfg.quick };
    if let Some(secs) = cfg.soak {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
        soak::run(&rt, &env, &servers, secs);
    }
    let cases: Vec<Case> = cases(cfg.quick)
        .into_iter()
        .filter(|c| cfg.filters.is_empty() || cfg.filters.iter().any(|f| c.name.contains(f.as_str())))
        .collect();
    if cases.is_empty() {
        usage("no case matches the filter");
    }

    println!("# WebSocket fan-out benchmark ({} run)\n", if cfg.quick { "quick" } else { "full" });
    println!("- machine: {cores} × {}, load average at start: {}", cpu_model(), loadavg());
    println!(
        "- {}",
        if pin { "generator pinned to CPU 0, each server to CPU 1 (taskset)" } else { "no CPU pinning" }
    );
    for n in &notes {
        println!("- {n}");
    }
    println!("- rounds: {} ({} alternating per case)\n", cfg.rounds, servers.join(" "));
    let _ = std::io::stdout().flush();

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    let mut results: BTreeMap<(usize, usize), Vec<RunResult>> = BTreeMap::new();
    let mut per_run = Vec::new();
    for (ci, case) in cases.iter().enumerate() {
        for round in 0..cfg.rounds {
            for (si, server) in servers.iter().enumerate() {
                if case.tls && server == "floor" {
                    continue; // the floor server has no TLS
                }
                let t_run = Instant::now();
                let r = run_case(&rt, &env, case, server);
                eprintln!(
                    "ws_fanout: {} {} round {} ({:.1} s): setup {:.2} s, {} deliveries/s, p99 {} ms, lost {}, ooo {}, dup {}, peak RSS {:.1} MiB, srv CPU {:.2} s, gen CPU {:.2} s, other CPU {:.2} s{}",
                    case.name,
                    server,
                    round + 1,
                    t_run.elapsed().as_secs_f64(),
                    r.setup_s,
                    kilo(r.deliv_per_s()),
                    if case.idle { "–".to_owned() } else { sig(r.p99_ms) },
                    r.lost,
                    r.ooo,
                    r.dup,
                    r.peak_rss_kib as f64 / 1024.0,
                    r.srv_cpu,
                    r.gen_cpu,
                    r.other_cpu,
                    r.error.as_ref().map(|e| format!(" — ERROR: {e}")).unwrap_or_default()
                );
                per_run.push((ci, si, round, r.clone()));
                results.entry((ci, si)).or_default().push(r);
            }
        }
    }

    // Summary table.
    let mut out = String::new();
    let _ = writeln!(out, "## Summary (mean of {} round(s); lost/ooo/dup summed)\n", cfg.rounds);
    let _ = writeln!(
        out,
        "{HEADER} deliv/s ours/Node | p99 ours/Node | cold p99 ours/Node | RSS/conn ours/Node |"
    );
    let _ = writeln!(out, "{}", "|---".repeat(22) + "|");
    let node_idx = servers.iter().position(|s| s == "node");
    for (ci, case) in cases.iter().enumerate() {
        for (si, server) in servers.iter().enumerate() {
            let Some(rs) = results.get(&(ci, si)) else { continue };
            let mut line = row(case, server, rs);
            let (dr, pr, cr, rr) = match node_idx {
                Some(ni) if ni != si => {
                    let n = &results[&(ci, ni)];
                    (
                        ratio(mean(rs, RunResult::deliv_per_s), mean(n, RunResult::deliv_per_s)),
                        ratio(mean(rs, |r| r.p99_ms), mean(n, |r| r.p99_ms)),
                        ratio(mean(rs, |r| r.cold_p99_ms), mean(n, |r| r.cold_p99_ms)),
                        ratio(mean(rs, |r| r.rss_per_conn_kib), mean(n, |r| r.rss_per_conn_kib)),
                    )
                }
                _ => ("–".into(), "–".into(), "–".into(), "–".into()),
            };
            if case.idle {
                let _ = write!(line, " – | – | – | {rr} |");
            } else {
                let _ = write!(line, " {dr} | {pr} | {cr} | {rr} |");
            }
            let _ = writeln!(out, "{line}");
        }
    }
    // What TLS costs each server: its `-tls` case against the same case in plain.
    let tls_pairs: Vec<(usize, usize)> = cases
        .iter()
        .enumerate()
        .filter(|(_, c)| c.tls)
        .filter_map(|(ti, t)| {
            let plain = t.name.strip_suffix("-tls")?;
            cases.iter().position(|c| c.name == plain).map(|pi| (ti, pi))
        })
        .collect();
    if !tls_pairs.is_empty() {
        let _ = writeln!(out, "\n## TLS against plain (same case, same server)\n");
        let _ = writeln!(
            out,
            "| case | server | deliv/s tls/plain | p50 tls/plain | p99 tls/plain | srv CPU tls/plain |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|");
        for (ti, pi) in tls_pairs {
            for (si, server) in servers.iter().enumerate() {
                let (Some(t), Some(p)) = (results.get(&(ti, si)), results.get(&(pi, si))) else { continue };
                let _ = writeln!(
                    out,
                    "| {} | {server} | {} | {} | {} | {} |",
                    cases[ti].name,
                    ratio(mean(t, RunResult::deliv_per_s), mean(p, RunResult::deliv_per_s)),
                    ratio(mean(t, |r| r.p50_ms), mean(p, |r| r.p50_ms)),
                    ratio(mean(t, |r| r.p99_ms), mean(p, |r| r.p99_ms)),
                    ratio(mean(t, |r| r.srv_cpu), mean(p, |r| r.srv_cpu)),
                );
            }
        }
    }
    let _ = writeln!(out, "\n## Per run\n");
    let _ = writeln!(out, "{}", HEADER.replacen("| server |", "| server | round |", 1));
    let _ = writeln!(out, "{}", "|---".repeat(19) + "|");
    let mut errors = Vec::new();
    let mut bad = 0;
    for (ci, si, round, r) in &per_run {
        let line = row(&cases[*ci], &servers[*si], std::slice::from_ref(r));
        let line = line.replacen(
            &format!("| {} |", servers[*si]),
            &format!("| {} | {} |", servers[*si], round + 1),
            1,
        );
        let _ = writeln!(out, "{line}");
        if let Some(e) = &r.error {
            errors.push(format!("{} {} round {}: {e}", cases[*ci].name, servers[*si], round + 1));
        }
        if r.error.is_some() || r.lost + r.ooo + r.dup > 0 {
            bad += 1;
        }
    }
    // Interference: busy CPU of other processes from a run's first connect to its end (/proc/stat
    // counts in 10 ms ticks, so shorter windows would be noise).
    let noisy: Vec<String> = per_run
        .iter()
        .filter_map(|(ci, si, round, r)| {
            let share = r.run_other_cpu / r.run_wall_s.max(0.5);
            (r.error.is_none() && share > 0.1).then(|| {
                format!("{} {} {} ({:.0} %)", cases[*ci].name, servers[*si], round + 1, 100.0 * share)
            })
        })
        .collect();
    if noisy.is_empty() {
        let _ = writeln!(out, "\nInterference: no run saw other processes use more than 10 % of a core.");
    } else {
        let _ = writeln!(
            out,
            "\nInterference (runs during which other processes used more than 10 % of a core, from the first connect to the end): {}",
            noisy.join(", ")
        );
    }
    if !errors.is_empty() {
        let _ = writeln!(out, "\n## Errors\n");
        for e in &errors {
            let _ = writeln!(out, "- {e}");
        }
    }
    let _ = writeln!(
        out,
        "\nTotal time: {:.1} s; load average at end: {}",
        total.elapsed().as_secs_f64(),
        loadavg()
    );
    print!("{out}");
    let _ = std::io::stdout().flush();
    if bad > 0 {
        eprintln!("ws_fanout: {bad} run(s) failed or lost, reordered or duplicated messages");
        std::process::exit(1);
    }
}
