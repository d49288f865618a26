//! The receiver's state machine: datagrams in, file blocks and outcomes out.
//!
//! ```text
//!  handle_datagram(now, bytes)
//!     │  decode + integrity check ──✗──▶ dropped (counted by reason)
//!     │  sequence number ──────────dup─▶ dropped
//!     ▼
//!  descriptor ─▶ transfer table (≤ max_transfers)
//!  shard ──────▶ pending block (K slots of shard size; parity parks in
//!     │          the slots of missing data shards)
//!     │  K shards ─▶ FEC decode if needed ─▶ Event::BlockReady ─▶ driver writes
//!     │  memory budget full ─▶ Event::SpillBlock (driver writes the data
//!     │          shards it has; a later pass brings fresh parity, and
//!     │          Event::ReloadBlock asks for them back)
//!     ▼
//!  all blocks ─▶ Event::TransferComplete (the driver checks the transfer
//!                digest of the file it wrote); idle too long
//!                ─▶ Event::TransferExpired
//! ```
//!
//! Memory is bounded by [`ReassemblerConfig::max_memory`]: each transfer
//! may hold `max_memory / max_transfers` bytes of blocks, whatever its size.
//! Beyond that it spills incomplete blocks to the driver, which writes the
//! data shards where they belong in the partial file anyway. Per transfer,
//! the core also keeps one bit per block (done) and, for spilled blocks,
//! one bit per data shard.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ops::Range;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::control::{EndOfPass, Heartbeat};
use crate::descriptor::{MAX_TRANSFER_LEN, TransferDescriptor, TransferId};
use crate::fec::{BlockDecoder, Slot};
use crate::loss::{LossMeter, LossStats, SeqVerdict};
use crate::wire::{DecodeError, FrameKind, FrameRef, HEADER_LEN, Header, Integrity, decode_frame};

// Maps consulted for every frame use foldhash, measured faster for the
// whole reassembler than std's SipHash (BENCHMARKS.md). Each map draws a
// random seed, so keys that collide cannot be computed offline (block
// indices come from whoever describes a transfer, and a descriptor of tiny
// blocks allows millions of them); learning the seed takes observing the
// receiver's hashing, and nothing comes back over a diode. It is not a
// keyed MAC, though, so the finished set (thousands of ids from anyone on
// the link) and the refusal log keep SipHash.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
type FastSet<K> = HashSet<K, foldhash::fast::RandomState>;

/// Limits and keys of a reassembler, fixed at start.
#[derive(Debug, Clone)]
pub struct ReassemblerConfig {
    /// CRC32C, or the link key whose MAC every frame must carry.
    pub integrity: Integrity,
    /// Transfers held at once; descriptors of further ones are dropped
    /// (and counted) until one completes or expires.
    pub max_transfers: usize,
    /// Bytes of block buffers held across all transfers.
    pub max_memory: usize,
    /// A transfer that receives nothing for this long expires.
    pub transfer_expiry: Duration,
    /// Completed transfer ids remembered, so that their frames in later
    /// passes are dropped cheaply.
    pub remember_finished: usize,
    /// Largest transfer accepted.
    pub max_transfer_size: u64,
    /// Bytes of shard frames kept while their transfer's descriptor has
    /// not been seen (it was lost, or the receiver started mid-transfer);
    /// they are replayed when it arrives. Part of `max_memory`.
    pub limbo_memory: usize,
}

impl Default for ReassemblerConfig {
    fn default() -> Self {
        Self {
            integrity: Integrity::Crc32c,
            max_transfers: 4,
            max_memory: 96 << 20,
            transfer_expiry: Duration::from_secs(600),
            remember_finished: 4096,
            max_transfer_size: MAX_TRANSFER_LEN,
            limbo_memory: 2 << 20,
        }
    }
}

/// Work for the driver and news for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A transfer was seen for the first time (or anew after expiry): the
    /// driver prepares a partial file of `size` bytes.
    TransferStarted(TransferDescriptor),
    /// A block is whole: write `data` at `offset`.
    BlockReady {
        /// The transfer.
        transfer: TransferId,
        /// Block index.
        block: u32,
        /// Byte offset in the file.
        offset: u64,
        /// The block's bytes (the last block is cut to the file size).
        data: Bytes,
    },
    /// A block is incomplete and memory is needed elsewhere: write
    /// [`SpilledBlock::segments`] into the partial file. A later pass will
    /// bring parity, and [`Event::ReloadBlock`] will ask for them back.
    SpillBlock(SpilledBlock),
    /// A spilled block can now be rebuilt: read `len` bytes at `offset` of
    /// the partial file and hand them to [`Reassembler::reload`].
    ReloadBlock {
        /// The transfer.
        transfer: TransferId,
        /// Block index.
        block: u32,
        /// Byte offset in the file.
        offset: u64,
        /// Bytes to read (the block's true length).
        len: usize,
    },
    /// The sender finished a pass over a transfer; `missing_blocks` were
    /// not yet rebuilt and wait for a later pass.
    PassEnded {
        /// The transfer.
        transfer: TransferId,
        /// The pass that ended.
        pass: u32,
        /// Passes the sender plans (0: open-ended).
        passes: u32,
        /// Blocks still missing.
        missing_blocks: u32,
    },
    /// Every block was delivered. The core never sees the file whole: the
    /// driver checks its transfer digest (the receiver does so while the
    /// blocks arrive, as it verifies the bundle).
    TransferComplete {
        /// The transfer.
        descriptor: TransferDescriptor,
    },
    /// Nothing arrived for the expiry time; these blocks never arrived.
    TransferExpired {
        /// The transfer.
        descriptor: TransferDescriptor,
        /// Missing block ranges.
        missing: Vec<Range<u32>>,
    },
    /// A heartbeat from the sender.
    Heartbeat {
        /// The sender's epoch.
        epoch: u64,
        /// Its counters.
        heartbeat: Heartbeat,
    },
    /// Frames of a new sender epoch arrived: the sender restarted.
    SenderRestarted {
        /// The epoch seen before.
        previous: u64,
        /// The new one.
        epoch: u64,
    },
    /// A transfer was turned away at its descriptor by this receiver's
    /// limits: its descriptors are dropped (counted as `refused`), and its
    /// shards wait in limbo as any undescribed transfer's would. Told at
    /// most once a minute per transfer while its descriptors keep coming,
    /// for up to 64 transfers a minute (past that, only counted).
    TransferRefused {
        /// The transfer.
        descriptor: TransferDescriptor,
        /// Which limit.
        refusal: Refusal,
    },
}

/// Which limit turned a transfer away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Larger than [`ReassemblerConfig::max_transfer_size`].
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// Two interleave groups of its blocks, what reassembly must hold at
    /// once, need more than one transfer's share of
    /// [`ReassemblerConfig::max_memory`].
    BlocksTooBig {
        /// Bytes it needs.
        needed: u64,
        /// One transfer's share.
        share: u64,
    },
}

/// How often a refusal of the same transfer is told again.
pub const REFUSAL_REPEAT: Duration = Duration::from_secs(60);
/// Most refused transfers remembered, to tell each once a minute.
const REFUSALS_REMEMBERED: usize = 64;

/// Which transfers were lately told refused, so that a refusal repeated
/// with every descriptor is told at most once per [`REFUSAL_REPEAT`] for
/// each transfer. At most 64 transfers are remembered: anyone on the link
/// can describe transfers by the thousand, and past the bound refusals go
/// untold (only counted) until older ones age out.
#[derive(Debug, Default)]
pub struct RefusalLog {
    told: HashMap<TransferId, Instant>,
}

impl RefusalLog {
    /// True if a refusal of `id` is to be told now; it is then remembered
    /// as told.
    pub fn tell(&mut self, id: TransferId, now: Instant) -> bool {
        self.told
            .retain(|_, at| now.saturating_duration_since(*at) < REFUSAL_REPEAT);
        if self.told.contains_key(&id) || self.told.len() >= REFUSALS_REMEMBERED {
            return false;
        }
        self.told.insert(id, now);
        true
    }

    /// Forgets `id`: it was taken after all, and a later refusal is news.
    pub fn forget(&mut self, id: TransferId) {
        self.told.remove(&id);
    }
}

/// Data shards of an incomplete block, for the driver to keep on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpilledBlock {
    /// The transfer.
    pub transfer: TransferId,
    /// Block index.
    pub block: u32,
    /// Byte offset of the block in the file.
    pub offset: u64,
    /// The block buffer; only the shard ranges in `shards` are meaningful.
    pub data: Bytes,
    /// Runs of data shards present, by shard index.
    pub shards: Vec<Range<u16>>,
    /// Shard size, to turn shard ranges into byte ranges.
    pub shard_size: usize,
}

impl SpilledBlock {
    /// (file offset, bytes) for every run of data shards to write.
    pub fn segments(&self) -> impl Iterator<Item = (u64, &[u8])> + '_ {
        self.shards.iter().filter_map(|r| {
            let start = usize::from(r.start) * self.shard_size;
            let end = (usize::from(r.end) * self.shard_size).min(self.data.len());
            let bytes = self.data.get(start..end)?;
            (!bytes.is_empty()).then_some((self.offset + start as u64, bytes))
        })
    }
}

/// Frames dropped, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DropCounts {
    /// Not a v1 frame: bad length, magic, reserved bits, length mismatch.
    pub malformed: u64,
    /// A v1-looking frame of another version or kind.
    pub unsupported: u64,
    /// CRC32C mismatch: corrupted on the link.
    pub corrupt: u64,
    /// No MAC, or a wrong one, while a link key is configured.
    pub unauthenticated: u64,
    /// Sequence number already seen within the window.
    pub duplicate: u64,
    /// Shard of a transfer whose descriptor never came while it waited in
    /// limbo, or end of pass of an unknown transfer.
    pub no_descriptor: u64,
    /// Frame of a transfer already completed.
    pub finished: u64,
    /// Shard of a block already rebuilt, or a shard seen twice.
    pub redundant: u64,
    /// Shard that does not fit its descriptor (index, length), a payload
    /// that does not parse, or a descriptor this receiver refuses.
    pub invalid: u64,
    /// Descriptor of a new transfer while `max_transfers` are held.
    pub too_many_transfers: u64,
    /// Descriptor that disagrees with the one held for the same id.
    pub descriptor_conflict: u64,
    /// Descriptor refused by this receiver's limits: too large, or blocks
    /// too big for its share of memory.
    pub refused: u64,
    /// Shard of a new block while the transfer's memory share is taken by
    /// blocks waiting for the driver to reload them.
    pub overload: u64,
}

/// Everything the reassembler counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams handed in.
    pub datagrams: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Dropped frames by reason.
    pub dropped: DropCounts,
    /// Sequence-number accounting.
    pub loss: LossStats,
    /// Heartbeats received.
    pub heartbeats: u64,
    /// Blocks whose data shards all arrived.
    pub blocks_clean: u64,
    /// Blocks rebuilt with parity.
    pub blocks_repaired: u64,
    /// Blocks still missing when a pass ended (summed over passes).
    pub blocks_unrecovered_at_pass_end: u64,
    /// Blocks handed to the driver incomplete.
    pub blocks_spilled: u64,
    /// Spilled blocks read back to be rebuilt.
    pub blocks_reloaded: u64,
    /// New blocks that got a given-back buffer ([`Reassembler::recycle`])
    /// instead of a fresh one.
    pub buffers_reused: u64,
    /// Transfers whose every block was delivered.
    pub transfers_completed: u64,
    /// Transfers that expired incomplete.
    pub transfers_expired: u64,
}

/// The durable part of a transfer, for a driver to persist beside the
/// partial file and hand back after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferState {
    /// The transfer.
    pub descriptor: TransferDescriptor,
    /// Blocks written in full, one bit per block.
    pub done: Vec<u64>,
    /// Spilled blocks, with one bit per data shard written.
    pub spilled: Vec<(u32, Vec<u64>)>,
}

impl TransferState {
    /// Nothing received yet.
    pub fn new(descriptor: TransferDescriptor) -> Self {
        let words = (descriptor.block_count as usize).div_ceil(64);
        Self {
            descriptor,
            done: vec![0; words],
            spilled: Vec::new(),
        }
    }

    /// Records a block written in full (its spilled shards, if any, are
    /// now part of it).
    pub fn set_done(&mut self, block: u32) {
        if block >= self.descriptor.block_count {
            return;
        }
        if let Some(w) = self.done.get_mut(block as usize / 64) {
            *w |= 1u64 << (block % 64);
        }
        if let Ok(i) = self.spilled.binary_search_by_key(&block, |(b, _)| *b) {
            self.spilled.remove(i);
        }
    }

    /// Whether a block is recorded as written in full.
    pub fn is_done(&self, block: u32) -> bool {
        self.done
            .get(block as usize / 64)
            .is_some_and(|w| w & (1u64 << (block % 64)) != 0)
    }

    /// Records the data shards of a spilled block as written.
    pub fn add_spilled(&mut self, spill: &SpilledBlock) {
        if spill.block >= self.descriptor.block_count || self.is_done(spill.block) {
            return;
        }
        let k = usize::from(self.descriptor.fec.data_shards());
        let i = match self.spilled.binary_search_by_key(&spill.block, |(b, _)| *b) {
            Ok(i) => i,
            Err(i) => {
                self.spilled
                    .insert(i, (spill.block, vec![0; k.div_ceil(64)]));
                i
            }
        };
        if let Some((_, words)) = self.spilled.get_mut(i) {
            for shard in spill.shards.iter().flat_map(|r| r.clone()) {
                let shard = usize::from(shard);
                if shard < k
                    && let Some(w) = words.get_mut(shard / 64)
                {
                    *w |= 1u64 << (shard % 64);
                }
            }
        }
    }

    /// Blocks recorded as written in full.
    pub fn blocks_done(&self) -> u32 {
        self.done.iter().map(|w| w.count_ones()).sum()
    }

    /// Whether every block is written.
    pub fn is_complete(&self) -> bool {
        self.blocks_done() == self.descriptor.block_count
    }

    /// Runs of blocks not yet written.
    pub fn missing(&self) -> Vec<Range<u32>> {
        let mut out = Vec::new();
        let mut start = None;
        for b in 0..self.descriptor.block_count {
            match (self.is_done(b), start) {
                (false, None) => start = Some(b),
                (true, Some(s)) => {
                    out.push(s..b);
                    start = None;
                }
                _ => {}
            }
        }
        if let Some(s) = start {
            out.push(s..self.descriptor.block_count);
        }
        out
    }
}

/// Why [`Reassembler::import_state`] refused a saved state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// Bitmaps do not match the descriptor's geometry.
    #[error("saved state does not match its descriptor")]
    Inconsistent,
    /// The transfer is already held, or the table is full.
    #[error("no room for transfer {0}")]
    NoRoom(TransferId),
}

/// A fixed-size bit set.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Bits {
    words: Vec<u64>,
    len: usize,
}

impl Bits {
    fn new(len: usize) -> Self {
        Self {
            words: vec![0; len.div_ceil(64)],
            len,
        }
    }
    fn from_words(words: Vec<u64>, len: usize) -> Option<Self> {
        if words.len() != len.div_ceil(64) {
            return None;
        }
        let b = Self { words, len };
        // No bit beyond `len` may be set.
        (b.count() == (0..len).filter(|&i| b.get(i)).count()).then_some(b)
    }
    fn get(&self, i: usize) -> bool {
        self.words
            .get(i / 64)
            .is_some_and(|w| w & (1u64 << (i % 64)) != 0)
    }
    fn set(&mut self, i: usize) {
        if i < self.len
            && let Some(w) = self.words.get_mut(i / 64)
        {
            *w |= 1u64 << (i % 64);
        }
    }
    fn count(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }
    fn runs(&self, present: bool) -> Vec<Range<usize>> {
        let mut out = Vec::new();
        let mut start = None;
        for i in 0..self.len {
            match (self.get(i) == present, start) {
                (true, None) => start = Some(i),
                (false, Some(s)) => {
                    out.push(s..i);
                    start = None;
                }
                _ => {}
            }
        }
        if let Some(s) = start {
            out.push(s..self.len);
        }
        out
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlockState {
    Collecting,
    /// Enough shards: waiting for the driver to hand back spilled ones.
    AwaitingReload,
}

/// An incomplete block held in memory.
#[derive(Debug)]
struct PendingBlock {
    /// K slots of shard size.
    buf: BytesMut,
    /// What each slot holds.
    slots: Vec<Slot>,
    /// Data shards the driver holds on disk (spilled earlier); their slots
    /// stay free for the reload.
    on_disk: Option<Bits>,
    /// Distinct shards known: in slots plus on disk.
    count: usize,
    /// Parity indices held, to drop repeats.
    parity_seen: FastSet<u32>,
    /// No slot below this one is free: slots only fill up until the block
    /// is done, so the search for a free slot never goes back (except
    /// after a failed reload, which frees the slots of data shards it
    /// could not read back, and resets this to 0).
    free_from: usize,
    state: BlockState,
    /// For least-recently-used eviction.
    last_touch: u64,
}

/// One transfer being received.
#[derive(Debug)]
struct Transfer {
    desc: TransferDescriptor,
    done: Bits,
    pending: FastMap<u32, PendingBlock>,
    /// Spilled blocks not currently pending: data shards on disk.
    spilled: FastMap<u32, Bits>,
    last_seen: Instant,
    /// The pass whose end was counted last, until a shard of the transfer
    /// arrives: the sender sends the end-of-pass frame several times in a
    /// row, and the copies count once.
    pass_ended: Option<u32>,
}

impl Transfer {
    fn held_blocks(&self) -> usize {
        self.pending.len()
    }
    fn missing_runs(&self) -> Vec<Range<u32>> {
        self.done
            .runs(false)
            .into_iter()
            .map(|r| r.start as u32..r.end as u32)
            .collect()
    }
}

/// Rebuilds transfers from datagrams. See the module docs.
#[derive(Debug)]
pub struct Reassembler {
    config: ReassemblerConfig,
    transfers: FastMap<TransferId, Transfer>,
    finished: HashSet<TransferId>,
    finished_order: VecDeque<TransferId>,
    loss: LossMeter,
    decoder: BlockDecoder,
    events: VecDeque<Event>,
    stats: Stats,
    /// Bytes in block buffers (pending and awaiting the hash) and limbo.
    memory: usize,
    /// Shard frames of transfers not yet described, oldest first.
    limbo: VecDeque<(Header, Vec<u8>)>,
    /// Bytes charged for `limbo`.
    limbo_bytes: usize,
    tick: u64,
    /// Block buffers the driver gave back once done with them, reused
    /// for new blocks: no allocation, no zeroing and no page faults per
    /// block. At most [`SPARE_BUFFERS`] and [`SPARE_BYTES`], and only while
    /// they fit in `max_memory` beside `memory`.
    spare: Vec<BytesMut>,
    /// Transfers lately told refused.
    refused: RefusalLog,
}

/// Most block buffers kept for reuse: blocks start and finish a whole
/// interleaved group at a time (16 by default), so the pool must hold a
/// group's worth to serve the next one.
const SPARE_BUFFERS: usize = 32;
/// Most bytes of block buffers kept for reuse.
const SPARE_BYTES: usize = 32 << 20;

impl Reassembler {
    /// A reassembler with these limits.
    pub fn new(config: ReassemblerConfig) -> Self {
        Self {
            config,
            transfers: FastMap::default(),
            finished: HashSet::new(),
            finished_order: VecDeque::new(),
            loss: LossMeter::default(),
            decoder: BlockDecoder::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
            memory: 0,
            limbo: VecDeque::new(),
            limbo_bytes: 0,
            tick: 0,
            spare: Vec::new(),
            refused: RefusalLog::default(),
        }
    }

    /// Gives back the data of a delivered block ([`Event::BlockReady`])
    /// once the driver is done with it. The buffer is reused for a later
    /// block if nothing else still holds it; otherwise this only drops
    /// `data`.
    pub fn recycle(&mut self, data: Bytes) {
        let Ok(buf) = data.try_into_mut() else {
            return;
        };
        let spare_bytes = self.spare_bytes();
        if self.spare.len() >= SPARE_BUFFERS
            || buf.as_ptr().align_offset(BLOCK_ALIGN) != 0
            || spare_bytes + buf.capacity() > SPARE_BYTES
            || self.memory + spare_bytes + buf.capacity() > self.config.max_memory
        {
            return;
        }
        // A short last block comes back cut to its true length and will
        // not fit a whole block: it is simply not reused.
        self.spare.push(buf);
    }

    /// Bytes of the spare buffers.
    fn spare_bytes(&self) -> usize {
        self.spare.iter().map(BytesMut::capacity).sum()
    }

    /// A buffer of `len` bytes starting on a [`BLOCK_ALIGN`] boundary: a
    /// spare one of this size if there is one (its old bytes are all
    /// overwritten before the block is delivered: every slot is filled by
    /// a shard, the decoder or a reload), else a new zeroed one. Spares of
    /// another size are dropped (a block is charged `len`, so a larger
    /// buffer would hold memory the limit does not see), and so are spares
    /// that would take the total past `max_memory`.
    fn block_buffer(&mut self, len: usize) -> BytesMut {
        while self.memory + len + self.spare_bytes() > self.config.max_memory
            && self.spare.pop().is_some()
        {}
        while let Some(mut buf) = self.spare.pop() {
            if buf.len() >= len && buf.capacity() < len + BLOCK_ALIGN {
                buf.truncate(len);
                self.stats.buffers_reused += 1;
                return buf;
            }
        }
        aligned_zeroed(len)
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        let mut s = self.stats;
        s.loss = self.loss.stats();
        s
    }

    /// Bytes held in block buffers now, spare ones included; never above
    /// `max_memory`.
    pub fn memory_in_use(&self) -> usize {
        self.memory + self.spare_bytes()
    }

    /// Transfers in progress.
    pub fn transfers_in_flight(&self) -> usize {
        self.transfers.len()
    }

    /// Progress of one transfer: (blocks done, block count).
    pub fn progress(&self, id: TransferId) -> Option<(u32, u32)> {
        self.transfers
            .get(&id)
            .map(|t| (t.done.count() as u32, t.desc.block_count))
    }

    /// The next event for the driver.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Reassembler::handle_timeout`] should next run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.transfers
            .values()
            .map(|t| t.last_seen + self.config.transfer_expiry)
            .min()
    }

    /// Expires transfers idle for longer than the expiry time.
    pub fn handle_timeout(&mut self, now: Instant) {
        let expiry = self.config.transfer_expiry;
        let mut stale: Vec<TransferId> = self
            .transfers
            .iter()
            .filter(|(_, t)| now.saturating_duration_since(t.last_seen) >= expiry)
            .map(|(id, _)| *id)
            .collect();
        // The maps' order is random per process: events come in id order,
        // so that a seed replays a run exactly.
        stale.sort_unstable();
        for id in stale {
            if let Some(t) = self.remove(id) {
                self.stats.transfers_expired += 1;
                let missing = t.missing_runs();
                self.events.push_back(Event::TransferExpired {
                    descriptor: t.desc,
                    missing,
                });
            }
        }
    }

    /// Remembers a transfer as finished (for instance one the driver
    /// published before a restart), so its frames are dropped cheaply.
    pub fn mark_finished(&mut self, id: TransferId) {
        if self.finished.insert(id) {
            self.finished_order.push_back(id);
            while self.finished_order.len() > self.config.remember_finished {
                if let Some(old) = self.finished_order.pop_front() {
                    self.finished.remove(&old);
                }
            }
        }
    }

    /// Forgets a transfer entirely (the driver gave up on it).
    pub fn forget(&mut self, id: TransferId) {
        self.remove(id);
    }

    /// Forgets that a transfer finished, so that its next descriptor starts
    /// it afresh (the driver could not keep what it received).
    pub fn forget_finished(&mut self, id: TransferId) {
        if self.finished.remove(&id) {
            self.finished_order.retain(|f| *f != id);
        }
    }

    /// The durable state of a transfer in progress.
    pub fn export_state(&self, id: TransferId) -> Option<TransferState> {
        let t = self.transfers.get(&id)?;
        let mut spilled: Vec<(u32, Vec<u64>)> = t
            .spilled
            .iter()
            .map(|(b, bits)| (*b, bits.words.clone()))
            .collect();
        for (b, p) in &t.pending {
            if let Some(bits) = &p.on_disk {
                spilled.push((*b, bits.words.clone()));
            }
        }
        spilled.sort_by_key(|(b, _)| *b);
        Some(TransferState {
            descriptor: t.desc.clone(),
            done: t.done.words.clone(),
            spilled,
        })
    }

    /// Spills every incomplete block of every transfer, so that
    /// [`Reassembler::export_state`] covers all shards received (call it
    /// before a shutdown).
    pub fn spill_all(&mut self) {
        // In id and block order, not the maps' random one.
        let mut ids: Vec<TransferId> = self.transfers.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let mut blocks: Vec<u32> = self
                .transfers
                .get(&id)
                .map(|t| t.pending.keys().copied().collect())
                .unwrap_or_default();
            blocks.sort_unstable();
            for b in blocks {
                self.spill(id, b);
            }
        }
    }

    /// Resumes a transfer from a saved state (after a restart, or when the
    /// driver could not store blocks of a transfer the core thought
    /// complete). Blocks marked done are not rebuilt again. A state with
    /// every block done completes at once ([`Event::TransferComplete`]).
    pub fn import_state(&mut self, now: Instant, state: TransferState) -> Result<(), StateError> {
        let id = state.descriptor.transfer;
        let complete = state.is_complete();
        if self.transfers.contains_key(&id)
            || (self.transfers.len() >= self.config.max_transfers && !complete)
        {
            return Err(StateError::NoRoom(id));
        }
        let blocks = state.descriptor.block_count as usize;
        let k = usize::from(state.descriptor.fec.data_shards());
        let done = Bits::from_words(state.done, blocks).ok_or(StateError::Inconsistent)?;
        let mut spilled = FastMap::default();
        for (b, words) in state.spilled {
            if b as usize >= blocks || done.get(b as usize) {
                return Err(StateError::Inconsistent);
            }
            let bits = Bits::from_words(words, k).ok_or(StateError::Inconsistent)?;
            spilled.insert(b, bits);
        }
        self.transfers.insert(
            id,
            Transfer {
                desc: state.descriptor,
                done,
                pending: FastMap::default(),
                spilled,
                last_seen: now,
                pass_ended: None,
            },
        );
        // Wanted again, even if it was finished before.
        self.forget_finished(id);
        // A complete one completes now, and takes no room.
        self.check_complete(id);
        Ok(())
    }

    /// Handles one datagram from the link.
    pub fn handle_datagram(&mut self, now: Instant, datagram: &[u8]) {
        self.stats.datagrams += 1;
        self.stats.bytes += datagram.len() as u64;
        let frame = match decode_frame(datagram, &self.config.integrity) {
            Ok(f) => f,
            Err(e) => {
                let d = &mut self.stats.dropped;
                match e {
                    DecodeError::Corrupt => d.corrupt += 1,
                    DecodeError::Unauthenticated | DecodeError::BadMac => d.unauthenticated += 1,
                    DecodeError::UnsupportedVersion(_) | DecodeError::UnknownKind(_) => {
                        d.unsupported += 1
                    }
                    DecodeError::BadLength(_)
                    | DecodeError::BadMagic
                    | DecodeError::Reserved
                    | DecodeError::LengthMismatch { .. } => d.malformed += 1,
                }
                return;
            }
        };
        let h = frame.header;
        match self.loss.observe(h.epoch, h.seq) {
            // A repeat of a sequence number seen within the window. Frames
            // older than the window are not dropped: one forged frame far
            // ahead in the sequence must not make every real frame "stale".
            SeqVerdict::Duplicate => {
                self.stats.dropped.duplicate += 1;
                return;
            }
            SeqVerdict::NewEpoch {
                previous: Some(previous),
            } => self.events.push_back(Event::SenderRestarted {
                previous,
                epoch: h.epoch,
            }),
            _ => {}
        }
        match h.kind {
            FrameKind::Heartbeat => match Heartbeat::decode(frame.payload) {
                Some(heartbeat) => {
                    self.stats.heartbeats += 1;
                    self.events.push_back(Event::Heartbeat {
                        epoch: h.epoch,
                        heartbeat,
                    });
                }
                None => self.stats.dropped.invalid += 1,
            },
            FrameKind::Descriptor => self.on_descriptor(now, frame.payload),
            FrameKind::EndOfPass => self.on_end_of_pass(now, &frame),
            FrameKind::Data | FrameKind::Parity => self.on_shard(now, &frame),
        }
    }

    /// Hands back the bytes asked for by [`Event::ReloadBlock`]. `bytes`
    /// holds the block's true length read from the partial file.
    pub fn reload(&mut self, transfer: TransferId, block: u32, bytes: &[u8]) {
        let Some(t) = self.transfers.get_mut(&transfer) else {
            return;
        };
        let shard = usize::from(t.desc.fec.shard_size());
        let Some(p) = t.pending.get_mut(&block) else {
            return;
        };
        if p.state != BlockState::AwaitingReload {
            return;
        }
        if let Some(on_disk) = p.on_disk.take() {
            for (i, slot) in p.slots.iter_mut().enumerate() {
                if !on_disk.get(i) {
                    continue;
                }
                let start = i * shard;
                let dst = p.buf.get_mut(start..start + shard);
                if let Some(dst) = dst {
                    // The last block may end inside this shard: the rest
                    // is the zero padding the sender encoded.
                    let src = bytes
                        .get(start..(start + shard).min(bytes.len()))
                        .unwrap_or(&[]);
                    let (head, tail) = dst.split_at_mut(src.len());
                    head.copy_from_slice(src);
                    tail.fill(0);
                    *slot = Slot::Data;
                }
            }
        }
        self.stats.blocks_reloaded += 1;
        self.finish_block(transfer, block);
    }

    /// The driver could not write a spilled block's shards, or read them
    /// back: forget them and wait for more parity.
    pub fn reload_failed(&mut self, transfer: TransferId, block: u32) {
        let Some(t) = self.transfers.get_mut(&transfer) else {
            return;
        };
        t.spilled.remove(&block);
        if let Some(p) = t.pending.get_mut(&block)
            && let Some(on_disk) = p.on_disk.take()
        {
            p.count -= on_disk.count();
            p.state = BlockState::Collecting;
            // Their slots are free for parity again.
            p.free_from = 0;
        }
    }

    fn remove(&mut self, id: TransferId) -> Option<Transfer> {
        let t = self.transfers.remove(&id)?;
        let block_len = t.desc.fec.block_len();
        self.memory = self.memory.saturating_sub(t.pending.len() * block_len);
        Some(t)
    }

    /// Block buffers one transfer may hold.
    fn blocks_allowed(&self, block_len: usize) -> usize {
        let blocks = self
            .config
            .max_memory
            .saturating_sub(self.config.limbo_memory);
        blocks / self.config.max_transfers.max(1) / block_len.max(1)
    }

    /// Keeps a shard of an undescribed transfer, evicting the oldest ones
    /// beyond the limbo budget.
    fn park_in_limbo(&mut self, frame: &FrameRef<'_>) {
        let cost = frame.payload.len() + HEADER_LEN;
        if cost > self.config.limbo_memory {
            self.stats.dropped.no_descriptor += 1;
            return;
        }
        while self.limbo_bytes + cost > self.config.limbo_memory {
            match self.limbo.pop_front() {
                Some((_, p)) => {
                    self.release_limbo(p.len());
                    self.stats.dropped.no_descriptor += 1;
                }
                None => break,
            }
        }
        self.memory += cost;
        self.limbo_bytes += cost;
        self.limbo.push_back((frame.header, frame.payload.to_vec()));
    }

    fn release_limbo(&mut self, payload_len: usize) {
        let cost = payload_len + HEADER_LEN;
        self.memory = self.memory.saturating_sub(cost);
        self.limbo_bytes = self.limbo_bytes.saturating_sub(cost);
    }

    /// Replays the shards kept for a transfer that just got its descriptor.
    fn replay_limbo(&mut self, now: Instant, id: TransferId) {
        let (mine, rest): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut self.limbo)
            .into_iter()
            .partition(|(h, _)| h.transfer == id.0);
        self.limbo = rest;
        for (header, payload) in mine {
            self.release_limbo(payload.len());
            self.on_shard(
                now,
                &FrameRef {
                    header,
                    payload: &payload,
                },
            );
        }
    }

    fn on_descriptor(&mut self, now: Instant, payload: &[u8]) {
        let Ok(desc) = TransferDescriptor::from_bytes(payload) else {
            self.stats.dropped.invalid += 1;
            return;
        };
        let id = desc.transfer;
        if self.finished.contains(&id) {
            self.stats.dropped.finished += 1;
            return;
        }
        if let Some(t) = self.transfers.get_mut(&id) {
            if t.desc == desc {
                t.last_seen = now;
            } else {
                self.stats.dropped.descriptor_conflict += 1;
            }
            return;
        }
        let needed = (desc.block_count as usize)
            .min(2 * usize::from(desc.fec.interleave()))
            .max(1);
        let block_len = desc.fec.block_len();
        let allowed = self.blocks_allowed(block_len);
        let refusal = if desc.size > self.config.max_transfer_size {
            Some(Refusal::TooLarge {
                limit: self.config.max_transfer_size,
            })
        } else if allowed < needed {
            Some(Refusal::BlocksTooBig {
                needed: (needed * block_len) as u64,
                share: (allowed * block_len) as u64,
            })
        } else {
            None
        };
        if let Some(refusal) = refusal {
            self.stats.dropped.refused += 1;
            self.tell_refusal(now, desc, refusal);
            return;
        }
        if self.transfers.len() >= self.config.max_transfers {
            self.stats.dropped.too_many_transfers += 1;
            return;
        }
        let t = Transfer {
            done: Bits::new(desc.block_count as usize),
            desc: desc.clone(),
            pending: FastMap::default(),
            spilled: FastMap::default(),
            last_seen: now,
            pass_ended: None,
        };
        self.transfers.insert(id, t);
        self.events.push_back(Event::TransferStarted(desc));
        // An empty file is complete as soon as it is described.
        self.check_complete(id);
        self.replay_limbo(now, id);
    }

    /// Emits [`Event::TransferRefused`] unless this transfer's refusal was
    /// told within the last minute.
    fn tell_refusal(&mut self, now: Instant, descriptor: TransferDescriptor, refusal: Refusal) {
        if !self.refused.tell(descriptor.transfer, now) {
            return;
        }
        self.events.push_back(Event::TransferRefused {
            descriptor,
            refusal,
        });
    }

    fn on_end_of_pass(&mut self, now: Instant, frame: &FrameRef<'_>) {
        let id = TransferId(frame.header.transfer);
        let Some(eop) = EndOfPass::decode(frame.payload) else {
            self.stats.dropped.invalid += 1;
            return;
        };
        if self.finished.contains(&id) {
            self.stats.dropped.finished += 1;
            return;
        }
        let Some(t) = self.transfers.get_mut(&id) else {
            self.stats.dropped.no_descriptor += 1;
            return;
        };
        t.last_seen = now;
        if t.pass_ended == Some(eop.pass) {
            // A repeat, expected like a descriptor's: not a drop.
            return;
        }
        t.pass_ended = Some(eop.pass);
        let missing = t.desc.block_count - t.done.count() as u32;
        self.stats.blocks_unrecovered_at_pass_end += u64::from(missing);
        self.events.push_back(Event::PassEnded {
            transfer: id,
            pass: eop.pass,
            passes: eop.passes,
            missing_blocks: missing,
        });
    }

    fn on_shard(&mut self, now: Instant, frame: &FrameRef<'_>) {
        let h = frame.header;
        let id = TransferId(h.transfer);
        let Some(t) = self.transfers.get_mut(&id) else {
            if self.finished.contains(&id) {
                self.stats.dropped.finished += 1;
            } else {
                self.park_in_limbo(frame);
            }
            return;
        };
        let fec = t.desc.fec;
        let k = usize::from(fec.data_shards());
        let shard = usize::from(fec.shard_size());
        let valid_index = match h.kind {
            FrameKind::Data => usize::from(h.shard) < k,
            _ => u32::from(h.shard) < fec.max_recovery(),
        };
        if h.block >= t.desc.block_count || !valid_index || frame.payload.len() != shard {
            self.stats.dropped.invalid += 1;
            return;
        }
        t.last_seen = now;
        // Shards between two end-of-pass frames: the second ends a new
        // pass even if it carries the same number (a resend of that pass,
        // or a sender resuming it after a restart).
        t.pass_ended = None;
        if t.done.get(h.block as usize) {
            self.stats.dropped.redundant += 1;
            return;
        }
        self.tick += 1;
        let tick = self.tick;
        if !self
            .transfers
            .get(&id)
            .is_some_and(|t| t.pending.contains_key(&h.block))
        {
            if !self.make_room(id) {
                self.stats.dropped.overload += 1;
                return;
            }
            let Some(t) = self.transfers.get_mut(&id) else {
                return;
            };
            let on_disk = t.spilled.remove(&h.block);
            let count = on_disk.as_ref().map_or(0, Bits::count);
            let buf = self.block_buffer(k * shard);
            let Some(t) = self.transfers.get_mut(&id) else {
                return;
            };
            let block = PendingBlock {
                buf,
                slots: vec![Slot::Empty; k],
                on_disk,
                count,
                parity_seen: FastSet::default(),
                free_from: 0,
                state: BlockState::Collecting,
                last_touch: tick,
            };
            t.pending.insert(h.block, block);
            self.memory += k * shard;
        }
        let Some(p) = self
            .transfers
            .get_mut(&id)
            .and_then(|t| t.pending.get_mut(&h.block))
        else {
            return;
        };
        p.last_touch = tick;
        if p.state != BlockState::Collecting
            || !store_shard(p, h.kind, h.shard, frame.payload, shard)
        {
            self.stats.dropped.redundant += 1;
            return;
        }
        if p.count >= k {
            if p.on_disk.as_ref().is_some_and(|b| b.count() > 0) {
                p.state = BlockState::AwaitingReload;
                let (offset, len) = self
                    .transfers
                    .get(&id)
                    .map(|t| (t.desc.block_offset(h.block), t.desc.block_len(h.block)))
                    .unwrap_or_default();
                self.events.push_back(Event::ReloadBlock {
                    transfer: id,
                    block: h.block,
                    offset,
                    len,
                });
            } else {
                self.finish_block(id, h.block);
            }
        }
    }

    /// Makes room for one more block buffer of transfer `id` within its
    /// share of memory. Returns false when nothing can be freed.
    fn make_room(&mut self, id: TransferId) -> bool {
        let Some(t) = self.transfers.get(&id) else {
            return false;
        };
        let allowed = self.blocks_allowed(t.desc.fec.block_len());
        if t.held_blocks() < allowed {
            return true;
        }
        let victim = t
            .pending
            .iter()
            .filter(|(_, p)| p.state == BlockState::Collecting)
            .min_by_key(|(_, p)| p.last_touch)
            .map(|(b, _)| *b);
        match victim {
            Some(b) => {
                self.spill(id, b);
                true
            }
            None => false,
        }
    }

    /// Hands an incomplete block's data shards to the driver and frees it.
    fn spill(&mut self, id: TransferId, block: u32) {
        let Some(t) = self.transfers.get_mut(&id) else {
            return;
        };
        let Some(p) = t.pending.remove(&block) else {
            return;
        };
        let k = usize::from(t.desc.fec.data_shards());
        let shard_size = usize::from(t.desc.fec.shard_size());
        self.memory = self.memory.saturating_sub(k * shard_size);
        let mut in_buf = Bits::new(k);
        for (i, s) in p.slots.iter().enumerate() {
            if *s == Slot::Data {
                in_buf.set(i);
            }
        }
        let mut on_disk = p.on_disk.unwrap_or_else(|| Bits::new(k));
        for i in 0..k {
            if in_buf.get(i) {
                on_disk.set(i);
            }
        }
        if on_disk.count() > 0 {
            t.spilled.insert(block, on_disk);
        }
        if in_buf.count() == 0 {
            return;
        }
        self.stats.blocks_spilled += 1;
        // Only the listed shards are this block's; the other slots may hold
        // parked parity or a reused buffer's old bytes: clear them, so that
        // nothing but this block's data ever leaves in a spill.
        let mut buf = p.buf;
        for (i, s) in p.slots.iter().enumerate() {
            if *s != Slot::Data
                && let Some(slot) = buf.get_mut(i * shard_size..(i + 1) * shard_size)
            {
                slot.fill(0);
            }
        }
        let mut data = buf.freeze();
        data.truncate(t.desc.block_len(block));
        let shards = in_buf
            .runs(true)
            .into_iter()
            .map(|r| r.start as u16..r.end as u16)
            .collect();
        self.events.push_back(Event::SpillBlock(SpilledBlock {
            transfer: id,
            block,
            offset: t.desc.block_offset(block),
            data,
            shards,
            shard_size,
        }));
    }

    /// Decodes a block that has K shards in memory and delivers it.
    fn finish_block(&mut self, id: TransferId, block: u32) {
        let Some(t) = self.transfers.get_mut(&id) else {
            return;
        };
        let Some(mut p) = t.pending.remove(&block) else {
            return;
        };
        let fec = t.desc.fec;
        let block_len = fec.block_len();
        let repaired = p.slots.iter().any(|s| *s != Slot::Data);
        if repaired && self.decoder.decode(&fec, &mut p.buf, &p.slots).is_err() {
            // With validated parameters and K distinct shards this cannot
            // happen; drop the block's shards and let a later pass retry.
            self.memory = self.memory.saturating_sub(block_len);
            self.stats.dropped.invalid += 1;
            return;
        }
        if repaired {
            self.stats.blocks_repaired += 1;
        } else {
            self.stats.blocks_clean += 1;
        }
        t.done.set(block as usize);
        let mut data = p.buf.freeze();
        data.truncate(t.desc.block_len(block));
        self.memory = self.memory.saturating_sub(block_len);
        let offset = t.desc.block_offset(block);
        self.events.push_back(Event::BlockReady {
            transfer: id,
            block,
            offset,
            data,
        });
        self.check_complete(id);
    }

    fn check_complete(&mut self, id: TransferId) {
        let complete = self
            .transfers
            .get(&id)
            .is_some_and(|t| t.done.count() == t.desc.block_count as usize);
        if !complete {
            return;
        }
        let Some(t) = self.remove(id) else {
            return;
        };
        self.stats.transfers_completed += 1;
        self.mark_finished(id);
        self.events
            .push_back(Event::TransferComplete { descriptor: t.desc });
    }
}

/// Block buffers start on this boundary, so that a driver can write whole
/// blocks with direct I/O straight from the buffer.
pub const BLOCK_ALIGN: usize = 4096;

/// A zeroed buffer of `len` bytes starting on a [`BLOCK_ALIGN`] boundary
/// (found inside a slightly larger allocation).
fn aligned_zeroed(len: usize) -> BytesMut {
    use bytes::Buf;
    let mut b = BytesMut::zeroed(len + BLOCK_ALIGN - 1);
    let skew = b.as_ptr().align_offset(BLOCK_ALIGN);
    if skew < BLOCK_ALIGN {
        b.advance(skew);
    }
    b.truncate(len);
    b
}

/// Puts one shard into its block. Returns false if it was already there.
fn store_shard(
    p: &mut PendingBlock,
    kind: FrameKind,
    index: u16,
    payload: &[u8],
    shard: usize,
) -> bool {
    let on_disk = |i: usize| p.on_disk.as_ref().is_some_and(|b| b.get(i));
    let i = usize::from(index);
    match kind {
        FrameKind::Data => {
            if on_disk(i) {
                return false;
            }
            match p.slots.get(i).copied() {
                Some(Slot::Data) | None => return false,
                Some(Slot::Parity(r)) => {
                    // A parity shard is parked here: move it to a free slot.
                    let Some(free) = free_slot(p) else {
                        return false;
                    };
                    p.buf.copy_within(i * shard..(i + 1) * shard, free * shard);
                    if let Some(s) = p.slots.get_mut(free) {
                        *s = Slot::Parity(r);
                    }
                }
                Some(Slot::Empty) => {}
            }
            if let (Some(dst), Some(s)) = (
                p.buf.get_mut(i * shard..(i + 1) * shard),
                p.slots.get_mut(i),
            ) {
                dst.copy_from_slice(payload);
                *s = Slot::Data;
            }
        }
        _ => {
            let r = u32::from(index);
            if p.parity_seen.contains(&r) {
                return false;
            }
            let Some(free) = free_slot(p) else {
                return false;
            };
            if let (Some(dst), Some(s)) = (
                p.buf.get_mut(free * shard..(free + 1) * shard),
                p.slots.get_mut(free),
            ) {
                dst.copy_from_slice(payload);
                *s = Slot::Parity(r);
            }
            p.parity_seen.insert(r);
        }
    }
    p.count += 1;
    true
}

/// An empty slot whose data shard is not on disk: parity may park there.
/// The search starts where the last one ended (slots below it are taken
/// and stay taken), so parking every parity shard of a block costs one
/// walk over its slots, not one per shard.
fn free_slot(p: &mut PendingBlock) -> Option<usize> {
    let from = p.free_from;
    let on_disk = p.on_disk.as_ref();
    let found = p
        .slots
        .iter()
        .enumerate()
        .skip(from)
        .find(|(i, s)| **s == Slot::Empty && !on_disk.is_some_and(|b| b.get(*i)))
        .map(|(i, _)| i);
    p.free_from = found.unwrap_or(p.slots.len());
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunker::{Chunker, ChunkerConfig};
    use crate::descriptor::BundleName;
    use crate::digest::digest;
    use crate::fec::FecParams;
    use crate::link::LinkEncoder;
    use std::io::Cursor;

    fn data(size: usize) -> Vec<u8> {
        (0..size).map(|i| (i * 7 % 253) as u8).collect()
    }

    /// The descriptor of `bytes` (its id follows from their digest).
    fn descriptor(bytes: &[u8], fec: FecParams) -> TransferDescriptor {
        TransferDescriptor::new(
            TransferId::from_digest(&digest(bytes)),
            BundleName::parse("f").unwrap(),
            bytes.len() as u64,
            digest(bytes),
            fec,
        )
        .unwrap()
    }

    /// Every datagram of `passes` passes over `bytes`.
    fn datagrams(desc: &TransferDescriptor, bytes: &[u8], passes: u32, epoch: u64) -> Vec<Vec<u8>> {
        let config = ChunkerConfig {
            passes,
            ..ChunkerConfig::default()
        };
        let mut c = Chunker::new(desc.clone(), Cursor::new(bytes.to_vec()), config);
        let mut link = LinkEncoder::new(epoch, Integrity::Crc32c);
        let mut out = Vec::new();
        let mut all = Vec::new();
        while c.poll_transmit(&mut link, &mut out).unwrap().is_some() {
            all.push(std::mem::take(&mut out));
        }
        all
    }

    /// Feeds datagrams and writes ready blocks into a file image.
    fn run(r: &mut Reassembler, now: Instant, grams: &[Vec<u8>], file: &mut [u8]) -> Vec<Event> {
        let mut other = Vec::new();
        for g in grams {
            r.handle_datagram(now, g);
            while let Some(e) = r.poll_event() {
                match e {
                    Event::BlockReady { offset, data, .. } => {
                        let o = offset as usize;
                        file[o..o + data.len()].copy_from_slice(&data);
                    }
                    e => other.push(e),
                }
            }
        }
        other
    }

    fn fec() -> FecParams {
        FecParams::new(8, 4, 32, 4).unwrap()
    }

    #[test]
    fn a_clean_transfer_completes_verified() {
        let bytes = data(5000);
        let desc = descriptor(&bytes, fec());
        let mut r = Reassembler::new(ReassemblerConfig::default());
        let mut file = vec![0; bytes.len()];
        let events = run(
            &mut r,
            Instant::now(),
            &datagrams(&desc, &bytes, 1, 1),
            &mut file,
        );
        assert_eq!(file, bytes);
        assert!(events.contains(&Event::TransferComplete {
            descriptor: desc.clone(),
        }));
        let s = r.stats();
        assert_eq!(s.blocks_clean, u64::from(desc.block_count));
        assert_eq!(s.transfers_completed, 1);
        assert_eq!(r.memory_in_use(), 0);
        assert_eq!(r.transfers_in_flight(), 0);
    }

    /// Drops the first `n` data frames of every block.
    fn drop_data_frames(grams: &mut Vec<Vec<u8>>, n: u32) {
        let mut dropped: HashMap<u32, u32> = HashMap::new();
        grams.retain(|g| {
            let f = decode_frame(g, &Integrity::Crc32c).unwrap();
            if f.header.kind != FrameKind::Data {
                return true;
            }
            let seen = dropped.entry(f.header.block).or_default();
            *seen += 1;
            *seen > n
        });
    }

    #[test]
    fn lost_data_shards_are_rebuilt_from_parity() {
        let bytes = data(5000);
        let desc = descriptor(&bytes, fec());
        let mut grams = datagrams(&desc, &bytes, 1, 1);
        // Drop the first 4 data frames of every block (M = 4).
        drop_data_frames(&mut grams, 4);
        let mut r = Reassembler::new(ReassemblerConfig::default());
        let mut file = vec![0; bytes.len()];
        run(&mut r, Instant::now(), &grams, &mut file);
        assert_eq!(file, bytes);
        assert_eq!(r.stats().blocks_repaired, u64::from(desc.block_count));
    }

    #[test]
    fn each_pass_end_is_counted_once_whatever_its_repeats() {
        let bytes = data(5000);
        let desc = descriptor(&bytes, fec());
        let pass_ends = |events: &[Event]| -> Vec<(u32, u32)> {
            events
                .iter()
                .filter_map(|e| match e {
                    Event::PassEnded {
                        pass,
                        missing_blocks,
                        ..
                    } => Some((*pass, *missing_blocks)),
                    _ => None,
                })
                .collect()
        };
        // Two passes that both lose every shard of block 0.
        let without_block_0 = |epoch| {
            let mut grams = datagrams(&desc, &bytes, 2, epoch);
            grams.retain(|g| {
                let f = decode_frame(g, &Integrity::Crc32c).unwrap();
                !(matches!(f.header.kind, FrameKind::Data | FrameKind::Parity)
                    && f.header.block == 0)
            });
            grams
        };
        let grams = without_block_0(1);
        let ends = grams
            .iter()
            .filter(|g| {
                decode_frame(g, &Integrity::Crc32c).unwrap().header.kind == FrameKind::EndOfPass
            })
            .count();
        assert_eq!(ends, 2 * crate::chunker::END_OF_PASS_REPEATS);
        let mut r = Reassembler::new(ReassemblerConfig::default());
        let mut file = vec![0; bytes.len()];
        let events = run(&mut r, Instant::now(), &grams, &mut file);
        assert_eq!(pass_ends(&events), vec![(0, 1), (1, 1)]);
        assert_eq!(r.stats().blocks_unrecovered_at_pass_end, 2);
        assert_eq!(r.stats().dropped.duplicate, 0);
        // Pass 1 sent again (a resend, or a sender restarted in it): its
        // end, after its shards, is a new end, not a repeat of the last.
        let mut ends_seen = 0;
        let pass_1: Vec<Vec<u8>> = without_block_0(2)
            .into_iter()
            .filter(|g| {
                let before = ends_seen < crate::chunker::END_OF_PASS_REPEATS;
                if decode_frame(g, &Integrity::Crc32c).unwrap().header.kind == FrameKind::EndOfPass
                {
                    ends_seen += 1;
                }
                !before
            })
            .collect();
        let events = run(&mut r, Instant::now(), &pass_1, &mut file);
        assert_eq!(pass_ends(&events), vec![(1, 1)]);
    }

    #[test]
    fn parity_parks_in_slots_a_failed_reload_gives_back() {
        let bytes = data(5000);
        let desc = descriptor(&bytes, fec());
        let block_len = desc.fec.block_len();
        // Block 0's frames, by kind and index.
        let grams = datagrams(&desc, &bytes, 2, 1);
        let frame = |kind: FrameKind, index: u16| {
            grams
                .iter()
                .find(|g| {
                    let h = decode_frame(g, &Integrity::Crc32c).unwrap().header;
                    h.kind == kind && h.block == 0 && h.shard == index
                })
                .unwrap()
                .clone()
        };
        // A restart found data shards 0..4 of block 0 in the partial file.
        let mut r = Reassembler::new(ReassemblerConfig::default());
        let now = Instant::now();
        let mut state = TransferState::new(desc.clone());
        state.spilled.push((0, vec![0b1111]));
        r.import_state(now, state).unwrap();
        let mut file = vec![0; bytes.len()];
        // Parity parks past the slots on disk; data 4 and 5 push it on.
        let events = run(
            &mut r,
            now,
            &[
                frame(FrameKind::Parity, 0),
                frame(FrameKind::Parity, 1),
                frame(FrameKind::Data, 4),
                frame(FrameKind::Data, 5),
            ],
            &mut file,
        );
        assert!(
            events
                .iter()
                .any(|e| matches!(e, Event::ReloadBlock { block: 0, .. })),
            "{events:?}"
        );
        // The partial file cannot be read: slots 0..4 are free again.
        r.reload_failed(desc.transfer, 0);
        run(
            &mut r,
            now,
            &[
                frame(FrameKind::Parity, 2),
                frame(FrameKind::Parity, 3),
                frame(FrameKind::Data, 6),
                frame(FrameKind::Data, 7),
            ],
            &mut file,
        );
        assert_eq!(&file[..block_len], &bytes[..block_len]);
        assert_eq!(r.stats().dropped.redundant, 0);
    }

    #[test]
    fn recycled_block_buffers_never_show_their_old_bytes() {
        // Given-back buffers hold the previous blocks' bytes. Blocks rebuilt
        // into them from parity, and the short last block, must come out
        // exactly as sent.
        let first = data(5000);
        let second: Vec<u8> = data(4100).iter().map(|b| !b).collect();
        let mut r = Reassembler::new(ReassemblerConfig::default());
        let now = Instant::now();
        for (epoch, bytes) in [(1, &first), (2, &second)] {
            let desc = descriptor(bytes, fec());
            let mut grams = datagrams(&desc, bytes, 1, epoch);
            drop_data_frames(&mut grams, 3);
            let mut file = vec![0; bytes.len()];
            for g in &grams {
                r.handle_datagram(now, g);
                while let Some(e) = r.poll_event() {
                    if let Event::BlockReady { offset, data, .. } = e {
                        let o = offset as usize;
                        file[o..o + data.len()].copy_from_slice(&data);
                        r.recycle(data);
                    }
                }
            }
            assert_eq!(&file, bytes);
        }
        assert!(r.stats().buffers_reused > 0, "no buffer was reused");
    }

    #[test]
    fn spare_buffers_stay_within_the_memory_limit() {
        let len = 8 * 4096;
        let config = ReassemblerConfig {
            max_memory: 3 * len,
            ..ReassemblerConfig::default()
        };
        let mut r = Reassembler::new(config);
        for _ in 0..6 {
            r.recycle(aligned_zeroed(len).freeze());
        }
        let held: usize = r.spare.iter().map(BytesMut::capacity).sum();
        assert!(!r.spare.is_empty());
        assert!(held <= 3 * len, "{held} bytes kept");
        // A buffer still shared elsewhere is not taken.
        let shared = aligned_zeroed(len).freeze();
        r.spare.clear();
        r.recycle(shared.clone());
        assert!(r.spare.is_empty());
        drop(shared);
    }

    #[test]
    fn frames_after_completion_and_duplicates_are_dropped_by_reason() {
        let bytes = data(3000);
        let desc = descriptor(&bytes, fec());
        let grams = datagrams(&desc, &bytes, 2, 1);
        let mut r = Reassembler::new(ReassemblerConfig::default());
        let mut file = vec![0; bytes.len()];
        let now = Instant::now();
        run(&mut r, now, &grams, &mut file);
        let s = r.stats();
        // Pass 1 arrives after the transfer completed in pass 0.
        assert!(s.dropped.finished > 0);
        // The same datagrams again are duplicates by sequence number.
        run(&mut r, now, &grams[..10], &mut file);
        assert_eq!(r.stats().dropped.duplicate, 10);
        // Garbage, a corrupted frame, and a shard with no descriptor.
        r.handle_datagram(now, b"hello");
        let mut bad = grams[5].clone();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        r.handle_datagram(now, &bad);
        let d = r.stats().dropped;
        assert_eq!((d.malformed, d.corrupt), (1, 1));
    }

    // Regression: frames older than the sequence window used to be dropped
    // as "stale", so one forged frame with a sequence number far ahead made
    // every real frame after it look stale and the transfer never finished.
    #[test]
    fn a_frame_far_ahead_in_sequence_does_not_starve_real_frames() {
        let bytes = data(3000);
        let desc = descriptor(&bytes, fec());
        let grams = datagrams(&desc, &bytes, 1, 1);
        let mut r = Reassembler::new(ReassemblerConfig::default());
        let mut file = vec![0; bytes.len()];
        let now = Instant::now();
        run(&mut r, now, &grams[..3], &mut file);
        let mut forger = LinkEncoder::new(1, Integrity::Crc32c);
        let mut far = Vec::new();
        for _ in 0..1_000_000 {
            // Burn sequence numbers to reach one far ahead.
            far.clear();
            forger.heartbeat(0, 1000, 0, &mut far).unwrap();
        }
        r.handle_datagram(now, &far);
        let events = run(&mut r, now, &grams[3..], &mut file);
        assert_eq!(file, bytes);
        assert!(matches!(
            events.last(),
            Some(Event::TransferComplete { .. })
        ));
    }

    #[test]
    fn shards_before_their_descriptor_wait_in_limbo_and_are_replayed() {
        let bytes = data(3000);
        let desc = descriptor(&bytes, fec());
        let grams = datagrams(&desc, &bytes, 1, 2);
        // The two leading descriptor frames are lost.
        let mut r = Reassembler::new(ReassemblerConfig::default());
        let mut file = vec![0; bytes.len()];
        let now = Instant::now();
        run(&mut r, now, &grams[2..20], &mut file);
        assert!(r.memory_in_use() > 0, "shards are held in limbo");
        assert_eq!(r.transfers_in_flight(), 0);
        let events = run(&mut r, now, &grams[20..], &mut file);
        assert_eq!(file, bytes);
        assert!(matches!(
            events.last(),
            Some(Event::TransferComplete { .. })
        ));
        assert_eq!(r.stats().dropped.no_descriptor, 0);
        assert_eq!(r.memory_in_use(), 0);
    }

    #[test]
    fn limbo_is_bounded_and_forgets_the_oldest() {
        let bytes = data(30_000);
        let desc = descriptor(&bytes, fec());
        let grams = datagrams(&desc, &bytes, 1, 2);
        let limbo = 20 * (32 + HEADER_LEN);
        let mut r = Reassembler::new(ReassemblerConfig {
            limbo_memory: limbo,
            ..ReassemblerConfig::default()
        });
        let shards: Vec<_> = grams[2..]
            .iter()
            .filter(|g| decode_frame(g, &Integrity::Crc32c).unwrap().header.kind == FrameKind::Data)
            .take(50)
            .collect();
        for g in &shards {
            r.handle_datagram(Instant::now(), g);
        }
        assert_eq!(r.memory_in_use(), limbo);
        assert_eq!(r.stats().dropped.no_descriptor, 30);
    }

    #[test]
    fn a_stalled_transfer_expires_with_its_missing_blocks() {
        let bytes = data(3000);
        let desc = descriptor(&bytes, fec());
        let grams = datagrams(&desc, &bytes, 1, 1);
        let mut r = Reassembler::new(ReassemblerConfig {
            transfer_expiry: Duration::from_secs(5),
            ..ReassemblerConfig::default()
        });
        let t0 = Instant::now();
        let mut file = vec![0; bytes.len()];
        run(&mut r, t0, &grams[..grams.len() / 2], &mut file);
        assert_eq!(r.poll_timeout(), Some(t0 + Duration::from_secs(5)));
        r.handle_timeout(t0 + Duration::from_secs(4));
        assert_eq!(r.transfers_in_flight(), 1);
        r.handle_timeout(t0 + Duration::from_secs(5));
        match r.poll_event() {
            Some(Event::TransferExpired {
                descriptor,
                missing,
            }) => {
                assert_eq!(descriptor, desc);
                assert!(!missing.is_empty());
                assert_eq!(missing.last().unwrap().end, desc.block_count);
            }
            e => panic!("expected expiry, got {e:?}"),
        }
        assert_eq!(r.memory_in_use(), 0);
    }

    #[test]
    fn a_conflicting_descriptor_is_refused() {
        let bytes = data(3000);
        let desc = descriptor(&bytes, fec());
        // Same id and hash, other geometry: a conflict.
        let mut forged = desc.clone();
        forged.name = BundleName::parse("other").unwrap();
        // Same id, other hash: not a valid descriptor at all (the id
        // follows from the hash).
        let mut stolen = desc.clone();
        stolen.digest = [0; 32];
        let mut r = Reassembler::new(ReassemblerConfig::default());
        let now = Instant::now();
        let mut link = LinkEncoder::new(1, Integrity::Crc32c);
        for d in [&desc, &forged, &stolen] {
            let mut out = Vec::new();
            let addr = crate::link::FrameAddr {
                kind: FrameKind::Descriptor,
                transfer: d.transfer.0,
                block: 0,
                shard: 0,
            };
            link.frame(addr, &d.to_bytes(), &mut out).unwrap();
            r.handle_datagram(now, &out);
        }
        assert_eq!(r.stats().dropped.descriptor_conflict, 1);
        assert_eq!(r.stats().dropped.invalid, 1);
    }

    #[test]
    fn a_refused_transfer_is_told_with_its_limit_once_a_minute() {
        let bytes = data(5000);
        let desc = descriptor(&bytes, fec());
        // A sender epoch per call: repeated frames would be dropped as
        // duplicates before their descriptor is read.
        let epoch = std::cell::Cell::new(0);
        let refusals = |r: &mut Reassembler, now: Instant| -> Vec<Refusal> {
            let mut file = vec![0; bytes.len()];
            epoch.set(epoch.get() + 1);
            let grams = datagrams(&desc, &bytes, 1, epoch.get());
            run(r, now, &grams, &mut file)
                .into_iter()
                .filter_map(|e| match e {
                    Event::TransferRefused {
                        descriptor,
                        refusal,
                    } => {
                        assert_eq!(descriptor, desc);
                        Some(refusal)
                    }
                    _ => None,
                })
                .collect()
        };
        // Too large: told once for all its repeated descriptors, again a
        // minute later.
        let mut r = Reassembler::new(ReassemblerConfig {
            max_transfer_size: 4999,
            ..ReassemblerConfig::default()
        });
        let t0 = Instant::now();
        assert_eq!(
            refusals(&mut r, t0),
            vec![Refusal::TooLarge { limit: 4999 }]
        );
        assert!(r.stats().dropped.refused >= 3, "every descriptor counts");
        assert!(refusals(&mut r, t0 + Duration::from_secs(30)).is_empty());
        assert_eq!(refusals(&mut r, t0 + Duration::from_secs(61)).len(), 1);
        assert_eq!(r.transfers_in_flight(), 0);
        // Blocks bigger than a transfer's share of memory.
        let mut r = Reassembler::new(ReassemblerConfig {
            max_memory: (2 << 20) + 1000,
            max_transfers: 1,
            ..ReassemblerConfig::default()
        });
        let block = desc.fec.block_len() as u64;
        assert_eq!(
            refusals(&mut r, t0),
            vec![Refusal::BlocksTooBig {
                needed: block * u64::from(desc.block_count.min(8)),
                share: 1000 / block * block,
            }]
        );
    }

    #[test]
    fn the_refusal_log_is_bounded_and_forgets_what_was_taken() {
        let mut log = RefusalLog::default();
        let t0 = Instant::now();
        for id in 0..REFUSALS_REMEMBERED as u64 {
            assert!(log.tell(TransferId(id), t0));
        }
        // Full: a new transfer goes untold until the others age out.
        assert!(!log.tell(TransferId(1000), t0));
        assert!(!log.tell(TransferId(0), t0 + Duration::from_secs(59)));
        assert!(log.tell(TransferId(1000), t0 + REFUSAL_REPEAT));
        // Taken after all: its next refusal is news at once.
        log.forget(TransferId(1000));
        assert!(log.tell(TransferId(1000), t0 + REFUSAL_REPEAT));
    }

    #[test]
    fn too_many_transfers_are_refused_not_evicted() {
        let bytes = data(3000);
        let mut r = Reassembler::new(ReassemblerConfig {
            max_transfers: 1,
            ..ReassemblerConfig::default()
        });
        let now = Instant::now();
        let mut file = vec![0; bytes.len()];
        let other = data(3001);
        let (da, db) = (descriptor(&bytes, fec()), descriptor(&other, fec()));
        let a = datagrams(&da, &bytes, 1, 1);
        let b = datagrams(&db, &other, 1, 2);
        run(&mut r, now, &a[..5], &mut file);
        run(&mut r, now, &b[..1], &mut file);
        assert_eq!(r.stats().dropped.too_many_transfers, 1);
        assert_eq!(r.progress(da.transfer).map(|p| p.1), Some(12));
    }

    #[test]
    fn spills_and_expiries_come_in_id_and_block_order() {
        // Regression: both walked the maps, whose order is random per
        // process, so a seeded run did not replay exactly.
        let config = ReassemblerConfig {
            max_transfers: 8,
            ..ReassemblerConfig::default()
        };
        let mut r = Reassembler::new(config.clone());
        let now = Instant::now();
        let mut descs = Vec::new();
        for i in 0..6u8 {
            let bytes: Vec<u8> = data(3000).iter().map(|b| b ^ i).collect();
            let desc = descriptor(&bytes, fec());
            let grams = datagrams(&desc, &bytes, 1, u64::from(i) + 1);
            // The first half: blocks begun, the last groups incomplete.
            let mut file = vec![0; bytes.len()];
            run(&mut r, now, &grams[..grams.len() / 2], &mut file);
            descs.push(desc);
        }
        r.spill_all();
        let mut spilled = Vec::new();
        while let Some(e) = r.poll_event() {
            if let Event::SpillBlock(s) = e {
                spilled.push((s.transfer, s.block));
            }
        }
        assert!(spilled.len() > 6, "{spilled:?}");
        let mut sorted = spilled.clone();
        sorted.sort_unstable();
        assert_eq!(spilled, sorted);
        r.handle_timeout(now + config.transfer_expiry);
        let mut expired = Vec::new();
        while let Some(e) = r.poll_event() {
            if let Event::TransferExpired { descriptor, .. } = e {
                expired.push(descriptor.transfer);
            }
        }
        let mut want: Vec<TransferId> = descs.iter().map(|d| d.transfer).collect();
        want.sort_unstable();
        assert_eq!(expired, want);
    }

    #[test]
    fn saved_state_round_trips_and_bad_state_is_refused() {
        let bytes = data(3000);
        let desc = descriptor(&bytes, fec());
        let grams = datagrams(&desc, &bytes, 1, 1);
        let now = Instant::now();
        let mut r = Reassembler::new(ReassemblerConfig::default());
        let mut file = vec![0; bytes.len()];
        run(&mut r, now, &grams[..60], &mut file);
        r.spill_all();
        let state = r.export_state(desc.transfer).unwrap();
        assert!(!state.spilled.is_empty());
        let mut fresh = Reassembler::new(ReassemblerConfig::default());
        fresh.import_state(now, state.clone()).unwrap();
        assert_eq!(fresh.export_state(desc.transfer).unwrap(), state);
        let mut bad = state.clone();
        bad.done.push(0);
        assert_eq!(
            Reassembler::new(ReassemblerConfig::default()).import_state(now, bad),
            Err(StateError::Inconsistent)
        );
        let mut bad = state;
        bad.done = vec![u64::MAX];
        assert_eq!(
            Reassembler::new(ReassemblerConfig::default()).import_state(now, bad),
            Err(StateError::Inconsistent)
        );
    }

    #[test]
    fn a_state_built_from_events_matches_the_core_s_own() {
        let bytes = data(9000);
        let desc = descriptor(&bytes, fec());
        let grams = datagrams(&desc, &bytes, 1, 1);
        let now = Instant::now();
        let mut r = Reassembler::new(ReassemblerConfig::default());
        let mut mine = TransferState::new(desc.clone());
        // Every third frame lost: blocks complete, some wait for more.
        for g in grams.iter().take(200).step_by(3) {
            r.handle_datagram(now, g);
        }
        r.spill_all();
        while let Some(e) = r.poll_event() {
            match e {
                Event::BlockReady { block, .. } => mine.set_done(block),
                Event::SpillBlock(s) => mine.add_spilled(&s),
                _ => {}
            }
        }
        assert_eq!(r.export_state(desc.transfer).unwrap(), mine);
        assert!(!mine.is_complete());
        let missing: u32 = mine.missing().iter().map(|m| m.end - m.start).sum();
        assert_eq!(missing + mine.blocks_done(), desc.block_count);
    }

    #[test]
    fn a_complete_state_completes_on_import_even_if_finished_before() {
        let bytes = data(3000);
        let desc = descriptor(&bytes, fec());
        let now = Instant::now();
        let mut r = Reassembler::new(ReassemblerConfig::default());
        let mut file = vec![0; bytes.len()];
        run(&mut r, now, &datagrams(&desc, &bytes, 1, 1), &mut file);
        // The driver could not store one block: it re-opens the transfer
        // with what it has, and a later pass fills the gap.
        let mut state = TransferState::new(desc.clone());
        for b in 1..desc.block_count {
            state.set_done(b);
        }
        assert_eq!(state.missing(), vec![0..1]);
        r.import_state(now, state.clone()).unwrap();
        let events = run(&mut r, now, &datagrams(&desc, &bytes, 2, 2), &mut file);
        assert!(events.contains(&Event::TransferComplete {
            descriptor: desc.clone(),
        }));
        // Every block on disk: complete at once.
        state.set_done(0);
        let mut fresh = Reassembler::new(ReassemblerConfig::default());
        fresh.import_state(now, state).unwrap();
        assert_eq!(
            fresh.poll_event(),
            Some(Event::TransferComplete { descriptor: desc })
        );
        assert_eq!(fresh.transfers_in_flight(), 0);
    }

    #[test]
    fn block_buffers_are_aligned_for_direct_io() {
        let bytes = data(5000);
        let desc = descriptor(&bytes, fec());
        let mut r = Reassembler::new(ReassemblerConfig::default());
        let mut ready = 0;
        for g in datagrams(&desc, &bytes, 1, 1) {
            r.handle_datagram(Instant::now(), &g);
            while let Some(e) = r.poll_event() {
                if let Event::BlockReady { data, .. } = e {
                    assert_eq!(data.as_ptr().align_offset(BLOCK_ALIGN), 0);
                    ready += 1;
                }
            }
        }
        assert_eq!(ready, desc.block_count);
    }
}
