//! `keyscope admin token ...`: the named credentials of the admin API.
//! `keyscope fleet token ...` shares the commands here, for gateways'.

use std::process::ExitCode;

use clap::Subcommand;
use keyscope_store::{AnyStore as Store, Location, Role, Store as _, Token, TokenKind};

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
        /// What it may do: `admin` (everything), `app-admin` (the scopes,
        /// keys and audit entries of its apps), `app-viewer` (those, to
        /// read) or `auditor` (everything, to read).
        #[arg(long, default_value = "admin", value_parser = ["admin", "app-admin", "app-viewer", "auditor"])]
        role: String,
        /// An app an app-admin or app-viewer covers; once per app.
        #[arg(long = "app", value_name = "APP")]
        apps: Vec<String>,
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
    let role = token.role.as_ref().map(|role| {
        let apps = role
            .apps()
            .map(|apps| {
                format!(
                    " of {}",
                    apps.iter().cloned().collect::<Vec<_>>().join(", ")
                )
            })
            .unwrap_or_default();
        format!("{}{apps}", role.name())
    });
    match role {
        Some(role) => format!(
            "{:>4}  {:<24}  {role:<24}  created {}  {state}",
            token.id, token.name, token.created_at
        ),
        None => format!(
            "{:>4}  {:<24}  created {}  {state}",
            token.id, token.name, token.created_at
        ),
    }
}

pub fn run(command: AdminCommand, store: &Location, out: &Output) -> anyhow::Result<ExitCode> {
    let AdminCommand::Token(command) = command;
    match command {
        TokenCommand::Create { name, role, apps } => {
            let role = Role::new(&role, apps)?;
            create(TokenKind::Admin, &name, Some(&role), store, out)?;
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
    role: Option<&Role>,
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
        let digest = keyscope_keys::admin_token::digest(&token);
        let created = match (kind, role) {
            (TokenKind::Admin, Some(role)) => store.create_admin_token(name, role, &digest)?,
            (kind, _) => store.create_token(kind, name, &digest)?,
        };
        out.note(&format!(
            "created {} `{}`; it is shown below only this once:",
            kind.noun(),
            created.name
        ));
        let mut shown = serde_json::json!({
            "id": created.id,
            "name": created.name,
            "token": token.as_str(),
            "created_at": created.created_at,
        });
        if let Some(role) = &created.role {
            shown["role"] = role.name().into();
            shown["apps"] = serde_json::json!(role.apps());
        }
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
