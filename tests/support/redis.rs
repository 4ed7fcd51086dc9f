//! Real Redis for the scale-out tests: `redis-server` processes on free loopback ports (a single
//! node, or a 3-node cluster), each in its own temporary directory, killed when dropped. Nothing
//! is skipped: without `redis-server` the tests install it (Debian/Ubuntu `apt-get`, as root or
//! with sudo) like the npm packages, and fail with a clear message when that is not possible.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a Redis server may take to start answering.
const START: Duration = Duration::from_secs(20);

fn installed(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Installs `redis-server` with apt when it is missing (once, however many test binaries ask:
/// a lock directory serializes them), so `cargo test --all-features` works on a fresh machine.
fn install_redis() {
    if installed("redis-server") && installed("redis-cli") {
        return;
    }
    let lock = std::env::temp_dir().join("socketcluster-redis-install.lock");
    let start = Instant::now();
    while std::fs::create_dir(&lock).is_err() {
        if installed("redis-server") && installed("redis-cli") {
            return;
        }
        if start.elapsed() > Duration::from_secs(600) {
            return; // someone else's install hangs: report below
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    if !(installed("redis-server") && installed("redis-cli")) {
        let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0"));
        let script =
            "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server";
        let mut cmd = if root { Command::new("sh") } else { Command::new("sudo") };
        if !root {
            cmd.arg("-n").arg("sh");
        }
        let _ = cmd.arg("-c").arg(script).stdout(Stdio::null()).status();
    }
    let _ = std::fs::remove_dir(&lock);
}

/// Makes sure `redis-server` and `redis-cli` are there (installing them if it can); panics with
/// a clear message otherwise.
pub(crate) fn require_redis() {
    install_redis();
    for program in ["redis-server", "redis-cli"] {
        assert!(
            installed(program),
            "`{program}` was not found: the scale-out tests need a real Redis ≥ 7. Install it with \
             `apt-get update && apt-get install -y redis-server` (the tests tried; bash .ci/run does it too)"
        );
    }
}

/// A loopback port nobody listens on now (and, with `bus`, also port + 10000, for cluster mode).
fn free_port(bus: bool) -> u16 {
    for _ in 0..200 {
        let Ok(l) = TcpListener::bind("127.0.0.1:0") else { continue };
        let Ok(port) = l.local_addr().map(|a| a.port()) else { continue };
        if !bus {
            return port;
        }
        if port <= 55535 && TcpListener::bind(("127.0.0.1", port + 10000)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port");
}

/// One `redis-server` process.
pub(crate) struct RedisServer {
    child: Option<Child>,
    /// Its port on 127.0.0.1.
    pub(crate) port: u16,
    dir: PathBuf,
    cluster: bool,
}

impl RedisServer {
    /// A single node on a free port.
    pub(crate) fn start() -> RedisServer {
        Self::start_any(false)
    }

    fn start_any(cluster: bool) -> RedisServer {
        require_redis();
        for _ in 0..5 {
            let port = free_port(cluster);
            let dir = std::env::temp_dir().join(format!("sc-redis-{}-{port}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("temporary directory");
            let mut r = RedisServer { child: None, port, dir, cluster };
            if r.spawn() {
                return r;
            }
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    /// Starts the process on `self.port`; false when it exited (port taken meanwhile).
    fn spawn(&mut self) -> bool {
        let port = self.port.to_string();
        let mut args = vec!["--port", &port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"];
        if self.cluster {
            args.extend(["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]);
            args.extend(["--cluster-node-timeout", "5000"]);
        }
        let child = Command::new("redis-server")
            .args(&args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start redis-server: {e}"));
        self.child = Some(child);
        let start = Instant::now();
        while start.elapsed() < START {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return false;
            }
            if self.try_query::<String>(&redis::cmd("PING")).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on port {} did not answer PING within {START:?}", self.port);
    }

    /// `redis://127.0.0.1:PORT`.
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the process (SIGKILL: no goodbye to its clients) and waits for it.
    pub(crate) fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port, empty (retrying while the port is still taken).
    pub(crate) fn restart(&mut self) {
        self.kill();
        let start = Instant::now();
        while !self.spawn() {
            assert!(start.elapsed() < START, "redis-server could not start again on port {}", self.port);
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs `cmd` on a new connection.
    pub(crate) fn try_query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> redis::RedisResult<T> {
        let client = redis::Client::open(self.url())?;
        let mut con = client.get_connection_with_timeout(Duration::from_secs(2))?;
        con.set_read_timeout(Some(Duration::from_secs(5)))?;
        cmd.query(&mut con)
    }

    /// Runs `cmd`; panics on failure.
    pub(crate) fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> T {
        self.try_query(cmd).unwrap_or_else(|e| panic!("redis on port {}: {cmd:?}: {e}", self.port))
    }

    /// `PUBSUB CHANNELS pattern`, sorted.
    pub(crate) fn channels(&self, pattern: &str) -> Vec<String> {
        let mut v: Vec<String> = self.query(redis::cmd("PUBSUB").arg("CHANNELS").arg(pattern));
        v.sort();
        v
    }

    /// `PUBSUB SHARDCHANNELS pattern` (this node only), sorted.
    pub(crate) fn shard_channels(&self, pattern: &str) -> Vec<String> {
        let mut v: Vec<String> = self.query(redis::cmd("PUBSUB").arg("SHARDCHANNELS").arg(pattern));
        v.sort();
        v
    }

    /// How many connections subscribe to `channel` (`PUBSUB NUMSUB`).
    pub(crate) fn numsub(&self, channel: &str) -> usize {
        let v: Vec<(String, usize)> = self.query(redis::cmd("PUBSUB").arg("NUMSUB").arg(channel));
        v.first().map_or(0, |(_, n)| *n)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis Cluster of three primaries (no replicas) on loopback.
pub(crate) struct RedisCluster {
    /// The nodes.
    pub(crate) nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three `--cluster-enabled` nodes, joins them with `redis-cli --cluster create` and
    /// waits until every node reports `cluster_state:ok`.
    pub(crate) fn start() -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..3).map(|_| RedisServer::start_any(true)).collect();
        let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let out = Command::new("timeout")
            .args(["60", "redis-cli", "--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli runs");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let start = Instant::now();
        for n in &nodes {
            loop {
                let info: String = n.query(&redis::cmd("CLUSTER").arg("INFO").clone());
                if info.contains("cluster_state:ok") {
                    break;
                }
                assert!(start.elapsed() < START, "cluster not ok within {START:?}: {info}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        RedisCluster { nodes }
    }

    /// `redis-cluster://HOST:PORT,...` for `interop_server --broker`.
    pub(crate) fn broker_url(&self) -> String {
        let addrs: Vec<String> = self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        format!("redis-cluster://{}", addrs.join(","))
    }

    /// Every node's `PUBSUB SHARDCHANNELS pattern`, concatenated and sorted.
    pub(crate) fn shard_channels(&self, pattern: &str) -> Vec<String> {
        let mut v: Vec<String> = self.nodes.iter().flat_map(|n| n.shard_channels(pattern)).collect();
        v.sort();
        v
    }

    /// The node that owns `key`'s hash slot (index into `nodes`).
    pub(crate) fn owner(&self, key: &str) -> usize {
        let slot: u16 = self.nodes[0].query(redis::cmd("CLUSTER").arg("KEYSLOT").arg(key));
        let ranges: Vec<redis::Value> = self.nodes[0].query(&redis::cmd("CLUSTER").arg("SLOTS").clone());
        for r in ranges {
            let redis::Value::Array(items) = r else { continue };
            let int = |v: &redis::Value| match v {
                redis::Value::Int(i) => *i,
                _ => -1,
            };
            let (lo, hi) = (int(&items[0]), int(&items[1]));
            if (lo..=hi).contains(&i64::from(slot)) {
                let redis::Value::Array(primary) = &items[2] else { continue };
                let port = int(&primary[1]);
                return self.nodes.iter().position(|n| i64::from(n.port) == port).expect("a known node");
            }
        }
        panic!("no owner for slot {slot}");
    }
}
