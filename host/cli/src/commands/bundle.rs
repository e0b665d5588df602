//! `keyscope bundle ...`: signing keys and static bundles for a fleet of
//! gateways (docs/fleet.md).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Subcommand;
use keyscope_bundle::Publisher;
use keyscope_bundle::keys;
use keyscope_store::{AnyStore as Store, Location, Store as _};
use serde::Serialize;

use super::output::{self, Output};

/// The file a static bundle directory serves.
pub const BUNDLE_FILE: &str = "bundle.ksb";

#[derive(Debug, Subcommand)]
pub enum BundleCommand {
    /// Make an Ed25519 signing key pair: the private key to FILE (mode
    /// 0600, never overwritten), the public key, for gateways, to stdout.
    Keygen {
        /// The private key file to create.
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: PathBuf,
    },
    /// Write a signed full bundle of the store's current state to
    /// DIR/bundle.ksb, for any static HTTP server or object store to serve.
    Build {
        /// The signing key (`keyscope bundle keygen`).
        #[arg(long, value_name = "FILE")]
        signing_key: PathBuf,
        /// The policy component gateways are to run (default: embedded).
        #[arg(long, value_name = "FILE")]
        policy: Option<PathBuf>,
        /// The directory to write bundle.ksb into (created if missing).
        #[arg(short = 'o', long = "output", value_name = "DIR")]
        output: PathBuf,
        /// How long its signature stays good (`90s`, `1h`, `7d`): gateways
        /// refuse it after, and one that holds nothing newer says it is
        /// stale. Build it again before then.
        #[arg(long, value_name = "DURATION", default_value = "1h",
              value_parser = parse_lifetime_ms)]
        expires_in: u64,
    },
}

/// A signature's lifetime: a duration that is not zero.
fn parse_lifetime_ms(text: &str) -> Result<u64, String> {
    match keyscope_runtime::time::parse_duration_ms(text)? {
        0 => {
            Err("a bundle that expires at once is never accepted; give a positive duration".into())
        }
        ms => Ok(ms),
    }
}

#[derive(Serialize)]
struct KeyMade<'a> {
    public_key: String,
    key_id: String,
    private_key_file: &'a Path,
}

#[derive(Serialize)]
struct Built {
    path: PathBuf,
    bytes: usize,
    version: u64,
    revision: u64,
    expires_at: String,
    snapshot: String,
    module: String,
    signer: String,
}

pub fn run(command: BundleCommand, store: &Location, out: &Output) -> anyhow::Result<ExitCode> {
    match command {
        BundleCommand::Keygen { output } => {
            let public = keys::generate(&output)?;
            let made = KeyMade {
                public_key: keys::public_key_text(&public),
                key_id: keys::key_id(&public),
                private_key_file: &output,
            };
            out.print(&made, || made.public_key.clone())?;
            out.note(&format!(
                "private key written to {} (mode 0600); give gateways the public key above",
                output.display()
            ));
        }
        BundleCommand::Build {
            signing_key,
            policy,
            output,
            expires_in,
        } => {
            let key = keys::read_signing_key(&signing_key)?;
            let module: Arc<[u8]> = match &policy {
                Some(path) => Arc::from(keyscope_runtime::files::read_regular(
                    path,
                    keyscope_runtime::files::MAX_POLICY_BYTES,
                )?),
                None => Arc::from(keyscope_runtime::component::EMBEDDED_POLICY),
            };
            let held = Store::open_existing(store)?.snapshot_data()?;
            let snapshot = held.data.encode()?;
            // The module and snapshot pass the same checks as a swap before
            // a fleet is handed them.
            keyscope_runtime::swap::LivePolicy::new(
                Some(&module),
                &snapshot,
                keyscope_runtime::swap::LiveOptions::default(),
            )
            .context("the bundle's module and snapshot were refused")?;
            let signer = keys::key_id(&key.verifying_key());
            let mut publisher = Publisher::new(
                key,
                held.revision,
                Arc::from(snapshot),
                Arc::clone(&module),
                std::time::Duration::from_millis(expires_in),
            );
            let full = publisher.full()?;
            std::fs::create_dir_all(&output)
                .with_context(|| format!("creating `{}`", output.display()))?;
            let path = output.join(BUNDLE_FILE);
            output::write_file(&path, &full.bytes)?;
            // Static servers run as another user: the bundle holds no secret.
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644))
                .with_context(|| format!("making `{}` readable", path.display()))?;
            let built = Built {
                path,
                bytes: full.bytes.len(),
                version: publisher.version(),
                revision: held.revision,
                expires_at: keyscope_store::audit::timestamp(publisher.expires_at_ms()),
                snapshot: publisher.snapshot_sha256().to_owned(),
                module: keyscope_bundle::format::sha256_hex(&module),
                signer,
            };
            out.print(&built, || {
                format!(
                    "wrote {} ({} bytes, version {}, revision {}, signed by {}, expires {})\nsnapshot sha256:{}\nmodule sha256:{}",
                    built.path.display(),
                    built.bytes,
                    built.version,
                    built.revision,
                    built.signer,
                    built.expires_at,
                    built.snapshot,
                    built.module
                )
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
