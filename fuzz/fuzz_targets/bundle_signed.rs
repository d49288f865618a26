//! The fuzzer writes the manifest and everything after the signatures;
//! the harness signs that manifest with a trusted key, so that fuzzing
//! gets past the signature check into the payload phase. Input: a
//! little-endian u16 manifest length, the manifest bytes, then the rest of
//! the archive (payload headers, contents, end blocks).
//!
//! The verifier never panics, gives the same verdict and digest fed whole
//! or in pieces of any size, and accepts only bundles whose every payload
//! entry hashes to what the manifest lists.
#![no_main]

use std::sync::LazyLock;
use std::time::SystemTime;

use libfuzzer_sys::fuzz_target;
use weir_bundle::{BundleVerifier, Manifest};
use weir_tests::bundles::{Fixture, Raw};

static FX: LazyLock<Fixture> = LazyLock::new(Fixture::new);

fuzz_target!(|data: &[u8]| {
    let Some((len, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let len = usize::from(u16::from_le_bytes(*len)).min(rest.len());
    let (manifest, tail) = rest.split_at(len);
    let comment = Manifest::from_bytes(manifest)
        .map(|m| m.trusted_comment())
        .unwrap_or_default();
    let Ok(sig) = weir_sender::keys::sign_manifest(&FX.key, manifest, &comment) else {
        return;
    };
    let mut bundle = Raw::new()
        .file("manifest.json", manifest, 0o644)
        .signature(FX.key.id, &sig)
        .unfinished();
    bundle.extend_from_slice(tail);

    let now = SystemTime::now();
    let mut whole = BundleVerifier::new(&FX.trust, now);
    whole.feed(&bundle);
    let whole = whole.finish();
    let step = tail.first().map_or(1, |&b| usize::from(b % 97) + 1);
    let mut pieces = BundleVerifier::new(&FX.trust, now);
    for piece in bundle.chunks(step) {
        pieces.feed(piece);
    }
    let pieces = pieces.finish();
    assert_eq!(pieces.verdict, whole.verdict);
    assert_eq!((pieces.digest, pieces.len), (whole.digest, whole.len));
    if let Ok(v) = &whole.verdict {
        // Accepted: every entry's bytes are where the layout puts them,
        // with the listed hash.
        for (e, at) in v.contents() {
            let start = usize::try_from(at).expect("in memory");
            let content = &bundle[start..start + usize::try_from(e.size).expect("in memory")];
            assert_eq!(blake3::hash(content).to_hex().as_str(), e.blake3);
        }
    }
});
