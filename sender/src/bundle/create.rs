//! `weir-sender bundle create`: artifacts in, one signed bundle out.
//!
//! Two passes over the inputs: the first hashes every file for the
//! manifest (which comes first in the archive), the second copies them into
//! the archive, where the writer fails if any file changed in between. The archive is
//! written under a temporary name beside the output and linked into place
//! only when complete, so a bundle is never half-written and an existing
//! file is never replaced.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, bail};
use weir_bundle::{
    Artifact, BundleWriter, FORMAT, Manifest, Mode, Sbom, SbomFormat, path::check_str,
};

use crate::keys::{SigningKey, sign_manifest};
use weir_host::atomic::{Staged, dir_of};

/// What to put in a bundle.
#[derive(Debug, Clone)]
pub struct CreateRequest {
    /// Bundle name.
    pub name: String,
    /// Bundle version.
    pub version: String,
    /// key=value labels.
    pub labels: BTreeMap<String, String>,
    /// Files or directories (taken recursively).
    pub artifacts: Vec<PathBuf>,
    /// SBOM files.
    pub sboms: Vec<PathBuf>,
    /// Where the bundle goes; must not exist.
    pub out: PathBuf,
}

/// A file to be archived at `path` in the bundle.
#[derive(Debug)]
struct Input {
    archive_path: String,
    source: PathBuf,
}

/// Parses `k=v`.
pub fn parse_label(s: &str) -> anyhow::Result<(String, String)> {
    let (k, v) = s
        .split_once('=')
        .with_context(|| format!("label {s:?} is not key=value"))?;
    Ok((k.to_owned(), v.to_owned()))
}

fn file_name(p: &Path) -> anyhow::Result<String> {
    let name = p
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{} has no UTF-8 file name", p.display()))?;
    Ok(name.to_owned())
}

/// Adds one artifact argument: a regular file, or a directory walked in
/// sorted order. Symlinks and special files are refused.
fn collect(arg: &Path, base: &str, out: &mut Vec<Input>) -> anyhow::Result<()> {
    let meta = fs::symlink_metadata(arg).with_context(|| format!("{}", arg.display()))?;
    let ft = meta.file_type();
    if ft.is_symlink() {
        bail!(
            "{} is a symlink; bundles carry regular files only",
            arg.display()
        );
    }
    if ft.is_file() {
        check_str(base)
            .map_err(|p| anyhow::anyhow!("{}: bundle path {base:?} is {p}", arg.display()))?;
        out.push(Input {
            archive_path: base.to_owned(),
            source: arg.to_owned(),
        });
        return Ok(());
    }
    if !ft.is_dir() {
        bail!("{} is not a regular file or directory", arg.display());
    }
    let mut children: Vec<_> = fs::read_dir(arg)
        .with_context(|| format!("{}", arg.display()))?
        .collect::<Result<_, _>>()?;
    children.sort_by_key(|e| e.file_name());
    for child in children {
        let name = child
            .file_name()
            .into_string()
            .map_err(|n| anyhow::anyhow!("{}: name {n:?} is not UTF-8", arg.display()))?;
        collect(&child.path(), &format!("{base}/{name}"), out)?;
    }
    Ok(())
}

fn hash_file(path: &Path) -> anyhow::Result<(u64, String, u32)> {
    let f = File::open(path).with_context(|| format!("{}", path.display()))?;
    let meta = f.metadata()?;
    let mut h = blake3::Hasher::new();
    h.update_reader(BufReader::with_capacity(1 << 20, &f))
        .with_context(|| format!("reading {}", path.display()))?;
    Ok((
        meta.len(),
        h.finalize().to_hex().to_string(),
        meta.permissions().mode(),
    ))
}

/// Builds, signs and writes a bundle; returns its manifest.
pub fn create(req: &CreateRequest, key: &SigningKey, now: SystemTime) -> anyhow::Result<Manifest> {
    if req.artifacts.is_empty() {
        bail!("no artifacts given");
    }
    let mut payload = Vec::new();
    for a in &req.artifacts {
        collect(a, &format!("payload/{}", file_name(a)?), &mut payload)?;
    }
    let mut sbom_inputs = Vec::new();
    for s in &req.sboms {
        collect(s, &format!("sbom/{}", file_name(s)?), &mut sbom_inputs)?;
    }

    let mut artifacts = Vec::with_capacity(payload.len());
    for i in &payload {
        let (size, blake3, bits) = hash_file(&i.source)?;
        artifacts.push(Artifact {
            path: i.archive_path.clone(),
            size,
            blake3,
            mode: Mode::from_bits(bits),
        });
    }
    let mut sboms = Vec::with_capacity(sbom_inputs.len());
    for i in &sbom_inputs {
        let mut head = vec![0u8; 64 << 10];
        let n = File::open(&i.source)?.read(&mut head)?;
        let format = SbomFormat::sniff(head.get(..n).unwrap_or_default()).with_context(|| {
            format!(
                "{} is neither a CycloneDX nor an SPDX document",
                i.source.display()
            )
        })?;
        let (size, blake3, _) = hash_file(&i.source)?;
        sboms.push(Sbom {
            path: i.archive_path.clone(),
            size,
            blake3,
            format,
        });
    }
    let created = humantime::format_rfc3339_seconds(now).to_string();
    let manifest = Manifest {
        format: FORMAT.into(),
        name: req.name.clone(),
        version: req.version.clone(),
        created,
        labels: req.labels.clone(),
        artifacts,
        sboms,
    };
    manifest.check().context("the bundle would not be valid")?;
    let manifest_bytes = manifest.to_bytes();
    let signature = sign_manifest(key, &manifest_bytes, &manifest.trusted_comment())?;

    let out = Staged::create(&dir_of(&req.out), &req.out, 0o644)
        .with_context(|| format!("creating a file beside {}", req.out.display()))?;
    let mut w = BundleWriter::new(out.file()?, &manifest_bytes, &[(key.id, signature)])?;
    // Artifacts then SBOMs: the manifest's order, which the writer follows.
    for input in payload.iter().chain(&sbom_inputs) {
        let f = File::open(&input.source).with_context(|| format!("{}", input.source.display()))?;
        w.entry(BufReader::with_capacity(1 << 20, f))
            .with_context(|| format!("{}", input.source.display()))?;
    }
    w.finish()?;
    out.commit_new().map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            anyhow::anyhow!(
                "{} already exists; refusing to overwrite it",
                req.out.display()
            )
        } else {
            anyhow::Error::new(e).context(format!("publishing {}", req.out.display()))
        }
    })?;
    Ok(manifest)
}
