//! `keyscope conformance`: run the conformance suite in the Rust host.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;
use clap::Args;
use keyscope_runtime::conformance::{self, Suite};
use keyscope_runtime::{Limits, PolicyComponent, PolicyEngine, Request};
use serde::Serialize;

use super::EXIT_DENY;
use super::output::Output;

#[derive(Debug, Args)]
pub struct ConformanceArgs {
    /// The suite (conformance/suite.json).
    #[arg(long, value_name = "FILE", default_value = "conformance/suite.json")]
    suite: PathBuf,
    /// The component to check; the embedded one if absent.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Also time this many decisions of the suite's first allowed case.
    #[arg(long, value_name = "N")]
    bench: Option<u32>,
}

#[derive(Serialize)]
struct Summary {
    host: &'static str,
    passed: usize,
    failed: usize,
    ns_per_decision: Option<f64>,
}

pub fn run(args: ConformanceArgs, out: &Output) -> anyhow::Result<ExitCode> {
    let text =
        keyscope_runtime::files::read_text(&args.suite, keyscope_runtime::files::MAX_TEXT_BYTES)?;
    let suite: Suite = serde_json::from_str(&text)
        .with_context(|| format!("`{}` is not a conformance suite", args.suite.display()))?;
    let engine = PolicyEngine::new()?;
    let component = match &args.policy {
        Some(path) => PolicyComponent::from_file(&engine, path)?,
        None => PolicyComponent::embedded(&engine)?,
    };
    let report = conformance::run(&suite, &component)?;
    for failure in &report.failed {
        eprintln!("FAIL {failure}");
    }
    let ns_per_decision = args
        .bench
        .map(|n| bench(&suite, &component, n))
        .transpose()?;
    let summary = Summary {
        host: "rust (wasmtime)",
        passed: report.passed,
        failed: report.failed.len(),
        ns_per_decision,
    };
    out.print(&summary, || {
        let mut text = format!("{} passed, {} failed", summary.passed, summary.failed);
        if let Some(ns) = ns_per_decision {
            text = format!("rust: {ns:.0} ns per decision\n{text}");
        }
        text
    })?;
    Ok(if report.failed.is_empty() && report.passed > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_DENY)
    })
}

/// Times `n` decisions of the first allowed case, on one reused instance.
fn bench(suite: &Suite, component: &PolicyComponent, n: u32) -> anyhow::Result<f64> {
    let (group, case) = suite
        .groups
        .iter()
        .flat_map(|group| group.cases.iter().map(move |case| (group, case)))
        .find(|(_, case)| case.expect["allow"] == true)
        .context("the suite has no allowed case to time")?;
    let mut instance = component.instantiate(Limits::default())?;
    let snapshot = group
        .snapshot
        .as_deref()
        .context("that case has no snapshot")?;
    instance.load_snapshot(&hex::decode(snapshot)?)?;
    let request = Request {
        credential: keyscope_runtime::keys::credential(case.key.as_deref()),
        app: &case.app,
        op: &case.op,
        now: case.now,
    };
    let started = Instant::now();
    for _ in 0..n {
        std::hint::black_box(instance.evaluate(std::hint::black_box(&request)));
    }
    Ok(started.elapsed().as_nanos() as f64 / f64::from(n.max(1)))
}
