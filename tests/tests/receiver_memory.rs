//! The receiver daemon's memory, measured from outside: its peak resident
//! set (`VmHWM`) stays within the bound its configuration sets
//! (`weir_tests::memory::receiver_bound`), with many transfers at once and
//! with one far larger than `limits.memory`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use weir_tests::memory::{peak_rss, receiver_bound};
use weir_tests::rig::{Setup, blast, frames};

/// `limits.transfers`: transfers rebuilt at once.
const TRANSFERS: u64 = 8;

#[test]
fn peak_rss_stays_within_the_configured_bound_with_many_transfers_and_a_huge_one() {
    // Each transfer's share of limits.memory holds two interleaved groups
    // at MTU 1500 (11.7 MB); 8 of them and the core's 2 MiB for shards
    // without a descriptor need 91 MiB.
    let mut s = Setup::new(&format!(
        "transfers = {TRANSFERS}\nmemory = \"96MiB\"\nwrite_queue = \"8MiB\"\n"
    ));
    let bound = receiver_bound(&s.rx.config).unwrap();
    s.rx.start().unwrap();
    let pid = s.rx.pid().unwrap();

    // Many transfers at once: 8 bundles of 16 MiB (128 MiB in all), their
    // frames of two passes interleaved one by one.
    let bundles: Vec<(String, Vec<u8>)> = (0..TRANSFERS)
        .map(|i| {
            let name = format!("many{i}");
            let (_, bytes) = s.bundle(&name, 16 * 1024, 40 + i);
            (name, bytes)
        })
        .collect();
    let streams: Vec<Vec<Vec<u8>>> = bundles
        .iter()
        .enumerate()
        .map(|(i, (name, bytes))| frames(bytes, &format!("{name}.weir"), 2, 100 + i as u64))
        .collect();
    let longest = streams.iter().map(Vec::len).max().unwrap();
    let interleaved: Vec<Vec<u8>> = (0..longest)
        .flat_map(|k| streams.iter().filter_map(move |f| f.get(k).cloned()))
        .collect();
    blast(s.addr, &interleaved);
    for (name, bytes) in &bundles {
        let got = s.wait_staged(&format!("{name}_1.weir"), 60);
        assert!(&got == bytes, "{name} differs");
    }
    let after_many = peak_rss(pid).unwrap();

    // One transfer four times limits.memory, from the real sender.
    let (path, bytes) = s.bundle("huge", 384 * 1024, 50);
    s.send("800Mbit", 2, &[&path]);
    let got = s.wait_staged("huge_1.weir", 120);
    assert!(got == bytes, "huge differs");
    let peak = peak_rss(pid).unwrap();

    eprintln!(
        "receiver peak RSS: {} MiB after 8 transfers at once, {} MiB after a 384 MiB one; bound {bound}",
        after_many >> 20,
        peak >> 20
    );
    assert!(
        peak <= bound.total(),
        "peak RSS {} MiB is over the bound {bound}",
        peak >> 20
    );
    assert_eq!(s.rx.stop().unwrap().code(), Some(0));
}
