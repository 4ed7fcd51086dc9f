//! HTTP/1.1 on the server's one port: the SocketCluster upgrade at its path, `/health`,
//! `/metrics` and static files everywhere else. Requests are parsed by `httparse`; keep-alive,
//! `GET` and `HEAD` only (no request bodies), a 16 KiB head limit and a 30 s idle timeout.
//!
//! The upgrade goes through [`Server::check_upgrade`] (path, middleware, origins, proxies) and
//! [`Server::serve_upgraded`]; any bytes the client sent after the request head are handed on
//! with the connection.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use socketcluster::server::Server;

use crate::files::{Files, Miss};
use crate::metrics::{self, BrokerProbe};

/// Longest request head accepted (431 beyond).
const MAX_HEAD: usize = 16 * 1024;
/// A keep-alive connection that sends nothing for this long is closed.
const IDLE: Duration = Duration::from_secs(30);

/// What every connection serves.
pub(crate) struct App {
    pub(crate) server: Server,
    pub(crate) files: Files,
    pub(crate) broker: BrokerProbe,
    /// Set on SIGTERM: `/health` answers 503.
    pub(crate) stopping: AtomicBool,
}

/// A response to write.
struct Reply {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
    /// Close the connection after it.
    close: bool,
}

impl Reply {
    fn text(status: u16, body: &str) -> Reply {
        Reply {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.as_bytes().to_vec(),
            close: false,
        }
    }
}

/// Serves one accepted connection (plain, or TLS already done) until it closes.
pub(crate) async fn connection<S>(app: Arc<App>, mut io: S, peer: std::net::SocketAddr)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut buf = Vec::with_capacity(2048);
    loop {
        let (request, head_len) = match read_head(&mut io, &mut buf).await {
            Ok(Some(parsed)) => parsed,
            Ok(None) => return, // closed or idle between requests
            Err(status) => {
                let reply = Reply { close: true, ..Reply::text(status, reason(status)) };
                let _ = write(&mut io, reply, false).await;
                return;
            }
        };
        buf.drain(..head_len);
        let path = request.uri().path();
        if path == app.server.options().path {
            match app.server.check_upgrade(&request, Some(peer)).await {
                Ok(accepted) => {
                    let mut head = String::from("HTTP/1.1 101 Switching Protocols\r\n");
                    for (name, value) in accepted.response().headers() {
                        head.push_str(&format!("{name}: {}\r\n", value.to_str().unwrap_or_default()));
                    }
                    head.push_str("\r\n");
                    if io.write_all(head.as_bytes()).await.is_ok() && io.flush().await.is_ok() {
                        let io = Prefixed { prefix: std::mem::take(&mut buf), at: 0, inner: io };
                        app.server.serve_upgraded(io, accepted).await;
                    }
                }
                Err(refusal) => {
                    let reply = Reply {
                        close: true,
                        ..Reply::text(refusal.status().as_u16(), refusal.body().as_str())
                    };
                    let _ = write(&mut io, reply, false).await;
                }
            }
            return;
        }
        let head_only = request.method() == http::Method::HEAD;
        let has_body = request.headers().contains_key(http::header::TRANSFER_ENCODING)
            || request
                .headers()
                .get(http::header::CONTENT_LENGTH)
                .is_some_and(|v| v.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok()) != Some(0));
        let mut reply = if !matches!(*request.method(), http::Method::GET | http::Method::HEAD) {
            Reply { close: true, ..Reply::text(405, "Method Not Allowed: GET or HEAD") }
        } else {
            route(&app, path)
        };
        let wants_close = request.version() == http::Version::HTTP_10
            || request
                .headers()
                .get(http::header::CONNECTION)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        // A body we do not read would be taken for the next request: close after answering.
        reply.close |= wants_close || has_body;
        let close = reply.close;
        if write(&mut io, reply, head_only).await.is_err() || close {
            return;
        }
    }
}

fn route(app: &App, path: &str) -> Reply {
    match path {
        "/health" => {
            let (status, body) =
                metrics::health(&app.server, &(app.broker)(), app.stopping.load(Ordering::Relaxed));
            Reply { status, content_type: "application/json", body: body.into_bytes(), close: false }
        }
        "/metrics" => Reply {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: metrics::prometheus(&app.server.stats(), &(app.broker)()).into_bytes(),
            close: false,
        },
        _ => match app.files.get(path) {
            Ok(file) => Reply {
                status: 200,
                content_type: file.content_type,
                body: file.body.into_owned(),
                close: false,
            },
            Err(Miss::NotFound) => Reply::text(404, "Not Found"),
            Err(Miss::Forbidden) => Reply::text(403, "Forbidden"),
        },
    }
}

/// Reads until `buf` holds a whole request head: the request and the head's length. `Ok(None)`:
/// the peer closed (or idled) before sending one; `Err`: the status to answer.
async fn read_head<S>(io: &mut S, buf: &mut Vec<u8>) -> Result<Option<(http::Request<()>, usize)>, u16>
where
    S: AsyncRead + Unpin,
{
    loop {
        if !buf.is_empty() {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut parsed = httparse::Request::new(&mut headers);
            match parsed.parse(buf) {
                Ok(httparse::Status::Complete(len)) => return to_request(&parsed).map(|r| Some((r, len))),
                Ok(httparse::Status::Partial) => {}
                Err(httparse::Error::TooManyHeaders) => return Err(431),
                Err(_) => return Err(400),
            }
            if buf.len() >= MAX_HEAD {
                return Err(431);
            }
        }
        let mut chunk = [0u8; 4096];
        let read = futures::future::select(
            io.read(&mut chunk),
            Box::pin(async {
                smol::Timer::after(IDLE).await;
            }),
        )
        .await;
        match read {
            futures::future::Either::Left((Ok(n), _)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            // End of input, an error or the idle timeout: mid-head is a bad request, between
            // requests a normal end.
            _ if buf.is_empty() => return Ok(None),
            _ => return Err(400),
        }
    }
}

fn to_request(parsed: &httparse::Request<'_, '_>) -> Result<http::Request<()>, u16> {
    let version = if parsed.version == Some(0) { http::Version::HTTP_10 } else { http::Version::HTTP_11 };
    let mut builder = http::Request::builder()
        .method(parsed.method.unwrap_or("GET"))
        .uri(parsed.path.unwrap_or("/"))
        .version(version);
    for h in parsed.headers.iter() {
        builder = builder.header(h.name, h.value);
    }
    builder.body(()).map_err(|_| 400)
}

async fn write<S>(io: &mut S, reply: Reply, head_only: bool) -> std::io::Result<()>
where
    S: AsyncWrite + Unpin,
{
    let mut out = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: {}\r\ncontent-length: {}\r\ncache-control: no-cache\r\nx-content-type-options: nosniff\r\n",
        reply.status,
        reason(reply.status),
        reply.content_type,
        reply.body.len()
    )
    .into_bytes();
    if reply.close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head_only {
        out.extend_from_slice(&reply.body);
    }
    io.write_all(&out).await?;
    io.flush().await
}

fn reason(status: u16) -> &'static str {
    http::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("")
}

/// The upgraded connection: first the bytes that arrived with the request head, then the rest.
struct Prefixed<S> {
    prefix: Vec<u8>,
    at: usize,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        if this.at < this.prefix.len() {
            let n = out.len().min(this.prefix.len() - this.at);
            out[..n].copy_from_slice(&this.prefix[this.at..this.at + n]);
            this.at += n;
            return Poll::Ready(Ok(n));
        }
        Pin::new(&mut this.inner).poll_read(cx, out)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
}
