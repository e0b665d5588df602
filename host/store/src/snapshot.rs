//! Building the immutable snapshot the policy decides on, from the store.

use crate::error::Result;
use crate::store::Store;

/// Reads the store in one transaction and encodes its snapshot.
pub fn build(store: &mut impl Store) -> Result<Vec<u8>> {
    Ok(store.snapshot_data()?.encode()?)
}
