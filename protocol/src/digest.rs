//! The transfer digest: what a descriptor names a file by, and what the
//! receiver checks a rebuilt file against.
//!
//! A plain BLAKE3 of the whole file would cost a second pass over every
//! byte on each side, on top of the artifact hashes that bundle
//! verification must compute anyway (BLAKE3 is a tree keyed by position,
//! so the hash of an artifact cannot be reused inside the hash of the file
//! that holds it). The digest instead reads the file as a tar archive and
//! replaces the content of each regular entry by its own BLAKE3, which is
//! exactly the hash verification compares with the manifest:
//!
//! ```text
//!  file:    [hdr 512][content ........][pad][hdr 512][content][pad][0…0]
//!  digest:  [hdr 512][BLAKE3(content)  ][pad][hdr 512][BLAKE3 ][pad][0…0][len u64]
//!           └────── fed to BLAKE3 derive_key("weir 2026-11 transfer digest v1") ─┘
//! ```
//!
//! Each header is fed as raw bytes before the content it describes, and
//! the content's length comes from that header, so the stream above is a
//! one-to-one function of the file: two files with the same digest are the
//! same file unless BLAKE3 collides. Anything that does not parse as a
//! ustar header (a bad checksum, an unreadable size, the end-of-archive
//! block, a file that is not a tar archive at all) switches the rest of
//! the file to raw bytes, so every input has a digest and every byte
//! counts. Only this module's own parse decides the layout; a reader that
//! sees the archive differently (a pax `size` record, say) merely cannot
//! reuse the content hash and computes its own.

/// Context string of the outer hash (BLAKE3 `derive_key` mode), so the
/// digest is never mistaken for a plain BLAKE3 of some bytes.
const CONTEXT: &str = "weir 2026-11 transfer digest v1";

/// Bytes of a tar header block.
const BLOCK: usize = 512;

/// A content region of a regular entry: where it starts in the file and
/// how long it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// Offset of its first byte in the file.
    pub start: u64,
    /// Its length in bytes.
    pub len: u64,
}

/// Where the parse stands.
#[derive(Debug)]
enum State {
    /// Collecting a header block; `have` bytes of it so far.
    Header { have: usize },
    /// Inside a regular entry's content: hashed on its own.
    Content {
        left: u64,
        hasher: Box<blake3::Hasher>,
    },
    /// Inside other bytes fed raw (padding, the content of other entry
    /// types), `left` more of them before the next header.
    Raw { left: u64 },
    /// The rest of the file is raw.
    Tail,
}

/// Computes the transfer digest of bytes fed in order.
#[derive(Debug)]
pub struct Digester {
    outer: blake3::Hasher,
    state: State,
    /// The header being collected.
    header: [u8; BLOCK],
    /// Bytes fed so far.
    pos: u64,
    /// The content region being hashed now, from its header.
    current: Option<Region>,
    /// The last content region finished, with its BLAKE3.
    last: Option<(Region, blake3::Hash)>,
}

impl Default for Digester {
    fn default() -> Self {
        Self::new()
    }
}

impl Digester {
    /// A digester at the start of a file.
    pub fn new() -> Self {
        Self {
            outer: blake3::Hasher::new_derive_key(CONTEXT),
            state: State::Header { have: 0 },
            header: [0; BLOCK],
            pos: 0,
            current: None,
            last: None,
        }
    }

    /// Bytes fed so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The regular entry whose content comes next or is being read, if
    /// the parse is inside one.
    pub fn current_content(&self) -> Option<Region> {
        self.current
    }

    /// The BLAKE3 of the content region that finished last.
    pub fn last_content(&self) -> Option<(Region, blake3::Hash)> {
        self.last
    }

    /// Feeds the next bytes of the file.
    pub fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let used = self.step(data);
            debug_assert!(used > 0, "every step consumes a byte");
            data = data.get(used.max(1)..).unwrap_or_default();
        }
    }

    /// Consumes a non-empty prefix of `data` and returns its length.
    fn step(&mut self, data: &[u8]) -> usize {
        let take = match &mut self.state {
            State::Header { have } => {
                let take = (BLOCK - *have).min(data.len());
                if let (Some(dst), Some(src)) =
                    (self.header.get_mut(*have..*have + take), data.get(..take))
                {
                    dst.copy_from_slice(src);
                }
                *have += take;
                if *have == BLOCK {
                    self.outer.update(&self.header);
                    self.state = self.after_header(self.pos + take as u64);
                }
                take
            }
            State::Content { left, hasher } => {
                let take = usize::try_from(*left).unwrap_or(usize::MAX).min(data.len());
                hasher.update(data.get(..take).unwrap_or_default());
                *left -= take as u64;
                if *left == 0 {
                    let hash = hasher.finalize();
                    self.finish_content(hash);
                    self.state = raw_then_header(padding(self.pos + take as u64));
                }
                take
            }
            State::Raw { left } => {
                let take = usize::try_from(*left).unwrap_or(usize::MAX).min(data.len());
                self.outer.update(data.get(..take).unwrap_or_default());
                *left -= take as u64;
                if *left == 0 {
                    self.state = State::Header { have: 0 };
                }
                take
            }
            State::Tail => {
                self.outer.update(data);
                data.len()
            }
        };
        self.pos += take as u64;
        take
    }

    /// A content region is complete: its hash goes into the digest.
    fn finish_content(&mut self, hash: blake3::Hash) {
        self.outer.update(hash.as_bytes());
        if let Some(region) = self.current.take() {
            self.last = Some((region, hash));
        }
    }

    /// What follows a complete header block that ends at `end`.
    fn after_header(&mut self, end: u64) -> State {
        let h = &self.header;
        if h.iter().all(|&b| b == 0) {
            // The end-of-archive marker: what follows is padding or garbage.
            return State::Tail;
        }
        let Some(size) = header_size(h).filter(|_| checksum_ok(h)) else {
            return State::Tail;
        };
        match h.get(156) {
            Some(b'0' | 0) => {
                self.current = Some(Region {
                    start: end,
                    len: size,
                });
                if size == 0 {
                    self.finish_content(blake3::hash(b""));
                    return State::Header { have: 0 };
                }
                State::Content {
                    left: size,
                    hasher: Box::default(),
                }
            }
            _ => raw_then_header(size.saturating_add(padding(size))),
        }
    }

    /// The digest of everything fed so far.
    pub fn finalize(&self) -> blake3::Hash {
        let mut outer = self.outer.clone();
        match &self.state {
            // A file that ends inside a header or a content region: what
            // there is of them still counts.
            State::Header { have } => {
                outer.update(self.header.get(..*have).unwrap_or_default());
            }
            State::Content { hasher, .. } => {
                outer.update(hasher.finalize().as_bytes());
            }
            State::Raw { .. } | State::Tail => {}
        }
        outer.update(&self.pos.to_le_bytes());
        outer.finalize()
    }
}

/// Feeding by `std::io::copy`, as with `blake3::Hasher`.
impl std::io::Write for Digester {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The transfer digest of a whole file held in memory.
pub fn digest(bytes: &[u8]) -> blake3::Hash {
    let mut d = Digester::new();
    d.update(bytes);
    d.finalize()
}

/// Bytes of padding after a region that ends at `end` (or of `end`
/// bytes from a block boundary), up to the next 512-byte boundary.
fn padding(end: u64) -> u64 {
    (BLOCK as u64 - end % BLOCK as u64) % BLOCK as u64
}

/// `left` raw bytes, then a header (at once if there are none).
fn raw_then_header(left: u64) -> State {
    if left == 0 {
        State::Header { have: 0 }
    } else {
        State::Raw { left }
    }
}

/// The size field of a ustar header: octal digits (with leading spaces and
/// trailing NULs or spaces), or GNU base-256 for large sizes.
fn header_size(h: &[u8; BLOCK]) -> Option<u64> {
    let field = h.get(124..136)?;
    let first = *field.first()?;
    if first & 0x80 != 0 {
        // Base-256: big-endian, the top bit of the first byte is the flag.
        if first != 0x80 {
            return None;
        }
        let mut n = 0u64;
        for &b in field.get(1..)? {
            n = n.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(n);
    }
    octal(field)
}

/// An octal header field as tar readers read it: optional leading spaces,
/// then at least one digit `0`–`7`, ending at the first NUL or space or at
/// the end of the field. The bundle verifier reads fields the same way, so
/// that it names what a tar tool would see.
pub fn octal(field: &[u8]) -> Option<u64> {
    let text = field
        .iter()
        .skip_while(|&&b| b == b' ')
        .take_while(|&&b| b != 0 && b != b' ');
    let mut n = 0u64;
    let mut digits = 0;
    for &b in text {
        if !(b'0'..=b'7').contains(&b) {
            return None;
        }
        n = n.checked_mul(8)?.checked_add(u64::from(b - b'0'))?;
        digits += 1;
    }
    (digits > 0).then_some(n)
}

/// The header checksum (bytes 148..156: octal sum of all bytes with the
/// checksum field counted as spaces) matches.
fn checksum_ok(h: &[u8; BLOCK]) -> bool {
    let Some(stored) = h.get(148..156).and_then(octal) else {
        return false;
    };
    let sum: u64 = h
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                u64::from(b' ')
            } else {
                u64::from(b)
            }
        })
        .sum();
    stored == sum
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A small archive: a manifest-like entry, an empty file, a directory,
    /// a pax-extended long name, a 3000-byte file, then the end marker.
    fn archive() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut add = |path: &str, data: &[u8], kind: tar::EntryType| {
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(kind);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, path, data).unwrap();
        };
        add(
            "manifest.json",
            b"{\"format\":\"x\"}",
            tar::EntryType::Regular,
        );
        add("payload/empty", b"", tar::EntryType::Regular);
        add("payload/dir", b"", tar::EntryType::Directory);
        let long = format!("payload/{}", "n".repeat(150));
        add(&long, b"long name", tar::EntryType::Regular);
        let big: Vec<u8> = (0..3000u32).map(|i| (i * 7 % 251) as u8).collect();
        add("payload/big", &big, tar::EntryType::Regular);
        b.into_inner().unwrap()
    }

    /// Content regions and their bytes as the `tar` crate sees them.
    fn regions(bytes: &[u8]) -> Vec<(Region, Vec<u8>)> {
        let mut a = tar::Archive::new(bytes);
        let mut out = Vec::new();
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            if e.header().entry_type() != tar::EntryType::Regular {
                continue;
            }
            let region = Region {
                start: e.raw_file_position(),
                len: e.size(),
            };
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut data).unwrap();
            out.push((region, data));
        }
        out
    }

    #[test]
    fn each_regular_entry_is_hashed_on_its_own_where_tar_sees_it() {
        let bytes = archive();
        let want = regions(&bytes);
        assert_eq!(want.len(), 4);
        let mut d = Digester::new();
        let mut seen = Vec::new();
        for b in &bytes {
            let before = d.last_content();
            d.update(std::slice::from_ref(b));
            if d.last_content() != before {
                seen.push(d.last_content().unwrap());
            }
        }
        // The empty entry finishes with its own header.
        let got: Vec<(Region, blake3::Hash)> = seen;
        let want: Vec<(Region, blake3::Hash)> = want
            .iter()
            .map(|(r, data)| (*r, blake3::hash(data)))
            .collect();
        assert_eq!(got, want);
        assert_eq!(d.position(), bytes.len() as u64);
    }

    #[test]
    fn the_region_being_read_is_known_from_its_header() {
        let bytes = archive();
        let (big, _) = regions(&bytes).pop().unwrap();
        let mut d = Digester::new();
        d.update(&bytes[..big.start as usize]);
        assert_eq!(d.current_content(), Some(big));
        d.update(&bytes[big.start as usize..(big.start + big.len) as usize]);
        assert_eq!(d.current_content(), None);
        assert_eq!(d.last_content().unwrap().0, big);
    }

    #[test]
    fn it_is_not_a_plain_hash_and_not_the_length_alone() {
        let bytes = archive();
        assert_ne!(digest(&bytes), blake3::hash(&bytes));
        assert_ne!(digest(b""), digest(&[0]));
        // Zero padding after the end marker still counts.
        let mut longer = bytes.clone();
        longer.extend_from_slice(&[0; 512]);
        assert_ne!(digest(&bytes), digest(&longer));
    }

    #[test]
    fn sizes_read_as_octal_or_base_256() {
        let mut h = [0u8; BLOCK];
        h[124..136].copy_from_slice(b"00000001750\0");
        assert_eq!(header_size(&h), Some(0o1750));
        h[124..136].copy_from_slice(b"   1750 \0\0\0\0");
        assert_eq!(header_size(&h), Some(0o1750));
        let mut big = [0u8; 12];
        big[0] = 0x80;
        big[4..].copy_from_slice(&(20u64 << 30).to_be_bytes());
        h[124..136].copy_from_slice(&big);
        assert_eq!(header_size(&h), Some(20u64 << 30));
        h[124..136].copy_from_slice(b"0000000175x\0");
        assert_eq!(header_size(&h), None);
        h[124..136].copy_from_slice(&[0; 12]);
        assert_eq!(header_size(&h), None);
    }

    #[test]
    fn a_bad_header_makes_the_rest_raw() {
        let mut bytes = archive();
        // Break the second header's checksum: from there on, every byte is
        // raw and still counts.
        let second = regions(&bytes)[1].0.start as usize - BLOCK;
        bytes[second + 148] ^= 1;
        let mut d = Digester::new();
        d.update(&bytes);
        assert_eq!(d.last_content().unwrap().0, regions(&archive())[0].0);
        let mut other = bytes.clone();
        let last = other.len() - 1;
        other[last - 1000] ^= 0x40;
        assert_ne!(digest(&bytes), digest(&other));
    }

    proptest! {
        #[test]
        fn any_changed_byte_changes_the_digest(at in any::<prop::sample::Index>(), bit in 0u8..8) {
            let bytes = archive();
            let mut other = bytes.clone();
            let i = at.index(other.len());
            other[i] ^= 1 << bit;
            prop_assert_ne!(digest(&bytes), digest(&other));
        }

        #[test]
        fn any_cut_changes_the_digest(at in any::<prop::sample::Index>()) {
            let bytes = archive();
            let cut = at.index(bytes.len());
            prop_assert_ne!(digest(&bytes), digest(&bytes[..cut]));
        }

        #[test]
        fn how_bytes_are_split_does_not_matter(
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
            garbage in prop::collection::vec(any::<u8>(), 0..2000),
        ) {
            for bytes in [archive(), garbage] {
                let mut at: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
                at.sort_unstable();
                let mut d = Digester::new();
                let mut from = 0;
                for &to in &at {
                    d.update(&bytes[from..to]);
                    from = to;
                }
                d.update(&bytes[from..]);
                prop_assert_eq!(d.finalize(), digest(&bytes));
            }
        }
    }
}
