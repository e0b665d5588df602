//! keyscope's runtime: the policy component on wasmtime.
//!
//! Three things to know:
//! - [`PolicyComponent`] is a validated component (the `keyscope:policy`
//!   world, importing nothing); a [`PolicyInstance`] of it decides under
//!   [`Limits`] (an epoch deadline and a memory cap), and any failure is a
//!   deny with `policy-error`.
//! - [`LivePolicy`] holds the live [`Generation`] (a component and a
//!   snapshot) and swaps in a new one only after every step of the pipeline
//!   passed ([`SwapStep`], [`SwapError`]).
//! - A [`Worker`] per thread decides on the current generation; every call
//!   returns one [`Outcome`] (or a [`BatchOutcome`]).
//!
//! No SQL, no async runtime, no command line: the store and the server are
//! crates of their own.

pub mod answer;
pub mod bench;
mod bindings;
pub mod cases;
pub mod catalogue;
pub mod component;
pub mod conformance;
pub mod decision;
pub mod engine;
pub mod error;
pub mod fault;
pub mod files;
pub mod instance;
pub mod json_input;
pub mod swap;
pub mod time;

pub use cases::CaseFile;
pub use catalogue::Catalogue;
pub use component::{EMBEDDED_POLICY, PolicyComponent, PolicyInfo};
pub use decision::DecisionJson;
pub use engine::{Limits, PolicyEngine};
pub use error::{Error, Result};
pub use instance::{MatchedRoute, PolicyInstance, RoutedDecision};
pub use keyscope_keys::{self as keys, KeySecret};
pub use keyscope_policy::{
    AgentsLevel, Credential, Decision, HttpRequest, KeyDigest, Method, Millis, Reason, Request,
    Requirement, ResolvedRequest, RouteEntry, RuntimePermission, RuntimeSet, SnapshotInfo,
};
pub use swap::{
    BatchOutcome, Generation, LiveOptions, LivePolicy, Outcome, SelfTest, SwapError, SwapStep,
    Worker,
};
