//! The decision rules against a small, obviously correct reference, as
//! Cedar fuzzes its authorizer against its model: a fuzzed world of scopes
//! and keys, encoded as a real snapshot, and fuzzed requests.

#![no_main]

use arbitrary::Arbitrary;
use keyscope_policy::model::{
    AgentsLevel, Credential, Decision, KeyDigest, Reason, Request, Requirement, RuntimePermission,
    RuntimeSet,
};
use keyscope_policy::snapshot::{KeyEntry, ScopeEntry, SnapshotData, default_operations};
use keyscope_policy::{Snapshot, rules};
use libfuzzer_sys::fuzz_target;

const APPS: [&str; 3] = ["acme", "globex", "initech"];
const OPS: [&str; 14] = [
    "agents.list",
    "agents.get",
    "agents.update",
    "agents.create",
    "agents.delete",
    "runs.execute",
    "runs.status",
    "sessions.create",
    "sessions.get",
    "sessions.list",
    "sessions.terminate",
    "documents.upload",
    "documents.delete",
    "agents.fly",
];
/// Keys' not-afters and requests' times are drawn around this moment.
const NOW: u64 = 1_767_225_600_000;

#[derive(Debug, Arbitrary)]
struct Input {
    /// (app, level 0..4, runtime bits)
    scopes: Vec<(u8, u8, u8)>,
    /// (digest seed, scope index, revoked, not-after: none, or NOW + n - 2)
    keys: Vec<(u8, u8, bool, Option<u8>)>,
    /// (credential kind, key index or seed, app, op, time: NOW + n - 2)
    requests: Vec<(u8, u8, u8, u8, u8)>,
}

fn level(n: u8) -> AgentsLevel {
    [
        AgentsLevel::None,
        AgentsLevel::View,
        AgentsLevel::Edit,
        AgentsLevel::Full,
    ][usize::from(n % 4)]
}

/// The reference: the rules as the product description states them, with a
/// linear scan and no cleverness.
fn reference(data: &SnapshotData, request: &Request<'_>) -> Decision {
    let digest = match request.credential {
        Credential::Missing => return Decision::deny(Reason::MissingKey),
        Credential::Malformed => return Decision::deny(Reason::MalformedKey),
        Credential::Digest(digest) => digest,
    };
    let Some(key) = data.keys.iter().find(|key| key.digest == digest) else {
        return Decision::deny(Reason::UnknownKey);
    };
    let decision = |reason: Reason, required: Option<Requirement>| Decision {
        allow: reason == Reason::Allowed,
        reason,
        key_id: Some(key.id),
        scope_id: Some(key.scope_id),
        required,
    };
    let scope = data.scopes.iter().find(|scope| scope.id == key.scope_id);
    let Some(scope) = scope.filter(|_| !key.revoked) else {
        return decision(Reason::RevokedKey, None);
    };
    if key
        .not_after
        .is_some_and(|not_after| request.now > not_after)
    {
        return decision(Reason::ExpiredKey, None);
    }
    if scope.app != request.app {
        return decision(Reason::WrongApp, None);
    }
    let needed = match request.op {
        "agents.list" | "agents.get" => Requirement::Agents(AgentsLevel::View),
        "agents.update" => Requirement::Agents(AgentsLevel::Edit),
        "agents.create" | "agents.delete" => Requirement::Agents(AgentsLevel::Full),
        "runs.execute" | "runs.status" => Requirement::Runtime(RuntimePermission::Run),
        "sessions.create" | "sessions.get" | "sessions.list" => {
            Requirement::Runtime(RuntimePermission::SessionCreate)
        }
        "sessions.terminate" => Requirement::Runtime(RuntimePermission::SessionTerminate),
        "documents.upload" | "documents.delete" => {
            Requirement::Runtime(RuntimePermission::DocumentUpload)
        }
        _ => return decision(Reason::UnknownOperation, None),
    };
    let granted = match needed {
        Requirement::Agents(level) => scope.agents >= level,
        Requirement::Runtime(permission) => scope.runtime.contains(permission),
    };
    if granted {
        decision(Reason::Allowed, None)
    } else {
        decision(Reason::InsufficientPermission, Some(needed))
    }
}

fuzz_target!(|input: Input| {
    let scopes: Vec<ScopeEntry> = input
        .scopes
        .iter()
        .take(8)
        .zip(1u64..)
        .map(|(&(app, agents, runtime), id)| ScopeEntry {
            id,
            app: APPS[usize::from(app) % APPS.len()].to_owned(),
            agents: level(agents),
            runtime: RuntimePermission::ALL
                .into_iter()
                .enumerate()
                .filter(|(bit, _)| runtime & (1 << bit) != 0)
                .map(|(_, permission)| permission)
                .collect::<RuntimeSet>(),
        })
        .collect();
    let mut keys: Vec<KeyEntry> = Vec::new();
    for (&(seed, scope, revoked, not_after), id) in input.keys.iter().take(16).zip(100u64..) {
        let digest = KeyDigest([seed; 32]);
        if scopes.is_empty() || keys.iter().any(|key| key.digest == digest) {
            continue;
        }
        // A key of a deleted scope (id 99) must be revoked.
        let scope_id = if revoked && scope % 5 == 0 {
            99
        } else {
            scopes[usize::from(scope) % scopes.len()].id
        };
        keys.push(KeyEntry {
            digest,
            id,
            scope_id,
            revoked,
            not_after: not_after.map(|n| NOW + u64::from(n % 5) - 2),
        });
    }
    let data = SnapshotData {
        operations: default_operations(),
        scopes,
        keys,
        routes: keyscope_policy::routes::default_routes(),
    };
    let bytes = data.encode().expect("a valid world encodes");
    let snapshot = Snapshot::decode(&bytes).expect("and loads");
    for &(kind, which, app, op, time) in input.requests.iter().take(32) {
        let credential = match kind % 4 {
            0 => Credential::Missing,
            1 => Credential::Malformed,
            2 if !data.keys.is_empty() => {
                Credential::Digest(data.keys[usize::from(which) % data.keys.len()].digest)
            }
            _ => Credential::Digest(KeyDigest([which; 32])),
        };
        let request = Request {
            credential,
            app: APPS[usize::from(app) % APPS.len()],
            op: OPS[usize::from(op) % OPS.len()],
            now: NOW + u64::from(time % 5) - 2,
        };
        assert_eq!(
            rules::decide(Some(&snapshot), &snapshot.resolve(&request)),
            reference(&data, &request),
            "{request:?}"
        );
    }
});
