//! The WIT glue: converts between the generated types and [`crate::model`],
//! keeps the loaded snapshot, and calls [`crate::rules`]. No logic lives here.

use std::cell::RefCell;

use crate::delta::DeltaError;
use crate::model::{self, AgentsLevel, Method, Reason, Requirement, RuntimePermission};
use crate::rules;
use crate::snapshot::{LoadError, Snapshot, SnapshotInfo};

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

use wit::exports::keyscope::policy::decide as api;

thread_local! {
    /// The loaded snapshot. A component instance is single-threaded; the
    /// thread-local is only how Rust spells "this instance's global".
    static LOADED: RefCell<Option<Snapshot>> = const { RefCell::new(None) };
}

impl api::Guest for Policy {
    fn load_snapshot(bytes: Vec<u8>) -> Result<api::SnapshotInfo, api::LoadError> {
        let snapshot = Snapshot::from_vec(bytes).map_err(to_wit_load_error)?;
        let info = to_wit_info(snapshot.info());
        LOADED.with_borrow_mut(|loaded| *loaded = Some(snapshot));
        Ok(info)
    }

    fn apply_delta(delta: Vec<u8>) -> Result<api::SnapshotInfo, api::DeltaError> {
        LOADED.with_borrow_mut(|loaded| {
            let snapshot = loaded.as_mut().ok_or(DeltaError::NoSnapshot);
            snapshot
                .and_then(|snapshot| snapshot.apply_delta(&delta).map(to_wit_info))
                .map_err(to_wit_delta_error)
        })
    }

    fn names() -> api::Catalogue {
        LOADED.with_borrow(|loaded| match loaded {
            Some(snapshot) => api::Catalogue {
                apps: snapshot.apps().map(str::to_owned).collect(),
                operations: snapshot.operation_names().map(str::to_owned).collect(),
            },
            None => api::Catalogue {
                apps: Vec::new(),
                operations: Vec::new(),
            },
        })
    }

    fn evaluate(request: api::Request) -> api::Decision {
        LOADED.with_borrow(|loaded| decide(loaded.as_ref(), request))
    }

    fn evaluate_batch(requests: Vec<api::Request>) -> Vec<api::Decision> {
        LOADED.with_borrow(|loaded| {
            requests
                .into_iter()
                .map(|request| decide(loaded.as_ref(), request))
                .collect()
        })
    }

    fn evaluate_http(request: api::HttpRequest) -> api::RoutedDecision {
        if cfg!(feature = "floor") {
            return api::RoutedDecision {
                route: None,
                decision: to_wit_decision(model::Decision::deny(Reason::NoSnapshot)),
            };
        }
        LOADED.with_borrow(|loaded| {
            let routed = rules::decide_http(
                loaded.as_ref(),
                &model::HttpRequest {
                    credential: from_wit_credential(request.credential),
                    method: from_wit_method(request.method),
                    path: &request.path,
                    now: request.now,
                },
            );
            api::RoutedDecision {
                route: routed.route.map(|found| api::RouteMatch {
                    app_offset: offset_in(&request.path, found.app),
                    app_length: found.app.len() as u32,
                    op: found.op,
                }),
                decision: to_wit_decision(routed.decision),
            }
        })
    }
}

/// Where `part`, a slice of `whole`, starts in it, in bytes. The route
/// matcher returns the app as a slice of the path; the host gets its place.
fn offset_in(whole: &str, part: &str) -> u32 {
    (part.as_ptr() as usize - whole.as_ptr() as usize) as u32
}

fn decide(snapshot: Option<&Snapshot>, request: api::Request) -> api::Decision {
    if cfg!(feature = "floor") {
        return to_wit_decision(model::Decision::deny(Reason::NoSnapshot));
    }
    let decision = rules::decide(
        snapshot,
        &model::ResolvedRequest {
            credential: from_wit_credential(request.credential),
            snapshot: request.snapshot,
            app: request.app,
            op: request.op,
            now: request.now,
        },
    );
    to_wit_decision(decision)
}

fn from_wit_method(method: api::Method) -> Method {
    match method {
        api::Method::Get => Method::Get,
        api::Method::Head => Method::Head,
        api::Method::Post => Method::Post,
        api::Method::Put => Method::Put,
        api::Method::Delete => Method::Delete,
        api::Method::Connect => Method::Connect,
        api::Method::Options => Method::Options,
        api::Method::Trace => Method::Trace,
        api::Method::Patch => Method::Patch,
        api::Method::Other => Method::Other,
    }
}

fn from_wit_credential(credential: api::Credential) -> model::Credential {
    match credential {
        api::Credential::Missing => model::Credential::Missing,
        api::Credential::Malformed => model::Credential::Malformed,
        api::Credential::Digest((a, b, c, d)) => {
            model::Credential::Digest(model::KeyDigest::from_words([a, b, c, d]))
        }
    }
}

fn to_wit_decision(decision: model::Decision) -> api::Decision {
    api::Decision {
        allow: decision.allow,
        reason: to_wit_reason(decision.reason),
        key_id: decision.key_id,
        scope_id: decision.scope_id,
        required: decision.required.map(to_wit_requirement),
    }
}

fn to_wit_info(info: &SnapshotInfo) -> api::SnapshotInfo {
    api::SnapshotInfo {
        format_version: info.format_version,
        digest: {
            let [a, b, c, d] = model::KeyDigest(info.digest).words();
            (a, b, c, d)
        },
        apps: info.apps,
        scopes: info.scopes,
        keys: info.keys,
        operations: info.operations,
        routes: info.routes,
    }
}

fn to_wit_delta_error(error: DeltaError) -> api::DeltaError {
    match error {
        DeltaError::NoSnapshot => api::DeltaError::NoSnapshot,
        DeltaError::BadMagic => api::DeltaError::BadMagic,
        DeltaError::UnsupportedVersion(version) => api::DeltaError::UnsupportedVersion(version),
        DeltaError::Truncated => api::DeltaError::Truncated,
        DeltaError::BaseMismatch => api::DeltaError::BaseMismatch,
        DeltaError::DigestMismatch => api::DeltaError::DigestMismatch,
        DeltaError::Malformed(why) => api::DeltaError::Malformed(why),
    }
}

fn to_wit_load_error(error: LoadError) -> api::LoadError {
    match error {
        LoadError::BadMagic => api::LoadError::BadMagic,
        LoadError::UnsupportedVersion(version) => api::LoadError::UnsupportedVersion(version),
        LoadError::Truncated => api::LoadError::Truncated,
        LoadError::DigestMismatch => api::LoadError::DigestMismatch,
        LoadError::Malformed(why) => api::LoadError::Malformed(why),
    }
}

fn to_wit_reason(reason: Reason) -> api::Reason {
    match reason {
        Reason::Allowed => api::Reason::Allowed,
        Reason::MissingKey => api::Reason::MissingKey,
        Reason::MalformedKey => api::Reason::MalformedKey,
        Reason::UnknownKey => api::Reason::UnknownKey,
        Reason::RevokedKey => api::Reason::RevokedKey,
        Reason::ExpiredKey => api::Reason::ExpiredKey,
        Reason::WrongApp => api::Reason::WrongApp,
        Reason::InsufficientPermission => api::Reason::InsufficientPermission,
        Reason::UnknownOperation => api::Reason::UnknownOperation,
        Reason::NoSnapshot => api::Reason::NoSnapshot,
        // The host's alone; a component never decides it.
        Reason::PolicyError | Reason::StalePolicy => api::Reason::PolicyError,
    }
}

fn to_wit_requirement(requirement: Requirement) -> api::Requirement {
    match requirement {
        Requirement::Agents(level) => api::Requirement::Agents(match level {
            AgentsLevel::None => api::AgentsLevel::None,
            AgentsLevel::View => api::AgentsLevel::View,
            AgentsLevel::Edit => api::AgentsLevel::Edit,
            AgentsLevel::Full => api::AgentsLevel::Full,
        }),
        Requirement::Runtime(permission) => api::Requirement::Runtime(match permission {
            RuntimePermission::Run => api::RuntimePermission::Run,
            RuntimePermission::SessionCreate => api::RuntimePermission::SessionCreate,
            RuntimePermission::SessionTerminate => api::RuntimePermission::SessionTerminate,
            RuntimePermission::DocumentUpload => api::RuntimePermission::DocumentUpload,
        }),
    }
}
