//! The real `weir-receiver` (and `weir-sender`) binaries over real UDP on
//! 127.0.0.1, each test with its own spool: delivery, crashes, hostile
//! datagrams, tampered and incomplete transfers, metrics and status.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use weir_protocol::{
    BundleName, Chunker, ChunkerConfig, FecParams, Integrity, LinkEncoder, TransferDescriptor,
    TransferId,
};
use weir_sender::bundle::create::{CreateRequest, create};
use weir_tests::bundles::{Fixture, write_random_file};
use weir_tests::daemons::{ReceiverProc, free_udp_addr, sender_config, wait_for};

/// Keys, trust store and a receiver in a temporary directory.
struct Setup {
    fx: Fixture,
    dir: tempfile::TempDir,
    trust: PathBuf,
    rx: ReceiverProc,
    addr: SocketAddr,
}

impl Setup {
    fn new(limits: &str) -> Self {
        let fx = Fixture::new();
        let dir = tempfile::tempdir().unwrap();
        let trust = dir.path().join("trust.toml");
        std::fs::write(&trust, fx.trust.to_toml()).unwrap();
        let addr = free_udp_addr().unwrap();
        let rx = ReceiverProc::configure(
            &weir_tests::bin::path("weir-receiver"),
            dir.path(),
            addr,
            &trust,
            "",
            &format!("[limits]\ncheckpoint_interval = \"200ms\"\n{limits}"),
        )
        .unwrap();
        Self {
            fx,
            dir,
            trust,
            rx,
            addr,
        }
    }

    /// A signed bundle named `name` version 1 with `kib` KiB of random data.
    fn bundle(&self, name: &str, kib: u64, seed: u64) -> (PathBuf, Vec<u8>) {
        let art = self.dir.path().join(format!("{name}.bin"));
        write_random_kib(&art, kib, seed);
        let out = self.dir.path().join(format!("{name}.weir"));
        let req = CreateRequest {
            name: name.into(),
            version: "1".into(),
            labels: Default::default(),
            artifacts: vec![art],
            sboms: vec![],
            out: out.clone(),
        };
        create(&req, &self.fx.key, SystemTime::now()).unwrap();
        let bytes = std::fs::read(&out).unwrap();
        (out, bytes)
    }

    fn sender_config(&self, rate: &str, passes: u32) -> PathBuf {
        sender_config(self.dir.path(), self.addr, &self.trust, rate, passes, "").unwrap()
    }

    /// `weir-sender send` of some bundles; it must exit 0.
    fn send(&self, rate: &str, passes: u32, bundles: &[&Path]) {
        let out = Command::new(weir_tests::bin::path("weir-sender"))
            .args(["send", "--config"])
            .arg(self.sender_config(rate, passes))
            .args(bundles)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn staged(&self, file: &str) -> Option<Vec<u8>> {
        std::fs::read(self.rx.spool.join("staging").join(file)).ok()
    }

    fn wait_staged(&self, file: &str, secs: u64) -> Vec<u8> {
        let path = self.rx.spool.join("staging").join(file);
        if wait_for(file, Duration::from_secs(secs), || path.exists()).is_err() {
            panic!("{file} never reached staging/:\n{}", self.rx.log_text());
        }
        std::fs::read(path).unwrap()
    }
}

fn write_random_kib(path: &Path, kib: u64, seed: u64) {
    use rand::{RngCore, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut data = vec![0u8; (kib * 1024) as usize];
    rng.fill_bytes(&mut data);
    std::fs::write(path, data).unwrap();
}

/// Every frame of one pass over `bytes`, as the sender would make them.
fn frames(bytes: &[u8], name: &str, passes: u32, epoch: u64) -> Vec<Vec<u8>> {
    let hash = blake3::hash(bytes);
    let fec = FecParams::new(256, 64, 1432, 16)
        .unwrap()
        .fitted_to(bytes.len() as u64);
    let desc = TransferDescriptor::new(
        TransferId::from_hash(&hash),
        BundleName::sanitise(name),
        bytes.len() as u64,
        hash,
        fec,
    )
    .unwrap();
    let mut c = Chunker::new(
        desc,
        std::io::Cursor::new(bytes.to_vec()),
        ChunkerConfig {
            passes,
            ..ChunkerConfig::default()
        },
    );
    let mut link = LinkEncoder::new(epoch, Integrity::Crc32c);
    let mut out = Vec::new();
    let mut all = Vec::new();
    while c.poll_transmit(&mut link, &mut out).unwrap().is_some() {
        all.push(std::mem::take(&mut out));
    }
    all
}

/// Sends datagrams at about 50 MB/s.
fn blast(to: SocketAddr, grams: &[Vec<u8>]) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    for (i, g) in grams.iter().enumerate() {
        s.send_to(g, to).unwrap();
        if i % 32 == 31 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

fn metric(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name_and_labels) && l[name_and_labels.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name_and_labels} in\n{text}"))
}

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
    assert_eq!(receipt["blake3"], blake3::hash(&bytes).to_hex().as_str());
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
        metric(&text, "weir_receiver_transfers_total{outcome=\"published\"}"),
        1.0
    );
    assert!(metric(&text, "weir_receiver_frames_received_total") > 2000.0);
    assert_eq!(metric(&text, "weir_receiver_link_up"), 1.0);
    // The second pass came after the transfer was complete.
    assert!(metric(&text, "weir_receiver_frames_dropped_total{reason=\"finished\"}") > 0.0);
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
    assert!(text.contains("published") && text.contains("app_1.weir"), "{text}");
    assert_eq!(s.rx.stop().unwrap().code(), Some(0));
}
