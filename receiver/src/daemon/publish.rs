//! The publisher thread: verifies complete transfers and moves them where
//! operators look, never leaving anything partial or unverified there.
//!
//! ```text
//!  incoming/<id>.part ─▶ read once: bundle verification (signatures,
//!                        manifest, every artifact's BLAKE3) + transfer
//!                        digest from the same hashes (unless the core
//!                        digested it on the fly)
//!     │ digest wrong ──────────────▶ discarded, received again
//!     │ rejected ──────────────────▶ quarantine/<id>.weir + .reason.json
//!     │ staging/ has NAME_VERSION:
//!     │     same digest ───────────▶ duplicate, dropped
//!     │     other digest ──────────▶ quarantine (conflict)
//!     ▼
//!  staging/NAME_VERSION.receipt.json, then staging/NAME_VERSION.weir
//!  (fsynced, hard-linked into place: never replaces a name), dir fsynced
//! ```

use std::fs::{self, File};
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, Sender};
use std::time::{Instant, SystemTime};

use serde::Serialize;
use tracing::{error, info, warn};
use weir_bundle::{BundleInfo, KeyStatus, Signer, Verified};
use weir_protocol::{BundleName, TransferDescriptor};

use super::Shared;
use super::streaming::Verifier;
use super::writer::Reply;
use crate::spool::{Spool, keep_newest_reports};
use crate::trust_file::TrustWatch;
use weir_host::atomic::{sync_dir, write_atomic, write_new};

/// A complete transfer, on disk and recorded, ready to be verified.
#[derive(Debug)]
pub struct PublishJob {
    /// The transfer.
    pub descriptor: TransferDescriptor,
    /// Earlier attempts that failed for a local reason.
    pub attempt: u32,
    /// The verifier that followed the transfer as it arrived; without
    /// one, the publisher reads the file itself.
    pub verifier: Option<Verifier>,
}

/// What became of a transfer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "verdict")]
pub enum Verdict {
    /// Verified and published in `staging/`.
    Published {
        /// The published file name.
        file: String,
    },
    /// Verified, and `staging/` already holds the same bundle.
    Duplicate {
        /// The name it is published under.
        file: String,
    },
    /// Rejected by verification, or conflicting with a published bundle.
    Quarantined {
        /// Reason codes.
        reasons: Vec<String>,
    },
    /// The rebuilt file does not match the sender's BLAKE3: received again.
    Corrupt,
    /// The partial file vanished from `incoming/` (removed by hand): the
    /// transfer is received again.
    Missing,
    /// Publishing failed for a local reason (disk full, permissions); kept
    /// in `incoming/` and retried.
    Deferred {
        /// The error.
        error: String,
    },
    /// Nothing arrived for the expiry time; reported in `failed/`.
    Expired {
        /// Blocks that never arrived.
        blocks_missing: u32,
    },
}

impl Verdict {
    /// The `outcome` label of the transfers metric.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Published { .. } => "published",
            Self::Duplicate { .. } => "duplicate",
            Self::Quarantined { .. } => "quarantined",
            Self::Corrupt => "corrupt",
            Self::Missing => "missing",
            Self::Deferred { .. } => "deferred",
            Self::Expired { .. } => "expired",
        }
    }
}

/// A transfer's outcome, for the receive loop, the metrics and `status`.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// Transfer id.
    pub transfer: String,
    /// Name the sender gave the file.
    pub name: String,
    /// Size.
    pub size: u64,
    /// When (RFC 3339).
    pub at: String,
    /// What happened.
    #[serde(flatten)]
    pub verdict: Verdict,
    /// Seconds spent verifying and publishing.
    pub seconds: f64,
    /// The transfer, to receive it again if need be.
    #[serde(skip)]
    pub descriptor: TransferDescriptor,
    /// Attempts so far (for the retry backoff).
    #[serde(skip)]
    pub attempt: u32,
}

/// The receipt published beside an accepted bundle.
#[derive(Debug, Serialize)]
struct Receipt<'a> {
    verdict: &'static str,
    file: &'a str,
    name: &'a str,
    version: &'a str,
    created: &'a str,
    size: u64,
    /// The transfer digest of the published file.
    digest: String,
    transfer: String,
    signers: &'a [Signer],
    ignored_signatures: Vec<String>,
    artifacts: Vec<ReceiptEntry<'a>>,
    sboms: Vec<ReceiptEntry<'a>>,
    verified_at: String,
}

#[derive(Debug, Serialize)]
struct ReceiptEntry<'a> {
    path: &'a str,
    size: u64,
    blake3: &'a str,
}

/// Why a bundle went to quarantine, written beside it.
#[derive(Debug, Serialize)]
struct ReasonFile {
    transfer: String,
    name: String,
    size: u64,
    /// The transfer digest of the quarantined file.
    digest: String,
    reasons: Vec<ReasonEntry>,
    /// Reasons found beyond those listed (the verifier keeps at most 32,
    /// and the file is cut to [`MAX_REASON_FILE`]).
    omitted: usize,
    at: String,
    /// Whether the bundle itself is kept beside this file (not when
    /// `quarantine/` is over its quota).
    kept: bool,
}

#[derive(Debug, Serialize)]
struct ReasonEntry {
    code: String,
    message: String,
}

/// The publisher thread's state.
#[derive(Debug)]
pub struct Publisher {
    spool: Spool,
    trust: Arc<TrustWatch>,
    replies: Sender<Reply>,
    shared: Arc<Shared>,
    /// Bytes of bundles `quarantine/` may hold.
    quarantine_quota: u64,
}

impl Publisher {
    /// A publisher into `spool`, verifying against `trust`.
    pub fn new(
        spool: Spool,
        trust: Arc<TrustWatch>,
        replies: Sender<Reply>,
        shared: Arc<Shared>,
        quarantine_quota: u64,
    ) -> Self {
        Self {
            spool,
            trust,
            replies,
            shared,
            quarantine_quota,
        }
    }

    /// Runs until the job channel closes. Once the daemon is stopping,
    /// queued jobs are left alone: they are complete on disk, and the next
    /// start publishes them.
    pub fn run(self, jobs: Receiver<PublishJob>) {
        for mut job in jobs {
            let verifier = job.verifier.take();
            if self.shared.stopping.load(Ordering::Relaxed) {
                if let Some(v) = verifier {
                    v.cancel();
                }
                continue;
            }
            let started = Instant::now();
            let d = &job.descriptor;
            let verdict = match self.process(&job, verifier) {
                Ok(v) => v,
                Err(e) => {
                    error!(transfer = %d.transfer, bundle = %d.name,
                        "publishing failed: {e}; kept in incoming/ and retried on restart");
                    Verdict::Deferred {
                        error: e.to_string(),
                    }
                }
            };
            let outcome = Outcome {
                transfer: d.transfer.to_string(),
                name: d.name.to_string(),
                size: d.size,
                at: now_rfc3339(),
                verdict,
                seconds: started.elapsed().as_secs_f64(),
                descriptor: job.descriptor.clone(),
                attempt: job.attempt,
            };
            let _ = self.replies.send(Reply::Outcome(outcome));
        }
    }

    fn process(&self, job: &PublishJob, verifier: Option<Verifier>) -> io::Result<Verdict> {
        let d = &job.descriptor;
        let id = d.transfer;
        if let Some(v) = verifier {
            // Followed the transfer: only its tail was left to read.
            let found = v.finish()?;
            if found.digest != d.digest() {
                return Ok(self.corrupt(d));
            }
            return self.judge(d, found.verdict);
        }
        let part = self.spool.part(id);
        let file = match File::open(&part) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                warn!(transfer = %id, bundle = %d.name,
                    "the partial file is gone from incoming/; receiving the transfer again");
                self.spool.remove_partial(id)?;
                return Ok(Verdict::Missing);
            }
            Err(e) => return Err(e),
        };
        let trust = self.trust.current();
        let found = weir_bundle::verify(file, &trust, SystemTime::now())?;
        if found.digest != d.digest() {
            return Ok(self.corrupt(d));
        }
        self.judge(d, found.verdict)
    }

    /// The file does not match the sender's transfer digest: drop it.
    fn corrupt(&self, d: &TransferDescriptor) -> Verdict {
        warn!(transfer = %d.transfer, bundle = %d.name,
            "rebuilt file does not match its transfer digest; discarded, receiving it again");
        if let Err(e) = self.spool.remove_partial(d.transfer) {
            warn!(transfer = %d.transfer, "removing the corrupt partial file: {e}");
        }
        Verdict::Corrupt
    }

    /// Publishes or quarantines a complete, hash-checked file.
    fn judge(
        &self,
        d: &TransferDescriptor,
        result: Result<Verified<BundleInfo>, weir_bundle::Rejection>,
    ) -> io::Result<Verdict> {
        let id = d.transfer;
        match result {
            Ok(v) if !self.signers_still_trusted(&v) => {
                warn!(transfer = %id, bundle = %d.name,
                    "every key that signed this bundle expired or was revoked while it arrived");
                self.quarantine(
                    d,
                    vec![ReasonEntry {
                        code: "no_trusted_signature".into(),
                        message: "every key that signed the bundle expired or was revoked while it was being received".into(),
                    }],
                    0,
                )
            }
            Ok(v) => self.accept(d, &v),
            Err(rejection) => {
                let reasons: Vec<ReasonEntry> = rejection
                    .reasons
                    .iter()
                    .map(|r| ReasonEntry {
                        code: r.code().to_owned(),
                        message: r.to_string(),
                    })
                    .collect();
                warn!(transfer = %id, bundle = %d.name, %rejection, "bundle rejected");
                self.quarantine(d, reasons, rejection.omitted)
            }
        }
    }

    fn accept(&self, d: &TransferDescriptor, v: &Verified<BundleInfo>) -> io::Result<Verdict> {
        let id = d.transfer;
        let m = &v.manifest;
        let stem = BundleName::sanitise(&format!("{}_{}", m.name, m.version));
        let file = format!("{stem}.weir");
        let dest = self.spool.staging.join(&file);
        let receipt_path = self.spool.staging.join(format!("{stem}.receipt.json"));
        if dest.exists() {
            return self.already_published(d, &file, &dest);
        }
        let receipt = Receipt {
            verdict: "accepted",
            file: &file,
            name: &m.name,
            version: &m.version,
            created: &m.created,
            size: d.size,
            digest: d.digest().to_hex().to_string(),
            transfer: id.to_string(),
            signers: &v.signers,
            ignored_signatures: v.ignored_signatures.iter().map(|r| r.to_string()).collect(),
            artifacts: m
                .artifacts
                .iter()
                .map(|a| ReceiptEntry {
                    path: &a.path,
                    size: a.size,
                    blake3: &a.blake3,
                })
                .collect(),
            sboms: m
                .sboms
                .iter()
                .map(|s| ReceiptEntry {
                    path: &s.path,
                    size: s.size,
                    blake3: &s.blake3,
                })
                .collect(),
            verified_at: now_rfc3339(),
        };
        let json = serde_json::to_vec_pretty(&receipt).map_err(io::Error::other)?;
        // The receipt goes first, so that whoever sees the bundle can read
        // its receipt. A receipt without its bundle is left over from a
        // crash between the two links: it is ours to replace.
        match write_new(&self.spool.incoming, &receipt_path, &json) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                fs::remove_file(&receipt_path)?;
                write_new(&self.spool.incoming, &receipt_path, &json)?;
            }
            r => r?,
        }
        let part = self.spool.part(id);
        match fs::hard_link(&part, &dest) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return self.already_published(d, &file, &dest);
            }
            Err(e) => {
                // Leave no receipt without its bundle.
                let _ = fs::remove_file(&receipt_path);
                return Err(e);
            }
        }
        // Published. What follows is bookkeeping: a failure is logged, and
        // a restart settles it (the bundle is found in staging/ with the
        // same digest: a duplicate).
        self.settle(id, &self.spool.staging);
        let signers: Vec<&str> = v.signers.iter().map(|s| s.id.as_str()).collect();
        info!(transfer = %id, bundle = %file, name = %m.name, version = %m.version,
            bytes = d.size, signers = ?signers, "published");
        Ok(Verdict::Published { file })
    }

    /// `staging/` already has this name: a duplicate if it holds the same
    /// bytes, a conflict otherwise.
    fn already_published(
        &self,
        d: &TransferDescriptor,
        file: &str,
        dest: &std::path::Path,
    ) -> io::Result<Verdict> {
        let existing = digest_file(dest)?;
        if existing == d.digest() {
            info!(transfer = %d.transfer, bundle = %file, "duplicate of a published bundle; not republished");
            self.settle(d.transfer, &self.spool.incoming);
            return Ok(Verdict::Duplicate {
                file: file.to_owned(),
            });
        }
        warn!(transfer = %d.transfer, bundle = %file,
            "staging/ already holds a different bundle under this name and version");
        self.quarantine(
            d,
            vec![ReasonEntry {
                code: "conflict".into(),
                message: format!(
                    "staging/{file} already holds a different bundle (digest {}); this one has digest {}",
                    existing.to_hex(),
                    d.digest().to_hex()
                ),
            }],
            0,
        )
    }

    /// Verification may have started long before the last block: at least
    /// one signer's key must still count now.
    fn signers_still_trusted(&self, v: &Verified<BundleInfo>) -> bool {
        let now = SystemTime::now();
        let trust = self.trust.current();
        v.signers.iter().any(|s| {
            trust
                .keys
                .iter()
                .any(|k| k.id == s.id && k.status(now) == KeyStatus::Usable)
        })
    }

    /// After a bundle was linked into `dir`: make that durable, drop the
    /// partial file, remember the transfer as finished. Errors are logged.
    fn settle(&self, id: weir_protocol::TransferId, dir: &std::path::Path) {
        let steps = sync_dir(dir)
            .and_then(|()| self.spool.remove_partial(id))
            .and_then(|()| sync_dir(&self.spool.incoming))
            .and_then(|()| self.spool.add_finished(id));
        if let Err(e) = steps {
            self.shared.disk_errors.fetch_add(1, Ordering::Relaxed);
            warn!(transfer = %id, "bookkeeping after publishing failed: {e}; a restart settles it");
        }
    }

    fn quarantine(
        &self,
        d: &TransferDescriptor,
        mut reasons: Vec<ReasonEntry>,
        mut omitted: usize,
    ) -> io::Result<Verdict> {
        let id = d.transfer;
        let codes = reasons.iter().map(|r| r.code.clone()).collect();
        let q = &self.spool.quarantine;
        // Anyone on the low-side network can send self-consistent junk:
        // past the quota, which counts every file kept here, only the
        // reason is kept.
        let held = dir_bytes(q);
        let kept = held
            .saturating_add(d.size)
            .saturating_add(MAX_REASON_FILE as u64)
            <= self.quarantine_quota;
        if !kept {
            warn!(transfer = %id, bundle = %d.name, held, quota = self.quarantine_quota,
                "quarantine/ is over its quota: only the reason is kept, not the bundle");
        }
        let digest = d.digest().to_hex().to_string();
        let stem = quarantine_stem(q, &id.to_string(), &digest);
        let json = loop {
            let report = ReasonFile {
                transfer: id.to_string(),
                name: d.name.to_string(),
                size: d.size,
                digest: digest.clone(),
                reasons: std::mem::take(&mut reasons),
                omitted,
                at: now_rfc3339(),
                kept,
            };
            let json = serde_json::to_vec_pretty(&report).map_err(io::Error::other)?;
            reasons = report.reasons;
            if json.len() <= MAX_REASON_FILE || reasons.is_empty() {
                break json;
            }
            // Every message is bounded; this only bites if a future
            // reason is not.
            reasons.pop();
            omitted += 1;
        };
        write_atomic(
            &self.spool.incoming,
            &q.join(format!("{stem}.reason.json")),
            &json,
        )?;
        let dest: PathBuf = q.join(format!("{stem}.weir"));
        // An existing file of that name holds these very bytes: the stem
        // names this digest (see `quarantine_stem`).
        if kept {
            match fs::hard_link(self.spool.part(id), &dest) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        self.settle(id, q);
        keep_newest_reports(q, ".reason.json", &[".weir"]);
        Ok(Verdict::Quarantined { reasons: codes })
    }
}

/// The name under which a rejected transfer goes into `quarantine/`: its
/// id, unless something under that id is not known to hold these bytes:
/// an earlier reason naming another digest, or a bundle whose reason is
/// gone (an operator removed it). The id is the first 64 bits of the
/// transfer digest, so the first takes a collision, which anyone on the
/// link can grind for transfers of their own (2³² tries). Both are then
/// kept, this one under its full digest, and no reason ever sits beside
/// another transfer's bytes.
fn quarantine_stem(q: &std::path::Path, id: &str, digest: &str) -> String {
    #[derive(serde::Deserialize)]
    struct Earlier {
        digest: String,
    }
    let earlier = fs::read(q.join(format!("{id}.reason.json")))
        .ok()
        .and_then(|b| serde_json::from_slice::<Earlier>(&b).ok());
    let same = match earlier {
        Some(e) => e.digest == digest,
        None => !q.join(format!("{id}.weir")).exists(),
    };
    if same {
        id.to_string()
    } else {
        format!("{id}-{digest}")
    }
}

/// Largest reason file written into `quarantine/`.
pub const MAX_REASON_FILE: usize = 64 << 10;

/// Bytes of the files in `dir`.
fn dir_bytes(dir: &std::path::Path) -> u64 {
    fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(fs::Metadata::is_file)
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// The time now as RFC 3339.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// The transfer digest of the file at `path`.
fn digest_file(path: &std::path::Path) -> io::Result<blake3::Hash> {
    let mut d = weir_protocol::digest::Digester::new();
    io::copy(
        &mut io::BufReader::with_capacity(1 << 20, File::open(path)?),
        &mut d,
    )?;
    Ok(d.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_colliding_id_never_puts_a_reason_beside_other_bytes() {
        let q = tempfile::tempdir().unwrap();
        let id = "00112233aabbccdd";
        // Nothing under this id yet: the id.
        assert_eq!(quarantine_stem(q.path(), id, "d1"), id);
        std::fs::write(
            q.path().join(format!("{id}.reason.json")),
            br#"{"transfer": "00112233aabbccdd", "digest": "d1", "size": 3}"#,
        )
        .unwrap();
        // The same transfer again: the same name (its bytes are there).
        assert_eq!(quarantine_stem(q.path(), id, "d1"), id);
        // Other bytes under the same id: kept apart, under the digest.
        assert_eq!(quarantine_stem(q.path(), id, "d2"), format!("{id}-d2"));
        // A bundle whose reason an operator removed: its digest is
        // unknown, so nothing goes beside it.
        std::fs::remove_file(q.path().join(format!("{id}.reason.json"))).unwrap();
        std::fs::write(q.path().join(format!("{id}.weir")), b"old").unwrap();
        assert_eq!(quarantine_stem(q.path(), id, "d1"), format!("{id}-d1"));
    }

    #[test]
    fn the_quota_counts_every_file_kept() {
        // Regression: only `*.weir` counted, so reason files (and anything
        // else left there) grew without bound.
        let q = tempfile::tempdir().unwrap();
        std::fs::write(q.path().join("a.weir"), vec![0u8; 1000]).unwrap();
        std::fs::write(q.path().join("a.reason.json"), vec![0u8; 300]).unwrap();
        std::fs::write(q.path().join("notes.txt"), vec![0u8; 20]).unwrap();
        std::fs::create_dir(q.path().join("sub")).unwrap();
        assert_eq!(dir_bytes(q.path()), 1320);
    }
}
