//! The header is current, and the C ABI decides as the runtime does.

use std::ffi::CStr;
use std::path::Path;

use crate::ffi::*;

/// Regenerates `include/keyscope.h` from `src/ffi.rs`; a difference fails,
/// unless `KEYSCOPE_BLESS=1`, which rewrites it.
#[test]
fn the_c_header_is_current() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).unwrap();
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_config(config)
        .with_src(dir.join("src/ffi.rs"))
        .generate()
        .unwrap()
        .write(&mut generated);
    let generated = String::from_utf8(generated).unwrap();
    let path = dir.join("include/keyscope.h");
    if std::env::var_os("KEYSCOPE_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "include/keyscope.h is out of date: run `KEYSCOPE_BLESS=1 cargo test -p keyscope-embed`"
    );
}

fn text(buffer: &[std::ffi::c_char]) -> &str {
    // SAFETY (test): the library NUL-terminates every text it writes.
    #[allow(unsafe_code)]
    let text = unsafe { CStr::from_ptr(buffer.as_ptr()) };
    text.to_str().unwrap()
}

#[test]
fn a_bad_configuration_is_a_null_handle_with_words() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("keyscope.toml");
    std::fs::write(&config, "snapshot = \"missing.ks\"\n").unwrap();
    let path = std::ffi::CString::new(config.to_str().unwrap()).unwrap();
    let mut error = [0 as std::ffi::c_char; 256];
    #[allow(unsafe_code)]
    // SAFETY (test): a NUL-terminated path and a buffer of its length.
    let handle = unsafe { keyscope_open(path.as_ptr(), error.as_mut_ptr(), error.len()) };
    assert!(handle.is_null());
    assert!(text(&error).contains("missing.ks"), "{}", text(&error));
}

#[test]
fn null_arguments_deny_with_policy_error() {
    #[allow(unsafe_code)]
    // SAFETY (test): a null handle and request are what is tested.
    let (code, out) = unsafe {
        let mut out: keyscope_decision = std::mem::zeroed();
        let code = keyscope_decide(std::ptr::null(), std::ptr::null(), &mut out);
        (code, out)
    };
    assert_eq!(code, -1);
    assert_eq!(out.allow, 0);
    assert_eq!(out.status, 503);
    assert_eq!(text(&out.reason), "policy-error");
    assert_eq!(
        text(&out.body),
        r#"{"error":"unavailable","reason":"policy-error"}"#
    );
}

#[test]
fn every_denial_body_fits_whole() {
    use keyscope_policy::{AgentsLevel, Decision, Reason, Requirement, RuntimePermission};
    let requirements = AgentsLevel::ALL
        .into_iter()
        .map(Requirement::Agents)
        .chain(RuntimePermission::ALL.into_iter().map(Requirement::Runtime));
    for required in requirements {
        for reason in Reason::ALL {
            let decision = Decision {
                required: Some(required),
                ..Decision::deny(reason)
            };
            let body = keyscope_runtime::answer::denial_body(&decision).unwrap();
            assert!(body.len() < 200, "{body}");
        }
    }
}

/// The declarations only: no preprocessor lines, comments or C++ guards,
/// whitespace collapsed.
fn declarations(c: &str) -> String {
    let mut text = String::new();
    let mut in_block_comment = false;
    for line in c.lines() {
        let mut line = line;
        if in_block_comment {
            match line.find("*/") {
                Some(end) => {
                    line = &line[end + 2..];
                    in_block_comment = false;
                }
                None => continue,
            }
        }
        if let Some(start) = line.find("/*") {
            in_block_comment = !line[start..].contains("*/");
            line = &line[..start];
        }
        let line = line.split("//").next().unwrap_or_default().trim();
        if line.starts_with('#') || line == "extern \"C\" {" || line == "}" {
            continue;
        }
        text.push_str(line);
        text.push(' ');
    }
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn the_lua_modules_declarations_are_the_headers() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let header = std::fs::read_to_string(dir.join("include/keyscope.h")).unwrap();
    let lua = std::fs::read_to_string(dir.join("../../integrations/nginx/keyscope.lua")).unwrap();
    let cdef = lua
        .split_once("ffi.cdef[[")
        .and_then(|(_, rest)| rest.split_once("]]"))
        .map(|(cdef, _)| cdef)
        .expect("keyscope.lua has an ffi.cdef[[ ... ]] block");
    assert_eq!(
        declarations(cdef),
        declarations(&header),
        "integrations/nginx/keyscope.lua's ffi.cdef differs from include/keyscope.h"
    );
}

/// The header is valid C99 on its own, warnings as errors (Debian's
/// `gcc`; `.ci/run` installs it).
#[test]
fn the_c_header_compiles_as_c99() {
    let cc = which_cc().expect("no C compiler: `apt-get install gcc` (.ci/run does this)");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("include");
    let output = std::process::Command::new(cc)
        .args(["-std=c99", "-Wall", "-Wextra", "-pedantic", "-Werror", "-fsyntax-only", "-x", "c", "-I"])
        .arg(&dir)
        .arg("-")
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write as _;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(b"#include \"keyscope.h\"\nint main(void) { return (int)keyscope_abi_version(); }\n")?;
            child.wait_with_output()
        })
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn which_cc() -> Option<&'static str> {
    ["/usr/bin/cc", "/usr/bin/gcc"]
        .into_iter()
        .find(|path| Path::new(path).exists())
}

/// `GET /api/v2/apps/acme/agents` with no credential.
fn get_agents() -> keyscope_request {
    const METHOD: &[u8] = b"GET";
    const URI: &[u8] = b"/api/v2/apps/acme/agents";
    keyscope_request {
        api_keys: std::ptr::null(),
        api_keys_len: 0,
        authorizations: std::ptr::null(),
        authorizations_len: 0,
        method: keyscope_bytes {
            ptr: METHOD.as_ptr(),
            len: METHOD.len(),
        },
        path: keyscope_bytes {
            ptr: URI.as_ptr(),
            len: URI.len(),
        },
    }
}

/// A handle opened, then the process forked: in the child every decision
/// is a deny with `policy-error` whose words say to open per worker; the
/// parent decides on.
#[test]
#[allow(unsafe_code)]
fn a_handle_used_in_a_child_forked_after_the_open_denies_and_says_why() {
    use keyscope_policy::snapshot::{SnapshotData, default_operations};
    let dir = tempfile::tempdir().unwrap();
    let snapshot = SnapshotData {
        operations: default_operations(),
        routes: keyscope_policy::routes::default_routes(),
        ..SnapshotData::default()
    }
    .encode()
    .unwrap();
    std::fs::write(dir.path().join("snapshot.ks"), snapshot).unwrap();
    let config = dir.path().join("keyscope.toml");
    std::fs::write(&config, "snapshot = \"snapshot.ks\"\n").unwrap();
    let path = std::ffi::CString::new(config.to_str().unwrap()).unwrap();
    let request = get_agents();
    // SAFETY (test): the FFI as a C host uses it; the child only decides,
    // reads the status, writes to a pipe and leaves with `_exit`.
    unsafe {
        let handle = keyscope_open(path.as_ptr(), std::ptr::null_mut(), 0);
        assert!(!handle.is_null());
        let mut pipe = [0; 2];
        assert_eq!(libc::pipe(pipe.as_mut_ptr()), 0);
        let child = libc::fork();
        assert!(child >= 0);
        if child == 0 {
            let mut out: keyscope_decision = std::mem::zeroed();
            keyscope_decide(handle, &request, &mut out);
            let mut status: keyscope_status = std::mem::zeroed();
            keyscope_get_status(handle, &mut status);
            let said = format!("{}|{}", text(&out.reason), text(&status.last_error));
            libc::write(pipe[1], said.as_ptr().cast(), said.len());
            libc::_exit(0);
        }
        libc::close(pipe[1]);
        let mut said = Vec::new();
        let mut buffer = [0u8; 1024];
        loop {
            let read = libc::read(pipe[0], buffer.as_mut_ptr().cast(), buffer.len());
            if read <= 0 {
                break;
            }
            said.extend_from_slice(&buffer[..read as usize]);
        }
        libc::close(pipe[0]);
        let mut exit = 0;
        libc::waitpid(child, &mut exit, 0);
        let said = String::from_utf8(said).unwrap();
        assert!(said.starts_with("policy-error|"), "{said}");
        assert!(said.contains("forked after the open"), "{said}");
        assert!(said.contains("init_worker_by_lua"), "{said}");
        // The parent's handle decides on (no key presented: missing-key).
        let mut out: keyscope_decision = std::mem::zeroed();
        assert_eq!(keyscope_decide(handle, &request, &mut out), 0);
        assert_eq!(text(&out.reason), "missing-key");
        assert_eq!(out.status, 401);
        keyscope_close(handle);
    }
}

/// A thousand children forked while the parent's threads swap and read the
/// status (so that its locks are often held at the fork): in each, every
/// call answers at once.
#[test]
#[allow(unsafe_code)]
fn no_call_in_a_forked_child_hangs_whatever_the_parent_held() {
    use keyscope_policy::snapshot::{SnapshotData, default_operations};
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let snapshot = |scopes: usize| {
        SnapshotData {
            operations: default_operations(),
            routes: keyscope_policy::routes::default_routes(),
            scopes: (1..=scopes as u64)
                .map(|id| keyscope_policy::snapshot::ScopeEntry {
                    id,
                    app: "acme".into(),
                    agents: keyscope_policy::AgentsLevel::View,
                    runtime: keyscope_policy::RuntimeSet::EMPTY,
                })
                .collect(),
            ..SnapshotData::default()
        }
        .encode()
        .unwrap()
    };
    let file = dir.path().join("snapshot.ks");
    std::fs::write(&file, snapshot(1)).unwrap();
    let config = dir.path().join("keyscope.toml");
    std::fs::write(
        &config,
        "snapshot = \"snapshot.ks\"\nwatch_interval_ms = 10\n",
    )
    .unwrap();
    let path = std::ffi::CString::new(config.to_str().unwrap()).unwrap();
    let request = get_agents();
    // SAFETY (test): the FFI as a C host uses it; each child calls the
    // library, writes one byte to a pipe and leaves with `_exit`.
    unsafe {
        let handle = keyscope_open(path.as_ptr(), std::ptr::null_mut(), 0);
        assert!(!handle.is_null());
        let shared = handle as usize;
        let stop = AtomicBool::new(false);
        std::thread::scope(|threads| {
            // Swaps, one every few milliseconds.
            threads.spawn(|| {
                let mut n = 1;
                while !stop.load(Ordering::Relaxed) {
                    n = n % 5 + 1;
                    let temporary = dir.path().join(".snapshot.new");
                    std::fs::write(&temporary, snapshot(n)).unwrap();
                    std::fs::rename(&temporary, &file).unwrap();
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
            });
            // The status, read without pause: its locks are held often.
            threads.spawn(|| {
                let handle = shared as *const keyscope_handle;
                while !stop.load(Ordering::Relaxed) {
                    let mut status: keyscope_status = std::mem::zeroed();
                    keyscope_get_status(handle, &mut status);
                    let mut json = [0 as std::ffi::c_char; 4096];
                    keyscope_status_json(handle, json.as_mut_ptr(), json.len());
                }
            });
            for n in 0..1000 {
                let mut pipe = [0; 2];
                assert_eq!(libc::pipe(pipe.as_mut_ptr()), 0);
                let child = libc::fork();
                assert!(child >= 0);
                if child == 0 {
                    let mut status: keyscope_status = std::mem::zeroed();
                    keyscope_get_status(handle, &mut status);
                    let mut json = [0 as std::ffi::c_char; 4096];
                    keyscope_status_json(handle, json.as_mut_ptr(), json.len());
                    let mut out: keyscope_decision = std::mem::zeroed();
                    keyscope_decide(handle, &request, &mut out);
                    let denied = text(&out.reason) == "policy-error"
                        && text(&status.last_error).contains("forked after the open");
                    keyscope_close(handle);
                    let byte = [u8::from(denied)];
                    libc::write(pipe[1], byte.as_ptr().cast(), 1);
                    libc::_exit(0);
                }
                libc::close(pipe[1]);
                // A generous deadline: a hang is forever, a busy machine
                // is not.
                let mut poll = libc::pollfd {
                    fd: pipe[0],
                    events: libc::POLLIN,
                    revents: 0,
                };
                let ready = libc::poll(&mut poll, 1, 30_000);
                let mut byte = [0u8; 1];
                let read = if ready == 1 {
                    libc::read(pipe[0], byte.as_mut_ptr().cast(), 1)
                } else {
                    libc::kill(child, libc::SIGKILL);
                    0
                };
                libc::close(pipe[0]);
                let mut exit = 0;
                libc::waitpid(child, &mut exit, 0);
                if read != 1 {
                    stop.store(true, Ordering::Relaxed);
                    panic!("child {n} hung in the library");
                }
                assert_eq!(byte[0], 1, "child {n}: a deny with policy-error, and why");
            }
            stop.store(true, Ordering::Relaxed);
        });
        keyscope_close(handle);
    }
}
