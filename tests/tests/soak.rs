//! The soak test: both real daemons over the namespaced one-way link
//! (`weir_tests::netns`) for a long while, bundles arriving in the sender's
//! outbox all along, 2% bursty loss from nftables rules switched on and off
//! on a seeded schedule (the kernel has no netem), and kill -9 and restarts
//! of either side or both every minute or two. Afterwards every bundle sent
//! must be in `staging/` exactly once, whole.
//!
//! Needs root and takes 30 minutes, so it is `#[ignore]`d and not in CI; run
//! it by name, shorter if you like:
//!
//! ```text
//! WEIR_SOAK_SECS=120 cargo test -p weir-tests --test soak -- --ignored --nocapture
//! ```
//!
//! `WEIR_SOAK_SECS` (default 1800) is how long bundles keep coming;
//! `WEIR_SOAK_SEED` (default 14) seeds the sizes, the bursts and the kills.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use weir_tests::bundles::Fixture;
use weir_tests::daemons::wait_for;
use weir_tests::netns::{Faults, Link, Receiver, Sender};
use weir_tests::rig::{file_hash, metric};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v} is not a number"))
        })
        .unwrap_or(default)
}

/// Which side a kill event takes down, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kill {
    Receiver,
    Sender,
    ReceiverThenSender,
    SenderThenReceiver,
}

/// Switches the link between clear and a burst of loss on a seeded
/// schedule, until stopped: bursts of 20-180 ms losing half the frames
/// (50 ms of frames on average), 1-3.8 s apart (2.5 s from one burst to
/// the next on average): 2% of the frames are lost, 2.24% measured over
/// 30 minutes (bursts last a little longer than asked, as switching the
/// rules takes time; gaps of 1-5 s asked 1.6% and measured 1.71%).
fn bursts(link: Arc<Link>, seed: u64, stop: Arc<AtomicBool>, count: Arc<AtomicU64>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    while !stop.load(Ordering::Relaxed) {
        let gap = Duration::from_millis(rng.random_range(1000..=3800));
        let burst = Duration::from_millis(rng.random_range(20..=180));
        let end = Instant::now() + gap;
        while Instant::now() < end && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
        }
        if stop.load(Ordering::Relaxed) {
            break;
        }
        link.set_faults(&Faults::loss(0.5));
        std::thread::sleep(burst);
        link.set_faults(&Faults::NONE);
        count.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
#[ignore = "needs root and 30 minutes: run by name (WEIR_SOAK_SECS to shorten)"]
fn bundles_survive_bursty_loss_and_repeated_kill_9_of_both_sides() {
    let secs = env_u64("WEIR_SOAK_SECS", 1800);
    let seed = env_u64("WEIR_SOAK_SEED", 14);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let dir = tempfile::Builder::new()
        .prefix("weir-soak-")
        .tempdir_in("/var/tmp")
        .unwrap();
    // Time to drain what is in flight at the end, on top of the run.
    let link = Arc::new(Link::new(
        Duration::from_secs(secs + 1200),
        Some(dir.path()),
    ));
    let fx = Fixture::new();
    let trust = dir.path().join("trust.toml");
    std::fs::write(&trust, fx.trust.to_toml()).unwrap();
    let rate = "300Mbit";
    let mut rx = Receiver::configure(&link, dir.path(), &trust, rate, "").unwrap();
    // Three passes 2 s apart: a bundle's passes span longer than either
    // side is ever down, so some pass of every bundle finds both up.
    // Bundles sent are deleted (the test keeps their hashes).
    let mut tx = Sender::configure(
        &link,
        dir.path(),
        &trust,
        rate,
        3,
        "after_send = \"delete\"",
    )
    .unwrap();
    std::fs::write(
        &tx.config,
        std::fs::read_to_string(&tx.config)
            .unwrap()
            .replace("pass_pause = \"200ms\"", "pass_pause = \"2s\""),
    )
    .unwrap();
    rx.start().unwrap();
    tx.start().unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let burst_count = Arc::new(AtomicU64::new(0));
    let burster = {
        let (link, stop, count) = (link.clone(), stop.clone(), burst_count.clone());
        let seed = rng.random();
        std::thread::spawn(move || bursts(link, seed, stop, count))
    };

    let logs = |rx: &Receiver, tx: &Sender| {
        format!(
            "--- receiver log:\n{}\n--- sender log:\n{}",
            rx.proc.log_tail(40),
            tx.proc.log_tail(20)
        )
    };
    let bundles_dir = dir.path().join("bundles");
    std::fs::create_dir_all(&bundles_dir).unwrap();
    // Bundle file name -> (staged name, BLAKE3, size).
    let mut offered: BTreeMap<String, (String, blake3::Hash, u64)> = BTreeMap::new();
    let mut kills: BTreeMap<String, u32> = BTreeMap::new();
    let (mut rx_restarts, mut tx_restarts, mut mid_transfer) = (0u32, 0u32, 0u32);
    let (mut rx_lost_before, mut rx_drops_before) = (0.0, 0.0);
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let mut next_kill = start + Duration::from_secs(rng.random_range(20..=60));
    while Instant::now() < end {
        // Keep two bundles waiting in the outbox.
        if tx.files("outbox").len() < 2 {
            let i = offered.len();
            let name = format!("soak{i:04}");
            let size = rng.random_range(1..=24u64) << 20;
            let path = bundles_dir.join(format!("{name}.weir"));
            let bytes = fx.signed_bundle(&bundles_dir, &name, size, seed * 1000 + i as u64, &path);
            let _ = std::fs::remove_file(bundles_dir.join(format!("{name}.bin")));
            tx.offer(&path).unwrap();
            offered.insert(
                format!("{name}.weir"),
                (
                    format!("{name}_1.weir"),
                    blake3::hash(&bytes),
                    bytes.len() as u64,
                ),
            );
            std::fs::remove_file(&path).unwrap();
        }
        if Instant::now() >= next_kill {
            // Mid-transfer where one comes within 20 s: a transfer in
            // flight at the receiver, between a tenth and nine tenths of
            // its blocks in (most of a bundle's time is its later passes
            // and the pauses between them, after it is published).
            let mid = wait_for("a transfer in flight", Duration::from_secs(20), || {
                rx.progress()
                    .is_some_and(|(done, all)| done * 10 >= all && done * 10 <= all * 9)
            })
            .is_ok();
            mid_transfer += u32::from(mid);
            let what = match rng.random_range(0..4) {
                0 => Kill::Receiver,
                1 => Kill::Sender,
                2 => Kill::ReceiverThenSender,
                _ => Kill::SenderThenReceiver,
            };
            *kills.entry(format!("{what:?}")).or_default() += 1;
            let order: &[bool] = match what {
                Kill::Receiver => &[true],
                Kill::Sender => &[false],
                Kill::ReceiverThenSender => &[true, false],
                Kill::SenderThenReceiver => &[false, true],
            };
            for &is_rx in order {
                if is_rx {
                    // Its counters start again with the next run.
                    if let Ok(text) = rx.scrape(&link) {
                        rx_lost_before += metric(&text, "weir_receiver_frames_lost_total");
                        rx_drops_before += metric(&text, "weir_receiver_kernel_drops_total");
                    }
                    rx.proc.kill9().unwrap();
                } else {
                    tx.proc.kill9().unwrap();
                }
                std::thread::sleep(Duration::from_millis(rng.random_range(50..=400)));
            }
            std::thread::sleep(Duration::from_millis(rng.random_range(200..=800)));
            for &is_rx in order {
                if is_rx {
                    rx.start()
                        .unwrap_or_else(|e| panic!("{e}\n{}", logs(&rx, &tx)));
                    rx_restarts += 1;
                } else {
                    tx.start()
                        .unwrap_or_else(|e| panic!("{e}\n{}", logs(&rx, &tx)));
                    tx_restarts += 1;
                }
            }
            next_kill = Instant::now() + Duration::from_secs(rng.random_range(30..=90));
        }
        assert!(rx.proc.running(), "the receiver died\n{}", logs(&rx, &tx));
        assert!(tx.proc.running(), "the sender died\n{}", logs(&rx, &tx));
        std::thread::sleep(Duration::from_millis(100));
    }
    let sending_ended = start.elapsed();
    // Every bundle offered goes out, then arrives.
    wait_for(
        "the sender to send every bundle",
        Duration::from_secs(600),
        || {
            tx.files("outbox").is_empty()
                && tx
                    .journal()
                    .iter()
                    .filter_map(|j| j["bundle"].as_str().map(str::to_owned))
                    .collect::<std::collections::BTreeSet<_>>()
                    .len()
                    >= offered.len()
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(&rx, &tx)));
    stop.store(true, Ordering::Relaxed);
    burster.join().unwrap();
    link.set_faults(&Faults::NONE);
    let staging = rx.spool.join("staging");
    let missing = || -> Vec<String> {
        offered
            .values()
            .filter(|(staged, _, _)| !staging.join(staged).exists())
            .map(|(staged, _, _)| staged.clone())
            .collect()
    };
    if wait_for("every bundle in staging/", Duration::from_secs(120), || {
        missing().is_empty()
    })
    .is_err()
    {
        panic!("never staged: {:?}\n{}", missing(), logs(&rx, &tx));
    }
    let drained = start.elapsed();
    assert!(tx.proc.stop().unwrap().success());
    std::thread::sleep(Duration::from_millis(1500));
    let text = rx.scrape(&link).unwrap();
    let k = link.counters();

    // Exactly once: every bundle and its receipt, nothing else, each whole.
    let mut want: Vec<String> = offered
        .values()
        .flat_map(|(staged, _, _)| [staged.clone(), staged.replace(".weir", ".receipt.json")])
        .collect();
    want.sort();
    let got = rx.files("staging");
    let extra: Vec<&String> = got.iter().filter(|f| !want.contains(f)).collect();
    assert!(extra.is_empty(), "not sent, yet in staging/: {extra:?}");
    assert_eq!(got.len(), want.len());
    let mut bytes = 0;
    for (staged, hash, size) in offered.values() {
        let path = staging.join(staged);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), *size, "{staged}");
        assert_eq!(file_hash(&path).unwrap(), *hash, "{staged} differs");
        bytes += size;
    }
    assert_eq!(rx.files("quarantine"), Vec::<String>::new());
    assert_eq!(rx.files("failed"), Vec::<String>::new());
    assert_eq!(k.tx_received, 0, "{k:?}");
    let journal = tx.journal();
    let rx_log = rx.proc.log_text();
    let lost = rx_lost_before + metric(&text, "weir_receiver_frames_lost_total");
    let drops = rx_drops_before + metric(&text, "weir_receiver_kernel_drops_total");
    eprintln!(
        "soak: seed {seed}, {secs} s of sending ({sending_ended:.0?} with the last kill's \
         restart), drained after {drained:.0?}\n\
         bundles offered {}, journaled {} ({} records), staged {} ({:.1} MiB), \
         quarantined 0, failed 0\n\
         kills {kills:?} ({mid_transfer} with a transfer in flight at the receiver); \
         restarts: receiver {rx_restarts}, sender {tx_restarts}\n\
         loss bursts {}; frames offered to the rules {}, lost by the rules {} ({:.2}%)\n\
         frames lost as weir counted them {lost} (all receiver runs), kernel socket drops {drops} \
         (snmp {}), found no socket {}, ICMP/ARP dropped by the diode {}\n\
         receiver log: {} resumes of partial transfers, {} duplicates, {} sender restarts seen",
        offered.len(),
        journal
            .iter()
            .filter_map(|j| j["bundle"].as_str())
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        journal.len(),
        offered.len(),
        bytes as f64 / (1 << 20) as f64,
        burst_count.load(Ordering::Relaxed),
        k.offered,
        k.lost,
        100.0 * k.lost as f64 / k.offered.max(1) as f64,
        k.socket_drops,
        k.udp_no_ports,
        k.back_arp + k.back_other,
        rx_log.matches("resuming partial transfer").count(),
        rx_log.matches("duplicate").count(),
        rx_log.matches("the sender restarted").count(),
    );
}
