//! `socketcluster`: a SocketCluster server with a browser demo, `/health` and `/metrics` — and,
//! with a subcommand, a command-line client for any SocketCluster server.
//!
//! ```text
//! socketcluster [--port 8000] [--host 0.0.0.0] [--static DIR] [--auth-key KEY] ...
//! socketcluster subscribe CHANNEL... [--count N] [--url ws://HOST:PORT/socketcluster/]
//! socketcluster publish CHANNEL JSON | invoke PROCEDURE [JSON] | transmit EVENT [JSON] | repl
//! ```
//!
//! The server prints `{"listening":"HOST:PORT"}` on stdout when it accepts connections and logs
//! to stderr (tracing; `--log` or `RUST_LOG`). SIGTERM or SIGINT: `/health` turns 503, every
//! socket is closed with 1001, exit 0. Bad flags exit 2; a port in use, an unreadable folder,
//! certificate or key, or an unreachable broker exit 1 with a one-line message.
//!
//! Client commands print JSON lines on stdout; they exit 0 on success, 1 on a failed operation
//! (`{"error":ERR}`) and 2 on usage errors.

mod args;
mod client;
mod files;
mod http;
mod metrics;

use std::process::exit;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Parser;
use socketcluster::auth::JwtAuth;
use socketcluster::server::{Server, ServerOptions};

use args::{Cli, ClientCommand, ServeArgs};
use client::Command;

/// How long a TLS handshake may take.
#[cfg(feature = "tls")]
const TLS_HANDSHAKE: Duration = Duration::from_secs(10);

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        None => serve(cli.serve),
        Some(command) => {
            init_logs(None);
            run_client(command)
        }
    };
    exit(code);
}

/// Logs to stderr: `RUST_LOG` when set, else `filter` (the client logs only with `RUST_LOG`).
fn init_logs(filter: Option<&str>) {
    use tracing_subscriber::EnvFilter;
    let filter = match (std::env::var_os("RUST_LOG"), filter) {
        (Some(_), _) => EnvFilter::from_default_env(),
        (None, Some(f)) => EnvFilter::try_new(f).unwrap_or_else(|e| {
            eprintln!("socketcluster: bad --log filter {f:?}: {e}");
            exit(2)
        }),
        (None, None) => return,
    };
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

fn run_client(command: ClientCommand) -> i32 {
    let (client, command) = match command {
        ClientCommand::Subscribe { channels, count, client } => {
            (client, Command::Subscribe { channels, count })
        }
        ClientCommand::Publish { channel, data, client } => (client, Command::Publish { channel, data }),
        ClientCommand::Invoke { procedure, data, client } => (client, Command::Invoke { procedure, data }),
        ClientCommand::Transmit { event, data, client } => (client, Command::Transmit { event, data }),
        ClientCommand::Repl { client } => (client, Command::Repl),
    };
    if !client.url.starts_with("ws://") && !client.url.starts_with("wss://") {
        eprintln!("socketcluster: --url must be a ws:// or wss:// URL, not {:?}", client.url);
        return 2;
    }
    client::main_with(client.options(), "smol", command, client::Flavor::Program)
}

/// Exits 1 with `message`.
fn fail(message: String) -> ! {
    eprintln!("socketcluster: {message}");
    exit(1)
}

fn serve(args: ServeArgs) -> i32 {
    init_logs(Some(&args.log));
    if !args.path.starts_with('/') || matches!(args.path.as_str(), "/health" | "/metrics") {
        eprintln!("socketcluster: --path must start with / and not be /health or /metrics");
        return 2;
    }
    let files = match &args.static_dir {
        Some(dir) => files::Files::dir(dir)
            .unwrap_or_else(|e| fail(format!("cannot serve static files from {}: {e}", dir.display()))),
        None => files::Files::Demo { sc_path: args.path.clone() },
    };
    #[cfg(feature = "tls")]
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            Some(socketcluster::tls::server_config_from_pem(cert, key).unwrap_or_else(|e| {
                fail(format!(
                    "cannot load the TLS certificate {} and key {}: {e}",
                    cert.display(),
                    key.display()
                ))
            }))
        }
        _ => None,
    };
    let mut options = ServerOptions {
        path: args.path.clone(),
        origins: (!args.origins.is_empty()).then(|| args.origins.clone()),
        outbound_limit: args.outbound_limit,
        max_payload: args.max_payload,
        trusted_proxies: args.trusted_proxies.clone(),
        history: args
            .history
            .iter()
            .fold(socketcluster::server::HistoryRules::new(), |rules, (p, o)| rules.pattern(p.clone(), *o)),
        client_presence: args.client_presence,
        presence_user_field: args.presence_user_field.clone(),
        ..ServerOptions::default()
    };
    if let Some(key) = &args.auth_key {
        options.auth = Some(JwtAuth::hs256(key));
    }
    smol::block_on(async move {
        #[allow(unused_mut)] // replaced with `--broker`
        let mut broker = metrics::memory_broker();
        #[cfg(feature = "redis")]
        let redis = match &args.broker {
            Some(url) => {
                let mut redis_options = redis_options(url);
                redis_options.presence_ttl = Duration::from_secs(args.presence_ttl.max(1));
                let b = socketcluster::smol::redis_broker(redis_options)
                    .await
                    .unwrap_or_else(|e| fail(format!("cannot connect to the broker {url}: {e}")));
                options.broker = Some(b.clone());
                broker = metrics::redis_broker(b.clone());
                Some(b)
            }
            None => None,
        };
        let listener = smol::net::TcpListener::bind((args.host.as_str(), args.port))
            .await
            .unwrap_or_else(|e| fail(format!("cannot listen on {}:{}: {e}", args.host, args.port)));
        let local = listener.local_addr().unwrap_or_else(|e| fail(format!("no local address: {e}")));
        let server = Server::new(options, socketcluster::smol::runtime());
        #[cfg(feature = "redis")]
        if let Some(b) = &redis {
            b.report_to(&server);
        }
        let app =
            Arc::new(http::App { server: server.clone(), files, broker, stopping: AtomicBool::new(false) });
        let (stop_tx, stop_rx) = async_channel::bounded::<()>(1);
        if let Err(e) = ctrlc::set_handler(move || {
            let _ = stop_tx.try_send(());
        }) {
            fail(format!("cannot install the signal handler: {e}"));
        }
        #[cfg(feature = "tls")]
        let scheme = if tls.is_some() { "https" } else { "http" };
        #[cfg(not(feature = "tls"))]
        let scheme = "http";
        tracing::info!(
            "serving {scheme}://{local}/ ({}), SocketCluster at {}, /health, /metrics",
            match &args.static_dir {
                Some(dir) => format!("static files from {}", dir.display()),
                None => String::from("the demo"),
            },
            args.path
        );
        client::print_line(&serde_json::json!({ "listening": local.to_string() }));
        let a = app.clone();
        smol::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!("accept failed: {e}");
                        smol::Timer::after(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let a = a.clone();
                #[cfg(feature = "tls")]
                if let Some(config) = tls.clone() {
                    smol::spawn(async move {
                        let handshake = socketcluster::tls::accept(&config, tcp);
                        let timeout = async {
                            smol::Timer::after(TLS_HANDSHAKE).await;
                            Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"))
                        };
                        match smol::future::or(handshake, timeout).await {
                            Ok(stream) => http::connection(a, stream, peer).await,
                            Err(e) => tracing::info!(%peer, "TLS handshake failed: {e}"),
                        }
                    })
                    .detach();
                    continue;
                }
                smol::spawn(http::connection(a, tcp, peer)).detach();
            }
        })
        .detach();
        let _ = stop_rx.recv().await;
        app.stopping.store(true, Ordering::Relaxed);
        tracing::info!("stopping: closing every socket with 1001");
        server.close(1001, "Server is shutting down", Duration::from_secs(2)).await;
        0
    })
}

/// `redis://HOST:PORT`, or `redis-cluster://HOST:PORT[,HOST:PORT...]`.
#[cfg(feature = "redis")]
fn redis_options(url: &str) -> socketcluster::server::redis::RedisOptions {
    use socketcluster::server::redis::RedisOptions;
    match url.strip_prefix("redis-cluster://") {
        Some(nodes) => RedisOptions::cluster(nodes.split(',').map(|n| format!("redis://{n}"))),
        None => RedisOptions::new(url),
    }
}
