//! Helpers shared by the behaviour tests: bounded waits and a waker that counts its wake-ups.
#![allow(dead_code)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

/// How long a wait that should complete at once may take before the test fails.
pub(crate) const LIMIT: Duration = Duration::from_secs(10);

/// Awaits `fut`, or panics naming `what` if it takes longer than `limit`: a bug fails the test
/// instead of hanging it.
pub(crate) async fn within<F: Future>(limit: Duration, what: &str, fut: F) -> F::Output {
    let timeout = async {
        smol::Timer::after(limit).await;
        panic!("timed out after {limit:?}: {what}")
    };
    smol::future::or(fut, timeout).await
}

/// [`within`] with the default [`LIMIT`].
pub(crate) async fn bounded<F: Future>(what: &str, fut: F) -> F::Output {
    within(LIMIT, what, fut).await
}

/// Reads a consumer to its end, each item within [`LIMIT`].
pub(crate) async fn collect<T: Clone>(c: &mut socketcluster::stream::Consumer<T>) -> Vec<T> {
    let mut out = Vec::new();
    while let Some(v) = bounded("next item", futures::StreamExt::next(c)).await {
        out.push(v);
    }
    out
}

/// Runs `fut` to completion on the current thread, failing after [`LIMIT`].
pub(crate) fn run<F: Future>(fut: F) -> F::Output {
    smol::block_on(bounded("the test body", fut))
}

/// A waker that counts how often it was woken, to check that a pending future is woken by the
/// event that should wake it (without relying on a runtime's timing).
#[derive(Debug, Default)]
pub(crate) struct WakeCounter(AtomicUsize);

impl Wake for WakeCounter {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A counting waker and a handle to read its count.
pub(crate) fn counting_waker() -> (Waker, Arc<WakeCounter>) {
    let counter = Arc::new(WakeCounter::default());
    (Waker::from(counter.clone()), counter)
}

impl WakeCounter {
    pub(crate) fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// Polls `fut` once with `waker`.
pub(crate) fn poll_with<F: Future + Unpin>(fut: &mut F, waker: &Waker) -> Poll<F::Output> {
    Pin::new(fut).poll(&mut Context::from_waker(waker))
}

/// Polls a stream once with `waker`.
pub(crate) fn poll_next_with<S: futures::Stream + Unpin>(s: &mut S, waker: &Waker) -> Poll<Option<S::Item>> {
    Pin::new(s).poll_next(&mut Context::from_waker(waker))
}
