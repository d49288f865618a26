//! The sender's pacing schedule, on a fake clock: the datagrams a chunker
//! makes for a transfer, in the batches the send loop forms (equal sizes,
//! `Pacer::batch_frames` at most), released by the token bucket, with
//! seeded late wake-ups. No second of the schedule may exceed the rate by
//! more than 2%, and the whole of it must hold the rate within 2%.
//!
//! This asserts the schedule, not the wall clock: how closely a real
//! socket sees it is a measurement of the machine, made by the
//! `pacing_accuracy` benchmark (BENCHMARKS.md).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use weir_protocol::{Chunker, ChunkerConfig, Integrity, LinkEncoder, Rate};
use weir_sender::pacer::Pacer;
use weir_tests::sim::{default_fec, describe, sample_bytes};

/// GSO batches at most this many datagrams (the send loop's bound).
const MAX_SEGMENTS: usize = weir_sender::udp::MAX_SEGMENTS;
const DATAGRAM: usize = 1472;

/// The datagram sizes of one pass over `secs` seconds' worth of data at
/// `rate`, cut into batches as the send loop cuts them: runs of equal
/// sizes, at most `per_batch` long.
fn batches(rate: Rate, secs: f64, per_batch: usize) -> Vec<usize> {
    let bytes = sample_bytes(1, (rate.bytes_per_sec() * secs * 0.8) as usize);
    let desc = describe("pace.weir", &bytes, default_fec());
    let mut chunker = Chunker::new(
        desc,
        std::io::Cursor::new(bytes),
        ChunkerConfig {
            passes: 1,
            ..ChunkerConfig::default()
        },
    );
    let mut link = LinkEncoder::new(1, Integrity::Crc32c);
    let mut out = Vec::new();
    let mut batches = Vec::new();
    let (mut size, mut frames, mut bytes_in) = (0, 0, 0);
    while let Some(t) = chunker.poll_transmit(&mut link, &mut out).unwrap() {
        out.clear();
        if frames > 0 && (t.len != size || frames == per_batch) {
            batches.push(bytes_in);
            (frames, bytes_in) = (0, 0);
        }
        size = t.len;
        frames += 1;
        bytes_in += t.len;
    }
    batches.push(bytes_in);
    batches
}

/// Sends `batches` through a pacer on a fake clock that wakes each sleeper
/// up to `late` after it asked (seeded); returns (time since the start,
/// bytes) of every send.
fn schedule(rate: Rate, batches: &[usize], late: Duration, seed: u64) -> Vec<(Duration, usize)> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let t0 = Instant::now();
    let mut now = t0;
    let per_batch = Pacer::batch_frames(rate, DATAGRAM, MAX_SEGMENTS);
    let mut pacer = Pacer::new(rate, per_batch * DATAGRAM, now);
    let mut sends = Vec::with_capacity(batches.len());
    for &b in batches {
        loop {
            let wait = pacer.delay(now, b);
            if wait.is_zero() {
                break;
            }
            let oversleep = Duration::from_nanos(rng.random_range(0..=late.as_nanos() as u64));
            now += wait + oversleep;
        }
        pacer.consume(now, b);
        sends.push((now - t0, b));
    }
    sends
}

#[test]
fn no_second_exceeds_the_rate_by_two_percent_and_the_whole_holds_it() {
    for rate in ["20Mbit", "100Mbit", "400Mbit", "1Gbit"] {
        let rate: Rate = rate.parse().unwrap();
        let per_batch = Pacer::batch_frames(rate, DATAGRAM, MAX_SEGMENTS);
        let batches = batches(rate, 2.5, per_batch);
        let total: usize = batches.iter().sum();
        for late in [Duration::ZERO, Duration::from_micros(200)] {
            let sends = schedule(rate, &batches, late, 7);
            let per_sec = rate.bytes_per_sec();
            // Every window of one second, starting at any send.
            let mut end = 0;
            let mut in_window = 0usize;
            for (start, (t, _)) in sends.iter().enumerate() {
                while end < sends.len() && sends[end].0 < *t + Duration::from_secs(1) {
                    in_window += sends[end].1;
                    end += 1;
                }
                let ratio = in_window as f64 / per_sec;
                assert!(
                    ratio <= 1.02,
                    "{rate}, late by up to {late:?}: {ratio:.4} of the rate in the second from {t:?}"
                );
                in_window -= sends[start].1;
            }
            // And it is not slow: the whole transfer (less the first,
            // full bucket) at the rate, within 2%.
            let (last, _) = *sends.last().unwrap();
            let first = sends[0].1 as f64;
            let achieved = (total as f64 - first) / last.as_secs_f64() / per_sec;
            assert!(
                (0.98..=1.02).contains(&achieved),
                "{rate}, late by up to {late:?}: {achieved:.4} of the rate over {last:?}"
            );
        }
    }
}
