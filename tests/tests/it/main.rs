//! OCX end to end: a real server on a loopback port (`ocx_testkit::TestServer`), driven through
//! the SDK. One binary (one link of the whole server, not one per file); each module says what
//! it checks.

mod auth;
mod call_records;
mod contention;
mod contract;
mod dashboard;
mod decode;
mod durations;
mod idempotency;
mod layers;
mod limits;
mod matrix;
mod metrics;
mod migration;
mod migration_check;
mod numbers;
mod privacy;
mod quality;
mod restart;
mod storage_faults;
mod tls;
mod watch;
mod web;
