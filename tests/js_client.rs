//! The official socketcluster-client 20.0.2 against our server: the conformance suite in
//! `tests/interop/client-suite.mjs` drives `examples/interop_server`, on smol and on tokio.
#![cfg(feature = "smol")]

#[path = "support/peers.rs"]
mod peers;

use std::process::Command;

fn suite(runtime: &str, group: &str) {
    peers::ensure_npm();
    let server = format!("{} --runtime {runtime}", peers::example_bin("interop_server").display());
    let script = peers::interop_dir().join("client-suite.mjs");
    let out = Command::new("timeout")
        .args(["300", "node"])
        .arg(&script)
        .args(["--server", &server, "--group", group])
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}\n{stderr}");
    let failed: Vec<&str> = stdout.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert!(
        out.status.success() && failed.is_empty(),
        "JS client suite ({group}) against our {runtime} server failed:\n{}",
        failed.join("\n")
    );
    let min = if group == "core" { 20 } else { 9 };
    assert!(
        stdout.lines().filter(|l| l.starts_with("ok ")).count() >= min,
        "too few scenarios ran:\n{stdout}"
    );
}

#[test]
fn official_js_client_against_our_server_on_smol() {
    suite("smol", "core");
}

#[cfg(feature = "tokio")]
#[test]
fn official_js_client_against_our_server_on_tokio() {
    suite("tokio", "core");
}

/// Tokens, access rules (middleware) and limits: the suite's `auth` group.
#[test]
fn official_js_client_auth_and_middleware_on_smol() {
    suite("smol", "auth");
}

#[cfg(feature = "tokio")]
#[test]
fn official_js_client_auth_and_middleware_on_tokio() {
    suite("tokio", "auth");
}
