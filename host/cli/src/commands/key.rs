//! `keyscope key ...`

use std::num::NonZeroU64;
use std::process::ExitCode;

use clap::Subcommand;
use keyscope_store::Location;
use keyscope_store::{AnyStore as Store, Lifetime, NewKey, ScopeRef, Store as _};

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
        #[arg(long, value_name = "DURATION", value_parser = parse_lifetime)]
        expires_in: Option<NonZeroU64>,
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
    /// Replace a key: a new key with the same scope and name, shown once;
    /// the old one stays valid for the grace, then is denied as expired
    /// (every gateway judges that against its own clock). A key made with
    /// a lifetime is replaced by one with the same lifetime, counted from
    /// the rotation.
    Rotate {
        /// The key's id.
        key_id: u64,
        /// How long the old key stays valid: `0` (denied from the rotation's
        /// millisecond on), `90s`, `15m`, `1h`, `24h`, at most `7d`.
        #[arg(long, value_name = "DURATION", value_parser = keyscope_runtime::time::parse_duration_ms)]
        grace: u64,
    },
}

/// A key's lifetime: a duration ([`keyscope_runtime::time::parse_duration_ms`])
/// that is not zero.
fn parse_lifetime(text: &str) -> Result<NonZeroU64, String> {
    NonZeroU64::new(keyscope_runtime::time::parse_duration_ms(text)?).ok_or_else(|| {
        "a key that expires at once is never valid; give a positive duration".to_owned()
    })
}

/// Shows a new key's secret, this once: on stdout, flushed, and never to a
/// place nobody reads (`/dev/null`, or a closed stdout, which Rust's runtime
/// reopens on `/dev/null`). The error names the failure, not the secret.
fn deliver(new: &NewKey, out: &Output) -> Result<(), String> {
    let NewKey { key, .. } = new;
    deliver_as(
        new,
        &new.shown(),
        &format!(
            "created key {} `{}` in scope {}; the secret below is shown only this once:",
            key.id, key.name, key.scope_id
        ),
        out,
    )
}

/// Shows a new key's secret with `note` before it, and `value` as its JSON.
fn deliver_as(
    new: &NewKey,
    value: &impl serde::Serialize,
    note: &str,
    out: &Output,
) -> Result<(), String> {
    if output::stdout_is_dev_null() {
        return Err("stdout is closed or /dev/null, where nobody would see it".to_owned());
    }
    out.note(note);
    out.print_flushed(value, || new.secret.expose().to_owned())
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
            // Counted by the store from the clock reading its creation is
            // stamped with: one reading, so no lifetime races the clock.
            let lifetime = expires_in.map_or(Lifetime::Unlimited, Lifetime::For);
            let mut store = Store::open_existing(store)?;
            // The secret is written and flushed before the key is committed:
            // if it cannot be delivered, the key is rolled back.
            let shown = std::cell::Cell::new(false);
            let delivered = store.create_key_delivered(&scope, &name, lifetime, |new| {
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
        KeyCommand::Rotate { key_id, grace } => {
            let mut store = Store::open_existing(store)?;
            let shown = std::cell::Cell::new(false);
            let rotated = store.rotate_key_delivered(key_id, grace, |old, new| {
                let until = match (grace, old.expires_at.as_deref()) {
                    (0, _) => "is denied from now on".to_owned(),
                    (_, Some(at)) => format!("stays valid through {at}"),
                    (_, None) => "stays valid".to_owned(),
                };
                let lifetime = new
                    .key
                    .expires_at
                    .as_deref()
                    .map_or(String::new(), |at| format!(" (valid through {at})"));
                let note = format!(
                    "rotated key {} `{}`: it {until}; the new key {}'s secret{lifetime} below is \
                     shown only this once:",
                    old.id, old.name, new.key.id
                );
                let value = serde_json::json!({ "old": old, "new": new.shown() });
                deliver_as(new, &value, &note, out).inspect(|()| shown.set(true))
            });
            let rotated = match rotated {
                Err(error) if shown.get() => {
                    return Err(anyhow::Error::new(error).context(
                        "the key was not rotated, so the secret printed above is not valid",
                    ));
                }
                rotated => rotated?,
            };
            if let Err(why) = rotated {
                anyhow::bail!(
                    "the new key's secret could not be delivered ({why}); the key was not rotated"
                );
            }
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
