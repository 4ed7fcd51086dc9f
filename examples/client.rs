//! The interop client: a scriptable SocketCluster client (see the interop contract).
//!
//! ```text
//! cargo run --release --example client -- [--url URL] [--runtime smol|tokio] COMMAND [ARGS]
//!   invoke PROCEDURE JSON | transmit EVENT JSON | publish CHANNEL JSON
//!   subscribe CHANNEL... [--count N] | repl
//! ```
//! Machine-readable output: one JSON object per line on stdout. Exit codes: 0 success, 1 failed
//! operation (`{"error":ERR}` on stdout), 2 usage error.

//!
//! The commands themselves are the `socketcluster` program's client (`src/bin/socketcluster/
//! client.rs`); this program keeps the contract's flags.

use std::time::Duration;

use serde_json::Value;
use socketcluster::client::ClientOptions;
use socketcluster::protocol::ProtocolVersion;

#[path = "../src/bin/socketcluster/client.rs"]
mod cli;

use cli::Command;

fn usage(msg: &str) -> ! {
    eprintln!("client: {msg}");
    std::process::exit(2);
}

fn parse_json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| usage(&format!("not JSON: {s}: {e}")))
}

struct Args {
    options: ClientOptions,
    runtime: String,
    command: Command,
}

fn parse_args() -> Args {
    let mut options = ClientOptions::new("ws://127.0.0.1:8000/socketcluster/");
    let mut runtime = String::from("smol");
    let mut command = Vec::new();
    let mut it = std::env::args().skip(1);
    let ms = |v: Option<String>, flag: &str| -> Duration {
        match v.as_deref().map(str::parse::<u64>) {
            Some(Ok(n)) => Duration::from_millis(n),
            _ => usage(&format!("{flag} needs a number of milliseconds")),
        }
    };
    while let Some(a) = it.next() {
        match a.as_str() {
            "--url" => options.url = it.next().unwrap_or_else(|| usage("--url needs a URL")),
            "--runtime" => {
                runtime = it.next().unwrap_or_default();
                match runtime.as_str() {
                    "smol" => {}
                    "tokio" if cfg!(feature = "tokio") => {}
                    "tokio" => usage("--runtime tokio needs the `tokio` feature"),
                    _ => usage("--runtime must be smol or tokio"),
                }
            }
            "--auth-token" => {
                options.auth_token = Some(it.next().unwrap_or_else(|| usage("--auth-token needs a token")))
            }
            "--ack-timeout" => options.ack_timeout = ms(it.next(), &a),
            "--protocol-version" => {
                options.protocol_version = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .and_then(ProtocolVersion::from_number)
                    .unwrap_or_else(|| usage("--protocol-version must be 1 or 2"))
            }
            "--no-reconnect" => options.auto_reconnect = false,
            "--reconnect-delay" => {
                options.backoff.initial_delay = ms(it.next(), &a);
                options.backoff.randomness = Duration::ZERO;
            }
            s if s.starts_with("--") && command.first().is_some_and(|c| c == "subscribe") => {
                command.push(a.clone());
                if s == "--count" {
                    command.push(it.next().unwrap_or_else(|| usage("--count needs a number")));
                }
            }
            s if s.starts_with("--") => usage(&format!("unknown flag {s}")),
            _ => command.push(a),
        }
    }
    if command.is_empty() {
        usage("missing command: invoke, transmit, publish, subscribe or repl");
    }
    Args { options, runtime, command: parse_command(&command) }
}

fn parse_command(cmd: &[String]) -> Command {
    let two = || (cmd[1].clone(), parse_json(&cmd[2]));
    match cmd[0].as_str() {
        "invoke" if cmd.len() == 3 => {
            let (procedure, data) = two();
            Command::Invoke { procedure, data }
        }
        "transmit" if cmd.len() == 3 => {
            let (event, data) = two();
            Command::Transmit { event, data }
        }
        "publish" if cmd.len() == 3 => {
            let (channel, data) = two();
            Command::Publish { channel, data }
        }
        "subscribe" if cmd.len() >= 2 => {
            let mut channels = Vec::new();
            let mut count = None;
            let mut it = cmd[1..].iter();
            while let Some(a) = it.next() {
                if a == "--count" {
                    count = Some(
                        it.next()
                            .and_then(|n| n.parse().ok())
                            .unwrap_or_else(|| usage("--count needs a number")),
                    );
                } else {
                    channels.push(a.clone());
                }
            }
            if channels.is_empty() {
                usage("subscribe needs a channel");
            }
            Command::Subscribe { channels, count }
        }
        "repl" if cmd.len() == 1 => Command::Repl,
        _ => usage("bad command or arguments"),
    }
}

fn main() {
    // Logs (stderr) only when asked for: `RUST_LOG=socketcluster=debug`.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let args = parse_args();
    std::process::exit(cli::main_with(args.options, &args.runtime, args.command, cli::Flavor::Interop));
}
