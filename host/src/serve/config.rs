//! `keyscope serve`'s configuration: a TOML file, overridden by flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::ServeError;

/// Everything `keyscope serve` can be told. Every field has a default, so an
/// empty file is a valid configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServeConfig {
    /// The store file: always the global `--store` (or `$KEYSCOPE_STORE`).
    #[serde(skip)]
    pub store: PathBuf,
    /// The HTTP listener: `/v1/check`, nginx `auth_request`, Envoy HTTP
    /// ext_authz, `/healthz`, `/readyz`, `/metrics`.
    pub listen: SocketAddr,
    /// The gRPC listener for Envoy's ext_authz; `None` turns it off.
    pub grpc_listen: Option<SocketAddr>,
    /// The policy component to serve; the embedded one if `None`. SIGHUP
    /// and `POST /admin/policy` reload it from this file.
    pub policy: Option<PathBuf>,
    /// How often the store is checked for changes, in milliseconds.
    pub poll_ms: u64,
    /// Async worker threads; the number of cores if `None`.
    pub workers: Option<usize>,
    /// Where decision logs go: a file, `-` for stdout, or nowhere if `None`.
    pub decision_log: Option<PathBuf>,
    /// How requests carry the key and where keyscope puts what it decided.
    pub headers: HeaderConfig,
    /// The Envoy HTTP ext_authz path prefix: a check of `GET /a/b` arrives
    /// as `GET {prefix}/a/b`.
    pub envoy_path_prefix: String,
    /// Limits on what clients may send.
    pub limits: RequestLimits,
    /// The admin API; off unless `listen` is set.
    pub admin: AdminConfig,
}

/// Header names.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HeaderConfig {
    /// The header that carries the API key (`Authorization: Bearer` is
    /// accepted too).
    pub api_key: String,
    /// Set on an allowed request to the key's id.
    pub key_id: String,
    /// Set on an allowed request to the key's scope id.
    pub scope_id: String,
}

/// Limits on requests, so slow or oversized clients cannot hold the server.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RequestLimits {
    /// The most bytes of request headers (HTTP/1), and of a gRPC message.
    pub max_header_bytes: usize,
    /// The most bytes of a `/v1/check` or admin request body.
    pub max_body_bytes: usize,
    /// How long a client may take to send its request headers, in ms.
    pub header_timeout_ms: u64,
    /// How long a whole request may take, in ms.
    pub request_timeout_ms: u64,
    /// How long shutdown waits for in-flight requests, in ms.
    pub drain_timeout_ms: u64,
}

/// The admin API.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Its listener; the admin API is off if `None`. Loopback is advised.
    pub listen: Option<SocketAddr>,
    /// A file holding the admin token. Its SHA-256 replaces the stored one.
    /// Without it, the stored token is used, or a new one is generated and
    /// printed once to stderr.
    pub token_file: Option<PathBuf>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            store: PathBuf::from("keyscope.db"),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            grpc_listen: None,
            policy: None,
            poll_ms: 100,
            workers: None,
            decision_log: None,
            headers: HeaderConfig::default(),
            envoy_path_prefix: "/ext_authz".to_owned(),
            limits: RequestLimits::default(),
            admin: AdminConfig::default(),
        }
    }
}

impl Default for HeaderConfig {
    fn default() -> Self {
        Self {
            api_key: "x-api-key".to_owned(),
            key_id: "x-keyscope-key-id".to_owned(),
            scope_id: "x-keyscope-scope-id".to_owned(),
        }
    }
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self {
            max_header_bytes: 16 * 1024,
            max_body_bytes: 16 * 1024,
            header_timeout_ms: 5_000,
            request_timeout_ms: 10_000,
            drain_timeout_ms: 10_000,
        }
    }
}

impl RequestLimits {
    pub(super) fn header_timeout(&self) -> Duration {
        Duration::from_millis(self.header_timeout_ms)
    }

    pub(super) fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    pub(super) fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.drain_timeout_ms)
    }
}

impl ServeConfig {
    /// Reads a TOML configuration file.
    pub fn from_file(path: &Path) -> Result<Self, ServeError> {
        let text = std::fs::read_to_string(path).map_err(|source| ServeError::Io {
            what: format!("reading config `{}`", path.display()),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ServeError::Config {
            path: path.to_owned(),
            why: e.to_string(),
        })
    }

    /// Checks what serde cannot: header names are valid and lower case, and
    /// the prefix is a path.
    pub fn validate(&self) -> Result<(), ServeError> {
        let bad = |why: String| Err(ServeError::Invalid(why));
        for (what, name) in [
            ("headers.api_key", &self.headers.api_key),
            ("headers.key_id", &self.headers.key_id),
            ("headers.scope_id", &self.headers.scope_id),
        ] {
            if axum::http::HeaderName::from_bytes(name.as_bytes()).is_err()
                || name.bytes().any(|b| b.is_ascii_uppercase())
            {
                return bad(format!(
                    "{what} `{name}` is not a lower-case HTTP header name"
                ));
            }
        }
        if !self.envoy_path_prefix.starts_with('/') || self.envoy_path_prefix.ends_with('/') {
            return bad(format!(
                "envoy_path_prefix `{}` must start with `/` and not end with one",
                self.envoy_path_prefix
            ));
        }
        if self.workers == Some(0) {
            return bad("workers must be at least 1".to_owned());
        }
        if self.poll_ms == 0 {
            return bad("poll_ms must be at least 1".to_owned());
        }
        Ok(())
    }

    pub(super) fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_ms)
    }
}
