//! SocketCluster mounted in an axum application: `/api/hello` and `/socketcluster/` on one port.
//!
//! ```sh
//! cargo run --example axum --features hyper -- --port 8000
//! ```
//!
//! Prints `{"listening":"HOST:PORT"}` when ready. The `echo` procedure answers with its data;
//! publishes work as on any SocketCluster server. `RUST_LOG=socketcluster=debug` logs.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::routing::get;
use futures::StreamExt;
use socketcluster::server::{Server, ServerOptions};

/// The SocketCluster endpoint: the upgrade checks (path, middleware, origins) and the socket.
async fn socketcluster_endpoint(
    State(server): State<Server>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> http::Response<String> {
    socketcluster::hyper::upgrade(&server, request, Some(peer)).await
}

#[tokio::main]
async fn main() {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let mut port = 8000u16;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next().map(|p| p.parse())) {
            ("--port", Some(Ok(p))) => port = p,
            _ => {
                eprintln!("usage: axum [--port PORT]");
                std::process::exit(2);
            }
        }
    }
    let server = Server::new(ServerOptions::default(), socketcluster::tokio::runtime());
    let mut echo = server.procedure("echo");
    tokio::spawn(async move {
        while let Some((_socket, request)) = echo.next().await {
            let data = request.raw_data().cloned();
            let _ = request.end_value(data);
        }
    });
    let app = Router::new()
        .route("/api/hello", get(|| async { "hello from axum\n" }))
        .route("/socketcluster/", get(socketcluster_endpoint))
        .with_state(server);
    let listener = match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("axum: cannot listen on port {port}: {e}");
            std::process::exit(1);
        }
    };
    let local = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    println!("{}", serde_json::json!({ "listening": local }));
    if let Err(e) = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await {
        eprintln!("axum: {e}");
        std::process::exit(1);
    }
}
