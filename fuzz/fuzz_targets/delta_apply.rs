//! Deltas, natively and through the component: any bytes applied to the
//! golden `deltas.json` snapshot are either refused, for the same reason by
//! both (and change nothing), or applied with the same summary; and what
//! applies gives the bytes of the same contents built whole. The first byte
//! picks whether the delta's base and result digests are set right, so the
//! fuzzer gets past them into the body.

#![no_main]

use std::sync::{Mutex, OnceLock};

use keyscope_policy::delta::DELTA_HEADER_LEN;
use keyscope_policy::{Snapshot, SnapshotData};
use keyscope_runtime::cases::CaseFile;
use keyscope_runtime::{Limits, PolicyComponent, PolicyEngine, PolicyInstance};
use libfuzzer_sys::fuzz_target;

struct World {
    base: Vec<u8>,
    instance: PolicyInstance,
}

fn world() -> &'static Mutex<World> {
    static WORLD: OnceLock<Mutex<World>> = OnceLock::new();
    WORLD.get_or_init(|| {
        let file = CaseFile::golden()
            .expect("golden cases")
            .into_iter()
            .find(|file| file.name == "deltas.json")
            .expect("deltas.json");
        let base = file.snapshot_data().expect("data").encode().expect("encodes");
        let engine = PolicyEngine::new().expect("engine");
        let component = PolicyComponent::embedded(&engine).expect("component");
        let instance = component.instantiate(Limits::default()).expect("instance");
        Mutex::new(World { base, instance })
    })
}

fuzz_target!(|input: &[u8]| {
    let Some((&mode, rest)) = input.split_first() else {
        return;
    };
    let mut world = world().lock().unwrap_or_else(|e| e.into_inner());
    let World { base, instance } = &mut *world;
    let mut native = Snapshot::decode(base).expect("the base loads");
    let before = native.info().clone();
    let mut delta = rest.to_vec();
    if mode & 1 == 1 && delta.len() >= DELTA_HEADER_LEN {
        delta[16..48].copy_from_slice(&before.digest);
        if let Ok(info) = native.predict(&delta) {
            delta[48..80].copy_from_slice(&info.digest);
        }
    }
    let held = instance.load_snapshot(base).expect("the base loads in the component");
    assert_eq!(held, before);
    let natively = native.apply_delta(&delta).cloned();
    let component = instance.apply_delta(delta.clone().into());
    match (&natively, &component) {
        (Ok(native_info), Ok(info)) => {
            assert_eq!(native_info, info);
            let bytes = native.to_bytes().expect("re-encodes");
            assert_eq!(&bytes[bytes.len() - 32..], &info.digest[..]);
            // The same contents built whole give the same bytes, unless the
            // delta gave two keys one id (which a whole build refuses; the
            // producer's signed digest vouches for a delta).
            if let Ok(whole) = SnapshotData::encode(&native.data()) {
                assert_eq!(whole, bytes);
                let reloaded = Snapshot::decode(&bytes).expect("a whole build loads");
                assert_eq!(reloaded.info(), info);
            }
        }
        (Err(native_error), Err(keyscope_runtime::Error::Delta(component_error))) => {
            assert_eq!(native_error.tag(), component_error.tag());
            assert_eq!(native.info(), &before, "a refused delta changes nothing");
        }
        (native, component) => panic!("native {native:?} but component {component:?}"),
    }
});
