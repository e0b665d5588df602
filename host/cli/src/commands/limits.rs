//! `keyscope limits ...`

use std::process::ExitCode;

use clap::Subcommand;
use keyscope_store::Location;
use keyscope_store::{AnyStore as Store, Quotas, Store as _};

use super::output::Output;

#[derive(Debug, Subcommand)]
pub enum LimitsCommand {
    /// Show the limits in force.
    Show,
    /// Change the limits.
    Set {
        /// Live scopes per application (default 20).
        #[arg(long)]
        scopes_per_app: Option<u32>,
        /// Live keys per scope (default 40).
        #[arg(long)]
        keys_per_scope: Option<u32>,
    },
}

pub fn run(command: LimitsCommand, store: &Location, out: &Output) -> anyhow::Result<ExitCode> {
    let quotas = match command {
        LimitsCommand::Show => Store::open_existing(store)?.quotas()?,
        LimitsCommand::Set {
            scopes_per_app,
            keys_per_scope,
        } => {
            if scopes_per_app.is_none() && keys_per_scope.is_none() {
                anyhow::bail!("give --scopes-per-app N, --keys-per-scope N, or both");
            }
            super::add_to(store, |store| {
                let current = store.quotas()?;
                Ok(store.set_quotas(Quotas {
                    scopes_per_app: scopes_per_app.unwrap_or(current.scopes_per_app),
                    keys_per_scope: keys_per_scope.unwrap_or(current.keys_per_scope),
                })?)
            })?
        }
    };
    out.print(&quotas, || {
        format!(
            "scopes per app: {}\nkeys per scope: {}",
            quotas.scopes_per_app, quotas.keys_per_scope
        )
    })?;
    Ok(ExitCode::SUCCESS)
}
