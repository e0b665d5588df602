//! `keyscope store ...`: the store itself, whatever its backend.

use std::io::IsTerminal as _;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;
use keyscope_store::{AnyStore as Store, Location, Store as _};
use serde::Serialize;

use super::output::Output;

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Create the store, or bring its schema up to this keyscope's version.
    /// Every command does this when it opens a store; this does only that,
    /// and repairs usage counts that an older keyscope let go out of range.
    Migrate,
    /// Copy a whole store to another, of the same backend or the other: ids,
    /// tombstones, operations, routes, limits, the admin token's digest and
    /// the change revision. Every issued key keeps working. The destination
    /// must hold no scope and no key; it is written in one transaction.
    Copy {
        /// The store to read (default: --store).
        #[arg(long, value_name = "PATH|URL", value_parser = super::StoreParser)]
        from: Option<Location>,
        /// The store to write, created if need be.
        #[arg(long, value_name = "PATH|URL", value_parser = super::StoreParser)]
        to: Location,
    },
}

#[derive(Serialize)]
struct Migrated {
    store: String,
    revision: u64,
    /// Keys whose usage count was out of range, set to the nearest bound.
    repaired_usage: u64,
}

#[derive(Serialize)]
struct Copied {
    from: String,
    to: String,
    scopes: usize,
    keys: usize,
    operations: usize,
    routes: usize,
    revision: u64,
}

pub fn run(command: StoreCommand, store: &Location, out: &Output) -> anyhow::Result<ExitCode> {
    match command {
        StoreCommand::Migrate => {
            let mut opened = Store::open(store)?;
            let repaired_usage = opened.repair_usage()?;
            let revision = opened.revision()?;
            let shown = Migrated {
                store: store.to_string(),
                revision,
                repaired_usage,
            };
            out.print(&shown, || {
                let mut text =
                    format!("store `{store}` is at this keyscope's schema, revision {revision}");
                if repaired_usage > 0 {
                    text.push_str(&format!(
                        "; repaired the usage count of {repaired_usage} key(s), which was out of range"
                    ));
                }
                text
            })?;
        }
        StoreCommand::Copy { from, to } => {
            let from = from.as_ref().unwrap_or(store);
            if *from == to {
                anyhow::bail!("`store copy` needs two different stores; both are `{to}`");
            }
            let mut source = Store::open_existing(from).context("the source store")?;
            let mut destination = Store::open(&to).context("the destination store")?;
            let bar = progress_bar();
            let dump = keyscope_store::copy::copy(
                &mut source,
                &mut destination,
                |total| {
                    if let Some(bar) = &bar {
                        bar.set_length(total);
                    }
                },
                &mut |rows| {
                    if let Some(bar) = &bar {
                        bar.inc(rows);
                    }
                },
            )
            .context("copying the store")?;
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            let copied = Copied {
                from: from.to_string(),
                to: to.to_string(),
                scopes: dump.scopes.len(),
                keys: dump.keys.len(),
                operations: dump.operations.len(),
                routes: dump.routes.len(),
                revision: dump.revision,
            };
            out.print(&copied, || {
                format!(
                    "copied `{}` to `{}`: {} scope(s), {} key(s), {} operation(s), {} route(s), revision {}",
                    copied.from,
                    copied.to,
                    copied.scopes,
                    copied.keys,
                    copied.operations,
                    copied.routes,
                    copied.revision
                )
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A progress bar on stderr when it is a terminal; nothing otherwise, so a
/// script or a log sees only the result.
fn progress_bar() -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(0);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} copying {bar:40} {pos}/{len} rows ({per_sec}, {eta} left)",
    ) {
        bar.set_style(style);
    }
    Some(bar)
}
