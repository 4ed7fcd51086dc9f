//! Behaviour of `StreamDemux`: the upstream `stream-demux` test list (protocol reference §5.3),
//! ported to our semantics (kill is immediate; a pending "once" resolves `None` on close or kill;
//! there is no `demux.once()`, its equivalent is a temporary consumer's next item).
#![cfg(feature = "smol")]
#![allow(clippy::unwrap_used)]

#[path = "support/util.rs"]
mod util;

use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use futures::{StreamExt, poll};
use smol::Timer;
use socketcluster::stream::{ConsumerId, End, Overflow, StreamDemux, TimedOut};
use util::{bounded, collect, run};

/// The `once` equivalent: a temporary consumer of `name`, awaiting its next item.
async fn once<T: Clone>(demux: &StreamDemux<T>, name: &str) -> Option<T> {
    demux.create_consumer(name).next().await
}

#[test]
fn demultiplexes_writes_by_name() {
    run(async {
        let demux = StreamDemux::new();
        let mut foo = demux.create_consumer("foo");
        let mut bar = demux.create_consumer("bar");
        for i in 0..10u32 {
            assert_eq!(demux.write(if i % 2 == 0 { "foo" } else { "bar" }, i), 1);
        }
        demux.close("foo");
        demux.close_with("bar", 100);
        assert_eq!(collect(&mut foo).await, [0, 2, 4, 6, 8]);
        assert_eq!(foo.end(), Some(&End::Closed { value: None }));
        assert_eq!(collect(&mut bar).await, [1, 3, 5, 7, 9]);
        assert_eq!(bar.end(), Some(&End::Closed { value: Some(100) }));
    });
}

#[test]
fn multiple_consumers_per_substream() {
    run(async {
        let demux = StreamDemux::new();
        let mut a1 = demux.create_consumer("a");
        let mut a2 = demux.create_consumer("a");
        let mut b = demux.create_consumer("b");
        assert_eq!(demux.write("a", 1u32), 2);
        assert_eq!(demux.write("b", 2), 1);
        assert_eq!(demux.write("a", 3), 2);
        demux.close_all();
        assert_eq!(collect(&mut a1).await, [1, 3]);
        assert_eq!(collect(&mut a2).await, [1, 3]);
        assert_eq!(collect(&mut b).await, [2]);
    });
}

#[test]
fn while_loop_on_a_substream_in_another_task() {
    run(async {
        let demux = StreamDemux::new();
        let mut c = demux.create_consumer("events");
        let task = smol::spawn(async move {
            let mut seen = Vec::new();
            while let Some(v) = c.next().await {
                seen.push(v);
            }
            seen
        });
        for i in 0..50u32 {
            demux.write("events", i);
            demux.write("other", i);
            if i % 10 == 0 {
                smol::future::yield_now().await;
            }
        }
        demux.close("events");
        assert_eq!(bounded("loop", task).await, (0..50).collect::<Vec<_>>());
    });
}

#[test]
fn close_all_ends_every_substream_after_its_buffered_items() {
    run(async {
        let demux = StreamDemux::new();
        let mut a = demux.create_consumer("a");
        let mut b = demux.create_consumer("b");
        demux.write("a", 1u32);
        demux.write("b", 2);
        demux.close_all_with(9);
        assert_eq!(collect(&mut a).await, [1]);
        assert_eq!(collect(&mut b).await, [2]);
        assert_eq!(a.end(), Some(&End::Closed { value: Some(9) }));
        assert_eq!(b.end(), Some(&End::Closed { value: Some(9) }));
        assert_eq!(demux.consumer_count_all(), 0);
    });
}

#[test]
fn resume_after_close() {
    run(async {
        let demux = StreamDemux::new();
        let mut first = demux.create_consumer("a");
        demux.write("a", 1u32);
        demux.close("a");
        assert_eq!(collect(&mut first).await, [1]);
        let mut second = demux.create_consumer("a");
        demux.write("a", 2);
        demux.close("a");
        assert_eq!(collect(&mut second).await, [2]);
    });
}

#[test]
fn resume_after_close_all() {
    run(async {
        let demux = StreamDemux::new();
        let mut a = demux.create_consumer("a");
        let mut b = demux.create_consumer("b");
        demux.close_all();
        // In the same stack frame: new consumers only see what follows.
        let mut a2 = demux.create_consumer("a");
        let mut b2 = demux.create_consumer("b");
        demux.write("a", 1u32);
        demux.write("b", 2);
        demux.close_all();
        assert_eq!(collect(&mut a).await, Vec::<u32>::new());
        assert_eq!(collect(&mut b).await, Vec::<u32>::new());
        assert_eq!(collect(&mut a2).await, [1]);
        assert_eq!(collect(&mut b2).await, [2]);
    });
}

#[test]
fn many_writes_in_one_call_stack() {
    run(async {
        let demux = StreamDemux::new();
        let mut a = demux.create_consumer("a");
        let mut b = demux.create_consumer("b");
        for i in 0..1000u32 {
            demux.write("a", i);
            demux.write("b", i * 2);
        }
        demux.close_all();
        assert_eq!(collect(&mut a).await, (0..1000).collect::<Vec<_>>());
        assert_eq!(collect(&mut b).await, (0..1000).map(|i| i * 2).collect::<Vec<_>>());
    });
}

#[test]
fn many_writes_in_one_call_stack_with_concurrent_consumers() {
    run(async {
        let demux = StreamDemux::new();
        let (ready_tx, ready_rx) = async_channel::unbounded();
        let tasks: Vec<_> = ["a", "a", "b"]
            .into_iter()
            .map(|name| {
                let demux = demux.clone();
                let ready = ready_tx.clone();
                smol::spawn(async move {
                    let mut c = demux.create_consumer(name);
                    ready.send(()).await.unwrap();
                    let mut seen = Vec::new();
                    while let Some(v) = c.next().await {
                        seen.push(v);
                    }
                    seen
                })
            })
            .collect();
        for _ in 0..3 {
            bounded("consumer created", ready_rx.recv()).await.unwrap();
        }
        for i in 0..1000u32 {
            demux.write("a", i);
            demux.write("b", i + 1);
        }
        demux.close_all();
        let results: Vec<Vec<u32>> = futures::future::join_all(tasks).await;
        assert_eq!(results[0], (0..1000).collect::<Vec<_>>());
        assert_eq!(results[1], (0..1000).collect::<Vec<_>>());
        assert_eq!(results[2], (1..=1000).collect::<Vec<_>>());
    });
}

#[test]
fn once_via_a_temporary_consumer() {
    run(async {
        let demux = StreamDemux::new();
        let mut fut = pin!(once(&demux, "a"));
        assert_eq!(poll!(fut.as_mut()), Poll::Pending);
        assert_eq!(demux.consumer_count("a"), 1);
        demux.write("b", 1u32);
        demux.write("a", 2);
        demux.write("a", 3);
        assert_eq!(bounded("once", fut).await, Some(2));
        assert_eq!(demux.consumer_count("a"), 0);
    });
}

#[test]
fn once_resolves_none_on_close_unlike_js() {
    run(async {
        let demux = StreamDemux::<u32>::new();
        let mut fut = pin!(once(&demux, "a"));
        assert_eq!(poll!(fut.as_mut()), Poll::Pending);
        demux.close("a");
        assert_eq!(bounded("once", fut).await, None);
    });
}

#[test]
fn once_with_a_timeout_times_out() {
    smol::block_on(async {
        let demux = StreamDemux::<u32>::new();
        let mut c = demux.create_consumer("a");
        let r = socketcluster::smol::next_timeout(&mut c, Duration::from_millis(20)).await;
        assert_eq!(r, Err(TimedOut));
    });
}

#[test]
fn timeouts_are_not_reset_by_other_substreams_writes_or_kills() {
    run(async {
        let demux = StreamDemux::<u32>::new();
        let mut a = demux.create_consumer("a");
        let _b = demux.create_consumer("b");
        let (deadline_tx, deadline_rx) = async_channel::bounded::<()>(1);
        let other = demux.clone();
        let noise = smol::spawn(async move {
            for i in 0..20 {
                other.write("b", i);
                Timer::after(Duration::from_millis(1)).await;
            }
            other.kill("b");
            other.write("b", 99);
            deadline_tx.send(()).await.unwrap();
        });
        let deadline = async move {
            let _ = deadline_rx.recv().await;
        };
        assert_eq!(bounded("next_before", a.next_before(deadline)).await, Err(TimedOut));
        noise.await;
        assert!(demux.has_consumer("a", a.id()), "a is untouched by b's traffic");
    });
}

#[test]
fn once_with_a_timeout_after_kill_resolves_none_at_once() {
    run(async {
        let demux = StreamDemux::<u32>::new();
        let mut c = demux.create_consumer("a");
        assert_eq!(demux.kill("a"), 1);
        // A long idle timeout: the kill must end the wait at once, not the timer.
        assert_eq!(socketcluster::smol::next_timeout(&mut c, Duration::from_secs(60)).await, Ok(None));
        assert_eq!(c.end(), Some(&End::Killed { value: None, skipped: 0 }));
    });
}

#[test]
fn next_with_close_and_close_all() {
    run(async {
        let demux = StreamDemux::<u32>::new();
        let mut a = demux.create_consumer("a");
        demux.close("a");
        assert_eq!(bounded("next", a.next()).await, None);
        let mut b = demux.create_consumer("b");
        let mut fut = pin!(b.next());
        assert_eq!(poll!(fut.as_mut()), Poll::Pending);
        demux.close_all();
        assert_eq!(bounded("next", fut).await, None);
    });
}

#[test]
fn write_to_consumer_reaches_only_that_consumer() {
    run(async {
        let demux = StreamDemux::new();
        let mut a1 = demux.create_consumer("a");
        let mut a2 = demux.create_consumer("a");
        let mut b = demux.create_consumer("b");
        assert!(demux.write_to_consumer(a2.id(), 1u32));
        assert!(demux.write_to_consumer(b.id(), 2));
        demux.write("a", 3);
        demux.close_all();
        assert_eq!(collect(&mut a1).await, [3]);
        assert_eq!(collect(&mut a2).await, [1, 3]);
        assert_eq!(collect(&mut b).await, [2]);
        assert!(!demux.write_to_consumer(b.id(), 4), "b has ended");
    });
}

#[test]
fn close_consumer_ends_only_that_consumer() {
    run(async {
        let demux = StreamDemux::new();
        let mut a1 = demux.create_consumer("a");
        let mut a2 = demux.create_consumer("a");
        demux.write("a", 1u32);
        assert!(demux.close_consumer(a1.id()));
        demux.write("a", 2);
        assert_eq!(collect(&mut a1).await, [1]);
        assert!(!demux.close_consumer(a1.id()));
        assert_eq!(demux.consumer_count("a"), 1);
        demux.close("a");
        assert_eq!(collect(&mut a2).await, [1, 2]);
    });
}

#[test]
fn close_and_kill_consumer_with_a_final_value() {
    run(async {
        let demux = StreamDemux::new();
        let mut a = demux.create_consumer("a");
        let mut b = demux.create_consumer("b");
        demux.write("a", 1u32);
        demux.write("b", 2);
        assert!(demux.close_consumer_with(a.id(), 10));
        assert!(demux.kill_consumer_with(b.id(), 20));
        assert!(!demux.kill_consumer_with(b.id(), 21), "already killed");
        assert_eq!(collect(&mut a).await, [1]);
        assert_eq!(a.end(), Some(&End::Closed { value: Some(10) }));
        assert_eq!(b.next().await, None);
        assert_eq!(b.end(), Some(&End::Killed { value: Some(20), skipped: 1 }));
        assert!(!demux.close_consumer_with(a.id(), 11), "already ended");
    });
}

#[test]
fn consumer_stats_by_name_and_for_all_names() {
    run(async {
        let demux = StreamDemux::new();
        let mut b1 = demux.create_consumer("b");
        let a1 = demux.create_consumer("a");
        let b2 = demux.create_consumer("b");
        demux.write("a", 1u32);
        demux.write("b", 2);
        demux.write("b", 3);
        assert_eq!(b1.next().await, Some(2));
        let stats = |name: &str| -> Vec<(ConsumerId, usize)> {
            demux.consumer_stats(name).iter().map(|s| (s.id, s.backpressure)).collect()
        };
        assert_eq!(stats("a"), [(a1.id(), 1)]);
        assert_eq!(stats("b"), [(b1.id(), 1), (b2.id(), 2)]);
        assert_eq!(stats("nobody"), []);
        let all: Vec<(String, ConsumerId, usize)> =
            demux.consumer_stats_all().into_iter().map(|(n, s)| (n, s.id, s.backpressure)).collect();
        assert_eq!(
            all,
            [("a".to_string(), a1.id(), 1), ("b".to_string(), b1.id(), 1), ("b".to_string(), b2.id(), 2)],
            "by name, then by id"
        );
        assert_eq!(demux.names(), ["a", "b"]);
        drop(a1);
        assert_eq!(demux.names(), ["b"]);
    });
}

#[test]
fn kill_a_substream() {
    run(async {
        let demux = StreamDemux::new();
        let mut a1 = demux.create_consumer("a");
        let mut a2 = demux.create_consumer("a");
        let mut b = demux.create_consumer("b");
        demux.write("a", 1u32);
        demux.write("b", 2);
        assert_eq!(demux.kill_with("a", 7), 2);
        assert_eq!(demux.consumer_count("a"), 0);
        assert_eq!(a1.next().await, None);
        assert_eq!(a2.next().await, None);
        assert_eq!(a1.end(), Some(&End::Killed { value: Some(7), skipped: 1 }));
        assert_eq!(demux.kill("a"), 0, "nothing left to kill");
        demux.close("b");
        assert_eq!(collect(&mut b).await, [2], "other substreams are unaffected");
    });
}

#[test]
fn kill_all() {
    run(async {
        let demux = StreamDemux::new();
        let mut cs = [demux.create_consumer("a"), demux.create_consumer("a"), demux.create_consumer("b")];
        demux.write("a", 1u32);
        assert_eq!(demux.kill_all(), 3);
        assert_eq!(demux.consumer_count_all(), 0);
        for (c, skipped) in cs.iter_mut().zip([1, 1, 0]) {
            assert_eq!(c.next().await, None);
            assert_eq!(c.end(), Some(&End::Killed { value: None, skipped }));
        }
        let mut d = demux.create_consumer("c");
        assert_eq!(demux.kill_all_with(5), 1);
        assert_eq!(d.next().await, None);
        assert_eq!(d.end(), Some(&End::Killed { value: Some(5), skipped: 0 }));
        assert_eq!(demux.kill_all(), 0);
    });
}

#[test]
fn kill_consumer() {
    run(async {
        let demux = StreamDemux::new();
        let mut a1 = demux.create_consumer("a");
        let mut a2 = demux.create_consumer("a");
        demux.write("a", 1u32);
        assert!(demux.kill_consumer(a1.id()));
        assert!(!demux.kill_consumer(a1.id()));
        assert!(!demux.has_consumer_all(a1.id()));
        assert_eq!(demux.consumer_count("a"), 1);
        assert_eq!(a1.next().await, None);
        assert_eq!(a1.end(), Some(&End::Killed { value: None, skipped: 1 }));
        demux.close("a");
        assert_eq!(collect(&mut a2).await, [1]);
    });
}

#[test]
fn backpressure_by_name_and_for_all_names() {
    run(async {
        let demux = StreamDemux::new();
        assert_eq!(demux.backpressure("a"), 0);
        assert_eq!(demux.backpressure_all(), 0);
        let mut a1 = demux.create_consumer("a");
        let a2 = demux.create_consumer("a");
        let mut b = demux.create_consumer("b");
        for i in 0..5u32 {
            demux.write("a", i);
        }
        for i in 0..3u32 {
            demux.write("b", i);
        }
        assert_eq!((demux.backpressure("a"), demux.backpressure("b"), demux.backpressure_all()), (5, 3, 5));
        for _ in 0..4 {
            a1.next().await.unwrap();
        }
        assert_eq!(demux.backpressure("a"), 5, "a2 has consumed nothing");
        drop(a2);
        assert_eq!((demux.backpressure("a"), demux.backpressure_all()), (1, 3));
        b.next().await.unwrap();
        assert_eq!(demux.backpressure_all(), 2);
        assert_eq!(demux.backpressure("nobody"), 0);
    });
}

#[test]
fn consumer_backpressure_by_id() {
    run(async {
        let demux = StreamDemux::new();
        let mut a = demux.create_consumer("a");
        let b = demux.create_consumer("b");
        demux.write("a", 1u32);
        demux.write("a", 2);
        demux.write("b", 3);
        assert_eq!(demux.consumer_backpressure(a.id()), 2);
        assert_eq!(demux.consumer_backpressure(b.id()), 1);
        a.next().await.unwrap();
        assert_eq!(demux.consumer_backpressure(a.id()), 1);
        let id = b.id();
        drop(b);
        assert_eq!(demux.consumer_backpressure(id), 0, "unknown id");
    });
}

#[test]
fn has_consumer_by_name() {
    let demux = StreamDemux::<u32>::new();
    let a = demux.create_consumer("a");
    let b = demux.create_consumer("b");
    assert!(demux.has_consumer("a", a.id()));
    assert!(!demux.has_consumer("a", b.id()), "b consumes another name");
    assert!(!demux.has_consumer("nobody", a.id()));
    let id = a.id();
    drop(a);
    assert!(!demux.has_consumer("a", id));
    assert!(demux.has_consumer("b", b.id()));
}

#[test]
fn has_consumer_for_all_names() {
    run(async {
        let demux = StreamDemux::<u32>::new();
        let mut a = demux.create_consumer("a");
        let b = demux.create_consumer("b");
        assert!(demux.has_consumer_all(a.id()));
        assert!(demux.has_consumer_all(b.id()));
        demux.close("a");
        assert!(demux.has_consumer_all(a.id()), "live until it reads the close");
        assert_eq!(a.next().await, None);
        assert!(!demux.has_consumer_all(a.id()));
        demux.kill("b");
        assert!(!demux.has_consumer_all(b.id()));
    });
}

#[test]
fn consumer_count_by_name_and_for_all_names() {
    let demux = StreamDemux::<u32>::new();
    assert_eq!(demux.consumer_count("a"), 0);
    assert_eq!(demux.consumer_count_all(), 0);
    let a1 = demux.create_consumer("a");
    let a2 = demux.create_consumer("a");
    let b = demux.create_consumer("b");
    assert_eq!((demux.consumer_count("a"), demux.consumer_count("b"), demux.consumer_count_all()), (2, 1, 3));
    drop(a1);
    assert_eq!((demux.consumer_count("a"), demux.consumer_count_all()), (1, 2));
    demux.kill_consumer(b.id());
    assert_eq!((demux.consumer_count("b"), demux.consumer_count_all()), (0, 1));
    drop(a2);
    assert_eq!(demux.consumer_count_all(), 0);
}

#[test]
fn ids_are_unique_across_names_and_never_reused() {
    let demux = StreamDemux::<u32>::new();
    let mut ids = Vec::new();
    // Churn over many names, so that empty substreams are forgotten and recreated.
    for round in 0..3 {
        for n in 0..40 {
            let name = format!("name-{}", n % 25);
            let c = demux.create_consumer(&name);
            ids.push(c.id().get());
            if (n + round) % 3 == 0 {
                demux.kill(&name);
            }
        }
    }
    assert_eq!(ids, (1..=120).collect::<Vec<u64>>(), "one counter for every name, never reused");
    assert_eq!(demux.consumer_count_all(), 0, "every consumer was dropped or killed");
    assert!(demux.names().is_empty());
}

#[test]
fn writes_to_names_without_consumers_are_dropped() {
    run(async {
        let demux = StreamDemux::new();
        assert_eq!(demux.write("a", 1u32), 0);
        demux.close("a");
        demux.close_with("a", 1);
        assert_eq!(demux.kill("a"), 0);
        let mut a = demux.create_consumer("a");
        assert_eq!(demux.write("a", 2), 1);
        demux.close("a");
        assert_eq!(collect(&mut a).await, [2], "nothing from before the consumer existed");
        assert_eq!(demux.write("a", 3), 0, "the last consumer has ended");
        let c = demux.create_consumer("b");
        drop(c);
        assert_eq!(demux.write("b", 4), 0, "the last consumer was dropped");
        assert!(demux.names().is_empty());
    });
}

#[test]
fn bounded_demux_applies_the_limit_per_substream() {
    run(async {
        let demux = StreamDemux::with_limit(2, Overflow::KillConsumer);
        let mut slow = demux.create_consumer("x");
        let mut other = demux.create_consumer("y");
        for i in 0..3u32 {
            demux.write("x", i);
        }
        demux.write("y", 10);
        demux.write("y", 11);
        assert_eq!(slow.next().await, None);
        assert_eq!(slow.end(), Some(&End::Overflowed { skipped: 3 }));
        assert_eq!(other.next().await, Some(10), "y's backlog is its own");
        assert_eq!(other.next().await, Some(11));
    });
}

#[test]
fn dropping_the_demux_ends_consumers_after_buffered_items() {
    run(async {
        let demux = StreamDemux::new();
        let mut c = demux.create_consumer("a");
        let handle = demux.clone();
        demux.write("a", 1u32);
        drop(demux);
        assert_eq!(handle.write("a", 2), 1, "another handle keeps the demux alive");
        drop(handle);
        assert_eq!(collect(&mut c).await, [1, 2]);
        assert_eq!(c.end(), Some(&End::Dropped));
    });
}
