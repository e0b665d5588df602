//! Key parsing and checksum: any string either is a key (and then its
//! credential is its SHA-256) or is malformed; never a panic. A generated
//! key always parses, and a one-character change never does.

#![no_main]

use keyscope_keys::{self as keys, KeySecret};
use keyscope_policy::{Credential, KeyDigest};
use libfuzzer_sys::fuzz_target;
use sha2::{Digest as _, Sha256};

fuzz_target!(|input: &str| {
    let credential = keys::credential(Some(input));
    match (input.is_empty(), keys::check_format(input)) {
        (true, _) => assert_eq!(credential, Credential::Missing),
        (false, Ok(())) => {
            let digest: [u8; 32] = Sha256::digest(input.as_bytes()).into();
            assert_eq!(credential, Credential::Digest(KeyDigest(digest)));
            let parsed = KeySecret::parse(input).expect("a well-formed key parses");
            assert_eq!(parsed.expose(), input);
        }
        (false, Err(_)) => {
            assert_eq!(credential, Credential::Malformed);
            assert!(KeySecret::parse(input).is_err());
        }
    }
    // The checksum catches any single substitution in a real key.
    let key = KeySecret::generate();
    let mut bytes = key.expose().as_bytes().to_vec();
    if let Some((&position, &replacement)) = input.as_bytes().first().zip(input.as_bytes().get(1)) {
        let at = 3 + usize::from(position) % (bytes.len() - 3);
        if replacement.is_ascii_alphanumeric() && bytes[at] != replacement {
            bytes[at] = replacement;
            let changed = String::from_utf8(bytes).expect("ascii");
            assert_eq!(
                keys::credential(Some(&changed)),
                Credential::Malformed,
                "{changed}"
            );
        }
    }
});
