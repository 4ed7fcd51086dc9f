//! Serving SocketCluster from an HTTP server you already run (feature `http`): it parses the
//! upgrade request and writes the response; we check the request exactly as our own accept loop
//! does (path, handshake middleware, origins, trusted proxies), say what to answer, and serve the
//! connection once it is upgraded — with the raw write path, since the upgraded connection is
//! plain bytes again.
//!
//! `socketcluster::hyper::upgrade` (feature `hyper`) wires this into hyper 1 and axum on tokio;
//! with another HTTP stack (on smol, say), call [`Server::check_upgrade`], send its response and
//! pass whatever `AsyncRead + AsyncWrite` the upgrade leaves to [`Server::serve_upgraded`].

use alloc::boxed::Box;
use alloc::string::String;
use core::future::Future;
use std::net::SocketAddr;

use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::handshake::derive_accept_key;
use async_tungstenite::tungstenite::protocol::Role;
use futures::io::{AsyncRead, AsyncWrite};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};

use super::upgrade::{Refusal, RequestHead, decide};
use super::{Server, driver};
use crate::outbox::{Backend, Tapped};

/// An upgrade request that passed the server's checks ([`Server::check_upgrade`]): answer it with
/// [`response`](Self::response) (101), then hand the upgraded connection to
/// [`Server::serve_upgraded`].
#[derive(Debug)]
pub struct Accepted {
    uri: String,
    remote: Option<SocketAddr>,
    accept_key: HeaderValue,
}

impl Accepted {
    /// The `101 Switching Protocols` response that completes the WebSocket handshake.
    pub fn response(&self) -> Response<String> {
        let mut response = Response::new(String::new());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, self.accept_key.clone());
        response
    }

    /// The client's address: the TCP peer's, or the forwarded one when the peer is one of
    /// [`ServerOptions::trusted_proxies`](super::ServerOptions::trusted_proxies).
    pub fn remote_address(&self) -> Option<SocketAddr> {
        self.remote
    }
}

fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

fn refusal_response(refusal: Refusal) -> Response<String> {
    let mut response = Response::new(refusal.body);
    *response.status_mut() = StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::BAD_REQUEST);
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

impl Server {
    /// Checks an HTTP upgrade request that another HTTP server received: a WebSocket upgrade
    /// (`GET`, `Upgrade: websocket`, version 13, a key) at [`ServerOptions::path`]
    /// (400 otherwise), then the handshake middleware (401) and the origins (403), as
    /// [`accept`](Self::accept) does. `remote_address` is the TCP peer.
    ///
    /// `Err` is the response to send (the refusal is also logged, and a `warning` event for a
    /// middleware or origin refusal); `Ok` says to send [`Accepted::response`] and then call
    /// [`serve_upgraded`](Self::serve_upgraded).
    ///
    /// [`ServerOptions::path`]: super::ServerOptions::path
    ///
    /// The returned future does not borrow `request` (it is `Send` whatever the body type).
    pub fn check_upgrade<B>(
        &self,
        request: &Request<B>,
        remote_address: Option<SocketAddr>,
    ) -> impl Future<Output = Result<Accepted, Response<String>>> + Send + 'static {
        let uri =
            request.uri().path_and_query().map_or_else(|| String::from("/"), |p| String::from(p.as_str()));
        let headers = request.headers();
        let head = RequestHead::new(
            uri,
            headers.iter().filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?))),
        );
        let key = headers.get(header::SEC_WEBSOCKET_KEY).cloned();
        let websocket = request.method() == http::Method::GET
            && has_token(headers, header::UPGRADE, "websocket")
            && has_token(headers, header::CONNECTION, "upgrade")
            && headers.get(header::SEC_WEBSOCKET_VERSION).is_some_and(|v| v.as_bytes() == b"13");
        let shared = self.shared.clone();
        async move {
            let checked = match key {
                Some(key) if websocket && head.path == shared.options.path => {
                    decide(&shared, &head, remote_address).await.map(|remote| (key, remote))
                }
                _ => Err(Refusal::new(
                    400,
                    "Bad Request",
                    alloc::format!("Bad Request: a WebSocket upgrade to {} is expected", shared.options.path),
                )),
            };
            match checked {
                Ok((key, remote)) => {
                    let accept_key = HeaderValue::from_str(&derive_accept_key(key.as_bytes()))
                        .unwrap_or_else(|_| HeaderValue::from_static(""));
                    Ok(Accepted { uri: head.uri, remote, accept_key })
                }
                Err(refusal) => {
                    shared.upgrade_refused(refusal.status, &head.uri, remote_address);
                    Err(refusal_response(refusal))
                }
            }
        }
    }

    /// Serves a connection that an HTTP server upgraded after answering with
    /// [`Accepted::response`], until it closes: `io` carries WebSocket frames from its first
    /// byte. Our frames are written to it directly (no WebSocket sink in between).
    pub async fn serve_upgraded<S>(&self, io: S, accepted: Accepted)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (read, write) = futures::io::AsyncReadExt::split(io);
        let wiring = driver::Wiring::new(&self.shared, Backend::Raw(Box::pin(write)));
        let tapped = Tapped::new(read, &wiring.out);
        let ws = WebSocketStream::from_raw_socket(tapped, Role::Server, Some(self.websocket_config())).await;
        driver::run(self.shared.clone(), ws, wiring, accepted.remote, accepted.uri).await;
    }
}
