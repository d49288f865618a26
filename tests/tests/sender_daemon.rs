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
use std::time::{Duration, Instant, SystemTime};

use weir_protocol::{Reassembler, ReassemblerConfig};
use weir_sender::bundle::create::{CreateRequest, create};
use weir_tests::bundles::{Fixture, write_random_file};
use weir_tests::udp::{Received, receive};

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
        let art = self.dir.path().join(format!("{name}.bin"));
        write_random_file(&art, mib, mib + name.len() as u64).unwrap();
        let req = CreateRequest {
            name: name.into(),
            version: "1".into(),
            labels: Default::default(),
            artifacts: vec![art],
            sboms: vec![],
            out: out.to_owned(),
        };
        create(&req, &self.fx.key, SystemTime::now()).unwrap();
        std::fs::read(out).unwrap()
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
    let out = Command::new(weir_tests::bin::path("weir-sender"))
        .args(["send", "--config"])
        .arg(&s.config)
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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
    let journal = std::fs::read_to_string(s.spool("journal.jsonl")).unwrap();
    assert!(journal.contains("\"bundle\":\"good.weir\""), "{journal}");
    assert!(
        stats.heartbeats >= 3,
        "heartbeats while idle and busy: {}",
        stats.heartbeats
    );
    assert!(terminate(&mut child).success());
}

#[test]
fn sigterm_and_sigkill_mid_transfer_lose_nothing() {
    // Slow enough that the signal lands mid-transfer: 24 MiB at 100 Mbit/s.
    let mut s = Setup::new("100Mbit", 2);
    let tmp = s.dir.path().join("big.weir");
    let bytes = s.bundle("big", 24, &tmp);
    let outbox = s.spool("outbox");
    let mut child = s.daemon();
    wait_until("the spool", 10, || outbox.exists());
    let rx = s.receiver(1, 120);
    std::fs::rename(&tmp, outbox.join("big.weir")).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    // SIGTERM: exits 0, the bundle stays in the outbox, the pass is saved.
    assert!(terminate(&mut child).success());
    assert!(outbox.join("big.weir").exists());
    let state = std::fs::read_to_string(s.spool("state/inflight.json")).unwrap();
    assert!(state.contains("big.weir"), "{state}");
    // Restart, then SIGKILL part way.
    let mut child = s.daemon();
    std::thread::sleep(Duration::from_millis(1000));
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
}
