//! The runtime's error: what went wrong with a component, an instance, a
//! case or a file. A swap wraps it with the step that failed
//! ([`crate::swap::SwapError`]).

use std::path::PathBuf;

/// Everything that can go wrong in the runtime. Messages name the offending
/// input in backticks and say what would be accepted.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A name or value given by the user (in a case file, a suite) is not
    /// acceptable.
    #[error("invalid {what} `{value}`: {why}")]
    Invalid {
        /// What was given.
        what: &'static str,
        /// The offending input.
        value: String,
        /// What is accepted.
        why: String,
    },
    /// A level, permission or requirement name is not one of the accepted ones.
    #[error(transparent)]
    UnknownName(#[from] keyscope_policy::UnknownName),
    /// The policy bytes are not a Wasm component.
    #[error("the policy is not a WebAssembly component: {0}")]
    NotAComponent(String),
    /// The policy component imports something.
    #[error("the policy component imports {0}; a keyscope policy must import nothing")]
    PolicyImports(String),
    /// The policy component is not of the `keyscope:policy` world.
    #[error("the policy component does not implement the `keyscope:policy/policy` world: {0}")]
    WrongWorld(String),
    /// The policy trapped, ran out of time or memory, or failed to instantiate.
    #[error("the policy component failed: {0}")]
    PolicyFailed(String),
    /// A decision case did not get the decision it expects.
    #[error("case `{case}` in `{file}`: expected {expected}, got {got}")]
    CaseFailed {
        /// The case file.
        file: String,
        /// The case.
        case: String,
        /// The decision JSON expected.
        expected: String,
        /// The decision JSON the policy gave.
        got: String,
    },
    /// The wasmtime engine, or its epoch ticker, could not be started.
    #[error("the WebAssembly engine could not start: {0}")]
    Engine(String),
    /// A decision could not be encoded as JSON.
    #[error("cannot encode a decision: {0}")]
    Encode(String),
    /// The snapshot was refused.
    #[error(transparent)]
    Snapshot(#[from] keyscope_policy::LoadError),
    /// A delta was refused; the snapshot held is unchanged.
    #[error(transparent)]
    Delta(#[from] keyscope_policy::delta::DeltaError),
    /// A fault injected by a test (feature `fault-injection`).
    #[error("injected fault at `{}`", .0.as_str())]
    Injected(crate::fault::Fault),
    /// A file keyscope was pointed at is not one it will read: not a regular
    /// file, or larger than the limit.
    #[error("refusing to read `{path}`: {why}")]
    FileRefused {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// Reading or writing a file failed.
    #[error("`{path}`: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The runtime's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A stable, machine-readable name for what kind of failure this is, for
    /// `--json` errors and admin API responses.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Invalid { .. } | Self::UnknownName(_) | Self::FileRefused { .. } => {
                "invalid-input"
            }
            Self::NotAComponent(_) | Self::PolicyImports(_) | Self::WrongWorld(_) => {
                "policy-refused"
            }
            Self::PolicyFailed(_) | Self::Injected(_) | Self::Engine(_) | Self::Encode(_) => {
                "policy-failed"
            }
            Self::CaseFailed { .. } => "case-failed",
            Self::Snapshot(_) => "snapshot-refused",
            Self::Delta(_) => "delta-refused",
            Self::Io { .. } => "io",
        }
    }

    pub(crate) fn wasm(make: fn(String) -> Self, error: &wasmtime::Error) -> Self {
        make(format!("{error:#}"))
    }
}
