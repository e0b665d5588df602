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
            "{:<32} {:>14} {:>12} {:>12}",
            "path", "decisions/s", "median", "p99"
        );
        for f in &figures.paths {
            text.push_str(&format!(
                "\n{:<32} {:>14.0} {:>9.0} ns {:>9.0} ns",
                f.path, f.decisions_per_second, f.median_ns, f.p99_ns
            ));
        }
        text.push_str(&format!(
            "\n\nkey records read to find a key: {:.2} (interpolation in its page), where a \
             binary search reads {:.0}",
            figures.records_read.interpolation, figures.records_read.binary_search
        ));
        match &figures.against_floor {
            Some(a) => text.push_str(&format!(
                "\n\nthe work the policy adds beyond wasmtime's own floor ({:.0} ns a call):\
                 \ncomponent - floor       {:>9.0} ns   {:.1}x the native rules\
                 \nhost path - floor       {:>9.0} ns   {:.1}x the native host path\
                 \nbatch - floor batch     {:>9.0} ns   {:.1}x the native rules\
                 \nhttp path - http floor  {:>9.0} ns   {:.1}x the native http path \
                 (the http floor: {:.0} ns)",
                a.floor_ns,
                a.component_less_floor_ns,
                a.component_less_floor_vs_native,
                a.host_path_less_floor_ns,
                a.host_path_less_floor_vs_native,
                a.batch_less_floor_ns,
                a.batch_less_floor_vs_native,
                a.http_path_less_floor_ns,
                a.http_path_less_floor_vs_native,
                a.http_floor_ns,
            )),
            None => text.push_str(
                "\n\nno floor: this keyscope embeds a prebuilt policy (KEYSCOPE_POLICY_WASM)",
            ),
        }
        text
    })?;
    Ok(ExitCode::SUCCESS)
}
