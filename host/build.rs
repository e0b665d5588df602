//! Builds the default policy component and embeds it in the host.
//!
//! 1. `policy-guest` is built for `wasm32-unknown-unknown` by a nested cargo
//!    run with its own target dir and a cleaned environment (as wasmtime's
//!    test-programs crate does), installing the target with rustup if needed.
//! 2. `wit-component` turns the core module into a component.
//!
//! `KEYSCOPE_POLICY_WASM=path/to/component.wasm` skips both and embeds a
//! prebuilt component instead.

use std::env;
use std::error::Error;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-unknown-unknown";

type BuildResult<T> = Result<T, Box<dyn Error>>;

fn main() -> BuildResult<()> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest_dir
        .parent()
        .ok_or("the host crate has no parent directory")?
        .to_path_buf();
    let out = PathBuf::from(env::var("OUT_DIR")?).join("keyscope_policy.component.wasm");

    println!("cargo:rerun-if-env-changed=KEYSCOPE_POLICY_WASM");
    println!(
        "cargo:rustc-env=KEYSCOPE_POLICY_COMPONENT={}",
        out.display()
    );

    if let Some(prebuilt) = env::var_os("KEYSCOPE_POLICY_WASM") {
        let prebuilt = PathBuf::from(prebuilt);
        println!("cargo:rerun-if-changed={}", prebuilt.display());
        fs::copy(&prebuilt, &out)
            .map_err(|e| format!("KEYSCOPE_POLICY_WASM=`{}`: {e}", prebuilt.display()))?;
        return Ok(());
    }

    for watched in [
        "wit",
        "policy-guest/src",
        "policy-guest/Cargo.toml",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }

    ensure_target()?;
    let core = build_guest(&root)?;
    let module = fs::read(&core).map_err(|e| format!("reading `{}`: {e}", core.display()))?;
    let component = wit_component::ComponentEncoder::default()
        .validate(true)
        .module(&module)?
        .encode()?;
    fs::write(&out, component)?;
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

/// Builds the guest crate in release mode and returns the core module's path.
fn build_guest(root: &Path) -> BuildResult<PathBuf> {
    let target_dir = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("policy-guest");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args(["build", "--release", "--package", "keyscope-policy"])
        .args(["--target", TARGET])
        .arg("--target-dir")
        .arg(&target_dir);
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
    let output = cmd.output()?;
    if !output.status.success() {
        return Err(format!(
            "building the policy guest failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    Ok(target_dir
        .join(TARGET)
        .join("release")
        .join("keyscope_policy.wasm"))
}
