//! Verification of a bundle as a push parser: bytes in, in any pieces; a
//! verdict out. Memory is bounded by constants, whatever the bundle holds.
//!
//! ```text
//!  feed(&[u8]) ──▶ header block (512) ─▶ compared with the one header
//!      │                                  the layout allows here
//!      │         manifest.json ≤ 1 MiB ─▶ parsed, checked; from here on
//!      │                                  every header is known in advance
//!      │         signatures/*.minisig  ─▶ each ≤ 4 KiB, sorted by key id,
//!      │                                  checked against the trust store;
//!      │                                  none trusted ⇒ stop here
//!      │         payload/…, sbom/…     ─▶ hashed where the bytes lie,
//!      │                                  compared with the manifest
//!      │         two zero blocks       ─▶ and nothing after them
//!      ▼
//!  finish() ──▶ Digested { verdict: Verified<BundleInfo> | Rejection,
//!                          digest (of every byte fed), len }
//! ```
//!
//! Nothing is read whole but the manifest and the signatures, and only
//! after their sizes are checked against [`MAX_MANIFEST`] and
//! [`MAX_SIGNATURE`]. A header that is not the canonical one is refused
//! where it is found ([`Reason::NonCanonical`] names the field), so no PAX
//! record, long name, owner, extended attribute or trailing byte can ride
//! along with a valid bundle.
//!
//! The transfer digest is computed in the same pass: each artifact's
//! BLAKE3 is computed once, by the digester, and compared with the
//! manifest. Problems are reported as many as are found, up to
//! [`MAX_REASONS`]; damage that leaves the layout unknown (a wrong path,
//! type or size) stops the walk, and the rest of the bytes go only to the
//! digest.

use std::time::SystemTime;

use weir_protocol::digest::{Digester, Region};

use crate::excerpt::Excerpt;
use crate::manifest::{EntryRef, MAX_MANIFEST, Manifest, Mode};
use crate::path::check_path;
use crate::signature::{
    MAX_SIGNATURE, MAX_SIGNATURES, SignatureProblem, Signer, check_form, check_signature,
};
use crate::trust::{KeyId, TrustStore};
use crate::ustar::{self, BLOCK, Block};
use crate::write::{MANIFEST_PATH, SIGNATURE_SUFFIX, SIGNATURES_DIR};

/// Most reasons one rejection keeps; the rest are counted.
pub const MAX_REASONS: usize = 32;

/// One reason a bundle is rejected. Every string in it is an [`Excerpt`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Reason {
    /// The archive has no entries.
    #[error("no manifest: the archive is empty")]
    ManifestMissing,
    /// The first entry is not `manifest.json`.
    #[error("the first entry is {found}, not manifest.json")]
    ManifestNotFirst {
        /// What came first.
        found: Excerpt,
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
        detail: Excerpt,
    },
    /// No signature entry at all.
    #[error("the bundle carries no signature")]
    SignatureMissing,
    /// A signature that does not count.
    #[error("signature {path}: {detail}")]
    SignatureInvalid {
        /// The entry.
        path: Excerpt,
        /// What is wrong with it.
        detail: Excerpt,
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
        path: Excerpt,
    },
    /// An entry the manifest does not list.
    #[error("{path} is not listed in the manifest")]
    EntryExtra {
        /// The entry.
        path: Excerpt,
    },
    /// The same path twice.
    #[error("{path} appears more than once")]
    EntryDuplicate {
        /// The entry.
        path: Excerpt,
    },
    /// A listed entry, or a signature, where the layout puts another.
    #[error("{path} is out of order: {expected} comes here")]
    EntryOutOfOrder {
        /// The entry found.
        path: Excerpt,
        /// What the layout puts here.
        expected: Excerpt,
    },
    /// Size differs from the manifest.
    #[error("{path} is {actual} bytes, the manifest says {expected}")]
    SizeMismatch {
        /// The entry.
        path: Excerpt,
        /// From the manifest.
        expected: u64,
        /// From the archive.
        actual: u64,
    },
    /// Content hash differs from the manifest.
    #[error("{path} does not match its BLAKE3 in the manifest")]
    HashMismatch {
        /// The entry.
        path: Excerpt,
    },
    /// Mode differs from the manifest.
    #[error("{path} has mode {actual:o}, the manifest says {expected:o}")]
    ModeMismatch {
        /// The entry.
        path: Excerpt,
        /// From the manifest.
        expected: u32,
        /// From the archive.
        actual: u32,
    },
    /// A path that is not a bundle path.
    #[error("entry path {path} is {problem}")]
    PathInvalid {
        /// The path.
        path: Excerpt,
        /// What is wrong.
        problem: Excerpt,
    },
    /// A symlink, hard link, device, FIFO or directory.
    #[error("{path} is a {kind}, not a regular file")]
    NotRegularFile {
        /// The entry.
        path: Excerpt,
        /// Its tar type.
        kind: &'static str,
    },
    /// A byte that differs from the one encoding the layout allows: a
    /// header field, a PAX or GNU record, padding, a signature file's form.
    #[error("{entry} (at byte {offset}) is not in canonical form ({field})")]
    NonCanonical {
        /// The entry (or "end of archive").
        entry: Excerpt,
        /// Where its header (or the part that differs) starts.
        offset: u64,
        /// The field: a header field name ([`ustar::FIELDS`]), a type of
        /// record, "padding", "end block" or a part of a signature file.
        field: &'static str,
    },
    /// The archive ends in the middle.
    #[error("the archive ends at byte {offset}, inside {within}")]
    Truncated {
        /// Bytes there are.
        offset: u64,
        /// What was being read.
        within: &'static str,
    },
    /// Bytes after the two end blocks.
    #[error("trailing data after the end of the archive, from byte {offset}")]
    TrailingData {
        /// Where it starts: the archive's length.
        offset: u64,
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
            Self::EntryOutOfOrder { .. } => "entry_out_of_order",
            Self::SizeMismatch { .. } => "size_mismatch",
            Self::HashMismatch { .. } => "hash_mismatch",
            Self::ModeMismatch { .. } => "mode_mismatch",
            Self::PathInvalid { .. } => "path_invalid",
            Self::NotRegularFile { .. } => "not_regular_file",
            Self::NonCanonical { .. } => "non_canonical",
            Self::Truncated { .. } => "truncated",
            Self::TrailingData { .. } => "trailing_data",
        }
    }
}

/// A rejected bundle, with the reasons found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bundle rejected: {}{}", self.reasons.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "),
    if self.omitted > 0 { format!("; and {} more", self.omitted) } else { String::new() })]
pub struct Rejection {
    /// Never empty; at most [`MAX_REASONS`].
    pub reasons: Vec<Reason>,
    /// Reasons found beyond those kept.
    pub omitted: usize,
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
    /// Archive bytes.
    pub archive_len: u64,
    /// Where the first payload entry's header starts: from here, every
    /// entry's place follows from the manifest ([`BundleInfo::contents`]).
    pub payload_offset: u64,
}

impl BundleInfo {
    /// Each manifest entry with the offset of its content in the archive.
    pub fn contents(&self) -> impl Iterator<Item = (EntryRef<'_>, u64)> {
        contents(&self.manifest, self.payload_offset)
    }
}

/// Each entry of `manifest` with the offset of its content, the first
/// header being at `payload_offset`: the layout leaves no choice.
fn contents(manifest: &Manifest, payload_offset: u64) -> impl Iterator<Item = (EntryRef<'_>, u64)> {
    let mut at = payload_offset;
    manifest.entries().map(move |e| {
        let start = at + BLOCK as u64;
        at = start + e.size + ustar::padding(e.size);
        (e, start)
    })
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

/// What [`BundleInspector`] shows of a bundle without a trust store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    /// The parsed manifest.
    pub manifest: Manifest,
    /// Its exact bytes (what signatures cover).
    pub manifest_bytes: Vec<u8>,
    /// The signature entries (not verified): key id and text, in order.
    pub signatures: Vec<(KeyId, String)>,
    /// Where the first payload entry's header starts.
    pub payload_offset: u64,
}

impl Inspection {
    /// Each manifest entry with the offset of its content in the archive.
    pub fn contents(&self) -> impl Iterator<Item = (EntryRef<'_>, u64)> {
        contents(&self.manifest, self.payload_offset)
    }
}

/// Everything fed, judged: the verdict on it as a bundle, and its
/// transfer digest.
#[derive(Debug)]
pub struct Digested {
    /// What verification found.
    pub verdict: Result<Verified<BundleInfo>, Rejection>,
    /// The [transfer digest](weir_protocol::digest) of every byte fed.
    pub digest: blake3::Hash,
    /// Bytes fed.
    pub len: u64,
}

/// What `feed` tells its driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// No verdict yet: feed more (or finish).
    More,
    /// Rejected whatever follows; more bytes count only for the digest.
    Rejected,
}

/// Verifies a bundle fed in pieces, against a trust store at a time.
#[derive(Debug)]
pub struct BundleVerifier<'t> {
    walk: Walk<'t>,
}

impl<'t> BundleVerifier<'t> {
    /// A verifier at the start of a file.
    pub fn new(trust: &'t TrustStore, now: SystemTime) -> Self {
        Self {
            walk: Walk::new(Some((trust, now)), Some(Digester::new())),
        }
    }

    /// Takes the next bytes of the file.
    pub fn feed(&mut self, data: &[u8]) -> Progress {
        self.walk.feed(data)
    }

    /// Bytes fed so far.
    pub fn position(&self) -> u64 {
        self.walk.pos
    }

    /// The verdict on everything fed, with its digest.
    pub fn finish(self) -> Digested {
        let walk = self.walk;
        let digest = walk
            .digester
            .as_ref()
            .map(Digester::finalize)
            .unwrap_or_else(|| blake3::hash(b""));
        let len = walk.pos;
        let verdict = walk.conclude().map(|w| {
            Verified(BundleInfo {
                manifest: w.manifest,
                manifest_bytes: w.manifest_bytes,
                signers: w.signers,
                ignored_signatures: w.ignored,
                archive_len: len,
                payload_offset: w.payload_offset,
            })
        });
        Digested {
            verdict,
            digest,
            len,
        }
    }
}

/// Reads a bundle's structure, manifest and signature entries without a
/// trust store (for `bundle inspect` and `bundle sign`): every header is
/// checked, no signature and no payload hash is.
#[derive(Debug)]
pub struct BundleInspector {
    walk: Walk<'static>,
}

impl Default for BundleInspector {
    fn default() -> Self {
        Self::new()
    }
}

impl BundleInspector {
    /// An inspector at the start of a file.
    pub fn new() -> Self {
        Self {
            walk: Walk::new(None, None),
        }
    }

    /// Takes the next bytes of the file.
    pub fn feed(&mut self, data: &[u8]) -> Progress {
        self.walk.feed(data)
    }

    /// What the bundle holds, or why it is not one.
    pub fn finish(self) -> Result<Inspection, Rejection> {
        self.walk.conclude().map(|w| Inspection {
            manifest: w.manifest,
            manifest_bytes: w.manifest_bytes,
            signatures: w.signature_texts,
            payload_offset: w.payload_offset,
        })
    }
}

/// What the next header must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// `manifest.json`.
    Manifest,
    /// A signature entry (or, after the first, payload entry 0).
    Signature,
    /// Manifest entry `i` (or the end, after the last).
    Entry(usize),
}

/// Where the parse stands within the bytes.
#[derive(Debug)]
enum State {
    /// Collecting a header block: `have` bytes of it in `Walk::block`.
    Header { have: usize },
    /// The manifest's content, collected whole.
    ManifestContent { left: u64 },
    /// A signature entry's content, collected whole.
    SignatureContent { left: u64, path: String, key: KeyId },
    /// Payload entry `index`'s content.
    Content {
        index: usize,
        left: u64,
        region: Region,
        /// The digester hashes these bytes itself.
        shared: bool,
    },
    /// Zero padding after the content of `owner`.
    Padding {
        left: u64,
        owner: Owner,
        /// Non-zero padding was reported already.
        reported: bool,
    },
    /// The second end block: `have` bytes of it so far.
    SecondEnd { have: usize },
    /// After the end blocks: nothing may come.
    Ended,
    /// Rejected for good; the rest is not looked at.
    Stopped,
}

/// Whose content some padding follows.
#[derive(Debug, Clone, Copy)]
enum Owner {
    Manifest,
    Signature(KeyId),
    Entry(usize),
}

/// What a finished walk found.
struct Walked {
    manifest: Manifest,
    manifest_bytes: Vec<u8>,
    signers: Vec<Signer>,
    ignored: Vec<Reason>,
    signature_texts: Vec<(KeyId, String)>,
    payload_offset: u64,
}

/// The parse shared by [`BundleVerifier`] and [`BundleInspector`].
#[derive(Debug)]
struct Walk<'t> {
    /// The trust store and time to judge signatures by; `None` inspects.
    trust: Option<(&'t TrustStore, SystemTime)>,
    /// The transfer digest of every byte fed, and the artifact hashes.
    digester: Option<Digester>,
    state: State,
    next: Next,
    /// Bytes fed.
    pos: u64,
    /// The header being collected, and the offset it starts at.
    block: Block,
    block_at: u64,
    /// The manifest's header, checked once the manifest gives its mtime.
    manifest_header: Block,
    manifest_bytes: Vec<u8>,
    manifest: Option<Manifest>,
    /// The manifest's `created`, every header's mtime.
    mtime: u64,
    /// Signature entries seen, the last key id (they come sorted).
    signature_count: usize,
    last_key: Option<KeyId>,
    signature_texts: Vec<(KeyId, String)>,
    /// The signature entry being read (at most [`MAX_SIGNATURE`]).
    signature_bytes: Vec<u8>,
    signers: Vec<Signer>,
    ignored: Vec<Reason>,
    payload_offset: u64,
    /// Hashes content the digester does not (or all of it, without one).
    hasher: blake3::Hasher,
    reasons: Vec<Reason>,
    omitted: usize,
}

impl<'t> Walk<'t> {
    fn new(trust: Option<(&'t TrustStore, SystemTime)>, digester: Option<Digester>) -> Self {
        Self {
            trust,
            digester,
            state: State::Header { have: 0 },
            next: Next::Manifest,
            pos: 0,
            block: [0; BLOCK],
            block_at: 0,
            manifest_header: [0; BLOCK],
            manifest_bytes: Vec::new(),
            manifest: None,
            mtime: 0,
            signature_count: 0,
            last_key: None,
            signature_texts: Vec::new(),
            signature_bytes: Vec::new(),
            signers: Vec::new(),
            ignored: Vec::new(),
            payload_offset: 0,
            hasher: blake3::Hasher::new(),
            reasons: Vec::new(),
            omitted: 0,
        }
    }

    fn report(&mut self, r: Reason) {
        if self.reasons.len() < MAX_REASONS {
            self.reasons.push(r);
        } else {
            self.omitted += 1;
        }
    }

    /// Rejects for good: nothing after this is looked at.
    fn stop(&mut self, r: Reason) {
        self.report(r);
        self.state = State::Stopped;
    }

    fn feed(&mut self, mut data: &[u8]) -> Progress {
        while !data.is_empty() {
            let take = self.wants().min(data.len()).max(1);
            let (piece, rest) = data.split_at(take.min(data.len()));
            // The digester sees each piece first, so that a content
            // region it hashes is finished when the walk looks for it.
            if let Some(d) = &mut self.digester {
                d.update(piece);
            }
            self.consume(piece);
            self.pos += piece.len() as u64;
            data = rest;
        }
        if matches!(self.state, State::Stopped) {
            Progress::Rejected
        } else {
            Progress::More
        }
    }

    /// How many bytes the current state takes at most before it changes.
    fn wants(&self) -> usize {
        let clamp = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        match &self.state {
            State::Header { have } | State::SecondEnd { have } => BLOCK - have,
            State::ManifestContent { left }
            | State::SignatureContent { left, .. }
            | State::Content { left, .. }
            | State::Padding { left, .. } => clamp(*left),
            State::Ended | State::Stopped => usize::MAX,
        }
    }

    fn consume(&mut self, piece: &[u8]) {
        match &mut self.state {
            State::Header { have } => {
                if *have == 0 {
                    self.block_at = self.pos;
                }
                if let Some(dst) = self.block.get_mut(*have..*have + piece.len()) {
                    dst.copy_from_slice(piece);
                }
                *have += piece.len();
                if *have == BLOCK {
                    self.on_header();
                }
            }
            State::ManifestContent { left } => {
                self.manifest_bytes.extend_from_slice(piece);
                *left -= piece.len() as u64;
                if *left == 0 {
                    self.on_manifest();
                }
            }
            State::SignatureContent { left, .. } => {
                *left -= piece.len() as u64;
                let done = *left == 0;
                self.signature_bytes.extend_from_slice(piece);
                if done {
                    self.on_signature();
                }
            }
            State::Content {
                left,
                shared,
                index,
                region,
            } => {
                if !*shared && self.trust.is_some() {
                    self.hasher.update(piece);
                }
                *left -= piece.len() as u64;
                if *left == 0 {
                    let (index, region, shared) = (*index, *region, *shared);
                    self.on_content(index, region, shared);
                }
            }
            State::Padding {
                left,
                owner,
                reported,
            } => {
                *left -= piece.len() as u64;
                let done = *left == 0;
                let owner = *owner;
                let bad = if *reported {
                    None
                } else {
                    piece.iter().position(|&b| b != 0)
                };
                if let Some(i) = bad {
                    // One report per padding run.
                    *reported = true;
                    let entry = self.owner_name(owner);
                    self.report(Reason::NonCanonical {
                        entry,
                        offset: self.pos + i as u64,
                        field: "padding",
                    });
                }
                if done {
                    self.state = State::Header { have: 0 };
                }
            }
            State::SecondEnd { have } => {
                *have += piece.len();
                let done = *have == BLOCK;
                if let Some(i) = piece.iter().position(|&b| b != 0) {
                    self.stop(Reason::NonCanonical {
                        entry: Excerpt::of("end of archive"),
                        offset: self.pos + i as u64,
                        field: "end block",
                    });
                } else if done {
                    self.state = State::Ended;
                }
            }
            State::Ended => {
                self.stop(Reason::TrailingData { offset: self.pos });
            }
            State::Stopped => {}
        }
    }

    /// The name of the entry some padding follows, for a reason.
    fn owner_name(&self, owner: Owner) -> Excerpt {
        match owner {
            Owner::Manifest => Excerpt::of(MANIFEST_PATH),
            Owner::Signature(key) => {
                Excerpt::of(&format!("{SIGNATURES_DIR}{key}{SIGNATURE_SUFFIX}"))
            }
            Owner::Entry(i) => self
                .manifest
                .as_ref()
                .and_then(|m| m.entry(i))
                .map_or_else(|| Excerpt::of("an entry"), |e| Excerpt::of(e.path)),
        }
    }

    /// A whole header block is in `self.block`.
    fn on_header(&mut self) {
        let at = self.block_at;
        if ustar::is_zero(&self.block) {
            self.on_end_block();
            return;
        }
        match self.next {
            Next::Manifest => self.manifest_header(),
            Next::Signature => {
                let flag = ustar::typeflag(&self.block);
                if flag != b'0' {
                    // A record where a signature or the payload should
                    // be: named as what it is.
                    let raw = ustar::path_of(&self.block);
                    return self.stop(self.type_reason(&raw, flag));
                }
                if ustar::path_of(&self.block).starts_with(SIGNATURES_DIR.as_bytes()) {
                    self.signature_header();
                } else if self.signatures_done() {
                    self.payload_offset = at;
                    self.next = Next::Entry(0);
                    self.entry_header(0);
                }
            }
            Next::Entry(i) => self.entry_header(i),
        }
    }

    /// A zero block: the end of the archive, in its place or too early.
    fn on_end_block(&mut self) {
        match self.next {
            Next::Manifest => return self.stop(Reason::ManifestMissing),
            Next::Signature => {
                if !self.signatures_done() {
                    return;
                }
                self.payload_offset = self.block_at;
                self.next = Next::Entry(0);
            }
            Next::Entry(_) => {}
        }
        let Next::Entry(i) = self.next else { return };
        let count = self.manifest.as_ref().map_or(0, Manifest::entry_count);
        let missing: Vec<Excerpt> = (i..count)
            .filter_map(|j| {
                self.manifest
                    .as_ref()?
                    .entry(j)
                    .map(|e| Excerpt::of(e.path))
            })
            .take(MAX_REASONS + 1)
            .collect();
        let more = count.saturating_sub(i).saturating_sub(missing.len());
        for path in missing {
            self.report(Reason::EntryMissing { path });
        }
        self.omitted += more;
        self.next = Next::Entry(count);
        self.state = State::SecondEnd { have: 0 };
    }

    /// The first header must be `manifest.json`, a regular file of at
    /// most [`MAX_MANIFEST`] bytes; the rest of it is checked once the
    /// manifest is read.
    fn manifest_header(&mut self) {
        let path = ustar::path_of(&self.block);
        let flag = ustar::typeflag(&self.block);
        if flag != b'0' && (flag != 0 || path == MANIFEST_PATH.as_bytes()) {
            return self.stop(self.type_reason(&path, flag));
        }
        if path != MANIFEST_PATH.as_bytes() {
            return self.stop(Reason::ManifestNotFirst {
                found: Excerpt::of_bytes(&path),
            });
        }
        let Some(size) = ustar::size_of(&self.block) else {
            return self.stop(self.non_canonical(MANIFEST_PATH.as_bytes(), "size"));
        };
        if size > MAX_MANIFEST {
            return self.stop(Reason::ManifestTooLarge { size });
        }
        self.manifest_header = self.block;
        // Bounded above: at most 1 MiB.
        self.manifest_bytes = Vec::with_capacity(size as usize);
        self.state = State::ManifestContent { left: size };
        if size == 0 {
            self.on_manifest();
        }
    }

    /// The manifest is read whole: parse it, then hold its header to the
    /// canonical one.
    fn on_manifest(&mut self) {
        let manifest = match Manifest::from_bytes(&self.manifest_bytes) {
            Ok(m) => m,
            Err(e) => {
                let detail = match e {
                    crate::manifest::ManifestError::Json(s) => s,
                    other => other.to_string(),
                };
                return self.stop(Reason::ManifestInvalid {
                    detail: Excerpt::of(&detail),
                });
            }
        };
        // `check` made sure of it.
        self.mtime = manifest.created_secs().unwrap_or(0);
        let size = self.manifest_bytes.len() as u64;
        let found = self.manifest_header;
        self.manifest = Some(manifest);
        self.check_fields(&found, MANIFEST_PATH, Mode::Regular.bits(), size, 0);
        self.next = Next::Signature;
        self.after_content(size, Owner::Manifest);
    }

    /// A header under `signatures/`.
    fn signature_header(&mut self) {
        let at = self.block_at;
        let raw = ustar::path_of(&self.block);
        let path = String::from_utf8_lossy(&raw).into_owned();
        let flag = ustar::typeflag(&self.block);
        if flag != b'0' {
            return self.stop(self.type_reason(&raw, flag));
        }
        let id_text = path
            .strip_prefix(SIGNATURES_DIR)
            .and_then(|n| n.strip_suffix(SIGNATURE_SUFFIX))
            .unwrap_or_default();
        let Some(key) = KeyId::parse(id_text).filter(|k| k.to_string() == id_text) else {
            return self.stop(match check_path(&raw) {
                Err(problem) => Reason::PathInvalid {
                    path: Excerpt::of_bytes(&raw),
                    problem: Excerpt::of(&problem.to_string()),
                },
                Ok(_) => Reason::EntryExtra {
                    path: Excerpt::of_bytes(&raw),
                },
            });
        };
        if let Some(last) = self.last_key {
            let order = |k: KeyId| u64::from_le_bytes(k.0);
            if order(key) == order(last) {
                return self.stop(Reason::EntryDuplicate {
                    path: Excerpt::of(&path),
                });
            }
            if order(key) < order(last) {
                return self.stop(Reason::EntryOutOfOrder {
                    path: Excerpt::of(&path),
                    expected: Excerpt::of("signatures sorted by key id"),
                });
            }
        }
        self.signature_count += 1;
        if self.signature_count > MAX_SIGNATURES {
            return self.stop(Reason::EntryExtra {
                path: Excerpt::of(&format!("{path} (more than {MAX_SIGNATURES} signatures)")),
            });
        }
        let Some(size) = ustar::size_of(&self.block) else {
            return self.stop(self.non_canonical(&raw, "size"));
        };
        if size > MAX_SIGNATURE {
            return self.stop(Reason::SignatureInvalid {
                path: Excerpt::of(&path),
                detail: Excerpt::of("larger than 4 KiB"),
                kind: "malformed",
            });
        }
        let found = self.block;
        self.check_fields(&found, &path, Mode::Regular.bits(), size, at);
        self.last_key = Some(key);
        // Bounded above: at most MAX_SIGNATURE.
        self.signature_bytes = Vec::with_capacity(size as usize);
        self.state = State::SignatureContent {
            left: size,
            path,
            key,
        };
        if size == 0 {
            self.on_signature();
        }
    }

    /// A signature entry is read whole: check its form, then the
    /// signature.
    fn on_signature(&mut self) {
        let State::SignatureContent { path, key, .. } =
            std::mem::replace(&mut self.state, State::Header { have: 0 })
        else {
            return;
        };
        let bytes = std::mem::take(&mut self.signature_bytes);
        let size = bytes.len() as u64;
        let header = self.block_at;
        let Ok(text) = String::from_utf8(bytes) else {
            self.report(Reason::SignatureInvalid {
                path: Excerpt::of(&path),
                detail: Excerpt::of("not UTF-8"),
                kind: "malformed",
            });
            return self.after_content(size, Owner::Signature(key));
        };
        self.signature_texts.push((key, text.clone()));
        if let Err(part) = check_form(&text) {
            self.report(Reason::NonCanonical {
                entry: Excerpt::of(&path),
                offset: header,
                field: part,
            });
        } else if let (Some((store, now)), Some(m)) = (self.trust, self.manifest.as_ref()) {
            match check_signature(store, &self.manifest_bytes, m, key, &text, now) {
                Ok(s) => self.signers.push(s),
                Err(p) => {
                    let counts_against = !matches!(
                        p,
                        SignatureProblem::Untrusted(_)
                            | SignatureProblem::Revoked { .. }
                            | SignatureProblem::Expired { .. }
                    );
                    let r = Reason::SignatureInvalid {
                        path: Excerpt::of(&path),
                        kind: problem_kind(&p),
                        detail: Excerpt::of(&p.to_string()),
                    };
                    // A signature that does not verify is evidence of
                    // tampering; one from a key we do not (or no longer)
                    // trust simply does not count.
                    if counts_against {
                        self.report(r);
                    } else if self.ignored.len() < MAX_SIGNATURES {
                        self.ignored.push(r);
                    }
                }
            }
        }
        self.after_content(size, Owner::Signature(key));
    }

    /// The signature entries are over: with none, or none trusted, the
    /// walk stops before any payload byte. Returns whether it goes on.
    fn signatures_done(&mut self) -> bool {
        if self.signature_count == 0 {
            self.stop(Reason::SignatureMissing);
            return false;
        }
        if self.trust.is_some() && self.signers.is_empty() {
            for r in std::mem::take(&mut self.ignored) {
                self.report(r);
            }
            self.stop(Reason::NoTrustedSignature);
            return false;
        }
        true
    }

    /// The header of manifest entry `i` (or of something else in its
    /// place).
    fn entry_header(&mut self, i: usize) {
        let at = self.block_at;
        let Some(m) = self.manifest.as_ref() else {
            return self.stop(Reason::ManifestMissing);
        };
        let raw = ustar::path_of(&self.block);
        let Some(want) = m.entry(i) else {
            // Past the last entry: only the end blocks may come.
            let r = self.unlisted(&raw, None);
            return self.stop(r);
        };
        if raw != want.path.as_bytes() {
            let r = self.unlisted(&raw, Some(i));
            return self.stop(r);
        }
        let flag = ustar::typeflag(&self.block);
        if flag != b'0' {
            return self.stop(self.type_reason(&raw, flag));
        }
        let (path, size, mode) = (want.path.to_owned(), want.size, want.mode.bits());
        match ustar::size_of(&self.block) {
            Some(actual) if actual == size => {}
            Some(actual) => {
                return self.stop(Reason::SizeMismatch {
                    path: Excerpt::of(&path),
                    expected: size,
                    actual,
                });
            }
            None => return self.stop(self.non_canonical(path.as_bytes(), "size")),
        }
        let found = self.block;
        self.check_fields(&found, &path, mode, size, at);
        self.next = Next::Entry(i + 1);
        let region = Region {
            start: at + BLOCK as u64,
            len: size,
        };
        let shared = self
            .digester
            .as_ref()
            .is_some_and(|d| d.current_content() == Some(region));
        if !shared {
            self.hasher.reset();
        }
        if size == 0 {
            self.on_content(i, region, false);
        } else {
            self.state = State::Content {
                index: i,
                left: size,
                region,
                shared,
            };
        }
    }

    /// Entry `index`'s content is all read: compare its hash.
    fn on_content(&mut self, index: usize, region: Region, shared: bool) {
        let header = region.start - BLOCK as u64;
        if self.trust.is_some() {
            let hash = if shared {
                match self.digester.as_ref().and_then(Digester::last_content) {
                    Some((r, h)) if r == region => Some(h),
                    _ => None,
                }
            } else {
                Some(self.hasher.finalize())
            };
            let Some(m) = self.manifest.as_ref() else {
                return;
            };
            let Some(want) = m.entry(index) else { return };
            let path = Excerpt::of(want.path);
            let expected = blake3::Hash::from_hex(want.blake3).ok();
            match hash {
                // Constant-time comparison (`blake3::Hash`'s `PartialEq`).
                Some(h) if Some(h) == expected => {}
                Some(_) => self.report(Reason::HashMismatch { path }),
                None => {
                    return self.stop(Reason::NonCanonical {
                        entry: path,
                        offset: header,
                        field: "content region",
                    });
                }
            }
        }
        self.after_content(region.len, Owner::Entry(index));
    }

    /// Padding follows `size` bytes of content, then the next header.
    fn after_content(&mut self, size: u64, owner: Owner) {
        if matches!(self.state, State::Stopped) {
            return;
        }
        let left = ustar::padding(size);
        self.state = if left == 0 {
            State::Header { have: 0 }
        } else {
            State::Padding {
                left,
                owner,
                reported: false,
            }
        };
    }

    /// Compares every field of a header whose path and type are right with
    /// the canonical header, reporting each field that differs.
    fn check_fields(&mut self, found: &Block, path: &str, mode: u32, size: u64, at: u64) {
        let Some(want) = ustar::header(path, mode, size, self.mtime) else {
            // Cannot happen for a path and size the manifest allows.
            return self.report(Reason::PathInvalid {
                path: Excerpt::of(path),
                problem: Excerpt::of("not encodable in a ustar header"),
            });
        };
        let fields: Vec<&'static str> = ustar::differing_fields(found, &want).collect();
        for field in fields {
            let r = match (field, ustar::mode_of(found)) {
                ("mode", Some(actual)) if actual != mode => Reason::ModeMismatch {
                    path: Excerpt::of(path),
                    expected: mode,
                    actual,
                },
                _ => Reason::NonCanonical {
                    entry: Excerpt::of(path),
                    offset: at,
                    field,
                },
            };
            self.report(r);
        }
    }

    /// Why a header with path `raw` is not the one expected here (manifest
    /// entry `expected`, or the end of the archive when `None`).
    fn unlisted(&self, raw: &[u8], expected: Option<usize>) -> Reason {
        let path = Excerpt::of_bytes(raw);
        let Some(m) = self.manifest.as_ref() else {
            return Reason::EntryExtra { path };
        };
        let flag = ustar::typeflag(&self.block);
        if flag != b'0' && flag != 0 {
            return self.type_reason(raw, flag);
        }
        if let Err(problem) = check_path(raw) {
            return Reason::PathInvalid {
                path,
                problem: Excerpt::of(&problem.to_string()),
            };
        }
        if raw == MANIFEST_PATH.as_bytes() || raw.starts_with(SIGNATURES_DIR.as_bytes()) {
            return Reason::EntryOutOfOrder {
                path,
                expected: expected.and_then(|i| m.entry(i)).map_or_else(
                    || Excerpt::of("the end of the archive"),
                    |e| Excerpt::of(e.path),
                ),
            };
        }
        let listed = m.entries().position(|e| e.path.as_bytes() == raw);
        match (listed, expected) {
            (Some(j), Some(i)) if j < i => Reason::EntryDuplicate { path },
            (Some(_), Some(i)) => Reason::EntryOutOfOrder {
                path,
                expected: m
                    .entry(i)
                    .map_or_else(|| Excerpt::of("?"), |e| Excerpt::of(e.path)),
            },
            (Some(_), None) => Reason::EntryDuplicate { path },
            (None, _) => Reason::EntryExtra { path },
        }
    }

    /// The reason for a header of type `flag` (not `'0'`).
    fn type_reason(&self, raw: &[u8], flag: u8) -> Reason {
        match flag {
            b'1'..=b'6' => Reason::NotRegularFile {
                path: Excerpt::of_bytes(raw),
                kind: ustar::kind_name(flag),
            },
            _ => Reason::NonCanonical {
                entry: Excerpt::of_bytes(raw),
                offset: self.block_at,
                field: ustar::kind_name(flag),
            },
        }
    }

    fn non_canonical(&self, raw: &[u8], field: &'static str) -> Reason {
        Reason::NonCanonical {
            entry: Excerpt::of_bytes(raw),
            offset: self.block_at,
            field,
        }
    }

    /// The verdict on everything fed.
    fn conclude(mut self) -> Result<Walked, Rejection> {
        let within = match &self.state {
            State::Ended | State::Stopped => None,
            State::Header { .. } if self.pos == 0 => {
                self.report(Reason::ManifestMissing);
                None
            }
            State::Header { .. } => Some("a header"),
            State::ManifestContent { .. } => Some("manifest.json"),
            State::SignatureContent { .. } => Some("a signature entry"),
            State::Content { .. } => Some("an entry's content"),
            State::Padding { .. } => Some("an entry's padding"),
            State::SecondEnd { .. } => Some("the end blocks"),
        };
        if let Some(within) = within {
            let offset = self.pos;
            self.report(Reason::Truncated { offset, within });
        }
        let manifest = match self.manifest {
            Some(m) if self.reasons.is_empty() => m,
            _ => {
                return Err(Rejection {
                    reasons: self.reasons,
                    omitted: self.omitted,
                });
            }
        };
        Ok(Walked {
            manifest,
            manifest_bytes: self.manifest_bytes,
            signers: self.signers,
            ignored: self.ignored,
            signature_texts: self.signature_texts,
            payload_offset: self.payload_offset,
        })
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
