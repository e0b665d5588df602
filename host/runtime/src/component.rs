//! A compiled, validated policy component: it imports nothing and exports
//! the `keyscope:policy` world, checked once at load and kept as a
//! pre-instantiated `PolicyPre`.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use sha2::{Digest as _, Sha256};
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, Linker};

use crate::bindings::{DECIDE_INTERFACE, PolicyPre};
use crate::engine::{HostState, PolicyEngine};
use crate::error::{Error, Result};
use crate::fault::{self, Fault};

/// The component built from `policy-guest/` and embedded at build time.
pub static EMBEDDED_POLICY: &[u8] = include_bytes!(env!("KEYSCOPE_POLICY_COMPONENT"));

/// The embedded policy built with its decisions emptied (a constant deny):
/// a call into it costs what wasmtime alone costs a call of the same shape,
/// the floor `keyscope bench` measures the policy against. Empty when the
/// policy was prebuilt (`KEYSCOPE_POLICY_WASM`).
pub static FLOOR_POLICY: &[u8] = include_bytes!(env!("KEYSCOPE_FLOOR_COMPONENT"));

/// What `keyscope policy info` shows about a component.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PolicyInfo {
    /// Size of the component in bytes.
    pub size: usize,
    /// Lowercase hex SHA-256 of the component bytes.
    pub digest: String,
    /// The world it implements.
    pub world: &'static str,
    /// The versioned interface it exports.
    pub interface: &'static str,
    /// Exported names with their kind.
    pub exports: Vec<String>,
    /// Imported names; always empty for a component that loaded.
    pub imports: Vec<String>,
}

/// A compiled, validated policy component, ready to instantiate.
#[derive(Clone)]
pub struct PolicyComponent {
    engine: PolicyEngine,
    pre: PolicyPre<HostState>,
    info: Arc<PolicyInfo>,
}

impl fmt::Debug for PolicyComponent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyComponent")
            .field("digest", &self.info.digest)
            .finish_non_exhaustive()
    }
}

impl PolicyComponent {
    /// The component embedded in this binary.
    pub fn embedded(engine: &PolicyEngine) -> Result<Self> {
        Self::from_bytes(engine, EMBEDDED_POLICY)
    }

    /// Reads (a regular file, up to [`crate::files::MAX_POLICY_BYTES`]) and
    /// validates a component file.
    pub fn from_file(engine: &PolicyEngine, path: &Path) -> Result<Self> {
        let bytes = crate::files::read_regular(path, crate::files::MAX_POLICY_BYTES)?;
        Self::from_bytes(engine, &bytes)
    }

    /// Compiles and validates component bytes: a component, importing
    /// nothing, exporting the `keyscope:policy` world.
    pub fn from_bytes(policy_engine: &PolicyEngine, bytes: &[u8]) -> Result<Self> {
        if fault::hit(Fault::Compile) {
            return Err(Error::NotAComponent(
                Error::Injected(Fault::Compile).to_string(),
            ));
        }
        let engine = policy_engine.engine();
        if !wasmparser::Parser::is_component(bytes) {
            let what = if wasmparser::Parser::is_core_wasm(bytes) {
                "it is a core Wasm module; encode it with `wasm-tools component new`"
            } else {
                "it does not start with the Wasm component header"
            };
            return Err(Error::NotAComponent(what.to_owned()));
        }
        let component =
            Component::new(engine, bytes).map_err(|e| Error::wasm(Error::NotAComponent, &e))?;
        let ty = component.component_type();
        let imports: Vec<String> = ty
            .imports(engine)
            .map(|(name, _)| name.to_owned())
            .collect();
        if !imports.is_empty() {
            let names = imports
                .iter()
                .map(|name| format!("`{name}`"))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(Error::PolicyImports(names));
        }
        let exports: Vec<String> = ty
            .exports(engine)
            .map(|(name, item)| match item.ty {
                ComponentItem::ComponentInstance(instance) => {
                    let funcs: Vec<&str> = instance
                        .exports(engine)
                        .filter(|(_, item)| matches!(item.ty, ComponentItem::ComponentFunc(_)))
                        .map(|(func, _)| func)
                        .collect();
                    format!("{name} ({})", funcs.join(", "))
                }
                ComponentItem::ComponentFunc(_) => format!("{name} (func)"),
                _ => format!("{name} (other)"),
            })
            .collect();
        if ty.get_export(engine, DECIDE_INTERFACE).is_none() {
            let found = ty
                .exports(engine)
                .map(|(name, _)| format!("`{name}`"))
                .collect::<Vec<_>>();
            let found = if found.is_empty() {
                "nothing".to_owned()
            } else {
                found.join(", ")
            };
            return Err(Error::WrongWorld(format!(
                "it must export `{DECIDE_INTERFACE}`; it exports {found}"
            )));
        }
        let linker = Linker::<HostState>::new(engine);
        let instance_pre = linker
            .instantiate_pre(&component)
            .map_err(|e| Error::wasm(Error::WrongWorld, &e))?;
        let pre = PolicyPre::new(instance_pre).map_err(|e| Error::wasm(Error::WrongWorld, &e))?;
        let info = PolicyInfo {
            size: bytes.len(),
            digest: hex::encode(Sha256::digest(bytes)),
            world: "keyscope:policy/policy@0.4.0",
            interface: DECIDE_INTERFACE,
            exports,
            imports,
        };
        Ok(Self {
            engine: policy_engine.clone(),
            pre,
            info: Arc::new(info),
        })
    }

    /// What the component is.
    pub fn info(&self) -> &PolicyInfo {
        &self.info
    }

    /// The engine it was compiled for.
    pub(crate) fn engine(&self) -> &PolicyEngine {
        &self.engine
    }

    /// The pre-instantiated component.
    pub(crate) fn pre(&self) -> &PolicyPre<HostState> {
        &self.pre
    }
}
