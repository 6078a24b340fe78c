//! The server crate's integration tests, one binary (one link of the whole server, not one per
//! file). Each module says what it checks:
//!
//! - the real binary: [`binary`], [`settings`], [`logs`], [`shutdown`], [`crash`],
//!   [`connections`] (open-file limit, streams per connection, handshake and idle timeouts,
//!   the connection cap, no spinning at the open-file limit), [`feeds`] (bounded memory of
//!   feeds and uploads, stalled feeds ended), [`abuse`] (stream caps per key, carrier and
//!   server, refusals summed, the address rate, the long-read share, streams past a
//!   connection's limit refused),
//!   [`crash_loop`], [`backup`], [`replicas`], [`failover`] (the database's primary killed
//!   under two replicas, its synchronous standby promoted), [`traces`] (the spans a collector
//!   receives);
//! - one stream's batches answered in batch order on both backends: [`stream_order`];
//! - the store: [`conformance`] (the suite every backend passes), run by [`store_sqlite`] and
//!   [`store_postgres`]; [`deadline`] (a caller's deadline interrupts the query);
//! - properties of the edge, of reconciliation and of the quality aggregates:
//!   [`convert_property`], [`reconcile_property`], [`quality_property`]; the reconciliation
//!   feed under concurrent writers on both backends: [`reconcile_watch`].

use ocx_testkit::process::ServerBinary;

/// The binary these tests run: cargo names it only to this crate's tests.
pub const OCX_SERVER: ServerBinary = ServerBinary(env!("CARGO_BIN_EXE_ocx-server"));

mod abuse;
mod backup;
mod binary;
mod conformance;
mod connections;
mod convert_property;
mod crash;
mod crash_loop;
mod deadline;
mod failover;
mod feeds;
mod logs;
mod quality_property;
mod reconcile_property;
mod reconcile_watch;
mod replicas;
mod settings;
mod shutdown;
mod store_postgres;
mod store_sqlite;
mod stream_order;
mod traces;
