//! Behaviour of `WritableConsumableStream` and `Consumer`: the upstream
//! `writable-consumable-stream` test list (protocol reference §5.3), ported to our semantics, plus
//! the bounded modes. Where we deliberately differ from the JavaScript library (kill is immediate,
//! an ended consumer stays ended, `once` resolves `None` on close/kill, ...) the test checks our
//! behaviour and its name says so.
#![cfg(feature = "smol")]
#![allow(clippy::unwrap_used)]

#[path = "support/util.rs"]
mod util;

use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use futures::stream::FusedStream;
use futures::{StreamExt, poll};
use smol::Timer;
use socketcluster::stream::{Consumer, End, Full, Overflow, TimedOut, WritableConsumableStream};
use util::{LIMIT, bounded, collect, counting_waker, poll_next_with, poll_with, run, within};

/// Polls once without blocking (`None` = pending).
fn try_next<T: Clone>(c: &mut Consumer<T>) -> Option<Option<T>> {
    match poll_next_with(c, std::task::Waker::noop()) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}

// ---------------------------------------------------------------------------------------------
// for-await-of loops
// ---------------------------------------------------------------------------------------------

#[test]
fn consumer_receives_items_written_by_another_task() {
    run(async {
        let stream = WritableConsumableStream::new();
        let mut c = stream.create_consumer();
        let writer = stream.clone();
        let task = smol::spawn(async move {
            for i in 0..10u32 {
                smol::future::yield_now().await;
                writer.write(i);
            }
            writer.close();
        });
        assert_eq!(collect(&mut c).await, (0..10).collect::<Vec<_>>());
        assert_eq!(c.end(), Some(&End::Closed { value: None }));
        task.await;
    });
}

#[test]
fn sequential_writes_are_received_in_order() {
    run(async {
        let stream = WritableConsumableStream::new();
        let mut c = stream.create_consumer();
        for i in 0..500u32 {
            assert_eq!(stream.write(i), 1);
        }
        stream.close();
        assert_eq!(collect(&mut c).await, (0..500).collect::<Vec<_>>());
    });
}

#[test]
fn writes_from_inside_the_loop_body_are_received() {
    run(async {
        let stream = WritableConsumableStream::new();
        let mut c = stream.create_consumer();
        stream.write(0u32);
        let mut seen = Vec::new();
        while let Some(v) = bounded("next", c.next()).await {
            seen.push(v);
            if v < 5 {
                stream.write(v + 1);
            } else {
                stream.close();
            }
        }
        assert_eq!(seen, [0, 1, 2, 3, 4, 5]);
    });
}

#[test]
fn only_items_written_after_creation_are_received() {
    run(async {
        let stream = WritableConsumableStream::new();
        assert_eq!(stream.write(1u32), 0, "nobody consumes: dropped");
        stream.write(2);
        let mut c = stream.create_consumer();
        stream.write(3);
        stream.write(4);
        stream.close();
        assert_eq!(collect(&mut c).await, [3, 4]);
    });
}

#[test]
fn no_items_lost_while_doing_async_work_before_the_loop() {
    run(async {
        let stream = WritableConsumableStream::new();
        let mut c = stream.create_consumer();
        let (started_tx, started_rx) = async_channel::bounded::<()>(1);
        let reader = smol::spawn(async move {
            started_tx.send(()).await.unwrap();
            // Async work before the loop; the writes below happen meanwhile.
            Timer::after(Duration::from_millis(20)).await;
            collect(&mut c).await
        });
        bounded("reader started", started_rx.recv()).await.unwrap();
        for i in 0..100u32 {
            stream.write(i);
        }
        stream.close();
        assert_eq!(bounded("reader", reader).await, (0..100).collect::<Vec<_>>());
    });
}

#[test]
fn two_concurrent_loops_with_async_work_each_receive_everything() {
    run(async {
        let stream = WritableConsumableStream::new();
        let spawn_loop = |mut c: Consumer<u32>, work: u64| {
            smol::spawn(async move {
                Timer::after(Duration::from_millis(work)).await;
                let mut seen = Vec::new();
                while let Some(v) = c.next().await {
                    seen.push(v);
                    // More async work inside the loop.
                    if v % 10 == 0 {
                        Timer::after(Duration::from_millis(1)).await;
                    }
                }
                seen
            })
        };
        let a = spawn_loop(stream.create_consumer(), 5);
        let b = spawn_loop(stream.create_consumer(), 15);
        for i in 0..100u32 {
            assert_eq!(stream.write(i), 2);
            if i % 7 == 0 {
                smol::future::yield_now().await;
            }
        }
        stream.close();
        let all: Vec<u32> = (0..100).collect();
        assert_eq!(bounded("loop a", a).await, all);
        assert_eq!(bounded("loop b", b).await, all);
    });
}

#[test]
fn resume_after_close_with_a_new_consumer() {
    run(async {
        let stream = WritableConsumableStream::new();
        let mut first = stream.create_consumer();
        stream.write(1u32);
        stream.close();
        assert_eq!(collect(&mut first).await, [1]);

        let mut second = stream.create_consumer();
        stream.write(2);
        stream.write(3);
        stream.close();
        assert_eq!(collect(&mut second).await, [2, 3]);
    });
}

#[test]
fn resume_within_the_same_stack_frame() {
    run(async {
        let stream = WritableConsumableStream::new();
        let mut first = stream.create_consumer();
        stream.write(1u32);
        stream.close();
        let mut second = stream.create_consumer();
        stream.write(2);
        stream.close_with(20);
        assert_eq!(collect(&mut first).await, [1], "the first consumer ends at the first close");
        assert_eq!(first.end(), Some(&End::Closed { value: None }));
        assert_eq!(collect(&mut second).await, [2], "the second sees only what followed its creation");
        assert_eq!(second.end(), Some(&End::Closed { value: Some(20) }));
    });
}

#[test]
fn breaking_out_of_a_loop_keeps_the_consumer_buffering() {
    run(async {
        let stream = WritableConsumableStream::new();
        let mut c = stream.create_consumer();
        for i in 1..=6u32 {
            stream.write(i);
        }
        let mut seen = Vec::new();
        while let Some(v) = bounded("next", c.next()).await {
            seen.push(v);
            if v == 3 {
                break;
            }
        }
        stream.write(7);
        stream.close();
        // Resume the same consumer: nothing was lost while outside the loop.
        seen.extend(collect(&mut c).await);
        assert_eq!(seen, [1, 2, 3, 4, 5, 6, 7]);
    });
}

#[test]
fn close_with_custom_data_is_readable_from_end() {
    run(async {
        let stream = WritableConsumableStream::new();
        let mut c = stream.create_consumer();
        stream.write("a".to_string());
        stream.close_with("bye".to_string());
        assert_eq!(collect(&mut c).await, ["a"]);
        assert_eq!(c.end(), Some(&End::Closed { value: Some("bye".to_string()) }));
        assert_eq!(c.end().and_then(End::value).map(String::as_str), Some("bye"));
        assert_eq!(c.end().map(End::skipped), Some(0));
        assert_eq!(c.take_end(), Some(End::Closed { value: Some("bye".to_string()) }));
        assert!(c.is_ended(), "taking the end value does not revive the consumer");
        assert_eq!(c.next().await, None);
    });
}

#[test]
fn ended_consumer_stays_ended_after_later_writes_unlike_js() {
    run(async {
        let stream = WritableConsumableStream::new();
        let mut c = stream.create_consumer();
        stream.close();
        assert_eq!(c.next().await, None);
        assert!(c.is_terminated());
        assert_eq!(stream.consumer_count(), 0);
        assert_eq!(stream.write(1u32), 0, "the ended consumer no longer receives");
        assert_eq!(try_next(&mut c), Some(None));
        assert_eq!(c.backpressure(), 0);
    });
}

#[test]
fn dropping_the_last_stream_handle_ends_consumers_after_buffered_items() {
    run(async {
        let stream = WritableConsumableStream::new();
        let mut c = stream.create_consumer();
        let other = stream.clone();
        drop(stream);
        assert_eq!(other.write(1u32), 1, "a remaining handle keeps the stream open");
        other.write(2);
        drop(other);
        assert_eq!(collect(&mut c).await, [1, 2]);
        assert_eq!(c.end(), Some(&End::Dropped));
    });
}

#[test]
fn dropping_the_last_stream_handle_wakes_a_waiting_consumer() {
    let stream = WritableConsumableStream::<u32>::new();
    let mut c = stream.create_consumer();
    let (waker, wakes) = counting_waker();
    assert_eq!(poll_next_with(&mut c, &waker), Poll::Pending);
    drop(stream);
    assert!(wakes.count() >= 1, "the waiting consumer must be woken");
    assert_eq!(poll_next_with(&mut c, &waker), Poll::Ready(None));
    assert_eq!(c.end(), Some(&End::Dropped));
}

// ---------------------------------------------------------------------------------------------
// Idle timeouts (JS `createConsumer(timeout)`): `next_before` and the runtime adapters
// ---------------------------------------------------------------------------------------------

#[test]
fn next_before_times_out_and_the_consumer_stays_usable() {
    run(async {
        let stream = WritableConsumableStream::new();
        let mut c = stream.create_consumer();
        assert_eq!(c.next_before(async {}).await, Err(TimedOut));
        assert!(!c.is_ended());
        assert_eq!(stream.consumer_count(), 1, "a timeout does not unregister the consumer");
        stream.write(1u32);
        // An item that is already there wins over a deadline that has passed too.
        assert_eq!(c.next_before(async {}).await, Ok(Some(1)));
        stream.close();
        assert_eq!(c.next_before(async {}).await, Ok(None));
    });
}

#[test]
fn next_before_returns_an_item_that_arrives_before_the_deadline() {
    run(async {
        let stream = WritableConsumableStream::new();
        let mut c = stream.create_consumer();
        let (deadline_tx, deadline_rx) = async_channel::bounded::<()>(1);
        let writer = stream.clone();
        let task = smol::spawn(async move {
            smol::future::yield_now().await;
            writer.write(5u32);
        });
        let deadline = async move {
            let _ = deadline_rx.recv().await;
        };
        assert_eq!(bounded("next_before", c.next_before(deadline)).await, Ok(Some(5)));
        task.await;
        drop(deadline_tx);
    });
}

/// Writer that writes `values` one by one, each only after the reader acknowledged the previous
/// one, after a short (varying) pause: the consumer waits for every item, with the given delays.
fn paced_writer(
    stream: WritableConsumableStream<u32>,
    delays_ms: Vec<u64>,
    acks: async_channel::Receiver<()>,
) -> smol::Task<()> {
    smol::spawn(async move {
        for (i, d) in delays_ms.into_iter().enumerate() {
            Timer::after(Duration::from_millis(d)).await;
            stream.write(i as u32);
            if acks.recv().await.is_err() {
                return;
            }
        }
    })
}

fn idle_timeout_scenario(delays_ms: Vec<u64>) {
    run(async {
        let stream = WritableConsumableStream::new();
        let mut c = stream.create_consumer();
        let n = delays_ms.len() as u32;
        let (ack_tx, ack_rx) = async_channel::unbounded();
        let writer = paced_writer(stream.clone(), delays_ms, ack_rx);
        // Each wait is short compared with the idle timeout: every item arrives.
        for i in 0..n {
            assert_eq!(socketcluster::smol::next_timeout(&mut c, LIMIT).await, Ok(Some(i)));
            ack_tx.send(()).await.unwrap();
        }
        writer.await;
        // The writer stopped without closing: the idle timeout ends the wait...
        assert_eq!(socketcluster::smol::next_timeout(&mut c, Duration::from_millis(30)).await, Err(TimedOut));
        // ... and the consumer can continue after a single timeout.
        stream.write(99);
        assert_eq!(socketcluster::smol::next_timeout(&mut c, LIMIT).await, Ok(Some(99)));
        stream.close();
        assert_eq!(socketcluster::smol::next_timeout(&mut c, LIMIT).await, Ok(None));
    });
}

#[test]
fn smol_idle_timeout_with_consistent_delays() {
    idle_timeout_scenario(vec![5; 8]);
}

#[test]
fn smol_idle_timeout_with_inconsistent_delays() {
    idle_timeout_scenario(vec![0, 12, 1, 7, 0, 20, 3, 0]);
}

#[test]
fn smol_next_timeout_without_close_times_out() {
    smol::block_on(async {
        let stream = WritableConsumableStream::<u32>::new();
        let mut c = stream.create_consumer();
        assert_eq!(socketcluster::smol::next_timeout(&mut c, Duration::from_millis(20)).await, Err(TimedOut));
        assert_eq!(stream.consumer_count(), 1);
    });
}

#[test]
fn while_loop_continues_after_a_single_timeout() {
    run(async {
        let stream = WritableConsumableStream::new();
        let mut c = stream.create_consumer();
        stream.write(1u32);
        let mut seen = Vec::new();
        let mut timeouts = 0;
        loop {
            match socketcluster::smol::next_timeout(&mut c, Duration::from_millis(20)).await {
                Ok(Some(v)) => seen.push(v),
                Ok(None) => break,
                Err(TimedOut) => {
                    timeouts += 1;
                    // Nothing came in time; produce more and carry on.
                    if timeouts == 1 {
                        stream.write(2);
                    } else {
                        stream.close();
                    }
                }
            }
        }
        assert_eq!(seen, [1, 2]);
        assert_eq!(timeouts, 2);
    });
}

#[cfg(feature = "tokio")]
mod tokio_timeouts {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap()
    }

    #[test]
    fn tokio_next_timeout_times_out_then_continues() {
        rt().block_on(async {
            let stream = WritableConsumableStream::new();
            let mut c = stream.create_consumer();
            assert_eq!(
                socketcluster::tokio::next_timeout(&mut c, Duration::from_millis(20)).await,
                Err(TimedOut)
            );
            stream.write(1u32);
            assert_eq!(socketcluster::tokio::next_timeout(&mut c, LIMIT).await, Ok(Some(1)));
            stream.close();
            assert_eq!(socketcluster::tokio::next_timeout(&mut c, LIMIT).await, Ok(None));
        });
    }

    #[test]
    fn tokio_idle_timeout_with_inconsistent_delays() {
        rt().block_on(async {
            let stream = WritableConsumableStream::new();
            let mut c = stream.create_consumer();
            let writer = stream.clone();
            let (ack_tx, mut ack_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
            let delays = [0u64, 9, 1, 4, 0, 15];
            let task = tokio::spawn(async move {
                for (i, d) in delays.into_iter().enumerate() {
                    tokio::time::sleep(Duration::from_millis(d)).await;
                    writer.write(i as u32);
                    if ack_rx.recv().await.is_none() {
                        return;
                    }
                }
            });
            for i in 0..6 {
                assert_eq!(socketcluster::tokio::next_timeout(&mut c, LIMIT).await, Ok(Some(i)));
                ack_tx.send(()).unwrap();
            }
            tokio::time::timeout(LIMIT, task).await.unwrap().unwrap();
            assert_eq!(
                socketcluster::tokio::next_timeout(&mut c, Duration::from_millis(20)).await,
                Err(TimedOut)
            );
        });
    }
}

// ---------------------------------------------------------------------------------------------
// kill
// ---------------------------------------------------------------------------------------------

#[test]
fn kill_ends_the_consumer_immediately_skipping_buffered_items() {
    run(async {
        let stream = WritableConsumableStream::new();
        let mut c = stream.create_consumer();
        for i in 0..10u32 {
            stream.write(i);
        }
        assert_eq!(stream.backpressure(), 10);
        assert_eq!(c.backpressure(), 10);
        assert_eq!(stream.kill(), 1);
        assert_eq!(stream.backpressure(), 0);
        assert_eq!(c.backpressure(), 0);
        assert_eq!(c.next().await, None, "no buffered item is delivered after a kill");
        assert_eq!(c.end(), Some(&End::Killed { value: None, skipped: 10 }));
        assert_eq!(c.end().map(End::skipped), Some(10));
    });
}

#[test]
fn kill_skips_items_the_consumer_already_prefetched() {
    run(async {
        let stream = WritableConsumableStream::new();
        let mut c = stream.create_consumer();
        for i in 0..100u32 {
            stream.write(i);
        }
        assert_eq!(c.next().await, Some(0)); // the consumer may now hold a prefetched batch
        assert_eq!(c.backpressure(), 99);
        assert_eq!(stream.kill(), 1);
        assert_eq!(c.next().await, None);
        assert_eq!(c.end(), Some(&End::Killed { value: None, skipped: 99 }));
    });
}

#[test]
fn kill_wakes_an_idle_waiting_consumer_unlike_js() {
    let stream = WritableConsumableStream::<u32>::new();
    let mut c = stream.create_consumer();
    let (waker, wakes) = counting_waker();
    assert_eq!(poll_next_with(&mut c, &waker), Poll::Pending);
    assert_eq!(stream.kill(), 1);
    assert!(wakes.count() >= 1, "kill must wake the waiting consumer, not wait for a later write");
    assert_eq!(poll_next_with(&mut c, &waker), Poll::Ready(None));
    assert_eq!(c.end(), Some(&End::Killed { value: None, skipped: 0 }));
}

#[test]
fn kill_ends_a_waiting_loop_in_another_task() {
    run(async {
        let stream = WritableConsumableStream::<u32>::new();
        let mut c = stream.create_consumer();
        let (ready_tx, ready_rx) = async_channel::bounded(1);
        let task = smol::spawn(async move {
            ready_tx.send(()).await.unwrap();
            let mut n = 0;
            while c.next().await.is_some() {
                n += 1;
            }
            (n, c.take_end())
        });
        bounded("loop started", ready_rx.recv()).await.unwrap();
        stream.kill_with(3);
        let (n, end) = bounded("loop ends after kill", task).await;
        assert_eq!(n, 0);
        assert_eq!(end, Some(End::Killed { value: Some(3), skipped: 0 }));
    });
}

#[test]
fn once_returns_none_when_killed_instead_of_timing_out() {
    run(async {
        let stream = WritableConsumableStream::<u32>::new();
        let mut once = pin!(stream.once());
        assert_eq!(poll!(once.as_mut()), Poll::Pending);
        assert_eq!(stream.consumer_count(), 1, "once() waits through a temporary consumer");
        assert_eq!(stream.kill(), 1);
        assert_eq!(bounded("once after kill", once).await, None);
        assert_eq!(stream.consumer_count(), 0);
    });
}

#[test]
fn a_killed_stream_can_be_restarted_with_new_consumers() {
    run(async {
        let stream = WritableConsumableStream::new();
        let mut old = stream.create_consumer();
        stream.write(1u32);
        stream.kill();
        let mut new = stream.create_consumer();
        stream.write(2);
        stream.close();
        assert_eq!(collect(&mut old).await, Vec::<u32>::new());
        assert_eq!(collect(&mut new).await, [2]);
        assert_eq!(new.end(), Some(&End::Closed { value: None }));
    });
}

#[test]
fn write_right_after_kill_reaches_only_new_consumers() {
    run(async {
        let stream = WritableConsumableStream::new();
        let mut old = stream.create_consumer();
        stream.kill();
        assert_eq!(stream.write(1u32), 0, "the killed consumer is gone at once");
        let mut new = stream.create_consumer();
        assert_eq!(stream.write(2), 1);
        assert_eq!(old.next().await, None);
        assert_eq!(new.next().await, Some(2));
    });
}

#[test]
fn killed_consumer_is_no_longer_alive() {
    run(async {
        let stream = WritableConsumableStream::new();
        let mut c = stream.create_consumer();
        stream.write(1u32);
        assert!(stream.has_consumer(c.id()));
        assert!(stream.kill_consumer(c.id()));
        assert!(!stream.has_consumer(c.id()));
        assert_eq!(stream.consumer_count(), 0);
        assert_eq!(stream.consumer_backpressure(c.id()), 0);
        assert!(stream.consumer_stats().is_empty());
        assert!(!stream.kill_consumer(c.id()), "killing twice reports an unknown consumer");
        assert!(!c.is_ended(), "ended only once it has yielded None");
        assert_eq!(c.next().await, None);
        assert!(c.is_ended());
    });
}

#[test]
fn kill_value_is_delivered_to_every_consumer() {
    run(async {
        let stream = WritableConsumableStream::new();
        let mut a = stream.create_consumer();
        stream.write(1u32);
        let mut b = stream.create_consumer();
        assert_eq!(stream.kill_with(42), 2);
        assert_eq!(a.next().await, None);
        assert_eq!(b.next().await, None);
        assert_eq!(a.end(), Some(&End::Killed { value: Some(42), skipped: 1 }));
        assert_eq!(b.end(), Some(&End::Killed { value: Some(42), skipped: 0 }));
        assert_eq!(a.end().and_then(End::value), Some(&42));
    });
}

#[test]
fn kill_during_the_loop_body_stops_at_the_end_of_the_current_iteration() {
    run(async {
        let stream = WritableConsumableStream::new();
        let mut c = stream.create_consumer();
        for i in 1..=5u32 {
            stream.write(i);
        }
        let (in_body_tx, in_body_rx) = async_channel::bounded(1);
        let (go_tx, go_rx) = async_channel::bounded::<()>(1);
        let task = smol::spawn(async move {
            let mut seen = Vec::new();
            while let Some(v) = c.next().await {
                seen.push(v);
                if v == 1 {
                    in_body_tx.send(()).await.unwrap();
                    go_rx.recv().await.unwrap(); // async work in the body, during which the kill happens
                }
            }
            (seen, c.take_end())
        });
        bounded("loop body", in_body_rx.recv()).await.unwrap();
        assert_eq!(stream.kill(), 1);
        go_tx.send(()).await.unwrap();
        let (seen, end) = bounded("loop", task).await;
        assert_eq!(seen, [1], "the iteration in progress completes, the pending items are skipped");
        assert_eq!(end, Some(End::Killed { value: None, skipped: 4 }));
    });
}

#[test]
fn kill_stops_all_consumers() {
    run(async {
        let stream = WritableConsumableStream::new();
        let mut a = stream.create_consumer();
        stream.write(1u32);
        let mut b = stream.create_consumer();
        stream.write(2);
        let mut c = stream.create_consumer();
        assert_eq!(stream.kill(), 3);
        assert_eq!(stream.consumer_count(), 0);
        for (consumer, skipped) in [(&mut a, 2), (&mut b, 1), (&mut c, 0)] {
            assert_eq!(consumer.next().await, None);
            assert_eq!(consumer.end(), Some(&End::Killed { value: None, skipped }));
        }
        assert_eq!(stream.kill(), 0);
    });
}

#[test]
fn kill_ends_a_never_polled_consumer_with_nothing_pending_unlike_js() {
    run(async {
        let stream = WritableConsumableStream::<u32>::new();
        let mut c = stream.create_consumer();
        stream.kill();
        stream.write(1);
        assert_eq!(try_next(&mut c), Some(None), "ends on its very first poll, no later write needed");
    });
}

#[test]
fn killed_consumer_does_not_replay_its_buffer_when_polled_again_unlike_js() {
    run(async {
        let stream = WritableConsumableStream::new();
        let mut c = stream.create_consumer();
        stream.write(1u32);
        stream.write(2);
        stream.kill();
        assert_eq!(c.next().await, None);
        assert_eq!(c.next().await, None);
        stream.write(3);
        assert_eq!(try_next(&mut c), Some(None));
    });
}

// ---------------------------------------------------------------------------------------------
// backpressure
// ---------------------------------------------------------------------------------------------

#[test]
fn backpressure_exact_per_step_with_one_consumer() {
    run(async {
        let stream = WritableConsumableStream::new();
        assert_eq!(stream.backpressure(), 0);
        let mut c = stream.create_consumer();
        let mut steps = Vec::new();
        for i in 0..5u32 {
            stream.write(i);
            steps.push(stream.backpressure());
        }
        assert_eq!(steps, [1, 2, 3, 4, 5]);
        let mut steps = Vec::new();
        for _ in 0..3 {
            c.next().await.unwrap();
            steps.push(stream.backpressure());
        }
        assert_eq!(steps, [4, 3, 2]);
        stream.write(5);
        assert_eq!(stream.backpressure(), 3);
        stream.close();
        assert_eq!(stream.backpressure(), 4, "the close packet counts");
        let mut steps = Vec::new();
        while c.next().await.is_some() {
            steps.push(stream.backpressure());
        }
        assert_eq!(steps, [3, 2, 1]);
        assert_eq!(stream.backpressure(), 0, "the consumer is gone once it has read the close");
    });
}

#[test]
fn backpressure_with_a_manually_polled_consumer_ignores_prefetching() {
    run(async {
        let stream = WritableConsumableStream::new();
        let mut c = stream.create_consumer();
        for i in 0..100u32 {
            stream.write(i);
        }
        for consumed in 1..=100 {
            assert_eq!(c.next().await, Some(consumed - 1));
            let expected = 100 - consumed as usize;
            assert_eq!(c.backpressure(), expected);
            assert_eq!(stream.consumer_backpressure(c.id()), expected);
            assert_eq!(stream.backpressure(), expected);
            let stats = stream.consumer_stats();
            assert_eq!(stats.len(), 1);
            assert_eq!((stats[0].id, stats[0].backpressure), (c.id(), expected));
        }
        assert_eq!(try_next(&mut c), None);
    });
}

#[test]
fn backpressure_is_the_max_over_two_consumers_written_intermittently() {
    run(async {
        let stream = WritableConsumableStream::new();
        let mut a = stream.create_consumer();
        stream.write(1u32);
        stream.write(2);
        stream.write(3);
        let mut b = stream.create_consumer();
        stream.write(4);
        stream.write(5);
        assert_eq!((a.backpressure(), b.backpressure(), stream.backpressure()), (5, 2, 5));
        for _ in 0..4 {
            a.next().await.unwrap();
        }
        assert_eq!((a.backpressure(), b.backpressure(), stream.backpressure()), (1, 2, 2));
        b.next().await.unwrap();
        stream.write(6);
        assert_eq!((a.backpressure(), b.backpressure(), stream.backpressure()), (2, 2, 2));
        let stats: Vec<_> = stream.consumer_stats().iter().map(|s| (s.id, s.backpressure)).collect();
        assert_eq!(stats, [(a.id(), 2), (b.id(), 2)], "stats are by ascending id");
    });
}

#[test]
fn backpressure_is_reset_when_the_consumer_is_dropped() {
    let stream = WritableConsumableStream::new();
    let c = stream.create_consumer();
    let id = c.id();
    for i in 0..10u32 {
        stream.write(i);
    }
    assert_eq!(stream.consumer_backpressure(id), 10);
    drop(c); // JS: return() / break out of for-await
    assert_eq!(stream.backpressure(), 0);
    assert_eq!(stream.consumer_backpressure(id), 0);
    assert_eq!(stream.consumer_count(), 0);
}

#[test]
fn backpressure_stays_correct_for_others_after_a_consumer_is_dropped() {
    run(async {
        let stream = WritableConsumableStream::new();
        let slow = stream.create_consumer();
        let mut fast = stream.create_consumer();
        for i in 0..10u32 {
            stream.write(i);
        }
        for _ in 0..7 {
            fast.next().await.unwrap();
        }
        assert_eq!(stream.backpressure(), 10);
        drop(slow);
        assert_eq!(stream.backpressure(), 3);
        assert_eq!(fast.backpressure(), 3);
        stream.write(10);
        assert_eq!(stream.backpressure(), 4);
    });
}

#[test]
fn targeted_items_do_not_count_in_other_consumers_backpressure() {
    run(async {
        let stream = WritableConsumableStream::new();
        let mut a = stream.create_consumer();
        let b = stream.create_consumer();
        stream.write(1u32);
        assert!(stream.write_to_consumer(b.id(), 2));
        assert!(stream.close_consumer(b.id()));
        // `a` has exactly one item written for it.
        assert_eq!(a.backpressure(), 1, "ConsumerStats: items written *for this consumer*");
        assert_eq!(stream.consumer_backpressure(a.id()), 1);
        assert_eq!(b.backpressure(), 3, "1, 2 and b's close packet");
        assert_eq!(a.next().await, Some(1));
        assert_eq!(a.backpressure(), 0);
        stream.kill_consumer(a.id());
        assert_eq!(a.next().await, None);
        assert_eq!(a.end(), Some(&End::Killed { value: None, skipped: 0 }));
    });
}

// ---------------------------------------------------------------------------------------------
// await once
// ---------------------------------------------------------------------------------------------

#[test]
fn once_resolves_with_the_next_write() {
    run(async {
        let stream = WritableConsumableStream::new();
        let mut once = pin!(stream.once());
        assert_eq!(poll!(once.as_mut()), Poll::Pending);
        stream.write(7u32);
        stream.write(8);
        assert_eq!(bounded("once", once).await, Some(7));
        assert_eq!(stream.consumer_count(), 0, "the temporary consumer is gone");
    });
}

#[test]
fn once_in_another_task_resolves_with_a_later_write() {
    run(async {
        let stream = WritableConsumableStream::<u32>::new();
        let listener = stream.clone();
        let task = smol::spawn(async move { listener.once().await });
        // Keep writing until the task's temporary consumer has seen a write.
        let mut i = 0;
        while !task.is_finished() {
            stream.write(i);
            i += 1;
            bounded("yield", Timer::after(Duration::from_millis(1))).await;
        }
        let got = bounded("once", task).await.unwrap();
        assert!(got < i);
    });
}

#[test]
fn once_sees_only_items_written_after_it_starts() {
    run(async {
        let stream = WritableConsumableStream::new();
        let _keep = stream.create_consumer();
        stream.write(1u32);
        let mut once = pin!(stream.once());
        assert_eq!(poll!(once.as_mut()), Poll::Pending, "1 was written before once() started");
        stream.write(2);
        assert_eq!(bounded("once", once).await, Some(2));
    });
}

#[test]
fn once_with_a_timeout_times_out() {
    smol::block_on(async {
        let stream = WritableConsumableStream::<u32>::new();
        // JS once(timeout) = a fresh consumer's next item within the timeout.
        let mut c = stream.create_consumer();
        assert_eq!(socketcluster::smol::next_timeout(&mut c, Duration::from_millis(20)).await, Err(TimedOut));
    });
}

#[test]
fn once_resolves_none_on_close_unlike_js() {
    run(async {
        let stream = WritableConsumableStream::<u32>::new();
        let mut once = pin!(stream.once());
        assert_eq!(poll!(once.as_mut()), Poll::Pending);
        stream.close();
        assert_eq!(bounded("once", once).await, None);
    });
}

#[test]
fn once_after_close_resolves_with_a_later_write() {
    run(async {
        let stream = WritableConsumableStream::<u32>::new();
        let mut first = pin!(stream.once());
        assert_eq!(poll!(first.as_mut()), Poll::Pending);
        stream.close();
        let mut second = pin!(stream.once());
        assert_eq!(poll!(second.as_mut()), Poll::Pending);
        stream.write(5);
        assert_eq!(bounded("first once", first).await, None, "the earlier once ended at the close");
        assert_eq!(bounded("second once", second).await, Some(5));
    });
}

// ---------------------------------------------------------------------------------------------
// while loops
// ---------------------------------------------------------------------------------------------

#[test]
fn while_loop_receives_until_close() {
    run(async {
        let stream = WritableConsumableStream::new();
        let mut c = stream.create_consumer();
        let writer = stream.clone();
        let task = smol::spawn(async move {
            for i in 0..20u32 {
                writer.write(i);
                if i % 5 == 0 {
                    smol::future::yield_now().await;
                }
            }
            writer.close();
        });
        let mut sum = 0;
        while let Some(v) = bounded("next", c.next()).await {
            sum += v;
        }
        assert_eq!(sum, (0..20).sum::<u32>());
        task.await;
    });
}

#[test]
fn sequential_while_loops_each_with_a_new_consumer() {
    run(async {
        let stream = WritableConsumableStream::new();
        for round in 0..3u32 {
            let mut c = stream.create_consumer();
            for i in 0..4 {
                stream.write(round * 10 + i);
            }
            stream.close();
            let mut seen = Vec::new();
            while let Some(v) = bounded("next", c.next()).await {
                seen.push(v);
            }
            assert_eq!(seen, (0..4).map(|i| round * 10 + i).collect::<Vec<_>>());
        }
    });
}

// ---------------------------------------------------------------------------------------------
// individual consumers
// ---------------------------------------------------------------------------------------------

#[test]
fn kill_consumer_ends_only_that_consumer() {
    run(async {
        let stream = WritableConsumableStream::new();
        let mut a = stream.create_consumer();
        let mut b = stream.create_consumer();
        stream.write(1u32);
        assert!(stream.kill_consumer_with(a.id(), 9));
        stream.write(2);
        stream.close();
        assert_eq!(collect(&mut a).await, Vec::<u32>::new());
        assert_eq!(a.end(), Some(&End::Killed { value: Some(9), skipped: 1 }));
        assert_eq!(collect(&mut b).await, [1, 2]);
    });
}

#[test]
fn close_consumer_ends_only_that_consumer_after_its_buffered_items() {
    run(async {
        let stream = WritableConsumableStream::new();
        let mut a = stream.create_consumer();
        let mut b = stream.create_consumer();
        stream.write(1u32);
        assert!(stream.close_consumer_with(a.id(), 100));
        assert!(stream.has_consumer(a.id()), "live until it reads the close");
        stream.write(2);
        assert_eq!(collect(&mut a).await, [1]);
        assert_eq!(a.end(), Some(&End::Closed { value: Some(100) }));
        assert!(!stream.has_consumer(a.id()));
        assert!(!stream.close_consumer(a.id()));
        assert_eq!(stream.write(3), 1);
        stream.close();
        assert_eq!(collect(&mut b).await, [1, 2, 3]);
    });
}

#[test]
fn close_one_of_many_consumers() {
    run(async {
        let stream = WritableConsumableStream::new();
        let mut cs: Vec<_> = (0..4).map(|_| stream.create_consumer()).collect();
        stream.write(1u32);
        assert!(stream.close_consumer(cs[2].id()));
        stream.write(2);
        assert_eq!(collect(&mut cs[2]).await, [1]);
        assert_eq!(stream.consumer_count(), 3);
        stream.close();
        for (i, c) in cs.iter_mut().enumerate().filter(|(i, _)| *i != 2) {
            assert_eq!(collect(c).await, [1, 2], "consumer {i}");
        }
    });
}

#[test]
fn write_to_consumer_reaches_only_that_consumer() {
    run(async {
        let stream = WritableConsumableStream::new();
        let mut a = stream.create_consumer();
        let mut b = stream.create_consumer();
        stream.write(1u32);
        assert!(stream.write_to_consumer(b.id(), 2));
        stream.write(3);
        stream.close();
        assert_eq!(collect(&mut a).await, [1, 3]);
        assert_eq!(collect(&mut b).await, [1, 2, 3]);
        assert!(!stream.write_to_consumer(b.id(), 4), "b has ended");
    });
}

#[test]
fn many_items_targeted_at_others_never_stall_a_consumer() {
    run(async {
        let stream = WritableConsumableStream::new();
        let mut a = stream.create_consumer();
        let b = stream.create_consumer();
        for i in 0..100u32 {
            assert!(stream.write_to_consumer(b.id(), i));
        }
        stream.write(1000);
        // `a` must skip the 100 entries for `b` and yield 1000 without needing another write.
        let got =
            within(Duration::from_secs(2), "a's next item after 100 targeted writes to b", a.next()).await;
        assert_eq!(got, Some(1000));
    });
}

#[test]
fn many_close_packets_for_others_never_stall_a_consumer() {
    let stream = WritableConsumableStream::new();
    let mut a = stream.create_consumer();
    let others: Vec<_> = (0..40).map(|_| stream.create_consumer()).collect();
    for o in &others {
        assert!(stream.close_consumer(o.id()));
    }
    stream.write(7u32);
    assert_eq!(try_next(&mut a), Some(Some(7)), "the item is available: the poll must yield it");
}

// ---------------------------------------------------------------------------------------------
// consumer count and ids
// ---------------------------------------------------------------------------------------------

#[test]
fn consumer_count_after_creating_consumers() {
    let stream = WritableConsumableStream::<u32>::new();
    assert_eq!(stream.consumer_count(), 0);
    let a = stream.create_consumer();
    assert_eq!(stream.consumer_count(), 1);
    let b = stream.create_consumer();
    assert_eq!(stream.consumer_count(), 2);
    drop(a);
    assert_eq!(stream.consumer_count(), 1);
    drop(b);
    assert_eq!(stream.consumer_count(), 0);
}

#[test]
fn consumer_count_while_loops_run_in_tasks() {
    run(async {
        let stream = WritableConsumableStream::<u32>::new();
        let (ready_tx, ready_rx) = async_channel::unbounded();
        let loops: Vec<_> = (0..2)
            .map(|_| {
                let stream = stream.clone();
                let ready = ready_tx.clone();
                smol::spawn(async move {
                    let mut c = stream.create_consumer();
                    ready.send(()).await.unwrap();
                    let mut n = 0;
                    while c.next().await.is_some() {
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        for _ in 0..2 {
            bounded("loop started", ready_rx.recv()).await.unwrap();
        }
        assert_eq!(stream.consumer_count(), 2);
        stream.write(1);
        stream.close();
        for l in loops {
            assert_eq!(bounded("loop", l).await, 1);
        }
        assert_eq!(stream.consumer_count(), 0);
    });
}

#[test]
fn consumer_count_is_zero_after_kill_and_one_after_killing_one() {
    let stream = WritableConsumableStream::<u32>::new();
    let a = stream.create_consumer();
    let _b = stream.create_consumer();
    assert!(stream.kill_consumer(a.id()));
    assert_eq!(stream.consumer_count(), 1);
    stream.kill();
    assert_eq!(stream.consumer_count(), 0);
}

#[test]
fn consumer_count_is_zero_once_the_close_is_consumed() {
    run(async {
        let stream = WritableConsumableStream::<u32>::new();
        let mut a = stream.create_consumer();
        let mut b = stream.create_consumer();
        stream.close();
        assert_eq!(stream.consumer_count(), 2, "live until each reads the close");
        assert_eq!(a.next().await, None);
        assert_eq!(stream.consumer_count(), 1);
        assert_eq!(b.next().await, None);
        assert_eq!(stream.consumer_count(), 0);
    });
}

#[test]
fn consumer_count_is_one_after_closing_one_of_two() {
    run(async {
        let stream = WritableConsumableStream::<u32>::new();
        let mut a = stream.create_consumer();
        let _b = stream.create_consumer();
        stream.close_consumer(a.id());
        assert_eq!(a.next().await, None);
        assert_eq!(stream.consumer_count(), 1);
    });
}

#[test]
fn consumer_ids_start_at_one_and_are_never_reused() {
    let stream = WritableConsumableStream::<u32>::new();
    let mut seen = Vec::new();
    for round in 0..5 {
        let a = stream.create_consumer();
        let b = stream.create_consumer();
        seen.push(a.id().get());
        seen.push(b.id().get());
        if round % 2 == 0 {
            stream.kill();
        }
        drop((a, b));
    }
    assert_eq!(seen, (1..=10).collect::<Vec<u64>>());
    assert_eq!(format!("{}", stream.create_consumer().id()), "11");
}

#[test]
fn consumer_created_after_close_and_kill_works_normally() {
    run(async {
        let stream = WritableConsumableStream::new();
        let _old = stream.create_consumer();
        stream.close();
        stream.kill();
        let mut c = stream.create_consumer();
        assert_eq!(stream.consumer_count(), 1);
        stream.write(1u32);
        stream.close();
        assert_eq!(collect(&mut c).await, [1]);
    });
}

// ---------------------------------------------------------------------------------------------
// bounded streams: Overflow::Wait
// ---------------------------------------------------------------------------------------------

#[test]
fn try_write_is_refused_at_the_limit_and_returns_the_value() {
    run(async {
        let stream = WritableConsumableStream::with_limit(3, Overflow::Wait);
        assert_eq!(stream.limit(), Some(3));
        let mut c = stream.create_consumer();
        for i in 0..3u32 {
            assert_eq!(stream.try_write(i), Ok(1));
        }
        assert_eq!(stream.try_write(3), Err(Full(3)));
        assert_eq!(c.backpressure(), 3, "the refused value was not written");
        assert_eq!(c.next().await, Some(0));
        assert_eq!(stream.try_write(3), Ok(1));
        assert_eq!(stream.try_write(4), Err(Full(4)));
        // `write` appends even at the limit.
        assert_eq!(stream.write(4), 1);
        assert_eq!(c.backpressure(), 4);
        stream.close();
        assert_eq!(collect(&mut c).await, [1, 2, 3, 4]);
    });
}

#[test]
fn try_write_without_consumers_is_accepted_and_dropped() {
    let stream = WritableConsumableStream::with_limit(0, Overflow::Wait);
    assert_eq!(stream.try_write(1u32), Ok(0));
    assert_eq!(WritableConsumableStream::<u32>::new().limit(), None);
}

#[test]
fn try_write_is_refused_while_the_slowest_consumer_is_at_the_limit() {
    run(async {
        let stream = WritableConsumableStream::with_limit(2, Overflow::Wait);
        let mut fast = stream.create_consumer();
        let mut slow = stream.create_consumer();
        stream.try_write(1u32).unwrap();
        stream.try_write(2).unwrap();
        assert_eq!(fast.next().await, Some(1));
        assert_eq!(fast.next().await, Some(2));
        assert_eq!(stream.try_write(3), Err(Full(3)), "slow still has 2 pending");
        assert_eq!(slow.next().await, Some(1));
        assert_eq!(stream.try_write(3), Ok(2));
    });
}

#[test]
fn write_async_waits_until_the_slowest_consumer_is_under_the_limit() {
    run(async {
        let stream = WritableConsumableStream::with_limit(2, Overflow::Wait);
        let mut fast = stream.create_consumer();
        let mut slow = stream.create_consumer();
        stream.write(1u32);
        stream.write(2);
        let (waker, wakes) = counting_waker();
        let mut w = stream.write_async(3);
        assert_eq!(poll_with(&mut w, &waker), Poll::Pending);
        assert_eq!(fast.next().await, Some(1));
        assert_eq!(fast.next().await, Some(2));
        assert_eq!(poll_with(&mut w, &waker), Poll::Pending, "slow is still at the limit");
        let before = wakes.count();
        assert_eq!(slow.next().await, Some(1));
        assert!(wakes.count() > before, "the consumer's progress must wake the writer");
        assert_eq!(poll_with(&mut w, &waker), Poll::Ready(2));
        drop(w);
        assert_eq!(slow.backpressure(), 2);
        stream.close();
        assert_eq!(collect(&mut slow).await, [2, 3]);
    });
}

#[test]
fn write_async_completes_as_a_consumer_in_another_task_reads() {
    run(async {
        const LIMIT_ITEMS: usize = 4;
        let stream = WritableConsumableStream::with_limit(LIMIT_ITEMS, Overflow::Wait);
        let mut c = stream.create_consumer();
        let writer = stream.clone();
        let task = smol::spawn(async move {
            for i in 0..300u32 {
                assert_eq!(writer.write_async(i).await, 1);
            }
        });
        for expected in 0..300 {
            let v = bounded("next (is a waiting writer woken?)", c.next()).await;
            assert_eq!(v, Some(expected));
            let bp = c.backpressure();
            assert!(bp <= LIMIT_ITEMS, "the writer never exceeds the limit: {bp} after item {expected}");
            if expected % 16 == 0 {
                smol::future::yield_now().await;
            }
        }
        bounded("writer", task).await;
        // A close is a control packet, not a write: it is never held back by the limit.
        stream.close();
        assert_eq!(c.backpressure(), 1);
        assert_eq!(bounded("end", c.next()).await, None);
    });
}

#[test]
fn write_async_without_consumers_completes_at_once() {
    run(async {
        let stream = WritableConsumableStream::with_limit(1, Overflow::Wait);
        assert_eq!(stream.write_async(1u32).await, 0);
    });
}

#[test]
fn dropping_the_slow_consumer_releases_a_waiting_writer() {
    let stream = WritableConsumableStream::with_limit(1, Overflow::Wait);
    let slow = stream.create_consumer();
    let fast = stream.create_consumer();
    stream.write(1u32);
    let (waker, wakes) = counting_waker();
    let mut w = stream.write_async(2);
    assert_eq!(poll_with(&mut w, &waker), Poll::Pending);
    drop(slow);
    assert_eq!(poll_with(&mut w, &waker), Poll::Pending, "fast is at the limit too");
    drop(fast);
    assert!(wakes.count() >= 1, "dropping the last consumer over the limit wakes the writer");
    assert_eq!(poll_with(&mut w, &waker), Poll::Ready(0));
}

#[test]
fn killing_the_slow_consumer_releases_a_waiting_writer() {
    run(async {
        let stream = WritableConsumableStream::with_limit(1, Overflow::Wait);
        let slow = stream.create_consumer();
        let mut fast = stream.create_consumer();
        stream.write(1u32);
        assert_eq!(fast.next().await, Some(1));
        let (waker, wakes) = counting_waker();
        let mut w = stream.write_async(2);
        assert_eq!(poll_with(&mut w, &waker), Poll::Pending);
        assert!(stream.kill_consumer(slow.id()));
        assert!(wakes.count() >= 1, "the kill must wake the writer");
        assert_eq!(poll_with(&mut w, &waker), Poll::Ready(1));
        assert_eq!(fast.next().await, Some(2));
    });
}

#[test]
fn killing_the_slow_consumer_releases_a_writer_task() {
    run(async {
        let stream = WritableConsumableStream::with_limit(2, Overflow::Wait);
        let slow = stream.create_consumer();
        let mut fast = stream.create_consumer();
        let writer = stream.clone();
        let task = smol::spawn(async move {
            for i in 0..50u32 {
                writer.write_async(i).await;
            }
        });
        // `fast` reads what it can; the writer is throttled by `slow` until `slow` is killed.
        assert_eq!(bounded("fast 0", fast.next()).await, Some(0));
        assert_eq!(bounded("fast 1", fast.next()).await, Some(1));
        assert!(stream.kill_consumer(slow.id()));
        for i in 2..50 {
            assert_eq!(bounded("fast after kill", fast.next()).await, Some(i));
        }
        bounded("writer", task).await;
    });
}

// ---------------------------------------------------------------------------------------------
// bounded streams: Overflow::KillConsumer
// ---------------------------------------------------------------------------------------------

#[test]
fn overflowing_consumer_is_shed_and_others_receive_everything() {
    run(async {
        let stream = WritableConsumableStream::with_limit(3, Overflow::KillConsumer);
        let mut slow = stream.create_consumer();
        let mut fast = stream.create_consumer();
        let mut got = Vec::new();
        for i in 0..10u32 {
            let reached = stream.write(i);
            if i < 3 {
                assert_eq!(reached, 2);
            }
            if i > 3 {
                assert_eq!(reached, 1, "slow was shed");
            }
            got.push(fast.next().await.unwrap());
        }
        assert_eq!(got, (0..10).collect::<Vec<_>>());
        assert!(!stream.has_consumer(slow.id()));
        assert_eq!(slow.next().await, None);
        assert_eq!(slow.end(), Some(&End::Overflowed { skipped: 4 }));
        assert_eq!(slow.end().map(End::skipped), Some(4));
        assert_eq!(slow.end().and_then(End::value), None);
        stream.close();
        assert_eq!(fast.next().await, None);
        assert_eq!(fast.end(), Some(&End::Closed { value: None }));
    });
}

#[test]
fn overflow_wakes_the_shed_consumer_and_never_blocks_the_writer() {
    let stream = WritableConsumableStream::with_limit(2, Overflow::KillConsumer);
    let mut c = stream.create_consumer();
    let (waker, wakes) = counting_waker();
    assert_eq!(poll_next_with(&mut c, &waker), Poll::Pending);
    for i in 0..3u32 {
        assert_eq!(stream.try_write(i).map(|_| ()), Ok(()), "KillConsumer never refuses");
    }
    assert!(wakes.count() >= 1);
    assert_eq!(poll_next_with(&mut c, &waker), Poll::Ready(None));
    assert_eq!(c.end(), Some(&End::Overflowed { skipped: 3 }));
}

#[test]
fn targeted_writes_over_the_limit_shed_the_consumer() {
    run(async {
        let stream = WritableConsumableStream::with_limit(2, Overflow::KillConsumer);
        let mut a = stream.create_consumer();
        for i in 0..3u32 {
            stream.write_to_consumer(a.id(), i);
        }
        assert!(!stream.has_consumer(a.id()), "a's backlog went over the limit");
        assert_eq!(a.next().await, None);
        assert_eq!(a.end(), Some(&End::Overflowed { skipped: 3 }));
    });
}

#[test]
fn ids_and_handles_format_for_debugging() {
    let stream = WritableConsumableStream::<u32>::new();
    let c = stream.create_consumer();
    assert_eq!(format!("{:?}", c.id()), "ConsumerId(1)");
    assert!(format!("{stream:?}").contains("consumers: 1"));
    assert!(format!("{c:?}").contains("ConsumerId(1)"));
}

// ---------------------------------------------------------------------------------------------
// Per-value release: a value is freed when the last consumer passes it, not with its chunk
// ---------------------------------------------------------------------------------------------

#[test]
fn a_value_is_released_once_every_consumer_has_yielded_it() {
    use std::sync::Arc;
    let stream = WritableConsumableStream::new();
    let mut a = stream.create_consumer();
    let mut b = stream.create_consumer();
    let values = [Arc::new(1), Arc::new(2), Arc::new(3)];
    for v in &values {
        stream.write(v.clone());
    }
    for expected in 1..=2 {
        assert_eq!(try_next(&mut a).map(|v| *v.unwrap()), Some(expected));
    }
    // `a` has yielded 1 and 2: the buffer still holds them for `b`.
    assert!(Arc::strong_count(&values[0]) > 1);
    for expected in 1..=2 {
        assert_eq!(try_next(&mut b).map(|v| *v.unwrap()), Some(expected));
    }
    assert_eq!(Arc::strong_count(&values[0]), 1, "nobody retains 1 once both consumers yielded it");
    assert_eq!(Arc::strong_count(&values[1]), 1, "nobody retains 2 once both consumers yielded it");
    assert!(Arc::strong_count(&values[2]) > 1, "3 is still held for the consumers");
    assert_eq!(try_next(&mut a).map(|v| *v.unwrap()), Some(3));
    assert_eq!(try_next(&mut b).map(|v| *v.unwrap()), Some(3));
    assert_eq!(Arc::strong_count(&values[2]), 1);
    assert_eq!(try_next(&mut a), None, "a is caught up and pending");
}

#[test]
fn a_dropped_or_killed_slowest_consumer_releases_what_the_others_passed() {
    use std::sync::Arc;
    let stream = WritableConsumableStream::new();
    let mut fast = stream.create_consumer();
    let slow = stream.create_consumer();
    let killed = stream.create_consumer();
    let values: Vec<Arc<u32>> = (0..10).map(Arc::new).collect();
    for v in &values {
        stream.write(v.clone());
    }
    for i in 0..5 {
        assert_eq!(try_next(&mut fast).map(|v| *v.unwrap()), Some(i));
    }
    assert!(values.iter().all(|v| Arc::strong_count(v) > 1));
    drop(slow);
    assert!(stream.kill_consumer(killed.id()));
    // `fast` holds 5..10 in its prefetch queue; nothing before it is retained by anyone.
    for v in &values[..5] {
        assert_eq!(Arc::strong_count(v), 1);
    }
    for i in 5..10 {
        assert_eq!(try_next(&mut fast).map(|v| *v.unwrap()), Some(i));
    }
    assert!(values.iter().all(|v| Arc::strong_count(v) == 1));
}

#[test]
fn targeted_and_skipped_entries_are_released_when_passed() {
    use std::sync::Arc;
    let stream = WritableConsumableStream::new();
    let mut a = stream.create_consumer();
    let mut b = stream.create_consumer();
    let for_b = Arc::new(100);
    let for_all = Arc::new(1);
    assert!(stream.write_to_consumer(b.id(), for_b.clone()));
    stream.write(for_all.clone());
    assert_eq!(try_next(&mut b).map(|v| *v.unwrap()), Some(100));
    assert_eq!(try_next(&mut b).map(|v| *v.unwrap()), Some(1));
    assert_eq!(try_next(&mut a).map(|v| *v.unwrap()), Some(1));
    assert_eq!(Arc::strong_count(&for_b), 1, "the targeted value is released once both passed it");
    assert_eq!(Arc::strong_count(&for_all), 1);
}

#[test]
fn values_are_released_one_by_one_across_many_chunks_and_consumers() {
    use std::sync::Arc;
    // Writes interleaved with consumers at different paces over several chunks, so cursors stop
    // mid-chunk: after each step, every value that all consumers have yielded is freed.
    let stream = WritableConsumableStream::new();
    let mut consumers: Vec<_> = (0..4).map(|_| stream.create_consumer()).collect();
    let values: Vec<Arc<u32>> = (0..300).map(Arc::new).collect();
    let mut written = 0;
    let mut read = [0usize; 4];
    for step in 0..1500 {
        if step % 3 == 0 && written < values.len() {
            stream.write(values[written].clone());
            written += 1;
        }
        let k = (step * 7 + step / 5) % 4;
        match try_next(&mut consumers[k]) {
            Some(v) => {
                assert_eq!(v.map(|v| *v), Some(read[k] as u32));
                read[k] += 1;
            }
            None => assert_eq!(read[k], written, "pending only when caught up"),
        }
        let slowest = *read.iter().min().unwrap();
        for v in &values[..slowest] {
            assert_eq!(Arc::strong_count(v), 1, "value {v} was yielded by every consumer");
        }
    }
    assert_eq!(read, [300; 4]);
}
