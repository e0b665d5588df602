//! The proxy request to decision mapping: any header values (the API key
//! header, `Authorization`) and any method and path become a credential,
//! then a routed decision, then an HTTP status. Never a panic; 200 exactly
//! when allowed; a credential only from a well-formed key.

#![no_main]

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use keyscope::{Credential, HttpRequest, KeySecret, Reason, keys, serve};
use keyscope_policy::snapshot::{KeyEntry, ScopeEntry, SnapshotData, default_operations};
use keyscope_policy::{AgentsLevel, RuntimeSet, Snapshot, rules};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    api_key: Option<Vec<u8>>,
    authorization: Option<Vec<u8>>,
    use_real_key: bool,
    method: String,
    path: String,
}

fn world() -> &'static (Snapshot, String) {
    static WORLD: OnceLock<(Snapshot, String)> = OnceLock::new();
    WORLD.get_or_init(|| {
        let key = KeySecret::generate();
        let data = SnapshotData {
            operations: default_operations(),
            scopes: vec![ScopeEntry {
                id: 1,
                app: "acme".to_owned(),
                agents: AgentsLevel::Edit,
                runtime: RuntimeSet::EMPTY,
            }],
            keys: vec![KeyEntry {
                digest: key.digest(),
                id: 1,
                scope_id: 1,
                revoked: false,
            }],
            routes: keyscope_policy::routes::default_routes(),
        };
        let snapshot = Snapshot::decode(&data.encode().expect("encodes")).expect("loads");
        (snapshot, key.expose().to_owned())
    })
}

fuzz_target!(|input: Input| {
    let (snapshot, key) = world();
    let api_key = if input.use_real_key {
        Some(key.as_bytes().to_vec())
    } else {
        input.api_key
    };
    let credential = serve::credential(api_key.as_deref(), input.authorization.as_deref());
    if let Credential::Digest(digest) = credential {
        // Only a well-formed key, from one header or the other, gives a digest.
        let from = api_key
            .as_deref()
            .or_else(|| input.authorization.as_deref().and_then(|v| v.get(7..)))
            .map(|v| String::from_utf8_lossy(v).trim().to_owned())
            .unwrap_or_default();
        assert!(keys::check_format(&from).is_ok(), "{from:?}");
        assert_eq!(
            KeySecret::parse(&from).expect("well-formed").digest(),
            digest
        );
    }
    let routed = rules::decide_http(
        Some(snapshot),
        &HttpRequest {
            credential,
            method: &input.method,
            path: &input.path,
        },
    );
    let status = serve::status(routed.decision.reason);
    assert_eq!(status == 200, routed.decision.allow);
    assert_eq!(
        routed.decision.allow,
        routed.decision.reason == Reason::Allowed
    );
    if routed.decision.allow {
        let found = routed.route.expect("an allow names its route");
        assert_eq!(found.app, "acme");
    }
});
