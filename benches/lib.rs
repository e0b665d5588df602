//! Fixtures shared by the benches: the synthetic world of `keyscope bench`.

use keyscope_policy::SnapshotData;
use keyscope_runtime::KeySecret;

pub use keyscope_runtime::bench::{HELD_SCOPE, SCOPES};

/// A synthetic world and the key we hold in it.
#[derive(Debug)]
pub struct World {
    /// The snapshot's contents.
    pub data: SnapshotData,
    /// The raw key of key 1.
    pub held: KeySecret,
}

/// See [`keyscope_runtime::bench::synthetic_world`].
pub fn world(keys: u64) -> World {
    let (data, held) = keyscope_runtime::bench::synthetic_world(keys);
    World { data, held }
}
