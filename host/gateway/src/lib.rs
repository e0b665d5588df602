//! A gateway of a fleet: it holds no store and no database credentials,
//! follows signed bundles from a control plane or a static HTTP server, and
//! feeds a [`keyscope_runtime::LivePolicy`] with them.
//!
//! Three things to know:
//! - [`Gateway::start`] begins from its verified cache, or from an empty
//!   snapshot that denies every key; [`Gateway::watch`] polls on a thread
//!   of its own.
//! - Every bundle is checked ([`keyscope_bundle::Follower`]), then swapped
//!   in by the live policy's pipeline, and only then held and cached; a
//!   refused one is counted by kind in [`BundleStatus`] and changes nothing.
//! - [`Staleness`] says whether the source could be read, for this and for
//!   `keyscope serve`'s store.
//!
//! No async runtime: `keyscope serve` and the embedded library
//! (`libkeyscope`, inside nginx's workers) both run it.

mod cache_writer;
mod gateway;
mod id;
mod staleness;

pub use gateway::{
    BundleStatus, Gateway, GatewayConfig, LastBundle, PollError, StartError, USAGE_HEADER,
};
pub use id::{BadGatewayId, ID_FILE, ID_RULE, check_id, default_id, owned_by};
pub use staleness::Staleness;
