//! A gateway's last good bundle on disk, written so that a crash at any
//! point leaves either the old file or the new one, never a mix.

use std::io::Write as _;
use std::path::Path;

use crate::error::{BundleError, Result};

/// The largest cache read back: a snapshot of a few million keys and a
/// module.
const MAX_CACHE_BYTES: u64 = 2 * 1024 * 1024 * 1024;

/// Writes `parts` to `path` through a temporary file in the same
/// directory: written, fsynced, renamed over `path`, then the directory
/// fsynced so the rename survives a power cut.
pub fn write_atomically(path: &Path, parts: &[&[u8]]) -> Result<()> {
    let io = |source| BundleError::Io {
        what: "writing the bundle cache",
        path: path.to_owned(),
        source,
    };
    let dir = path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut file = tempfile_in(dir).map_err(io)?;
    for part in parts {
        file.write_all(part).map_err(io)?;
    }
    file.as_file().sync_all().map_err(io)?;
    file.persist(path).map_err(|e| io(e.error))?;
    std::fs::File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(io)?;
    Ok(())
}

fn tempfile_in(dir: &Path) -> std::io::Result<tempfile::NamedTempFile> {
    tempfile::Builder::new()
        .prefix(".bundle-")
        .suffix(".tmp")
        .tempfile_in(dir)
}

/// Reads a cache back; `None` if there is none yet.
pub fn read(path: &Path) -> Result<Option<Vec<u8>>> {
    use std::io::Read as _;
    let io = |source| BundleError::Io {
        what: "reading the bundle cache",
        path: path.to_owned(),
        source,
    };
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(io(error)),
    };
    let mut bytes = Vec::new();
    file.take(MAX_CACHE_BYTES)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    Ok(Some(bytes))
}
