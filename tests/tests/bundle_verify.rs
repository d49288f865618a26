//! Bundle verification: one test per rejection reason, with bundles built
//! here byte by byte, and a sweep that flips every byte of a valid bundle.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::{Duration, SystemTime};

use weir_bundle::{BundleVerifier, Mode, Progress, Reason, signature_path};
use weir_tests::bundles::{FILES, Fixture, Raw, contents, good_bundle, trusted};

/// The reason codes of a rejection.
fn codes(fx: &Fixture, bundle: &[u8]) -> Vec<&'static str> {
    match fx.verify(bundle) {
        Ok(_) => vec![],
        Err(r) => r.reasons.iter().map(Reason::code).collect(),
    }
}

fn assert_rejected(fx: &Fixture, bundle: &[u8], code: &str) {
    let got = codes(fx, bundle);
    assert!(got.contains(&code), "expected {code}, got {got:?}");
}

#[test]
fn a_good_bundle_verifies() {
    let fx = Fixture::new();
    let v = fx.verify(&good_bundle(&fx)).unwrap();
    assert_eq!(v.manifest.name, "app");
    assert_eq!(v.signers.len(), 1);
    assert_eq!(v.signers[0].id, "builder");
}

#[test]
fn manifest_missing() {
    let fx = Fixture::new();
    assert_rejected(&fx, &Raw::new().finish(), "manifest_missing");
}

#[test]
fn manifest_not_first() {
    let fx = Fixture::new();
    let m = fx.manifest(FILES);
    let b = Raw::new()
        .payload(FILES)
        .signed(&fx, &m, &[&fx.key])
        .finish();
    assert_rejected(&fx, &b, "manifest_not_first");
}

#[test]
fn manifest_too_large() {
    let fx = Fixture::new();
    let big = vec![b' '; (1 << 20) + 1];
    let b = Raw::new().file("manifest.json", &big, 0o644).finish();
    assert_rejected(&fx, &b, "manifest_too_large");
}

#[test]
fn manifest_invalid() {
    let fx = Fixture::new();
    for bad in [&b"not json"[..], br#"{"format":"weir-bundle/1"}"#] {
        let b = Raw::new().file("manifest.json", bad, 0o644).finish();
        assert_rejected(&fx, &b, "manifest_invalid");
    }
    // A manifest that lists a path with `..`.
    let mut m = fx.manifest(FILES);
    m.artifacts[0].path = "payload/../etc/passwd".into();
    let b = Raw::new()
        .file("manifest.json", &m.to_bytes(), 0o644)
        .finish();
    assert_rejected(&fx, &b, "manifest_invalid");
}

#[test]
fn signature_missing() {
    let fx = Fixture::new();
    let m = fx.manifest(FILES);
    let b = Raw::new()
        .file("manifest.json", &m.to_bytes(), 0o644)
        .payload(FILES)
        .finish();
    assert_rejected(&fx, &b, "signature_missing");
}

#[test]
fn bad_signature_over_other_bytes() {
    let fx = Fixture::new();
    let m = fx.manifest(FILES);
    let mut other = m.clone();
    other.artifacts[0].size += 1;
    // Signed by the trusted key, but over a different manifest.
    let sig = fx.sign(&fx.key, &m, &other.to_bytes());
    let b = Raw::new()
        .file("manifest.json", &m.to_bytes(), 0o644)
        .signature(fx.key.id, &sig)
        .payload(FILES)
        .finish();
    let got = codes(&fx, &b);
    assert_eq!(got, vec!["signature_invalid", "no_trusted_signature"]);
    let r = fx.verify(&b).unwrap_err();
    assert!(matches!(
        &r.reasons[0],
        Reason::SignatureInvalid { kind: "bad", .. }
    ));
}

#[test]
fn malformed_signature_and_wrong_file_name() {
    let fx = Fixture::new();
    let m = fx.manifest(FILES);
    let sig = fx.sign(&fx.key, &m, &m.to_bytes());
    // A signature entry not named for a key id is not one.
    let b = Raw::new()
        .file("manifest.json", &m.to_bytes(), 0o644)
        .file("signatures/garbage.minisig", b"hello", 0o644)
        .payload(FILES)
        .finish();
    assert_rejected(&fx, &b, "entry_extra");
    // Not a minisign text: not in the one form a signature file has.
    let b = Raw::new()
        .file("manifest.json", &m.to_bytes(), 0o644)
        .file(&signature_path(fx.key.id), b"hello", 0o644)
        .payload(FILES)
        .finish();
    assert_rejected(&fx, &b, "non_canonical");
    // Larger than 4 KiB, or not UTF-8.
    for text in [vec![b'a'; 4097], b"\xff\xfe\n".to_vec()] {
        let b = Raw::new()
            .file("manifest.json", &m.to_bytes(), 0o644)
            .file(&signature_path(fx.key.id), &text, 0o644)
            .payload(FILES)
            .finish();
        assert_rejected(&fx, &b, "signature_invalid");
    }
    // A legacy (not prehashed) signature, and one filed under another
    // key's id.
    let legacy = {
        let mut lines: Vec<String> = sig.lines().map(str::to_owned).collect();
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut raw = b64.decode(&lines[1]).unwrap();
        raw[1] = b'd';
        lines[1] = b64.encode(&raw);
        lines.join("\n") + "\n"
    };
    let b = Raw::new()
        .file("manifest.json", &m.to_bytes(), 0o644)
        .file(&signature_path(fx.key.id), legacy.as_bytes(), 0o644)
        .file(&signature_path(fx.other.id), sig.as_bytes(), 0o644)
        .payload(FILES)
        .finish();
    let b = if u64::from_le_bytes(fx.key.id.0) < u64::from_le_bytes(fx.other.id.0) {
        b
    } else {
        Raw::new()
            .file("manifest.json", &m.to_bytes(), 0o644)
            .file(&signature_path(fx.other.id), sig.as_bytes(), 0o644)
            .file(&signature_path(fx.key.id), legacy.as_bytes(), 0o644)
            .payload(FILES)
            .finish()
    };
    let r = fx.verify(&b).unwrap_err();
    let kinds: Vec<_> = r
        .reasons
        .iter()
        .filter_map(|r| match r {
            Reason::SignatureInvalid { kind, .. } => Some(*kind),
            _ => None,
        })
        .collect();
    kinds
        .iter()
        .for_each(|k| assert!(["legacy", "name_mismatch"].contains(k), "{kinds:?}"));
    assert_eq!(kinds.len(), 2, "{kinds:?}");
}

#[test]
fn untrusted_revoked_and_expired_keys_do_not_count() {
    let fx = Fixture::new();
    let m = fx.manifest(FILES);
    let by_other = Raw::new()
        .signed(&fx, &m, &[&fx.other])
        .payload(FILES)
        .finish();
    assert_rejected(&fx, &by_other, "no_trusted_signature");
    let r = fx.verify(&by_other).unwrap_err();
    assert!(matches!(
        &r.reasons[0],
        Reason::SignatureInvalid {
            kind: "untrusted",
            ..
        }
    ));

    let b = good_bundle(&fx);
    let mut revoked = Fixture {
        trust: fx.trust.clone(),
        ..Fixture::new()
    };
    revoked.key = weir_sender::keys::load(&fx.dir.path().join("builder.key")).unwrap();
    revoked.trust.revoke("builder").unwrap();
    let r = revoked.verify(&b).unwrap_err();
    assert!(matches!(
        &r.reasons[0],
        Reason::SignatureInvalid {
            kind: "revoked",
            ..
        }
    ));

    let mut expired = revoked;
    expired.trust = fx.trust.clone();
    expired.trust.keys[0].not_after = Some("2020-01-01T00:00:00Z".into());
    let r = expired.verify(&b).unwrap_err();
    assert!(matches!(
        &r.reasons[0],
        Reason::SignatureInvalid {
            kind: "expired",
            ..
        }
    ));
    // Before expiry it counted.
    let before = SystemTime::UNIX_EPOCH + Duration::from_secs(1_500_000_000);
    assert!(
        weir_bundle::verify(&b[..], &expired.trust, before)
            .unwrap()
            .verdict
            .is_ok()
    );
}

#[test]
fn a_valid_signature_counts_beside_one_that_does_not() {
    let mut fx = Fixture::new();
    let m = fx.manifest(FILES);
    let b = Raw::new()
        .signed(&fx, &m, &[&fx.other, &fx.key])
        .payload(FILES)
        .finish();
    let v = fx.verify(&b).unwrap();
    assert_eq!(v.signers.len(), 1);
    assert_eq!(v.ignored_signatures.len(), 1);
    // Once both keys are trusted, both count.
    let other = trusted("approver", &fx.other);
    fx.trust.add(other).unwrap();
    assert_eq!(fx.verify(&b).unwrap().signers.len(), 2);
}

#[test]
fn a_signature_whose_trusted_comment_names_another_bundle() {
    let fx = Fixture::new();
    let m = fx.manifest(FILES);
    let bytes = m.to_bytes();
    let sig = weir_sender::keys::sign_manifest(
        &fx.key,
        &bytes,
        "weir-bundle name=other version=9 created=x",
    )
    .unwrap();
    let b = Raw::new()
        .file("manifest.json", &bytes, 0o644)
        .signature(fx.key.id, &sig)
        .payload(FILES)
        .finish();
    let r = fx.verify(&b).unwrap_err();
    assert!(matches!(
        &r.reasons[0],
        Reason::SignatureInvalid {
            kind: "comment",
            ..
        }
    ));
}

#[test]
fn entry_missing_extra_and_duplicated() {
    let fx = Fixture::new();
    let m = fx.manifest(FILES);
    let missing = Raw::new()
        .signed(&fx, &m, &[&fx.key])
        .payload(&FILES[..1])
        .finish();
    assert_rejected(&fx, &missing, "entry_missing");
    let extra = Raw::new()
        .signed(&fx, &m, &[&fx.key])
        .payload(FILES)
        .file("payload/surprise", b"x", 0o644)
        .finish();
    assert_rejected(&fx, &extra, "entry_extra");
    let dup = Raw::new()
        .signed(&fx, &m, &[&fx.key])
        .payload(FILES)
        .payload(&FILES[..1])
        .finish();
    assert_rejected(&fx, &dup, "entry_duplicate");
}

#[test]
fn size_hash_and_mode_mismatches() {
    let fx = Fixture::new();
    let m = fx.manifest(FILES);
    let size = Raw::new()
        .signed(&fx, &m, &[&fx.key])
        .file(FILES[0].0, b"short", 0o755)
        .payload(&FILES[1..])
        .finish();
    assert_rejected(&fx, &size, "size_mismatch");
    let mut same_len = FILES[0].1.to_vec();
    same_len[0] ^= 1;
    let hash = Raw::new()
        .signed(&fx, &m, &[&fx.key])
        .file(FILES[0].0, &same_len, 0o755)
        .payload(&FILES[1..])
        .finish();
    assert_rejected(&fx, &hash, "hash_mismatch");
    let mode = Raw::new()
        .signed(&fx, &m, &[&fx.key])
        .file(FILES[0].0, FILES[0].1, 0o4755)
        .payload(&FILES[1..])
        .finish();
    assert_rejected(&fx, &mode, "mode_mismatch");
}

#[test]
fn hostile_paths() {
    let fx = Fixture::new();
    let m = fx.manifest(FILES);
    let with = |name: &[u8]| {
        Raw::new()
            .signed(&fx, &m, &[&fx.key])
            .payload(FILES)
            .file_raw_name(name, b"x", 0o644)
            .finish()
    };
    for name in [
        &b"/etc/passwd"[..],
        b"payload/../../etc/passwd",
        b"payload/\xff\xfe",
        b"payload/a//b",
    ] {
        assert_rejected(&fx, &with(name), "path_invalid");
    }
    // A long path in a PAX record: no bundle has one.
    let long = format!("payload/{}", "a/".repeat(600));
    let b = Raw::new()
        .signed(&fx, &m, &[&fx.key])
        .payload(FILES)
        .file_pax(long.trim_end_matches('/'), b"x")
        .finish();
    assert_rejected(&fx, &b, "non_canonical");
}

#[test]
fn paths_that_collide_case_insensitively() {
    // The manifest refuses them, so no archive entry can carry them.
    let fx = Fixture::new();
    let files: &[(&str, &[u8], Mode)] = &[
        ("payload/app.bin", b"a", Mode::Regular),
        ("payload/APP.bin", b"b", Mode::Regular),
    ];
    let m = fx.manifest(files);
    let b = Raw::new()
        .signed(&fx, &m, &[&fx.key])
        .payload(files)
        .finish();
    assert_rejected(&fx, &b, "manifest_invalid");
}

#[test]
fn entries_that_are_not_regular_files() {
    let fx = Fixture::new();
    let m = fx.manifest(FILES);
    let cases: [(tar::EntryType, Option<&str>, &[u8]); 6] = [
        (tar::EntryType::Symlink, Some("/etc/shadow"), b""),
        (tar::EntryType::Link, Some("payload/app.bin"), b""),
        (tar::EntryType::Char, None, b""),
        (tar::EntryType::Block, None, b""),
        (tar::EntryType::Fifo, None, b""),
        (tar::EntryType::Directory, None, b"content"),
    ];
    for (kind, link, data) in cases {
        let b = Raw::new()
            .signed(&fx, &m, &[&fx.key])
            .payload(FILES)
            .special("payload/odd", kind, link, data)
            .finish();
        assert_rejected(&fx, &b, "not_regular_file");
    }
    // Directory entries never appear, not even for a listed file's parent.
    let b = Raw::new()
        .signed(&fx, &m, &[&fx.key])
        .special("payload/docs/", tar::EntryType::Directory, None, b"")
        .payload(FILES)
        .finish();
    assert_rejected(&fx, &b, "not_regular_file");
}

#[test]
fn header_checksum_errors_truncation_and_trailing_garbage() {
    let fx = Fixture::new();
    let good = good_bundle(&fx);
    // The checksum field of the third header (first payload entry).
    let headers: Vec<usize> = header_offsets(&good);
    let mut bad = good.clone();
    bad[headers[2] + 148] ^= 0x01;
    let r = fx.verify(&bad).unwrap_err();
    assert!(
        matches!(
            r.reasons[..],
            [Reason::NonCanonical {
                field: "chksum",
                ..
            }]
        ),
        "{r:?}"
    );

    let cut = &good[..headers[3] + 300];
    assert_rejected(&fx, cut, "truncated");

    let mut trailing = good.clone();
    trailing.extend_from_slice(b"EXTRA DATA");
    assert_rejected(&fx, &trailing, "trailing_data");
    // Zero padding (as tar tools write to fill a record) is not part of
    // the one encoding either.
    let mut padded = good.clone();
    padded.extend_from_slice(&[0u8; 10240]);
    assert_rejected(&fx, &padded, "trailing_data");
    // One end block only.
    assert_rejected(&fx, &good[..good.len() - 512], "truncated");
    assert_rejected(&fx, &good[..good.len() - 1024], "truncated");
}

/// Offsets of the 512-byte headers of a well-formed archive.
fn header_offsets(archive: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 512 <= archive.len() {
        let h = &archive[at..at + 512];
        if h.iter().all(|&b| b == 0) {
            break;
        }
        out.push(at);
        let size_field = std::str::from_utf8(&h[124..136])
            .unwrap()
            .trim_matches(|c| c == '\0' || c == ' ');
        let size = usize::from_str_radix(size_field, 8).unwrap();
        at += 512 + size.div_ceil(512) * 512;
    }
    out
}

/// Flips every byte of a valid bundle, one at a time: each result must be
/// rejected, or verify with exactly the original content.
#[test]
fn tamper_sweep_never_accepts_different_content() {
    let mut fx = Fixture::new();
    fx.trust.add(trusted("approver", &fx.other)).unwrap();
    let m = fx.manifest(FILES);
    let good = Raw::new()
        .signed(&fx, &m, &[&fx.key, &fx.other])
        .payload(FILES)
        .finish();
    let want = contents(&good);
    let offsets = header_offsets(&good);
    assert_eq!(offsets.len(), 5, "manifest, two signatures, two files");
    let (mut rejected, mut still_valid) = (0, 0);
    for i in 0..good.len() {
        for flip in [0x01u8, 0x80] {
            let mut b = good.clone();
            b[i] ^= flip;
            match fx.verify(&b) {
                Err(_) => rejected += 1,
                Ok(v) => {
                    still_valid += 1;
                    assert_eq!(
                        v.manifest_bytes, want["manifest.json"],
                        "byte {i} changed the manifest"
                    );
                    let got = contents(&b);
                    for (path, _, _) in FILES {
                        assert_eq!(got.get(*path), want.get(*path), "byte {i} changed {path}");
                    }
                }
            }
        }
    }
    eprintln!(
        "{} bytes: {rejected} flips rejected, {still_valid} accepted",
        good.len()
    );
    // One encoding: no byte of a valid bundle can change, in a header, in
    // padding, in a signature's comments or in the end blocks, and still
    // give a valid bundle.
    assert_eq!(still_valid, 0);
}

#[test]
fn bundles_made_by_the_sender_verify_and_list_with_stock_tar() {
    let fx = Fixture::new();
    let dir = tempfile::tempdir().unwrap();
    let art = dir.path().join("art");
    std::fs::create_dir_all(art.join("sub")).unwrap();
    std::fs::write(art.join("a.txt"), b"hello\n").unwrap();
    std::fs::write(art.join("sub/b.bin"), vec![7u8; 100_000]).unwrap();
    let long_dir = art.join("x".repeat(120));
    std::fs::create_dir_all(&long_dir).unwrap();
    std::fs::write(long_dir.join("deep-file-with-a-long-name.txt"), b"deep").unwrap();
    let sbom = dir.path().join("bom.spdx.json");
    std::fs::write(&sbom, br#"{"spdxVersion": "SPDX-2.3"}"#).unwrap();
    let out = dir.path().join("app.weir");
    let req = weir_sender::bundle::create::CreateRequest {
        name: "app".into(),
        version: "2.0".into(),
        labels: [("channel".to_string(), "beta".to_string())].into(),
        artifacts: vec![art.clone()],
        sboms: vec![sbom],
        out: out.clone(),
    };
    let m = weir_sender::bundle::create::create(&req, &fx.key, SystemTime::now()).unwrap();
    assert_eq!(m.artifacts.len(), 3);
    // Never overwrites.
    assert!(weir_sender::bundle::create::create(&req, &fx.key, SystemTime::now()).is_err());
    let bytes = std::fs::read(&out).unwrap();
    let v = fx.verify(&bytes).unwrap();
    assert_eq!(v.manifest, m);
    let listing = std::process::Command::new("tar")
        .arg("tvf")
        .arg(&out)
        .output()
        .unwrap();
    assert!(listing.status.success());
    let text = String::from_utf8_lossy(&listing.stdout);
    assert!(
        text.lines().next().unwrap().ends_with("manifest.json"),
        "{text}"
    );
    assert!(text.contains("deep-file-with-a-long-name.txt"), "{text}");

    // An approval signature keeps the first one valid.
    weir_sender::bundle::sign::add_signature(&out, &fx.other).unwrap();
    let mut fx2 = fx;
    fx2.trust.add(trusted("approver", &fx2.other)).unwrap();
    let v = fx2.verify(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(v.signers.len(), 2);
    assert!(
        weir_sender::bundle::sign::add_signature(&out, &fx2.other).is_err(),
        "signing twice"
    );

    // A symlink among the artifacts is refused.
    std::os::unix::fs::symlink("/etc/passwd", art.join("link")).unwrap();
    let req2 = weir_sender::bundle::create::CreateRequest {
        out: dir.path().join("two.weir"),
        ..req
    };
    let e = weir_sender::bundle::create::create(&req2, &fx2.key, SystemTime::now()).unwrap_err();
    assert!(e.to_string().contains("symlink"), "{e}");
    assert!(!dir.path().join("two.weir").exists());
}

#[test]
fn mode_of_a_listed_file_follows_the_source() {
    assert_eq!(Mode::from_bits(0o755), Mode::Executable);
    assert_eq!(Mode::from_bits(0o600), Mode::Regular);
}

#[test]
fn extraction_writes_only_verified_files_under_a_new_directory() {
    use std::os::unix::fs::PermissionsExt;
    let fx = Fixture::new();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.weir");
    std::fs::write(&path, good_bundle(&fx)).unwrap();
    let target = dir.path().join("out");
    let x = weir_receiver::extract::extract(&fx.trust, &path, &target)
        .unwrap()
        .unwrap();
    assert_eq!(x.files, FILES.len());
    for (p, data, mode) in FILES {
        let f = target.join(p);
        assert_eq!(std::fs::read(&f).unwrap(), *data);
        assert_eq!(
            std::fs::metadata(&f).unwrap().permissions().mode() & 0o777,
            mode.bits()
        );
    }
    assert!(!target.join("manifest.json").exists());
    // The target must not exist already, not even as an empty directory.
    assert!(weir_receiver::extract::extract(&fx.trust, &path, &target).is_err());
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    assert!(weir_receiver::extract::extract(&fx.trust, &path, &empty).is_err());
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0);
    // A tampered bundle is rejected, and nothing is written.
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.windows(7).position(|w| w == b"read me").unwrap();
    bytes[at] = b'R';
    std::fs::write(&path, &bytes).unwrap();
    let target2 = dir.path().join("out2");
    let r = weir_receiver::extract::extract(&fx.trust, &path, &target2)
        .unwrap()
        .unwrap_err();
    assert_eq!(r.reasons[0].code(), "hash_mismatch");
    assert!(!target2.exists());
    // Nothing but the bundle and the two directories is left.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
}

/// A reader that fails after `left` bytes, like a disk with a bad sector.
struct Failing<'a> {
    data: &'a [u8],
    left: usize,
}

impl std::io::Read for Failing<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Err(std::io::Error::other("bad sector"));
        }
        let n = buf.len().min(self.left).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        self.left -= n;
        Ok(n)
    }
}

/// A reader interrupted (`EINTR`) before every other read.
struct Interrupting<'a> {
    data: &'a [u8],
    interrupt: bool,
}

impl std::io::Read for Interrupting<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.interrupt = !self.interrupt;
        if self.interrupt {
            return Err(std::io::ErrorKind::Interrupted.into());
        }
        self.data.read(buf)
    }
}

#[test]
fn an_interrupted_read_is_retried_not_taken_for_damage() {
    // Regression: the tar reader reports an interrupted header read as a
    // damaged archive, so a signal during verification rejected a good
    // bundle.
    let fx = Fixture::new();
    let bundle = good_bundle(&fx);
    let found = weir_bundle::verify(
        Interrupting {
            data: &bundle,
            interrupt: false,
        },
        &fx.trust,
        SystemTime::now(),
    )
    .unwrap();
    assert!(found.verdict.is_ok(), "{:?}", found.verdict);
    assert_eq!(found.digest, weir_protocol::digest::digest(&bundle));
}

#[test]
fn a_read_error_is_an_error_not_a_verdict() {
    let fx = Fixture::new();
    let bundle = good_bundle(&fx);
    // In the first header, the manifest, inside the first artifact, and
    // in the end blocks.
    let in_artifact = header_offsets(&bundle)[2] + 512 + 3;
    for left in [0, 100, 600, in_artifact, bundle.len() - 1] {
        let r = weir_bundle::verify(
            Failing {
                data: &bundle,
                left,
            },
            &fx.trust,
            SystemTime::now(),
        );
        let e = r.expect_err("a failing reader must not give a verdict");
        assert_eq!(e.to_string(), "bad sector", "at {left}");
    }
}

#[test]
fn signatures_are_judged_before_any_payload_byte_is_read() {
    // A bundle signed by a key the store does not trust, whose reader
    // fails at the first byte of payload content: the verdict comes from
    // the signatures alone, and no byte of the payload was asked for.
    let fx = Fixture::new();
    let m = fx.manifest(FILES);
    let bundle = Raw::new()
        .signed(&fx, &m, &[&fx.other])
        .payload(FILES)
        .finish();
    let headers = header_offsets(&bundle);
    // manifest.json, one signature, then the first payload entry.
    let first_payload = headers[2];
    assert_eq!(&bundle[first_payload..first_payload + 8], b"payload/");
    let mut v = BundleVerifier::new(&fx.trust, SystemTime::now());
    assert_eq!(v.feed(&bundle[..first_payload]), Progress::More);
    // The verdict is known with the first payload header, before any of
    // its content.
    assert_eq!(
        v.feed(&bundle[first_payload..first_payload + 512]),
        Progress::Rejected
    );
    let r = v.finish().verdict.unwrap_err();
    let found: Vec<&str> = r.reasons.iter().map(Reason::code).collect();
    assert_eq!(
        found,
        ["signature_invalid", "no_trusted_signature"],
        "{r:?}"
    );
    // The same bundle with its payload changed is rejected for the same
    // reason only: the payload was never judged.
    let mut tampered = bundle.clone();
    tampered[first_payload + 512] ^= 0xff;
    assert_eq!(
        codes(&fx, &tampered),
        ["signature_invalid", "no_trusted_signature"]
    );
    // Trusted, the same change is found.
    let mut trusting = Fixture::new();
    trusting.trust = fx.trust.clone();
    trusting.trust.add(trusted("other", &fx.other)).unwrap();
    assert_eq!(codes(&trusting, &tampered), ["hash_mismatch"]);
}
