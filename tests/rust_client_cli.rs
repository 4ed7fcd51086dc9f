//! `examples/client` (interop contract §2) against the official socketcluster-server 20.0.1
//! (`tests/interop/server.mjs`) and against our `examples/interop_server` on smol.
//!
//! Test names: `CASE::on_RUNTIME::SERVER`, where RUNTIME is the client's `--runtime`. Every
//! process is bounded: it is killed and the test fails when it does not finish in time.
#![cfg(feature = "smol")]

#[path = "support/peers.rs"]
mod peers;
#[macro_use]
#[path = "support/cli.rs"]
mod cli;

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use cli::{LIMIT, Running, run, run_with};
use peers::Peer;

fn server(kind: &str) -> Peer {
    match kind {
        "js" => Peer::js_server(&[]),
        "rust" => Peer::rust_server("smol", &[]),
        other => panic!("unknown server kind {other}"),
    }
}

cli_tests! {
    invoke_echo { smol: [js, rust], tokio: [js, rust] }
    invoke_fail { smol: [js, rust], tokio: [js] }
    publish_and_subscribe { smol: [js, rust], tokio: [js] }
    subscribe_refused { smol: [js], tokio: [] }
    transmit { smol: [js, rust], tokio: [] }
    repl { smol: [js, rust], tokio: [js] }
    repl_keeps_order { smol: [js], tokio: [js] }
}

// ---------------------------------------------------------------------------------------------
// Cases against a server

fn invoke_echo(server: &Peer, runtime: &str) {
    let url = server.url();
    let r = run(&url, runtime, &["invoke", "echo", r#"{"a":[1,"x"],"b":null}"#]);
    assert_eq!((r.code, &r.lines[..]), (Some(0), &[json!({"a": [1, "x"], "b": null})][..]), "{r:?}");
    let r = run(&url, runtime, &["invoke", "echo", "null"]);
    assert_eq!((r.code, &r.lines[..]), (Some(0), &[Value::Null][..]), "{r:?}");
    // A response without data prints null.
    let r = run(&url, runtime, &["invoke", "deauth", "{}"]);
    assert_eq!((r.code, &r.lines[..]), (Some(0), &[Value::Null][..]), "{r:?}");
}

fn invoke_fail(server: &Peer, runtime: &str) {
    let url = server.url();
    let r = run(&url, runtime, &["invoke", "fail", "1"]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert_eq!(r.lines, vec![json!({"error": {"message": "boom", "name": "CustomError", "extra": 42}})]);
    let r = run(&url, runtime, &["invoke", "fail-plain", "1"]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert_eq!(r.lines, vec![json!({"error": {"message": "plain"}})]);
    // An unhandled procedure: the ack timeout.
    let r = run(&url, runtime, &["--ack-timeout", "300", "invoke", "nobody-home", "1"]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert_eq!(r.lines[0]["error"]["name"], "TimeoutError", "{r:?}");
    assert_eq!(r.lines[0]["error"]["message"], "Event response for nobody-home event timed out");
}

fn publish_and_subscribe(server: &Peer, runtime: &str) {
    let url = server.url();
    let mut sub = Running::start(&url, runtime, &["subscribe", "news", "other", "--count", "2"]);
    sub.expect_eq(json!({"type": "subscribe", "channel": "news"}));
    sub.expect_eq(json!({"type": "subscribe", "channel": "other"}));
    let r = run(&url, runtime, &["publish", "news", r#""a""#]);
    assert_eq!((r.code, r.lines.len()), (Some(0), 0), "publish prints nothing: {r:?}");
    let r = run(&url, runtime, &["publish", "other", r#"{"b":2}"#]);
    assert_eq!((r.code, r.lines.len()), (Some(0), 0), "{r:?}");
    sub.expect_eq(json!({"type": "publish", "channel": "news", "data": "a"}));
    sub.expect_eq(json!({"type": "publish", "channel": "other", "data": {"b": 2}}));
    // Exits after --count messages, stdin still open.
    assert_eq!(sub.wait(), Some(0));
    assert!(sub.backlog.is_empty(), "unexpected lines: {:?}", sub.backlog);
}

/// A refused subscription: `{"error":ERR}`, exit 1. (Only the JS server: our interop_server
/// does not have the contract's `private/` rule yet.)
fn subscribe_refused(server: &Peer, runtime: &str) {
    let mut sub = Running::start(&server.url(), runtime, &["subscribe", "private/x"]);
    let line = sub.expect("the error line", |v| v.get("error").is_some());
    assert_eq!(line["error"]["name"], "AuthRequiredError", "{line}");
    assert_eq!(line["error"]["message"], "Subscribing to private/x requires authentication", "{line}");
    assert_eq!(sub.wait(), Some(1));
}

/// Without `--count`, `subscribe` exits 0 when stdin closes (contract §2).
fn subscribe_until_stdin_closes(server: &Peer, runtime: &str) {
    let mut sub = Running::start(&server.url(), runtime, &["subscribe", "quiet"]);
    sub.expect_eq(json!({"type": "subscribe", "channel": "quiet"}));
    assert_eq!(sub.finish(), Some(0));
}

#[test]
fn subscribe_exits_when_stdin_closes() {
    subscribe_until_stdin_closes(&server("js"), "smol");
    subscribe_until_stdin_closes(&server("rust"), "smol");
}

fn transmit(server: &Peer, runtime: &str) {
    let url = server.url();
    // `transmit` exits only once its frame is written: a `#publish` transmit reaches a
    // subscriber although the process exits at once.
    let mut sub = Running::start(&url, runtime, &["subscribe", "tx", "--count", "1"]);
    sub.expect_eq(json!({"type": "subscribe", "channel": "tx"}));
    let r = run(&url, runtime, &["transmit", "#publish", r#"{"channel":"tx","data":5}"#]);
    assert_eq!((r.code, r.lines.len()), (Some(0), 0), "{r:?}");
    sub.expect_eq(json!({"type": "publish", "channel": "tx", "data": 5}));
    assert_eq!(sub.wait(), Some(0));
    let r = run(&url, runtime, &["transmit", "echo", "[1,2]"]);
    assert_eq!((r.code, r.lines.len()), (Some(0), 0), "{r:?}");
}

fn repl(server: &Peer, runtime: &str) {
    let url = server.url();
    let mut s = Running::start(&url, runtime, &["repl"]);
    let connect = s.expect("connect", |v| v["type"] == "connect");
    assert_eq!(connect["isAuthenticated"], false, "{connect}");
    let id = connect["id"].as_str().expect("socket id").to_string();
    s.send(json!({"op": "respond", "procedure": "cb", "data": {"ok": 1}, "id": "r1"}));
    s.expect_eq(json!({"type": "result", "id": "r1"}));
    s.send(json!({"op": "subscribe", "channel": "rc", "id": "s1"}));
    s.expect_eq(json!({"type": "subscribe", "channel": "rc"}));
    s.expect_eq(json!({"type": "result", "id": "s1"}));
    s.send(json!({"op": "publish", "channel": "rc", "data": "hi", "id": "p1"}));
    s.expect_eq(json!({"type": "publish", "channel": "rc", "data": "hi"}));
    s.expect_eq(json!({"type": "result", "id": "p1"}));
    s.send(json!({"op": "state", "id": "st"}));
    s.expect_eq(json!({
        "type": "state", "id": "st", "state": "open", "authState": "unauthenticated",
        "socketId": id, "subscriptions": ["rc"],
    }));
    // The server invokes `cb` on us; the respond rule answers.
    s.send(json!({"op": "invoke", "procedure": "call-me-back", "data": {"procedure": "cb", "data": 7}, "id": "c1"}));
    s.expect_eq(json!({"type": "invoked", "procedure": "cb", "data": 7}));
    s.expect_eq(json!({"type": "result", "id": "c1", "data": {"ok": 1}}));
    s.send(json!({"op": "respondError", "procedure": "cb2", "error": {"message": "m2", "name": "E2", "x": 1}, "id": "r2"}));
    s.expect_eq(json!({"type": "result", "id": "r2"}));
    s.send(json!({"op": "invoke", "procedure": "call-me-back", "data": {"procedure": "cb2", "data": null}, "id": "c2"}));
    s.expect_eq(json!({"type": "invoked", "procedure": "cb2", "data": null}));
    s.expect_eq(json!({"type": "result", "id": "c2", "error": {"message": "m2", "name": "E2", "x": 1}}));
    // Transmits from the server.
    s.send(json!({"op": "transmit", "event": "echo", "data": {"e": 1}}));
    s.expect_eq(json!({"type": "receive", "event": "echo", "data": {"e": 1}}));
    s.send(json!({"op": "invoke", "procedure": "fail", "data": 1, "id": "f1"}));
    s.expect_eq(json!({"type": "result", "id": "f1", "error": {"message": "boom", "name": "CustomError", "extra": 42}}));
    s.send(json!({"op": "unsubscribe", "channel": "rc", "id": "u1"}));
    s.expect_eq(json!({"type": "unsubscribe", "channel": "rc"}));
    s.expect_eq(json!({"type": "result", "id": "u1"}));
    let errors: Vec<&Value> = s.backlog.iter().filter(|v| v["type"] == "error").collect();
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(s.finish(), Some(0));
}

/// The repl acts on its commands in the order they arrive (each command's effect on the client
/// happens before the next command is read), and prints events in the order the client emitted
/// them. Commands are sent without waiting for results.
fn repl_keeps_order(server: &Peer, runtime: &str) {
    let mut s = Running::start(&server.url(), runtime, &["repl"]);
    s.expect("connect", |v| v["type"] == "connect");
    const N: usize = 8;
    // A respond rule, then at once a server invoke that needs it.
    for i in 0..N {
        s.send(json!({"op": "respond", "procedure": format!("cb{i}"), "data": i}));
        let data = json!({"procedure": format!("cb{i}"), "data": null});
        s.send(json!({"op": "invoke", "procedure": "call-me-back", "data": data, "id": format!("c{i}")}));
    }
    for i in 0..N {
        let id = format!("c{i}");
        let line = s.expect(&id, |v| v["type"] == "result" && v["id"] == id.as_str());
        assert_eq!(line, json!({"type": "result", "id": id, "data": i}));
    }
    // A subscribe, then at once a publish to the channel: the #subscribe leaves first.
    for i in 0..N {
        s.send(json!({"op": "subscribe", "channel": format!("o{i}")}));
        s.send(json!({"op": "publish", "channel": format!("o{i}"), "data": i, "id": format!("p{i}")}));
    }
    for i in 0..N {
        let id = format!("p{i}");
        let line = s.expect(&id, |v| v["type"] == "result" && v["id"] == id.as_str());
        assert_eq!(line, json!({"type": "result", "id": id}));
    }
    for i in 0..N {
        s.expect_eq(json!({"type": "publish", "channel": format!("o{i}"), "data": i}));
    }
    // disconnect, then at once state: already closed; every channel's unsubscribe line comes
    // before the disconnect line.
    let mark = s.all.len();
    s.send(json!({"op": "disconnect"}));
    s.send(json!({"op": "state", "id": "st"}));
    let state = s.expect("state", |v| v["type"] == "state");
    assert_eq!(state["state"], "closed", "{state}");
    let disconnect = json!({"type": "disconnect", "code": 1000, "reason": "Socket closed normally"});
    s.expect_eq(disconnect.clone());
    for i in 0..N {
        s.expect_eq(json!({"type": "unsubscribe", "channel": format!("o{i}")}));
    }
    let after: Vec<&Value> = s.all[mark..].iter().filter(|v| v["type"] != "state").collect();
    let at = after.iter().position(|v| **v == disconnect).expect("disconnect line");
    let unsubscribes = after.iter().filter(|v| v["type"] == "unsubscribe").count();
    assert_eq!(unsubscribes, N, "{after:?}");
    assert!(after[..at].iter().all(|v| v["type"] == "unsubscribe"), "{after:?}");
    assert_eq!(at, N, "the unsubscribe lines come first: {after:?}");
    let errors: Vec<&Value> = s.all.iter().filter(|v| v["type"] == "error").collect();
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(s.finish(), Some(0));
}

// ---------------------------------------------------------------------------------------------
// Cases without a server

fn closed_port_url() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    format!("ws://127.0.0.1:{port}/socketcluster/")
}

fn invoke_closed_port(runtime: &str) {
    let r = run(&closed_port_url(), runtime, &["--ack-timeout", "30000", "invoke", "echo", "1"]);
    assert_eq!(r.code, Some(1), "{r:?}");
    let e = &r.lines[0]["error"];
    assert_eq!(e["name"], "BadConnectionError", "{r:?}");
    assert_eq!(e["type"], "connectAbort", "{r:?}");
    assert_eq!(e["message"], "Event echo was aborted due to a bad connection", "{r:?}");
    assert!(r.took < Duration::from_secs(10), "took {:?} (ack timeout 30 s)", r.took);
}

#[test]
fn invoke_against_a_closed_port_fails_fast_on_smol() {
    invoke_closed_port("smol");
}

#[cfg(feature = "tokio")]
#[test]
fn invoke_against_a_closed_port_fails_fast_on_tokio() {
    invoke_closed_port("tokio");
}

#[test]
fn usage_errors_exit_2() {
    let url = closed_port_url();
    for args in [
        &["--bogus", "invoke", "echo", "1"][..],
        &["invoke", "echo"],
        &["invoke", "echo", "{not json"],
        &["frobnicate"],
        &["--runtime", "nope", "invoke", "echo", "1"],
        &["--ack-timeout", "soon", "invoke", "echo", "1"],
        &["--protocol-version", "3", "invoke", "echo", "1"],
        &["subscribe"],
    ] {
        let r = run(&url, "smol", args);
        assert_eq!(r.code, Some(2), "{args:?}: {r:?}");
        assert!(r.lines.is_empty(), "{args:?}: usage errors go to stderr: {r:?}");
    }
    // No command at all.
    let mut cmd = Command::new(peers::example_bin("client"));
    cmd.args(["--url", &url]);
    let r = run_with(cmd, LIMIT);
    assert_eq!(r.code, Some(2), "{r:?}");
}
