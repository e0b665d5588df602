//! Signed bundles: how a control plane hands its decision data and policy
//! module to a fleet of gateways that hold no database credentials.
//!
//! - [`keys`]: Ed25519 key pairs, their files and ids.
//! - [`format`]: the bundle file, a signed manifest and the parts it
//!   names; [`format::open`] verifies one.
//! - [`Publisher`]: the control plane's side, building full bundles and
//!   deltas from the changes its store reported.
//! - [`Follower`]: the gateway's side, accepting only signed, newer
//!   bundles whose deltas give exactly the signed result.
//! - [`cache`]: the last good bundle on disk, written atomically.
//!
//! Nothing here speaks HTTP or runs a policy: `keyscope serve` does both.

pub mod cache;
mod error;
pub mod follower;
pub mod format;
pub mod keys;
pub mod publisher;

pub use error::{BundleError, Result};
pub use follower::{CacheImage, Candidate, Follower};
pub use format::{Kind, Layout, Manifest};
pub use publisher::{Built, Have, PublishedSnapshot, Publisher};

#[cfg(test)]
mod tests;
