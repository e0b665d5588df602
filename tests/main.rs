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

/// Bad input to every command: named errors, exit 2, nothing half-written.
mod bad_input;
/// A headless Chromium over WebDriver, with axe-core, for the console.
mod browser;
/// The CLI flow through the built binary: commands, JSON shapes, exit codes.
mod cli;
/// The embedded component itself: no imports, limits, deadlines, memory.
mod component;
/// The conformance suite, generated from the golden cases, through the CLI.
mod conformance;
/// The admin console in a real browser, and its defences over HTTP.
mod console;
/// SIGKILL at named points of a store write: the store stays whole.
mod crash;
/// Native rules against the component, on random requests (proptest).
mod differential;
/// Man pages and shell completions from the clap definitions; the docs' links
/// and the getting-started guide, run as shown.
mod docs;
/// keyscope inside nginx's workers: libkeyscope through the Lua module.
mod embedded;
/// docs/envoy.yaml checked against Envoy's own protobuf definitions.
mod envoy_config;
/// `keyscope eval` by method and path and at a time, against the doors.
mod eval;
/// A key's not-after against the request's time, through the CLI and serve.
mod expiry;
/// Injected faults on the decision and swap paths: always a deny, never a swap.
mod faults;
/// A fleet: a control plane, gateways on signed bundles, static bundles.
mod fleet;
/// The golden cases (fixtures/golden), native and through the component.
mod golden;
/// Hostile and careless use: idle sockets, duplicate keys, special files.
mod hardening;
/// Every output and file of a full flow searched for every raw key.
mod leak;
/// Rotation with a grace, last-used figures, named admin tokens and the
/// audit trail, through the CLI, `keyscope serve` and a fleet.
mod lifecycle;
/// A real nginx with auth_request in front of keyscope serve.
mod nginx;
/// Console sign-in through a real OpenID provider (oidc-provider) in Chromium.
mod oidc_sign_in;
/// A throwaway PostgreSQL cluster for the tests.
mod pg;
/// Admins per app: roles through the admin API, the CLI and the console's
/// shared sessions.
mod roles;
/// keyscope serve over real sockets: every door, admin, freshness, drain.
mod serve;
/// The shared store: servers, CLI and copies on a real PostgreSQL.
mod shared_store;
/// Mixed load for 30 s, every decision checked against the store history.
mod soak;
/// The store's behaviour, one suite run on SQLite and on PostgreSQL.
mod store;
/// Shared set-up: a sandboxed store, the binary, a running server.
mod support;
/// Hot swaps under load, and hostile modules refused or contained.
mod swap;
