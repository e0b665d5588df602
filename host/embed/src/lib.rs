//! libkeyscope: keyscope's policy component inside another process, with a
//! C ABI (`include/keyscope.h`). nginx's workers load it through LuaJIT's
//! FFI (`integrations/nginx/keyscope.lua`); any host that can call C can.
//!
//! Three things to know:
//! - It is `keyscope serve`'s decision side without the network: the same
//!   runtime (component, limits, swap pipeline, workers), the same rule for
//!   which header carries the key, and the same answer (status,
//!   `WWW-Authenticate`, JSON body), built by the same code.
//! - An [`Embedded`] handle is opened from a small TOML file
//!   ([`EmbedConfig`]) naming a snapshot file (watched, and swapped when
//!   `keyscope snapshot export` rewrites it) or a fleet's bundle URL; a
//!   thread of its own swaps new state in while calls go on.
//! - Once open, nothing fails: every error is a deny with `policy-error`,
//!   and its words are in the status. Open a handle per process, after any
//!   fork ([`ffi`] says why).

mod config;
mod embedded;
mod error;
pub mod ffi;

pub use config::{DataSource, EmbedConfig};
pub use embedded::{EmbedStatus, Embedded};
pub use error::EmbedError;

#[cfg(test)]
mod tests;
