//! Reading the files keyscope is pointed at: policy modules, snapshots, case
//! files. Regular files only, up to a cap, and never a blocking open: a
//! FIFO, a device such as `/dev/zero`, or a directory is refused by name.

use std::io::Read as _;
use std::path::Path;

use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// The default cap on a policy module file: 32 MiB. The embedded component
/// is about 100 KiB.
pub const MAX_POLICY_BYTES: u64 = 32 * 1024 * 1024;

/// The cap on a snapshot file: 1 GiB. A snapshot of a million keys is about
/// 48 MB.
pub const MAX_SNAPSHOT_BYTES: u64 = 1024 * 1024 * 1024;

/// The cap on a text file keyscope reads whole: a configuration, a case
/// file, a conformance suite: 16 MiB.
pub const MAX_TEXT_BYTES: u64 = 16 * 1024 * 1024;

/// Reads snapshot bytes from a file (a regular file, up to
/// [`MAX_SNAPSHOT_BYTES`]). They are checked when loaded.
pub fn read_snapshot(path: &Path) -> Result<Vec<u8>> {
    read_regular(path, MAX_SNAPSHOT_BYTES)
}

/// Reads `path` as UTF-8 text: a regular file of at most `max_bytes`.
pub fn read_text(path: &Path, max_bytes: u64) -> Result<String> {
    String::from_utf8(read_regular(path, max_bytes)?).map_err(|_| Error::FileRefused {
        path: path.to_owned(),
        why: "it is not UTF-8 text".to_owned(),
    })
}

/// Reads a secret token from a file (an admin token, a fleet token): a
/// regular file that group and others cannot read, UTF-8, at least
/// `min_len` characters once trimmed. `what` names it in errors, which
/// never hold the token.
pub fn read_token(path: &Path, what: &str, min_len: usize) -> Result<Zeroizing<String>> {
    use std::os::unix::fs::PermissionsExt as _;
    let refused = |why: String| Error::FileRefused {
        path: path.to_owned(),
        why,
    };
    let mode = std::fs::metadata(path)
        .map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(refused(format!(
            "the {what} file is open to group or others (mode {:04o}); run `chmod 600 {}`",
            mode & 0o7777,
            path.display()
        )));
    }
    let bytes = Zeroizing::new(read_regular(path, 4096)?);
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| refused(format!("the {what} file is not UTF-8 text")))?;
    let token = text.trim();
    if token.len() < min_len {
        return Err(refused(format!(
            "the {what} in it is shorter than {min_len} characters"
        )));
    }
    Ok(Zeroizing::new(token.to_owned()))
}

/// Reads `path`, which must be a regular file of at most `max_bytes`.
pub fn read_regular(path: &Path, max_bytes: u64) -> Result<Vec<u8>> {
    let io = |source| Error::Io {
        path: path.to_owned(),
        source,
    };
    let refused = |why: String| Error::FileRefused {
        path: path.to_owned(),
        why,
    };
    // Non-blocking, so that opening a FIFO with no writer does not wait.
    let fd = rustix::fs::open(
        path,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|errno| io(errno.into()))?;
    let file = std::fs::File::from(fd);
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(refused("it is not a regular file".to_owned()));
    }
    if meta.len() > max_bytes {
        return Err(refused(format!(
            "it is {} bytes, more than the limit of {max_bytes}",
            meta.len()
        )));
    }
    // The file may grow while it is read: read one byte past the cap to see.
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > max_bytes {
        return Err(refused(format!(
            "it grew past the limit of {max_bytes} bytes while it was read"
        )));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_files_are_refused_by_name() {
        for path in ["/dev/zero", "/dev/null", "/"] {
            let error = read_regular(Path::new(path), 1024).unwrap_err();
            assert!(
                error.to_string().contains("not a regular file"),
                "{path}: {error}"
            );
        }
    }

    #[test]
    fn a_file_over_the_cap_is_refused_and_one_at_it_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, [7u8; 100]).unwrap();
        assert_eq!(read_regular(&path, 100).unwrap().len(), 100);
        let error = read_regular(&path, 99).unwrap_err();
        assert!(error.to_string().contains("limit of 99"), "{error}");
    }
}
