//! Building a guest crate into a policy component, shared by the build
//! scripts of `host` (the embedded policy) and `tests/artifacts` (the
//! hostile test components), each of which includes this file.
//!
//! The guest is built for `wasm32-unknown-unknown` by a nested cargo run
//! with its own target dir and a cleaned environment (as wasmtime's
//! test-programs crate does), installing the target with rustup if needed;
//! `wit-component` then turns the core module into a component.

use std::env;
use std::error::Error;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const TARGET: &str = "wasm32-unknown-unknown";

pub type BuildResult<T> = Result<T, Box<dyn Error>>;

/// The nested build's target dir: `target/policy-guest` of the workspace.
pub fn guests_dir(root: &Path) -> PathBuf {
    env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("policy-guest")
}

/// Builds `package` (with `feature`, if any) and encodes it as a component
/// at `out`.
pub fn build_component(
    root: &Path,
    package: &str,
    feature: Option<&str>,
    out: &Path,
) -> BuildResult<()> {
    ensure_target()?;
    let core = build_guest(root, &guests_dir(root), package, feature)?;
    encode(&core, out)
}

/// Turns a core module carrying its WIT in a custom section into a component.
pub fn encode(core: &Path, out: &Path) -> BuildResult<()> {
    let module = fs::read(core).map_err(|e| format!("reading `{}`: {e}", core.display()))?;
    let component = wit_component::ComponentEncoder::default()
        .validate(true)
        .module(&module)?
        .encode()?;
    fs::write(out, component)?;
    Ok(())
}

/// Makes sure the wasm target is installed; `RUSTUP_AUTO_INSTALL=0` means a
/// `rust-toolchain.toml` alone would not.
pub fn ensure_target() -> BuildResult<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output();
    match installed {
        Ok(output)
            if String::from_utf8_lossy(&output.stdout)
                .lines()
                .any(|l| l == TARGET) =>
        {
            return Ok(());
        }
        Ok(_) => {}
        // No rustup: the toolchain may still have the target (a distro rustc).
        Err(_) => return Ok(()),
    }
    let status = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "the `{TARGET}` target is missing and `rustup target add {TARGET}` failed; run it by hand"
        )
        .into())
    }
}

/// Builds a guest crate in release mode and returns the core module's path.
pub fn build_guest(
    root: &Path,
    target_dir: &Path,
    package: &str,
    feature: Option<&str>,
) -> BuildResult<PathBuf> {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args(["build", "--release", "--package", package])
        .args(["--target", TARGET])
        .arg("--target-dir")
        .arg(target_dir);
    if let Some(feature) = feature {
        cmd.args(["--features", feature]);
    }
    // The outer build's settings (profile, wrappers such as clippy-driver,
    // flags meant for the host target) must not leak into the guest build.
    for (key, _) in env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        if (key.starts_with("CARGO_") && key != "CARGO_HOME")
            || key.starts_with("RUSTC")
            || key == "RUSTFLAGS"
            || key == "RUSTDOCFLAGS"
        {
            cmd.env_remove(key);
        }
    }
    // Defence in depth: arithmetic that would wrap traps instead, and a trap
    // is a deny (`policy-error`), never a wrong decision.
    cmd.env("CARGO_PROFILE_RELEASE_OVERFLOW_CHECKS", "true");
    let output = cmd.output()?;
    if !output.status.success() {
        return Err(format!(
            "building `{package}` for {TARGET} failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    Ok(target_dir
        .join(TARGET)
        .join("release")
        .join(format!("{}.wasm", package.replace('-', "_"))))
}
