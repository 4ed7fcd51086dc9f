//! SocketCluster mounted in another HTTP server: in axum and in plain hyper 1 on tokio
//! (`socketcluster::hyper::upgrade`), and the generic way on smol — `Server::check_upgrade` and
//! `Server::serve_upgraded` behind a hand-written HTTP/1 server. The application's routes and the
//! SocketCluster endpoint share one port; the server's path, middleware and origin rules answer
//! with HTTP statuses; a bad request never disturbs other sockets. The official JS client runs
//! against `examples/axum`.
#![cfg(all(feature = "hyper", feature = "smol"))]
#![allow(clippy::unwrap_used)]

#[path = "support/peers.rs"]
mod peers;
#[allow(unused_macros)]
#[path = "support/raw.rs"]
mod raw;
#[path = "support/util.rs"]
mod util;

use std::convert::Infallible;
use std::net::SocketAddr;

use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::routing::get;
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use serde_json::json;
use socketcluster::client::ClientOptions;
use socketcluster::protocol::RemoteError;
use socketcluster::server::{Blocked, HandshakeAction, Middleware, Server, ServerOptions};

use raw::{Harness, Raw, Rt, http, http_upgrade};
use util::{LIMIT, within};

/// Where the server is mounted.
#[derive(Clone, Copy, Debug)]
enum Mount {
    /// An axum `Router`: `/api/hello`, `/socketcluster/`, and the endpoint wrongly routed at `/wrong/`.
    Axum,
    /// A hyper 1 `service_fn`: `/api/hello`, everything else to the endpoint.
    Hyper,
    /// A hand-written HTTP/1 server on smol: `/api/hello`, everything else to the endpoint.
    Smol,
}

impl Mount {
    fn rt(self) -> Rt {
        match self {
            Mount::Axum | Mount::Hyper => Rt::Tokio,
            Mount::Smol => Rt::Smol,
        }
    }

    /// Starts the HTTP server with `server` mounted; returns its address.
    async fn start(self, server: &Server) -> SocketAddr {
        match self {
            Mount::Axum => axum_app(server.clone()).await,
            Mount::Hyper => hyper_app(server.clone()).await,
            Mount::Smol => smol_app(server.clone()).await,
        }
    }
}

async fn endpoint(
    State(server): State<Server>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: axum::extract::Request,
) -> http::Response<String> {
    socketcluster::hyper::upgrade(&server, request, Some(peer)).await
}

async fn axum_app(server: Server) -> SocketAddr {
    let app = Router::new()
        .route("/api/hello", get(|| async { "hello" }))
        .route("/socketcluster/", get(endpoint))
        .route("/wrong/", get(endpoint))
        .with_state(server);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await
    });
    addr
}

async fn hyper_app(server: Server) -> SocketAddr {
    use hyper::body::Incoming;
    use hyper::service::service_fn;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, peer)) = listener.accept().await {
            let server = server.clone();
            let service = service_fn(move |request: http::Request<Incoming>| {
                let server = server.clone();
                async move {
                    Ok::<_, Infallible>(if request.uri().path() == "/api/hello" {
                        http::Response::new(String::from("hello"))
                    } else {
                        socketcluster::hyper::upgrade(&server, request, Some(peer)).await
                    })
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                    .with_upgrades(),
            );
        }
    });
    addr
}

async fn smol_app(server: Server) -> SocketAddr {
    let listener = smol::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    smol::spawn(async move {
        while let Ok((tcp, peer)) = listener.accept().await {
            smol::spawn(smol_connection(server.clone(), tcp, peer)).detach();
        }
    })
    .detach();
    addr
}

/// One connection of the hand-written server: read the request head (a WebSocket client sends
/// nothing more before the 101), answer `/api/hello` itself, pass the rest to SocketCluster.
async fn smol_connection(server: Server, mut tcp: smol::net::TcpStream, peer: SocketAddr) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 16 * 1024 || !matches!(tcp.read(&mut byte).await, Ok(1)) {
            return;
        }
        head.push(byte[0]);
    }
    let Some(request) = parse_request(&head) else { return };
    if request.uri().path() == "/api/hello" {
        let _ = write_response(&mut tcp, http::Response::new(String::from("hello"))).await;
        return;
    }
    match server.check_upgrade(&request, Some(peer)).await {
        Ok(accepted) => {
            if write_response(&mut tcp, accepted.response()).await.is_ok() {
                server.serve_upgraded(tcp, accepted).await;
            }
        }
        Err(refusal) => {
            let _ = write_response(&mut tcp, refusal).await;
        }
    }
}

fn parse_request(head: &[u8]) -> Option<http::Request<()>> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let mut request = http::Request::builder().method(first.next()?).uri(first.next()?);
    for (name, value) in lines.filter_map(|l| l.split_once(':')) {
        request = request.header(name.trim(), value.trim());
    }
    request.body(()).ok()
}

async fn write_response(
    tcp: &mut smol::net::TcpStream,
    response: http::Response<String>,
) -> std::io::Result<()> {
    let mut out = format!("HTTP/1.1 {}\r\n", response.status());
    for (name, value) in response.headers() {
        out.push_str(&format!("{name}: {}\r\n", value.to_str().unwrap_or_default()));
    }
    if response.status() != http::StatusCode::SWITCHING_PROTOCOLS {
        out.push_str(&format!("content-length: {}\r\n", response.body().len()));
    }
    out.push_str("\r\n");
    out.push_str(response.body());
    tcp.write_all(out.as_bytes()).await?;
    tcp.flush().await
}

fn on(mount: Mount, scenario: fn(Mount) -> futures::future::BoxFuture<'static, ()>) {
    match mount.rt() {
        Rt::Smol => raw::on_smol(|_| scenario(mount)),
        Rt::Tokio => raw::on_tokio(|_| scenario(mount)),
    }
}

/// The application's route and SocketCluster on one port: a raw client and our client (on the
/// mount's runtime) handshake, invoke, subscribe and receive a publish.
fn next_to_the_applications_routes(mount: Mount) -> futures::future::BoxFuture<'static, ()> {
    Box::pin(async move {
        let rt = mount.rt();
        let server = Server::new(ServerOptions::default(), rt.runtime());
        let addr = mount.start(&server).await;
        let mut h = Harness::attach(rt, server, addr);
        let hello = http(addr, &format!("GET /api/hello HTTP/1.1\r\nHost: {addr}\r\n\r\n")).await;
        assert_eq!((hello.status, hello.body.as_str()), (200, "hello"), "{hello:?}");

        let (mut raw, id) = Raw::open(addr).await;
        raw.echo(2, json!({"via": format!("{mount:?}")})).await;
        assert_eq!(h.conn(&id).await.socket.remote_address(), Some(raw.local_addr()));

        let client = rt.client(ClientOptions::new(h.url()));
        let echoed = within(LIMIT, "invoke through the mount", client.invoke("echo", json!([1, 2]))).await;
        assert_eq!(echoed.unwrap(), json!([1, 2]));
        let mut channel = client.subscribe("mounted", Default::default());
        within(LIMIT, "subscribe", channel.listener("subscribe").next()).await.unwrap();
        within(LIMIT, "publish", client.invoke_publish("mounted", "hi")).await.unwrap();
        assert_eq!(
            within(LIMIT, "the publication", channel.consumer().next()).await,
            Some(Some(json!("hi")))
        );
        client.disconnect(1000, "");
    })
}

/// A wrong path, a request that is no upgrade, a refusing middleware and a foreign origin get
/// 400, 400, 401 and 403 (the last two also a `warning`); a socket already open goes on.
fn refusals_are_http_statuses(mount: Mount) -> futures::future::BoxFuture<'static, ()> {
    Box::pin(async move {
        let rt = mount.rt();
        let middleware = Middleware::new().handshake(|action| async move {
            match action {
                HandshakeAction::Ws { request_uri, .. } if request_uri.contains("reject") => {
                    Err(Blocked::with(RemoteError::new("MountRuleError", "rejected by the rule")))
                }
                _ => Ok(()),
            }
        });
        let options = ServerOptions {
            origins: Some(vec![String::from("app.example:*")]),
            middleware,
            ..Default::default()
        };
        let server = Server::new(options, rt.runtime());
        let addr = mount.start(&server).await;
        let h = Harness::attach(rt, server, addr);
        let (mut open, _) = Raw::open(addr).await;

        let wrong = http_upgrade(addr, "/wrong/", None).await;
        assert_eq!(wrong.status, 400, "{wrong:?}");
        assert!(wrong.body.contains("/socketcluster/"), "says where the endpoint is: {wrong:?}");
        let plain =
            http(addr, &format!("GET /socketcluster/ HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"))
                .await;
        assert_eq!(plain.status, 400, "{plain:?}");
        let rejected = http_upgrade(addr, "/socketcluster/?reject=1", None).await;
        assert_eq!(rejected.status, 401, "{rejected:?}");
        let (error, _) =
            h.warning_where("the middleware's warning", |(e, _)| e.name() == "MountRuleError").await;
        assert_eq!(error.message(), "rejected by the rule");
        let foreign = http_upgrade(addr, "/socketcluster/", Some("http://evil.example")).await;
        assert_eq!(foreign.status, 403, "{foreign:?}");
        assert!(foreign.body.contains("Invalid origin: http://evil.example"), "{foreign:?}");
        let allowed = Raw::connect_with_origin(addr, Some("https://app.example")).await;
        drop(allowed);

        util::within(LIMIT, "the open socket after the refusals", open.echo(2, json!("still here"))).await;
    })
}

#[test]
fn axum_next_to_the_applications_routes() {
    on(Mount::Axum, next_to_the_applications_routes);
}

#[test]
fn hyper_next_to_the_applications_routes() {
    on(Mount::Hyper, next_to_the_applications_routes);
}

#[test]
fn smol_by_hand_next_to_the_applications_routes() {
    on(Mount::Smol, next_to_the_applications_routes);
}

#[test]
fn axum_refusals_are_http_statuses() {
    on(Mount::Axum, refusals_are_http_statuses);
}

#[test]
fn hyper_refusals_are_http_statuses() {
    on(Mount::Hyper, refusals_are_http_statuses);
}

#[test]
fn smol_by_hand_refusals_are_http_statuses() {
    on(Mount::Smol, refusals_are_http_statuses);
}

/// The official socketcluster-client (Node) against `examples/axum`, which also answers its own
/// route on the same port.
#[test]
fn official_js_client_against_the_axum_example() {
    peers::ensure_npm();
    let peer = peers::Peer::start(&peers::example_bin("axum"), &["--port", "0"]);
    let addr: SocketAddr = peer.addr.parse().unwrap();
    let hello = smol::block_on(http(addr, &format!("GET /api/hello HTTP/1.1\r\nHost: {addr}\r\n\r\n")));
    assert_eq!((hello.status, hello.body.as_str()), (200, "hello from axum\n"));
    let out = std::process::Command::new("timeout")
        .args(["60", "node"])
        .arg(peers::interop_dir().join("echo-client.mjs"))
        .arg(peer.url())
        .arg("-")
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("\"ok\":true"),
        "the JS client through axum: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
