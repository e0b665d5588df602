//! keyscope's cross-crate tests: one test binary, one module per concern.
//!
//! The CLI is exercised through the built binary; decisions through the real
//! embedded component; golden cases live in `fixtures/golden/` as data.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test that cannot go on should stop loudly"
)]

mod bad_input;
mod cli;
mod component;
mod conformance;
mod crash;
mod differential;
mod faults;
mod golden;
mod hardening;
mod leak;
mod nginx;
mod serve;
mod soak;
mod store;
mod support;
mod swap;
