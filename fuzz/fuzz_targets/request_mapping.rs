//! The proxy request to decision mapping: any copies of the API key header
//! and of `Authorization`, and any method and path, become a credential,
//! then a routed decision, then an HTTP status. Never a panic; 200 exactly
//! when allowed; a credential only from a well-formed key, and only when the
//! request presents no other keyscope credential.

#![no_main]

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use keyscope_keys::{self as keys, KeySecret};
use keyscope_policy::snapshot::{KeyEntry, ScopeEntry, SnapshotData, default_operations};
use keyscope_policy::{AgentsLevel, Credential, HttpRequest, Reason, RuntimeSet, Snapshot, rules};
use keyscope_runtime::answer;
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    api_keys: Vec<Vec<u8>>,
    authorizations: Vec<Vec<u8>>,
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
                not_after: None,
            }],
            routes: keyscope_policy::routes::default_routes(),
        };
        let snapshot = Snapshot::decode(&data.encode().expect("encodes")).expect("loads");
        (snapshot, key.expose().to_owned())
    })
}

fuzz_target!(|input: Input| {
    let (snapshot, key) = world();
    let mut api_keys = input.api_keys;
    if input.use_real_key {
        api_keys.insert(0, key.as_bytes().to_vec());
    }
    let credential = keys::credential_from_headers(
        api_keys.iter().map(Vec::as_slice),
        input.authorizations.iter().map(Vec::as_slice),
    );
    if let Credential::Digest(digest) = credential {
        // Only a well-formed key gives a digest, and only when it is the one
        // keyscope credential: one API key header and no `Bearer ks_...`,
        // or no API key header and one `Bearer` token.
        let bearers: Vec<String> = input
            .authorizations
            .iter()
            .filter(|v| v.len() >= 7 && v[..7].eq_ignore_ascii_case(b"bearer "))
            .map(|v| String::from_utf8_lossy(&v[7..]).trim().to_owned())
            .collect();
        let from = match api_keys.as_slice() {
            [one] => {
                assert!(!bearers.iter().any(|b| b.starts_with("ks_")), "{bearers:?}");
                String::from_utf8_lossy(one).into_owned()
            }
            [] => {
                assert_eq!(bearers.len(), 1, "{bearers:?}");
                bearers[0].clone()
            }
            more => panic!("a digest from {} API key headers", more.len()),
        };
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
            method: keyscope_policy::Method::parse(&input.method),
            path: &input.path,
            now: 0,
        },
    );
    let status = answer::status(routed.decision.reason);
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
