//! `keyscope policy ...`

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;
use keyscope::{PolicyComponent, PolicyEngine};

use super::output::Output;

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Show a component's size, digest, exports and imports (always none).
    Info {
        /// The component to inspect; the embedded one if absent.
        #[arg(long, value_name = "FILE")]
        policy: Option<PathBuf>,
    },
}

pub fn run(command: PolicyCommand, out: &Output) -> anyhow::Result<ExitCode> {
    let PolicyCommand::Info { policy } = command;
    let engine = PolicyEngine::new()?;
    let component = match &policy {
        Some(path) => PolicyComponent::from_file(&engine, path)
            .with_context(|| format!("loading policy `{}`", path.display()))?,
        None => PolicyComponent::embedded(&engine)?,
    };
    let info = component.info();
    out.print(info, || {
        let source = policy.as_ref().map_or_else(
            || "(embedded)".to_owned(),
            |path| path.display().to_string(),
        );
        let imports = if info.imports.is_empty() {
            "none".to_owned()
        } else {
            info.imports.join(", ")
        };
        format!(
            "policy     {source}\nworld      {}\ninterface  {}\nsize       {} bytes\ndigest     sha256:{}\nexports    {}\nimports    {imports}",
            info.world,
            info.interface,
            info.size,
            info.digest,
            info.exports.join(", ")
        )
    })?;
    Ok(ExitCode::SUCCESS)
}
