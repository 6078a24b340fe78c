//! # ocx-e2e
//!
//! The end-to-end tests of OCX live in `tests/it/` (one test binary); their servers and fixtures
//! come from `ocx-testkit`. This library is empty: cargo wants a target beside the tests.
