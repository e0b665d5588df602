//! Building the immutable snapshot the policy decides on.

use std::path::Path;

use crate::error::{Error, Result};
use crate::store::Store;

/// Reads the store in one transaction and encodes its snapshot.
pub fn build(store: &mut Store) -> Result<Vec<u8>> {
    Ok(store.snapshot_data()?.encode()?)
}

/// Reads snapshot bytes from a file. They are checked when loaded.
pub fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })
}
