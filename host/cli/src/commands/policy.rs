//! `keyscope policy ...`

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;
use keyscope_runtime::{CaseFile, Limits, PolicyComponent, PolicyEngine, SelfTest, SwapError};

use super::EXIT_DENY;
use super::output::{self, Output};

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Show a component's size, digest, exports and imports (always none).
    Info {
        /// The component to inspect; the embedded one if absent.
        #[arg(long, value_name = "FILE")]
        policy: Option<PathBuf>,
    },
    /// Write the embedded component to a file, to embed in another host.
    Export {
        /// Where to write it (atomically; a regular file or a new path), or
        /// - for stdout.
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: PathBuf,
    },
    /// Run every step of a swap on a module without going live: compile,
    /// validate, instantiate, load a snapshot, and the self-test (keyscope's
    /// golden cases plus yours). Exit 0 if it would go live, 1 if not.
    Check {
        /// The component to check.
        policy: PathBuf,
        /// A case file (the format of tests/fixtures/golden); repeatable.
        #[arg(long, value_name = "FILE")]
        cases: Vec<PathBuf>,
        /// Also load this snapshot.
        #[arg(long, value_name = "FILE")]
        snapshot: Option<PathBuf>,
        /// Skip keyscope's golden cases (for a module that decides
        /// differently on purpose; bring your own cases).
        #[arg(long)]
        no_golden: bool,
    },
}

pub fn run(command: PolicyCommand, out: &Output) -> anyhow::Result<ExitCode> {
    match command {
        PolicyCommand::Info { policy } => info(policy, out),
        PolicyCommand::Export { output } => {
            output::write_file(&output, keyscope_runtime::EMBEDDED_POLICY)?;
            if output == Path::new("-") {
                return Ok(ExitCode::SUCCESS);
            }
            let engine = PolicyEngine::new()?;
            let info = PolicyComponent::embedded(&engine)?.info().clone();
            out.print(&info, || {
                format!(
                    "wrote {} ({} bytes, sha256:{})",
                    output.display(),
                    info.size,
                    info.digest
                )
            })?;
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Check {
            policy,
            cases,
            snapshot,
            no_golden,
        } => check(&policy, &cases, snapshot.as_deref(), no_golden, out),
    }
}

fn check(
    policy: &Path,
    cases: &[PathBuf],
    snapshot: Option<&Path>,
    no_golden: bool,
    out: &Output,
) -> anyhow::Result<ExitCode> {
    let module =
        keyscope_runtime::files::read_regular(policy, keyscope_runtime::files::MAX_POLICY_BYTES)?;
    let snapshot = snapshot
        .map(keyscope_runtime::files::read_snapshot)
        .transpose()?;
    let cases = cases
        .iter()
        .map(|path| {
            let text =
                keyscope_runtime::files::read_text(path, keyscope_runtime::files::MAX_TEXT_BYTES)
                    .with_context(|| format!("reading cases `{}`", path.display()))?;
            Ok(CaseFile::parse(&path.display().to_string(), &text)?)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let self_test = SelfTest {
        golden: !no_golden,
        cases,
    };
    match keyscope_runtime::swap::check(
        &module,
        snapshot.as_deref(),
        &self_test,
        &Limits::default(),
    ) {
        Ok(report) => {
            out.print(&report, || {
                format!(
                    "ok: `{}` (sha256:{}) compiles, exports {}, imports nothing, \
                     {}and passes {} self-test case(s)",
                    policy.display(),
                    report.policy.digest,
                    report.policy.interface,
                    report
                        .snapshot_digest
                        .as_ref()
                        .map(|d| format!("loads snapshot sha256:{d}, "))
                        .unwrap_or_default(),
                    report.cases
                )
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Err(error @ SwapError::Refused { .. }) => {
            let message = format!("`{}` {error}", policy.display());
            out.print(
                &serde_json::json!({ "ok": false, "error": message }),
                || format!("check failed: {message}"),
            )?;
            Ok(ExitCode::from(EXIT_DENY))
        }
        Err(error) => Err(error.into()),
    }
}

fn info(policy: Option<PathBuf>, out: &Output) -> anyhow::Result<ExitCode> {
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
