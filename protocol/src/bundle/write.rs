//! Writing a bundle archive: the one place that lays out the tar.
//!
//! Headers are ustar with fixed owner (0:0, no names), the manifest's
//! creation time as mtime and the manifest's mode; paths longer than ustar
//! holds get a pax `path` record, which every POSIX tar reads.

use std::io::{self, Read, Write};

use super::manifest::{MAX_MANIFEST, Mode};
use super::signature::MAX_SIGNATURE;
use super::trust::KeyId;

/// Name of the manifest entry; always the first.
pub const MANIFEST_PATH: &str = "manifest.json";
/// Directory of the signature entries, which follow the manifest.
pub const SIGNATURES_DIR: &str = "signatures/";

/// The archive path of the signature made by key `id`.
pub fn signature_path(id: KeyId) -> String {
    format!("{SIGNATURES_DIR}{id}.minisig")
}

/// Writes the entries of one bundle, in order: manifest, signatures,
/// payload and SBOM files.
pub struct BundleWriter<W: Write> {
    builder: tar::Builder<W>,
    mtime: u64,
}

impl<W: Write> std::fmt::Debug for BundleWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BundleWriter")
            .field("mtime", &self.mtime)
            .finish()
    }
}

impl<W: Write> BundleWriter<W> {
    /// Starts an archive; `mtime` (seconds since the epoch) goes in every
    /// header, so the same inputs give the same bytes.
    pub fn new(out: W, mtime: u64) -> Self {
        Self {
            builder: tar::Builder::new(out),
            mtime,
        }
    }

    /// The manifest entry (its exact signed bytes).
    pub fn manifest(&mut self, bytes: &[u8]) -> io::Result<()> {
        if bytes.len() as u64 > MAX_MANIFEST {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "manifest larger than 1 MiB",
            ));
        }
        self.file(MANIFEST_PATH, Mode::Regular, bytes.len() as u64, bytes)
    }

    /// One signature entry.
    pub fn signature(&mut self, id: KeyId, text: &str) -> io::Result<()> {
        if text.len() as u64 > MAX_SIGNATURE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "signature larger than 4 KiB",
            ));
        }
        let bytes = text.as_bytes();
        self.file(
            &signature_path(id),
            Mode::Regular,
            bytes.len() as u64,
            bytes,
        )
    }

    /// One regular file of exactly `size` bytes read from `data`. Fails if
    /// `data` holds fewer or more bytes (the file changed under us).
    pub fn file(&mut self, path: &str, mode: Mode, size: u64, data: impl Read) -> io::Result<()> {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(size);
        header.set_mode(mode.bits());
        header.set_mtime(self.mtime);
        header.set_uid(0);
        header.set_gid(0);
        if header.set_path(path).is_err() {
            self.builder
                .append_pax_extensions([("path", path.as_bytes())])?;
            let short: String = path
                .chars()
                .rev()
                .take(90)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            header.set_path(short.trim_start_matches('/'))?;
        }
        header.set_cksum();
        let mut counted = CountingReader {
            inner: data,
            count: 0,
        };
        self.builder.append(&header, (&mut counted).take(size))?;
        let mut extra = [0u8; 1];
        let grew = counted.inner.read(&mut extra)? != 0;
        if counted.count != size || grew {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{path}: size changed while it was being written"),
            ));
        }
        Ok(())
    }

    /// Ends the archive and returns the writer.
    pub fn finish(self) -> io::Result<W> {
        self.builder.into_inner()
    }
}

/// Counts the bytes read through it.
pub(crate) struct CountingReader<R> {
    pub(crate) inner: R,
    pub(crate) count: u64,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}
