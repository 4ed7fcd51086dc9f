//! Unit tests of the buffer internals (behaviour tests live in `tests/`).

use alloc::vec::Vec;
use futures::StreamExt;
use futures::executor::block_on;

use super::buffer::CHUNK;
use super::*;

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
