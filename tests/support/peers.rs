//! Peers for the interop tests: the official npm packages (installed from the committed lock
//! file on first use) and our example programs, started as child processes.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// `tests/interop` in the source tree.
pub(crate) fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop")
}

/// Runs `npm ci` in `tests/interop` unless `node_modules` is already there. Test binaries run in
/// parallel, so a lock directory makes the install happen once.
pub(crate) fn ensure_npm() {
    let dir = interop_dir();
    let done = dir.join("node_modules/.package-lock.json");
    if done.exists() {
        return;
    }
    let lock = dir.join(".npm-install.lock");
    let start = Instant::now();
    loop {
        if std::fs::create_dir(&lock).is_ok() {
            break;
        }
        if done.exists() {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "another test's npm ci did not finish in 5 minutes"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let status = if done.exists() {
        None
    } else {
        Some(Command::new("npm").args(["ci", "--no-audit", "--no-fund"]).current_dir(&dir).status())
    };
    let _ = std::fs::remove_dir(&lock);
    if let Some(status) = status {
        let status = status.expect("npm is installed (node 20 and npm are needed for the interop tests)");
        assert!(status.success(), "npm ci in tests/interop failed");
    }
}

/// The path of an example program built by `cargo test` (target/<profile>/examples/<name>).
pub(crate) fn example_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>");
    let path = profile_dir.join("examples").join(name);
    assert!(path.exists(), "{} is missing: build the examples (`cargo test` does)", path.display());
    path
}

/// A server program that prints `{"listening":"HOST:PORT"}` when ready; stopped with SIGTERM on
/// drop.
pub(crate) struct Peer {
    child: Child,
    /// `HOST:PORT`.
    pub(crate) addr: String,
    lines: mpsc::Receiver<String>,
}

impl Peer {
    /// Starts `program args...` and waits (at most 30 s) for its `listening` line.
    pub(crate) fn start(program: &Path, args: &[&str]) -> Peer {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        let lines = read_lines(child.stdout.take().expect("piped stdout"));
        let first = lines.recv_timeout(Duration::from_secs(30)).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("{} printed no listening line within 30 s", program.display())
        });
        let v: serde_json::Value =
            serde_json::from_str(&first).unwrap_or_else(|_| panic!("not JSON: {first}"));
        let addr =
            v["listening"].as_str().unwrap_or_else(|| panic!("no listening address in {first}")).to_string();
        Peer { child, addr, lines }
    }

    /// The official socketcluster-server 20.0.1 running `tests/interop/server.mjs` with `args`.
    pub(crate) fn js_server(args: &[&str]) -> Peer {
        ensure_npm();
        let script = interop_dir().join("server.mjs");
        let mut all = vec![script.to_str().expect("utf-8 path"), "--port", "0"];
        all.extend_from_slice(args);
        Peer::start(Path::new("node"), &all)
    }

    /// Our `examples/interop_server` on `runtime` with `args`.
    pub(crate) fn rust_server(runtime: &str, args: &[&str]) -> Peer {
        let mut all = vec!["--port", "0", "--runtime", runtime];
        all.extend_from_slice(args);
        Peer::start(&example_bin("interop_server"), &all)
    }

    /// `ws://HOST:PORT/socketcluster/`.
    pub(crate) fn url(&self) -> String {
        format!("ws://{}/socketcluster/", self.addr)
    }

    /// The port.
    pub(crate) fn port(&self) -> u16 {
        self.addr.rsplit(':').next().and_then(|p| p.parse().ok()).expect("port")
    }

    /// Later stdout lines, each within `limit`.
    pub(crate) fn next_line(&self, limit: Duration) -> Option<String> {
        self.lines.recv_timeout(limit).ok()
    }

    /// Kills the process at once (SIGKILL): a crash, nothing closed cleanly.
    pub(crate) fn kill_hard(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits (at most 10 s) for the exit; returns whether it exited 0.
    pub(crate) fn stop(&mut self) -> bool {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Forwards a child's stdout lines to a channel.
pub(crate) fn read_lines(stdout: ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Asserts that a token payload is `data` plus the `iat` and `exp` both servers add (default
/// expiry: a day).
pub(crate) fn assert_claims(payload: &serde_json::Value, data: &serde_json::Value) {
    let mut rest = payload.as_object().unwrap_or_else(|| panic!("not an object: {payload}")).clone();
    let iat = rest.remove("iat").and_then(|v| v.as_u64()).unwrap_or_else(|| panic!("no iat: {payload}"));
    let exp = rest.remove("exp").and_then(|v| v.as_u64()).unwrap_or_else(|| panic!("no exp: {payload}"));
    assert_eq!(exp - iat, 86_400, "{payload}");
    assert_eq!(serde_json::Value::Object(rest), *data, "{payload}");
}
