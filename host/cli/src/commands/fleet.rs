//! `keyscope fleet status`: which gateways hold the control plane's
//! current state, asked of its admin API; `keyscope fleet token`: each
//! gateway's own credential, kept in the store.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use keyscope_store::{Location, TokenKind};
use zeroize::Zeroizing;

use super::output::Output;

#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// List the gateways a control plane has seen, their revision and when
    /// each last polled. Exits 0 when every gateway holds the published
    /// state, 1 when one is behind. A gateway unseen for 3 long-poll
    /// periods is shown as gone (and does not count as behind); after 10,
    /// it is dropped.
    Status {
        #[command(flatten)]
        control_plane: ControlPlane,
    },
    /// Each gateway's own fleet token: it polls for bundles under its name,
    /// and nothing else. Kept in the store, as admin tokens are.
    #[command(subcommand)]
    Token(FleetTokenCommand),
    /// Remove a gateway from the control plane's fleet view (it comes back
    /// if it polls again).
    Forget {
        /// The gateway's id.
        id: String,
        #[command(flatten)]
        control_plane: ControlPlane,
    },
}

#[derive(Debug, Subcommand)]
pub enum FleetTokenCommand {
    /// Make a gateway's token. It is printed once, now: only its SHA-256
    /// is stored. Start that gateway with `--gateway-id NAME` and the token
    /// in `--fleet-token-file`; control planes accept it from their next
    /// read of the store.
    Create {
        /// The gateway's name, its id in the fleet view (`eu-west-1`).
        #[arg(long, value_name = "NAME")]
        gateway: String,
    },
    /// List gateways' tokens, live and revoked (never a token).
    List,
    /// Revoke a gateway's token: control planes refuse its polls (401)
    /// from their next read of the store.
    Revoke {
        /// The gateway's name.
        gateway: String,
    },
}

/// Where the control plane's admin API is, and the token for it.
#[derive(Debug, clap::Args)]
pub struct ControlPlane {
    /// The control plane's admin API, as http://HOST:PORT.
    #[arg(long, value_name = "URL", env = "KEYSCOPE_CONTROL_PLANE")]
    control_plane: String,
    /// A file holding the admin token (else $KEYSCOPE_ADMIN_TOKEN).
    #[arg(long, value_name = "FILE")]
    admin_token_file: Option<PathBuf>,
}

pub fn run(command: FleetCommand, store: &Location, out: &Output) -> anyhow::Result<ExitCode> {
    match command {
        FleetCommand::Status { control_plane } => status(&control_plane, out),
        FleetCommand::Forget { id, control_plane } => forget(&id, &control_plane, out),
        FleetCommand::Token(command) => {
            match command {
                FleetTokenCommand::Create { gateway } => {
                    let created =
                        super::admin::create(TokenKind::Fleet, &gateway, None, store, out)?;
                    out.note(&format!(
                        "start the gateway with --gateway-id {} and this token in \
                         --fleet-token-file",
                        created.name
                    ));
                }
                FleetTokenCommand::List => super::admin::list(TokenKind::Fleet, store, out)?,
                FleetTokenCommand::Revoke { gateway } => {
                    super::admin::revoke(TokenKind::Fleet, &gateway, store, out)?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The admin token, from its file or the environment.
fn admin_token(control_plane: &ControlPlane) -> anyhow::Result<Zeroizing<String>> {
    Ok(match &control_plane.admin_token_file {
        Some(path) => Zeroizing::new(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading the admin token file `{}`", path.display()))?
                .trim()
                .to_owned(),
        ),
        None => Zeroizing::new(std::env::var("KEYSCOPE_ADMIN_TOKEN").context(
            "the admin API needs a token: --admin-token-file FILE or $KEYSCOPE_ADMIN_TOKEN",
        )?),
    })
}

/// Asks the admin API `method PATH`; its JSON answer, or its error named.
fn ask(
    control_plane: &ControlPlane,
    method: &str,
    path: &str,
) -> anyhow::Result<serde_json::Value> {
    let token = admin_token(control_plane)?;
    let url = format!(
        "{}{path}",
        control_plane.control_plane.trim_end_matches('/')
    );
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(std::time::Duration::from_secs(30)))
            .build(),
    );
    let authorization = format!("Bearer {}", token.as_str());
    let request = match method {
        "DELETE" => agent
            .delete(&url)
            .header("authorization", &authorization)
            .call(),
        _ => agent
            .get(&url)
            .header("authorization", &authorization)
            .call(),
    };
    let mut response = request.with_context(|| format!("asking {url}"))?;
    let status = response.status().as_u16();
    // A fleet view at its cap of 100,000 gateways is some 40 MB of JSON.
    let body: serde_json::Value = response
        .body_mut()
        .with_config()
        .limit(256 * 1024 * 1024)
        .read_json()
        .with_context(|| format!("reading the answer of {url}"))?;
    if status != 200 {
        let message = body["error"]["message"].as_str().unwrap_or("no message");
        bail!("{url} answered HTTP {status}: {message}");
    }
    Ok(body)
}

fn forget(id: &str, control_plane: &ControlPlane, out: &Output) -> anyhow::Result<ExitCode> {
    // The id goes into a path: only ids by the one rule.
    keyscope_gateway::check_id(id)?;
    let body = ask(control_plane, "DELETE", &format!("/admin/fleet/{id}"))?;
    out.print(&body, || format!("gateway `{id}` forgotten"))?;
    Ok(ExitCode::SUCCESS)
}

fn status(control_plane: &ControlPlane, out: &Output) -> anyhow::Result<ExitCode> {
    let body = ask(control_plane, "GET", "/admin/fleet")?;
    let behind = body["behind"].as_u64().unwrap_or(0);
    out.print(&body, || {
        let mut text = format!(
            "published revision {}\n{:<32} {:>9}  {:<8} {:<10} {:>12}\n",
            body["revision"], "GATEWAY", "REVISION", "STATE", "CREDENTIAL", "LAST SEEN"
        );
        for gateway in body["gateways"].as_array().into_iter().flatten() {
            text.push_str(&format!(
                "{:<32} {:>9}  {:<8} {:<10} {:>10}ms ago\n",
                gateway["id"].as_str().unwrap_or("?"),
                gateway["revision"],
                if gateway["gone"] == true {
                    "gone"
                } else if gateway["current"] == true {
                    "current"
                } else {
                    "behind"
                },
                gateway["credential"].as_str().unwrap_or("?"),
                gateway["seen_ago_ms"],
            ));
        }
        let count = body["gateways"].as_array().map_or(0, Vec::len);
        text.push_str(&if behind == 0 {
            format!("all {count} gateways hold the published state")
        } else {
            format!("{behind} of {count} gateways are behind")
        });
        for warning in body["warnings"].as_array().into_iter().flatten() {
            text.push_str(&format!("\nwarning: {}", warning.as_str().unwrap_or("?")));
        }
        text
    })?;
    Ok(if behind == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::EXIT_DENY)
    })
}
