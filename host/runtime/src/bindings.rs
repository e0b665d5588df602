//! The single `bindgen!` site of the host, and the conversions between the
//! generated types and [`keyscope_policy::model`].

use keyscope_policy::model;

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "policy",
});

pub(crate) use self::exports::keyscope::policy::decide::{
    AgentsLevel, Catalogue, Credential, Decision, DeltaError, HttpRequest, LoadError, Method,
    Reason, Request, Requirement, RuntimePermission, SnapshotInfo,
};

/// The export name of the decision interface, with its version.
pub(crate) const DECIDE_INTERFACE: &str = "keyscope:policy/decide@0.4.0";

impl From<&model::ResolvedRequest> for Request {
    fn from(request: &model::ResolvedRequest) -> Self {
        Self {
            credential: request.credential.into(),
            snapshot: request.snapshot,
            app: request.app,
            op: request.op,
            now: request.now,
        }
    }
}

impl HttpRequest {
    /// Overwrites this request with `request`, reusing the path's buffer.
    pub(crate) fn set(&mut self, request: &model::HttpRequest<'_>) {
        self.credential = request.credential.into();
        self.method = request.method.into();
        self.path.clear();
        self.path.push_str(request.path);
        self.now = request.now;
    }
}

impl From<model::Method> for Method {
    fn from(method: model::Method) -> Self {
        match method {
            model::Method::Get => Self::Get,
            model::Method::Head => Self::Head,
            model::Method::Post => Self::Post,
            model::Method::Put => Self::Put,
            model::Method::Delete => Self::Delete,
            model::Method::Connect => Self::Connect,
            model::Method::Options => Self::Options,
            model::Method::Trace => Self::Trace,
            model::Method::Patch => Self::Patch,
            model::Method::Other => Self::Other,
        }
    }
}

impl From<model::Credential> for Credential {
    fn from(credential: model::Credential) -> Self {
        match credential {
            model::Credential::Missing => Self::Missing,
            model::Credential::Malformed => Self::Malformed,
            model::Credential::Digest(digest) => {
                let [a, b, c, d] = digest.words();
                Self::Digest((a, b, c, d))
            }
        }
    }
}

impl From<Decision> for model::Decision {
    fn from(decision: Decision) -> Self {
        let reason = match decision.reason {
            Reason::Allowed => model::Reason::Allowed,
            Reason::MissingKey => model::Reason::MissingKey,
            Reason::MalformedKey => model::Reason::MalformedKey,
            Reason::UnknownKey => model::Reason::UnknownKey,
            Reason::RevokedKey => model::Reason::RevokedKey,
            Reason::ExpiredKey => model::Reason::ExpiredKey,
            Reason::WrongApp => model::Reason::WrongApp,
            Reason::InsufficientPermission => model::Reason::InsufficientPermission,
            Reason::UnknownOperation => model::Reason::UnknownOperation,
            Reason::NoSnapshot => model::Reason::NoSnapshot,
            Reason::PolicyError => model::Reason::PolicyError,
        };
        Self {
            // Fail closed: a module that says "allow" with any other reason
            // is not believed.
            allow: decision.allow && reason == model::Reason::Allowed,
            reason,
            key_id: decision.key_id,
            scope_id: decision.scope_id,
            required: decision.required.map(|required| match required {
                Requirement::Agents(level) => model::Requirement::Agents(match level {
                    AgentsLevel::None => model::AgentsLevel::None,
                    AgentsLevel::View => model::AgentsLevel::View,
                    AgentsLevel::Edit => model::AgentsLevel::Edit,
                    AgentsLevel::Full => model::AgentsLevel::Full,
                }),
                Requirement::Runtime(permission) => model::Requirement::Runtime(match permission {
                    RuntimePermission::Run => model::RuntimePermission::Run,
                    RuntimePermission::SessionCreate => model::RuntimePermission::SessionCreate,
                    RuntimePermission::SessionTerminate => {
                        model::RuntimePermission::SessionTerminate
                    }
                    RuntimePermission::DocumentUpload => model::RuntimePermission::DocumentUpload,
                }),
            }),
        }
    }
}

impl From<LoadError> for keyscope_policy::LoadError {
    fn from(error: LoadError) -> Self {
        match error {
            LoadError::BadMagic => Self::BadMagic,
            LoadError::UnsupportedVersion(version) => Self::UnsupportedVersion(version),
            LoadError::Truncated => Self::Truncated,
            LoadError::DigestMismatch => Self::DigestMismatch,
            LoadError::Malformed(why) => Self::Malformed(why),
        }
    }
}

impl From<DeltaError> for keyscope_policy::delta::DeltaError {
    fn from(error: DeltaError) -> Self {
        match error {
            DeltaError::NoSnapshot => Self::NoSnapshot,
            DeltaError::BadMagic => Self::BadMagic,
            DeltaError::UnsupportedVersion(version) => Self::UnsupportedVersion(version),
            DeltaError::Truncated => Self::Truncated,
            DeltaError::BaseMismatch => Self::BaseMismatch,
            DeltaError::DigestMismatch => Self::DigestMismatch,
            DeltaError::Malformed(why) => Self::Malformed(why),
        }
    }
}
