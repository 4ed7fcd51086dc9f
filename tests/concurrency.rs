//! Writers and consumers on several threads: every consumer receives every message of every
//! writer, in each writer's order, on smol's and tokio's multi-threaded executors.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use socketcluster::stream::{Consumer, End, Overflow, WritableConsumableStream};

const WRITERS: u64 = 3;
const PER_WRITER: u64 = 20_000;
const CONSUMERS: usize = 8;
const LIMIT: Duration = Duration::from_secs(60);

/// Reads until the end; checks that each writer's sequence arrives complete and in order.
async fn check_consumer(mut c: Consumer<(u64, u64)>) -> u64 {
    let mut next = [0u64; WRITERS as usize];
    let mut n = 0;
    while let Some((w, seq)) = c.next().await {
        assert_eq!(seq, next[w as usize], "writer {w}: out of order or lost");
        next[w as usize] += 1;
        n += 1;
    }
    assert_eq!(c.end(), Some(&End::Closed { value: None }));
    assert!(next.iter().all(|&k| k == PER_WRITER), "{next:?}");
    n
}

fn write_all(stream: &WritableConsumableStream<(u64, u64)>, w: u64) {
    for seq in 0..PER_WRITER {
        assert_eq!(stream.write((w, seq)), CONSUMERS);
        if seq % 1024 == 0 {
            std::thread::yield_now();
        }
    }
}

#[test]
fn smol_threads_every_consumer_gets_every_message_in_order() {
    let ex = Arc::new(smol::Executor::new());
    let (stop, shutdown) = smol::channel::unbounded::<()>();
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let ex = ex.clone();
            let shutdown = shutdown.clone();
            std::thread::spawn(move || smol::block_on(ex.run(shutdown.recv())))
        })
        .collect();
    let stream = WritableConsumableStream::new();
    let tasks: Vec<_> = (0..CONSUMERS).map(|_| ex.spawn(check_consumer(stream.create_consumer()))).collect();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let s = stream.clone();
            std::thread::spawn(move || write_all(&s, w))
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    stream.close();
    let counts = smol::block_on(async {
        let all = futures::future::join_all(tasks);
        futures::future::select(Box::pin(all), Box::pin(smol::Timer::after(LIMIT))).await
    });
    let futures::future::Either::Left((counts, _)) = counts else {
        panic!("consumers did not finish in time")
    };
    assert!(counts.iter().all(|&n| n == WRITERS * PER_WRITER));
    drop(stop);
    for w in workers {
        let _ = w.join().unwrap();
    }
    assert_eq!(stream.consumer_count(), 0);
}

#[test]
fn tokio_multi_thread_every_consumer_gets_every_message_in_order() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_time().build().unwrap();
    rt.block_on(async {
        let stream = WritableConsumableStream::new();
        let tasks: Vec<_> =
            (0..CONSUMERS).map(|_| tokio::spawn(check_consumer(stream.create_consumer()))).collect();
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let s = stream.clone();
                tokio::task::spawn_blocking(move || write_all(&s, w))
            })
            .collect();
        for w in writers {
            w.await.unwrap();
        }
        stream.close();
        for t in tasks {
            let n = tokio::time::timeout(LIMIT, t).await.expect("consumer timed out").unwrap();
            assert_eq!(n, WRITERS * PER_WRITER);
        }
    });
}

/// Flow control across threads: a bounded stream never lets a consumer fall more than `limit`
/// behind, and nothing is lost.
#[test]
fn tokio_multi_thread_write_async_respects_the_limit() {
    const LIMIT_ITEMS: usize = 100;
    const N: u64 = 50_000;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_time().build().unwrap();
    rt.block_on(async {
        let stream = WritableConsumableStream::with_limit(LIMIT_ITEMS, Overflow::Wait);
        let consumers: Vec<_> = (0..4)
            .map(|_| {
                let mut c = stream.create_consumer();
                tokio::spawn(async move {
                    let mut expect = 0u64;
                    while let Some(v) = c.next().await {
                        assert_eq!(v, expect);
                        expect += 1;
                        if v % 97 == 0 {
                            tokio::task::yield_now().await;
                        }
                    }
                    expect
                })
            })
            .collect();
        let writer = {
            let stream = stream.clone();
            tokio::spawn(async move {
                for i in 0..N {
                    stream.write_async(i).await;
                    assert!(stream.backpressure() <= LIMIT_ITEMS);
                }
                stream.close();
            })
        };
        tokio::time::timeout(LIMIT, writer).await.expect("writer stuck").unwrap();
        for c in consumers {
            assert_eq!(tokio::time::timeout(LIMIT, c).await.expect("consumer stuck").unwrap(), N);
        }
    });
}

/// Kills racing with reads on other threads: each consumer either reads a prefix of the
/// messages in order and then ends as killed, and the buffer is released.
#[test]
fn kill_races_with_readers_on_other_threads() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_time().build().unwrap();
    rt.block_on(async {
        let stream = WritableConsumableStream::new();
        let tasks: Vec<_> = (0..CONSUMERS)
            .map(|_| {
                let mut c = stream.create_consumer();
                tokio::spawn(async move {
                    let mut expect = 0u64;
                    while let Some(v) = c.next().await {
                        assert_eq!(v, expect);
                        expect += 1;
                    }
                    assert!(matches!(c.end(), Some(End::Killed { .. })), "{:?}", c.end());
                    expect
                })
            })
            .collect();
        let writer = {
            let stream = stream.clone();
            tokio::task::spawn_blocking(move || {
                for i in 0..200_000u64 {
                    stream.write(i);
                }
            })
        };
        tokio::task::yield_now().await;
        let killed = stream.kill();
        assert!(killed <= CONSUMERS);
        writer.await.unwrap();
        // Consumers not yet registered as killed (none: all were live) must all end.
        for t in tasks {
            tokio::time::timeout(LIMIT, t).await.expect("consumer did not end").unwrap();
        }
        assert_eq!(stream.consumer_count(), 0);
        assert_eq!(stream.backpressure(), 0);
    });
}
