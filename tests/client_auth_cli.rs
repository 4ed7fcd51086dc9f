//! Auth through `examples/client` (interop contract §2: `--auth-token`, the repl's `authenticate`
//! and `deauthenticate` ops and event lines) against the official socketcluster-server 20.0.1
//! (`tests/interop/server.mjs --auth-key K`) and our `examples/interop_server --auth-key K` on
//! smol. The tokens are signed by `socketcluster::auth::JwtAuth::hs256(K)`, so they must be
//! accepted by both servers.
//!
//! Test names: `CASE::on_RUNTIME::SERVER`, where RUNTIME is the client's `--runtime`. Every
//! process is bounded: it is killed and the test fails when it does not finish in time.
#![cfg(feature = "smol")]
#![allow(clippy::unwrap_used)]

#[path = "support/peers.rs"]
mod peers;

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use socketcluster::auth::JwtAuth;

use peers::Peer;

/// The servers' auth key.
const KEY: &str = "client-auth-cli-key";
/// How long a client run that takes milliseconds may take on a loaded machine.
const LIMIT: Duration = Duration::from_secs(20);

fn server(kind: &str) -> Peer {
    match kind {
        "js" => Peer::js_server(&["--auth-key", KEY]),
        "rust" => Peer::rust_server("smol", &["--auth-key", KEY]),
        other => panic!("unknown server kind {other}"),
    }
}

fn sign(payload: &Value) -> String {
    JwtAuth::hs256(KEY).sign(payload, None).unwrap()
}

fn client_cmd(url: &str, runtime: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(peers::example_bin("client"));
    cmd.args(["--url", url, "--runtime", runtime]).args(args);
    cmd
}

/// Runs the client to completion (stdin closed), at most [`LIMIT`]: exit code and stdout lines.
fn run(url: &str, runtime: &str, args: &[&str]) -> (Option<i32>, Vec<Value>) {
    let start = Instant::now();
    let mut cmd = client_cmd(url, runtime, args);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the client starts");
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if start.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the client did not exit within {LIMIT:?}: {cmd:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut out = String::new();
    child.stdout.take().expect("stdout").read_to_string(&mut out).expect("utf-8 stdout");
    let lines = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    (status.code(), lines)
}

/// A client that keeps running: its stdin stays open, its stdout lines are read as they come.
struct Running {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    /// Lines read but not yet matched by [`Running::expect`], in order.
    backlog: Vec<Value>,
    /// Every line, in order.
    all: Vec<Value>,
}

impl Running {
    fn start(url: &str, runtime: &str, args: &[&str]) -> Running {
        let mut child = client_cmd(url, runtime, args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the client starts");
        let stdin = child.stdin.take();
        let lines = peers::read_lines(child.stdout.take().expect("stdout"));
        Running { child, stdin, lines, backlog: Vec::new(), all: Vec::new() }
    }

    fn send(&mut self, command: Value) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{command}").expect("write to the client's stdin");
        stdin.flush().expect("flush");
    }

    /// The first line (earlier unmatched ones included) that `want` accepts; fails after [`LIMIT`].
    fn expect(&mut self, what: &str, want: impl Fn(&Value) -> bool) -> Value {
        if let Some(i) = self.backlog.iter().position(&want) {
            return self.backlog.remove(i);
        }
        let deadline = Instant::now() + LIMIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).unwrap_or_else(|_| {
                panic!("no line for {what} within {LIMIT:?}; unmatched lines: {:?}", self.backlog)
            });
            let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            self.all.push(v.clone());
            if want(&v) {
                return v;
            }
            self.backlog.push(v);
        }
    }

    fn expect_eq(&mut self, line: Value) {
        let what = line.to_string();
        self.expect(&what, |v| *v == line);
    }

    /// The position of the first line equal to `line` among all lines read so far.
    fn position(&self, line: &Value) -> Option<usize> {
        self.all.iter().position(|v| v == line)
    }

    /// Closes stdin and waits (bounded) for the exit code.
    fn finish(mut self) -> Option<i32> {
        drop(self.stdin.take());
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status.code();
            }
            assert!(start.elapsed() < LIMIT, "the client did not exit within {LIMIT:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `mod CASE { mod on_smol { fn js, fn rust } mod on_tokio { ... } }`.
macro_rules! cli_tests {
    ($($case:ident { smol: [$($s:ident),*], tokio: [$($t:ident),*] })*) => {
        $(
            mod $case {
                mod on_smol {
                    $(
                        #[test]
                        fn $s() {
                            let server = super::super::server(stringify!($s));
                            super::super::$case(&server, "smol");
                        }
                    )*
                }

                #[cfg(feature = "tokio")]
                mod on_tokio {
                    $(
                        #[test]
                        fn $t() {
                            let server = super::super::server(stringify!($t));
                            super::super::$case(&server, "tokio");
                        }
                    )*
                }
            }
        )*
    };
}

cli_tests! {
    auth_token_flag { smol: [js, rust], tokio: [js, rust] }
    repl_authenticate_and_deauthenticate { smol: [js, rust], tokio: [js] }
    repl_with_a_rejected_token { smol: [js, rust], tokio: [] }
}

/// Asserts that `payload` is `data` plus `iat` and `exp` (a day later).
fn assert_claims(payload: &Value, data: &Value) {
    let mut rest = payload.as_object().unwrap_or_else(|| panic!("not an object: {payload}")).clone();
    let iat = rest.remove("iat").and_then(|v| v.as_u64()).unwrap_or_else(|| panic!("no iat: {payload}"));
    let exp = rest.remove("exp").and_then(|v| v.as_u64()).unwrap_or_else(|| panic!("no exp: {payload}"));
    assert_eq!(exp - iat, 86_400, "{payload}");
    assert_eq!(Value::Object(rest), *data, "{payload}");
}

// ---------------------------------------------------------------------------------------------
// Cases

/// `--auth-token`: the handshake carries it, `whoami` prints its payload; a token of another key
/// is refused (the call still works, unauthenticated); no token: `null`.
fn auth_token_flag(server: &Peer, runtime: &str) {
    let url = server.url();
    let data = json!({"user": "cli", "roles": ["a", "b"]});
    let token = sign(&data);
    let (code, lines) = run(&url, runtime, &["--auth-token", &token, "invoke", "whoami", "null"]);
    assert_eq!(code, Some(0), "{lines:?}");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_claims(&lines[0], &data);

    let foreign = JwtAuth::hs256("another key").sign(&data, None).unwrap();
    let (code, lines) = run(&url, runtime, &["--auth-token", &foreign, "invoke", "whoami", "null"]);
    assert_eq!((code, lines), (Some(0), vec![Value::Null]));

    let (code, lines) = run(&url, runtime, &["invoke", "whoami", "null"]);
    assert_eq!((code, lines), (Some(0), vec![Value::Null]));
}

/// The repl with `--auth-token`: an `authenticate` line before `connect` (`isAuthenticated`);
/// `deauthenticate` → its result and a `deauthenticate` line, the server forgets the token;
/// `authenticate` with another token → its result and an `authenticate` line with the payload;
/// `authenticate` with garbage → an error result (AuthTokenInvalidError) and a `deauthenticate`
/// line.
fn repl_authenticate_and_deauthenticate(server: &Peer, runtime: &str) {
    let url = server.url();
    let first = json!({"user": "first"});
    let token = sign(&first);
    let mut s = Running::start(&url, runtime, &["--auth-token", &token, "repl"]);
    let connect = s.expect("connect", |v| v["type"] == "connect");
    assert_eq!(connect["isAuthenticated"], true, "{connect}");
    assert!(connect.get("authError").is_none(), "{connect}");
    let auth = s.expect("the handshake's authenticate line", |v| v["type"] == "authenticate");
    assert_claims(&auth["authToken"], &first);
    // The contract: an `authenticate` line before `connect` when the handshake token is valid.
    let (a, c) = (s.position(&auth).unwrap(), s.position(&connect).unwrap());
    assert!(a < c, "authenticate after connect: {:?}", s.all);

    s.send(json!({"op": "invoke", "procedure": "whoami", "id": "w1"}));
    let r = s.expect("whoami result", |v| v["id"] == "w1");
    assert_claims(&r["data"], &first);

    // deauthenticate
    s.send(json!({"op": "deauthenticate", "id": "d1"}));
    s.expect_eq(json!({"type": "result", "id": "d1"}));
    s.expect_eq(json!({"type": "deauthenticate"}));
    s.send(json!({"op": "invoke", "procedure": "whoami", "id": "w2"}));
    s.expect_eq(json!({"type": "result", "id": "w2", "data": null}));
    s.send(json!({"op": "state", "id": "st1"}));
    let st = s.expect("state", |v| v["id"] == "st1");
    assert_eq!(st["authState"], "unauthenticated", "{st}");

    // authenticate with another token
    let second = json!({"user": "second", "n": 2});
    let token2 = sign(&second);
    s.send(json!({"op": "authenticate", "token": token2, "id": "a1"}));
    let r = s.expect("authenticate result", |v| v["id"] == "a1");
    assert_eq!(r["type"], "result", "{r}");
    assert!(r.get("error").is_none(), "{r}");
    let auth = s.expect("authenticate line", |v| v["type"] == "authenticate");
    assert_claims(&auth["authToken"], &second);
    s.send(json!({"op": "invoke", "procedure": "whoami", "id": "w3"}));
    let r = s.expect("whoami result", |v| v["id"] == "w3");
    assert_claims(&r["data"], &second);
    s.send(json!({"op": "state", "id": "st2"}));
    let st = s.expect("state", |v| v["id"] == "st2");
    assert_eq!(st["authState"], "authenticated", "{st}");

    // authenticate with garbage: an error result, then unauthenticated
    s.send(json!({"op": "authenticate", "token": "garbage", "id": "a2"}));
    let r = s.expect("authenticate(garbage) result", |v| v["id"] == "a2");
    assert_eq!(r["error"]["name"], "AuthTokenInvalidError", "{r}");
    assert_eq!(r["error"]["message"], "jwt malformed", "{r}");
    s.expect_eq(json!({"type": "deauthenticate"}));
    s.send(json!({"op": "invoke", "procedure": "whoami", "id": "w4"}));
    s.expect_eq(json!({"type": "result", "id": "w4", "data": null}));
    s.send(json!({"op": "state", "id": "st3"}));
    let st = s.expect("state", |v| v["id"] == "st3");
    assert_eq!(st["authState"], "unauthenticated", "{st}");

    // deauthenticate while unauthenticated: a result, no event line
    s.send(json!({"op": "deauthenticate", "id": "d2"}));
    s.expect_eq(json!({"type": "result", "id": "d2"}));
    s.send(json!({"op": "invoke", "procedure": "echo", "data": "sync", "id": "e1"}));
    s.expect_eq(json!({"type": "result", "id": "e1", "data": "sync"}));

    let unexpected: Vec<&Value> = s
        .backlog
        .iter()
        .filter(|v| matches!(v["type"].as_str(), Some("error" | "deauthenticate" | "authenticate")))
        .collect();
    assert!(unexpected.is_empty(), "{unexpected:?}");
    assert_eq!(s.finish(), Some(0));
}

/// The repl with a token the server rejects: `connect` with `isAuthenticated: false` and the
/// AuthTokenInvalidError; no `authenticate` or `deauthenticate` line (the client never was
/// authenticated, as with socketcluster-client).
fn repl_with_a_rejected_token(server: &Peer, runtime: &str) {
    let url = server.url();
    let foreign = JwtAuth::hs256("another key").sign(&json!({"user": "x"}), None).unwrap();
    let mut s = Running::start(&url, runtime, &["--auth-token", &foreign, "repl"]);
    let connect = s.expect("connect", |v| v["type"] == "connect");
    assert_eq!(connect["isAuthenticated"], false, "{connect}");
    assert_eq!(connect["authError"]["name"], "AuthTokenInvalidError", "{connect}");
    assert_eq!(connect["authError"]["message"], "invalid signature", "{connect}");
    s.send(json!({"op": "invoke", "procedure": "whoami", "id": "w1"}));
    s.expect_eq(json!({"type": "result", "id": "w1", "data": null}));
    s.send(json!({"op": "state", "id": "st"}));
    let st = s.expect("state", |v| v["id"] == "st");
    assert_eq!(st["authState"], "unauthenticated", "{st}");
    let auth_lines: Vec<&Value> = s
        .all
        .iter()
        .filter(|v| matches!(v["type"].as_str(), Some("error" | "deauthenticate" | "authenticate")))
        .collect();
    assert!(auth_lines.is_empty(), "{auth_lines:?}");
    assert_eq!(s.finish(), Some(0));
}
