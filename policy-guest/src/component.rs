//! The WIT glue: converts between the generated types and [`crate::model`],
//! keeps the loaded snapshot, and calls [`crate::rules`]. No logic lives here.

use std::cell::RefCell;

use crate::model::{self, AgentsLevel, Reason, Requirement, RuntimePermission};
use crate::rules;
use crate::snapshot::{LoadError, Snapshot};

#[allow(
    clippy::too_many_arguments,
    reason = "the generated export shims take the request's flattened ABI parameters"
)]
mod wit {
    wit_bindgen::generate!({
        path: "../wit",
        world: "policy",
    });
}

struct Policy;

wit::export!(Policy with_types_in wit);

thread_local! {
    /// The loaded snapshot. A component instance is single-threaded; the
    /// thread-local is only how Rust spells "this instance's global".
    static LOADED: RefCell<Option<Snapshot>> = const { RefCell::new(None) };
}

impl wit::Guest for Policy {
    fn load_snapshot(bytes: Vec<u8>) -> Result<wit::SnapshotInfo, wit::LoadError> {
        let snapshot = Snapshot::decode(&bytes).map_err(to_wit_load_error)?;
        let info = snapshot.info();
        let wit_info = wit::SnapshotInfo {
            format_version: info.format_version,
            digest: {
                let [a, b, c, d] = model::KeyDigest(info.digest).words();
                (a, b, c, d)
            },
            scopes: info.scopes,
            keys: info.keys,
            operations: info.operations,
        };
        LOADED.with_borrow_mut(|loaded| *loaded = Some(snapshot));
        Ok(wit_info)
    }

    fn evaluate(request: wit::Request) -> wit::Decision {
        LOADED.with_borrow(|loaded| decide(loaded.as_ref(), &request))
    }

    fn evaluate_batch(requests: Vec<wit::Request>) -> Vec<wit::Decision> {
        LOADED.with_borrow(|loaded| {
            requests
                .iter()
                .map(|request| decide(loaded.as_ref(), request))
                .collect()
        })
    }
}

fn decide(snapshot: Option<&Snapshot>, request: &wit::Request) -> wit::Decision {
    let credential = match request.credential {
        wit::Credential::Missing => model::Credential::Missing,
        wit::Credential::Malformed => model::Credential::Malformed,
        wit::Credential::Digest((a, b, c, d)) => {
            model::Credential::Digest(model::KeyDigest::from_words([a, b, c, d]))
        }
    };
    let decision = rules::decide(
        snapshot,
        &model::Request {
            credential,
            app: &request.app,
            op: &request.op,
        },
    );
    wit::Decision {
        allow: decision.allow,
        reason: to_wit_reason(decision.reason),
        key_id: decision.key_id,
        scope_id: decision.scope_id,
        required: decision.required.map(to_wit_requirement),
    }
}

fn to_wit_load_error(error: LoadError) -> wit::LoadError {
    match error {
        LoadError::BadMagic => wit::LoadError::BadMagic,
        LoadError::UnsupportedVersion(version) => wit::LoadError::UnsupportedVersion(version),
        LoadError::Truncated => wit::LoadError::Truncated,
        LoadError::DigestMismatch => wit::LoadError::DigestMismatch,
        LoadError::Malformed(why) => wit::LoadError::Malformed(why),
    }
}

fn to_wit_reason(reason: Reason) -> wit::Reason {
    match reason {
        Reason::Allowed => wit::Reason::Allowed,
        Reason::MissingKey => wit::Reason::MissingKey,
        Reason::MalformedKey => wit::Reason::MalformedKey,
        Reason::UnknownKey => wit::Reason::UnknownKey,
        Reason::RevokedKey => wit::Reason::RevokedKey,
        Reason::WrongApp => wit::Reason::WrongApp,
        Reason::InsufficientPermission => wit::Reason::InsufficientPermission,
        Reason::UnknownOperation => wit::Reason::UnknownOperation,
        Reason::NoSnapshot => wit::Reason::NoSnapshot,
        Reason::PolicyError => wit::Reason::PolicyError,
    }
}

fn to_wit_requirement(requirement: Requirement) -> wit::Requirement {
    match requirement {
        Requirement::Agents(level) => wit::Requirement::Agents(match level {
            AgentsLevel::None => wit::AgentsLevel::None,
            AgentsLevel::View => wit::AgentsLevel::View,
            AgentsLevel::Edit => wit::AgentsLevel::Edit,
            AgentsLevel::Full => wit::AgentsLevel::Full,
        }),
        Requirement::Runtime(permission) => wit::Requirement::Runtime(match permission {
            RuntimePermission::Run => wit::RuntimePermission::Run,
            RuntimePermission::SessionCreate => wit::RuntimePermission::SessionCreate,
            RuntimePermission::SessionTerminate => wit::RuntimePermission::SessionTerminate,
            RuntimePermission::DocumentUpload => wit::RuntimePermission::DocumentUpload,
        }),
    }
}
