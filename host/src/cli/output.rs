//! Printing: JSON with `--json`, plain text otherwise.

use std::io::Write as _;

use anyhow::Context as _;
use keyscope::{ApiKey, Decision, DecisionJson, Scope};
use serde::Serialize;

/// Where command results go.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    json: bool,
}

impl Output {
    pub fn new(json: bool) -> Self {
        Self { json }
    }

    /// Prints `value` as one line of JSON, or `human()` as text.
    pub fn print<T: Serialize + ?Sized>(
        self,
        value: &T,
        human: impl FnOnce() -> String,
    ) -> anyhow::Result<()> {
        let text = if self.json {
            serde_json::to_string(value).context("encoding JSON output")?
        } else {
            human()
        };
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{text}").context("writing to stdout")?;
        Ok(())
    }

    /// Prints a narration line to stdout in text mode; nothing with `--json`.
    pub fn narrate(self, text: &str) -> anyhow::Result<()> {
        if !self.json {
            writeln!(std::io::stdout().lock(), "{text}").context("writing to stdout")?;
        }
        Ok(())
    }

    /// Prints a narration line to stderr in text mode; nothing with `--json`,
    /// so that stdout stays machine-readable.
    pub fn note(self, text: &str) {
        if !self.json {
            // Narration is best effort: a closed stderr must not fail the command.
            let _ = writeln!(std::io::stderr().lock(), "{text}");
        }
    }
}

pub fn scope_line(scope: &Scope) -> String {
    format!(
        "{:>4}  {:<32}  agents: {:<4}  runtime: {}",
        scope.id,
        scope.path(),
        scope.agents,
        runtime_text(scope)
    )
}

pub fn scope_summary(scope: &Scope) -> String {
    format!(
        "scope {} {} (agents: {}; runtime: {})",
        scope.id,
        scope.path(),
        scope.agents,
        runtime_text(scope)
    )
}

pub fn scope_details(scope: &Scope) -> String {
    format!(
        "scope {}\n  app:        {}\n  name:       {}\n  agents:     {}\n  runtime:    {}\n  created at: {}",
        scope.id,
        scope.app,
        scope.name,
        scope.agents,
        runtime_text(scope),
        scope.created_at
    )
}

fn runtime_text(scope: &Scope) -> String {
    if scope.runtime == keyscope::RuntimeSet::EMPTY {
        "(none)".to_owned()
    } else {
        scope.runtime.to_string()
    }
}

pub fn key_line(key: &ApiKey) -> String {
    let state = match &key.revoked_at {
        Some(at) => format!("revoked {at}"),
        None => "live".to_owned(),
    };
    format!(
        "{:>4}  {:<24}  scope {:<4}  {}…  created {}  {}",
        key.id, key.name, key.scope_id, key.prefix, key.created_at, state
    )
}

pub fn decision_text(decision: &Decision) -> String {
    let json = DecisionJson::from(decision);
    let mut text = format!(
        "{}: {}",
        if decision.allow { "allow" } else { "deny" },
        json.reason
    );
    if let Some(required) = json.required {
        text.push_str(&format!(" (requires {required})"));
    }
    if let (Some(key), Some(scope)) = (decision.key_id, decision.scope_id) {
        text.push_str(&format!(" [key {key}, scope {scope}]"));
    }
    text
}
