//! Building bundles for tests: good ones through the real sender code, and
//! broken ones byte by byte, so that every rejection reason can be shown.

use std::collections::BTreeMap;
use std::io::Read;
use std::time::SystemTime;

use tempfile::TempDir;
use weir_protocol::bundle::{
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

    /// Verifies `bundle` against the fixture's trust store now, both ways
    /// the daemons do: alone, and with the transfer digest computed in the
    /// same read. Panics unless the two verdicts agree and the digest is
    /// the file's, so every verification test covers both.
    pub fn verify(
        &self,
        bundle: &[u8],
    ) -> Result<
        weir_protocol::bundle::Verified<weir_protocol::bundle::BundleInfo>,
        weir_protocol::bundle::Rejection,
    > {
        let now = SystemTime::now();
        let alone = weir_protocol::bundle::verify(bundle, &self.trust, now);
        let both = weir_protocol::bundle::verify_digest(bundle, &self.trust, now)
            .expect("reading from memory cannot fail");
        assert_eq!(both.verdict, alone, "verdicts differ with the digest");
        assert_eq!(both.digest, weir_protocol::digest::digest(bundle));
        assert_eq!(both.len, bundle.len() as u64);
        // Hashing artifacts where the reader holds them changes nothing,
        // whether it lends everything at once or a few bytes at a time.
        for lent in [
            weir_protocol::bundle::verify_digest_lent(bundle, &self.trust, now),
            weir_protocol::bundle::verify_digest_lent(Dribble::new(bundle), &self.trust, now),
        ] {
            let lent = lent.expect("reading from memory cannot fail");
            assert_eq!(lent.verdict, alone, "verdicts differ when lent");
            assert_eq!(lent.digest, both.digest, "digests differ when lent");
            assert_eq!(lent.len, both.len);
        }
        alone
    }
}

/// Lends (and reads) a few bytes at a time, never the same number twice
/// in a row: pieces that end anywhere inside a header or an artifact.
#[derive(Debug)]
pub struct Dribble<'a> {
    data: &'a [u8],
    step: usize,
}

impl<'a> Dribble<'a> {
    /// Lends `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { data, step: 0 }
    }

    fn next_len(&mut self, max: usize) -> usize {
        self.step = self.step % 997 + 1;
        (self.step * 7 % 1531).min(max).min(self.data.len())
    }
}

impl std::io::Read for Dribble<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.next_len(buf.len());
        let (now, rest) = self.data.split_at(n);
        buf[..n].copy_from_slice(now);
        self.data = rest;
        Ok(n)
    }
}

impl weir_protocol::bundle::Lend for Dribble<'_> {
    fn lend(&mut self, max: usize, f: &mut dyn FnMut(&[u8])) -> std::io::Result<usize> {
        let n = self.next_len(max);
        let (now, rest) = self.data.split_at(n);
        // In two pieces where it can: a lender may call `f` more than once.
        let (a, b) = now.split_at(n / 2);
        f(a);
        f(b);
        self.data = rest;
        Ok(n)
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

/// Writes archives entry by entry, including entries no good bundle has.
pub struct Raw {
    builder: tar::Builder<Vec<u8>>,
}

impl std::fmt::Debug for Raw {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Raw")
    }
}

impl Default for Raw {
    fn default() -> Self {
        Self::new()
    }
}

fn header(kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(1_764_158_400);
    h.set_uid(0);
    h.set_gid(0);
    h
}

impl Raw {
    /// An empty archive.
    pub fn new() -> Self {
        Self {
            builder: tar::Builder::new(Vec::new()),
        }
    }

    /// A regular file with any name bytes (not checked).
    pub fn file_raw_name(&mut self, name: &[u8], data: &[u8], mode: u32) -> &mut Self {
        let mut h = header(tar::EntryType::Regular, data.len() as u64, mode);
        let field = &mut h.as_old_mut().name;
        field.fill(0);
        field[..name.len()].copy_from_slice(name);
        h.set_cksum();
        self.builder.append(&h, data).expect("append");
        self
    }

    /// A regular file.
    pub fn file(&mut self, path: &str, data: &[u8], mode: u32) -> &mut Self {
        self.file_raw_name(path.as_bytes(), data, mode)
    }

    /// A file whose path is given by a pax record (for long paths).
    pub fn file_pax(&mut self, path: &str, data: &[u8]) -> &mut Self {
        self.builder
            .append_pax_extensions([("path", path.as_bytes())])
            .expect("pax");
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
        let mut h = header(kind, data.len() as u64, 0o644);
        h.set_path(path).expect("path");
        if let Some(l) = link {
            h.set_link_name(l).expect("link");
        }
        h.set_cksum();
        self.builder.append(&h, data).expect("append");
        self
    }

    /// A manifest and one signature per key.
    pub fn signed(&mut self, fx: &Fixture, m: &Manifest, keys: &[&SigningKey]) -> &mut Self {
        let bytes = m.to_bytes();
        self.file("manifest.json", &bytes, 0o644);
        for k in keys {
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

    /// The finished archive.
    pub fn finish(&mut self) -> Vec<u8> {
        let b = std::mem::replace(&mut self.builder, tar::Builder::new(Vec::new()));
        b.into_inner().expect("finish")
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
