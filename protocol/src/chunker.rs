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
//! 500 frames at the default D = 16 costs each block about 32 shards, half
//! its M = 64.
//!
//! Each pass starts with two descriptor frames, repeats the descriptor every
//! `descriptor_every` frames, and ends with a descriptor and
//! [`END_OF_PASS_REPEATS`] end-of-pass frames (a single one lost would hide
//! the pass end from the receiver; it counts the repeats once). Pass 0
//! sends the data shards and parity `0..M`; every later pass sends `K + M`
//! parity shards no earlier pass carried ([`FecParams::shard_at`]).
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

/// End-of-pass frames sent at the end of each pass: all of them are lost
/// together with probability p⁴ on a link that loses a fraction p of
/// frames independently (0.4% at 25% loss).
pub const END_OF_PASS_REPEATS: usize = 4;

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
            descriptor_every: 256,
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
    /// True on the last frame of a pass (its last end-of-pass frame).
    pub pass_done: bool,
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
            let mut t = self.send_control(c, link, out)?;
            t.pass_done = matches!(c, Control::EndOfPass(_))
                && !matches!(self.control.front(), Some(Control::EndOfPass(_)));
            return Ok(Some(t));
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
        let pass = match c {
            Control::EndOfPass(p) => p,
            Control::Descriptor => self.pass,
        };
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
            pass,
            pass_done: false,
        })
    }

    fn finish_pass(
        &mut self,
        link: &mut LinkEncoder,
        out: &mut Vec<u8>,
    ) -> Result<Transmit, ChunkerError> {
        let ended = self.pass;
        let t = self.send_control(Control::Descriptor, link, out)?;
        for _ in 0..END_OF_PASS_REPEATS {
            self.control.push_back(Control::EndOfPass(ended));
        }
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
        // Every byte is read over, except the padding of a short last
        // block, which is zeroed below: no need to clear the whole group.
        self.blocks.resize(len as usize * block_len, 0);
        self.parity.clear();
        self.parity_index.clear();
        // Block by block: each is encoded right after its read, while it
        // is still in the core's cache (one read for the whole group was
        // measured slower).
        for (i, buf) in self.blocks.chunks_exact_mut(block_len).enumerate() {
            let block = self.group_start + i as u32;
            let offset = self.desc.block_offset(block);
            let true_len = self.desc.block_len(block);
            let (head, tail) = buf.split_at_mut(true_len.min(block_len));
            self.source
                .read_at(offset, head)
                .map_err(|source| ChunkerError::Source { offset, source })?;
            tail.fill(0);
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
            pass_done: false,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::descriptor::{BundleName, TransferId};
    use crate::wire::{Integrity, decode_frame};
    use std::io::Cursor;

    fn chunker(size: usize, passes: u32) -> Chunker<Cursor<Vec<u8>>> {
        let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let fec = FecParams::new(4, 2, 16, 2).unwrap();
        let desc = TransferDescriptor::new(
            TransferId::from_digest(&crate::digest::digest(&data)),
            BundleName::parse("t").unwrap(),
            size as u64,
            crate::digest::digest(&data),
            fec,
        )
        .unwrap();
        let config = ChunkerConfig {
            passes,
            ..ChunkerConfig::default()
        };
        Chunker::new(desc, Cursor::new(data), config)
    }

    fn frames(c: &mut Chunker<Cursor<Vec<u8>>>) -> Vec<(FrameKind, u32, u16, u32, bool)> {
        let mut link = LinkEncoder::new(1, Integrity::Crc32c);
        let mut out = Vec::new();
        let mut seen = Vec::new();
        while let Some(t) = c.poll_transmit(&mut link, &mut out).unwrap() {
            let f = decode_frame(&out, &Integrity::Crc32c).unwrap();
            assert_eq!(f.header.kind, t.kind);
            seen.push((t.kind, f.header.block, f.header.shard, t.pass, t.pass_done));
            out.clear();
        }
        seen
    }

    #[test]
    fn frames_are_interleaved_and_passes_bring_fresh_parity() {
        // 3 blocks of 64 bytes (the last one partial), interleave 2.
        let mut c = chunker(150, 2);
        let f = frames(&mut c);
        let kinds = |k| f.iter().filter(|x| x.0 == k).count();
        // Per pass: 2 descriptors at start + 1 at end; the end of pass
        // repeated, its last copy marked.
        assert_eq!(kinds(FrameKind::Descriptor), 6);
        assert_eq!(kinds(FrameKind::EndOfPass), 2 * END_OF_PASS_REPEATS);
        let ends: Vec<(usize, u32)> = f
            .iter()
            .enumerate()
            .filter(|(_, x)| x.4)
            .map(|(i, x)| (i, x.3))
            .collect();
        assert_eq!(ends.len(), 2, "one frame marks each pass done");
        for (i, pass) in ends {
            assert_eq!(f[i].0, FrameKind::EndOfPass);
            assert_ne!(f.get(i + 1).map(|x| x.0), Some(FrameKind::EndOfPass));
            assert_eq!(
                f[i - END_OF_PASS_REPEATS + 1..=i]
                    .iter()
                    .filter(|x| x.0 == FrameKind::EndOfPass && x.3 == pass)
                    .count(),
                END_OF_PASS_REPEATS
            );
        }
        // Pass 0: K data + M parity per block; pass 1: K + M parity per block.
        assert_eq!(kinds(FrameKind::Data), 3 * 4);
        assert_eq!(kinds(FrameKind::Parity), 3 * 2 + 3 * 6);
        let shards: Vec<_> = f
            .iter()
            .filter(|x| matches!(x.0, FrameKind::Data | FrameKind::Parity))
            .collect();
        // Group of blocks 0 and 1 goes first, slot by slot, block by block.
        assert_eq!(
            &shards[..4].iter().map(|x| (x.1, x.2)).collect::<Vec<_>>(),
            &[(0, 0), (1, 0), (0, 1), (1, 1)]
        );
        // Then block 2 alone.
        assert!(shards[12..18].iter().all(|x| x.1 == 2));
        // Pass 1 parity indices start after pass 0's.
        let pass1: Vec<u16> = shards
            .iter()
            .filter(|x| x.3 == 1 && x.1 == 0)
            .map(|x| x.2)
            .collect();
        assert_eq!(pass1, vec![2, 3, 4, 5, 6, 7]);
        assert!(c.is_done());
    }

    #[test]
    fn starting_at_a_later_pass_sends_only_that_pass() {
        let mut c = chunker(150, 2);
        c = Chunker::new(
            c.desc.clone(),
            Cursor::new(vec![0u8; 150]),
            ChunkerConfig {
                first_pass: 1,
                passes: 2,
                descriptor_every: 1024,
            },
        );
        assert!(frames(&mut c).iter().all(|x| x.3 == 1));
    }

    #[test]
    fn an_empty_file_sends_descriptors_and_end_of_pass() {
        let mut c = chunker(0, 1);
        let f = frames(&mut c);
        assert_eq!(
            f.iter().map(|x| x.0).collect::<Vec<_>>(),
            [
                [FrameKind::Descriptor; 3].as_slice(),
                &[FrameKind::EndOfPass; END_OF_PASS_REPEATS]
            ]
            .concat()
        );
    }

    #[test]
    fn descriptors_repeat_within_a_pass() {
        let mut c = chunker(150, 1);
        c.config.descriptor_every = 5;
        let f = frames(&mut c);
        let between: Vec<usize> = f
            .split(|x| x.0 == FrameKind::Descriptor)
            .map(|run| run.len())
            .collect();
        assert!(between.iter().all(|&n| n <= 5), "{between:?}");
    }

    #[test]
    fn a_failing_source_is_an_error_not_a_panic() {
        struct Broken;
        impl BlockSource for Broken {
            fn read_at(&mut self, _: u64, _: &mut [u8]) -> std::io::Result<()> {
                Err(std::io::Error::other("disk gone"))
            }
        }
        let c = chunker(150, 1);
        let mut c = Chunker::new(c.desc.clone(), Broken, ChunkerConfig::default());
        let mut link = LinkEncoder::new(1, Integrity::Crc32c);
        let mut out = Vec::new();
        let err = loop {
            match c.poll_transmit(&mut link, &mut out) {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("finished without reading"),
                Err(e) => break e,
            }
        };
        assert!(matches!(err, ChunkerError::Source { offset: 0, .. }));
    }
}
