//! The interop server: a SocketCluster server with the handlers of the interop contract
//! (`echo`, `foo`, `fail`, `stats`, ...), driven by the interop tests and by anyone's tests.
//!
//! ```text
//! cargo run --release --example interop_server -- --port 8000 [--runtime smol|tokio] ...
//! ```
//! Prints `{"listening":"127.0.0.1:PORT"}` when ready; exits 0 on SIGTERM/SIGINT after closing
//! its sockets (close code 1001, so JS clients reconnect).
//!
//! Scale-out (feature `redis`): `--broker redis://HOST:PORT` shares channels with every other
//! server on that Redis; `--broker redis-cluster://HOST:PORT[,HOST:PORT...]` uses a Redis Cluster
//! with sharded pub/sub; `--redis-prefix P` sets the Redis channel prefix (`sc`). The `stats`
//! procedure then also answers `"broker":{"connected":..,"undelivered":..,...}` (the broker's
//! health); broker warnings go to stderr.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::select_all;
use serde_json::{Value, json};
use socketcluster::auth::JwtAuth;
use socketcluster::protocol::{Error, ProtocolVersion, RemoteError};
use socketcluster::request::Request;
use socketcluster::runtime::Runtime;
use socketcluster::server::{
    Blocked, HandshakeAction, InboundAction, Middleware, Server, ServerEvent, ServerOptions, ServerSocket,
};

struct Args {
    host: String,
    port: u16,
    runtime: String,
    options: ServerOptions,
    foo_delay: Duration,
    /// `--broker` when it is not `memory`.
    broker: Option<String>,
    redis_prefix: Option<String>,
    /// `--tls-cert` and `--tls-key`: serve `wss://` (feature `tls`).
    tls_cert: Option<String>,
    tls_key: Option<String>,
}

fn usage(msg: &str) -> ! {
    eprintln!("interop_server: {msg}");
    std::process::exit(2);
}

fn parse_args() -> Args {
    let mut a = Args {
        host: "127.0.0.1".into(),
        port: 8000,
        runtime: "smol".into(),
        options: ServerOptions::default(),
        foo_delay: Duration::from_millis(1000),
        broker: None,
        redis_prefix: None,
        tls_cert: None,
        tls_key: None,
    };
    a.options.middleware = access_rules();
    let mut it = std::env::args().skip(1);
    let ms = |v: Option<String>, flag: &str| -> Duration {
        match v.as_deref().map(str::parse::<u64>) {
            Some(Ok(n)) => Duration::from_millis(n),
            _ => usage(&format!("{flag} needs a number of milliseconds")),
        }
    };
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--host" => a.host = it.next().unwrap_or_else(|| usage("--host needs an address")),
            "--port" => {
                a.port = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| usage("--port needs a port number"))
            }
            "--path" => a.options.path = it.next().unwrap_or_else(|| usage("--path needs a path")),
            "--runtime" => {
                a.runtime = it.next().unwrap_or_default();
                match a.runtime.as_str() {
                    "smol" => {}
                    "tokio" if cfg!(feature = "tokio") => {}
                    "tokio" => {
                        usage("--runtime tokio needs the `tokio` feature (cargo run --features tokio ...)")
                    }
                    _ => usage("--runtime must be smol or tokio"),
                }
            }
            "--protocol-version" => {
                a.options.protocol_version = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .and_then(ProtocolVersion::from_number)
                    .unwrap_or_else(|| usage("--protocol-version must be 1 or 2"))
            }
            "--ping-interval" => a.options.ping_interval = ms(it.next(), &flag),
            "--ping-timeout" => a.options.ping_timeout = ms(it.next(), &flag),
            "--handshake-timeout" => a.options.handshake_timeout = ms(it.next(), &flag),
            "--ack-timeout" => a.options.ack_timeout = ms(it.next(), &flag),
            "--foo-delay" => a.foo_delay = ms(it.next(), &flag),
            "--no-client-publish" => a.options.allow_client_publish = false,
            "--socket-channel-limit" => {
                a.options.socket_channel_limit = Some(
                    it.next()
                        .and_then(|v| v.parse().ok())
                        .unwrap_or_else(|| usage("--socket-channel-limit needs a number")),
                )
            }
            "--max-payload" => {
                a.options.max_payload = Some(
                    it.next()
                        .and_then(|v| v.parse().ok())
                        .unwrap_or_else(|| usage("--max-payload needs a number of bytes")),
                )
            }
            "--broker" => match it.next() {
                Some(u) if u == "memory" => a.broker = None,
                Some(u) if u.starts_with("redis://") || u.starts_with("redis-cluster://") => {
                    if !cfg!(feature = "redis") {
                        usage("--broker redis:// needs the `redis` feature (cargo run --features redis ...)")
                    }
                    a.broker = Some(u)
                }
                _ => usage("--broker must be memory, redis://HOST:PORT or redis-cluster://HOST:PORT[,...]"),
            },
            "--redis-prefix" => {
                a.redis_prefix = Some(it.next().unwrap_or_else(|| usage("--redis-prefix needs a prefix")))
            }
            "--auth-key" => {
                let key = it.next().unwrap_or_else(|| usage("--auth-key needs a secret"));
                a.options.auth = Some(JwtAuth::hs256(key));
            }
            "--outbound-limit" => {
                a.options.outbound_limit = Some(
                    it.next()
                        .and_then(|v| v.parse().ok())
                        .unwrap_or_else(|| usage("--outbound-limit needs a number")),
                )
            }
            "--tls-cert" => {
                a.tls_cert = Some(it.next().unwrap_or_else(|| usage("--tls-cert needs a PEM file")))
            }
            "--tls-key" => a.tls_key = Some(it.next().unwrap_or_else(|| usage("--tls-key needs a PEM file"))),
            _ => usage(&format!("unknown flag {flag}")),
        }
    }
    if a.tls_cert.is_some() != a.tls_key.is_some() {
        usage("--tls-cert and --tls-key go together");
    }
    if a.tls_cert.is_some() && !cfg!(feature = "tls") {
        usage("--tls-cert needs the `tls` feature (cargo run --features tls ...)");
    }
    a
}

/// The TLS configuration of `--tls-cert`/`--tls-key`, if given.
#[cfg(feature = "tls")]
fn tls_config(args: &Args) -> Option<std::sync::Arc<socketcluster::tls::rustls::ServerConfig>> {
    let (cert, key) = (args.tls_cert.as_ref()?, args.tls_key.as_ref()?);
    Some(socketcluster::tls::server_config_from_pem(cert.as_ref(), key.as_ref()).unwrap_or_else(|e| {
        eprintln!("interop_server: cannot load the TLS certificate and key: {e}");
        std::process::exit(1);
    }))
}

fn print_line(v: &Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

/// The contract's access rules, as middleware.
fn access_rules() -> Middleware {
    Middleware::new()
        .handshake(|action| async move {
            match action {
                HandshakeAction::Ws { request_uri, .. } => {
                    let query = request_uri.split_once('?').map_or("", |(_, q)| q);
                    if query.split('&').any(|kv| kv == "reject=1") {
                        return Err(Blocked::with(RemoteError::new(
                            "HandshakeRejectedError",
                            "Rejected by the reject=1 rule",
                        )));
                    }
                    Ok(())
                }
                HandshakeAction::Sc { auth_token: Some(token), .. }
                    if token.get("banned") == Some(&Value::Bool(true)) =>
                {
                    Err(Blocked::with(RemoteError::new("BannedError", "This auth token is banned"))
                        .status_code(4501))
                }
                _ => Ok(()),
            }
        })
        .inbound(|action| async move {
            match &action {
                InboundAction::Subscribe { socket, channel, .. }
                    if channel.starts_with("private/") && socket.auth_token().is_none() =>
                {
                    Err(Blocked::with(RemoteError::new(
                        "AuthRequiredError",
                        format!("Subscribing to {channel} requires authentication"),
                    )))
                }
                InboundAction::PublishIn { channel, .. } if channel.starts_with("readonly/") => {
                    Err(Blocked::default())
                }
                _ => Ok(action),
            }
        })
}

/// What one socket's handlers share.
struct SocketCtx {
    socket: ServerSocket,
    server: Server,
    foo_log: FooLog,
}

const PROCEDURES: &[&str] = &[
    "echo",
    "fail",
    "fail-plain",
    "foo-log",
    "login",
    "deauth",
    "whoami",
    "server-publish",
    "kick",
    "disconnect-me",
    "call-me-back",
    "transmit-me",
    "stats",
];

fn invalid_arguments(message: &str) -> RemoteError {
    RemoteError::new("InvalidArgumentsError", message)
}

/// Set up the handlers of a socket that just connected. Runs in the `connection` loop body, before
/// any await: consumers created here see everything the client sends after the handshake.
/// One socket's `foo` messages, as its delayed consumer iterated them.
type FooLog = Arc<Mutex<Vec<Value>>>;

/// Each socket's `foo` log, by socket id, for `foo-log`.
static FOO_LOGS: Mutex<Option<HashMap<String, FooLog>>> = Mutex::new(None);

fn foo_log_of(socket: &ServerSocket) -> FooLog {
    let mut logs = FOO_LOGS.lock().unwrap_or_else(|e| e.into_inner());
    logs.get_or_insert_with(HashMap::new).entry(socket.id().to_string()).or_default().clone()
}

/// Set up what is per socket: runs in the `connection` loop body, before any await, so the `foo`
/// consumer sees everything the client sends after the handshake.
fn on_connection(runtime: &Arc<dyn Runtime>, socket: ServerSocket, foo_delay: Duration) {
    // `foo`: the consumer exists from now on; it is read only after the delay.
    let mut foo_messages = socket.receiver("foo");
    let log = foo_log_of(&socket);
    let rt = runtime.clone();
    runtime.spawn(Box::pin(async move {
        rt.sleep_until(Instant::now() + foo_delay).await;
        while let Some(v) = foo_messages.next().await {
            log.lock().unwrap_or_else(|e| e.into_inner()).push(v);
        }
        // The socket closed (its receivers are killed then): forget its log.
        if let Some(logs) = FOO_LOGS.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            logs.remove(socket.id());
        }
    }));
}

/// The handlers shared by all sockets: server-wide consumers, one per receiver and procedure
/// (a socket costs no consumer for them).
fn start_handlers(server: &Server, runtime: &Arc<dyn Runtime>) {
    let mut echo = server.receiver("echo");
    runtime.spawn(Box::pin(async move {
        while let Some((socket, v)) = echo.next().await {
            let _ = match v {
                Some(v) => socket.transmit("echo", v),
                None => socket.transmit_empty("echo"),
            };
        }
    }));

    // Procedures: one task for all of them; slow ones get a task of their own.
    let mut requests = select_all(PROCEDURES.iter().map(|p| server.procedure(p)));
    let (server, runtime) = (server.clone(), runtime.clone());
    runtime.clone().spawn(Box::pin(async move {
        while let Some((socket, req)) = requests.next().await {
            let c = SocketCtx { foo_log: foo_log_of(&socket), socket, server: server.clone() };
            if matches!(req.procedure(), "call-me-back" | "kick" | "server-publish") {
                runtime.spawn(Box::pin(async move { handle(&c, req).await }));
            } else {
                handle(&c, req).await;
            }
        }
    }));
}

async fn handle(c: &SocketCtx, req: Request) {
    let data = req.data().clone();
    let _ = match req.procedure() {
        "echo" => req.end_value(req.raw_data().cloned()),
        "fail" => req.error(RemoteError::new("CustomError", "boom").with("extra", 42)),
        "fail-plain" => req.error(RemoteError::plain("plain")),
        "foo-log" => {
            let log = c.foo_log.lock().unwrap_or_else(|e| e.into_inner()).clone();
            req.end(log)
        }
        "login" if data.is_object() => match c.socket.set_auth_token(data, None) {
            Ok(_) => req.end("ok"),
            Err(e) => req.error(e.to_remote()),
        },
        "login" => req.error(invalid_arguments("login expects a JSON object as its data")),
        "deauth" => {
            c.socket.deauthenticate();
            req.end_empty()
        }
        "whoami" => req.end(c.socket.auth_token().unwrap_or(Value::Null)),
        "server-publish" => {
            let channel = data.get("channel").and_then(Value::as_str).unwrap_or_default().to_string();
            match c
                .server
                .exchange()
                .invoke_publish(&channel, data.get("data").cloned().unwrap_or(Value::Null))
                .await
            {
                Ok(()) => req.end_empty(),
                Err(e) => req.error(e.to_remote()),
            }
        }
        "kick" => {
            let channel = data.get("channel").and_then(Value::as_str).unwrap_or_default().to_string();
            c.socket.kick_out(&channel, data.get("message").cloned().unwrap_or(Value::Null)).await;
            req.end_empty()
        }
        "disconnect-me" => {
            let code =
                data.get("code").and_then(Value::as_u64).and_then(|c| u16::try_from(c).ok()).unwrap_or(1000);
            let reason = data.get("reason").and_then(Value::as_str).unwrap_or_default().to_string();
            let r = req.end_empty();
            c.socket.disconnect(code, &reason);
            r
        }
        "call-me-back" => {
            let procedure = data.get("procedure").and_then(Value::as_str).unwrap_or_default().to_string();
            match c.socket.invoke_raw(&procedure, data.get("data").cloned(), c.socket.ack_timeout()).await {
                Ok(v) => req.end_value(v),
                Err(Error::Remote(e)) => req.error(e),
                Err(e) => req.error(e.to_remote()),
            }
        }
        "transmit-me" => match data.get("count").and_then(Value::as_u64) {
            Some(n) => {
                let event = data.get("event").and_then(Value::as_str).unwrap_or_default().to_string();
                let d = data.get("data").cloned().unwrap_or(Value::Null);
                for i in 0..n {
                    let _ = c.socket.transmit(&event, json!({ "i": i, "data": d }));
                }
                req.end_empty()
            }
            None => req.error(invalid_arguments("transmit-me needs a non-negative count")),
        },
        "stats" => {
            let channels: serde_json::Map<String, Value> =
                c.server.broker().channels().into_iter().map(|(k, n)| (k, json!(n))).collect();
            #[allow(unused_mut)] // the broker's health is added with the `redis` feature
            let mut stats = json!({ "clients": c.server.clients_count(), "channels": channels });
            #[cfg(feature = "redis")]
            if let Some(b) = redis::BROKER.get() {
                stats["broker"] = redis::health(b);
            }
            req.end(stats)
        }
        _ => Ok(()),
    };
}

async fn serve(
    mut connections: socketcluster::stream::Consumer<ServerEvent>,
    runtime: Arc<dyn Runtime>,
    foo_delay: Duration,
) {
    while let Some(ev) = connections.next().await {
        if let ServerEvent::Connection { socket, .. } = ev {
            on_connection(&runtime, socket, foo_delay);
        }
    }
}

async fn run(server: Server, addr: std::net::SocketAddr, runtime: Arc<dyn Runtime>, foo_delay: Duration) {
    // Listen for connections before saying we are ready, so the first client gets its handlers.
    let connections = server.listener("connection");
    start_handlers(&server, &runtime);
    // The handler is in place before we say we are ready: a SIGTERM right after the `listening`
    // line must close the sockets (1001) and exit 0, not kill the process.
    let (stop_tx, stop_rx) = async_channel::bounded::<()>(1);
    if let Err(e) = ctrlc::set_handler(move || {
        let _ = stop_tx.try_send(());
    }) {
        eprintln!("interop_server: cannot install the signal handler: {e}");
        std::process::exit(1);
    }
    print_line(&json!({ "listening": addr.to_string() }));
    runtime.spawn(Box::pin(serve(connections, runtime.clone(), foo_delay)));
    let _ = stop_rx.recv().await;
    server.close(1001, "", Duration::from_secs(2)).await;
    // The sockets are closed; exit now rather than wait for the runtime to wind down its tasks.
    let _ = std::io::stdout().flush();
    std::process::exit(0);
}

fn main() {
    // Logs (stderr) only when asked for: `RUST_LOG=socketcluster=debug`.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let mut args = parse_args();
    let addr = format!("{}:{}", args.host, args.port);
    let fail = |e: std::io::Error| -> ! {
        eprintln!("interop_server: cannot listen on {addr}: {e}");
        std::process::exit(1);
    };
    let broker = args.broker.take();
    let prefix = args.redis_prefix.take();
    match args.runtime.as_str() {
        #[cfg(feature = "tokio")]
        "tokio" => {
            let rt =
                tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap_or_else(|e| fail(e));
            rt.block_on(async {
                #[cfg(feature = "redis")]
                if let Some(url) = &broker {
                    let b = socketcluster::tokio::redis_broker(redis::options(url, prefix.as_deref()))
                        .await
                        .unwrap_or_else(|e| redis::fail(url, e));
                    args.options.broker = Some(redis::install(b, &socketcluster::tokio::runtime()));
                }
                let (server, local) = {
                    #[cfg(feature = "tls")]
                    if let Some(tls) = tls_config(&args) {
                        socketcluster::tokio::listen_tls(&addr, tls, args.options).await
                    } else {
                        socketcluster::tokio::listen(&addr, args.options).await
                    }
                    #[cfg(not(feature = "tls"))]
                    socketcluster::tokio::listen(&addr, args.options).await
                }
                .unwrap_or_else(|e| fail(e));
                #[cfg(feature = "redis")]
                redis::report_to(&server);
                run(server, local, socketcluster::tokio::runtime(), args.foo_delay).await;
            });
        }
        _ => smol::block_on(async {
            #[cfg(feature = "redis")]
            if let Some(url) = &broker {
                let b = socketcluster::smol::redis_broker(redis::options(url, prefix.as_deref()))
                    .await
                    .unwrap_or_else(|e| redis::fail(url, e));
                args.options.broker = Some(redis::install(b, &socketcluster::smol::runtime()));
            }
            let (server, local) = {
                #[cfg(feature = "tls")]
                if let Some(tls) = tls_config(&args) {
                    socketcluster::smol::listen_tls(&addr, tls, args.options).await
                } else {
                    socketcluster::smol::listen(&addr, args.options).await
                }
                #[cfg(not(feature = "tls"))]
                socketcluster::smol::listen(&addr, args.options).await
            }
            .unwrap_or_else(|e| fail(e));
            #[cfg(feature = "redis")]
            redis::report_to(&server);
            run(server, local, socketcluster::smol::runtime(), args.foo_delay).await;
        }),
    }
    #[cfg(not(feature = "redis"))]
    let _ = (broker, prefix);
}

/// `--broker redis://...`: the Redis broker of this process.
#[cfg(feature = "redis")]
mod redis {
    use std::sync::{Arc, OnceLock};

    use futures::StreamExt;
    use serde_json::{Value, json};
    use socketcluster::runtime::Runtime;
    use socketcluster::server::redis::{RedisBroker, RedisOptions};
    use socketcluster::server::{Broker, Server};

    pub(crate) static BROKER: OnceLock<Arc<RedisBroker>> = OnceLock::new();

    /// `redis://HOST:PORT`, or `redis-cluster://HOST:PORT[,HOST:PORT...]`.
    pub(crate) fn options(url: &str, prefix: Option<&str>) -> RedisOptions {
        let o = match url.strip_prefix("redis-cluster://") {
            Some(nodes) => RedisOptions::cluster(nodes.split(',').map(|n| format!("redis://{n}"))),
            None => RedisOptions::new(url),
        };
        match prefix {
            Some(p) => o.with_prefix(p),
            None => o,
        }
    }

    pub(crate) fn fail(url: &str, e: std::io::Error) -> ! {
        eprintln!("interop_server: cannot connect to Redis at {url}: {e}");
        std::process::exit(1);
    }

    /// Keeps the broker for `stats` and logs its events to stderr.
    pub(crate) fn install(broker: Arc<RedisBroker>, runtime: &Arc<dyn Runtime>) -> Arc<dyn Broker> {
        let mut events = broker.events();
        runtime.spawn(Box::pin(async move {
            while let Some(e) = events.next().await {
                eprintln!("interop_server: redis broker: {e:?}");
            }
        }));
        let _ = BROKER.set(broker.clone());
        broker
    }

    pub(crate) fn report_to(server: &Server) {
        if let Some(b) = BROKER.get() {
            b.report_to(server);
        }
    }

    pub(crate) fn health(b: &RedisBroker) -> Value {
        let h = b.health();
        json!({
            "instanceId": b.instance_id(),
            "connected": h.connected,
            "outages": h.outages,
            "redisChannels": h.redis_channels,
            "localChannels": h.local_channels,
            "published": h.published,
            "undelivered": h.undelivered,
            "received": h.received,
            "ignored": h.ignored,
        })
    }
}
