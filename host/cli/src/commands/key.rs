//! `keyscope key ...`

use std::process::ExitCode;

use clap::Subcommand;
use keyscope_store::Location;
use keyscope_store::{AnyStore as Store, NewKey, ScopeRef, Store as _};

use super::output::{self, Output};

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Issue a key for a scope. The secret is printed once, now, and never
    /// again: only its SHA-256 is stored.
    Create {
        /// The scope id, or APP/NAME.
        #[arg(long)]
        scope: String,
        /// The key's name, unique among the scope's live keys.
        #[arg(long)]
        name: String,
        /// Make the key stop working this long from now (`90s`, `15m`,
        /// `12h`, `30d`; also `ms`), even where no new snapshot arrives:
        /// every gateway judges it against its own clock. Default: valid
        /// until revoked.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration_ms)]
        expires_in: Option<u64>,
    },
    /// List keys (never their secrets).
    List {
        /// Only this scope's keys (id or APP/NAME).
        #[arg(long)]
        scope: Option<String>,
    },
    /// Revoke a key; it is denied from the next decision on.
    Revoke {
        /// The key's id.
        key_id: u64,
    },
}

/// `DURATION` as milliseconds: a whole number and a unit (`ms`, `s`, `m`,
/// `h`, `d`).
fn parse_duration_ms(text: &str) -> Result<u64, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{text}` has no unit; say `90s`, `15m`, `12h` or `30d`"))?;
    let (number, unit) = text.split_at(split);
    let unit_ms: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("unknown unit `{unit}`; use ms, s, m, h or d")),
    };
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` does not start with a whole number"))?;
    match number.checked_mul(unit_ms) {
        Some(0) => {
            Err("a key that expires at once is never valid; give a positive duration".to_owned())
        }
        Some(ms) => Ok(ms),
        None => Err(format!("`{text}` is too long")),
    }
}

/// Shows a new key's secret, this once: on stdout, flushed, and never to a
/// place nobody reads (`/dev/null`, or a closed stdout, which Rust's runtime
/// reopens on `/dev/null`). The error names the failure, not the secret.
fn deliver(new: &NewKey, out: &Output) -> Result<(), String> {
    let NewKey { key, secret } = new;
    if output::stdout_is_dev_null() {
        return Err("stdout is closed or /dev/null, where nobody would see it".to_owned());
    }
    out.note(&format!(
        "created key {} `{}` in scope {}; the secret below is shown only this once:",
        key.id, key.name, key.scope_id
    ));
    out.print_flushed(&new.shown(), || secret.expose().to_owned())
        .map_err(|error| match error.kind() {
            std::io::ErrorKind::BrokenPipe => "stdout is a closed pipe".to_owned(),
            _ => format!("writing to stdout: {error}"),
        })
}

pub fn run(command: KeyCommand, store: &Location, out: &Output) -> anyhow::Result<ExitCode> {
    match command {
        KeyCommand::Create {
            scope,
            name,
            expires_in,
        } => {
            let scope: ScopeRef = scope.parse()?;
            let not_after =
                expires_in.map(|ms| keyscope_runtime::time::now_ms().saturating_add(ms));
            let mut store = Store::open_existing(store)?;
            // The secret is written and flushed before the key is committed:
            // if it cannot be delivered, the key is rolled back.
            let shown = std::cell::Cell::new(false);
            let delivered = store.create_key_delivered(&scope, &name, not_after, |new| {
                deliver(new, out).inspect(|()| shown.set(true))
            });
            let delivered = match delivered {
                Err(error) if shown.get() => {
                    return Err(anyhow::Error::new(error).context(
                        "the key was not created, so the secret printed above is not valid",
                    ));
                }
                delivered => delivered?,
            };
            if let Err(why) = delivered {
                anyhow::bail!(
                    "the key's secret could not be delivered ({why}); the key was not created"
                );
            }
        }
        KeyCommand::List { scope } => {
            let store = Store::open_existing(store)?;
            let scope = scope.map(|s| s.parse::<ScopeRef>()).transpose()?;
            let keys = store.list_keys(scope.as_ref())?;
            out.print(&keys, || {
                if keys.is_empty() {
                    "no keys".to_owned()
                } else {
                    keys.iter()
                        .map(output::key_line)
                        .collect::<Vec<_>>()
                        .join("\n")
                }
            })?;
        }
        KeyCommand::Revoke { key_id } => {
            let key = Store::open_existing(store)?.revoke_key(key_id)?;
            out.print(&key, || {
                format!(
                    "revoked key {} `{}` at {}",
                    key.id,
                    key.name,
                    key.revoked_at.as_deref().unwrap_or("?")
                )
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
