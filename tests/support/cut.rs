//! A TCP proxy on plain threads (works under any runtime) whose connections a test can cut —
//! both sides see the TCP stream end, with no WebSocket close handshake — and which can refuse
//! new connections for a while (so a client cannot reconnect until the test says).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// The proxy; it stops accepting when dropped.
pub(crate) struct CutProxy {
    pub(crate) addr: SocketAddr,
    live: Arc<Mutex<Vec<TcpStream>>>,
    refusing: Arc<AtomicBool>,
    upstream: Arc<Mutex<SocketAddr>>,
}

impl CutProxy {
    /// A proxy to `upstream` on a free loopback port.
    pub(crate) fn start(upstream: SocketAddr) -> CutProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let live: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let refusing = Arc::new(AtomicBool::new(false));
        let upstream = Arc::new(Mutex::new(upstream));
        let (l, r, u) = (live.clone(), refusing.clone(), upstream.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if r.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let to = *u.lock().unwrap_or_else(|e| e.into_inner());
                let Ok(server) = TcpStream::connect(to) else { continue };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                {
                    let mut live = l.lock().unwrap_or_else(|e| e.into_inner());
                    for s in [&client, &server] {
                        if let Ok(s) = s.try_clone() {
                            live.push(s);
                        }
                    }
                }
                pipe(&client, &server);
                pipe(&server, &client);
            }
        });
        CutProxy { addr, live, refusing, upstream }
    }

    /// New connections go to `upstream` (another server process, say).
    pub(crate) fn set_upstream(&self, upstream: SocketAddr) {
        *self.upstream.lock().unwrap_or_else(|e| e.into_inner()) = upstream;
    }

    /// `ws://ADDR/socketcluster/` through the proxy.
    pub(crate) fn url(&self) -> String {
        format!("ws://{}/socketcluster/", self.addr)
    }

    /// Ends every proxied connection (both sides) and refuses new ones until [`reopen`].
    ///
    /// [`reopen`]: Self::reopen
    pub(crate) fn cut(&self) {
        self.refusing.store(true, Ordering::SeqCst);
        for s in self.live.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Accepts connections again.
    pub(crate) fn reopen(&self) {
        self.refusing.store(false, Ordering::SeqCst);
    }
}

fn pipe(from: &TcpStream, to: &TcpStream) {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else { return };
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}
