//! `keyscope audit ...`: the store's hash-chained trail of every change.

use std::process::ExitCode;

use clap::Subcommand;
use keyscope_store::audit::{self, AuditEntry};
use keyscope_store::{AnyStore as Store, Location, Store as _};

use super::output::Output;

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// List entries, oldest first.
    List {
        /// Only entries at or after T: an RFC 3339 time in UTC
        /// (`2026-11-27T09:00:00Z`) or a duration ago (`15m`, `24h`, `7d`).
        #[arg(long, value_name = "T")]
        since: Option<String>,
    },
    /// Check the whole chain: exit 0 if every entry is as written, 1 naming
    /// the first that was edited, removed or moved.
    Verify,
}

/// `--since` as the trail writes times.
fn since(text: &str) -> anyhow::Result<String> {
    if let Ok(ago) = keyscope_runtime::time::parse_duration_ms(text) {
        return Ok(audit::timestamp(audit::now_ms().saturating_sub(ago)));
    }
    // RFC 3339 in UTC: compared as text once in the trail's own form.
    let bytes = text.as_bytes();
    let shaped = bytes.len() >= 20
        && bytes[4] == b'-'
        && bytes[7] == b'-'
        && bytes[10] == b'T'
        && bytes[13] == b':'
        && bytes[16] == b':'
        && text.ends_with('Z')
        && text[..19]
            .bytes()
            .enumerate()
            .all(|(i, b)| matches!(i, 4 | 7 | 10 | 13 | 16) || b.is_ascii_digit());
    if !shaped {
        anyhow::bail!(
            "--since `{}`: give an RFC 3339 time in UTC (2026-11-27T09:00:00Z) or a duration ago (15m, 24h, 7d)",
            keyscope_store::printable(text)
        );
    }
    let fraction = &text[19..text.len() - 1];
    let millis = fraction.strip_prefix('.').unwrap_or("");
    if !(fraction.is_empty()
        || (fraction.starts_with('.') && millis.bytes().all(|b| b.is_ascii_digit())))
    {
        anyhow::bail!(
            "--since `{}`: the fraction of a second is not digits",
            keyscope_store::printable(text)
        );
    }
    let millis: String = millis
        .chars()
        .chain(std::iter::repeat('0'))
        .take(3)
        .collect();
    Ok(format!("{}.{millis}Z", &text[..19]))
}

fn entry_line(entry: &AuditEntry) -> String {
    format!(
        "{:>5}  {}  {:<20}  {:<18}  {}",
        entry.seq, entry.at, entry.actor, entry.action, entry.target
    )
}

pub fn run(command: AuditCommand, store: &Location, out: &Output) -> anyhow::Result<ExitCode> {
    let mut store = Store::open_existing(store)?;
    match command {
        AuditCommand::List { since: from } => {
            let from = from.as_deref().map(since).transpose()?;
            let trail = store.audit_trail(from.as_deref())?;
            out.print(&trail.entries, || {
                if trail.entries.is_empty() {
                    "no audit entries".to_owned()
                } else {
                    trail
                        .entries
                        .iter()
                        .map(entry_line)
                        .collect::<Vec<_>>()
                        .join("\n")
                }
            })?;
        }
        AuditCommand::Verify => {
            let trail = store.audit_trail(None)?;
            match audit::verify(&trail) {
                Ok(count) => {
                    let head = trail.head.map(|(_, hash)| hash.to_string());
                    out.print(
                        &serde_json::json!({ "verified": true, "entries": count, "head": head }),
                        || match &head {
                            Some(head) => {
                                format!("the audit trail verifies: {count} entries, head {head}")
                            }
                            None => "the audit trail is empty".to_owned(),
                        },
                    )?;
                }
                Err(broken) => {
                    out.print(
                        &serde_json::json!({
                            "verified": false,
                            "entry": broken.seq,
                            "error": broken.why,
                        }),
                        || format!("the audit trail does not verify: {broken}"),
                    )?;
                    return Ok(ExitCode::from(super::EXIT_DENY));
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
