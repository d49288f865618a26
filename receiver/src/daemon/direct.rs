//! Direct I/O for whole blocks: on this kind of machine, putting a
//! gigabyte into the page cache costs more CPU than the whole transfer
//! protocol, while a direct write costs a tenth of it. Blocks of 256 shards
//! are multiples of 4096 bytes (the sender rounds shards to 16 bytes), so
//! whole blocks can go straight to disk; everything else (spilled shards,
//! the file's last block when it cannot be padded, filesystems without
//! `O_DIRECT`) goes through the page cache as usual.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

/// Alignment of offsets, lengths and buffers for direct I/O.
pub const ALIGN: u64 = 4096;

/// Rounds `n` up to a multiple of [`ALIGN`].
pub fn round_up(n: u64) -> u64 {
    n.div_ceil(ALIGN) * ALIGN
}

/// Opens `path` for direct writes, or `None` where the filesystem does
/// not support them.
pub fn open(path: &Path) -> Option<File> {
    OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .ok()
}

/// A reusable buffer whose usable part starts on an [`ALIGN`] boundary
/// (found inside an over-allocated `Vec`, without unsafe code).
#[derive(Debug, Default)]
pub struct Bounce {
    buf: Vec<u8>,
}

impl Bounce {
    /// Writes `data` at `offset` through `file` (opened for direct I/O),
    /// padded with zeros to a multiple of [`ALIGN`]. `offset` must be
    /// aligned; the caller makes sure the padding lies beyond the data's
    /// end of file or is rewritten later.
    pub fn write_at(&mut self, file: &File, data: &[u8], offset: u64) -> io::Result<()> {
        if !offset.is_multiple_of(ALIGN) {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        // The reassembler's block buffers are aligned: whole blocks go
        // straight from them, without a copy.
        if data.as_ptr().align_offset(ALIGN as usize) == 0
            && (data.len() as u64).is_multiple_of(ALIGN)
        {
            return file.write_all_at(data, offset);
        }
        let len = round_up(data.len() as u64) as usize;
        let need = len + ALIGN as usize;
        if self.buf.len() < need {
            self.buf = vec![0; need];
        }
        let skew = self.buf.as_ptr().align_offset(ALIGN as usize);
        let aligned = self
            .buf
            .get_mut(skew..skew + len)
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        let (head, tail) = aligned.split_at_mut(data.len());
        head.copy_from_slice(data);
        tail.fill(0);
        file.write_all_at(aligned, offset)
    }
}

/// Writes every byte of `bufs` at `offset` through `file` (opened for
/// direct I/O; each buffer aligned and of an aligned length), in as few
/// requests as the kernel allows.
pub fn write_all_vectored_at(
    file: &File,
    mut bufs: &mut [io::IoSlice<'_>],
    offset: u64,
) -> io::Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    // The direct handle is only ever used here and for positioned writes,
    // so its own file offset is free to use.
    let mut f = file;
    f.seek(SeekFrom::Start(offset))?;
    while !bufs.is_empty() {
        match f.write_vectored(bufs) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => io::IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new file in a temporary directory, opened for buffered reads and
    /// for direct writes. A filesystem without `O_DIRECT` fails the test:
    /// passing there would test nothing.
    fn direct_file() -> (tempfile::TempDir, File, File) {
        // /var/tmp: tmpfs (/tmp on some machines) may not support O_DIRECT.
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let path = dir.path().join("f");
        let f = OpenOptions::new()
            .create_new(true)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let d = open(&path).unwrap_or_else(|| {
            panic!(
                "{} cannot be opened with O_DIRECT: run the tests with /var/tmp on a disk \
                 filesystem (ext4, xfs)",
                path.display()
            )
        });
        (dir, f, d)
    }

    #[test]
    fn aligned_writes_land_where_buffered_reads_see_them() {
        let (_dir, f, d) = direct_file();
        f.set_len(3 * ALIGN).unwrap();
        let mut b = Bounce::default();
        let data: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        b.write_at(&d, &data, ALIGN).unwrap();
        let mut back = vec![0u8; 5000];
        f.read_exact_at(&mut back, ALIGN).unwrap();
        assert_eq!(back, data);
        // Misaligned offsets are refused, not written.
        assert!(b.write_at(&d, &data, 100).is_err());
    }

    #[test]
    fn runs_of_aligned_buffers_land_in_one_write_where_reads_see_them() {
        let (_dir, f, d) = direct_file();
        // Three aligned buffers of 2, 1 and 3 pages, each its own pattern,
        // carved from one aligned allocation.
        let page = ALIGN as usize;
        let mut store = vec![0u8; 7 * page];
        let at = store.as_ptr().align_offset(page);
        let mut ranges = Vec::new();
        let mut pos = at;
        for (i, pages) in [2usize, 1, 3].into_iter().enumerate() {
            store[pos..pos + pages * page].fill(i as u8 + 1);
            ranges.push(pos..pos + pages * page);
            pos += pages * page;
        }
        let want = store[at..pos].to_vec();
        let mut slices: Vec<io::IoSlice<'_>> = ranges
            .iter()
            .map(|r| io::IoSlice::new(&store[r.clone()]))
            .collect();
        write_all_vectored_at(&d, &mut slices, 2 * ALIGN).unwrap();
        let mut back = vec![0u8; 6 * ALIGN as usize];
        f.read_exact_at(&mut back, 2 * ALIGN).unwrap();
        assert_eq!(back, want);
        assert_eq!(f.metadata().unwrap().len(), 8 * ALIGN);
    }
}
