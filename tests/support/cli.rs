//! Running `examples/client` as a child process, for the CLI tests: to completion ([`run`]) or
//! kept running with its stdin open ([`Running`]), every wait bounded; and [`cli_tests!`], one
//! test per case, client runtime and server kind.
//!
//! Include it after `peers.rs`:
//!
//! ```ignore
//! #[path = "support/peers.rs"]
//! mod peers;
//! #[macro_use]
//! #[path = "support/cli.rs"]
//! mod cli;
//! ```
#![allow(dead_code)]

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::peers;

/// How long a client run that takes milliseconds may take on a loaded machine.
pub(crate) const LIMIT: Duration = Duration::from_secs(20);

pub(crate) fn client_cmd(url: &str, runtime: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(peers::example_bin("client"));
    cmd.args(["--url", url, "--runtime", runtime]).args(args);
    cmd
}

/// What a finished run printed.
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) code: Option<i32>,
    pub(crate) lines: Vec<Value>,
    pub(crate) took: Duration,
}

/// Runs the client to completion (stdin closed), at most `limit`.
pub(crate) fn run_with(mut cmd: Command, limit: Duration) -> Run {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the client example starts");
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the client did not exit within {limit:?}: {cmd:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let took = start.elapsed();
    let mut out = String::new();
    child.stdout.take().expect("stdout").read_to_string(&mut out).expect("utf-8 stdout");
    let lines = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {l}")))
        .collect();
    Run { code: status.code(), lines, took }
}

pub(crate) fn run(url: &str, runtime: &str, args: &[&str]) -> Run {
    run_with(client_cmd(url, runtime, args), LIMIT)
}

/// A client that keeps running: its stdin stays open, its stdout lines are read as they come.
pub(crate) struct Running {
    child: Child,
    stdin: Option<ChildStdin>,
    pub(crate) lines: mpsc::Receiver<String>,
    /// Lines read but not yet matched by [`Running::expect`], in order.
    pub(crate) backlog: Vec<Value>,
    /// Every line, in order.
    pub(crate) all: Vec<Value>,
}

impl Running {
    pub(crate) fn start(url: &str, runtime: &str, args: &[&str]) -> Running {
        let mut child = client_cmd(url, runtime, args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the client example starts");
        let stdin = child.stdin.take();
        let lines = peers::read_lines(child.stdout.take().expect("stdout"));
        Running { child, stdin, lines, backlog: Vec::new(), all: Vec::new() }
    }

    pub(crate) fn send(&mut self, command: Value) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{command}").expect("write to the client's stdin");
        stdin.flush().expect("flush");
    }

    /// The first line (earlier unmatched ones included) that `want` accepts; fails after
    /// [`LIMIT`].
    pub(crate) fn expect(&mut self, what: &str, want: impl Fn(&Value) -> bool) -> Value {
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

    /// Expects exactly the line `line`.
    pub(crate) fn expect_eq(&mut self, line: Value) {
        let what = line.to_string();
        self.expect(&what, |v| *v == line);
    }

    /// The position of the first line equal to `line` among all lines read so far.
    pub(crate) fn position(&self, line: &Value) -> Option<usize> {
        self.all.iter().position(|v| v == line)
    }

    /// Closes stdin and waits (bounded) for the exit code.
    pub(crate) fn finish(mut self) -> Option<i32> {
        drop(self.stdin.take());
        self.wait()
    }

    pub(crate) fn wait(&mut self) -> Option<i32> {
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

/// `mod CASE { mod on_smol { fn js, fn rust } mod on_tokio { ... } }`: one test per client runtime
/// and server.
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
