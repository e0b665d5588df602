//! `keyscope snapshot ...`

use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;
use keyscope::Store;
use keyscope_policy::SnapshotData;
use serde::Serialize;

use super::output::Output;

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Write the snapshot the policy component loads: to FILE, or to stdout.
    Export {
        /// The file to write (atomically); stdout if absent.
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

#[derive(Serialize)]
struct Exported<'a> {
    path: &'a Path,
    bytes: usize,
    format_version: u16,
    digest: String,
    scopes: u32,
    keys: u32,
    operations: u32,
}

pub fn run(command: SnapshotCommand, store: &Path, out: &Output) -> anyhow::Result<ExitCode> {
    let SnapshotCommand::Export { output } = command;
    let bytes = keyscope::snapshot::build(&mut Store::open_existing(store)?)?;
    let Some(path) = output else {
        let mut stdout = std::io::stdout().lock();
        if stdout.is_terminal() {
            anyhow::bail!("refusing to write a binary snapshot to a terminal; use -o FILE");
        }
        stdout.write_all(&bytes).context("writing to stdout")?;
        return Ok(ExitCode::SUCCESS);
    };
    write_atomically(&path, &bytes)?;
    let (_, info) = SnapshotData::decode(&bytes)?;
    let exported = Exported {
        path: &path,
        bytes: bytes.len(),
        format_version: info.format_version,
        digest: info.digest_hex(),
        scopes: info.scopes,
        keys: info.keys,
        operations: info.operations,
    };
    out.print(&exported, || {
        format!(
            "wrote {} ({} bytes, format {}, {} scopes, {} keys, {} operations)\ndigest sha256:{}",
            path.display(),
            exported.bytes,
            exported.format_version,
            exported.scopes,
            exported.keys,
            exported.operations,
            exported.digest
        )
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Writes through a temporary file in the same directory and renames it into
/// place, so a reader never sees half a snapshot.
fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut file = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a temporary file in `{}`", dir.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.as_file().sync_all())
        .with_context(|| format!("writing `{}`", path.display()))?;
    file.persist(path)
        .with_context(|| format!("writing `{}`", path.display()))?;
    Ok(())
}
