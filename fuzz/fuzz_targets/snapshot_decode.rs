//! Snapshot decoding, natively and through the component: any bytes are
//! either refused, for the same reason by both, or loaded with the same
//! summary; what loads re-encodes to itself. The first byte picks whether
//! the digest trailer is recomputed, so that the fuzzer gets past it into
//! the body.

#![no_main]

use std::sync::{Mutex, OnceLock};

use keyscope_policy::{LoadError, Snapshot, SnapshotData};
use keyscope_runtime::{Limits, PolicyComponent, PolicyEngine, PolicyInstance};
use libfuzzer_sys::fuzz_target;

fn instance() -> &'static Mutex<PolicyInstance> {
    static INSTANCE: OnceLock<Mutex<PolicyInstance>> = OnceLock::new();
    INSTANCE.get_or_init(|| {
        let engine = PolicyEngine::new().expect("engine");
        let component = PolicyComponent::embedded(&engine).expect("component");
        Mutex::new(component.instantiate(Limits::default()).expect("instance"))
    })
}

fuzz_target!(|input: &[u8]| {
    let Some((&mode, rest)) = input.split_first() else {
        return;
    };
    let mut bytes = rest.to_vec();
    if mode & 1 == 1
        && bytes.len() > 48
        && let Ok(digest) = keyscope_policy::snapshot::compute_digest(&bytes)
    {
        let body_end = bytes.len() - 32;
        bytes[body_end..].copy_from_slice(&digest);
    }
    let native = Snapshot::decode(&bytes);
    let mut instance = instance().lock().unwrap_or_else(|e| e.into_inner());
    let component = instance.load_snapshot(&bytes);
    match (&native, &component) {
        (Ok(native), Ok(info)) => {
            assert_eq!(native.info(), info);
            let (data, _) = SnapshotData::decode(&bytes).expect("loads, so decodes");
            let again = data.encode().expect("decoded data re-encodes");
            assert_eq!(
                Snapshot::decode(&again)
                    .expect("re-encoded loads")
                    .info()
                    .keys,
                info.keys
            );
        }
        (Err(native), Err(keyscope_runtime::Error::Snapshot(component))) => {
            // The same reason; a `malformed` message may differ between a
            // 64-bit and a 32-bit `usize` (format 3's postcard meta did:
            // corpus/snapshot_decode/regression-usize-varint).
            assert_eq!(
                std::mem::discriminant(native),
                std::mem::discriminant(component)
            );
            if let (LoadError::UnsupportedVersion(a), LoadError::UnsupportedVersion(b)) =
                (native, component)
            {
                assert_eq!(a, b);
            }
        }
        (native, component) => panic!("native {native:?} but component {component:?}"),
    }
});
