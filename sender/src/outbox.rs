//! The spool: where bundles wait, and where they go afterwards.
//!
//! ```text
//!  ROOT/outbox/          bundles to send, oldest arrival first
//!  ROOT/outbox/urgent/   sent before anything in outbox/
//!  ROOT/sent/            bundles whose every pass went out
//!  ROOT/failed/          bundles that failed their check, with NAME.reason.json
//!  ROOT/state/           the transfer in flight, to resume after a restart
//!  ROOT/journal.jsonl    one line per bundle sent
//! ```
//!
//! A bundle is taken only when complete. The safe way to drop one in is to
//! write it elsewhere on the same file system and `mv` it into `outbox/`.
//! A file copied in place is taken once its size and modification time have
//! not changed for the settle time. Names starting with `.` or ending in
//! `.tmp` or `.part` are never taken.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use weir_host::atomic;

/// Which queue a bundle waits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lane {
    /// `outbox/urgent/`: first.
    Urgent,
    /// `outbox/`.
    Normal,
}

/// A bundle ready to be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Its path in the outbox.
    pub path: PathBuf,
    /// Its queue.
    pub lane: Lane,
    /// When it arrived (inode change time: the `mv` into the outbox).
    pub arrived: (i64, i64),
}

/// What was seen of a file at the last scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    size: u64,
    mtime: (i64, i64),
}

/// The spool directories.
#[derive(Debug)]
pub struct Spool {
    /// ROOT.
    pub root: PathBuf,
    /// ROOT/outbox.
    pub outbox: PathBuf,
    /// ROOT/outbox/urgent.
    pub urgent: PathBuf,
    /// ROOT/sent.
    pub sent: PathBuf,
    /// ROOT/failed.
    pub failed: PathBuf,
    /// ROOT/state.
    pub state: PathBuf,
    settle: Duration,
    seen: HashMap<PathBuf, Seen>,
}

/// Whether a file name is a temporary one the outbox ignores.
pub fn ignored_name(name: &str) -> bool {
    name.starts_with('.') || name.ends_with(".tmp") || name.ends_with(".part")
}

impl Spool {
    /// Opens (and creates) the spool under `root`.
    pub fn open(root: &Path, settle: Duration) -> anyhow::Result<Self> {
        let s = Self {
            root: root.to_owned(),
            outbox: root.join("outbox"),
            urgent: root.join("outbox").join("urgent"),
            sent: root.join("sent"),
            failed: root.join("failed"),
            state: root.join("state"),
            settle,
            seen: HashMap::new(),
        };
        for d in [&s.outbox, &s.urgent, &s.sent, &s.failed, &s.state] {
            fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        Ok(s)
    }

    /// Bundles ready to send, urgent first, then by arrival.
    pub fn scan(&mut self) -> anyhow::Result<Vec<Candidate>> {
        let now = SystemTime::now();
        let mut ready = Vec::new();
        let mut still_here = HashMap::new();
        for (dir, lane) in [
            (self.urgent.clone(), Lane::Urgent),
            (self.outbox.clone(), Lane::Normal),
        ] {
            let entries =
                fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?;
            for e in entries {
                let e = e?;
                let Some(name) = e.file_name().to_str().map(str::to_owned) else {
                    continue;
                };
                if ignored_name(&name) {
                    continue;
                }
                let Ok(meta) = fs::symlink_metadata(e.path()) else {
                    continue;
                };
                if !meta.file_type().is_file() {
                    continue;
                }
                let seen = Seen {
                    size: meta.len(),
                    mtime: (meta.mtime(), meta.mtime_nsec()),
                };
                let path = e.path();
                let unchanged = self.seen.get(&path) == Some(&seen);
                let modified = meta.modified().unwrap_or(now);
                let quiet = now.duration_since(modified).unwrap_or(Duration::ZERO) >= self.settle;
                still_here.insert(path.clone(), seen);
                if unchanged && quiet {
                    ready.push(Candidate {
                        path,
                        lane,
                        arrived: (meta.ctime(), meta.ctime_nsec()),
                    });
                }
            }
        }
        self.seen = still_here;
        ready.sort_by(|a, b| (a.lane, a.arrived, &a.path).cmp(&(b.lane, b.arrived, &b.path)));
        Ok(ready)
    }

    /// Moves a bundle to `failed/` and writes `NAME.reason.json` beside it.
    pub fn fail(
        &self,
        path: &Path,
        reasons: &serde_json::Value,
        omitted: usize,
    ) -> anyhow::Result<PathBuf> {
        let name = path.file_name().context("bundle without a name")?;
        let dest = unique(&self.failed.join(name));
        let dest_name = dest
            .file_name()
            .and_then(|n| n.to_str())
            .context("bundle name")?
            .to_owned();
        let report = serde_json::json!({
            "bundle": dest_name,
            "from": path,
            "time": humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            "reasons": reasons,
            "omitted": omitted,
        });
        write_atomic(
            &self.failed.join(format!("{dest_name}.reason.json")),
            serde_json::to_string_pretty(&report)?.as_bytes(),
        )?;
        fs::rename(path, &dest).with_context(|| format!("moving {} to failed/", path.display()))?;
        sync_dir(&self.failed)?;
        Ok(dest)
    }

    /// Moves a sent bundle to `sent/`.
    pub fn mark_sent(&self, path: &Path) -> anyhow::Result<PathBuf> {
        let name = path.file_name().context("bundle without a name")?;
        let dest = unique(&self.sent.join(name));
        fs::rename(path, &dest).with_context(|| format!("moving {} to sent/", path.display()))?;
        sync_dir(&self.sent)?;
        Ok(dest)
    }

    /// The `n` bundles most recently moved to `sent/`, newest first.
    pub fn recent_sent(&self, n: usize) -> Vec<PathBuf> {
        let mut found: Vec<((i64, i64), PathBuf)> = fs::read_dir(&self.sent)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter(|e| e.file_name().to_str().is_some_and(|n| !ignored_name(n)))
                    .filter_map(|e| {
                        let m = fs::symlink_metadata(e.path()).ok()?;
                        m.file_type()
                            .is_file()
                            .then(|| ((m.ctime(), m.ctime_nsec()), e.path()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        found.sort_by(|a, b| b.cmp(a));
        found.into_iter().take(n).map(|(_, p)| p).collect()
    }

    /// Whether either outbox directory holds a file that may become ready.
    pub fn anything_waiting(&self) -> bool {
        has_waiting(&self.urgent) || has_waiting(&self.outbox)
    }

    /// Appends one line to the journal and syncs it.
    pub fn journal(&self, record: &JournalRecord) -> anyhow::Result<()> {
        let path = self.root.join("journal.jsonl");
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let mut line = serde_json::to_vec(record)?;
        line.push(b'\n');
        f.write_all(&line)?;
        f.sync_data()?;
        Ok(())
    }

    /// The transfers in flight when the sender last stopped.
    pub fn load_inflight(&self) -> Vec<InFlight> {
        fs::read(self.state.join("inflight.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Records the transfers in flight (outermost first).
    pub fn save_inflight(&self, inflight: &[InFlight]) -> anyhow::Result<()> {
        write_atomic(
            &self.state.join("inflight.json"),
            &serde_json::to_vec_pretty(inflight)?,
        )
    }
}

/// A transfer the sender was in the middle of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InFlight {
    /// The bundle's path in the outbox.
    pub path: PathBuf,
    /// Its transfer id (hex).
    pub transfer: String,
    /// Its transfer digest (hex), to make sure it is the same file on
    /// resume. (Before the digest, this held the file's BLAKE3, which
    /// never matches a digest: such a bundle starts again at pass 0.)
    #[serde(alias = "blake3")]
    pub digest: String,
    /// The pass to resume at.
    pub pass: u32,
}

/// One line of the sender journal.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JournalRecord {
    /// Bundle file name.
    pub bundle: String,
    /// Transfer id (hex).
    pub transfer: String,
    /// The bundle's transfer digest (hex), as in the receiver's receipt.
    pub digest: String,
    /// Bundle size.
    pub bytes: u64,
    /// Passes sent.
    pub passes: u32,
    /// When sending started (RFC 3339).
    pub start: String,
    /// When the last pass ended (RFC 3339).
    pub end: String,
    /// Datagram bytes that went out for it.
    pub sent_bytes: u64,
}

/// Whether `dir` holds a regular file whose name the outbox does not ignore.
pub fn has_waiting(dir: &Path) -> bool {
    has_settled(dir, Duration::ZERO)
}

/// Whether `dir` holds such a file unmodified for at least `settle`: one a
/// scan will soon take.
pub fn has_settled(dir: &Path, settle: Duration) -> bool {
    let now = SystemTime::now();
    fs::read_dir(dir)
        .map(|mut entries| {
            entries.any(|e| {
                e.ok().is_some_and(|e| {
                    e.file_name().to_str().is_some_and(|n| !ignored_name(n))
                        && e.metadata().is_ok_and(|m| {
                            m.is_file()
                                && m.modified()
                                    .ok()
                                    .and_then(|t| now.duration_since(t).ok())
                                    .is_some_and(|age| age >= settle)
                        })
                })
            })
        })
        .unwrap_or(false)
}

/// `path`, or `path.1`, `path.2`, ... whichever does not exist yet.
fn unique(path: &Path) -> PathBuf {
    if !path.exists() {
        return path.to_owned();
    }
    (1..)
        .map(|i| {
            let mut p = path.as_os_str().to_owned();
            p.push(format!(".{i}"));
            PathBuf::from(p)
        })
        .find(|p| !p.exists())
        .unwrap_or_else(|| path.to_owned())
}

fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    atomic::sync_dir(dir).with_context(|| format!("syncing {}", dir.display()))
}

/// Writes a small file atomically, beside it: create-new, fsync, rename,
/// fsync the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    atomic::write_atomic(&atomic::dir_of(path), path, bytes)
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_taken_once_settled_and_temp_names_never() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), Duration::ZERO).unwrap();
        fs::write(spool.outbox.join("a.weir"), b"a").unwrap();
        fs::write(spool.outbox.join(".hidden"), b"x").unwrap();
        fs::write(spool.outbox.join("b.weir.part"), b"x").unwrap();
        fs::write(spool.outbox.join("c.tmp"), b"x").unwrap();
        // First sight: not yet (it must be seen unchanged twice).
        assert!(spool.scan().unwrap().is_empty());
        let ready = spool.scan().unwrap();
        assert_eq!(ready.len(), 1);
        assert!(ready[0].path.ends_with("a.weir"));
        // Growing between scans: not taken.
        fs::write(spool.outbox.join("a.weir"), b"ab").unwrap();
        assert!(spool.scan().unwrap().is_empty());
    }

    #[test]
    fn a_recently_modified_file_waits_for_the_settle_time() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), Duration::from_secs(3600)).unwrap();
        fs::write(spool.outbox.join("a.weir"), b"a").unwrap();
        spool.scan().unwrap();
        assert!(spool.scan().unwrap().is_empty());
    }

    #[test]
    fn only_a_settled_urgent_bundle_counts_as_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), Duration::ZERO).unwrap();
        assert!(!has_waiting(&spool.urgent));
        fs::write(spool.urgent.join(".copying"), b"x").unwrap();
        assert!(!has_waiting(&spool.urgent), "temporary names never count");
        fs::write(spool.urgent.join("hotfix.weir"), b"x").unwrap();
        assert!(has_waiting(&spool.urgent));
        assert!(!has_settled(&spool.urgent, Duration::from_secs(3600)));
    }

    #[test]
    fn urgent_goes_first_then_arrival_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), Duration::ZERO).unwrap();
        fs::write(spool.outbox.join("first.weir"), b"1").unwrap();
        std::thread::sleep(Duration::from_millis(20));
        fs::write(spool.outbox.join("second.weir"), b"2").unwrap();
        fs::write(spool.urgent.join("urgent.weir"), b"u").unwrap();
        spool.scan().unwrap();
        let names: Vec<_> = spool
            .scan()
            .unwrap()
            .iter()
            .map(|c| c.path.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["urgent.weir", "first.weir", "second.weir"]);
    }

    #[test]
    fn failed_bundles_keep_their_reason_and_names_never_clash() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), Duration::ZERO).unwrap();
        for _ in 0..2 {
            let p = spool.outbox.join("bad.weir");
            fs::write(&p, b"bad").unwrap();
            spool
                .fail(&p, &serde_json::json!(["manifest_missing"]), 0)
                .unwrap();
        }
        assert!(spool.failed.join("bad.weir").exists());
        assert!(spool.failed.join("bad.weir.1").exists());
        let r: serde_json::Value =
            serde_json::from_slice(&fs::read(spool.failed.join("bad.weir.reason.json")).unwrap())
                .unwrap();
        assert_eq!(r["reasons"][0], "manifest_missing");
    }
}
