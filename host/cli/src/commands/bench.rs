//! `keyscope bench`: measure the decision paths on this machine.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use keyscope_runtime::{PolicyComponent, PolicyEngine};

use super::output::Output;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Keys in the synthetic snapshot.
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// Seconds to measure each path.
    #[arg(long, default_value_t = 1.0)]
    seconds: f64,
}

pub fn run(args: BenchArgs, out: &Output) -> anyhow::Result<ExitCode> {
    if !(args.seconds.is_finite() && args.seconds > 0.0) {
        anyhow::bail!("--seconds must be a positive number");
    }
    let engine = PolicyEngine::new()?;
    let component = PolicyComponent::embedded(&engine)?;
    out.note(&format!(
        "measuring {} s per path on a synthetic snapshot of {} keys...",
        args.seconds, args.keys
    ));
    let figures =
        keyscope_runtime::bench::run(&component, args.keys, Duration::from_secs_f64(args.seconds))?;
    out.print(&figures, || {
        let mut text = format!(
            "{:<22} {:>14} {:>12} {:>12}",
            "path", "decisions/s", "median", "p99"
        );
        for f in &figures {
            text.push_str(&format!(
                "\n{:<22} {:>14.0} {:>9.0} ns {:>9.0} ns",
                f.path, f.decisions_per_second, f.median_ns, f.p99_ns
            ));
        }
        text
    })?;
    Ok(ExitCode::SUCCESS)
}
