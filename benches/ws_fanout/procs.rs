//! Child server processes (killed after each run, on Ctrl-C/SIGTERM and on panic) and what
//! `/proc` tells about them: RSS and CPU time.

use super::*;

// Child processes: killed after each run, on Ctrl-C/SIGTERM and on panic.

pub(crate) static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

pub(crate) fn kill_pid(pid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

pub(crate) fn kill_all_children() {
    let pids = match CHILDREN.try_lock() {
        Ok(mut v) => std::mem::take(&mut *v),
        Err(_) => return,
    };
    for pid in pids {
        kill_pid(pid);
    }
}

pub(crate) fn install_cleanup() {
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        kill_all_children();
        prev(info);
    }));
    if let Err(e) = ctrlc::set_handler(|| {
        kill_all_children();
        eprintln!("ws_fanout: interrupted, child servers killed");
        std::process::exit(130);
    }) {
        eprintln!("ws_fanout: cannot install the signal handler: {e}");
    }
}

/// One server process, killed on drop.
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) pid: u32,
    pub(crate) addr: SocketAddr,
}

impl Server {
    pub(crate) fn start(program: &Path, args: &[&str], pin_cpu: Option<usize>) -> Result<Server, String> {
        let mut cmd = match pin_cpu {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(cpu.to_string()).arg(program);
                c
            }
            None => Command::new(program),
        };
        cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = cmd.spawn().map_err(|e| format!("cannot start {}: {e}", program.display()))?;
        let pid = child.id();
        CHILDREN.lock().unwrap_or_else(|e| e.into_inner()).push(pid);
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        // Keeps draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    // Receiver gone: keep reading and drop.
                }
            }
        });
        let mut server = Server { child, pid, addr: SocketAddr::from(([127, 0, 0, 1], 0)) };
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .map_err(|_| format!("{} printed no listening line within 30 s", program.display()))?;
        let v: serde_json::Value =
            serde_json::from_str(&line).map_err(|_| format!("not a JSON line: {line}"))?;
        let addr = v["listening"].as_str().ok_or_else(|| format!("no listening address in {line}"))?;
        server.addr = addr.parse().map_err(|_| format!("bad listening address {addr}"))?;
        Ok(server)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        CHILDREN.lock().unwrap_or_else(|e| e.into_inner()).retain(|&p| p != self.pid);
    }
}

// ---------------------------------------------------------------------------------------------
// /proc

/// VmRSS in KiB.
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// utime + stime of a process (all threads), in seconds (USER_HZ = 100).
pub(crate) fn cpu_secs(pid: &str) -> f64 {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return f64::NAN };
    let Some(close) = s.rfind(')') else { return f64::NAN };
    let f: Vec<&str> = s[close + 2..].split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (ticks(11) + ticks(12)) as f64 / 100.0
}

/// Busy CPU time of the whole machine (all cores), in seconds.
pub(crate) fn machine_busy_secs() -> f64 {
    let Ok(s) = std::fs::read_to_string("/proc/stat") else { return f64::NAN };
    let Some(line) = s.lines().next() else { return f64::NAN };
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal
    let busy: u64 = [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| v.get(i)).sum();
    busy as f64 / 100.0
}

#[derive(Clone, Copy)]
pub(crate) struct CpuSnap {
    pub(crate) server: f64,
    pub(crate) gen_: f64,
    pub(crate) machine: f64,
}

pub(crate) fn cpu_snap(pid: u32) -> CpuSnap {
    CpuSnap { server: cpu_secs(&pid.to_string()), gen_: cpu_secs("self"), machine: machine_busy_secs() }
}

/// Polls a process's VmRSS every 5 ms and keeps the peak.
pub(crate) struct RssPoller {
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) peak: Arc<AtomicU64>,
    pub(crate) thread: Option<std::thread::JoinHandle<()>>,
}

impl RssPoller {
    pub(crate) fn start(pid: u32) -> RssPoller {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let (s, p) = (stop.clone(), peak.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Some(kib) = rss_kib(pid) {
                    p.fetch_max(kib, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        RssPoller { stop, peak, thread: Some(thread) }
    }

    pub(crate) fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }
}

impl Drop for RssPoller {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
