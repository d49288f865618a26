//! Verification while a transfer is still arriving.
//!
//! Each transfer gets a verifier thread that reads its partial file from
//! the start, as far as the blocks are written without a gap, and runs the
//! bundle verification (signatures first, then every artifact's BLAKE3)
//! and the transfer digest over it, sharing one hash pass. When the last
//! block lands, only the tail is left to read: the bundle can be published
//! moments after it is complete instead of after a second full read.
//!
//! ```text
//!  writer: block b written ─▶ Progress.ready = contiguous bytes on disk
//!                                   │ (condvar)
//!  verifier: read ≤ ready ─▶ verify_digest_lent() ─▶ Outcome
//! ```
//!
//! Blocks the writer hands over in memory are hashed where they lie: the
//! verifier lends them to the hash instead of copying them out.
//!
//! The verdict only counts if the transfer digest of the very bytes it
//! read matches the sender's: blocks rebuilt from forged frames make a
//! different file, which is received again rather than judged.

use std::fs::File;
use std::fs::OpenOptions;
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use bytes::{Buf, Bytes};

use weir_protocol::bundle::{
    BundleInfo, Lend, Rejection, TrustStore, Verified, verify_digest_lent,
};

use super::direct::{ALIGN, round_up};
use super::recycle::Recycle;

/// How far the partial file can be read.
#[derive(Debug, Default)]
struct Mark {
    /// Bytes from the start written without a gap.
    ready: u64,
    /// The transfer was given up: stop reading.
    cancelled: bool,
    /// Blocks the writer just wrote at the front of the written prefix,
    /// by offset, handed over in memory so that the verifier need not read
    /// them back from disk. Bounded, with every other verifier's, by
    /// [`HANDOFF_BYTES`].
    handoff: std::collections::VecDeque<(u64, Bytes)>,
    /// Bytes in `handoff`.
    handoff_bytes: usize,
    /// The offset the reader waits at for more bytes, while it waits:
    /// where it stopped reading, which tests hold against `ready`.
    waiting_at: Option<u64>,
}

impl Mark {
    /// Lets go of every handed-over block; returns their bytes, to give
    /// back to the budget.
    fn release(&mut self) -> usize {
        self.handoff.clear();
        std::mem::take(&mut self.handoff_bytes)
    }
}

/// Most bytes of written blocks all verifiers together hold in memory,
/// waiting to be read (each also holds the one block it is reading);
/// beyond, a verifier reads its blocks back from disk. Outside the
/// reassembly budget (`limits.memory`). Measured in session 6 at MTU 9000
/// (blocks of 2.2 MiB): with 8 MiB per verifier, one that fell a group
/// behind read the rest back from a disk the writer was busy with, and
/// publication came 0.2-0.5 s after the last block; with 32 MiB it comes
/// at once (goodput 802 -> 963 MB/s, medians of five alternated pairs).
pub const HANDOFF_BYTES: usize = 32 << 20;

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

    /// One more verifier shares the budget.
    fn join(&self) {
        self.0.verifiers.fetch_add(1, Ordering::AcqRel);
    }

    /// A verifier is gone.
    fn leave(&self) {
        self.0.verifiers.fetch_sub(1, Ordering::AcqRel);
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

/// Shared between the writer (which advances it) and the verifier.
#[derive(Debug)]
pub struct Progress {
    mark: Mutex<Mark>,
    moved: Condvar,
    /// The receiver's budget for handed-over blocks.
    budget: Handoffs,
}

impl Drop for Progress {
    /// Blocks still handed over when both ends are gone go back to the
    /// budget.
    fn drop(&mut self) {
        let m = self
            .mark
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.budget.give(m.release());
        self.budget.leave();
    }
}

impl Progress {
    /// Progress of a verifier whose handed-over blocks count against
    /// `budget`.
    fn new(budget: Handoffs) -> Self {
        budget.join();
        Self {
            mark: Mutex::default(),
            moved: Condvar::new(),
            budget,
        }
    }

    /// The first `ready` bytes are written.
    pub fn advance(&self, ready: u64) {
        if let Ok(mut m) = self.mark.lock()
            && ready > m.ready
        {
            m.ready = ready;
            self.moved.notify_all();
        }
    }

    /// Offers the bytes of a block just written at `offset` (the front of
    /// the written prefix), before the matching [`Progress::advance`].
    pub fn hand_over(&self, offset: u64, data: Bytes) {
        if let Ok(mut m) = self.mark.lock()
            && !m.cancelled
            && self.budget.take(m.handoff_bytes, data.len())
        {
            m.handoff_bytes += data.len();
            m.handoff.push_back((offset, data));
        }
    }

    /// Where the verifier waits for more bytes, if it does.
    #[cfg(test)]
    fn waiting_at(&self) -> Option<u64> {
        self.mark.lock().ok().and_then(|m| m.waiting_at)
    }

    /// Stops the verifier.
    pub fn cancel(&self) {
        if let Ok(mut m) = self.mark.lock() {
            m.cancelled = true;
            self.moved.notify_all();
        }
    }
}

/// What a verifier found.
#[derive(Debug)]
pub struct Finding {
    /// The bundle verification, over the bytes read.
    pub verdict: Result<Verified<BundleInfo>, Rejection>,
    /// The transfer digest of those bytes.
    pub digest: blake3::Hash,
}

/// A running verifier.
#[derive(Debug)]
pub struct Verifier {
    progress: Arc<Progress>,
    /// Taken by [`Verifier::finish`].
    thread: Option<JoinHandle<io::Result<Finding>>>,
}

impl Drop for Verifier {
    /// A verifier dropped unfinished must not wait for bytes forever.
    fn drop(&mut self) {
        self.progress.cancel();
    }
}

impl Verifier {
    /// Starts verifying the file at `path`, of `size` bytes once complete.
    /// Handed-over blocks go back through `recycle` once read.
    pub fn spawn(
        path: &Path,
        size: u64,
        trust: Arc<TrustStore>,
        recycle: Option<Recycle>,
        budget: Handoffs,
    ) -> io::Result<Self> {
        let file = File::open(path)?;
        let progress = Arc::new(Progress::new(budget));
        let reader = Trailing::new(file, direct_reader(path), size, recycle, progress.clone());
        let thread = std::thread::Builder::new()
            .name("verifier".into())
            .spawn(move || {
                // The digest covers the whole file, past the archive's end.
                let found = verify_digest_lent(reader, &trust, SystemTime::now())?;
                Ok(Finding {
                    verdict: found.verdict,
                    digest: found.digest,
                })
            })?;
        Ok(Self {
            progress,
            thread: Some(thread),
        })
    }

    /// Where the writer reports progress.
    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    /// Waits for the verdict (the file must be complete, or cancelled).
    pub fn finish(mut self) -> io::Result<Finding> {
        self.thread
            .take()
            .ok_or_else(|| io::Error::other("verifier already finished"))?
            .join()
            .map_err(|_| io::Error::other("verifier thread panicked"))?
    }

    /// Gives up: the thread ends at its next read.
    pub fn cancel(self) {
        // Dropping cancels.
    }
}

/// Bytes read from the partial file at once.
pub const CHUNK: usize = 1 << 20;

/// The partial file opened for direct reads: the blocks were written with
/// direct I/O, and reading them through the page cache would cost a page
/// allocation (and, on hardened kernels, zeroing) for every 4 KiB.
fn direct_reader(path: &Path) -> Option<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .ok()
}

/// Reads the partial file no further than its written prefix, waiting for
/// more; ends at `size`. Reads go in aligned chunks of up to [`CHUNK`]
/// into its own buffer (so no `BufReader` is needed on top).
struct Trailing {
    file: File,
    direct: Option<File>,
    /// Over-allocated so that an [`ALIGN`]ed chunk fits inside.
    buf: Vec<u8>,
    /// Bytes of `buf` not handed out yet.
    have: std::ops::Range<usize>,
    /// A block handed over in memory, not yet read out.
    current: Bytes,
    /// All of that block, to give back once read.
    whole: Option<Bytes>,
    /// Where read blocks go back for reuse.
    recycle: Option<Recycle>,
    /// File offset of the next byte to read into `buf`.
    pos: u64,
    size: u64,
    progress: Arc<Progress>,
}

impl Trailing {
    /// A reader of `size` bytes from the start of `file` (`direct`: the
    /// same file opened for direct reads).
    fn new(
        file: File,
        direct: Option<File>,
        size: u64,
        recycle: Option<Recycle>,
        progress: Arc<Progress>,
    ) -> Self {
        Self {
            file,
            direct,
            buf: vec![0; CHUNK + ALIGN as usize],
            have: 0..0,
            current: Bytes::new(),
            whole: None,
            recycle,
            pos: 0,
            size,
            progress,
        }
    }

    /// Waits until bytes past `pos` are written; returns the end of the
    /// readable prefix.
    ///
    /// A disk read must stop where the next handed-over block starts:
    /// reading past it would throw the block away (and every later one).
    fn wait_ready(&mut self) -> io::Result<u64> {
        let mut m = self
            .progress
            .mark
            .lock()
            .map_err(|_| io::Error::other("progress lock poisoned"))?;
        while m.ready <= self.pos && !m.cancelled {
            m.waiting_at = Some(self.pos);
            m = self
                .progress
                .moved
                .wait_timeout(m, Duration::from_secs(1))
                .map_err(|_| io::Error::other("progress lock poisoned"))?
                .0;
        }
        m.waiting_at = None;
        if m.cancelled {
            // Not Interrupted: the verification retries those.
            return Err(io::Error::other("transfer cancelled"));
        }
        // Take the block handed over for this offset, if any; drop older
        // ones (read from disk instead when the hand-over was full).
        while let Some((offset, data)) = m.handoff.pop_front() {
            if offset > self.pos {
                m.handoff.push_front((offset, data));
                break;
            }
            m.handoff_bytes -= data.len();
            self.progress.budget.give(data.len());
            if offset == self.pos {
                self.current = data.clone();
                self.whole = Some(data);
                break;
            }
        }
        let next_handed_over = m.handoff.front().map_or(u64::MAX, |(offset, _)| *offset);
        Ok(m.ready.min(self.size).min(next_handed_over))
    }

    /// Reads the next chunk into `buf` (or takes a handed-over block).
    fn fill(&mut self) -> io::Result<()> {
        let ready = self.wait_ready()?;
        if !self.current.is_empty() {
            let len = (self.current.len() as u64).min(self.size - self.pos);
            self.current.truncate(len as usize);
            self.pos += len;
            return Ok(());
        }
        let want = usize::try_from(ready - self.pos)
            .unwrap_or(usize::MAX)
            .min(CHUNK);
        let skew = self.buf.as_ptr().align_offset(ALIGN as usize);
        if let Some(d) = &self.direct
            && self.pos.is_multiple_of(ALIGN)
        {
            // Whole aligned pages; the last one of the file may run into
            // the padding (or end of file), which is not handed out.
            let len = round_up(want as u64) as usize;
            if let Some(dst) = self.buf.get_mut(skew..skew + len) {
                match d.read_at(dst, self.pos) {
                    Ok(n) if n >= want => {
                        self.have = skew..skew + want;
                        self.pos += want as u64;
                        return Ok(());
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
        self.file.read_exact_at(dst, self.pos)?;
        self.have = skew..skew + want;
        self.pos += want as u64;
        Ok(())
    }
}

impl Drop for Trailing {
    /// The verifier is done, finished or not: the writer hands it nothing
    /// more, and what it was handed goes back to the budget now, not when
    /// the writer lets go of the transfer.
    fn drop(&mut self) {
        let mut m = self
            .progress
            .mark
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        m.cancelled = true;
        self.progress.budget.give(m.release());
    }
}

impl Lend for Trailing {
    fn lend(&mut self, max: usize, f: &mut dyn FnMut(&[u8])) -> io::Result<usize> {
        if !self.current.is_empty() {
            let n = self.current.len().min(max);
            f(self.current.get(..n).ok_or_else(out_of_range)?);
            self.current.advance(n);
            if self.current.is_empty() {
                // Let go of the block entirely, so that the buffer given
                // back is not still shared with this reader.
                self.current = Bytes::new();
                if let (Some(whole), Some(r)) = (self.whole.take(), &self.recycle) {
                    r.give(whole);
                }
            }
            return Ok(n);
        }
        if self.have.is_empty() {
            if self.pos >= self.size || max == 0 {
                return Ok(0);
            }
            self.fill()?;
            if !self.current.is_empty() {
                return self.lend(max, f);
            }
        }
        let n = self.have.len().min(max);
        f(self
            .buf
            .get(self.have.start..self.have.start + n)
            .ok_or_else(out_of_range)?);
        self.have.start += n;
        Ok(n)
    }
}

/// What a reader that lost track of its own buffer reports, rather than
/// lend fewer bytes than it counts.
fn out_of_range() -> io::Error {
    io::Error::other("verifier reader: range outside its buffer")
}

impl Read for Trailing {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let max = out.len();
        let mut at = 0;
        self.lend(max, &mut |s| {
            if let Some(dst) = out.get_mut(at..at + s.len()) {
                dst.copy_from_slice(s);
            }
            at += s.len();
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waits (up to 10 s) until the verifier of `p` waits for bytes at
    /// `offset`.
    fn wait_until_waiting_at(p: &Progress, offset: u64) {
        let end = std::time::Instant::now() + Duration::from_secs(10);
        while p.waiting_at() != Some(offset) {
            assert!(
                std::time::Instant::now() < end,
                "the verifier waits at {:?}, not at {offset}",
                p.waiting_at()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    #[test]
    fn reads_only_what_is_written_and_stops_when_cancelled() {
        // /var/tmp: a disk filesystem, where direct reads are used.
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let path = dir.path().join("part");
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
        // Not yet written: sevens, which must never be read.
        std::fs::write(&path, vec![7u8; data.len()]).unwrap();
        let trust = Arc::new(TrustStore::default());
        let v = Verifier::spawn(
            &path,
            data.len() as u64,
            trust.clone(),
            None,
            Handoffs::default(),
        )
        .unwrap();
        // Before anything is written it waits at the start.
        wait_until_waiting_at(v.progress(), 0);
        // Written in two steps; the reader must stop exactly where the
        // first ends, and see the final bytes only.
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let first = 4096 * 300;
        f.write_all_at(&data[..first], 0).unwrap();
        v.progress().advance(first as u64);
        wait_until_waiting_at(v.progress(), first as u64);
        f.write_all_at(&data[first..], first as u64).unwrap();
        // The tail is also handed over in memory, as the writer does.
        v.progress()
            .hand_over(first as u64, Bytes::copy_from_slice(&data[first..]));
        v.progress().advance(data.len() as u64);
        let found = v.finish().unwrap();
        // Had it read a seven, the digest would differ.
        assert_eq!(found.digest, weir_protocol::digest::digest(&data));
        // Not a bundle: rejected, but the hash is still over every byte.
        assert!(found.verdict.is_err());

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
        let a = Arc::new(Progress::new(budget.clone()));
        let b = Arc::new(Progress::new(budget.clone()));
        let block = Bytes::from(vec![7u8; HANDOFF_BYTES / 4]);
        // Two verifiers: each may hold half the budget.
        for i in 0..3 {
            a.hand_over(i * block.len() as u64, block.clone());
        }
        assert_eq!(
            a.mark.lock().unwrap().handoff.len(),
            2,
            "a third is beyond a's share"
        );
        assert_eq!(budget.held(), HANDOFF_BYTES / 2);
        b.hand_over(0, block.clone());
        b.hand_over(block.len() as u64, block.clone());
        assert_eq!(budget.held(), HANDOFF_BYTES);
        // Full: a fifth block, whichever verifier it is for, is read back
        // from disk instead.
        a.hand_over(3 * block.len() as u64, block.clone());
        b.hand_over(2 * block.len() as u64, block.clone());
        assert_eq!(budget.held(), HANDOFF_BYTES);
        // A reader past the first block takes the second, drops the first
        // (read from disk meanwhile) and gives both back.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("part");
        std::fs::write(&path, vec![0u8; 4 * block.len()]).unwrap();
        let size = 4 * block.len() as u64;
        let mut reader = Trailing::new(File::open(&path).unwrap(), None, size, None, a.clone());
        reader.pos = block.len() as u64;
        a.advance(4 * block.len() as u64);
        reader.wait_ready().unwrap();
        assert_eq!(reader.current.len(), block.len());
        assert_eq!(budget.held(), HANDOFF_BYTES / 2);
        // A verifier whose thread ended (finished, failed or panicked) is
        // handed nothing more, though the writer still holds its progress.
        drop(reader);
        a.hand_over(3 * block.len() as u64, block.clone());
        assert_eq!(budget.held(), HANDOFF_BYTES / 2);
        // Once it is gone, the one left may hold the whole budget.
        drop(a);
        b.hand_over(2 * block.len() as u64, block.clone());
        assert_eq!(budget.held(), 3 * HANDOFF_BYTES / 4);
        // One cancelled before its reader ends: what it held goes back once
        // both ends are gone.
        b.cancel();
        assert_eq!(budget.held(), 3 * HANDOFF_BYTES / 4);
        drop(b);
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn a_verifier_holding_nothing_takes_a_block_beyond_its_share() {
        // Sixteen verifiers, 2 MiB shares, 2.2 MiB blocks (MTU 9000): each
        // still takes one block at a time.
        let budget = Handoffs::default();
        let all: Vec<_> = (0..16).map(|_| Progress::new(budget.clone())).collect();
        let block = Bytes::from(vec![1u8; 2_285_568]);
        for p in &all {
            p.hand_over(0, block.clone());
            p.hand_over(block.len() as u64, block.clone());
        }
        // 14 blocks fit in 32 MiB; each verifier holds at most one.
        assert_eq!(budget.held(), 14 * block.len());
        drop(all);
        assert_eq!(budget.held(), 0);
    }

    /// A reader of a partial file of `blocks` blocks, all written: zeros
    /// on disk, and the second block handed over in memory as sevens. Also
    /// returns the address of the handed-over bytes.
    fn sevens_handed_over(
        block: usize,
        blocks: usize,
        budget: Handoffs,
    ) -> (tempfile::TempDir, Trailing, usize) {
        // /var/tmp: a disk filesystem, where direct reads are used.
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let path = dir.path().join("part");
        std::fs::write(&path, vec![0u8; blocks * block]).unwrap();
        let progress = Arc::new(Progress::new(budget));
        let handed = Bytes::from(vec![7u8; block]);
        let at = handed.as_ptr() as usize;
        progress.hand_over(block as u64, handed);
        progress.advance((blocks * block) as u64);
        let file = File::open(&path).unwrap();
        let size = (blocks * block) as u64;
        let reader = Trailing::new(file, direct_reader(&path), size, None, progress);
        (dir, reader, at)
    }

    #[test]
    fn a_verifier_reading_from_disk_stops_where_a_handed_over_block_starts() {
        let block = 256 << 10;
        // The reader must return the sevens: a 1 MiB disk read from offset
        // 0 would have run over the block and dropped it.
        let budget = Handoffs::default();
        let (_dir, mut reader, _) = sevens_handed_over(block, 3, budget.clone());
        let mut out = Vec::new();
        reader.read_to_end(&mut out).unwrap();
        assert_eq!(out.len(), 3 * block);
        assert!(out[..block].iter().all(|b| *b == 0));
        assert!(
            out[block..2 * block].iter().all(|b| *b == 7),
            "the handed-over block was read"
        );
        assert!(out[2 * block..].iter().all(|b| *b == 0));
        drop(reader);
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn a_handed_over_block_is_lent_where_it_lies_not_copied() {
        let block = 64 << 10;
        let (_dir, mut reader, at) = sevens_handed_over(block, 2, Handoffs::default());
        // (start address, length, all sevens) of each lent slice.
        let mut lent = Vec::new();
        while reader
            .lend(1 << 20, &mut |s| {
                lent.push((s.as_ptr() as usize, s.len(), s.iter().all(|b| *b == 7)))
            })
            .unwrap()
            > 0
        {}
        assert_eq!(lent.iter().map(|l| l.1).sum::<usize>(), 2 * block);
        // The disk's zeros first, then the block itself, at its own address.
        assert!(lent.iter().take_while(|l| !l.2).map(|l| l.1).sum::<usize>() == block);
        let first_seven = lent.iter().position(|l| l.2).unwrap();
        assert_eq!(
            lent[first_seven].0, at,
            "the block was copied before it was lent"
        );
        assert_eq!(
            lent[first_seven..].iter().map(|l| l.1).sum::<usize>(),
            block
        );
    }
}
