//! Extracting a verified bundle's files (for promotion).
//!
//! Only a [`Verified`] bundle can be extracted. Everything is written under
//! one new directory that must not exist yet: paths come from the verified
//! manifest (relative, no `..`, checked), files are created with
//! `create_new` and the manifest's mode (0644 or 0755), and owner, mode and
//! path in the archive are never used. The archive is read again, so each
//! file is hashed again while written: if the bundle changed since it was
//! verified, extraction fails and removes what it wrote.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use anyhow::{Context, bail};
use weir_protocol::bundle::{BundleInfo, Verified, path::check_str};

/// Extracts every artifact and SBOM of `bundle` (read from `archive`) into
/// `target`, which is created and must not exist. Returns the files written.
pub fn extract(
    bundle: &Verified<BundleInfo>,
    archive: &Path,
    target: &Path,
) -> anyhow::Result<usize> {
    fs::DirBuilder::new()
        .mode(0o755)
        .create(target)
        .with_context(|| format!("creating {} (it must not exist)", target.display()))?;
    let result = extract_into(bundle, archive, target);
    if result.is_err() {
        let _ = fs::remove_dir_all(target);
    }
    result
}

fn extract_into(
    bundle: &Verified<BundleInfo>,
    archive: &Path,
    target: &Path,
) -> anyhow::Result<usize> {
    let listed: HashMap<&str, _> = bundle.manifest.entries().map(|e| (e.path, e)).collect();
    let f = File::open(archive).with_context(|| format!("{}", archive.display()))?;
    let mut tar = tar::Archive::new(BufReader::with_capacity(1 << 20, f));
    let mut written = 0;
    let mut buf = vec![0u8; 256 << 10];
    for entry in tar.entries()? {
        let mut entry = entry?;
        let raw = entry.path_bytes().into_owned();
        let Some(want) = std::str::from_utf8(&raw).ok().and_then(|p| listed.get(p)) else {
            // Manifest, signatures, directory entries: not extracted.
            continue;
        };
        // Verified already; checked again because this path is about to
        // become a file name.
        check_str(want.path).map_err(|p| anyhow::anyhow!("{}: {p}", want.path))?;
        let dest = target.join(want.path);
        if let Some(parent) = dest.parent() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(want.mode.bits())
            .open(&dest)
            .with_context(|| format!("creating {}", dest.display()))?;
        let mut hasher = blake3::Hasher::new();
        let mut size = 0u64;
        loop {
            let n = entry.read(&mut buf)?;
            if n == 0 {
                break;
            }
            let chunk = buf.get(..n).unwrap_or_default();
            hasher.update(chunk);
            out.write_all(chunk)?;
            size += n as u64;
        }
        if size != want.size || hasher.finalize().to_hex().as_str() != want.blake3 {
            bail!(
                "{} changed since it was verified; extraction abandoned",
                want.path
            );
        }
        out.sync_all()?;
        written += 1;
    }
    if written != listed.len() {
        bail!(
            "the archive changed since it was verified: {written} of {} files found",
            listed.len()
        );
    }
    Ok(written)
}
