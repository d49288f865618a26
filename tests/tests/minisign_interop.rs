//! Interoperability with the stock `minisign` tool (Debian package
//! `minisign`; `.ci/run` installs it): an auditor can check weir's
//! signatures with it, and weir accepts signatures it makes.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;
use std::process::Command;

use weir_bundle::{KeyId, trust::public_key_from_file_text, trust::public_key_id};
use weir_tests::bundles::{FILES, Fixture, Raw, public_line, trusted};

fn minisign(args: &[&str], dir: &Path) -> std::process::Output {
    Command::new("minisign")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the minisign binary is needed: apt-get install minisign")
}

#[test]
fn stock_minisign_verifies_a_weir_signature() {
    let fx = Fixture::new();
    let m = fx.manifest(FILES);
    let bytes = m.to_bytes();
    let sig = fx.sign(&fx.key, &m, &bytes);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("manifest.json"), &bytes).unwrap();
    std::fs::write(dir.path().join("sig.minisig"), &sig).unwrap();
    let out = minisign(
        &[
            "-Vm",
            "manifest.json",
            "-x",
            "sig.minisig",
            "-P",
            &public_line(&fx.key),
        ],
        dir.path(),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(&m.trusted_comment()), "{text}");
    // A changed manifest fails with the stock tool too.
    std::fs::write(
        dir.path().join("manifest.json"),
        [&bytes[..], b" "].concat(),
    )
    .unwrap();
    let out = minisign(
        &[
            "-Vm",
            "manifest.json",
            "-x",
            "sig.minisig",
            "-P",
            &public_line(&fx.key),
        ],
        dir.path(),
    );
    assert!(!out.status.success());
}

#[test]
fn weir_verifies_a_signature_made_by_stock_minisign() {
    let mut fx = Fixture::new();
    let dir = tempfile::tempdir().unwrap();
    let out = minisign(&["-G", "-W", "-p", "ext.pub", "-s", "ext.key"], dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pub_text = std::fs::read_to_string(dir.path().join("ext.pub")).unwrap();
    let line = public_key_from_file_text(&pub_text).unwrap();
    let id: KeyId = public_key_id(&line).unwrap();

    let m = fx.manifest(FILES);
    let bytes = m.to_bytes();
    std::fs::write(dir.path().join("manifest.json"), &bytes).unwrap();
    let out = minisign(
        &[
            "-S",
            "-s",
            "ext.key",
            "-m",
            "manifest.json",
            "-x",
            "ext.minisig",
            "-t",
            &m.trusted_comment(),
        ],
        dir.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sig = std::fs::read_to_string(dir.path().join("ext.minisig")).unwrap();
    let bundle = Raw::new()
        .file("manifest.json", &bytes, 0o644)
        .signature(id, &sig)
        .payload(FILES)
        .finish();
    // Not trusted yet: rejected. Trusted: valid.
    assert!(fx.verify(&bundle).is_err());
    let mut k = trusted("external", &fx.key);
    k.public_key = line;
    fx.trust.add(k).unwrap();
    let v = fx.verify(&bundle).unwrap();
    assert_eq!(v.signers[0].id, "external");
    assert_eq!(v.signers[0].key_id, id);
}
