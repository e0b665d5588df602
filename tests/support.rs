//! Shared helpers: running the binary against a temporary store.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use tempfile::TempDir;

/// A temporary directory with a store path in it.
pub struct Sandbox {
    pub dir: TempDir,
}

impl Sandbox {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn store(&self) -> PathBuf {
        self.dir.path().join("keyscope.db")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `keyscope --store <sandbox store> ARGS...`, with no key in the
    /// environment.
    pub fn keyscope<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_keyscope"));
        cmd.env_remove("KEYSCOPE_API_KEY")
            .env_remove("KEYSCOPE_STORE")
            .arg("--store")
            .arg(self.store())
            .args(args);
        cmd
    }

    /// Runs a command that must succeed and returns its stdout as JSON.
    pub fn json<I, S>(&self, args: I) -> serde_json::Value
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let output = self.keyscope(args).arg("--json").assert().success();
        serde_json::from_slice(&output.get_output().stdout).unwrap()
    }

    /// Creates a scope; returns its id.
    pub fn scope(&self, app: &str, name: &str, agents: &str, runtime: &str) -> u64 {
        let scope = self.json([
            "scope",
            "create",
            "--app",
            app,
            "--name",
            name,
            "--agents",
            agents,
            "--runtime",
            runtime,
        ]);
        scope["id"].as_u64().unwrap()
    }

    /// Issues a key; returns (id, secret).
    pub fn key(&self, scope: &str, name: &str) -> (u64, String) {
        let key = self.json(["key", "create", "--scope", scope, "--name", name]);
        (
            key["id"].as_u64().unwrap(),
            key["key"].as_str().unwrap().to_owned(),
        )
    }

    /// Evaluates through the binary with the key on stdin; returns the exit
    /// code and the decision JSON.
    pub fn eval(&self, key: &str, app: &str, op: &str) -> (i32, serde_json::Value) {
        let output = self
            .keyscope(["eval", "--json", "--key-stdin", "--app", app, "--op", op])
            .write_stdin(format!("{key}\n"))
            .output()
            .unwrap();
        let decision = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!(
                "eval printed no decision ({e}); stderr: {}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
        (output.status.code().unwrap(), decision)
    }
}

/// The repository's `tests/fixtures` directory.
pub fn fixtures() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures"))
}

/// A policy fixture from `fixtures/policies/NAME.wat`, as Wasm bytes.
pub fn policy_fixture(name: &str) -> Vec<u8> {
    wat::parse_file(fixtures().join("policies").join(format!("{name}.wat"))).unwrap()
}
