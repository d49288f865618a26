//! The fault suite: both real daemons over a one-way link in network
//! namespaces (`weir_tests::netns`), with the kernel making the faults:
//! nftables loss, duplication and corruption on the link's egress toward
//! the receiver, a tc tbf rate cap, kill -9 of either side. Each test
//! asserts what lands in `staging/`, `quarantine/` and `failed/`, what the
//! receiver's metrics and status say, and which counter saw each dropped
//! frame (the rules', the qdisc's, the socket's or weir's).
//!
//! Needs root, so every test is `#[ignore]`d; CI runs the suite by name:
//! `cargo test -p weir-tests --test faults -- --ignored --test-threads=1`.
//! Tests take a lock and run one at a time anyway: each drives both daemons
//! near a gigabit, which is all two cores have.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use weir_tests::bundles::Fixture;
use weir_tests::daemons::wait_for;
use weir_tests::netns::{Accounting, Faults, Link, Receiver, Sender};
use weir_tests::rig::{StagingWatch, blocks_rebuilt, file_hash, metric, metric_if_any};

/// One test at a time, whatever the harness's thread count.
static SERIAL: Mutex<()> = Mutex::new(());

const MIB: u64 = 1 << 20;

/// The sender's pacing rate for the big transfers: what both debug
/// daemons and the kernel's forwarding between namespaces sustain on two
/// cores with few socket drops.
const RATE: &str = "1Gbit";

/// A link, both daemons configured on it, keys and a trust store, all in a
/// directory under `/var/tmp` (big bundles; `/tmp` may be a RAM disk).
/// Fields drop in order: the daemons, then the link, then the files.
struct Rig {
    rx: Receiver,
    tx: Sender,
    link: Link,
    fx: Fixture,
    dir: tempfile::TempDir,
    _serial: MutexGuard<'static, ()>,
}

impl Rig {
    /// A rig whose test may take `limit` in all; `passes` at `rate`,
    /// `limits` for the receiver's `[limits]`.
    fn new(limit: Duration, rate: &str, passes: u32, limits: &str) -> Self {
        let serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let dir = tempfile::Builder::new()
            .prefix("weir-faults-")
            .tempdir_in("/var/tmp")
            .unwrap();
        let link = Link::new(limit, Some(dir.path()));
        let fx = Fixture::new();
        let trust = dir.path().join("trust.toml");
        std::fs::write(&trust, fx.trust.to_toml()).unwrap();
        let rx = Receiver::configure(&link, dir.path(), &trust, rate, limits).unwrap();
        let tx = Sender::configure(&link, dir.path(), &trust, rate, passes, "").unwrap();
        Self {
            rx,
            tx,
            link,
            fx,
            dir,
            _serial: serial,
        }
    }

    /// Starts the receiver, then the sender.
    fn start(&mut self) {
        self.rx.start().unwrap();
        self.tx.start().unwrap();
    }

    /// A signed bundle `name` version 1 of `bytes` random bytes; its path
    /// and BLAKE3.
    fn bundle(&self, name: &str, bytes: u64, seed: u64) -> (PathBuf, blake3::Hash) {
        let out = self.dir.path().join(format!("{name}.weir"));
        let data = self
            .fx
            .signed_bundle(self.dir.path(), name, bytes, seed, &out);
        let _ = std::fs::remove_file(self.dir.path().join(format!("{name}.bin")));
        (out, blake3::hash(&data))
    }

    /// The link's counters and the tails of the receiver's and the
    /// sender's logs, for a panic message.
    fn logs(&self) -> String {
        format!(
            "--- link: {:?}\n--- receiver log:\n{}\n--- sender log:\n{}",
            self.link.counters(),
            self.rx.proc.log_tail(40),
            self.tx.proc.log_tail(20)
        )
    }

    /// Waits until `file` is in `staging/`.
    fn wait_staged(&self, file: &str, limit: Duration) {
        let path = self.rx.spool.join("staging").join(file);
        wait_for(file, limit, || path.exists())
            .unwrap_or_else(|e| panic!("{e}: never reached staging/\n{}", self.logs()));
    }

    /// Waits until the sender journaled `n` bundles (every pass out).
    fn wait_journal(&self, n: usize, limit: Duration) {
        wait_for("the sender's journal", limit, || {
            self.tx.journal().len() >= n
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", self.logs()));
    }

    /// Stops the sender (it must exit 0), lets the receiver's metrics catch
    /// up, and reads both sides' counters.
    fn quiesce(&mut self) -> (Accounting, String) {
        let status = self.tx.proc.stop().unwrap();
        assert!(
            status.success(),
            "the sender exited {status}\n{}",
            self.logs()
        );
        // The receive loop copies its counters into the registry a few
        // times a second.
        std::thread::sleep(Duration::from_millis(1500));
        let text = self.rx.scrape(&self.link).unwrap();
        (Accounting::new(self.link.counters(), &text), text)
    }

    /// `staging/` holds exactly `bundles` (file name and BLAKE3) with their
    /// receipts, and `quarantine/` and `failed/` nothing.
    fn assert_spool(&self, bundles: &[(&str, blake3::Hash)]) {
        let mut want: Vec<String> = bundles
            .iter()
            .flat_map(|(f, _)| [f.to_string(), f.replace(".weir", ".receipt.json")])
            .collect();
        want.sort();
        assert_eq!(self.rx.files("staging"), want, "{}", self.logs());
        for (f, h) in bundles {
            let got = file_hash(&self.rx.spool.join("staging").join(f)).unwrap();
            assert_eq!(got, *h, "{f} differs from what was sent");
        }
        assert_eq!(self.rx.files("quarantine"), Vec::<String>::new());
        assert_eq!(self.rx.files("failed"), Vec::<String>::new());
    }
}

/// Blocks of a bundle of `bytes` at MTU 1500 (256 shards of 1424 bytes).
fn blocks_of(bytes: u64) -> u64 {
    bytes.div_ceil(256 * 1424)
}

/// Sends a 256 MiB bundle over `faults` in `passes` passes; checks that it
/// is published whole and once, that the receiver's counts agree with the
/// kernel's, and returns both for the caller's own checks.
fn send_big_over(faults: Faults, passes: u32, seed: u64) -> (Accounting, String, Rig) {
    let mut r = Rig::new(Duration::from_secs(240), RATE, passes, "");
    let (bundle, hash) = r.bundle("big", 256 * MIB, seed);
    r.link.set_faults(&faults);
    r.start();
    let watch = StagingWatch::start(
        r.rx.spool.join("staging"),
        vec![("big_1.weir".to_owned(), hash)],
    );
    let t0 = Instant::now();
    r.tx.offer(&bundle).unwrap();
    r.wait_staged("big_1.weir", Duration::from_secs(120));
    let took = t0.elapsed();
    watch.finish();
    let (acc, text) = r.quiesce();
    eprintln!("{faults:?}, {passes} passes: published after {took:?}\n{acc}");
    acc.check().unwrap_or_else(|e| panic!("{e}\n{}", r.logs()));
    r.assert_spool(&[("big_1.weir", hash)]);
    assert_eq!(
        metric(
            &text,
            "weir_receiver_transfers_total{outcome=\"published\"}"
        ),
        1.0
    );
    let st = r.rx.status().unwrap();
    assert_eq!(st["recent"][0]["verdict"], "published", "{st}");
    assert_eq!(st["recent"][0]["file"], "big_1.weir", "{st}");
    assert!(st["transfers"].as_array().unwrap().is_empty(), "{st}");
    // The receipt names the digest the sender sent, once the sender has
    // journaled it (a receiver may finish before the sender's last pass).
    let receipt: serde_json::Value = serde_json::from_slice(
        &std::fs::read(r.rx.spool.join("staging").join("big_1.receipt.json")).unwrap(),
    )
    .unwrap();
    if let Some(j) = r.tx.journal().first() {
        assert_eq!(j["digest"], receipt["digest"], "{j}\n{receipt}");
    }
    (acc, text, r)
}

/// The loss rule dropped about `p` of the frames it was offered, weir's
/// loss over the last minute says about the same, and the transfer was
/// repaired by FEC.
fn assert_random_loss(acc: &Accounting, text: &str, r: &Rig, p: f64) {
    let k = &acc.kernel;
    let ratio = k.lost as f64 / k.offered as f64;
    assert!(
        (ratio - p).abs() < p * 0.1,
        "the rule dropped {ratio:.4} of the frames, not {p}\n{acc}"
    );
    // Frames that never arrived, over frames the sender numbered: the
    // rule's and the socket's drops (no qdisc here).
    let seen = r.rx.status().unwrap()["loss_last_minute"].as_f64().unwrap();
    let all = (k.lost + k.socket_drops + k.corrupted) as f64 / k.offered as f64;
    assert!(
        (seen - all).abs() < all * 0.1 + 0.001,
        "weir reports {seen:.4} lost over the last minute; the kernel's counters say {all:.4}\n{acc}"
    );
    assert_eq!(k.qdisc_dropped, 0, "{acc}");
    assert!(
        metric(text, "weir_receiver_blocks_total{how=\"repaired\"}") > 0.0,
        "{text}"
    );
}

// ---------------------------------------------------------------- loss

/// A loss of `p` that the first pass's parity repairs: 256 MiB in two
/// passes, and no block left unrecovered at the end of the first.
fn repaired_in_the_first_pass(p: f64, seed: u64) {
    let (acc, text, r) = send_big_over(Faults::loss(p), 2, seed);
    assert_random_loss(&acc, &text, &r, p);
    assert_eq!(
        metric(&text, "weir_receiver_blocks_unrecovered_total"),
        0.0,
        "one pass repairs {p} loss (64 parity shards a block)"
    );
}

#[test]
#[ignore = "needs root: run by name in CI (.ci/run)"]
fn one_percent_random_loss_on_a_256_mib_bundle_is_repaired_in_the_first_pass() {
    repaired_in_the_first_pass(0.01, 1);
}

#[test]
#[ignore = "needs root: run by name in CI (.ci/run)"]
fn five_percent_random_loss_on_a_256_mib_bundle_is_repaired_in_the_first_pass() {
    repaired_in_the_first_pass(0.05, 2);
}

#[test]
#[ignore = "needs root: run by name in CI (.ci/run)"]
fn twenty_percent_random_loss_on_a_256_mib_bundle_is_repaired_by_later_passes() {
    // 20% of 320 frames a block leaves 256 on average: the first pass
    // falls short for about half of the blocks, the second fills them.
    let (acc, text, r) = send_big_over(Faults::loss(0.20), 3, 3);
    assert_random_loss(&acc, &text, &r, 0.20);
    let unrecovered = metric(&text, "weir_receiver_blocks_unrecovered_total");
    assert!(
        unrecovered > 0.0 && unrecovered < blocks_of(256 * MIB) as f64,
        "the first pass left {unrecovered} blocks for the next"
    );
}

// ---------------------------------------------------- corruption, dups

#[test]
#[ignore = "needs root: run by name in CI (.ci/run)"]
fn corrupted_frames_are_dropped_by_the_frame_checksum_and_counted_as_corrupt() {
    let faults = Faults {
        corrupt: 0.001,
        ..Faults::NONE
    };
    let (acc, text, _r) = send_big_over(faults, 2, 4);
    let k = &acc.kernel;
    assert!(k.corrupted > 100, "{acc}");
    // The kernel let them through (veth does not check the UDP checksum);
    // weir's CRC32C caught every one that reached it.
    assert_eq!(k.udp_csum_errors, 0, "{acc}");
    assert!(
        acc.weir_corrupt > 0 && acc.weir_corrupt <= k.corrupted,
        "{acc}"
    );
    assert_eq!(
        metric(
            &text,
            "weir_receiver_frames_dropped_total{reason=\"corrupt\"}"
        ) as u64,
        acc.weir_corrupt
    );
    assert_eq!(k.lost, 0, "{acc}");
}

#[test]
#[ignore = "needs root: run by name in CI (.ci/run)"]
fn duplicated_frames_are_dropped_as_duplicates() {
    let faults = Faults {
        duplicate: 0.05,
        ..Faults::NONE
    };
    let (acc, _text, _r) = send_big_over(faults, 2, 5);
    let k = &acc.kernel;
    let ratio = k.duplicated as f64 / k.offered as f64;
    assert!((ratio - 0.05).abs() < 0.005, "{acc}");
    assert!(acc.weir_duplicate > k.duplicated * 9 / 10, "{acc}");
    assert!(acc.received > k.offered, "the copies arrived: {acc}");
}

// ------------------------------------------------------------ rate cap

#[test]
#[ignore = "needs root: run by name in CI (.ci/run)"]
fn a_rate_cap_below_the_sender_s_rate_drops_in_the_qdisc_and_the_bundle_still_arrives() {
    let mut r = Rig::new(Duration::from_secs(240), "600Mbit", 5, "");
    let (bundle, hash) = r.bundle("capped", 128 * MIB, 6);
    // 300 Mbit/s of Ethernet frames where the sender paces 600 Mbit/s of
    // datagrams: a fifth to a half of the frames find the qdisc's queue
    // full. (The sender's own system calls carry the forwarding between
    // the namespaces and the qdisc's throttling, so a capped sender slows
    // down by a varying amount: on two cores one paced at 1 Gbit/s slows to
    // about a 500-700 Mbit/s cap instead of meeting it with drops.)
    r.link.rate_cap("300mbit", "20ms");
    r.start();
    let watch = StagingWatch::start(
        r.rx.spool.join("staging"),
        vec![("capped_1.weir".to_owned(), hash)],
    );
    r.tx.offer(&bundle).unwrap();
    r.wait_staged("capped_1.weir", Duration::from_secs(120));
    watch.finish();
    let (acc, text) = r.quiesce();
    eprintln!("tbf 300mbit under a 600Mbit sender:\n{acc}");
    acc.check().unwrap_or_else(|e| panic!("{e}\n{}", r.logs()));
    let k = &acc.kernel;
    // The qdisc dropped them, no rule did; weir's loss is the qdisc's drops
    // and the socket's (Accounting::check, above), and the qdisc's
    // dominate.
    assert_eq!(k.lost, 0, "{acc}");
    assert!(k.qdisc_dropped > k.offered / 20, "{acc}");
    assert!(k.qdisc_dropped > 4 * k.socket_drops, "{acc}");
    r.assert_spool(&[("capped_1.weir", hash)]);
    assert_eq!(
        metric(
            &text,
            "weir_receiver_transfers_total{outcome=\"published\"}"
        ),
        1.0
    );
}

// ------------------------------------------------ beyond the parity

#[test]
#[ignore = "needs root: run by name in CI (.ci/run)"]
fn beyond_the_parity_budget_a_transfer_ends_in_failed_with_its_missing_blocks() {
    // One pass at 22% loss leaves a block 250 of its 320 frames on
    // average, fewer than the 256 it needs: about four blocks in five never
    // rebuild, and nothing comes to fill them in.
    let mut r = Rig::new(
        Duration::from_secs(180),
        RATE,
        1,
        "transfer_expiry = \"3s\"\n",
    );
    let (bundle, _) = r.bundle("lossy", 64 * MIB, 7);
    r.link.set_faults(&Faults::loss(0.22));
    r.start();
    // Nothing may ever show up in staging/.
    let watch = StagingWatch::start(r.rx.spool.join("staging"), Vec::new());
    r.tx.offer(&bundle).unwrap();
    r.wait_journal(1, Duration::from_secs(60));
    let id = r.tx.journal()[0]["transfer"].as_str().unwrap().to_owned();
    let report = r.rx.spool.join("failed").join(format!("{id}.json"));
    wait_for("the failure report", Duration::from_secs(30), || {
        report.exists()
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", r.logs()));
    let rep: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let blocks = rep["blocks"].as_u64().unwrap();
    assert_eq!(blocks, blocks_of(std::fs::metadata(&bundle).unwrap().len()));
    let lacking: u64 = rep["missing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["end"].as_u64().unwrap() - m["start"].as_u64().unwrap())
        .sum();
    assert!(lacking > 0 && lacking < blocks, "{rep}");
    assert_eq!(
        rep["blocks_received"].as_u64().unwrap() + lacking,
        blocks,
        "{rep}"
    );
    assert!(rep["reason"].as_str().unwrap().contains("expired"), "{rep}");
    // Its data is gone, nothing was published or quarantined.
    wait_for("incoming/ to empty", Duration::from_secs(10), || {
        r.rx.files("incoming")
            .iter()
            .all(|f| !f.ends_with(".part") && !f.ends_with(".state"))
    })
    .unwrap();
    watch.finish();
    let (acc, text) = r.quiesce();
    eprintln!("22% loss, 1 pass:\n{acc}");
    acc.check().unwrap_or_else(|e| panic!("{e}\n{}", r.logs()));
    assert_eq!(r.rx.files("staging"), Vec::<String>::new());
    assert_eq!(r.rx.files("quarantine"), Vec::<String>::new());
    assert_eq!(r.rx.files("failed"), vec![format!("{id}.json")]);
    assert_eq!(
        metric(&text, "weir_receiver_transfers_total{outcome=\"expired\"}"),
        1.0
    );
    assert_eq!(
        metric_if_any(
            &text,
            "weir_receiver_transfers_total{outcome=\"published\"}"
        )
        .unwrap_or(0.0),
        0.0,
        "(a series appears once it has counted)"
    );
    assert!(metric(&text, "weir_receiver_blocks_unrecovered_total") >= lacking as f64);
    let st = r.rx.status().unwrap();
    assert_eq!(st["recent"][0]["verdict"], "expired", "{st}");
}

// --------------------------------------------------------------- kill -9

/// Which side to kill -9.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Victim {
    Receiver,
    Sender,
}

/// Sends a 128 MiB bundle over 5% loss and, once a quarter of its blocks
/// are in, kills `victims` with kill -9 in that order, then restarts them
/// in the same order. The bundle must be published whole, once; the
/// sender must journal it once.
fn kill_during_a_lossy_transfer(victims: &[Victim]) {
    let mut r = Rig::new(Duration::from_secs(240), "400Mbit", 3, "");
    let (bundle, hash) = r.bundle("killed", 128 * MIB, 8);
    let len = std::fs::metadata(&bundle).unwrap().len();
    r.link.set_faults(&Faults::loss(0.05));
    r.start();
    let watch = StagingWatch::start(
        r.rx.spool.join("staging"),
        vec![("killed_1.weir".to_owned(), hash)],
    );
    r.tx.offer(&bundle).unwrap();
    let blocks = blocks_of(len);
    wait_for("a quarter of the blocks", Duration::from_secs(60), || {
        r.rx.progress()
            .is_some_and(|(done, all)| all == blocks && done * 4 >= blocks)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", r.logs()));
    let before = r.link.counters();
    for v in victims {
        match v {
            Victim::Receiver => r.rx.proc.kill9().unwrap(),
            Victim::Sender => r.tx.proc.kill9().unwrap(),
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    std::thread::sleep(Duration::from_millis(700));
    for v in victims {
        match v {
            Victim::Receiver => r.rx.start().unwrap(),
            Victim::Sender => r.tx.start().unwrap(),
        }
    }
    r.wait_staged("killed_1.weir", Duration::from_secs(120));
    r.wait_journal(1, Duration::from_secs(60));
    watch.finish();
    let (acc, text) = r.quiesce();
    eprintln!("kill -9 of {victims:?}:\n{acc}");
    r.assert_spool(&[("killed_1.weir", hash)]);
    // The sender journaled it once and moved it to sent/.
    let journal = r.tx.journal();
    assert_eq!(journal.len(), 1, "{journal:?}");
    assert_eq!(journal[0]["bundle"], "killed.weir");
    assert_eq!(r.tx.files("sent"), vec!["killed.weir".to_owned()]);
    assert_eq!(r.tx.files("outbox"), Vec::<String>::new());
    let rx_log = r.rx.proc.log_text();
    let tx_log = r.tx.proc.log_text();
    if victims.contains(&Victim::Receiver) {
        // It resumed from its checkpoint instead of starting over.
        assert!(rx_log.contains("resuming partial transfer"), "{}", r.logs());
        assert!(
            blocks_rebuilt(&text) + (blocks / 8) as f64 <= blocks as f64,
            "the restarted receiver rebuilt {} of {blocks} blocks\n{}",
            blocks_rebuilt(&text),
            r.logs()
        );
        // Frames that came while it was down found no socket (when the
        // sender was alive then); the kernel's answers (ICMP port
        // unreachable) went no further than the diode.
        let k = &acc.kernel;
        if victims == [Victim::Receiver] {
            assert!(k.udp_no_ports > before.udp_no_ports, "{acc}");
        }
        if k.udp_no_ports > before.udp_no_ports {
            assert!(k.back_other > before.back_other, "{acc}");
        }
    } else {
        assert!(
            !rx_log.contains("resuming partial transfer"),
            "{}",
            r.logs()
        );
        // One receiver run throughout: its counts agree with the kernel's.
        acc.check().unwrap_or_else(|e| panic!("{e}\n{}", r.logs()));
    }
    if victims.contains(&Victim::Sender) {
        assert!(
            tx_log.contains("resuming interrupted transfer"),
            "{}",
            r.logs()
        );
        // A receiver that ran throughout saw the sender's new epoch (a
        // restarted one sees only the new epoch).
        if victims == [Victim::Sender] {
            assert!(
                metric(&text, "weir_receiver_sender_restarts_total") >= 1.0,
                "{}",
                r.logs()
            );
        }
    }
    assert_eq!(acc.kernel.tx_received, 0, "{acc}");
    assert_eq!(
        metric(
            &text,
            "weir_receiver_transfers_total{outcome=\"published\"}"
        ),
        1.0
    );
}

#[test]
#[ignore = "needs root: run by name in CI (.ci/run)"]
fn kill_9_of_the_receiver_during_a_lossy_transfer() {
    kill_during_a_lossy_transfer(&[Victim::Receiver]);
}

#[test]
#[ignore = "needs root: run by name in CI (.ci/run)"]
fn kill_9_of_the_sender_during_a_lossy_transfer() {
    kill_during_a_lossy_transfer(&[Victim::Sender]);
}

#[test]
#[ignore = "needs root: run by name in CI (.ci/run)"]
fn kill_9_of_the_receiver_then_the_sender_during_a_lossy_transfer() {
    kill_during_a_lossy_transfer(&[Victim::Receiver, Victim::Sender]);
}

#[test]
#[ignore = "needs root: run by name in CI (.ci/run)"]
fn kill_9_of_the_sender_then_the_receiver_during_a_lossy_transfer() {
    kill_during_a_lossy_transfer(&[Victim::Sender, Victim::Receiver]);
}

// ------------------------------------------------------ the link itself

#[test]
#[ignore = "needs root: run by name in CI (.ci/run)"]
fn nothing_from_the_receiver_s_side_reaches_the_sender() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let link = Link::new(Duration::from_secs(60), None);
    link.try_to_talk_back();
    let k = link.counters();
    // ARP for the link's address (its static entry gone), then UDP: all
    // dropped where the receiver's side enters the link.
    assert!(k.back_arp > 0, "{k:?}");
    assert!(k.back_other >= 3, "{k:?}");
    assert_eq!(k.tx_received, 0, "{k:?}");
    assert_eq!(k.to_tx, 0, "{k:?}");
}

#[test]
#[ignore = "needs root: run by name in CI (.ci/run)"]
fn netem_delay_and_reordering_where_the_kernel_has_it() {
    let mut r = Rig::new(Duration::from_secs(120), "400Mbit", 2, "");
    let has_netem = r
        .link
        .netem(&[
            "delay", "5ms", "2ms", "reorder", "5%", "50%", "limit", "100000",
        ])
        .unwrap();
    if !has_netem {
        // This project's kernel is built without netem (tc says "Specified
        // qdisc kind is unknown"; anything else failed the test above).
        // Reordering and delay are covered by the simulator there.
        eprintln!("netem: not in this kernel; delay and reordering not tried here");
        return;
    }
    let (bundle, hash) = r.bundle("jittered", 32 * MIB, 9);
    r.start();
    r.tx.offer(&bundle).unwrap();
    r.wait_staged("jittered_1.weir", Duration::from_secs(60));
    let (acc, _) = r.quiesce();
    eprintln!("netem delay 5ms 2ms reorder 5%:\n{acc}");
    r.assert_spool(&[("jittered_1.weir", hash)]);
    assert_eq!(acc.kernel.tx_received, 0);
}
