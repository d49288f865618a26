//! `weir-receiver run`: the receive loop and the threads around it.
//!
//! ```text
//!  UDP (recvmmsg + GRO) ─▶ receive loop: Reassembler, link monitor,
//!                           │  limits, metrics, status, sd-notify
//!                           │ Job (bounded by bytes)          ▲ Reply
//!                           ▼                                 │
//!                         writer: incoming/<id>.part + .state ┤
//!                           │ complete, on disk               │
//!                           ▼                                 │
//!                         publisher: verify ─▶ staging/ | quarantine/
//! ```
//!
//! The receive loop never touches the disk: blocks go to the writer
//! through a queue bounded in bytes, complete files to the publisher, and
//! the status snapshot to its own thread ([`status_file`]). If
//! the disk falls behind for longer than the queue absorbs, the loop
//! waits (counted as stall time) and the kernel drops what its buffer
//! cannot hold; later passes fill those gaps.

pub mod direct;
pub mod drops;
pub mod link;
pub mod metrics;
pub mod publish;
pub mod recycle;
pub mod status_file;
pub mod streaming;
pub mod writer;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use sd_notify::NotifyState;
use tracing::{error, info, warn};
use weir_protocol::reassembler::RefusalLog;
use weir_protocol::{
    ByteSize, Event, Integrity, LinkKey, Reassembler, ReassemblerConfig, Refusal,
    TransferDescriptor, TransferId, TransferState,
};

use self::drops::{DropWatch, Finding};
use crate::config::Settings;
use crate::socket::Listener;
use crate::spool::{REMEMBER_FINISHED, Spool};
use crate::status::{Snapshot, TransferProgress, unix_now};
use link::{LinkMonitor, LinkState};
use metrics::{Metrics, Reading};
use publish::{Outcome, PublishJob, Publisher, Verdict, now_rfc3339};
use writer::{Job, Reply, Writer};

/// Counters the worker threads share with the receive loop.
#[derive(Debug, Default)]
pub struct Shared {
    /// Bytes queued for the writer.
    pub queue_bytes: AtomicUsize,
    /// Blocks written.
    pub blocks_written: AtomicU64,
    /// Disk errors.
    pub disk_errors: AtomicU64,
    /// The writer thread ended (it only does when told to, or by a bug).
    pub writer_gone: AtomicBool,
    /// The daemon is stopping: the publisher takes no new job.
    pub stopping: AtomicBool,
}

/// Outcomes kept for `status`.
const RECENT: usize = 20;
/// A deferred publication is retried after this long, doubling with every
/// failed attempt up to [`RETRY_PUBLISH_MAX`].
const RETRY_PUBLISH: Duration = Duration::from_secs(30);
/// The longest wait between two attempts to publish.
const RETRY_PUBLISH_MAX: Duration = Duration::from_secs(1800);
/// How much traffic the socket buffer should absorb.
const BUFFER_SECONDS: f64 = 0.25;

/// What the writer does for a transfer the core takes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reopen {
    /// Reopen its partial file (after a restart).
    Resume,
    /// Create a fresh partial file (it is received again from scratch).
    Start,
    /// The writer holds it already.
    Held,
}

/// The receive loop's state.
struct Daemon {
    settings: Settings,
    spool: Spool,
    listener: Listener,
    core: Reassembler,
    link: LinkMonitor,
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
    jobs: Option<Sender<Job>>,
    publish: Option<Sender<PublishJob>>,
    replies: Receiver<Reply>,
    /// Block buffers given back by the writer and verifiers.
    returned: recycle::Returned,
    /// Transfers in flight, for `status`.
    tracks: HashMap<TransferId, TransferDescriptor>,
    /// Bytes each transfer holds in `incoming/`, from its start to its
    /// outcome (for the quota).
    reserved: HashMap<TransferId, u64>,
    /// Transfers to re-open when the core has room, and what the writer
    /// must do for their partial file then.
    reopen: VecDeque<(TransferState, Reopen)>,
    /// Transfers complete and handed to the publisher, until their outcome:
    /// a new start of one of them must not touch its files.
    publishing: std::collections::HashSet<TransferId>,
    /// Publications to retry, with when.
    deferred: Vec<(Instant, PublishJob)>,
    /// Transfers lately told turned away by the `incoming/` quota.
    refused: RefusalLog,
    recent: VecDeque<Outcome>,
    stall: Duration,
    /// Kernel drops and waits for the disk, for the log.
    drops: DropWatch,
    published: u64,
    metrics_addr: Option<std::net::SocketAddr>,
    /// Writes `status.json` off this thread.
    status: status_file::StatusFile,
    /// Descriptors turned away because `limits.transfers` were held.
    too_many: Throttled,
    /// Frames of another wire version (or an unknown kind): a sender and
    /// a receiver of different releases on one link.
    foreign_version: Throttled,
}

/// A counter whose growth is logged at most once a minute.
#[derive(Debug, Default)]
struct Throttled {
    /// The count at the last warning.
    seen: u64,
    /// When that was.
    at: Option<Instant>,
}

impl Throttled {
    /// How much `count` grew since the last warning, if a warning is due.
    fn due(&mut self, count: u64, now: Instant) -> Option<u64> {
        let quiet = self
            .at
            .is_none_or(|t| now.saturating_duration_since(t) > Duration::from_secs(60));
        if count <= self.seen || !quiet {
            return None;
        }
        let grew = count - self.seen;
        *self = Self {
            seen: count,
            at: Some(now),
        };
        Some(grew)
    }
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("spool", &self.spool.root)
            .finish()
    }
}

/// Runs the daemon until `stop` is set (SIGTERM), then saves the state of
/// every partial transfer and returns.
pub fn run(settings: Settings, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    let spool = Spool::open(&settings.spool)
        .with_context(|| format!("creating the spool under {}", settings.spool.display()))?;
    let trust = Arc::new(crate::trust_file::TrustWatch::load(&settings.trust)?);
    let (listener, granted) = Listener::bind(settings.listen, settings.receive_buffer)
        .with_context(|| format!("listening on {}", settings.listen))?;
    let needed = (settings.rate.bytes_per_sec() * BUFFER_SECONDS) as usize;
    let wanted = settings.receive_buffer.max(needed);
    // Linux reports twice the size it accounts for.
    if granted / 2 < wanted.min(settings.receive_buffer) || granted / 2 < needed {
        warn!(
            requested = settings.receive_buffer,
            granted = granted / 2,
            needed_for_rate = needed,
            "socket receive buffer capped by the kernel; frames will be dropped in bursts. Raise it with: sysctl -w net.core.rmem_max={wanted}"
        );
    }
    info!(
        listen = %listener.local_addr()?,
        receive_buffer = granted / 2,
        gro_segments = listener.gro_segments(),
        authenticated = settings.link_key.is_some(),
        spool = %spool.root.display(),
        "listening"
    );
    let integrity = match settings.link_key {
        Some(k) => Integrity::Mac(LinkKey::from_secret(&k)),
        None => Integrity::Crc32c,
    };
    let core = Reassembler::new(ReassemblerConfig {
        integrity,
        max_transfers: settings.transfers,
        max_memory: settings.memory,
        transfer_expiry: settings.transfer_expiry,
        remember_finished: REMEMBER_FINISHED,
        max_transfer_size: settings.max_bundle,
        // The writer's verifiers hash the file as it lands, off the
        // receive thread.
        ..ReassemblerConfig::default()
    });

    let shared = Arc::new(Shared::default());
    let metrics = Arc::new(Metrics::default());
    let mut registry = prometheus_client::registry::Registry::default();
    metrics.register(&mut registry);
    let metrics_addr = match settings.metrics {
        Some(addr) => Some(
            metrics::serve(addr, Arc::new(Mutex::new(registry)))
                .with_context(|| format!("metrics.listen {addr}"))?,
        ),
        None => None,
    };

    let (job_tx, job_rx) = mpsc::channel();
    let (reply_tx, reply_rx) = mpsc::channel();
    let (pub_tx, pub_rx) = mpsc::channel();
    let writer = Writer::new(
        spool.clone(),
        trust.clone(),
        reply_tx.clone(),
        pub_tx.clone(),
        shared.clone(),
        settings.checkpoint,
        settings.transfer_expiry,
    );
    let (recycle, returned) = recycle::channel();
    let writer = writer.recycling(recycle);
    let writer = if settings.direct_io {
        writer
    } else {
        writer.without_direct_io()
    };
    let writer = std::thread::Builder::new()
        .name("writer".into())
        .spawn(move || writer.run(job_rx))?;
    let publisher = Publisher::new(
        spool.clone(),
        trust,
        reply_tx,
        shared.clone(),
        settings.quarantine_quota,
    );
    let publisher = std::thread::Builder::new()
        .name("publisher".into())
        .spawn(move || publisher.run(pub_rx))?;

    let status = status_file::StatusFile::spawn(
        spool.incoming.clone(),
        spool.status_file(),
        shared.clone(),
    )?;
    let mut d = Daemon {
        settings,
        spool,
        listener,
        core,
        link: LinkMonitor::default(),
        shared,
        metrics,
        jobs: Some(job_tx),
        publish: Some(pub_tx),
        replies: reply_rx,
        returned,
        tracks: HashMap::new(),
        reserved: HashMap::new(),
        reopen: VecDeque::new(),
        publishing: std::collections::HashSet::new(),
        deferred: Vec::new(),
        refused: RefusalLog::default(),
        recent: VecDeque::new(),
        stall: Duration::ZERO,
        drops: DropWatch::default(),
        published: 0,
        metrics_addr,
        status,
        too_many: Throttled::default(),
        foreign_version: Throttled::default(),
    };
    d.recover()?;
    let _ = sd_notify::notify(&[NotifyState::Ready]);
    let result = d.run_loop(&stop);

    // Shutdown: park every incomplete block on disk, save, and let the
    // writer finish what it holds; the publisher finishes the bundle it is
    // on, and the next start publishes the others.
    let _ = sd_notify::notify(&[NotifyState::Stopping]);
    d.shared.stopping.store(true, Ordering::Relaxed);
    d.core.spill_all();
    d.drain_events();
    d.send(Job::Checkpoint);
    d.jobs = None;
    if writer.join().is_err() {
        error!("writer thread panicked");
    }
    d.publish = None;
    if publisher.join().is_err() {
        error!("publisher thread panicked");
    }
    d.drain_replies();
    d.write_status(true);
    result?;
    info!("weir-receiver stopped; partial transfers saved");
    Ok(())
}

impl Daemon {
    /// Picks up what a previous run left in `incoming/`.
    fn recover(&mut self) -> anyhow::Result<()> {
        crate::spool::remove_temporaries(&self.spool.incoming)?;
        for id in self.spool.load_finished()? {
            self.core.mark_finished(id);
        }
        let mut resumed = 0;
        for entry in std::fs::read_dir(&self.spool.incoming)? {
            let path = entry?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned();
            if let Some(id) = name
                .strip_suffix(".part")
                .and_then(|s| s.parse::<TransferId>().ok())
                && !self.spool.state(id).exists()
            {
                // Never checkpointed: nothing on record is in it.
                let _ = std::fs::remove_file(&path);
                continue;
            }
            let Some(id) = name
                .strip_suffix(".state")
                .and_then(|s| s.parse::<TransferId>().ok())
            else {
                continue;
            };
            let state: TransferState = match std::fs::read(&path)
                .map_err(anyhow::Error::from)
                .and_then(|b| serde_json::from_slice(&b).map_err(anyhow::Error::from))
            {
                Ok(s) => s,
                Err(e) => {
                    warn!(file = %path.display(), "unreadable transfer state, discarded: {e:#}");
                    self.spool.remove_partial(id)?;
                    continue;
                }
            };
            if state.descriptor.transfer != id || !self.spool.part(id).exists() {
                warn!(file = %path.display(), "transfer state without its partial file, discarded");
                self.spool.remove_partial(id)?;
                continue;
            }
            let links = std::fs::metadata(self.spool.part(id))
                .map(|m| std::os::unix::fs::MetadataExt::nlink(&m))
                .unwrap_or(1);
            if links > 1 && !state.is_complete() {
                // Already linked into staging/ or quarantine/ by a run that
                // stopped before its bookkeeping: never write into it. If
                // it is wanted again, it is received afresh.
                warn!(transfer = %id, "partial file already published elsewhere; its record is dropped");
                self.spool.remove_partial(id)?;
                continue;
            }
            info!(transfer = %id, bundle = %state.descriptor.name,
                blocks_done = state.blocks_done(), blocks = state.descriptor.block_count,
                "resuming partial transfer");
            self.reopen.push_back((state, Reopen::Resume));
            resumed += 1;
        }
        if resumed > 0 {
            info!(resumed, "partial transfers found in incoming/");
        }
        self.retry_reopen();
        Ok(())
    }

    fn run_loop(&mut self, stop: &AtomicBool) -> anyhow::Result<()> {
        let watchdog = sd_notify::watchdog_enabled().map(|w| w / 2);
        let mut next_tick = Instant::now();
        let mut next_status = Instant::now();
        let mut last_watchdog = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            if self.shared.writer_gone.load(Ordering::Relaxed) {
                anyhow::bail!(
                    "the writer thread ended unexpectedly; stopping so that the service manager restarts the daemon"
                );
            }
            let core = &mut self.core;
            // One clock reading per batch: a batch takes microseconds.
            let mut now = None;
            let received = self.listener.recv_batch(|d| {
                let t = *now.get_or_insert_with(Instant::now);
                core.handle_datagram(t, d);
            });
            if let Err(e) = received {
                error!("receiving: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
            self.drain_events();
            self.drain_replies();
            while let Some(b) = self.returned.next() {
                self.core.recycle(b);
            }
            let now = Instant::now();
            if self.core.poll_timeout().is_some_and(|t| t <= now) {
                self.core.handle_timeout(now);
                self.drain_events();
            }
            if now >= next_tick {
                self.tick(now);
                next_tick = now + Duration::from_millis(250);
            }
            if now >= next_status {
                self.write_status(false);
                next_status = now + Duration::from_secs(1);
            }
            if let Some(w) = watchdog
                && last_watchdog.elapsed() >= w
            {
                let _ = sd_notify::notify(&[NotifyState::Watchdog]);
                last_watchdog = Instant::now();
            }
        }
        Ok(())
    }

    /// Hands a job to the writer, waiting while its queue is full.
    fn send(&mut self, job: Job) {
        let cost = job.cost();
        if cost > 0 {
            let limit = self.settings.write_queue;
            let queued = &self.shared.queue_bytes;
            if queued.load(Ordering::Relaxed) + cost > limit {
                let began = Instant::now();
                while queued.load(Ordering::Relaxed) + cost > limit
                    && queued.load(Ordering::Relaxed) > 0
                    && !self.shared.writer_gone.load(Ordering::Relaxed)
                {
                    std::thread::sleep(Duration::from_micros(200));
                }
                self.stall += began.elapsed();
            }
            queued.fetch_add(cost, Ordering::Relaxed);
        }
        if let Some(tx) = &self.jobs
            && tx.send(job).is_err()
        {
            error!("the writer thread is gone");
        }
    }

    fn drain_events(&mut self) {
        while let Some(event) = self.core.poll_event() {
            self.on_event(event);
        }
    }

    fn reserved(&self) -> u64 {
        self.reserved.values().sum()
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::TransferStarted(d) => {
                let id = d.transfer;
                if self.publishing.contains(&id) {
                    // Its files belong to the publisher until the outcome.
                    self.core.forget(id);
                    self.core.mark_finished(id);
                    return;
                }
                let reserved = self.reserved();
                if reserved.saturating_add(d.size) > self.settings.incoming_quota {
                    self.core.forget(id);
                    // Told, and counted, as the core tells its own refusals:
                    // once a minute per transfer.
                    if self.refused.tell(id, Instant::now()) {
                        warn!(transfer = %id, bundle = %d.name, bytes = d.size, reserved,
                            quota = self.settings.incoming_quota,
                            "incoming/ quota reached: transfer waits until others finish");
                        self.metrics.refused("incoming_quota");
                    }
                    return;
                }
                self.refused.forget(id);
                self.reserved.insert(id, d.size);
                self.tracks.insert(id, d.clone());
                self.send(Job::Start(d));
            }
            Event::BlockReady {
                transfer,
                block,
                offset,
                data,
            } => self.send(Job::Block {
                transfer,
                block,
                offset,
                data,
            }),
            Event::SpillBlock(s) => self.send(Job::Spill(s)),
            Event::ReloadBlock {
                transfer,
                block,
                offset,
                len,
            } => self.send(Job::Reload {
                transfer,
                block,
                offset,
                len,
            }),
            Event::PassEnded {
                transfer,
                pass,
                passes,
                missing_blocks,
            } => {
                let name = self
                    .tracks
                    .get(&transfer)
                    .map(|d| d.name.to_string())
                    .unwrap_or_default();
                if passes != 0 && pass + 1 >= passes && missing_blocks > 0 {
                    warn!(%transfer, bundle = %name, missing_blocks,
                        "the sender's last pass ended with blocks missing; waiting for a resend until the transfer expires");
                } else {
                    info!(%transfer, bundle = %name, pass = pass + 1, passes, missing_blocks, "pass ended");
                }
            }
            Event::TransferComplete { descriptor } => {
                self.tracks.remove(&descriptor.transfer);
                self.publishing.insert(descriptor.transfer);
                self.send(Job::Complete { descriptor });
            }
            Event::TransferExpired {
                descriptor,
                missing,
            } => {
                self.tracks.remove(&descriptor.transfer);
                self.reserved.remove(&descriptor.transfer);
                let blocks_missing = missing.iter().map(|r| r.end - r.start).sum();
                self.record(Outcome {
                    transfer: descriptor.transfer.to_string(),
                    name: descriptor.name.to_string(),
                    size: descriptor.size,
                    at: now_rfc3339(),
                    verdict: Verdict::Expired { blocks_missing },
                    seconds: 0.0,
                    descriptor: descriptor.clone(),
                    attempt: 0,
                });
                self.send(Job::Expired {
                    descriptor,
                    missing,
                });
            }
            Event::Heartbeat { epoch, heartbeat } => {
                self.link.heartbeat(Instant::now(), epoch, heartbeat)
            }
            Event::SenderRestarted { previous, epoch } => {
                warn!(
                    previous = format!("{previous:016x}"),
                    epoch = format!("{epoch:016x}"),
                    "the sender restarted"
                );
            }
            Event::TransferRefused {
                descriptor: d,
                refusal,
            } => self.refused_by_limits(&d, refusal),
        }
    }

    /// Says which limit turned a transfer away, and what to change.
    fn refused_by_limits(&self, d: &TransferDescriptor, refusal: Refusal) {
        let size = ByteSize(d.size);
        match refusal {
            Refusal::TooLarge { limit } => {
                warn!(transfer = %d.transfer, bundle = %d.name, %size, limit = %ByteSize(limit),
                    "transfer refused: the bundle is larger than limits.max_bundle; raise it to receive this bundle");
                self.metrics.refused("max_bundle");
            }
            Refusal::BlocksTooBig { needed, share } => {
                warn!(transfer = %d.transfer, bundle = %d.name, %size,
                    needed = %ByteSize(needed), share = %ByteSize(share),
                    transfers = self.settings.transfers, memory = %ByteSize(self.settings.memory as u64),
                    "transfer refused: two interleave groups of its blocks need more than one transfer's share \
                     of limits.memory; raise limits.memory or lower limits.transfers (the sender's FEC \
                     settings make blocks this big)");
                self.metrics.refused("memory");
            }
        }
    }

    fn drain_replies(&mut self) {
        while let Ok(reply) = self.replies.try_recv() {
            match reply {
                Reply::Reloaded {
                    transfer,
                    block,
                    bytes: Some(bytes),
                } => self.core.reload(transfer, block, &bytes),
                Reply::Reloaded {
                    transfer,
                    block,
                    bytes: None,
                } => self.core.reload_failed(transfer, block),
                Reply::Reopen(state) => {
                    self.publishing.remove(&state.descriptor.transfer);
                    self.reopen.push_back((state, Reopen::Held));
                }
                Reply::StartFailed(d) => self.forget_transfer(d.transfer),
                Reply::SpillFailed { transfer, block } => self.core.reload_failed(transfer, block),
                Reply::Outcome(o) => {
                    if !matches!(o.verdict, Verdict::Deferred { .. }) {
                        self.reserved.remove(&o.descriptor.transfer);
                        self.publishing.remove(&o.descriptor.transfer);
                    }
                    match &o.verdict {
                        Verdict::Corrupt if o.descriptor.block_count == 0 => {
                            // An empty file cannot match another digest:
                            // the descriptor is false, and receiving it
                            // again would complete and fail at once, in a
                            // loop. Its next descriptor is judged afresh.
                            warn!(transfer = %o.descriptor.transfer, bundle = %o.descriptor.name,
                                "an empty transfer does not match its digest: its descriptor is false; not received again");
                            self.forget_transfer(o.descriptor.transfer);
                        }
                        Verdict::Corrupt | Verdict::Missing => {
                            // Receive it again from scratch, once the core
                            // has room for it.
                            let d = o.descriptor.clone();
                            if self.reopen.len() < self.reopen_limit() {
                                self.reopen
                                    .push_back((TransferState::new(d), Reopen::Start));
                            } else {
                                // Each entry is a transfer someone sent in
                                // full: a bound, not a loss. Its next
                                // descriptor starts it afresh.
                                warn!(transfer = %d.transfer, waiting = self.reopen.len(),
                                    "too many transfers wait to be received again; this one starts afresh at its next descriptor");
                                self.metrics.refused("reopen_queue");
                                self.forget_transfer(d.transfer);
                            }
                        }
                        Verdict::Deferred { .. } => {
                            let wait = RETRY_PUBLISH
                                .saturating_mul(1u32 << o.attempt.min(10))
                                .min(RETRY_PUBLISH_MAX);
                            self.deferred.push((
                                Instant::now() + wait,
                                PublishJob {
                                    descriptor: o.descriptor.clone(),
                                    attempt: o.attempt.saturating_add(1),
                                    verifier: None,
                                },
                            ));
                        }
                        Verdict::Quarantined { reasons } => {
                            for r in reasons {
                                self.metrics.verification_failure(r);
                            }
                        }
                        Verdict::Published { .. } => self.published += 1,
                        Verdict::Duplicate { .. } | Verdict::Expired { .. } => {}
                    }
                    self.record(o);
                }
            }
        }
        self.retry_reopen();
    }

    /// Forgets a transfer everywhere in the loop: its next descriptor
    /// starts it again.
    fn forget_transfer(&mut self, id: TransferId) {
        self.publishing.remove(&id);
        self.core.forget(id);
        self.core.forget_finished(id);
        self.tracks.remove(&id);
        self.reserved.remove(&id);
    }

    /// Most transfers waiting to be re-opened: a few per transfer slot.
    fn reopen_limit(&self) -> usize {
        self.settings.transfers.saturating_mul(4).max(16)
    }

    /// Imports the transfers waiting to be re-opened, as far as the core
    /// has room. A transfer the writer must reopen is handed to it only
    /// once the core took it, and before any of its events go out.
    fn retry_reopen(&mut self) {
        let now = Instant::now();
        while let Some((state, how)) = self.reopen.pop_front() {
            let d = state.descriptor.clone();
            match self.core.import_state(now, state.clone()) {
                Ok(()) => {
                    match how {
                        Reopen::Resume => self.send(Job::Resume(state)),
                        Reopen::Start => self.send(Job::Start(d.clone())),
                        Reopen::Held => {}
                    }
                    self.reserved.insert(d.transfer, d.size);
                    self.tracks.insert(d.transfer, d);
                }
                Err(weir_protocol::reassembler::StateError::NoRoom(_)) => {
                    self.reopen.push_front((state, how));
                    break;
                }
                Err(e) => {
                    error!(transfer = %d.transfer, "cannot re-open transfer, discarded: {e}");
                    if let Err(e) = self.spool.remove_partial(d.transfer) {
                        warn!(transfer = %d.transfer, "removing it: {e}");
                    }
                }
            }
        }
        self.drain_events();
    }

    fn record(&mut self, o: Outcome) {
        self.metrics.transfer(o.verdict.label());
        self.recent.push_front(o);
        self.recent.truncate(RECENT);
    }

    fn tick(&mut self, now: Instant) {
        let stats = self.core.stats();
        if let Some(state) = self.link.tick(now, stats.loss) {
            match state {
                LinkState::Up => {
                    info!(epoch = ?self.link.epoch.map(|e| format!("{e:016x}")), "link up: heartbeats arrive")
                }
                LinkState::Down => warn!("link down: no heartbeat from the sender"),
                LinkState::Waiting => {}
            }
        }
        let write_queue = ByteSize(self.settings.write_queue as u64);
        match self
            .drops
            .tick(self.stall, self.listener.kernel_drops(), now)
        {
            Some(Finding::DroppedWhileWaiting { new, total, waited }) => warn!(
                new,
                total,
                waited_for_disk = format!("{:.2}s", waited.as_secs_f64()),
                %write_queue,
                "the kernel dropped datagrams while receiving waited for the spool disk \
                 (the write queue, limits.write_queue, was full); a later pass brings what \
                 was lost. If it recurs, the disk writes slower than the link delivers: \
                 lower the sender's link.rate below its write speed or give the spool a \
                 faster disk (a larger limits.write_queue only absorbs shorter pauses)"
            ),
            Some(Finding::Dropped { new, total }) => warn!(
                new,
                total, "the kernel dropped datagrams: the socket buffer was full"
            ),
            Some(Finding::Waited {
                waited,
                drops_readable,
            }) => {
                let waited_for_disk = format!("{:.2}s", waited.as_secs_f64());
                if drops_readable {
                    warn!(%waited_for_disk, %write_queue,
                        "receiving waited for the spool disk (the write queue, limits.write_queue, \
                         was full); nothing was lost: the socket buffer held what arrived meanwhile");
                } else {
                    warn!(%waited_for_disk, %write_queue,
                        "receiving waited for the spool disk (the write queue, limits.write_queue, \
                         was full); the kernel's drop counter cannot be read here, so datagrams \
                         may have been lost meanwhile (a later pass brings them)");
                }
            }
            None => {}
        }
        let due: Vec<PublishJob> = {
            let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.deferred)
                .into_iter()
                .partition(|(t, _)| *t <= now);
            self.deferred = later;
            due.into_iter().map(|(_, j)| j).collect()
        };
        for job in due {
            if let Some(tx) = &self.publish {
                let _ = tx.send(job);
            }
        }
        self.retry_reopen();
        if let Some(descriptors) = self.too_many.due(stats.dropped.too_many_transfers, now) {
            warn!(
                limit = self.settings.transfers,
                descriptors,
                "limits.transfers reached: new transfers wait for one to finish (a later pass brings them)"
            );
        }
        if let Some(frames) = self.foreign_version.due(stats.dropped.unsupported, now) {
            warn!(
                frames,
                speaks = weir_protocol::wire::VERSION,
                "frames of another weir wire version (or of an unknown kind) arrive and are dropped: \
                 run the same weir release on both sides of the link"
            );
        }
        let reading = Reading {
            core: stats,
            heartbeat_age: self.link.since_heartbeat(now).map(|d| d.as_secs_f64()),
            link_up: self.link.state() == LinkState::Up,
            kernel_drops: self.drops.kernel_drops(),
            in_flight: self.core.transfers_in_flight(),
            incoming_bytes: self.reserved(),
            memory: self.core.memory_in_use(),
            write_queue: self.shared.queue_bytes.load(Ordering::Relaxed),
            stall_seconds: self.stall.as_secs_f64(),
            disk_errors: self.shared.disk_errors.load(Ordering::Relaxed),
            blocks_written: self.shared.blocks_written.load(Ordering::Relaxed),
            loss_1m: self.link.loss_last_minute(),
        };
        self.metrics.update(&reading);
    }

    fn snapshot(&self) -> Snapshot {
        let now = Instant::now();
        let stats = self.core.stats();
        let mut transfers: Vec<TransferProgress> = self
            .tracks
            .values()
            .map(|d| {
                let (done, blocks) = self.core.progress(d.transfer).unwrap_or((0, d.block_count));
                TransferProgress {
                    transfer: d.transfer.to_string(),
                    name: d.name.to_string(),
                    size: d.size,
                    blocks_done: done,
                    blocks,
                }
            })
            .collect();
        transfers.sort_by(|a, b| a.transfer.cmp(&b.transfer));
        Snapshot {
            written_unix: unix_now(),
            pid: std::process::id(),
            listen: self
                .listener
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_default(),
            metrics: self.metrics_addr.map(|a| a.to_string()),
            link: match self.link.state() {
                LinkState::Up => "up",
                LinkState::Down => "down",
                LinkState::Waiting => "waiting",
            }
            .into(),
            heartbeat_age_seconds: self.link.since_heartbeat(now).map(|d| d.as_secs_f64()),
            sender_epoch: self.link.epoch.map(|e| format!("{e:016x}")),
            sender_queue: self.link.last.map(|h| h.queue_len),
            sender_restarts: stats.loss.sender_restarts,
            loss_last_minute: self.link.loss_last_minute(),
            frames: stats.datagrams,
            kernel_drops: self.drops.kernel_drops(),
            transfers,
            recent: self
                .recent
                .iter()
                .filter_map(|o| serde_json::to_value(o).ok())
                .collect(),
        }
    }

    /// Updates the service status line and hands a snapshot to the status
    /// file's writer; at shutdown (`last`), waits until it is written.
    fn write_status(&mut self, last: bool) {
        let s = self.snapshot();
        let line = format!(
            "link {}, loss {:.2}% (1 min), {} transfer(s) in flight, {} published",
            s.link,
            s.loss_last_minute * 100.0,
            s.transfers.len(),
            self.published
        );
        let _ = sd_notify::notify(&[NotifyState::Status(&line)]);
        match serde_json::to_vec_pretty(&s) {
            Ok(json) if last => self.status.finish(json),
            Ok(json) => self.status.offer(json),
            Err(e) => warn!("rendering the status: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_throttled_counter_warns_on_growth_at_most_once_a_minute() {
        let t0 = Instant::now();
        let mut t = Throttled::default();
        assert_eq!(t.due(0, t0), None);
        assert_eq!(t.due(5, t0), Some(5));
        assert_eq!(t.due(7, t0 + Duration::from_secs(10)), None);
        assert_eq!(t.due(7, t0 + Duration::from_secs(61)), Some(2));
        assert_eq!(t.due(7, t0 + Duration::from_secs(200)), None);
        assert_eq!(t.due(8, t0 + Duration::from_secs(200)), Some(1));
    }
}
