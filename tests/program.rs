//! The `socketcluster` program as a user runs it: one port for the demo, `/health`, `/metrics`
//! and SocketCluster; static files that refuse path traversal; clear exits on bad
//! configuration; SIGTERM; and its client commands against our program and the official server.
#![cfg(feature = "cli")]

#[path = "support/peers.rs"]
mod peers;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use peers::Peer;
use serde_json::{Value, json};
use socketcluster::client::{ClientEvent, ClientOptions};
use socketcluster::protocol::channels::SubscribeOptions;

const BIN: &str = env!("CARGO_BIN_EXE_socketcluster");
const LIMIT: Duration = Duration::from_secs(20);

fn program(args: &[&str]) -> Peer {
    let mut all = vec!["--host", "127.0.0.1", "--port", "0"];
    all.extend_from_slice(args);
    Peer::start(Path::new(BIN), &all)
}

/// A response: status, head, body.
struct Http {
    status: u16,
    head: String,
    body: String,
}

/// Reads one response (by Content-Length) from `tcp`.
fn read_response(tcp: &mut TcpStream) -> Http {
    read(tcp, false)
}

/// Reads one response; the answer to a `HEAD` (`head_only`) has no body.
fn read(tcp: &mut TcpStream, head_only: bool) -> Http {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 8192];
    let end = loop {
        if let Some(i) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = tcp.read(&mut chunk).expect("a response within the read timeout");
        assert!(n > 0, "the connection ended in the head: {:?}", String::from_utf8_lossy(&bytes));
        bytes.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
    let length = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length").then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or_else(|| panic!("no content-length: {head}"));
    let mut body = bytes[end + 4..].to_vec();
    while body.len() < length && !head_only {
        let n = tcp.read(&mut chunk).expect("the body within the read timeout");
        assert!(n > 0, "the connection ended in the body");
        body.extend_from_slice(&chunk[..n]);
    }
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{head}"));
    Http { status, head, body: String::from_utf8_lossy(&body).into_owned() }
}

fn connect(addr: &str) -> TcpStream {
    let tcp = TcpStream::connect(addr).expect("connect");
    tcp.set_read_timeout(Some(LIMIT)).expect("timeout");
    tcp
}

/// `GET path` (sent exactly as written, no normalisation) on a new connection.
fn get(addr: &str, path: &str) -> Http {
    let mut tcp = connect(addr);
    write!(tcp, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").expect("write");
    read_response(&mut tcp)
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

/// Runs the program to its end (at most [`LIMIT`]).
fn run(args: &[&str]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the program starts");
    let start = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > LIMIT {
            let _ = child.kill();
            panic!("socketcluster {args:?} did not exit within {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().expect("output")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json_lines(o: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect()
}

#[test]
fn one_port_serves_the_demo_health_metrics_and_socketcluster() {
    let server = program(&[]);
    let addr = server.addr.as_str();

    let page = get(addr, "/");
    assert_eq!(page.status, 200);
    assert!(page.head.contains("text/html"), "{}", page.head);
    assert!(page.body.contains(r#"content="/socketcluster/""#), "the page names the WebSocket path");
    assert!(page.body.contains("/app.js"));
    let bundle = get(addr, "/socketcluster-client.min.js");
    assert_eq!(bundle.status, 200);
    assert!(bundle.head.contains("text/javascript"));
    assert!(
        bundle.body.contains("20.0.2") && bundle.body.contains("export{"),
        "the pinned official ES bundle"
    );
    assert_eq!(get(addr, "/app.js").status, 200);
    let helper = get(addr, "/socketcluster-recovery.mjs");
    assert_eq!(helper.status, 200);
    assert!(helper.body.contains("export function subscribeWithRecovery"));
    assert_eq!(get(addr, "/nothing-here").status, 404);

    let health = get(addr, "/health");
    assert_eq!(health.status, 200);
    let h: Value = serde_json::from_str(&health.body).expect("JSON");
    assert_eq!(h["status"], "ok");
    assert_eq!(h["broker"], json!({"kind": "memory", "connected": true}));

    // Keep-alive: two requests on one connection, HEAD without a body.
    let mut tcp = connect(addr);
    write!(tcp, "HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n").expect("write");
    let head = read(&mut tcp, true);
    assert_eq!((head.status, head.body.as_str()), (200, ""), "nothing after the HEAD response's head");
    assert!(head.head.contains(&format!("content-length: {}", health.body.len())), "{}", head.head);
    write!(tcp, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n").expect("write");
    let again = read_response(&mut tcp);
    assert_eq!(again.status, 200);
    assert!(again.body.contains("\"status\":\"ok\""));
    write!(tcp, "POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{{}}").expect("write");
    assert_eq!(read_response(&mut tcp).status, 405);

    // A client on the same port shows in /metrics.
    let before = get(addr, "/metrics");
    assert_eq!(before.status, 200);
    assert!(before.head.contains("text/plain; version=0.0.4"), "{}", before.head);
    assert!(before.body.contains("# TYPE socketcluster_connections gauge"));
    assert_eq!(metric(&before.body, "socketcluster_connections"), 0);
    smol::block_on(async {
        let client = socketcluster::smol::connect(ClientOptions::new(server.url()));
        let mut events = client.events();
        let mut room = client.subscribe("room", SubscribeOptions::default());
        let subscribed = async {
            while let Some(e) = events.next().await {
                if matches!(e, ClientEvent::Subscribe { .. }) {
                    return;
                }
            }
        };
        assert!(
            matches!(
                futures::future::select(Box::pin(subscribed), Box::pin(smol::Timer::after(LIMIT))).await,
                futures::future::Either::Left(_)
            ),
            "subscribed within {LIMIT:?}"
        );
        client.invoke_publish("room", json!("hello")).await.expect("published");
        let got = futures::future::select(room.next(), Box::pin(smol::Timer::after(LIMIT))).await;
        assert!(matches!(got, futures::future::Either::Left((Some(d), _)) if d == json!("hello")));
        let m = get(addr, "/metrics").body;
        assert_eq!(metric(&m, "socketcluster_connections"), 1);
        assert_eq!(metric(&m, "socketcluster_subscriptions"), 1);
        assert_eq!(metric(&m, "socketcluster_channels"), 1);
        assert!(metric(&m, "socketcluster_messages_in_total") >= 3, "handshake, subscribe, publish:\n{m}");
        assert!(metric(&m, "socketcluster_messages_out_total") >= 3, "{m}");
        assert!(metric(&m, "socketcluster_bytes_out_total") > 0);
        assert_eq!(metric(&m, "socketcluster_shed_total"), 0);
        assert_eq!(metric(&m, "socketcluster_broker_connected"), 1);
    });
}

#[test]
fn health_and_metrics_are_not_reachable_through_the_socketcluster_path() {
    let server = program(&[]);
    let addr = server.addr.as_str();
    let plain = get(addr, "/socketcluster/");
    assert_eq!(plain.status, 400, "a plain GET of the WebSocket path is not a page");
    assert!(!plain.body.contains("socketcluster_"), "{}", plain.body);
    for path in ["/socketcluster/metrics", "/socketcluster/health", "/socketcluster/?/metrics"] {
        let r = get(addr, path);
        assert!(matches!(r.status, 400 | 404), "{path}: {}", r.status);
        assert!(!r.body.contains("socketcluster_") && !r.body.contains("\"status\""), "{path}: {}", r.body);
    }
    assert_eq!(get(addr, "/socketcluster/../metrics").status, 403);
    assert_eq!(get(addr, "/socketcluster/%2e%2e/health").status, 403);
}

#[test]
fn static_files_refuse_path_traversal() {
    let base = std::env::temp_dir().join(format!("sc-static-{}", std::process::id()));
    let root = base.join("public");
    std::fs::create_dir_all(root.join("sub")).expect("dirs");
    std::fs::write(root.join("index.html"), "<h1>mine</h1>").expect("write");
    std::fs::write(root.join("sub/a.txt"), "inside").expect("write");
    std::fs::write(base.join("secret.txt"), "SECRET").expect("write");
    let _ = std::fs::remove_file(root.join("link.txt"));
    std::os::unix::fs::symlink(base.join("secret.txt"), root.join("link.txt")).expect("symlink");

    let server = program(&["--static", root.to_str().expect("utf-8")]);
    let addr = server.addr.as_str();
    let index = get(addr, "/");
    assert_eq!((index.status, index.body.as_str()), (200, "<h1>mine</h1>"));
    let inside = get(addr, "/sub/a.txt");
    assert_eq!((inside.status, inside.body.as_str()), (200, "inside"));
    assert!(get(addr, "/sub/").status == 404, "no index.html in sub/");
    for path in [
        "/../secret.txt",
        "/sub/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/sub/%2E%2E%2F..%2Fsecret.txt",
        "/..%5csecret.txt",
        "/link.txt",
    ] {
        let r = get(addr, path);
        assert_eq!(r.status, 403, "{path}");
        assert!(!r.body.contains("SECRET"), "{path}");
    }
    assert_eq!(
        get(addr, "/socketcluster-client.min.js").status,
        200,
        "the bundle is served next to the folder"
    );
    // The built-in demo refuses it too.
    let demo = program(&[]);
    assert_eq!(get(&demo.addr, "/../Cargo.toml").status, 403);
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn bad_configuration_is_a_message_and_a_non_zero_exit() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port().to_string();
    let file = std::env::temp_dir().join(format!("sc-not-a-dir-{}", std::process::id()));
    std::fs::write(&file, "x").expect("write");
    let file = file.to_str().expect("utf-8");
    let mut cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (vec!["--bogus"], 2, "unexpected argument '--bogus'"),
        (vec!["--port", "eighty"], 2, "invalid value 'eighty'"),
        (vec!["--trusted-proxy", "10.0.0.0/99"], 2, "--trusted-proxy"),
        (vec!["--path", "/metrics"], 2, "--path must"),
        (vec!["--host", "127.0.0.1", "--port", &port], 1, "cannot listen on 127.0.0.1:"),
        (
            vec!["--host", "127.0.0.1", "--port", "0", "--static", "/nonexistent/dir"],
            1,
            "cannot serve static files",
        ),
        (vec!["--host", "127.0.0.1", "--port", "0", "--static", file], 1, "cannot serve static files"),
        (vec!["--log", "info,[bad"], 2, "bad --log filter"),
        (vec!["publish", "x", "not json"], 2, "not JSON"),
        (vec!["publish", "--url", "http://x/", "x", "1"], 2, "--url must be a ws:// or wss:// URL"),
    ];
    #[cfg(feature = "tls")]
    cases.extend([
        (vec!["--tls-cert", "cert.pem"], 2, "--tls-key"),
        (
            vec![
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--tls-cert",
                "/nonexistent.pem",
                "--tls-key",
                "/nonexistent.key",
            ],
            1,
            "cannot load the TLS certificate",
        ),
    ]);
    for (args, code, message) in cases {
        let out = run(&args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        assert!(err.contains(message), "{args:?}: expected {message:?} in {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    let _ = std::fs::remove_file(file);
}

#[test]
fn sigterm_closes_every_socket_with_1001_and_exits_0() {
    let mut server = program(&[]);
    smol::block_on(async {
        let client = socketcluster::smol::connect(ClientOptions::new(server.url()));
        let mut events = client.events();
        let next_close = async {
            let mut connected = false;
            while let Some(e) = events.next().await {
                match e {
                    ClientEvent::Connect { .. } if !connected => {
                        connected = true;
                        assert!(server.stop(), "exit status 0 after SIGTERM");
                    }
                    ClientEvent::Disconnect { code, .. } => return code,
                    _ => {}
                }
            }
            0
        };
        let code = futures::future::select(Box::pin(next_close), Box::pin(smol::Timer::after(LIMIT))).await;
        assert!(matches!(code, futures::future::Either::Left((1001, _))), "closed with 1001");
    });
}

/// `subscribe --count 1` prints its subscribe line; a `publish` reaches it.
fn publish_reaches_a_subscriber(url: &str) {
    let mut sub = Command::new(BIN)
        .args(["subscribe", "--url", url, "news", "--count", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("subscribe starts");
    let lines = peers::read_lines(sub.stdout.take().expect("stdout"));
    let first = lines.recv_timeout(LIMIT).expect("a subscribe line");
    assert_eq!(
        serde_json::from_str::<Value>(&first).ok(),
        Some(json!({"type":"subscribe","channel":"news"}))
    );
    let out = run(&["publish", "--url", url, "news", r#"{"n":1}"#]);
    assert!(out.status.success(), "publish: {}", stderr(&out));
    assert_eq!(json_lines(&out), Vec::<Value>::new(), "publish prints nothing");
    let second = lines.recv_timeout(LIMIT).expect("a publish line");
    assert_eq!(
        serde_json::from_str::<Value>(&second).ok(),
        Some(json!({"type":"publish","channel":"news","data":{"n":1}}))
    );
    let start = Instant::now();
    let status = loop {
        if let Some(s) = sub.try_wait().expect("wait") {
            break s;
        }
        assert!(start.elapsed() < LIMIT, "subscribe --count 1 exits after one message");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success());
}

#[test]
fn client_commands_against_our_program() {
    let server = program(&[]);
    let url = server.url();
    publish_reaches_a_subscriber(&url);
    let out = run(&["transmit", "--url", &url, "anything", "[1,2]"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Nobody answers this procedure on the bare program: the ack timeout, exit 1.
    let out = run(&["invoke", "--url", &url, "--ack-timeout", "300", "nobody-home", "1"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json_lines(&out)[0]["error"]["name"], "TimeoutError");
}

#[test]
fn client_commands_against_the_official_server() {
    let server = Peer::js_server(&[]);
    let url = server.url();
    publish_reaches_a_subscriber(&url);
    let out = run(&["invoke", "--url", &url, "echo", r#"{"a":[1,"x"]}"#]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json_lines(&out), vec![json!({"a":[1,"x"]})]);
    let out = run(&["invoke", "--url", &url, "fail"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json_lines(&out), vec![json!({"error":{"name":"CustomError","message":"boom","extra":42}})]);
}

#[test]
fn client_commands_fail_fast_when_the_server_is_unreachable() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let url = format!("ws://127.0.0.1:{port}/socketcluster/");
    for args in [vec!["publish", "--url", &url, "x", "1"], vec!["subscribe", "--url", &url, "x"]] {
        let start = Instant::now();
        let out = run(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert_eq!(json_lines(&out)[0]["error"]["name"], "BadConnectionError", "{args:?}");
        assert!(start.elapsed() < Duration::from_secs(5), "{args:?} failed at once, not after retries");
    }
}

#[cfg(feature = "tls")]
#[path = "support/pki.rs"]
mod pki;

#[cfg(feature = "tls")]
#[test]
fn tls_serves_pages_and_wss_on_one_port() {
    let pki = pki::Pki::new("program");
    let cert = pki.cert.to_str().expect("utf-8");
    let key = pki.key.to_str().expect("utf-8");
    let server = program(&["--tls-cert", cert, "--tls-key", key]);
    let url = format!("wss://localhost:{}/socketcluster/", server.port());
    let out = run(&["publish", "--url", &url, "x", "1"]);
    assert_eq!(out.status.code(), Some(1), "an unknown CA is refused");
    assert_eq!(json_lines(&out)[0]["error"]["name"], "BadConnectionError");
    let out = run(&["publish", "--insecure", "--url", &url, "x", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Plain HTTP on the TLS port: no answer in clear, the connection is closed; the server
    // keeps serving.
    let mut tcp = connect(&server.addr);
    write!(tcp, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n").expect("write");
    let mut buf = Vec::new();
    let _ = tcp.read_to_end(&mut buf);
    assert!(!String::from_utf8_lossy(&buf).contains("\"status\""));
    let out = run(&["publish", "--insecure", "--url", &url, "x", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
}
