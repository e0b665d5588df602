//! A fleet, as real processes: a control plane publishing signed bundles
//! from its store, gateways that follow them with no store at all, and
//! static bundles served by a real nginx. Every refused bundle is counted
//! and changes no decision.

use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use keyscope_bundle::format::{self, Base, Kind, Layout, Manifest, ModulePart, Part};
use keyscope_bundle::keys;
use serde_json::{Value, json};

use crate::support::{Sandbox, Server, http_client, wait_until};

/// A control plane's store and signing key, each gateway's own fleet
/// token, and a shared one (deprecated).
pub(crate) struct Fleet {
    pub(crate) sandbox: Sandbox,
    signing_key: PathBuf,
    pub(crate) public_key: PathBuf,
    /// The shared fleet token's file.
    pub(crate) shared_token: PathBuf,
}

impl Fleet {
    pub(crate) fn new() -> Self {
        let sandbox = Sandbox::new();
        let signing_key = sandbox.path("signing.key");
        let made = sandbox.json(["bundle", "keygen", "-o", signing_key.to_str().unwrap()]);
        let public_key = sandbox.path("signing.pub");
        std::fs::write(&public_key, made["public_key"].as_str().unwrap()).unwrap();
        let shared_token = sandbox.path("shared-fleet-token");
        std::fs::write(&shared_token, "shared-fleet-token-0123456789").unwrap();
        std::fs::set_permissions(&shared_token, std::fs::Permissions::from_mode(0o600)).unwrap();
        Self {
            sandbox,
            signing_key,
            public_key,
            shared_token,
        }
    }

    /// A control plane on the fleet's store: gateways poll with their own
    /// tokens.
    pub(crate) fn control_plane(&self, extra: &[&str]) -> Server {
        let mut args = vec!["--bundle-signing-key", self.signing_key.to_str().unwrap()];
        args.extend_from_slice(extra);
        self.sandbox.serve(&args)
    }

    /// A control plane that also takes the shared token (deprecated).
    pub(crate) fn control_plane_with_shared_token(&self, extra: &[&str]) -> Server {
        let shared = self.shared_token.to_str().unwrap();
        let mut args = vec!["--fleet-token-file", shared];
        args.extend_from_slice(extra);
        self.control_plane(&args)
    }

    /// Gateway `name`'s own fleet token, made by the CLI on first use: its
    /// file (mode 0600), and the token.
    pub(crate) fn own_token(&self, name: &str) -> (PathBuf, String) {
        let file = self.sandbox.path(&format!("fleet-token-{name}"));
        if !file.exists() {
            let made = self
                .sandbox
                .json(["fleet", "token", "create", "--gateway", name]);
            std::fs::write(&file, made["token"].as_str().unwrap()).unwrap();
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let token = std::fs::read_to_string(&file).unwrap();
        (file, token)
    }

    /// A gateway following `url` with its own token, in a sandbox of its
    /// own (no store is opened there), caching in `cache`.
    pub(crate) fn gateway(
        &self,
        url: &str,
        id: &str,
        cache: &Path,
        extra: &[&str],
    ) -> (Sandbox, Server) {
        self.gateway_until(true, url, id, cache, extra)
    }

    /// As [`Fleet::gateway`], returning once it listens: a gateway that
    /// holds no verified state yet, and so has not said `ready`.
    pub(crate) fn gateway_unready(
        &self,
        url: &str,
        id: &str,
        cache: &Path,
        extra: &[&str],
    ) -> (Sandbox, Server) {
        self.gateway_until(false, url, id, cache, extra)
    }

    fn gateway_until(
        &self,
        ready: bool,
        url: &str,
        id: &str,
        cache: &Path,
        extra: &[&str],
    ) -> (Sandbox, Server) {
        let (token, _) = self.own_token(id);
        let sandbox = Sandbox::new();
        let mut args = vec![
            "--bundle-url",
            url,
            "--bundle-public-key",
            self.public_key.to_str().unwrap(),
            "--fleet-token-file",
            token.to_str().unwrap(),
            "--bundle-cache",
            cache.to_str().unwrap(),
            "--gateway-id",
            id,
        ];
        args.extend_from_slice(extra);
        let server = if ready {
            sandbox.serve(&args)
        } else {
            sandbox.serve_listening(&args)
        };
        assert!(!sandbox.store().exists(), "a gateway must not open a store");
        (sandbox, server)
    }
}

fn decide(server: &Server, key: &str) -> Value {
    server.check(&json!({ "key": key, "app": "acme", "op": "agents.list" }))
}

fn allowed(server: &Server, key: &str) -> bool {
    decide(server, key)["allow"] == true
}

fn bundle_status(server: &Server) -> Value {
    http_client()
        .get(server.url("/readyz"))
        .call()
        .unwrap()
        .body_mut()
        .read_json::<Value>()
        .unwrap()["bundle"]
        .clone()
}

fn refused(server: &Server, kind: &str) -> u64 {
    bundle_status(server)["refused"][kind].as_u64().unwrap_or(0)
}

/// `keyscope ARGS --control-plane URL --admin-token-file FILE`, run.
fn fleet_cli(fleet: &Fleet, control_plane: &Server, args: &[&str]) -> std::process::Output {
    fleet
        .sandbox
        .keyscope(args)
        .args([
            "--control-plane",
            &control_plane.admin_url(""),
            "--admin-token-file",
        ])
        .arg(fleet.sandbox.path("admin-token"))
        .output()
        .unwrap()
}

pub(crate) fn fleet_status(fleet: &Fleet, control_plane: &Server) -> (i32, Value) {
    let output = fleet_cli(fleet, control_plane, &["--json", "fleet", "status"]);
    let body = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    (output.status.code().unwrap_or(-1), body)
}

#[test]
fn a_cli_revocation_reaches_three_gateways_as_a_delta_and_fleet_status_shows_it() {
    let fleet = Fleet::new();
    let scope = fleet.sandbox.scope("acme", "s", "view", "run");
    let (key_id, key) = fleet.sandbox.key(&scope.to_string(), "k");
    let (_, other_key) = fleet.sandbox.key(&scope.to_string(), "other");
    let control_plane = fleet.control_plane(&[]);
    let url = control_plane.admin_url("/v1/bundle");
    let caches = fleet.sandbox.path("caches");
    let gateways: Vec<(Sandbox, Server)> = (1..=3)
        .map(|n| fleet.gateway(&url, &format!("gw-{n}"), &caches.join(n.to_string()), &[]))
        .collect();
    for (_, gateway) in &gateways {
        assert!(allowed(gateway, &key), "{}", decide(gateway, &key));
        assert_eq!(bundle_status(gateway)["last_bundle"]["kind"], "full");
    }
    // A fleet token reads bundles and nothing else.
    let (_, fleet_token) = fleet.own_token("gw-1");
    let status = http_client()
        .get(control_plane.admin_url("/admin/fleet"))
        .header("authorization", format!("Bearer {fleet_token}"))
        .call()
        .unwrap()
        .status();
    assert_eq!(status, 401);
    let status = http_client()
        .get(control_plane.admin_url("/v1/bundle"))
        .call()
        .unwrap()
        .status();
    assert_eq!(status, 401);

    fleet
        .sandbox
        .keyscope(["key", "revoke", &key_id.to_string()])
        .assert()
        .success();
    for (_, gateway) in &gateways {
        let took = wait_until(10, "the revocation reaching a gateway", || {
            decide(gateway, &key)["reason"] == "revoked-key"
        });
        eprintln!("gateway: revoked key denied {took:?} after the CLI exited");
        assert!(allowed(gateway, &other_key));
        let status = bundle_status(gateway);
        let last = &status["last_bundle"];
        assert_eq!(last["kind"], "delta", "{status}");
        assert!(last["bytes"].as_u64().unwrap() < 64 * 1024, "{last}");
    }
    // Every gateway reports the new revision on its next poll.
    let mut last = Value::Null;
    wait_until(10, "fleet status showing every gateway current", || {
        let (code, body) = fleet_status(&fleet, &control_plane);
        last = body;
        code == 0
    });
    let gateways_seen = last["gateways"].as_array().unwrap();
    assert_eq!(gateways_seen.len(), 3, "{last}");
    for gateway in gateways_seen {
        assert_eq!(gateway["current"], true, "{last}");
        assert_eq!(gateway["revision"], last["revision"], "{last}");
    }
}

/// A loopback port free now, for a server that must come back on it.
fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

#[test]
fn gateways_decide_on_without_their_control_plane_start_from_cache_and_catch_up() {
    let fleet = Fleet::new();
    let scope = fleet.sandbox.scope("acme", "s", "view", "run");
    let (_, live_key) = fleet.sandbox.key(&scope.to_string(), "live");
    let (first_id, first_key) = fleet.sandbox.key(&scope.to_string(), "first");
    let (second_id, second_key) = fleet.sandbox.key(&scope.to_string(), "second");
    let admin = free_port().to_string();
    let mut control_plane = fleet.control_plane(&["--admin-listen", &admin]);
    let url = control_plane.admin_url("/v1/bundle");
    let caches = fleet.sandbox.path("caches");
    let (_a, steady) = fleet.gateway(&url, "steady", &caches.join("steady"), &[]);
    let (restarted_sandbox, mut restarted) =
        fleet.gateway(&url, "restarted", &caches.join("restarted"), &[]);
    fleet
        .sandbox
        .keyscope(["key", "revoke", &first_id.to_string()])
        .assert()
        .success();
    for gateway in [&steady, &restarted] {
        wait_until(10, "the first revocation reaching a gateway", || {
            !allowed(gateway, &first_key)
        });
    }

    // The control plane dies.
    control_plane.child.kill().unwrap();
    control_plane.child.wait().unwrap();
    for gateway in [&steady, &restarted] {
        assert!(allowed(gateway, &live_key));
        assert!(!allowed(gateway, &first_key));
        assert!(allowed(gateway, &second_key));
    }
    // A gateway restarted meanwhile starts from its cache.
    restarted.stop();
    drop(restarted);
    let restarted = restarted_sandbox.serve(&[
        "--bundle-url",
        &url,
        "--bundle-public-key",
        fleet.public_key.to_str().unwrap(),
        "--fleet-token-file",
        fleet.own_token("restarted").0.to_str().unwrap(),
        "--bundle-cache",
        caches.join("restarted").to_str().unwrap(),
        "--gateway-id",
        "restarted",
    ]);
    let status = bundle_status(&restarted);
    assert_eq!(status["from_cache"], true, "{status}");
    assert_eq!(status["stale"], true, "{status}");
    assert!(status["age_ms"].as_u64().is_some(), "{status}");
    assert!(allowed(&restarted, &live_key));
    assert!(!allowed(&restarted, &first_key));
    // /readyz stays 200: the cached state serves (fail static).
    let ready = http_client().get(restarted.url("/readyz")).call().unwrap();
    assert_eq!(ready.status(), 200);

    // A revocation made while the control plane is down...
    fleet
        .sandbox
        .keyscope(["key", "revoke", &second_id.to_string()])
        .assert()
        .success();
    assert!(allowed(&steady, &second_key));
    // ...reaches every gateway once it is back.
    let _control_plane = fleet.control_plane(&["--admin-listen", &admin]);
    for gateway in [&steady, &restarted] {
        // The new state decides a moment before the status says fresh
        // (a gateway marks itself fresh only once the swap is live): wait
        // for both.
        wait_until(20, "gateways catching up with the control plane", || {
            !allowed(gateway, &second_key) && bundle_status(gateway)["stale"] == false
        });
        assert!(allowed(gateway, &live_key));
    }
}

#[test]
fn a_module_published_through_bundles_reaches_every_gateway() {
    let fleet = Fleet::new();
    let scope = fleet.sandbox.scope("acme", "s", "view", "run");
    let (_, key) = fleet.sandbox.key(&scope.to_string(), "k");
    let control_plane = fleet.control_plane(&[]);
    let url = control_plane.admin_url("/v1/bundle");
    let caches = fleet.sandbox.path("caches");
    let gateways: Vec<(Sandbox, Server)> = ["m1", "m2"]
        .into_iter()
        .map(|id| fleet.gateway(&url, id, &caches.join(id), &[]))
        .collect();
    let twin = crate::swap::twin_module();
    let twin_path = fleet.sandbox.path("twin.wasm");
    std::fs::write(&twin_path, &twin).unwrap();
    let (code, body) =
        control_plane.admin("POST", "/admin/policy", Some(json!({ "path": twin_path })));
    assert_eq!(code, 200, "{body}");
    let digest = format::sha256_hex(&twin);
    for (_, gateway) in &gateways {
        wait_until(10, "the module reaching a gateway", || {
            gateway.ready()["module"] == digest.as_str()
        });
        assert!(allowed(gateway, &key));
    }
}

/// nginx serving `root` as static files, with its own ETags, logging
/// each request's status.
struct StaticServer {
    child: Child,
    addr: SocketAddr,
    https: bool,
    root: PathBuf,
    log: PathBuf,
    published: u64,
}

impl Drop for StaticServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl StaticServer {
    fn start(dir: &Path) -> Self {
        Self::start_with(dir, None)
    }

    /// With `tls`, a directory holding `server.crt` and `server.key`, it
    /// serves https.
    fn start_with(dir: &Path, tls: Option<&Path>) -> Self {
        Self::start_serving(dir, tls, "")
    }

    /// A reverse proxy to `upstream` (`HOST:PORT`), as one is deployed in
    /// front of the admin listener: it appends the client's address to
    /// `X-Forwarded-For`, and lets long polls wait.
    fn proxy(dir: &Path, upstream: &str) -> Self {
        let location = format!(
            "proxy_pass http://{upstream}; proxy_http_version 1.1; \
             proxy_set_header Connection \"\"; proxy_set_header Host $http_host; \
             proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; \
             proxy_read_timeout 120s; proxy_buffering off;"
        );
        Self::start_serving(dir, None, &location)
    }

    fn start_serving(dir: &Path, tls: Option<&Path>, location: &str) -> Self {
        let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|path| Path::new(path).exists())
            .expect("nginx is not installed: `apt-get install nginx` (.ci/run does this)");
        let addr = free_port();
        let root = dir.join("www");
        std::fs::create_dir_all(&root).unwrap();
        let log = dir.join("access.log");
        let d = dir.display();
        let listen = match tls {
            Some(tls) => format!(
                "listen {addr} ssl; ssl_certificate {t}/server.crt; ssl_certificate_key {t}/server.key;",
                t = tls.display()
            ),
            None => format!("listen {addr};"),
        };
        let conf = format!(
            "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log warn;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n  access_log {log} combined;\n  client_body_temp_path {d}/body;\n\
               proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n\
               uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
               server {{ {listen} root {root}; location / {{ {location} }} }}\n}}\n",
            log = log.display(),
            root = root.display(),
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let child = Command::new(nginx)
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_until(10, "nginx listening", || {
            std::net::TcpStream::connect(addr).is_ok()
        });
        Self {
            child,
            addr,
            https: tls.is_some(),
            root,
            log,
            published: 0,
        }
    }

    fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}/bundle.ksb", self.addr)
    }

    /// Serves `bytes` as the bundle: written beside it and renamed over
    /// it, with a modification time of its own, so nginx's ETag (mtime and
    /// size) changes even for a same-sized file.
    fn publish(&mut self, bytes: &[u8]) {
        self.published += 1;
        let tmp = self.root.join(".bundle.tmp");
        std::fs::write(&tmp, bytes).unwrap();
        let stamp = format!("@{}", 1_700_000_000 + self.published * 10);
        let touched = Command::new("touch")
            .args(["-d", &stamp])
            .arg(&tmp)
            .status()
            .unwrap();
        assert!(touched.success());
        std::fs::rename(&tmp, self.root.join("bundle.ksb")).unwrap();
    }

    fn not_modified_answers(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|line| line.contains("\" 304 "))
            .count()
    }
}

/// `keyscope bundle build` of the fleet's store, signed by `key`; the
/// bundle's bytes.
fn build(fleet: &Fleet, key: &Path, extra: &[&str]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec![
        "--json",
        "bundle",
        "build",
        "--signing-key",
        key.to_str().unwrap(),
        "-o",
        dir.path().to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let built = fleet.sandbox.json(args);
    std::fs::read(built["path"].as_str().unwrap()).unwrap()
}

#[test]
fn static_bundles_behind_nginx_are_followed_and_bad_ones_refused_and_counted() {
    let fleet = Fleet::new();
    let scope = fleet.sandbox.scope("acme", "s", "view", "run");
    let (_, live_key) = fleet.sandbox.key(&scope.to_string(), "live");
    let (revoked_id, revoked_key) = fleet.sandbox.key(&scope.to_string(), "revoked");
    let mut nginx = StaticServer::start(fleet.sandbox.dir.path());
    let older = build(&fleet, &fleet.signing_key, &[]);
    nginx.publish(&older);
    let config = fleet.sandbox.path("gateway.toml");
    std::fs::write(&config, "[bundles]\ninterval_ms = 50\n").unwrap();
    let (_g, gateway) = fleet.gateway(
        &nginx.url(),
        "static",
        &fleet.sandbox.path("cache"),
        &["--config", config.to_str().unwrap()],
    );
    assert!(allowed(&gateway, &revoked_key));
    // nginx answers the polls of an unchanged file with 304.
    wait_until(10, "nginx answering 304 to If-None-Match", || {
        nginx.not_modified_answers() >= 2
    });

    fleet
        .sandbox
        .keyscope(["key", "revoke", &revoked_id.to_string()])
        .assert()
        .success();
    let current = build(&fleet, &fleet.signing_key, &[]);
    nginx.publish(&current);
    wait_until(10, "the gateway picking up the new static bundle", || {
        !allowed(&gateway, &revoked_key)
    });
    let held = format::open(
        &current,
        &keys::read_public_key(&fleet.public_key).unwrap(),
        Layout::Served,
    )
    .unwrap()
    .manifest;

    // Each bad bundle is refused, counted, and changes no decision.
    let mut tampered = current.clone();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 0x40;
    let other_key = fleet.sandbox.path("other.key");
    fleet
        .sandbox
        .keyscope(["bundle", "keygen", "-o", other_key.to_str().unwrap()])
        .assert()
        .success();
    let other_signer = build(&fleet, &other_key, &[]);
    let unsigned = {
        let path = fleet.sandbox.path("snapshot.bin");
        fleet
            .sandbox
            .keyscope(["snapshot", "export", "-o", path.to_str().unwrap()])
            .assert()
            .success();
        std::fs::read(path).unwrap()
    };
    let mismatched_delta = mismatched_delta(&fleet, &held, &older);
    let bad_module = {
        let signing = keys::read_signing_key(&fleet.signing_key).unwrap();
        let snapshot = format::open(&current, &signing.verifying_key(), Layout::Served)
            .unwrap()
            .snapshot
            .unwrap()
            .to_vec();
        keyscope_bundle::Publisher::new(
            signing,
            held.revision + 1,
            std::sync::Arc::<[u8]>::from(snapshot),
            keyscope_test_artifacts::ALLOW_ALL.into(),
            std::time::Duration::from_secs(3600),
        )
        .full()
        .unwrap()
        .bytes
        .to_vec()
    };
    for (kind, bytes) in [
        ("tampered", &tampered),
        ("other-signer", &other_signer),
        ("unsigned", &unsigned),
        ("rollback", &older),
        ("delta-mismatch", &mismatched_delta),
        ("swap", &bad_module),
    ] {
        let before = refused(&gateway, kind);
        nginx.publish(bytes);
        wait_until(10, &format!("a {kind} bundle refused and counted"), || {
            refused(&gateway, kind) > before
        });
        assert!(allowed(&gateway, &live_key), "{kind}");
        assert_eq!(
            decide(&gateway, &revoked_key)["reason"],
            "revoked-key",
            "{kind}"
        );
        let status = bundle_status(&gateway);
        assert_eq!(status["revision"], held.revision, "{kind}: {status}");
        assert_eq!(status["stale"], true, "{kind}: {status}");
        assert_eq!(
            gateway.ready()["module"],
            held.module.sha256.as_str(),
            "{kind}: the module must not change"
        );
    }
    // The good bundle again: nothing new to take, and no longer stale.
    nginx.publish(&current);
    wait_until(10, "the gateway fresh again", || {
        bundle_status(&gateway)["stale"] == false
    });
}

/// A delta from the gateway's held state, signed by the right key, whose
/// changes (none) do not give the resulting snapshot its manifest names
/// (the older bundle's).
fn mismatched_delta(fleet: &Fleet, held: &Manifest, older: &[u8]) -> Vec<u8> {
    let signing = keys::read_signing_key(&fleet.signing_key).unwrap();
    let older = format::open(older, &signing.verifying_key(), Layout::Served)
        .unwrap()
        .manifest;
    let changes = format::encode_delta(&Default::default());
    let manifest = Manifest {
        kind: Kind::Delta,
        version: held.version + 1,
        expires_at_ms: held.expires_at_ms,
        revision: held.revision + 1,
        published_at_ms: held.published_at_ms,
        signer: held.signer.clone(),
        snapshot: older.snapshot,
        base: Some(Base {
            revision: held.revision,
            sha256: held.snapshot.sha256.clone(),
        }),
        delta: Some(Part {
            sha256: format::sha256_hex(&changes),
            bytes: changes.len() as u64,
        }),
        module: ModulePart {
            included: false,
            ..held.module.clone()
        },
    };
    format::seal(&manifest, &signing, &[&changes])
}

#[test]
fn the_bundle_endpoint_answers_304_long_polls_and_sends_deltas_from_a_held_state() {
    let fleet = Fleet::new();
    let scope = fleet.sandbox.scope("acme", "s", "view", "run");
    let (key_id, _) = fleet.sandbox.key(&scope.to_string(), "k");
    let control_plane = fleet.control_plane(&[]);
    let (_, token) = fleet.own_token("probe");
    let public = keys::read_public_key(&fleet.public_key).unwrap();
    let get = |query: &str, etag: Option<&str>| {
        let mut request = http_client()
            .get(control_plane.admin_url(&format!("/v1/bundle{query}")))
            .header("authorization", format!("Bearer {token}"));
        if let Some(etag) = etag {
            request = request.header("if-none-match", etag);
        }
        let mut response = request.call().unwrap();
        let status = response.status().as_u16();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        let (etag, kind) = (header("etag"), header("keyscope-bundle-kind"));
        let body = response.body_mut().read_to_vec().unwrap();
        (status, etag, kind, body)
    };
    let (status, etag, kind, full) = get("", None);
    assert_eq!((status, kind.as_deref()), (200, Some("full")));
    let etag = etag.unwrap();
    let held = format::open(&full, &public, Layout::Served)
        .unwrap()
        .manifest;
    assert_eq!(held.etag(), etag);
    // Nothing newer: 304, at once without a wait.
    let (status, same, _, body) = get("", Some(&etag));
    assert_eq!(
        (status, same.as_deref(), body.len()),
        (304, Some(etag.as_str()), 0)
    );
    // A long poll answers as soon as a newer state exists.
    let have = format!(
        "?version={}&revision={}&snapshot={}&module={}&gateway=probe&wait=50",
        held.version, held.revision, held.snapshot.sha256, held.module.sha256
    );
    let (status, newer, kind, delta) = std::thread::scope(|threads| {
        let poll = threads.spawn(|| get(&have, Some(&etag)));
        // The poll is waiting once the fleet view has seen it.
        wait_until(10, "the long poll registering", || {
            control_plane.admin("GET", "/admin/fleet", None).1["gateways"]
                .as_array()
                .is_some_and(|gateways| !gateways.is_empty())
        });
        fleet
            .sandbox
            .keyscope(["key", "revoke", &key_id.to_string()])
            .assert()
            .success();
        poll.join().unwrap()
    });
    assert_eq!((status, kind.as_deref()), (200, Some("delta")));
    assert_ne!(newer.as_deref(), Some(etag.as_str()));
    let opened = format::open(&delta, &public, Layout::Served).unwrap();
    assert_eq!(opened.manifest.kind, Kind::Delta);
    assert_eq!(opened.manifest.base.unwrap().revision, held.revision);
    assert!(
        opened.module.is_none(),
        "the module is sent only when it changed"
    );
    assert!(
        delta.len() < 4096,
        "{} bytes for one revocation",
        delta.len()
    );
    // Bad polls are named.
    for (query, what) in [
        ("?revision=1", "give all three"),
        (
            "?revision=1&snapshot=zz&module=zz",
            "64 lowercase hex digits",
        ),
        (
            &format!("?revision=1&snapshot={0}&module={0}", "AB".repeat(32)),
            "64 lowercase hex digits",
        ),
        ("?gateway=a%20b", "gateway"),
        ("?wait=soon", "wait"),
    ] {
        let (status, _, _, body) = get(query, None);
        let text = String::from_utf8_lossy(&body);
        assert_eq!(status, 400, "{query}: {text}");
        assert!(text.contains(what), "{query}: {text}");
    }
}

#[test]
fn bad_bundle_flags_and_key_files_are_named_and_change_nothing() {
    let fleet = Fleet::new();
    let serve = |args: &[&str]| {
        let output = fleet
            .sandbox
            .keyscope(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(output.stdout.is_empty(), "it never listened: {args:?}");
        String::from_utf8(output.stderr).unwrap()
    };
    let signing = fleet.signing_key.to_str().unwrap();
    let public = fleet.public_key.to_str().unwrap();
    for (args, named) in [
        (
            vec!["--bundle-url", "http://127.0.0.1:1/v1/bundle"],
            "--bundle-public-key",
        ),
        (
            vec!["--bundle-url", "ftp://x/b", "--bundle-public-key", public],
            "http://",
        ),
        (
            vec![
                "--bundle-url",
                "http://127.0.0.1:1/b",
                "--bundle-public-key",
                signing,
            ],
            "private signing key",
        ),
        (vec!["--bundle-signing-key", signing], "--admin-listen"),
        (vec!["--bundle-public-key", public], "--bundle-url"),
        (vec!["--bundle-next-public-key", public], "--bundle-url"),
        // An id the control plane would refuse: named with its rule at
        // start, never `ready` and denying every key.
        (
            vec![
                "--bundle-url",
                "http://127.0.0.1:1/b",
                "--bundle-public-key",
                public,
                "--gateway-id",
                "eu-west/edge-1",
            ],
            "gateway id `eu-west/edge-1`: an id is 1 to 128 characters",
        ),
    ] {
        let stderr = serve(&args);
        assert!(stderr.contains(named), "{args:?}: {stderr}");
    }
    // keygen never overwrites a key.
    let before = std::fs::read(&fleet.signing_key).unwrap();
    fleet
        .sandbox
        .keyscope(["bundle", "keygen", "-o", signing])
        .assert()
        .code(2);
    assert_eq!(std::fs::read(&fleet.signing_key).unwrap(), before);
    // A signing key others can read is refused, and nothing is written.
    std::fs::set_permissions(&fleet.signing_key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = fleet.sandbox.path("static");
    let output = fleet
        .sandbox
        .keyscope(["bundle", "build", "--signing-key", signing, "-o"])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("chmod 600"));
    assert!(!out.join("bundle.ksb").exists());
}

#[test]
fn a_gateway_trusts_a_private_ca_for_https_bundles_and_only_when_told() {
    let fleet = Fleet::new();
    let scope = fleet.sandbox.scope("acme", "s", "view", "run");
    let (_, key) = fleet.sandbox.key(&scope.to_string(), "k");
    let tls = fleet.sandbox.path("tls");
    std::fs::create_dir_all(&tls).unwrap();
    crate::pg::certificates(&tls);
    let mut nginx = StaticServer::start_with(fleet.sandbox.dir.path(), Some(&tls));
    nginx.publish(&build(&fleet, &fleet.signing_key, &[]));
    let ca = tls.join("ca.crt");
    let (_t, trusting) = fleet.gateway(
        &nginx.url(),
        "private-ca",
        &fleet.sandbox.path("cache-ca"),
        &["--bundle-ca", ca.to_str().unwrap()],
    );
    assert!(allowed(&trusting, &key), "{}", bundle_status(&trusting));
    // Without the CA, the webpki roots do not know the server: no bundle,
    // every key denied, not ready.
    let (_u, unknowing) = fleet.gateway_unready(
        &nginx.url(),
        "webpki-roots",
        &fleet.sandbox.path("cache-none"),
        &[],
    );
    let status = bundle_status(&unknowing);
    assert_eq!(status["stale"], true, "{status}");
    assert_eq!(status["revision"], Value::Null, "{status}");
    assert!(!allowed(&unknowing, &key));
    let ready = http_client().get(unknowing.url("/readyz")).call().unwrap();
    assert_eq!(ready.status(), 503);
    // A file with no certificate is refused at start.
    let output = fleet
        .sandbox
        .keyscope([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--bundle-url",
            &nginx.url(),
        ])
        .args(["--bundle-public-key", fleet.public_key.to_str().unwrap()])
        .args(["--bundle-ca", fleet.public_key.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no PEM certificate"));
}

#[test]
fn a_server_answering_304_forever_is_a_freeze_reported_once_the_bundle_expires() {
    let fleet = Fleet::new();
    let scope = fleet.sandbox.scope("acme", "s", "view", "run");
    let (_, key) = fleet.sandbox.key(&scope.to_string(), "k");
    let mut nginx = StaticServer::start(fleet.sandbox.dir.path());
    // A bundle good for 30 s (long enough for any machine to start a
    // gateway on it), then never replaced: nginx answers 304.
    let short = build(&fleet, &fleet.signing_key, &["--expires-in", "30s"]);
    nginx.publish(&short);
    let config = fleet.sandbox.path("gateway.toml");
    std::fs::write(&config, "[bundles]\ninterval_ms = 100\n").unwrap();
    let cache = fleet.sandbox.path("cache");
    let (_g, gateway) = fleet.gateway(
        &nginx.url(),
        "frozen",
        &cache,
        &["--config", config.to_str().unwrap()],
    );
    assert!(allowed(&gateway, &key));
    let fresh = bundle_status(&gateway);
    assert_eq!(fresh["stale"], false, "{fresh}");
    assert!(fresh["expires_at_ms"].as_u64().is_some(), "{fresh}");
    let status = wait_until_value(90, "the gateway saying it is stale", || {
        let status = bundle_status(&gateway);
        (status["stale"] == true).then_some(status)
    });
    let why = status["error"].as_str().unwrap();
    assert!(why.contains("expired"), "{status}");
    assert!(nginx.not_modified_answers() >= 1);
    // Fail static: it still decides on what it holds.
    assert!(allowed(&gateway, &key));
    let ready = http_client()
        .get(gateway.url("/readyz"))
        .call()
        .unwrap()
        .body_mut()
        .read_json::<Value>()
        .unwrap();
    assert_eq!(ready["bundle"]["stale"], true, "{ready}");

    // A cold gateway (no cache) offered the expired bundle refuses it:
    // an old signed bundle cannot bring back revoked keys on a fresh node.
    let (_c, mut cold) = fleet.gateway_unready(
        &nginx.url(),
        "cold",
        &fleet.sandbox.path("cold-cache"),
        &["--config", config.to_str().unwrap()],
    );
    wait_until(10, "the expired bundle refused and counted", || {
        refused(&cold, "expired") >= 1
    });
    assert!(!allowed(&cold, &key));
    assert_eq!(bundle_status(&cold)["revision"], Value::Null);

    // A fresh signature ends the freeze.
    nginx.publish(&build(&fleet, &fleet.signing_key, &[]));
    wait_until(10, "the gateway fresh again", || {
        bundle_status(&gateway)["stale"] == false
    });
    wait_until(10, "the cold gateway taking the fresh bundle", || {
        allowed(&cold, &key)
    });
    // Only now, with a verified state serving, does it say `ready`: its
    // next line on stdout, after `listening`.
    let mut line = String::new();
    std::io::BufRead::read_line(&mut cold.stdout, &mut line).unwrap();
    let event: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["event"], "ready", "{line}");
}

#[test]
fn a_control_plane_signs_its_state_anew_and_its_gateways_never_go_stale() {
    let fleet = Fleet::new();
    let scope = fleet.sandbox.scope("acme", "s", "view", "run");
    let (_, key) = fleet.sandbox.key(&scope.to_string(), "k");
    // Signatures good for 6 s, signed anew every 3 s.
    let control_plane = fleet.control_plane(&["--bundle-ttl", "6"]);
    let url = control_plane.admin_url("/v1/bundle");
    let (_g, gateway) = fleet.gateway(&url, "renewed", &fleet.sandbox.path("cache"), &[]);
    assert!(allowed(&gateway, &key));
    let first = bundle_status(&gateway);
    let first_version = first["version"].as_u64().unwrap();
    let first_expiry = first["expires_at_ms"].as_u64().unwrap();
    // Past the first signature's expiry, the gateway holds a newer one of
    // the same state, and is not stale.
    let status = wait_until_value(60, "a renewal held past the first expiry", || {
        let status = bundle_status(&gateway);
        let now = keyscope_runtime::time::now_ms();
        (now > first_expiry && status["expires_at_ms"].as_u64().unwrap_or(0) > now)
            .then_some(status)
    });
    assert!(
        status["version"].as_u64().unwrap() > first_version,
        "{status}"
    );
    assert_eq!(status["revision"], first["revision"], "{status}");
    assert_eq!(status["stale"], false, "{status}");
    assert_eq!(
        status["last_bundle"]["kind"], "full",
        "a renewal swaps nothing"
    );
    let (code, fleet_view) = fleet_status(&fleet, &control_plane);
    assert_eq!(code, 0, "{fleet_view}");
    assert!(allowed(&gateway, &key));
}

/// Polls `probe` until it gives a value, for up to `seconds`.
pub(crate) fn wait_until_value<T>(
    seconds: u64,
    what: &str,
    mut probe: impl FnMut() -> Option<T>,
) -> T {
    let mut found = None;
    wait_until(seconds, what, || {
        found = probe();
        found.is_some()
    });
    found.unwrap()
}

#[test]
fn the_fleet_view_shows_a_silent_gateway_as_gone_then_drops_it_and_forgets_on_request() {
    let fleet = Fleet::new();
    fleet.sandbox.scope("acme", "s", "view", "run");
    // Connections idle out after 6 s, so a long poll waits at most 1 s:
    // gone after 3 s unseen, dropped after 10 s.
    let config = fleet.sandbox.path("cp.toml");
    std::fs::write(
        &config,
        "[limits]\nidle_timeout_ms = 6000\ngrpc_keepalive_ms = 3000\n",
    )
    .unwrap();
    let control_plane = fleet.control_plane(&["--config", config.to_str().unwrap()]);
    // One token for a host's two pollers, as `edge:quiet` and `edge:busy`.
    let (_, token) = fleet.own_token("edge");
    let public = keys::read_public_key(&fleet.public_key).unwrap();
    let url = control_plane.admin_url("/v1/bundle");
    let full = http_client()
        .get(&url)
        .header("authorization", format!("Bearer {token}"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_vec()
        .unwrap();
    let held = format::open(&full, &public, Layout::Served)
        .unwrap()
        .manifest;
    let poll = |id: &str| {
        let status = http_client()
            .get(format!(
                "{url}?gateway={id}&version={}&revision={}&snapshot={}&module={}",
                held.version, held.revision, held.snapshot.sha256, held.module.sha256
            ))
            .header("authorization", format!("Bearer {token}"))
            .call()
            .unwrap()
            .status();
        assert_eq!(status, 304);
    };
    let listed = |view: &Value, id: &str| {
        view["gateways"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["id"] == id)
            .cloned()
    };
    poll("edge:quiet");
    poll("edge:busy");
    let (code, view) = fleet_status(&fleet, &control_plane);
    assert_eq!(code, 0, "{view}");
    assert_eq!(
        listed(&view, "edge:quiet").unwrap()["gone"],
        false,
        "{view}"
    );
    // `quiet` stops polling; `busy` goes on.
    wait_until(60, "the silent gateway shown as gone", || {
        poll("edge:busy");
        let (_, view) = fleet_status(&fleet, &control_plane);
        listed(&view, "edge:quiet").is_some_and(|g| g["gone"] == true)
    });
    let (code, view) = fleet_status(&fleet, &control_plane);
    assert_eq!(
        code, 0,
        "a gone gateway does not hold the fleet back: {view}"
    );
    assert_eq!(listed(&view, "edge:busy").unwrap()["gone"], false, "{view}");
    let text = fleet_cli(&fleet, &control_plane, &["fleet", "status"]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("gone"));
    wait_until(60, "the silent gateway dropped", || {
        poll("edge:busy");
        let (_, view) = fleet_status(&fleet, &control_plane);
        listed(&view, "edge:quiet").is_none()
    });

    // Forgotten on request; an unknown id is named.
    let forget = |id: &str| fleet_cli(&fleet, &control_plane, &["fleet", "forget", id]);
    assert!(forget("edge:busy").status.success());
    let (_, view) = fleet_status(&fleet, &control_plane);
    assert!(listed(&view, "edge:busy").is_none(), "{view}");
    let again = forget("edge:busy");
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("no gateway `edge:busy`"));
    let bad = forget("eu-west/edge-1");
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("an id is 1 to 128"));
}

#[test]
fn each_gateway_polls_under_its_own_token_and_a_revoked_one_is_refused_and_shown() {
    let fleet = Fleet::new();
    let scope = fleet.sandbox.scope("acme", "s", "view", "run");
    let (key_id, key) = fleet.sandbox.key(&scope.to_string(), "k");
    let control_plane = fleet.control_plane_with_shared_token(&[]);
    let url = control_plane.admin_url("/v1/bundle");
    let caches = fleet.sandbox.path("caches");
    let (_a, edge1) = fleet.gateway(&url, "edge-1", &caches.join("1"), &[]);
    let (_b, edge2) = fleet.gateway(&url, "edge-2", &caches.join("2"), &[]);
    assert!(allowed(&edge1, &key) && allowed(&edge2, &key));
    let (_, token1) = fleet.own_token("edge-1");
    let (_, token2) = fleet.own_token("edge-2");
    let shared = std::fs::read_to_string(&fleet.shared_token).unwrap();
    let public = keys::read_public_key(&fleet.public_key).unwrap();
    let get = |token: &str, query: &str| {
        let mut response = http_client()
            .get(format!("{url}{query}"))
            .header("authorization", format!("Bearer {token}"))
            .call()
            .unwrap();
        let status = response.status().as_u16();
        (status, response.body_mut().read_to_vec().unwrap())
    };
    let (status, full) = get(&token1, "");
    assert_eq!(status, 200);
    let held = format::open(&full, &public, Layout::Served)
        .unwrap()
        .manifest;
    let poll = |token: &str, id: &str| {
        let (status, body) = get(
            token,
            &format!(
                "?gateway={id}&version={}&revision={}&snapshot={}&module={}",
                held.version, held.revision, held.snapshot.sha256, held.module.sha256
            ),
        );
        (status, String::from_utf8_lossy(&body).into_owned())
    };

    // A gateway's token names it: another gateway's id is refused, its
    // own name and `NAME:SUFFIX` are its own.
    let (status, body) = poll(&token1, "edge-2");
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("gateway `edge-1`'s") && body.contains("--gateway-id edge-1"),
        "{body}"
    );
    assert_eq!(poll(&token1, "edge-1:spare").0, 304);
    // The shared token cannot write the row of a gateway with a token of
    // its own, nor of its suffixed ids; other ids it may, deprecated.
    for id in ["edge-2", "edge-2:x"] {
        let (status, body) = poll(&shared, id);
        assert_eq!(status, 403, "{id}: {body}");
        assert!(
            body.contains("has (or had) a fleet token of its own"),
            "{body}"
        );
    }
    assert_eq!(poll(&shared, "legacy").0, 304);
    // A token made while the control plane runs is taken at once.
    let (_, late) = fleet.own_token("late");
    assert_eq!(poll(&late, "late").0, 304);

    let credential = |view: &Value, id: &str| {
        view["gateways"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["id"] == id)
            .map(|g| g["credential"].clone())
    };
    let (_, view) = fleet_status(&fleet, &control_plane);
    for (id, how) in [
        ("edge-1", "named"),
        ("edge-2", "named"),
        ("legacy", "shared"),
    ] {
        assert_eq!(credential(&view, id), Some(json!(how)), "{id}: {view}");
    }
    assert_eq!(view["shared_token"], true, "{view}");
    assert!(
        view["warnings"][0]
            .as_str()
            .is_some_and(|w| w.contains("deprecated") && w.contains("1 gateway(s)")),
        "{view}"
    );
    let text = fleet_cli(&fleet, &control_plane, &["fleet", "status"]);
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("deprecated"),
        "{}",
        String::from_utf8_lossy(&text.stdout)
    );

    // A token's holder keeps at most 64 rows, its own: a flood under
    // `edge-1:SUFFIX` pushes out no other gateway.
    for n in 0..100 {
        assert_eq!(poll(&token1, &format!("edge-1:g{n}")).0, 304);
    }
    let (_, view) = fleet_status(&fleet, &control_plane);
    let rows = view["gateways"].as_array().unwrap();
    let flooded = rows
        .iter()
        .filter(|g| g["id"].as_str().unwrap().starts_with("edge-1:"))
        .count();
    assert_eq!(flooded, 64, "{view}");
    assert!(credential(&view, "edge-2").is_some(), "{view}");

    // A long poll waiting when its token is revoked is answered 401 then,
    // not with the next state.
    let (_, token5) = fleet.own_token("edge-5");
    let held_query = format!(
        "version={}&revision={}&snapshot={}&module={}",
        held.version, held.revision, held.snapshot.sha256, held.module.sha256
    );
    let (status, body) = std::thread::scope(|threads| {
        let waiting =
            threads.spawn(|| get(&token5, &format!("?gateway=edge-5&{held_query}&wait=50")));
        wait_until(30, "the long poll registering", || {
            let (_, view) = fleet_status(&fleet, &control_plane);
            credential(&view, "edge-5").is_some()
        });
        fleet
            .sandbox
            .keyscope(["fleet", "token", "revoke", "edge-5"])
            .assert()
            .success();
        waiting.join().unwrap()
    });
    assert_eq!(status, 401, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("revoked while it waited"));

    // Revoked: refused from the control plane's next read of the store,
    // and shown as such.
    fleet
        .sandbox
        .keyscope(["fleet", "token", "revoke", "edge-2"])
        .assert()
        .success();
    wait_until(30, "the revoked token refused", || {
        poll(&token2, "edge-2").0 == 401
    });
    let (_, body) = poll(&token2, "edge-2");
    assert!(
        body.contains("the fleet token of gateway `edge-2` was revoked"),
        "{body}"
    );
    let (_, view) = fleet_status(&fleet, &control_plane);
    assert_eq!(
        credential(&view, "edge-2"),
        Some(json!("revoked")),
        "{view}"
    );
    // Its ids stay its own: the shared token cannot pass for it.
    let (status, body) = poll(&shared, "edge-2");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("has (or had) a fleet token"), "{body}");
    // Its gateway hears why on its next poll (a change ends the long poll
    // it holds), and gets no later state.
    fleet
        .sandbox
        .keyscope(["key", "revoke", &key_id.to_string()])
        .assert()
        .success();
    let status = wait_until_value(30, "the gateway told its token was revoked", || {
        let status = bundle_status(&edge2);
        status["error"]
            .as_str()
            .is_some_and(|e| e.contains("HTTP 401") && e.contains("was revoked"))
            .then_some(status)
    });
    eprintln!("revoked gateway: {status}");
    let (_, later) = fleet.sandbox.key(&scope.to_string(), "later");
    wait_until(30, "the live gateway taking the new key", || {
        allowed(&edge1, &later)
    });
    assert!(!allowed(&edge2, &later), "{}", decide(&edge2, &later));
    // Listed with its revocation, never with a token.
    let listed = fleet.sandbox.json(["fleet", "token", "list"]);
    let rows = listed.as_array().unwrap();
    assert_eq!(rows.len(), 4, "{listed}");
    for row in rows {
        assert!(row.get("token").is_none() && row.get("digest").is_none());
        assert_eq!(row["kind"], "fleet");
        let revoked = row["name"] == "edge-2" || row["name"] == "edge-5";
        assert_eq!(row["revoked_at"].is_string(), revoked, "{row}");
    }
    // The other kind's commands do not see it.
    let admins = fleet.sandbox.json(["admin", "token", "list"]);
    assert!(
        admins
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["kind"] == "admin"),
        "{admins}"
    );

    // A gateway's own token without its name is refused at start, naming
    // the flag.
    let output = Sandbox::new()
        .keyscope(["serve", "--listen", "127.0.0.1:0", "--bundle-url", &url])
        .args(["--bundle-public-key", fleet.public_key.to_str().unwrap()])
        .arg("--fleet-token-file")
        .arg(fleet.own_token("nameless").0)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--gateway-id NAME"), "{stderr}");
}

#[test]
fn a_signing_key_is_rotated_through_a_window_in_which_gateways_trust_both() {
    let fleet = Fleet::new();
    let scope = fleet.sandbox.scope("acme", "s", "view", "run");
    let (_, live_key) = fleet.sandbox.key(&scope.to_string(), "live");
    let (revoked_id, revoked_key) = fleet.sandbox.key(&scope.to_string(), "revoked");
    let mut nginx = StaticServer::start(fleet.sandbox.dir.path());
    nginx.publish(&build(&fleet, &fleet.signing_key, &[]));
    let keygen = |name: &str| {
        let private = fleet.sandbox.path(&format!("{name}.key"));
        let made = fleet
            .sandbox
            .json(["bundle", "keygen", "-o", private.to_str().unwrap()]);
        let public = fleet.sandbox.path(&format!("{name}.pub"));
        std::fs::write(&public, made["public_key"].as_str().unwrap()).unwrap();
        (
            private,
            public,
            made["key_id"].as_str().unwrap_or("").to_owned(),
        )
    };
    let (next_key, next_public, _) = keygen("next");
    let config = fleet.sandbox.path("gateway.toml");
    std::fs::write(&config, "[bundles]\ninterval_ms = 50\n").unwrap();
    let cache = fleet.sandbox.path("cache");
    // The window: gateways trust the old key and the next.
    let (_g, mut gateway) = fleet.gateway(
        &nginx.url(),
        "rotating",
        &cache,
        &[
            "--config",
            config.to_str().unwrap(),
            "--bundle-next-public-key",
            next_public.to_str().unwrap(),
        ],
    );
    assert!(allowed(&gateway, &live_key) && allowed(&gateway, &revoked_key));
    // The control plane (here, `bundle build`) signs with the next key
    // from now on: taken, with the revocation it carries.
    fleet
        .sandbox
        .keyscope(["key", "revoke", &revoked_id.to_string()])
        .assert()
        .success();
    nginx.publish(&build(&fleet, &next_key, &[]));
    wait_until(10, "the bundle signed by the next key taken", || {
        !allowed(&gateway, &revoked_key)
    });
    assert_eq!(refused(&gateway, "other-signer"), 0);
    // A third key is refused, naming both trusted ones.
    let (third_key, _, _) = keygen("third");
    nginx.publish(&build(&fleet, &third_key, &[]));
    let status = wait_until_value(10, "the third key's bundle refused", || {
        let status = bundle_status(&gateway);
        (status["refused"]["other-signer"].as_u64() >= Some(1)).then_some(status)
    });
    let why = status["error"].as_str().unwrap();
    assert!(why.contains(" or "), "both trusted keys named: {status}");
    assert!(allowed(&gateway, &live_key) && !allowed(&gateway, &revoked_key));

    // The window closes: the next key is the only key. Restarted on it,
    // the gateway starts from its cache (signed by the next key), and the
    // old key (say, stolen) is refused from then on.
    assert!(gateway.stop().success());
    let (_h, rotated) = {
        let sandbox = Sandbox::new();
        let (token, _) = fleet.own_token("rotating");
        let server = sandbox.serve(&[
            "--bundle-url",
            &nginx.url(),
            "--bundle-public-key",
            next_public.to_str().unwrap(),
            "--fleet-token-file",
            token.to_str().unwrap(),
            "--bundle-cache",
            cache.to_str().unwrap(),
            "--gateway-id",
            "rotating",
            "--config",
            config.to_str().unwrap(),
        ]);
        (sandbox, server)
    };
    assert_eq!(bundle_status(&rotated)["from_cache"], true);
    assert!(allowed(&rotated, &live_key) && !allowed(&rotated, &revoked_key));
    let before = refused(&rotated, "other-signer");
    nginx.publish(&build(&fleet, &fleet.signing_key, &[]));
    wait_until(10, "the old key's bundle refused", || {
        refused(&rotated, "other-signer") > before
    });
    assert!(!allowed(&rotated, &revoked_key));

    // The same key twice is no rotation: named at start.
    let output = Sandbox::new()
        .keyscope([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--bundle-url",
            &nginx.url(),
        ])
        .arg("--bundle-public-key")
        .arg(&next_public)
        .arg("--bundle-next-public-key")
        .arg(&next_public)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("the same key"));
}

/// A bundle server that refuses every poll, echoing its Authorization
/// header and a control character back in its error: what a hostile one
/// would do to get a gateway's token into its public `/readyz`.
fn echoing_server() -> String {
    use std::io::{BufRead as _, BufReader, Write as _};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1/bundle", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut authorization = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((name, value)) = line.split_once(':')
                    && name.eq_ignore_ascii_case("authorization")
                {
                    authorization = value.trim().to_owned();
                }
            }
            let body =
                json!({ "error": { "message": format!("you sent {authorization}\u{202e}\u{7}") } })
                    .to_string();
            let _ = write!(
                stream,
                "HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    url
}

#[test]
fn a_refused_polls_reason_reaches_readyz_without_the_gateways_token() {
    let fleet = Fleet::new();
    fleet.sandbox.scope("acme", "s", "view", "run");
    let url = echoing_server();
    let (_g, gateway) = fleet.gateway_unready(&url, "echoed", &fleet.sandbox.path("cache"), &[]);
    let (_, token) = fleet.own_token("echoed");
    let status = wait_until_value(30, "the refusal in /readyz", || {
        let status = bundle_status(&gateway);
        status["error"]
            .as_str()
            .is_some_and(|e| e.contains("HTTP 403"))
            .then_some(status)
    });
    let error = status["error"].as_str().unwrap();
    assert!(
        error.contains("you sent Bearer [its fleet token]"),
        "{status}"
    );
    assert!(!error.contains(token.trim()), "{status}");
    assert!(
        error.chars().all(|c| c == ' ' || c.is_ascii_graphic()),
        "{status}"
    );
    let ready = http_client()
        .get(gateway.url("/readyz"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(!ready.contains(token.trim()));
}

/// `GET path` with `headers` from the local address `source` (a loopback
/// address other than 127.0.0.1: another client behind the proxy), over a
/// connection of its own; the status.
fn get_from(source: &str, to: SocketAddr, path: &str, headers: &str) -> u16 {
    use std::io::{Read as _, Write as _};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let stream = runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
        socket.connect(to).await.unwrap().into_std().unwrap()
    });
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let mut stream = stream;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {to}\r\n{headers}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {answer:?}"))
}

#[test]
fn one_bad_client_behind_a_proxy_locks_out_only_itself() {
    let fleet = Fleet::new();
    let scope = fleet.sandbox.scope("acme", "s", "view", "run");
    let (key_id, key) = fleet.sandbox.key(&scope.to_string(), "k");
    let admin = crate::console::admin_token(&fleet.sandbox, "alice");
    let config = fleet.sandbox.path("cp.toml");
    std::fs::write(&config, "[admin]\ntrusted_proxies = [\"127.0.0.1/32\"]\n").unwrap();
    let control_plane = fleet.control_plane(&["--config", config.to_str().unwrap()]);
    let upstream = control_plane
        .admin_url("")
        .trim_start_matches("http://")
        .to_owned();
    let proxy_dir = fleet.sandbox.path("proxy");
    std::fs::create_dir_all(&proxy_dir).unwrap();
    let proxy = StaticServer::proxy(&proxy_dir, &upstream);
    let base = format!("http://{}", proxy.addr);
    let caches = fleet.sandbox.path("caches");
    let gateways: Vec<(Sandbox, Server)> = (1..=3)
        .map(|n| {
            let id = format!("edge-{n}");
            fleet.gateway(&format!("{base}/v1/bundle"), &id, &caches.join(&id), &[])
        })
        .collect();
    for (_, gateway) in &gateways {
        assert!(allowed(gateway, &key));
    }
    let admin_status = || {
        http_client()
            .get(format!("{base}/admin/status"))
            .header("authorization", format!("Bearer {admin}"))
            .call()
            .unwrap()
            .status()
            .as_u16()
    };

    // The bad client, at 127.0.0.2 behind the proxy: unknown console
    // paths cost it nothing; bad tokens, ten, then 429, it alone. Its own
    // forged X-Forwarded-For is not believed.
    for n in 0..100 {
        let status = get_from("127.0.0.2", proxy.addr, &format!("/nothing-{n}"), "");
        assert_eq!(status, 404);
    }
    let bad = "Authorization: Bearer ksadmin_not-a-token-000000000000\r\n\
               X-Forwarded-For: 198.51.100.1\r\n";
    let statuses: Vec<u16> = (0..100)
        .map(|_| get_from("127.0.0.2", proxy.addr, "/admin/status", bad))
        .collect();
    assert!(statuses[..10].iter().all(|&s| s == 401), "{statuses:?}");
    assert!(statuses[10..].iter().all(|&s| s == 429), "{statuses:?}");

    // Everyone else, meanwhile: the admin's token works, the console signs
    // in, and a revocation reaches every gateway on its next poll.
    assert_eq!(admin_status(), 200);
    let mut console = crate::console::Http::at(base.clone());
    let signed_in = console.sign_in(&admin);
    assert_eq!(signed_in.status, 303);
    fleet
        .sandbox
        .keyscope(["key", "revoke", &key_id.to_string()])
        .assert()
        .success();
    for (_, gateway) in &gateways {
        wait_until(
            30,
            "the revocation reaching a gateway behind the proxy",
            || decide(gateway, &key)["reason"] == "revoked-key",
        );
        assert_eq!(bundle_status(gateway)["error"], Value::Null);
    }
    // Even the bad client gets in with a valid token: only failures are
    // limited.
    let good = format!("Authorization: Bearer {admin}\r\n");
    assert_eq!(
        get_from("127.0.0.2", proxy.addr, "/admin/status", &good),
        200
    );
    // From another address behind the proxy, a wrong token is a 401 of its
    // own, not the bad client's 429.
    assert_eq!(get_from("127.0.0.3", proxy.addr, "/admin/status", bad), 401);
}

#[test]
fn a_gateway_with_max_stale_denies_once_its_control_plane_is_gone_too_long() {
    let fleet = Fleet::new();
    let scope = fleet.sandbox.scope("acme", "s", "view", "run");
    let (_, key) = fleet.sandbox.key(&scope.to_string(), "k");
    let admin = free_port().to_string();
    let mut control_plane = fleet.control_plane(&["--admin-listen", &admin]);
    let url = control_plane.admin_url("/v1/bundle");
    let config = fleet.sandbox.path("gateway.toml");
    std::fs::write(&config, "max_stale_s = 1\n[bundles]\ninterval_ms = 100\n").unwrap();
    let (_g, gateway) = fleet.gateway(
        &url,
        "strict",
        &fleet.sandbox.path("cache"),
        &["--config", config.to_str().unwrap()],
    );
    assert!(allowed(&gateway, &key));
    control_plane.child.kill().unwrap();
    control_plane.child.wait().unwrap();
    // Unreachable for longer than max_stale: every decision denied, with
    // its own reason, rather than served from a state that may miss a
    // revocation.
    let denied = wait_until_value(30, "the gateway failing closed", || {
        let decision = decide(&gateway, &key);
        (decision["reason"] == "stale-policy").then_some(decision)
    });
    assert_eq!(denied["allow"], false, "{denied}");
    assert_eq!(bundle_status(&gateway)["stale"], true);
    // Back: decisions resume at its next good poll.
    let _control_plane = fleet.control_plane(&["--admin-listen", &admin]);
    wait_until(60, "decisions resuming", || allowed(&gateway, &key));
}
