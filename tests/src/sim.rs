//! Drives the I/O-free core end to end in memory: chunkers on one side, a
//! [`LossyLink`] in the middle, and a receiver driver that does what the
//! daemon does with each event, with a byte vector standing in for each
//! partial file.

use std::collections::HashMap;
use std::io::Cursor;
use std::time::{Duration, Instant};

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use weir_protocol::{
    BundleName, Chunker, ChunkerConfig, Event, FecParams, Integrity, LinkEncoder, Reassembler,
    ReassemblerConfig, TransferDescriptor, TransferId,
};

use crate::link::LossyLink;

/// `len` reproducible pseudo-random bytes.
pub fn sample_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    ChaCha8Rng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// The default FEC parameters at MTU 1500 with a CRC tag.
pub fn default_fec() -> FecParams {
    FecParams::default_for_shard_size(1428).unwrap_or_else(|e| panic!("defaults: {e}"))
}

/// A descriptor for `bytes`, with the id a sender would derive.
pub fn describe(name: &str, bytes: &[u8], fec: FecParams) -> TransferDescriptor {
    let hash = weir_protocol::digest::digest(bytes);
    TransferDescriptor::new(
        TransferId::from_digest(&hash),
        BundleName::sanitise(name),
        bytes.len() as u64,
        hash,
        fec.fitted_to(bytes.len() as u64),
    )
    .unwrap_or_else(|e| panic!("descriptor: {e}"))
}

/// A chunker over an in-memory file.
pub fn chunker(
    desc: &TransferDescriptor,
    bytes: &[u8],
    config: ChunkerConfig,
) -> Chunker<Cursor<Vec<u8>>> {
    Chunker::new(desc.clone(), Cursor::new(bytes.to_vec()), config)
}

/// How a transfer ended at the receiver.
#[derive(Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every block arrived. `verified` is the final digest verdict, on the
    /// fly or by reading the file back, as the daemon would do.
    Complete {
        /// The transfer.
        descriptor: TransferDescriptor,
        /// The rebuilt file.
        bytes: Vec<u8>,
        /// Whether its transfer digest matched the descriptor.
        verified: bool,
    },
    /// The transfer expired with these blocks missing.
    Expired {
        /// The transfer.
        descriptor: TransferDescriptor,
        /// Missing block ranges.
        missing: Vec<std::ops::Range<u32>>,
    },
}

impl std::fmt::Debug for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Complete {
                descriptor,
                bytes,
                verified,
            } => write!(
                f,
                "Complete({} {}: {} bytes, verified {verified})",
                descriptor.transfer,
                descriptor.name,
                bytes.len()
            ),
            Self::Expired {
                descriptor,
                missing,
            } => {
                write!(f, "Expired({}: missing {missing:?})", descriptor.transfer)
            }
        }
    }
}

/// The receiving side: a reassembler and what a daemon would do with its
/// events, with partial files in memory.
#[derive(Debug)]
pub struct MemReceiver {
    /// The state machine under test.
    pub reassembler: Reassembler,
    /// Partial files by transfer.
    pub files: HashMap<TransferId, Vec<u8>>,
    /// Finished transfers, in order.
    pub outcomes: Vec<Outcome>,
    /// (transfer, pass, missing blocks) for every end of pass seen.
    pub passes_ended: Vec<(TransferId, u32, u32)>,
    /// The highest `memory_in_use` seen after any datagram.
    pub peak_memory: usize,
    /// Fake clock.
    pub now: Instant,
    /// Simulated time per datagram.
    pub tick: Duration,
}

impl MemReceiver {
    /// A receiver with this configuration.
    pub fn new(config: ReassemblerConfig) -> Self {
        Self {
            reassembler: Reassembler::new(config),
            files: HashMap::new(),
            outcomes: Vec::new(),
            passes_ended: Vec::new(),
            peak_memory: 0,
            now: Instant::now(),
            tick: Duration::from_micros(10),
        }
    }

    /// Handles one datagram and every event it causes.
    pub fn handle(&mut self, datagram: &[u8]) {
        self.now += self.tick;
        self.reassembler.handle_datagram(self.now, datagram);
        self.peak_memory = self.peak_memory.max(self.reassembler.memory_in_use());
        self.drain();
    }

    /// Moves the clock on and runs expiry.
    pub fn advance(&mut self, by: Duration) {
        self.now += by;
        self.reassembler.handle_timeout(self.now);
        self.drain();
    }

    /// Outcomes that completed with a verified digest.
    pub fn verified(&self) -> impl Iterator<Item = (&TransferDescriptor, &Vec<u8>)> {
        self.outcomes.iter().filter_map(|o| match o {
            Outcome::Complete {
                descriptor,
                bytes,
                verified: true,
                ..
            } => Some((descriptor, bytes)),
            _ => None,
        })
    }

    fn write(&mut self, id: TransferId, offset: u64, data: &[u8]) {
        if let Some(f) = self.files.get_mut(&id) {
            let start = offset as usize;
            f[start..start + data.len()].copy_from_slice(data);
        }
    }

    /// Does what the daemon does with each pending event.
    pub fn drain(&mut self) {
        while let Some(e) = self.reassembler.poll_event() {
            match e {
                Event::TransferStarted(d) => {
                    self.files.insert(d.transfer, vec![0; d.size as usize]);
                }
                Event::BlockReady {
                    transfer,
                    offset,
                    data,
                    ..
                } => {
                    self.write(transfer, offset, &data);
                    // As the daemon does: the buffer goes back for reuse,
                    // so every simulation also runs on recycled buffers.
                    self.reassembler.recycle(data);
                }
                Event::SpillBlock(spill) => {
                    for (offset, bytes) in spill.segments() {
                        self.write(spill.transfer, offset, bytes);
                    }
                }
                Event::ReloadBlock {
                    transfer,
                    block,
                    offset,
                    len,
                } => {
                    let bytes = self.files.get(&transfer).map(|f| {
                        let start = offset as usize;
                        f[start..start + len].to_vec()
                    });
                    match bytes {
                        Some(b) => self.reassembler.reload(transfer, block, &b),
                        None => self.reassembler.reload_failed(transfer, block),
                    }
                }
                Event::PassEnded {
                    transfer,
                    pass,
                    missing_blocks,
                    ..
                } => self.passes_ended.push((transfer, pass, missing_blocks)),
                Event::TransferComplete { descriptor } => {
                    let bytes = self.files.remove(&descriptor.transfer).unwrap_or_default();
                    let verified = weir_protocol::digest::digest(&bytes) == descriptor.digest();
                    if !verified && descriptor.block_count > 0 {
                        // As the receiver does: the file is wrong, so the
                        // transfer starts afresh and a later pass rebuilds
                        // it (an empty one never could: it is dropped).
                        let fresh = weir_protocol::TransferState::new(descriptor.clone());
                        if self.reassembler.import_state(self.now, fresh).is_ok() {
                            self.files
                                .insert(descriptor.transfer, vec![0; descriptor.size as usize]);
                        }
                    }
                    self.outcomes.push(Outcome::Complete {
                        descriptor,
                        bytes,
                        verified,
                    });
                }
                Event::TransferExpired {
                    descriptor,
                    missing,
                } => {
                    self.files.remove(&descriptor.transfer);
                    self.outcomes.push(Outcome::Expired {
                        descriptor,
                        missing,
                    });
                }
                Event::Heartbeat { .. }
                | Event::SenderRestarted { .. }
                | Event::TransferRefused { .. } => {}
            }
        }
    }
}

/// One sender: its link encoder and a scratch buffer.
#[derive(Debug)]
pub struct MemSender {
    /// Stamps frames.
    pub link: LinkEncoder,
    buf: Vec<u8>,
}

impl MemSender {
    /// A sender epoch with this integrity.
    pub fn new(epoch: u64, integrity: Integrity) -> Self {
        Self {
            link: LinkEncoder::new(epoch, integrity),
            buf: Vec::with_capacity(9000),
        }
    }

    /// Sends frames of `chunker` through `link` to `rx` until `stop` says
    /// so after a frame, or the chunker is done. Returns frames sent.
    pub fn send_until(
        &mut self,
        chunker: &mut Chunker<Cursor<Vec<u8>>>,
        link: &mut LossyLink,
        rx: &mut MemReceiver,
        mut stop: impl FnMut(&weir_protocol::Transmit) -> bool,
    ) -> u64 {
        let mut n = 0;
        loop {
            self.buf.clear();
            let t = match chunker.poll_transmit(&mut self.link, &mut self.buf) {
                Ok(Some(t)) => t,
                Ok(None) => break,
                Err(e) => panic!("chunker: {e}"),
            };
            n += 1;
            link.send(&self.buf);
            while let Some(d) = link.recv() {
                rx.handle(&d);
            }
            if stop(&t) {
                break;
            }
        }
        link.flush();
        while let Some(d) = link.recv() {
            rx.handle(&d);
        }
        n
    }

    /// Sends every frame of `chunker`.
    pub fn send_all(
        &mut self,
        chunker: &mut Chunker<Cursor<Vec<u8>>>,
        link: &mut LossyLink,
        rx: &mut MemReceiver,
    ) -> u64 {
        self.send_until(chunker, link, rx, |_| false)
    }
}
