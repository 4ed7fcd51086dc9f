//! The runtime a client scenario runs on ([`Rt`]: how to make a client, bounded waits), the
//! runners, and [`scenarios!`]: one `#[test]` per scenario on smol and (feature `tokio`) tokio.
//! A test file adds its own helpers in an `impl Rt` block of its own.
//!
//! Include it with `#[macro_use]`:
//!
//! ```ignore
//! #[macro_use]
//! #[path = "support/client_rt.rs"]
//! mod client_rt;
//! ```
#![allow(dead_code)]

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::Either;
use futures::{Stream, StreamExt};
use socketcluster::client::{Client, ClientOptions};
use socketcluster::runtime::Runtime;

/// How long something that takes milliseconds may take (the test machine is shared and slow).
pub(crate) const LIMIT: Duration = Duration::from_secs(10);
/// The bound of a whole scenario.
pub(crate) const SCENARIO_LIMIT: Duration = Duration::from_secs(90);

/// The runtime a scenario runs on: how to make a client, and timers.
#[derive(Clone)]
pub(crate) struct Rt {
    pub(crate) name: &'static str,
    connect: fn(ClientOptions) -> Client,
    pub(crate) runtime: Arc<dyn Runtime>,
}

impl Rt {
    pub(crate) fn smol() -> Rt {
        Rt { name: "smol", connect: socketcluster::smol::connect, runtime: socketcluster::smol::runtime() }
    }

    /// Must be called inside the tokio runtime.
    #[cfg(feature = "tokio")]
    pub(crate) fn tokio() -> Rt {
        Rt { name: "tokio", connect: socketcluster::tokio::connect, runtime: socketcluster::tokio::runtime() }
    }

    /// A client on this runtime (it connects at once unless `auto_connect` is off).
    pub(crate) fn connect(&self, options: ClientOptions) -> Client {
        (self.connect)(options)
    }

    pub(crate) async fn sleep(&self, d: Duration) {
        self.runtime.sleep_until(Instant::now() + d).await;
    }

    /// Awaits `fut`, or panics naming `what` after `limit`.
    pub(crate) async fn within<F: Future>(&self, limit: Duration, what: &str, fut: F) -> F::Output {
        let sleep = self.runtime.sleep_until(Instant::now() + limit);
        match futures::future::select(pin!(fut), sleep).await {
            Either::Left((v, _)) => v,
            Either::Right(_) => panic!("[{}] timed out after {limit:?}: {what}", self.name),
        }
    }

    /// [`within`](Self::within) with [`LIMIT`].
    pub(crate) async fn bounded<F: Future>(&self, what: &str, fut: F) -> F::Output {
        self.within(LIMIT, what, fut).await
    }

    /// The next item of `s` (bounded; the stream must not end).
    pub(crate) async fn next<S: Stream + Unpin>(&self, s: &mut S, what: &str) -> S::Item {
        match self.bounded(what, s.next()).await {
            Some(v) => v,
            None => panic!("[{}] {what}: the stream ended", self.name),
        }
    }

    /// Whatever `s` yields within `d` (to show that nothing arrives).
    pub(crate) async fn quiet<S: Stream + Unpin>(&self, s: &mut S, d: Duration) -> Option<S::Item> {
        let sleep = self.runtime.sleep_until(Instant::now() + d);
        match futures::future::select(s.next(), sleep).await {
            Either::Left((v, _)) => v,
            Either::Right(_) => None,
        }
    }
}

pub(crate) fn run_smol<F, Fut>(scenario: F)
where
    F: FnOnce(Rt) -> Fut,
    Fut: Future<Output = ()>,
{
    smol::block_on(async {
        let rt = Rt::smol();
        rt.within(SCENARIO_LIMIT, "the whole scenario", scenario(rt.clone())).await;
    });
}

/// Runs on a two-thread tokio runtime, shut down afterwards.
#[cfg(feature = "tokio")]
pub(crate) fn run_tokio<F, Fut>(scenario: F)
where
    F: FnOnce(Rt) -> Fut,
    Fut: Future<Output = ()>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        let rt = Rt::tokio();
        rt.within(SCENARIO_LIMIT, "the whole scenario", scenario(rt.clone())).await;
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
}

/// One `#[test]` per runtime for each scenario: `smol_rt::NAME`, `tokio_rt::NAME`.
macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        mod smol_rt {
            $( #[test] fn $name() { crate::client_rt::run_smol(super::$name); } )*
        }
        #[cfg(feature = "tokio")]
        mod tokio_rt {
            $( #[test] fn $name() { crate::client_rt::run_tokio(super::$name); } )*
        }
    };
}
