//! The real `weir-receiver` (and `weir-sender`) binaries over real UDP on
//! 127.0.0.1, each test with its own spool: delivery, crashes, hostile
//! datagrams, tampered and incomplete transfers, metrics and status.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::UdpSocket;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use weir_protocol::{
    BundleName, Chunker, ChunkerConfig, FecParams, Integrity, LinkEncoder, TransferDescriptor,
    TransferId,
};
use weir_tests::daemons::wait_for;
use weir_tests::rig::{
    Setup, StagingWatch, blast, blocks_on_record, blocks_rebuilt, describe, frames, frames_as,
    interleave, metric, transfer_id,
};

#[test]
fn one_bundle_arrives_bit_identical_with_receipt_metrics_and_status() {
    let mut s = Setup::new("");
    s.rx.start().unwrap();
    let (path, bytes) = s.bundle("app", 3000, 1);
    s.send("400Mbit", 2, &[&path]);
    let got = s.wait_staged("app_1.weir", 30);
    assert!(got == bytes, "content differs");
    let receipt: serde_json::Value =
        serde_json::from_slice(&s.staged("app_1.receipt.json").unwrap()).unwrap();
    assert_eq!(receipt["verdict"], "accepted");
    assert_eq!(
        receipt["digest"],
        weir_protocol::digest::digest(&bytes).to_hex().as_str()
    );
    assert_eq!(receipt["signers"][0]["id"], "builder");
    // Nothing left behind but the list of finished transfers.
    wait_for("incoming/ to empty", Duration::from_secs(5), || {
        s.rx.files("incoming").iter().all(|f| f == "finished")
    })
    .unwrap();
    assert!(s.rx.files("quarantine").is_empty());

    // Metrics: what happened, in a form promtool accepts.
    std::thread::sleep(Duration::from_millis(600));
    let text = s.rx.scrape().unwrap();
    assert_eq!(
        metric(
            &text,
            "weir_receiver_transfers_total{outcome=\"published\"}"
        ),
        1.0
    );
    assert!(metric(&text, "weir_receiver_frames_received_total") > 2000.0);
    assert_eq!(metric(&text, "weir_receiver_link_up"), 1.0);
    // The second pass came after the transfer was complete.
    assert!(
        metric(
            &text,
            "weir_receiver_frames_dropped_total{reason=\"finished\"}"
        ) > 0.0
    );
    let promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) must be installed; .ci/run installs it");
    use std::io::Write;
    promtool
        .stdin
        .as_ref()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Status, as an operator reads it.
    let out = Command::new(weir_tests::bin::path("weir-receiver"))
        .args(["status", "--config"])
        .arg(&s.rx.config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.contains("running"), "{text}");
    assert!(text.contains("link: up"), "{text}");
    assert!(
        text.contains("published") && text.contains("app_1.weir"),
        "{text}"
    );
    assert_eq!(s.rx.stop().unwrap().code(), Some(0));
}

#[test]
fn a_hundred_bundles_from_the_sender_daemon_all_arrive_bit_identical() {
    let mut s = Setup::new("");
    s.rx.start().unwrap();
    let config = s.sender_config("400Mbit", 1);
    let outbox = s.dir.path().join("tx-spool").join("outbox");
    std::fs::create_dir_all(&outbox).unwrap();
    let mut expected = Vec::new();
    for i in 0..100u64 {
        let name = format!("pkg{i:03}");
        let (path, bytes) = s.bundle(&name, 16 + (i * 37) % 200, 100 + i);
        std::fs::rename(&path, outbox.join(format!("{name}.weir"))).unwrap();
        expected.push((format!("{name}_1.weir"), bytes));
    }
    let mut sender = std::process::Command::new(weir_tests::bin::path("weir-sender"))
        .args(["run", "--config"])
        .arg(&config)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let staging = s.rx.spool.join("staging");
    let done = wait_for("100 bundles in staging/", Duration::from_secs(120), || {
        expected.iter().all(|(f, _)| staging.join(f).exists())
    });
    weir_tests::daemons::terminate(&mut sender).unwrap();
    done.unwrap_or_else(|e| panic!("{e}: {:?}\n{}", s.rx.files("staging"), s.rx.log_text()));
    for (file, bytes) in &expected {
        assert!(&s.staged(file).unwrap() == bytes, "{file} differs");
    }
    // 100 bundles and 100 receipts, nothing else.
    assert_eq!(s.rx.files("staging").len(), 200);
    assert!(s.rx.files("quarantine").is_empty());
    assert!(s.rx.files("failed").is_empty());
}

#[test]
fn kill_9_mid_transfer_then_restart_resumes_and_never_shows_a_partial_file() {
    let mut s = Setup::new("");
    s.rx.start().unwrap();
    let (path, bytes) = s.bundle("big", 24 * 1024, 7);
    let len = bytes.len() as u64;
    // Anything that ever appears in staging/ must be whole, looked at
    // every 2 ms all through the transfer, the crash and the restart.
    let watch = StagingWatch::start(
        s.rx.spool.join("staging"),
        vec![("big_1.weir".into(), blake3::hash(&bytes))],
    );
    let sender = s.send_in_background("100Mbit", 2, path, &[]);
    // Kill the receiver once a good part of the first pass is on record.
    let incoming = s.rx.spool.join("incoming");
    wait_for("a checkpoint with blocks", Duration::from_secs(30), || {
        blocks_on_record(&incoming)
            .iter()
            .any(|(_, done)| *done > 20)
    })
    .unwrap();
    s.rx.kill().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    s.rx.start().unwrap();
    let got = s.wait_staged("big_1.weir", 60);
    let out = sender.join().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // 24 MiB at 100 Mbit/s, two passes: about 4 s, 2,000 looks at least.
    watch.finish();
    assert!(got == bytes, "content differs");
    assert!(s.rx.files("quarantine").is_empty());
    let log = s.rx.log_text();
    assert!(log.contains("resuming partial transfer"), "{log}");
    // The restarted receiver did not rebuild the blocks it had on record.
    std::thread::sleep(Duration::from_millis(600));
    let rebuilt = blocks_rebuilt(&s.rx.scrape().unwrap());
    let blocks = len.div_ceil(256 * 1424) as f64;
    assert!(
        rebuilt + 20.0 <= blocks,
        "rebuilt {rebuilt} of {blocks} blocks after the restart"
    );
}

/// Bundles by staged file name, with their bytes.
type Bundles = Vec<(String, Vec<u8>)>;
/// Each transfer's frames.
type Streams = Vec<Vec<Vec<u8>>>;

/// Three bundles of 8 MiB (24 blocks each), and the frames of two passes
/// over each.
fn three_in_flight(s: &Setup) -> (Bundles, Streams) {
    let bundles: Vec<(String, Vec<u8>)> = (0..3u64)
        .map(|i| {
            let (_, b) = s.bundle(&format!("multi{i}"), 8 * 1024, 60 + i);
            (format!("multi{i}_1.weir"), b)
        })
        .collect();
    let passes = bundles
        .iter()
        .enumerate()
        .map(|(i, (file, b))| frames(b, &file.replace("_1", ""), 2, 70 + i as u64))
        .collect();
    (bundles, passes)
}

#[test]
fn kill_9_with_several_transfers_in_flight_resumes_every_one() {
    let mut s = Setup::new("");
    s.rx.start().unwrap();
    let (bundles, passes) = three_in_flight(&s);
    let watch = StagingWatch::start(
        s.rx.spool.join("staging"),
        bundles
            .iter()
            .map(|(f, b)| (f.clone(), blake3::hash(b)))
            .collect(),
    );
    // 30% of each stream (the first of its two passes is half of it).
    blast(s.addr, &interleave(&passes, 0.0, 0.3));
    let incoming = s.rx.spool.join("incoming");
    wait_for(
        "three checkpoints with blocks",
        Duration::from_secs(30),
        || {
            let on_record = blocks_on_record(&incoming);
            on_record.len() == 3 && on_record.iter().all(|(_, done)| *done >= 8)
        },
    )
    .unwrap_or_else(|e| panic!("{e}: {:?}", blocks_on_record(&incoming)));
    s.rx.kill().unwrap();
    let on_record = blocks_on_record(&incoming);
    s.rx.start().unwrap();
    let log = s.rx.log_text();
    for (id, done) in &on_record {
        assert!(
            log.lines().any(|l| l.contains("resuming partial transfer")
                && l.contains(id.as_str())
                && l.contains(&format!("blocks_done={done}"))),
            "{id} with {done} blocks was not resumed: {log}"
        );
    }
    // The rest of the first pass and all of the second.
    let kept: u32 = on_record.iter().map(|(_, d)| d).sum();
    the_rest_completes_without_what_was_kept(&s, &bundles, &passes, kept);
    watch.finish();
}

/// Sends the rest of three transfers in flight (from 30% of their frames)
/// to a restarted receiver that had `kept` of their 72 blocks on record:
/// each must arrive whole, and none of the kept blocks be rebuilt again.
fn the_rest_completes_without_what_was_kept(
    s: &Setup,
    bundles: &Bundles,
    passes: &Streams,
    kept: u32,
) {
    blast(s.addr, &interleave(passes, 0.3, 1.0));
    for (file, b) in bundles {
        assert!(&s.wait_staged(file, 30) == b, "{file} differs");
    }
    std::thread::sleep(Duration::from_millis(600));
    let rebuilt = blocks_rebuilt(&s.rx.scrape().unwrap());
    assert!(
        rebuilt + f64::from(kept) <= 72.0,
        "rebuilt {rebuilt} of 72 blocks after the restart, though {kept} were on record"
    );
}

#[test]
fn sigterm_saves_every_partial_transfer_and_the_restart_resumes_it() {
    // No checkpoint before the shutdown: what is on record, the
    // shutdown saved.
    let mut s = Setup::new("checkpoint_interval = \"1h\"\n");
    s.rx.start().unwrap();
    let (bundles, passes) = three_in_flight(&s);
    blast(s.addr, &interleave(&passes, 0.0, 0.3));
    wait_for("blocks of every transfer", Duration::from_secs(30), || {
        blocks_rebuilt(&s.rx.scrape().unwrap()) >= 24.0
    })
    .unwrap();
    let incoming = s.rx.spool.join("incoming");
    let before: Vec<u32> = blocks_on_record(&incoming)
        .iter()
        .map(|(_, d)| *d)
        .collect();
    assert!(
        before.iter().all(|d| *d == 0),
        "checkpointed before the shutdown: {before:?}"
    );
    let rebuilt = blocks_rebuilt(&s.rx.scrape().unwrap());
    assert_eq!(s.rx.stop().unwrap().code(), Some(0));
    let on_record = blocks_on_record(&incoming);
    assert_eq!(on_record.len(), 3, "{on_record:?}");
    let kept: u32 = on_record.iter().map(|(_, d)| d).sum();
    assert!(
        f64::from(kept) >= rebuilt,
        "{kept} blocks on record after the shutdown, {rebuilt} were rebuilt before it"
    );
    s.rx.start().unwrap();
    let log = s.rx.log_text();
    assert_eq!(log.matches("resuming partial transfer").count(), 3, "{log}");
    // What the shutdown saved is not received again.
    the_rest_completes_without_what_was_kept(&s, &bundles, &passes, kept);
}

#[test]
fn garbage_and_foreign_datagrams_do_not_disturb_a_transfer() {
    let mut s = Setup::new("");
    s.rx.start().unwrap();
    let (path, bytes) = s.bundle("app", 6 * 1024, 3);
    let addr = s.addr;
    let noise = std::thread::spawn(move || {
        use rand::{Rng, RngCore, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(99);
        // Frames of another transfer from another sender, some corrupted.
        let other: Vec<u8> = (0..300_000).map(|i| (i % 251) as u8).collect();
        let mut foreign = frames(&other, "intruder", 1, 0xdead);
        for (i, f) in foreign.iter_mut().enumerate() {
            if i % 2 == 0 {
                let n = f.len();
                f[rng.random_range(0..n)] ^= 0x40;
            }
        }
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        for round in 0..3000 {
            let len = rng.random_range(1..9000);
            let mut junk = vec![0u8; len];
            rng.fill_bytes(&mut junk);
            if round % 3 == 0 {
                // Right magic and version, nonsense after.
                junk[..4].copy_from_slice(b"WEIR");
            }
            socket.send_to(&junk, addr).unwrap();
            if let Some(f) = foreign.get(round % foreign.len()) {
                socket.send_to(f, addr).unwrap();
                if round % 10 == 0 {
                    // The same frame from a sender of wire version 1.
                    let mut old = f.clone();
                    old[4] = 1;
                    socket.send_to(&old, addr).unwrap();
                }
            }
            if round % 50 == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    });
    s.send("200Mbit", 2, &[&path]);
    noise.join().unwrap();
    let got = s.wait_staged("app_1.weir", 30);
    assert!(got == bytes, "content differs");
    std::thread::sleep(Duration::from_millis(600));
    let text = s.rx.scrape().unwrap();
    assert!(
        metric(
            &text,
            "weir_receiver_frames_dropped_total{reason=\"malformed\"}"
        ) > 1000.0
    );
    assert!(
        metric(
            &text,
            "weir_receiver_frames_dropped_total{reason=\"corrupt\"}"
        ) > 10.0
    );
    // Frames of another wire version are counted, and the log says why
    // nothing of theirs arrives.
    assert!(
        metric(
            &text,
            "weir_receiver_frames_dropped_total{reason=\"unsupported\"}"
        ) > 50.0
    );
    let log = s.rx.log_text();
    assert!(log.contains("frames of another weir wire version"), "{log}");
    // The intruder's frames are valid frames of an undescribed or
    // half-delivered transfer: they never reach staging/.
    assert_eq!(
        s.rx.files("staging").len(),
        2,
        "{:?}",
        s.rx.files("staging")
    );
}

/// Sends a signed bundle with one byte of its artifact flipped; returns
/// its bytes and the parsed reason file once it is written.
fn send_tampered(s: &Setup) -> (Vec<u8>, TransferId, serde_json::Value) {
    let (_, mut bytes) = s.bundle("app", 512, 5);
    // One byte of the artifact's content, well past the manifest.
    let at = bytes.len() - 100_000;
    bytes[at] ^= 1;
    blast(s.addr, &frames(&bytes, "app.weir", 2, 42));
    let id = transfer_id(&bytes);
    let reason_file =
        s.rx.spool
            .join("quarantine")
            .join(format!("{id}.reason.json"));
    wait_for("the reason file", Duration::from_secs(30), || {
        reason_file.exists()
    })
    .unwrap();
    let reason = serde_json::from_slice(&std::fs::read(&reason_file).unwrap()).unwrap();
    (bytes, id, reason)
}

#[test]
fn past_its_quota_quarantine_keeps_only_the_reason() {
    let mut s = Setup::new("quarantine_quota = \"100KiB\"\n");
    s.rx.start().unwrap();
    let (_, id, reason) = send_tampered(&s);
    assert_eq!(reason["kept"], false, "{reason}");
    assert_eq!(reason["reasons"][0]["code"], "hash_mismatch", "{reason}");
    assert!(
        !s.rx
            .spool
            .join("quarantine")
            .join(format!("{id}.weir"))
            .exists()
    );
    assert!(s.rx.log_text().contains("over its quota"));
}

#[test]
fn a_tampered_bundle_lands_in_quarantine_with_its_reason() {
    let mut s = Setup::new("");
    s.rx.start().unwrap();
    let (bytes, id, reason) = send_tampered(&s);
    assert_eq!(reason["reasons"][0]["code"], "hash_mismatch", "{reason}");
    assert_eq!(reason["kept"], true, "{reason}");
    let kept = std::fs::read(s.rx.spool.join("quarantine").join(format!("{id}.weir"))).unwrap();
    assert!(kept == bytes);
    assert!(s.rx.files("staging").is_empty());
    std::thread::sleep(Duration::from_millis(600));
    let text = s.rx.scrape().unwrap();
    assert_eq!(
        metric(
            &text,
            "weir_receiver_verification_failures_total{reason=\"hash_mismatch\"}"
        ),
        1.0
    );
}

#[test]
fn a_bundle_with_a_clashing_name_and_version_is_quarantined_as_a_conflict() {
    let mut s = Setup::new("");
    s.rx.start().unwrap();
    let (first, bytes) = s.bundle("app", 64, 1);
    s.send("200Mbit", 1, &[&first]);
    assert!(s.wait_staged("app_1.weir", 30) == bytes);
    // Same name and version, other content.
    std::fs::remove_file(&first).unwrap();
    let (second, _) = s.bundle("app", 64, 2);
    s.send("200Mbit", 1, &[&second]);
    wait_for("the conflict", Duration::from_secs(30), || {
        s.rx.files("quarantine")
            .iter()
            .any(|f| f.ends_with(".reason.json"))
    })
    .unwrap();
    let reason_file =
        s.rx.files("quarantine")
            .into_iter()
            .find(|f| f.ends_with(".reason.json"))
            .unwrap();
    let text = std::fs::read_to_string(s.rx.spool.join("quarantine").join(reason_file)).unwrap();
    assert!(text.contains("\"conflict\""), "{text}");
    // The published one is untouched.
    assert!(s.staged("app_1.weir").unwrap() == bytes);
}

#[test]
fn a_transfer_that_never_completes_is_reported_in_failed_with_its_missing_blocks() {
    let mut s = Setup::new("transfer_expiry = \"2s\"\n");
    s.rx.start().unwrap();
    // 58 blocks: 4 interleaved groups of up to 16.
    let (_, bytes) = s.bundle("app", 20 * 1024, 9);
    let all = frames(&bytes, "app.weir", 1, 77);
    // The link goes dark for the middle of the only pass.
    let n = all.len();
    let mut sent: Vec<Vec<u8>> = all[..2 * n / 5].to_vec();
    sent.extend_from_slice(&all[3 * n / 5..]);
    blast(s.addr, &sent);
    let id = transfer_id(&bytes);
    let report = s.rx.spool.join("failed").join(format!("{id}.json"));
    wait_for("the failure report", Duration::from_secs(30), || {
        report.exists()
    })
    .unwrap();
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let missing = r["missing"].as_array().unwrap();
    assert!(!missing.is_empty(), "{r}");
    let lacking: u64 = missing
        .iter()
        .map(|m| m["end"].as_u64().unwrap() - m["start"].as_u64().unwrap())
        .sum();
    assert!(
        lacking > 0 && lacking < r["blocks"].as_u64().unwrap(),
        "{r}"
    );
    assert_eq!(
        r["blocks_received"].as_u64().unwrap() + lacking,
        r["blocks"].as_u64().unwrap(),
        "{r}"
    );
    assert!(r["reason"].as_str().unwrap().contains("expired"));
    // Its partial data is gone, and nothing was published.
    wait_for("incoming/ to empty", Duration::from_secs(5), || {
        s.rx.files("incoming")
            .iter()
            .all(|f| !f.ends_with(".part") && !f.ends_with(".state"))
    })
    .unwrap();
    assert!(s.rx.files("staging").is_empty());
    wait_for("status to show it", Duration::from_secs(5), || {
        s.rx.status().is_ok_and(|st| {
            st["recent"][0]["verdict"] == "expired"
                && st["transfers"].as_array().is_some_and(Vec::is_empty)
        })
    })
    .unwrap();
}

/// Sends bundle a, then all of bundle b while a is half done, then the
/// rest of a, to a receiver configured with `limits`: b must be turned
/// away with `log` in the log and `metric_line` counting it, a must arrive.
fn second_transfer_is_turned_away(limits: &str, metric_line: &str, log: &str) -> (Setup, Vec<u8>) {
    let mut s = Setup::new(limits);
    s.rx.start().unwrap();
    let (_, a) = s.bundle("a", 2048, 4);
    let (_, b) = s.bundle("b", 2048, 5);
    let (fa, fb) = (frames(&a, "a.weir", 1, 1), frames(&b, "b.weir", 1, 2));
    let half = fa.len() / 2;
    blast(s.addr, &fa[..half]);
    blast(s.addr, &fb);
    blast(s.addr, &fa[half..]);
    assert!(s.wait_staged("a_1.weir", 30) == a);
    std::thread::sleep(Duration::from_millis(600));
    let text = s.rx.scrape().unwrap();
    assert!(metric(&text, metric_line) >= 1.0, "{metric_line}");
    assert!(s.rx.log_text().contains(log), "{}", s.rx.log_text());
    assert!(s.staged("b_1.weir").is_none());
    (s, b)
}

/// The second pass of b, from the same sender (epoch 2) that sent its
/// first: b must then arrive.
fn second_pass_of_b(s: &Setup, b: &[u8]) {
    let both = frames(b, "b.weir", 2, 2);
    blast(s.addr, &both[both.len() / 2..]);
    assert!(s.wait_staged("b_1.weir", 30) == b);
}

#[test]
fn a_transfer_beyond_the_incoming_quota_waits_with_a_log_line_and_a_metric() {
    let (s, b) = second_transfer_is_turned_away(
        "incoming_quota = \"3MiB\"\nmax_bundle = \"3MiB\"\n",
        "weir_receiver_transfers_refused_total{reason=\"incoming_quota\"}",
        "incoming/ quota reached",
    );
    // It waited, it was not refused for good: b comes with the sender's
    // next pass, once a is done and its room is free.
    second_pass_of_b(&s, &b);
}

#[test]
fn a_transfer_beyond_the_transfer_limit_waits_with_a_log_line_and_a_metric() {
    let (s, b) = second_transfer_is_turned_away(
        "transfers = 1\n",
        "weir_receiver_frames_dropped_total{reason=\"too_many_transfers\"}",
        "limits.transfers reached",
    );
    // b comes with the sender's next pass, once a is done.
    second_pass_of_b(&s, &b);
}

#[test]
fn a_bundle_beyond_max_bundle_is_refused_with_the_limit_named() {
    let mut s = Setup::new("max_bundle = \"1536KiB\"\n");
    s.rx.start().unwrap();
    let (_, small) = s.bundle("small", 1024, 4);
    let (_, big) = s.bundle("big", 2048, 5);
    // The big one first, with every descriptor repeat of two passes.
    blast(s.addr, &frames(&big, "big.weir", 2, 1));
    blast(s.addr, &frames(&small, "small.weir", 1, 2));
    assert!(s.wait_staged("small_1.weir", 30) == small);
    std::thread::sleep(Duration::from_millis(600));
    let text = s.rx.scrape().unwrap();
    let line = "weir_receiver_transfers_refused_total{reason=\"max_bundle\"}";
    assert_eq!(metric(&text, line), 1.0, "told once: {text}");
    assert!(
        metric(
            &text,
            "weir_receiver_frames_dropped_total{reason=\"refused\"}"
        ) > 1.0,
        "every descriptor is dropped"
    );
    let log = s.rx.log_text();
    assert_eq!(
        log.matches("larger than limits.max_bundle").count(),
        1,
        "told once, naming the limit: {log}"
    );
    assert!(log.contains("big"), "{log}");
    assert!(s.staged("big_1.weir").is_none());
}

#[test]
fn a_transfer_whose_blocks_overflow_its_memory_share_is_refused_with_the_remedy() {
    let mut s = Setup::new("");
    s.rx.start().unwrap();
    // A sender set to interleave 64: reassembly must hold two groups of
    // 64 blocks of 356 KiB (45 MiB), more than one of the default 4
    // transfers' share of 96 MiB. Its descriptors alone are enough.
    let digest = blake3::hash(b"a large transfer never sent in full");
    let fec = FecParams::new(256, 64, 1424, 64).unwrap();
    let desc = TransferDescriptor::new(
        TransferId::from_digest(&digest),
        BundleName::sanitise("wide.weir"),
        64 << 20,
        digest,
        fec,
    )
    .unwrap();
    let mut c = Chunker::new(
        desc,
        std::io::Cursor::new(Vec::<u8>::new()),
        ChunkerConfig::default(),
    );
    let mut link = LinkEncoder::new(1, Integrity::Crc32c);
    let mut grams = Vec::new();
    for _ in 0..2 {
        let mut out = Vec::new();
        c.poll_transmit(&mut link, &mut out).unwrap().unwrap();
        grams.push(out);
    }
    blast(s.addr, &grams);
    let line = "weir_receiver_transfers_refused_total{reason=\"memory\"}";
    let mut text = String::new();
    for _ in 0..50 {
        text = s.rx.scrape().unwrap();
        if text.contains(line) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(metric(&text, line), 1.0, "told once: {text}");
    let log = s.rx.log_text();
    assert_eq!(log.matches("raise limits.memory").count(), 1, "{log}");
    assert!(log.contains("wide.weir"), "{log}");
}

/// A small tmpfs, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: PathBuf, size: &str) -> Option<Self> {
        std::fs::create_dir_all(&at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "weir-test"])
            .arg(&at)
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Self(at))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes `path` until the filesystem is full; returns the bytes written.
fn fill_up(path: &Path) -> u64 {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![3u8; 64 << 10];
    let mut n = 0u64;
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(k) => n += k as u64,
            Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    n
}

/// Every file of `dir` with its bytes, inode and modification time.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>, u64, std::time::SystemTime)> {
    use std::os::unix::fs::MetadataExt;
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
                m.ino(),
                m.modified().unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn a_full_disk_keeps_the_transfer_pending_and_it_completes_once_space_returns() {
    let mut s = Setup::new("");
    // The spool (only: the log stays outside) on its own 24 MiB
    // filesystem (needs root, as CI has).
    let rx_dir = s.dir.path().join("rx");
    let Some(fs) = Tmpfs::mount(rx_dir.join("rx-spool"), "24m") else {
        panic!("mounting a tmpfs failed: this test needs root (CI runs as root)");
    };
    s.reconfigure(&rx_dir, "", "");
    s.rx.start().unwrap();
    // Two bundles published before the disk fills.
    for (name, seed) in [("first", 13), ("second", 14)] {
        let (_, b) = s.bundle(name, 512, seed);
        blast(s.addr, &frames(&b, &format!("{name}.weir"), 1, seed));
        let staged = s.rx.spool.join("staging").join(format!("{name}_1.weir"));
        wait_for(name, Duration::from_secs(30), || staged.exists()).unwrap();
    }
    let published = snapshot(&s.rx.spool.join("staging"));
    assert_eq!(published.len(), 4, "two bundles and their receipts");
    // Leave about 8 MiB free for a 12 MiB bundle.
    let filler = fs.0.join("filler");
    std::fs::write(&filler, vec![1u8; 15 << 20]).unwrap();
    let (path, bytes) = s.bundle("app", 12 * 1024, 11);
    let sender = s.send_in_background(
        "100Mbit",
        2,
        path,
        &[("WEIR_SENDER_TRANSFER__PASS_PAUSE", "3s")],
    );
    let rx = &mut s.rx;
    wait_for("the disk-full error", Duration::from_secs(30), || {
        rx.log_text().contains("disk full")
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", rx.log_text()));
    // Then not a byte free: checkpoints, reports and receipts fail too.
    let rest = fs.0.join("rest");
    let took = fill_up(&rest);
    // The first pass ends with blocks that never reached the disk.
    wait_for(
        "the transfer to be re-opened",
        Duration::from_secs(30),
        || rx.log_text().contains("blocks could not be stored"),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", rx.log_text()));
    assert!(
        snapshot(&rx.spool.join("staging")) == published,
        "staging/ changed while the disk was full ({took} bytes were still free when it was filled up)"
    );
    std::fs::remove_file(&filler).unwrap();
    std::fs::remove_file(&rest).unwrap();
    let staged = rx.spool.join("staging").join("app_1.weir");
    wait_for("the bundle", Duration::from_secs(60), || staged.exists())
        .unwrap_or_else(|e| panic!("{e}\n{}", rx.log_text()));
    assert!(std::fs::read(&staged).unwrap() == bytes, "content differs");
    let out = sender.join().unwrap();
    assert!(out.status.success());
    // The bundles published before are byte for byte what they were, in
    // the same files.
    let now = snapshot(&rx.spool.join("staging"));
    let before: Vec<_> = now
        .iter()
        .filter(|(name, ..)| !name.starts_with("app_1."))
        .cloned()
        .collect();
    assert!(before == published, "a published bundle changed");
    assert_eq!(now.len(), 6);
    std::thread::sleep(Duration::from_millis(600));
    let text = rx.scrape().unwrap();
    assert!(metric(&text, "weir_receiver_disk_errors_total") > 0.0);
    assert_eq!(rx.stop().unwrap().code(), Some(0));
    drop(fs);
}

/// `net.core.rmem_max` raised to at least a size, restored on drop (needs
/// root, as CI has).
struct RmemAtLeast(Option<String>);

impl RmemAtLeast {
    const PATH: &str = "/proc/sys/net/core/rmem_max";

    fn raise(bytes: u64) -> Self {
        let old = std::fs::read_to_string(Self::PATH).unwrap();
        if old.trim().parse::<u64>().unwrap() >= bytes {
            return Self(None);
        }
        std::fs::write(Self::PATH, bytes.to_string())
            .unwrap_or_else(|e| panic!("raising {}: {e} (this test needs root)", Self::PATH));
        Self(Some(old))
    }
}

impl Drop for RmemAtLeast {
    fn drop(&mut self) {
        if let Some(old) = &self.0 {
            let _ = std::fs::write(Self::PATH, old.trim());
        }
    }
}

/// An ext4 filesystem in a file, loop-mounted, that can be frozen (every
/// write to it waits until it is thawed): a disk that stops for a while.
/// Thawed and unmounted on drop, and by a watchdog process once this test
/// process is gone, should it be killed while the filesystem is frozen
/// (drop never runs then, and whatever touched the mount would hang).
struct FreezableFs(PathBuf);

impl FreezableFs {
    fn mount(image: &Path, at: PathBuf, size_mib: u64) -> Option<Self> {
        std::fs::create_dir_all(&at).unwrap();
        let f = std::fs::File::create(image).unwrap();
        f.set_len(size_mib << 20).unwrap();
        let run = |cmd: &mut Command| cmd.status().is_ok_and(|s| s.success());
        let ok = run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(image))
            && run(Command::new("mount")
                .args(["-o", "loop"])
                .arg(image)
                .arg(&at));
        if !ok {
            return None;
        }
        // In its own process group, so that killing the tests' group
        // leaves it to clean up. Done already, on a normal end: harmless.
        // Never waited for: it outlives this process, and ends only after
        // it, so it never lingers as a zombie of it.
        let cleanup = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; \
             fsfreeze -u '{at}' 2>/dev/null; umount -l '{at}' 2>/dev/null",
            pid = std::process::id(),
            at = at.display(),
        );
        #[allow(clippy::zombie_processes)]
        Command::new("sh")
            .args(["-c", &cleanup])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        Some(Self(at))
    }

    fn freeze(&self, frozen: bool) {
        let flag = if frozen { "-f" } else { "-u" };
        let ok = Command::new("fsfreeze")
            .arg(flag)
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "fsfreeze {flag} failed");
    }
}

impl Drop for FreezableFs {
    fn drop(&mut self) {
        // Thawed already unless the test failed midway.
        let _ = Command::new("fsfreeze")
            .arg("-u")
            .arg(&self.0)
            .stderr(Stdio::null())
            .status();
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Sends a bundle of `kib` KiB at `rate` to a receiver (asking for a
/// socket buffer of `receive_buffer`) whose spool disk stops for `stop`
/// once the transfer has begun; checks that the bundle still arrives whole
/// and returns the receiver's log and its metrics.
fn send_while_the_disk_stops(
    rate: &str,
    kib: u64,
    stop: Duration,
    receive_buffer: &str,
) -> (String, String) {
    let mut s = Setup::new("");
    // The spool (only) on a filesystem that can be frozen; the log stays
    // outside it. Needs root, as CI has.
    let rx_dir = s.dir.path().join("rx");
    let Some(fs) = FreezableFs::mount(&s.dir.path().join("disk.img"), rx_dir.join("rx-spool"), 256)
    else {
        panic!(
            "making a loop-mounted ext4 failed: this test needs root and loop devices (CI has both)"
        );
    };
    // A small write queue: the receive loop waits soon after the disk stops.
    s.reconfigure(
        &rx_dir,
        &format!("receive_buffer = \"{receive_buffer}\""),
        "write_queue = \"1MiB\"\n",
    );
    s.rx.start().unwrap();
    let (path, bytes) = s.bundle("stalled", kib, 12);
    // Blocks complete one after another, not a group at a time: the
    // receiver wants the disk all along.
    let sender = s.send_in_background(
        rate,
        3,
        path,
        &[
            ("WEIR_SENDER_TRANSFER__PASS_PAUSE", "1s"),
            ("WEIR_SENDER_FEC__INTERLEAVE", "1"),
        ],
    );
    let rx = &mut s.rx;
    let incoming = rx.spool.join("incoming");
    wait_for("the partial file", Duration::from_secs(30), || {
        std::fs::read_dir(&incoming)
            .expect("listing incoming/")
            .any(|e| {
                e.expect("listing incoming/")
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".part")
            })
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", rx.log_text()));
    fs.freeze(true);
    std::thread::sleep(stop);
    fs.freeze(false);
    let staged = rx.spool.join("staging").join("stalled_1.weir");
    wait_for("the bundle", Duration::from_secs(60), || staged.exists())
        .unwrap_or_else(|e| panic!("{e}\n{}", rx.log_text()));
    assert!(std::fs::read(&staged).unwrap() == bytes, "content differs");
    let out = sender.join().unwrap();
    assert!(out.status.success());
    std::thread::sleep(Duration::from_millis(1200));
    let text = rx.scrape().unwrap();

    assert_eq!(rx.stop().unwrap().code(), Some(0));
    let log = rx.log_text();
    drop(fs);
    (log, text)
}

#[test]
fn a_disk_that_stops_is_named_as_the_cause_of_the_drops_and_a_later_pass_completes() {
    // 48 MiB at 400 Mbit/s: the disk stops for most of the first pass, far
    // longer than the socket buffer holds (75 MB arrive meanwhile at the
    // rate; 256 KiB of buffer overflow within 40 ms even at a tenth of it,
    // as a sender slowed by a loaded machine may send).
    let (log, metrics) =
        send_while_the_disk_stops("400Mbit", 48 * 1024, Duration::from_millis(1500), "256KiB");
    let stalled = metric(&metrics, "weir_receiver_receive_stall_seconds_total");
    assert!(stalled > 0.0, "the loop never waited: {log}");
    assert!(
        metric(&metrics, "weir_receiver_kernel_drops_total") > 0.0,
        "{metrics}"
    );
    assert!(
        log.contains("the kernel dropped datagrams while receiving waited for the spool disk"),
        "the drops are put down to the disk: {log}"
    );
    assert!(log.contains("link.rate"), "the remedy is named: {log}");
}

#[test]
fn a_short_disk_stop_the_socket_buffer_absorbs_is_told_as_a_wait_without_loss() {
    // A socket buffer of 16 MiB (rmem_max raised to allow it) and 20
    // Mbit/s: a 1.5 s stop brings 3.75 MB, a quarter of what the buffer
    // holds, so even a receive loop slowed by a loaded machine loses
    // nothing. Blocks (365 KB) complete every 146 ms, so the 1 MiB write
    // queue is full within half a second and the loop then waits for
    // about a second.
    let _rmem = RmemAtLeast::raise(16 << 20);
    let (log, metrics) =
        send_while_the_disk_stops("20Mbit", 6 * 1024, Duration::from_millis(1500), "16MiB");
    assert!(
        log.contains(&format!("receive_buffer={}", 16 << 20)),
        "the kernel granted less: {log}"
    );
    let stalled = metric(&metrics, "weir_receiver_receive_stall_seconds_total");
    assert!(stalled > 0.0, "the loop never waited: {log}");
    assert_eq!(
        metric(&metrics, "weir_receiver_kernel_drops_total"),
        0.0,
        "{log}"
    );
    assert!(
        log.contains("receiving waited for the spool disk") && log.contains("nothing was lost"),
        "the wait is told: {log}"
    );
    assert!(!log.contains("the kernel dropped datagrams"), "{log}");
}

// Regression: after a crash between linking a bundle into staging/ and
// removing its partial file, a stale, incomplete state was resumed, and
// the next frames of that transfer (here forged ones, with valid CRCs)
// were written into the very inode of the published bundle.
#[test]
fn a_stale_state_of_a_published_bundle_is_never_written_into() {
    let mut s = Setup::new("");
    s.rx.start().unwrap();
    let (_, bytes) = s.bundle("app", 1024, 23);
    blast(s.addr, &frames(&bytes, "app.weir", 1, 1));
    assert!(s.wait_staged("app_1.weir", 30) == bytes);
    s.rx.kill().unwrap();
    let d = describe(&bytes, "app.weir");
    let incoming = s.rx.spool.join("incoming");
    let _ = std::fs::remove_file(incoming.join(format!("{}.part", d.transfer)));
    std::fs::hard_link(
        s.rx.spool.join("staging/app_1.weir"),
        incoming.join(format!("{}.part", d.transfer)),
    )
    .unwrap();
    // An older checkpoint: nothing on record yet.
    std::fs::write(
        incoming.join(format!("{}.state", d.transfer)),
        serde_json::to_vec(&weir_protocol::TransferState::new(d.clone())).unwrap(),
    )
    .unwrap();
    // (The kill may have come before the publisher wrote it.)
    let _ = std::fs::remove_file(incoming.join("finished"));
    s.rx.start().unwrap();
    let forged: Vec<u8> = bytes.iter().map(|b| b ^ 0x55).collect();
    blast(s.addr, &frames_as(d, &forged, 1, 2));
    std::thread::sleep(Duration::from_millis(800));
    assert!(
        s.staged("app_1.weir").unwrap() == bytes,
        "published bundle changed"
    );
    assert!(s.rx.log_text().contains("already published elsewhere"));
}

// Regression: a crash after the bundle was linked into staging/ but before
// its partial file was removed left `incoming/<id>.part` as the very inode
// of the published bundle; a later descriptor of the same transfer used to
// truncate that file in place, zeroing the published bundle.
#[test]
fn a_crash_right_after_publishing_never_damages_the_published_bundle() {
    // One transfer at a time, and another partial transfer on disk, so the
    // complete one must not need room to be settled.
    let mut s = Setup::new("transfers = 1\n");
    s.rx.start().unwrap();
    let (_, bytes) = s.bundle("app", 1024, 21);
    blast(s.addr, &frames(&bytes, "app.weir", 1, 1));
    let staged = s.wait_staged("app_1.weir", 30);
    assert!(staged == bytes);
    s.rx.kill().unwrap();
    // Recreate what the crash leaves: the partial file linked to the
    // published one, its complete state, and no record of it finishing.
    let d = describe(&bytes, "app.weir");
    let incoming = s.rx.spool.join("incoming");
    let part = incoming.join(format!("{}.part", d.transfer));
    // (The kill may have come before the publisher removed its own link.)
    let _ = std::fs::remove_file(&part);
    std::fs::hard_link(s.rx.spool.join("staging/app_1.weir"), &part).unwrap();
    let mut state = weir_protocol::TransferState::new(d.clone());
    for b in 0..d.block_count {
        state.set_done(b);
    }
    std::fs::write(
        incoming.join(format!("{}.state", d.transfer)),
        serde_json::to_vec(&state).unwrap(),
    )
    .unwrap();
    // (The kill may have come before the publisher wrote it.)
    let _ = std::fs::remove_file(incoming.join("finished"));
    let (_, other) = s.bundle("other", 600, 22);
    let o = describe(&other, "other.weir");
    std::fs::write(
        incoming.join(format!("{}.part", o.transfer)),
        vec![0u8; other.len()],
    )
    .unwrap();
    std::fs::write(
        incoming.join(format!("{}.state", o.transfer)),
        serde_json::to_vec(&weir_protocol::TransferState::new(o)).unwrap(),
    )
    .unwrap();
    s.rx.start().unwrap();
    // The restarted receiver settles it as a duplicate...
    wait_for("the duplicate to settle", Duration::from_secs(20), || {
        s.rx.log_text().contains("duplicate of a published bundle")
    })
    .unwrap();
    // ...and the sender's next pass changes nothing.
    blast(s.addr, &frames(&bytes, "app.weir", 2, 2));
    std::thread::sleep(Duration::from_millis(500));
    assert!(s.staged("app_1.weir").unwrap() == bytes);
    assert_eq!(s.rx.files("staging").len(), 2);
    assert!(!part.exists());
}

#[test]
fn systemd_hears_ready_status_watchdog_and_stopping_and_status_has_json() {
    let mut s = Setup::new("");
    let mut notify =
        weir_tests::daemons::NotifySocket::bind(&s.dir.path().join("notify.sock")).unwrap();
    let mut child = Command::new(weir_tests::bin::path("weir-receiver"))
        .args(["run", "--config"])
        .arg(&s.rx.config)
        .env("NOTIFY_SOCKET", &notify.path)
        .env("WATCHDOG_USEC", "400000")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    notify
        .wait_for(
            &["READY=1", "STATUS=link", "WATCHDOG=1"],
            Duration::from_secs(20),
        )
        .unwrap();
    assert!(
        notify.messages.contains("transfer(s) in flight"),
        "{}",
        notify.messages
    );
    // `status --json` for scripts.
    let out = Command::new(weir_tests::bin::path("weir-receiver"))
        .args(["status", "--json", "--config"])
        .arg(&s.rx.config)
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["pid"].as_u64(), Some(u64::from(child.id())));
    assert_eq!(v["link"], "waiting");
    // SIGTERM: STOPPING=1, exit 0.
    let drain = notify.drain_until("STOPPING=1", Duration::from_secs(20));
    assert_eq!(
        weir_tests::daemons::terminate(&mut child).unwrap().code(),
        Some(0)
    );
    assert!(drain.join().unwrap(), "STOPPING=1 on SIGTERM");
    s.rx.child = None;
}

#[test]
fn a_key_revoked_while_the_daemon_runs_counts_no_more() {
    let mut s = Setup::new("");
    s.rx.start().unwrap();
    let (first, bytes) = s.bundle("app", 64, 31);
    s.send("200Mbit", 1, &[&first]);
    assert!(s.wait_staged("app_1.weir", 30) == bytes);
    let out = Command::new(weir_tests::bin::path("weir-receiver"))
        .args(["trust", "revoke", "--trust"])
        .arg(&s.trust)
        .arg("builder")
        .output()
        .unwrap();
    assert!(out.status.success());
    // No restart: the next bundle from that key is refused.
    let (_, second) = s.bundle("tool", 64, 32);
    blast(s.addr, &frames(&second, "tool.weir", 1, 5));
    let id = transfer_id(&second);
    let reason =
        s.rx.spool
            .join("quarantine")
            .join(format!("{id}.reason.json"));
    wait_for("the rejection", Duration::from_secs(30), || reason.exists())
        .unwrap_or_else(|e| panic!("{e}\n{}", s.rx.log_text()));
    let text = std::fs::read_to_string(&reason).unwrap();
    assert!(text.contains("no_trusted_signature"), "{text}");
    assert!(s.rx.log_text().contains("trust store reloaded"));
    assert!(s.staged("tool_1.weir").is_none());
}

#[test]
fn a_receive_buffer_the_kernel_caps_is_told_with_the_sysctl_that_raises_it() {
    let rmem_max: u64 = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(rmem_max < 1 << 30, "rmem_max is {rmem_max}: nothing to cap");
    // 1 GiB: more than the kernel grants.
    let mut s = Setup::with_link("receive_buffer = \"1GiB\"", "");
    s.rx.start().unwrap();
    let log = s.rx.log_text();
    assert!(
        log.contains("socket receive buffer capped by the kernel")
            && log.contains("sysctl -w net.core.rmem_max=1073741824"),
        "{log}"
    );
    s.rx.stop().unwrap();
    // 128 KiB, and a rate whose quarter second fits in it: no hint.
    let mut s = Setup::with_link("receive_buffer = \"128KiB\"\nrate = \"1Mbit\"", "");
    s.rx.start().unwrap();
    let log = s.rx.log_text();
    assert!(log.contains("listening"), "{log}");
    assert!(!log.contains("capped by the kernel"), "{log}");
}

#[test]
fn a_key_revoked_while_its_bundle_arrives_is_refused_at_publication() {
    let mut s = Setup::new("");
    s.rx.start().unwrap();
    // 20 MiB: 58 blocks in 4 interleaved groups, so the bundle is
    // verified while it arrives, long before its last block.
    let (_, bytes) = s.bundle("app", 20 * 1024, 34);
    let all = frames(&bytes, "app.weir", 1, 9);
    let (first, rest) = all.split_at(all.len() / 2);
    blast(s.addr, first);
    // Blocks on record: the transfer began, and its verifier holds the
    // trust store as it was then, with the key trusted.
    let incoming = s.rx.spool.join("incoming");
    wait_for("blocks on record", Duration::from_secs(30), || {
        blocks_on_record(&incoming)
            .iter()
            .any(|(_, done)| *done >= 1)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", s.rx.log_text()));
    let out = Command::new(weir_tests::bin::path("weir-receiver"))
        .args(["trust", "revoke", "--trust"])
        .arg(&s.trust)
        .arg("builder")
        .output()
        .unwrap();
    assert!(out.status.success());
    // (The store is re-read when it is next needed: at publication.)
    blast(s.addr, rest);
    let id = transfer_id(&bytes);
    let reason =
        s.rx.spool
            .join("quarantine")
            .join(format!("{id}.reason.json"));
    wait_for("the rejection", Duration::from_secs(30), || reason.exists())
        .unwrap_or_else(|e| panic!("{e}\n{}", s.rx.log_text()));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&reason).unwrap()).unwrap();
    assert_eq!(r["reasons"][0]["code"], "no_trusted_signature", "{r}");
    // Refused by the check at publication, not by the verifier, which
    // had found the key trusted.
    assert!(
        r["reasons"][0]["message"]
            .as_str()
            .unwrap()
            .contains("revoked while it was being received"),
        "{r}"
    );
    assert!(s.rx.files("staging").is_empty());
    let log = s.rx.log_text();
    assert!(log.contains("trust store reloaded"), "{log}");
    assert!(
        log.contains("expired or was revoked while it arrived"),
        "{log}"
    );
}

#[test]
fn an_empty_transfer_with_a_false_digest_is_dropped_not_received_in_a_loop() {
    // Regression (found by fuzzing the simulator, which mirrors this
    // daemon): a 0-byte descriptor whose digest is another file's
    // completed at once, failed its digest, and was started afresh, which
    // completed it at once again, in a loop.
    let mut s = Setup::new("");
    s.rx.start().unwrap();
    let other = weir_protocol::digest::digest(b"not empty");
    let d = weir_protocol::TransferDescriptor::new(
        weir_protocol::TransferId::from_digest(&other),
        weir_protocol::BundleName::parse("empty.weir").unwrap(),
        0,
        other,
        describe(b"x", "x.weir").fec,
    )
    .unwrap();
    let grams = frames_as(d, b"", 1, 7);
    blast(s.addr, &grams);
    wait_for("the verdict", Duration::from_secs(10), || {
        s.rx.log_text().contains("its descriptor is false")
    })
    .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let log = s.rx.log_text();
    let judged = log.matches("does not match its transfer digest").count()
        + log.matches("its descriptor is false").count();
    // Once per descriptor frame at most, not once per loop turn.
    assert!(judged <= 2 * grams.len(), "judged {judged} times: {log}");
    assert!(s.rx.files("staging").is_empty());
    assert_eq!(s.rx.stop().unwrap().code(), Some(0));
}
