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
#[macro_use]
#[path = "support/cli.rs"]
mod cli;

use serde_json::{Value, json};
use socketcluster::auth::JwtAuth;

use cli::{Running, run};
use peers::{Peer, assert_claims};

/// The servers' auth key.
const KEY: &str = "client-auth-cli-key";
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

cli_tests! {
    auth_token_flag { smol: [js, rust], tokio: [js, rust] }
    repl_authenticate_and_deauthenticate { smol: [js, rust], tokio: [js] }
    repl_with_a_rejected_token { smol: [js, rust], tokio: [] }
}

// ---------------------------------------------------------------------------------------------
// Cases

/// `--auth-token`: the handshake carries it, `whoami` prints its payload; a token of another key
/// is refused (the call still works, unauthenticated); no token: `null`.
fn auth_token_flag(server: &Peer, runtime: &str) {
    let url = server.url();
    let data = json!({"user": "cli", "roles": ["a", "b"]});
    let token = sign(&data);
    let cli::Run { code, lines, .. } =
        run(&url, runtime, &["--auth-token", &token, "invoke", "whoami", "null"]);
    assert_eq!(code, Some(0), "{lines:?}");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_claims(&lines[0], &data);

    let foreign = JwtAuth::hs256("another key").sign(&data, None).unwrap();
    let cli::Run { code, lines, .. } =
        run(&url, runtime, &["--auth-token", &foreign, "invoke", "whoami", "null"]);
    assert_eq!((code, lines), (Some(0), vec![Value::Null]));

    let cli::Run { code, lines, .. } = run(&url, runtime, &["invoke", "whoami", "null"]);
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
