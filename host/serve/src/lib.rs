//! `keyscope serve`: the front doors for Envoy, nginx and direct callers, in
//! one process on tokio.
//!
//! - HTTP (`listen`): `POST /v1/check`, nginx `auth_request` at `/auth`,
//!   Envoy's HTTP ext_authz under `envoy_path_prefix`, and `/healthz`,
//!   `/readyz`, `/metrics`.
//! - gRPC (`grpc_listen`): Envoy's `envoy.service.auth.v3.Authorization`.
//! - Admin (`admin.listen`, off by default): scopes, keys, status, reloads.
//!
//! [`Server::bind`] loads everything first (the configuration, the store,
//! the module, the first generation, the admin token, the decision log),
//! then binds; [`Server::run`] serves. The snapshot then follows the store
//! ([`Refresher`]); SIGHUP and `POST /admin/policy` reload the module.
//! SIGTERM or SIGINT stop accepting, drain the requests in flight and flush
//! the decision log. Every door decides through one core ([`credential`],
//! a worker's `Outcome`) and answers with one [`ProxyAnswer`].

mod admin;
mod answer;
mod authz;
mod bundles;
mod client;
mod config;
mod conn;
mod decision_log;
mod fleet_credentials;
mod fleet_view;
mod grpc;
mod http;
mod metrics;
mod refresh;
mod server;
mod throttle;
mod usage;

use std::net::SocketAddr;
use std::path::PathBuf;

pub use answer::{ProxyAnswer, status};
pub use bundles::Bundles;
pub use config::{
    AdminConfig, BundleConfig, ConsoleConfig, ConsoleLifetimes, HeaderConfig, OidcConfig,
    RequestLimits, ServeConfig,
};
pub use decision_log::DecisionRecord;
pub use keyscope_gateway::Staleness;
pub use refresh::{Freshness, RefreshError, Refresher, ReloadError};
pub use server::{Addresses, AdminMount, AdminPages, Oidc, Server};

/// What pages mounted on the admin listener ([`Server::mount_admin_pages`],
/// the console) build on: the admin doors' state and errors, and the
/// decision path's target and front.
pub mod surface {
    pub use crate::admin::{
        Access, Actor, Admin, AuditView, GATEWAY_HAS_NO_STORE, Need, status_of,
    };
    pub use crate::authz::Target;
    pub use crate::metrics::Front;
    pub use keyscope_store::roles::Action;
}

use keyscope_runtime::SwapError;
use keyscope_store::StoreError;

/// Why the server could not start or keep running.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration file does not parse.
    #[error("config `{path}`: {why}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// A configuration value is not acceptable.
    #[error("invalid configuration: {0}")]
    Invalid(String),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file or thread operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The store could not be opened or read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A file the configuration names could not be read.
    #[error(transparent)]
    File(#[from] keyscope_runtime::Error),
    /// The first generation was refused.
    #[error(transparent)]
    Swap(#[from] SwapError),
    /// A bundle signing key, public key or cache is unusable.
    #[error(transparent)]
    Bundle(#[from] keyscope_bundle::BundleError),
    /// The gateway could not start.
    #[error(transparent)]
    Gateway(#[from] keyscope_gateway::StartError),
}

impl ServeError {
    /// A stable, machine-readable name for the kind of failure.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Config { .. } | Self::Invalid(_) => "invalid-config",
            Self::Bind { .. } => "bind",
            Self::Io { .. } => "io",
            Self::Store(error) => error.kind(),
            Self::File(error) => error.kind(),
            Self::Swap(_) => "policy-refused",
            Self::Bundle(error) => error.kind(),
            Self::Gateway(keyscope_gateway::StartError::Swap(_)) => "policy-refused",
            Self::Gateway(_) => "invalid-config",
        }
    }
}
