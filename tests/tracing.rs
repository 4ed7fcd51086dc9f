//! The server's lifecycle reaches `tracing`: a subscriber installed by the application sees the
//! connection, the subscription and the close with its code — and no event per message.
#![cfg(feature = "smol")]
#![allow(clippy::unwrap_used)]

use std::cell::RefCell;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use socketcluster::client::ClientOptions;
use socketcluster::server::{ServerEvent, ServerOptions};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// Records every span ("SPAN n name field=value ...") and every event of target
/// `socketcluster…` ("LEVEL message field=value ... in=n", n the span it happened in).
struct Recorder;

static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static ENTERED: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

struct Line(String);

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!(" {}={value:?}", field.name()));
    }
}

impl Subscriber for Recorder {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed) + 1;
        let mut line = Line(format!("SPAN {id} {}", span.metadata().name()));
        span.record(&mut line);
        LINES.lock().unwrap().push(line.0);
        Id::from_u64(id)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        if event.metadata().target().starts_with("socketcluster") {
            let mut line = Line(format!("{}", event.metadata().level()));
            event.record(&mut line);
            if let Some(span) = ENTERED.with(|e| e.borrow().last().copied()) {
                line.0.push_str(&format!(" in={span}"));
            }
            LINES.lock().unwrap().push(line.0);
        }
    }
    fn enter(&self, id: &Id) {
        ENTERED.with(|e| e.borrow_mut().push(id.into_u64()));
    }
    fn exit(&self, _: &Id) {
        ENTERED.with(|e| e.borrow_mut().pop());
    }
}

fn lines() -> Vec<String> {
    LINES.lock().unwrap().clone()
}

fn find(all: &[String], what: impl Fn(&str) -> bool) -> String {
    all.iter().find(|l| what(l)).cloned().unwrap_or_else(|| panic!("no such line in {all:#?}"))
}

fn within<F: std::future::Future>(what: &str, f: F) -> F::Output {
    smol::block_on(async {
        futures::future::select(
            std::pin::pin!(f),
            std::pin::pin!(async {
                smol::Timer::after(Duration::from_secs(10)).await;
                panic!("timed out: {what}")
            }),
        )
        .await
        .factor_first()
        .0
    })
}

#[test]
fn lifecycle_events_reach_tracing_in_a_span_per_connection() {
    tracing::subscriber::set_global_default(Recorder).unwrap();
    let (server, addr) =
        within("listen", socketcluster::smol::listen("127.0.0.1:0", ServerOptions::default())).unwrap();
    let mut connections = server.listener("connection");
    let mut disconnections = server.listener("disconnection");
    let client = socketcluster::smol::connect(ClientOptions::new(format!("ws://{addr}/socketcluster/")));
    let Some(ServerEvent::Connection { socket, .. }) = within("connection", connections.next()) else {
        panic!("not a connection event")
    };
    let mut channel = client.subscribe("traced", Default::default());
    let mut subscribed = channel.listener("subscribe");
    within("subscribe", subscribed.next()).unwrap();
    for i in 0..50 {
        within("transmit", client.transmit_publish("traced", i)).unwrap();
    }
    for _ in 0..50 {
        within("publish", channel.consumer().next()).unwrap();
    }
    let mut kicked = channel.listener("kickOut");
    assert!(within("kick", socket.kick_out("traced", "out")));
    within("kicked", kicked.next()).unwrap();
    client.disconnect(4321, "bye");
    within("disconnection", disconnections.next()).unwrap();

    let all = lines();
    let id = format!("{:?}", socket.id());
    let span = find(&all, |l| l.starts_with("SPAN") && l.contains(" socket id=") && l.contains(&id));
    let remote = socket.remote_address().unwrap();
    assert!(remote.ip().is_loopback() && span.contains(&format!("remote={remote}")), "{span}");
    let in_span = format!(" in={}", span.split(' ').nth(1).unwrap());
    let connected = find(&all, |l| l.starts_with("INFO") && l.contains("message=connected"));
    assert!(connected.contains(&in_span), "{connected} not in {span}");
    let subscribed = find(&all, |l| l.starts_with("DEBUG") && l.contains("message=subscribed"));
    assert!(subscribed.contains("\"traced\"") && subscribed.contains(&in_span), "{subscribed}");
    let kick = find(&all, |l| l.starts_with("INFO") && l.contains("message=kicked out"));
    assert!(kick.contains("\"traced\""), "{kick}");
    let closed = find(&all, |l| l.starts_with("INFO") && l.contains("message=disconnected"));
    assert!(closed.contains("code=4321") && closed.contains(&in_span), "{closed}");
    // 50 publishes, and not one event for them.
    let events = all.iter().filter(|l| !l.starts_with("SPAN")).count();
    assert!(events <= 8, "events per message: {all:#?}");
    drop(server);
}
