//! Block buffers on their way back to the reassembler.
//!
//! A block's bytes are shared by the writer and, for the block at the front
//! of the written prefix, the verifier. Whichever is done last gives them
//! back; the receive loop returns them to the core, which reuses the
//! allocation for a new block instead of allocating and zeroing one.
//!
//! ```text
//!  core ─ BlockReady(Bytes) ─▶ writer ─ hand-over ─▶ verifier
//!   ▲                            │ give                │ give
//!   └──── receive loop ◀─────────┴─────────────────────┘
//! ```

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use bytes::Bytes;

/// Buffers in flight back to the receive loop; more are simply dropped.
/// Each block comes back twice (writer and verifier), and a whole
/// interleaved group of blocks finishes at once.
pub const BACKLOG: usize = 64;

/// The giving end, cloned into the writer and every verifier.
#[derive(Debug, Clone)]
pub struct Recycle(SyncSender<Bytes>);

/// The receive loop's end.
#[derive(Debug)]
pub struct Returned(Receiver<Bytes>);

/// A new channel.
pub fn channel() -> (Recycle, Returned) {
    let (tx, rx) = sync_channel(BACKLOG);
    (Recycle(tx), Returned(rx))
}

impl Recycle {
    /// Gives a block's bytes back; never waits (a full channel drops them).
    pub fn give(&self, data: Bytes) {
        let _ = self.0.try_send(data);
    }
}

impl Returned {
    /// The next buffer given back, if any.
    pub fn next(&self) -> Option<Bytes> {
        self.0.try_recv().ok()
    }
}
