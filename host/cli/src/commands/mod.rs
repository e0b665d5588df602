//! Argument parsing and dispatch. One file per subcommand group.
//!
//! One rule for a store that does not exist yet: a command that adds to a
//! store (`scope create`, `admin token create`, `fleet token create`,
//! `op set`, `route set`, `limits set`, `store migrate`, `store copy`'s
//! destination) creates it, with `AnyStore::open`. Every other command
//! reads, or changes what the store must already hold (a key needs its
//! scope), and refuses a missing store with `AnyStore::open_existing`,
//! leaving no file behind. An adding command that made the store and then
//! failed (a name refused, say) removes it again ([`add_to`]).

mod admin;
mod audit;
mod bench;
mod bundle;
mod conformance;
mod demo;
mod docs;
mod eval;
mod fleet;
mod key;
mod limits;
mod op;
mod output;
mod policy;
mod route;
mod scope;
mod serve;
mod snapshot;
mod store;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use keyscope_store::{Location, Store as _};

pub use output::Output;

/// Opens the store to add to it, creating it if there is none, and runs
/// `add` on it. If this call created the store's file and `add` fails, the
/// file is removed again: a refused command leaves no empty store behind
/// for later commands to run on.
pub(crate) fn add_to<T>(
    location: &Location,
    add: impl FnOnce(&mut keyscope_store::AnyStore) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let created = match location {
        Location::Sqlite(path) => {
            (!path.exists() && std::fs::symlink_metadata(path).is_err()).then(|| path.clone())
        }
        Location::Postgres(_) => None,
    };
    let mut store = keyscope_store::AnyStore::open(location)?;
    let added = add(&mut store);
    // Removed only while it holds nothing: every change is audited, so an
    // empty trail means no other process has added to it meanwhile.
    if added.is_err()
        && let Some(path) = created
        && store
            .audit_trail(None)
            .is_ok_and(|trail| trail.entries.is_empty())
    {
        drop(store);
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut name = path.clone().into_os_string();
            name.push(suffix);
            let _ = std::fs::remove_file(name);
        }
    }
    added
}

/// Exit status of a deny.
pub const EXIT_DENY: u8 = 1;
/// Exit status of any error.
pub const EXIT_ERROR: u8 = 2;

/// API scopes and API keys, decided by a sandboxed WebAssembly policy.
#[derive(Debug, Parser)]
#[command(name = "keyscope", version, about, max_term_width = 100)]
pub struct Cli {
    /// The store: an SQLite file, or a PostgreSQL database as
    /// postgres://USER@HOST:PORT/DB (the password from $PGPASSWORD or a
    /// password file, not the command line).
    #[arg(
        long,
        global = true,
        env = "KEYSCOPE_STORE",
        default_value = "keyscope.db",
        value_name = "PATH|URL",
        hide_env_values = true,
        value_parser = StoreParser
    )]
    store: Location,

    /// Machine-readable JSON output.
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create, list, show, update and delete API scopes.
    #[command(subcommand)]
    Scope(scope::ScopeCommand),
    /// Issue, list, rotate and revoke API keys.
    #[command(subcommand)]
    Key(key::KeyCommand),
    /// Export the snapshot the policy component loads.
    #[command(subcommand)]
    Snapshot(snapshot::SnapshotCommand),
    /// Decide requests through the policy component.
    Eval(eval::EvalArgs),
    /// Inspect a policy component.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// The operation catalogue: what each operation requires.
    #[command(subcommand)]
    Op(op::OpCommand),
    /// The route table: the platform's HTTP API, mapped to operations.
    #[command(subcommand)]
    Route(route::RouteCommand),
    /// Named admin tokens for the admin API.
    #[command(subcommand)]
    Admin(admin::AdminCommand),
    /// The hash-chained trail of every change: list it, verify it.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Scopes per app and keys per scope.
    #[command(subcommand)]
    Limits(limits::LimitsCommand),
    /// The store itself: migrate its schema, copy it to another backend.
    #[command(subcommand)]
    Store(store::StoreCommand),
    /// Signing keys and static bundles for a fleet of gateways.
    #[command(subcommand)]
    Bundle(bundle::BundleCommand),
    /// A control plane's fleet of gateways.
    #[command(subcommand)]
    Fleet(fleet::FleetCommand),
    /// Measure decisions per second and latency on this machine.
    Bench(bench::BenchArgs),
    /// Run the conformance suite against a policy component.
    Conformance(conformance::ConformanceArgs),
    /// Serve decisions to Envoy (ext_authz gRPC and HTTP), nginx
    /// (auth_request) and direct callers (/v1/check).
    Serve(Box<serve::ServeArgs>),
    /// Run the whole flow in a temporary store, narrated.
    Demo,
    /// Print a completion script for bash, zsh, fish, elvish or PowerShell.
    Completions(docs::CompletionsArgs),
    /// Print keyscope's man page, or write every command's to a directory.
    Man(docs::ManArgs),
}

/// Parses a store location for clap without clap's own message, which
/// would quote the value as given, password and all: the refusal is the
/// store's, which shows a URL only without its password.
#[derive(Debug, Clone, Copy)]
pub struct StoreParser;

impl clap::builder::TypedValueParser for StoreParser {
    type Value = Location;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<Location, clap::Error> {
        let name = arg
            .map(|arg| arg.get_id().as_str().replace('_', "-"))
            .unwrap_or_else(|| "store".to_owned());
        let refuse = |why: String| {
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!("--{name}: {why}\n"),
            )
            .with_cmd(cmd)
        };
        let text = value
            .to_str()
            .ok_or_else(|| refuse("not UTF-8".to_owned()))?;
        text.parse()
            .map_err(|error: keyscope_store::StoreError| refuse(error.to_string()))
    }
}

impl Cli {
    /// Whether `--json` was given: errors are then JSON too.
    pub fn json(&self) -> bool {
        self.json
    }
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let out = Output::new(cli.json);
    match cli.command {
        Command::Scope(command) => scope::run(command, &cli.store, &out),
        Command::Key(command) => key::run(command, &cli.store, &out),
        Command::Snapshot(command) => snapshot::run(command, &cli.store, &out),
        Command::Eval(args) => eval::run(args, &cli.store, &out),
        Command::Policy(command) => policy::run(command, &out),
        Command::Op(command) => op::run(command, &cli.store, &out),
        Command::Route(command) => route::run(command, &cli.store, &out),
        Command::Admin(command) => admin::run(command, &cli.store, &out),
        Command::Audit(command) => audit::run(command, &cli.store, &out),
        Command::Limits(command) => limits::run(command, &cli.store, &out),
        Command::Store(command) => store::run(command, &cli.store, &out),
        Command::Bundle(command) => bundle::run(command, &cli.store, &out),
        Command::Fleet(command) => fleet::run(command, &cli.store, &out),
        Command::Bench(args) => bench::run(args, &out),
        Command::Conformance(args) => conformance::run(args, &out),
        Command::Serve(args) => serve::run(*args, &cli.store),
        Command::Demo => demo::run(&out),
        Command::Completions(args) => docs::completions(&args),
        Command::Man(args) => docs::man(&args, &out),
    }
}
