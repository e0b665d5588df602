//! `keyscope eval`: decide requests through the policy component.

use std::io::{BufRead as _, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use keyscope_runtime::{
    Decision, DecisionJson, PolicyComponent, PolicyEngine, PolicyInstance, Request, keys,
};
use keyscope_store::AnyStore as Store;
use keyscope_store::Location;
use serde::Deserialize;
use zeroize::Zeroizing;

use super::EXIT_DENY;
use super::output::{self, Output};

/// The most requests sent to the component in one `evaluate-batch` call.
const BATCH_CHUNK: usize = 4096;

/// The fields of a batch line.
const BATCH_FIELDS: &str = r#"{"key","app","op"}"#;

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The application the request addresses.
    #[arg(long, required_unless_present = "batch", conflicts_with = "batch")]
    app: Option<String>,
    /// The operation (agents.list, agents.get, ..., documents.upload).
    #[arg(long, required_unless_present = "batch", conflicts_with = "batch")]
    op: Option<String>,
    /// Read the API key from the first line of stdin (otherwise from
    /// $KEYSCOPE_API_KEY; neither means no key).
    #[arg(long, conflicts_with = "batch")]
    key_stdin: bool,
    /// JSON lines of {"key","app","op"} from FILE, or - for stdin; prints
    /// one decision per line, in order.
    #[arg(long, value_name = "FILE|-")]
    batch: Option<PathBuf>,
    /// Decide against this snapshot file instead of the store.
    #[arg(long, value_name = "FILE")]
    snapshot: Option<PathBuf>,
    /// Use this policy component instead of the embedded one.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
}

/// A policy instance with a snapshot loaded: from `snapshot` if given, else
/// built from the store.
pub fn ready_instance(
    store: &Location,
    policy: Option<&Path>,
    snapshot: Option<&Path>,
) -> anyhow::Result<PolicyInstance> {
    let engine = PolicyEngine::new()?;
    let component = match policy {
        Some(path) => PolicyComponent::from_file(&engine, path)
            .with_context(|| format!("loading policy `{}`", path.display()))?,
        None => PolicyComponent::embedded(&engine)?,
    };
    let bytes = match snapshot {
        Some(path) => keyscope_runtime::files::read_snapshot(path)?,
        None => keyscope_store::snapshot::build(&mut Store::open_existing(store)?)?,
    };
    let mut instance = component.instantiate(keyscope_runtime::Limits::default())?;
    instance
        .load_snapshot(&bytes)
        .with_context(|| match snapshot {
            Some(path) => format!("loading snapshot `{}`", path.display()),
            None => "loading the store's snapshot".to_owned(),
        })?;
    Ok(instance)
}

pub fn run(args: EvalArgs, store: &Location, out: &Output) -> anyhow::Result<ExitCode> {
    if let Some(batch) = &args.batch {
        return run_batch(batch, store, &args);
    }
    let (Some(app), Some(op)) = (&args.app, &args.op) else {
        anyhow::bail!("--app and --op are required");
    };
    let key = read_key(args.key_stdin)?;
    let credential = keys::credential(key.as_deref().map(String::as_str));
    let mut instance = ready_instance(store, args.policy.as_deref(), args.snapshot.as_deref())?;
    let decision = instance.try_evaluate(&Request {
        credential,
        app,
        op,
        now: keyscope_runtime::time::now_ms(),
    });
    let decision = decision.unwrap_or_else(|error| {
        eprintln!("keyscope: policy failed, denying: {error}");
        Decision::deny(keyscope_runtime::Reason::PolicyError)
    });
    out.print(&DecisionJson::from(&decision), || {
        output::decision_text(&decision)
    })?;
    Ok(exit_code(decision.allow))
}

fn read_key(from_stdin: bool) -> anyhow::Result<Option<Zeroizing<String>>> {
    if from_stdin {
        let mut line = Zeroizing::new(String::new());
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the key from stdin")?;
        let key = Zeroizing::new(line.trim().to_owned());
        return Ok((!key.is_empty()).then_some(key));
    }
    Ok(std::env::var("KEYSCOPE_API_KEY")
        .ok()
        .map(Zeroizing::new)
        .filter(|key| !key.is_empty()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchLine {
    #[serde(default)]
    key: Option<Zeroizing<String>>,
    app: String,
    op: String,
}

fn run_batch(source: &Path, store: &Location, args: &EvalArgs) -> anyhow::Result<ExitCode> {
    let mut text = Zeroizing::new(String::new());
    if source == Path::new("-") {
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the batch from stdin")?;
    } else {
        text = Zeroizing::new(
            std::fs::read_to_string(source)
                .with_context(|| format!("reading batch `{}`", source.display()))?,
        );
    }
    // Parse every line before deciding any, so a bad line prints nothing.
    let mut lines = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        // The error names the position, never the line's text: it may hold a key.
        let parsed: BatchLine = keyscope_runtime::json_input::parse(line.as_bytes(), BATCH_FIELDS)
            .map_err(|error| anyhow::anyhow!("batch line {}: {error}", number + 1))?;
        lines.push(parsed);
    }
    let now = keyscope_runtime::time::now_ms();
    let requests: Vec<Request<'_>> = lines
        .iter()
        .map(|line| Request {
            credential: keys::credential(line.key.as_deref().map(String::as_str)),
            app: &line.app,
            op: &line.op,
            now,
        })
        .collect();
    let mut instance = ready_instance(store, args.policy.as_deref(), args.snapshot.as_deref())?;
    let mut stdout = std::io::stdout().lock();
    let mut all_allowed = true;
    for chunk in requests.chunks(BATCH_CHUNK) {
        for decision in instance.evaluate_batch(chunk) {
            all_allowed &= decision.allow;
            let json = serde_json::to_string(&DecisionJson::from(&decision))?;
            writeln!(stdout, "{json}").context("writing to stdout")?;
        }
    }
    Ok(exit_code(all_allowed))
}

fn exit_code(allow: bool) -> ExitCode {
    if allow {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_DENY)
    }
}
