//! `keyscope op ...`: the operation catalogue carried in the snapshot.

use std::process::ExitCode;

use clap::Subcommand;
use keyscope_runtime::Requirement;
use keyscope_store::Location;
use keyscope_store::{AnyStore as Store, Store as _};
use serde::Serialize;

use super::output::Output;

#[derive(Debug, Subcommand)]
pub enum OpCommand {
    /// List the catalogue.
    List,
    /// Add an operation, or change what it requires.
    Set {
        /// The operation name (`agents.publish`).
        name: String,
        /// agents:LEVEL or runtime:PERMISSION.
        #[arg(value_parser = parse_requirement)]
        requires: Requirement,
    },
    /// Remove an operation; requests for it are denied from then on.
    Remove {
        /// The operation name.
        name: String,
    },
}

fn parse_requirement(s: &str) -> Result<Requirement, String> {
    s.parse()
        .map_err(|e: keyscope_policy::UnknownName| e.to_string())
}

#[derive(Serialize)]
struct OperationJson {
    name: String,
    requires: String,
}

pub fn run(command: OpCommand, store: &Location, out: &Output) -> anyhow::Result<ExitCode> {
    let print = |ops: Vec<keyscope_policy::snapshot::OperationEntry>| {
        let ops: Vec<OperationJson> = ops
            .into_iter()
            .map(|op| OperationJson {
                name: op.name,
                requires: op.requires.to_string(),
            })
            .collect();
        out.print(&ops, || {
            ops.iter()
                .map(|op| format!("{:<24}  {}", op.name, op.requires))
                .collect::<Vec<_>>()
                .join("\n")
        })
    };
    match command {
        OpCommand::List => print(Store::open_existing(store)?.operations()?)?,
        OpCommand::Set { name, requires } => {
            let set = super::add_to(store, |store| Ok(store.set_operation(&name, requires)?))?;
            print(vec![set])?;
        }
        OpCommand::Remove { name } => {
            Store::open_existing(store)?.remove_operation(&name)?;
            out.print(&serde_json::json!({ "removed": name }), || {
                format!("removed operation `{name}`")
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
