//! One encoding per bundle: what an attacker adds to, or changes in, a
//! correctly signed bundle is refused, and refused at its header, before
//! anything of its size is held. Each case is a class from the issue that
//! introduced the canonical format: PAX and GNU records (huge ones, and
//! ones that would carry extended attributes or owners), every header
//! field changed alone, and stock GNU tar's view of a good bundle.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::process::Command;
use std::time::SystemTime;

use weir_bundle::ustar::{BLOCK, FIELDS};
use weir_bundle::{BundleInspector, BundleVerifier, MAX_EXCERPT, Progress, Reason};
use weir_tests::bundles::{FILES, Fixture, Raw, fix_checksum, good_bundle};

const MB300: u64 = 300 << 20;

/// Offsets of the headers of a bundle built from [`FILES`] with one
/// signature: manifest, signature, the two payload entries.
fn headers(bundle: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + BLOCK <= bundle.len() && bundle[at..at + BLOCK].iter().any(|&b| b != 0) {
        out.push(at);
        let size = weir_bundle::ustar::size_of(bundle[at..at + BLOCK].try_into().unwrap()).unwrap();
        at += BLOCK + (size as usize).div_ceil(BLOCK) * BLOCK;
    }
    out
}

fn non_canonical_fields(r: &weir_bundle::Rejection) -> Vec<&'static str> {
    r.reasons
        .iter()
        .filter_map(|r| match r {
            Reason::NonCanonical { field, .. } => Some(*field),
            _ => None,
        })
        .collect()
}

#[test]
fn a_300_mb_long_name_or_pax_record_is_refused_at_its_header() {
    // Regression: the tar crate read a GNU long name or a PAX record whole
    // into memory; a 300 MB one took verification to about 1 GB.
    let fx = Fixture::new();
    let m = fx.manifest(FILES);
    let signed = Raw::new().signed(&fx, &m, &[&fx.key]).unfinished();
    for flag in [b'L', b'K', b'x', b'g'] {
        let header = Raw::extension_header(flag, MB300);
        // Before the manifest, and after the manifest and its signature.
        for before in [&[][..], &signed[..]] {
            let mut v = BundleVerifier::new(&fx.trust, SystemTime::now());
            assert_eq!(v.feed(before), Progress::More);
            assert_eq!(
                v.feed(&header),
                Progress::Rejected,
                "type {} refused at its header",
                flag as char
            );
            // The rest, 300 MB, goes by (to the digest) without being held.
            let zeros = vec![0u8; 1 << 20];
            for _ in 0..300 {
                v.feed(&zeros);
            }
            let found = v.finish();
            assert_eq!(found.len, before.len() as u64 + 512 + MB300);
            let r = found.verdict.unwrap_err();
            let kind = weir_bundle::ustar::kind_name(flag);
            assert!(non_canonical_fields(&r).contains(&kind), "{r:?}");
            assert!(!r.reasons.is_empty());
            // The inspector too.
            let mut i = BundleInspector::new();
            i.feed(before);
            assert_eq!(i.feed(&header), Progress::Rejected);
        }
    }
}

#[test]
fn pax_records_on_a_signed_bundle_are_refused_wherever_they_are() {
    // Regression: PAX records added to a correctly signed bundle left it
    // valid, and GNU tar extracting it as root gave a payload file the
    // capabilities cap_setuid,cap_setgid=ep.
    let fx = Fixture::new();
    let m = fx.manifest(FILES);
    let capability: &[u8] =
        b"\x01\x00\x00\x02\xc0\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00";
    let comment = vec![b'c'; 1 << 20];
    let records: [&[(&str, &[u8])]; 5] = [
        &[("SCHILY.xattr.security.capability", capability)],
        &[("uid", b"0"), ("gid", b"0")],
        &[("uname", b"root"), ("gname", b"root")],
        &[("comment", &comment)],
        &[("mtime", b"1.5")],
    ];
    let sig = fx.sign(&fx.key, &m, &m.to_bytes());
    for rec in records {
        // Before the manifest, before the signature, before each payload
        // entry, and before the end.
        for at in 0..5 {
            let mut raw = Raw::new();
            let pax_here = |raw: &mut Raw, i: usize| {
                if i == at {
                    raw.pax(rec);
                }
            };
            pax_here(&mut raw, 0);
            raw.file("manifest.json", &m.to_bytes(), 0o644);
            pax_here(&mut raw, 1);
            raw.signature(fx.key.id, &sig);
            pax_here(&mut raw, 2);
            raw.file(FILES[0].0, FILES[0].1, FILES[0].2.bits());
            pax_here(&mut raw, 3);
            raw.file(FILES[1].0, FILES[1].1, FILES[1].2.bits());
            pax_here(&mut raw, 4);
            let b = raw.finish();
            let r = fx.verify(&b).expect_err("a PAX record rides along");
            // Named as what it is, wherever it is.
            assert!(
                non_canonical_fields(&r).contains(&"PAX extended header"),
                "record {:?} at {at}: {r:?}",
                rec[0].0
            );
        }
    }
}

#[test]
fn each_header_field_changed_alone_is_refused_and_named() {
    let fx = Fixture::new();
    let good = good_bundle(&fx);
    fx.verify(&good).unwrap();
    let at = headers(&good);
    assert_eq!(at.len(), 4, "manifest, signature, two payload entries");
    // Fields whose change alters the layout or the entry (path, size,
    // type) have reasons of their own; every other one is named.
    let layout = ["name", "size", "typeflag", "prefix"];
    for &h in &at {
        for (field, range) in FIELDS {
            let mut b = good.clone();
            let first = h + range.start;
            b[first] ^= 0x01;
            if field != "chksum" {
                let block: &mut [u8; BLOCK] = (&mut b[h..h + BLOCK]).try_into().unwrap();
                fix_checksum(block);
            }
            let r = fx
                .verify(&b)
                .expect_err(&format!("{field} of the header at {h} changed"));
            if layout.contains(&field) {
                continue;
            }
            assert!(
                non_canonical_fields(&r).contains(&field),
                "{field} at {h}: {r:?}"
            );
        }
    }
}

#[test]
fn attacker_sized_strings_are_cut_in_reasons() {
    // Regression: entry names and parser messages were quoted whole; one
    // forged 20 MB bundle wrote a 20 MB reason file and log line.
    let fx = Fixture::new();
    let key = "k".repeat(900 << 10);
    let manifest = format!("{{\"format\":\"weir-bundle/1\",\"{key}\":1}}");
    let b = Raw::new()
        .file("manifest.json", manifest.as_bytes(), 0o644)
        .finish();
    let r = fx.verify(&b).unwrap_err();
    let shown = r.to_string();
    assert!(shown.len() < 2 * MAX_EXCERPT, "{} bytes", shown.len());
    assert!(
        shown.contains("bytes)"),
        "the original length is noted: {shown}"
    );
    let json = serde_json::to_string(&r.reasons).unwrap();
    assert!(json.len() < 2 * MAX_EXCERPT, "{json}");
    // Control characters in a name are escaped.
    let b = Raw::new()
        .file_raw_name(b"evil\x1b[2J\nname", b"x", 0o644)
        .finish();
    let shown = fx.verify(&b).unwrap_err().to_string();
    assert!(!shown.chars().any(char::is_control), "{shown:?}");
    // However many problems, a rejection keeps 32 reasons and counts the
    // rest.
    let files: Vec<(String, Vec<u8>)> = (0..100)
        .map(|i| (format!("payload/f{i:03}"), vec![i as u8; 10]))
        .collect();
    let listed: Vec<(&str, &[u8], weir_bundle::Mode)> = files
        .iter()
        .map(|(p, d)| (p.as_str(), d.as_slice(), weir_bundle::Mode::Regular))
        .collect();
    let m = fx.manifest(&listed);
    let mut raw = Raw::new();
    raw.signed(&fx, &m, &[&fx.key]);
    for (p, d) in &files {
        let mut wrong = d.clone();
        wrong[0] ^= 1;
        raw.file(p, &wrong, 0o644);
    }
    let r = fx.verify(&raw.finish()).unwrap_err();
    assert_eq!(r.reasons.len(), weir_bundle::MAX_REASONS);
    assert_eq!(r.omitted, 100 - weir_bundle::MAX_REASONS);
}

#[test]
fn gnu_tar_extracting_as_root_with_every_preserve_option_gives_exactly_the_manifest() {
    let fx = Fixture::new();
    let dir = tempfile::tempdir().unwrap();
    let art = dir.path().join("art");
    std::fs::create_dir_all(art.join("bin")).unwrap();
    std::fs::write(art.join("bin/tool"), b"#!/bin/sh\necho hi\n").unwrap();
    std::os::unix::fs::PermissionsExt::set_mode(
        &mut std::fs::metadata(art.join("bin/tool"))
            .unwrap()
            .permissions(),
        0o755,
    );
    std::fs::set_permissions(
        art.join("bin/tool"),
        std::os::unix::fs::PermissionsExt::from_mode(0o4755),
    )
    .unwrap();
    let long = art.join("d".repeat(120));
    std::fs::create_dir_all(&long).unwrap();
    std::fs::write(long.join("data.txt"), b"data").unwrap();
    let out = dir.path().join("app.weir");
    let req = weir_sender::bundle::create::CreateRequest {
        name: "app".into(),
        version: "1".into(),
        labels: Default::default(),
        artifacts: vec![art],
        sboms: vec![],
        out: out.clone(),
    };
    let m = weir_sender::bundle::create::create(&req, &fx.key, SystemTime::now()).unwrap();
    fx.verify(&std::fs::read(&out).unwrap()).unwrap();

    let x = dir.path().join("x");
    std::fs::create_dir(&x).unwrap();
    let tar = Command::new("tar")
        .args([
            "--xattrs",
            "--xattrs-include=*",
            "--acls",
            "--same-owner",
            "--numeric-owner",
            "--preserve-permissions",
            "-xf",
        ])
        .arg(&out)
        .arg("-C")
        .arg(&x)
        .output()
        .unwrap();
    assert!(
        tar.status.success(),
        "{}",
        String::from_utf8_lossy(&tar.stderr)
    );
    // Every regular file there is, with its mode and owner.
    let mut found = Vec::new();
    let mut stack = vec![x.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let meta = std::fs::symlink_metadata(e.path()).unwrap();
            if meta.is_dir() {
                stack.push(e.path());
                continue;
            }
            assert!(
                meta.is_file(),
                "{} is not a regular file",
                e.path().display()
            );
            use std::os::unix::fs::MetadataExt;
            let rel = e
                .path()
                .strip_prefix(&x)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            found.push((rel, meta.mode() & 0o7777, meta.uid(), meta.gid()));
        }
    }
    found.sort();
    let mut want: Vec<(String, u32, u32, u32)> = m
        .entries()
        .map(|e| (e.path.to_owned(), e.mode.bits(), 0, 0))
        .collect();
    want.push(("manifest.json".into(), 0o644, 0, 0));
    want.push((weir_bundle::signature_path(fx.key.id), 0o644, 0, 0));
    want.sort();
    // The setuid bit of the source never reaches the bundle.
    assert_eq!(found, want);
    // The manifest verifies with stock minisign.
    let pubkey = fx.dir.path().join("builder.pub");
    let v = Command::new("minisign")
        .arg("-Vm")
        .arg(x.join("manifest.json"))
        .arg("-x")
        .arg(x.join(weir_bundle::signature_path(fx.key.id)))
        .arg("-p")
        .arg(&pubkey)
        .output()
        .unwrap();
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
}
