//! The component itself: it imports nothing, it is validated on load, and
//! every failure inside it is a deny.

use std::time::Duration;

use keyscope_policy::snapshot::{KeyEntry, ScopeEntry, SnapshotData, default_operations};
use keyscope_policy::{AgentsLevel, KeyDigest, RuntimeSet};
use keyscope_runtime::EMBEDDED_POLICY;
use keyscope_runtime::{
    Error, KeySecret, Limits, PolicyComponent, PolicyEngine, Reason, Request, keys,
};

use crate::golden::component;
use crate::support::policy_fixture;

#[test]
fn the_built_component_imports_nothing() {
    let engine = wasmtime::Engine::default();
    let built = wasmtime::component::Component::new(&engine, EMBEDDED_POLICY).unwrap();
    let ty = built.component_type();
    let imports: Vec<&str> = ty.imports(&engine).map(|(name, _)| name).collect();
    assert!(imports.is_empty(), "the policy imports {imports:?}");
    let exports: Vec<&str> = ty.exports(&engine).map(|(name, _)| name).collect();
    assert_eq!(exports, ["keyscope:policy/decide@0.4.0"]);
    assert_eq!(
        component().info().exports,
        [
            "keyscope:policy/decide@0.4.0 (load-snapshot, apply-delta, names, evaluate, evaluate-batch, evaluate-http)"
        ]
    );
    assert!(component().info().imports.is_empty());
}

fn refused(fixture: &str) -> Error {
    let bytes = policy_fixture(fixture);
    PolicyComponent::from_bytes(&PolicyEngine::new().unwrap(), &bytes).unwrap_err()
}

#[test]
fn a_component_that_imports_anything_is_refused() {
    let error = refused("imports-wasi");
    assert!(matches!(error, Error::PolicyImports(_)), "{error}");
    assert!(
        error.to_string().contains("`wasi:random/random@0.2.0`"),
        "{error}"
    );
}

#[test]
fn a_component_of_another_world_is_refused() {
    let error = refused("other-world");
    assert!(matches!(error, Error::WrongWorld(_)), "{error}");
}

#[test]
fn an_older_version_of_the_interface_is_refused_by_name() {
    let error = refused("older-interface");
    assert_eq!(
        error.to_string(),
        "the policy component does not implement the `keyscope:policy/policy` world: \
         it must export `keyscope:policy/decide@0.4.0`; it exports `keyscope:policy/decide@0.0.9`"
    );
}

#[test]
fn the_previous_releases_of_the_policy_are_refused_by_name() {
    // keyscope's own embedded policy as releases 0.2 and 0.3 built it
    // (`keyscope policy export`, before contracts 0.3 and 0.4).
    for (file, version) in [
        ("keyscope-0.2.0.wasm", "0.2.0"),
        ("keyscope-0.3.0.wasm", "0.3.0"),
    ] {
        let bytes = std::fs::read(crate::support::fixtures().join("policies").join(file)).unwrap();
        let error = PolicyComponent::from_bytes(&PolicyEngine::new().unwrap(), &bytes).unwrap_err();
        assert!(matches!(error, Error::WrongWorld(_)), "{error}");
        assert!(
            error.to_string().contains(&format!(
                "it must export `keyscope:policy/decide@0.4.0`; \
                 it exports `keyscope:policy/decide@{version}`"
            )),
            "{error}"
        );
    }
}

#[test]
fn a_core_module_or_garbage_is_not_a_component() {
    let error = refused("core-module");
    assert!(matches!(error, Error::NotAComponent(_)), "{error}");
    assert!(error.to_string().contains("core Wasm module"), "{error}");
    let error =
        PolicyComponent::from_bytes(&PolicyEngine::new().unwrap(), b"#!/bin/sh\n").unwrap_err();
    assert!(matches!(error, Error::NotAComponent(_)), "{error}");
}

fn snapshot(keys: usize) -> (Vec<u8>, KeySecret) {
    let live = KeySecret::generate();
    let mut entries = vec![KeyEntry {
        digest: live.digest(),
        id: 1,
        scope_id: 1,
        revoked: false,
        not_after: None,
    }];
    entries.extend((2..=keys as u64).map(|id| {
        let mut digest = [0; 32];
        digest[..8].copy_from_slice(&id.to_be_bytes());
        KeyEntry {
            digest: KeyDigest(digest),
            id,
            scope_id: 1,
            revoked: false,
            not_after: None,
        }
    }));
    let data = SnapshotData {
        operations: default_operations(),
        scopes: vec![ScopeEntry {
            id: 1,
            app: "acme".to_owned(),
            agents: AgentsLevel::View,
            runtime: RuntimeSet::EMPTY,
        }],
        keys: entries,
        routes: keyscope_policy::routes::default_routes(),
    };
    (data.encode().unwrap(), live)
}

#[test]
fn a_body_length_near_4_gib_is_truncated_in_the_32_bit_guest_too() {
    // Found by fuzzing: on wasm32 the announced length plus the trailer
    // wrapped `usize`, so the component said `malformed` where native code
    // said `truncated`.
    let mut bytes = b"KEYSCOPE\x05\x00\x00\x00".to_vec();
    bytes.extend_from_slice(&0xFFFF_FFE6u32.to_le_bytes());
    bytes.resize(74, 0);
    let mut instance = component().instantiate(Limits::default()).unwrap();
    let error = instance.load_snapshot(&bytes).unwrap_err();
    assert!(
        matches!(
            error,
            Error::Snapshot(keyscope_policy::LoadError::Truncated)
        ),
        "{error}"
    );
}

#[test]
fn a_refused_snapshot_leaves_the_previous_one_serving() {
    let (good, key) = snapshot(3);
    let mut instance = component().instantiate(Limits::default()).unwrap();
    instance.load_snapshot(&good).unwrap();
    let request = Request {
        credential: keys::credential(Some(key.expose())),
        app: "acme",
        op: "agents.get",
        now: keyscope_runtime::cases::CASE_NOW,
    };
    let mut corrupt = good.clone();
    let middle = corrupt.len() / 2;
    corrupt[middle] ^= 0xff;
    for bad in [&corrupt[..], &good[..good.len() - 1], b"KEYSCOPE", b"hello"] {
        let error = instance.load_snapshot(bad).unwrap_err();
        assert!(matches!(error, Error::Snapshot(_)), "{error}");
        assert!(instance.evaluate(&request).allow, "after refusing: {error}");
    }
}

#[test]
fn running_out_of_memory_is_an_error_and_the_instance_recovers() {
    let (small, key) = snapshot(3);
    let (large, _) = snapshot(50_000);
    let mut instance = component()
        .instantiate(Limits {
            max_memory: 2 << 20,
            ..Limits::default()
        })
        .unwrap();
    instance.load_snapshot(&small).unwrap();
    let error = instance.load_snapshot(&large).unwrap_err();
    assert!(matches!(error, Error::PolicyFailed(_)), "{error}");
    // The trapped instance is replaced, with the last good snapshot.
    let decision = instance.evaluate(&Request {
        credential: keys::credential(Some(key.expose())),
        app: "acme",
        op: "agents.list",
        now: keyscope_runtime::cases::CASE_NOW,
    });
    assert_eq!(decision.reason, Reason::Allowed);
}

#[test]
fn a_call_past_its_deadline_is_denied_as_policy_error() {
    let (bytes, key) = snapshot(3);
    let mut instance = component()
        .instantiate(Limits {
            evaluate_timeout: Duration::from_micros(1),
            ..Limits::default()
        })
        .unwrap();
    instance.load_snapshot(&bytes).unwrap();
    let request = Request {
        credential: keys::credential(Some(key.expose())),
        app: "acme",
        op: "agents.list",
        now: keyscope_runtime::cases::CASE_NOW,
    };
    // Far more work than one epoch tick allows.
    let requests = vec![request; 400_000];
    let decisions = instance.evaluate_batch(&requests);
    assert_eq!(decisions.len(), requests.len());
    assert!(
        decisions
            .iter()
            .all(|d| !d.allow && d.reason == Reason::PolicyError),
        "a timed-out batch must deny every request"
    );
    // The next, small call runs on a fresh instance with the same snapshot.
    assert_eq!(instance.evaluate(&request).reason, Reason::Allowed);
}

#[test]
fn a_million_key_snapshot_fits_in_80_mib_of_guest_memory() {
    // 64 bytes a record: 61 MiB of snapshot, kept as loaded; the pages'
    // tree (1 MiB) and the ids' uniqueness check (8 MiB, freed) besides.
    let (bytes, key) = snapshot(1_000_000);
    assert!(bytes.len() < 62 << 20, "{} bytes", bytes.len());
    let mut instance = component().instantiate(Limits::default()).unwrap();
    let info = instance.load_snapshot(&bytes).unwrap();
    assert_eq!(info.keys, 1_000_000);
    let peak = instance.peak_memory();
    assert!(peak <= 80 << 20, "peak guest memory {} MiB", peak >> 20);
    eprintln!(
        "1M keys: peak guest memory {:.1} MiB",
        peak as f64 / f64::from(1 << 20)
    );
    let decision = instance.evaluate(&Request {
        credential: keys::credential(Some(key.expose())),
        app: "acme",
        op: "agents.get",
        now: keyscope_runtime::cases::CASE_NOW,
    });
    assert_eq!(decision.reason, Reason::Allowed);
    assert_eq!(
        instance.peak_memory(),
        peak,
        "a decision allocates no new memory"
    );
}
