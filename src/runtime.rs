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
