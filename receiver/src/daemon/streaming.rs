//! Verification while a transfer is still arriving.
//!
//! Each transfer gets a verifier thread that reads its partial file from
//! the start, as far as the blocks are written without a gap, and runs the
//! bundle verification (signatures first, then every artifact's BLAKE3)
//! and the whole-file BLAKE3 over it. When the last block lands, only the
//! tail is left to read: the bundle can be published moments after it is
//! complete instead of after a second full read.
//!
//! ```text
//!  writer: block b written ─▶ Progress.ready = contiguous bytes on disk
//!                                   │ (condvar)
//!  verifier: read ≤ ready ─▶ HashingReader ─▶ verify() ─▶ Outcome
//! ```
//!
//! The verdict only counts if the whole-file BLAKE3 of the very bytes it
//! read matches the sender's: blocks rebuilt from forged frames make a
//! different file, which is received again rather than judged.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use weir_protocol::bundle::{BundleInfo, HashingReader, Rejection, TrustStore, Verified, verify};

/// How far the partial file can be read.
#[derive(Debug, Default)]
struct Mark {
    /// Bytes from the start written without a gap.
    ready: u64,
    /// The transfer was given up: stop reading.
    cancelled: bool,
}

/// Shared between the writer (which advances it) and the verifier.
#[derive(Debug, Default)]
pub struct Progress {
    mark: Mutex<Mark>,
    moved: Condvar,
}

impl Progress {
    /// The first `ready` bytes are written.
    pub fn advance(&self, ready: u64) {
        if let Ok(mut m) = self.mark.lock()
            && ready > m.ready
        {
            m.ready = ready;
            self.moved.notify_all();
        }
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
    /// BLAKE3 of those bytes.
    pub hash: blake3::Hash,
}

/// A running verifier.
#[derive(Debug)]
pub struct Verifier {
    progress: Arc<Progress>,
    thread: JoinHandle<io::Result<Finding>>,
}

impl Verifier {
    /// Starts verifying the file at `path`, of `size` bytes once complete.
    pub fn spawn(path: &Path, size: u64, trust: Arc<TrustStore>) -> io::Result<Self> {
        let file = File::open(path)?;
        let progress = Arc::new(Progress::default());
        let reader = Trailing {
            file,
            pos: 0,
            size,
            progress: progress.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("verifier".into())
            .spawn(move || {
                let mut r = HashingReader::new(BufReader::with_capacity(1 << 20, reader));
                let verdict = verify(&mut r, &trust, SystemTime::now());
                // Verification stops at the end of the archive; the hash
                // covers the whole file.
                io::copy(&mut r, &mut io::sink())?;
                Ok(Finding {
                    verdict,
                    hash: r.finalize(),
                })
            })?;
        Ok(Self { progress, thread })
    }

    /// Where the writer reports progress.
    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    /// Waits for the verdict (the file must be complete, or cancelled).
    pub fn finish(self) -> io::Result<Finding> {
        self.thread
            .join()
            .map_err(|_| io::Error::other("verifier thread panicked"))?
    }

    /// Gives up: the thread ends at its next read.
    pub fn cancel(self) {
        self.progress.cancel();
    }
}

/// Reads the partial file no further than its written prefix, waiting for
/// more; ends at `size`.
struct Trailing {
    file: File,
    pos: u64,
    size: u64,
    progress: Arc<Progress>,
}

impl Read for Trailing {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.size || buf.is_empty() {
            return Ok(0);
        }
        let ready = {
            let mut m = self
                .progress
                .mark
                .lock()
                .map_err(|_| io::Error::other("progress lock poisoned"))?;
            while m.ready <= self.pos && !m.cancelled {
                m = self
                    .progress
                    .moved
                    .wait_timeout(m, Duration::from_secs(1))
                    .map_err(|_| io::Error::other("progress lock poisoned"))?
                    .0;
            }
            if m.cancelled {
                // Not Interrupted: the verifier retries those.
                return Err(io::Error::other("transfer cancelled"));
            }
            m.ready.min(self.size)
        };
        let n = usize::try_from(ready - self.pos)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let dst = buf.get_mut(..n).unwrap_or_default();
        self.file.read_exact_at(dst, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_only_what_is_written_and_stops_when_cancelled() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("part");
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
        std::fs::write(&path, vec![0u8; data.len()]).unwrap();
        let trust = Arc::new(TrustStore::default());
        let v = Verifier::spawn(&path, data.len() as u64, trust.clone()).unwrap();
        // Written in two steps; the reader must see the final bytes only.
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(&data[..60_000], 0).unwrap();
        v.progress().advance(60_000);
        std::thread::sleep(Duration::from_millis(50));
        f.write_all_at(&data[60_000..], 60_000).unwrap();
        v.progress().advance(data.len() as u64);
        let found = v.finish().unwrap();
        assert_eq!(found.hash, blake3::hash(&data));
        // Not a bundle: rejected, but the hash is still over every byte.
        assert!(found.verdict.is_err());

        let v = Verifier::spawn(&path, data.len() as u64, trust).unwrap();
        let p = v.progress;
        let t = v.thread;
        p.cancel();
        assert!(t.join().unwrap().is_err());
    }
}
