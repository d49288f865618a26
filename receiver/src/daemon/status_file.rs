//! Writes `status.json` off the receive loop: the loop renders a snapshot
//! once a second and hands it over, and never waits for the disk. A
//! snapshot offered while the previous one is still being written is
//! dropped; the next second brings a newer one.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{SyncSender, sync_channel};
use std::thread::JoinHandle;

use tracing::warn;

use super::Shared;
use weir_host::atomic::write_replace;

/// The status file's writer thread.
#[derive(Debug)]
pub struct StatusFile {
    tx: Option<SyncSender<Vec<u8>>>,
    thread: Option<JoinHandle<()>>,
}

impl StatusFile {
    /// Starts the thread that writes `file` (through a temporary file in
    /// `tmp_dir`), counting failures in `shared.disk_errors`.
    pub fn spawn(tmp_dir: PathBuf, file: PathBuf, shared: Arc<Shared>) -> std::io::Result<Self> {
        let (tx, rx) = sync_channel::<Vec<u8>>(1);
        let thread = std::thread::Builder::new()
            .name("status".into())
            .spawn(move || {
                let mut failing = false;
                for json in rx {
                    match write_replace(&tmp_dir, &file, &json) {
                        Ok(()) => failing = false,
                        Err(e) => {
                            shared.disk_errors.fetch_add(1, Ordering::Relaxed);
                            if !failing {
                                warn!("writing {}: {e}", file.display());
                            }
                            failing = true;
                        }
                    }
                }
            })?;
        Ok(Self {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Offers a rendered snapshot; never waits.
    pub fn offer(&self, json: Vec<u8>) {
        if let Some(tx) = &self.tx {
            let _ = tx.try_send(json);
        }
    }

    /// Writes a last snapshot and waits until it is on disk (at shutdown).
    pub fn finish(&mut self, json: Vec<u8>) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(json);
        }
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            warn!("status writer thread panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_snapshot_is_on_disk_after_finish_and_failures_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("status.json");
        let shared = Arc::new(Shared::default());
        let mut s = StatusFile::spawn(dir.path().into(), file.clone(), shared.clone()).unwrap();
        s.offer(b"{\"n\":1}".to_vec());
        s.finish(b"{\"n\":2}".to_vec());
        assert_eq!(std::fs::read(&file).unwrap(), b"{\"n\":2}");
        // Offers after the end go nowhere and do not block.
        s.offer(b"{\"n\":3}".to_vec());
        assert_eq!(shared.disk_errors.load(Ordering::Relaxed), 0);

        // A directory that is gone: counted, and the loop never waited.
        let gone = dir.path().join("gone");
        let mut s =
            StatusFile::spawn(gone.clone(), gone.join("status.json"), shared.clone()).unwrap();
        s.finish(b"{}".to_vec());
        assert_eq!(shared.disk_errors.load(Ordering::Relaxed), 1);
    }
}
