//! `keyscope eval`: decide requests through the policy component.

use std::io::{BufRead as _, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{ArgGroup, Args};
use keyscope_runtime::{
    Decision, DecisionJson, HttpRequest, MatchedRoute, Method, Millis, PolicyComponent,
    PolicyEngine, PolicyInstance, Request, RoutedDecision, keys,
};
use keyscope_store::AnyStore as Store;
use keyscope_store::Location;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::EXIT_DENY;
use super::output::{self, Output};

/// The most requests sent to the component in one `evaluate-batch` call.
const BATCH_CHUNK: usize = 4096;

/// The fields of a batch line.
const BATCH_FIELDS: &str = r#"{"key","app","op","at"?} or {"key","method","path","at"?}"#;

#[derive(Debug, Args)]
#[command(group(
    ArgGroup::new("request").args(["app", "method", "batch"]).required(true)
))]
pub struct EvalArgs {
    /// The application the request addresses.
    #[arg(long, requires = "op", conflicts_with_all = ["batch", "method"])]
    app: Option<String>,
    /// The operation (agents.list, agents.get, ..., documents.upload).
    #[arg(long, requires = "app")]
    op: Option<String>,
    /// An HTTP request's method, routed with --path through the route
    /// table, as nginx's `/auth` and Envoy's doors route it.
    #[arg(long, requires = "path", conflicts_with = "batch")]
    method: Option<String>,
    /// An HTTP request's path, with or without its query
    /// (`/api/v2/apps/acme/agents`).
    #[arg(long, requires = "method")]
    path: Option<String>,
    /// The time the request is judged at: RFC 3339
    /// (`2027-01-01T00:00:00Z`, `2027-01-01T09:00:00.250+09:00`), or a
    /// duration from now (`+30d`, `-1h`). Default: now. (`serve`'s doors
    /// always judge at their own clock.)
    #[arg(long, value_name = "TIME", value_parser = parse_at, allow_hyphen_values = true)]
    at: Option<At>,
    /// Read the API key from the first line of stdin (otherwise from
    /// $KEYSCOPE_API_KEY; neither means no key).
    #[arg(long, conflicts_with = "batch")]
    key_stdin: bool,
    /// JSON lines of {"key","app","op"} or {"key","method","path"}, each
    /// with an optional "at" (as --at takes it; default: --at, or now),
    /// from FILE, or - for stdin; prints one decision per line, in order.
    #[arg(long, value_name = "FILE|-")]
    batch: Option<PathBuf>,
    /// Decide against this snapshot file instead of the store.
    #[arg(long, value_name = "FILE")]
    snapshot: Option<PathBuf>,
    /// Use this policy component instead of the embedded one.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
}

/// When a request is judged: a moment, or an offset from the command's
/// one clock reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    /// Milliseconds since the Unix epoch.
    Exactly(Millis),
    /// Milliseconds from now, either way.
    FromNow(i64),
}

impl At {
    /// The moment, with `now` the command's clock reading.
    fn resolve(self, now: Millis) -> Millis {
        match self {
            Self::Exactly(at) => at,
            Self::FromNow(offset) => now.saturating_add_signed(offset),
        }
    }
}

/// `--at`: RFC 3339, or `+DURATION`/`-DURATION` from now.
fn parse_at(text: &str) -> Result<At, String> {
    let offset = |sign: i64, duration: &str| {
        let ms = keyscope_runtime::time::parse_duration_ms(duration)?;
        i64::try_from(ms)
            .map(|ms| At::FromNow(sign * ms))
            .map_err(|_| format!("`{text}` is too far from now"))
    };
    if let Some(duration) = text.strip_prefix('+') {
        return offset(1, duration);
    }
    if let Some(duration) = text.strip_prefix('-') {
        return offset(-1, duration);
    }
    let stamp: jiff::Timestamp = text.parse().map_err(|_| {
        format!(
            "`{text}` is neither an RFC 3339 time (2027-01-01T00:00:00Z) nor a duration from \
             now (+30d, -1h)"
        )
    })?;
    Millis::try_from(stamp.as_millisecond())
        .map(At::Exactly)
        .map_err(|_| format!("`{text}` is before 1970"))
}

/// What one request asks about: an app's operation, or an HTTP request
/// to route.
#[derive(Debug)]
enum Target {
    Op { app: String, op: String },
    Http { method: String, path: String },
}

impl Target {
    /// App and operation, or method and path, never a mix: the one rule of
    /// the command line and of batch lines.
    fn of(
        app: Option<String>,
        op: Option<String>,
        method: Option<String>,
        path: Option<String>,
    ) -> Option<Self> {
        match (app, op, method, path) {
            (Some(app), Some(op), None, None) => Some(Self::Op { app, op }),
            (None, None, Some(method), Some(path)) => Some(Self::Http { method, path }),
            _ => None,
        }
    }
}

/// A decision as `eval` prints it: with the app and operation an HTTP
/// request was routed to, when it was.
#[derive(Serialize)]
struct EvalJson {
    #[serde(flatten)]
    decision: DecisionJson,
    #[serde(skip_serializing_if = "Option::is_none")]
    app: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    op: Option<String>,
}

impl EvalJson {
    fn new(decision: &Decision, route: Option<&MatchedRoute>) -> Self {
        Self {
            decision: DecisionJson::from(decision),
            app: route.map(|route| route.app.clone()),
            op: route.map(|route| route.op.clone()),
        }
    }
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
    // One clock reading per command: every relative time counts from it.
    let now = keyscope_runtime::time::now_ms();
    if let Some(batch) = &args.batch {
        return run_batch(batch, store, &args, now);
    }
    let Some(target) = Target::of(args.app, args.op, args.method, args.path) else {
        anyhow::bail!("give --app and --op, or --method and --path");
    };
    let at = args.at.map_or(now, |at| at.resolve(now));
    let key = read_key(args.key_stdin)?;
    let credential = keys::credential(key.as_deref().map(String::as_str));
    let mut instance = ready_instance(store, args.policy.as_deref(), args.snapshot.as_deref())?;
    let routed = match &target {
        Target::Op { app, op } => instance
            .try_evaluate(&Request {
                credential,
                app,
                op,
                now: at,
            })
            .map(|decision| RoutedDecision {
                route: None,
                decision,
            }),
        Target::Http { method, path } => instance.try_evaluate_http(&HttpRequest {
            credential,
            method: Method::parse(method),
            path,
            now: at,
        }),
    };
    let RoutedDecision { route, decision } = routed.unwrap_or_else(|error| {
        eprintln!("keyscope: policy failed, denying: {error}");
        RoutedDecision::deny(keyscope_runtime::Reason::PolicyError)
    });
    out.print(&EvalJson::new(&decision, route.as_ref()), || {
        let text = output::decision_text(&decision);
        match (&target, &route) {
            (Target::Http { .. }, Some(route)) => {
                format!(
                    "{text} (routed to app {} operation {})",
                    route.app, route.op
                )
            }
            (Target::Http { .. }, None) => format!("{text} (no route matched)"),
            (Target::Op { .. }, _) => text,
        }
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
    #[serde(default)]
    app: Option<String>,
    #[serde(default)]
    op: Option<String>,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    at: Option<String>,
}

/// A batch line, checked: its key, what it asks about, and when.
struct BatchRequest {
    key: Option<Zeroizing<String>>,
    target: Target,
    at: Millis,
}

impl BatchLine {
    fn check(self, default_at: Millis, now: Millis) -> Result<BatchRequest, String> {
        let target = Target::of(self.app, self.op, self.method, self.path).ok_or_else(|| {
            "give either \"app\" and \"op\", or \"method\" and \"path\", not a mix".to_owned()
        })?;
        let at = match self.at {
            // The error never quotes the value: a line's text may hold a key.
            Some(at) => parse_at(&at)
                .map_err(|_| {
                    "\"at\" is neither an RFC 3339 time (2027-01-01T00:00:00Z) nor a duration \
                     from now (+30d, -1h)"
                        .to_owned()
                })?
                .resolve(now),
            None => default_at,
        };
        Ok(BatchRequest {
            key: self.key,
            target,
            at,
        })
    }
}

fn run_batch(
    source: &Path,
    store: &Location,
    args: &EvalArgs,
    now: Millis,
) -> anyhow::Result<ExitCode> {
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
    let default_at = args.at.map_or(now, |at| at.resolve(now));
    // Parse every line before deciding any, so a bad line prints nothing.
    let mut lines = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        // The error names the position, never the line's text: it may hold a key.
        let parsed: BatchLine = keyscope_runtime::json_input::parse(line.as_bytes(), BATCH_FIELDS)
            .map_err(|error| anyhow::anyhow!("batch line {}: {error}", number + 1))?;
        let checked = parsed
            .check(default_at, now)
            .map_err(|why| anyhow::anyhow!("batch line {}: {why}", number + 1))?;
        lines.push(checked);
    }
    let mut instance = ready_instance(store, args.policy.as_deref(), args.snapshot.as_deref())?;
    // The app-and-operation lines go to the component in batches; each
    // HTTP line is routed on its own.
    let ops: Vec<Request<'_>> = lines
        .iter()
        .filter_map(|line| match &line.target {
            Target::Op { app, op } => Some(Request {
                credential: keys::credential(line.key.as_deref().map(String::as_str)),
                app,
                op,
                now: line.at,
            }),
            Target::Http { .. } => None,
        })
        .collect();
    let mut op_decisions = Vec::with_capacity(ops.len());
    for chunk in ops.chunks(BATCH_CHUNK) {
        op_decisions.extend(instance.evaluate_batch(chunk));
    }
    let mut op_decisions = op_decisions.into_iter();
    let mut stdout = std::io::stdout().lock();
    let mut all_allowed = true;
    for line in &lines {
        let routed = match &line.target {
            Target::Op { .. } => RoutedDecision {
                route: None,
                // One decision per op line, in order: evaluate_batch answers
                // every request, and fails closed.
                decision: op_decisions
                    .next()
                    .unwrap_or(Decision::deny(keyscope_runtime::Reason::PolicyError)),
            },
            Target::Http { method, path } => instance.evaluate_http(&HttpRequest {
                credential: keys::credential(line.key.as_deref().map(String::as_str)),
                method: Method::parse(method),
                path,
                now: line.at,
            }),
        };
        all_allowed &= routed.decision.allow;
        let json = serde_json::to_string(&EvalJson::new(&routed.decision, routed.route.as_ref()))?;
        writeln!(stdout, "{json}").context("writing to stdout")?;
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
