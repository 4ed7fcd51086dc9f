//! The lock facade: one `Mutex` type for the whole crate.
//!
//! - with the `std` feature: `std::sync::Mutex` (poisoning is ignored: the state it guards is kept
//!   consistent before any user code can run, so a panic elsewhere never leaves it half-updated);
//! - without `std`: a spin lock from the `spin` crate.

pub(crate) use alloc::sync::Arc;
pub(crate) use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// A mutual-exclusion lock with a `lock()` that cannot fail.
#[derive(Debug, Default)]
pub(crate) struct Mutex<T> {
    #[cfg(feature = "std")]
    inner: std::sync::Mutex<T>,
    #[cfg(not(feature = "std"))]
    inner: spin::Mutex<T>,
}

/// The guard returned by [`Mutex::lock`].
#[cfg(feature = "std")]
pub(crate) type MutexGuard<'a, T> = std::sync::MutexGuard<'a, T>;
#[cfg(not(feature = "std"))]
pub(crate) type MutexGuard<'a, T> = spin::MutexGuard<'a, T>;

impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Self {
        #[cfg(feature = "std")]
        return Self { inner: std::sync::Mutex::new(value) };
        #[cfg(not(feature = "std"))]
        return Self { inner: spin::Mutex::new(value) };
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        #[cfg(feature = "std")]
        return self.inner.lock().unwrap_or_else(|e| e.into_inner());
        #[cfg(not(feature = "std"))]
        return self.inner.lock();
    }
}
