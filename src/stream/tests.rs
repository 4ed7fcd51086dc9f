//! Unit tests of the buffer internals (behaviour tests live in `tests/`).
#![allow(clippy::unwrap_used)]

use alloc::vec::Vec;
use futures::StreamExt;
use futures::executor::block_on;

use super::buffer::CHUNK;
use super::*;

/// Runs `f` on a thread; the returned closure waits for its result, failing after 60 s instead of
/// hanging on a bug.
fn spawn<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> impl FnOnce() -> R {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(f()));
    move || rx.recv_timeout(std::time::Duration::from_secs(60)).expect("thread did not finish in time")
}

fn chunks<T>(s: &WritableConsumableStream<T>) -> usize {
    s.chunk_stats().0
}

#[test]
fn chunks_are_freed_by_the_slowest_consumer() {
    let s = WritableConsumableStream::new();
    let mut fast = s.create_consumer();
    let mut slow = s.create_consumer();
    for i in 0..(CHUNK * 10) as u64 {
        s.write(i);
    }
    assert_eq!(chunks(&s), 10);
    block_on(async {
        for i in 0..(CHUNK * 10) as u64 {
            assert_eq!(fast.next().await, Some(i));
        }
    });
    assert_eq!(chunks(&s), 10, "slow still holds every chunk");
    block_on(async {
        for i in 0..(CHUNK * 5) as u64 {
            assert_eq!(slow.next().await, Some(i));
        }
    });
    assert!(chunks(&s) <= 6);
    drop(slow);
    assert!(chunks(&s) <= 1, "dropping the slowest consumer frees its chunks");
    drop(fast);
    assert_eq!(chunks(&s), 0);
}

#[test]
fn kill_releases_the_buffer_at_once() {
    let s = WritableConsumableStream::new();
    let c = s.create_consumer();
    for i in 0..(CHUNK * 4) as u32 {
        s.write(i);
    }
    assert_eq!(chunks(&s), 4);
    assert!(s.kill_consumer(c.id()));
    assert_eq!(chunks(&s), 0);
    assert_eq!(c.backpressure(), 0);
}

#[test]
fn slab_capacity_is_returned_after_a_backlog() {
    let s = WritableConsumableStream::new();
    let mut c = s.create_consumer();
    for i in 0..(CHUNK * 100) as u32 {
        s.write(i);
    }
    let got: Vec<u32> = block_on(async {
        let mut v = Vec::new();
        for _ in 0..CHUNK * 100 {
            v.push(c.next().await.unwrap());
        }
        v
    });
    assert_eq!(got.len(), CHUNK * 100);
    let (len, capacity) = s.chunk_stats();
    assert!(len <= 2);
    assert!(capacity <= 4, "capacity {capacity}");
}

/// Small enough for miri: a writer thread, reader threads, a kill from another thread.
#[test]
fn threads_write_read_and_kill() {
    const N: u64 = if cfg!(miri) { 200 } else { 20_000 };
    let s = WritableConsumableStream::new();
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let mut c = s.create_consumer();
            spawn(move || {
                block_on(async {
                    let mut expect = 0;
                    while let Some(v) = c.next().await {
                        assert_eq!(v, expect);
                        expect += 1;
                    }
                    (expect, c.take_end())
                })
            })
        })
        .collect();
    let victim = s.create_consumer();
    let writer = {
        let s = s.clone();
        spawn(move || {
            for i in 0..N {
                s.write(i);
            }
            s.close();
        })
    };
    let killer = {
        let s = s.clone();
        let id = victim.id();
        spawn(move || s.kill_consumer(id))
    };
    assert!(killer());
    writer();
    for r in readers {
        let (n, end) = r();
        assert_eq!(n, N);
        assert_eq!(end, Some(End::Closed { value: None }));
    }
    assert_eq!(victim.backpressure(), 0);
    drop(victim);
    assert_eq!(s.chunk_stats().0, 0);
}

#[test]
fn write_async_wakes_when_a_slow_consumer_is_dropped() {
    let s = WritableConsumableStream::with_limit(2, Overflow::Wait);
    let slow = s.create_consumer();
    s.write(1u8);
    s.write(2);
    assert_eq!(s.try_write(3), Err(Full(3)));
    let writer = {
        let s = s.clone();
        spawn(move || block_on(s.write_async(3)))
    };
    drop(slow);
    let reached = writer();
    assert_eq!(reached, 0, "no consumer left to reach");
}

/// The auto traits the API promises: streams and demuxes are `Send + Sync` and consumers are
/// `Send + Unpin` whenever `T: Send`, even for a `T` that is neither `Sync` nor `Unpin`.
#[test]
fn auto_traits() {
    fn send_sync<X: Send + Sync>() {}
    fn send_unpin<X: Send + Unpin>() {}
    type NotSyncNotUnpin = (core::cell::Cell<u8>, core::marker::PhantomPinned);
    send_sync::<WritableConsumableStream<NotSyncNotUnpin>>();
    send_sync::<StreamDemux<NotSyncNotUnpin>>();
    send_unpin::<Consumer<NotSyncNotUnpin>>();
    send_unpin::<WriteAsync<'static, NotSyncNotUnpin>>();
}

#[test]
fn a_dropped_write_async_leaves_no_waker_behind() {
    use core::task::{Context, Poll, Waker};
    let s = WritableConsumableStream::with_limit(1, Overflow::Wait);
    let mut c = s.create_consumer();
    s.write(0u8);
    let mut cx = Context::from_waker(Waker::noop());
    for i in 1..=3 {
        let mut w = s.write_async(i);
        assert_eq!(core::pin::Pin::new(&mut w).poll(&mut cx), Poll::Pending);
        assert_eq!(core::pin::Pin::new(&mut w).poll(&mut cx), Poll::Pending);
        assert_eq!(s.waiting_writers(), 1, "one registration per waiting future");
        drop(w);
        assert_eq!(s.waiting_writers(), 0);
    }
    let mut w = s.write_async(9);
    assert_eq!(core::pin::Pin::new(&mut w).poll(&mut cx), Poll::Pending);
    assert_eq!(block_on(c.next()), Some(0));
    assert_eq!(s.waiting_writers(), 0, "room made: the writer was woken and unregistered");
    assert_eq!(core::pin::Pin::new(&mut w).poll(&mut cx), Poll::Ready(1));
    assert_eq!(block_on(c.next()), Some(9));
}

/// An entry whose `Drop` drops the stream's last handle (a server event holding the last socket,
/// which holds the server, which holds the stream): freeing it must not happen under the lock.
#[test]
fn an_entry_dropping_the_last_handle_does_not_deadlock() {
    use std::sync::mpsc;
    use std::time::Duration;

    #[derive(Clone)]
    struct Keep(
        #[allow(dead_code)] crate::sync::Arc<crate::sync::Mutex<Option<WritableConsumableStream<Keep>>>>,
    );

    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || {
        let stream = WritableConsumableStream::<Keep>::new();
        let consumer = stream.create_consumer();
        let slot = crate::sync::Arc::new(crate::sync::Mutex::new(None));
        stream.write(Keep(slot.clone()));
        *slot.lock() = Some(stream); // the buffered entry now holds the last handle
        drop(slot);
        drop(consumer); // frees the chunk: drops the entry, the handle, and locks again
        let _ = done.send(());
    });
    assert!(finished.recv_timeout(Duration::from_secs(10)).is_ok(), "dropping the consumer deadlocked");
}
