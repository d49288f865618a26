//! `weir-receiver extract`: a verified bundle's files, under a new
//! directory that appears whole or not at all.
//!
//! ```text
//!  open BUNDLE once ─▶ verify (signatures, every hash, canonical form)
//!        │ rejected: nothing is written
//!        ▼
//!  DIR/../.DIR.<pid>-<n>-<ns>.tmp/  each file copied from where the layout
//!        │                          puts it (same open file), hashed again,
//!        │                          created with create_new and the
//!        │                          manifest's mode, fsynced
//!        ▼
//!  rename(temporary, DIR)           never over an existing DIR
//! ```
//!
//! Paths, modes and sizes come from the verified manifest only; owner,
//! times and anything else in the archive are never used. If the file
//! changes after verification, its hash no longer matches while it is
//! copied and the extraction is abandoned.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, bail};
use weir_bundle::{BundleInfo, Rejection, TrustStore, Verified, path::check_str};

use weir_host::atomic::{rename_new, sync_dir, temp_name};

/// Copy size.
const CHUNK: usize = 1 << 20;

/// What an extraction wrote.
#[derive(Debug)]
pub struct Extracted {
    /// The verified bundle.
    pub bundle: Verified<BundleInfo>,
    /// Its transfer digest.
    pub digest: blake3::Hash,
    /// Files written.
    pub files: usize,
    /// Bytes written.
    pub bytes: u64,
}

/// Verifies the bundle at `archive` against `trust`, then writes its
/// artifacts and SBOMs under `target`, which must not exist. `Ok(Err(_))`
/// is a rejected bundle, for which nothing was written.
pub fn extract(
    trust: &TrustStore,
    archive: &Path,
    target: &Path,
) -> anyhow::Result<Result<Extracted, Rejection>> {
    if fs::symlink_metadata(target).is_ok() {
        bail!(
            "{} exists; extraction writes a new directory",
            target.display()
        );
    }
    let file = File::open(archive).with_context(|| format!("opening {}", archive.display()))?;
    let found = weir_bundle::verify(&file, trust, SystemTime::now())
        .with_context(|| format!("reading {}", archive.display()))?;
    let bundle = match found.verdict {
        Ok(v) => v,
        Err(r) => return Ok(Err(r)),
    };
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let temp = temp_name(&parent, target);
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&temp)
        .with_context(|| format!("creating {}", temp.display()))?;
    let written = write_all(&bundle, &file, &temp).and_then(|(files, bytes)| {
        fs::set_permissions(&temp, fs::Permissions::from_mode(0o755))?;
        sync_dir(&temp)?;
        rename_new(&temp, target).with_context(|| {
            format!(
                "renaming the extraction to {} (it must not exist)",
                target.display()
            )
        })?;
        sync_dir(&parent)?;
        Ok((files, bytes))
    });
    match written {
        Ok((files, bytes)) => Ok(Ok(Extracted {
            bundle,
            digest: found.digest,
            files,
            bytes,
        })),
        Err(e) => {
            let _ = fs::remove_dir_all(&temp);
            Err(e)
        }
    }
}

/// Writes every entry under `root`; returns the files and bytes written.
fn write_all(
    bundle: &Verified<BundleInfo>,
    archive: &File,
    root: &Path,
) -> anyhow::Result<(usize, u64)> {
    let mut buf = vec![0u8; CHUNK];
    let mut files = 0;
    let mut bytes = 0;
    let mut dirs = vec![root.to_owned()];
    for (entry, offset) in bundle.contents() {
        // Verified already; checked again because this path is about to
        // become a file name.
        check_str(entry.path).map_err(|p| anyhow::anyhow!("{}: {p}", entry.path))?;
        let dest = root.join(entry.path);
        if let Some(parent) = dest.parent()
            && !parent.exists()
        {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
            dirs.push(parent.to_owned());
        }
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&dest)
            .with_context(|| format!("creating {}", dest.display()))?;
        // The manifest's mode exactly, whatever the umask.
        out.set_permissions(fs::Permissions::from_mode(entry.mode.bits()))?;
        let mut hasher = blake3::Hasher::new();
        let mut reader = At {
            file: archive,
            pos: offset,
        }
        .take(entry.size);
        let mut copied = 0u64;
        loop {
            let n = reader.read(&mut buf)?;
            let Some(chunk) = buf.get(..n).filter(|c| !c.is_empty()) else {
                break;
            };
            hasher.update(chunk);
            out.write_all(chunk)?;
            copied += n as u64;
        }
        if copied != entry.size || hasher.finalize().to_hex().as_str() != entry.blake3 {
            bail!(
                "{} changed since it was verified; extraction abandoned",
                entry.path
            );
        }
        out.sync_all()?;
        files += 1;
        bytes += copied;
    }
    for d in dirs {
        sync_dir(&d)?;
    }
    Ok((files, bytes))
}

/// Reads a file from an offset without moving its position.
struct At<'a> {
    file: &'a File,
    pos: u64,
}

impl Read for At<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}
