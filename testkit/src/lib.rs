//! # ocx-testkit
//!
//! What the tests of every OCX crate start servers and make data with, written once.
//!
//! ## Layout
//! - [`server`]: a real server in this process on a loopback port, over a temp-file database.
//! - [`process`]: the real `ocx-server` binary as a child process (start, SIGTERM, kill).
//! - [`postgres`]: the PostgreSQL server named by `OCX_TEST_POSTGRES`, a fresh schema per store.
//! - [`metrics`]: the server's Prometheus metrics, scraped and read.
//! - [`raw`]: a gRPC client sending any bytes as a request (for requests the SDK cannot make).
//! - [`fixtures`]: carriers, keys, consents, numbers and call records made through the SDK.
//! - [`sample`]: the deterministic call-record generator and the one seedable [`sample::Rng`]
//!   (the `ocx-sample` crate, which the server's `--demo` uses too).

pub mod fixtures;
pub mod metrics;
pub mod postgres;
pub mod process;
pub mod raw;
pub mod server;

pub use fixtures::*;
pub use ocx_sample as sample;
pub use server::TestServer;
