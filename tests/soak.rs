//! A model-based soak: `keyscope serve` under mixed, bounded load, checked
//! decision by decision against the store's history.
//!
//! Three threads decide through `/auth` (nginx), `/v1/check` and gRPC while
//! two others change the store, the CLI in other processes and the admin
//! API, and swap modules. Each scope is changed by one thread only, so its
//! history is a sequence; every change is recorded with the interval in
//! which it committed (from before the command to after its answer).
//!
//! Afterwards a checker replays that history:
//! - an allow is right only if, at some moment between the request's start
//!   minus the freshness window and its end, the key may have been live
//!   with enough permission;
//! - a deny is wrong if, throughout that span, the key was certainly live
//!   with enough permission.
//!
//! The freshness window is 5 s: the admin API's changes are live before it
//! answers; the CLI's within a store poll (20 ms here, and under a second as
//! tests/serve.rs asserts), so 5 s leaves room for a loaded machine. The
//! soak runs 30 s; `KEYSCOPE_SOAK_SECS` makes it longer.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::Rng as _;
use serde_json::{Value, json};

use crate::serve::check_request;
use crate::support::{Sandbox, Server, http_client};

const FRESHNESS: Duration = Duration::from_secs(5);
const LEVELS: [&str; 4] = ["none", "view", "edit", "full"];

/// An interval on the test's clock, in which something happened.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: Duration,
    end: Duration,
}

#[derive(Debug)]
struct KeyRecord {
    secret: String,
    /// Its id, which revocation takes.
    id: u64,
    scope: usize,
    created: Span,
    revoked: Option<Span>,
}

#[derive(Debug)]
struct ScopeRecord {
    /// `app/name`, as the CLI names it.
    path: String,
    /// Its id, as the admin API names it.
    id: u64,
    /// Its levels in order, each with the span of the change that set it.
    levels: Vec<(usize, Span)>,
}

#[derive(Default)]
struct History {
    keys: Vec<KeyRecord>,
    scopes: Vec<ScopeRecord>,
    cli_changes: usize,
    admin_changes: usize,
    swaps: usize,
}

#[derive(Debug)]
struct Decision {
    key: usize,
    /// The Agents level the operation needs.
    needs: usize,
    span: Span,
    allow: bool,
    front: &'static str,
}

struct Soak {
    sandbox: Sandbox,
    server: Server,
    started: Instant,
    history: Mutex<History>,
    decisions: Mutex<Vec<Decision>>,
    stop: AtomicBool,
}

impl Soak {
    fn now(&self) -> Duration {
        self.started.elapsed()
    }

    fn admin(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let http = http_client();
        let request = ureq::http::Request::builder()
            .method(method)
            .uri(self.server.admin_url(path))
            .header(
                "authorization",
                format!("Bearer {}", self.server.admin_token),
            )
            .header("content-type", "application/json");
        let mut response = match body {
            Some(body) => http.run(request.body(body.to_string()).unwrap()),
            None => http.run(request.body(()).unwrap()),
        }
        .unwrap();
        let text = response.body_mut().read_to_string().unwrap();
        assert!(response.status().is_success(), "{method} {path}: {text}");
        serde_json::from_str(&text).unwrap()
    }

    /// Records a new scope, created in `span`.
    fn add_scope(&self, path: String, id: u64, level: usize, span: Span) -> usize {
        let mut history = self.history.lock().unwrap();
        history.scopes.push(ScopeRecord {
            path,
            id,
            levels: vec![(level, span)],
        });
        history.scopes.len() - 1
    }

    /// Records a key created in `created`, from the CLI's or the admin
    /// API's answer.
    fn add_key(&self, created_key: &Value, scope: usize, created: Span) {
        self.history.lock().unwrap().keys.push(KeyRecord {
            secret: created_key["key"].as_str().unwrap().to_owned(),
            id: created_key["id"].as_u64().unwrap(),
            scope,
            created,
            revoked: None,
        });
    }

    /// A live key of `scope`: its index and id.
    fn live_key(&self, scope: usize) -> Option<(usize, u64)> {
        let history = self.history.lock().unwrap();
        history
            .keys
            .iter()
            .enumerate()
            .find(|(_, key)| key.scope == scope && key.revoked.is_none())
            .map(|(index, key)| (index, key.id))
    }

    fn revoked(&self, index: usize, span: Span) {
        self.history.lock().unwrap().keys[index].revoked = Some(span);
    }

    fn level_set(&self, scope: usize, level: usize, span: Span) {
        self.history.lock().unwrap().scopes[scope]
            .levels
            .push((level, span));
    }
}

fn cli_mutator(soak: &Soak, scopes: &[usize]) {
    let mut rng = rand::rng();
    let mut n = 0;
    while !soak.stop.load(Ordering::Relaxed) {
        n += 1;
        let scope = scopes[rng.random_range(0..scopes.len())];
        let path = soak.history.lock().unwrap().scopes[scope].path.clone();
        let start = soak.now();
        let span = || Span {
            start,
            end: soak.now(),
        };
        match rng.random_range(0..3) {
            0 => {
                let name = format!("cli-{n}");
                let key = soak
                    .sandbox
                    .json(["key", "create", "--scope", &path, "--name", &name]);
                soak.add_key(&key, scope, span());
            }
            1 => {
                let Some((index, id)) = soak.live_key(scope) else {
                    continue;
                };
                soak.sandbox.json(["key", "revoke", &id.to_string()]);
                soak.revoked(index, span());
            }
            _ => {
                let level = rng.random_range(0..LEVELS.len());
                soak.sandbox
                    .json(["scope", "update", &path, "--agents", LEVELS[level]]);
                soak.level_set(scope, level, span());
            }
        }
        soak.history.lock().unwrap().cli_changes += 1;
    }
}

fn admin_mutator(soak: &Soak, first_scope: usize, modules: &[std::path::PathBuf]) {
    let mut rng = rand::rng();
    let mut scope = first_scope;
    let mut n = 0;
    while !soak.stop.load(Ordering::Relaxed) {
        n += 1;
        let (path, scope_id) = {
            let history = soak.history.lock().unwrap();
            (history.scopes[scope].path.clone(), history.scopes[scope].id)
        };
        let start = soak.now();
        let span = || Span {
            start,
            end: soak.now(),
        };
        match rng.random_range(0..10) {
            0..=2 => {
                let name = format!("admin-{n}");
                let key = soak.admin(
                    "POST",
                    "/admin/keys",
                    Some(json!({ "scope": path, "name": name })),
                );
                soak.add_key(&key, scope, span());
            }
            3..=4 => {
                let Some((index, id)) = soak.live_key(scope) else {
                    continue;
                };
                soak.admin("POST", &format!("/admin/keys/{id}/revoke"), None);
                soak.revoked(index, span());
            }
            5..=7 => {
                let level = rng.random_range(0..LEVELS.len());
                soak.admin(
                    "PATCH",
                    &format!("/admin/scopes/{scope_id}"),
                    Some(json!({ "agents": LEVELS[level] })),
                );
                soak.level_set(scope, level, span());
            }
            8 => {
                // Delete the scope, revoking its keys, and carry on in a new one.
                soak.admin(
                    "DELETE",
                    &format!("/admin/scopes/{scope_id}?revoke_keys=true"),
                    None,
                );
                let deleted = span();
                for key in soak.history.lock().unwrap().keys.iter_mut() {
                    if key.scope == scope && key.revoked.is_none() {
                        key.revoked = Some(deleted);
                    }
                }
                let level = rng.random_range(0..LEVELS.len());
                let name = format!("admin-scope-{n}");
                let start = soak.now();
                let created = soak.admin(
                    "POST",
                    "/admin/scopes",
                    Some(json!({ "app": "acme", "name": name, "agents": LEVELS[level] })),
                );
                let span = Span {
                    start,
                    end: soak.now(),
                };
                let id = created["id"].as_u64().unwrap();
                scope = soak.add_scope(format!("acme/{name}"), id, level, span);
            }
            _ => {
                let module = &modules[n % modules.len()];
                soak.admin("POST", "/admin/policy", Some(json!({ "path": module })));
                soak.history.lock().unwrap().swaps += 1;
                continue;
            }
        }
        soak.history.lock().unwrap().admin_changes += 1;
    }
}

/// The operations asked about, by route, and the Agents level each needs.
const ASKED: [(&str, &str, usize); 3] = [
    ("GET", "agents.get", 1),
    ("PUT", "agents.update", 2),
    ("DELETE", "agents.delete", 3),
];
const AGENT: &str = "/api/v2/apps/acme/agents/a1";

fn decider(soak: &Soak, front: &'static str) {
    let mut rng = rand::rng();
    let http = http_client();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut grpc = (front == "grpc").then(|| {
        use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
        runtime
            .block_on(AuthorizationClient::connect(format!(
                "http://{}",
                soak.server.grpc
            )))
            .unwrap()
    });
    while !soak.stop.load(Ordering::Relaxed) {
        // Mostly keys the model holds live, so that allows are common too.
        let (key, secret) = {
            let history = soak.history.lock().unwrap();
            let live: Vec<usize> = (0..history.keys.len())
                .filter(|&i| history.keys[i].revoked.is_none())
                .collect();
            let key = if !live.is_empty() && rng.random_bool(0.75) {
                live[rng.random_range(0..live.len())]
            } else {
                rng.random_range(0..history.keys.len())
            };
            (key, history.keys[key].secret.clone())
        };
        let (method, op, needs) = ASKED[rng.random_range(0..ASKED.len())];
        let start = soak.now();
        let allow = match front {
            "nginx" => {
                let response = http
                    .get(soak.server.url("/auth"))
                    .header("x-original-method", method)
                    .header("x-original-uri", AGENT)
                    .header("x-api-key", &secret)
                    .call()
                    .unwrap();
                match response.status().as_u16() {
                    200 => true,
                    401 | 403 | 503 => false,
                    other => panic!("/auth answered {other}"),
                }
            }
            "check" => {
                let mut response = http
                    .post(soak.server.url("/v1/check"))
                    .header("content-type", "application/json")
                    .send(json!({ "key": secret, "app": "acme", "op": op }).to_string())
                    .unwrap();
                assert_eq!(response.status(), 200);
                let body: Value =
                    serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap();
                body["allow"].as_bool().unwrap()
            }
            _ => {
                let client = grpc.as_mut().unwrap();
                let request = check_request(method, AGENT, &[("x-api-key", &secret)]);
                let response = runtime
                    .block_on(client.check(request))
                    .unwrap()
                    .into_inner();
                response.status.unwrap().code == 0
            }
        };
        let span = Span {
            start,
            end: soak.now(),
        };
        soak.decisions.lock().unwrap().push(Decision {
            key,
            needs,
            span,
            allow,
            front,
        });
    }
}

/// Whether two closed spans meet.
fn meet(a: (Duration, Duration), b: (Duration, Duration)) -> bool {
    a.0.max(b.0) <= a.1.min(b.1)
}

/// Whether span `inner` lies within `outer`.
fn within(inner: (Duration, Duration), outer: (Duration, Duration)) -> bool {
    outer.0 <= inner.0 && inner.1 <= outer.1
}

/// Whether `decision` could be right given `history`.
fn is_right(history: &History, decision: &Decision) -> bool {
    const FOREVER: Duration = Duration::MAX;
    let key = &history.keys[decision.key];
    let scope = &history.scopes[key.scope];
    let asked = (
        decision.span.start.saturating_sub(FRESHNESS),
        decision.span.end,
    );
    // Each level may be in force from its change's start to the next
    // change's end, and is certainly in force from its change's end to the
    // next change's start.
    let levels = scope.levels.iter().enumerate().map(|(i, &(level, set))| {
        let next = scope.levels.get(i + 1).map(|&(_, next)| next);
        let possible = (set.start, next.map_or(FOREVER, |n| n.end));
        let certain = (set.end, next.map_or(FOREVER, |n| n.start));
        (level, possible, certain)
    });
    if decision.allow {
        let live = (key.created.start, key.revoked.map_or(FOREVER, |r| r.end));
        levels
            .filter(|&(level, ..)| level >= decision.needs)
            .any(|(_, possible, _)| {
                let both = (live.0.max(possible.0), live.1.min(possible.1));
                meet(asked, both)
            })
    } else {
        let live = (key.created.end, key.revoked.map_or(FOREVER, |r| r.start));
        let certainly_allowed = within(asked, live)
            && levels
                .filter(|&(level, ..)| level >= decision.needs)
                .any(|(_, _, certain)| within(asked, certain));
        !certainly_allowed
    }
}

#[test]
fn a_model_checked_soak_finds_no_wrong_decision() {
    let seconds: u64 = std::env::var("KEYSCOPE_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let sandbox = Sandbox::new();
    let started = Instant::now();
    let span = |start| Span {
        start,
        end: started.elapsed(),
    };
    sandbox
        .keyscope(["limits", "set", "--keys-per-scope", "100000"])
        .assert()
        .success();
    let policy = sandbox.path("policy.wasm");
    let twin = sandbox.path("twin.wasm");
    std::fs::write(&policy, keyscope_runtime::EMBEDDED_POLICY).unwrap();
    std::fs::write(&twin, crate::swap::twin_module()).unwrap();
    // Scopes 0 and 1 change through the CLI, 2 through the admin API.
    let mut scopes = Vec::new();
    for (name, level) in [("cli-a", 1), ("cli-b", 2), ("admin-a", 3)] {
        let start = started.elapsed();
        let id = sandbox.scope("acme", name, LEVELS[level], "");
        scopes.push((format!("acme/{name}"), id, level, span(start)));
    }
    let mut keys = Vec::new();
    for (scope, (path, ..)) in scopes.iter().enumerate() {
        let start = started.elapsed();
        let (id, secret) = sandbox.key(path, "first");
        keys.push((json!({ "key": secret, "id": id }), scope, span(start)));
    }
    let server = sandbox.serve(&["--policy", policy.to_str().unwrap()]);
    let soak = Soak {
        sandbox,
        server,
        started,
        history: Mutex::default(),
        decisions: Mutex::default(),
        stop: AtomicBool::new(false),
    };
    for (path, id, level, span) in scopes {
        soak.add_scope(path, id, level, span);
    }
    for (key, scope, span) in &keys {
        soak.add_key(key, *scope, *span);
    }
    let soak = &soak;
    std::thread::scope(|threads| {
        for front in ["nginx", "check", "grpc"] {
            threads.spawn(move || decider(soak, front));
        }
        threads.spawn(|| cli_mutator(soak, &[0, 1]));
        threads.spawn(|| admin_mutator(soak, 2, &[twin.clone(), policy.clone()]));
        std::thread::sleep(Duration::from_secs(seconds));
        soak.stop.store(true, Ordering::Relaxed);
    });

    let history = soak.history.lock().unwrap();
    let decisions = soak.decisions.lock().unwrap();
    let wrong: Vec<&Decision> = decisions
        .iter()
        .filter(|decision| !is_right(&history, decision))
        .collect();
    let allows = decisions.iter().filter(|d| d.allow).count();
    eprintln!(
        "soak: {seconds} s, {} decisions checked ({allows} allows, {} denies), {} wrong; \
         {} CLI changes, {} admin changes, {} module swaps",
        decisions.len(),
        decisions.len() - allows,
        wrong.len(),
        history.cli_changes,
        history.admin_changes,
        history.swaps,
    );
    for decision in wrong.iter().take(5) {
        eprintln!(
            "wrong: {decision:?}; key {:?}",
            history.keys[decision.key].created
        );
    }
    assert!(wrong.is_empty(), "{} wrong decisions", wrong.len());
    // Enough of everything for the figure to mean something.
    assert!(
        allows >= 50 && decisions.len() - allows >= 50,
        "{allows} allows"
    );
    assert!(history.cli_changes >= 5 && history.admin_changes >= 5);
    for front in ["nginx", "check", "grpc"] {
        assert!(decisions.iter().any(|d| d.front == front), "{front}");
    }
}

#[test]
fn the_checker_flags_a_stale_allow_and_a_wrong_deny() {
    let at = |s: u64| Duration::from_secs(s);
    let span = |a: u64, b: u64| Span {
        start: at(a),
        end: at(b),
    };
    let history = History {
        keys: vec![KeyRecord {
            secret: String::new(),
            id: 1,
            scope: 0,
            created: span(0, 1),
            revoked: Some(span(20, 21)),
        }],
        scopes: vec![ScopeRecord {
            path: "acme/s".to_owned(),
            id: 1,
            // view from 0, full from 10 (set in 10..11).
            levels: vec![(1, span(0, 0)), (3, span(10, 11))],
        }],
        ..History::default()
    };
    let decide = |needs, a, b, allow| Decision {
        key: 0,
        needs,
        span: span(a, b),
        allow,
        front: "test",
    };
    // Allowed while live with enough permission, or within the window.
    assert!(is_right(&history, &decide(1, 2, 3, true)));
    assert!(is_right(&history, &decide(3, 12, 13, true)));
    assert!(is_right(&history, &decide(3, 25, 26, true)));
    // Allowed long after the revocation, or before the level was raised.
    assert!(!is_right(&history, &decide(1, 27, 28, true)));
    assert!(!is_right(&history, &decide(3, 2, 3, true)));
    // Denied although certainly live and permitted over the whole window.
    assert!(!is_right(&history, &decide(1, 7, 8, false)));
    // Denied within the window of a change: could be right.
    assert!(is_right(&history, &decide(3, 12, 13, false)));
    assert!(is_right(&history, &decide(1, 22, 23, false)));
}
