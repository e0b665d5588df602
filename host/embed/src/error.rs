//! Why the library could not open a handle.

use std::path::PathBuf;

/// Why a handle could not be opened. Once open, nothing is an error: every
/// failure on the decision side is a deny with `policy-error`, and its
/// message is in the handle's status.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// The configuration does not parse or is not acceptable.
    #[error("config `{path}`: {why}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// A file the configuration names could not be read.
    #[error(transparent)]
    File(#[from] keyscope_runtime::Error),
    /// The first module and snapshot were refused.
    #[error(transparent)]
    Swap(#[from] keyscope_runtime::SwapError),
    /// The bundle public key is unusable.
    #[error(transparent)]
    Bundle(#[from] keyscope_bundle::BundleError),
    /// The bundle follower could not start.
    #[error(transparent)]
    Gateway(#[from] keyscope_gateway::StartError),
    /// The watcher thread could not be started.
    #[error("starting the watcher thread: {0}")]
    Thread(#[source] std::io::Error),
}
