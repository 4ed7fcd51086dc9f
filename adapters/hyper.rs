//! Mounting SocketCluster in hyper 1 or axum on tokio (feature `hyper`): [`upgrade`] answers an
//! upgrade request the application routed to it and serves the connection once hyper has
//! upgraded it. Everything else on the port stays the application's.
//!
//! ```no_run
//! # #[cfg(feature = "tokio")]
//! # async fn f(server: socketcluster::server::Server, request: http::Request<hyper::body::Incoming>,
//! #            peer: std::net::SocketAddr) -> http::Response<String> {
//! // In a hyper `service_fn` (or an axum handler), for the SocketCluster path:
//! socketcluster::hyper::upgrade(&server, request, Some(peer)).await
//! # }
//! ```

use alloc::string::String;
use std::net::SocketAddr;

use async_tungstenite::tokio::TokioAdapter;
use http::{Request, Response};
use hyper_util::rt::TokioIo;

use crate::protocol::RemoteError;
use crate::server::{Server, ServerEvent};

/// Answers `request`, a WebSocket upgrade for `server`, which hyper (or axum) routed here:
/// `101 Switching Protocols` when it passes the server's checks ([`Server::check_upgrade`]:
/// path, handshake middleware, origins), then the upgraded connection is served on a tokio task;
/// otherwise the refusal (400, 401, 403). `remote_address` is the TCP peer (axum's
/// `ConnectInfo`), which trusted proxies may refine.
///
/// The connection must come from a hyper connection served `with_upgrades()` (axum's `serve`
/// does that); when hyper cannot upgrade it, a `warning` event (`UpgradeError`) says so.
pub async fn upgrade<B>(
    server: &Server,
    mut request: Request<B>,
    remote_address: Option<SocketAddr>,
) -> Response<String> {
    let check = server.check_upgrade(&request, remote_address);
    let on_upgrade = hyper::upgrade::on(&mut request);
    drop(request);
    let accepted = match check.await {
        Ok(accepted) => accepted,
        Err(refusal) => return refusal,
    };
    let response = accepted.response();
    let server = server.clone();
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => server.serve_upgraded(TokioAdapter::new(TokioIo::new(upgraded)), accepted).await,
            Err(e) => {
                let error = RemoteError::new("UpgradeError", alloc::format!("HTTP upgrade failed: {e}"));
                server.shared.emit("warning", ServerEvent::Warning { error, socket: None });
            }
        }
    });
    response
}
