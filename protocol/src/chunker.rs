//! The sender's state machine: turns one file into shard frames, pass after
//! pass, without doing any I/O itself.
//!
//! ```text
//!   BlockSource ──read_at──▶ group of D blocks ──encode──▶ parity for this pass
//!                                   │
//!        poll_transmit(link, buf) ◀─┘  one frame per call, interleaved:
//!
//!   slot 0:  block b, block b+1, ... block b+D-1     (shard of slot 0 of each)
//!   slot 1:  block b, block b+1, ... block b+D-1
//!   ...
//!   slot K+M-1
//!   then the next group of D blocks
//! ```
//!
//! Interleaving spreads a burst of lost frames over D blocks: a burst of
//! 500 frames at D = 32 costs each block about 16 shards, within its M.
//!
//! Each pass starts with two descriptor frames, repeats the descriptor every
//! `descriptor_every` frames, and ends with a descriptor and an end-of-pass
//! frame. Pass 0 sends the data shards and parity `0..M`; every later pass
//! sends `K + M` parity shards no earlier pass carried ([`FecParams::shard_at`]).
//! The bytes of a shard depend only on (file, block, shard), so a chunker
//! restarted at any pass emits shards a receiver can merge with what it has.
//!
//! Memory: D blocks and their parity for one pass, whatever the file size.

use std::collections::VecDeque;

use crate::control::EndOfPass;
use crate::descriptor::TransferDescriptor;
use crate::fec::{BlockEncoder, FecError, FecParams, ShardId};
use crate::link::{FrameAddr, LinkEncoder};
use crate::wire::{EncodeError, FrameKind};

/// Where the chunker reads file bytes from: a file in the daemon, memory in
/// tests and benchmarks.
pub trait BlockSource {
    /// Fills `buf` with the bytes at `offset`. The chunker never asks for
    /// bytes past the size in the descriptor.
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<()>;
}

impl<T: AsRef<[u8]>> BlockSource for std::io::Cursor<T> {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let bytes = self.get_ref().as_ref();
        let start = usize::try_from(offset)
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))?;
        let src = bytes
            .get(start..start.saturating_add(buf.len()))
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

/// How many passes and how often to repeat the descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkerConfig {
    /// Pass to start at: 0 for a new transfer, or where an interrupted
    /// sender stopped.
    pub first_pass: u32,
    /// Passes to send in all (counting from 0); 0 means without end.
    pub passes: u32,
    /// A descriptor frame goes out at least this often, in frames.
    pub descriptor_every: u32,
}

impl Default for ChunkerConfig {
    fn default() -> Self {
        Self {
            first_pass: 0,
            passes: 2,
            descriptor_every: 1024,
        }
    }
}

/// What `poll_transmit` appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    /// The frame's kind.
    pub kind: FrameKind,
    /// Datagram bytes appended to the buffer.
    pub len: usize,
    /// The pass the frame belongs to.
    pub pass: u32,
}

/// Why the chunker stopped.
#[derive(Debug, thiserror::Error)]
pub enum ChunkerError {
    /// The source could not be read.
    #[error("reading block at offset {offset}: {source}")]
    Source {
        /// Where the read was.
        offset: u64,
        /// What the source said.
        source: std::io::Error,
    },
    /// The erasure coder failed (a bug, not input).
    #[error(transparent)]
    Fec(#[from] FecError),
    /// A frame could not be encoded (a bug, not input).
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// An internal invariant broke (a bug).
    #[error("internal error: {0}")]
    Internal(&'static str),
}

#[derive(Debug, Clone, Copy)]
enum Control {
    Descriptor,
    EndOfPass(u32),
}

/// Produces the frames of one transfer.
#[derive(Debug)]
pub struct Chunker<S> {
    /// The transfer being sent.
    desc: TransferDescriptor,
    /// Its encoded form, kept for repeats.
    desc_bytes: Vec<u8>,
    source: S,
    config: ChunkerConfig,
    encoder: BlockEncoder,
    /// The pass in progress.
    pass: u32,
    /// First block of the loaded group.
    group_start: u32,
    /// Blocks in the loaded group, or 0 when none is loaded.
    group_len: u32,
    /// Shard slot (0..K+M) being sent within the group.
    slot: u32,
    /// Block within the group whose shard goes next.
    member: u32,
    /// The group's blocks, zero-padded, back to back.
    blocks: Vec<u8>,
    /// The group's parity for this pass: per block, one shard per parity slot.
    parity: Vec<u8>,
    /// Parity slots per block in this pass (M in pass 0, K + M later).
    parity_slots: u32,
    /// Recovery index of each parity slot in this pass.
    parity_index: Vec<u32>,
    /// Control frames to send before the next shard.
    control: VecDeque<Control>,
    /// Frames sent since the last descriptor.
    since_descriptor: u32,
    /// All planned passes are out.
    done: bool,
}

impl<S: BlockSource> Chunker<S> {
    /// A chunker for `desc`, reading its bytes from `source`.
    pub fn new(desc: TransferDescriptor, source: S, config: ChunkerConfig) -> Self {
        let mut c = Self {
            desc_bytes: desc.to_bytes(),
            encoder: BlockEncoder::new(desc.fec),
            desc,
            source,
            config,
            pass: config.first_pass,
            group_start: 0,
            group_len: 0,
            slot: 0,
            member: 0,
            blocks: Vec::new(),
            parity: Vec::new(),
            parity_slots: 0,
            parity_index: Vec::new(),
            control: VecDeque::new(),
            since_descriptor: 0,
            done: config.passes != 0 && config.first_pass >= config.passes,
        };
        if !c.done {
            c.start_pass();
        }
        c
    }

    /// The transfer this chunker sends.
    pub fn descriptor(&self) -> &TransferDescriptor {
        &self.desc
    }

    /// The pass in progress.
    pub fn pass(&self) -> u32 {
        self.pass
    }

    /// True once every planned pass has gone out.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// True between two groups of blocks: a driver that must switch to an
    /// urgent transfer loses no encoding work by switching here.
    pub fn at_group_boundary(&self) -> bool {
        self.group_len == 0
    }

    /// Fraction of the current pass already sent, in blocks.
    pub fn progress(&self) -> (u32, u32) {
        (self.group_start, self.desc.block_count)
    }

    fn start_pass(&mut self) {
        self.group_start = 0;
        self.group_len = 0;
        self.control.push_back(Control::Descriptor);
        self.control.push_back(Control::Descriptor);
    }

    /// Appends the next frame to `out`, or returns `None` when every pass
    /// is done.
    pub fn poll_transmit(
        &mut self,
        link: &mut LinkEncoder,
        out: &mut Vec<u8>,
    ) -> Result<Option<Transmit>, ChunkerError> {
        if let Some(c) = self.control.pop_front() {
            return self.send_control(c, link, out).map(Some);
        }
        if self.done || (self.config.passes != 0 && self.pass >= self.config.passes) {
            self.done = true;
            return Ok(None);
        }
        if self.since_descriptor >= self.config.descriptor_every {
            return self.send_control(Control::Descriptor, link, out).map(Some);
        }
        if self.group_len == 0 {
            if self.group_start >= self.desc.block_count {
                return self.finish_pass(link, out).map(Some);
            }
            self.load_group()?;
        }
        let t = self.send_shard(link, out)?;
        self.advance();
        Ok(Some(t))
    }

    fn send_control(
        &mut self,
        c: Control,
        link: &mut LinkEncoder,
        out: &mut Vec<u8>,
    ) -> Result<Transmit, ChunkerError> {
        let transfer = self.desc.transfer.0;
        let (kind, len) = match c {
            Control::Descriptor => {
                self.since_descriptor = 0;
                let addr = addr(FrameKind::Descriptor, transfer, 0, 0);
                (addr.kind, link.frame(addr, &self.desc_bytes, out)?)
            }
            Control::EndOfPass(pass) => {
                let mut payload = Vec::with_capacity(crate::control::END_OF_PASS_LEN);
                EndOfPass {
                    pass,
                    passes: self.config.passes,
                }
                .encode(&mut payload);
                let addr = addr(FrameKind::EndOfPass, transfer, 0, 0);
                (addr.kind, link.frame(addr, &payload, out)?)
            }
        };
        Ok(Transmit {
            kind,
            len,
            pass: self.pass,
        })
    }

    fn finish_pass(
        &mut self,
        link: &mut LinkEncoder,
        out: &mut Vec<u8>,
    ) -> Result<Transmit, ChunkerError> {
        let ended = self.pass;
        let t = self.send_control(Control::Descriptor, link, out)?;
        self.control.push_back(Control::EndOfPass(ended));
        self.pass = self.pass.saturating_add(1);
        if self.config.passes == 0 || self.pass < self.config.passes {
            self.start_pass();
        }
        Ok(t)
    }

    fn load_group(&mut self) -> Result<(), ChunkerError> {
        let fec: FecParams = self.desc.fec;
        let block_len = fec.block_len();
        let remaining = self.desc.block_count - self.group_start;
        let len = remaining.min(u32::from(fec.interleave()));
        self.blocks.clear();
        self.blocks.resize(len as usize * block_len, 0);
        self.parity.clear();
        self.parity_index.clear();
        for (i, buf) in self.blocks.chunks_exact_mut(block_len).enumerate() {
            let block = self.group_start + i as u32;
            let offset = self.desc.block_offset(block);
            let true_len = self.desc.block_len(block);
            let (head, _) = buf.split_at_mut(true_len.min(block_len));
            self.source
                .read_at(offset, head)
                .map_err(|source| ChunkerError::Source { offset, source })?;
            let idx = self.encoder.encode_pass(buf, self.pass, &mut self.parity)?;
            if i == 0 {
                self.parity_index = idx;
            }
        }
        self.parity_slots = self.parity_index.len() as u32;
        self.group_len = len;
        self.slot = 0;
        self.member = 0;
        Ok(())
    }

    fn send_shard(
        &mut self,
        link: &mut LinkEncoder,
        out: &mut Vec<u8>,
    ) -> Result<Transmit, ChunkerError> {
        let fec = self.desc.fec;
        let s = usize::from(fec.shard_size());
        let block = self.group_start + self.member;
        let (kind, shard, start) = match fec.shard_at(self.pass, self.slot) {
            ShardId::Data(i) => {
                let start = self.member as usize * fec.block_len() + usize::from(i) * s;
                (FrameKind::Data, i, start)
            }
            ShardId::Parity(r) => {
                let nth_parity = self.slot - self.parity_slot_base();
                let pslot = self.member * self.parity_slots + nth_parity;
                (FrameKind::Parity, r as u16, pslot as usize * s)
            }
        };
        let source = if kind == FrameKind::Data {
            &self.blocks
        } else {
            &self.parity
        };
        let payload = source
            .get(start..start + s)
            .ok_or(ChunkerError::Internal("shard outside the group buffer"))?;
        let len = link.frame(addr(kind, self.desc.transfer.0, block, shard), payload, out)?;
        self.since_descriptor += 1;
        Ok(Transmit {
            kind,
            len,
            pass: self.pass,
        })
    }

    /// Index of the first parity slot in this pass.
    fn parity_slot_base(&self) -> u32 {
        if self.pass == 0 {
            u32::from(self.desc.fec.data_shards())
        } else {
            0
        }
    }

    fn advance(&mut self) {
        self.member += 1;
        if self.member < self.group_len {
            return;
        }
        self.member = 0;
        self.slot += 1;
        if self.slot < self.desc.fec.frames_per_block_per_pass() {
            return;
        }
        self.group_start += self.group_len;
        self.group_len = 0;
    }
}

fn addr(kind: FrameKind, transfer: u64, block: u32, shard: u16) -> FrameAddr {
    FrameAddr {
        kind,
        transfer,
        block,
        shard,
    }
}
