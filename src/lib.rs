//! SocketCluster's real-time model for Rust.
//!
//! SocketCluster turns every event source into a stream that many consumers read, each at its own
//! pace. The lesson it teaches: a consumer buffers from the moment it is created, so a handler may
//! do async work first and still see every message that arrived meanwhile.
//!
//! This crate is built in layers (see `ARCHITECTURE.md`):
//!
//! - [`stream`]: the `#![no_std]` + `alloc` core — [`WritableConsumableStream`](stream::WritableConsumableStream),
//!   one shared linked buffer with one cursor per [`Consumer`](stream::Consumer), kill, close and
//!   backpressure, and [`StreamDemux`](stream::StreamDemux) for named sub-streams.
//! - runtime adapters (`smol`, `tokio` features): the only place that names a runtime.
//!
//! ```
//! use futures::StreamExt;
//! use socketcluster::stream::WritableConsumableStream;
//!
//! # futures::executor::block_on(async {
//! let stream = WritableConsumableStream::new();
//! let mut consumer = stream.create_consumer(); // buffering starts here
//! stream.write("hello");
//! stream.write("world");
//! stream.close();
//! // ... async work before the loop loses nothing:
//! assert_eq!(consumer.next().await, Some("hello"));
//! assert_eq!(consumer.next().await, Some("world"));
//! assert_eq!(consumer.next().await, None);
//! # });
//! ```
#![no_std]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

extern crate alloc;
#[cfg(any(feature = "std", test))]
extern crate std;

mod sync;

pub mod protocol;
pub mod stream;

#[cfg(feature = "ws")]
pub mod auth;
#[cfg(feature = "ws")]
pub mod client;
#[cfg(feature = "ws")]
mod outbox;
#[cfg(feature = "ws")]
pub mod receiver;
#[cfg(feature = "ws")]
pub mod request;
#[cfg(feature = "ws")]
pub mod runtime;
#[cfg(feature = "ws")]
pub mod server;
#[cfg(feature = "tls")]
pub mod tls;

#[cfg(feature = "smol")]
#[path = "../adapters/smol.rs"]
pub mod smol;

#[cfg(feature = "tokio")]
#[path = "../adapters/tokio.rs"]
pub mod tokio;

#[cfg(feature = "hyper")]
#[path = "../adapters/hyper.rs"]
pub mod hyper;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
