//! Streaming verification of a bundle: one pass, bounded memory, strict.
//!
//! ```text
//!  entry 1   manifest.json ≤ 1 MiB ── read whole, parsed, checked
//!  entries   signatures/<key-id>.minisig ── each checked against the
//!            trust store; none valid ⇒ reject before any payload byte
//!  entries   payload/..., sbom/... ── each must be listed, regular, of
//!            the listed size, mode and BLAKE3 (hashed while read)
//!  end       two zero blocks; anything but zeros after them is garbage
//! ```
//!
//! Every problem found is reported, not only the first; structural damage
//! (a bad header checksum, truncation) stops the walk where it is found.
//! Success yields a [`Verified`] value, which only this module can make.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::io::{self, Read};
use std::rc::Rc;
use std::time::SystemTime;

use super::lend::{Copying, Lend};
use super::manifest::{MAX_MANIFEST, Manifest, ManifestError};
use super::path::check_path;
use super::signature::{MAX_SIGNATURE, MAX_SIGNATURES, SignatureProblem, Signer, check_signature};
use super::trust::TrustStore;
use super::write::{CountingReader, MANIFEST_PATH, SIGNATURES_DIR};
use crate::digest::{Digester, Region};

/// Most zero bytes accepted after the end-of-archive marker (tar tools pad
/// archives to 10 KiB records).
const MAX_TRAILING_ZEROS: u64 = 1 << 20;
/// Read size while hashing entries.
const CHUNK: usize = 256 << 10;

/// One reason a bundle is rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Reason {
    /// The archive has no entries.
    #[error("no manifest: the archive is empty")]
    ManifestMissing,
    /// The first entry is not `manifest.json`.
    #[error("the first entry is {found:?}, not manifest.json")]
    ManifestNotFirst {
        /// What came first.
        found: String,
    },
    /// `manifest.json` is larger than 1 MiB.
    #[error("manifest.json is {size} bytes, more than 1 MiB")]
    ManifestTooLarge {
        /// Its size.
        size: u64,
    },
    /// `manifest.json` does not parse or breaks a rule.
    #[error("manifest.json is not valid: {detail}")]
    ManifestInvalid {
        /// What is wrong.
        detail: String,
    },
    /// No signature entry at all.
    #[error("the bundle carries no signature")]
    SignatureMissing,
    /// A signature that does not count.
    #[error("signature {path}: {detail}")]
    SignatureInvalid {
        /// The entry.
        path: String,
        /// What is wrong with it.
        detail: String,
        /// Which check failed: malformed, legacy, name_mismatch,
        /// untrusted, revoked, expired, bad, comment.
        kind: &'static str,
    },
    /// Signatures exist but none is valid and trusted.
    #[error("no valid signature from a trusted key")]
    NoTrustedSignature,
    /// A listed entry never came.
    #[error("{path} is listed in the manifest but missing")]
    EntryMissing {
        /// The entry.
        path: String,
    },
    /// An entry the manifest does not list.
    #[error("{path} is not listed in the manifest")]
    EntryExtra {
        /// The entry.
        path: String,
    },
    /// The same path twice.
    #[error("{path} appears more than once")]
    EntryDuplicate {
        /// The entry.
        path: String,
    },
    /// Size differs from the manifest.
    #[error("{path} is {actual} bytes, the manifest says {expected}")]
    SizeMismatch {
        /// The entry.
        path: String,
        /// From the manifest.
        expected: u64,
        /// From the archive.
        actual: u64,
    },
    /// Content hash differs from the manifest.
    #[error("{path} does not match its BLAKE3 in the manifest")]
    HashMismatch {
        /// The entry.
        path: String,
    },
    /// Mode differs from the manifest.
    #[error("{path} has mode {actual:o}, the manifest says {expected:o}")]
    ModeMismatch {
        /// The entry.
        path: String,
        /// From the manifest.
        expected: u32,
        /// From the archive.
        actual: u32,
    },
    /// A path that is not a bundle path.
    #[error("entry path {path:?} is {problem}")]
    PathInvalid {
        /// The path (lossy if not UTF-8).
        path: String,
        /// What is wrong.
        problem: String,
    },
    /// Two entries whose paths differ only in case.
    #[error("{path} collides with {other} (case-insensitive)")]
    PathCollision {
        /// The later entry.
        path: String,
        /// The earlier one.
        other: String,
    },
    /// A symlink, hard link, device, FIFO, or directory with content.
    #[error("{path} is a {kind}, not a regular file")]
    NotRegularFile {
        /// The entry.
        path: String,
        /// Its tar type.
        kind: String,
    },
    /// A header checksum error or other malformed tar structure.
    #[error("the archive is corrupt: {detail}")]
    TarCorrupt {
        /// What the tar reader said.
        detail: String,
    },
    /// The archive ends in the middle.
    #[error("the archive is truncated")]
    Truncated,
    /// Bytes other than zero padding after the end of the archive.
    #[error("{bytes}+ bytes of trailing data after the archive")]
    TrailingGarbage {
        /// How many (at least).
        bytes: u64,
    },
}

impl Reason {
    /// A short stable name for metrics and reason files.
    pub fn code(&self) -> &'static str {
        match self {
            Self::ManifestMissing => "manifest_missing",
            Self::ManifestNotFirst { .. } => "manifest_not_first",
            Self::ManifestTooLarge { .. } => "manifest_too_large",
            Self::ManifestInvalid { .. } => "manifest_invalid",
            Self::SignatureMissing => "signature_missing",
            Self::SignatureInvalid { .. } => "signature_invalid",
            Self::NoTrustedSignature => "no_trusted_signature",
            Self::EntryMissing { .. } => "entry_missing",
            Self::EntryExtra { .. } => "entry_extra",
            Self::EntryDuplicate { .. } => "entry_duplicate",
            Self::SizeMismatch { .. } => "size_mismatch",
            Self::HashMismatch { .. } => "hash_mismatch",
            Self::ModeMismatch { .. } => "mode_mismatch",
            Self::PathInvalid { .. } => "path_invalid",
            Self::PathCollision { .. } => "path_collision",
            Self::NotRegularFile { .. } => "not_regular_file",
            Self::TarCorrupt { .. } => "tar_corrupt",
            Self::Truncated => "truncated",
            Self::TrailingGarbage { .. } => "trailing_garbage",
        }
    }
}

/// A rejected bundle, with every reason found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bundle rejected: {}", self.reasons.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct Rejection {
    /// Never empty.
    pub reasons: Vec<Reason>,
}

/// What a verified bundle is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleInfo {
    /// The parsed manifest.
    pub manifest: Manifest,
    /// Its exact signed bytes.
    pub manifest_bytes: Vec<u8>,
    /// Trusted keys whose signatures verified.
    pub signers: Vec<Signer>,
    /// Signatures that did not count: unknown, revoked or expired keys.
    pub ignored_signatures: Vec<Reason>,
    /// Archive bytes read.
    pub archive_len: u64,
}

/// A value that passed verification. Only this module can make one, so
/// code that takes a `Verified<BundleInfo>` cannot be handed anything else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified<T>(T);

impl<T> std::ops::Deref for Verified<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> Verified<T> {
    /// The verified value.
    pub fn into_inner(self) -> T {
        self.0
    }
}

/// What `inspect` shows of a bundle without a trust store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    /// The parsed manifest.
    pub manifest: Manifest,
    /// Its exact bytes (what signatures cover).
    pub manifest_bytes: Vec<u8>,
    /// Key ids of the signature entries (not verified).
    pub signatures: Vec<String>,
}

fn tar_reason(e: &io::Error) -> Reason {
    // The tar reader reports a header cut short as "failed to read entire
    // block" rather than as an end-of-file error.
    if e.kind() == io::ErrorKind::UnexpectedEof || e.to_string().contains("entire block") {
        Reason::Truncated
    } else {
        Reason::TarCorrupt {
            detail: e.to_string(),
        }
    }
}

fn kind_name(t: tar::EntryType) -> String {
    match t {
        tar::EntryType::Symlink => "symlink".into(),
        tar::EntryType::Link => "hard link".into(),
        tar::EntryType::Char => "character device".into(),
        tar::EntryType::Block => "block device".into(),
        tar::EntryType::Fifo => "FIFO".into(),
        tar::EntryType::Directory => "directory with content".into(),
        other => format!("tar entry of type {:?}", other.as_byte() as char),
    }
}

fn problem_kind(p: &SignatureProblem) -> &'static str {
    match p {
        SignatureProblem::Malformed(_) => "malformed",
        SignatureProblem::Legacy => "legacy",
        SignatureProblem::NameMismatch { .. } => "name_mismatch",
        SignatureProblem::Untrusted(_) => "untrusted",
        SignatureProblem::Revoked { .. } => "revoked",
        SignatureProblem::Expired { .. } => "expired",
        SignatureProblem::Bad { .. } => "bad",
        SignatureProblem::Comment { .. } => "comment",
    }
}

/// Reads an entry of at most `max` bytes whole.
fn read_small(entry: &mut impl Read, size: u64, max: u64) -> io::Result<Vec<u8>> {
    let mut v = Vec::with_capacity(size.min(max) as usize);
    entry.take(max).read_to_end(&mut v)?;
    Ok(v)
}

/// Reads until `buf` is full or the end: how much was read does not depend
/// on how the reader splits its reads (a verdict must not either).
fn fill(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while let Some(rest) = buf.get_mut(n..).filter(|r| !r.is_empty()) {
        match reader.read(rest) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Verifies a bundle read from `reader` against `trust` at time `now`.
pub fn verify<R: Read>(
    reader: R,
    trust: &TrustStore,
    now: SystemTime,
) -> Result<Verified<BundleInfo>, Rejection> {
    walk(reader, Some((trust, now)), None).map(verified)
}

fn verified(w: Walked) -> Verified<BundleInfo> {
    Verified(BundleInfo {
        manifest: w.manifest,
        manifest_bytes: w.manifest_bytes,
        signers: w.signers,
        ignored_signatures: w.ignored,
        archive_len: w.archive_len,
    })
}

/// A whole file read once: the verdict on it as a bundle, and its
/// transfer digest.
#[derive(Debug)]
pub struct Digested {
    /// What verification found.
    pub verdict: Result<Verified<BundleInfo>, Rejection>,
    /// The [transfer digest](crate::digest) of every byte read.
    pub digest: blake3::Hash,
    /// Bytes read.
    pub len: u64,
}

/// Verifies a bundle as [`verify`] does and computes the transfer digest
/// of the whole file in the same read, sharing the BLAKE3 of each
/// artifact between the two: one hash pass over the file instead of two.
/// The file is read to its end whatever the verdict (a rejected bundle
/// still has a digest). `Err` is an error of `reader` itself, never a
/// property of the bundle.
pub fn verify_digest<R: Read>(
    reader: R,
    trust: &TrustStore,
    now: SystemTime,
) -> io::Result<Digested> {
    verify_digest_lent(Copying::new(reader, CHUNK), trust, now)
}

/// [`verify_digest`] from a reader that lends its bytes: an artifact's
/// content is hashed where the reader holds it, never copied out (the
/// `tar` reader sees only headers, manifest and signatures).
pub fn verify_digest_lent<R: Lend>(
    reader: R,
    trust: &TrustStore,
    now: SystemTime,
) -> io::Result<Digested> {
    let shared = Rc::new(Shared {
        digester: RefCell::new(Digester::new()),
        lend: Cell::new(false),
    });
    let mut tap = Tap {
        inner: reader,
        shared: Rc::clone(&shared),
        failed: None,
    };
    let verdict = walk(&mut tap, Some((trust, now)), Some(&shared)).map(verified);
    // The rest of the file, past the archive's end, only for the digest
    // (`Tap` retries interrupted reads itself).
    shared.lend.set(true);
    let mut buf = vec![0u8; CHUNK];
    while tap.read(&mut buf)? > 0 {}
    if let Some(e) = tap.failed.take() {
        // The walk may have turned it into a rejection: it is not one.
        return Err(e);
    }
    let d = shared.digester.borrow();
    Ok(Digested {
        verdict,
        digest: d.finalize(),
        len: d.position(),
    })
}

/// What the walk shares with the [`Tap`] under the `tar` reader.
struct Shared {
    /// Sees every byte read, in order.
    digester: RefCell<Digester>,
    /// Set while only the digester needs the bytes read (an artifact's
    /// content it hashes anyway): the tap lends them to it and leaves the
    /// reader's buffer untouched.
    lend: Cell<bool>,
}

/// Sets [`Shared::lend`] while it lives.
struct Lending<'a>(&'a Cell<bool>);

impl<'a> Lending<'a> {
    fn start(flag: &'a Cell<bool>) -> Self {
        flag.set(true);
        Self(flag)
    }
}

impl Drop for Lending<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

/// Feeds what passes through it to a [`Digester`], and remembers whether
/// the reader underneath failed. An interrupted read is retried here: the
/// `tar` reader would report it as a damaged archive, a verdict on the
/// bundle that an `EINTR` must never cause.
struct Tap<R> {
    inner: R,
    shared: Rc<Shared>,
    failed: Option<io::Error>,
}

impl<R: Lend> Read for Tap<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let read = if self.shared.lend.get() {
                let mut d = self.shared.digester.borrow_mut();
                let mut lent = 0;
                self.inner
                    .lend(buf.len(), &mut |s| {
                        lent += s.len();
                        d.update(s);
                    })
                    .and_then(|n| {
                        if n == lent && n <= buf.len() {
                            Ok(n)
                        } else {
                            // The digester saw other bytes than the reader
                            // counts: nothing read after this is trusted.
                            Err(io::Error::new(
                                io::ErrorKind::InvalidData,
                                format!("a reader lent {lent} bytes but counted {n}"),
                            ))
                        }
                    })
            } else {
                self.inner.read(buf).inspect(|&n| {
                    self.shared
                        .digester
                        .borrow_mut()
                        .update(buf.get(..n).unwrap_or_default());
                })
            };
            match read {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.failed = Some(io::Error::new(e.kind(), e.to_string()));
                    return Err(e);
                }
            }
        }
    }
}

/// Reads a bundle's manifest and signature names without checking
/// signatures or payload (for `bundle inspect`). Structure is still checked.
pub fn inspect<R: Read>(reader: R) -> Result<Inspection, Rejection> {
    walk(reader, None, None).map(|w| Inspection {
        manifest: w.manifest,
        manifest_bytes: w.manifest_bytes,
        signatures: w.signature_ids,
    })
}

/// What every payload entry is checked against.
struct EntryContext<'a> {
    listed: &'a HashMap<&'a str, super::manifest::EntryRef<'a>>,
    dirs: &'a HashSet<String>,
    /// Hash contents (verify) or only check structure (inspect).
    hash: bool,
    /// The digester the bytes also pass through, whose hash of an entry's
    /// content is used instead of hashing it a second time.
    shared: Option<&'a Shared>,
}

/// Checks one payload or SBOM entry, reading its data. `Ok` carries the
/// problems found (maybe none); `Err` a problem that stops the walk.
fn check_entry<R: Read>(
    mut entry: tar::Entry<'_, R>,
    ctx: &EntryContext<'_>,
    seen: &mut HashMap<String, String>,
    buf: &mut [u8],
) -> Result<Vec<Reason>, Reason> {
    let kind = entry.header().entry_type();
    let mut raw = entry.path_bytes().into_owned();
    if kind == tar::EntryType::Directory && raw.ends_with(b"/") {
        raw.pop();
    }
    let path = match check_path(&raw) {
        Ok(p) => p.to_owned(),
        Err(problem) => {
            return Ok(vec![Reason::PathInvalid {
                path: String::from_utf8_lossy(&raw).into_owned(),
                problem: problem.to_string(),
            }]);
        }
    };
    let kind = entry.header().entry_type();
    let size = entry.size();
    if kind == tar::EntryType::Directory
        && size == 0
        && ctx.dirs.contains(path.trim_end_matches('/'))
    {
        // An empty directory entry for a listed file's parent: harmless.
        return Ok(vec![]);
    }
    if kind != tar::EntryType::Regular {
        return Ok(vec![Reason::NotRegularFile {
            path,
            kind: kind_name(kind),
        }]);
    }
    let folded = super::path::fold_case(&path);
    if let Some(other) = seen.get(&folded) {
        return Ok(vec![if *other == path {
            Reason::EntryDuplicate { path }
        } else {
            Reason::PathCollision {
                path,
                other: other.clone(),
            }
        }]);
    }
    seen.insert(folded, path.clone());
    let Some(want) = ctx.listed.get(path.as_str()) else {
        return Ok(vec![Reason::EntryExtra { path }]);
    };
    let mut found = Vec::new();
    let mode = entry.header().mode().unwrap_or(0) & 0o7777;
    if mode != want.mode.bits() {
        found.push(Reason::ModeMismatch {
            path: path.clone(),
            expected: want.mode.bits(),
            actual: mode,
        });
    }
    if size != want.size {
        found.push(Reason::SizeMismatch {
            path,
            expected: want.size,
            actual: size,
        });
        return Ok(found);
    }
    if !ctx.hash {
        return Ok(found);
    }
    // The digester hashes this content anyway if it sees the entry where
    // the tar reader does (it always does for bundles weir writes).
    let region = Region {
        start: entry.raw_file_position(),
        len: size,
    };
    let shared = ctx
        .shared
        .filter(|s| s.digester.borrow().current_content() == Some(region));
    let mut hasher = blake3::Hasher::new();
    let mut read = 0u64;
    // Only the digester needs these bytes: it may take them in place.
    let _lending = shared.map(|s| Lending::start(&s.lend));
    loop {
        match entry.read(buf) {
            Ok(0) => break,
            Ok(n) => {
                if shared.is_none() {
                    hasher.update(buf.get(..n).unwrap_or_default());
                }
                read += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(tar_reason(&e)),
        }
    }
    if read != size {
        return Err(Reason::Truncated);
    }
    let hash = match shared {
        None => hasher.finalize(),
        Some(s) => match s.digester.borrow().last_content() {
            Some((r, h)) if r == region => h,
            _ => {
                return Err(Reason::TarCorrupt {
                    detail: format!("{path}: its content was not read where its header put it"),
                });
            }
        },
    };
    if hash.to_hex().as_str() != want.blake3 {
        found.push(Reason::HashMismatch { path });
    }
    Ok(found)
}

struct Walked {
    manifest: Manifest,
    manifest_bytes: Vec<u8>,
    signers: Vec<Signer>,
    ignored: Vec<Reason>,
    signature_ids: Vec<String>,
    archive_len: u64,
}

fn reject<T>(mut reasons: Vec<Reason>, last: Reason) -> Result<T, Rejection> {
    reasons.push(last);
    Err(Rejection { reasons })
}

fn walk<R: Read>(
    reader: R,
    trust: Option<(&TrustStore, SystemTime)>,
    shared: Option<&Shared>,
) -> Result<Walked, Rejection> {
    let mut archive = tar::Archive::new(CountingReader {
        inner: reader,
        count: 0,
    });
    let mut reasons = Vec::new();
    let mut entries = match archive.entries() {
        Ok(e) => e,
        Err(e) => return reject(reasons, tar_reason(&e)),
    };

    // 1. The manifest, first.
    let mut first = match entries.next() {
        None => return reject(reasons, Reason::ManifestMissing),
        Some(Err(e)) => return reject(reasons, tar_reason(&e)),
        Some(Ok(e)) => e,
    };
    let first_path = String::from_utf8_lossy(&first.path_bytes()).into_owned();
    if first_path != MANIFEST_PATH {
        return reject(reasons, Reason::ManifestNotFirst { found: first_path });
    }
    if first.header().entry_type() != tar::EntryType::Regular {
        return reject(
            reasons,
            Reason::NotRegularFile {
                path: first_path,
                kind: kind_name(first.header().entry_type()),
            },
        );
    }
    let size = first.size();
    if size > MAX_MANIFEST {
        return reject(reasons, Reason::ManifestTooLarge { size });
    }
    let manifest_bytes = match read_small(&mut first, size, MAX_MANIFEST) {
        Ok(b) => b,
        Err(e) => return reject(reasons, tar_reason(&e)),
    };
    drop(first);
    let manifest = match Manifest::from_bytes(&manifest_bytes) {
        Ok(m) => m,
        Err(e) => {
            let detail = match e {
                ManifestError::Json(s) => s,
                other => other.to_string(),
            };
            return reject(reasons, Reason::ManifestInvalid { detail });
        }
    };

    // 2. Signatures, right after it.
    let mut signers = Vec::new();
    let mut ignored = Vec::new();
    let mut signature_ids = Vec::new();
    let mut seen_sig_paths = HashSet::new();
    let mut next = entries.next();
    loop {
        let mut entry = match next {
            Some(Ok(e)) => e,
            Some(Err(e)) => return reject(reasons, tar_reason(&e)),
            None => break,
        };
        let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let Some(name) = path.strip_prefix(SIGNATURES_DIR) else {
            next = Some(Ok(entry));
            break;
        };
        if !seen_sig_paths.insert(path.clone()) {
            reasons.push(Reason::EntryDuplicate { path });
            next = entries.next();
            continue;
        }
        if seen_sig_paths.len() > MAX_SIGNATURES {
            return reject(reasons, Reason::EntryExtra { path });
        }
        if entry.header().entry_type() != tar::EntryType::Regular {
            reasons.push(Reason::NotRegularFile {
                path,
                kind: kind_name(entry.header().entry_type()),
            });
            next = entries.next();
            continue;
        }
        let file_id = name.strip_suffix(".minisig").unwrap_or(name).to_owned();
        signature_ids.push(file_id.clone());
        let size = entry.size();
        let text = match read_small(&mut entry, size, MAX_SIGNATURE) {
            Ok(b) if size <= MAX_SIGNATURE => String::from_utf8(b).ok(),
            Ok(_) => None,
            Err(e) => return reject(reasons, tar_reason(&e)),
        };
        if let Some((store, now)) = trust {
            let verdict = match &text {
                Some(t) => check_signature(store, &manifest_bytes, &manifest, &file_id, t, now),
                None => Err(SignatureProblem::Malformed(
                    "larger than 4 KiB or not UTF-8".into(),
                )),
            };
            match verdict {
                Ok(s) if signers.iter().any(|o: &Signer| o.key_id == s.key_id) => {}
                Ok(s) => signers.push(s),
                Err(p) => {
                    let counts_against = !matches!(
                        p,
                        SignatureProblem::Untrusted(_)
                            | SignatureProblem::Revoked { .. }
                            | SignatureProblem::Expired { .. }
                    );
                    let r = Reason::SignatureInvalid {
                        path,
                        kind: problem_kind(&p),
                        detail: p.to_string(),
                    };
                    // A signature that does not verify is evidence of
                    // tampering; one from a key we do not (or no longer)
                    // trust simply does not count.
                    if counts_against {
                        reasons.push(r);
                    } else {
                        ignored.push(r);
                    }
                }
            }
        }
        next = entries.next();
    }
    if seen_sig_paths.is_empty() {
        return reject(reasons, Reason::SignatureMissing);
    }
    if trust.is_some() && signers.is_empty() {
        // Nothing after this point is trusted: stop before the payload.
        reasons.extend(ignored);
        return reject(reasons, Reason::NoTrustedSignature);
    }

    // 3. Payload and SBOM entries.
    let listed: HashMap<&str, super::manifest::EntryRef<'_>> =
        manifest.entries().map(|e| (e.path, e)).collect();
    let dirs: HashSet<String> = manifest
        .entries()
        .flat_map(|e| {
            let p = e.path;
            p.match_indices('/')
                .map(move |(i, _)| p.get(..i).unwrap_or_default().to_owned())
        })
        .collect();
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut buf = vec![0u8; CHUNK];
    let ctx = EntryContext {
        listed: &listed,
        dirs: &dirs,
        hash: trust.is_some(),
        shared,
    };
    while let Some(item) = next {
        let entry = match item {
            Ok(e) => e,
            Err(e) => return reject(reasons, tar_reason(&e)),
        };
        // The entry's data must be read before the iterator moves on.
        match check_entry(entry, &ctx, &mut seen, &mut buf) {
            Ok(found) => reasons.extend(found),
            Err(fatal) => return reject(reasons, fatal),
        }
        next = entries.next();
    }
    for e in manifest.entries() {
        if !seen.contains_key(&super::path::fold_case(e.path)) {
            reasons.push(Reason::EntryMissing {
                path: e.path.to_owned(),
            });
        }
    }

    // 4. Nothing but zero padding after the end-of-archive marker.
    let mut rest = archive.into_inner();
    let mut tail = [0u8; 8192];
    let mut zeros = 0u64;
    loop {
        match fill(&mut rest, &mut tail) {
            Ok(0) => break,
            Ok(n) => {
                let chunk = tail.get(..n).unwrap_or_default();
                if chunk.iter().any(|&b| b != 0) || zeros + n as u64 > MAX_TRAILING_ZEROS {
                    reasons.push(Reason::TrailingGarbage { bytes: n as u64 });
                    break;
                }
                zeros += n as u64;
            }
            Err(e) => return reject(reasons, tar_reason(&e)),
        }
    }
    if !reasons.is_empty() {
        return Err(Rejection { reasons });
    }
    Ok(Walked {
        manifest,
        manifest_bytes,
        signers,
        ignored,
        signature_ids,
        archive_len: rest.count,
    })
}
