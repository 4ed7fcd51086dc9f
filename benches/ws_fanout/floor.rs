//! `floor`: the least work any server must do for the benchmark's workload, as a reference row.
//!
//! It runs as a child process of the bench (`ws_fanout --floor-server`), pinned like the others,
//! and speaks just enough SocketCluster for the load generator: the HTTP upgrade (the generator's
//! fixed key only), `#handshake` and `#subscribe` answered with canned responses, `#publish`
//! turned into the outgoing `#publish` frame by byte surgery (no JSON parser, no WebSocket
//! library) and written with one `send` per subscriber straight from the publisher's read loop
//! (queued only when a socket is full). No pings, no auth, no checks. One thread, no locks.
//!
//! What is left — a system call per subscriber and the kernel's TCP work, which on loopback
//! includes the receiving side's — is what no server can avoid; the gap between this row and ours
//! is what our server adds.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use tokio::net::{TcpListener, TcpStream};

use crate::client::find;

/// A subscriber's connection: bytes that did not fit in its socket wait here for its flusher.
struct Conn {
    stream: TcpStream,
    pending: RefCell<Vec<u8>>,
    wake: tokio::sync::Notify,
}

type Channels = Rc<RefCell<HashMap<Vec<u8>, Vec<Rc<Conn>>>>>;

/// The `Sec-WebSocket-Accept` of the generator's fixed key (RFC 6455's example).
const KEY: &str = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// Serves until killed; prints `{"listening":"ADDR"}` first, like the other servers.
pub(crate) fn serve() -> ! {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        println!("{{\"listening\":\"{}\"}}", listener.local_addr().expect("local address"));
        let channels: Channels = Rc::default();
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            tokio::task::spawn_local(connection(stream, channels.clone()));
        }
    });
    std::process::exit(0)
}

fn frame_header(out: &mut Vec<u8>, len: usize) {
    out.push(0x81);
    if len < 126 {
        out.push(len as u8);
    } else if len <= 0xffff {
        out.push(126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
}

fn text_frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 10);
    frame_header(&mut out, payload.len());
    out.extend_from_slice(payload);
    out
}

/// Sends `bytes` now if the socket takes them, else queues them for the connection's flusher.
fn send(conn: &Conn, bytes: &[u8]) {
    let mut pending = conn.pending.borrow_mut();
    if !pending.is_empty() {
        pending.extend_from_slice(bytes);
        return;
    }
    let n = match conn.stream.try_write(bytes) {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
        Err(_) => return,
    };
    if n < bytes.len() {
        pending.extend_from_slice(&bytes[n..]);
        conn.wake.notify_one();
    }
}

async fn flusher(conn: Rc<Conn>) {
    loop {
        conn.wake.notified().await;
        loop {
            let chunk = std::mem::take(&mut *conn.pending.borrow_mut());
            if chunk.is_empty() {
                break;
            }
            let mut done = 0;
            while done < chunk.len() {
                match conn.stream.try_write(&chunk[done..]) {
                    Ok(n) => done += n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        if conn.stream.writable().await.is_err() {
                            return;
                        }
                    }
                    Err(_) => return,
                }
            }
        }
    }
}

/// The request's `cid`, when it ends with one.
fn cid(msg: &[u8]) -> Option<&[u8]> {
    let at = rfind(msg, b",\"cid\":")?;
    Some(&msg[at + 7..msg.len() - 1])
}

fn rfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
}

async fn connection(stream: TcpStream, channels: Channels) {
    let mut buf = vec![0u8; 4096];
    let mut end = 0;
    // Upgrade.
    loop {
        let Ok(()) = stream.readable().await else { return };
        match stream.try_read(&mut buf[end..]) {
            Ok(0) => return,
            Ok(n) => end += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => return,
        }
        if let Some(i) = find(&buf[..end], b"\r\n\r\n") {
            if find(&buf[..i], KEY.as_bytes()).is_none() {
                return;
            }
            buf.copy_within(i + 4..end, 0);
            end -= i + 4;
            break;
        }
        if end == buf.len() {
            return;
        }
    }
    let conn = Rc::new(Conn { stream, pending: RefCell::default(), wake: tokio::sync::Notify::new() });
    tokio::task::spawn_local(flusher(conn.clone()));
    send(
        &conn,
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {ACCEPT}\r\n\r\n"
        )
        .as_bytes(),
    );
    let mut out = Vec::new();
    loop {
        // Every complete (masked, unfragmented) frame in the buffer.
        let mut start = 0;
        let mut need = 0;
        loop {
            let avail = &buf[start..end];
            if avail.len() < 6 {
                break;
            }
            let (hdr, len) = match avail[1] & 0x7f {
                126 if avail.len() >= 8 => (4, u16::from_be_bytes([avail[2], avail[3]]) as usize),
                127 if avail.len() >= 14 => {
                    let mut n = [0u8; 8];
                    n.copy_from_slice(&avail[2..10]);
                    (10, u64::from_be_bytes(n) as usize)
                }
                126 | 127 => break,
                n => (2, n as usize),
            };
            if avail.len() < hdr + 4 + len {
                need = hdr + 4 + len;
                break;
            }
            let op = avail[0] & 0x0f;
            let mut mask = [0u8; 4];
            mask.copy_from_slice(&avail[hdr..hdr + 4]);
            let a = start + hdr + 4;
            for (i, b) in buf[a..a + len].iter_mut().enumerate() {
                *b ^= mask[i & 3];
            }
            start = a + len;
            if op == 8 {
                return;
            }
            if op == 1 {
                handle(&conn, &channels, &buf[a..a + len], &mut out);
            }
        }
        buf.copy_within(start..end, 0);
        end -= start;
        if need > buf.len() {
            buf.resize(need.next_power_of_two(), 0);
        }
        let Ok(()) = conn.stream.readable().await else { return };
        match conn.stream.try_read(&mut buf[end..]) {
            Ok(0) => return,
            Ok(n) => end += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}

/// One SocketCluster message from a client.
fn handle(conn: &Rc<Conn>, channels: &Channels, msg: &[u8], out: &mut Vec<u8>) {
    const PUBLISH: &[u8] = b"{\"event\":\"#publish\",\"data\":";
    if msg.starts_with(PUBLISH) {
        // The outgoing frame is the incoming one without its cid.
        let body_end = rfind(msg, b",\"cid\":").unwrap_or(msg.len() - 1);
        let body = &msg[PUBLISH.len()..body_end];
        let Some(c) = find(body, b"\"channel\":\"") else { return };
        let name = &body[c + 11..];
        let Some(q) = name.iter().position(|&b| b == b'"') else { return };
        out.clear();
        frame_header(out, PUBLISH.len() + body.len() + 1);
        out.extend_from_slice(PUBLISH);
        out.extend_from_slice(body);
        out.push(b'}');
        if let Some(subs) = channels.borrow().get(&name[..q]) {
            for s in subs {
                send(s, out);
            }
        }
        if let Some(cid) = cid(msg) {
            send(conn, &text_frame(format!("{{\"rid\":{}}}", String::from_utf8_lossy(cid)).as_bytes()));
        }
    } else if msg.starts_with(b"{\"event\":\"#subscribe\"") {
        let Some(c) = find(msg, b"\"channel\":\"") else { return };
        let name = &msg[c + 11..];
        let Some(q) = name.iter().position(|&b| b == b'"') else { return };
        channels.borrow_mut().entry(name[..q].to_vec()).or_default().push(conn.clone());
        if let Some(cid) = cid(msg) {
            send(conn, &text_frame(format!("{{\"rid\":{}}}", String::from_utf8_lossy(cid)).as_bytes()));
        }
    } else if msg.starts_with(b"{\"event\":\"#handshake\"")
        && let Some(cid) = cid(msg)
    {
        let reply = format!(
            "{{\"rid\":{},\"data\":{{\"id\":\"floor\",\"pingTimeout\":20000,\"isAuthenticated\":false}}}}",
            String::from_utf8_lossy(cid)
        );
        send(conn, &text_frame(reply.as_bytes()));
    }
}
