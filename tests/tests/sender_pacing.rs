//! The real send loop over real UDP on 127.0.0.1 never exceeds its rate:
//! in no second, measured by the kernel's receive timestamps, does more
//! than 1.02 of the rate arrive (plus one bucket, which the pacer may
//! send at once after an idle spell).
//!
//! Only this bound is asserted. A machine short of CPU makes a sender
//! slower, never faster, so the bound holds however loaded the machine is;
//! how closely the rate is met is a measurement, made by the
//! `pacing_accuracy` benchmark (BENCHMARKS.md), and the schedule itself is
//! checked on a fake clock in `sender/src/pacer.rs`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::UdpSocket;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use weir_protocol::{Chunker, ChunkerConfig, Integrity, LinkEncoder, Rate};
use weir_sender::engine::{Engine, EngineConfig, SendOutcome};
use weir_sender::udp::UdpLink;
use weir_tests::sim::{default_fec, describe, sample_bytes};
use weir_tests::udp::gro_receive;

/// Sends about `secs` seconds' worth of a transfer at `rate`; returns the
/// kernel's arrival time and size of every datagram.
fn arrivals(rate: Rate, secs: f64) -> Vec<(Duration, usize)> {
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let dest = rx.local_addr().unwrap();
    let receiver = std::thread::spawn(move || {
        let mut got = Vec::new();
        gro_receive(&rx, Duration::from_millis(500), |batch| {
            for m in batch {
                let at = m
                    .timestamp
                    .expect("no kernel receive timestamp: the bound cannot be measured");
                // A GRO batch is one arrival of several datagrams.
                got.push((at, m.len));
            }
        })
        .unwrap();
        got
    });
    let bytes = sample_bytes(1, (rate.bytes_per_sec() * secs * 0.8) as usize);
    let mut chunker = Chunker::new(
        describe("pace.weir", &bytes, default_fec()),
        std::io::Cursor::new(bytes),
        ChunkerConfig {
            passes: 1,
            ..ChunkerConfig::default()
        },
    );
    let (udp, _) = UdpLink::open("127.0.0.1:0".parse().unwrap(), dest, 4 << 20).unwrap();
    let config = EngineConfig {
        rate,
        max_datagram: 1472,
        heartbeat: Duration::from_secs(1),
        pass_pause: Duration::ZERO,
    };
    let mut engine = Engine::new(LinkEncoder::new(1, Integrity::Crc32c), udp, config);
    let stop = AtomicBool::new(false);
    let out = engine
        .send(&mut chunker, 1, &stop, &mut || false, &mut |_| {})
        .unwrap();
    assert_eq!(out, SendOutcome::Done);
    let mut got = receiver.join().unwrap();
    got.sort();
    got
}

#[test]
fn the_rate_is_never_exceeded_by_more_than_two_percent_in_any_second() {
    for rate in ["20Mbit", "100Mbit", "400Mbit"] {
        let rate: Rate = rate.parse().unwrap();
        let got = arrivals(rate, 2.5);
        let span = got.last().unwrap().0 - got[0].0;
        assert!(
            span > Duration::from_secs(1),
            "{rate}: everything arrived within {span:?}"
        );
        // The pacer's bucket: one batch, or 2 ms at the rate.
        let batch = weir_sender::pacer::Pacer::batch_frames(rate, 1472, 64) * 1472;
        let bucket = (batch as f64).max(rate.bytes_per_sec() * 0.002);
        let allowed = rate.bytes_per_sec() * 1.02 + bucket;
        // Every window of one second, starting at any arrival.
        let mut end = 0;
        let mut in_window = 0usize;
        let mut most = 0f64;
        for (start, (t, _)) in got.iter().enumerate() {
            while end < got.len() && got[end].0 < *t + Duration::from_secs(1) {
                in_window += got[end].1;
                end += 1;
            }
            most = most.max(in_window as f64);
            assert!(
                (in_window as f64) <= allowed,
                "{rate}: {in_window} bytes arrived in the second from {:?}, {:.4} of the rate",
                *t - got[0].0,
                in_window as f64 / rate.bytes_per_sec()
            );
            in_window -= got[start].1;
        }
        eprintln!(
            "{rate}: at most {:.4} of the rate in any second",
            most / rate.bytes_per_sec()
        );
    }
}
