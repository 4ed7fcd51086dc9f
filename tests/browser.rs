//! The demo in a real browser: headless Chromium (Debian's `chromium`, installed with apt-get
//! when missing, like `redis-server` for the scale-out tests) opens the page of the
//! `socketcluster` program in two tabs; one publishes, the other shows it; the program is
//! restarted on the same port and both tabs reconnect and resubscribe on their own; a
//! screenshot is taken (`target/tmp/demo.png`). The browser is driven by `playwright-core`
//! (pinned in `tests/interop/package-lock.json`) from `tests/interop/browser-demo.mjs`.
#![cfg(feature = "cli")]

#[path = "support/peers.rs"]
mod peers;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use peers::Peer;

const BIN: &str = env!("CARGO_BIN_EXE_socketcluster");

fn chromium() -> PathBuf {
    let path = PathBuf::from(std::env::var_os("CHROMIUM").unwrap_or_else(|| "/usr/bin/chromium".into()));
    if !path.exists() {
        let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0"));
        let script = "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium";
        let mut cmd = if root { Command::new("sh") } else { Command::new("sudo") };
        if !root {
            cmd.arg("-n").arg("sh");
        }
        let _ = cmd.arg("-c").arg(script).stdout(Stdio::null()).status();
    }
    assert!(
        path.exists(),
        "{} is missing: the browser test needs Chromium (`apt-get install chromium`; the test tried, \
         bash .ci/run does it too), or CHROMIUM=/path/to/chrome",
        path.display()
    );
    path
}

fn wait_for(lines: &std::sync::mpsc::Receiver<String>, step: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines.recv_timeout(left).unwrap_or_else(|_| panic!("the browser never reached: {step}"));
        println!("browser: {line}");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        if v["step"] == step {
            return;
        }
    }
}

#[test]
fn two_tabs_chat_through_the_demo_and_reconnect_after_a_restart() {
    let chromium = chromium();
    peers::ensure_npm();
    let args = ["--host", "127.0.0.1", "--history", "demo-test=100", "--port"];
    let mut server = Peer::start(Path::new(BIN), &[&args[..], &["0"]].concat());
    let port = server.port().to_string();
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("demo.png");
    let _ = std::fs::remove_file(&shot);
    let mut browser = Command::new("node")
        .arg(peers::interop_dir().join("browser-demo.mjs"))
        .arg(format!("http://{}", server.addr))
        .arg(&shot)
        .env("CHROMIUM", &chromium)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node runs");
    let lines = peers::read_lines(browser.stdout.take().expect("stdout"));
    wait_for(&lines, "both tabs connected and subscribed");
    wait_for(&lines, "the second tab shows the first tab's message");
    wait_for(&lines, "waiting for a restart");

    assert!(server.stop(), "the program exits 0 on SIGTERM");
    let restarted = Peer::start(Path::new(BIN), &[&args[..], &[port.as_str()]].concat());
    let mut stdin = browser.stdin.take().expect("stdin");
    writeln!(stdin, "restarted").expect("tell the browser");
    wait_for(&lines, "both tabs reconnected and resubscribed");
    wait_for(&lines, "screenshot");

    let start = Instant::now();
    let status = loop {
        if let Some(s) = browser.try_wait().expect("wait") {
            break s;
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = browser.kill();
            panic!("the browser script did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "browser-demo.mjs failed (see its stderr above)");
    let png = std::fs::read(&shot).expect("the screenshot was written");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000, "a real PNG screenshot");
    drop(restarted);
}
