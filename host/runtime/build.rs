//! Builds the default policy component and embeds it in the host: the
//! guest crate `policy-guest`, built and encoded by `build/guest.rs`; and
//! its `floor` build, which decides nothing, for `keyscope bench`.
//!
//! `KEYSCOPE_POLICY_WASM=path/to/component.wasm` skips that and embeds a
//! prebuilt component instead. The hostile test components are built by the
//! dev-only crate `tests/artifacts`, never here.

#[path = "build/guest.rs"]
mod guest;

use std::env;
use std::fs;
use std::path::PathBuf;

use guest::BuildResult;

fn main() -> BuildResult<()> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest_dir
        .parent()
        .and_then(|host| host.parent())
        .ok_or("host/runtime has no workspace root above it")?
        .to_path_buf();
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let out = out_dir.join("keyscope_policy.component.wasm");
    let floor = out_dir.join("keyscope_floor.component.wasm");

    println!("cargo:rerun-if-env-changed=KEYSCOPE_POLICY_WASM");
    println!(
        "cargo:rustc-env=KEYSCOPE_POLICY_COMPONENT={}",
        out.display()
    );
    println!(
        "cargo:rustc-env=KEYSCOPE_FLOOR_COMPONENT={}",
        floor.display()
    );
    for watched in [
        "wit",
        "policy-guest",
        "host/runtime/build",
        "Cargo.lock",
        ".cargo/config.toml",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }

    if let Some(prebuilt) = env::var_os("KEYSCOPE_POLICY_WASM") {
        let prebuilt = PathBuf::from(prebuilt);
        println!("cargo:rerun-if-changed={}", prebuilt.display());
        fs::copy(&prebuilt, &out)
            .map_err(|e| format!("KEYSCOPE_POLICY_WASM=`{}`: {e}", prebuilt.display()))?;
        // No guest build: `keyscope bench` then says it has no floor.
        fs::write(&floor, [])?;
        return Ok(());
    }
    // The floor first: the same crate with its decisions emptied, for
    // `keyscope bench` to measure what wasmtime alone costs a call.
    guest::build_component(&root, "keyscope-policy", Some("floor"), &floor)?;
    guest::build_component(&root, "keyscope-policy", None, &out)
}
