//! # ocx-client
//!
//! The Rust SDK for OCX, for carriers and for the calling platform: one [`Client`] holding a
//! gRPC channel and an API key, with a method per RPC that returns the resource itself rather
//! than its response wrapper, streams that follow list pages, and an event follower that
//! survives reconnects. The `ocx` command-line tool (the `ocx-cli` crate) is built on it.
//!
//! ```no_run
//! # async fn demo() -> ocx_client::Result<()> {
//! use futures_util::StreamExt;
//! let client = ocx_client::Client::connect("http://127.0.0.1:50051", "key-secret").await?;
//! let mut numbers = std::pin::pin!(client.numbers(Default::default()));
//! while let Some(number) = numbers.next().await {
//!     println!("{}", number?.number);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! ## Layout
//! - `client`: [`Client`] (connection, key, request ids and retries of writes, and the unary
//!   calls of every service); this module only declares and re-exports.
//! - `error`: [`Error`], [`FieldViolation`] and [`Result`]; a `tonic::Status` becomes an
//!   [`Error::Status`] carrying the server's `google.rpc.BadRequest` field violations.
//! - `paging`: the one generic page follower behind [`Client::carriers`], [`Client::api_keys`],
//!   [`Client::consents`], [`Client::numbers`] and [`Client::call_records`].
//! - `events`: [`Client::watch_number_events`] (one call) and
//!   [`Client::follow_number_events`] (reconnects and resumes).
//! - `calls`: call records: [`Client::get_call_record`], [`Client::list_call_records`],
//!   [`Client::call_records`] (every page), [`Client::stream_call_records`] (one feed call),
//!   [`Client::follow_call_records`] (reconnects and resumes), and
//!   [`Client::ingest_call_records`] (the platform's streaming ingest, with backpressure).
//! - `durations`: call durations ([`Client::report_call_durations`],
//!   [`Client::upload_call_durations`], [`Client::call_durations`]), the [`DurationUploader`]
//!   (any number of reports, batches in flight, retries), reconciliation
//!   ([`Client::get_reconciliation_summary`], [`Client::discrepancies`],
//!   [`Client::follow_reconciliation`] with a [`ReconciliationView`] to apply its changes to)
//!   and [`Client::get_tenant_usage`].
//! - `follow`: the one generic resuming follower behind every `follow_*` method.
//! - [`pb`]: the generated types, re-exported from `ocx-api` so callers need no other crate.

#[macro_use]
mod client;
mod calls;
mod durations;
mod error;
mod events;
mod follow;
mod paging;

pub use calls::whole_hours;
pub use client::{Client, DEFAULT_RETRY_BUDGET, TlsOptions, new_request_id};
pub use durations::{DurationUploader, ReconciliationView, UploadTotals};
pub use error::{Error, FieldViolation, Result};
pub use ocx_api::pb;
