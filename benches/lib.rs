//! Fixtures shared by the benches: the synthetic world of `keyscope bench`.

use keyscope_policy::SnapshotData;
use keyscope_runtime::KeySecret;

pub use keyscope_runtime::bench::{HELD_SCOPE, SCOPES};

/// A synthetic world and the key we hold in it.
#[derive(Debug)]
pub struct World {
    /// The snapshot's contents.
    pub data: SnapshotData,
    /// The raw key of key 1.
    pub held: KeySecret,
}

/// See [`keyscope_runtime::bench::synthetic_world`].
pub fn world(keys: u64) -> World {
    let (data, held) = keyscope_runtime::bench::synthetic_world(keys);
    World { data, held }
}

/// The ext_authz check the serve load generators send: `GET` of one agent
/// of `acme`, with `key` in `x-api-key`.
pub fn check_request(key: &str) -> envoy_types::pb::envoy::service::auth::v3::CheckRequest {
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
    use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    method: "GET".to_owned(),
                    path: "/api/v2/apps/acme/agents/a1".to_owned(),
                    headers: [("x-api-key".to_owned(), key.to_owned())].into(),
                    ..HttpRequest::default()
                }),
                ..Request::default()
            }),
            ..AttributeContext::default()
        }),
    }
}

/// A throwaway PostgreSQL cluster, the tests' own (`tests/pg.rs`).
#[path = "../tests/pg.rs"]
#[allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "set-up that cannot go on should stop loudly"
)]
pub mod pg;

/// Fills the store at `location` (freshly created) with `keys` keys, 40 to
/// a scope, 20 scopes to an app, written by SQL in one transaction: the
/// store API would take as long as the figures it is here to measure. The
/// digests are random; no secret exists for them.
#[allow(
    clippy::unwrap_used,
    reason = "set-up that cannot go on should stop loudly"
)]
pub fn fill(location: &keyscope_store::Location, keys: u64) {
    let scopes = keys.div_ceil(40).max(1);
    let rows = format!(
        "INSERT INTO scopes (id, app, name, agents, runtime, created_at, updated_at, rev)
             SELECT g, 'app' || (g / 20), 's' || g, 'view', 1,
                    '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z', g
             FROM {series_scopes};
         INSERT INTO keys (id, scope_id, name, digest, prefix, created_at, rev)
             SELECT g, 1 + (g - 1) / 40, 'k' || g, {digest}, 'ks_fill',
                    '2026-01-01T00:00:00.000Z', {scopes} + g
             FROM {series_keys};
         UPDATE revision SET revision = {scopes} + {keys};",
        series_scopes = series(location, scopes),
        series_keys = series(location, keys),
        digest = match location {
            keyscope_store::Location::Sqlite(_) => "randomblob(32)",
            keyscope_store::Location::Postgres(_) => "sha256(int8send(g))",
        },
    );
    match location {
        keyscope_store::Location::Sqlite(path) => {
            let mut conn = rusqlite::Connection::open(path).unwrap();
            let tx = conn.transaction().unwrap();
            tx.execute_batch(&rows).unwrap();
            tx.commit().unwrap();
        }
        keyscope_store::Location::Postgres(_) => {
            let mut client = pg::shared().connect(&database(location));
            let mut tx = client.transaction().unwrap();
            tx.batch_execute("SET search_path TO keyscope").unwrap();
            tx.batch_execute(&rows).unwrap();
            tx.batch_execute(
                "SELECT setval(pg_get_serial_sequence('scopes', 'id'), (SELECT max(id) FROM scopes));
                 SELECT setval(pg_get_serial_sequence('keys', 'id'), (SELECT max(id) FROM keys));
                 ANALYZE;",
            )
            .unwrap();
            tx.commit().unwrap();
        }
    }
}

/// `g` from 1 to `n`, in each backend's SQL.
fn series(location: &keyscope_store::Location, n: u64) -> String {
    match location {
        keyscope_store::Location::Sqlite(_) => format!(
            "(WITH RECURSIVE c(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM c WHERE g < {n}) SELECT g FROM c)"
        ),
        keyscope_store::Location::Postgres(_) => format!("generate_series(1, {n}) AS g"),
    }
}

/// The database name of a PostgreSQL location.
fn database(location: &keyscope_store::Location) -> String {
    location
        .to_string()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Starts the release `keyscope` binary (or `$KEYSCOPE_BIN`) with `args`
/// and `env`, logging at `$KEYSCOPE_LOG` (`warn` by default); returns once
/// it says it is ready, with its `listening` event.
#[allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "set-up that cannot go on should stop loudly"
)]
pub fn start(args: &[&str], env: &[(&str, &str)]) -> (std::process::Child, serde_json::Value) {
    use std::io::BufRead as _;
    let bin = std::env::var("KEYSCOPE_BIN").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../target/release/keyscope").to_owned()
    });
    let mut child = std::process::Command::new(&bin)
        .env(
            "KEYSCOPE_LOG",
            std::env::var("KEYSCOPE_LOG").unwrap_or_else(|_| "warn".to_owned()),
        )
        .env_remove("KEYSCOPE_STORE")
        .envs(env.iter().copied())
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("{bin}: {e}; build it with `cargo build --release -p keyscope`")
        });
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut listening = serde_json::Value::Null;
    let mut line = String::new();
    while stdout.read_line(&mut line).unwrap() > 0 {
        let event: serde_json::Value = serde_json::from_str(&line).unwrap();
        if event["event"] == "listening" {
            listening = event;
        } else if event["event"] == "ready" {
            break;
        }
        line.clear();
    }
    // Keep the pipe open: a server never writes to a closed stdout.
    std::mem::forget(stdout);
    (child, listening)
}

/// A store at `location` filled with `keys` keys ([`fill`]), and `probes`
/// more in scope 1 made through the store, whose secrets we hold: the keys
/// a latency bench revokes.
#[allow(
    clippy::unwrap_used,
    reason = "set-up that cannot go on should stop loudly"
)]
pub fn filled_with_probes(
    location: &keyscope_store::Location,
    keys: u64,
    probes: usize,
) -> (keyscope_store::AnyStore, Vec<keyscope_store::NewKey>) {
    use keyscope_store::{AnyStore, Quotas, ScopeRef, Store as _};
    drop(AnyStore::open(location).unwrap());
    fill(location, keys);
    let mut store = AnyStore::open_existing(location).unwrap();
    store
        .set_quotas(Quotas {
            scopes_per_app: 20,
            keys_per_scope: 10_000,
        })
        .unwrap();
    let probes = (0..probes)
        .map(|i| {
            store
                .create_key(&ScopeRef::Id(1), &format!("probe-{i}"))
                .unwrap()
        })
        .collect();
    (store, probes)
}

/// Whether the server at `http` denies `key` as revoked, asked through
/// `POST /v1/check` as a client would.
#[allow(
    clippy::unwrap_used,
    reason = "a bench whose server stopped answering should stop loudly"
)]
pub fn revoked(agent: &ureq::Agent, http: &str, key: &str) -> bool {
    let body: serde_json::Value = agent
        .post(&format!("http://{http}/v1/check"))
        .send_json(serde_json::json!({"key": key, "app": "app0", "op": "agents.list"}))
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap();
    body["reason"] == "revoked-key"
}

/// A `serve` configuration whose policy instances have room for ten
/// million keys (64 bytes each) and the time to load them.
#[allow(
    clippy::unwrap_used,
    reason = "set-up that cannot go on should stop loudly"
)]
pub fn roomy_config(dir: &std::path::Path) -> std::path::PathBuf {
    let config = dir.join("roomy.toml");
    if !config.exists() {
        std::fs::write(
            &config,
            "[limits]\nmax_policy_memory_mib = 2048\npolicy_load_timeout_ms = 600000\n",
        )
        .unwrap();
    }
    config
}

/// [`roomy_config`]'s limits, for a policy loaded in the bench itself.
pub fn roomy_limits() -> keyscope_runtime::Limits {
    keyscope_runtime::Limits {
        max_memory: 2048 << 20,
        load_timeout: std::time::Duration::from_secs(600),
        ..keyscope_runtime::Limits::default()
    }
}

/// A control plane publishing signed bundles of the SQLite store at `db`,
/// its files (signing key, public key, fleet and admin token `token`) in
/// `dir`: the process, its `listening` event, and the public key file.
#[allow(
    clippy::unwrap_used,
    reason = "set-up that cannot go on should stop loudly"
)]
pub fn control_plane(
    dir: &std::path::Path,
    db: &std::path::Path,
    token: &str,
) -> (std::process::Child, serde_json::Value, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt as _;
    let signing = dir.join("signing.key");
    let public = keyscope_bundle::keys::generate(&signing).unwrap();
    let public_file = dir.join("signing.pub");
    std::fs::write(
        &public_file,
        keyscope_bundle::keys::public_key_text(&public),
    )
    .unwrap();
    let token_file = dir.join("token");
    std::fs::write(&token_file, token).unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let path = |p: &std::path::Path| p.to_str().unwrap().to_owned();
    let (child, listening) = start(
        &[
            "--store",
            &path(db),
            "serve",
            "--config",
            &path(&roomy_config(dir)),
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--admin-token-file",
            &path(&token_file),
            "--bundle-signing-key",
            &path(&signing),
            "--fleet-token-file",
            &path(&token_file),
        ],
        &[],
    );
    (child, listening, public_file)
}
