//! Builds the hostile policy components of `tests/hostile-policy`, one per
//! misbehaviour, into `OUT_DIR`, for the tests only: this crate is a
//! dev-dependency, so a build of the product never compiles them (as
//! wasmtime's `test-programs-artifacts`).

#[path = "../../host/runtime/build/guest.rs"]
mod guest;

use std::env;
use std::path::PathBuf;

use guest::BuildResult;

/// The behaviours of `keyscope-hostile-policy`, one component each.
const HOSTILE: &[&str] = &["loop", "grow", "trap", "allow-all", "old-reader"];

fn main() -> BuildResult<()> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest_dir
        .parent()
        .and_then(|tests| tests.parent())
        .ok_or("tests/artifacts has no workspace root above it")?
        .to_path_buf();
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    for watched in [
        "wit",
        "policy-guest",
        "tests/hostile-policy",
        "host/runtime/build",
        "Cargo.lock",
        ".cargo/config.toml",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    for behaviour in HOSTILE {
        let out = out_dir.join(format!("hostile-{behaviour}.wasm"));
        guest::build_component(&root, "keyscope-hostile-policy", Some(behaviour), &out)?;
    }
    Ok(())
}
