//! Writing a file so that it appears whole or not at all.
//!
//! The content goes to a temporary file beside the target (same file
//! system), is fsynced, and then either hard-linked to a name that must not
//! exist yet ([`AtomicOutput::publish_new`]) or renamed over the target
//! ([`AtomicOutput::publish_replace`]); the directory is fsynced after. If
//! anything fails before that, the temporary file is removed.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// A file being written under a temporary name.
#[derive(Debug)]
pub struct AtomicOutput {
    tmp: PathBuf,
    target: PathBuf,
    file: Option<File>,
}

fn dir_of(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    }
}

impl AtomicOutput {
    /// Starts writing what will become `target`.
    pub fn create(target: &Path) -> anyhow::Result<Self> {
        let name = target
            .file_name()
            .and_then(|n| n.to_str())
            .with_context(|| format!("{} is not a file name", target.display()))?;
        let tmp = dir_of(target).join(format!(".{name}.{}.tmp", std::process::id()));
        let file = OpenOptions::new()
            .write(true)
            .read(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        Ok(Self {
            tmp,
            target: target.to_owned(),
            file: Some(file),
        })
    }

    /// The temporary file, to write into.
    pub fn file(&self) -> anyhow::Result<&File> {
        self.file.as_ref().context("output already published")
    }

    fn seal(&mut self) -> anyhow::Result<()> {
        let f = self.file.take().context("output already published")?;
        f.sync_all()
            .with_context(|| format!("syncing {}", self.tmp.display()))?;
        Ok(())
    }

    fn sync_dir(&self) -> anyhow::Result<()> {
        let dir = dir_of(&self.target);
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("syncing {}", dir.display()))
    }

    /// Publishes under the target name, which must not exist.
    pub fn publish_new(mut self) -> anyhow::Result<()> {
        self.seal()?;
        if let Err(e) = fs::hard_link(&self.tmp, &self.target) {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                bail!(
                    "{} already exists; refusing to overwrite it",
                    self.target.display()
                );
            }
            return Err(e).with_context(|| format!("publishing {}", self.target.display()));
        }
        fs::remove_file(&self.tmp).with_context(|| format!("removing {}", self.tmp.display()))?;
        self.sync_dir()
    }

    /// Publishes over the target, replacing it in one step.
    pub fn publish_replace(mut self) -> anyhow::Result<()> {
        self.seal()?;
        fs::rename(&self.tmp, &self.target)
            .with_context(|| format!("replacing {}", self.target.display()))?;
        self.sync_dir()
    }
}

impl Drop for AtomicOutput {
    fn drop(&mut self) {
        // Unpublished (error or early return): leave nothing behind. After a
        // publish the temporary name is gone and this fails harmlessly.
        let _ = fs::remove_file(&self.tmp);
    }
}
