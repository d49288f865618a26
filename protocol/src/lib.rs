//! weir-protocol: the I/O-free core shared by `weir-sender` and `weir-receiver`.
//!
//! ```text
//!  high side                                              low side
//!  BlockSource ─▶ Chunker ─▶ LinkEncoder ─▶ (UDP) ─▶ Reassembler ─▶ Events
//!                 (FEC, interleave,          one-way   (integrity, FEC,
//!                  passes)                   link       bounded memory)
//! ```
//!
//! Nothing here opens a socket, reads a clock or touches a file: time comes
//! in as an argument, bytes come in as slices, and work goes back to the
//! driver as return values and events. That is what makes the seeded
//! lossy-link simulator and the fuzzers possible.
//!
//! - [`wire`]: the frame header, CRC32C and MAC (see `docs/PROTOCOL.md`).
//! - [`fec`]: Reed–Solomon parameters, the pass schedule, encoder and decoder.
//! - [`descriptor`]: what a receiver needs to rebuild one file.
//! - [`digest`]: the transfer digest a descriptor names a file by.
//! - [`control`]: heartbeat and end-of-pass payloads.
//! - [`link`]: sequence numbering and tagging on the sender.
//! - [`chunker`]: the sender's state machine.
//! - [`loss`]: loss, reordering and duplication from sequence numbers.
//! - [`rate`]: link rates as operators write them.
//! - [`reassembler`]: the receiver's state machine.
//! - [`size`]: byte sizes as operators write them.

#![forbid(unsafe_code)]

mod codec;

pub mod chunker;
pub mod control;
pub mod descriptor;
pub mod digest;
pub mod fec;
pub mod link;
pub mod loss;
pub mod rate;
pub mod reassembler;
pub mod size;
pub mod wire;

pub use chunker::{
    BlockSource, Chunker, ChunkerConfig, ChunkerError, END_OF_PASS_REPEATS, Transmit,
};
pub use control::{EndOfPass, Heartbeat};
pub use descriptor::{BundleName, TransferDescriptor, TransferId};
pub use fec::{FecParams, FecParamsError};
pub use link::{FrameAddr, LinkEncoder};
pub use loss::{LossMeter, LossStats};
pub use rate::Rate;
pub use reassembler::{
    DropCounts, Event, Reassembler, ReassemblerConfig, Refusal, SpilledBlock, Stats, TransferState,
};
pub use size::ByteSize;
pub use wire::{FrameKind, Integrity, LinkKey, Mtu};
