//! The writer thread: puts rebuilt blocks into partial files, records which
//! ones are on disk, and hands complete files to the publisher.
//!
//! ```text
//!  receive loop ──Job──▶ writer ──▶ incoming/<id>.part   (pwrite at offset)
//!       ▲                  │  every checkpoint: fsync part, then <id>.state
//!       │                  │  complete + all on disk ──▶ publisher
//!       └────Reply─────────┘  reloads; transfers whose blocks could not be
//!                             stored (disk full) go back to be re-opened
//! ```
//!
//! The state file only ever claims blocks that were fsynced before it was
//! written, so after a crash the worst case is re-receiving blocks that
//! were on disk but not yet recorded.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant, SystemTime};

use crate::trust_file::TrustWatch;
use bytes::Bytes;
use serde::Serialize;
use tracing::{error, info, warn};
use weir_protocol::{SpilledBlock, TransferDescriptor, TransferId, TransferState};

use super::Shared;
use super::direct::{self, ALIGN, Bounce, round_up};
use super::publish::PublishJob;
use super::recycle::Recycle;
use super::streaming::{Handoffs, Verifier};
use crate::spool::{Spool, keep_newest_reports};
use weir_host::atomic::{prepare_atomic, sync_dir, write_atomic};

/// Most blocks written with one request.
const MAX_RUN: usize = 16;

/// A block that can go to disk with direct I/O straight from its buffer.
fn direct_whole(offset: u64, data: &[u8]) -> bool {
    offset.is_multiple_of(ALIGN)
        && (data.len() as u64).is_multiple_of(ALIGN)
        && data.as_ptr().align_offset(ALIGN as usize) == 0
}

/// Whether `job` is a whole block of the same transfer right after the
/// last one of `run`.
fn follows(run: &[Job], job: &Job) -> bool {
    match (run.last(), job) {
        (
            Some(Job::Block {
                transfer: t0,
                offset: o0,
                data: d0,
                ..
            }),
            Job::Block {
                transfer,
                offset,
                data,
                ..
            },
        ) => t0 == transfer && o0 + d0.len() as u64 == *offset && direct_whole(*offset, data),
        _ => false,
    }
}

/// Work for the writer, in the order the core produced it.
#[derive(Debug)]
pub enum Job {
    /// A new transfer: create its partial file.
    Start(TransferDescriptor),
    /// A transfer resumed from a saved state: reopen its partial file.
    Resume(TransferState),
    /// A whole block.
    Block {
        /// The transfer.
        transfer: TransferId,
        /// Block index.
        block: u32,
        /// Byte offset.
        offset: u64,
        /// The bytes.
        data: Bytes,
    },
    /// Data shards of an incomplete block.
    Spill(SpilledBlock),
    /// Read a spilled block back.
    Reload {
        /// The transfer.
        transfer: TransferId,
        /// Block index.
        block: u32,
        /// Byte offset.
        offset: u64,
        /// Bytes to read.
        len: usize,
    },
    /// The core has every block.
    Complete {
        /// The transfer.
        descriptor: TransferDescriptor,
    },
    /// Nothing arrived for the expiry time.
    Expired {
        /// The transfer.
        descriptor: TransferDescriptor,
        /// Blocks that never arrived.
        missing: Vec<Range<u32>>,
    },
    /// Save every state now (before a shutdown).
    Checkpoint,
}

impl Job {
    /// Bytes this job holds while queued.
    pub fn cost(&self) -> usize {
        match self {
            Job::Block { data, .. } => data.len(),
            Job::Spill(s) => s.data.len(),
            _ => 0,
        }
    }
}

/// What the writer tells the receive loop.
#[derive(Debug)]
pub enum Reply {
    /// A spilled block read back (or not).
    Reloaded {
        /// The transfer.
        transfer: TransferId,
        /// Block index.
        block: u32,
        /// Its bytes, or `None` if they could not be read.
        bytes: Option<Vec<u8>>,
    },
    /// The core thought this transfer complete, but some blocks never
    /// reached the disk: receive them again.
    Reopen(TransferState),
    /// The partial file could not be created: the transfer must start
    /// afresh with its next descriptor.
    StartFailed(TransferDescriptor),
    /// Shards of a spilled block could not be written: the core must not
    /// count on them.
    SpillFailed {
        /// The transfer.
        transfer: TransferId,
        /// Block index.
        block: u32,
    },
    /// What became of a complete transfer.
    Outcome(super::publish::Outcome),
}

/// One partial file.
#[derive(Debug)]
struct Part {
    file: File,
    /// The same file opened for direct I/O, for whole aligned blocks.
    direct: Option<File>,
    /// Verifies the file as its blocks land, from the start.
    verifier: Option<Verifier>,
    /// The first block not yet written: everything before it can be read.
    next_block: u32,
    /// Which incarnation of the transfer this is, for the checkpointer.
    generation: u64,
    state: TransferState,
    /// Blocks or shards written since the last checkpoint.
    dirty: bool,
}

impl Part {
    /// Moves the verifier's mark past every block written without a gap.
    fn advance(&mut self) {
        let d = &self.state.descriptor;
        while self.next_block < d.block_count && self.state.is_done(self.next_block) {
            self.next_block += 1;
        }
        if let Some(v) = &self.verifier {
            let ready = d.block_offset(self.next_block).min(d.size);
            v.advance(ready);
        }
    }
}

/// Saves transfer states off the writer thread: an fsync can take a good
/// part of a second on a busy disk, and the writer must keep draining its
/// queue meanwhile.
///
/// A state is only written while its transfer is still the one the writer
/// holds (same generation): a late checkpoint must never describe a
/// partial file that was removed or started afresh since.
#[derive(Debug, Clone, Default)]
pub struct Live(Arc<Mutex<LiveMap>>);

/// Generations, and transfers whose file lost data in a failed fsync.
#[derive(Debug, Default)]
struct LiveMap {
    generations: HashMap<TransferId, u64>,
    /// An fsync failed: pages written may be lost, whatever later fsyncs
    /// say (the kernel reports a writeback error once). Such a transfer is
    /// received again rather than published.
    poisoned: std::collections::HashSet<TransferId>,
}

impl Live {
    /// A new generation for `id` (started, or gone when `alive` is false).
    fn bump(&self, id: TransferId, alive: bool) -> u64 {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let generation = NEXT.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut m) = self.0.lock() {
            if alive {
                m.generations.insert(id, generation);
                m.poisoned.remove(&id);
            } else {
                m.generations.remove(&id);
            }
        }
        generation
    }

    fn poison(&self, id: TransferId) {
        if let Ok(mut m) = self.0.lock() {
            m.poisoned.insert(id);
        }
    }

    fn is_poisoned(&self, id: TransferId) -> bool {
        self.0.lock().is_ok_and(|m| m.poisoned.contains(&id))
    }
}

/// A state to save: the file to fsync first, then the state.
struct Checkpoint {
    id: TransferId,
    generation: u64,
    file: File,
    state: TransferState,
}

/// The checkpoint thread's loop.
fn checkpointer(spool: Spool, live: Live, shared: Arc<Shared>, jobs: Receiver<Checkpoint>) {
    for c in jobs {
        if let Err(e) = c.file.sync_data() {
            live.poison(c.id);
            shared.disk_errors.fetch_add(1, Ordering::Relaxed);
            warn!(transfer = %c.id, "flushing the partial file: {e}; the transfer will be received again");
            continue;
        }
        // The slow part (write, fsync) outside the lock; only the rename,
        // which makes the state current, under it.
        let result = serde_json::to_vec(&c.state)
            .map_err(std::io::Error::other)
            .and_then(|json| prepare_atomic(&spool.incoming, &spool.state(c.id), &json))
            .and_then(|tmp| {
                let guard = live
                    .0
                    .lock()
                    .map_err(|_| std::io::Error::other("lock poisoned"))?;
                let current = guard.generations.get(&c.id) == Some(&c.generation);
                let r = if current {
                    std::fs::rename(&tmp, spool.state(c.id))
                } else {
                    std::fs::remove_file(&tmp)
                };
                drop(guard);
                r?;
                sync_dir(&spool.incoming)
            });
        if let Err(e) = result {
            shared.disk_errors.fetch_add(1, Ordering::Relaxed);
            warn!(transfer = %c.id, "saving the transfer state: {e}");
        }
    }
}

/// A transfer that expired incomplete, as reported in `failed/`.
#[derive(Debug, Serialize)]
pub struct FailedReport {
    /// Transfer id.
    pub transfer: String,
    /// The file name the sender gave.
    pub name: String,
    /// Its size.
    pub size: u64,
    /// Its transfer digest.
    pub digest: String,
    /// Blocks in the transfer.
    pub blocks: u32,
    /// Blocks that were on disk.
    pub blocks_received: u32,
    /// Blocks that never arrived, as half-open ranges.
    pub missing: Vec<Range<u32>>,
    /// Why it failed.
    pub reason: String,
    /// When (RFC 3339).
    pub at: String,
}

/// The writer thread's state.
#[derive(Debug)]
pub struct Writer {
    spool: Spool,
    parts: HashMap<TransferId, Part>,
    replies: Sender<Reply>,
    publish: Sender<PublishJob>,
    shared: Arc<Shared>,
    checkpoint: Duration,
    expiry: Duration,
    /// Last disk error logged, to keep a full disk from flooding the log.
    last_error_log: Option<Instant>,
    /// Complete transfers whose state could not be saved (disk full):
    /// retried at every checkpoint.
    unsaved: Vec<TransferDescriptor>,
    /// Aligned buffer for direct writes.
    bounce: Bounce,
    /// Write whole blocks with direct I/O where the filesystem allows.
    direct_io: bool,
    /// The trust store, for the verifiers.
    trust: Arc<TrustWatch>,
    /// Generations of the transfers held.
    live: Live,
    /// Periodic checkpoints go to this thread.
    checkpoints: Option<std::sync::mpsc::SyncSender<Checkpoint>>,
    /// Where written blocks' buffers go back for reuse.
    recycle: Option<Recycle>,
    /// What the verifiers hold of blocks handed to them in memory.
    handoffs: Handoffs,
}

impl Writer {
    /// A writer over `spool`.
    pub fn new(
        spool: Spool,
        trust: Arc<TrustWatch>,
        replies: Sender<Reply>,
        publish: Sender<PublishJob>,
        shared: Arc<Shared>,
        checkpoint: Duration,
        expiry: Duration,
    ) -> Self {
        Self {
            spool,
            parts: HashMap::new(),
            replies,
            publish,
            shared,
            checkpoint,
            expiry,
            last_error_log: None,
            unsaved: Vec::new(),
            bounce: Bounce::default(),
            direct_io: true,
            trust,
            live: Live::default(),
            checkpoints: None,
            recycle: None,
            handoffs: Handoffs::default(),
        }
    }

    /// Gives written blocks' buffers back through `recycle` (and has the
    /// verifiers do the same).
    pub fn recycling(mut self, recycle: Recycle) -> Self {
        self.recycle = Some(recycle);
        self
    }

    /// Writes every block through the page cache (for tests and
    /// filesystems where direct I/O is slow).
    pub fn without_direct_io(mut self) -> Self {
        self.direct_io = false;
        self
    }

    /// Runs until the job channel closes, then saves every state.
    pub fn run(mut self, jobs: Receiver<Job>) {
        // Tells the receive loop if this thread ends, even by a panic, so
        // that it does not wait forever on a queue nobody drains.
        struct Alive(Arc<Shared>);
        impl Drop for Alive {
            fn drop(&mut self) {
                self.0.writer_gone.store(true, Ordering::Relaxed);
            }
        }
        let _alive = Alive(self.shared.clone());
        let (tx, rx) = std::sync::mpsc::sync_channel(16);
        let checkpoints = {
            let (spool, live, shared) =
                (self.spool.clone(), self.live.clone(), self.shared.clone());
            std::thread::Builder::new()
                .name("checkpoint".into())
                .spawn(move || checkpointer(spool, live, shared, rx))
        };
        match checkpoints {
            Ok(_) => self.checkpoints = Some(tx),
            Err(e) => warn!("no checkpoint thread ({e}); checkpoints run on the writer"),
        }
        let mut next_checkpoint = Instant::now() + self.checkpoint;
        loop {
            let wait = next_checkpoint.saturating_duration_since(Instant::now());
            match jobs.recv_timeout(wait) {
                Ok(job) => {
                    let mut next = Some(job);
                    while let Some(job) = next.take() {
                        // Blocks that follow each other in the file, as a
                        // group's do when they complete together, go to
                        // disk in one request.
                        let grows = self.starts_run(&job);
                        let mut run = vec![job];
                        while grows && run.len() < MAX_RUN {
                            match jobs.try_recv() {
                                Ok(j) if follows(&run, &j) => run.push(j),
                                Ok(j) => {
                                    next = Some(j);
                                    break;
                                }
                                Err(_) => break,
                            }
                        }
                        let cost = run.iter().map(Job::cost).sum();
                        self.handle_run(run);
                        self.shared.queue_bytes.fetch_sub(cost, Ordering::Relaxed);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if Instant::now() >= next_checkpoint {
                self.checkpoint_all(false);
                next_checkpoint = Instant::now() + self.checkpoint;
            }
        }
        // At shutdown, save every state here and now.
        self.checkpoints = None;
        self.checkpoint_all(true);
        for (_, p) in self.parts.drain() {
            if let Some(v) = p.verifier {
                v.cancel();
            }
        }
    }

    /// Starts a verifier on a partial file, if a thread can be had (the
    /// publisher reads the file itself otherwise).
    fn verifier(&self, d: &TransferDescriptor) -> Option<Verifier> {
        match Verifier::spawn(
            &self.spool.part(d.transfer),
            d.size,
            self.trust.current(),
            self.recycle.clone(),
            self.handoffs.clone(),
        ) {
            Ok(v) => Some(v),
            Err(e) => {
                warn!(transfer = %d.transfer, "no verifier while receiving ({e}); verifying at the end");
                None
            }
        }
    }

    /// Whether `job` can start a run: a whole aligned block of a transfer
    /// whose file takes direct writes.
    fn starts_run(&self, job: &Job) -> bool {
        match job {
            Job::Block {
                transfer,
                offset,
                data,
                ..
            } => {
                direct_whole(*offset, data)
                    && self.parts.get(transfer).is_some_and(|p| p.direct.is_some())
            }
            _ => false,
        }
    }

    /// Writes a run of contiguous whole blocks with one direct request
    /// (or handles a single job as usual). If the run's write fails, each
    /// block is handled alone, which sorts out the error.
    fn handle_run(&mut self, mut run: Vec<Job>) {
        if run.len() < 2 {
            if let Some(job) = run.pop() {
                self.handle(job);
            }
            return;
        }
        let (transfer, offset) = match run.first() {
            Some(Job::Block {
                transfer, offset, ..
            }) => (*transfer, *offset),
            // Runs start with a block (`starts_run`); anything else is
            // handled job by job, never dropped.
            _ => {
                for job in run {
                    self.handle(job);
                }
                return;
            }
        };
        let written = self
            .parts
            .get(&transfer)
            .and_then(|p| p.direct.as_ref())
            .map(|d| {
                let mut slices: Vec<std::io::IoSlice<'_>> = run
                    .iter()
                    .filter_map(|j| match j {
                        Job::Block { data, .. } => Some(std::io::IoSlice::new(data)),
                        _ => None,
                    })
                    .collect();
                direct::write_all_vectored_at(d, &mut slices, offset)
            });
        if !matches!(written, Some(Ok(()))) {
            for job in run {
                self.handle(job);
            }
            return;
        }
        for job in run {
            if let Job::Block {
                transfer,
                block,
                offset,
                data,
            } = job
            {
                self.block_written(transfer, block, offset, data);
            }
        }
    }

    /// Bookkeeping once a block is on disk.
    fn block_written(&mut self, transfer: TransferId, block: u32, offset: u64, data: Bytes) {
        let Some(p) = self.parts.get_mut(&transfer) else {
            return;
        };
        p.state.set_done(block);
        p.dirty = true;
        self.shared.blocks_written.fetch_add(1, Ordering::Relaxed);
        if block == p.next_block {
            // The verifier reads it next: hand it over (it gives the
            // buffer back once read).
            if let Some(v) = &p.verifier {
                v.hand_over(offset, data.clone());
            }
            p.advance();
        }
        // Ours goes back too: whichever copy is the last one held is the
        // one the core can reuse.
        if let Some(r) = &self.recycle {
            r.give(data);
        }
    }

    fn handle(&mut self, job: Job) {
        match job {
            Job::Start(d) => self.start(d),
            Job::Resume(state) => self.resume(state),
            Job::Block {
                transfer,
                block,
                offset,
                data,
            } => {
                let Some(p) = self.parts.get_mut(&transfer) else {
                    return;
                };
                let size = p.state.descriptor.size;
                let direct = p.direct.as_ref().filter(|_| {
                    // Whole aligned blocks, and the last one (its padding
                    // lies beyond the end of the file, cut at completion).
                    offset.is_multiple_of(ALIGN)
                        && ((data.len() as u64).is_multiple_of(ALIGN)
                            || offset + data.len() as u64 == size)
                });
                let written = match direct {
                    Some(d) => self.bounce.write_at(d, &data, offset).or_else(|e| {
                        // EINVAL: direct I/O refused after all; use the
                        // page cache for this file from now on.
                        if e.raw_os_error() == Some(libc::EINVAL) {
                            p.direct = None;
                            p.file.write_all_at(&data, offset)
                        } else {
                            Err(e)
                        }
                    }),
                    None => p.file.write_all_at(&data, offset),
                };
                match written {
                    Ok(()) => self.block_written(transfer, block, offset, data),
                    Err(e) => self.disk_error(transfer, "writing a block", &e),
                }
            }
            Job::Spill(s) => {
                let Some(p) = self.parts.get_mut(&s.transfer) else {
                    return;
                };
                let mut result = Ok(());
                for (offset, bytes) in s.segments() {
                    result = result.and_then(|()| p.file.write_all_at(bytes, offset));
                }
                match result {
                    Ok(()) => {
                        p.state.add_spilled(&s);
                        p.dirty = true;
                    }
                    Err(e) => {
                        self.disk_error(s.transfer, "parking an incomplete block", &e);
                        let _ = self.replies.send(Reply::SpillFailed {
                            transfer: s.transfer,
                            block: s.block,
                        });
                    }
                }
            }
            Job::Reload {
                transfer,
                block,
                offset,
                len,
            } => {
                let bytes = self.parts.get(&transfer).and_then(|p| {
                    let mut buf = vec![0u8; len];
                    p.file.read_exact_at(&mut buf, offset).ok().map(|()| buf)
                });
                let _ = self.replies.send(Reply::Reloaded {
                    transfer,
                    block,
                    bytes,
                });
            }
            Job::Complete { descriptor } => self.complete(descriptor),
            Job::Expired {
                descriptor,
                missing,
            } => self.expired(descriptor, missing),
            Job::Checkpoint => self.checkpoint_all(true),
        }
    }

    fn start(&mut self, d: TransferDescriptor) {
        let id = d.transfer;
        let path = self.spool.part(id);
        // Never truncate in place: a leftover partial file may be the very
        // inode a crash left linked into staging/ or quarantine/.
        if let Some(old) = self.parts.remove(&id).and_then(|p| p.verifier) {
            old.cancel();
        }
        self.live.bump(id, false);
        let opened = self
            .spool
            .remove_partial(id)
            .and_then(|()| {
                OpenOptions::new()
                    .create_new(true)
                    .read(true)
                    .write(true)
                    .open(&path)
            })
            // Room for the last block's padding; cut at completion.
            .and_then(|f| f.set_len(round_up(d.size)).map(|()| f));
        match opened {
            Ok(file) => {
                let direct = self.direct_io.then(|| direct::open(&path)).flatten();
                info!(transfer = %id, bundle = %d.name, bytes = d.size, blocks = d.block_count,
                    direct_io = direct.is_some(), "receiving");
                let verifier = self.verifier(&d);
                let generation = self.live.bump(id, true);
                self.parts.insert(
                    id,
                    Part {
                        file,
                        direct,
                        verifier,
                        next_block: 0,
                        generation,
                        state: TransferState::new(d),
                        dirty: true,
                    },
                );
            }
            Err(e) => {
                self.disk_error(id, "creating the partial file", &e);
                let _ = std::fs::remove_file(&path);
                let _ = self.replies.send(Reply::StartFailed(d));
            }
        }
    }

    fn resume(&mut self, state: TransferState) {
        let id = state.descriptor.transfer;
        let path = self.spool.part(id);
        match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(file) => {
                let direct = self.direct_io.then(|| direct::open(&path)).flatten();
                let verifier = self.verifier(&state.descriptor);
                let generation = self.live.bump(id, true);
                let mut part = Part {
                    file,
                    direct,
                    verifier,
                    next_block: 0,
                    generation,
                    state,
                    dirty: false,
                };
                part.advance();
                self.parts.insert(id, part);
            }
            Err(e) => self.disk_error(id, "reopening the partial file", &e),
        }
    }

    fn complete(&mut self, descriptor: TransferDescriptor) {
        let id = descriptor.transfer;
        let Some(mut p) = self.parts.remove(&id) else {
            // Never had a partial file (it could not be created, and that
            // was reported): the next descriptor starts it afresh.
            let _ = self.replies.send(Reply::StartFailed(descriptor));
            return;
        };
        if !p.state.is_complete() {
            let missing = p.state.descriptor.block_count - p.state.blocks_done();
            warn!(transfer = %id, bundle = %descriptor.name, missing,
                "blocks could not be stored; the transfer stays open for the next pass");
            p.dirty = true;
            let state = p.state.clone();
            self.save(id, &mut p);
            self.parts.insert(id, p);
            let _ = self.replies.send(Reply::Reopen(state));
            return;
        }
        if self.live.is_poisoned(id) {
            // A flush failed earlier: what is on disk cannot be trusted.
            error!(transfer = %id, bundle = %descriptor.name,
                "a disk write of this transfer failed; receiving it again");
            if let Some(v) = p.verifier.take() {
                v.cancel();
            }
            self.live.bump(id, false);
            if let Err(e) = self.spool.remove_partial(id) {
                self.disk_error(id, "removing the partial file", &e);
            }
            let _ = self.replies.send(Reply::StartFailed(descriptor));
            return;
        }
        p.dirty = true;
        // No checkpoint may write a state from now on: the one saved here
        // is the last (a late one could claim fewer blocks for a file the
        // publisher is about to link).
        self.live.bump(id, false);
        // Cut the padding of the last block.
        if let Err(e) = p.file.set_len(descriptor.size) {
            self.disk_error(id, "cutting the partial file to size", &e);
            self.parts.insert(id, p);
            self.unsaved.push(descriptor);
            return;
        }
        if !self.save(id, &mut p) {
            // Not durable yet: keep it and retry at the next checkpoint.
            self.parts.insert(id, p);
            self.unsaved.push(descriptor);
            return;
        }
        let _ = self.publish.send(PublishJob {
            descriptor,
            attempt: 0,
            verifier: p.verifier.take(),
        });
    }

    fn expired(&mut self, d: TransferDescriptor, missing: Vec<Range<u32>>) {
        let id = d.transfer;
        let received = match self.parts.remove(&id) {
            Some(p) => {
                if let Some(v) = p.verifier {
                    v.cancel();
                }
                p.state.blocks_done()
            }
            None => 0,
        };
        self.live.bump(id, false);
        let lacking: u32 = missing.iter().map(|r| r.end - r.start).sum();
        let report = FailedReport {
            transfer: id.to_string(),
            name: d.name.to_string(),
            size: d.size,
            digest: d.digest().to_hex().to_string(),
            blocks: d.block_count,
            blocks_received: received,
            missing,
            reason: format!(
                "expired: nothing received for {}",
                humantime::format_duration(self.expiry)
            ),
            at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        };
        let dest = self.spool.failed.join(format!("{id}.json"));
        let written = serde_json::to_vec_pretty(&report)
            .map_err(std::io::Error::other)
            .and_then(|json| write_atomic(&self.spool.incoming, &dest, &json));
        if let Err(e) = written {
            self.disk_error(id, "writing the failure report", &e);
        }
        keep_newest_reports(&self.spool.failed, ".json", &[]);
        if let Err(e) = self.spool.remove_partial(id) {
            self.disk_error(id, "removing the partial file", &e);
        }
        error!(transfer = %id, bundle = %d.name, blocks_missing = lacking, blocks = d.block_count,
            report = %dest.display(), "transfer expired incomplete");
    }

    /// Saves the state of every transfer that changed: here when `now`,
    /// else through the checkpoint thread where it is free.
    fn checkpoint_all(&mut self, now: bool) {
        for descriptor in std::mem::take(&mut self.unsaved) {
            self.complete(descriptor);
        }
        let ids: Vec<TransferId> = self
            .parts
            .iter()
            .filter(|(_, p)| p.dirty)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let Some(mut p) = self.parts.remove(&id) else {
                continue;
            };
            let queued = !now
                && self.checkpoints.as_ref().is_some_and(|tx| {
                    p.file.try_clone().is_ok_and(|file| {
                        tx.try_send(Checkpoint {
                            id,
                            generation: p.generation,
                            file,
                            state: p.state.clone(),
                        })
                        .is_ok()
                    })
                });
            if queued {
                p.dirty = false;
            } else if now {
                self.save(id, &mut p);
            }
            self.parts.insert(id, p);
        }
    }

    /// Fsyncs the partial file, then records its state. False on error.
    fn save(&mut self, id: TransferId, p: &mut Part) -> bool {
        if let Err(e) = p.file.sync_data() {
            self.live.poison(id);
            self.disk_error(id, "flushing the partial file", &e);
            return false;
        }
        let result = serde_json::to_vec(&p.state)
            .map_err(std::io::Error::other)
            .and_then(|json| write_atomic(&self.spool.incoming, &self.spool.state(id), &json));
        match result {
            Ok(()) => {
                p.dirty = false;
                true
            }
            Err(e) => {
                self.disk_error(id, "saving the transfer state", &e);
                false
            }
        }
    }

    fn disk_error(&mut self, id: TransferId, what: &str, e: &std::io::Error) {
        self.shared.disk_errors.fetch_add(1, Ordering::Relaxed);
        let quiet = self
            .last_error_log
            .is_some_and(|t| t.elapsed() < Duration::from_secs(10));
        if !quiet {
            let hint = if e.raw_os_error() == Some(28) {
                " (disk full: the transfer stays pending and completes on a later pass once space returns)"
            } else {
                ""
            };
            error!(transfer = %id, dir = %self.spool.incoming.display(), "{what}: {e}{hint}");
            self.last_error_log = Some(Instant::now());
        }
    }
}
