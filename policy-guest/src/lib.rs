//! keyscope's policy: the decision rules and the snapshot format.
//!
//! Built for `wasm32-unknown-unknown` and encoded as a component, this crate
//! is the `keyscope:policy` world (see `wit/keyscope.wit`): it imports
//! nothing and holds all decision logic. Built natively, the same [`rules`]
//! and [`snapshot`] modules serve the host (which encodes snapshots), the
//! native-versus-component differential tests and the benchmarks.

pub mod delta;
pub mod kept;
pub mod model;
pub mod pages;
pub mod routes;
pub mod rules;
pub mod snapshot;

#[cfg(target_arch = "wasm32")]
#[allow(
    unsafe_code,
    reason = "the generated bindings export the component's functions through `unsafe` ABI glue"
)]
mod component;

pub use model::{
    AgentsLevel, Credential, Decision, HttpRequest, KeyDigest, Method, Millis, Reason, Request,
    Requirement, ResolvedRequest, RuntimePermission, RuntimeSet, UnknownName,
};
pub use routes::{RouteEntry, RouteMatch, RouteTable};
pub use rules::Routed;
pub use snapshot::{LoadError, Snapshot, SnapshotData, SnapshotInfo};
