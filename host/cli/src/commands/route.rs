//! `keyscope route ...`: the route table carried in the snapshot, which maps
//! the platform's HTTP API to operations for the proxy front doors.

use std::process::ExitCode;

use clap::Subcommand;
use keyscope_runtime::RouteEntry;
use keyscope_store::Location;
use keyscope_store::{AnyStore as Store, Store as _};

use super::output::Output;

#[derive(Debug, Subcommand)]
pub enum RouteCommand {
    /// List the routes, in matching order.
    List,
    /// Add a route at the end, or point an existing one at another operation.
    Set {
        /// The HTTP method, upper case (`GET`).
        method: String,
        /// The path pattern; `{app}` names the app (`/api/v2/apps/{app}/agents/{id}`).
        pattern: String,
        /// The operation it is (`agents.get`).
        op: String,
    },
    /// Remove a route; requests it matched are denied from then on.
    Remove {
        /// The HTTP method.
        method: String,
        /// The path pattern, exactly as listed.
        pattern: String,
    },
}

pub fn run(command: RouteCommand, store: &Location, out: &Output) -> anyhow::Result<ExitCode> {
    let print = |routes: Vec<RouteEntry>| {
        out.print(&routes, || {
            routes
                .iter()
                .map(|r| format!("{:<7} {:<60} {}", r.method, r.pattern, r.op))
                .collect::<Vec<_>>()
                .join("\n")
        })
    };
    match command {
        RouteCommand::List => print(Store::open_existing(store)?.routes()?)?,
        RouteCommand::Set {
            method,
            pattern,
            op,
        } => print(vec![super::add_to(store, |store| {
            Ok(store.set_route(&method, &pattern, &op)?)
        })?])?,
        RouteCommand::Remove { method, pattern } => {
            Store::open_existing(store)?.remove_route(&method, &pattern)?;
            out.print(
                &serde_json::json!({ "removed": { "method": method, "pattern": pattern } }),
                || format!("removed route `{method} {pattern}`"),
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
