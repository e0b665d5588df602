//! The library's configuration: a small TOML file that names the decision
//! data (a snapshot file, or a fleet's bundle URL and its public key) and
//! optionally a policy module. Relative paths are read from the file's own
//! directory.
//!
//! ```toml
//! snapshot = "snapshot.ks"      # from `keyscope snapshot export`; watched
//! policy = "policy.wasm"        # optional; watched; the embedded one if absent
//! ```
//! or
//! ```toml
//! bundle_url = "https://control-plane:9091/v1/bundle"
//! bundle_public_key = "bundle.pub"
//! bundle_cache = "/var/cache/keyscope"   # optional
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use keyscope_runtime::Limits;
use serde::Deserialize;

use crate::error::EmbedError;

/// The largest configuration file read.
const MAX_CONFIG_BYTES: u64 = 64 * 1024;

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    snapshot: Option<PathBuf>,
    policy: Option<PathBuf>,
    watch_interval_ms: Option<u64>,
    bundle_url: Option<String>,
    bundle_public_key: Option<PathBuf>,
    bundle_next_public_key: Option<PathBuf>,
    bundle_ca: Option<PathBuf>,
    fleet_token_file: Option<PathBuf>,
    bundle_cache: Option<PathBuf>,
    gateway_id: Option<String>,
    bundle_wait_s: Option<u64>,
    bundle_interval_ms: Option<u64>,
    evaluate_timeout_ms: Option<u64>,
    max_memory_mib: Option<usize>,
    max_stale_s: Option<u64>,
    /// Tests only: publish `policy` without its self-test, to prove that a
    /// hostile module forced live is contained.
    #[cfg(feature = "fault-injection")]
    #[serde(default)]
    force_untested_policy: bool,
}

/// Where the decision data comes from.
#[derive(Debug, Clone)]
pub enum DataSource {
    /// A snapshot file (and optionally a module file), watched for changes.
    Files {
        /// The snapshot file.
        snapshot: PathBuf,
        /// The module file; the embedded component if `None`.
        policy: Option<PathBuf>,
        /// How often the files are looked at.
        interval: Duration,
    },
    /// A fleet's signed bundles, which carry the module too.
    Bundle {
        /// The bundle URL: a control plane's `/v1/bundle`, or a static file.
        url: String,
        /// The public key file (`ed25519:<hex>`).
        public_key: PathBuf,
        /// While the signing key is rotated, the next key's public key file.
        next_public_key: Option<PathBuf>,
        /// PEM CAs to trust for `https://`.
        ca: Option<PathBuf>,
        /// The fleet token file (0600).
        token: Option<PathBuf>,
        /// The cache directory.
        cache: Option<PathBuf>,
        /// The id this process reports to the control plane.
        gateway_id: Option<String>,
        /// How long a long poll may wait.
        wait: Duration,
        /// The pause between polls of a static server, and after a failure.
        interval: Duration,
    },
}

/// The library's configuration, checked.
#[derive(Debug, Clone)]
pub struct EmbedConfig {
    /// The decision data.
    pub source: DataSource,
    /// Bounds on every call into the policy, as `keyscope serve` has them.
    pub limits: Limits,
    /// Deny every decision (`stale-policy`) once the data is older than
    /// this; `None`: decide on the last good data (fail static).
    pub max_stale: Option<Duration>,
    /// Tests only: publish the module without its self-test.
    pub force_untested_policy: bool,
}

impl EmbedConfig {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Self, EmbedError> {
        let text = keyscope_runtime::files::read_text(path, MAX_CONFIG_BYTES)?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base).map_err(|why| EmbedError::Config {
            path: path.to_owned(),
            why,
        })
    }

    /// Parses a configuration; relative paths are taken from `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Self, String> {
        let file: ConfigFile = toml::from_str(text).map_err(|error| error.message().to_owned())?;
        let at = |path: PathBuf| base.join(path);
        let ms = |value: Option<u64>, default: u64, name: &str, range: (u64, u64)| {
            let value = value.unwrap_or(default);
            if value < range.0 || value > range.1 {
                return Err(format!(
                    "`{name}` is {value}; it must be from {} to {}",
                    range.0, range.1
                ));
            }
            Ok(Duration::from_millis(value))
        };
        let source = match (file.snapshot, file.bundle_url) {
            (Some(_), Some(_)) => {
                return Err("name either `snapshot` or `bundle_url`, not both".to_owned());
            }
            (None, None) => {
                return Err("name the decision data: `snapshot` (a file from `keyscope snapshot export`) or `bundle_url`".to_owned());
            }
            (Some(snapshot), None) => {
                for (set, name) in [
                    (file.bundle_public_key.is_some(), "bundle_public_key"),
                    (
                        file.bundle_next_public_key.is_some(),
                        "bundle_next_public_key",
                    ),
                    (file.bundle_ca.is_some(), "bundle_ca"),
                    (file.fleet_token_file.is_some(), "fleet_token_file"),
                    (file.bundle_cache.is_some(), "bundle_cache"),
                    (file.gateway_id.is_some(), "gateway_id"),
                    (file.bundle_wait_s.is_some(), "bundle_wait_s"),
                    (file.bundle_interval_ms.is_some(), "bundle_interval_ms"),
                ] {
                    if set {
                        return Err(format!("`{name}` needs `bundle_url`"));
                    }
                }
                DataSource::Files {
                    snapshot: at(snapshot),
                    policy: file.policy.map(at),
                    interval: ms(
                        file.watch_interval_ms,
                        200,
                        "watch_interval_ms",
                        (10, 60_000),
                    )?,
                }
            }
            (None, Some(url)) => {
                if file.policy.is_some() {
                    return Err(
                        "`policy` cannot be set with `bundle_url`: bundles carry the module"
                            .to_owned(),
                    );
                }
                if file.watch_interval_ms.is_some() {
                    return Err(
                        "`watch_interval_ms` is for `snapshot`; bundles use `bundle_interval_ms`"
                            .to_owned(),
                    );
                }
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err("`bundle_url` must be an http:// or https:// URL".to_owned());
                }
                let public_key = file
                    .bundle_public_key
                    .ok_or("`bundle_url` needs `bundle_public_key`, the publisher's key file")?;
                let wait_s = file.bundle_wait_s.unwrap_or(25);
                if wait_s > 55 {
                    return Err(format!(
                        "`bundle_wait_s` is {wait_s}; it must be at most 55"
                    ));
                }
                DataSource::Bundle {
                    url,
                    public_key: at(public_key),
                    next_public_key: file.bundle_next_public_key.map(at),
                    ca: file.bundle_ca.map(at),
                    token: file.fleet_token_file.map(at),
                    cache: file.bundle_cache.map(at),
                    gateway_id: file.gateway_id,
                    wait: Duration::from_secs(wait_s),
                    interval: ms(
                        file.bundle_interval_ms,
                        1000,
                        "bundle_interval_ms",
                        (10, 600_000),
                    )?,
                }
            }
        };
        let defaults = Limits::default();
        let limits = Limits {
            evaluate_timeout: match file.evaluate_timeout_ms {
                None => defaults.evaluate_timeout,
                Some(value) => ms(Some(value), 0, "evaluate_timeout_ms", (1, 10_000))?,
            },
            max_memory: match file.max_memory_mib {
                None => defaults.max_memory,
                Some(mib @ 1..=4096) => mib << 20,
                Some(mib) => {
                    return Err(format!(
                        "`max_memory_mib` is {mib}; it must be from 1 to 4096"
                    ));
                }
            },
            ..defaults
        };
        #[cfg(feature = "fault-injection")]
        let force_untested_policy = file.force_untested_policy;
        #[cfg(not(feature = "fault-injection"))]
        let force_untested_policy = false;
        if force_untested_policy
            && !matches!(
                &source,
                DataSource::Files {
                    policy: Some(_),
                    ..
                }
            )
        {
            return Err("`force_untested_policy` needs `policy`".to_owned());
        }
        let max_stale = match file.max_stale_s {
            None => None,
            Some(seconds @ 1..=31_536_000) => Some(Duration::from_secs(seconds)),
            Some(seconds) => {
                return Err(format!(
                    "`max_stale_s` is {seconds}; it must be from 1 to 31536000 (a year)"
                ));
            }
        };
        Ok(Self {
            source,
            max_stale,
            limits,
            force_untested_policy,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<EmbedConfig, String> {
        EmbedConfig::parse(text, Path::new("/etc/keyscope"))
    }

    #[test]
    fn a_snapshot_file_is_read_from_the_configs_directory() {
        let config = parse("snapshot = \"snapshot.ks\"\n").unwrap();
        let DataSource::Files {
            snapshot,
            policy,
            interval,
        } = config.source
        else {
            panic!("{:?}", config.source);
        };
        assert_eq!(snapshot, Path::new("/etc/keyscope/snapshot.ks"));
        assert_eq!(policy, None);
        assert_eq!(interval, Duration::from_millis(200));
    }

    #[test]
    fn bad_configurations_name_the_problem() {
        for (text, says) in [
            ("", "name the decision data"),
            ("snapshot = \"a\"\nbundle_url = \"http://x\"", "not both"),
            (
                "snapshot = \"a\"\nsnapshots = 1",
                "unknown field `snapshots`",
            ),
            ("snapshot = 7", "invalid type"),
            (
                "snapshot = \"a\"\nwatch_interval_ms = 0",
                "`watch_interval_ms` is 0",
            ),
            (
                "snapshot = \"a\"\nbundle_cache = \"c\"",
                "`bundle_cache` needs `bundle_url`",
            ),
            ("bundle_url = \"http://x\"", "needs `bundle_public_key`"),
            (
                "bundle_url = \"ftp://x\"\nbundle_public_key = \"k\"",
                "http:// or https://",
            ),
            (
                "bundle_url = \"http://x\"\nbundle_public_key = \"k\"\npolicy = \"p\"",
                "bundles carry the module",
            ),
            (
                "snapshot = \"a\"\nmax_memory_mib = 0",
                "`max_memory_mib` is 0",
            ),
            (
                "snapshot = \"a\"\nevaluate_timeout_ms = 0",
                "`evaluate_timeout_ms` is 0",
            ),
        ] {
            let error = parse(text).unwrap_err();
            assert!(error.contains(says), "{text:?}: {error}");
        }
    }
}
