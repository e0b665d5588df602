//! The C ABI: `include/keyscope.h`, generated from this file by cbindgen
//! (the crate's tests regenerate it and compare).
//!
//! # Safety
//! This is the only module of the workspace that allows `unsafe`, and only
//! to cross the C boundary:
//! - pointers from the caller are checked for null before use; a pointer
//!   with a length must point at that many readable bytes, which the caller
//!   promises (the header says so);
//! - a handle is a `Box` turned into a pointer by [`keyscope_open`] and back
//!   by [`keyscope_close`], once; the caller promises not to use it after
//!   close, nor to close it while a call on it is running;
//! - `pthread_atfork` registers a child handler that only increments an
//!   atomic counter (async-signal-safe).
//!
//! Nothing unwinds across the boundary: every entry point runs inside
//! `catch_unwind`, and a panic becomes a deny with `policy-error` (or a
//! null handle), its message kept for [`keyscope_get_status`].
//!
//! # Forking
//! Wasmtime's threads (the epoch ticker, the feed's watcher) do not survive
//! a `fork`, and a child would decide with no deadline and no swaps. A
//! handle therefore belongs to the process that opened it: in a child
//! forked after the open, every decision is a deny with `policy-error`, and
//! the status says to open the handle in each worker (nginx:
//! `init_worker_by_lua*`, never `init_by_lua*`). In such a child no call
//! takes a lock (a parent's thread may have held it at the fork, and it
//! would never be released): each answers at once, and `keyscope_close`
//! leaves the handle to the process's end.

#![allow(unsafe_code)]
#![allow(non_camel_case_types)]

use std::ffi::{CStr, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};

use keyscope_policy::Decision;
use keyscope_runtime::answer;

use crate::embedded::{EmbedStatus, Embedded};

/// The version of this ABI; a host checks it with [`keyscope_abi_version`].
pub const KEYSCOPE_ABI_VERSION: u32 = 1;

/// An open handle (opaque).
#[derive(Debug)]
pub struct keyscope_handle {
    inner: Embedded,
    /// The value of the fork counter when it was opened.
    forks_at_open: u64,
    /// The process that opened it.
    pid: u32,
}

/// Bytes lent by the caller for the length of one call: not NUL-terminated;
/// `ptr` may be null only when `len` is 0.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct keyscope_bytes {
    pub ptr: *const u8,
    pub len: usize,
}

/// One HTTP request to decide. Pass every copy of the API key header and
/// of `Authorization` the request carries: the library applies the front
/// doors' one rule (more than one key is ambiguous and denied as
/// `malformed-key`). For a bare key, pass it as the one API key copy.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct keyscope_request {
    /// The copies of the API key header (`x-api-key`).
    pub api_keys: *const keyscope_bytes,
    pub api_keys_len: usize,
    /// The copies of `Authorization` (`Bearer <key>` is read).
    pub authorizations: *const keyscope_bytes,
    pub authorizations_len: usize,
    /// The method, as sent (`GET`).
    pub method: keyscope_bytes,
    /// The path with its query, as sent (nginx: `$request_uri`).
    pub path: keyscope_bytes,
}

/// What the library decided, and the answer to give, built once: fill one
/// per thread and reuse it; nothing in it is to be freed. Every text is
/// NUL-terminated.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct keyscope_decision {
    /// 1 to let the request through, 0 to deny it.
    pub allow: u8,
    /// 1 when the ids below are set (on an allow).
    pub has_ids: u8,
    /// 200, or 401, 403 or 503 to answer with.
    pub status: u16,
    /// The length of `body`, without its NUL; 0 on an allow.
    pub body_len: u32,
    /// The generation that decided; 0 when none did.
    pub generation: u64,
    /// The key's id, on an allow.
    pub key_id: u64,
    /// The key's scope's id, on an allow.
    pub scope_id: u64,
    /// The reason: `allowed`, `revoked-key`, `policy-error`, ...
    pub reason: [c_char; 32],
    /// `WWW-Authenticate` for a 401; empty otherwise.
    pub www_authenticate: [c_char; 64],
    /// The key's id in decimal, for a header; empty on a deny.
    pub key_id_text: [c_char; 24],
    /// The scope's id in decimal; empty on a deny.
    pub scope_id_text: [c_char; 24],
    /// On a deny, the JSON body (`application/json`): the reason, never
    /// the key.
    pub body: [c_char; 256],
}

/// A handle's status. Every text is NUL-terminated.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct keyscope_status {
    /// The generation serving.
    pub generation: u64,
    /// When it went live, in ms since the Unix epoch.
    pub loaded_at_ms: u64,
    /// The control plane's revision of the data (bundles only).
    pub snapshot_revision: u64,
    /// How old the data is, in ms: since its bundle was published, or
    /// since the snapshot file was written.
    pub snapshot_age_ms: u64,
    /// Key records in the snapshot.
    pub keys: u64,
    /// Decisions taken through this handle.
    pub decisions: u64,
    /// Generations published since open.
    pub swaps: u64,
    /// Swaps refused since open (the last good state kept serving).
    pub swaps_refused: u64,
    /// Decisions denied with `policy-error`.
    pub policy_errors: u64,
    /// Errors recorded since open; `last_error` holds the last one.
    pub errors: u64,
    /// 1 when `snapshot_revision` is set.
    pub has_snapshot_revision: u8,
    /// 1 when `snapshot_age_ms` is set.
    pub has_snapshot_age: u8,
    /// 1 when the source could not be read at its last look.
    pub stale: u8,
    /// `snapshot-file` or `bundle`.
    pub source: [c_char; 16],
    /// The module's SHA-256, in hex.
    pub module_digest: [c_char; 65],
    /// The snapshot's SHA-256, in hex.
    pub snapshot_digest: [c_char; 65],
    /// The last error, in words; empty if none.
    pub last_error: [c_char; 512],
}

/// How many times this process forked a child since the library loaded,
/// as seen in that child.
static FORKS: AtomicU64 = AtomicU64::new(0);
static WATCH_FORKS: Once = Once::new();

extern "C" fn forked_child() {
    FORKS.fetch_add(1, Ordering::SeqCst);
}

fn watch_forks() {
    WATCH_FORKS.call_once(|| {
        // SAFETY: registers a plain function that touches only an atomic.
        unsafe {
            libc::pthread_atfork(None, None, Some(forked_child));
        }
    });
}

/// The ABI version, [`KEYSCOPE_ABI_VERSION`].
#[unsafe(no_mangle)]
pub extern "C" fn keyscope_abi_version() -> u32 {
    KEYSCOPE_ABI_VERSION
}

/// Opens a handle from the configuration file at `config_path` (TOML; see
/// docs/embedding.md). Returns null on failure, with the reason written to
/// `error` (NUL-terminated, cut to `error_cap`; `error` may be null).
///
/// Open it in the process that decides: in nginx, in each worker
/// (`init_worker_by_lua*`), after the fork.
///
/// # Safety
/// `config_path` is a NUL-terminated string; `error` is null or writable
/// for `error_cap` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn keyscope_open(
    config_path: *const c_char,
    error: *mut c_char,
    error_cap: usize,
) -> *mut keyscope_handle {
    let fail = |message: &str| {
        if !error.is_null() && error_cap > 0 {
            // SAFETY: the caller lends `error_cap` writable bytes.
            let buffer = unsafe { std::slice::from_raw_parts_mut(error, error_cap) };
            fill(buffer, message);
        }
        std::ptr::null_mut()
    };
    if config_path.is_null() {
        return fail("keyscope_open: the configuration path is null");
    }
    // SAFETY: the caller passes a NUL-terminated string.
    let path = unsafe { CStr::from_ptr(config_path) };
    let Ok(path) = path.to_str() else {
        return fail("keyscope_open: the configuration path is not UTF-8");
    };
    watch_forks();
    match catch_unwind(|| Embedded::open_file(Path::new(path))) {
        Ok(Ok(inner)) => Box::into_raw(Box::new(keyscope_handle {
            inner,
            forks_at_open: FORKS.load(Ordering::SeqCst),
            pid: std::process::id(),
        })),
        Ok(Err(open)) => fail(&open.to_string()),
        Err(panic) => fail(&format!("keyscope_open panicked: {}", panic_text(&*panic))),
    }
}

/// Decides one request into `out`. Returns 0 when it decided; -1 when an
/// argument was unusable (a null handle, request or out; a null pointer
/// with a length), in which case `out`, if not null, holds a deny with
/// `policy-error` and status 503. Never blocks on I/O; safe to call from
/// several threads at once on one handle.
///
/// # Safety
/// `handle` comes from [`keyscope_open`] and is not closed; `request`
/// points at a valid [`keyscope_request`] whose pointers are readable for
/// their lengths; `out` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn keyscope_decide(
    handle: *const keyscope_handle,
    request: *const keyscope_request,
    out: *mut keyscope_decision,
) -> i32 {
    if out.is_null() {
        return -1;
    }
    // SAFETY: the caller lends a writable `keyscope_decision`.
    let out = unsafe { &mut *out };
    // SAFETY: null, or from `keyscope_open` and open.
    let Some(handle) = (unsafe { handle.as_ref() }) else {
        write_decision(
            out,
            &Decision::deny(keyscope_policy::Reason::PolicyError),
            0,
        );
        return -1;
    };
    let decided = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: as the caller promises for `request`.
        let request = unsafe { request.as_ref() }
            .ok_or(Unusable::Argument("keyscope_decide: the request is null"))?;
        if FORKS.load(Ordering::Relaxed) != handle.forks_at_open {
            return Err(Unusable::Forked);
        }
        // SAFETY: as the caller promises for each pointer and length.
        let (api_keys, authorizations, method, path) = unsafe {
            (
                slice(request.api_keys, request.api_keys_len).ok_or(Unusable::Argument(
                    "keyscope_decide: `api_keys` is null with a length",
                ))?,
                slice(request.authorizations, request.authorizations_len).ok_or(
                    Unusable::Argument("keyscope_decide: `authorizations` is null with a length"),
                )?,
                bytes(request.method).ok_or(Unusable::Argument(
                    "keyscope_decide: `method` is null with a length",
                ))?,
                bytes(request.path).ok_or(Unusable::Argument(
                    "keyscope_decide: `path` is null with a length",
                ))?,
            )
        };
        // Checked first, so that the decision reads the copies in place,
        // with no allocation per call.
        if api_keys
            .iter()
            .chain(authorizations)
            .any(|copy| copy.ptr.is_null() && copy.len != 0)
        {
            return Err(Unusable::Argument(
                "keyscope_decide: a header copy is null with a length",
            ));
        }
        // SAFETY: as the caller promises for each copy; none is null with a
        // length (checked above).
        let lent = |copy: &keyscope_bytes| unsafe { bytes(*copy) }.unwrap_or_default();
        Ok(handle.inner.decide(
            api_keys.iter().map(lent),
            authorizations.iter().map(lent),
            method,
            path,
        ))
    }));
    match decided {
        Ok(Ok(outcome)) => {
            write_decision(out, &outcome.decision, outcome.generation);
            0
        }
        Ok(Err(Unusable::Forked)) => {
            // No lock is taken in a forked child: one a parent's thread held
            // at the fork stays held here forever. The status says why.
            write_decision(
                out,
                &Decision::deny(keyscope_policy::Reason::PolicyError),
                0,
            );
            0
        }
        Ok(Err(Unusable::Argument(message))) => {
            handle.inner.record_error(message.to_owned());
            write_decision(
                out,
                &Decision::deny(keyscope_policy::Reason::PolicyError),
                0,
            );
            -1
        }
        Err(panic) => {
            handle
                .inner
                .record_error(format!("keyscope_decide panicked: {}", panic_text(&*panic)));
            write_decision(
                out,
                &Decision::deny(keyscope_policy::Reason::PolicyError),
                0,
            );
            0
        }
    }
}

/// Writes the handle's status into `out`. Returns 0, or -1 for a null
/// argument.
///
/// # Safety
/// `handle` comes from [`keyscope_open`] and is not closed; `out` is
/// writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn keyscope_get_status(
    handle: *const keyscope_handle,
    out: *mut keyscope_status,
) -> i32 {
    // SAFETY: null, or from `keyscope_open` and open; `out` null or writable.
    let (Some(handle), Some(out)) = (unsafe { handle.as_ref() }, unsafe { out.as_mut() }) else {
        return -1;
    };
    match catch_unwind(AssertUnwindSafe(|| status_of(handle))) {
        Ok(status) => {
            write_status(out, &status);
            0
        }
        Err(_) => -1,
    }
}

/// The handle's status; in a child forked after the open, one made without
/// taking any lock (a lock a parent's thread held at the fork would never
/// be released here), saying why every decision is denied.
fn status_of(handle: &keyscope_handle) -> EmbedStatus {
    if FORKS.load(Ordering::Relaxed) == handle.forks_at_open {
        return handle.inner.status();
    }
    EmbedStatus::forked(format!(
        "this handle was opened in process {} and used in process {}, forked after \
         the open: its threads did not survive the fork, so every decision is denied. \
         Open the handle in each worker (nginx: init_worker_by_lua*, not init_by_lua*)",
        handle.pid,
        std::process::id()
    ))
}

/// Writes the handle's status as JSON into `buffer` (NUL-terminated) if it
/// fits in `cap` bytes. Returns the JSON's length without the NUL: if it
/// is `cap` or more, nothing was written and a larger buffer is needed.
/// Returns 0 for a null handle.
///
/// # Safety
/// `handle` comes from [`keyscope_open`] and is not closed; `buffer` is
/// null or writable for `cap` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn keyscope_status_json(
    handle: *const keyscope_handle,
    buffer: *mut c_char,
    cap: usize,
) -> usize {
    // SAFETY: null, or from `keyscope_open` and open.
    let Some(handle) = (unsafe { handle.as_ref() }) else {
        return 0;
    };
    let Ok(json) = catch_unwind(AssertUnwindSafe(|| {
        serde_json::to_string(&status_of(handle)).unwrap_or_default()
    })) else {
        return 0;
    };
    if !buffer.is_null() && json.len() < cap {
        // SAFETY: the caller lends `cap` writable bytes.
        let buffer = unsafe { std::slice::from_raw_parts_mut(buffer, cap) };
        fill(buffer, &json);
    }
    json.len()
}

/// Closes a handle: stops its feed and frees it. Null is ignored.
///
/// # Safety
/// `handle` comes from [`keyscope_open`], is closed once, and no call on it
/// is running or follows.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn keyscope_close(handle: *mut keyscope_handle) {
    if handle.is_null() {
        return;
    }
    // SAFETY: from `Box::into_raw` in `keyscope_open`, closed once.
    let handle = unsafe { Box::from_raw(handle) };
    // In a forked child, the handle's threads are gone and its locks may be
    // held for ever: stopping them would hang. The memory goes with the
    // process.
    if FORKS.load(Ordering::Relaxed) != handle.forks_at_open {
        std::mem::forget(handle);
        return;
    }
    let _ = catch_unwind(AssertUnwindSafe(|| drop(handle)));
}

/// Why a call could not decide.
enum Unusable {
    /// The handle was opened before this process was forked.
    Forked,
    /// An argument is unusable.
    Argument(&'static str),
}

/// The bytes of a `keyscope_bytes`; `None` for a null pointer with a
/// length.
///
/// # Safety
/// A non-null `ptr` is readable for `len` bytes for the call.
unsafe fn bytes<'a>(bytes: keyscope_bytes) -> Option<&'a [u8]> {
    if bytes.ptr.is_null() {
        return (bytes.len == 0).then_some(&[]);
    }
    // SAFETY: as the caller promises.
    Some(unsafe { std::slice::from_raw_parts(bytes.ptr, bytes.len) })
}

/// A caller's array; `None` for a null pointer with a length.
///
/// # Safety
/// A non-null `ptr` points at `len` values for the call.
unsafe fn slice<'a, T>(ptr: *const T, len: usize) -> Option<&'a [T]> {
    if ptr.is_null() {
        return (len == 0).then_some(&[]);
    }
    // SAFETY: as the caller promises.
    Some(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// Writes `text` into a C buffer, cut to fit, NUL-terminated; returns the
/// bytes written without the NUL.
fn fill(buffer: &mut [c_char], text: &str) -> usize {
    let Some(room) = buffer.len().checked_sub(1) else {
        return 0;
    };
    let mut length = text.len().min(room);
    // Cut on a character boundary.
    while !text.is_char_boundary(length) {
        length -= 1;
    }
    for (to, from) in buffer.iter_mut().zip(text.as_bytes()[..length].iter()) {
        *to = *from as c_char;
    }
    buffer[length] = 0;
    length
}

/// Writes `value` in decimal, NUL-terminated, without allocating (a u64
/// has at most 20 digits; the buffers hold 24).
fn fill_decimal(buffer: &mut [c_char], mut value: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    // Digits are ASCII.
    fill(
        buffer,
        std::str::from_utf8(&digits[start..]).unwrap_or_default(),
    );
}

fn write_decision(out: &mut keyscope_decision, decision: &Decision, generation: u64) {
    out.allow = u8::from(decision.allow);
    out.status = answer::status(decision.reason);
    out.generation = generation;
    fill(&mut out.reason, decision.reason.as_str());
    fill(
        &mut out.www_authenticate,
        answer::www_authenticate(decision.reason).unwrap_or_default(),
    );
    let ids = decision
        .allow
        .then_some((decision.key_id, decision.scope_id));
    match ids {
        Some((Some(key_id), Some(scope_id))) => {
            out.has_ids = 1;
            out.key_id = key_id;
            out.scope_id = scope_id;
            fill_decimal(&mut out.key_id_text, key_id);
            fill_decimal(&mut out.scope_id_text, scope_id);
        }
        _ => {
            out.has_ids = 0;
            out.key_id = 0;
            out.scope_id = 0;
            fill(&mut out.key_id_text, "");
            fill(&mut out.scope_id_text, "");
        }
    }
    // An allow has no body (and builds none).
    let body = answer::denial_body(decision).unwrap_or_default();
    let length = if body.len() < out.body.len() {
        fill(&mut out.body, &body)
    } else {
        // Never cut JSON: the reason alone always fits.
        fill(
            &mut out.body,
            &format!(r#"{{"reason":"{}"}}"#, decision.reason.as_str()),
        )
    };
    out.body_len = u32::try_from(length).unwrap_or(0);
}

fn write_status(out: &mut keyscope_status, status: &EmbedStatus) {
    out.generation = status.generation;
    out.loaded_at_ms = status.loaded_at_ms;
    out.has_snapshot_revision = u8::from(status.snapshot_revision.is_some());
    out.snapshot_revision = status.snapshot_revision.unwrap_or(0);
    out.has_snapshot_age = u8::from(status.snapshot_age_ms.is_some());
    out.snapshot_age_ms = status.snapshot_age_ms.unwrap_or(0);
    out.keys = u64::from(status.keys);
    out.decisions = status.decisions;
    out.swaps = status.swaps;
    out.swaps_refused = status.swaps_refused;
    out.policy_errors = status.policy_errors;
    out.errors = status.errors;
    out.stale = u8::from(status.staleness.stale);
    fill(&mut out.source, status.source);
    fill(&mut out.module_digest, &status.module_digest);
    fill(&mut out.snapshot_digest, &status.snapshot_digest);
    fill(
        &mut out.last_error,
        status.last_error.as_deref().unwrap_or_default(),
    );
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|text| (*text).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic with no message".to_owned())
}
