//! The command-line client: `invoke`, `transmit`, `publish`, `subscribe` and `repl` against any
//! SocketCluster server, JSON lines on stdout. Shared by the `socketcluster` program (its client
//! subcommands) and `examples/client` (the interop contract's scriptable client), which parse
//! their arguments each their own way and run the same commands.
//!
//! Exit codes: 0 success, 1 failed operation (`{"error":ERR}` on stdout); usage errors (2) are
//! the callers'.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::select_all;
use serde_json::{Value, json};
use socketcluster::client::{Client, ClientEvent, ClientOptions};
use socketcluster::protocol::channels::SubscribeOptions;
use socketcluster::protocol::{Error, RemoteError};
use socketcluster::runtime::Runtime;

/// Which program's conventions to follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavor {
    /// The `socketcluster` program: `subscribe` fails (1, `BadConnectionError`) when the first
    /// connection attempt fails instead of waiting for reconnects, and runs until `--count`
    /// messages or a signal (stdin is not watched, so it works with `< /dev/null`).
    Program,
    /// The interop contract's `examples/client`: `subscribe` keeps trying to connect and also
    /// ends when stdin closes.
    Interop,
}

/// What to do once connected.
#[derive(Debug, Clone)]
pub(crate) enum Command {
    /// Invoke a procedure; print its answer.
    Invoke { procedure: String, data: Value },
    /// Transmit an event; exit once it is written.
    Transmit { event: String, data: Value },
    /// Publish (acknowledged by the server).
    Publish { channel: String, data: Value },
    /// Subscribe; print each message; stop after `count` messages or at the end of stdin.
    Subscribe { channels: Vec<String>, count: Option<u64> },
    /// One JSON command per stdin line, one JSON event per stdout line.
    Repl,
}

/// Prints one JSON line on stdout, flushed.
pub(crate) fn print_line(v: &Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

fn err_value(e: &Error) -> Value {
    e.to_remote().into_value()
}

/// Connects with `options` on `runtime` (`smol`, or `tokio` with that feature) and runs
/// `command`; returns the exit code.
pub(crate) fn main_with(mut options: ClientOptions, runtime: &str, command: Command, flavor: Flavor) -> i32 {
    if matches!(command, Command::Repl) {
        options.auto_connect = false;
    }
    let code = match runtime {
        #[cfg(feature = "tokio")]
        "tokio" => {
            // One thread runs the client's tasks and the printing tasks, as smol's global executor
            // (one thread by default) does: lines printed by different tasks (an event line and a
            // result line) come in the order the client produced them on both runtimes. On a
            // multi-thread runtime two tasks print in parallel, in either order.
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cannot start the tokio runtime: {e}");
                    return 1;
                }
            };
            rt.block_on(async {
                let client = socketcluster::tokio::connect(options);
                run(command, client, socketcluster::tokio::runtime(), flavor).await
            })
        }
        _ => smol::block_on(async {
            let client = socketcluster::smol::connect(options);
            run(command, client, socketcluster::smol::runtime(), flavor).await
        }),
    };
    let _ = std::io::stdout().flush();
    code
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

/// Runs `command` on `client` to the end; returns the exit code (0 done, 1 failed operation, with
/// `{"error":ERR}` printed), with `subscribe` as `flavor` says.
pub(crate) async fn run(command: Command, client: Client, rt: Arc<dyn Runtime>, flavor: Flavor) -> i32 {
    let failed = |e: Error| {
        print_line(&json!({ "error": err_value(&e) }));
        1
    };
    match command {
        Command::Invoke { procedure, data } => {
            match client.invoke_raw(&procedure, Some(data), client.options().ack_timeout).await {
                Ok(v) => {
                    print_line(&v.unwrap_or(Value::Null));
                    0
                }
                Err(e) => failed(e),
            }
        }
        Command::Transmit { event, data } => match client.transmit(&event, data).await {
            Ok(()) => {
                client.flush().await;
                0
            }
            Err(e) => failed(e),
        },
        Command::Publish { channel, data } => match client.invoke_publish(&channel, data).await {
            Ok(()) => 0,
            Err(e) => failed(e),
        },
        Command::Subscribe { channels, count } => subscribe(&client, &channels, count, flavor).await,
        Command::Repl => repl(client, rt).await,
    }
}

async fn subscribe(client: &Client, channels: &[String], count: Option<u64>, flavor: Flavor) -> i32 {
    let fail_unreachable = flavor == Flavor::Program;
    let mut events = client.events();
    let mut data = select_all(channels.iter().map(|c| {
        let name = c.clone();
        client.subscribe(c, SubscribeOptions::default()).map(move |d| (name.clone(), d))
    }));
    let stdin = (flavor == Flavor::Interop).then(stdin_lines);
    let stdin_closed = async move {
        match stdin {
            Some(stdin) => while stdin.recv().await.is_ok() {},
            None => futures::future::pending().await,
        }
    };
    let mut stdin_closed = std::pin::pin!(futures::FutureExt::fuse(stdin_closed));
    let mut seen = 0u64;
    let mut connected = false;
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
            Some(Some(ClientEvent::Connect { .. })) => connected = true,
            Some(Some(
                ClientEvent::ConnectAbort { code, reason } | ClientEvent::Disconnect { code, reason },
            )) if fail_unreachable && !connected => {
                let message = format!(
                    "cannot connect to {} (close code {code}{}{reason})",
                    client.options().url,
                    if reason.is_empty() { "" } else { ": " }
                );
                print_line(&json!({ "error": { "name": "BadConnectionError", "message": message } }));
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
