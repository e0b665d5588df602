//! Building the immutable snapshot the policy decides on.

use std::path::Path;

use crate::error::Result;
use crate::store::Store;

/// Reads the store in one transaction and encodes its snapshot.
pub fn build(store: &mut Store) -> Result<Vec<u8>> {
    Ok(store.snapshot_data()?.encode()?)
}

/// Reads snapshot bytes from a file (a regular file, up to
/// [`crate::files::MAX_SNAPSHOT_BYTES`]). They are checked when loaded.
pub fn read(path: &Path) -> Result<Vec<u8>> {
    crate::files::read_regular(path, crate::files::MAX_SNAPSHOT_BYTES)
}
