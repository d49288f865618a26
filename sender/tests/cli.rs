//! The real `weir-sender` binary: keygen permissions and refusals.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

#[test]
fn keygen_makes_a_0600_key_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_weir-sender"))
            .args(["keygen", "--out", "release"])
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    let o = run();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mode = std::fs::metadata(dir.path().join("release.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let before = std::fs::read(dir.path().join("release.key")).unwrap();
    let o = run();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("refusing to overwrite"));
    assert_eq!(
        std::fs::read(dir.path().join("release.key")).unwrap(),
        before
    );
}

#[test]
fn a_world_readable_key_is_refused_by_bundle_create() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_weir-sender");
    let o = Command::new(bin)
        .args(["keygen", "--out", "k"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(o.status.success());
    std::fs::set_permissions(
        dir.path().join("k.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    std::fs::write(dir.path().join("a.txt"), b"a").unwrap();
    let o = Command::new(bin)
        .args([
            "bundle",
            "create",
            "--key",
            "k.key",
            "--name",
            "x",
            "--version",
            "1",
            "--out",
            "x.weir",
            "a.txt",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("must be 0600"), "{err}");
    assert!(!dir.path().join("x.weir").exists());
}
