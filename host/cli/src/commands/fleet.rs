//! `keyscope fleet status`: which gateways hold the control plane's
//! current state, asked of its admin API.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use zeroize::Zeroizing;

use super::output::Output;

#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// List the gateways a control plane has seen, their revision and when
    /// each last polled. Exits 0 when every gateway holds the published
    /// state, 1 when one is behind.
    Status {
        /// The control plane's admin API, as http://HOST:PORT.
        #[arg(long, value_name = "URL", env = "KEYSCOPE_CONTROL_PLANE")]
        control_plane: String,
        /// A file holding the admin token (else $KEYSCOPE_ADMIN_TOKEN).
        #[arg(long, value_name = "FILE")]
        admin_token_file: Option<PathBuf>,
    },
}

pub fn run(command: FleetCommand, out: &Output) -> anyhow::Result<ExitCode> {
    let FleetCommand::Status {
        control_plane,
        admin_token_file,
    } = command;
    let token = match admin_token_file {
        Some(path) => Zeroizing::new(
            std::fs::read_to_string(&path)
                .with_context(|| format!("reading the admin token file `{}`", path.display()))?
                .trim()
                .to_owned(),
        ),
        None => Zeroizing::new(std::env::var("KEYSCOPE_ADMIN_TOKEN").context(
            "the admin API needs a token: --admin-token-file FILE or $KEYSCOPE_ADMIN_TOKEN",
        )?),
    };
    let url = format!("{}/admin/fleet", control_plane.trim_end_matches('/'));
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(std::time::Duration::from_secs(30)))
            .build(),
    );
    let mut response = agent
        .get(&url)
        .header("authorization", format!("Bearer {}", token.as_str()))
        .call()
        .with_context(|| format!("asking {url}"))?;
    let status = response.status().as_u16();
    let body: serde_json::Value = response
        .body_mut()
        .read_json()
        .with_context(|| format!("reading the answer of {url}"))?;
    if status != 200 {
        let message = body["error"]["message"].as_str().unwrap_or("no message");
        bail!("{url} answered HTTP {status}: {message}");
    }
    let behind = body["behind"].as_u64().unwrap_or(0);
    out.print(&body, || {
        let mut text = format!(
            "published revision {}\n{:<32} {:>9}  {:<8} {:>12}\n",
            body["revision"], "GATEWAY", "REVISION", "STATE", "LAST SEEN"
        );
        for gateway in body["gateways"].as_array().into_iter().flatten() {
            text.push_str(&format!(
                "{:<32} {:>9}  {:<8} {:>10}ms ago\n",
                gateway["id"].as_str().unwrap_or("?"),
                gateway["revision"],
                if gateway["current"] == true {
                    "current"
                } else {
                    "behind"
                },
                gateway["seen_ago_ms"],
            ));
        }
        let count = body["gateways"].as_array().map_or(0, Vec::len);
        text.push_str(&if behind == 0 {
            format!("all {count} gateways hold the published state")
        } else {
            format!("{behind} of {count} gateways are behind")
        });
        text
    })?;
    Ok(if behind == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::EXIT_DENY)
    })
}
