//! Arbitrary bytes as a bundle: the verifier never panics, never accepts a
//! bundle whose signature it could not check (the trust store here is
//! empty, so every verdict is a rejection), and gives the same verdict and
//! digest whether it is fed the bytes whole or in pieces. The digest is
//! that of every byte.
#![no_main]

use std::time::SystemTime;

use libfuzzer_sys::fuzz_target;
use weir_bundle::{BundleInspector, BundleVerifier, TrustStore};
use weir_protocol::digest::digest;

fuzz_target!(|data: &[u8]| {
    let mut inspector = BundleInspector::new();
    inspector.feed(data);
    let _ = inspector.finish();
    let trust = TrustStore::default();
    let now = SystemTime::now();
    let mut whole = BundleVerifier::new(&trust, now);
    whole.feed(data);
    let whole = whole.finish();
    assert!(whole.verdict.is_err());
    assert_eq!(whole.digest, digest(data));
    assert_eq!(whole.len, data.len() as u64);
    // Pieces of a size the input chooses.
    let step = data.first().map_or(1, |&b| usize::from(b % 61) + 1);
    let mut pieces = BundleVerifier::new(&trust, now);
    for piece in data.chunks(step) {
        pieces.feed(piece);
    }
    let pieces = pieces.finish();
    assert_eq!(pieces.verdict, whole.verdict);
    assert_eq!((pieces.digest, pieces.len), (whole.digest, whole.len));
});
