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

#[path = "ws_fanout/floor.rs"]
mod floor;

// ---------------------------------------------------------------------------------------------
// Clock

static BASE: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since the process-wide base instant (the `"t"` field of every payload).
fn now_ns() -> u64 {
    BASE.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// The wall clock (`CLOCK_REALTIME`, the kernel's receive timestamps) minus [`now_ns`], from the
/// closest of a few paired readings.
static REALTIME_OFFSET: OnceLock<i128> = OnceLock::new();

fn realtime_ns() -> i128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i128)
}

/// A kernel receive timestamp (wall clock) on the [`now_ns`] scale.
fn from_realtime(ts: &nix::sys::time::TimeSpec) -> u64 {
    let offset = *REALTIME_OFFSET.get_or_init(|| {
        (0..9)
            .map(|_| {
                let a = now_ns();
                let r = realtime_ns();
                let b = now_ns();
                (b - a, r - (a as i128 + (b - a) as i128 / 2))
            })
            .min_by_key(|&(gap, _)| gap)
            .map_or(0, |(_, off)| off)
    });
    let real = ts.tv_sec() as i128 * 1_000_000_000 + ts.tv_nsec() as i128;
    (real - offset).max(0) as u64
}

// ---------------------------------------------------------------------------------------------
// Child processes: killed after each run, on Ctrl-C/SIGTERM and on panic.

static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

fn kill_pid(pid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn kill_all_children() {
    let pids = match CHILDREN.try_lock() {
        Ok(mut v) => std::mem::take(&mut *v),
        Err(_) => return,
    };
    for pid in pids {
        kill_pid(pid);
    }
}

fn install_cleanup() {
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        kill_all_children();
        prev(info);
    }));
    if let Err(e) = ctrlc::set_handler(|| {
        kill_all_children();
        eprintln!("ws_fanout: interrupted, child servers killed");
        std::process::exit(130);
    }) {
        eprintln!("ws_fanout: cannot install the signal handler: {e}");
    }
}

/// One server process, killed on drop.
struct Server {
    child: Child,
    pid: u32,
    addr: SocketAddr,
}

impl Server {
    fn start(program: &Path, args: &[&str], pin_cpu: Option<usize>) -> Result<Server, String> {
        let mut cmd = match pin_cpu {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(cpu.to_string()).arg(program);
                c
            }
            None => Command::new(program),
        };
        cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = cmd.spawn().map_err(|e| format!("cannot start {}: {e}", program.display()))?;
        let pid = child.id();
        CHILDREN.lock().unwrap_or_else(|e| e.into_inner()).push(pid);
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        // Keeps draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    // Receiver gone: keep reading and drop.
                }
            }
        });
        let mut server = Server { child, pid, addr: SocketAddr::from(([127, 0, 0, 1], 0)) };
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .map_err(|_| format!("{} printed no listening line within 30 s", program.display()))?;
        let v: serde_json::Value =
            serde_json::from_str(&line).map_err(|_| format!("not a JSON line: {line}"))?;
        let addr = v["listening"].as_str().ok_or_else(|| format!("no listening address in {line}"))?;
        server.addr = addr.parse().map_err(|_| format!("bad listening address {addr}"))?;
        Ok(server)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        CHILDREN.lock().unwrap_or_else(|e| e.into_inner()).retain(|&p| p != self.pid);
    }
}

// ---------------------------------------------------------------------------------------------
// /proc

/// VmRSS in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// utime + stime of a process (all threads), in seconds (USER_HZ = 100).
fn cpu_secs(pid: &str) -> f64 {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return f64::NAN };
    let Some(close) = s.rfind(')') else { return f64::NAN };
    let f: Vec<&str> = s[close + 2..].split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (ticks(11) + ticks(12)) as f64 / 100.0
}

/// Busy CPU time of the whole machine (all cores), in seconds.
fn machine_busy_secs() -> f64 {
    let Ok(s) = std::fs::read_to_string("/proc/stat") else { return f64::NAN };
    let Some(line) = s.lines().next() else { return f64::NAN };
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal
    let busy: u64 = [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| v.get(i)).sum();
    busy as f64 / 100.0
}

#[derive(Clone, Copy)]
struct CpuSnap {
    server: f64,
    gen_: f64,
    machine: f64,
}

fn cpu_snap(pid: u32) -> CpuSnap {
    CpuSnap { server: cpu_secs(&pid.to_string()), gen_: cpu_secs("self"), machine: machine_busy_secs() }
}

/// Polls a process's VmRSS every 5 ms and keeps the peak.
struct RssPoller {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssPoller {
    fn start(pid: u32) -> RssPoller {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let (s, p) = (stop.clone(), peak.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Some(kib) = rss_kib(pid) {
                    p.fetch_max(kib, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        RssPoller { stop, peak, thread: Some(thread) }
    }

    fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }
}

impl Drop for RssPoller {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Latency histogram: log-linear, 64 sub-buckets per power of two (values in ns).

const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;

struct Hist {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Hist {
    fn new() -> Hist {
        Hist { counts: vec![0; ((64 - SUB_BITS as usize) + 1) * SUB as usize], total: 0, max: 0 }
    }

    fn index(v: u64) -> usize {
        if v < SUB {
            v as usize
        } else {
            let exp = 63 - v.leading_zeros();
            let shift = exp - SUB_BITS;
            (((exp - SUB_BITS + 1) as u64) * SUB + ((v >> shift) & (SUB - 1))) as usize
        }
    }

    /// The largest value that falls into bucket `i`.
    fn upper(i: usize) -> u64 {
        let i = i as u64;
        if i < SUB {
            i
        } else {
            let exp = i / SUB + SUB_BITS as u64 - 1;
            let sub = i % SUB;
            let shift = exp - SUB_BITS as u64;
            ((SUB + sub) << shift) + (1u64 << shift) - 1
        }
    }

    fn record(&mut self, v: u64) {
        self.counts[Hist::index(v)] += 1;
        self.total += 1;
        self.max = self.max.max(v);
    }

    fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Hist::upper(i).min(self.max);
            }
        }
        self.max
    }
}

// ---------------------------------------------------------------------------------------------
// Minimal WebSocket client

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
/// A masked empty text frame: the v2 pong `""`.
const PONG: [u8; 6] = [0x81, 0x80, MASK[0], MASK[1], MASK[2], MASK[3]];

/// Appends a masked text (`op` 1) or control frame carrying `payload`.
fn encode_frame(out: &mut Vec<u8>, op: u8, payload: &[u8]) {
    out.push(0x80 | op);
    let n = payload.len();
    if n < 126 {
        out.push(0x80 | n as u8);
    } else if n <= 0xffff {
        out.push(0x80 | 126);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
    out.extend_from_slice(&MASK);
    let start = out.len();
    out.extend_from_slice(payload);
    for (i, b) in out[start..].iter_mut().enumerate() {
        *b ^= MASK[i & 3];
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let first = needle[0];
    let mut i = 0;
    while i + needle.len() <= hay.len() {
        match hay[i..hay.len() - needle.len() + 1].iter().position(|&b| b == first) {
            None => return None,
            Some(p) => {
                i += p;
                if &hay[i..i + needle.len()] == needle {
                    return Some(i);
                }
                i += 1;
            }
        }
    }
    None
}

fn parse_u64(b: &[u8]) -> Option<u64> {
    let mut v: u64 = 0;
    let mut n = 0;
    for &c in b {
        if !c.is_ascii_digit() {
            break;
        }
        v = v.checked_mul(10)?.checked_add((c - b'0') as u64)?;
        n += 1;
    }
    (n > 0).then_some(v)
}

/// The fields of a delivery found so far: `"event":"#publish"`, channel, `"s"` and `"t"`.
#[derive(Default)]
struct Fields<'a> {
    publish: bool,
    channel: Option<&'a [u8]>,
    s: Option<u64>,
    t: Option<u64>,
}

impl<'a> Fields<'a> {
    fn complete(&self) -> bool {
        self.publish && self.channel.is_some() && self.s.is_some() && self.t.is_some()
    }

    /// Looks at every `:` in `frame[from..to]` and at the key before it. Keys and values may
    /// not straddle the range; the caller scans the whole frame when something is missing.
    fn scan(&mut self, frame: &'a [u8], from: usize, to: usize) {
        let mut i = from;
        while let Some(p) = frame[i..to].iter().position(|&b| b == b':') {
            let c = i + p;
            let key = &frame[from..c];
            let value = &frame[c + 1..];
            if key.ends_with(b"\"s\"") {
                self.s = self.s.or_else(|| parse_u64(value));
            } else if key.ends_with(b"\"t\"") {
                self.t = self.t.or_else(|| parse_u64(value));
            } else if key.ends_with(b"\"channel\"") {
                if let Some(v) = value.strip_prefix(b"\"")
                    && let Some(len) = v.iter().position(|&b| b == b'"')
                {
                    self.channel = Some(&v[..len]);
                }
            } else if key.ends_with(b"\"event\"") {
                self.publish |= value.starts_with(b"\"#publish\"");
            }
            i = c + 1;
        }
    }
}

/// A `#publish` delivery: (channel bytes, seq, send time). The fields are looked for near the
/// start of the frame (Node keeps insertion order: `{"event":"#publish","data":{"channel":C,
/// "data":{"s":..,"t":..,"p":"xxx"}}}`) and near its end (ours sorts keys: `{"data":{"channel":C,
/// "data":{"p":"xxx","s":..,"t":..}},"event":"#publish"}`); the padding in between is scanned
/// only when that fails.
fn parse_delivery(frame: &[u8]) -> Option<(&[u8], u64, u64)> {
    const W: usize = 128;
    let mut f = Fields::default();
    if frame.len() <= 2 * W {
        f.scan(frame, 0, frame.len());
    } else {
        f.scan(frame, 0, W);
        f.scan(frame, frame.len() - W, frame.len());
        if !f.complete() {
            f = Fields::default();
            f.scan(frame, 0, frame.len());
        }
    }
    if !f.complete() {
        return None;
    }
    Some((f.channel?, f.s?, f.t?))
}

type Res<T> = Result<T, String>;

struct Ws {
    stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Size of the frame at `start` when it is incomplete.
    need: usize,
    /// When the kernel received the data of the last read (ns, see [`Ws::fill`]).
    arrived_ns: u64,
    /// When the last read returned (ns).
    read_ns: u64,
}

/// A frame in `Ws::buf`: opcode and payload range.
struct Frame {
    op: u8,
    a: usize,
    b: usize,
}

impl Ws {
    async fn connect(addr: SocketAddr) -> Res<Ws> {
        let stream = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
        stream.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
        nix::sys::socket::setsockopt(&stream, nix::sys::socket::sockopt::ReceiveTimestampns, &true)
            .map_err(|e| format!("SO_TIMESTAMPNS: {e}"))?;
        let mut ws = Ws { stream, buf: vec![0; 2048], start: 0, end: 0, need: 0, arrived_ns: 0, read_ns: 0 };
        let req = format!(
            "GET /socketcluster/ HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        ws.write_all(req.as_bytes()).await?;
        loop {
            if let Some(i) = find(&ws.buf[..ws.end], b"\r\n\r\n") {
                let head = &ws.buf[..i];
                if !head.starts_with(b"HTTP/1.1 101") {
                    return Err(format!("upgrade refused: {}", String::from_utf8_lossy(head)));
                }
                ws.start = i + 4;
                return Ok(ws);
            }
            ws.fill().await?;
        }
    }

    async fn write_all(&self, mut data: &[u8]) -> Res<()> {
        while !data.is_empty() {
            match self.stream.try_write(data) {
                Ok(n) => data = &data[n..],
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    self.stream.writable().await.map_err(|e| format!("write: {e}"))?;
                }
                Err(e) => return Err(format!("write: {e}")),
            }
        }
        Ok(())
    }

    /// The next complete frame in the buffer.
    fn next_frame(&mut self) -> Res<Option<Frame>> {
        let avail = &self.buf[self.start..self.end];
        if avail.len() < 2 {
            return Ok(None);
        }
        let (b0, b1) = (avail[0], avail[1]);
        if b1 & 0x80 != 0 {
            return Err("masked frame from the server".into());
        }
        let (hdr, len) = match b1 & 0x7f {
            126 if avail.len() >= 4 => (4, u16::from_be_bytes([avail[2], avail[3]]) as usize),
            127 if avail.len() >= 10 => {
                (10, u64::from_be_bytes(avail[2..10].try_into().expect("8 bytes")) as usize)
            }
            126 | 127 => return Ok(None),
            n => (2, n as usize),
        };
        if avail.len() < hdr + len {
            self.need = hdr + len;
            return Ok(None);
        }
        let op = b0 & 0x0f;
        if b0 & 0x80 == 0 || op == 0 {
            return Err("fragmented message (not supported by the load generator)".into());
        }
        let a = self.start + hdr;
        self.start = a + len;
        self.need = 0;
        Ok(Some(Frame { op, a, b: a + len }))
    }

    /// Reads once (awaiting readiness); compacts and grows the buffer as needed. Records when the
    /// read returned and when the kernel received the data (`SO_TIMESTAMPNS`: the time the
    /// newest segment in the read entered the host's network stack; the read time when the kernel
    /// gives none). The arrival time is what the latency columns use: it does not include this
    /// generator's own queueing, which would otherwise penalize the server that delivers faster.
    async fn fill(&mut self) -> Res<()> {
        use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
        use std::os::fd::AsRawFd;
        self.compact();
        let fd = self.stream.as_raw_fd();
        let mut cmsg = nix::cmsg_space!(nix::sys::time::TimeSpec);
        loop {
            self.stream.readable().await.map_err(|e| format!("read: {e}"))?;
            let buf = &mut self.buf[self.end..];
            let got = self.stream.try_io(tokio::io::Interest::READABLE, || {
                let mut iov = [std::io::IoSliceMut::new(buf)];
                let msg = recvmsg::<()>(fd, &mut iov, Some(&mut cmsg), MsgFlags::empty())?;
                let stamp = msg.cmsgs()?.find_map(|c| match c {
                    ControlMessageOwned::ScmTimestampns(ts) => Some(from_realtime(&ts)),
                    _ => None,
                });
                Ok((msg.bytes, stamp))
            });
            match got {
                Ok((0, _)) => return Err("connection closed by the server".into()),
                Ok((n, stamp)) => {
                    self.end += n;
                    self.read_ns = now_ns();
                    self.arrived_ns = stamp.map_or(self.read_ns, |t| t.min(self.read_ns));
                    return Ok(());
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    }

    /// Moves unread bytes to the front; grows the buffer when it is full or a frame needs more.
    fn compact(&mut self) {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.need > self.buf.len() {
            self.buf.resize(self.need.next_power_of_two(), 0);
        } else if self.end == self.buf.len() {
            let n = self.buf.len() * 2;
            self.buf.resize(n, 0);
        }
    }

    /// Handles a control frame or `""` ping; returns true when it did.
    async fn control(&self, f: &Frame) -> Res<bool> {
        match f.op {
            1 if f.a == f.b => self.write_all(&PONG).await.map(|_| true),
            1 => Ok(false),
            8 => {
                let p = &self.buf[f.a..f.b];
                let code = if p.len() >= 2 { u16::from_be_bytes([p[0], p[1]]) } else { 1005 };
                Err(format!(
                    "server closed the connection: {code} {}",
                    String::from_utf8_lossy(&p[2.min(p.len())..])
                ))
            }
            9 => {
                let mut out = Vec::new();
                encode_frame(&mut out, 10, &self.buf[f.a..f.b]);
                self.write_all(&out).await.map(|_| true)
            }
            10 => Ok(true),
            op => Err(format!("unexpected opcode {op}")),
        }
    }

    /// Sends a JSON request and waits for the response with `rid` = `cid`.
    async fn request(&mut self, json: &str, cid: u64) -> Res<serde_json::Value> {
        let mut out = Vec::new();
        encode_frame(&mut out, 1, json.as_bytes());
        self.write_all(&out).await?;
        loop {
            while let Some(f) = self.next_frame()? {
                if self.control(&f).await? {
                    continue;
                }
                let text = &self.buf[f.a..f.b];
                let v: serde_json::Value = serde_json::from_slice(text)
                    .map_err(|_| format!("not JSON: {}", String::from_utf8_lossy(text)))?;
                if v["rid"].as_u64() == Some(cid) {
                    if !v["error"].is_null() {
                        return Err(format!("{json} failed: {}", v["error"]));
                    }
                    return Ok(v);
                }
            }
            self.fill().await?;
        }
    }

    async fn handshake(&mut self) -> Res<()> {
        self.request(r##"{"event":"#handshake","data":{"authToken":null},"cid":1}"##, 1).await.map(|_| ())
    }
}

// ---------------------------------------------------------------------------------------------
// Shared run state (one thread: Rc<RefCell>)

struct SubState {
    channel: u32,
    expect: u64,
    distinct: u64,
    /// Highest sequence number seen + 1.
    next: u64,
    seen: Vec<u64>,
}

#[derive(Default)]
struct Counters {
    deliveries: u64,
    ooo: u64,
    dup: u64,
}

struct Shared {
    channels: Vec<String>,
    subs: Vec<SubState>,
    /// Publisher's send time to the kernel's receive time.
    hist: Hist,
    /// Publisher's send time to this generator's read (includes its own queueing).
    read_hist: Hist,
    /// Sequence numbers below this are warm-up: checked, and only in `cold_hist`.
    warmup: u64,
    /// Like `hist`, for the warm-up deliveries.
    cold_hist: Hist,
    c: Counters,
    remaining: usize,
    ready: usize,
    ready_target: usize,
    setup_done_ns: u64,
    first_pub_ns: u64,
    last_ns: u64,
    errors: Vec<String>,
    go: bool,
}

impl Shared {
    fn on_delivery(&mut self, idx: usize, frame: &[u8], now: u64, read: u64) -> Res<()> {
        let Some((channel, seq, t)) = parse_delivery(frame) else {
            return Err(format!(
                "unexpected frame: {}",
                String::from_utf8_lossy(&frame[..frame.len().min(300)])
            ));
        };
        let sub = &mut self.subs[idx];
        if channel != self.channels[sub.channel as usize].as_bytes() {
            return Err(format!(
                "delivery for channel {} on a subscriber of another one",
                String::from_utf8_lossy(channel)
            ));
        }
        self.c.deliveries += 1;
        self.last_ns = read;
        if seq >= self.warmup {
            self.hist.record(now.saturating_sub(t));
            self.read_hist.record(read.saturating_sub(t));
        } else {
            self.cold_hist.record(now.saturating_sub(t));
        }
        if seq >= sub.expect {
            self.c.dup += 1;
            return Ok(());
        }
        let (w, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
        if sub.seen[w] & bit != 0 {
            self.c.dup += 1;
            return Ok(());
        }
        sub.seen[w] |= bit;
        if seq < sub.next {
            self.c.ooo += 1;
        }
        sub.next = sub.next.max(seq + 1);
        sub.distinct += 1;
        if sub.distinct == sub.expect {
            self.remaining -= 1;
        }
        Ok(())
    }
}

async fn subscriber(addr: SocketAddr, idx: usize, sh: Rc<RefCell<Shared>>, sem: Rc<Semaphore>) {
    if let Err(e) = subscriber_inner(addr, idx, &sh, &sem).await {
        let mut s = sh.borrow_mut();
        if s.errors.len() < 5 {
            s.errors.push(format!("subscriber {idx}: {e}"));
        }
    }
}

async fn subscriber_inner(
    addr: SocketAddr,
    idx: usize,
    sh: &Rc<RefCell<Shared>>,
    sem: &Semaphore,
) -> Res<()> {
    let permit = sem.acquire().await.map_err(|e| e.to_string())?;
    let mut ws = Ws::connect(addr).await?;
    ws.handshake().await?;
    let channel = sh.borrow().subs.get(idx).map(|s| sh.borrow().channels[s.channel as usize].clone());
    if let Some(ch) = channel {
        let req = format!(r##"{{"event":"#subscribe","data":{{"channel":"{ch}"}},"cid":2}}"##);
        ws.request(&req, 2).await?;
    }
    drop(permit);
    {
        let mut s = sh.borrow_mut();
        s.ready += 1;
        if s.ready == s.ready_target {
            s.setup_done_ns = now_ns();
        }
    }
    loop {
        let mut pong = false;
        let mut control = None;
        {
            let mut s = sh.borrow_mut();
            while let Some(f) = ws.next_frame()? {
                match f.op {
                    1 if f.a == f.b => pong = true,
                    1 => s.on_delivery(idx, &ws.buf[f.a..f.b], ws.arrived_ns, ws.read_ns)?,
                    _ => {
                        control = Some(f);
                        break;
                    }
                }
            }
        }
        if pong {
            ws.write_all(&PONG).await?;
        }
        match control {
            // More frames may follow it in the buffer.
            Some(f) => {
                ws.control(&f).await?;
            }
            None => ws.fill().await?,
        }
    }
}

#[derive(Clone, Copy)]
enum Mode {
    /// invokePublish with this many in flight.
    Max { window: usize },
    /// transmitPublish at this many publishes per second.
    Rate { per_sec: f64 },
}

/// Appends one publish frame: channel `ch`, sequence `seq`, data object of exactly `size` bytes.
fn publish_frame(
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
    ch: &str,
    seq: u64,
    size: usize,
    cid: Option<u64>,
) {
    scratch.clear();
    let t = now_ns();
    let _ = write!(scratch, r##"{{"event":"#publish","data":{{"channel":"{ch}","data":"##);
    let obj = scratch.len();
    let _ = write!(scratch, r#"{{"s":{seq},"t":{t},"p":""#);
    let pad = size.saturating_sub(scratch.len() - obj + 2);
    scratch.resize(scratch.len() + pad, b'x');
    scratch.extend_from_slice(b"\"}}");
    match cid {
        Some(cid) => {
            let _ = write!(scratch, r#","cid":{cid}}}"#);
        }
        None => scratch.push(b'}'),
    }
    encode_frame(out, 1, scratch);
}

async fn publisher(addr: SocketAddr, sh: Rc<RefCell<Shared>>, publishes: u64, size: usize, mode: Mode) {
    if let Err(e) = publisher_inner(addr, &sh, publishes, size, mode).await {
        sh.borrow_mut().errors.push(format!("publisher: {e}"));
    }
}

async fn publisher_inner(
    addr: SocketAddr,
    sh: &Rc<RefCell<Shared>>,
    publishes: u64,
    size: usize,
    mode: Mode,
) -> Res<()> {
    let mut ws = Ws::connect(addr).await?;
    ws.handshake().await?;
    {
        let mut s = sh.borrow_mut();
        s.ready += 1;
        if s.ready == s.ready_target {
            s.setup_done_ns = now_ns();
        }
    }
    while !sh.borrow().go {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let channels: Vec<String> = sh.borrow().channels.clone();
    let nch = channels.len() as u64;
    let (mut sent, mut acked, mut cid) = (0u64, 0u64, 10u64);
    let mut wbuf: Vec<u8> = Vec::new();
    let mut woff = 0;
    let mut scratch = Vec::new();
    let start = Instant::now();
    sh.borrow_mut().first_pub_ns = now_ns();
    loop {
        // Queue what may be sent now.
        match mode {
            Mode::Max { window } => {
                while sent < publishes && sent - acked < window as u64 {
                    cid += 1;
                    let ch = &channels[(sent % nch) as usize];
                    publish_frame(&mut wbuf, &mut scratch, ch, sent / nch, size, Some(cid));
                    sent += 1;
                }
            }
            Mode::Rate { per_sec } => {
                let due = ((start.elapsed().as_secs_f64() * per_sec) as u64 + 1).min(publishes);
                while sent < due {
                    let ch = &channels[(sent % nch) as usize];
                    publish_frame(&mut wbuf, &mut scratch, ch, sent / nch, size, None);
                    sent += 1;
                }
                acked = sent;
            }
        }
        // Write without waiting.
        while woff < wbuf.len() {
            match ws.stream.try_write(&wbuf[woff..]) {
                Ok(n) => woff += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(format!("write: {e}")),
            }
        }
        if woff == wbuf.len() {
            wbuf.clear();
            woff = 0;
        }
        let pending = woff < wbuf.len();
        ws.compact();
        let next_due = match mode {
            Mode::Rate { per_sec } if sent < publishes => {
                Some(tokio::time::Instant::from_std(start + Duration::from_secs_f64(sent as f64 / per_sec)))
            }
            _ => None,
        };
        tokio::select! {
            r = ws.stream.readable() => {
                r.map_err(|e| format!("read: {e}"))?;
                match ws.stream.try_read(&mut ws.buf[ws.end..]) {
                    Ok(0) => return Err("connection closed by the server".into()),
                    Ok(n) => ws.end += n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(format!("read: {e}")),
                }
                while let Some(f) = ws.next_frame()? {
                    match f.op {
                        1 if f.a == f.b => wbuf.extend_from_slice(&PONG),
                        1 => {
                            let text = &ws.buf[f.a..f.b];
                            if find(text, b"\"rid\":").is_none() || find(text, b"\"error\"").is_some() {
                                return Err(format!("unexpected frame: {}", String::from_utf8_lossy(text)));
                            }
                            acked += 1;
                        }
                        _ => { ws.control(&f).await?; }
                    }
                }
            }
            r = ws.stream.writable(), if pending => { r.map_err(|e| format!("write: {e}"))?; }
            _ = async { tokio::time::sleep_until(next_due.expect("guarded")).await }, if next_due.is_some() => {}
        }
    }
}

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
}

/// Rate cases' warm-up: 1 s, and at least 20 messages per connection. Every new TCP connection
/// starts by acknowledging each of its first 16 segments at once (Linux's quick ACKs); on loopback
/// the sender pays for those ACKs, so the first publishes cost any server up to twice as much, and
/// Node's JIT warms up meanwhile. The latency columns are for the steady state after that.
const WARMUP: (f64, usize) = (1.0, 20);

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
    };
    // `deliveries` per second in total, for `secs` seconds after a warm-up of `warm_secs` (at
    // least `warm_min` publishes per channel).
    let rate = |name: &str,
                subs: usize,
                channels: usize,
                payload: usize,
                deliveries: f64,
                secs: f64,
                (warm_secs, warm_min): (f64, usize)| {
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
        }
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
    };
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
        };
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            match a.as_str() {
                "--quick" => c.quick = true,
                "--filter" => c.filters.push(args.next().unwrap_or_else(|| usage("--filter needs a value"))),
                "--servers" => {
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
        c
    }
}

fn usage(msg: &str) -> ! {
    eprintln!(
        "ws_fanout: {msg}\nusage: cargo bench --bench ws_fanout -- [--quick] [--filter NAME]... \
         [--servers smol,tokio,node,floor] [--rounds N] [--no-pin] [--no-build]"
    );
    std::process::exit(2);
}

struct Env {
    ours: PathBuf,
    node_script: Option<PathBuf>,
    pin: bool,
    quick: bool,
}

fn start_server(env: &Env, server: &str) -> Result<Server, String> {
    let pin = env.pin.then_some(1);
    match server {
        "node" => {
            let script = env.node_script.as_ref().ok_or("node is not available")?;
            let s = script.to_str().ok_or("non-UTF-8 path")?;
            Server::start(Path::new("node"), &[s, "--port", "0"], pin)
        }
        "floor" => {
            let me = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
            Server::start(&me, &["--floor-server"], pin)
        }
        rt => Server::start(&env.ours, &["--port", "0", "--runtime", rt], pin),
    }
}

fn run_case(rt: &tokio::runtime::Runtime, env: &Env, case: &Case, server_name: &str) -> RunResult {
    let server = match start_server(env, server_name) {
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
    let (setup_limit, run_limit) = if env.quick {
        (Duration::from_secs(10), Duration::from_secs(10))
    } else {
        (Duration::from_secs(90), Duration::from_secs(90))
    };
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
    let deadline = Instant::now() + run_limit;
    loop {
        {
            let s = sh.borrow();
            if s.remaining == 0 || !s.errors.is_empty() {
                break;
            }
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
            "ws_fanout: building our server (cargo build --release --example interop_server --features tokio)"
        );
        let t = Instant::now();
        let status = Command::new(&cargo)
            .args([
                "build",
                "--release",
                "--example",
                "interop_server",
                "--features",
                "tokio",
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
    let env = Env { ours, node_script, pin, quick: cfg.quick };
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
            let rs = &results[&(ci, si)];
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
