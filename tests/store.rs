//! The store through the library API, one suite run on both backends:
//! transactions, limits, names, tombstones, revisions and the changes since
//! one, copies. Each case is written once, against [`Backend`]; the
//! `backends!` list runs it on SQLite and on PostgreSQL.

use keyscope_runtime::{AgentsLevel, RuntimeSet};
use keyscope_store::snapshot::Builder;
use keyscope_store::{
    AnyStore as Store, Location, Quotas, ScopeRef, ScopeUpdate, Store as _, StoreError as Error,
    TokenKind,
};

/// Where a case's store lives; it opens as often as the case likes.
pub struct Backend {
    _dir: tempfile::TempDir,
    location: Location,
}

impl Backend {
    fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let location = Location::Sqlite(dir.path().join("k.db"));
        Self {
            _dir: dir,
            location,
        }
    }

    fn postgres() -> Self {
        // The password in the URL here: the library reads no environment
        // then. The CLI tests pass it in $PGPASSWORD.
        let url = crate::pg::shared().database();
        let url = url.replacen(
            crate::pg::USER,
            &format!("{}:{}", crate::pg::USER, crate::pg::PASSWORD),
            1,
        );
        Self {
            _dir: tempfile::tempdir().unwrap(),
            location: url.parse().unwrap(),
        }
    }

    fn open(&self) -> Store {
        Store::open(&self.location).unwrap()
    }
}

fn by_path(app: &str, name: &str) -> ScopeRef {
    ScopeRef::Path {
        app: app.to_owned(),
        name: name.to_owned(),
    }
}

/// Each case, as a test on each backend.
macro_rules! backends {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(#[test] fn $case() { super::$case(&super::Backend::sqlite()) })*
        }
        mod postgres {
            $(#[test] fn $case() { super::$case(&super::Backend::postgres()) })*
        }
    };
}

backends!(
    the_store_keeps_only_digests_and_prefixes,
    revocation_is_idempotent_and_keeps_its_first_time,
    snapshots_carry_tombstones_of_deleted_scopes,
    a_failed_change_leaves_nothing_behind,
    a_store_reopens_with_its_data,
    limits_and_names_hold,
    every_change_takes_a_revision_and_shows_in_the_changes_since,
    an_incremental_rebuild_equals_a_full_one,
    a_copy_to_the_other_backend_builds_the_same_snapshot,
    the_catalogue_and_routes_keep_their_rules,
    usage_counts_saturate_and_never_stand_in_a_revocations_way,
    a_key_in_its_rotation_grace_counts_toward_the_limit,
    fleet_tokens_are_named_revocable_and_never_admin_tokens,
    roles_and_console_sessions_are_kept_for_every_process,
);

fn roles_and_console_sessions_are_kept_for_every_process(backend: &Backend) {
    use keyscope_store::{ConsoleSession, Role};
    let mut store = backend.open();
    let role: Role = "app-admin:acme,globex".parse().unwrap();
    let token = store.create_admin_token("bob", &role, &[3; 32]).unwrap();
    assert_eq!(token.role.as_ref(), Some(&role));
    let fleet = store
        .create_token(TokenKind::Fleet, "edge", &[4; 32])
        .unwrap();
    assert_eq!(fleet.role, None);
    // Another process reads the role back.
    let tokens = backend.open().tokens(TokenKind::Admin).unwrap();
    assert_eq!(tokens[0].role.as_ref(), Some(&role));

    let session = ConsoleSession {
        token: Some([3; 32]),
        actor: "admin:bob".into(),
        role: role.clone(),
        started_ms: 1_000_000,
        ends_ms: 2_000_000,
    };
    let (idle, a, b) = (60_000, [1; 32], [2; 32]);
    store.open_session(&a, &session, 1_000_000, idle).unwrap();
    store
        .open_session(
            &b,
            &ConsoleSession {
                token: None,
                actor: "oidc:x (x@y)".into(),
                ..session.clone()
            },
            1_000_000,
            idle,
        )
        .unwrap();
    // Any process finds it, and a use keeps it from going idle.
    let mut other = backend.open();
    assert_eq!(
        other.session(&a, 1_050_000, idle).unwrap(),
        Some(session.clone())
    );
    assert_eq!(
        store.session(&a, 1_100_000, idle).unwrap(),
        Some(session.clone())
    );
    // Idle for a minute: gone, for everyone.
    assert_eq!(other.session(&b, 1_060_000, idle).unwrap(), None);
    assert_eq!(store.session(&b, 1_000_000, idle).unwrap(), None);
    // Its end, however busy.
    assert_eq!(store.session(&a, 2_000_000, idle).unwrap(), None);
    store.open_session(&a, &session, 1_000_000, idle).unwrap();
    other.end_session(&a).unwrap();
    assert_eq!(store.session(&a, 1_000_001, idle).unwrap(), None);
    // A digest that was never a session, and the stored id's digest only.
    assert_eq!(store.session(&[9; 32], 1_000_000, idle).unwrap(), None);
}

fn the_store_keeps_only_digests_and_prefixes(backend: &Backend) {
    let mut store = backend.open();
    store
        .create_scope("acme", "s", AgentsLevel::View, RuntimeSet::EMPTY)
        .unwrap();
    let created = store.create_key(&by_path("acme", "s"), "k").unwrap();
    assert_eq!(created.key.prefix, created.secret.display_prefix());
    let data = store.snapshot_data().unwrap().data;
    assert_eq!(data.keys.len(), 1);
    assert_eq!(data.keys[0].digest, created.secret.digest());
}

fn revocation_is_idempotent_and_keeps_its_first_time(backend: &Backend) {
    let mut store = backend.open();
    store
        .create_scope("acme", "s", AgentsLevel::View, RuntimeSet::EMPTY)
        .unwrap();
    let key = store.create_key(&ScopeRef::Id(1), "k").unwrap().key;
    let first = store.revoke_key(key.id).unwrap();
    let revision = store.revision().unwrap();
    let second = store.revoke_key(key.id).unwrap();
    assert!(first.revoked_at.is_some());
    assert_eq!(first.revoked_at, second.revoked_at);
    assert_eq!(
        store.revision().unwrap(),
        revision,
        "revoking a revoked key changes nothing"
    );
    assert!(matches!(store.revoke_key(42), Err(Error::KeyNotFound(42))));
}

fn snapshots_carry_tombstones_of_deleted_scopes(backend: &Backend) {
    let mut store = backend.open();
    let scope = store
        .create_scope("acme", "s", AgentsLevel::Full, RuntimeSet::EMPTY)
        .unwrap();
    store.create_key(&ScopeRef::Id(scope.id), "k").unwrap();
    assert!(matches!(
        store.delete_scope(&ScopeRef::Id(scope.id), false),
        Err(Error::ScopeHasLiveKeys { count: 1, .. })
    ));
    store.delete_scope(&ScopeRef::Id(scope.id), true).unwrap();
    let data = store.snapshot_data().unwrap().data;
    assert!(data.scopes.is_empty());
    assert_eq!(data.keys.len(), 1);
    assert!(data.keys[0].revoked);
    data.encode().unwrap();
    assert!(matches!(
        store.scope(&ScopeRef::Id(scope.id)),
        Err(Error::ScopeNotFound(_))
    ));
    // The name is free again; the tombstone stays.
    store
        .create_scope("acme", "s", AgentsLevel::View, RuntimeSet::EMPTY)
        .unwrap();
}

fn a_failed_change_leaves_nothing_behind(backend: &Backend) {
    let mut store = backend.open();
    store
        .create_scope("acme", "a", AgentsLevel::View, RuntimeSet::EMPTY)
        .unwrap();
    store
        .create_scope("acme", "b", AgentsLevel::View, RuntimeSet::EMPTY)
        .unwrap();
    let revision = store.revision().unwrap();
    let rename = ScopeUpdate {
        name: Some("a".to_owned()),
        agents: Some(AgentsLevel::Full),
        ..ScopeUpdate::default()
    };
    assert!(matches!(
        store.update_scope(&by_path("acme", "b"), &rename),
        Err(Error::DuplicateScope { .. })
    ));
    let b = store.scope(&by_path("acme", "b")).unwrap();
    assert_eq!(
        b.agents,
        AgentsLevel::View,
        "a refused update changes nothing"
    );
    assert_eq!(store.revision().unwrap(), revision, "nor the revision");
}

fn a_store_reopens_with_its_data(backend: &Backend) {
    {
        let mut store = backend.open();
        store
            .create_scope("acme", "s", AgentsLevel::Edit, "run".parse().unwrap())
            .unwrap();
    }
    let store = Store::open_existing(&backend.location).unwrap();
    let scopes = store.list_scopes(None).unwrap();
    assert_eq!(scopes.len(), 1);
    assert_eq!(scopes[0].runtime.to_string(), "run");
    assert_eq!(store.operations().unwrap().len(), 13);
    assert_eq!(store.routes().unwrap().len(), 14);
}

fn limits_and_names_hold(backend: &Backend) {
    let mut store = backend.open();
    store
        .set_quotas(Quotas {
            scopes_per_app: 2,
            keys_per_scope: 2,
        })
        .unwrap();
    let s = store
        .create_scope("acme", "s", AgentsLevel::View, RuntimeSet::EMPTY)
        .unwrap();
    assert!(matches!(
        store.create_scope("acme", "s", AgentsLevel::View, RuntimeSet::EMPTY),
        Err(Error::DuplicateScope { .. })
    ));
    store
        .create_scope("acme", "t", AgentsLevel::View, RuntimeSet::EMPTY)
        .unwrap();
    assert!(matches!(
        store.create_scope("acme", "u", AgentsLevel::View, RuntimeSet::EMPTY),
        Err(Error::ScopeLimit { limit: 2, .. })
    ));
    // Another app has its own count.
    store
        .create_scope("other", "u", AgentsLevel::View, RuntimeSet::EMPTY)
        .unwrap();
    let scope = ScopeRef::Id(s.id);
    let first = store.create_key(&scope, "k1").unwrap();
    assert!(matches!(
        store.create_key(&scope, "k1"),
        Err(Error::DuplicateKey { .. })
    ));
    store.create_key(&scope, "k2").unwrap();
    assert!(matches!(
        store.create_key(&scope, "k3"),
        Err(Error::KeyLimit { limit: 2, .. })
    ));
    // A revoked key frees its place and its name.
    store.revoke_key(first.key.id).unwrap();
    store.create_key(&scope, "k1").unwrap();
    assert!(matches!(
        store.create_key(&scope, "bad/name"),
        Err(Error::Invalid { .. })
    ));
    assert_eq!(
        store.quotas().unwrap(),
        Quotas {
            scopes_per_app: 2,
            keys_per_scope: 2
        }
    );
}

fn every_change_takes_a_revision_and_shows_in_the_changes_since(backend: &Backend) {
    let mut store = backend.open();
    let start = store.revision().unwrap();
    let scope = store
        .create_scope("acme", "s", AgentsLevel::View, RuntimeSet::EMPTY)
        .unwrap();
    let after_scope = store.revision().unwrap();
    assert!(after_scope > start);
    let key = store.create_key(&ScopeRef::Id(scope.id), "k").unwrap().key;
    let other = store.create_key(&ScopeRef::Id(scope.id), "k2").unwrap().key;
    let after_keys = store.revision().unwrap();
    store.revoke_key(key.id).unwrap();
    let changes = store.changes_since(after_keys).unwrap();
    assert_eq!(changes.revision, store.revision().unwrap());
    assert!(changes.scopes.is_empty());
    assert_eq!(changes.keys.len(), 1, "only the revoked key changed");
    assert_eq!(changes.keys[0].id, key.id);
    assert!(changes.keys[0].revoked);
    assert!(changes.catalogue.is_none());

    let changes = store.changes_since(after_scope).unwrap();
    let ids: Vec<u64> = changes.keys.iter().map(|k| k.id).collect();
    assert_eq!(ids, [key.id, other.id]);

    store
        .set_operation("agents.export", "agents:view".parse().unwrap())
        .unwrap();
    let changes = store.changes_since(changes.revision).unwrap();
    let (ops, routes) = changes.catalogue.expect("the catalogue changed");
    assert_eq!(ops.len(), 14);
    assert_eq!(routes.len(), 14);
    assert!(store.changes_since(changes.revision).unwrap().is_empty());
}

fn an_incremental_rebuild_equals_a_full_one(backend: &Backend) {
    let mut store = backend.open();
    let a = store
        .create_scope("acme", "a", AgentsLevel::View, RuntimeSet::EMPTY)
        .unwrap();
    let k = store.create_key(&ScopeRef::Id(a.id), "k").unwrap().key;
    let (mut builder, _) = Builder::new(&mut store).unwrap();
    assert!(builder.update(&mut store).unwrap().is_none(), "no change");

    let b = store
        .create_scope("acme", "b", AgentsLevel::Full, "run".parse().unwrap())
        .unwrap();
    store.create_key(&ScopeRef::Id(b.id), "k").unwrap();
    store.revoke_key(k.id).unwrap();
    store
        .update_scope(
            &ScopeRef::Id(a.id),
            &ScopeUpdate {
                agents: Some(AgentsLevel::Edit),
                ..ScopeUpdate::default()
            },
        )
        .unwrap();
    store.delete_scope(&ScopeRef::Id(b.id), true).unwrap();
    store
        .remove_route("GET", "/api/v2/apps/{app}/agents")
        .unwrap();
    let update = builder.update(&mut store).unwrap().expect("changes");
    assert_eq!(update.revision, store.revision().unwrap());
    let whole = keyscope_store::snapshot::build(&mut store).unwrap();
    assert_eq!(
        builder.snapshot().to_bytes().unwrap(),
        whole,
        "the snapshot from the changes is the snapshot of the whole store"
    );
    assert!(
        whole.ends_with(&update.digest),
        "the update names its digest"
    );
}

fn a_copy_to_the_other_backend_builds_the_same_snapshot(backend: &Backend) {
    let mut store = backend.open();
    let a = store
        .create_scope("acme", "a", AgentsLevel::View, RuntimeSet::EMPTY)
        .unwrap();
    let k = store.create_key(&ScopeRef::Id(a.id), "k").unwrap();
    store.create_key(&ScopeRef::Id(a.id), "gone").unwrap();
    store.revoke_key(k.key.id + 1).unwrap();
    let b = store
        .create_scope("acme", "b", AgentsLevel::Full, RuntimeSet::EMPTY)
        .unwrap();
    store.delete_scope(&ScopeRef::Id(b.id), true).unwrap();
    store
        .set_quotas(Quotas {
            scopes_per_app: 7,
            keys_per_scope: 9,
        })
        .unwrap();
    store
        .create_token(TokenKind::Admin, "alice", &[7; 32])
        .unwrap();
    store
        .create_token(TokenKind::Fleet, "edge-1", &[8; 32])
        .unwrap();
    let rotated = store.create_key(&ScopeRef::Id(a.id), "rolled").unwrap();
    store
        .rotate_key_delivered(rotated.key.id, 60_000, |_, _| Ok::<_, ()>(()))
        .unwrap()
        .unwrap();
    store
        .record_usage(&[keyscope_keys::usage::KeyUse {
            key_id: k.key.id,
            uses: 3,
            last_used_ms: 1_700_000_000_000,
        }])
        .unwrap();

    let other = match backend.location {
        Location::Sqlite(_) => Backend::postgres(),
        Location::Postgres(_) => Backend::sqlite(),
    };
    let mut copy = other.open();
    let dump = keyscope_store::copy::copy(&mut store, &mut copy, |_| {}, &mut |_| {}).unwrap();
    assert_eq!(copy.dump().unwrap(), dump, "every row, as it was");
    assert_eq!(
        keyscope_store::snapshot::build(&mut copy).unwrap(),
        keyscope_store::snapshot::build(&mut store).unwrap()
    );
    assert_eq!(copy.revision().unwrap(), store.revision().unwrap());
    let tokens = copy.tokens(TokenKind::Admin).unwrap();
    assert_eq!(
        (tokens[0].name.as_str(), tokens[0].digest),
        ("alice", [7; 32])
    );
    let tokens = copy.tokens(TokenKind::Fleet).unwrap();
    assert_eq!(
        (tokens[0].name.as_str(), tokens[0].digest),
        ("edge-1", [8; 32])
    );
    // The trail came along, and verifies in the other backend.
    let trail = copy.audit_trail(None).unwrap();
    assert_eq!(
        keyscope_store::audit::verify(&trail),
        Ok(trail.entries.len() as u64)
    );
    assert!(trail.entries.len() >= 8, "{}", trail.entries.len());
    // Ids go on after the copied ones, and a copy is refused into a store
    // that holds data.
    let next = copy.create_key(&ScopeRef::Id(a.id), "new").unwrap();
    assert_eq!(next.key.id, k.key.id + 4);
    assert!(matches!(
        keyscope_store::copy::copy(&mut store, &mut copy, |_| {}, &mut |_| {}),
        Err(Error::DestinationNotEmpty(_))
    ));
}

fn the_catalogue_and_routes_keep_their_rules(backend: &Backend) {
    let mut store = backend.open();
    assert!(matches!(
        store.remove_operation("sessions.get"),
        Err(Error::Invalid { .. })
    ));
    assert!(matches!(
        store.set_route("GET", "/{app}/x", "no.such.op"),
        Err(Error::Invalid { .. })
    ));
    store.set_route("GET", "/{app}/x", "sessions.get").unwrap();
    assert!(matches!(
        store.remove_route("GET", "/{app}/y"),
        Err(Error::Invalid { .. })
    ));
    let routes = store.routes().unwrap();
    assert_eq!(routes.last().unwrap().pattern, "/{app}/x");
}

fn usage_counts_saturate_and_never_stand_in_a_revocations_way(backend: &Backend) {
    use keyscope_keys::usage::KeyUse;
    let mut store = backend.open();
    store
        .create_scope("acme", "s", AgentsLevel::View, RuntimeSet::EMPTY)
        .unwrap();
    let key = store.create_key(&ScopeRef::Id(1), "k").unwrap().key;
    let other = store.create_key(&ScopeRef::Id(1), "j").unwrap().key;
    // What a hostile gateway once sent: i64::MAX, then one more. The batch
    // holds another key's use and an id the store lacks; neither is lost
    // nor fails the batch.
    for uses in [i64::MAX as u64, 1, u64::MAX] {
        let batch = [
            KeyUse {
                key_id: key.id,
                uses,
                last_used_ms: 1,
            },
            KeyUse {
                key_id: other.id,
                uses: 1,
                last_used_ms: 2,
            },
            KeyUse {
                key_id: 999_999,
                uses: 1,
                last_used_ms: 2,
            },
        ];
        assert_eq!(store.record_usage(&batch).unwrap(), 2);
    }
    let keys = store.list_keys(None).unwrap();
    assert_eq!(keys[0].uses, i64::MAX as u64, "saturated at i64::MAX");
    assert_eq!(keys[1].uses, 3);
    assert!(store.revoke_key(key.id).unwrap().revoked_at.is_some());
    assert_eq!(store.repair_usage().unwrap(), 0, "nothing to repair");

    // A store an older keyscope let overflow (SQLite made the count a
    // REAL): reads, revocations and rotations still work, and the repair
    // says what it fixed.
    if let Location::Sqlite(path) = &backend.location {
        let conn = rusqlite::Connection::open(path).unwrap();
        conn.execute(
            "UPDATE keys SET uses = 9223372036854775807.0 * 2 WHERE id = ?1",
            [other.id as i64],
        )
        .unwrap();
        drop(conn);
        let mut store = backend.open();
        assert_eq!(store.list_keys(None).unwrap()[1].uses, i64::MAX as u64);
        store
            .rotate_key_delivered(other.id, 0, |_, _| Ok::<_, ()>(()))
            .unwrap()
            .unwrap();
        store.snapshot_data().unwrap();
        store.dump().unwrap();
        assert_eq!(store.repair_usage().unwrap(), 1);
        assert_eq!(store.repair_usage().unwrap(), 0);
    }
}

fn a_key_in_its_rotation_grace_counts_toward_the_limit(backend: &Backend) {
    let mut store = backend.open();
    store
        .set_quotas(Quotas {
            scopes_per_app: 1,
            keys_per_scope: 1,
        })
        .unwrap();
    store
        .create_scope("acme", "s", AgentsLevel::View, RuntimeSet::EMPTY)
        .unwrap();
    let key = store.create_key(&ScopeRef::Id(1), "k").unwrap().key;
    // With a grace, the old key stays live beside its successor: two keys
    // in a scope limited to one.
    let refused = store.rotate_key_delivered(key.id, 3_600_000, |_, _| Ok::<_, ()>(()));
    assert!(
        matches!(refused, Err(Error::KeyLimit { limit: 1, .. })),
        "{refused:?}"
    );
    assert!(
        refused
            .unwrap_err()
            .to_string()
            .contains("keys in a rotation's grace count")
    );
    assert_eq!(store.list_keys(None).unwrap().len(), 1, "nothing changed");
    // Without one, the successor takes the old key's place.
    let (_, _, successor) = store
        .rotate_key_delivered(key.id, 0, |_, _| Ok::<_, ()>(()))
        .unwrap()
        .unwrap();
    // A chain of rotations with a grace cannot pile up live keys either.
    store
        .set_quotas(Quotas {
            scopes_per_app: 1,
            keys_per_scope: 2,
        })
        .unwrap();
    let (_, _, next) = store
        .rotate_key_delivered(successor.key.id, 3_600_000, |_, _| Ok::<_, ()>(()))
        .unwrap()
        .unwrap();
    assert!(matches!(
        store.rotate_key_delivered(next.key.id, 3_600_000, |_, _| Ok::<_, ()>(())),
        Err(Error::KeyLimit { limit: 2, .. })
    ));
    assert!(matches!(
        store.create_key(&ScopeRef::Id(1), "extra"),
        Err(Error::KeyLimit { limit: 2, .. })
    ));
}

fn fleet_tokens_are_named_revocable_and_never_admin_tokens(backend: &Backend) {
    let mut store = backend.open();
    let edge = store
        .create_token(TokenKind::Fleet, "edge-1", &[1; 32])
        .unwrap();
    assert_eq!(
        (edge.kind, edge.name.as_str()),
        (TokenKind::Fleet, "edge-1")
    );
    // One name per kind: an admin may be called as a gateway is.
    store
        .create_token(TokenKind::Admin, "edge-1", &[2; 32])
        .unwrap();
    let error = store
        .create_token(TokenKind::Fleet, "edge-1", &[3; 32])
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("a live fleet token is already named `edge-1`"),
        "{error}"
    );
    // A digest is never taken twice, whatever the kind: a revoked admin
    // token cannot come back as a gateway's, nor a gateway's as an admin's.
    for (kind, digest) in [(TokenKind::Fleet, [2; 32]), (TokenKind::Admin, [1; 32])] {
        let error = store.create_token(kind, "other", &digest).unwrap_err();
        assert!(matches!(error, Error::TokenReused), "{error}");
    }
    let error = store
        .create_token(TokenKind::Fleet, "eu/west", &[4; 32])
        .unwrap_err();
    assert!(error.to_string().contains("gateway name"), "{error}");
    // Each kind lists its own.
    let names = |store: &Store, kind| -> Vec<String> {
        store
            .tokens(kind)
            .unwrap()
            .into_iter()
            .map(|t| t.name)
            .collect()
    };
    assert_eq!(names(&store, TokenKind::Fleet), ["edge-1"]);
    assert_eq!(names(&store, TokenKind::Admin), ["edge-1"]);
    // Revoking the gateway's leaves the admin's, and the trail says which.
    let revoked = store.revoke_token(TokenKind::Fleet, "edge-1").unwrap();
    assert!(revoked.revoked_at.is_some());
    assert!(
        store.tokens(TokenKind::Admin).unwrap()[0]
            .revoked_at
            .is_none()
    );
    let error = store.revoke_token(TokenKind::Fleet, "edge-1").unwrap_err();
    assert!(
        error
            .to_string()
            .contains("no live fleet token named `edge-1`"),
        "{error}"
    );
    let trail = store.audit_trail(None).unwrap();
    let actions: Vec<(&str, &str)> = trail
        .entries
        .iter()
        .map(|e| (e.action.as_str(), e.target.as_str()))
        .collect();
    assert_eq!(
        actions,
        [
            ("fleet-token.create", "fleet-token:edge-1"),
            ("admin-token.create", "admin-token:edge-1"),
            ("fleet-token.revoke", "fleet-token:edge-1"),
        ]
    );
    // The name is free again.
    store
        .create_token(TokenKind::Fleet, "edge-1", &[5; 32])
        .unwrap();
}
