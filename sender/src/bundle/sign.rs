//! `weir-sender bundle sign`: add an approval signature to a bundle.
//!
//! The manifest is not touched, so every earlier signature stays valid. The
//! archive is rewritten entry by entry (streaming) with the new signature
//! after the existing ones, then renamed over the original in one step.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use anyhow::{Context, bail};
use weir_protocol::bundle::{BundleWriter, MANIFEST_PATH, Manifest, Mode, SIGNATURES_DIR, inspect};

use super::output::AtomicOutput;
use crate::keys::{SigningKey, sign_manifest};

/// Adds `key`'s signature to the bundle at `path`.
pub fn add_signature(path: &Path, key: &SigningKey) -> anyhow::Result<Manifest> {
    // Check the structure first, and refuse a second signature by one key.
    let info = inspect(BufReader::new(File::open(path)?))
        .map_err(|r| anyhow::anyhow!("{}: {r}", path.display()))?;
    if info
        .signatures
        .iter()
        .any(|s| s.eq_ignore_ascii_case(&key.id.to_string()))
    {
        bail!("{} is already signed by key {}", path.display(), key.id);
    }

    let mut archive = tar::Archive::new(BufReader::with_capacity(1 << 20, File::open(path)?));
    let out = AtomicOutput::create(path)?;
    let mut writer: Option<BundleWriter<&File>> = None;
    let mut signed = false;
    for entry in archive.entries()? {
        let mut entry = entry?;
        let entry_path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let size = entry.size();
        let mode = match entry.header().mode()? & 0o7777 {
            0o644 => Mode::Regular,
            0o755 => Mode::Executable,
            m => bail!("{entry_path} has mode {m:o}; not a weir bundle"),
        };
        let w = match writer.as_mut() {
            Some(w) => w,
            None => {
                let mtime = entry.header().mtime().unwrap_or(0);
                writer.insert(BundleWriter::new(out.file()?, mtime))
            }
        };
        if entry_path != MANIFEST_PATH && !entry_path.starts_with(SIGNATURES_DIR) && !signed {
            let manifest_sig =
                sign_manifest(key, &info.manifest_bytes, &info.manifest.trusted_comment())?;
            w.signature(key.id, &manifest_sig)?;
            signed = true;
        }
        w.file(&entry_path, mode, size, &mut entry)
            .with_context(|| format!("copying {entry_path}"))?;
    }
    let w = writer.context("empty archive")?;
    if !signed {
        bail!("{} has no payload", path.display());
    }
    w.finish()?;
    out.publish_replace()?;
    Ok(info.manifest)
}
