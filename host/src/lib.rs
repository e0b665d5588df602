#![doc = include_str!("../../README.md")]

pub mod bench;
mod bindings;
pub mod cases;
pub mod conformance;
pub mod decision;
pub mod error;
pub mod fault;
pub mod files;
pub mod json_input;
pub mod keys;
pub mod policy;
pub mod serve;
pub mod snapshot;
pub mod store;
pub mod swap;

pub use cases::CaseFile;
pub use decision::DecisionJson;
pub use error::{Error, Result};
pub use keys::KeySecret;
pub use keyscope_policy::{
    self as rules_crate, AgentsLevel, Credential, Decision, HttpRequest, KeyDigest, Reason,
    Request, Requirement, RouteEntry, RuntimePermission, RuntimeSet, SnapshotInfo,
};
pub use policy::{
    Limits, MatchedRoute, PolicyComponent, PolicyEngine, PolicyInfo, PolicyInstance, RoutedDecision,
};
pub use store::{ApiKey, NewKey, Quotas, Scope, ScopeRef, ScopeUpdate, Store};
pub use swap::{
    BatchOutcome, Generation, LiveOptions, LivePolicy, Outcome, SelfTest, SwapStep, Worker,
};
