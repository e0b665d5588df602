//! `keyscope admin token ...`: the named credentials of the admin API.

use std::process::ExitCode;

use clap::Subcommand;
use keyscope_store::{AdminToken, AnyStore as Store, Location, Store as _};

use super::output::{self, Output};

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Named admin tokens: each admin's own credential for the admin API.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a token. It is printed once, now: only its SHA-256 is stored.
    /// Its name is the actor of its changes in the audit trail.
    Create {
        /// Its name, unique among the live tokens (`alice`, `ci-deploy`).
        #[arg(long)]
        name: String,
    },
    /// List tokens, live and revoked (never a token).
    List,
    /// Revoke a token: it is refused from its next request.
    Revoke {
        /// The token's name.
        name: String,
    },
}

fn token_line(token: &AdminToken) -> String {
    let state = match &token.revoked_at {
        Some(at) => format!("revoked {at}"),
        None => "live".to_owned(),
    };
    format!(
        "{:>4}  {:<24}  created {}  {state}",
        token.id, token.name, token.created_at
    )
}

pub fn run(command: AdminCommand, store: &Location, out: &Output) -> anyhow::Result<ExitCode> {
    let AdminCommand::Token(command) = command;
    match command {
        TokenCommand::Create { name } => {
            if output::stdout_is_dev_null() {
                anyhow::bail!(
                    "stdout is closed or /dev/null, where nobody would see the token; no token was made"
                );
            }
            let mut store = Store::open_existing(store)?;
            let token = keyscope_keys::admin_token::generate();
            let created =
                store.create_admin_token(&name, &keyscope_keys::admin_token::digest(&token))?;
            out.note(&format!(
                "created admin token `{}`; it is shown below only this once:",
                created.name
            ));
            let shown = serde_json::json!({
                "id": created.id,
                "name": created.name,
                "token": token.as_str(),
                "created_at": created.created_at,
            });
            if let Err(error) = out.print_flushed(&shown, || token.as_str().to_owned()) {
                // Nobody saw it: it must not stay valid.
                store.revoke_admin_token(&created.name)?;
                anyhow::bail!("writing the token to stdout: {error}; the token was revoked");
            }
        }
        TokenCommand::List => {
            let tokens = Store::open_existing(store)?.admin_tokens()?;
            out.print(&tokens, || {
                if tokens.is_empty() {
                    "no admin tokens".to_owned()
                } else {
                    tokens.iter().map(token_line).collect::<Vec<_>>().join("\n")
                }
            })?;
        }
        TokenCommand::Revoke { name } => {
            let token = Store::open_existing(store)?.revoke_admin_token(&name)?;
            out.print(&token, || {
                format!(
                    "revoked admin token `{}` at {}",
                    token.name,
                    token.revoked_at.as_deref().unwrap_or("?")
                )
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
