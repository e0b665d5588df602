//! The single `bindgen!` site of the host, and the conversions between the
//! generated types and [`keyscope_policy::model`].

use keyscope_policy::model;

wasmtime::component::bindgen!({
    path: "../wit",
    world: "policy",
});

impl From<&model::Request<'_>> for Request {
    fn from(request: &model::Request<'_>) -> Self {
        Self {
            credential: request.credential.into(),
            app: request.app.to_owned(),
            op: request.op.to_owned(),
        }
    }
}

impl Request {
    /// Overwrites this request with `request`, reusing the strings' buffers.
    pub(crate) fn set(&mut self, request: &model::Request<'_>) {
        self.credential = request.credential.into();
        self.app.clear();
        self.app.push_str(request.app);
        self.op.clear();
        self.op.push_str(request.op);
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
            self::Reason::Allowed => model::Reason::Allowed,
            self::Reason::MissingKey => model::Reason::MissingKey,
            self::Reason::MalformedKey => model::Reason::MalformedKey,
            self::Reason::UnknownKey => model::Reason::UnknownKey,
            self::Reason::RevokedKey => model::Reason::RevokedKey,
            self::Reason::WrongApp => model::Reason::WrongApp,
            self::Reason::InsufficientPermission => model::Reason::InsufficientPermission,
            self::Reason::UnknownOperation => model::Reason::UnknownOperation,
            self::Reason::NoSnapshot => model::Reason::NoSnapshot,
            self::Reason::PolicyError => model::Reason::PolicyError,
        };
        Self {
            // Fail closed: a module that says "allow" with any other reason
            // is not believed.
            allow: decision.allow && reason == model::Reason::Allowed,
            reason,
            key_id: decision.key_id,
            scope_id: decision.scope_id,
            required: decision.required.map(|required| match required {
                self::Requirement::Agents(level) => model::Requirement::Agents(match level {
                    self::AgentsLevel::None => model::AgentsLevel::None,
                    self::AgentsLevel::View => model::AgentsLevel::View,
                    self::AgentsLevel::Edit => model::AgentsLevel::Edit,
                    self::AgentsLevel::Full => model::AgentsLevel::Full,
                }),
                self::Requirement::Runtime(permission) => {
                    model::Requirement::Runtime(match permission {
                        self::RuntimePermission::Run => model::RuntimePermission::Run,
                        self::RuntimePermission::SessionCreate => {
                            model::RuntimePermission::SessionCreate
                        }
                        self::RuntimePermission::SessionTerminate => {
                            model::RuntimePermission::SessionTerminate
                        }
                        self::RuntimePermission::DocumentUpload => {
                            model::RuntimePermission::DocumentUpload
                        }
                    })
                }
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
