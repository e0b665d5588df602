//! Decisions, side by side in one run: native rules (the floor), the
//! component (reused instance, fresh instance, batches), the full host path
//! beside the native host path, and the two engines a user would pick
//! instead, Cedar and Rego (regorus), with the same key lookup in front.
//!
//! `cargo bench -p keyscope-benches --bench evaluate`

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark that cannot set up should stop loudly"
)]

use std::collections::HashMap;
use std::hint::black_box;
use std::str::FromStr as _;

use cedar_policy::{Authorizer, Context, Entities, EntityUid, PolicySet};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use keyscope_benches::world;
use keyscope_policy::{Snapshot, rules};
use keyscope_runtime::bench::NOW;
use keyscope_runtime::{Limits, PolicyComponent, PolicyEngine, Request, keys};
use sha2::{Digest as _, Sha256};

const KEYS: u64 = 1_000;
const OP: &str = "agents.update";

/// keyscope's rules in Rego: the key (looked up natively, as for Cedar) and
/// the request come in as input; the catalogue is data.
const REGO_POLICY: &str = r#"
package keyscope

import rego.v1

default allow := false

allow if {
    not input.key.revoked
    input.now <= input.key.not_after
    input.key.app == input.app
    grants(data.operations[input.op])
}

grants(required) if {
    required.agents
    input.key.agents >= required.agents
}

grants(required) if {
    required.runtime
    required.runtime in input.key.runtime
}
"#;

/// keyscope's scopes as Cedar policies: one per operation, plus a forbid
/// for revoked keys.
const CEDAR_POLICIES: &str = r#"
permit(principal is Key, action in [Action::"agents.list", Action::"agents.get"], resource is App)
  when { principal.app == resource && principal.agents >= 1 };
permit(principal is Key, action == Action::"agents.update", resource is App)
  when { principal.app == resource && principal.agents >= 2 };
permit(principal is Key, action in [Action::"agents.create", Action::"agents.delete"], resource is App)
  when { principal.app == resource && principal.agents >= 3 };
permit(principal is Key, action in [Action::"runs.execute", Action::"runs.status"], resource is App)
  when { principal.app == resource && principal.runtime.contains("run") };
permit(principal is Key, action in [Action::"sessions.create", Action::"sessions.get", Action::"sessions.list"], resource is App)
  when { principal.app == resource && principal.runtime.contains("session-create") };
permit(principal is Key, action == Action::"sessions.terminate", resource is App)
  when { principal.app == resource && principal.runtime.contains("session-terminate") };
permit(principal is Key, action in [Action::"documents.upload", Action::"documents.delete"], resource is App)
  when { principal.app == resource && principal.runtime.contains("document-upload") };
forbid(principal is Key, action, resource) when { principal.revoked };
forbid(principal is Key, action, resource) when { context.now > principal.not_after };
"#;

/// The same world as Rego input parts: each key's attributes by digest, and
/// the catalogue as data.
fn rego_world(
    world: &keyscope_benches::World,
) -> (regorus::Engine, HashMap<[u8; 32], regorus::Value>) {
    let scopes: HashMap<u64, &keyscope_policy::snapshot::ScopeEntry> =
        world.data.scopes.iter().map(|s| (s.id, s)).collect();
    let mut keys = HashMap::new();
    for key in &world.data.keys {
        let Some(scope) = scopes.get(&key.scope_id) else {
            continue;
        };
        let attrs = serde_json::json!({
            "app": scope.app,
            "agents": scope.agents as i64,
            "runtime": scope.runtime.iter().map(|p| p.as_str()).collect::<Vec<_>>(),
            "revoked": key.revoked,
            "not_after": key.not_after.unwrap_or(i64::MAX as u64),
        });
        keys.insert(
            key.digest.0,
            regorus::Value::from_json_str(&attrs.to_string()).unwrap(),
        );
    }
    let operations: serde_json::Map<String, serde_json::Value> = world
        .data
        .operations
        .iter()
        .map(|op| {
            let required = match op.requires {
                keyscope_policy::Requirement::Agents(level) => {
                    serde_json::json!({"agents": level as i64})
                }
                keyscope_policy::Requirement::Runtime(permission) => {
                    serde_json::json!({"runtime": permission.as_str()})
                }
            };
            (op.name.clone(), required)
        })
        .collect();
    let mut engine = regorus::Engine::new();
    engine
        .add_policy("keyscope.rego".to_owned(), REGO_POLICY.to_owned())
        .unwrap();
    engine
        .add_data_json(&serde_json::json!({ "operations": operations }).to_string())
        .unwrap();
    (engine, keys)
}

/// The same world as Cedar entities, and the digest → principal map a
/// Cedar-based gateway would look keys up in.
fn cedar_world(world: &keyscope_benches::World) -> (Entities, HashMap<[u8; 32], EntityUid>) {
    let scopes: HashMap<u64, &keyscope_policy::snapshot::ScopeEntry> =
        world.data.scopes.iter().map(|s| (s.id, s)).collect();
    let mut json =
        vec![serde_json::json!({"uid": {"type": "App", "id": "acme"}, "attrs": {}, "parents": []})];
    let mut principals = HashMap::new();
    for key in &world.data.keys {
        let scope = scopes[&key.scope_id];
        json.push(serde_json::json!({
            "uid": {"type": "Key", "id": key.id.to_string()},
            "attrs": {
                "app": {"__entity": {"type": "App", "id": scope.app}},
                "agents": scope.agents as i64,
                "runtime": scope.runtime.iter().map(|p| p.as_str()).collect::<Vec<_>>(),
                "revoked": key.revoked,
                "not_after": key.not_after.unwrap_or(i64::MAX as u64),
            },
            "parents": [],
        }));
        principals.insert(
            key.digest.0,
            EntityUid::from_str(&format!("Key::\"{}\"", key.id)).unwrap(),
        );
    }
    let entities = Entities::from_json_value(serde_json::Value::Array(json), None).unwrap();
    (entities, principals)
}

fn evaluate(c: &mut Criterion) {
    let world = world(KEYS);
    let bytes = world.data.encode().unwrap();
    let native = Snapshot::decode(&bytes).unwrap();
    let engine = PolicyEngine::new().unwrap();
    let component = PolicyComponent::embedded(&engine).unwrap();
    let mut instance = component.instantiate(Limits::default()).unwrap();
    instance.load_snapshot(&bytes).unwrap();
    let raw = world.held.expose().to_owned();
    let request = Request {
        credential: keys::credential(Some(&raw)),
        app: "acme",
        op: OP,
        now: NOW,
    };
    let resolved = native.resolve(&request);
    assert!(rules::decide(Some(&native), &resolved).allow);
    assert!(instance.evaluate(&request).allow);
    assert_eq!(instance.catalogue().resolve(&request), resolved);

    let policies = PolicySet::from_str(CEDAR_POLICIES).unwrap();
    let (entities, principals) = cedar_world(&world);
    let authorizer = Authorizer::new();
    let action = EntityUid::from_str(&format!("Action::\"{OP}\"")).unwrap();
    let resource = EntityUid::from_str("App::\"acme\"").unwrap();
    let cedar = |raw: &str| {
        let digest: [u8; 32] = Sha256::digest(raw.as_bytes()).into();
        let principal = principals.get(&digest)?.clone();
        let context = Context::from_pairs([(
            "now".to_owned(),
            cedar_policy::RestrictedExpression::new_long(NOW as i64),
        )])
        .ok()?;
        let request =
            cedar_policy::Request::new(principal, action.clone(), resource.clone(), context, None)
                .ok()?;
        Some(
            authorizer
                .is_authorized(&request, &policies, &entities)
                .decision(),
        )
    };
    assert_eq!(cedar(&raw), Some(cedar_policy::Decision::Allow));

    let (mut rego, rego_keys) = rego_world(&world);
    let mut rego_decide = |raw: &str| {
        let digest: [u8; 32] = Sha256::digest(raw.as_bytes()).into();
        let key = rego_keys.get(&digest)?.clone();
        let mut input = regorus::Value::new_object();
        let fields = input.as_object_mut().ok()?;
        fields.insert(regorus::Value::from("key"), key);
        fields.insert(regorus::Value::from("app"), regorus::Value::from("acme"));
        fields.insert(regorus::Value::from("op"), regorus::Value::from(OP));
        fields.insert(regorus::Value::from("now"), regorus::Value::from(NOW));
        rego.set_input(input);
        rego.eval_rule("data.keyscope.allow".to_owned()).ok()
    };
    assert_eq!(rego_decide(&raw), Some(regorus::Value::from(true)));

    let mut group = c.benchmark_group("evaluate");
    group.throughput(Throughput::Elements(1));
    group.bench_function("native rules", |b| {
        b.iter(|| rules::decide(Some(black_box(&native)), black_box(&resolved)))
    });
    group.bench_function("component, reused instance", |b| {
        b.iter(|| instance.evaluate_resolved(black_box(&resolved)))
    });
    group.bench_function("native host path: raw key, sha-256, names, rules", |b| {
        b.iter(|| {
            let request = Request {
                credential: keys::credential(Some(black_box(&raw))),
                ..request
            };
            rules::decide(Some(&native), &native.resolve(&request))
        })
    });
    group.bench_function("host path: raw key, sha-256, names, component", |b| {
        b.iter(|| {
            instance.evaluate(&Request {
                credential: keys::credential(Some(black_box(&raw))),
                ..request
            })
        })
    });
    group.bench_function("cedar path: raw key, sha-256, lookup, cedar", |b| {
        b.iter(|| cedar(black_box(&raw)))
    });
    group.bench_function("rego path: raw key, sha-256, lookup, regorus", |b| {
        b.iter(|| rego_decide(black_box(&raw)))
    });
    group.finish();

    let pooled = PolicyEngine::pooling(16, 64 << 20).unwrap();
    let pooled_component = PolicyComponent::embedded(&pooled).unwrap();
    let small = keyscope_benches::World {
        data: keyscope_policy::SnapshotData {
            keys: world.data.keys.iter().rev().take(20).cloned().collect(),
            ..world.data.clone()
        },
        held: world.held.clone(),
    };
    let small_bytes = small.data.encode().unwrap();
    let limits = Limits {
        max_memory: 64 << 20,
        ..Limits::default()
    };
    let mut group = c.benchmark_group("fresh-instance");
    group.throughput(Throughput::Elements(1));
    group.bench_function("instantiate (pooling) and evaluate, no snapshot", |b| {
        b.iter(|| {
            let mut fresh = pooled_component.instantiate(limits.clone()).unwrap();
            fresh.evaluate(black_box(&request))
        })
    });
    group.bench_function("instantiate (pooling), load 20 keys, evaluate", |b| {
        b.iter(|| {
            let mut fresh = pooled_component.instantiate(limits.clone()).unwrap();
            fresh.load_snapshot(&small_bytes).unwrap();
            fresh.evaluate(black_box(&request))
        })
    });
    group.finish();

    let mut group = c.benchmark_group("evaluate-batch");
    for size in [1usize, 16, 256, 4096] {
        let requests = vec![request; size];
        group.throughput(Throughput::Elements(size as u64));
        group.bench_function(format!("{size} per call"), |b| {
            b.iter(|| instance.evaluate_batch(black_box(&requests)))
        });
    }
    group.finish();
}

criterion_group!(benches, evaluate);
criterion_main!(benches);
