//! The small runtime trait the server and client are generic over.
//!
//! The adapters (`smol`, `tokio`) implement it; nothing else in the crate names a runtime.

use alloc::boxed::Box;
use core::fmt;
use core::future::Future;
use core::pin::Pin;
use std::time::Instant;

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What the server and client need from an async runtime: spawning tasks and timers.
pub trait Runtime: Send + Sync + fmt::Debug + 'static {
    /// Runs `future` in the background.
    fn spawn(&self, future: BoxFuture<()>);
    /// Completes at `deadline`.
    fn sleep_until(&self, deadline: Instant) -> BoxFuture<()>;
}

/// Returns `Pending` once, after waking itself: other tasks get a turn. Loops that may run long
/// without waiting (a socket kept full by its peer) call it every so often, since smol has no
/// cooperative budget.
pub(crate) async fn yield_now() {
    let mut yielded = false;
    core::future::poll_fn(|cx| {
        if yielded {
            return core::task::Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        core::task::Poll::Pending
    })
    .await
}
