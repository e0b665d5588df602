//! Builds the default policy component and embeds it in the host.
//!
//! 1. `policy-guest` is built for `wasm32-unknown-unknown` by a nested cargo
//!    run with its own target dir and a cleaned environment (as wasmtime's
//!    test-programs crate does), installing the target with rustup if needed.
//! 2. `wit-component` turns the core module into a component.
//!
//! `KEYSCOPE_POLICY_WASM=path/to/component.wasm` skips both and embeds a
//! prebuilt component instead.
//!
//! The same way, it builds the hostile test fixtures of
//! `tests/hostile-policy` (one component per misbehaviour) into `OUT_DIR`,
//! for the tests to load; the binary does not embed them.

use std::env;
use std::error::Error;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-unknown-unknown";

/// The behaviours of `keyscope-hostile-policy`, one component each.
const HOSTILE: &[&str] = &["loop", "grow", "trap", "allow-all", "old-reader"];

type BuildResult<T> = Result<T, Box<dyn Error>>;

fn main() -> BuildResult<()> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest_dir
        .parent()
        .ok_or("the host crate has no parent directory")?
        .to_path_buf();
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let out = out_dir.join("keyscope_policy.component.wasm");

    println!("cargo:rerun-if-env-changed=KEYSCOPE_POLICY_WASM");
    println!(
        "cargo:rustc-env=KEYSCOPE_POLICY_COMPONENT={}",
        out.display()
    );

    for watched in [
        "wit",
        "policy-guest",
        "tests/hostile-policy",
        "Cargo.lock",
        ".cargo/config.toml",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    let guests = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("policy-guest");

    if let Some(prebuilt) = env::var_os("KEYSCOPE_POLICY_WASM") {
        let prebuilt = PathBuf::from(prebuilt);
        println!("cargo:rerun-if-changed={}", prebuilt.display());
        fs::copy(&prebuilt, &out)
            .map_err(|e| format!("KEYSCOPE_POLICY_WASM=`{}`: {e}", prebuilt.display()))?;
        // Without a wasm toolchain the hostile fixtures cannot be built; the
        // tests that need them say so.
        if let Err(e) = build_hostile(&root, &guests, &out_dir) {
            println!("cargo:warning=hostile test fixtures not built: {e}");
        }
        return Ok(());
    }

    ensure_target()?;
    let core = build_guest(&root, &guests, "keyscope-policy", None)?;
    encode(&core, &out)?;
    build_hostile(&root, &guests, &out_dir)
}

fn build_hostile(root: &Path, guests: &Path, out_dir: &Path) -> BuildResult<()> {
    for behaviour in HOSTILE {
        let core = build_guest(root, guests, "keyscope-hostile-policy", Some(behaviour))?;
        encode(&core, &out_dir.join(format!("hostile-{behaviour}.wasm")))?;
    }
    Ok(())
}

/// Turns a core module carrying its WIT in a custom section into a component.
fn encode(core: &Path, out: &Path) -> BuildResult<()> {
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
fn ensure_target() -> BuildResult<()> {
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
fn build_guest(
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
