//! The store through the library API: transactions, tombstones, snapshots.

use keyscope_runtime::{AgentsLevel, RuntimeSet};
use keyscope_store::{
    ScopeRef, ScopeUpdate, SqliteStore as Store, Store as _, StoreError as Error,
};

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("k.db")).unwrap();
    (dir, store)
}

fn by_path(app: &str, name: &str) -> ScopeRef {
    ScopeRef::Path {
        app: app.to_owned(),
        name: name.to_owned(),
    }
}

#[test]
fn the_store_keeps_only_digests_and_prefixes() {
    let (_dir, mut store) = store();
    store
        .create_scope("acme", "s", AgentsLevel::View, RuntimeSet::EMPTY)
        .unwrap();
    let created = store.create_key(&by_path("acme", "s"), "k").unwrap();
    assert_eq!(created.key.prefix, created.secret.display_prefix());
    let data = store.snapshot_data().unwrap();
    assert_eq!(data.keys.len(), 1);
    assert_eq!(data.keys[0].digest, created.secret.digest());
}

#[test]
fn revocation_is_idempotent_and_keeps_its_first_time() {
    let (_dir, mut store) = store();
    store
        .create_scope("acme", "s", AgentsLevel::View, RuntimeSet::EMPTY)
        .unwrap();
    let key = store.create_key(&ScopeRef::Id(1), "k").unwrap().key;
    let first = store.revoke_key(key.id).unwrap();
    let second = store.revoke_key(key.id).unwrap();
    assert!(first.revoked_at.is_some());
    assert_eq!(first.revoked_at, second.revoked_at);
    assert!(matches!(store.revoke_key(42), Err(Error::KeyNotFound(42))));
}

#[test]
fn snapshots_carry_tombstones_of_deleted_scopes() {
    let (_dir, mut store) = store();
    let scope = store
        .create_scope("acme", "s", AgentsLevel::Full, RuntimeSet::EMPTY)
        .unwrap();
    store.create_key(&ScopeRef::Id(scope.id), "k").unwrap();
    store.delete_scope(&ScopeRef::Id(scope.id), true).unwrap();
    let data = store.snapshot_data().unwrap();
    assert!(data.scopes.is_empty());
    assert_eq!(data.keys.len(), 1);
    assert!(data.keys[0].revoked);
    data.encode().unwrap();
    assert!(matches!(
        store.scope(&ScopeRef::Id(scope.id)),
        Err(Error::ScopeNotFound(_))
    ));
}

#[test]
fn a_failed_change_leaves_nothing_behind() {
    let (_dir, mut store) = store();
    store
        .create_scope("acme", "a", AgentsLevel::View, RuntimeSet::EMPTY)
        .unwrap();
    store
        .create_scope("acme", "b", AgentsLevel::View, RuntimeSet::EMPTY)
        .unwrap();
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
}

#[test]
fn a_store_reopens_with_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.db");
    {
        let mut store = Store::open(&path).unwrap();
        store
            .create_scope("acme", "s", AgentsLevel::Edit, "run".parse().unwrap())
            .unwrap();
    }
    let store = Store::open_existing(&path).unwrap();
    let scopes = store.list_scopes(None).unwrap();
    assert_eq!(scopes.len(), 1);
    assert_eq!(scopes[0].runtime.to_string(), "run");
    assert_eq!(store.operations().unwrap().len(), 13);
}
