//! `keyscope scope ...`

use std::process::ExitCode;

use clap::Subcommand;
use keyscope_runtime::{AgentsLevel, RuntimeSet};
use keyscope_store::Location;
use keyscope_store::{AnyStore as Store, ScopeRef, ScopeUpdate, Store as _};
use serde::Serialize;

use super::output::{self, Output};

#[derive(Debug, Subcommand)]
pub enum ScopeCommand {
    /// Create a scope for an application.
    Create {
        /// The application the scope belongs to.
        #[arg(long)]
        app: String,
        /// The scope's name, unique within the app.
        #[arg(long)]
        name: String,
        /// Agents level: none, view, edit or full.
        #[arg(long, default_value = "none", value_parser = parse_level)]
        agents: AgentsLevel,
        /// Comma-separated runtime permissions: run, session-create,
        /// session-terminate, document-upload.
        #[arg(long, default_value = "", value_parser = parse_runtime)]
        runtime: RuntimeSet,
    },
    /// List scopes.
    List {
        /// Only this application's scopes.
        #[arg(long)]
        app: Option<String>,
    },
    /// Show one scope.
    Show {
        /// The scope id, or APP/NAME.
        scope: String,
    },
    /// Change a scope's name, level or permissions; takes effect at once.
    Update {
        /// The scope id, or APP/NAME.
        scope: String,
        /// A new name.
        #[arg(long)]
        name: Option<String>,
        /// A new Agents level.
        #[arg(long, value_parser = parse_level)]
        agents: Option<AgentsLevel>,
        /// The new runtime permissions (replacing the old; "" for none).
        #[arg(long, value_parser = parse_runtime)]
        runtime: Option<RuntimeSet>,
    },
    /// Delete a scope. Refuses while it has live keys, unless --revoke-keys.
    Delete {
        /// The scope id, or APP/NAME.
        scope: String,
        /// Revoke the scope's live keys in the same transaction.
        #[arg(long)]
        revoke_keys: bool,
    },
}

pub fn parse_level(s: &str) -> Result<AgentsLevel, String> {
    s.parse()
        .map_err(|e: keyscope_policy::UnknownName| e.to_string())
}

pub fn parse_runtime(s: &str) -> Result<RuntimeSet, String> {
    s.parse()
        .map_err(|e: keyscope_policy::UnknownName| e.to_string())
}

#[derive(Serialize)]
struct Deleted {
    deleted: keyscope_store::Scope,
    revoked_keys: Vec<u64>,
}

pub fn run(command: ScopeCommand, store: &Location, out: &Output) -> anyhow::Result<ExitCode> {
    match command {
        ScopeCommand::Create {
            app,
            name,
            agents,
            runtime,
        } => {
            let scope = super::add_to(store, |store| {
                Ok(store.create_scope(&app, &name, agents, runtime)?)
            })?;
            out.print(&scope, || {
                format!("created {}", output::scope_summary(&scope))
            })?;
        }
        ScopeCommand::List { app } => {
            let scopes = Store::open_existing(store)?.list_scopes(app.as_deref())?;
            out.print(&scopes, || {
                if scopes.is_empty() {
                    "no scopes".to_owned()
                } else {
                    scopes
                        .iter()
                        .map(output::scope_line)
                        .collect::<Vec<_>>()
                        .join("\n")
                }
            })?;
        }
        ScopeCommand::Show { scope } => {
            let scope = Store::open_existing(store)?.scope(&scope.parse()?)?;
            out.print(&scope, || output::scope_details(&scope))?;
        }
        ScopeCommand::Update {
            scope,
            name,
            agents,
            runtime,
        } => {
            if name.is_none() && agents.is_none() && runtime.is_none() {
                anyhow::bail!("nothing to change; give --name, --agents or --runtime");
            }
            let update = ScopeUpdate {
                name,
                agents,
                runtime,
            };
            let scope = Store::open_existing(store)?.update_scope(&scope.parse()?, &update)?;
            out.print(&scope, || {
                format!("updated {}", output::scope_summary(&scope))
            })?;
        }
        ScopeCommand::Delete { scope, revoke_keys } => {
            let scope: ScopeRef = scope.parse()?;
            let (deleted, revoked) =
                Store::open_existing(store)?.delete_scope(&scope, revoke_keys)?;
            let result = Deleted {
                revoked_keys: revoked.iter().map(|key| key.id).collect(),
                deleted,
            };
            out.print(&result, || {
                format!(
                    "deleted scope {} ({}); revoked {} key(s)",
                    result.deleted.id,
                    result.deleted.path(),
                    result.revoked_keys.len()
                )
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
