//! Differential test: randomized scopes, keys and requests, where the native
//! rules and the component must agree on every decision.

use std::cell::{Cell, RefCell};

use keyscope_policy::routes::default_routes;
use keyscope_policy::snapshot::{KeyEntry, ScopeEntry, SnapshotData, default_operations};
use keyscope_policy::{Snapshot, rules};
use keyscope_runtime::{
    AgentsLevel, Credential, HttpRequest, KeyDigest, Limits, Method, Millis, Request, RuntimeSet,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use crate::golden::component;

const APPS: [&str; 3] = ["acme", "globex", "initech"];
/// Keys expire around this moment, and requests are asked around it.
const NOW: Millis = 1_767_225_600_000;
/// Times a key's not-after and a request's time are drawn from.
const TIMES: [Millis; 4] = [NOW - 1_000, NOW, NOW + 1, NOW + 2_000];

#[derive(Debug, Clone)]
struct World {
    data: SnapshotData,
    requests: Vec<(CredentialChoice, usize, usize, Millis)>,
}

#[derive(Debug, Clone)]
enum CredentialChoice {
    Missing,
    Malformed,
    /// The digest of the n-th key (modulo the key count).
    Known(usize),
    Unknown([u8; 32]),
}

fn world() -> impl Strategy<Value = World> {
    let scope = (0..APPS.len(), 0..4usize, 0..16u8);
    let key = (
        any::<[u8; 32]>(),
        any::<prop::sample::Index>(),
        any::<bool>(),
        prop::option::of(prop::sample::select(&TIMES[..])),
    );
    let credential = prop_oneof![
        Just(CredentialChoice::Missing),
        Just(CredentialChoice::Malformed),
        (0..64usize).prop_map(CredentialChoice::Known),
        (0..64usize).prop_map(CredentialChoice::Known),
        any::<[u8; 32]>().prop_map(CredentialChoice::Unknown),
    ];
    let ops = default_operations().len() + 2;
    (
        prop::collection::vec(scope, 1..6),
        prop::collection::vec(key, 0..12),
        prop::collection::vec(
            (
                credential,
                0..APPS.len() + 1,
                0..ops,
                prop::sample::select(&TIMES[..]),
            ),
            1..40,
        ),
    )
        .prop_map(|(scopes, keys, requests)| {
            let scopes: Vec<ScopeEntry> = scopes
                .into_iter()
                .zip(1..)
                .map(|((app, level, bits), id)| ScopeEntry {
                    id,
                    app: APPS[app].to_owned(),
                    agents: AgentsLevel::ALL[level],
                    runtime: RuntimeSet::from_bits(bits).unwrap(),
                })
                .collect();
            let mut seen = std::collections::BTreeSet::new();
            let keys = keys
                .into_iter()
                .filter(|(digest, _, _, _)| seen.insert(*digest))
                .zip(100..)
                .map(|((digest, scope, revoked, not_after), id)| KeyEntry {
                    digest: KeyDigest(digest),
                    id,
                    scope_id: scopes[scope.index(scopes.len())].id,
                    revoked,
                    not_after,
                })
                .collect();
            World {
                data: SnapshotData {
                    operations: default_operations(),
                    scopes,
                    keys,
                    routes: default_routes(),
                },
                requests,
            }
        })
}

/// The method and path the default route table gives `op` in `app`; an
/// operation it does not route gets a path that matches nothing.
fn http_form(app: &str, op: &str) -> (String, String) {
    default_routes()
        .into_iter()
        .find(|route| route.op == op)
        .map(|route| {
            let path = route
                .pattern
                .replace("{app}", app)
                .replace("{env}", "prod")
                .replace("{id}", "agent-1");
            (route.method, path)
        })
        .unwrap_or(("GET".to_owned(), format!("/api/v2/apps/{app}/{op}")))
}

fn op_name(index: usize) -> String {
    let ops = default_operations();
    match ops.get(index) {
        Some(op) => op.name.clone(),
        None if index == ops.len() => "agents.fly".to_owned(),
        None => String::new(),
    }
}

#[test]
fn native_rules_and_component_agree_on_random_worlds() {
    let instance = RefCell::new(component().instantiate(Limits::default()).unwrap());
    let mut runner = TestRunner::new(Config {
        cases: 256,
        ..Config::default()
    });
    let decisions = Cell::new(0usize);
    runner
        .run(&world(), |world| {
            let bytes = world.data.encode().unwrap();
            let mut instance = instance.borrow_mut();
            instance.load_snapshot(&bytes).unwrap();
            let native = Snapshot::decode(&bytes).unwrap();
            let owned: Vec<(Credential, String, String, Millis)> = world
                .requests
                .iter()
                .map(|(credential, app, op, now)| {
                    let credential = match credential {
                        CredentialChoice::Missing => Credential::Missing,
                        CredentialChoice::Malformed => Credential::Malformed,
                        CredentialChoice::Known(n) if !world.data.keys.is_empty() => {
                            Credential::Digest(world.data.keys[n % world.data.keys.len()].digest)
                        }
                        CredentialChoice::Known(_) => Credential::Missing,
                        CredentialChoice::Unknown(digest) => Credential::Digest(KeyDigest(*digest)),
                    };
                    let app = APPS.get(*app).copied().unwrap_or("umbrella").to_owned();
                    (credential, app, op_name(*op), *now)
                })
                .collect();
            let requests: Vec<Request<'_>> = owned
                .iter()
                .map(|(credential, app, op, now)| Request {
                    credential: *credential,
                    app,
                    op,
                    now: *now,
                })
                .collect();
            let batch = instance.evaluate_batch(&requests);
            for (request, from_batch) in requests.iter().zip(&batch) {
                let expected = rules::decide(Some(&native), &native.resolve(request));
                let single = instance.try_evaluate(request).unwrap();
                prop_assert_eq!(expected, single, "single call, {:?}", request);
                prop_assert_eq!(expected, *from_batch, "batch call, {:?}", request);
                // The same question as a proxy asks it, by method and path.
                let (method, path) = http_form(request.app, request.op);
                let http = HttpRequest {
                    credential: request.credential,
                    method: Method::parse(&method),
                    path: &path,
                    now: request.now,
                };
                let native_http = rules::decide_http(Some(&native), &http);
                let got = instance.try_evaluate_http(&http).unwrap();
                prop_assert_eq!(native_http.decision, got.decision, "http call, {:?}", http);
                prop_assert_eq!(
                    native_http.route.map(|m| (
                        m.app.to_owned(),
                        native
                            .operation_names()
                            .nth(m.op as usize)
                            .unwrap()
                            .to_owned()
                    )),
                    got.route.map(|m| (m.app, m.op)),
                    "http route, {:?}",
                    http
                );
                if native_http.route.is_some() {
                    prop_assert_eq!(
                        native_http.decision,
                        expected,
                        "http against op, {:?}",
                        http
                    );
                }
                decisions.set(decisions.get() + 1);
            }
            Ok(())
        })
        .unwrap();
    let decisions = decisions.get();
    assert!(decisions > 1000, "only {decisions} decisions compared");
}
