//! Building bundles for tests: good ones through the real sender code, and
//! broken ones byte by byte, so that every rejection reason can be shown.

use std::collections::BTreeMap;
use std::io::Read;
use std::time::SystemTime;

use tempfile::TempDir;
use weir_bundle::ustar::Block;
use weir_bundle::{
    Artifact, FORMAT, KeyId, Manifest, Mode, TrustStore, TrustedKey, signature_path,
};
use weir_sender::keys::{self, SigningKey};

/// Two signing keys and a trust store that trusts the first.
pub struct Fixture {
    /// Holds the key files.
    pub dir: TempDir,
    /// Trusted as `builder`, role `build`.
    pub key: SigningKey,
    /// Not in the trust store unless a test adds it.
    pub other: SigningKey,
    /// The trust store.
    pub trust: TrustStore,
}

impl std::fmt::Debug for Fixture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fixture")
            .field("key", &self.key.id)
            .finish()
    }
}

/// The public key line of a signing key, as the trust store holds it.
pub fn public_line(k: &SigningKey) -> String {
    k.public
        .to_box()
        .map(|b| b.into_string())
        .unwrap_or_default()
        .lines()
        .nth(1)
        .unwrap_or_default()
        .to_owned()
}

/// A trust store entry for `k`.
pub fn trusted(id: &str, k: &SigningKey) -> TrustedKey {
    TrustedKey {
        id: id.into(),
        name: format!("key {id}"),
        public_key: public_line(k),
        roles: vec!["build".into()],
        not_after: None,
        revoked: false,
    }
}

impl Fixture {
    /// Makes a bundle `name` version 1 at `out`, signed with the trusted
    /// key, of one artifact of `bytes` random bytes (from `seed`) written
    /// in `dir`; returns the bundle's bytes.
    pub fn signed_bundle(
        &self,
        dir: &std::path::Path,
        name: &str,
        bytes: u64,
        seed: u64,
        out: &std::path::Path,
    ) -> Vec<u8> {
        let art = dir.join(format!("{name}.bin"));
        write_random_file(&art, bytes, seed).expect("artifact");
        let req = weir_sender::bundle::create::CreateRequest {
            name: name.into(),
            version: "1".into(),
            labels: Default::default(),
            artifacts: vec![art],
            sboms: vec![],
            out: out.to_owned(),
        };
        weir_sender::bundle::create::create(&req, &self.key, SystemTime::now()).expect("bundle");
        std::fs::read(out).expect("bundle bytes")
    }

    /// Fresh keys in a temporary directory.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let (k1, _, _) = keys::keygen(&dir.path().join("builder")).expect("keygen");
        let (k2, _, _) = keys::keygen(&dir.path().join("other")).expect("keygen");
        let key = keys::load(&k1).expect("load");
        let other = keys::load(&k2).expect("load");
        let mut trust = TrustStore::default();
        trust.add(trusted("builder", &key)).expect("trust");
        Self {
            dir,
            key,
            other,
            trust,
        }
    }

    /// A manifest listing `files`.
    pub fn manifest(&self, files: &[(&str, &[u8], Mode)]) -> Manifest {
        Manifest {
            format: FORMAT.into(),
            name: "app".into(),
            version: "1.0".into(),
            created: "2026-11-26T12:00:00Z".into(),
            labels: BTreeMap::new(),
            artifacts: files
                .iter()
                .map(|(p, d, m)| Artifact {
                    path: (*p).into(),
                    size: d.len() as u64,
                    blake3: blake3::hash(d).to_hex().to_string(),
                    mode: *m,
                })
                .collect(),
            sboms: vec![],
        }
    }

    /// `key`'s signature over `bytes`, with the trusted comment of `m`.
    pub fn sign(&self, key: &SigningKey, m: &Manifest, bytes: &[u8]) -> String {
        keys::sign_manifest(key, bytes, &m.trusted_comment()).expect("sign")
    }

    /// Verifies `bundle` against the fixture's trust store now, fed three
    /// ways: whole, in pieces that end anywhere inside a header or an
    /// artifact, and through the reader driver. Panics unless the three
    /// verdicts agree and the digest is the file's, so every verification
    /// test covers all three.
    pub fn verify(
        &self,
        bundle: &[u8],
    ) -> Result<weir_bundle::Verified<weir_bundle::BundleInfo>, weir_bundle::Rejection> {
        let now = SystemTime::now();
        let mut whole = weir_bundle::BundleVerifier::new(&self.trust, now);
        whole.feed(bundle);
        let whole = whole.finish();
        let mut pieces = weir_bundle::BundleVerifier::new(&self.trust, now);
        for piece in Dribble::new(bundle) {
            pieces.feed(piece);
        }
        let pieces = pieces.finish();
        let read =
            weir_bundle::verify(bundle, &self.trust, now).expect("reading from memory cannot fail");
        assert_eq!(
            pieces.verdict, whole.verdict,
            "verdicts differ when fed in pieces"
        );
        assert_eq!(
            read.verdict, whole.verdict,
            "verdicts differ through the reader"
        );
        let digest = weir_protocol::digest::digest(bundle);
        for (d, how) in [(&whole, "whole"), (&pieces, "pieces"), (&read, "reader")] {
            assert_eq!(d.digest, digest, "digest differs fed {how}");
            assert_eq!(d.len, bundle.len() as u64);
        }
        whole.verdict
    }
}

/// Cuts bytes into pieces of changing sizes (never the same twice in a
/// row, from 1 byte up): pieces that end anywhere inside a header or an
/// artifact.
#[derive(Debug)]
pub struct Dribble<'a> {
    data: &'a [u8],
    step: usize,
}

impl<'a> Dribble<'a> {
    /// Pieces of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { data, step: 0 }
    }
}

impl<'a> Iterator for Dribble<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        if self.data.is_empty() {
            return None;
        }
        self.step = self.step % 997 + 1;
        let n = (self.step * 7 % 1531).clamp(1, self.data.len());
        let (now, rest) = self.data.split_at(n);
        self.data = rest;
        Some(now)
    }
}

impl Default for Fixture {
    fn default() -> Self {
        Self::new()
    }
}

/// The usual test payload.
pub const FILES: &[(&str, &[u8], Mode)] = &[
    (
        "payload/app.bin",
        b"\x7fELF pretend binary",
        Mode::Executable,
    ),
    ("payload/docs/README", b"read me\n", Mode::Regular),
];

/// The mtime of every header of a bundle made from [`Fixture::manifest`]
/// (its `created`, 2026-11-26T12:00:00Z).
pub const MTIME: u64 = 1_795_694_400;

/// Writes archives entry by entry in the canonical layout, and lets a test
/// put in what no good bundle has: changed header fields, PAX and GNU
/// records, other entry types, trailing bytes.
#[derive(Debug, Default)]
pub struct Raw {
    out: Vec<u8>,
}

/// Writes `value` as an octal field: zero-padded digits, then NUL.
pub fn set_octal(h: &mut Block, at: std::ops::Range<usize>, value: u64) {
    let field = &mut h[at];
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    field[..digits].copy_from_slice(&text.as_bytes()[text.len() - digits..]);
    field[digits] = 0;
}

/// Sets the checksum a header's bytes call for.
pub fn fix_checksum(h: &mut Block) {
    let sum = weir_bundle::ustar::checksum(h);
    set_octal(h, 148..156, sum);
}

/// The canonical header, or for a path no ustar header holds, one with
/// the path cut into `name` (for tests of what such a path does).
fn canonical(path: &[u8], size: u64, mode: u32) -> Block {
    if let Some(h) = std::str::from_utf8(path)
        .ok()
        .and_then(|p| weir_bundle::ustar::header(p, mode, size, MTIME))
    {
        return h;
    }
    let mut h = weir_bundle::ustar::header("x", mode, size, MTIME).expect("header");
    h[..100].fill(0);
    let n = path.len().min(100);
    h[..n].copy_from_slice(&path[..n]);
    fix_checksum(&mut h);
    h
}

impl Raw {
    /// An empty archive.
    pub fn new() -> Self {
        Self::default()
    }

    /// Any bytes, as they are.
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.out.extend_from_slice(b);
        self
    }

    /// An entry: `header`, then `data` and its zero padding.
    pub fn entry(&mut self, header: &Block, data: &[u8]) -> &mut Self {
        self.out.extend_from_slice(header);
        self.out.extend_from_slice(data);
        let pad = weir_bundle::ustar::padding(data.len() as u64) as usize;
        self.out.extend(std::iter::repeat_n(0u8, pad));
        self
    }

    /// A regular file whose canonical header `change` alters before it is
    /// written (the checksum is fixed afterwards, unless `change` touches
    /// it).
    pub fn file_with(
        &mut self,
        path: &str,
        data: &[u8],
        mode: u32,
        change: impl FnOnce(&mut Block),
    ) -> &mut Self {
        let mut h = canonical(path.as_bytes(), data.len() as u64, mode);
        let before = h[148..156].to_vec();
        change(&mut h);
        if h[148..156] == before[..] {
            fix_checksum(&mut h);
        }
        self.entry(&h, data)
    }

    /// A regular file with any name bytes (not checked).
    pub fn file_raw_name(&mut self, name: &[u8], data: &[u8], mode: u32) -> &mut Self {
        let h = canonical(name, data.len() as u64, mode);
        self.entry(&h, data)
    }

    /// A regular file.
    pub fn file(&mut self, path: &str, data: &[u8], mode: u32) -> &mut Self {
        self.file_raw_name(path.as_bytes(), data, mode)
    }

    /// An extension entry of type `flag` (`x`, `g`, `L`, `K`) holding
    /// `data`, as tar tools write them before the entry they extend.
    pub fn extension(&mut self, flag: u8, data: &[u8]) -> &mut Self {
        let name: &[u8] = if flag == b'L' || flag == b'K' {
            b"././@LongLink"
        } else {
            b"PaxHeaders.0/entry"
        };
        let mut h = canonical(name, data.len() as u64, 0o644);
        h[156] = flag;
        fix_checksum(&mut h);
        self.entry(&h, data)
    }

    /// The header alone of an extension entry (`x`, `g`, `L`, `K`) of
    /// `size` bytes: the start of a hostile entry whose content a test
    /// feeds (or leaves as a hole in a sparse file) without holding it.
    pub fn extension_header(flag: u8, size: u64) -> Block {
        let name: &[u8] = if flag == b'L' || flag == b'K' {
            b"././@LongLink"
        } else {
            b"PaxHeaders.0/entry"
        };
        let mut h = weir_bundle::ustar::header("x", 0o644, size, MTIME).expect("header");
        h[..100].fill(0);
        h[..name.len()].copy_from_slice(name);
        h[156] = flag;
        fix_checksum(&mut h);
        h
    }

    /// A PAX extended header with these records.
    pub fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        let mut data = Vec::new();
        for (k, v) in records {
            // "<len> <key>=<value>\n", the length counting itself.
            let body = k.len() + v.len() + 3;
            let mut len = body + 1;
            while len != body + len.to_string().len() {
                len = body + len.to_string().len();
            }
            data.extend_from_slice(format!("{len} {k}=").as_bytes());
            data.extend_from_slice(v);
            data.push(b'\n');
        }
        self.extension(b'x', &data)
    }

    /// A file whose path is given by a pax record (for long paths).
    pub fn file_pax(&mut self, path: &str, data: &[u8]) -> &mut Self {
        self.pax(&[("path", path.as_bytes())]);
        self.file("placeholder", data, 0o644)
    }

    /// An entry of another type.
    pub fn special(
        &mut self,
        path: &str,
        kind: tar::EntryType,
        link: Option<&str>,
        data: &[u8],
    ) -> &mut Self {
        let mut h = canonical(path.as_bytes(), data.len() as u64, 0o644);
        h[156] = kind.as_byte();
        if let Some(l) = link {
            h[157..157 + l.len()].copy_from_slice(l.as_bytes());
        }
        fix_checksum(&mut h);
        self.entry(&h, data)
    }

    /// A manifest and one signature per key (sorted by key id, as the
    /// layout puts them).
    pub fn signed(&mut self, fx: &Fixture, m: &Manifest, keys: &[&SigningKey]) -> &mut Self {
        let bytes = m.to_bytes();
        self.file("manifest.json", &bytes, 0o644);
        let mut sorted: Vec<&&SigningKey> = keys.iter().collect();
        sorted.sort_by_key(|k| u64::from_le_bytes(k.id.0));
        for k in sorted {
            let sig = fx.sign(k, m, &bytes);
            self.signature(k.id, &sig);
        }
        self
    }

    /// A signature entry.
    pub fn signature(&mut self, id: KeyId, text: &str) -> &mut Self {
        self.file(&signature_path(id), text.as_bytes(), 0o644)
    }

    /// The payload files as listed.
    pub fn payload(&mut self, files: &[(&str, &[u8], Mode)]) -> &mut Self {
        for (p, d, m) in files {
            self.file(p, d, m.bits());
        }
        self
    }

    /// The archive so far, without end blocks.
    pub fn unfinished(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// The finished archive: two zero blocks at the end.
    pub fn finish(&mut self) -> Vec<u8> {
        self.out.extend_from_slice(&[0u8; 1024]);
        std::mem::take(&mut self.out)
    }
}

/// A valid bundle of [`FILES`] signed by the fixture's trusted key.
pub fn good_bundle(fx: &Fixture) -> Vec<u8> {
    let m = fx.manifest(FILES);
    Raw::new()
        .signed(fx, &m, &[&fx.key])
        .payload(FILES)
        .finish()
}

/// Writes `bytes` reproducible pseudo-random bytes to `path`, streaming
/// (memory stays flat whatever the size).
pub fn write_random_file(path: &std::path::Path, bytes: u64, seed: u64) -> std::io::Result<()> {
    use rand::{RngCore, SeedableRng};
    use std::io::Write;
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut chunk = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        let part = &mut chunk[..n];
        rng.fill_bytes(part);
        f.write_all(part)?;
        left -= n as u64;
    }
    f.flush()
}

/// Every entry's content, by path, as stock tar reading would give it. An
/// archive tar cannot read fails the test: this is only called on bundles
/// that verified.
pub fn contents(bundle: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut a = tar::Archive::new(bundle);
    for e in a.entries().expect("a verified bundle tar cannot read") {
        let mut e = e.expect("an entry of a verified bundle tar cannot read");
        let path = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let mut data = Vec::new();
        e.read_to_end(&mut data)
            .unwrap_or_else(|err| panic!("{path} of a verified bundle: {err}"));
        out.insert(path, data);
    }
    out
}
