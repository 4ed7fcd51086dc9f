//! The seed scenario: a handler does async work (an auth lookup, a database call) before it starts
//! its loop. Because its consumer was created first, every message that arrived meanwhile is still
//! delivered, in order. A loop that only starts listening after the work misses them.
//!
//! Run: `cargo run --example seed`

use std::time::{Duration, Instant};

use futures::StreamExt;
use socketcluster::stream::WritableConsumableStream;

fn main() {
    smol::block_on(async {
        let messages = WritableConsumableStream::new();

        // Right: create the consumer first, then do the slow work.
        let mut early = messages.create_consumer();
        let right = smol::spawn(async move {
            smol::Timer::after(Duration::from_millis(200)).await; // "auth lookup"
            let mut seen = Vec::new();
            while let Some(m) = early.next().await {
                seen.push(m);
            }
            seen
        });

        // Wrong: do the slow work, then create the consumer.
        let late_source = messages.clone();
        let wrong = smol::spawn(async move {
            smol::Timer::after(Duration::from_millis(200)).await;
            let mut late = late_source.create_consumer();
            let mut seen = Vec::new();
            while let Some(m) = late.next().await {
                seen.push(m);
            }
            seen
        });

        let start = Instant::now();
        for i in 0..5 {
            messages.write(format!("message {i}"));
            smol::Timer::after(Duration::from_millis(20)).await;
        }
        println!("wrote 5 messages in {:?} while the handlers were busy", start.elapsed());
        smol::Timer::after(Duration::from_millis(300)).await;
        messages.write("message 5 (after the handlers started)".to_string());
        messages.close();

        let right = right.await;
        let wrong = wrong.await;
        println!("consumer created before the delay saw {} messages:", right.len());
        for m in &right {
            println!("  {m}");
        }
        println!("consumer created after the delay saw {} messages:", wrong.len());
        for m in &wrong {
            println!("  {m}");
        }
        assert_eq!(right.len(), 6, "the early consumer loses nothing");
    });
}
