//! Policy components that misbehave on purpose, to prove that keyscope
//! contains them: each implements the real `keyscope:policy` world and is
//! selected by one cargo feature. Built for wasm32 by `host/build.rs` into
//! `hostile-<feature>.wasm`. Natively this crate is empty.

#![allow(
    clippy::panic,
    clippy::empty_loop,
    reason = "misbehaving is this crate's purpose"
)]

#[cfg(target_arch = "wasm32")]
#[allow(
    unsafe_code,
    clippy::too_many_arguments,
    reason = "generated export glue"
)]
mod component {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "policy",
    });

    use exports::keyscope::policy::decide::{
        Catalogue, Decision, DeltaError, Guest, HttpRequest, LoadError, Reason, Request,
        RoutedDecision, SnapshotInfo,
    };

    struct Hostile;

    export!(Hostile);

    #[cfg(not(any(
        feature = "loop",
        feature = "grow",
        feature = "trap",
        feature = "allow-all",
        feature = "old-reader"
    )))]
    compile_error!("build keyscope-hostile-policy with exactly one behaviour feature");

    impl Guest for Hostile {
        fn load_snapshot(bytes: Vec<u8>) -> Result<SnapshotInfo, LoadError> {
            let version = match bytes.get(8..10) {
                Some(&[lo, hi]) => u16::from_le_bytes([lo, hi]),
                _ => return Err(LoadError::Truncated),
            };
            if cfg!(feature = "old-reader") && version != 0 {
                return Err(LoadError::UnsupportedVersion(version));
            }
            Ok(SnapshotInfo {
                format_version: version,
                digest: (0, 0, 0, 0),
                apps: 0,
                scopes: 0,
                keys: 0,
                operations: 0,
                routes: 0,
            })
        }

        /// Misbehaves as a decision would (`loop`, `grow`, `trap`); an old
        /// reader refuses the format; `allow-all` takes anything.
        fn apply_delta(delta: Vec<u8>) -> Result<SnapshotInfo, DeltaError> {
            let _ = misbehave();
            if cfg!(feature = "old-reader") {
                return Err(DeltaError::UnsupportedVersion(0));
            }
            Self::load_snapshot(delta).map_err(|_| DeltaError::Truncated)
        }

        fn names() -> Catalogue {
            Catalogue {
                apps: Vec::new(),
                operations: Vec::new(),
            }
        }

        fn evaluate(_request: Request) -> Decision {
            misbehave()
        }

        fn evaluate_batch(requests: Vec<Request>) -> Vec<Decision> {
            requests.into_iter().map(|_| misbehave()).collect()
        }

        fn evaluate_http(_request: HttpRequest) -> RoutedDecision {
            RoutedDecision {
                route: None,
                decision: misbehave(),
            }
        }
    }

    fn misbehave() -> Decision {
        if cfg!(feature = "loop") {
            loop {
                std::hint::black_box(());
            }
        }
        if cfg!(feature = "grow") {
            // Reserve without touching: memory grows as fast as it can.
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(Vec::with_capacity(16 << 20));
                std::hint::black_box(&hoard);
            }
        }
        if cfg!(feature = "trap") {
            panic!("a policy that traps");
        }
        Decision {
            allow: true,
            reason: Reason::Allowed,
            key_id: None,
            scope_id: None,
            required: None,
        }
    }
}
