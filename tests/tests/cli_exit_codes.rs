//! The exit codes README.md documents, from the real binaries:
//! `weir-sender bundle inspect` (0 read, 1 not a readable bundle) and
//! `weir-receiver verify` (0 valid, 1 rejected, 2 could not run).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;
use std::process::{Command, Output};

fn run(bin: &str, args: &[&str], dir: &Path) -> Output {
    Command::new(weir_tests::bin::path(bin))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A key, a trust store holding it, and `app-1.0.weir` made and signed with
/// the command-line tools, in `dir`.
fn make_bundle(dir: &Path) {
    std::fs::create_dir(dir.join("dist")).unwrap();
    std::fs::write(dir.join("dist/app.bin"), vec![7u8; 100_000]).unwrap();
    for args in [
        &["keygen", "--out", "release"][..],
        &[
            "bundle",
            "create",
            "--key",
            "release.key",
            "--name",
            "app",
            "--version",
            "1.0",
            "--out",
            "app-1.0.weir",
            "dist",
        ][..],
    ] {
        let o = run("weir-sender", args, dir);
        assert!(o.status.success(), "{args:?}: {}", text(&o));
    }
    let o = run(
        "weir-receiver",
        &[
            "trust",
            "add",
            "--trust",
            "trust.toml",
            "--id",
            "ci",
            "--name",
            "CI",
            "--role",
            "build",
            "release.pub",
        ],
        dir,
    );
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn bundle_inspect_exits_0_for_a_bundle_and_1_for_anything_else() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_bundle(d);
    let o = run("weir-sender", &["bundle", "inspect", "app-1.0.weir"], d);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("name:      app") && t.contains("version:   1.0"),
        "{t}"
    );
    assert!(t.contains("app.bin"), "{t}");
    let o = run(
        "weir-sender",
        &["bundle", "inspect", "--json", "app-1.0.weir"],
        d,
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["manifest"]["name"], "app");
    assert_eq!(v["signatures"].as_array().map(Vec::len), Some(1), "{v}");
    // Not a bundle, and no file at all: exit 1, naming the file.
    std::fs::write(d.join("junk.weir"), b"junk").unwrap();
    for file in ["junk.weir", "missing.weir"] {
        let o = run("weir-sender", &["bundle", "inspect", file], d);
        assert_eq!(o.status.code(), Some(1), "{file}: {}", text(&o));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains(file),
            "{}",
            text(&o)
        );
        assert!(o.stdout.is_empty(), "{}", text(&o));
    }
}

#[test]
fn verify_exits_0_when_valid_1_when_rejected_and_2_when_it_cannot_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_bundle(d);
    let bytes = std::fs::read(d.join("app-1.0.weir")).unwrap();
    let digest = weir_protocol::digest::digest(&bytes).to_hex().to_string();

    let o = run(
        "weir-receiver",
        &["verify", "--trust", "trust.toml", "app-1.0.weir"],
        d,
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("valid: app 1.0") && t.contains(&digest), "{t}");
    let o = run(
        "weir-receiver",
        &["verify", "--trust", "trust.toml", "app-1.0.weir", "--json"],
        d,
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["verdict"], "valid");
    assert_eq!(v["digest"], digest.as_str());

    // One byte of the artifact changed: rejected, with the reason.
    let mut tampered = bytes.clone();
    let at = tampered.len() - 20_000;
    tampered[at] ^= 1;
    std::fs::write(d.join("tampered.weir"), &tampered).unwrap();
    let o = run(
        "weir-receiver",
        &["verify", "--trust", "trust.toml", "tampered.weir"],
        d,
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("rejected") && t.contains("hash_mismatch"), "{t}");
    // Inspecting reads, and verifies nothing: the tampered bundle still
    // inspects with exit 0.
    let o = run("weir-sender", &["bundle", "inspect", "tampered.weir"], d);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("(not verified here)"), "{}", text(&o));
    // A key the store holds but revoked: rejected too.
    let o = run(
        "weir-receiver",
        &["trust", "revoke", "--trust", "trust.toml", "ci"],
        d,
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = run(
        "weir-receiver",
        &["verify", "--trust", "trust.toml", "app-1.0.weir"],
        d,
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("no_trusted_signature"), "{}", text(&o));

    // Could not run: no bundle, or no trust store.
    let o = run(
        "weir-receiver",
        &["verify", "--trust", "trust.toml", "missing.weir"],
        d,
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("missing.weir"), "{}", text(&o));
    let o = run(
        "weir-receiver",
        &["verify", "--trust", "nowhere.toml", "app-1.0.weir"],
        d,
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("nowhere.toml"), "{}", text(&o));
}

#[test]
fn extract_exits_0_with_the_files_1_when_rejected_and_2_when_it_cannot_run() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_bundle(d);
    let o = run(
        "weir-receiver",
        &["extract", "--trust", "trust.toml", "app-1.0.weir", "out"],
        d,
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("extracted: app 1.0: 1 files"),
        "{}",
        text(&o)
    );
    let f = d.join("out/payload/dist/app.bin");
    assert_eq!(std::fs::read(&f).unwrap(), vec![7u8; 100_000]);
    assert_eq!(
        std::fs::metadata(&f).unwrap().permissions().mode() & 0o777,
        0o644
    );
    // Only the payload: no manifest, no signatures, no temporary left.
    let top: Vec<_> = std::fs::read_dir(d.join("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(top, ["payload"]);
    assert!(
        !std::fs::read_dir(d).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".tmp")),
        "a temporary directory is left"
    );
    // Again into the same directory: it exists, so nothing runs.
    let o = run(
        "weir-receiver",
        &["extract", "--trust", "trust.toml", "app-1.0.weir", "out"],
        d,
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("out"), "{}", text(&o));
    // Tampered: rejected with the reason, nothing written.
    let mut tampered = std::fs::read(d.join("app-1.0.weir")).unwrap();
    let at = tampered.len() - 20_000;
    tampered[at] ^= 1;
    std::fs::write(d.join("tampered.weir"), &tampered).unwrap();
    let o = run(
        "weir-receiver",
        &[
            "extract",
            "--trust",
            "trust.toml",
            "tampered.weir",
            "out2",
            "--json",
        ],
        d,
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["verdict"], "rejected");
    assert_eq!(v["reasons"][0]["reason"], "hash_mismatch", "{v}");
    assert!(!d.join("out2").exists());
}
