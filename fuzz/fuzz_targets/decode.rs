//! Fuzzes the sans-IO protocol core with arbitrary frames and arbitrary times.
//!
//! The input is a script of records separated by `\n`:
//!
//! | record | meaning |
//! |---|---|
//! | `!cfg<flags>` (first record only) | `1`: protocol v1; `d`: ping timeout disabled; `s`: short timers |
//! | `!w<ms>` | advance the clock by `<ms>` and fire the timers (`!w` alone: to the next deadline) |
//! | `!b<bytes>` | a binary frame |
//! | `!h<hex>` | a frame given in hex (text when valid UTF-8, else binary): any byte, `\n` included |
//! | `!x<code>` | the transport closes (default 1006) |
//! | `!k<code>` | the driver closes (default 1000) |
//! | `!i<ms>` | the servers start an invoke with that ack timeout |
//! | anything else | a frame: text when valid UTF-8, else binary |
//!
//! Each frame goes to `codec::decode`/`decode_binary` (which must agree on UTF-8 input), to a
//! server connection before its handshake and one after it, and to a client connection waiting
//! for its handshake response and one that has it. The servers are driven as a simple driver
//! would: handshakes accepted (odd cid) or rejected (even cid), invokes and subscribes answered.
//!
//! Invariants: no panic; states only move forward; at most one `Closed` event, and exactly one
//! once the state is closed; nothing after a close frame; every text frame is exactly the
//! heartbeat string or JSON holding one event or response; close frames carry a sendable code and at most 123 bytes of reason; right
//! after `handle_timeout(now)` the next deadline is after `now`; no deadline once closed.
#![no_main]

use std::collections::VecDeque;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use socketcluster::protocol::client::ClientState;
use socketcluster::protocol::codec::{self, Decoded, ProtocolVersion};
use socketcluster::protocol::server::ServerState;
use socketcluster::protocol::{
    ClientConfig, ClientConnection, ClientEvent, Packet, RemoteError, ServerConfig, ServerConnection,
    ServerEvent, Transmit,
};

/// Records run per input (longer scripts are cut, to keep executions fast).
const MAX_RECORDS: usize = 256;
/// The longest single wait, in ms (about 31 years): keeps the clock far from `Duration::MAX`.
const MAX_WAIT_MS: u64 = 1_000_000_000_000;

const HANDSHAKE: &str = r##"{"event":"#handshake","data":{"authToken":null},"cid":1}"##;

/// What happens to every connection at one step.
enum Input<'a> {
    Text(&'a str),
    Binary(&'a [u8]),
    Wait(Option<u64>),
    PeerClose(u16),
    Close(u16),
    Invoke(u64),
}

fn number(digits: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(digits).ok()?;
    let n: u64 = s.get(..s.len().min(19))?.parse().ok()?;
    Some(n)
}

fn hex(digits: &[u8]) -> Vec<u8> {
    let nibble = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    digits.chunks_exact(2).filter_map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?)).collect()
}

fn code(digits: &[u8], default: u16) -> u16 {
    number(digits).and_then(|n| u16::try_from(n).ok()).unwrap_or(default)
}

/// Invariant checks over one connection's output.
#[derive(Default)]
struct Watch {
    rank: u8,
    closed_events: usize,
    close_sent: bool,
}

impl Watch {
    fn transmit(&mut self, t: Transmit, heartbeat: &str) {
        match t {
            Transmit::Text(text) => {
                assert!(!self.close_sent, "text frame {text:?} after the close frame");
                // JSON, and more: exactly one event or response object (parsed by serde_json via
                // the codec; "\0" is never a heartbeat).
                let one_packet = matches!(
                    codec::decode(&text, "\0"),
                    Decoded::Packets(p) if matches!(p[..], [Packet::Event { .. } | Packet::Response { .. }])
                );
                assert!(
                    text == heartbeat || one_packet,
                    "text frame neither a packet nor the heartbeat: {text:?}"
                );
            }
            Transmit::Close { code, reason } => {
                assert!(!self.close_sent, "a second close frame");
                assert!(
                    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999),
                    "unsendable close code {code}"
                );
                assert!(reason.len() <= 123, "close reason of {} bytes", reason.len());
                self.close_sent = true;
            }
        }
    }

    fn step(&mut self, rank: u8, closed_events: usize, deadline: Option<Duration>) {
        assert!(rank >= self.rank, "state went back from {} to {rank}", self.rank);
        self.rank = rank;
        self.closed_events += closed_events;
        assert!(self.closed_events <= 1, "more than one Closed event");
        assert_eq!(self.closed_events == 1, rank == 3, "Closed event and Closed state disagree");
        if rank == 3 {
            assert_eq!(deadline, None, "a deadline on a closed connection");
        }
    }
}

struct Server {
    conn: ServerConnection,
    watch: Watch,
    ping: &'static str,
}

impl Server {
    fn new(config: ServerConfig, handshake: bool) -> Self {
        let ping = config.protocol_version.ping();
        let mut conn = ServerConnection::new(Duration::ZERO, config);
        if handshake {
            conn.handle_text(Duration::ZERO, HANDSHAKE);
            assert!(matches!(conn.poll_event(), Some(ServerEvent::Handshake { cid: 1, .. })));
            conn.accept_handshake(1, "fuzz", false, None);
            assert!(conn.is_open());
        }
        let mut s = Self { conn, watch: Watch::default(), ping };
        s.drain();
        s
    }

    fn apply(&mut self, now: Duration, input: &Input<'_>) {
        let c = &mut self.conn;
        match *input {
            Input::Text(t) => c.handle_text(now, t),
            Input::Binary(b) => c.handle_binary(now, b),
            Input::Wait(_) => {
                c.handle_timeout(now);
                if let Some(next) = c.poll_timeout() {
                    assert!(next > now, "server deadline {next:?} not after {now:?} after handle_timeout");
                }
            }
            Input::PeerClose(code) => c.handle_close(code, ""),
            Input::Close(code) => c.close(code, "fuzz"),
            Input::Invoke(ms) => {
                let open = c.is_open();
                let r = c.invoke("fuzz", None, Some(now + Duration::from_millis(ms)));
                assert_eq!(r.is_ok(), open);
            }
        }
        self.drain();
    }

    /// Acts on the events as a driver would, then checks the output.
    fn drain(&mut self) {
        let c = &mut self.conn;
        let mut closed = 0;
        let mut events: VecDeque<ServerEvent> = std::iter::from_fn(|| c.poll_event()).collect();
        while let Some(ev) = events.pop_front() {
            match ev {
                ServerEvent::Handshake { cid, .. } if cid % 2 == 1 => {
                    c.accept_handshake(cid, "fuzz", false, None)
                }
                ServerEvent::Handshake { cid, .. } => {
                    let code = if cid % 4 == 0 { 4501 } else { 4008 };
                    c.reject_handshake(cid, &RemoteError::new("HsError", "no").with("statusCode", code), code)
                }
                ServerEvent::Invoke { cid, data, .. } => c.respond(cid, data.as_ref()),
                ServerEvent::Subscribe { cid: Some(cid), .. }
                | ServerEvent::Publish { cid: Some(cid), .. }
                | ServerEvent::Unsubscribe { cid: Some(cid), .. } => c.respond(cid, None),
                ServerEvent::Authenticate { cid, .. } => c.respond_error(cid, &RemoteError::plain("no")),
                ServerEvent::Closed { .. } => closed += 1,
                _ => {}
            }
            events.extend(std::iter::from_fn(|| c.poll_event()));
        }
        while let Some(t) = c.poll_transmit() {
            self.watch.transmit(t, self.ping);
        }
        let rank = match c.state() {
            ServerState::Connecting => 0,
            ServerState::Handshaking => 1,
            ServerState::Open => 2,
            ServerState::Closed => 3,
        };
        self.watch.step(rank, closed, c.poll_timeout());
    }
}

struct Client {
    conn: ClientConnection,
    watch: Watch,
    pong: &'static str,
}

impl Client {
    fn new(config: ClientConfig, handshake: bool) -> Self {
        let pong = config.protocol_version.pong();
        let mut conn = ClientConnection::new(Duration::ZERO, config);
        conn.handle_open(Duration::ZERO, 1, Some("a.b.c"));
        if handshake {
            conn.handle_text(
                Duration::ZERO,
                r#"{"rid":1,"data":{"id":"fuzz","pingTimeout":20000,"isAuthenticated":true}}"#,
            );
            assert!(matches!(conn.poll_event(), Some(ClientEvent::Connected { .. })));
            assert_eq!(conn.state(), ClientState::Open);
        }
        let mut c = Self { conn, watch: Watch::default(), pong };
        c.drain();
        c
    }

    fn apply(&mut self, now: Duration, input: &Input<'_>) {
        let c = &mut self.conn;
        match *input {
            Input::Text(t) => c.handle_text(now, t),
            Input::Binary(b) => c.handle_binary(now, b),
            Input::Wait(_) => {
                c.handle_timeout(now);
                if let Some(next) = c.poll_timeout() {
                    assert!(next > now, "client deadline {next:?} not after {now:?} after handle_timeout");
                }
            }
            Input::PeerClose(code) => c.handle_close(code, ""),
            Input::Close(code) => c.close(code, "fuzz"),
            Input::Invoke(_) => {}
        }
        self.drain();
    }

    fn drain(&mut self) {
        let c = &mut self.conn;
        let closed =
            std::iter::from_fn(|| c.poll_event()).filter(|e| matches!(e, ClientEvent::Closed { .. })).count();
        while let Some(t) = c.poll_transmit() {
            self.watch.transmit(t, self.pong);
        }
        let rank = match c.state() {
            ClientState::Connecting => 0,
            ClientState::Handshaking => 1,
            ClientState::Open => 2,
            ClientState::Closed => 3,
        };
        self.watch.step(rank, closed, c.poll_timeout());
    }
}

fn configs(flags: &[u8]) -> (ServerConfig, ClientConfig) {
    let version = if flags.contains(&b'1') { ProtocolVersion::V1 } else { ProtocolVersion::V2 };
    let disabled = flags.contains(&b'd');
    let mut server =
        ServerConfig { protocol_version: version, ping_timeout_disabled: disabled, ..Default::default() };
    let mut client =
        ClientConfig { protocol_version: version, ping_timeout_disabled: disabled, ..Default::default() };
    if flags.contains(&b's') {
        server.ping_interval = Duration::from_millis(100);
        server.ping_timeout = Duration::from_millis(300);
        server.handshake_timeout = Duration::from_millis(200);
        client.connect_timeout = Duration::from_millis(500);
        client.ack_timeout = Duration::from_millis(250);
    }
    (server, client)
}

/// Decodes a frame every way and checks that text and binary decoding agree.
fn check_decode(bytes: &[u8]) {
    let text = std::str::from_utf8(bytes).ok();
    for heartbeat in ["", "#1", "#2"] {
        let from_binary = codec::decode_binary(bytes, heartbeat);
        if let Some(text) = text {
            assert_eq!(codec::decode(text, heartbeat), from_binary);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut records: Vec<&[u8]> = data.split(|&b| b == b'\n').take(MAX_RECORDS).collect();
    let flags = match records.first() {
        Some(r) if r.starts_with(b"!cfg") => {
            let flags = &r[4..];
            records.remove(0);
            flags
        }
        _ => &[][..],
    };
    let (server_config, client_config) = configs(flags);
    let mut servers = [Server::new(server_config.clone(), false), Server::new(server_config, true)];
    let mut clients = [Client::new(client_config.clone(), false), Client::new(client_config, true)];
    let mut now = Duration::ZERO;
    let mut hex_buf;

    for record in records {
        let input = match record {
            [b'!', b'w', rest @ ..] => Input::Wait(number(rest)),
            [b'!', b'b', rest @ ..] => Input::Binary(rest),
            [b'!', b'h', rest @ ..] => {
                hex_buf = hex(rest);
                match std::str::from_utf8(&hex_buf) {
                    Ok(t) => Input::Text(t),
                    Err(_) => Input::Binary(&hex_buf),
                }
            }
            [b'!', b'x', rest @ ..] => Input::PeerClose(code(rest, 1006)),
            [b'!', b'k', rest @ ..] => Input::Close(code(rest, 1000)),
            [b'!', b'i', rest @ ..] => Input::Invoke(number(rest).unwrap_or(0).min(MAX_WAIT_MS)),
            _ => match std::str::from_utf8(record) {
                Ok(t) => Input::Text(t),
                Err(_) => Input::Binary(record),
            },
        };
        match &input {
            Input::Text(t) => check_decode(t.as_bytes()),
            Input::Binary(b) => check_decode(b),
            _ => {}
        }
        if let Input::Wait(ms) = input {
            match ms {
                Some(ms) => now += Duration::from_millis(ms.min(MAX_WAIT_MS)),
                // To the earliest deadline of any connection (or stay).
                None => {
                    let next = servers
                        .iter()
                        .map(|s| s.conn.poll_timeout())
                        .chain(clients.iter().map(|c| c.conn.poll_timeout()))
                        .flatten()
                        .min();
                    now = now.max(next.unwrap_or(now));
                }
            }
        }
        // A sender may only use the close codes it can send.
        if let Input::Close(c) = input
            && !matches!(c, 1000..=1003 | 1007..=1014 | 3000..=4999)
        {
            continue;
        }
        for s in &mut servers {
            s.apply(now, &input);
        }
        for c in &mut clients {
            c.apply(now, &input);
        }
    }
});
