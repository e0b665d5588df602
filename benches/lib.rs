//! Fixtures shared by the benches: the synthetic world of `keyscope bench`.

use keyscope::KeySecret;
use keyscope_policy::SnapshotData;

pub use keyscope::bench::{HELD_SCOPE, SCOPES};

/// A synthetic world and the key we hold in it.
#[derive(Debug)]
pub struct World {
    /// The snapshot's contents.
    pub data: SnapshotData,
    /// The raw key of key 1.
    pub held: KeySecret,
}

/// See [`keyscope::bench::synthetic_world`].
pub fn world(keys: u64) -> World {
    let (data, held) = keyscope::bench::synthetic_world(keys);
    World { data, held }
}
