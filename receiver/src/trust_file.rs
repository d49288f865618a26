//! The trust store file: changed only through `weir-receiver trust ...`,
//! written atomically (temporary file, fsync, rename, directory fsync) so a
//! crash never leaves half a store, and re-read by the running daemon when
//! it changes ([`TrustWatch`]), so a revocation takes effect at once.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use weir_bundle::TrustStore;

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

/// The daemon's view of the trust store: re-read whenever the file's
/// modification time changes. A store that no longer parses is logged and
/// the last good one is kept.
#[derive(Debug)]
pub struct TrustWatch {
    path: PathBuf,
    current: std::sync::Mutex<(Option<std::time::SystemTime>, std::sync::Arc<TrustStore>)>,
}

impl TrustWatch {
    /// Loads the store at `path`; an error names the file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let mtime = fs::metadata(path).and_then(|m| m.modified()).ok();
        let store = load(path)?;
        Ok(Self {
            path: path.to_owned(),
            current: std::sync::Mutex::new((mtime, std::sync::Arc::new(store))),
        })
    }

    /// The store as the file says now.
    pub fn current(&self) -> std::sync::Arc<TrustStore> {
        let mtime = fs::metadata(&self.path).and_then(|m| m.modified()).ok();
        let Ok(mut cur) = self.current.lock() else {
            return std::sync::Arc::new(TrustStore::default());
        };
        if mtime != cur.0 {
            cur.0 = mtime;
            match load(&self.path) {
                Ok(store) => {
                    tracing::info!(file = %self.path.display(), keys = store.keys.len(), "trust store reloaded");
                    cur.1 = std::sync::Arc::new(store);
                }
                Err(e) => tracing::error!("{e:#}; keeping the trust store loaded before"),
            }
        }
        cur.1.clone()
    }
}
