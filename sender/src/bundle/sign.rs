//! `weir-sender bundle sign`: add an approval signature to a bundle.
//!
//! The manifest is not touched, so every earlier signature stays valid.
//! The bundle is rewritten in its canonical layout with the new signature
//! in its sorted place; each entry's content is copied from where the
//! layout puts it and checked against the manifest on the way. The new
//! file replaces the original in one rename.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use anyhow::{Context, bail};
use weir_bundle::{BundleWriter, Manifest, inspect};

use crate::keys::{SigningKey, sign_manifest};
use weir_host::atomic::{Staged, dir_of};

/// Adds `key`'s signature to the bundle at `path`.
pub fn add_signature(path: &Path, key: &SigningKey) -> anyhow::Result<Manifest> {
    // Check the structure first, and refuse a second signature by one key.
    let mut source = File::open(path).with_context(|| format!("{}", path.display()))?;
    let info = inspect(&source)
        .with_context(|| format!("reading {}", path.display()))?
        .map_err(|r| anyhow::anyhow!("{}: {r}", path.display()))?;
    if info.signatures.iter().any(|(k, _)| *k == key.id) {
        bail!("{} is already signed by key {}", path.display(), key.id);
    }
    let mut signatures = info.signatures.clone();
    signatures.push((
        key.id,
        sign_manifest(key, &info.manifest_bytes, &info.manifest.trusted_comment())?,
    ));

    let out = Staged::create(&dir_of(path), path, 0o644)
        .with_context(|| format!("creating a file beside {}", path.display()))?;
    let mut w = BundleWriter::new(out.file()?, &info.manifest_bytes, &signatures)?;
    for (entry, offset) in info.contents() {
        source.seek(SeekFrom::Start(offset))?;
        w.entry((&mut source).take(entry.size))
            .with_context(|| format!("copying {}", entry.path))?;
    }
    w.finish()?;
    out.commit_replace()
        .with_context(|| format!("replacing {}", path.display()))?;
    Ok(info.manifest)
}
