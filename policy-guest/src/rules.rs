//! The decision rules: plain data in, [`Decision`] out.
//!
//! Order matters and is part of the contract: the credential is judged first
//! (so an unauthenticated caller learns nothing about apps or operations),
//! then the key's state (revoked, then expired), then the app, then the
//! catalogue, then the grant.

use crate::model::{Credential, Decision, HttpRequest, Millis, Reason, ResolvedRequest};
use crate::routes::RouteMatch;
use crate::snapshot::{KeyRecord, ScopeGrant, Snapshot};

/// Decides `request` against `snapshot`; `None` means no snapshot is loaded.
/// A request whose ids were read from another snapshot is denied with
/// [`Reason::PolicyError`]: its ids may name other apps and operations here.
pub fn decide(snapshot: Option<&Snapshot>, request: &ResolvedRequest) -> Decision {
    if snapshot.is_some_and(|snapshot| snapshot.stamp() != request.snapshot) {
        return Decision::deny(Reason::PolicyError);
    }
    let (snapshot, key, scope) = match judge_key(snapshot, request.credential, request.now) {
        Ok(found) => found,
        Err(denied) => return denied,
    };
    let (grant, app) = scope;
    judge_grant(snapshot, key, grant, request.app == Some(app), request.op)
}

/// A decision on an HTTP request, with the route it matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Routed<'p> {
    /// The app and operation the route table gave, if a route matched.
    pub route: Option<RouteMatch<'p>>,
    /// The decision.
    pub decision: Decision,
}

/// Decides an HTTP request: the snapshot's route table names the app and
/// the operation, then the same rules as [`decide`] apply. A request that
/// matches no route is denied with [`Reason::UnknownOperation`], after the
/// credential is judged, as for an operation missing from the catalogue.
pub fn decide_http<'p>(snapshot: Option<&Snapshot>, request: &HttpRequest<'p>) -> Routed<'p> {
    let route = snapshot.and_then(|snapshot| snapshot.route(request.method, request.path));
    let decision = match judge_key(snapshot, request.credential, request.now) {
        Err(denied) => denied,
        Ok((snapshot, key, (grant, app))) => {
            let same_app = |route: &RouteMatch<'_>| snapshot.app_name(app) == Some(route.app);
            match route {
                Some(route) => judge_grant(snapshot, key, grant, same_app(&route), Some(route.op)),
                None => judge_grant(snapshot, key, grant, true, None),
            }
        }
    };
    Routed { route, decision }
}

/// A known key's decision before its app and operation are looked at.
fn known(key: KeyRecord, reason: Reason) -> Decision {
    Decision {
        allow: reason == Reason::Allowed,
        reason,
        key_id: Some(key.id),
        scope_id: Some(key.scope_id),
        required: None,
    }
}

/// The credential and the key's state: the snapshot, the key and its
/// scope's grant and app, or a deny.
fn judge_key(
    snapshot: Option<&Snapshot>,
    credential: Credential,
    now: Millis,
) -> Result<(&Snapshot, KeyRecord, (ScopeGrant, u32)), Decision> {
    let Some(snapshot) = snapshot else {
        return Err(Decision::deny(Reason::NoSnapshot));
    };
    let digest = match credential {
        Credential::Missing => return Err(Decision::deny(Reason::MissingKey)),
        Credential::Malformed => return Err(Decision::deny(Reason::MalformedKey)),
        Credential::Digest(digest) => digest,
    };
    let Some(key) = snapshot.key(&digest) else {
        return Err(Decision::deny(Reason::UnknownKey));
    };
    let Some(scope) = snapshot.scope_of(&key) else {
        return Err(known(key, Reason::RevokedKey));
    };
    if key.is_expired(now) {
        return Err(known(key, Reason::ExpiredKey));
    }
    Ok((snapshot, key, scope))
}

/// A live key's scope against the app (whether it is the scope's) and the
/// operation (`None`: not catalogued, or no route matched).
fn judge_grant(
    snapshot: &Snapshot,
    key: KeyRecord,
    grant: ScopeGrant,
    same_app: bool,
    op: Option<u32>,
) -> Decision {
    if !same_app {
        return known(key, Reason::WrongApp);
    }
    let Some(required) = op.and_then(|op| snapshot.requirement(op)) else {
        return known(key, Reason::UnknownOperation);
    };
    if grant.grants(required) {
        known(key, Reason::Allowed)
    } else {
        Decision {
            required: Some(required),
            ..known(key, Reason::InsufficientPermission)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        AgentsLevel, KeyDigest, Method, Request, Requirement, RuntimePermission, RuntimeSet,
    };
    use crate::routes::default_routes;
    use crate::snapshot::{KeyEntry, ScopeEntry, SnapshotData, default_operations};

    const APP: &str = "acme";
    const LIVE: KeyDigest = KeyDigest([1; 32]);
    const REVOKED: KeyDigest = KeyDigest([2; 32]);
    const EXPIRING: KeyDigest = KeyDigest([3; 32]);
    /// The time the tests ask at, and `EXPIRING`'s not-after.
    const NOW: Millis = 1_767_225_600_000;

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
                    not_after: None,
                },
                KeyEntry {
                    digest: REVOKED,
                    id: 71,
                    scope_id: 7,
                    revoked: true,
                    not_after: Some(NOW),
                },
                KeyEntry {
                    digest: EXPIRING,
                    id: 72,
                    scope_id: 7,
                    revoked: false,
                    not_after: Some(NOW),
                },
            ],
            routes: default_routes(),
        };
        Snapshot::decode(&data.encode().unwrap()).unwrap()
    }

    fn ask_at(
        snapshot: &Snapshot,
        credential: Credential,
        app: &str,
        op: &str,
        now: Millis,
    ) -> Decision {
        let request = Request {
            credential,
            app,
            op,
            now,
        };
        decide(Some(snapshot), &snapshot.resolve(&request))
    }

    fn ask(snapshot: &Snapshot, credential: Credential, app: &str, op: &str) -> Decision {
        ask_at(snapshot, credential, app, op, NOW)
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
    fn a_key_works_until_its_not_after_and_is_expired_after_it() {
        let snapshot = snapshot(AgentsLevel::Full, RuntimeSet::EMPTY);
        let at = |now| {
            ask_at(
                &snapshot,
                Credential::Digest(EXPIRING),
                APP,
                "agents.get",
                now,
            )
        };
        assert!(at(0).allow);
        assert!(at(NOW).allow, "valid at its not-after itself");
        let expired = at(NOW + 1);
        assert_eq!(expired.reason, Reason::ExpiredKey);
        assert_eq!((expired.key_id, expired.scope_id), (Some(72), Some(7)));
        assert!(!expired.allow);
        // Expiry is judged after revocation and before the app.
        let revoked = ask_at(
            &snapshot,
            Credential::Digest(REVOKED),
            APP,
            "agents.get",
            NOW + 1,
        );
        assert_eq!(revoked.reason, Reason::RevokedKey);
        let elsewhere = ask_at(
            &snapshot,
            Credential::Digest(EXPIRING),
            "globex",
            "agents.get",
            NOW + 1,
        );
        assert_eq!(elsewhere.reason, Reason::ExpiredKey);
        // A key with no not-after never expires.
        assert!(
            ask_at(
                &snapshot,
                Credential::Digest(LIVE),
                APP,
                "agents.get",
                Millis::MAX
            )
            .allow
        );
    }

    #[test]
    fn ids_from_another_snapshot_are_refused() {
        let snapshot = snapshot(AgentsLevel::Full, RuntimeSet::EMPTY);
        let request = Request {
            credential: Credential::Digest(LIVE),
            app: APP,
            op: "agents.get",
            now: NOW,
        };
        let mut resolved = snapshot.resolve(&request);
        assert!(decide(Some(&snapshot), &resolved).allow);
        resolved.snapshot ^= 1;
        assert_eq!(
            decide(Some(&snapshot), &resolved),
            Decision::deny(Reason::PolicyError)
        );
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
        let request = ResolvedRequest {
            credential: Credential::Digest(LIVE),
            snapshot: 0,
            app: Some(0),
            op: Some(0),
            now: NOW,
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
                not_after: None,
            }],
            routes: Vec::new(),
        };
        data.operations.push(crate::snapshot::OperationEntry {
            name: "agents.publish".to_owned(),
            requires: Requirement::Agents(AgentsLevel::Edit),
        });
        let snapshot = Snapshot::decode(&data.encode().unwrap()).unwrap();
        assert!(live(&snapshot, "agents.publish").allow);
    }

    fn http(
        snapshot: &Snapshot,
        credential: Credential,
        method: &'static str,
        path: &'static str,
    ) -> Routed<'static> {
        let request = HttpRequest {
            credential,
            method: Method::parse(method),
            path,
            now: NOW,
        };
        decide_http(Some(snapshot), &request)
    }

    #[test]
    fn http_requests_are_routed_then_decided_by_the_same_rules() {
        let snapshot = snapshot(AgentsLevel::View, RuntimeSet::EMPTY);
        let get = http(
            &snapshot,
            Credential::Digest(LIVE),
            "GET",
            "/api/v2/apps/acme/agents/a1",
        );
        assert_eq!(
            get.route,
            Some(RouteMatch {
                app: APP,
                op: snapshot.op_id("agents.get").unwrap(),
            })
        );
        assert_eq!(get.decision, live(&snapshot, "agents.get"));
        assert!(get.decision.allow);

        let delete = http(
            &snapshot,
            Credential::Digest(LIVE),
            "DELETE",
            "/api/v2/apps/acme/agents/a1",
        );
        assert_eq!(delete.decision.reason, Reason::InsufficientPermission);

        let other = http(
            &snapshot,
            Credential::Digest(LIVE),
            "GET",
            "/api/v2/apps/globex/agents",
        );
        assert_eq!(other.decision.reason, Reason::WrongApp);
    }

    #[test]
    fn an_unmatched_route_is_an_unknown_operation_after_the_credential() {
        let snapshot = snapshot(AgentsLevel::Full, RuntimeSet::EMPTY);
        let path = "/api/v2/apps/acme/secrets";
        for (credential, reason) in [
            (Credential::Digest(LIVE), Reason::UnknownOperation),
            (Credential::Digest(REVOKED), Reason::RevokedKey),
            (Credential::Missing, Reason::MissingKey),
            (Credential::Digest(KeyDigest([9; 32])), Reason::UnknownKey),
        ] {
            let routed = http(&snapshot, credential, "GET", path);
            assert_eq!(routed.route, None);
            assert_eq!(routed.decision.reason, reason);
            assert!(!routed.decision.allow);
        }
        let request = HttpRequest {
            credential: Credential::Digest(LIVE),
            method: Method::Get,
            path,
            now: NOW,
        };
        assert_eq!(
            decide_http(None, &request).decision,
            Decision::deny(Reason::NoSnapshot)
        );
    }
}
