//! A receiver with its keys, trust store and spool in a temporary
//! directory, and the frames a sender would make: the rig of the
//! whole-process tests that drive `weir-receiver`.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use weir_protocol::{
    BundleName, Chunker, ChunkerConfig, FecParams, Integrity, LinkEncoder, TransferDescriptor,
    TransferId,
};

use crate::bundles::Fixture;
use crate::daemons::{ReceiverProc, free_udp_addr, sender_config, wait_for};

/// Keys, trust store and a receiver in a temporary directory.
#[derive(Debug)]
pub struct Setup {
    /// Keys and the trust store they make.
    pub fx: Fixture,
    /// Everything of the test: bundles, configurations, spools, logs.
    pub dir: tempfile::TempDir,
    /// The trust store file both daemons read.
    pub trust: PathBuf,
    /// The receiver (not started).
    pub rx: ReceiverProc,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Setup {
    /// A receiver with `limits` added to its `[limits]` section.
    pub fn new(limits: &str) -> Self {
        Self::with_link("", limits)
    }

    /// A receiver with `link` added to its `[link]` section and `limits`
    /// to its `[limits]` section. It saves its state every 200 ms unless
    /// `limits` sets `checkpoint_interval`.
    pub fn with_link(link: &str, limits: &str) -> Self {
        let fx = Fixture::new();
        let dir = tempfile::tempdir().unwrap();
        let trust = dir.path().join("trust.toml");
        std::fs::write(&trust, fx.trust.to_toml()).unwrap();
        let addr = free_udp_addr().unwrap();
        let rx = receiver(dir.path(), addr, &trust, link, limits);
        Self {
            fx,
            dir,
            trust,
            rx,
            addr,
        }
    }

    /// Configures the receiver anew (same address and trust store) with
    /// its configuration, log and spool (`rx-spool/`) under `dir`, and
    /// `link` and `limits` as [`Setup::with_link`] takes them: for a spool
    /// on a filesystem of its own, mounted at `dir/rx-spool`.
    pub fn reconfigure(&mut self, dir: &Path, link: &str, limits: &str) {
        self.rx = receiver(dir, self.addr, &self.trust, link, limits);
    }

    /// A signed bundle named `name` version 1 with `kib` KiB of random data.
    pub fn bundle(&self, name: &str, kib: u64, seed: u64) -> (PathBuf, Vec<u8>) {
        let out = self.dir.path().join(format!("{name}.weir"));
        let bytes = self
            .fx
            .signed_bundle(self.dir.path(), name, kib * 1024, seed, &out);
        (out, bytes)
    }

    /// A `weir-sender` configuration aimed at this receiver, sending
    /// `passes` passes at `rate`.
    pub fn sender_config(&self, rate: &str, passes: u32) -> PathBuf {
        sender_config(self.dir.path(), self.addr, &self.trust, rate, passes, "").unwrap()
    }

    /// `weir-sender send` of one bundle on another thread, with
    /// environment overrides of the sender's configuration.
    pub fn send_in_background(
        &self,
        rate: &str,
        passes: u32,
        bundle: PathBuf,
        env: &[(&str, &str)],
    ) -> std::thread::JoinHandle<std::process::Output> {
        let mut cmd = Command::new(crate::bin::path("weir-sender"));
        cmd.args(["send", "--config"])
            .arg(self.sender_config(rate, passes))
            .arg(bundle)
            .envs(env.iter().copied());
        std::thread::spawn(move || cmd.output().unwrap())
    }

    /// `weir-sender send` of some bundles; it must exit 0.
    pub fn send(&self, rate: &str, passes: u32, bundles: &[&Path]) {
        let out = Command::new(crate::bin::path("weir-sender"))
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

    /// A file of `staging/`, or `None` if there is none by that name; any
    /// other error reading it fails the test.
    pub fn staged(&self, file: &str) -> Option<Vec<u8>> {
        match std::fs::read(self.rx.spool.join("staging").join(file)) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => panic!("reading staging/{file}: {e}"),
        }
    }

    /// Waits up to `secs` for `staging/FILE` and returns its bytes.
    pub fn wait_staged(&self, file: &str, secs: u64) -> Vec<u8> {
        let path = self.rx.spool.join("staging").join(file);
        if wait_for(file, Duration::from_secs(secs), || path.exists()).is_err() {
            panic!("{file} never reached staging/:\n{}", self.rx.log_text());
        }
        std::fs::read(path).unwrap()
    }
}

/// A receiver configured under `dir`; see [`Setup::with_link`].
fn receiver(dir: &Path, addr: SocketAddr, trust: &Path, link: &str, limits: &str) -> ReceiverProc {
    let checkpoint = if limits.contains("checkpoint_interval") {
        ""
    } else {
        "checkpoint_interval = \"200ms\"\n"
    };
    ReceiverProc::configure(
        &crate::bin::path("weir-receiver"),
        dir,
        addr,
        trust,
        link,
        &format!("[limits]\n{checkpoint}{limits}"),
    )
    .unwrap()
}

/// The transfer id the sender gives a bundle of these bytes.
pub fn transfer_id(bytes: &[u8]) -> TransferId {
    TransferId::from_digest(&weir_protocol::digest::digest(bytes))
}

/// Every frame of one pass over `bytes`, as the sender would make them.
pub fn frames(bytes: &[u8], name: &str, passes: u32, epoch: u64) -> Vec<Vec<u8>> {
    frames_as(describe(bytes, name), bytes, passes, epoch)
}

/// Frames of `bytes` under descriptor `desc` (a forger's frames when the
/// bytes are not the ones the descriptor hashes).
pub fn frames_as(desc: TransferDescriptor, bytes: &[u8], passes: u32, epoch: u64) -> Vec<Vec<u8>> {
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
pub fn blast(to: SocketAddr, grams: &[Vec<u8>]) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    for (i, g) in grams.iter().enumerate() {
        s.send_to(g, to).unwrap();
        if i % 32 == 31 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// The frames of several streams, taken one from each in turn: the part
/// of each stream from the fraction `from` of its length to `to`.
pub fn interleave(streams: &[Vec<Vec<u8>>], from: f64, to: f64) -> Vec<Vec<u8>> {
    let longest = streams.iter().map(Vec::len).max().unwrap_or(0);
    (0..longest)
        .flat_map(|k| {
            streams.iter().filter_map(move |f| {
                let (a, b) = (
                    (f.len() as f64 * from) as usize,
                    (f.len() as f64 * to) as usize,
                );
                (a..b).contains(&k).then(|| f[k].clone())
            })
        })
        .collect()
}

/// The value of one metric line, named with its labels; fails the test
/// if there is none.
pub fn metric(text: &str, name_and_labels: &str) -> f64 {
    metric_if_any(text, name_and_labels)
        .unwrap_or_else(|| panic!("no {name_and_labels} in\n{text}"))
}

/// The value of one metric line, if there is one: for a labelled series
/// that appears only once it has counted something.
pub fn metric_if_any(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find(|l| {
            l.strip_prefix(name_and_labels)
                .is_some_and(|rest| rest.starts_with(' '))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The BLAKE3 of a file, read in a stream.
pub fn file_hash(path: &Path) -> std::io::Result<blake3::Hash> {
    let mut h = blake3::Hasher::new();
    h.update_reader(std::fs::File::open(path)?)?;
    Ok(h.finalize())
}

/// The descriptor the sender makes for `bytes` at MTU 1500.
pub fn describe(bytes: &[u8], name: &str) -> TransferDescriptor {
    let hash = weir_protocol::digest::digest(bytes);
    let fec = FecParams::new(256, 64, 1424, 16)
        .unwrap()
        .fitted_to(bytes.len() as u64);
    TransferDescriptor::new(
        TransferId::from_digest(&hash),
        BundleName::sanitise(name),
        bytes.len() as u64,
        hash,
        fec,
    )
    .unwrap()
}

/// Watches `staging/` on a thread, every 2 ms, from start until
/// [`StagingWatch::finish`]: every name that appears must be one of the
/// expected bundles or its receipt, a bundle must hash to exactly what is
/// expected the first time it is seen, and it must never change or vanish
/// after. Dropped unfinished (a test failing elsewhere), it stops.
#[derive(Debug)]
pub struct StagingWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<Watched>>,
}

/// What a [`StagingWatch`] saw wrong, and the bundles it never saw.
type Watched = (Vec<String>, Vec<String>);

impl StagingWatch {
    /// Starts watching `staging`; `expected` maps a bundle's file name
    /// (`NAME_VERSION.weir`) to the BLAKE3 of its bytes. None of them may
    /// be there yet.
    pub fn start(staging: PathBuf, expected: Vec<(String, blake3::Hash)>) -> Self {
        for (name, _) in &expected {
            assert!(
                !staging.join(name).exists(),
                "{name} is in staging/ already"
            );
        }
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || watch(&staging, &expected, &flag));
        Self {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops watching; fails the test on anything wrong it saw, or if an
    /// expected bundle never appeared while it watched.
    pub fn finish(mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (bad, unseen) = self
            .thread
            .take()
            .expect("finished once")
            .join()
            .expect("the staging watcher panicked");
        assert!(bad.is_empty(), "{bad:?}");
        assert!(unseen.is_empty(), "never seen in staging/: {unseen:?}");
    }
}

impl Drop for StagingWatch {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The loop of a [`StagingWatch`].
fn watch(
    staging: &Path,
    expected: &[(String, blake3::Hash)],
    stop: &std::sync::atomic::AtomicBool,
) -> Watched {
    use std::os::unix::fs::MetadataExt;
    let mut bad = Vec::new();
    // Each bundle seen, with the identity of its file then.
    let mut seen: std::collections::HashMap<String, (u64, i64, i64)> = Default::default();
    let expected_name = |name: &str| {
        expected.iter().find(|(f, _)| {
            f == name
                || f.strip_suffix(".weir")
                    .map(|s| format!("{s}.receipt.json"))
                    .as_deref()
                    == Some(name)
        })
    };
    loop {
        // One more look after the stop: what the test saw before it
        // stopped the watch, the watch sees too.
        let last = stop.load(std::sync::atomic::Ordering::Relaxed);
        let entries = match std::fs::read_dir(staging) {
            Ok(rd) => rd,
            Err(e) => {
                bad.push(format!("listing staging/: {e}"));
                break;
            }
        };
        let mut present = Vec::new();
        for e in entries {
            let e = match e {
                Ok(e) => e,
                Err(err) => {
                    bad.push(format!("listing staging/: {err}"));
                    continue;
                }
            };
            let name = e.file_name().to_string_lossy().into_owned();
            let Some((_, hash)) = expected_name(&name) else {
                bad.push(format!("unexpected {name}"));
                continue;
            };
            if !name.ends_with(".weir") {
                continue;
            }
            let m = match e.metadata() {
                Ok(m) => m,
                Err(err) => {
                    bad.push(format!("{name} vanished: {err}"));
                    continue;
                }
            };
            let id = (m.ino(), m.mtime(), m.mtime_nsec());
            match seen.get(&name) {
                Some(was) if *was == id => {}
                Some(_) => bad.push(format!("{name} changed after it appeared")),
                None => {
                    let got = file_hash(&e.path())
                        .unwrap_or_else(|err| panic!("reading staging/{name}: {err}"));
                    if got != *hash {
                        bad.push(format!(
                            "{name} appeared with other bytes ({} of them)",
                            m.len()
                        ));
                    }
                    seen.insert(name.clone(), id);
                }
            }
            present.push(name);
        }
        for name in seen.keys() {
            if !present.contains(name) {
                bad.push(format!("{name} vanished from staging/"));
            }
        }
        if last {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let unseen = expected
        .iter()
        .map(|(f, _)| f.clone())
        .filter(|f| !seen.contains_key(f))
        .collect();
    (bad, unseen)
}

/// Blocks on record in each saved state of `incoming/`: (transfer id, blocks
/// done). A state file that cannot be read or parsed fails the test (the
/// receiver writes them under a temporary name and renames them in).
pub fn blocks_on_record(incoming: &Path) -> Vec<(String, u32)> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(incoming).expect("listing incoming/") {
        let e = e.expect("listing incoming/");
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(id) = name.strip_suffix(".state") else {
            continue;
        };
        let bytes = match std::fs::read(e.path()) {
            Ok(b) => b,
            // Removed since it was listed: the transfer ended.
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => panic!("reading {name}: {err}"),
        };
        let state: serde_json::Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|err| panic!("{name} is not a saved state: {err}"));
        let done = state["done"]
            .as_array()
            .unwrap_or_else(|| panic!("{name} has no done blocks: {state}"))
            .iter()
            .map(|w| w.as_u64().expect("a bitmap word").count_ones())
            .sum();
        v.push((id.to_owned(), done));
    }
    v.sort();
    v
}

/// Blocks the receiver rebuilt since it started (clean and repaired).
pub fn blocks_rebuilt(metrics: &str) -> f64 {
    metric(metrics, "weir_receiver_blocks_total{how=\"clean\"}")
        + metric(metrics, "weir_receiver_blocks_total{how=\"repaired\"}")
}
