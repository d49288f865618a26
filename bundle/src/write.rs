//! Writing a bundle: the one place that lays out the archive.
//!
//! [`BundleWriter`] writes exactly the canonical layout that
//! [`verify`](mod@crate::verify) accepts, and nothing it would refuse:
//!
//! ```text
//!  manifest.json                    header, the signed bytes, zero padding
//!  signatures/<KEY-ID>.minisig      sorted by key id, each in the one form
//!  …                                [`check_form`] allows
//!  payload/…, sbom/…                in manifest order, each content checked
//!                                   against its size and BLAKE3 as written
//!  1024 zero bytes                  and nothing after them
//! ```
//!
//! Every header comes from [`ustar::header`] with the manifest's mode,
//! size and `created` time, so the same manifest, signatures and contents
//! always give the same bytes.

use std::io::{self, Read, Write};

use crate::manifest::{EntryRef, MAX_MANIFEST, Manifest, ManifestError, Mode};
use crate::signature::{MAX_SIGNATURE, MAX_SIGNATURES, check_form, check_vouches};
use crate::trust::KeyId;
use crate::ustar::{self, BLOCK};

/// Name of the manifest entry; always the first.
pub const MANIFEST_PATH: &str = "manifest.json";
/// Directory of the signature entries, which follow the manifest.
pub const SIGNATURES_DIR: &str = "signatures/";
/// What a signature entry's name ends with.
pub const SIGNATURE_SUFFIX: &str = ".minisig";
/// Copy size while writing content.
const CHUNK: usize = 1 << 20;

/// The archive path of the signature made by key `id`.
pub fn signature_path(id: KeyId) -> String {
    format!("{SIGNATURES_DIR}{id}{SIGNATURE_SUFFIX}")
}

/// Why a bundle cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Writing or reading failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The manifest is not valid.
    #[error("the manifest is not valid: {0}")]
    Manifest(#[from] ManifestError),
    /// The manifest is larger than [`MAX_MANIFEST`].
    #[error("the manifest is larger than 1 MiB")]
    ManifestTooLarge,
    /// A signature that a verifier would refuse.
    #[error("signature by key {key}: {problem}")]
    Signature {
        /// Whose.
        key: KeyId,
        /// What is wrong with it.
        problem: String,
    },
    /// Two signatures by one key.
    #[error("two signatures by key {0}")]
    DuplicateSignature(KeyId),
    /// An entry's content is not what the manifest lists.
    #[error("{path}: {problem} (did the file change while the bundle was written?)")]
    Changed {
        /// The entry.
        path: String,
        /// What differs.
        problem: &'static str,
    },
    /// Content given after the last entry, or `finish` before it.
    #[error("{0}")]
    Order(String),
}

/// Writes one bundle in its canonical layout.
pub struct BundleWriter<W: Write> {
    out: W,
    manifest: Manifest,
    /// Every header's mtime: the manifest's `created`.
    mtime: u64,
    /// The manifest entry to write next.
    next: usize,
    buf: Vec<u8>,
}

impl<W: Write> std::fmt::Debug for BundleWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BundleWriter")
            .field("mtime", &self.mtime)
            .field("next", &self.next)
            .finish()
    }
}

impl<W: Write> BundleWriter<W> {
    /// Writes the manifest (its exact signed bytes) and the signatures,
    /// sorted by key id. Each signature must be in the one form a bundle
    /// allows, be made by the key it is given with, and carry the
    /// manifest's trusted comment.
    pub fn new(
        mut out: W,
        manifest_bytes: &[u8],
        signatures: &[(KeyId, String)],
    ) -> Result<Self, WriteError> {
        if manifest_bytes.len() as u64 > MAX_MANIFEST {
            return Err(WriteError::ManifestTooLarge);
        }
        let manifest = Manifest::from_bytes(manifest_bytes)?;
        if signatures.is_empty() || signatures.len() > MAX_SIGNATURES {
            return Err(WriteError::Order(format!(
                "a bundle carries 1 to {MAX_SIGNATURES} signatures, not {}",
                signatures.len()
            )));
        }
        let mtime = manifest.created_secs().unwrap_or(0);
        let mut sorted: Vec<&(KeyId, String)> = signatures.iter().collect();
        sorted.sort_by_key(|(k, _)| u64::from_le_bytes(k.0));
        for pair in sorted.windows(2) {
            if let [a, b] = pair
                && a.0 == b.0
            {
                return Err(WriteError::DuplicateSignature(a.0));
            }
        }
        for (key, text) in &sorted {
            check_signature_text(*key, text, &manifest)?;
        }
        write_file(
            &mut out,
            MANIFEST_PATH,
            Mode::Regular,
            manifest_bytes,
            mtime,
        )?;
        for (key, text) in sorted {
            write_file(
                &mut out,
                &signature_path(*key),
                Mode::Regular,
                text.as_bytes(),
                mtime,
            )?;
        }
        Ok(Self {
            out,
            manifest,
            mtime,
            next: 0,
            buf: Vec::new(),
        })
    }

    /// The entry [`BundleWriter::entry`] writes next, if any is left.
    pub fn next_entry(&self) -> Option<EntryRef<'_>> {
        self.manifest.entry(self.next)
    }

    /// Writes the next entry with its content read from `data`, which must
    /// hold exactly the listed size and hash to the listed BLAKE3.
    pub fn entry(&mut self, mut data: impl Read) -> Result<(), WriteError> {
        let Some(e) = self.manifest.entry(self.next) else {
            return Err(WriteError::Order("every entry is written already".into()));
        };
        let (path, size, mode) = (e.path.to_owned(), e.size, e.mode);
        let want = blake3::Hash::from_hex(e.blake3).map_err(|_| WriteError::Changed {
            path: path.clone(),
            problem: "its listed BLAKE3 is not hex",
        })?;
        let header = ustar::header(&path, mode.bits(), size, self.mtime).ok_or_else(|| {
            WriteError::Changed {
                path: path.clone(),
                problem: "not encodable in a ustar header",
            }
        })?;
        self.out.write_all(&header)?;
        if self.buf.is_empty() {
            self.buf = vec![0; CHUNK];
        }
        let mut hasher = blake3::Hasher::new();
        let mut left = size;
        while left > 0 {
            let n = usize::try_from(left)
                .unwrap_or(usize::MAX)
                .min(self.buf.len());
            let chunk = self.buf.get_mut(..n).unwrap_or_default();
            match data.read(chunk) {
                Ok(0) => {
                    return Err(WriteError::Changed {
                        path,
                        problem: "shorter than its listed size",
                    });
                }
                Ok(k) => {
                    let got = chunk.get(..k).unwrap_or_default();
                    hasher.update(got);
                    self.out.write_all(got)?;
                    left -= k as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        let mut extra = [0u8; 1];
        if read_retrying(&mut data, &mut extra)? != 0 {
            return Err(WriteError::Changed {
                path,
                problem: "longer than its listed size",
            });
        }
        if hasher.finalize() != want {
            return Err(WriteError::Changed {
                path,
                problem: "does not match its listed BLAKE3",
            });
        }
        pad(&mut self.out, size)?;
        self.next += 1;
        Ok(())
    }

    /// Ends the archive (two zero blocks) and returns the writer.
    pub fn finish(mut self) -> Result<W, WriteError> {
        if let Some(e) = self.manifest.entry(self.next) {
            return Err(WriteError::Order(format!("{} is not written yet", e.path)));
        }
        self.out.write_all(&[0u8; 2 * BLOCK])?;
        self.out.flush()?;
        Ok(self.out)
    }
}

fn read_retrying(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match r.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

/// Refuses a signature text a verifier would refuse for its form.
fn check_signature_text(key: KeyId, text: &str, manifest: &Manifest) -> Result<(), WriteError> {
    let problem = |p: String| WriteError::Signature { key, problem: p };
    if text.len() as u64 > MAX_SIGNATURE {
        return Err(problem("larger than 4 KiB".into()));
    }
    check_form(text).map_err(|part| problem(format!("not in canonical form: {part}")))?;
    check_vouches(text, key, manifest).map_err(|p| problem(p.to_string()))?;
    Ok(())
}

/// One small entry written whole: header, bytes, padding.
fn write_file(
    out: &mut impl Write,
    path: &str,
    mode: Mode,
    bytes: &[u8],
    mtime: u64,
) -> Result<(), WriteError> {
    let header = ustar::header(path, mode.bits(), bytes.len() as u64, mtime)
        .ok_or_else(|| WriteError::Order(format!("{path}: not encodable in a ustar header")))?;
    out.write_all(&header)?;
    out.write_all(bytes)?;
    pad(out, bytes.len() as u64)?;
    Ok(())
}

fn pad(out: &mut impl Write, size: u64) -> io::Result<()> {
    let zeros = [0u8; BLOCK];
    out.write_all(
        zeros
            .get(..ustar::padding(size) as usize)
            .unwrap_or_default(),
    )
}
