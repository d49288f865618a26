//! Verification memory does not grow with bundle size: a 2 GiB bundle
//! verifies with a peak RSS under 64 MiB.
//!
//! Slow (writes 2 GiB twice): `#[ignore]`d, and run by name in CI:
//! `cargo test -p weir-tests --test bundle_large -- --ignored`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::fs::File;
use std::io::BufReader;
use std::time::{Instant, SystemTime};

use weir_sender::bundle::create::{CreateRequest, create};
use weir_tests::bundles::{Fixture, write_random_file};

/// Peak resident set size of this process, in KiB.
fn peak_rss_kib() -> u64 {
    weir_tests::memory::peak_rss(std::process::id()).unwrap() / 1024
}

#[test]
#[ignore = "writes a 2 GiB bundle; run by name in CI"]
fn a_2_gib_bundle_verifies_with_peak_memory_under_64_mib() {
    const SIZE: u64 = 2 << 30;
    let fx = Fixture::new();
    let dir = tempfile::tempdir().unwrap();
    let artifact = dir.path().join("image.bin");
    write_random_file(&artifact, SIZE, 2).unwrap();
    let out = dir.path().join("big.weir");
    let req = CreateRequest {
        name: "big".into(),
        version: "1".into(),
        labels: Default::default(),
        artifacts: vec![artifact.clone()],
        sboms: vec![],
        out: out.clone(),
    };
    create(&req, &fx.key, SystemTime::now()).unwrap();
    std::fs::remove_file(&artifact).unwrap();

    // Reset the peak so that it measures verification alone.
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let before = peak_rss_kib();
    let start = Instant::now();
    let v = weir_bundle::verify(
        BufReader::with_capacity(1 << 20, File::open(&out).unwrap()),
        &fx.trust,
        SystemTime::now(),
    )
    .unwrap()
    .verdict
    .unwrap();
    let secs = start.elapsed().as_secs_f64();
    let peak = peak_rss_kib();
    eprintln!(
        "verified {} bytes in {secs:.2} s ({:.2} GB/s, disk or page cache); peak RSS {} KiB (before: {before} KiB)",
        v.archive_len,
        v.archive_len as f64 / secs / 1e9,
        peak
    );
    assert_eq!(v.manifest.artifacts[0].size, SIZE);
    assert!(peak < 64 * 1024, "peak RSS {peak} KiB");
}
