#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use ed25519_dalek::SigningKey;
use keyscope_policy::kept::SnapshotChanges;
use keyscope_policy::routes::default_routes;
use keyscope_policy::snapshot::{KeyEntry, ScopeEntry, SnapshotData, default_operations};
use keyscope_policy::{AgentsLevel, KeyDigest, RuntimeSet};
use keyscope_policy::{LoadError, Snapshot as KeptSnapshot};

use crate::format::{self, Kind, Layout, Manifest, Part};
use crate::{BundleError, Follower, Have, Publisher};

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn data(keys: u64) -> SnapshotData {
    SnapshotData {
        operations: default_operations(),
        scopes: vec![ScopeEntry {
            id: 1,
            app: "app".into(),
            agents: AgentsLevel::Full,
            runtime: RuntimeSet::EMPTY,
        }],
        keys: (1..=keys).map(|id| key_entry(id, false)).collect(),
        routes: default_routes(),
    }
}

fn key_entry(id: u64, revoked: bool) -> KeyEntry {
    let mut digest = [0u8; 32];
    digest[..8].copy_from_slice(&id.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes());
    KeyEntry {
        digest: KeyDigest(digest),
        id,
        scope_id: 1,
        revoked,
        not_after: None,
    }
}

const MODULE: &[u8] = b"\0asm a module's bytes";

/// A signature's life in these tests.
const TTL: std::time::Duration = std::time::Duration::from_secs(3600);

fn now() -> u64 {
    crate::publisher::now_ms()
}

/// A control plane's copy of the snapshot: made whole, then changed.
trait Kept: Sized {
    fn new(data: SnapshotData) -> Result<(Self, Vec<u8>), LoadError>;
    fn apply(&mut self, changes: SnapshotChanges) -> Result<Vec<u8>, LoadError>;
}

impl Kept for KeptSnapshot {
    fn new(data: SnapshotData) -> Result<(Self, Vec<u8>), LoadError> {
        let kept = KeptSnapshot::from_data(&data)?;
        let bytes = kept.to_bytes()?;
        Ok((kept, bytes))
    }

    fn apply(&mut self, changes: SnapshotChanges) -> Result<Vec<u8>, LoadError> {
        let delta = self.delta_for(&changes)?;
        self.commit(delta.plan)
            .map_err(|e| LoadError::Malformed(e.to_string()))?;
        self.to_bytes()
    }
}

/// A publisher at revision 1 with 100 keys, and its kept snapshot.
fn publisher() -> (Publisher, KeptSnapshot) {
    let (kept, snapshot) = <KeptSnapshot as Kept>::new(data(100)).unwrap();
    let publisher = Publisher::new(key(1), 1, Arc::from(snapshot), Arc::from(MODULE), TTL);
    (publisher, kept)
}

/// Revokes key `id` on the control plane's side, as the store reports it.
fn revoke(publisher: &mut Publisher, kept: &mut KeptSnapshot, revision: u64, id: u64) {
    let changes = SnapshotChanges {
        keys: vec![key_entry(id, true)],
        ..SnapshotChanges::default()
    };
    let snapshot = kept.apply(changes.clone()).unwrap();
    publisher.advance(revision, Arc::from(snapshot), Some(changes));
}

fn have(manifest: &Manifest) -> Have<'_> {
    Have {
        revision: manifest.revision,
        snapshot: &manifest.snapshot.sha256,
        module: &manifest.module.sha256,
    }
}

fn follow(follower: &mut Follower, bytes: &[u8]) -> Vec<u8> {
    let candidate = follower
        .prepare(bytes, Layout::Served, now())
        .unwrap()
        .unwrap();
    let snapshot = follower.snapshot_of(&candidate).unwrap();
    follower.commit(candidate);
    snapshot
}

#[test]
fn a_decoded_snapshot_is_published_without_encoding_until_a_full_bundle_is_asked_for() {
    let (mut publisher, mut kept) = publisher();
    let mut follower = Follower::new([key(1).verifying_key()]);
    follow(&mut follower, &publisher.bundle(None).unwrap().bytes);
    // As a store's builder publishes: the decoded snapshot, no bytes.
    let changes = SnapshotChanges {
        keys: vec![key_entry(7, true)],
        ..SnapshotChanges::default()
    };
    let delta = kept.delta_for(&changes).unwrap();
    kept.commit(delta.plan).unwrap();
    publisher.advance(2, kept.clone(), Some(changes));
    assert!(!publisher.encoded());
    assert_eq!(publisher.snapshot_sha256(), kept.info().digest_hex());
    let delta = publisher
        .bundle(Some(have(follower.held().unwrap())))
        .unwrap();
    assert_eq!(delta.kind, Kind::Delta);
    assert!(!publisher.encoded(), "a delta needs no encoding");
    let by_delta = follow(&mut follower, &delta.bytes);
    // A new gateway asks for the full bundle: encoded once, the same bytes.
    let mut fresh = Follower::new([key(1).verifying_key()]);
    let full = publisher.bundle(None).unwrap();
    assert!(publisher.encoded());
    assert_eq!(follow(&mut fresh, &full.bytes), by_delta);
    assert_eq!(by_delta, kept.to_bytes().unwrap());
}

#[test]
fn a_gateway_follows_full_then_deltas_to_the_same_bytes() {
    let (mut publisher, mut kept) = publisher();
    let mut follower = Follower::new([key(1).verifying_key()]);
    let full = publisher.bundle(None).unwrap();
    assert_eq!(full.kind, Kind::Full);
    follow(&mut follower, &full.bytes);
    for (revision, id) in [(2, 7), (3, 8), (5, 9)] {
        revoke(&mut publisher, &mut kept, revision, id);
        let delta = publisher
            .bundle(Some(have(follower.held().unwrap())))
            .unwrap();
        assert_eq!(delta.kind, Kind::Delta);
        assert!(
            delta.bytes.len() < 2048,
            "a revocation is small: {}",
            delta.bytes.len()
        );
        let snapshot = follow(&mut follower, &delta.bytes);
        assert_eq!(snapshot[..], publisher.snapshot().unwrap()[..]);
        assert_eq!(follower.held().unwrap().revision, revision);
    }
    // Nothing new: the same state is not a candidate.
    let again = publisher
        .bundle(Some(have(follower.held().unwrap())))
        .unwrap();
    assert!(
        follower
            .prepare(&again.bytes, Layout::Served, now())
            .unwrap()
            .is_none()
    );
}

fn held_at_2() -> (Publisher, KeptSnapshot, Follower) {
    let (mut publisher, mut kept) = publisher();
    let mut follower = Follower::new([key(1).verifying_key()]);
    follow(&mut follower, &publisher.bundle(None).unwrap().bytes);
    revoke(&mut publisher, &mut kept, 2, 7);
    let delta = publisher
        .bundle(Some(have(follower.held().unwrap())))
        .unwrap();
    follow(&mut follower, &delta.bytes);
    (publisher, kept, follower)
}

fn refused(follower: &Follower, bytes: &[u8]) -> BundleError {
    follower.prepare(bytes, Layout::Served, now()).unwrap_err()
}

#[test]
fn changed_bytes_are_refused() {
    let (mut publisher, mut kept, follower) = held_at_2();
    revoke(&mut publisher, &mut kept, 3, 8);
    let delta = publisher
        .bundle(Some(have(follower.held().unwrap())))
        .unwrap()
        .bytes
        .to_vec();
    // A byte of the changes.
    let mut tampered = delta.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    assert!(matches!(
        refused(&follower, &tampered),
        BundleError::Tampered("delta")
    ));
    // A byte of the manifest: the revision.
    let needle = b"\"revision\":3";
    let at = delta
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap()
        + needle.len()
        - 1;
    let mut tampered = delta.clone();
    tampered[at] = b'9';
    assert!(matches!(
        refused(&follower, &tampered),
        BundleError::BadSignature
    ));
    // Truncated.
    assert!(matches!(
        refused(&follower, &delta[..delta.len() - 3]),
        BundleError::Tampered("length")
    ));
    // A full bundle's snapshot.
    let mut full = publisher.full().unwrap().bytes.to_vec();
    let middle = full.len() - MODULE.len() - 40;
    full[middle] ^= 0x80;
    assert!(matches!(
        refused(&follower, &full),
        BundleError::Tampered("snapshot")
    ));
}

#[test]
fn another_signer_and_no_signature_are_refused() {
    let (_, _, follower) = held_at_2();
    let (kept, snapshot) = <KeptSnapshot as Kept>::new(data(100)).unwrap();
    drop(kept);
    let mut other = Publisher::new(
        key(2),
        9,
        Arc::from(snapshot.clone()),
        Arc::from(MODULE),
        TTL,
    );
    let error = refused(&follower, &other.full().unwrap().bytes);
    assert!(matches!(error, BundleError::OtherSigner { .. }), "{error}");
    // A raw snapshot, and a bundle whose signature was zeroed.
    assert!(matches!(
        refused(&follower, &snapshot),
        BundleError::Unsigned(_)
    ));
    let (mut publisher, _) = publisher();
    let mut bytes = publisher.full().unwrap().bytes.to_vec();
    let len = u32::from_le_bytes(bytes[9..13].try_into().unwrap()) as usize;
    bytes[13 + len..13 + len + 64].fill(0);
    assert!(matches!(
        refused(&follower, &bytes),
        BundleError::Unsigned(_)
    ));
}

#[test]
fn an_older_revision_is_a_rollback() {
    let (_, _, follower) = held_at_2();
    let (mut old, _) = publisher();
    let error = refused(&follower, &old.full().unwrap().bytes);
    assert!(
        matches!(
            error,
            BundleError::Rollback {
                offered_revision: 1,
                held_revision: 2,
                ..
            }
        ),
        "{error}"
    );
}

#[test]
fn a_delta_whose_result_is_not_its_signed_digest_is_refused() {
    let (publisher, _, follower) = held_at_2();
    let held = follower.held().unwrap().clone();
    // Signed by the right key, but the changes revoke key 9 while the
    // manifest names the snapshot with key 8 revoked.
    let (mut kept, _) = <KeptSnapshot as Kept>::new(data(100)).unwrap();
    kept.apply(SnapshotChanges {
        keys: vec![key_entry(7, true)],
        ..SnapshotChanges::default()
    })
    .unwrap();
    let claimed = kept
        .apply(SnapshotChanges {
            keys: vec![key_entry(8, true)],
            ..SnapshotChanges::default()
        })
        .unwrap();
    let changes = format::encode_delta(&SnapshotChanges {
        keys: vec![key_entry(9, true)],
        ..SnapshotChanges::default()
    });
    let manifest = Manifest {
        kind: Kind::Delta,
        version: held.version + 1,
        expires_at_ms: held.expires_at_ms,
        revision: 3,
        published_at_ms: 0,
        signer: held.signer.clone(),
        snapshot: Part {
            sha256: format::snapshot_digest(&claimed),
            bytes: claimed.len() as u64,
        },
        base: Some(format::Base {
            revision: held.revision,
            sha256: held.snapshot.sha256.clone(),
        }),
        delta: Some(Part {
            sha256: format::sha256_hex(&changes),
            bytes: changes.len() as u64,
        }),
        module: crate::format::ModulePart {
            included: false,
            ..held.module.clone()
        },
    };
    let bytes = format::seal(&manifest, &key(1), &[&changes]);
    let error = refused(&follower, &bytes);
    assert!(
        matches!(error, BundleError::DeltaMismatch { .. }),
        "{error}"
    );
    // And a delta from a base not held.
    let mut manifest = manifest;
    manifest.base = Some(format::Base {
        revision: 1,
        sha256: held.snapshot.sha256.clone(),
    });
    let bytes = format::seal(&manifest, &key(1), &[&changes]);
    assert!(matches!(
        refused(&follower, &bytes),
        BundleError::WrongBase { .. }
    ));
    drop(publisher);
}

#[test]
fn a_cache_verifies_and_restores_the_held_state() {
    let (mut publisher, _, follower) = held_at_2();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bundle.cache");
    follower.write_cache(&path).unwrap();
    let bytes = crate::cache::read(&path, &key(1).verifying_key())
        .unwrap()
        .unwrap();
    let mut fresh = Follower::new([key(1).verifying_key()]);
    let candidate = fresh
        .prepare(&bytes, Layout::Cache, now())
        .unwrap()
        .unwrap();
    assert_eq!(candidate.snapshot[..], publisher.snapshot().unwrap()[..]);
    assert_eq!(candidate.module.as_deref(), Some(MODULE));
    fresh.commit(candidate);
    assert_eq!(fresh.held().unwrap().revision, 2);
    // A cache edited on disk is refused like a bundle.
    let mut edited = bytes;
    let middle = edited.len() - MODULE.len() - 50;
    edited[middle] ^= 1;
    let fresh = Follower::new([key(1).verifying_key()]);
    assert!(fresh.prepare(&edited, Layout::Cache, now()).is_err());
}

#[test]
fn a_module_change_alone_is_a_delta_with_the_module() {
    let (mut publisher, _, follower) = held_at_2();
    publisher.set_module(Arc::from(&b"\0asm another module"[..]));
    let built = publisher
        .bundle(Some(have(follower.held().unwrap())))
        .unwrap();
    assert_eq!(built.kind, Kind::Delta);
    let candidate = follower
        .prepare(&built.bytes, Layout::Served, now())
        .unwrap()
        .unwrap();
    assert_eq!(
        candidate.module.as_deref(),
        Some(&b"\0asm another module"[..])
    );
}

/// A reader that counts what was taken from it.
struct Counting<R> {
    inner: R,
    taken: u64,
}

impl<R: std::io::Read> std::io::Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.taken += n as u64;
        Ok(n)
    }
}

#[test]
fn a_stream_is_refused_before_more_than_its_signed_head_is_read() {
    let trusted = key(1).verifying_key();
    // Endless zeros: refused at the magic, 13 bytes in.
    let mut zeros = Counting {
        inner: std::io::repeat(0),
        taken: 0,
    };
    let error = format::read_bounded(&mut zeros, &trusted, Layout::Served, 1 << 30).unwrap_err();
    assert!(matches!(error, BundleError::Unsigned(_)), "{error}");
    assert!(zeros.taken <= 13, "read {} bytes of zeros", zeros.taken);

    // A real bundle reads whole, and exactly: nothing may follow it.
    let (mut publisher, _, _) = held_at_2();
    let bundle = publisher.bundle(None).unwrap().bytes;
    let read = format::read_bounded(&mut &bundle[..], &trusted, Layout::Served, 1 << 30).unwrap();
    assert_eq!(read[..], bundle[..]);
    let mut padded = bundle.to_vec();
    padded.push(0);
    let error =
        format::read_bounded(&mut &padded[..], &trusted, Layout::Served, 1 << 30).unwrap_err();
    assert!(matches!(error, BundleError::Tampered("length")), "{error}");
    let error = format::read_bounded(
        &mut &bundle[..bundle.len() - 1],
        &trusted,
        Layout::Served,
        1 << 30,
    )
    .unwrap_err();
    assert!(error.to_string().contains("truncated"), "{error}");

    // Under a cap smaller than its signed size: refused after the head,
    // with the parts unread.
    let mut stream = Counting {
        inner: std::io::Cursor::new(bundle.to_vec()),
        taken: 0,
    };
    let error = format::read_bounded(&mut stream, &trusted, Layout::Served, 64).unwrap_err();
    assert!(matches!(error, BundleError::TooLarge { .. }), "{error}");
    assert!(stream.taken < bundle.len() as u64, "the parts were read");

    // Signed by another key: refused at the head, whatever follows.
    let mut other = Counting {
        inner: std::io::Read::chain(std::io::Cursor::new(bundle.to_vec()), std::io::repeat(0)),
        taken: 0,
    };
    let error = format::read_bounded(&mut other, &key(2).verifying_key(), Layout::Served, 1 << 40)
        .unwrap_err();
    assert!(matches!(error, BundleError::OtherSigner { .. }), "{error}");
}

#[test]
fn a_cache_that_is_a_fifo_or_a_device_is_refused_at_once() {
    let trusted = key(1).verifying_key();
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("bundle.cache");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let error = crate::cache::read(&fifo, &trusted).unwrap_err();
    assert!(error.to_string().contains("not a regular file"), "{error}");
    let link = dir.path().join("zero.cache");
    std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
    let error = crate::cache::read(&link, &trusted).unwrap_err();
    assert!(error.to_string().contains("not a regular file"), "{error}");
    assert!(
        crate::cache::read(&dir.path().join("none"), &trusted)
            .unwrap()
            .is_none()
    );
}

#[test]
fn a_module_change_moves_the_version_so_the_older_module_is_a_rollback() {
    let (mut publisher, _) = publisher();
    let mut follower = Follower::new([key(1).verifying_key()]);
    let first = publisher.bundle(None).unwrap().bytes;
    follow(&mut follower, &first);
    // The same revision, another module: what a policy swap publishes.
    publisher.set_module(Arc::from(&b"\0asm the next module"[..]));
    let next = publisher
        .bundle(Some(have(follower.held().unwrap())))
        .unwrap();
    follow(&mut follower, &next.bytes);
    let held = follower.held().unwrap();
    assert_eq!(held.revision, 1);
    // The first bundle again, replayed: same revision, older module.
    let error = refused(&follower, &first);
    assert!(
        matches!(
            error,
            BundleError::Rollback {
                offered_revision: 1,
                held_revision: 1,
                ..
            }
        ),
        "{error}"
    );
    assert_eq!(error.kind(), "rollback");
}

#[test]
fn another_state_at_the_held_version_is_refused() {
    let (_, _, follower) = held_at_2();
    let held = follower.held().unwrap().clone();
    let (kept, snapshot) = <KeptSnapshot as Kept>::new(data(3)).unwrap();
    drop(kept);
    let manifest = Manifest {
        kind: Kind::Full,
        base: None,
        delta: None,
        snapshot: Part {
            sha256: format::snapshot_digest(&snapshot),
            bytes: snapshot.len() as u64,
        },
        module: format::ModulePart {
            included: true,
            ..held.module.clone()
        },
        revision: held.revision + 1,
        ..held.clone()
    };
    let bytes = format::seal(&manifest, &key(1), &[&snapshot, MODULE]);
    let error = refused(&follower, &bytes);
    assert!(matches!(error, BundleError::Rollback { .. }), "{error}");
}

#[test]
fn an_expired_bundle_is_refused_and_a_cache_past_its_expiry_still_serves() {
    let (mut publisher, _) = publisher();
    let full = publisher.bundle(None).unwrap().bytes;
    let expires = publisher.expires_at_ms();
    let cold = Follower::new([key(1).verifying_key()]);
    let error = cold.prepare(&full, Layout::Served, expires).unwrap_err();
    assert!(matches!(error, BundleError::Expired { .. }), "{error}");
    assert_eq!(error.kind(), "expired");
    assert!(cold.prepare(&full, Layout::Served, expires - 1).is_ok());
    // A gateway's own cache: taken after its expiry (fail static); the
    // gateway then says it is stale.
    let mut follower = Follower::new([key(1).verifying_key()]);
    follow(&mut follower, &full);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bundle.cache");
    follower.write_cache(&path).unwrap();
    let cached = crate::cache::read(&path, &key(1).verifying_key())
        .unwrap()
        .unwrap();
    let restarted = Follower::new([key(1).verifying_key()]);
    assert!(
        restarted
            .prepare(&cached, Layout::Cache, expires + 86_400_000)
            .unwrap()
            .is_some()
    );
}

#[test]
fn a_new_signature_of_the_held_state_renews_it_without_a_swap() {
    let (mut publisher, mut kept, mut follower) = held_at_2();
    let before = follower.held().unwrap().clone();
    assert!(!publisher.resign_if_due(now()), "not due yet");
    assert!(publisher.resign_if_due(before.expires_at_ms - 1));
    let renewal = publisher.bundle(Some(have(&before))).unwrap();
    assert_eq!(renewal.kind, Kind::Delta);
    assert!(renewal.bytes.len() < 1024, "{}", renewal.bytes.len());
    let candidate = follower
        .prepare(&renewal.bytes, Layout::Served, now())
        .unwrap()
        .unwrap();
    assert!(candidate.renews());
    assert!(candidate.snapshot.is_empty() && candidate.module.is_none());
    follower.commit(candidate);
    let after = follower.held().unwrap();
    assert!(after.version > before.version);
    assert!(after.expires_at_ms >= before.expires_at_ms);
    assert!(after.same_state(&before));
    // The same renewal again is nothing new; the old signature, a rollback.
    assert!(
        follower
            .prepare(&renewal.bytes, Layout::Served, now())
            .unwrap()
            .is_none()
    );
    // Deltas still apply to the state held.
    revoke(&mut publisher, &mut kept, 3, 8);
    let delta = publisher
        .bundle(Some(have(follower.held().unwrap())))
        .unwrap();
    let snapshot = follow(&mut follower, &delta.bytes);
    assert_eq!(snapshot[..], publisher.snapshot().unwrap()[..]);
}

#[test]
fn during_a_key_rotation_either_trusted_key_signs_and_no_other() {
    let (kept, snapshot) = <KeptSnapshot as Kept>::new(data(10)).unwrap();
    drop(kept);
    let snapshot: Arc<[u8]> = Arc::from(snapshot);
    let signed_by = |seed: u8, revision: u64| {
        Publisher::new(
            key(seed),
            revision,
            Arc::clone(&snapshot),
            Arc::from(MODULE),
            TTL,
        )
        .full()
        .unwrap()
        .bytes
        .to_vec()
    };
    let mut follower = Follower::new([key(1).verifying_key(), key(2).verifying_key()]);
    follow(&mut follower, &signed_by(1, 1));
    follow(&mut follower, &signed_by(2, 2));
    let error = follower
        .prepare(&signed_by(3, 3), Layout::Served, now())
        .unwrap_err();
    let ids = [1, 2].map(|seed| crate::keys::key_id(&key(seed).verifying_key()));
    assert!(
        matches!(&error, BundleError::OtherSigner { trusted, .. } if *trusted == format!("{} or {}", ids[0], ids[1])),
        "{error}"
    );
    assert_eq!(follower.held().unwrap().revision, 2);
}
