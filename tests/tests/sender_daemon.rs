//! The real `weir-sender` binary over real UDP on 127.0.0.1, received by
//! the protocol core: one-shot sends, the daemon's outbox, heartbeats, and
//! restarts after SIGTERM and SIGKILL.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use weir_protocol::{FrameKind, Reassembler, ReassemblerConfig};
use weir_tests::bundles::{FILES, Fixture, Raw};
use weir_tests::udp::{Received, Seen, Tap, receive, recording_relay};

/// A sender spool, config, keys and trust store in a temporary directory,
/// aimed at a receiving socket.
struct Setup {
    fx: Fixture,
    dir: tempfile::TempDir,
    config: PathBuf,
    rx: Option<UdpSocket>,
}

impl Setup {
    fn new(rate: &str, passes: u32) -> Self {
        let fx = Fixture::new();
        let dir = tempfile::tempdir().unwrap();
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let trust = dir.path().join("trust.toml");
        std::fs::write(&trust, fx.trust.to_toml()).unwrap();
        let config = dir.path().join("sender.toml");
        std::fs::write(
            &config,
            format!(
                r#"
[link]
destination = "{dest}"
bind = "127.0.0.1:0"
rate = "{rate}"

[transfer]
passes = {passes}
pass_pause = "200ms"
heartbeat_interval = "100ms"
settle_time = "0s"

[spool]
root = "{spool}"
trust = "{trust}"
"#,
                dest = rx.local_addr().unwrap(),
                spool = dir.path().join("spool").display(),
                trust = trust.display(),
            ),
        )
        .unwrap();
        Self {
            fx,
            dir,
            config,
            rx: Some(rx),
        }
    }

    fn spool(&self, sub: &str) -> PathBuf {
        self.dir.path().join("spool").join(sub)
    }

    /// A signed bundle of `mib` MiB of random data at `out`.
    fn bundle(&self, name: &str, mib: u64, out: &Path) -> Vec<u8> {
        self.fx.signed_bundle(
            self.dir.path(),
            name,
            mib << 20,
            mib + name.len() as u64,
            out,
        )
    }

    /// Starts receiving `want` transfers into `dir/rx`.
    fn receiver(
        &mut self,
        want: usize,
        secs: u64,
    ) -> JoinHandle<(Vec<Received>, weir_protocol::Stats)> {
        let socket = self.rx.take().unwrap();
        let dir = self.dir.path().join("rx");
        std::thread::spawn(move || {
            let mut r = Reassembler::new(ReassemblerConfig::default());
            let got = receive(
                &socket,
                &mut r,
                &dir,
                want,
                Instant::now() + Duration::from_secs(secs),
            )
            .unwrap();
            (got, r.stats())
        })
    }

    /// Puts a [`recording_relay`] between the sender and the receiving
    /// socket (rewrites the configuration: call before starting the
    /// sender). It stops once nothing arrived for `idle`, or after `secs`.
    fn tap(&mut self, idle: Duration, secs: u64) -> Tap {
        let relay = UdpSocket::bind("127.0.0.1:0").unwrap();
        let rx_addr = self.rx.as_ref().unwrap().local_addr().unwrap();
        let text = std::fs::read_to_string(&self.config).unwrap().replace(
            &rx_addr.to_string(),
            &relay.local_addr().unwrap().to_string(),
        );
        std::fs::write(&self.config, text).unwrap();
        recording_relay(
            relay,
            rx_addr,
            idle,
            Instant::now() + Duration::from_secs(secs),
        )
    }

    /// `weir-sender send` of one bundle; it must exit 0.
    fn send_one_shot(&self, bundle: &Path) {
        let out = Command::new(weir_tests::bin::path("weir-sender"))
            .args(["send", "--config"])
            .arg(&self.config)
            .arg(bundle)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn daemon(&self) -> Child {
        Command::new(weir_tests::bin::path("weir-sender"))
            .args(["run", "--config"])
            .arg(&self.config)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }
}

fn published(got: &[Received]) -> Vec<(String, Vec<u8>)> {
    got.iter()
        .filter_map(|r| match r {
            Received::Published { path, descriptor } => {
                Some((descriptor.name.to_string(), std::fs::read(path).unwrap()))
            }
            _ => None,
        })
        .collect()
}

fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(Instant::now() < end, "sender did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn one_shot_send_delivers_a_bundle_bit_identical() {
    let mut s = Setup::new("400Mbit", 2);
    let path = s.dir.path().join("app.weir");
    let bytes = s.bundle("app", 8, &path);
    let rx = s.receiver(1, 60);
    s.send_one_shot(&path);
    let (got, stats) = rx.join().unwrap();
    let p = published(&got);
    assert_eq!(p.len(), 1, "{got:?}");
    assert!(p[0].1 == bytes, "content differs");
    assert!(stats.heartbeats > 0);
}

#[test]
fn the_daemon_refuses_bad_bundles_sends_good_ones_and_beats_when_idle() {
    let mut s = Setup::new("400Mbit", 1);
    let mut child = s.daemon();
    // A bundle that fails its check, and one that passes.
    let outbox = s.spool("outbox");
    wait_until("the spool", 10, || outbox.exists());
    std::fs::write(s.dir.path().join("bad.weir"), b"not a bundle").unwrap();
    std::fs::rename(s.dir.path().join("bad.weir"), outbox.join("bad.weir")).unwrap();
    // A correctly signed bundle carrying a PAX record with an extended
    // attribute and a 1 MiB comment: refused on the high side too, with
    // a bounded report.
    let m = s.fx.manifest(FILES);
    let sig = s.fx.sign(&s.fx.key, &m, &m.to_bytes());
    let comment = vec![b'c'; 1 << 20];
    let hostile = Raw::new()
        .file("manifest.json", &m.to_bytes(), 0o644)
        .signature(s.fx.key.id, &sig)
        .pax(&[
            ("SCHILY.xattr.security.capability", b"\x01\x00\x00\x02"),
            ("comment", &comment),
        ])
        .payload(FILES)
        .finish();
    std::fs::write(s.dir.path().join("pax.weir"), &hostile).unwrap();
    std::fs::rename(s.dir.path().join("pax.weir"), outbox.join("pax.weir")).unwrap();
    let good_tmp = s.dir.path().join("good.weir");
    let bytes = s.bundle("good", 2, &good_tmp);
    let rx = s.receiver(1, 60);
    std::fs::rename(&good_tmp, outbox.join("good.weir")).unwrap();
    let (got, stats) = rx.join().unwrap();
    let p = published(&got);
    assert_eq!(p.len(), 1, "{got:?}");
    assert!(p[0].1 == bytes);
    wait_until("sent/good.weir", 20, || {
        s.spool("sent").join("good.weir").exists()
    });
    let reason: serde_json::Value = serde_json::from_slice(
        &std::fs::read(s.spool("failed").join("bad.weir.reason.json")).unwrap(),
    )
    .unwrap();
    assert!(reason["reasons"][0]["reason"].is_string(), "{reason}");
    let pax = std::fs::read(s.spool("failed").join("pax.weir.reason.json")).unwrap();
    assert!(pax.len() < 4096, "{} bytes of reason", pax.len());
    let pax: serde_json::Value = serde_json::from_slice(&pax).unwrap();
    assert_eq!(pax["reasons"][0]["reason"], "non_canonical", "{pax}");
    assert_eq!(pax["reasons"][0]["field"], "PAX extended header", "{pax}");
    let journal = std::fs::read_to_string(s.spool("journal.jsonl")).unwrap();
    assert!(journal.contains("\"bundle\":\"good.weir\""), "{journal}");
    assert!(
        stats.heartbeats >= 3,
        "heartbeats while idle and busy: {}",
        stats.heartbeats
    );
    assert!(terminate(&mut child).success());
}

/// The pass the sender's saved in-flight state names for its one
/// transfer in flight.
fn inflight_pass(s: &Setup) -> u64 {
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.spool("state/inflight.json")).unwrap()).unwrap();
    state[0]["pass"]
        .as_u64()
        .unwrap_or_else(|| panic!("no pass in {state}"))
}

#[test]
fn sigterm_and_sigkill_mid_transfer_lose_nothing() {
    // Slow enough that the signals land mid-transfer: 24 MiB at 100 Mbit/s,
    // about 2.5 s a pass.
    let mut s = Setup::new("100Mbit", 2);
    let tmp = s.dir.path().join("big.weir");
    let bytes = s.bundle("big", 24, &tmp);
    let id = id_of(&bytes);
    let tap = s.tap(Duration::from_secs(5), 120);
    let outbox = s.spool("outbox");
    let mut child = s.daemon();
    wait_until("the spool", 10, || outbox.exists());
    let rx = s.receiver(1, 120);
    std::fs::rename(&tmp, outbox.join("big.weir")).unwrap();
    // SIGTERM in the second pass: exits 0, the bundle stays in the
    // outbox, and the pass is saved.
    wait_until("the end of the first pass", 30, || {
        tap.any(|f| f.header.transfer == id && f.pass_ended == Some(0))
    });
    let pass_0_ended = Instant::now();
    wait_until("the second pass", 30, || {
        tap.any(|f| f.header.transfer == id && is_shard(f) && f.at > pass_0_ended)
    });
    assert!(terminate(&mut child).success());
    assert!(outbox.join("big.weir").exists());
    let state = std::fs::read_to_string(s.spool("state/inflight.json")).unwrap();
    assert!(state.contains("big.weir"), "{state}");
    assert_eq!(inflight_pass(&s), 1, "{state}");
    // Restart, then SIGKILL part way through the resumed pass.
    let restarted = Instant::now();
    let mut child = s.daemon();
    wait_until("the resumed pass", 30, || {
        tap.any(|f| f.header.transfer == id && is_shard(f) && f.at > restarted)
    });
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        outbox.join("big.weir").exists(),
        "a killed sender keeps the bundle"
    );
    // Restart again: it is sent to the end, and the receiver, which kept
    // everything from before, completes it.
    let mut child = s.daemon();
    let (got, _) = rx.join().unwrap();
    let p = published(&got);
    assert_eq!(p.len(), 1, "{got:?}");
    assert!(p[0].1 == bytes);
    wait_until("sent/big.weir", 60, || {
        s.spool("sent").join("big.weir").exists()
    });
    assert!(terminate(&mut child).success());
    // After the first restart, only the second pass went out again, under
    // the same transfer id: no pass 0 ended twice, and pass 1 ended.
    let seen = tap.finish().unwrap();
    let ends_after: Vec<u32> = seen
        .iter()
        .filter(|f| f.at >= restarted && f.header.transfer == id)
        .filter_map(|f| f.pass_ended)
        .collect();
    assert!(
        !ends_after.is_empty() && ends_after.iter().all(|p| *p == 1),
        "passes ended after the restart: {ends_after:?}"
    );
    let others: std::collections::BTreeSet<u64> = seen
        .iter()
        .map(|f| f.header.transfer)
        .filter(|t| *t != id && *t != 0)
        .collect();
    assert!(others.is_empty(), "other transfer ids: {others:?}");
}

#[test]
fn a_second_pass_fills_what_the_first_lost_over_a_lossy_link() {
    use weir_tests::link::{LinkProfile, LossyLink};
    for (passes, expect_complete) in [(1u32, false), (2, true)] {
        let mut s = Setup::new("300Mbit", passes);
        // Insert a 25%-loss proxy between sender and receiver.
        let proxy = UdpSocket::bind("127.0.0.1:0").unwrap();
        let proxy_addr = proxy.local_addr().unwrap();
        let rx_addr = s.rx.as_ref().unwrap().local_addr().unwrap();
        let text = std::fs::read_to_string(&s.config)
            .unwrap()
            .replace(&rx_addr.to_string(), &proxy_addr.to_string());
        std::fs::write(&s.config, text).unwrap();
        let p = std::thread::spawn(move || {
            let link = LossyLink::new(
                LinkProfile {
                    loss: 0.25,
                    ..LinkProfile::default()
                },
                25,
            );
            weir_tests::udp::lossy_proxy(&proxy, rx_addr, link, Duration::from_secs(2)).unwrap()
        });
        let path = s.dir.path().join("lossy.weir");
        let bytes = s.bundle("lossy", 6, &path);
        let rx = s.receiver(1, 8);
        s.send_one_shot(&path);
        let (got, stats) = rx.join().unwrap();
        p.join().unwrap();
        let published = published(&got);
        assert_eq!(
            !published.is_empty(),
            expect_complete,
            "passes {passes}: {got:?} {stats:?}"
        );
        assert!(
            stats.blocks_unrecovered_at_pass_end > 0,
            "25% loss must defeat one pass"
        );
        if expect_complete {
            assert!(published[0].1 == bytes);
        }
    }
}

#[test]
fn a_file_still_being_copied_in_is_not_taken() {
    let mut s = Setup::new("400Mbit", 1);
    let text = std::fs::read_to_string(&s.config)
        .unwrap()
        .replace("settle_time = \"0s\"", "settle_time = \"1s\"");
    std::fs::write(&s.config, text).unwrap();
    let src = s.dir.path().join("slow.weir");
    let bytes = s.bundle("slow", 3, &src);
    let mut child = s.daemon();
    let outbox = s.spool("outbox");
    wait_until("the spool", 10, || outbox.exists());
    let rx = s.receiver(1, 30);
    // Copy in place, slowly: a chunk every 300 ms (each pause shorter than
    // the settle time).
    {
        use std::io::Write;
        let mut f = std::fs::File::create(outbox.join("slow.weir")).unwrap();
        for chunk in bytes.chunks(bytes.len() / 8 + 1) {
            f.write_all(chunk).unwrap();
            f.flush().unwrap();
            std::thread::sleep(Duration::from_millis(300));
            assert!(
                std::fs::read_dir(s.spool("failed"))
                    .unwrap()
                    .next()
                    .is_none(),
                "a half-copied file was taken"
            );
        }
    }
    let (got, _) = rx.join().unwrap();
    let p = published(&got);
    assert_eq!(p.len(), 1, "{got:?}");
    assert!(p[0].1 == bytes);
    assert!(
        std::fs::read_dir(s.spool("failed"))
            .unwrap()
            .next()
            .is_none()
    );
    assert!(terminate(&mut child).success());
}

/// The transfer id the sender gives `bytes`.
fn id_of(bytes: &[u8]) -> u64 {
    weir_tests::rig::transfer_id(bytes).0
}

fn is_shard(f: &Seen) -> bool {
    matches!(f.header.kind, FrameKind::Data | FrameKind::Parity)
}

#[test]
fn an_urgent_bundle_overtakes_a_large_one_in_progress() {
    let mut s = Setup::new("200Mbit", 2);
    let big = s.dir.path().join("big.weir");
    let urgent = s.dir.path().join("hotfix.weir");
    let big_bytes = s.bundle("big", 40, &big);
    let urgent_bytes = s.bundle("hotfix", 1, &urgent);
    let (big_id, urgent_id) = (id_of(&big_bytes), id_of(&urgent_bytes));
    let tap = s.tap(Duration::from_secs(3), 90);
    let outbox = s.spool("outbox");
    let mut child = s.daemon();
    wait_until("the spool", 10, || outbox.exists());
    let rx = s.receiver(2, 60);
    std::fs::rename(&big, outbox.join("big.weir")).unwrap();
    wait_until("the big bundle's first shards", 30, || {
        tap.any(|f| f.header.transfer == big_id && is_shard(f))
    });
    std::fs::rename(&urgent, outbox.join("urgent").join("hotfix.weir")).unwrap();
    let dropped_in = Instant::now();
    let (got, _) = rx.join().unwrap();
    let p = published(&got);
    assert_eq!(p.len(), 2, "{got:?}");
    assert_eq!(p[0].0, "hotfix.weir", "the urgent bundle lands first");
    assert!(p[0].1 == urgent_bytes);
    assert!(p[1].1 == big_bytes);
    wait_until("both in sent/", 30, || {
        s.spool("sent").join("big.weir").exists() && s.spool("sent").join("hotfix.weir").exists()
    });
    assert!(terminate(&mut child).success());
    let seen = tap.finish().unwrap();

    // 40 MiB: 115 blocks in groups of 16 (interleave 16 at MTU 1500).
    let group = |f: &Seen| f.header.block / 16;
    let of = |id: u64| move |f: &&Seen| f.header.transfer == id && is_shard(f);
    // The big bundle was in progress: part of its first pass went out
    // before the urgent one was dropped in, not all of it.
    let before: Vec<&Seen> = seen
        .iter()
        .filter(|f| f.at < dropped_in)
        .filter(of(big_id))
        .collect();
    let blocks_before: std::collections::BTreeSet<u32> =
        before.iter().map(|f| f.header.block).collect();
    assert!(
        !blocks_before.is_empty() && blocks_before.len() < 115,
        "{} of 115 blocks of the big bundle were sent before the urgent one came",
        blocks_before.len()
    );
    // The urgent one went out within one block group: between its arrival
    // in the outbox and its first frame, the big bundle sent at most one
    // group (16 blocks of 320 shards: the producer checks for urgent
    // bundles between groups), and what the producer had queued already
    // (8 parcels of 8 batches of 16 datagrams at 200 Mbit/s).
    let first_urgent = seen
        .iter()
        .position(|f| f.header.transfer == urgent_id)
        .expect("no frame of the urgent bundle");
    let between = seen[..first_urgent]
        .iter()
        .filter(|f| f.at >= dropped_in)
        .filter(of(big_id))
        .count();
    let queued =
        8 * 8 * weir_sender::pacer::Pacer::batch_frames("200Mbit".parse().unwrap(), 1472, 64);
    assert!(
        between <= 16 * 320 + queued,
        "the big bundle sent {between} shards before the urgent one"
    );
    // Then the big bundle resumed its first pass where it had stopped,
    // with the next group, not from its start.
    let last_urgent = seen
        .iter()
        .rposition(|f| f.header.transfer == urgent_id)
        .unwrap();
    let stopped_at = seen[..first_urgent]
        .iter()
        .rfind(of(big_id))
        .map(group)
        .unwrap();
    let resumed_at = seen[last_urgent..]
        .iter()
        .find(of(big_id))
        .map(group)
        .unwrap();
    assert_eq!(
        resumed_at,
        stopped_at + 1,
        "the big bundle resumed at group {resumed_at}"
    );
    assert!(
        seen[first_urgent..last_urgent]
            .iter()
            .all(|f| f.header.transfer != big_id),
        "the big bundle went on while the urgent one was sent"
    );
}

#[test]
fn ready_status_watchdog_and_heartbeats_while_idle() {
    let mut s = Setup::new("100Mbit", 1);
    let mut notify =
        weir_tests::daemons::NotifySocket::bind(&s.dir.path().join("notify.sock")).unwrap();
    let tap = s.tap(Duration::from_secs(30), 60);
    let mut child = Command::new(weir_tests::bin::path("weir-sender"))
        .args(["run", "--config"])
        .arg(&s.config)
        .env("NOTIFY_SOCKET", &notify.path)
        .env("WATCHDOG_USEC", "200000")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    notify
        .wait_for(
            &["READY=1", "STATUS=", "WATCHDOG=1"],
            Duration::from_secs(10),
        )
        .unwrap();
    let drain = notify.drain_until("STOPPING=1", Duration::from_secs(60));
    // Idle, it keeps beating: five heartbeats, however long a loaded
    // machine takes to send them.
    let beats = || -> Vec<Seen> {
        tap.seen()
            .into_iter()
            .filter(|f| f.header.kind == FrameKind::Heartbeat)
            .collect()
    };
    wait_until("five heartbeats", 30, || {
        let mut n = 0;
        tap.any(|f| {
            n += usize::from(f.header.kind == FrameKind::Heartbeat);
            n >= 5
        })
    });
    assert!(terminate(&mut child).success());
    assert!(drain.join().unwrap(), "STOPPING=1 on SIGTERM");
    let beats = beats();
    for b in &beats {
        let h = b.heartbeat.expect("a heartbeat that does not decode");
        // What an idle sender says: nothing queued, nothing in flight, and
        // the interval it was configured with.
        assert_eq!(
            (h.queue_len, h.current_transfer, h.interval_ms),
            (0, 0, 100),
            "{h:?}"
        );
        assert_eq!(b.header.transfer, 0);
    }
    // One sender epoch, sequence numbers counting up.
    assert!(
        beats
            .windows(2)
            .all(|w| w[0].header.epoch == w[1].header.epoch && w[0].header.seq < w[1].header.seq),
        "{beats:?}"
    );
    // Beating at about the interval, not once in a while: the median gap
    // is under ten intervals, however loaded the machine.
    let mut gaps: Vec<Duration> = beats.windows(2).map(|w| w[1].at - w[0].at).collect();
    gaps.sort();
    let median = gaps[gaps.len() / 2];
    assert!(
        median < Duration::from_secs(1),
        "median gap {median:?}: {gaps:?}"
    );
}

#[test]
fn check_config_prints_the_effective_values_and_names_a_bad_key() {
    let s = Setup::new("100Mbit", 1);
    let bin = weir_tests::bin::path("weir-sender");
    let out = Command::new(&bin)
        .args(["run", "--check-config", "--config"])
        .arg(&s.config)
        .env("WEIR_SENDER_LINK__RATE", "250Mbit")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("rate = \"250Mbit\""),
        "environment override: {text}"
    );
    let out = Command::new(&bin)
        .args(["run", "--check-config", "--config"])
        .arg(&s.config)
        .env("WEIR_SENDER_TRANSFER__PASS_PAUSE", "soon")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("transfer.pass_pause"));
}

#[test]
fn the_carousel_serves_a_receiver_that_came_up_late() {
    let mut s = Setup::new("200Mbit", 1);
    let mut text = std::fs::read_to_string(&s.config).unwrap();
    text.push_str("\n[carousel]\nenabled = true\nbundles = 2\nshare = 0.5\n");
    std::fs::write(&s.config, text).unwrap();
    let tmp = s.dir.path().join("early.weir");
    let bytes = s.bundle("early", 4, &tmp);
    let outbox = s.spool("outbox");
    let mut child = s.daemon();
    wait_until("the spool", 10, || outbox.exists());
    std::fs::rename(&tmp, outbox.join("early.weir")).unwrap();
    // Its one pass goes out while nobody listens.
    wait_until("sent/early.weir", 30, || {
        s.spool("sent").join("early.weir").exists()
    });
    // Anything the kernel queued meanwhile is stale: throw it away.
    let socket = s.rx.as_ref().unwrap();
    socket.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 65536];
    while socket.recv(&mut buf).is_ok() {}
    socket.set_nonblocking(false).unwrap();
    // The receiver comes up now; only the carousel can bring the bundle.
    let rx = s.receiver(1, 30);
    let (got, _) = rx.join().unwrap();
    let p = published(&got);
    assert_eq!(p.len(), 1, "{got:?}");
    assert!(p[0].1 == bytes);
    assert!(terminate(&mut child).success());
}

/// Unset in the configuration, the interleave depth follows the shard size
/// (so the MTU): a group of blocks stays near 8 MiB, 16 blocks at MTU 1500
/// and 3 at 9000. A depth that is set is kept.
#[test]
fn the_check_picks_the_interleave_for_the_mtu() {
    let fx = Fixture::new();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.weir");
    fx.signed_bundle(dir.path(), "b", 12 << 20, 3, &path);
    let depth = |shard: u16, d: Option<u16>| {
        let checked = weir_sender::daemon::check(&path, &fx.trust, shard, (256, 64, d))
            .unwrap()
            .unwrap();
        checked.descriptor.fec.interleave()
    };
    assert_eq!(depth(1424, None), 16);
    assert_eq!(depth(8928, None), 3);
    assert_eq!(depth(8928, Some(16)), 16);
}
