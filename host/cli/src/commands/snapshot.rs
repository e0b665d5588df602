//! `keyscope snapshot ...`

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use keyscope_policy::SnapshotData;
use keyscope_store::AnyStore as Store;
use keyscope_store::Location;
use serde::Serialize;

use super::output::{self, Output};

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Write the snapshot the policy component loads: to FILE, or to stdout.
    Export {
        /// The file to write (atomically; a regular file or a new path), or
        /// - for stdout; stdout if absent.
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

pub fn run(command: SnapshotCommand, store: &Location, out: &Output) -> anyhow::Result<ExitCode> {
    let SnapshotCommand::Export { output } = command;
    let bytes = keyscope_store::snapshot::build(&mut Store::open_existing(store)?)?;
    let path = output.unwrap_or_else(|| PathBuf::from("-"));
    output::write_file(&path, &bytes)?;
    if path == Path::new("-") {
        return Ok(ExitCode::SUCCESS);
    }
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
