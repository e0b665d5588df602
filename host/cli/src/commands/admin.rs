//! `keyscope admin token ...`: the named credentials of the admin API.
//! `keyscope fleet token ...` shares the commands here, for gateways'.

use std::process::ExitCode;

use clap::Subcommand;
use keyscope_store::{AnyStore as Store, Location, Store as _, Token, TokenKind};

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

fn token_line(token: &Token) -> String {
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
            create(TokenKind::Admin, &name, store, out)?;
        }
        TokenCommand::List => list(TokenKind::Admin, store, out)?,
        TokenCommand::Revoke { name } => revoke(TokenKind::Admin, &name, store, out)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Makes a token of `kind` named `name` and shows it, this once.
pub(super) fn create(
    kind: TokenKind,
    name: &str,
    store: &Location,
    out: &Output,
) -> anyhow::Result<Token> {
    if output::stdout_is_dev_null() {
        anyhow::bail!(
            "stdout is closed or /dev/null, where nobody would see the token; no token was made"
        );
    }
    // A command that adds to the store creates it (commands/mod.rs).
    super::add_to(store, |store| {
        let token = keyscope_keys::admin_token::generate(match kind {
            TokenKind::Admin => keyscope_keys::admin_token::ADMIN_PREFIX,
            TokenKind::Fleet => keyscope_keys::admin_token::FLEET_PREFIX,
        });
        let created =
            store.create_token(kind, name, &keyscope_keys::admin_token::digest(&token))?;
        out.note(&format!(
            "created {} `{}`; it is shown below only this once:",
            kind.noun(),
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
            store.revoke_token(kind, &created.name)?;
            anyhow::bail!("writing the token to stdout: {error}; the token was revoked");
        }
        Ok(created)
    })
}

/// Lists the tokens of `kind`, live and revoked.
pub(super) fn list(kind: TokenKind, store: &Location, out: &Output) -> anyhow::Result<()> {
    let tokens = Store::open_existing(store)?.tokens(kind)?;
    out.print(&tokens, || {
        if tokens.is_empty() {
            format!("no {}s", kind.noun())
        } else {
            tokens.iter().map(token_line).collect::<Vec<_>>().join("\n")
        }
    })
}

/// Revokes the live token of `kind` named `name`.
pub(super) fn revoke(
    kind: TokenKind,
    name: &str,
    store: &Location,
    out: &Output,
) -> anyhow::Result<()> {
    let token = Store::open_existing(store)?.revoke_token(kind, name)?;
    out.print(&token, || {
        format!(
            "revoked {} `{}` at {}",
            kind.noun(),
            token.name,
            token.revoked_at.as_deref().unwrap_or("?")
        )
    })
}
