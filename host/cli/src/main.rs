//! The `keyscope` command-line interface: argument parsing (clap), one
//! file per command group under `commands/`, and errors with context
//! (anyhow). The layers it drives are crates of their own:
//! `keyscope-runtime`, `keyscope-store`, `keyscope-serve`.
//!
//! Exit codes, as grep's: 0 for success or allow, 1 for deny, 2 for any error.
//! Errors go to stderr: a line of text, or with `--json` one JSON object,
//! `{"error":{"kind":"...","message":"..."}}`.

mod commands;

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let args = match commands::Cli::try_parse() {
        Ok(args) => args,
        Err(error) => return usage_error(&error),
    };
    let json = args.json();
    match commands::run(args) {
        Ok(code) => code,
        // A closed pipe (`keyscope ... | head`) is the reader's choice, not an error.
        Err(error) if is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            report(json, kind(&error), &message(&error));
            ExitCode::from(commands::EXIT_ERROR)
        }
    }
}

/// A command line clap refused; `--help` and `--version` are not errors.
fn usage_error(error: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) || !std::env::args_os().any(|arg| arg == "--json")
    {
        // clap prints, and exits 0 for help and 2 for errors.
        error.exit();
    }
    let text = error.kind().as_str().map_or_else(
        || error.render().to_string(),
        |kind| format!("{kind}; see `keyscope --help`"),
    );
    report(true, "usage", text.trim());
    ExitCode::from(commands::EXIT_ERROR)
}

/// Writes an error to stderr, as text or as JSON.
fn report(json: bool, kind: &str, message: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = if json {
        let line = serde_json::json!({ "error": { "kind": kind, "message": message } });
        writeln!(stderr, "{line}")
    } else {
        writeln!(stderr, "keyscope: error: {message}")
    };
}

/// The error and its causes, each said once: a cause whose text its parent
/// already holds is not repeated.
fn message(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let cause = cause.to_string();
        if text.contains(&cause) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause);
    }
    text
}

/// The kind of the first cause that has one.
fn kind(error: &anyhow::Error) -> &'static str {
    error
        .chain()
        .find_map(|cause| {
            if let Some(error) = cause.downcast_ref::<keyscope_runtime::Error>() {
                return Some(error.kind());
            }
            if let Some(error) = cause.downcast_ref::<keyscope_store::StoreError>() {
                return Some(error.kind());
            }
            if let Some(error) = cause.downcast_ref::<keyscope_serve::ServeError>() {
                return Some(error.kind());
            }
            if cause
                .downcast_ref::<keyscope_runtime::SwapError>()
                .is_some()
            {
                return Some("policy-refused");
            }
            cause.downcast_ref::<std::io::Error>().map(|_| "io")
        })
        .unwrap_or("error")
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
