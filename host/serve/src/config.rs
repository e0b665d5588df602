//! `keyscope serve`'s configuration: a TOML file, overridden by flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use keyscope_store::Location;
use serde::Deserialize;

use super::ServeError;

/// Everything `keyscope serve` can be told. Every field has a default, so an
/// empty file is a valid configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServeConfig {
    /// The store: always the global `--store` (or `$KEYSCOPE_STORE`).
    #[serde(skip)]
    pub store: Location,
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
    /// How often counted key uses are written to the store, in
    /// milliseconds: at most one write per key per interval.
    pub usage_flush_ms: u64,
    /// Whether key uses are counted and written to the store (last use,
    /// count). Off, nothing is written: a read-only database role serves.
    pub usage: bool,
    /// Deny every decision (`stale-policy`, 503) once the data is older
    /// than this many seconds: its source (the store, the bundle server)
    /// unreadable, or a gateway's bundle expired, for longer. `None`, the
    /// default: decide on the last good data however old (fail static).
    pub max_stale_s: Option<u64>,
    /// Async worker threads; the number of cores if `None`.
    pub workers: Option<std::num::NonZeroUsize>,
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
    /// Signed bundles: a control plane publishes them, a gateway follows
    /// them instead of a store.
    pub bundles: BundleConfig,
    /// The console's sign-in beside admin tokens.
    pub console: ConsoleConfig,
}

/// `[console]`: how admins sign in to the console besides admin tokens.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsoleConfig {
    /// `[console.oidc]`: sign-in with the company's OpenID provider.
    pub oidc: Option<OidcConfig>,
}

/// `[console.oidc]`: the authorization code flow with PKCE against an
/// OpenID provider, and which of its groups (a claim) hold which role.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The provider's issuer URL; its discovery document is at
    /// `ISSUER/.well-known/openid-configuration`.
    pub issuer: String,
    /// This console's client id at the provider.
    pub client_id: String,
    /// A file holding the client secret, readable by its owner only.
    pub client_secret_file: PathBuf,
    /// Where the provider sends the browser back: this console's
    /// `/sign-in/oidc/callback`, as registered with the provider.
    pub redirect_url: String,
    /// The ID token claim that lists the user's groups (`groups`).
    #[serde(default = "OidcConfig::default_claim")]
    pub claim: String,
    /// Scopes asked for besides `openid` (the claim's scope, `email`).
    #[serde(default = "OidcConfig::default_scopes")]
    pub scopes: Vec<String>,
    /// The button's words: "Sign in with NAME".
    #[serde(default = "OidcConfig::default_name")]
    pub name: String,
    /// A group to the role it holds: `"keyscope-admins" = "admin"`,
    /// `"acme-admins" = "app-admin:acme"`, `"auditors" = "auditor"`.
    pub roles: std::collections::BTreeMap<String, String>,
}

impl OidcConfig {
    fn default_claim() -> String {
        "groups".to_owned()
    }

    fn default_scopes() -> Vec<String> {
        vec!["email".to_owned(), "groups".to_owned()]
    }

    fn default_name() -> String {
        "your identity provider".to_owned()
    }
}

/// Signed bundles for a fleet of gateways (docs/fleet.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BundleConfig {
    /// Control plane: the Ed25519 signing key (`keyscope bundle keygen`).
    /// Bundles are then served at `GET /v1/bundle` on the admin listener.
    pub signing_key: Option<PathBuf>,
    /// A file holding a fleet token, readable by its owner only. A gateway
    /// presents it: its own (`keyscope fleet token create --gateway NAME`),
    /// or the shared one. A control plane also serves bundles to the shared
    /// token in this file (deprecated), besides each gateway's own.
    pub fleet_token_file: Option<PathBuf>,
    /// Gateway: the bundle URL (a control plane's `/v1/bundle`, or a
    /// static file). The server then opens no store.
    pub url: Option<String>,
    /// Gateway: the public key every bundle must be signed by.
    pub public_key: Option<PathBuf>,
    /// Gateway: while the control plane's signing key is rotated, the
    /// next key's public key, trusted beside `public_key`.
    pub next_public_key: Option<PathBuf>,
    /// Gateway: PEM certificates of the CAs an `https://` bundle URL's
    /// server must chain to, instead of the webpki roots (a private CA).
    pub ca: Option<PathBuf>,
    /// Gateway: a directory for the last good bundle, to start from when
    /// the bundle server is down.
    pub cache: Option<PathBuf>,
    /// Gateway: its id in the control plane's fleet view; the host name
    /// and listen port if unset.
    pub gateway_id: Option<String>,
    /// Control plane: how long a bundle's signature stays good, in
    /// seconds (default 3600). The control plane signs its state anew at
    /// half of it while it can read its store; a gateway refuses an
    /// expired bundle and says it is stale once the one it holds expires.
    pub ttl_s: u64,
    /// Gateway: how long a long poll may wait, in seconds. A control
    /// plane answers sooner when a newer state exists, and caps the wait
    /// below its request timeout.
    pub wait_s: u64,
    /// Gateway: the pause between polls of a server that does not
    /// long-poll (a static file), and after a failure, in ms.
    pub interval_ms: u64,
}

impl Default for BundleConfig {
    fn default() -> Self {
        Self {
            signing_key: None,
            fleet_token_file: None,
            url: None,
            public_key: None,
            next_public_key: None,
            ca: None,
            cache: None,
            gateway_id: None,
            ttl_s: 3600,
            wait_s: 25,
            interval_ms: 1000,
        }
    }
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
    /// How long a connection may send nothing before it is closed, in ms,
    /// on every listener. A gRPC peer that answers the server's HTTP/2
    /// keepalive pings is not idle.
    pub idle_timeout_ms: u64,
    /// The HTTP/2 keepalive ping interval on the gRPC listener, in ms; a
    /// peer that does not answer within `idle_timeout_ms` is dropped.
    pub grpc_keepalive_ms: u64,
    /// The most connections open at once on each listener; further clients
    /// wait in the kernel's backlog. If unset, the process's descriptor
    /// limit (less 64 for the store, logs and threads) shared out among the
    /// listeners, and at most 4096 each.
    pub max_connections: Option<usize>,
    /// The largest policy module file `--policy`, SIGHUP and
    /// `POST /admin/policy` will read, in bytes.
    pub max_policy_bytes: u64,
    /// The most linear memory each policy instance may grow to, in MiB (1
    /// to 4096). A snapshot takes 64 bytes a key: raise it above 256 for
    /// worlds of more than about three million keys.
    pub max_policy_memory_mib: usize,
    /// How long a policy instance may take to load a whole snapshot, in ms.
    pub policy_load_timeout_ms: u64,
}

/// The admin API and the console, on one listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Its listener; the admin API is off if `None`. Loopback is advised.
    pub listen: Option<SocketAddr>,
    /// A file holding the admin token. Its SHA-256 replaces the stored one.
    /// Without it, the stored token is used, or a new one is generated and
    /// printed once to stderr.
    pub token_file: Option<PathBuf>,
    /// The console: a session with no request for this many minutes ends.
    pub console_idle_minutes: u64,
    /// The console: a session ends this many hours after sign-in.
    pub console_max_hours: u64,
    /// Whether the console's cookies are marked `Secure` (sent over HTTPS
    /// only). By default they are when the admin listener is beyond
    /// loopback, where it must be behind TLS.
    pub secure_cookies: Option<bool>,
    /// Reverse proxies (CIDRs) whose `X-Forwarded-For` / `Forwarded`
    /// names the client, for the limit on failed authentications; from
    /// anywhere else, the peer is the client.
    pub trusted_proxies: Vec<String>,
    /// Which header the trusted proxies write: `x-forwarded-for` (the
    /// default) or `forwarded` (RFC 7239). Only that one is read: a header
    /// the proxy passes through untouched is the client's own word.
    pub forwarded_header: String,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: None,
            token_file: None,
            console_idle_minutes: 30,
            console_max_hours: 12,
            secure_cookies: None,
            trusted_proxies: Vec::new(),
            forwarded_header: "x-forwarded-for".to_owned(),
        }
    }
}

/// How long a console session may live.
#[derive(Debug, Clone, Copy)]
pub struct ConsoleLifetimes {
    /// Without a request for this long, a session ends.
    pub idle: Duration,
    /// A session ends this long after sign-in, however busy.
    pub max: Duration,
}

impl AdminConfig {
    /// How long console sessions live.
    pub fn console_lifetimes(&self) -> ConsoleLifetimes {
        ConsoleLifetimes {
            idle: Duration::from_secs(self.console_idle_minutes.saturating_mul(60)),
            max: Duration::from_secs(self.console_max_hours.saturating_mul(3600)),
        }
    }

    /// The reverse proxies whose forwarding headers name the client.
    pub fn trusted_proxies(&self) -> Result<crate::client::TrustedProxies, ServeError> {
        crate::client::TrustedProxies::parse(&self.trusted_proxies, &self.forwarded_header)
            .map_err(ServeError::Invalid)
    }

    /// Whether the console's cookies are marked `Secure`.
    pub fn secure_cookies(&self) -> bool {
        self.secure_cookies
            .unwrap_or_else(|| self.listen.is_some_and(|addr| !addr.ip().is_loopback()))
    }
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            store: Location::Sqlite(PathBuf::from("keyscope.db")),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            grpc_listen: None,
            policy: None,
            poll_ms: 100,
            usage_flush_ms: 10_000,
            usage: true,
            max_stale_s: None,
            workers: None,
            decision_log: None,
            headers: HeaderConfig::default(),
            envoy_path_prefix: "/ext_authz".to_owned(),
            limits: RequestLimits::default(),
            admin: AdminConfig::default(),
            bundles: BundleConfig::default(),
            console: ConsoleConfig::default(),
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
            idle_timeout_ms: 60_000,
            grpc_keepalive_ms: 20_000,
            max_connections: None,
            max_policy_bytes: keyscope_runtime::files::MAX_POLICY_BYTES,
            max_policy_memory_mib: keyscope_runtime::Limits::default().max_memory >> 20,
            policy_load_timeout_ms: 10_000,
        }
    }
}

impl RequestLimits {
    pub(super) fn header_timeout(&self) -> Duration {
        Duration::from_millis(self.header_timeout_ms)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    pub(super) fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.drain_timeout_ms)
    }

    pub(super) fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }

    pub(super) fn grpc_keepalive(&self) -> Duration {
        Duration::from_millis(self.grpc_keepalive_ms)
    }

    /// The connection cap of each of `listeners` listeners, given the
    /// process's descriptor limit (`None`: unlimited).
    pub(super) fn connections_per_listener(&self, listeners: usize, nofile: Option<u64>) -> usize {
        const RESERVED: u64 = 64;
        const MOST: u64 = 4096;
        if let Some(max) = self.max_connections {
            return max;
        }
        let listeners = u64::try_from(listeners.max(1)).unwrap_or(u64::MAX);
        let share = nofile.map_or(MOST, |limit| limit.saturating_sub(RESERVED) / listeners);
        usize::try_from(share.clamp(1, MOST)).unwrap_or(1)
    }
}

impl ServeConfig {
    /// Reads a TOML configuration file (a regular file, up to
    /// [`keyscope_runtime::files::MAX_TEXT_BYTES`]).
    pub fn from_file(path: &Path) -> Result<Self, ServeError> {
        let text =
            keyscope_runtime::files::read_text(path, keyscope_runtime::files::MAX_TEXT_BYTES)?;
        // The parser's message and line, never the line's text: a store
        // URL with its password may stand there.
        toml::from_str(&text).map_err(|e: toml::de::Error| {
            let line = e
                .span()
                .map(|span| text[..span.start.min(text.len())].lines().count().max(1));
            ServeError::Config {
                path: path.to_owned(),
                why: match line {
                    Some(line) => format!("line {line}: {}", e.message()),
                    None => e.message().to_owned(),
                },
            }
        })
    }

    /// Checks what serde cannot: header names are valid and lower case, the
    /// prefix is a plain path, and no limit is 0. Every value is checked
    /// here, before anything is bound or loaded.
    pub fn validate(&self) -> Result<(), ServeError> {
        let bad = |why: String| Err(ServeError::Invalid(why));
        self.admin.trusted_proxies()?;
        if self.max_stale_s == Some(0) {
            return bad(
                "max_stale_s is 0: give a number of seconds, or leave it out to fail static"
                    .to_owned(),
            );
        }
        for (what, name) in [
            ("headers.api_key", &self.headers.api_key),
            ("headers.key_id", &self.headers.key_id),
            ("headers.scope_id", &self.headers.scope_id),
        ] {
            if axum::http::HeaderName::from_bytes(name.as_bytes()).is_err()
                || name.bytes().any(|b| b.is_ascii_uppercase())
            {
                return bad(format!(
                    "{what} `{}` is not a lower-case HTTP header name",
                    keyscope_store::printable(name)
                ));
            }
        }
        let prefix = &self.envoy_path_prefix;
        let plain = prefix.strip_prefix('/').is_some_and(|rest| {
            rest.split('/')
                .all(keyscope_policy::routes::is_plain_segment)
        });
        if !plain {
            return bad(format!(
                "envoy_path_prefix `{}` must be `/` and one or more `/`-separated segments of \
                 [A-Za-z0-9._~-] (no `.` or `..`, no trailing `/`), as `/ext_authz`",
                keyscope_store::printable(prefix)
            ));
        }
        let bundles = &self.bundles;
        if let Some(url) = &bundles.url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return bad("bundles.url must be an http:// or https:// URL".to_owned());
            }
            if bundles.public_key.is_none() {
                return bad(
                    "a gateway (--bundle-url) needs the control plane's public key: \
                     --bundle-public-key FILE"
                        .to_owned(),
                );
            }
            if bundles.signing_key.is_some() {
                return bad(
                    "a server either follows bundles (--bundle-url) or signs them \
                     (--bundle-signing-key), not both"
                        .to_owned(),
                );
            }
            if self.policy.is_some() {
                return bad(
                    "a gateway takes its module from its bundles; --policy is for the control plane"
                        .to_owned(),
                );
            }
        } else if bundles.public_key.is_some()
            || bundles.next_public_key.is_some()
            || bundles.cache.is_some()
            || bundles.ca.is_some()
        {
            return bad(
                "--bundle-public-key, --bundle-next-public-key, --bundle-ca and --bundle-cache \
                 need --bundle-url"
                    .to_owned(),
            );
        }
        if bundles.signing_key.is_some() && self.admin.listen.is_none() {
            return bad(
                "bundles are served on the admin listener: --bundle-signing-key needs \
                 --admin-listen"
                    .to_owned(),
            );
        }
        let limits = &self.limits;
        for (what, value) in [
            ("poll_ms", self.poll_ms),
            ("usage_flush_ms", self.usage_flush_ms),
            ("bundles.interval_ms", bundles.interval_ms),
            ("bundles.ttl_s", bundles.ttl_s),
            ("limits.max_header_bytes", limits.max_header_bytes as u64),
            ("limits.max_body_bytes", limits.max_body_bytes as u64),
            ("limits.header_timeout_ms", limits.header_timeout_ms),
            ("limits.request_timeout_ms", limits.request_timeout_ms),
            ("limits.drain_timeout_ms", limits.drain_timeout_ms),
            ("limits.idle_timeout_ms", limits.idle_timeout_ms),
            ("limits.grpc_keepalive_ms", limits.grpc_keepalive_ms),
            (
                "limits.max_connections",
                limits.max_connections.map_or(1, |max| max as u64),
            ),
            ("limits.max_policy_bytes", limits.max_policy_bytes),
            (
                "limits.max_policy_memory_mib",
                limits.max_policy_memory_mib as u64,
            ),
            (
                "limits.policy_load_timeout_ms",
                limits.policy_load_timeout_ms,
            ),
        ] {
            if value == 0 {
                return bad(format!("{what} must be at least 1"));
            }
        }
        if limits.max_policy_memory_mib > 4096 {
            return bad(format!(
                "limits.max_policy_memory_mib is {}; a 32-bit policy cannot grow past 4096",
                limits.max_policy_memory_mib
            ));
        }
        if limits.grpc_keepalive_ms >= limits.idle_timeout_ms {
            return bad(format!(
                "limits.grpc_keepalive_ms ({}) must be less than limits.idle_timeout_ms ({}), \
                 or a live gRPC peer would be dropped as idle",
                limits.grpc_keepalive_ms, limits.idle_timeout_ms
            ));
        }
        Ok(())
    }

    /// The live options every enforcement point starts with.
    pub(super) fn live_options(&self) -> keyscope_runtime::swap::LiveOptions {
        keyscope_runtime::swap::LiveOptions {
            max_stale: self.max_stale_s.map(Duration::from_secs),
            limits: keyscope_runtime::Limits {
                max_memory: self.limits.max_policy_memory_mib << 20,
                load_timeout: Duration::from_millis(self.limits.policy_load_timeout_ms),
                ..keyscope_runtime::Limits::default()
            },
            // A store's changes and a fleet's bundles come as deltas.
            deltas: true,
            ..keyscope_runtime::swap::LiveOptions::default()
        }
    }

    pub(super) fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_ms)
    }

    pub(super) fn usage_interval(&self) -> Duration {
        Duration::from_millis(self.usage_flush_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin(listen: &str, secure_cookies: Option<bool>) -> AdminConfig {
        AdminConfig {
            listen: Some(listen.parse().unwrap()),
            secure_cookies,
            ..AdminConfig::default()
        }
    }

    #[test]
    fn console_cookies_are_secure_beyond_loopback_unless_told() {
        assert!(!admin("127.0.0.1:9292", None).secure_cookies());
        assert!(!admin("[::1]:9292", None).secure_cookies());
        assert!(admin("0.0.0.0:9292", None).secure_cookies());
        assert!(admin("10.0.0.5:9292", None).secure_cookies());
        assert!(admin("127.0.0.1:9292", Some(true)).secure_cookies());
        assert!(!admin("10.0.0.5:9292", Some(false)).secure_cookies());
    }

    #[test]
    fn console_sessions_last_as_configured() {
        let config: ServeConfig =
            toml::from_str("[admin]\nconsole_idle_minutes = 5\nconsole_max_hours = 2\n").unwrap();
        let lifetimes = config.admin.console_lifetimes();
        assert_eq!(lifetimes.idle, Duration::from_secs(300));
        assert_eq!(lifetimes.max, Duration::from_secs(7200));
        let defaults = AdminConfig::default().console_lifetimes();
        assert_eq!(defaults.idle, Duration::from_secs(30 * 60));
        assert_eq!(defaults.max, Duration::from_secs(12 * 3600));
    }
}
