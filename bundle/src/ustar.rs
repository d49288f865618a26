//! The one ustar header each bundle entry may have.
//!
//! Every field follows from the entry's path, mode and size in the
//! manifest and from the manifest's `created` time, so [`header`] gives
//! the only header an entry can have, and a reader compares byte for byte:
//!
//! ```text
//!  offset size field     canonical value
//!       0  100 name      the path (or its part after the split), NUL-padded
//!     100    8 mode      "0000644\0" or "0000755\0"
//!     108    8 uid       "0000000\0"
//!     116    8 gid       "0000000\0"
//!     124   12 size      11 octal digits, NUL
//!     136   12 mtime     11 octal digits of `created` (seconds), NUL
//!     148    8 chksum    7 octal digits, NUL: the sum of all 512 bytes
//!                        with this field counted as 8 spaces
//!     156    1 typeflag  '0' (a regular file)
//!     157  100 linkname  all NUL
//!     257    6 magic     "ustar\0"
//!     263    2 version   "00"
//!     265   32 uname     all NUL
//!     297   32 gname     all NUL
//!     329    8 devmajor  "0000000\0"
//!     337    8 devminor  "0000000\0"
//!     345  155 prefix    the path before the split, NUL-padded, or all NUL
//!     500   12 (pad)     all NUL
//! ```
//!
//! A path of at most 100 bytes goes in `name` alone. A longer one is split
//! at the last `/` that leaves at most 155 bytes before it (`prefix`); what
//! follows it must then fit in `name`. That is the one rule POSIX gives,
//! and a path no split fits is not a bundle path: there are no PAX or GNU
//! records. A file's content follows its header, padded with zeros to the
//! next 512-byte boundary; two zero blocks end the archive.

use std::ops::Range;

use weir_protocol::digest::octal as octal_field;

/// Bytes of a header block.
pub const BLOCK: usize = 512;
/// A header block.
pub type Block = [u8; BLOCK];
/// Largest value of an 11-digit octal field (`size`, `mtime`): 8 GiB − 1.
pub const MAX_OCTAL_11: u64 = 0o777_7777_7777;
/// Longest `name` field.
pub const NAME_LEN: usize = 100;
/// Longest `prefix` field.
pub const PREFIX_LEN: usize = 155;
/// Longest path a header holds: prefix, `/`, name.
pub const MAX_PATH: usize = PREFIX_LEN + 1 + NAME_LEN;

/// Every field of a header, by name and place, in order.
pub const FIELDS: [(&str, Range<usize>); 17] = [
    ("name", 0..100),
    ("mode", 100..108),
    ("uid", 108..116),
    ("gid", 116..124),
    ("size", 124..136),
    ("mtime", 136..148),
    ("chksum", 148..156),
    ("typeflag", 156..157),
    ("linkname", 157..257),
    ("magic", 257..263),
    ("version", 263..265),
    ("uname", 265..297),
    ("gname", 297..329),
    ("devmajor", 329..337),
    ("devminor", 337..345),
    ("prefix", 345..500),
    ("pad", 500..512),
];

const NAME: Range<usize> = 0..100;
const MODE: Range<usize> = 100..108;
const UID: Range<usize> = 108..116;
const GID: Range<usize> = 116..124;
const SIZE: Range<usize> = 124..136;
const MTIME: Range<usize> = 136..148;
const CHKSUM: Range<usize> = 148..156;
const TYPEFLAG: usize = 156;
const MAGIC: Range<usize> = 257..265;
const DEVMAJOR: Range<usize> = 329..337;
const DEVMINOR: Range<usize> = 337..345;
const PREFIX: Range<usize> = 345..500;

/// Where `path` is split: `(prefix, name)`, the prefix empty when the
/// path fits in `name` alone; `None` when no split fits.
pub fn split(path: &str) -> Option<(&str, &str)> {
    if path.len() <= NAME_LEN {
        return Some(("", path));
    }
    // Bytes, not chars: a multi-byte character may straddle byte 155.
    let reach = path.len().min(PREFIX_LEN + 1);
    let at = path
        .as_bytes()
        .get(..reach)?
        .iter()
        .rposition(|&b| b == b'/')?;
    let (prefix, name) = (path.get(..at)?, path.get(at + 1..)?);
    (!prefix.is_empty() && !name.is_empty() && name.len() <= NAME_LEN).then_some((prefix, name))
}

/// The canonical header of a regular file; `None` if the path has no
/// split that fits or `size` or `mtime` needs more than 11 octal digits.
pub fn header(path: &str, mode: u32, size: u64, mtime: u64) -> Option<Block> {
    let (prefix, name) = split(path)?;
    if size > MAX_OCTAL_11 || mtime > MAX_OCTAL_11 || mode > 0o7777 {
        return None;
    }
    let mut h = [0u8; BLOCK];
    put(&mut h, NAME, name.as_bytes());
    octal(&mut h, MODE, u64::from(mode));
    octal(&mut h, UID, 0);
    octal(&mut h, GID, 0);
    octal(&mut h, SIZE, size);
    octal(&mut h, MTIME, mtime);
    if let Some(t) = h.get_mut(TYPEFLAG) {
        *t = b'0';
    }
    put(&mut h, MAGIC, b"ustar\x0000");
    octal(&mut h, DEVMAJOR, 0);
    octal(&mut h, DEVMINOR, 0);
    put(&mut h, PREFIX, prefix.as_bytes());
    let sum = checksum(&h);
    octal(&mut h, CHKSUM, sum);
    Some(h)
}

/// Copies `bytes` to the start of field `at` (the rest stays NUL).
fn put(h: &mut Block, at: Range<usize>, bytes: &[u8]) {
    if let Some(dst) = h.get_mut(at).and_then(|f| f.get_mut(..bytes.len())) {
        dst.copy_from_slice(bytes);
    }
}

/// Writes `value` as zero-padded octal filling all of field `at` but its
/// last byte, which is NUL.
fn octal(h: &mut Block, at: Range<usize>, mut value: u64) {
    if let Some(field) = h.get_mut(at) {
        let digits = field.len() - 1;
        for slot in field.iter_mut().take(digits).rev() {
            *slot = b'0' + (value & 7) as u8;
            value >>= 3;
        }
        if let Some(last) = field.last_mut() {
            *last = 0;
        }
    }
}

/// The header checksum: the sum of every byte, the checksum field counted
/// as spaces.
pub fn checksum(h: &Block) -> u64 {
    h.iter()
        .enumerate()
        .map(|(i, &b)| {
            if CHKSUM.contains(&i) {
                u64::from(b' ')
            } else {
                u64::from(b)
            }
        })
        .sum()
}

/// The names of the fields where `found` differs from `want`, in order.
pub fn differing_fields<'a>(
    found: &'a Block,
    want: &'a Block,
) -> impl Iterator<Item = &'static str> + 'a {
    FIELDS
        .iter()
        .filter(|(_, at)| found.get(at.clone()) != want.get(at.clone()))
        .map(|(name, _)| *name)
}

/// Whether a block is all zeros (an end-of-archive block).
pub fn is_zero(h: &Block) -> bool {
    h.iter().all(|&b| b == 0)
}

/// The type flag.
pub fn typeflag(h: &Block) -> u8 {
    h.get(TYPEFLAG).copied().unwrap_or(0)
}

/// The path a tar reader takes from the header: `prefix/name`, each up to
/// its first NUL (at most [`MAX_PATH`] bytes, whatever the header holds).
pub fn path_of(h: &Block) -> Vec<u8> {
    let field = |at: Range<usize>| {
        let f = h.get(at).unwrap_or_default();
        let end = f.iter().position(|&b| b == 0).unwrap_or(f.len());
        f.get(..end).unwrap_or_default()
    };
    let (prefix, name) = (field(PREFIX), field(NAME));
    let mut out = Vec::with_capacity(prefix.len() + 1 + name.len());
    if !prefix.is_empty() {
        out.extend_from_slice(prefix);
        out.push(b'/');
    }
    out.extend_from_slice(name);
    out
}

/// The `size` field read as tar readers read octal (leading spaces, then
/// digits up to a NUL or space); `None` if it is not octal.
pub fn size_of(h: &Block) -> Option<u64> {
    octal_field(h.get(SIZE)?)
}

/// The `mode` field's permission bits, read as [`size_of`] reads size.
pub fn mode_of(h: &Block) -> Option<u32> {
    octal_field(h.get(MODE)?).map(|m| (m & 0o7777) as u32)
}

/// Zero bytes after `len` bytes of content, up to the next block boundary.
pub fn padding(len: u64) -> u64 {
    (BLOCK as u64 - len % BLOCK as u64) % BLOCK as u64
}

/// What a type flag other than `'0'` is, for a reason.
pub fn kind_name(flag: u8) -> &'static str {
    match flag {
        0 => "old-style regular file (type NUL)",
        b'1' => "hard link",
        b'2' => "symlink",
        b'3' => "character device",
        b'4' => "block device",
        b'5' => "directory",
        b'6' => "FIFO",
        b'7' => "contiguous file",
        b'x' => "PAX extended header",
        b'g' => "PAX global header",
        b'L' => "GNU long name",
        b'K' => "GNU long link name",
        _ => "entry of an unknown type",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn a_header_in_hex() {
        let h = header("manifest.json", 0o644, 1234, 1_795_694_400).unwrap();
        let hex = |r: Range<usize>| h[r].iter().map(|b| format!("{b:02x}")).collect::<String>();
        assert_eq!(hex(0..16), "6d616e69666573742e6a736f6e000000");
        assert_eq!(&h[100..108], b"0000644\0");
        assert_eq!(&h[108..124], b"0000000\x000000000\0");
        assert_eq!(&h[124..136], b"00000002322\0");
        assert_eq!(&h[136..148], b"15302017500\0");
        assert_eq!(&h[148..156], format!("{:07o}\0", checksum(&h)).as_bytes());
        assert_eq!(h[156], b'0');
        assert_eq!(&h[257..265], b"ustar\x0000");
        assert_eq!(&h[329..345], b"0000000\x000000000\0");
        assert!(h[345..].iter().all(|&b| b == 0));
        assert_eq!(path_of(&h), b"manifest.json");
        assert_eq!(size_of(&h), Some(1234));
        assert_eq!(mode_of(&h), Some(0o644));
    }

    #[test]
    fn long_paths_split_at_the_last_slash_that_fits() {
        let name = "n".repeat(100);
        let p = format!("payload/{name}");
        assert_eq!(split(&p), Some(("payload", name.as_str())));
        let deep = format!("payload/{}/{}/x", "a".repeat(100), "b".repeat(40));
        let (prefix, name) = split(&deep).unwrap();
        assert_eq!(prefix.len(), 8 + 100 + 1 + 40);
        assert_eq!(name, "x");
        let h = header(&deep, 0o755, 0, 0).unwrap();
        assert_eq!(path_of(&h), deep.as_bytes());
        // A name part longer than 100 bytes, or no slash in reach, does
        // not fit.
        assert_eq!(split(&format!("payload/{}", "n".repeat(101))), None);
        assert_eq!(split(&"p".repeat(120)), None);
        assert_eq!(split(&format!("{}/x", "p".repeat(156))), None);
        // A two-byte character across byte 155 does not hide an earlier
        // slash.
        let straddle = format!("{}/{}é{}", "p".repeat(100), "q".repeat(54), "n".repeat(40));
        assert_eq!(split(&straddle).map(|(p, _)| p.len()), Some(100));
        let longest = format!("{}/{}", "p".repeat(155), "n".repeat(100));
        assert_eq!(longest.len(), MAX_PATH);
        assert!(split(&longest).is_some());
    }

    #[test]
    fn stock_tar_readers_see_the_same_fields() {
        let h = header("payload/dir/app.bin", 0o755, 70_000, 1_795_694_400).unwrap();
        let t = tar::Header::from_byte_slice(&h);
        assert_eq!(t.path_bytes().as_ref(), b"payload/dir/app.bin");
        assert_eq!(t.mode().unwrap(), 0o755);
        assert_eq!(t.size().unwrap(), 70_000);
        assert_eq!(t.mtime().unwrap(), 1_795_694_400);
        assert_eq!(t.uid().unwrap(), 0);
        assert_eq!(t.cksum().unwrap(), checksum(&h) as u32);
        assert_eq!(t.entry_type(), tar::EntryType::Regular);
        assert!(t.as_ustar().is_some());
    }

    #[test]
    fn a_changed_field_is_named() {
        let want = header("payload/a", 0o644, 5, 7).unwrap();
        let mut found = want;
        found[110] = b'1';
        assert_eq!(differing_fields(&found, &want).collect::<Vec<_>>(), ["uid"]);
        assert_eq!(differing_fields(&want, &want).count(), 0);
    }
}
