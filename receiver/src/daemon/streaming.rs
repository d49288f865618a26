//! Verification while a transfer is still arriving.
//!
//! Each transfer gets a verifier thread that feeds the bundle verifier (a
//! push parser: signatures first, then every artifact's BLAKE3, and the
//! transfer digest in the same pass) with the file's contiguous prefix as
//! it grows. When the last block lands, only the tail is left: the bundle
//! can be published moments after it is complete instead of after a
//! second full read.
//!
//! ```text
//!  writer: block b written at the front of the prefix
//!            ├─ hand_over(offset, bytes) ─▶ channel ─▶ fed from memory
//!            └─ advance(ready)           ─▶ ready   ─▶ blocks that landed
//!                                                      before their turn:
//!                                                      read back from disk
//!  verifier thread: BundleVerifier::feed(prefix bytes, in order) ─▶ Verification
//! ```
//!
//! Blocks handed over in memory are fed where they lie, never copied, and
//! count against one budget shared by all verifiers ([`HANDOFF_BYTES`]);
//! a block the budget cannot hold is read back from disk instead.
//!
//! The verdict only counts if the transfer digest of the very bytes fed
//! matches the sender's: blocks rebuilt from forged frames make a
//! different file, which is received again rather than judged.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use weir_bundle::{BundleInfo, BundleVerifier, Rejection, TrustStore, Verified};

use super::direct::{ALIGN, round_up};
use super::recycle::Recycle;

/// Most bytes of written blocks all verifiers together hold in memory,
/// waiting to be fed (each also holds the one block it is feeding);
/// beyond, a verifier reads its blocks back from disk. Outside the
/// reassembly budget (`limits.memory`). Measured in session 6 at MTU 9000
/// (blocks of 2.2 MiB): with 8 MiB per verifier, one that fell a group
/// behind read the rest back from a disk the writer was busy with, and
/// publication came 0.2-0.5 s after the last block; with 32 MiB it comes
/// at once (goodput 802 -> 963 MB/s, medians of five alternated pairs).
pub const HANDOFF_BYTES: usize = 32 << 20;

/// Bytes read back from the partial file at once.
pub const CHUNK: usize = 1 << 20;

/// Notes the writer leaves a verifier, at most this many waiting (the
/// blocks in them are bounded by bytes, [`HANDOFF_BYTES`]).
const NOTES: usize = 256;

/// The bytes of handed-over blocks all verifiers hold, bounded by
/// [`HANDOFF_BYTES`]; one per receiver, shared by its verifiers. Each
/// verifier may hold an equal share of it (one that fell behind must not
/// leave the others to read from disk), and always one block.
#[derive(Debug, Clone, Default)]
pub struct Handoffs(Arc<Budget>);

#[derive(Debug, Default)]
struct Budget {
    /// Bytes held by all verifiers.
    held: AtomicUsize,
    /// Verifiers alive.
    verifiers: AtomicUsize,
}

impl Handoffs {
    /// Reserves `n` bytes for a verifier that holds `mine` already; false
    /// when its share or the whole budget cannot hold them.
    fn take(&self, mine: usize, n: usize) -> bool {
        let share = HANDOFF_BYTES / self.0.verifiers.load(Ordering::Acquire).max(1);
        if mine > 0 && mine + n > share {
            return false;
        }
        self.0
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(n).filter(|t| *t <= HANDOFF_BYTES)
            })
            .is_ok()
    }

    /// Gives back `n` reserved bytes.
    fn give(&self, n: usize) {
        self.0.held.fetch_sub(n, Ordering::AcqRel);
    }

    /// Bytes held now.
    pub fn held(&self) -> usize {
        self.0.held.load(Ordering::Acquire)
    }
}

/// One verifier's place in the budget's count while its thread lives.
struct Member(Handoffs);

impl Member {
    fn join(budget: Handoffs) -> Self {
        budget.0.verifiers.fetch_add(1, Ordering::AcqRel);
        Self(budget)
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.0.0.verifiers.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A handed-over block: its bytes go back to the budget (and to this
/// verifier's share) when it is dropped, wherever that happens.
#[derive(Debug)]
struct Held {
    offset: u64,
    data: Bytes,
    budget: Handoffs,
    mine: Arc<AtomicUsize>,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.mine.fetch_sub(self.data.len(), Ordering::AcqRel);
        self.budget.give(self.data.len());
    }
}

/// What the writer tells a verifier.
#[derive(Debug)]
enum Note {
    /// A block just written at the front of the prefix.
    Block(Held),
    /// `ready` moved, or the transfer was given up: look again.
    Look,
}

/// What the writer and the verifier thread share.
#[derive(Debug)]
struct Mark {
    /// Bytes from the start written without a gap.
    ready: AtomicU64,
    /// The transfer was given up: stop.
    cancelled: AtomicBool,
    /// The offset the thread waits at for more bytes, or `u64::MAX`:
    /// where it stopped feeding, which tests hold against `ready`.
    waiting_at: AtomicU64,
    /// Bytes of handed-over blocks this verifier holds.
    mine: Arc<AtomicUsize>,
}

/// What a verifier found.
#[derive(Debug)]
pub struct Verification {
    /// The bundle verification, over the bytes fed.
    pub verdict: Result<Verified<BundleInfo>, Rejection>,
    /// The transfer digest of those bytes.
    pub digest: blake3::Hash,
}

/// A running verifier.
#[derive(Debug)]
pub struct Verifier {
    mark: Arc<Mark>,
    /// Dropped to tell the thread no more notes come.
    notes: Option<SyncSender<Note>>,
    budget: Handoffs,
    /// Taken by [`Verifier::finish`].
    thread: Option<JoinHandle<io::Result<Verification>>>,
}

impl Drop for Verifier {
    /// A verifier dropped unfinished must not wait for bytes forever.
    fn drop(&mut self) {
        self.mark.cancelled.store(true, Ordering::Release);
        // Dropping the sender wakes the thread if it waits.
        self.notes = None;
    }
}

impl Verifier {
    /// Starts verifying the file at `path`, of `size` bytes once complete.
    /// Handed-over blocks go back through `recycle` once fed.
    pub fn spawn(
        path: &Path,
        size: u64,
        trust: Arc<TrustStore>,
        recycle: Option<Recycle>,
        budget: Handoffs,
    ) -> io::Result<Self> {
        let disk = Disk::open(path)?;
        let mark = Arc::new(Mark {
            ready: AtomicU64::new(0),
            cancelled: AtomicBool::new(false),
            waiting_at: AtomicU64::new(u64::MAX),
            mine: Arc::default(),
        });
        let (tx, rx) = sync_channel(NOTES);
        let feed = Feed {
            mark: mark.clone(),
            notes: rx,
            disk,
            size,
            recycle,
            pending: VecDeque::new(),
            open: true,
        };
        let member = Member::join(budget.clone());
        let thread = std::thread::Builder::new()
            .name("verifier".into())
            .spawn(move || {
                let _member = member;
                feed.run(&trust, SystemTime::now())
            })?;
        Ok(Self {
            mark,
            notes: Some(tx),
            budget,
            thread: Some(thread),
        })
    }

    /// The first `ready` bytes are written.
    pub fn advance(&self, ready: u64) {
        let before = self.mark.ready.fetch_max(ready, Ordering::SeqCst);
        // Woken only if it waits below the new mark: a thread busy feeding
        // looks at `ready` again before it waits (and `wait` re-reads it
        // after saying where it waits, so one of the two sees the other).
        let waiting = self.mark.waiting_at.load(Ordering::SeqCst);
        if ready > before
            && waiting < ready
            && let Some(tx) = &self.notes
        {
            // Full: the thread has notes to read, and looks at `ready`
            // after each.
            let _ = tx.try_send(Note::Look);
        }
    }

    /// Offers the bytes of a block just written at `offset` (the front of
    /// the written prefix), before the matching [`Verifier::advance`].
    pub fn hand_over(&self, offset: u64, data: Bytes) {
        let Some(tx) = &self.notes else { return };
        if self.mark.cancelled.load(Ordering::Acquire) {
            return;
        }
        let mine = self.mark.mine.load(Ordering::Acquire);
        if !self.budget.take(mine, data.len()) {
            return;
        }
        self.mark.mine.fetch_add(data.len(), Ordering::AcqRel);
        let held = Held {
            offset,
            data,
            budget: self.budget.clone(),
            mine: self.mark.mine.clone(),
        };
        // Refused (full, or the thread is gone): the note drops here and
        // its bytes go back; the thread reads the block from disk.
        let _ = tx.try_send(Note::Block(held));
    }

    /// Where the thread waits for more bytes, if it does.
    #[cfg(test)]
    fn waiting_at(&self) -> Option<u64> {
        Some(self.mark.waiting_at.load(Ordering::Acquire)).filter(|&w| w != u64::MAX)
    }

    /// Waits for the verdict (the file must be complete, or cancelled).
    pub fn finish(mut self) -> io::Result<Verification> {
        self.notes = None;
        self.thread
            .take()
            .ok_or_else(|| io::Error::other("verifier already finished"))?
            .join()
            .map_err(|_| io::Error::other("verifier thread panicked"))?
    }

    /// Gives up: the thread ends at once.
    pub fn cancel(self) {
        // Dropping cancels.
    }
}

/// The verifier thread: feeds the prefix of the file, in order, to the
/// bundle verifier.
struct Feed {
    mark: Arc<Mark>,
    notes: Receiver<Note>,
    disk: Disk,
    size: u64,
    recycle: Option<Recycle>,
    /// Blocks handed over and not fed yet, by offset.
    pending: VecDeque<Held>,
    /// The writer may still send notes.
    open: bool,
}

impl Feed {
    fn run(mut self, trust: &TrustStore, now: SystemTime) -> io::Result<Verification> {
        let mut verifier = BundleVerifier::new(trust, now);
        let mut pos = 0u64;
        while pos < self.size {
            // `ready` first: a block is handed over before `ready` passes
            // it, so every block below the `ready` seen here is either
            // among the notes taken next or was not handed over at all.
            let ready = self.mark.ready.load(Ordering::Acquire).min(self.size);
            self.take_notes();
            if self.mark.cancelled.load(Ordering::Acquire) {
                return Err(io::Error::other("transfer cancelled"));
            }
            // Blocks behind `pos` were read from disk meanwhile.
            while self.pending.front().is_some_and(|h| h.offset < pos) {
                self.pending.pop_front();
            }
            if let Some(h) = self.pending.front().filter(|h| h.offset == pos) {
                let len = (h.data.len() as u64).min(self.size - pos);
                verifier.feed(h.data.get(..len as usize).unwrap_or_default());
                pos += len;
                if let Some(h) = self.pending.pop_front() {
                    self.give_back(h);
                }
                continue;
            }
            if pos < ready {
                // A disk read must stop where the next handed-over block
                // starts: reading past it would throw the block away.
                let next_held = self.pending.front().map_or(u64::MAX, |h| h.offset);
                let want = (ready.min(next_held) - pos).min(CHUNK as u64) as usize;
                let bytes = self.disk.read(pos, want)?;
                verifier.feed(bytes);
                pos += want as u64;
                continue;
            }
            self.wait(pos)?;
        }
        let found = verifier.finish();
        Ok(Verification {
            verdict: found.verdict,
            digest: found.digest,
        })
    }

    /// Takes every note waiting, without blocking.
    fn take_notes(&mut self) {
        while self.open {
            match self.notes.try_recv() {
                Ok(note) => self.note(note),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => self.open = false,
            }
        }
    }

    fn note(&mut self, note: Note) {
        if let Note::Block(h) = note {
            self.pending.push_back(h);
        }
    }

    /// Waits for a note while nothing past `pos` can be fed.
    fn wait(&mut self, pos: u64) -> io::Result<()> {
        if !self.open {
            // The writer is gone and the file is not complete.
            return Err(io::Error::other("transfer cancelled"));
        }
        self.mark.waiting_at.store(pos, Ordering::SeqCst);
        if self.mark.ready.load(Ordering::SeqCst) > pos {
            // Moved between the look and now: no note will say so.
            self.mark.waiting_at.store(u64::MAX, Ordering::SeqCst);
            return Ok(());
        }
        let got = self.notes.recv_timeout(Duration::from_secs(1));
        self.mark.waiting_at.store(u64::MAX, Ordering::SeqCst);
        match got {
            Ok(note) => self.note(note),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => self.open = false,
        }
        Ok(())
    }

    /// A fed block's buffer goes back for reuse; its budget goes back as
    /// the note is dropped, first, so that the buffer given back is the
    /// only copy this thread holds.
    fn give_back(&self, h: Held) {
        let data = h.data.clone();
        drop(h);
        if let Some(r) = &self.recycle {
            r.give(data);
        }
    }
}

/// The partial file, for reading back blocks that landed before their
/// turn: direct reads when the file allows them (the blocks were written
/// with direct I/O, and reading through the page cache would cost a page
/// allocation, and on hardened kernels zeroing, for every 4 KiB).
struct Disk {
    file: File,
    direct: Option<File>,
    /// Over-allocated so that an [`ALIGN`]ed chunk fits inside.
    buf: Vec<u8>,
}

impl Disk {
    fn open(path: &Path) -> io::Result<Self> {
        Ok(Self {
            file: File::open(path)?,
            direct: OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECT)
                .open(path)
                .ok(),
            buf: vec![0; CHUNK + ALIGN as usize],
        })
    }

    /// The `want` (at most [`CHUNK`]) bytes at `pos`, all written.
    fn read(&mut self, pos: u64, want: usize) -> io::Result<&[u8]> {
        let skew = self.buf.as_ptr().align_offset(ALIGN as usize);
        if let Some(d) = &self.direct
            && pos.is_multiple_of(ALIGN)
        {
            // Whole aligned pages; the last one of the file may run into
            // the padding (or end of file), which is not fed.
            let len = round_up(want as u64) as usize;
            if let Some(dst) = self.buf.get_mut(skew..skew + len) {
                match d.read_at(dst, pos) {
                    Ok(n) if n >= want => {
                        return self
                            .buf
                            .get(skew..skew + want)
                            .ok_or_else(|| io::Error::other("read buffer too small"));
                    }
                    // Short or refused: fall back to the page cache.
                    Ok(_) | Err(_) => self.direct = None,
                }
            }
        }
        let dst = self
            .buf
            .get_mut(skew..skew + want)
            .ok_or_else(|| io::Error::other("read buffer too small"))?;
        self.file.read_exact_at(dst, pos)?;
        Ok(dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waits (up to 10 s) until `v` waits for bytes at `offset`.
    fn wait_until_waiting_at(v: &Verifier, offset: u64) {
        let end = std::time::Instant::now() + Duration::from_secs(10);
        while v.waiting_at() != Some(offset) {
            assert!(
                std::time::Instant::now() < end,
                "the verifier waits at {:?}, not at {offset}",
                v.waiting_at()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    #[test]
    fn feeds_only_what_is_written_and_stops_when_cancelled() {
        // /var/tmp: a disk filesystem, where direct reads are used.
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let path = dir.path().join("part");
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
        // Not yet written: sevens, which must never be fed.
        std::fs::write(&path, vec![7u8; data.len()]).unwrap();
        let trust = Arc::new(TrustStore::default());
        let budget = Handoffs::default();
        let v = Verifier::spawn(
            &path,
            data.len() as u64,
            trust.clone(),
            None,
            budget.clone(),
        )
        .unwrap();
        // Before anything is written it waits at the start.
        wait_until_waiting_at(&v, 0);
        // Written in two steps; the thread must stop exactly where the
        // first ends, and see the final bytes only.
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let first = 4096 * 300;
        f.write_all_at(&data[..first], 0).unwrap();
        v.advance(first as u64);
        wait_until_waiting_at(&v, first as u64);
        f.write_all_at(&data[first..], first as u64).unwrap();
        // The tail is also handed over in memory, as the writer does.
        v.hand_over(first as u64, Bytes::copy_from_slice(&data[first..]));
        v.advance(data.len() as u64);
        let found = v.finish().unwrap();
        // Had it fed a seven, the digest would differ.
        assert_eq!(found.digest, weir_protocol::digest::digest(&data));
        // Not a bundle: rejected, but the digest is still over every byte.
        assert!(found.verdict.is_err());
        assert_eq!(budget.held(), 0, "the handed-over block went back");

        let mut v =
            Verifier::spawn(&path, data.len() as u64, trust, None, Handoffs::default()).unwrap();
        let t = v.thread.take().unwrap();
        drop(v);
        // Dropped unfinished: the thread stops instead of waiting forever.
        assert!(t.join().unwrap().is_err());
    }

    #[test]
    fn handed_over_blocks_share_one_budget_and_go_back_to_it() {
        let budget = Handoffs::default();
        let _a = Member::join(budget.clone());
        let _b = Member::join(budget.clone());
        let block = HANDOFF_BYTES / 4;
        // Two verifiers: each may hold half the budget.
        assert!(budget.take(0, block));
        assert!(budget.take(block, block));
        assert!(
            !budget.take(2 * block, block),
            "a third is beyond a's share"
        );
        assert!(budget.take(0, block));
        assert!(budget.take(block, block));
        assert_eq!(budget.held(), HANDOFF_BYTES);
        // Full: a verifier holding nothing cannot take one either.
        assert!(!budget.take(0, block));
        // A block's bytes go back when it is dropped, wherever that is.
        let mine = Arc::new(AtomicUsize::new(block));
        drop(Held {
            offset: 0,
            data: Bytes::from(vec![0u8; block]),
            budget: budget.clone(),
            mine: mine.clone(),
        });
        assert_eq!(budget.held(), HANDOFF_BYTES - block);
        assert_eq!(mine.load(Ordering::Acquire), 0);
    }

    #[test]
    fn a_verifier_holding_nothing_takes_a_block_beyond_its_share() {
        // Sixteen verifiers, 2 MiB shares, 2.2 MiB blocks (MTU 9000): each
        // still takes one block at a time.
        let budget = Handoffs::default();
        let _all: Vec<_> = (0..16).map(|_| Member::join(budget.clone())).collect();
        let block = 2_285_568;
        let mut taken = 0;
        for _ in 0..16 {
            taken += usize::from(budget.take(0, block));
            assert!(!budget.take(block, block));
        }
        // 14 blocks fit in 32 MiB; each verifier holds at most one.
        assert_eq!(taken, 14);
    }

    #[test]
    fn a_read_back_stops_where_a_handed_over_block_starts() {
        // Zeros on disk; the second block handed over in memory as sevens.
        // The digest must be that of zeros, sevens, zeros: a 1 MiB disk
        // read from offset 0 would have run over the block and dropped it.
        let block = 256 << 10;
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let path = dir.path().join("part");
        std::fs::write(&path, vec![0u8; 3 * block]).unwrap();
        let budget = Handoffs::default();
        let v = Verifier::spawn(
            &path,
            3 * block as u64,
            Arc::new(TrustStore::default()),
            None,
            budget.clone(),
        )
        .unwrap();
        v.hand_over(block as u64, Bytes::from(vec![7u8; block]));
        v.advance(3 * block as u64);
        let found = v.finish().unwrap();
        let mut want = vec![0u8; 3 * block];
        want[block..2 * block].fill(7);
        assert_eq!(found.digest, weir_protocol::digest::digest(&want));
        assert_eq!(budget.held(), 0);
    }
}
