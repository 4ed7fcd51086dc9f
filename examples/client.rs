//! The interop client: a scriptable SocketCluster client (see the interop contract).
//!
//! ```text
//! cargo run --release --example client -- [--url URL] [--runtime smol|tokio] COMMAND [ARGS]
//!   invoke PROCEDURE JSON | transmit EVENT JSON | publish CHANNEL JSON
//!   subscribe CHANNEL... [--count N] | repl
//! ```
//! Machine-readable output: one JSON object per line on stdout. Exit codes: 0 success, 1 failed
//! operation (`{"error":ERR}` on stdout), 2 usage error.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::select_all;
use serde_json::{Value, json};
use socketcluster::client::{Client, ClientEvent, ClientOptions};
use socketcluster::protocol::channels::SubscribeOptions;
use socketcluster::protocol::{Error, ProtocolVersion, RemoteError};
use socketcluster::runtime::Runtime;

fn usage(msg: &str) -> ! {
    eprintln!("client: {msg}");
    std::process::exit(2);
}

fn print_line(v: &Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

fn err_value(e: &Error) -> Value {
    e.to_remote().into_value()
}

fn parse_json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| usage(&format!("not JSON: {s}: {e}")))
}

struct Args {
    options: ClientOptions,
    runtime: String,
    command: Vec<String>,
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
    Args { options, runtime, command }
}

/// Reads stdin lines on a thread; the channel closes at end of input.
fn stdin_lines() -> async_channel::Receiver<String> {
    let (tx, rx) = async_channel::unbounded();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send_blocking(line).is_err() {
                break;
            }
        }
    });
    rx
}

async fn main_async(args: Args, client: Client, rt: Arc<dyn Runtime>) -> i32 {
    let cmd = &args.command;
    match cmd[0].as_str() {
        "invoke" if cmd.len() == 3 => {
            match client.invoke_raw(&cmd[1], Some(parse_json(&cmd[2])), client.options().ack_timeout).await {
                Ok(v) => {
                    print_line(&v.unwrap_or(Value::Null));
                    0
                }
                Err(e) => {
                    print_line(&json!({ "error": err_value(&e) }));
                    1
                }
            }
        }
        "transmit" if cmd.len() == 3 => match client.transmit(&cmd[1], parse_json(&cmd[2])).await {
            Ok(()) => {
                client.flush().await;
                0
            }
            Err(e) => {
                print_line(&json!({ "error": err_value(&e) }));
                1
            }
        },
        "publish" if cmd.len() == 3 => match client.invoke_publish(&cmd[1], parse_json(&cmd[2])).await {
            Ok(()) => 0,
            Err(e) => {
                print_line(&json!({ "error": err_value(&e) }));
                1
            }
        },
        "subscribe" if cmd.len() >= 2 => subscribe_command(&client, &cmd[1..]).await,
        "repl" if cmd.len() == 1 => repl(client, rt).await,
        _ => usage("bad command or arguments"),
    }
}

async fn subscribe_command(client: &Client, args: &[String]) -> i32 {
    let mut channels = Vec::new();
    let mut count: Option<u64> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--count" {
            count = Some(
                it.next().and_then(|n| n.parse().ok()).unwrap_or_else(|| usage("--count needs a number")),
            );
        } else {
            channels.push(a.clone());
        }
    }
    if channels.is_empty() {
        usage("subscribe needs a channel");
    }
    let mut events = client.events();
    let mut data = select_all(channels.iter().map(|c| {
        let name = c.clone();
        client.subscribe(c, SubscribeOptions::default()).map(move |d| (name.clone(), d))
    }));
    let stdin = stdin_lines();
    let stdin_closed = async move { while stdin.recv().await.is_ok() {} };
    let mut stdin_closed = std::pin::pin!(futures::FutureExt::fuse(stdin_closed));
    let mut seen = 0u64;
    if count == Some(0) {
        return 0;
    }
    loop {
        let ev = futures::select_biased! {
            e = events.next() => Some(e),
            d = data.next() => {
                if let Some((channel, d)) = d {
                    print_line(&json!({ "type": "publish", "channel": channel, "data": d }));
                    seen += 1;
                    if count.is_some_and(|n| seen >= n) {
                        return 0;
                    }
                }
                None
            }
            () = stdin_closed => return 0,
        };
        match ev {
            Some(Some(ClientEvent::Subscribe { channel })) => {
                print_line(&json!({ "type": "subscribe", "channel": channel }))
            }
            Some(Some(ClientEvent::SubscribeFail { error, .. })) => {
                print_line(&json!({ "error": error.into_value() }));
                return 1;
            }
            _ => {}
        }
    }
}

fn event_line(ev: ClientEvent, client: &Client) -> Option<Value> {
    Some(match ev {
        ClientEvent::Connect { id, is_authenticated, auth_error, .. } => {
            let mut v = json!({ "type": "connect", "id": id, "isAuthenticated": is_authenticated });
            if let Some(e) = auth_error {
                v["authError"] = e.into_value();
            }
            v
        }
        ClientEvent::Disconnect { code, reason } => {
            json!({ "type": "disconnect", "code": code, "reason": reason })
        }
        ClientEvent::ConnectAbort { code, reason } => {
            json!({ "type": "connectAbort", "code": code, "reason": reason })
        }
        ClientEvent::Subscribe { channel } => json!({ "type": "subscribe", "channel": channel }),
        ClientEvent::SubscribeFail { channel, error } => {
            json!({ "type": "subscribeFail", "channel": channel, "error": error.into_value() })
        }
        ClientEvent::Unsubscribe { channel } => json!({ "type": "unsubscribe", "channel": channel }),
        ClientEvent::KickOut { channel, message } => {
            json!({ "type": "kickOut", "channel": channel, "message": message })
        }
        ClientEvent::Authenticate { .. } => {
            json!({ "type": "authenticate", "authToken": client.auth_token() })
        }
        ClientEvent::Deauthenticate => json!({ "type": "deauthenticate" }),
        ClientEvent::Error(e) => json!({ "type": "error", "error": e.into_value() }),
        ClientEvent::Message(text) => return message_line(&text),
        _ => return None,
    })
}

/// `receive` and `invoked` lines from an inbound frame (every packet of a batch).
fn message_line(text: &str) -> Option<Value> {
    let v: Value = serde_json::from_str(text).ok()?;
    let packets = match v {
        Value::Array(a) => a,
        v => vec![v],
    };
    let mut lines = Vec::new();
    for p in packets {
        let Some(event) = p.get("event").and_then(Value::as_str) else { continue };
        if matches!(event, "#publish" | "#kickOut" | "#setAuthToken" | "#removeAuthToken") {
            continue;
        }
        let data = p.get("data").cloned().unwrap_or(Value::Null);
        lines.push(match p.get("cid").and_then(Value::as_u64) {
            Some(_) => json!({ "type": "invoked", "procedure": event, "data": data }),
            None => json!({ "type": "receive", "event": event, "data": data }),
        });
    }
    for l in &lines[..lines.len().saturating_sub(1)] {
        print_line(l);
    }
    lines.pop()
}

/// The repl. Each command acts on the client before the next line is read (calls are made when
/// the client's method is called; only the wait for their outcome runs in a task), so commands
/// take effect in the order they arrive whatever the runtime. Event lines come from one consumer
/// of every client event ([`Client::events`]), so they keep the order the client emitted them in.
async fn repl(client: Client, rt: Arc<dyn Runtime>) -> i32 {
    let mut events = client.events();
    let c = client.clone();
    rt.spawn(Box::pin(async move {
        while let Some(ev) = events.next().await {
            if let Some(line) = event_line(ev, &c) {
                print_line(&line);
            }
        }
    }));
    let rules: Arc<Mutex<HashMap<String, Result<Value, Value>>>> = Arc::new(Mutex::new(HashMap::new()));
    client.connect();
    let stdin = stdin_lines();
    while let Ok(line) = stdin.recv().await {
        if line.trim().is_empty() {
            continue;
        }
        let cmd: Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(e) => {
                print_line(
                    &json!({ "type": "error", "error": { "name": "InvalidArgumentsError", "message": format!("bad command: {e}") } }),
                );
                continue;
            }
        };
        repl_op(&client, cmd, &rules, &rt);
    }
    0
}

fn result(id: &Option<Value>, r: Result<Option<Value>, Error>) {
    let Some(id) = id else {
        if let Err(e) = r {
            print_line(&json!({ "type": "error", "error": err_value(&e) }));
        }
        return;
    };
    print_line(&match r {
        Ok(Some(d)) => json!({ "type": "result", "id": id, "data": d }),
        Ok(None) => json!({ "type": "result", "id": id }),
        Err(e) => json!({ "type": "result", "id": id, "error": err_value(&e) }),
    });
}

/// Acts on one repl command now; what waits for the server is spawned.
fn repl_op(
    client: &Client,
    cmd: Value,
    rules: &Arc<Mutex<HashMap<String, Result<Value, Value>>>>,
    rt: &Arc<dyn Runtime>,
) {
    let id = cmd.get("id").cloned();
    let s = |k: &str| cmd.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    let data = cmd.get("data").cloned();
    match cmd.get("op").and_then(Value::as_str).unwrap_or_default() {
        "subscribe" => {
            let channel = s("channel");
            let opts = SubscribeOptions {
                wait_for_auth: cmd.get("waitForAuth").and_then(Value::as_bool).unwrap_or(false),
                priority: cmd.get("priority").and_then(Value::as_i64),
                data,
            };
            let mut ch = client.subscribe(&channel, opts);
            rt.spawn(Box::pin(async move {
                while let Some(d) = ch.next().await {
                    print_line(&json!({ "type": "publish", "channel": channel, "data": d }));
                }
            }));
            result(&id, Ok(None));
        }
        "unsubscribe" => {
            client.unsubscribe(&s("channel"));
            result(&id, Ok(None));
        }
        "publish" => {
            let call = client.invoke_publish(&s("channel"), data);
            rt.spawn(Box::pin(async move { result(&id, call.await.map(|_| None)) }));
        }
        "transmitPublish" => {
            let call = client.transmit_publish(&s("channel"), data);
            rt.spawn(Box::pin(async move { result(&id, call.await.map(|_| None)) }));
        }
        "transmit" => {
            let call = client.transmit_raw(&s("event"), data);
            rt.spawn(Box::pin(async move { result(&id, call.await.map(|_| None)) }));
        }
        "invoke" => {
            let timeout = cmd
                .get("ackTimeout")
                .and_then(Value::as_u64)
                .map_or(client.options().ack_timeout, Duration::from_millis);
            let call = client.invoke_raw(&s("procedure"), data, timeout);
            rt.spawn(Box::pin(
                async move { result(&id, call.await.map(|d| Some(d.unwrap_or(Value::Null)))) },
            ));
        }
        "authenticate" => {
            let call = client.authenticate(&s("token"));
            rt.spawn(Box::pin(async move { result(&id, call.await.map(|_| None)) }));
        }
        "deauthenticate" => {
            client.deauthenticate();
            result(&id, Ok(None));
        }
        "disconnect" => {
            let code =
                cmd.get("code").and_then(Value::as_u64).and_then(|c| u16::try_from(c).ok()).unwrap_or(1000);
            client.disconnect(code, &s("reason"));
            result(&id, Ok(None));
        }
        "connect" => {
            client.connect();
            result(&id, Ok(None));
        }
        op @ ("respond" | "respondError") => {
            let procedure = s("procedure");
            let answer = if op == "respond" {
                Ok(data.unwrap_or(Value::Null))
            } else {
                Err(cmd.get("error").cloned().unwrap_or(Value::Null))
            };
            let first =
                rules.lock().unwrap_or_else(|e| e.into_inner()).insert(procedure.clone(), answer).is_none();
            if first {
                let mut requests = client.procedure(&procedure);
                let rules = rules.clone();
                rt.spawn(Box::pin(async move {
                    while let Some(req) = requests.next().await {
                        let rule =
                            rules.lock().unwrap_or_else(|e| e.into_inner()).get(req.procedure()).cloned();
                        let _ = match rule {
                            Some(Ok(d)) => req.end(d),
                            Some(Err(e)) => req.error(RemoteError::from_value(e)),
                            None => Ok(()),
                        };
                    }
                }));
            }
            result(&id, Ok(None));
        }
        "state" => {
            let mut v = json!({
                "type": "state",
                "state": client.state().as_str(),
                "authState": client.auth_state().as_str(),
                "socketId": client.id(),
                "subscriptions": client.subscriptions(false),
            });
            if let Some(id) = id {
                v["id"] = id;
            }
            print_line(&v);
        }
        other => print_line(
            &json!({ "type": "error", "error": { "name": "InvalidArgumentsError", "message": format!("unknown op {other}") } }),
        ),
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
    let mut args = parse_args();
    if args.command[0] == "repl" {
        args.options.auto_connect = false;
    }
    let code = match args.runtime.as_str() {
        #[cfg(feature = "tokio")]
        "tokio" => {
            // One thread runs the client's tasks and the printing tasks, as smol's global executor
            // (one thread by default) does: lines printed by different tasks (an event line and a
            // result line) come in the order the client produced them on both runtimes. On a
            // multi-thread runtime two tasks print in parallel, in either order.
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap_or_else(|e| {
                eprintln!("client: {e}");
                std::process::exit(1)
            });
            rt.block_on(async {
                let client = socketcluster::tokio::connect(args.options.clone());
                main_async(args, client, socketcluster::tokio::runtime()).await
            })
        }
        _ => smol::block_on(async {
            let client = socketcluster::smol::connect(args.options.clone());
            main_async(args, client, socketcluster::smol::runtime()).await
        }),
    };
    let _ = std::io::stdout().flush();
    std::process::exit(code);
}
