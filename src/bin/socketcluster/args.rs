//! The command line: flags and `SC_*` environment variables (clap). Without a subcommand the
//! program serves; `subscribe`, `publish`, `invoke`, `transmit` and `repl` are the client.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde_json::Value;
use socketcluster::server::TrustedProxy;

/// A SocketCluster server (with a browser demo, /health and /metrics) and client.
#[derive(Debug, Parser)]
#[command(name = "socketcluster", version, args_conflicts_with_subcommands = true)]
#[command(after_help = "Without a command: serve. Every flag can also be set through its SC_* variable.")]
pub(crate) struct Cli {
    /// A client command (none: run the server).
    #[command(subcommand)]
    pub(crate) command: Option<ClientCommand>,
    /// The server's flags.
    #[command(flatten)]
    pub(crate) serve: ServeArgs,
}

/// `socketcluster [FLAGS]`: the server.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "SC_HOST", default_value = "0.0.0.0")]
    pub(crate) host: String,
    /// Port to listen on (0: any free port).
    #[arg(long, short, env = "SC_PORT", default_value_t = 8000)]
    pub(crate) port: u16,
    /// The WebSocket path of SocketCluster clients.
    #[arg(long, env = "SC_PATH", default_value = "/socketcluster/")]
    pub(crate) path: String,
    /// Serve static files from this folder instead of the built-in demo.
    #[arg(long = "static", env = "SC_STATIC", value_name = "DIR")]
    pub(crate) static_dir: Option<PathBuf>,
    /// The HS256 key that signs and verifies auth tokens (default: a random key per start, so
    /// tokens do not survive a restart).
    #[arg(long, env = "SC_AUTH_KEY", hide_env_values = true)]
    pub(crate) auth_key: Option<String>,
    /// Allowed Origin of upgrade requests, `host:port` with `*` wildcards (repeat or separate
    /// with commas; default: any).
    #[arg(long = "origin", env = "SC_ORIGINS", value_delimiter = ',')]
    pub(crate) origins: Vec<String>,
    /// Disconnect a socket (close code 1013) whose outbound queue holds more frames than this.
    #[arg(long, env = "SC_OUTBOUND_LIMIT")]
    pub(crate) outbound_limit: Option<usize>,
    /// Close a socket (1009) that sends a larger message, in bytes.
    #[arg(long, env = "SC_MAX_PAYLOAD")]
    pub(crate) max_payload: Option<usize>,
    /// Proxies whose Forwarded / X-Forwarded-For headers are believed (IP or CIDR; repeat or
    /// separate with commas).
    #[arg(long = "trusted-proxy", env = "SC_TRUSTED_PROXIES", value_delimiter = ',')]
    pub(crate) trusted_proxies: Vec<TrustedProxy>,
    /// Certificate chain (PEM) for https:// and wss://; needs --tls-key.
    #[cfg(feature = "tls")]
    #[arg(long, env = "SC_TLS_CERT", requires = "tls_key")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[cfg(feature = "tls")]
    #[arg(long, env = "SC_TLS_KEY", requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,
    /// Keep history for channels matching PATTERN (`*` wildcards): the last N publishes, and
    /// with /SECONDS only those younger; reconnecting subscribers get what they missed
    /// (repeat or separate with commas), e.g. `chat.*=1000/300`.
    #[arg(long = "history", env = "SC_HISTORY", value_delimiter = ',', value_parser = history_rule, value_name = "PATTERN=N[/SECONDS]")]
    pub(crate) history: Vec<(String, socketcluster::server::HistoryOptions)>,
    /// Let clients ask who is on a channel they are subscribed to (the `#presence` procedure).
    #[arg(long, env = "SC_CLIENT_PRESENCE")]
    pub(crate) client_presence: bool,
    /// The auth token field that names a user in presence lists.
    #[arg(long, env = "SC_PRESENCE_USER_FIELD")]
    pub(crate) presence_user_field: Option<String>,
    /// Scale out through Redis: redis://HOST:PORT, or redis-cluster://HOST:PORT[,HOST:PORT...]
    /// (sharded pub/sub).
    #[cfg(feature = "redis")]
    #[arg(long, env = "SC_BROKER")]
    pub(crate) broker: Option<String>,
    /// With --broker: a crashed process's members leave presence lists after this many
    /// seconds.
    #[cfg(feature = "redis")]
    #[arg(long, env = "SC_PRESENCE_TTL", value_name = "SECONDS", default_value_t = 30)]
    pub(crate) presence_ttl: u64,
    /// Log filter: a level (error, warn, info, debug, trace) or tracing directives; RUST_LOG,
    /// when set, wins.
    #[arg(long, env = "SC_LOG", default_value = "info")]
    pub(crate) log: String,
}

/// The client commands.
#[derive(Debug, Subcommand)]
pub(crate) enum ClientCommand {
    /// Subscribe to channels and print each message as a JSON line.
    Subscribe {
        /// The channels.
        #[arg(required = true)]
        channels: Vec<String>,
        /// Exit after this many messages (default: at the end of stdin).
        #[arg(long)]
        count: Option<u64>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Publish DATA on CHANNEL; exit once the server acknowledged it.
    Publish {
        /// The channel.
        channel: String,
        /// The message, as JSON.
        #[arg(value_parser = json)]
        data: Value,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Invoke PROCEDURE with DATA and print its answer.
    Invoke {
        /// The procedure.
        procedure: String,
        /// Its argument, as JSON.
        #[arg(value_parser = json, default_value = "null")]
        data: Value,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Transmit EVENT with DATA; exit once it is written.
    Transmit {
        /// The event.
        event: String,
        /// Its data, as JSON.
        #[arg(value_parser = json, default_value = "null")]
        data: Value,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Read JSON commands on stdin, print JSON events (see the interop contract's repl).
    Repl {
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// The flags every client command has.
#[derive(Debug, Args)]
pub(crate) struct ClientArgs {
    /// The server's URL (ws:// or wss://).
    #[arg(long, env = "SC_URL", default_value = "ws://127.0.0.1:8000/socketcluster/")]
    pub(crate) url: String,
    /// A signed token to send in the handshake.
    #[arg(long, env = "SC_AUTH_TOKEN", hide_env_values = true)]
    pub(crate) auth_token: Option<String>,
    /// How long to wait for an answer, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    pub(crate) ack_timeout: u64,
    /// Do not reconnect when the connection drops.
    #[arg(long)]
    pub(crate) no_reconnect: bool,
    /// Accept any server certificate over wss:// (like curl --insecure; for tests only).
    #[cfg(feature = "tls")]
    #[arg(long)]
    pub(crate) insecure: bool,
}

impl ClientArgs {
    /// The client's options.
    pub(crate) fn options(&self) -> socketcluster::client::ClientOptions {
        let mut options = socketcluster::client::ClientOptions::new(self.url.as_str());
        options.auth_token = self.auth_token.clone();
        options.ack_timeout = Duration::from_millis(self.ack_timeout);
        options.auto_reconnect = !self.no_reconnect;
        #[cfg(feature = "tls")]
        if self.insecure {
            options.tls = socketcluster::tls::ClientTls::DangerousAcceptAnyCertificate;
        }
        options
    }
}

fn history_rule(s: &str) -> Result<(String, socketcluster::server::HistoryOptions), String> {
    let bad = || format!("expected PATTERN=N or PATTERN=N/SECONDS, got {s:?}");
    let (pattern, rest) = s.rsplit_once('=').ok_or_else(bad)?;
    let (n, ttl) = match rest.split_once('/') {
        Some((n, secs)) => (n, Some(secs.parse::<u64>().map_err(|_| bad())?)),
        None => (rest, None),
    };
    let n: usize = n.parse().ok().filter(|n| *n > 0).ok_or_else(bad)?;
    let mut options = socketcluster::server::HistoryOptions::last(n);
    if let Some(secs) = ttl {
        options = options.with_ttl(Duration::from_secs(secs));
    }
    Ok((pattern.to_string(), options))
}

fn json(s: &str) -> Result<Value, String> {
    serde_json::from_str(s).map_err(|e| format!("not JSON ({e}); quote strings: '\"text\"'"))
}
