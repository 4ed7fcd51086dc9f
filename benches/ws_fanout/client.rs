//! The minimal WebSocket client of the load generator: upgrade, masked frames out, server frames
//! parsed in place, `""` pings answered, kernel receive timestamps on every read.

use super::*;

// Minimal WebSocket client

pub(crate) const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
/// A masked empty text frame: the v2 pong `""`.
pub(crate) const PONG: [u8; 6] = [0x81, 0x80, MASK[0], MASK[1], MASK[2], MASK[3]];

/// Appends a masked text (`op` 1) or control frame carrying `payload`.
pub(crate) fn encode_frame(out: &mut Vec<u8>, op: u8, payload: &[u8]) {
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

pub(crate) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
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

pub(crate) fn parse_u64(b: &[u8]) -> Option<u64> {
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
pub(crate) struct Fields<'a> {
    pub(crate) publish: bool,
    pub(crate) channel: Option<&'a [u8]>,
    pub(crate) s: Option<u64>,
    pub(crate) t: Option<u64>,
}

impl<'a> Fields<'a> {
    pub(crate) fn complete(&self) -> bool {
        self.publish && self.channel.is_some() && self.s.is_some() && self.t.is_some()
    }

    /// Looks at every `:` in `frame[from..to]` and at the key before it. Keys and values may
    /// not straddle the range; the caller scans the whole frame when something is missing.
    pub(crate) fn scan(&mut self, frame: &'a [u8], from: usize, to: usize) {
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
pub(crate) fn parse_delivery(frame: &[u8]) -> Option<(&[u8], u64, u64)> {
    pub(crate) const W: usize = 128;
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

pub(crate) type Res<T> = Result<T, String>;

thread_local! {
    /// The TLS configuration of the current run's connections (`None`: plain `ws://`).
    pub(crate) static CLIENT_TLS: RefCell<Option<Arc<rustls::ClientConfig>>> = const { RefCell::new(None) };
}

/// A connection's TLS state: rustls used sans-IO, so reads keep `recvmsg` and its kernel
/// timestamps (of the ciphertext's arrival), and writes stay non-blocking.
pub(crate) struct Tls {
    conn: rustls::ClientConnection,
    /// Ciphertext as read from the socket.
    raw: Vec<u8>,
}

/// `io::Write` on a non-blocking socket, for rustls's `write_tls`.
struct TryWriter<'a>(&'a TcpStream);

impl std::io::Write for TryWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.try_write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes TLS records until rustls has none or the socket would block.
fn flush_tls(stream: &TcpStream, tls: &mut Tls) -> std::io::Result<()> {
    while tls.conn.wants_write() {
        match tls.conn.write_tls(&mut TryWriter(stream)) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

pub(crate) struct Ws {
    pub(crate) stream: TcpStream,
    pub(crate) tls: Option<Box<Tls>>,
    pub(crate) buf: Vec<u8>,
    pub(crate) start: usize,
    pub(crate) end: usize,
    /// Size of the frame at `start` when it is incomplete.
    pub(crate) need: usize,
    /// When the kernel received the data of the last read (ns, see [`Ws::fill`]).
    pub(crate) arrived_ns: u64,
    /// When the last read returned (ns).
    pub(crate) read_ns: u64,
}

/// A frame in `Ws::buf`: opcode and payload range.
pub(crate) struct Frame {
    pub(crate) op: u8,
    pub(crate) a: usize,
    pub(crate) b: usize,
}

impl Ws {
    pub(crate) async fn connect(addr: SocketAddr) -> Res<Ws> {
        let stream = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
        stream.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
        nix::sys::socket::setsockopt(&stream, nix::sys::socket::sockopt::ReceiveTimestampns, &true)
            .map_err(|e| format!("SO_TIMESTAMPNS: {e}"))?;
        let tls = match CLIENT_TLS.with(|t| t.borrow().clone()) {
            Some(config) => {
                let name = rustls::pki_types::ServerName::try_from("localhost").map_err(|e| e.to_string())?;
                let conn = rustls::ClientConnection::new(config, name).map_err(|e| format!("TLS: {e}"))?;
                Some(Box::new(Tls { conn, raw: vec![0; 32 * 1024] }))
            }
            None => None,
        };
        let mut ws =
            Ws { stream, tls, buf: vec![0; 2048], start: 0, end: 0, need: 0, arrived_ns: 0, read_ns: 0 };
        let req = format!(
            "GET /socketcluster/ HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        // With TLS, rustls holds this until its handshake is done.
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

    /// Writes what the socket takes now, without waiting: the bytes of `data` accepted (with
    /// TLS, taken into rustls, which may hold ciphertext back: see [`unsent`](Self::unsent)).
    pub(crate) fn try_send(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let Some(tls) = self.tls.as_mut() else {
            return if data.is_empty() { Ok(0) } else { self.stream.try_write(data) };
        };
        flush_tls(&self.stream, tls)?;
        if tls.conn.wants_write() {
            return Err(std::io::ErrorKind::WouldBlock.into());
        }
        let n = std::io::Write::write(&mut tls.conn.writer(), data)?;
        flush_tls(&self.stream, tls)?;
        Ok(n)
    }

    /// Whether TLS records wait for the socket to take them.
    pub(crate) fn unsent(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.conn.wants_write())
    }

    /// Sends what TLS holds back, as far as the socket takes it now.
    pub(crate) fn flush(&mut self) -> Res<()> {
        match self.tls.as_mut() {
            Some(tls) => flush_tls(&self.stream, tls).map_err(|e| format!("write: {e}")),
            None => Ok(()),
        }
    }

    pub(crate) async fn write_all(&mut self, mut data: &[u8]) -> Res<()> {
        loop {
            let sent = match self.tls.as_mut() {
                Some(tls) if data.is_empty() => flush_tls(&self.stream, tls).map(|()| 0),
                _ => self.try_send(data),
            };
            match sent {
                Ok(n) => data = &data[n..],
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(format!("write: {e}")),
            }
            if data.is_empty() && !self.unsent() {
                return Ok(());
            }
            self.stream.writable().await.map_err(|e| format!("write: {e}"))?;
        }
    }

    /// The next complete frame in the buffer.
    pub(crate) fn next_frame(&mut self) -> Res<Option<Frame>> {
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
    pub(crate) async fn fill(&mut self) -> Res<()> {
        loop {
            if self.unsent() {
                tokio::select! {
                    r = self.stream.readable() => r.map_err(|e| format!("read: {e}"))?,
                    r = self.stream.writable() => {
                        r.map_err(|e| format!("write: {e}"))?;
                        self.flush()?;
                        continue;
                    }
                }
            } else {
                self.stream.readable().await.map_err(|e| format!("read: {e}"))?;
            }
            if self.try_fill()? {
                return Ok(());
            }
        }
    }

    /// One read without waiting; whether it got bytes (with TLS: ciphertext, which may or may
    /// not have completed a record).
    pub(crate) fn try_fill(&mut self) -> Res<bool> {
        use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
        use std::os::fd::AsRawFd;
        self.compact();
        let fd = self.stream.as_raw_fd();
        let mut cmsg = nix::cmsg_space!(nix::sys::time::TimeSpec);
        let buf = match self.tls.as_mut() {
            Some(tls) => &mut tls.raw[..],
            None => &mut self.buf[self.end..],
        };
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
            Ok((0, _)) => Err("connection closed by the server".into()),
            Ok((n, stamp)) => {
                self.read_ns = now_ns();
                self.arrived_ns = stamp.map_or(self.read_ns, |t| t.min(self.read_ns));
                match self.tls.take() {
                    Some(mut tls) => {
                        let r = self.decrypt(&mut tls, n);
                        self.tls = Some(tls);
                        r?;
                    }
                    None => self.end += n,
                }
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(format!("read: {e}")),
        }
    }

    /// Feeds `n` bytes of ciphertext to rustls and appends the plaintext to `buf`.
    fn decrypt(&mut self, tls: &mut Tls, n: usize) -> Res<()> {
        let mut off = 0;
        while off < n {
            off += tls.conn.read_tls(&mut &tls.raw[off..n]).map_err(|e| format!("TLS read: {e}"))?;
            tls.conn.process_new_packets().map_err(|e| format!("TLS: {e}"))?;
            loop {
                if self.end == self.buf.len() {
                    let len = self.buf.len() * 2;
                    self.buf.resize(len, 0);
                }
                match std::io::Read::read(&mut tls.conn.reader(), &mut self.buf[self.end..]) {
                    Ok(0) => return Err("TLS closed by the server".into()),
                    Ok(k) => self.end += k,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(format!("TLS read: {e}")),
                }
            }
        }
        // Handshake messages and the plaintext rustls held until the handshake was done.
        flush_tls(&self.stream, tls).map_err(|e| format!("write: {e}"))
    }

    /// Moves unread bytes to the front; grows the buffer when it is full or a frame needs more.
    pub(crate) fn compact(&mut self) {
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
    pub(crate) async fn control(&mut self, f: &Frame) -> Res<bool> {
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
    pub(crate) async fn request(&mut self, json: &str, cid: u64) -> Res<serde_json::Value> {
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

    pub(crate) async fn handshake(&mut self) -> Res<()> {
        self.request(r##"{"event":"#handshake","data":{"authToken":null},"cid":1}"##, 1).await.map(|_| ())
    }
}
