//! The load generator's run state and tasks: subscribers that check every delivery, and the
//! publisher (as fast as acknowledged, or paced).

use super::*;

// Shared run state (one thread: Rc<RefCell>)

pub(crate) struct SubState {
    pub(crate) channel: u32,
    pub(crate) expect: u64,
    pub(crate) distinct: u64,
    /// Highest sequence number seen + 1.
    pub(crate) next: u64,
    pub(crate) seen: Vec<u64>,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) deliveries: u64,
    pub(crate) ooo: u64,
    pub(crate) dup: u64,
}

pub(crate) struct Shared {
    pub(crate) channels: Vec<String>,
    pub(crate) subs: Vec<SubState>,
    /// Publisher's send time to the kernel's receive time.
    pub(crate) hist: Hist,
    /// Publisher's send time to this generator's read (includes its own queueing).
    pub(crate) read_hist: Hist,
    /// Sequence numbers below this are warm-up: checked, and only in `cold_hist`.
    pub(crate) warmup: u64,
    /// Like `hist`, for the warm-up deliveries.
    pub(crate) cold_hist: Hist,
    pub(crate) c: Counters,
    pub(crate) remaining: usize,
    pub(crate) ready: usize,
    pub(crate) ready_target: usize,
    pub(crate) setup_done_ns: u64,
    pub(crate) first_pub_ns: u64,
    pub(crate) last_ns: u64,
    pub(crate) errors: Vec<String>,
    pub(crate) go: bool,
}

impl Shared {
    pub(crate) fn on_delivery(&mut self, idx: usize, frame: &[u8], now: u64, read: u64) -> Res<()> {
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

pub(crate) async fn subscriber(addr: SocketAddr, idx: usize, sh: Rc<RefCell<Shared>>, sem: Rc<Semaphore>) {
    if let Err(e) = subscriber_inner(addr, idx, &sh, &sem).await {
        let mut s = sh.borrow_mut();
        if s.errors.len() < 5 {
            s.errors.push(format!("subscriber {idx}: {e}"));
        }
    }
}

pub(crate) async fn subscriber_inner(
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
pub(crate) enum Mode {
    /// invokePublish with this many in flight.
    Max { window: usize },
    /// transmitPublish at this many publishes per second.
    Rate { per_sec: f64 },
}

/// Appends one publish frame: channel `ch`, sequence `seq`, data object of exactly `size` bytes.
pub(crate) fn publish_frame(
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

pub(crate) async fn publisher(
    addr: SocketAddr,
    sh: Rc<RefCell<Shared>>,
    publishes: u64,
    size: usize,
    mode: Mode,
) {
    if let Err(e) = publisher_inner(addr, &sh, publishes, size, mode).await {
        sh.borrow_mut().errors.push(format!("publisher: {e}"));
    }
}

pub(crate) async fn publisher_inner(
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
        ws.flush()?;
        while woff < wbuf.len() {
            match ws.try_send(&wbuf[woff..]) {
                Ok(n) => woff += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(format!("write: {e}")),
            }
        }
        if woff == wbuf.len() {
            wbuf.clear();
            woff = 0;
        }
        let pending = woff < wbuf.len() || ws.unsent();
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
                ws.try_fill()?;
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
