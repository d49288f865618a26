//! The trust store file: loaded at start, changed only through
//! `weir-receiver trust ...`, written atomically (temporary file, fsync,
//! rename, directory fsync) so a crash never leaves half a store.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use weir_protocol::bundle::TrustStore;

/// Loads a trust store; a missing file is an error naming it.
pub fn load(path: &Path) -> anyhow::Result<TrustStore> {
    let text = fs::read_to_string(path)
        .with_context(|| format!("reading trust store {}", path.display()))?;
    TrustStore::from_toml(&text).with_context(|| format!("trust store {}", path.display()))
}

/// Loads a trust store, or an empty one if the file does not exist yet.
pub fn load_or_empty(path: &Path) -> anyhow::Result<TrustStore> {
    if path.exists() {
        load(path)
    } else {
        Ok(TrustStore::default())
    }
}

/// Writes the store in place, atomically.
pub fn save(path: &Path, store: &TrustStore) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{} is not a file name", path.display()))?;
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| -> anyhow::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(store.to_toml().as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
        File::open(&dir)?.sync_all()?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}
