//! The protocol core over the seeded lossy-link simulator: chunker → link →
//! reassembler, with the loss, bursts, reordering, duplication, truncation,
//! bit flips and injected frames a diode link and its network can bring.

// Helpers outside `#[test]` functions fail the test by panicking too.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use weir_protocol::{ChunkerConfig, FrameKind, Integrity, LinkKey, ReassemblerConfig, TransferId};
use weir_tests::link::{GilbertElliott, LinkProfile, LossyLink};
use weir_tests::sim::{
    MemReceiver, MemSender, Outcome, chunker, default_fec, describe, sample_bytes,
};

const MIB: usize = 1 << 20;

fn one_pass() -> ChunkerConfig {
    ChunkerConfig {
        passes: 1,
        ..ChunkerConfig::default()
    }
}

fn two_passes() -> ChunkerConfig {
    ChunkerConfig {
        passes: 2,
        ..ChunkerConfig::default()
    }
}

/// Asserts the receiver never produced a file that differs from `bytes`
/// and that `want` transfers completed verified.
fn assert_all_verified(rx: &MemReceiver, originals: &[(TransferId, &[u8])]) {
    for o in &rx.outcomes {
        if let Outcome::Complete {
            bytes,
            verified: true,
            descriptor,
            ..
        } = o
        {
            let (_, want) = originals
                .iter()
                .find(|(id, _)| *id == descriptor.transfer)
                .expect("a verified transfer that was never sent");
            assert!(
                bytes == want,
                "verified transfer {} differs",
                descriptor.transfer
            );
        }
    }
    assert_eq!(
        rx.verified().count(),
        originals.len(),
        "outcomes: {}",
        rx.outcomes.len()
    );
}

#[test]
fn five_percent_loss_with_twenty_percent_parity_one_pass_100_transfers() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mut link = LossyLink::new(
        LinkProfile {
            loss: 0.05,
            ..LinkProfile::default()
        },
        1,
    );
    let mut rx = MemReceiver::new(ReassemblerConfig::default());
    let mut tx = MemSender::new(1, Integrity::Crc32c);
    let mut total = 0;
    for i in 0..100u64 {
        let size = rng.random_range(MIB..=50 * MIB);
        total += size;
        let bytes = sample_bytes(i, size);
        let desc = describe(&format!("bundle-{i}.weir"), &bytes, default_fec());
        let mut c = chunker(&desc, &bytes, one_pass());
        tx.send_all(&mut c, &mut link, &mut rx);
        match rx.outcomes.last() {
            Some(Outcome::Complete {
                bytes: got,
                verified: true,
                ..
            }) => {
                if got != &bytes {
                    let pos = got.iter().zip(&bytes).position(|(a, b)| a != b);
                    panic!(
                        "transfer {i} differs: size {size} got {} first diff {pos:?} block len {}",
                        got.len(),
                        desc.fec.block_len()
                    );
                }
            }
            other => panic!("transfer {i} ({size} bytes) did not complete in one pass: {other:?}"),
        }
    }
    assert_eq!(rx.verified().count(), 100);
    let s = rx.reassembler.stats();
    let l = link.counts();
    eprintln!(
        "{total} bytes, link {l:?}, receiver {s:?}, peak memory {}",
        rx.peak_memory
    );
    // The receiver's loss count from sequence numbers is the link's truth.
    assert_eq!(s.loss.lost, l.lost);
    assert!(s.blocks_repaired > 0);
    assert!(rx.peak_memory <= ReassemblerConfig::default().max_memory);
}

#[test]
fn thirty_percent_loss_stays_pending_after_one_pass_and_completes_after_two() {
    let bytes = sample_bytes(30, 20 * MIB);
    let desc = describe("big.weir", &bytes, default_fec());
    let mut link = LossyLink::new(
        LinkProfile {
            loss: 0.30,
            ..LinkProfile::default()
        },
        30,
    );
    let mut rx = MemReceiver::new(ReassemblerConfig::default());
    let mut tx = MemSender::new(1, Integrity::Crc32c);
    let mut c = chunker(&desc, &bytes, two_passes());
    // Pass 0 only: stop once the chunker has moved on to pass 1.
    tx.send_until(&mut c, &mut link, &mut rx, |t| t.pass_done);
    assert!(
        rx.outcomes.is_empty(),
        "nothing may complete (or be wrong) after pass 0"
    );
    let (done, blocks) = rx
        .reassembler
        .progress(desc.transfer)
        .expect("transfer pending");
    assert!(
        done < blocks,
        "30% loss must leave blocks missing after one pass"
    );
    tx.send_all(&mut c, &mut link, &mut rx);
    assert_all_verified(&rx, &[(desc.transfer, &bytes)]);
}

#[test]
fn thirty_percent_loss_with_little_memory_spills_and_reloads() {
    // 16 MiB of memory for one transfer of 24 MiB: most incomplete blocks of
    // pass 0 go to "disk" and are read back when pass 1 brings their parity.
    let bytes = sample_bytes(31, 24 * MIB);
    let desc = describe("spill.weir", &bytes, default_fec());
    let config = ReassemblerConfig {
        max_memory: 16 * MIB,
        max_transfers: 1,
        ..ReassemblerConfig::default()
    };
    let mut link = LossyLink::new(
        LinkProfile {
            loss: 0.30,
            ..LinkProfile::default()
        },
        31,
    );
    let mut rx = MemReceiver::new(config.clone());
    let mut tx = MemSender::new(1, Integrity::Crc32c);
    let mut c = chunker(&desc, &bytes, two_passes());
    tx.send_all(&mut c, &mut link, &mut rx);
    let s = rx.reassembler.stats();
    assert!(s.blocks_spilled > 0 && s.blocks_reloaded > 0, "{s:?}");
    assert!(
        rx.peak_memory <= config.max_memory,
        "peak {}",
        rx.peak_memory
    );
    assert_all_verified(&rx, &[(desc.transfer, &bytes)]);
}

#[test]
fn a_burst_of_500_lost_frames_is_recovered_in_one_pass() {
    let bytes = sample_bytes(500, 40 * MIB);
    let desc = describe("burst.weir", &bytes, default_fec());
    for start in [1_000, 20_000, 31_000] {
        let profile = LinkProfile {
            blackout: Some(start..start + 500),
            ..LinkProfile::default()
        };
        let mut link = LossyLink::new(profile, start);
        let mut rx = MemReceiver::new(ReassemblerConfig::default());
        let mut tx = MemSender::new(1, Integrity::Crc32c);
        tx.send_all(&mut chunker(&desc, &bytes, one_pass()), &mut link, &mut rx);
        assert_eq!(link.counts().lost, 500);
        assert_all_verified(&rx, &[(desc.transfer, &bytes)]);
    }
}

#[test]
fn gilbert_elliott_bursts_are_absorbed_by_interleaving() {
    let bytes = sample_bytes(7, 30 * MIB);
    let desc = describe("ge.weir", &bytes, default_fec());
    // Bursts of 20 frames on average, about 4% loss overall.
    let burst = GilbertElliott {
        good_to_bad: 0.002,
        bad_to_good: 0.05,
        loss_in_bad: 0.9,
    };
    let profile = LinkProfile {
        burst: Some(burst),
        loss: 0.005,
        ..LinkProfile::default()
    };
    let mut link = LossyLink::new(profile, 8);
    let mut rx = MemReceiver::new(ReassemblerConfig::default());
    let mut tx = MemSender::new(1, Integrity::Crc32c);
    tx.send_all(&mut chunker(&desc, &bytes, one_pass()), &mut link, &mut rx);
    eprintln!("{:?}", link.counts());
    assert!(link.counts().lost > 500);
    assert_all_verified(&rx, &[(desc.transfer, &bytes)]);
}

/// Foreign datagrams: random bytes, or frames with a valid CRC for a
/// transfer id the receiver knows, with random shard contents.
fn hostile_injector(target: u64) -> weir_tests::link::Injector {
    Box::new(move |rng: &mut ChaCha8Rng| {
        if rng.random_bool(0.5) {
            let len = rng.random_range(0..1600);
            (0..len).map(|_| rng.random()).collect()
        } else {
            let mut enc = weir_protocol::LinkEncoder::new(rng.random(), Integrity::Crc32c);
            let addr = weir_protocol::FrameAddr {
                kind: if rng.random_bool(0.5) {
                    FrameKind::Data
                } else {
                    FrameKind::Parity
                },
                transfer: target,
                block: rng.random_range(0..8),
                shard: rng.random_range(0..160),
            };
            let payload: Vec<u8> = (0..1428).map(|_| rng.random()).collect();
            let mut out = Vec::new();
            enc.frame(addr, &payload, &mut out).unwrap();
            out
        }
    })
}

#[test]
fn corrupted_and_injected_frames_never_produce_wrong_output() {
    let bytes = sample_bytes(66, 8 * MIB);
    let desc = describe("hostile.weir", &bytes, default_fec());
    let profile = LinkProfile {
        loss: 0.02,
        reorder: 0.05,
        reorder_depth: 50,
        duplicate: 0.02,
        truncate: 0.01,
        bit_flip: 0.01,
        inject: 0.05,
        ..LinkProfile::default()
    };
    let config = ReassemblerConfig {
        max_memory: 24 * MIB,
        max_transfers: 1,
        ..ReassemblerConfig::default()
    };
    // Without a link key, forged frames with a valid CRC can spoil blocks:
    // the whole-file digest must catch it every time.
    let mut link =
        LossyLink::new(profile.clone(), 66).with_injector(hostile_injector(desc.transfer.0));
    let mut rx = MemReceiver::new(config.clone());
    let mut tx = MemSender::new(1, Integrity::Crc32c);
    tx.send_all(
        &mut chunker(&desc, &bytes, two_passes()),
        &mut link,
        &mut rx,
    );
    let mut verdicts = Vec::new();
    for o in &rx.outcomes {
        if let Outcome::Complete {
            bytes: got,
            verified,
            ..
        } = o
        {
            assert_eq!(*verified, got == &bytes, "a digest verdict was wrong");
            verdicts.push(*verified);
        }
    }
    eprintln!("digest verdicts without a key: {verdicts:?}");
    // Something was judged: a run where nothing completes proves nothing.
    assert!(!verdicts.is_empty(), "{:?}", rx.outcomes);
    // (Seeded: the forged frames do spoil a rebuilt file, so the digest's
    // refusal is exercised, not only its acceptance.)
    assert!(verdicts.contains(&false), "{verdicts:?}");
    assert!(rx.peak_memory <= config.max_memory);
    let d = rx.reassembler.stats().dropped;
    assert!(d.corrupt > 0 && d.malformed > 0 && d.duplicate > 0, "{d:?}");

    // With a link key, the same hostile traffic is dropped unread and the
    // transfer completes.
    let key = Integrity::Mac(LinkKey::from_secret(&[42; 32]));
    let mut link = LossyLink::new(profile, 67).with_injector(hostile_injector(desc.transfer.0));
    let mut rx = MemReceiver::new(ReassemblerConfig {
        integrity: key.clone(),
        ..config.clone()
    });
    let mut tx = MemSender::new(2, key);
    tx.send_all(
        &mut chunker(&desc, &bytes, two_passes()),
        &mut link,
        &mut rx,
    );
    eprintln!("{:?} {:?}", rx.reassembler.stats(), link.counts());
    assert_all_verified(&rx, &[(desc.transfer, &bytes)]);
    let d = rx.reassembler.stats().dropped;
    assert!(d.unauthenticated > 0, "{d:?}");
    assert!(rx.peak_memory <= config.max_memory);
}

#[test]
fn a_receiver_that_starts_late_completes_from_the_next_pass() {
    let bytes = sample_bytes(9, 6 * MIB);
    let desc = describe("late.weir", &bytes, default_fec());
    let mut rx = MemReceiver::new(ReassemblerConfig::default());
    // The receiver misses the first 40% of pass 0 entirely.
    let fec = default_fec();
    let first_pass_frames =
        6 * MIB / 1428 * fec.frames_per_block_per_pass() as usize / usize::from(fec.data_shards());
    let profile = LinkProfile {
        blackout: Some(0..(first_pass_frames as u64 * 4 / 10)),
        loss: 0.05,
        ..LinkProfile::default()
    };
    let mut link = LossyLink::new(profile, 9);
    let mut tx = MemSender::new(1, Integrity::Crc32c);
    tx.send_all(
        &mut chunker(&desc, &bytes, two_passes()),
        &mut link,
        &mut rx,
    );
    assert_all_verified(&rx, &[(desc.transfer, &bytes)]);
}

#[test]
fn a_receiver_restart_between_passes_resumes_from_saved_state() {
    let bytes = sample_bytes(10, 10 * MIB);
    let desc = describe("restart.weir", &bytes, default_fec());
    let mut link = LossyLink::new(
        LinkProfile {
            loss: 0.3,
            ..LinkProfile::default()
        },
        10,
    );
    let mut rx = MemReceiver::new(ReassemblerConfig::default());
    let mut tx = MemSender::new(1, Integrity::Crc32c);
    let mut c = chunker(&desc, &bytes, two_passes());
    tx.send_until(&mut c, &mut link, &mut rx, |t| t.pass_done);
    // Graceful stop: spill, save state and the partial file.
    rx.reassembler.spill_all();
    rx.drain();
    let state = rx.reassembler.export_state(desc.transfer).expect("pending");
    let partial = rx.files.remove(&desc.transfer).expect("partial file");
    // A new receiver process picks both up.
    let mut rx2 = MemReceiver::new(ReassemblerConfig::default());
    rx2.reassembler.import_state(rx2.now, state).unwrap();
    rx2.files.insert(desc.transfer, partial);
    tx.send_all(&mut c, &mut link, &mut rx2);
    assert_all_verified(&rx2, &[(desc.transfer, &bytes)]);
}

#[test]
fn a_sender_restart_mid_transfer_is_merged_by_transfer_id() {
    let bytes = sample_bytes(11, 8 * MIB);
    let desc = describe("resend.weir", &bytes, default_fec());
    // Blocks the first sender never reached get only pass 1 (K + M fresh
    // parity), so the loss must stay within what one pass repairs.
    let mut link = LossyLink::new(
        LinkProfile {
            loss: 0.10,
            ..LinkProfile::default()
        },
        11,
    );
    let mut rx = MemReceiver::new(ReassemblerConfig::default());
    // First sender dies half way through pass 0.
    let mut tx = MemSender::new(1, Integrity::Crc32c);
    let mut n = 0;
    tx.send_until(
        &mut chunker(&desc, &bytes, two_passes()),
        &mut link,
        &mut rx,
        |_| {
            n += 1;
            n > 4000
        },
    );
    // A new sender epoch starts the same bundle again at pass 1.
    let mut tx2 = MemSender::new(2, Integrity::Crc32c);
    let resume = ChunkerConfig {
        first_pass: 1,
        passes: 2,
        ..ChunkerConfig::default()
    };
    tx2.send_all(&mut chunker(&desc, &bytes, resume), &mut link, &mut rx);
    assert_all_verified(&rx, &[(desc.transfer, &bytes)]);
    assert_eq!(rx.reassembler.stats().loss.sender_restarts, 1);
}

#[test]
fn one_transfers_loss_does_not_disturb_another() {
    let a = sample_bytes(12, 4 * MIB);
    let b = sample_bytes(13, 4 * MIB);
    let da = describe("a.weir", &a, default_fec());
    let db = describe("b.weir", &b, default_fec());
    let mut rx = MemReceiver::new(ReassemblerConfig::default());
    let mut tx = MemSender::new(1, Integrity::Crc32c);
    let mut ca = chunker(&da, &a, one_pass());
    let mut cb = chunker(&db, &b, one_pass());
    // A's frames cross a link with 40% loss, B's a clean one, interleaved.
    let mut lossy = LossyLink::new(
        LinkProfile {
            loss: 0.4,
            ..LinkProfile::default()
        },
        12,
    );
    let mut clean = LossyLink::new(LinkProfile::default(), 13);
    let mut buf = Vec::new();
    loop {
        let mut progressed = false;
        for (c, link) in [(&mut ca, &mut lossy), (&mut cb, &mut clean)] {
            buf.clear();
            if c.poll_transmit(&mut tx.link, &mut buf).unwrap().is_some() {
                progressed = true;
                link.send(&buf);
                while let Some(d) = link.recv() {
                    rx.handle(&d);
                }
            }
        }
        if !progressed {
            break;
        }
    }
    assert_eq!(rx.verified().count(), 1);
    assert_eq!(
        rx.verified().next().map(|(d, _)| d.transfer),
        Some(db.transfer)
    );
    assert!(
        rx.reassembler.progress(da.transfer).is_some(),
        "A waits for its next pass"
    );
    // A expires later with its missing blocks reported.
    rx.advance(Duration::from_secs(601));
    assert!(
        matches!(rx.outcomes.last(), Some(Outcome::Expired { descriptor, .. }) if descriptor.transfer == da.transfer)
    );
}

#[test]
fn small_and_empty_transfers_are_not_padded_to_a_full_block() {
    for size in [0usize, 1, 100, 1428, 5000, 200_000] {
        let bytes = sample_bytes(size as u64, size);
        let desc = describe("small.weir", &bytes, default_fec());
        let mut link = LossyLink::new(
            LinkProfile {
                loss: 0.05,
                ..LinkProfile::default()
            },
            14,
        );
        let mut rx = MemReceiver::new(ReassemblerConfig::default());
        let mut tx = MemSender::new(1, Integrity::Crc32c);
        let sent = tx.send_all(
            &mut chunker(&desc, &bytes, two_passes()),
            &mut link,
            &mut rx,
        );
        assert_all_verified(&rx, &[(desc.transfer, &bytes)]);
        if size <= 1428 {
            assert!(sent < 30, "{size} bytes took {sent} frames");
        }
    }
}

#[test]
fn a_forged_shard_with_a_valid_crc_is_caught_by_the_digest_and_the_next_pass_repairs() {
    let bytes = sample_bytes(15, 2 * MIB);
    let desc = describe("forged.weir", &bytes, default_fec());
    let mut rx = MemReceiver::new(ReassemblerConfig::default());
    let mut tx = MemSender::new(1, Integrity::Crc32c);
    // An attacker on the low side gets a well-formed shard 0 of block 0 in
    // before the sender's.
    let mut forger = weir_protocol::LinkEncoder::new(99, Integrity::Crc32c);
    let mut forged = Vec::new();
    let addr = weir_protocol::FrameAddr {
        kind: FrameKind::Data,
        transfer: desc.transfer.0,
        block: 0,
        shard: 0,
    };
    forger.frame(addr, &[0xAA; 1428], &mut forged).unwrap();
    let mut link = LossyLink::new(LinkProfile::default(), 15);
    let mut c = chunker(&desc, &bytes, two_passes());
    // Stop right after the first descriptor; the forgery goes in next.
    tx.send_until(&mut c, &mut link, &mut rx, |t| {
        t.kind == FrameKind::Descriptor
    });
    rx.handle(&forged);
    tx.send_all(&mut c, &mut link, &mut rx);
    match &rx.outcomes[..] {
        [
            Outcome::Complete {
                verified: false, ..
            },
            Outcome::Complete {
                verified: true,
                bytes: got,
                ..
            },
        ] => {
            assert!(got == &bytes);
        }
        other => panic!("expected a caught forgery then a clean pass: {other:?}"),
    }
}

#[test]
fn an_empty_transfer_with_a_false_digest_is_judged_once() {
    // Regression (found by the reassembler fuzz target): a descriptor of
    // 0 bytes whose digest is another file's completes at once; starting
    // it afresh after the digest check failed completed it again, forever.
    let other = weir_protocol::digest::digest(b"not empty");
    let desc = weir_protocol::TransferDescriptor::new(
        TransferId::from_digest(&other),
        weir_protocol::BundleName::parse("empty.weir").unwrap(),
        0,
        other,
        default_fec(),
    )
    .unwrap();
    let mut rx = MemReceiver::new(ReassemblerConfig::default());
    let mut tx = MemSender::new(1, Integrity::Crc32c);
    let mut link = LossyLink::new(LinkProfile::default(), 3);
    tx.send_all(&mut chunker(&desc, b"", one_pass()), &mut link, &mut rx);
    assert!(
        matches!(
            &rx.outcomes[..],
            [Outcome::Complete {
                verified: false,
                ..
            }]
        ),
        "{:?}",
        rx.outcomes
    );
}
