//! Bundles as a gateway receives them: any bytes are refused with a named
//! error or accepted, never a panic. The first byte picks the mode: the
//! rest as a served bundle, or as a cache; the rest as a stream read by
//! `format::read_bounded`; or the rest split at its first NUL into a
//! manifest (JSON) and a snapshot body, which are framed, given their
//! SHA-256 trailer and signed with the trusted key, so that the fuzzer gets
//! past the signature and the digests into the layout checks and the
//! snapshot's decoding. The clock is at 0, so no signature has expired.

#![no_main]

use std::sync::OnceLock;

use ed25519_dalek::SigningKey;
use keyscope_bundle::format::{self, Part};
use keyscope_bundle::{Follower, Layout, Manifest};
use libfuzzer_sys::fuzz_target;

fn key() -> &'static SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(|| SigningKey::from_bytes(&[7; 32]))
}

fuzz_target!(|input: &[u8]| {
    let Some((&mode, rest)) = input.split_first() else {
        return;
    };
    let follower = Follower::new([key().verifying_key()]);
    match mode % 4 {
        0 => drop(follower.prepare(rest, Layout::Served, 0)),
        1 => drop(follower.prepare(rest, Layout::Cache, 0)),
        3 => {
            let mut stream = rest;
            if let Ok(read) =
                format::read_bounded(&mut stream, &key().verifying_key(), Layout::Served, 1 << 20)
            {
                // Whatever it returns is exactly what it was given.
                assert_eq!(read, rest);
            }
        }
        _ => {
            let (json, body) = match rest.iter().position(|&b| b == 0) {
                Some(at) => (&rest[..at], &rest[at + 1..]),
                None => (rest, &[][..]),
            };
            let Ok(mut manifest) = serde_json::from_slice::<Manifest>(json) else {
                return;
            };
            let mut snapshot = body.to_vec();
            snapshot.extend_from_slice(&[0; 32]);
            let digest = keyscope_policy::snapshot::compute_digest(&snapshot).unwrap_or([0; 32]);
            let trailer = snapshot.len() - 32;
            snapshot[trailer..].copy_from_slice(&digest);
            manifest.signer = keyscope_bundle::keys::key_id(&key().verifying_key());
            manifest.snapshot = Part {
                sha256: hex::encode(digest),
                bytes: snapshot.len() as u64,
            };
            let bytes = format::seal(&manifest, key(), &[&snapshot]);
            drop(follower.prepare(&bytes, Layout::Served, 0));
        }
    }
});
