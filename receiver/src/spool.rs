//! The receiver's spool: where partial, accepted, rejected and failed
//! transfers live, and the disk discipline that keeps them apart.
//!
//! ```text
//!  root/
//!    incoming/    <id>.part   partial file, blocks written at their offset
//!                 <id>.state  blocks (and spilled shards) on disk, JSON
//!                 finished    transfer ids already handled, one per line
//!    staging/     NAME_VERSION.weir + NAME_VERSION.receipt.json
//!    quarantine/  <id>.weir + <id>.reason.json (<id>-<digest>.* on an id collision)
//!    failed/      <id>.json   transfers that expired incomplete
//!    status.json  what `weir-receiver status` shows
//! ```
//!
//! Everything operators see is written under a temporary name in
//! `incoming/`, fsynced, and linked into place (a hard link never replaces
//! an existing name), then the directory is fsynced.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use weir_host::atomic::write_atomic;
use weir_protocol::TransferId;

/// How many finished transfer ids are remembered across restarts.
pub const REMEMBER_FINISHED: usize = 4096;

/// The spool directories.
#[derive(Debug, Clone)]
pub struct Spool {
    /// The root.
    pub root: PathBuf,
    /// Partial transfers (internal).
    pub incoming: PathBuf,
    /// Accepted bundles.
    pub staging: PathBuf,
    /// Rejected bundles.
    pub quarantine: PathBuf,
    /// Reports of incomplete transfers.
    pub failed: PathBuf,
}

impl Spool {
    /// Creates the directories if missing.
    pub fn open(root: &Path) -> io::Result<Self> {
        let s = Self {
            root: root.to_owned(),
            incoming: root.join("incoming"),
            staging: root.join("staging"),
            quarantine: root.join("quarantine"),
            failed: root.join("failed"),
        };
        for d in [&s.incoming, &s.staging, &s.quarantine, &s.failed] {
            fs::create_dir_all(d)?;
        }
        Ok(s)
    }

    /// The spool layout without touching the disk (for `status`).
    pub fn at(root: &Path) -> Self {
        Self {
            root: root.to_owned(),
            incoming: root.join("incoming"),
            staging: root.join("staging"),
            quarantine: root.join("quarantine"),
            failed: root.join("failed"),
        }
    }

    /// The partial file of a transfer.
    pub fn part(&self, id: TransferId) -> PathBuf {
        self.incoming.join(format!("{id}.part"))
    }

    /// The saved state of a transfer.
    pub fn state(&self, id: TransferId) -> PathBuf {
        self.incoming.join(format!("{id}.state"))
    }

    /// The status file.
    pub fn status_file(&self) -> PathBuf {
        self.root.join("status.json")
    }

    fn finished_file(&self) -> PathBuf {
        self.incoming.join("finished")
    }

    /// Transfer ids handled before, oldest first; the file is compacted to
    /// the last [`REMEMBER_FINISHED`].
    pub fn load_finished(&self) -> io::Result<Vec<TransferId>> {
        let text = match fs::read_to_string(self.finished_file()) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let ids: Vec<TransferId> = text
            .lines()
            .filter_map(|l| l.trim().parse::<TransferId>().ok())
            .collect();
        let keep = ids
            .get(ids.len().saturating_sub(REMEMBER_FINISHED)..)
            .unwrap_or_default()
            .to_vec();
        if keep.len() < ids.len() {
            let text: String = keep.iter().map(|id| format!("{id}\n")).collect();
            write_atomic(&self.incoming, &self.finished_file(), text.as_bytes())?;
        }
        Ok(keep)
    }

    /// Remembers a transfer as handled.
    pub fn add_finished(&self, id: TransferId) -> io::Result<()> {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.finished_file())?;
        f.write_all(format!("{id}\n").as_bytes())?;
        f.sync_data()
    }

    /// Removes a transfer's partial file and state (missing is fine).
    pub fn remove_partial(&self, id: TransferId) -> io::Result<()> {
        for p in [self.part(id), self.state(id)] {
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Reports kept in `failed/` and reasons in `quarantine/`: anyone on the
/// low-side network can make transfers fail or be rejected, so their
/// number is bounded; the oldest go first.
pub const REPORTS_KEPT: usize = 10_000;

/// Removes the oldest files of `dir` whose names end with `suffix` (and
/// their companions named `stem` + each of `companions`) once there are
/// more than `keep` of them, down to `keep`. Returns how many went. Runs
/// only when the count is 10% over, so that the scan is rare.
pub fn prune_oldest(
    dir: &Path,
    suffix: &str,
    companions: &[&str],
    keep: usize,
) -> io::Result<usize> {
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = fs::read_dir(dir)?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(suffix))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    if files.len() <= keep + keep / 10 {
        return Ok(0);
    }
    files.sort();
    let excess = files.len() - keep;
    for (_, path) in files.iter().take(excess) {
        let _ = fs::remove_file(path);
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if let Some(stem) = name.strip_suffix(suffix) {
            for c in companions {
                let _ = fs::remove_file(dir.join(format!("{stem}{c}")));
            }
        }
    }
    Ok(excess)
}

/// Keeps the newest [`REPORTS_KEPT`] reports of `dir` ([`prune_oldest`]),
/// logging what was removed, or why it could not be.
pub fn keep_newest_reports(dir: &Path, suffix: &str, companions: &[&str]) {
    match prune_oldest(dir, suffix, companions, REPORTS_KEPT) {
        Ok(0) => {}
        Ok(n) => tracing::warn!(
            dir = %dir.display(),
            removed = n,
            kept = REPORTS_KEPT,
            "oldest reports removed"
        ),
        Err(e) => tracing::warn!("pruning {}: {e}", dir.display()),
    }
}

/// Removes temporary files left in `dir` by an interrupted write.
pub fn remove_temporaries(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with('.') && name.ends_with(".tmp") {
            let _ = fs::remove_file(&path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_host::atomic::write_new;

    #[test]
    fn write_new_never_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::open(dir.path()).unwrap();
        let dest = s.staging.join("a.receipt.json");
        write_new(&s.incoming, &dest, b"first").unwrap();
        let e = write_new(&s.incoming, &dest, b"second").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&dest).unwrap(), b"first");
        // No temporary file left behind.
        assert_eq!(fs::read_dir(&s.incoming).unwrap().count(), 0);
    }

    #[test]
    fn old_reports_are_pruned_with_their_companions() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..12 {
            std::fs::write(dir.path().join(format!("{i:02}.reason.json")), b"{}").unwrap();
            std::fs::write(dir.path().join(format!("{i:02}.weir")), b"x").unwrap();
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        // 10% over a keep of 10 is 11: 12 files trigger it.
        let gone = prune_oldest(dir.path(), ".reason.json", &[".weir"], 10).unwrap();
        assert_eq!(gone, 2);
        assert!(!dir.path().join("00.reason.json").exists());
        assert!(!dir.path().join("01.weir").exists());
        assert!(dir.path().join("02.reason.json").exists());
        assert!(dir.path().join("11.weir").exists());
        assert_eq!(
            prune_oldest(dir.path(), ".reason.json", &[".weir"], 10).unwrap(),
            0
        );
    }

    #[test]
    fn finished_ids_survive_and_are_compacted() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::open(dir.path()).unwrap();
        for i in 0..(REMEMBER_FINISHED as u64 + 10) {
            s.add_finished(TransferId(i + 1)).unwrap();
        }
        let ids = s.load_finished().unwrap();
        assert_eq!(ids.len(), REMEMBER_FINISHED);
        assert_eq!(ids.first(), Some(&TransferId(11)));
        assert_eq!(s.load_finished().unwrap(), ids);
    }
}
