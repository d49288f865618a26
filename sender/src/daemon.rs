//! `weir-sender run` and `weir-sender send`: the drivers around the engine.
//!
//! ```text
//!  run:   spool scan ─▶ check (trust store, digest) ─▶ Chunker ─▶ Engine
//!           │ invalid ─▶ failed/ + reason      │ done ─▶ journal, sent/
//!           │ urgent waiting at a group boundary ─▶ send it first, resume
//!           │ SIGTERM ─▶ finish the batch, save the pass in state/, exit 0
//!  send:  the same check and engine for bundles named on the command line,
//!         with a progress bar, no spool.
//! ```

use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use sd_notify::NotifyState;
use tracing::{info, warn};
use weir_bundle::{BundleInfo, Rejection, TrustStore, Verified};
use weir_protocol::{
    BundleName, Chunker, ChunkerConfig, FecParams, Integrity, LinkEncoder, LinkKey,
    TransferDescriptor, TransferId,
};

use crate::config::{AfterSend, Settings};
use crate::engine::{Engine, EngineConfig, SendOutcome, SendProgress};
use crate::outbox::{Candidate, InFlight, JournalRecord, Lane, Spool};
use crate::source::FileSource;
use crate::udp::UdpLink;

/// A bundle that passed its check, ready to be chunked.
#[derive(Debug)]
pub struct Checked {
    /// Its descriptor (transfer id from its BLAKE3).
    pub descriptor: TransferDescriptor,
    /// What verification found.
    pub info: Verified<BundleInfo>,
}

/// Verifies the bundle at `path` against `trust` and computes its
/// transfer digest, in one read and one hash pass. `Ok(Err(_))` is a
/// bundle that must not be sent.
pub fn check(
    path: &Path,
    trust: &TrustStore,
    shard_size: u16,
    fec: (u16, u16, Option<u16>),
) -> anyhow::Result<Result<Checked, Rejection>> {
    let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    // No BufReader: verification reads in large chunks, and an extra
    // buffer would copy every byte once more.
    let found = weir_bundle::verify(f, trust, SystemTime::now())
        .with_context(|| format!("reading {}", path.display()))?;
    let info = match found.verdict {
        Ok(v) => v,
        Err(r) => return Ok(Err(r)),
    };
    // The descriptor describes exactly the bytes that were digested.
    let size = found.len;
    let hash = found.digest;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("bundle");
    let interleave = fec
        .2
        .unwrap_or_else(|| FecParams::auto_interleave(fec.0, shard_size));
    let params = FecParams::new(fec.0, fec.1, shard_size, interleave)
        .map_err(|e| anyhow::anyhow!("fec: {e}"))?
        .fitted_to(size);
    let descriptor = TransferDescriptor::new(
        TransferId::from_digest(&hash),
        BundleName::sanitise(name),
        size,
        hash,
        params,
    )?;
    Ok(Ok(Checked { descriptor, info }))
}

/// Builds the engine: socket, link encoder with a fresh epoch, pacer.
pub fn open_engine(settings: &Settings) -> anyhow::Result<(Engine, u16)> {
    let (udp, granted) = UdpLink::open(settings.bind, settings.destination, settings.send_buffer)
        .with_context(|| format!("opening a UDP socket on {}", settings.bind))?;
    if granted < settings.send_buffer {
        warn!(
            requested = settings.send_buffer,
            granted,
            "socket send buffer capped by the kernel; raise it with: sysctl -w net.core.wmem_max={}",
            settings.send_buffer
        );
    }
    let integrity = match settings.link_key {
        Some(k) => Integrity::Mac(LinkKey::from_secret(&k)),
        None => Integrity::Crc32c,
    };
    let mut epoch = [0u8; 8];
    getrandom::fill(&mut epoch).map_err(|e| anyhow::anyhow!("no randomness from the OS: {e}"))?;
    let link = LinkEncoder::new(u64::from_le_bytes(epoch), integrity);
    let max_datagram = settings.mtu.max_datagram(settings.destination.is_ipv6());
    let shard = link
        .shard_size_for(max_datagram)
        .context("link.mtu leaves no room for a shard")?;
    let config = EngineConfig {
        rate: settings.rate,
        max_datagram,
        heartbeat: settings.heartbeat,
        pass_pause: settings.pass_pause,
    };
    info!(
        destination = %settings.destination,
        rate = %settings.rate,
        mtu = settings.mtu.get(),
        shard,
        gso_segments = udp.max_segments(),
        authenticated = settings.link_key.is_some(),
        "link ready"
    );
    Ok((Engine::new(link, udp, config), shard))
}

fn status(msg: &str) {
    let _ = sd_notify::notify(&[NotifyState::Status(msg)]);
}

/// Pings the systemd watchdog from a thread while the send loop is alive.
/// The ping stops if the loop stops ticking, so systemd restarts a hung
/// sender.
fn start_watchdog(alive: Arc<std::sync::atomic::AtomicU64>, stop: Arc<AtomicBool>) {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    std::thread::spawn(move || {
        let mut last = u64::MAX;
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(interval / 2);
            let now = alive.load(Ordering::Relaxed);
            if now != last {
                let _ = sd_notify::notify(&[NotifyState::Watchdog]);
            }
            last = now;
        }
    });
}

/// How one bundle ended.
enum Processed {
    Sent,
    Failed,
    Stopped,
}

/// The `run` daemon.
pub struct Daemon {
    settings: Settings,
    spool: Spool,
    trust: TrustStore,
    engine: Engine,
    shard: u16,
    stop: Arc<AtomicBool>,
    inflight: Vec<InFlight>,
    /// Recently sent bundles the carousel cycles, with the next pass each
    /// gets (every cycle carries parity no earlier pass carried).
    carousel: std::collections::VecDeque<(std::path::PathBuf, u32)>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("spool", &self.spool.root)
            .finish()
    }
}

impl Daemon {
    /// Opens the spool, trust store and link.
    pub fn new(settings: Settings, stop: Arc<AtomicBool>) -> anyhow::Result<Self> {
        let trust = load_trust(&settings.trust)?;
        let spool = Spool::open(&settings.spool, settings.settle)?;
        let (engine, shard) = open_engine(&settings)?;
        Ok(Self {
            settings,
            spool,
            trust,
            engine,
            shard,
            stop,
            inflight: Vec::new(),
            carousel: std::collections::VecDeque::new(),
        })
    }

    /// Runs until SIGTERM (the `stop` flag).
    pub fn run(mut self) -> anyhow::Result<()> {
        start_watchdog(self.engine.alive(), self.stop.clone());
        let _ = sd_notify::notify(&[NotifyState::Ready]);
        status("idle");
        info!(spool = %self.spool.root.display(), "weir-sender running");
        let mut resume = self.spool.load_inflight();
        if let Some(c) = self.settings.carousel {
            let first = self.settings.passes;
            self.carousel = self
                .spool
                .recent_sent(c.bundles)
                .into_iter()
                .map(|p| (p, first))
                .collect();
        }
        let scan_every =
            (self.settings.settle / 2).clamp(Duration::from_millis(100), Duration::from_secs(1));
        while !self.stop.load(Ordering::Relaxed) {
            let next = match resume.first().cloned() {
                Some(r) => {
                    resume.remove(0);
                    if !r.path.exists() {
                        continue;
                    }
                    info!(bundle = %r.path.display(), pass = r.pass, "resuming interrupted transfer");
                    let lane = if r.path.starts_with(&self.spool.urgent) {
                        Lane::Urgent
                    } else {
                        Lane::Normal
                    };
                    let c = Candidate {
                        path: r.path.clone(),
                        lane,
                        arrived: (0, 0),
                    };
                    Some((c, Some(r)))
                }
                None => {
                    let ready = self.spool.scan()?;
                    // Waiting: all but the one taken now.
                    self.engine.queue_len =
                        u32::try_from(ready.len().saturating_sub(1)).unwrap_or(u32::MAX);
                    ready.into_iter().next().map(|c| (c, None))
                }
            };
            let Some((c, resumed)) = next else {
                if !self.carousel_turn()? {
                    self.engine.idle(Instant::now() + scan_every, &self.stop)?;
                }
                continue;
            };
            if let Processed::Stopped = self.process(&c, resumed.as_ref())? {
                break;
            }
        }
        let _ = sd_notify::notify(&[NotifyState::Stopping]);
        info!("weir-sender stopped");
        Ok(())
    }

    fn process(&mut self, c: &Candidate, resumed: Option<&InFlight>) -> anyhow::Result<Processed> {
        let started = SystemTime::now();
        let checked = match check(&c.path, &self.trust, self.shard, self.settings.fec)? {
            Ok(ch) => ch,
            Err(rejection) => {
                let reasons = serde_json::to_value(&rejection.reasons)?;
                // Each reason is bounded (cut strings, at most 32 of them).
                let dest = self.spool.fail(&c.path, &reasons, rejection.omitted)?;
                warn!(bundle = %c.path.display(), failed = %dest.display(), %rejection, "bundle refused");
                return Ok(Processed::Failed);
            }
        };
        let d = checked.descriptor.clone();
        let digest_hex = d.digest().to_hex().to_string();
        let first_pass = match resumed {
            Some(r) if r.digest == digest_hex => r.pass.min(self.settings.passes.saturating_sub(1)),
            _ => 0,
        };
        let passes = self.settings.passes;
        let source = FileSource::open(&c.path)?;
        let config = ChunkerConfig {
            first_pass,
            passes,
            ..ChunkerConfig::default()
        };
        let mut chunker = Chunker::new(d.clone(), source, config);
        self.inflight.push(InFlight {
            path: c.path.clone(),
            transfer: d.transfer.to_string(),
            digest: digest_hex.clone(),
            pass: first_pass,
        });
        self.spool.save_inflight(&self.inflight)?;
        info!(
            bundle = %d.name, transfer = %d.transfer, bytes = d.size,
            name = %checked.info.manifest.name, version = %checked.info.manifest.version,
            lane = ?c.lane, first_pass, data_shards = d.fec.data_shards(),
            parity_shards = d.fec.parity_shards(), interleave = d.fec.interleave(), "sending"
        );
        loop {
            let urgent_dir = self.spool.urgent.clone();
            let may_preempt = c.lane == Lane::Normal;
            let name = d.name.to_string();
            let settle = self.settings.settle;
            // Yield only for an urgent bundle the next scan can take, not
            // for one still being copied in.
            let mut preempt = || may_preempt && crate::outbox::has_settled(&urgent_dir, settle);
            let began = Instant::now();
            let mut progress = |p: &SendProgress| {
                let secs = began.elapsed().as_secs_f64().max(1e-3);
                status(&format!(
                    "sending {name}: pass {}/{}, block {}/{}, {} MB out at {:.0} Mbit/s",
                    p.pass + 1,
                    p.passes,
                    p.blocks_done,
                    p.blocks,
                    p.bytes / 1_000_000,
                    p.bytes as f64 * 8.0 / secs / 1e6
                ));
            };
            let outcome = self.engine.send(
                &mut chunker,
                passes,
                &self.stop,
                &mut preempt,
                &mut progress,
            )?;
            match outcome {
                SendOutcome::Done => break,
                SendOutcome::Stopped { pass } => {
                    if let Some(last) = self.inflight.last_mut() {
                        last.pass = pass;
                    }
                    self.spool.save_inflight(&self.inflight)?;
                    info!(bundle = %d.name, pass, "stopped; will resume at this pass");
                    return Ok(Processed::Stopped);
                }
                SendOutcome::Preempted => {
                    if let Some(last) = self.inflight.last_mut() {
                        last.pass = chunker.pass();
                    }
                    info!(bundle = %d.name, "yielding to urgent bundles");
                    while let Some(u) = self
                        .spool
                        .scan()?
                        .into_iter()
                        .find(|u| u.lane == Lane::Urgent && u.path != c.path)
                    {
                        if let Processed::Stopped = self.process(&u, None)? {
                            return Ok(Processed::Stopped);
                        }
                    }
                }
            }
        }
        let sent_bytes = self.engine.stats().bytes;
        let record = JournalRecord {
            bundle: d.name.to_string(),
            transfer: d.transfer.to_string(),
            digest: digest_hex,
            bytes: d.size,
            passes,
            start: humantime::format_rfc3339_seconds(started).to_string(),
            end: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            sent_bytes,
        };
        self.spool.journal(&record)?;
        match self.settings.after_send {
            AfterSend::Move => {
                let sent = self.spool.mark_sent(&c.path)?;
                if let Some(car) = self.settings.carousel {
                    self.carousel.push_front((sent, passes));
                    self.carousel.truncate(car.bundles);
                }
            }
            AfterSend::Delete => std::fs::remove_file(&c.path)?,
        }
        self.inflight.pop();
        self.spool.save_inflight(&self.inflight)?;
        info!(bundle = %d.name, transfer = %d.transfer, passes, "sent");
        status("idle");
        Ok(Processed::Sent)
    }
}

impl Daemon {
    /// Sends one more pass of the next carousel bundle, at the carousel's
    /// share of the rate, yielding as soon as the outbox has anything.
    /// Returns false when there is nothing to cycle.
    fn carousel_turn(&mut self) -> anyhow::Result<bool> {
        let Some(car) = self.settings.carousel else {
            return Ok(false);
        };
        let Some((path, pass)) = self.carousel.pop_front() else {
            return Ok(false);
        };
        if self.spool.anything_waiting() {
            self.carousel.push_front((path, pass));
            return Ok(false);
        }
        let checked = match check(&path, &self.trust, self.shard, self.settings.fec) {
            Ok(Ok(c)) => c,
            // Gone, changed or no longer trusted: drop it from the cycle.
            _ => return Ok(true),
        };
        let config = ChunkerConfig {
            first_pass: pass,
            passes: pass.saturating_add(1),
            ..ChunkerConfig::default()
        };
        let mut chunker = Chunker::new(checked.descriptor, FileSource::open(&path)?, config);
        self.engine.set_rate(car.rate);
        let outbox = (self.spool.urgent.clone(), self.spool.outbox.clone());
        let mut preempt =
            || crate::outbox::has_waiting(&outbox.0) || crate::outbox::has_waiting(&outbox.1);
        let outcome = self.engine.send(
            &mut chunker,
            pass + 1,
            &self.stop,
            &mut preempt,
            &mut |_| {},
        );
        self.engine.set_rate(self.settings.rate);
        match outcome? {
            SendOutcome::Done => self.carousel.push_back((path, pass.saturating_add(1))),
            // Interrupted: the same pass again next time.
            SendOutcome::Preempted | SendOutcome::Stopped { .. } => {
                self.carousel.push_front((path, pass))
            }
        }
        Ok(true)
    }
}

/// Loads the sender's trust store.
pub fn load_trust(path: &Path) -> anyhow::Result<TrustStore> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading trust store {}", path.display()))?;
    TrustStore::from_toml(&text).with_context(|| format!("trust store {}", path.display()))
}

/// `weir-sender send`: sends the named bundles in the foreground.
pub fn send_files(
    settings: &Settings,
    files: &[std::path::PathBuf],
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let trust = load_trust(&settings.trust)?;
    let (mut engine, shard) = open_engine(settings)?;
    let bar_style = indicatif::ProgressStyle::with_template(
        "{prefix} pass {msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    for (i, path) in files.iter().enumerate() {
        let checked = match check(path, &trust, shard, settings.fec)? {
            Ok(c) => c,
            Err(r) => anyhow::bail!("{}: {r}", path.display()),
        };
        let d = checked.descriptor.clone();
        let passes = settings.passes;
        let per_pass = u64::from(d.block_count.max(1));
        let bar = indicatif::ProgressBar::new(d.size.saturating_mul(u64::from(passes)));
        bar.set_style(bar_style.clone());
        bar.set_prefix(format!("{} ({}/{})", d.name, i + 1, files.len()));
        engine.queue_len = (files.len() - i - 1) as u32;
        let mut chunker = Chunker::new(
            d.clone(),
            FileSource::open(path)?,
            ChunkerConfig {
                passes,
                ..ChunkerConfig::default()
            },
        );
        let mut progress = |p: &SendProgress| {
            let done_in_pass = d.size.saturating_mul(u64::from(p.blocks_done)) / per_pass;
            bar.set_position(u64::from(p.pass) * d.size + done_in_pass.min(d.size));
            bar.set_message(format!("{}/{}", p.pass + 1, p.passes));
        };
        match engine.send(&mut chunker, passes, stop, &mut || false, &mut progress)? {
            SendOutcome::Done => {
                bar.finish_with_message(format!("{passes}/{passes} done"));
            }
            SendOutcome::Stopped { pass } => {
                anyhow::bail!("interrupted during pass {} of {}", pass + 1, d.name)
            }
            SendOutcome::Preempted => {}
        }
    }
    Ok(())
}
