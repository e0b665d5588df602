//! Printing: JSON with `--json`, plain text otherwise.

use std::io::Write as _;
use std::path::Path;

use anyhow::Context as _;
use keyscope_runtime::{Decision, DecisionJson};
use keyscope_store::{ApiKey, KeyStatus, Scope};
use serde::Serialize;

/// Where command results go.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    json: bool,
}

impl Output {
    pub fn new(json: bool) -> Self {
        Self { json }
    }

    /// Prints `value` as one line of JSON, or `human()` as text.
    pub fn print<T: Serialize + ?Sized>(
        self,
        value: &T,
        human: impl FnOnce() -> String,
    ) -> anyhow::Result<()> {
        let text = if self.json {
            serde_json::to_string(value).context("encoding JSON output")?
        } else {
            human()
        };
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{text}").context("writing to stdout")?;
        Ok(())
    }

    /// Prints as [`Output::print`], then flushes stdout; an I/O error as is,
    /// so that a caller can tell a closed pipe from a full disk.
    pub fn print_flushed<T: Serialize + ?Sized>(
        self,
        value: &T,
        human: impl FnOnce() -> String,
    ) -> std::io::Result<()> {
        let text = if self.json {
            serde_json::to_string(value).map_err(std::io::Error::other)?
        } else {
            human()
        };
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{text}")?;
        stdout.flush()
    }

    /// Prints a narration line to stdout in text mode; nothing with `--json`.
    pub fn narrate(self, text: &str) -> anyhow::Result<()> {
        if !self.json {
            writeln!(std::io::stdout().lock(), "{text}").context("writing to stdout")?;
        }
        Ok(())
    }

    /// Prints a narration line to stderr in text mode; nothing with `--json`,
    /// so that stdout stays machine-readable.
    pub fn note(self, text: &str) {
        if !self.json {
            // Narration is best effort: a closed stderr must not fail the command.
            let _ = writeln!(std::io::stderr().lock(), "{text}");
        }
    }
}

/// Whether stdout is `/dev/null`: where a secret printed is never seen. A
/// closed stdout counts, since Rust's runtime reopens it on `/dev/null`.
pub fn stdout_is_dev_null() -> bool {
    use std::os::fd::AsFd as _;
    use std::os::unix::fs::MetadataExt as _;
    let Ok(fd) = std::io::stdout().as_fd().try_clone_to_owned() else {
        // No stdout at all: nobody would see it either.
        return true;
    };
    let (Ok(stdout), Ok(null)) = (
        std::fs::File::from(fd).metadata(),
        std::fs::metadata("/dev/null"),
    ) else {
        return false;
    };
    stdout.dev() == null.dev() && stdout.ino() == null.ino()
}

/// Writes `bytes` to `path` atomically: through a temporary file beside it,
/// renamed over a regular file or into a new path. A symlink, FIFO, device or
/// directory at `path` is refused, never replaced. `-` is stdout, refused
/// when it is a terminal (the bytes are binary).
///
/// What `-o` writes holds no secret (a snapshot's key digests, a signed
/// bundle, a module), and a proxy's workers (nginx's, as `nobody`) must
/// read it: a new file is 0644, and a file replaced keeps its mode and
/// group, so that a re-export never locks its readers out.
pub fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::IsTerminal as _;
    if path == Path::new("-") {
        let mut stdout = std::io::stdout().lock();
        if stdout.is_terminal() {
            anyhow::bail!("refusing to write binary output to a terminal; use -o FILE");
        }
        stdout
            .write_all(bytes)
            .and_then(|()| stdout.flush())
            .context("writing to stdout")?;
        return Ok(());
    }
    let replaced = match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_file() => {
            use std::os::unix::fs::FileTypeExt as _;
            let kind = meta.file_type();
            let what = if kind.is_symlink() {
                "a symbolic link"
            } else if kind.is_dir() {
                "a directory"
            } else if kind.is_fifo() {
                "a FIFO"
            } else if kind.is_char_device() || kind.is_block_device() {
                "a device"
            } else if kind.is_socket() {
                "a socket"
            } else {
                "not a regular file"
            };
            anyhow::bail!(
                "refusing to replace `{}`: it is {what}; -o writes regular files only (use - for stdout)",
                path.display()
            );
        }
        Ok(meta) => Some(meta),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
        Err(error) => {
            return Err(error).with_context(|| format!("checking `{}`", path.display()));
        }
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut file = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a temporary file in `{}`", dir.display()))?;
    {
        use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
        // The permission bits only: never setuid, setgid or sticky.
        let mode = replaced.as_ref().map_or(0o644, |meta| meta.mode() & 0o777);
        if let Some(meta) = &replaced {
            let (uid, gid) = (meta.uid(), meta.gid());
            let mine = file.as_file().metadata().map(|m| (m.uid(), m.gid())).ok();
            // Root keeps the owner too; anyone else can keep only a group
            // of theirs, and is told when the owner changes.
            let owner = (rustix::process::geteuid().is_root()).then_some(uid);
            if mine != Some((owner.unwrap_or(uid), gid)) {
                std::os::unix::fs::fchown(file.as_file(), owner, Some(gid)).with_context(|| {
                    format!(
                        "giving the new `{}` the group ({gid}) of the file it replaces; \
                         nothing was written",
                        path.display()
                    )
                })?;
            }
            if owner.is_none() && mine.is_some_and(|(me, _)| me != uid) {
                eprintln!(
                    "keyscope: note: `{}` was owned by uid {uid} and is now yours; a reader that \
                     relied on its owner may no longer read it",
                    path.display()
                );
            }
        }
        file.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("setting the mode of `{}`", path.display()))?;
    }
    file.write_all(bytes)
        .and_then(|()| file.as_file().sync_all())
        .with_context(|| format!("writing `{}`", path.display()))?;
    file.persist(path)
        .with_context(|| format!("writing `{}`", path.display()))?;
    Ok(())
}

pub fn scope_line(scope: &Scope) -> String {
    format!(
        "{:>4}  {:<32}  agents: {:<4}  runtime: {}",
        scope.id,
        scope.path(),
        scope.agents,
        runtime_text(scope)
    )
}

pub fn scope_summary(scope: &Scope) -> String {
    format!(
        "scope {} {} (agents: {}; runtime: {})",
        scope.id,
        scope.path(),
        scope.agents,
        runtime_text(scope)
    )
}

pub fn scope_details(scope: &Scope) -> String {
    format!(
        "scope {}\n  app:        {}\n  name:       {}\n  agents:     {}\n  runtime:    {}\n  created at: {}",
        scope.id,
        scope.app,
        scope.name,
        scope.agents,
        runtime_text(scope),
        scope.created_at
    )
}

fn runtime_text(scope: &Scope) -> String {
    if scope.runtime == keyscope_runtime::RuntimeSet::EMPTY {
        "(none)".to_owned()
    } else {
        scope.runtime.to_string()
    }
}

pub fn key_line(key: &ApiKey) -> String {
    let status = match (key.status, &key.revoked_at, &key.expires_at) {
        (KeyStatus::Revoked, Some(at), _) => format!("revoked {at}"),
        (KeyStatus::Expired, _, Some(at)) => format!("expired {at}"),
        (KeyStatus::Expiring, _, Some(at)) => format!("expiring {at}"),
        (status, _, _) => status.as_str().to_owned(),
    };
    let rotated = key
        .successor_id
        .map_or(String::new(), |id| format!(" (rotated to {id})"));
    let used = match &key.last_used_at {
        Some(at) => format!("last used {at} ({} uses)", key.uses),
        None => "never used".to_owned(),
    };
    format!(
        "{:>4}  {:<24}  scope {:<4}  {}…  created {}  {used}  {status}{rotated}",
        key.id, key.name, key.scope_id, key.prefix, key.created_at
    )
}

pub fn decision_text(decision: &Decision) -> String {
    let json = DecisionJson::from(decision);
    let mut text = format!(
        "{}: {}",
        if decision.allow { "allow" } else { "deny" },
        json.reason
    );
    if let Some(required) = json.required {
        text.push_str(&format!(" (requires {required})"));
    }
    if let (Some(key), Some(scope)) = (decision.key_id, decision.scope_id) {
        text.push_str(&format!(" [key {key}, scope {scope}]"));
    }
    text
}
