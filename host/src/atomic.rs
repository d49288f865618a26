//! Files that appear whole or not at all.
//!
//! ```text
//!  create_new  tmp_dir/.NAME.<pid>-<n>-<ns>.tmp   never an existing file
//!  write, fsync
//!  rename ─────▶ dest (replacing it)      commit_replace, write_atomic
//!  hard link ──▶ dest (never replacing)   commit_new, write_new
//!  fsync the directory of dest
//! ```
//!
//! The temporary file lives on the same filesystem as `dest` (the caller
//! names the directory, often `dest`'s own), and is removed on every path
//! that does not publish it, including a drop.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Makes the entries of `dir` durable (after a create, rename or link).
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The directory `path` is in (`.` for a bare name).
pub fn dir_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// A temporary name in `tmp_dir` no other write uses, for a file or a
/// directory that becomes `dest`: `.NAME.<pid>-<counter>-<ns>.tmp`.
pub fn temp_name(tmp_dir: &Path, dest: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    tmp_dir.join(format!(
        ".{name}.{}-{}-{nanos}.tmp",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

/// A file being written under a temporary name, published by one of the
/// `commit` methods; removed if dropped unpublished.
#[derive(Debug)]
pub struct Staged {
    tmp: PathBuf,
    dest: PathBuf,
    file: Option<File>,
}

impl Staged {
    /// A new temporary file in `tmp_dir` (same filesystem as `dest`) with
    /// permission bits `mode`, for `dest`.
    pub fn create(tmp_dir: &Path, dest: &Path, mode: u32) -> io::Result<Self> {
        let tmp = temp_name(tmp_dir, dest);
        let file = OpenOptions::new()
            .write(true)
            .read(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        Ok(Self {
            tmp,
            dest: dest.to_owned(),
            file: Some(file),
        })
    }

    /// The temporary file, to write to.
    pub fn file(&self) -> io::Result<&File> {
        self.file
            .as_ref()
            .ok_or_else(|| io::Error::other("the file is published already"))
    }

    /// Where the temporary file is.
    pub fn temp_path(&self) -> &Path {
        &self.tmp
    }

    fn seal(&mut self) -> io::Result<()> {
        match self.file.take() {
            Some(f) => f.sync_all(),
            None => Err(io::Error::other("the file is published already")),
        }
    }

    /// Publishes under `dest` by a hard link, which never replaces a name:
    /// `AlreadyExists` if `dest` exists.
    pub fn commit_new(mut self) -> io::Result<()> {
        self.seal()?;
        fs::hard_link(&self.tmp, &self.dest)?;
        fs::remove_file(&self.tmp)?;
        sync_dir(&dir_of(&self.dest))
    }

    /// Publishes under `dest` by a rename, replacing what was there.
    pub fn commit_replace(mut self) -> io::Result<()> {
        self.seal()?;
        fs::rename(&self.tmp, &self.dest)?;
        sync_dir(&dir_of(&self.dest))
    }

    /// Makes the file durable and hands its temporary path over to the
    /// caller, who renames or links it (and fsyncs the directory) itself.
    pub fn keep(mut self) -> io::Result<PathBuf> {
        self.seal()?;
        Ok(std::mem::take(&mut self.tmp))
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Writes `bytes` to `dest`, replacing it: through a temporary file in
/// `tmp_dir`, fsynced, renamed, the directory fsynced.
pub fn write_atomic(tmp_dir: &Path, dest: &Path, bytes: &[u8]) -> io::Result<()> {
    let s = Staged::create(tmp_dir, dest, 0o644)?;
    s.file()?.write_all(bytes)?;
    s.commit_replace()
}

/// Writes `bytes` to a fsynced temporary file in `tmp_dir` for `dest`, for
/// the caller to rename or link into place (and fsync the directory).
pub fn prepare_atomic(tmp_dir: &Path, dest: &Path, bytes: &[u8]) -> io::Result<PathBuf> {
    let s = Staged::create(tmp_dir, dest, 0o644)?;
    s.file()?.write_all(bytes)?;
    s.keep()
}

/// Writes `bytes` to `dest` only if it does not exist (`AlreadyExists`
/// otherwise): a fsynced temporary file, hard-linked into place.
pub fn write_new(tmp_dir: &Path, dest: &Path, bytes: &[u8]) -> io::Result<()> {
    let s = Staged::create(tmp_dir, dest, 0o644)?;
    s.file()?.write_all(bytes)?;
    s.commit_new()
}

/// Writes `bytes` to `dest` (replacing it) through a temporary file and a
/// rename, without fsync: for files that only describe the moment, such
/// as a status file, which must not stall a loop on a busy disk.
pub fn write_replace(tmp_dir: &Path, dest: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = temp_name(tmp_dir, dest);
    let result = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .and_then(|mut f| f.write_all(bytes))
        .and_then(|()| fs::rename(&tmp, dest));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Renames `from` to `to`, failing if `to` exists, even as an empty
/// directory, which a plain rename would replace.
pub fn rename_new(from: &Path, to: &Path) -> io::Result<()> {
    use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
    renameat2(AT_FDCWD, from, AT_FDCWD, to, RenameFlags::RENAME_NOREPLACE).map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn write_new_never_replaces_and_leaves_no_temporary() {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("a");
        write_new(d.path(), &dest, b"one").unwrap();
        let e = write_new(d.path(), &dest, b"two").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&dest).unwrap(), b"one");
        assert_eq!(names(d.path()), ["a"]);
    }

    #[test]
    fn write_atomic_replaces_and_a_dropped_file_is_removed() {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("a");
        write_atomic(d.path(), &dest, b"one").unwrap();
        write_atomic(d.path(), &dest, b"two").unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"two");
        let s = Staged::create(d.path(), &d.path().join("b"), 0o600).unwrap();
        s.file().unwrap().write_all(b"half").unwrap();
        drop(s);
        assert_eq!(names(d.path()), ["a"]);
        // Kept: the caller owns the temporary file.
        let tmp = prepare_atomic(d.path(), &d.path().join("c"), b"c").unwrap();
        assert_eq!(fs::read(&tmp).unwrap(), b"c");
    }

    #[test]
    fn rename_new_never_replaces_even_an_empty_directory() {
        let d = tempfile::tempdir().unwrap();
        let (from, to) = (d.path().join("from"), d.path().join("to"));
        fs::create_dir(&from).unwrap();
        fs::create_dir(&to).unwrap();
        assert_eq!(
            rename_new(&from, &to).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        fs::remove_dir(&to).unwrap();
        rename_new(&from, &to).unwrap();
        assert!(to.is_dir() && !from.exists());
    }
}
