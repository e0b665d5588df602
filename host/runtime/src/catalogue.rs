//! The names a loaded snapshot gives ids to, kept beside the instance that
//! loaded it, so that every request reaches the policy as fixed-size ids.

use std::collections::HashMap;

use keyscope_policy::{KeyDigest, Request, ResolvedRequest};

use crate::bindings;

/// The apps and operations of one loaded snapshot, by name and by id.
///
/// Built once per `load-snapshot` from the policy's own `names` export, so
/// the ids are the policy's, whatever module it is. Resolving a request is
/// two hash lookups on the host; no string crosses into the component.
#[derive(Debug, Clone, Default)]
pub struct Catalogue {
    /// The first word of the snapshot's digest: the stamp every resolved
    /// request carries.
    stamp: u64,
    apps: HashMap<Box<str>, u32>,
    operations: HashMap<Box<str>, u32>,
    /// Operation names by id.
    operation_names: Vec<Box<str>>,
}

impl Catalogue {
    /// The catalogue the policy gave for the snapshot with `digest`.
    pub(crate) fn new(digest: &[u8; 32], names: bindings::Catalogue) -> Self {
        let ids = |names: &[String]| {
            names
                .iter()
                .zip(0..)
                .map(|(name, id)| (Box::from(name.as_str()), id))
                .collect()
        };
        Self {
            stamp: KeyDigest(*digest).prefix(),
            apps: ids(&names.apps),
            operations: ids(&names.operations),
            operation_names: names.operations.into_iter().map(Box::from).collect(),
        }
    }

    /// `request` with its names turned into this snapshot's ids.
    pub fn resolve(&self, request: &Request<'_>) -> ResolvedRequest {
        ResolvedRequest {
            credential: request.credential,
            snapshot: self.stamp,
            app: self.apps.get(request.app).copied(),
            op: self.operations.get(request.op).copied(),
            now: request.now,
        }
    }

    /// The name of the operation with this id.
    pub fn operation(&self, id: u32) -> Option<&str> {
        self.operation_names.get(id as usize).map(AsRef::as_ref)
    }
}
