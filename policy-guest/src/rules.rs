//! The decision rules: plain data in, [`Decision`] out.
//!
//! Order matters and is part of the contract: the credential is judged first
//! (so an unauthenticated caller learns nothing about apps or operations),
//! then the key's state, then the app, then the catalogue, then the grant.

use crate::model::{Credential, Decision, Reason, Request};
use crate::snapshot::Snapshot;

/// Decides `request` against `snapshot`; `None` means no snapshot is loaded.
pub fn decide(snapshot: Option<&Snapshot>, request: &Request<'_>) -> Decision {
    let Some(snapshot) = snapshot else {
        return Decision::deny(Reason::NoSnapshot);
    };
    let digest = match request.credential {
        Credential::Missing => return Decision::deny(Reason::MissingKey),
        Credential::Malformed => return Decision::deny(Reason::MalformedKey),
        Credential::Digest(digest) => digest,
    };
    let Some(key) = snapshot.key(&digest) else {
        return Decision::deny(Reason::UnknownKey);
    };
    let known = |reason: Reason| Decision {
        allow: reason == Reason::Allowed,
        reason,
        key_id: Some(key.id),
        scope_id: Some(key.scope_id),
        required: None,
    };
    let Some(scope) = snapshot.scope_of(&key) else {
        return known(Reason::RevokedKey);
    };
    if scope.app != request.app {
        return known(Reason::WrongApp);
    }
    let Some(required) = snapshot.requirement(request.op) else {
        return known(Reason::UnknownOperation);
    };
    if scope.grants(required) {
        known(Reason::Allowed)
    } else {
        Decision {
            required: Some(required),
            ..known(Reason::InsufficientPermission)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AgentsLevel, KeyDigest, Requirement, RuntimePermission, RuntimeSet};
    use crate::snapshot::{KeyEntry, ScopeEntry, SnapshotData, default_operations};

    const APP: &str = "acme";
    const LIVE: KeyDigest = KeyDigest([1; 32]);
    const REVOKED: KeyDigest = KeyDigest([2; 32]);

    fn snapshot(agents: AgentsLevel, runtime: RuntimeSet) -> Snapshot {
        let data = SnapshotData {
            operations: default_operations(),
            scopes: vec![ScopeEntry {
                id: 7,
                app: APP.to_owned(),
                agents,
                runtime,
            }],
            keys: vec![
                KeyEntry {
                    digest: LIVE,
                    id: 70,
                    scope_id: 7,
                    revoked: false,
                },
                KeyEntry {
                    digest: REVOKED,
                    id: 71,
                    scope_id: 7,
                    revoked: true,
                },
            ],
        };
        Snapshot::decode(&data.encode().unwrap()).unwrap()
    }

    fn ask(snapshot: &Snapshot, credential: Credential, app: &str, op: &str) -> Decision {
        decide(
            Some(snapshot),
            &Request {
                credential,
                app,
                op,
            },
        )
    }

    fn live(snapshot: &Snapshot, op: &str) -> Decision {
        ask(snapshot, Credential::Digest(LIVE), APP, op)
    }

    const AGENTS_OPS: [(&str, AgentsLevel); 5] = [
        ("agents.list", AgentsLevel::View),
        ("agents.get", AgentsLevel::View),
        ("agents.update", AgentsLevel::Edit),
        ("agents.create", AgentsLevel::Full),
        ("agents.delete", AgentsLevel::Full),
    ];

    const RUNTIME_OPS: [(&str, RuntimePermission); 4] = [
        ("runs.execute", RuntimePermission::Run),
        ("sessions.create", RuntimePermission::SessionCreate),
        ("sessions.terminate", RuntimePermission::SessionTerminate),
        ("documents.upload", RuntimePermission::DocumentUpload),
    ];

    #[test]
    fn every_level_against_every_agents_operation() {
        for held in AgentsLevel::ALL {
            let snapshot = snapshot(held, RuntimeSet::EMPTY);
            for (op, needed) in AGENTS_OPS {
                let decision = live(&snapshot, op);
                assert_eq!(decision.allow, held >= needed, "{held} doing {op}");
                assert_eq!((decision.key_id, decision.scope_id), (Some(70), Some(7)));
                if held >= needed {
                    assert_eq!(decision.reason, Reason::Allowed);
                    assert_eq!(decision.required, None);
                } else {
                    assert_eq!(decision.reason, Reason::InsufficientPermission);
                    assert_eq!(decision.required, Some(Requirement::Agents(needed)));
                }
            }
        }
    }

    #[test]
    fn every_runtime_permission_grants_exactly_its_operation() {
        for granted in RuntimePermission::ALL {
            let snapshot = snapshot(AgentsLevel::Full, RuntimeSet::EMPTY.with(granted));
            for (op, needed) in RUNTIME_OPS {
                let decision = live(&snapshot, op);
                assert_eq!(decision.allow, granted == needed, "{granted} doing {op}");
                if granted != needed {
                    assert_eq!(decision.reason, Reason::InsufficientPermission);
                    assert_eq!(decision.required, Some(Requirement::Runtime(needed)));
                }
            }
        }
    }

    #[test]
    fn runtime_permissions_do_not_grant_agents_access() {
        let all: RuntimeSet = RuntimePermission::ALL.into_iter().collect();
        let snapshot = snapshot(AgentsLevel::None, all);
        for (op, _) in AGENTS_OPS {
            assert_eq!(live(&snapshot, op).reason, Reason::InsufficientPermission);
        }
    }

    #[test]
    fn run_does_not_need_session_create() {
        let snapshot = snapshot(
            AgentsLevel::None,
            RuntimeSet::EMPTY.with(RuntimePermission::Run),
        );
        assert!(live(&snapshot, "runs.execute").allow);
        assert!(!live(&snapshot, "sessions.create").allow);
    }

    #[test]
    fn wrong_app_is_denied_with_the_key_named() {
        let snapshot = snapshot(AgentsLevel::Full, RuntimeSet::EMPTY);
        let decision = ask(&snapshot, Credential::Digest(LIVE), "globex", "agents.get");
        assert_eq!(decision.reason, Reason::WrongApp);
        assert_eq!((decision.key_id, decision.scope_id), (Some(70), Some(7)));
        assert!(!decision.allow);
    }

    #[test]
    fn revoked_key_is_denied_whatever_it_asks() {
        let snapshot = snapshot(AgentsLevel::Full, RuntimeSet::EMPTY);
        for op in ["agents.get", "agents.fly"] {
            let decision = ask(&snapshot, Credential::Digest(REVOKED), APP, op);
            assert_eq!(decision.reason, Reason::RevokedKey);
            assert_eq!((decision.key_id, decision.scope_id), (Some(71), Some(7)));
        }
    }

    #[test]
    fn credential_problems_are_named_and_reveal_nothing() {
        let snapshot = snapshot(AgentsLevel::Full, RuntimeSet::EMPTY);
        let cases = [
            (Credential::Missing, Reason::MissingKey),
            (Credential::Malformed, Reason::MalformedKey),
            (Credential::Digest(KeyDigest([9; 32])), Reason::UnknownKey),
        ];
        for (credential, reason) in cases {
            assert_eq!(
                ask(&snapshot, credential, APP, "agents.get"),
                Decision::deny(reason)
            );
        }
    }

    #[test]
    fn unknown_operation_is_denied() {
        let snapshot = snapshot(AgentsLevel::Full, RuntimeSet::EMPTY);
        let decision = live(&snapshot, "agents.fly");
        assert_eq!(decision.reason, Reason::UnknownOperation);
        assert_eq!(decision.key_id, Some(70));
        assert!(!decision.allow);
    }

    #[test]
    fn no_snapshot_denies_everything() {
        let request = Request {
            credential: Credential::Digest(LIVE),
            app: APP,
            op: "agents.get",
        };
        assert_eq!(decide(None, &request), Decision::deny(Reason::NoSnapshot));
    }

    #[test]
    fn the_catalogue_is_data() {
        let mut data = SnapshotData {
            operations: default_operations(),
            scopes: vec![ScopeEntry {
                id: 1,
                app: APP.to_owned(),
                agents: AgentsLevel::Edit,
                runtime: RuntimeSet::EMPTY,
            }],
            keys: vec![KeyEntry {
                digest: LIVE,
                id: 1,
                scope_id: 1,
                revoked: false,
            }],
        };
        data.operations.push(crate::snapshot::OperationEntry {
            name: "agents.publish".to_owned(),
            requires: Requirement::Agents(AgentsLevel::Edit),
        });
        let snapshot = Snapshot::decode(&data.encode().unwrap()).unwrap();
        assert!(live(&snapshot, "agents.publish").allow);
    }
}
