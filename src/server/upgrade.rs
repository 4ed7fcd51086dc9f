//! The HTTP side of a new connection: read the upgrade request, check the path, the origin and
//! the handshake middleware (all async), answer 400/403/401 or hand the connection to the
//! WebSocket library with the request bytes replayed.

use alloc::string::String;
use alloc::vec::Vec;
use core::pin::Pin;
use core::task::{Context, Poll};
use std::io;
use std::net::SocketAddr;

use futures::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::ServerShared;
use super::middleware::HandshakeAction;

/// Upgrade requests larger than this are refused (HTTP 431).
const MAX_REQUEST: usize = 16 * 1024;

/// The facts of an upgrade request the server looks at.
pub(crate) struct RequestHead {
    pub(crate) uri: String,
    pub(crate) path: String,
    pub(crate) origin: Option<String>,
    /// The hops of `Forwarded` (its `for=` values) or else of `X-Forwarded-For`, nearest last.
    pub(crate) hops: Vec<String>,
}

/// A stream whose first bytes were already read: they are read again first.
pub(crate) struct Replay<S> {
    head: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Replay<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        if self.pos < self.head.len() {
            let n = buf.len().min(self.head.len() - self.pos);
            buf[..n].copy_from_slice(&self.head[self.pos..self.pos + n]);
            self.pos += n;
            if self.pos == self.head.len() {
                self.head = Vec::new(); // give the memory back
                self.pos = 0;
            }
            return Poll::Ready(Ok(n));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Replay<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

impl RequestHead {
    /// The facts from a request target (path and query) and its header fields.
    pub(crate) fn new<'a>(uri: String, headers: impl Iterator<Item = (&'a str, &'a str)>) -> Self {
        let path = String::from(uri.split('?').next().unwrap_or_default());
        let (mut origin, mut forwarded, mut x_forwarded) = (None, Vec::new(), Vec::new());
        for (name, value) in headers {
            let (name, value) = (name.trim(), value.trim());
            if name.eq_ignore_ascii_case("origin") {
                origin.get_or_insert_with(|| String::from(value));
            } else if name.eq_ignore_ascii_case("forwarded") {
                forwarded.extend(super::proxy::forwarded_for(value).map(String::from));
            } else if name.eq_ignore_ascii_case("x-forwarded-for") {
                x_forwarded.extend(value.split(',').map(|h| String::from(h.trim())));
            }
        }
        let hops = if forwarded.is_empty() { x_forwarded } else { forwarded };
        Self { uri, path, origin, hops }
    }
}

fn parse_head(bytes: &[u8]) -> Option<RequestHead> {
    let text = core::str::from_utf8(bytes).ok()?;
    let mut lines = text.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let _method = request_line.next()?;
    let uri = String::from(request_line.next()?);
    Some(RequestHead::new(uri, lines.filter_map(|line| line.split_once(':'))))
}

async fn respond<S: AsyncWrite + Unpin>(stream: &mut S, status: &str, body: &str) {
    let response = alloc::format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.flush().await;
    let _ = stream.close().await;
}

/// Whether `origin` passes SocketCluster's `origins` check: each allowed entry is `host:port`
/// with `*` for either part; a missing or `null` origin is allowed.
pub(crate) fn origin_allowed(allowed: &[String], origin: Option<&str>) -> bool {
    let Some(origin) = origin.filter(|o| *o != "null") else { return true };
    let (scheme, rest) = origin.split_once("://").unwrap_or(("http", origin));
    let host_port = rest.split('/').next().unwrap_or_default();
    let (host, port) = match host_port.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || host_port.starts_with('[') => (h, String::from(p)),
        _ => (host_port, String::from(if scheme == "https" || scheme == "wss" { "443" } else { "80" })),
    };
    allowed.iter().any(|a| {
        let (ah, ap) = a.rsplit_once(':').unwrap_or((a.as_str(), "*"));
        (ah == "*" || ah == host) && (ap == "*" || ap == port)
    })
}

/// Reads and checks the upgrade request. `Ok` hands back the stream (replaying the request), its
/// path and query, and the client's address (the TCP peer's, or the forwarded one when the peer
/// is a trusted proxy); `Err` means the connection was answered and closed.
pub(crate) async fn check<S>(
    server: &ServerShared,
    mut stream: S,
    remote: Option<SocketAddr>,
) -> Result<(Replay<S>, String, Option<SocketAddr>), ()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
        if head.len() > MAX_REQUEST {
            respond(&mut stream, "431 Request Header Fields Too Large", "").await;
            return Err(());
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return Err(()),
            Ok(n) => head.extend_from_slice(&chunk[..n]),
        }
    }
    let Some(req) = parse_head(&head) else {
        respond(&mut stream, "400 Bad Request", "Bad Request").await;
        return Err(());
    };
    match decide(server, &req, remote).await {
        Ok(remote) => Ok((Replay { head, pos: 0, inner: stream }, req.uri, remote)),
        Err(refusal) => {
            server.upgrade_refused(refusal.status, &req.uri, remote);
            respond(&mut stream, &alloc::format!("{} {}", refusal.status, refusal.reason), &refusal.body)
                .await;
            Err(())
        }
    }
}

/// Why an upgrade request was refused: the HTTP status line and body to answer with.
pub(crate) struct Refusal {
    pub(crate) status: u16,
    pub(crate) reason: &'static str,
    pub(crate) body: String,
}

impl Refusal {
    pub(crate) fn new(status: u16, reason: &'static str, body: impl Into<String>) -> Self {
        Self { status, reason, body: body.into() }
    }
}

/// The checks every upgrade request passes, however it arrived (our accept loop or a mounting
/// HTTP server): the path, the handshake middleware, then the origin (SocketCluster's order).
/// `Ok` carries the client's address (the TCP peer's, or the forwarded one when the peer is a
/// trusted proxy).
pub(crate) async fn decide(
    server: &ServerShared,
    req: &RequestHead,
    remote: Option<SocketAddr>,
) -> Result<Option<SocketAddr>, Refusal> {
    if req.path != server.options.path {
        return Err(Refusal::new(400, "Bad Request", "Bad Request"));
    }
    let hops: Vec<&str> = req.hops.iter().map(String::as_str).collect();
    let remote = super::proxy::client_address(remote, &hops, &server.options.trusted_proxies);
    let middleware = server.middleware.lock().clone();
    if let Some(mw) = &middleware.handshake {
        let action = HandshakeAction::Ws {
            request_uri: req.uri.clone(),
            origin: req.origin.clone(),
            remote_address: remote,
        };
        if let Err(blocked) = mw(action).await {
            let e = blocked.client_error("handshake", "handshakeWS");
            server.emit(
                "warning",
                super::ServerEvent::Warning {
                    error: blocked.error.clone().unwrap_or_else(|| e.clone()),
                    socket: None,
                },
            );
            return Err(Refusal::new(401, "Unauthorized", e.message()));
        }
    }
    if let Some(allowed) = &server.options.origins
        && !origin_allowed(allowed, req.origin.as_deref())
    {
        let message = alloc::format!(
            "Failed to authorize socket handshake - Invalid origin: {}",
            req.origin.as_deref().unwrap_or_default()
        );
        server.emit(
            "warning",
            super::ServerEvent::Warning {
                error: crate::protocol::RemoteError::new("ServerProtocolError", message.as_str()),
                socket: None,
            },
        );
        return Err(Refusal::new(403, "Forbidden", message));
    }
    Ok(remote)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        let allowed = [String::from("example.com:*"), String::from("*:8080")];
        assert!(origin_allowed(&allowed, None));
        assert!(origin_allowed(&allowed, Some("null")));
        assert!(origin_allowed(&allowed, Some("https://example.com")));
        assert!(origin_allowed(&allowed, Some("http://other.org:8080")));
        assert!(!origin_allowed(&allowed, Some("http://other.org")));
        assert!(origin_allowed(&[String::from("*:*")], Some("http://x.y:1")));
    }

    #[test]
    fn heads() {
        let h = parse_head(b"GET /socketcluster/?a=1 HTTP/1.1\r\nHost: x\r\norigin: http://a.b\r\n\r\n")
            .expect("parses");
        assert_eq!(h.path, "/socketcluster/");
        assert_eq!(h.uri, "/socketcluster/?a=1");
        assert_eq!(h.origin.as_deref(), Some("http://a.b"));
    }
}
