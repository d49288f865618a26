//! Reading a bundle's blocks for the chunker.
//!
//! Positioned reads through the page cache, one per block, which the
//! chunker encodes while it is still in the core's cache. Direct I/O was
//! measured here as an alternative (the check has just put the bundle in
//! the page cache, so each buffered read is a kernel copy): it saved no
//! measurable CPU, and the disk reads it waits for cut goodput by a fifth
//! when a group is read in one request and by two fifths block by block
//! (BENCHMARKS.md).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use weir_protocol::BlockSource;

/// Reads a bundle file with positioned reads.
#[derive(Debug)]
pub struct FileSource(File);

impl FileSource {
    /// Opens the bundle at `path`.
    pub fn open(path: &Path) -> io::Result<Self> {
        File::open(path).map(Self)
    }
}

impl BlockSource for FileSource {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.0.read_exact_at(buf, offset)
    }
}
