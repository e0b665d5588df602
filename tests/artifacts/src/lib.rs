//! The hostile policy components, built from `tests/hostile-policy` for the
//! tests only. Each misbehaves in one way; the tests prove that each is
//! refused at the right swap step, or contained when forced live.

/// `evaluate` never returns.
pub const LOOP: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/hostile-loop.wasm"));
/// `evaluate` allocates until memory growth is refused.
pub const GROW: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/hostile-grow.wasm"));
/// `evaluate` panics, which traps.
pub const TRAP: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/hostile-trap.wasm"));
/// Allows everything: passes validation, fails the self-test.
pub const ALLOW_ALL: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/hostile-allow-all.wasm"));
/// Reads only snapshot format 0, older than what keyscope writes.
pub const OLD_READER: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/hostile-old-reader.wasm"));

/// A hostile component by its behaviour's name (`loop`, `grow`, `trap`,
/// `allow-all`, `old-reader`).
pub fn hostile(name: &str) -> Option<&'static [u8]> {
    match name {
        "loop" => Some(LOOP),
        "grow" => Some(GROW),
        "trap" => Some(TRAP),
        "allow-all" => Some(ALLOW_ALL),
        "old-reader" => Some(OLD_READER),
        _ => None,
    }
}
