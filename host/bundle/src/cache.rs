//! A gateway's last good bundle on disk, written so that a crash at any
//! point leaves either the old file or the new one, never a mix.

use std::io::Write as _;
use std::path::Path;

use crate::keys::Trust;

use crate::error::{BundleError, Result};
use crate::format::{self, Layout};

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

/// Reads a cache back, verified as far as its signed head; `None` if there
/// is none yet. The file is opened as every file keyscope reads is: without
/// blocking (a FIFO with no writer is refused, not waited on), a regular
/// file only (never a device such as `/dev/zero`), and read no further than
/// its signed manifest declares, within [`MAX_CACHE_BYTES`].
pub fn read(path: &Path, trusted: &(impl Trust + ?Sized)) -> Result<Option<Vec<u8>>> {
    let io = |source: std::io::Error| BundleError::Io {
        what: "reading the bundle cache",
        path: path.to_owned(),
        source,
    };
    let fd = match rustix::fs::open(
        path,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(errno) => return Err(io(errno.into())),
    };
    let mut file = std::fs::File::from(fd);
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(io(std::io::Error::other("it is not a regular file")));
    }
    if meta.len() > MAX_CACHE_BYTES {
        return Err(BundleError::TooLarge {
            found: meta.len(),
            limit: MAX_CACHE_BYTES,
        });
    }
    format::read_bounded(&mut file, trusted, Layout::Cache, MAX_CACHE_BYTES).map(Some)
}
