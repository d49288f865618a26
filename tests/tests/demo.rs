//! The demo README.md starts with, run as an operator runs it: it must end
//! with its success line, and leave the bundle it made in `staging/`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::process::Command;

#[test]
fn the_readme_demo_prints_its_success_line() {
    // Its working directory goes under TMPDIR: this test's own, removed
    // when it ends.
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_weir-demo"))
        .env("TMPDIR", tmp.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("ok: the bundle arrived bit-identical, verified against the trust store"),
        "{stdout}{stderr}"
    );
    // What it says it left is there: the published bundle and its receipt,
    // equal to the bundle it made.
    let dir = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("weir-demo-"))
        .unwrap_or_else(|| panic!("no weir-demo-* directory in {}", tmp.path().display()))
        .path();
    assert!(
        stdout.contains(&format!("everything is left in {}", dir.display())),
        "{stdout}"
    );
    let made = std::fs::read(dir.join("app-1.0.weir")).unwrap();
    let staged = std::fs::read(dir.join("rx-spool/staging/app_1.0.weir")).unwrap();
    assert!(
        made == staged,
        "the staged bundle differs from the one made"
    );
    assert!(dir.join("rx-spool/staging/app_1.0.receipt.json").exists());
}
